"""Helpers for the quality experiments: cached preprocessed sets, spatial operators, scoring."""
from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import niche_quality as nq  # noqa: E402


@lru_cache(maxsize=None)
def get_set(name: str, max_cells=None):
    return nq.load_set(nq.DATA_DIR / f"{name}.h5ad", max_cells)


def groups_of(d) -> np.ndarray:
    return np.zeros(d.adata.n_obs, int).astype(str) if d.slices is None else d.slices


def spatial_knn(d, k: int, include_self=True) -> sp.csr_matrix:
    """Row-normalised kNN operator within slices."""
    from scniche_jax.pp import spatial_neighbour_matrix
    xy = np.asarray(d.adata.obsm["spatial"], np.float64)[:, :2]
    g = groups_of(d)
    n = xy.shape[0]
    rows, cols = [], []
    for s in sorted(set(g.tolist())):
        idx = np.flatnonzero(g == s)
        m = spatial_neighbour_matrix(xy[idx], "knn", k, None, include_self=include_self).tocoo()
        rows.append(idx[m.row]); cols.append(idx[m.col])
    w = sp.csr_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return sp.diags(1.0 / np.asarray(w.sum(1)).ravel()) @ w


def one_hot_types(d) -> np.ndarray:
    import pandas as pd
    codes = pd.Categorical(d.adata.obs[d.celltype_key].astype(str)).codes
    out = np.zeros((d.adata.n_obs, codes.max() + 1))
    out[np.arange(codes.size), codes] = 1
    return out


def smooth(x, op, steps: int):
    for _ in range(steps):
        x = op @ x
    return x


def per_slice_standardise(x, d):
    x = np.array(x, np.float64)
    g = groups_of(d)
    for s in set(g.tolist()):
        m = g == s
        x[m] = (x[m] - x[m].mean(0)) / (x[m].std(0) + 1e-8)
    return x


def evaluate(d, labels) -> dict:
    sc = nq.score_run(d.truth, d.labelled, d.slices, labels)
    return {"ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"], "nmi": sc["all"]["nmi"], "f1": sc["all"]["f1"]}


def write_scores(out, d, seed: int, tag: str, labels) -> None:
    """One JSON line {set, seed, tag, ari, ari_slice, nmi, f1} (:func:`evaluate`) on the open file ``out``."""
    import json
    out.write(json.dumps({"set": d.name, "seed": seed, "tag": tag, **evaluate(d, np.asarray(labels))}) + "\n")
    out.flush()


def adopted_operators(d):
    """The adopted prior's inputs for set ``d``: (slice groups, coordinates, smoothing over 10 cells, Potts shares over 75)."""
    from scniche_jax import clustering as cl
    from scniche_jax import improved as imp
    groups = imp.slice_groups(d.adata.n_obs, None if d.sample_key is None else d.adata.obs[d.sample_key])
    coords = np.asarray(d.adata.obsm["spatial"], np.float64)[:, :2]
    return groups, coords, imp.spatial_mean_operator(coords, groups, 10), cl.spatial_neighbour_shares(coords, groups, 75)


def km(x, d, seed):
    return nq.kmeans(x, d.n_labels, seed)


def report(tag, rows):
    a = np.array([[r["ari"], r["ari_slice"], r["f1"]] for r in rows])
    m, s = a.mean(0), a.std(0, ddof=1) if len(rows) > 1 else np.zeros(3)
    line = f"{tag:60s} ARI {m[0]:.3f}±{s[0]:.3f}  slice {m[1]:.3f}  F1 {m[2]:.3f}±{s[2]:.3f}"
    print(line, flush=True)
    return line


CACHE = Path("/tmp/exp16")  # Exp 16's cached readouts: raw_{set}_{seed}.npy (embedding | composition | expression)


def cached_readout_set(name: str):
    """Set ``name`` with the adopted operators, the package's radius composition (scales 20, 50, 100)
    and ``blocks(seed)``: the cached readout split into (embedding, k-nearest composition, expression)."""
    from types import SimpleNamespace

    import scniche_jax as sj
    from scniche_jax import improved as imp
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups, coords, smooth, shares = adopted_operators(d)
    views = imp.improved_views(d.adata.copy(), sj.ImprovedOptions())
    n_comp, n_expr = views["X_ms_comp"].shape[1], views["X_data_nbr_std"].shape[1]
    radius = imp.radius_composition(coords, d.adata.obs[d.celltype_key], groups, (20, 50, 100),
                                    d.adata.uns.get("CN_order"))

    def blocks(seed: int):
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        n_emb = raw.shape[1] - n_comp - n_expr
        return raw[:, :n_emb], raw[:, n_emb:n_emb + n_comp], raw[:, n_emb + n_comp:]

    return SimpleNamespace(d=d, groups=groups, coords=coords, smooth=smooth, shares=shares, radius=radius,
                           blocks=blocks)
