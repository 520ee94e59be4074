"""The graph fusion network's output, the fused matrix R and the consensus graph.

The GFN is never trained (its output is rounded, and the reference rebuilds the graph from
detached values), so R, the consensus graph and ``loss_gre`` are constants of a graph or
batch: they are computed here once, row block by row block, instead of every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .graphs import ViewGraph
from .networks import GraphFusionNetwork


@dataclass(frozen=True)
class Consensus:
    """What the fusion network contributes to one graph or batch.

    Attributes:
      fused: (B, B) sparse 0/1 matrix R.
      senders, receivers: edges of the consensus graph (nonzeros of R + Rᵀ in row-major
        order) followed by one self-loop per node.
      loss_gre: ``mean_v MSE(R, A_v)`` (``R + Rᵀ`` with ``gre_semantics='cpu'``).
    """

    fused: sp.csr_matrix
    senders: np.ndarray
    receivers: np.ndarray
    loss_gre: float


def view_adjacency_sum(views: Sequence[ViewGraph]) -> sp.csr_matrix:
    """``S = Σ_v A_v`` as a sparse float32 matrix."""
    n = views[0].n_nodes
    total = sp.csr_matrix((n, n), dtype=np.float32)
    for v in views:
        total = total + view_adjacency(v)
    return total.tocsr()


def view_adjacency(view: ViewGraph) -> sp.csr_matrix:
    n = view.n_nodes
    adj = sp.csr_matrix((np.ones(view.n_edges, np.float32), (view.senders, view.receivers)), shape=(n, n))
    adj.data[:] = 1.0
    return adj


@partial(jax.jit, static_argnames=("n_nodes",))
def gfn_rows(gfn_params, rows: jax.Array, n_nodes: int) -> jax.Array:
    """Raw GFN output for a block of rows of S (fp32, highest precision)."""
    return GraphFusionNetwork(n_nodes).apply({"params": gfn_params}, rows)


def round_fused(gfn_out: jax.Array) -> jax.Array:
    """``round(clamp(G, 0, 1) + 0.1)`` in fp32 with round-half-to-even, as 0/1 float32."""
    return jnp.round(jnp.clip(gfn_out, 0.0, 1.0) + jnp.float32(0.1))


@partial(jax.jit, static_argnames=("n_nodes",))
def _fused_block(gfn_params, rows: jax.Array, n_nodes: int) -> jax.Array:
    return round_fused(gfn_rows(gfn_params, rows, n_nodes)) > 0


def fused_matrix(gfn_params, adjacency_sum: sp.csr_matrix, block: int = 1024) -> sp.csr_matrix:
    """R for a whole graph, computed in row blocks (memory O(block · B)).

    Args:
      gfn_params: parameters of :class:`GraphFusionNetwork` for B nodes.
      adjacency_sum: sparse ``S = Σ_v A_v`` (B×B).
      block: rows per block.

    Returns:
      R as a sparse 0/1 float32 matrix.
    """
    n = adjacency_sum.shape[0]
    block = min(block, n)
    pieces = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.zeros((block, n), np.float32)
        rows[: stop - start] = adjacency_sum[start:stop].toarray()
        mask = np.asarray(_fused_block(gfn_params, jnp.asarray(rows), n))[: stop - start]
        pieces.append(sp.csr_matrix(mask.astype(np.float32)))
    return sp.vstack(pieces).tocsr()


def graph_fusion_loss(fused: sp.csr_matrix, views: Sequence[ViewGraph], semantics: str = "gpu") -> float:
    """``mean_v MSE(M, A_v)`` over B² entries, with M = R (``'gpu'``) or R + Rᵀ (``'cpu'``).

    The reference reports R + Rᵀ on the CPU because of an aliasing side effect and R on a
    GPU (REFERENCE §6); the gradient is zero either way.
    """
    if semantics not in ("gpu", "cpu"):
        raise ValueError(f"gre_semantics must be 'gpu' or 'cpu', got {semantics!r}")
    n = fused.shape[0]
    target = fused + fused.T if semantics == "cpu" else fused
    total = 0.0
    for v in views:
        diff = (target - view_adjacency(v)).tocsr()
        total += float(np.sum(np.asarray(diff.data, np.float64) ** 2)) / (n * n)
    return total / len(views)


def consensus_from_fused(fused: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the consensus graph: nonzeros of R + Rᵀ, then one self-loop per node."""
    n = fused.shape[0]
    sym = (fused + fused.T).tocsr()
    sym.eliminate_zeros()
    sym.sort_indices()
    coo = sym.tocoo()
    loops = np.arange(n, dtype=np.int32)
    senders = np.concatenate([coo.row.astype(np.int32), loops])
    receivers = np.concatenate([coo.col.astype(np.int32), loops])
    return senders, receivers


def build_consensus(gfn_params, views: Sequence[ViewGraph], gre_semantics: str = "gpu",
                    block: int = 1024) -> Consensus:
    """R, the consensus graph and ``loss_gre`` for one graph or batch."""
    fused = fused_matrix(gfn_params, view_adjacency_sum(views), block)
    senders, receivers = consensus_from_fused(fused)
    return Consensus(fused, senders, receivers, graph_fusion_loss(fused, views, gre_semantics))
