"""From AnnData views to device graph batches, and from batch embeddings back to cells.

Shared by ``fit`` and ``Model``: the checks that run before any work, the feature
matrices of the views, the per-batch view graphs and consensus, and the first-occurrence
gather that turns batch embeddings into one row per cell.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import anndata as ad
import jax
import numpy as np
from jax.sharding import Mesh

from .progress import progress_bar

from . import validation as val
from .batching import first_occurrence, reference_batch_indices
from .config import ScnicheConfig
from .consensus import build_consensus
from .graphs import build_view_graph
from .parallel import parallel_embed_batches
from .train import PRECISIONS, GraphBatch, StepSettings, assemble_batches, embed_batches


def view_features(adata: ad.AnnData, views: Sequence[str]) -> list[np.ndarray]:
    """The checked feature matrix of every view (dense, finite, one row per cell)."""
    out = []
    for key in views:
        val.check_obsm_key(adata, key, "Run scniche_jax.pp.cal_spatial_neighbors / cal_spatial_exp "
                                       "(or process_multi_slices) first, or pass views=[...].")
        out.append(val.dense_float_matrix(adata.obsm[key], f"adata.obsm[{key!r}]", adata.n_obs))
    return out


def check_settings(n_cells: int, views, hidden_size_v, hidden_size, k_graph, mik, batch_num, epochs,
                    lr, precision, dropout, gre_semantics, block_size) -> tuple[list[np.ndarray], int]:
    if len(views) == 0:
        raise ValueError("views must name at least one adata.obsm key.")
    if len(set(views)) != len(views):
        raise ValueError(f"views must be distinct, got {list(views)}.")
    for name, sizes in (("hidden_size_v", hidden_size_v), ("hidden_size", hidden_size)):
        if len(sizes) == 0:
            raise ValueError(f"{name} needs at least one layer width.")
        for s in sizes:
            val.check_positive_int(s, f"every entry of {name}")
    k_graph = val.check_positive_int(k_graph, "k_graph")
    mik = val.check_positive_int(mik, "mik")
    if mik > k_graph + 1:
        raise ValueError(f"mik={mik} exceeds the k_graph + 1 = {k_graph + 1} kNN columns; choose mik <= {k_graph + 1}.")
    val.check_positive_int(epochs, "epochs")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}.")
    if gre_semantics not in ("gpu", "cpu"):
        raise ValueError(f"gre_semantics must be 'gpu' or 'cpu', got {gre_semantics!r}.")
    val.check_positive_int(block_size, "block_size")
    if batch_num is None:
        batches = [np.arange(n_cells)]
    else:
        if isinstance(batch_num, bool) or not isinstance(batch_num, (int, np.integer)) or batch_num < 1:
            raise ValueError(f"batch_num must be None (full graph) or an integer >= 1, got {batch_num!r}.")
        batches = reference_batch_indices(n_cells, int(batch_num))
    size = batches[0].size
    if size < k_graph + 1:
        most = max(n_cells // (k_graph + 1), 1)
        where = "the graph" if batch_num is None else f"batches of {size} cells"
        raise ValueError(
            f"{where} is too small for k_graph={k_graph} (each graph needs at least {k_graph + 1} "
            f"cells); use a smaller k_graph" + ("." if batch_num is None else f" or batch_num <= {most}."))
    return batches, size


def build_batches(features: Sequence[np.ndarray], batches: Sequence[np.ndarray], gfn_params,
                  config: ScnicheConfig, progress: bool = False) -> GraphBatch:
    """:func:`build_host_batches`, placed on the default device."""
    return jax.device_put(build_host_batches(features, batches, gfn_params, config, progress))


def build_host_batches(features: Sequence[np.ndarray], batches: Sequence[np.ndarray], gfn_params,
                       config: ScnicheConfig, progress: bool = False) -> GraphBatch:
    """View graphs and consensus of every batch, stacked as one host ``GraphBatch``.

    The kNN searches of all batches run in a thread pool (scikit-learn's tree queries release
    the GIL); the fusion network then runs batch after batch on the device. The result does
    not depend on the number of threads.
    """
    def view_graphs(idx):
        return [build_view_graph(f[idx], config.k_graph, config.mik) for f in features]

    workers = min(len(batches), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        graphs_per_batch = pool.map(view_graphs, batches)
        per_batch = [(graphs, build_consensus(gfn_params, graphs, config.gre_semantics, config.block_size))
                     for graphs in progress_bar(graphs_per_batch, total=len(batches), desc="graphs",
                                                disable=not progress or len(batches) < 2, leave=False)]
    return assemble_batches(per_batch)


def step_settings(config: ScnicheConfig) -> StepSettings:
    return StepSettings(hidden_size_v=config.hidden_size_v, hidden_size=config.hidden_size,
                        n_views=len(config.views), dropout=config.dropout, lr=config.lr,
                        precision=config.precision, block=config.block_size)


def embedding(params, graph_batches: GraphBatch, batches, n_cells: int, config: ScnicheConfig,
              dropout_key, mesh: Optional[Mesh] = None) -> np.ndarray:
    """One embedding row per cell (its first occurrence across batches), float32.

    Dropout stays off unless ``config.deterministic_embedding`` is False. With ``mesh`` the
    batches are the sharded ones of :func:`parallel.place_batches`.
    """
    if config.deterministic_embedding:
        dropout_key = None
    elif dropout_key is None:
        dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    if mesh is None:
        z = np.asarray(embed_batches(params, graph_batches, dropout_key, step_settings(config)))
    else:
        z = np.asarray(parallel_embed_batches(params, graph_batches, dropout_key, step_settings(config), mesh))
    which, row = first_occurrence(list(batches), n_cells)
    return np.ascontiguousarray(z[which, row], dtype=np.float32)
