"""The input pipeline: host feature arrays → per-batch graphs → stacked device batches.

Like Flax's ``input_pipeline.py``: it plans the batches (which cells go where, exactly as the
reference splits them), builds each batch's view graphs and consensus graph on the host, and
stacks them, padded to one shape, into a :class:`GraphBatch` that the jitted epoch scans. It
never sees an AnnData: the edges (:mod:`scniche_jax.model`) hand it arrays.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional, Sequence

import jax
import jraph
import numpy as np

from .batching import auto_batch_num, fixed_size_batches, reference_batch_indices
from .consensus import Consensus, PreparedGfn, build_consensus, majority_consensus
from .graphs import ViewGraph, build_view_graph, graphs_tuple, pos_weight
from .progress import progress_bar, progress_write

LARGE_GRAPH = 2000  # cells of one full graph above which building it gets a line of its own (seconds)


class GraphBatch(NamedTuple):
    """Device inputs of one graph or batch (or a stack of them along a leading axis)."""

    views: tuple[jraph.GraphsTuple, ...]
    mik: jax.Array
    consensus: jraph.GraphsTuple
    pos_weight: jax.Array
    loss_gre: jax.Array


def resolve_batch_num(n_cells: int, batch_num, cells_per_batch: Optional[int], platform: str,
                      n_devices: int = 1) -> Optional[int]:
    """``batch_num`` as an integer or None (full graph), resolving ``'auto'`` for the platform."""
    if batch_num == "auto":
        return auto_batch_num(n_cells, platform, cells_per_batch, n_devices=n_devices)
    return batch_num


def plan_batches(n_cells: int, batch_num: Optional[int], n_neighbors: int) -> list[np.ndarray]:
    """Cell indices of every batch: all cells for the full graph, else the reference's split.

    Raises:
      ValueError: when a batch is too small for a kNN graph of ``n_neighbors`` neighbours (the
        message names a ``batch_num`` or ``n_neighbors`` that works).
    """
    batches = [np.arange(n_cells)] if batch_num is None else reference_batch_indices(n_cells, int(batch_num))
    size = batches[0].size
    if size < n_neighbors + 1:
        most = max(n_cells // (n_neighbors + 1), 1)
        where = "the graph" if batch_num is None else f"batches of {size} cells"
        raise ValueError(
            f"{where} is too small for n_neighbors={n_neighbors} (each graph needs at least {n_neighbors + 1} "
            f"cells); use a smaller n_neighbors" + ("." if batch_num is None else f" or batch_num <= {most}."))
    return batches


def embedding_batches(n_cells: int, batch_size: int, batch_num: Optional[int], seed: int) -> list[np.ndarray]:
    """Batches for embedding ``n_cells`` cells with a model whose graphs hold ``batch_size``.

    Data of the training size is cut exactly as in training; other data into batches of the
    model's graph size (the fusion network's width), each cell embedded at least once.
    """
    if n_cells == batch_size:
        return [np.arange(n_cells)]
    if batch_num is not None and -(-n_cells // batch_num) == batch_size:
        return reference_batch_indices(n_cells, batch_num)
    return fixed_size_batches(n_cells, batch_size, seed)


def build_host_batches(features: Sequence[np.ndarray], batches: Sequence[np.ndarray], gfn_params,
                       n_neighbors: int, mik: int, gre_semantics: str, block_size: int,
                       progress: bool = False, consensus: str = "gfn", consensus_votes: int = 2) -> GraphBatch:
    """View graphs and consensus of every batch, stacked as one host ``GraphBatch``.

    The kNN searches of all batches run in a thread pool (scikit-learn's tree queries release
    the GIL); the fusion network then runs batch after batch on the device. The result does
    not depend on the number of threads.

    Args:
      features: one (n_cells, D_v) matrix per view.
      batches: cell indices of each batch (all of one length).
      gfn_params: the graph fusion network's parameters (its width is the batch length).
      n_neighbors, mik: kNN neighbours of the view graphs and MI positives per view.
      gre_semantics, block_size: see :class:`scniche_jax.config.ModelConfig` / ``BatchConfig``.
      progress: show a bar over the batches.
      consensus: ``'gfn'`` (the reference: the frozen fusion network's thresholded graph) or
        ``'majority'`` (edges shared by ``consensus_votes`` view graphs; ``variant='improved'``).
      consensus_votes: see ``consensus``.
    """
    def view_graphs(idx):
        return [build_view_graph(f[idx], n_neighbors, mik) for f in features]

    workers = min(len(batches), os.cpu_count() or 1)
    one_large = progress and len(batches) < 2 and len(batches[0]) >= LARGE_GRAPH  # no bar over one batch
    if one_large:
        started = time.perf_counter()
        progress_write(f"scniche_jax: building the view graphs and their consensus on {len(batches[0]):,} cells "
                       "(one full graph; this takes a while)")
    gfn_params = PreparedGfn.of(gfn_params)  # once for all batches
    with ThreadPoolExecutor(max_workers=workers) as pool:
        graphs_per_batch = pool.map(view_graphs, batches)
        def fused(graphs):
            if consensus == "majority":
                return majority_consensus(graphs, consensus_votes)
            return build_consensus(gfn_params, graphs, gre_semantics, block_size)

        per_batch = [(graphs, fused(graphs))
                     for graphs in progress_bar(graphs_per_batch, total=len(batches), desc="graphs",
                                                disable=not progress or len(batches) < 2, leave=False)]
    if one_large:
        progress_write(f"scniche_jax: graphs built in {time.perf_counter() - started:.0f} s")
    return assemble_batches(per_batch)


def assemble_batches(batches: Sequence[tuple[Sequence[ViewGraph], Consensus]]) -> GraphBatch:
    """Stacks per-batch graphs into one padded ``GraphBatch`` of host arrays.

    Args:
      batches: per batch, its V view graphs and its consensus.

    Returns:
      A ``GraphBatch`` whose arrays have a leading axis of ``len(batches)``.
    """
    n_views = len(batches[0][0])
    sizes = {views[0].n_nodes for views, _ in batches}
    if len(sizes) != 1:
        raise ValueError(f"all batches must have the same number of cells, got {sorted(sizes)}")
    n = sizes.pop()
    edge_pad = [max(views[v].n_edges for views, _ in batches) for v in range(n_views)]
    cons_pad = max(c.senders.size for _, c in batches)

    def one(views, cons) -> GraphBatch:
        graphs = tuple(graphs_tuple(view.senders, view.receivers, n, nodes=view.features, n_edges_padded=edge_pad[v])
                       for v, view in enumerate(views))
        total_edges = sum(view.n_edges for view in views)
        return GraphBatch(
            views=graphs,
            mik=np.concatenate([view.mik for view in views], axis=1).astype(np.int32),
            consensus=graphs_tuple(cons.senders, cons.receivers, n, n_edges_padded=cons_pad),
            pos_weight=np.float32(pos_weight(n, total_edges)),
            loss_gre=np.float32(cons.loss_gre))

    # Filled in place, one batch at a time: peak memory is the stacked result plus one batch.
    first = one(*batches[0])
    stacked = jax.tree_util.tree_map(lambda x: np.empty((len(batches),) + np.shape(x), np.asarray(x).dtype), first)
    for i, (views, cons) in enumerate(batches):
        current = first if i == 0 else one(views, cons)
        for dst, src in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(current)):
            dst[i] = src
    return stacked


def batch_at(batches: GraphBatch, i: int) -> GraphBatch:
    """The ``i``-th batch of a stacked ``GraphBatch``."""
    return jax.tree_util.tree_map(lambda x: x[i], batches)
