"""Live parity against the real PyTorch reference, run in its own Python environment.

Our side builds a case (synthetic cells, our view graphs, our fresh initial weights as a
torch state dict, fixed MIM permutations) and writes it as an ``.npz``; the reference's
interpreter runs ``parity/reference/run_reference.py`` on it and writes its results as an
``.npz``. Nothing is pickled across the boundary.

Environment: ``SCNICHE_REFERENCE_PYTHON`` (an interpreter with torch 2.2.1, dgl 2.1.0, numpy
1.23.5, …) and ``SCNICHE_REFERENCE_SRC`` (a checkout of ZJUFanLab/scNiche); see README.md.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import scniche_jax as sj
from scniche_jax.consensus import build_consensus
from scniche_jax.graphs import build_view_graph, view_graph_from_edges
from golden import train_step_with_negatives
from scniche_jax.networks import GraphFusionNetwork
from scniche_jax.pipeline import assemble_batches, batch_at
from scniche_jax.step import StepSettings, embed_batches, init_state, make_state
from scniche_jax.torch_format import (discriminator_params_from_state_dict, discriminator_params_to_state_dict,
                                     mgae_params_from_state_dict, mgae_params_to_state_dict)

DRIVER = Path(__file__).resolve().parent / "reference" / "run_reference.py"
ENV_PYTHON, ENV_SRC = "SCNICHE_REFERENCE_PYTHON", "SCNICHE_REFERENCE_SRC"


def reference_env() -> Optional[tuple[str, str]]:
    """``(python, src)`` of the reference environment, or None when not configured."""
    python, src = os.environ.get(ENV_PYTHON), os.environ.get(ENV_SRC)
    if not python or not src:
        return None
    return python, src


def run_reference(job: str, *args: str, threads: int = 2, timeout: int = 3600) -> None:
    """Runs one job of the reference driver in the reference's interpreter."""
    python, src = reference_env()
    env = dict(os.environ, SCNICHE_REFERENCE_SRC=src, PYTHONWARNINGS="ignore")
    result = subprocess.run([python, str(DRIVER), job, *args, "--threads", str(threads)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"reference driver failed ({job}):\n{result.stderr[-4000:]}")


@dataclass
class Case:
    views: tuple
    hidden_size_v: tuple
    hidden_size: tuple
    graphs: list
    consensus: object
    params: dict
    gfn: dict
    discriminator: dict
    perms: np.ndarray
    lr: float = 0.01

    @property
    def n_cells(self) -> int:
        return self.graphs[0].n_nodes

    @property
    def settings(self) -> StepSettings:
        return StepSettings(hidden_size_v=self.hidden_size_v, hidden_size=self.hidden_size, n_views=len(self.views),
                            dropout=0.0, precision="fp32")


def make_case(n_cells: int, views=("X_cn_norm", "X_data", "X_data_nbr"), hidden_size_v=(10,),
              hidden_size=(32, 10), steps: int = 1, seed: int = 0, n_neighbors: int = 20, mik: int = 5) -> Case:
    """Synthetic cells, our graphs and consensus, fresh initial weights, random permutations."""
    adata = sj.datasets.synthetic(n_cells, n_niches=5, n_cell_types=10, n_genes=30, seed=seed)
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
    graphs = [build_view_graph(adata.obsm[v], n_neighbors, mik) for v in views]
    key = jax.random.key(seed)
    gfn = GraphFusionNetwork(n_cells).init(jax.random.fold_in(key, 1), jnp.zeros((1, n_cells)))["params"]
    consensus = build_consensus(gfn, graphs, gre_semantics="cpu")
    settings = StepSettings(hidden_size_v=tuple(hidden_size_v), hidden_size=tuple(hidden_size), n_views=len(views))
    state = init_state(jax.random.fold_in(key, 2), batch_at(assemble_batches([(graphs, consensus)]), 0), settings,
                       0.01)
    rng = np.random.default_rng(seed)
    perms = np.stack([np.stack([rng.permutation(n_cells) for _ in range(len(views) * mik)]) for _ in range(steps)])
    return Case(tuple(views), tuple(hidden_size_v), tuple(hidden_size), graphs, consensus,
                jax.device_get(state.params), jax.device_get(gfn), jax.device_get(state.discriminator), perms)


def write_case(case: Case, path: Path) -> Path:
    """The case as the reference driver reads it."""
    arrays = {}
    for v, g in enumerate(case.graphs):
        arrays[f"view{v}/feat"] = g.features
        arrays[f"view{v}/edge_src"] = g.senders.astype(np.int64)
        arrays[f"view{v}/edge_dst"] = g.receivers.astype(np.int64)
        arrays[f"view{v}/mik"] = g.mik.astype(np.int64)
    mgae = mgae_params_to_state_dict(case.params, case.gfn, len(case.views), len(case.hidden_size_v),
                                     len(case.hidden_size))
    arrays.update({f"mgae/{k}": v for k, v in mgae.items()})
    arrays.update({f"disc/{k}": v for k, v in discriminator_params_to_state_dict(case.discriminator).items()})
    arrays["perm"] = case.perms.astype(np.int64)
    meta = {"n_cells": case.n_cells, "views": list(case.views), "hidden_size_v": list(case.hidden_size_v),
            "hidden_size": list(case.hidden_size), "lr": case.lr}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def read_case(path: Path) -> Case:
    """A case written by :func:`write_case` (the consensus rebuilt from its fusion network)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    views, hv, h = meta["views"], meta["hidden_size_v"], meta["hidden_size"]
    graphs = [view_graph_from_edges(arrays[f"view{v}/feat"], arrays[f"view{v}/edge_src"], arrays[f"view{v}/edge_dst"],
                                    arrays[f"view{v}/mik"]) for v in range(len(views))]
    params, gfn = mgae_params_from_state_dict({k[5:]: v for k, v in arrays.items() if k.startswith("mgae/")},
                                              len(views), len(hv), len(h))
    disc = discriminator_params_from_state_dict({k[5:]: v for k, v in arrays.items() if k.startswith("disc/")})
    consensus = build_consensus(gfn, graphs, gre_semantics="cpu")
    return Case(tuple(views), tuple(hv), tuple(h), graphs, consensus, params, gfn, disc, arrays["perm"], meta["lr"])


def our_forward(case: Case) -> dict:
    """z, view-0 logits, the three losses (``loss_gre`` with R + Rᵀ like the reference on CPU)."""
    batches = assemble_batches([(case.graphs, case.consensus)])
    batch = batch_at(batches, 0)
    state = make_state(case.params, case.discriminator, case.lr)
    _, losses, _, z = train_step_with_negatives(state, batch, jnp.asarray(case.perms[0], jnp.int32), None,
                                                case.settings)
    z = np.asarray(z)
    return {"z": z, "logits0": z @ z.T, "losses": np.array([float(losses.gre), float(losses.rec), float(losses.mim)]),
            "pos_weight": float(batch.pos_weight)}


def our_train(case: Case, epochs: int) -> dict:
    """``epochs`` Adam steps with the case's permutations, then the deterministic embedding."""
    batches = assemble_batches([(case.graphs, case.consensus)])
    batch = batch_at(batches, 0)
    state = make_state(case.params, case.discriminator, case.lr)
    loss = []
    for step in range(epochs):
        state, losses, _, _ = train_step_with_negatives(state, batch, jnp.asarray(case.perms[step], jnp.int32), None,
                                                        case.settings)
        loss.append(float(losses.total))
    z = np.asarray(embed_batches(state.params, batches, None, case.settings)[0])
    return {"z": z, "loss": np.array(loss)}


def one_ulp_apart(case: Case, seed: int = 0) -> Case:
    """The case with every initial MGAE weight moved by one fp32 ulp (random sign).

    The reference run from these weights shows how far fp32 rounding alone can carry its
    own trajectory: the floor below which no fp32 implementation can be asked to agree.
    """
    rng = np.random.default_rng(seed)
    nudge = lambda x: (np.asarray(x) * (1 + rng.choice([-1.0, 1.0], size=np.shape(x)) * 2.0 ** -23)).astype(np.float32)
    return replace(case, params=jax.tree_util.tree_map(nudge, case.params))
