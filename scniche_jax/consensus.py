"""The graph fusion network's output, the fused matrix R and the consensus graph.

The GFN is never trained (its output is rounded, and the reference rebuilds the graph from
detached values), so R, the consensus graph and ``loss_gre`` are constants of a graph or
batch: they are computed here once, row block by row block, instead of every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
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


def fused_matrix_reference(gfn_params, adjacency_sum: sp.csr_matrix, block: int = 1024) -> sp.csr_matrix:
    """R computed densely, block by block: the original (slow) definition, kept as the reference.

    Every row of S goes through :func:`_fused_block` as a (block, B) dense array (the last block
    padded with zero rows). :func:`fused_matrix` returns exactly this matrix, faster.
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


# ---------------------------------------------------------------------------------------------
# The fast build.
#
# R_ij = [round(clip(G_ij, 0, 1) + 0.1) = 1] is a monotone step in the fp32 value G_ij, so it is
# [G_ij >= THRESHOLD] for one fp32 number (found once by evaluating ``round_fused`` itself). On
# the CPU a cheap *screen* computes every G_ij to within a proven bound E_ij of the value the
# reference computes (whatever order its fp32 sums run in):
#
# * the first layer as a sparse gather-sum of W1 rows in fp32 (S has ~3(k+1) small-integer
#   nonzeros per row), error <= gamma(nnz+1) (sum|S||W1| + |b1|) for it and for the reference;
# * the second layer with bf16 operands and fp32 accumulation, error <= 2^-8 sum|r||W2| from
#   rounding the operands plus gamma(2n+2)(...) from the sums;
# * the reference's own fp32 rounding in the second layer, gamma(n+1)(...).
#
# Every sum |r||W2| is bounded by ||r||_1 max_k|W2_kj|, so E is a cheap rank-few matrix. Entries
# with G - E >= THRESHOLD are certainly 1, those with G + E < THRESHOLD certainly 0; a row with
# any other entry (a *candidate*) is recomputed by the reference's own compiled block
# (``_fused_block``, same (block, B) shape, the row at its own position in its block), so the
# result is the reference's, bit for bit. At 5,000 cells per batch no row is a candidate (the
# largest GFN outputs are ~0.26 against a threshold of ~0.4); at a few hundred cells many are,
# so small graphs skip the screen.
# ---------------------------------------------------------------------------------------------

_U32 = 2.0 ** -24  # unit roundoff of fp32


def _gamma(m):
    """Higham's gamma_m = m·u / (1 − m·u): the relative error bound of an m-term fp32 sum."""
    return m * _U32 / (1.0 - m * _U32)


@lru_cache(maxsize=None)
def fused_threshold() -> float:
    """The smallest fp32 g with ``round_fused(g) == 1`` (checked to be a clean step)."""
    lo, hi = np.float32(0.35), np.float32(0.45)
    bits = np.arange(lo.view(np.int32), hi.view(np.int32) + 1, dtype=np.int32)
    grid = bits.view(np.float32)
    ones = np.asarray(jax.jit(round_fused)(jnp.asarray(grid))) > 0
    first = int(np.argmax(ones))
    if ones[0] or not ones[-1] or not ones[first:].all() or ones[:first].any():
        raise RuntimeError("round_fused is not a monotone step between 0.35 and 0.45")
    return float(grid[first])


@lru_cache(maxsize=None)
def _bf16_accumulates_in_fp32(platform: str) -> bool:
    """Whether a bf16 x bf16 -> fp32 dot on ``platform`` keeps fp32 partial sums (the bound needs it)."""
    n = 4096
    a = jnp.ones((2, n), jnp.bfloat16)
    b = jnp.concatenate([jnp.ones((n, 1), jnp.bfloat16), jnp.full((n, 1), 2.0 ** -8, jnp.bfloat16)], axis=1)
    out = np.asarray(jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))(a, b))
    return bool(out[0, 0] == n and out[0, 1] == n * 2.0 ** -8)


@dataclass(frozen=True)
class PreparedGfn:
    """A GFN's parameters with what the screen needs, computed once for all batches."""

    params: dict
    n_nodes: int
    w1: jax.Array          # (B, B/2) fp32
    b1: jax.Array          # (B/2,)
    w2_bf16: jax.Array     # (B/2, B)
    b2: jax.Array          # (B,)
    col_max: jax.Array     # max_k |W2_kj| (fp32, rounded up)
    col_l1: jax.Array      # sum_k |W2_kj| (rounded up)
    w1_max: jax.Array      # max |W1| (0-d, rounded up)
    b1_max: jax.Array      # max |b1|

    @property
    def screen_arrays(self) -> tuple:
        return (self.w1, self.b1, self.w2_bf16, self.b2, self.col_max, self.col_l1, self.w1_max, self.b1_max)

    @classmethod
    def of(cls, gfn_params) -> "PreparedGfn":
        if isinstance(gfn_params, PreparedGfn):
            return gfn_params
        hidden, output = gfn_params["hidden"], gfn_params["output"]
        w2 = np.asarray(output["kernel"], np.float32)
        w1 = np.asarray(hidden["kernel"], np.float32)
        up = 1.0 + 1e-6
        return cls(params=gfn_params, n_nodes=w1.shape[0], w1=jnp.asarray(w1),
                   b1=jnp.asarray(hidden["bias"], jnp.float32), w2_bf16=jnp.asarray(w2, jnp.bfloat16),
                   b2=jnp.asarray(output["bias"], jnp.float32),
                   col_max=jnp.asarray(np.abs(w2).max(axis=0) * up, jnp.float32),
                   col_l1=jnp.asarray(np.abs(w2).astype(np.float64).sum(axis=0) * up, jnp.float32),
                   w1_max=jnp.float32(np.abs(w1).max() * up),
                   b1_max=jnp.float32(np.abs(np.asarray(hidden["bias"], np.float32)).max() * up))


def padded_rows(adjacency_sum: sp.csr_matrix, multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a CSR matrix as padded (B, w) column indices and values (padding: column 0, value 0)."""
    csr = adjacency_sum.tocsr()
    csr.sum_duplicates()
    counts = np.diff(csr.indptr)
    width = max(int(counts.max()) if counts.size else 1, 1)
    width = -(-width // multiple) * multiple
    slot = np.arange(csr.indices.size) - np.repeat(csr.indptr[:-1], counts)
    row = np.repeat(np.arange(csr.shape[0]), counts)
    idx = np.zeros((csr.shape[0], width), np.int32)
    val = np.zeros((csr.shape[0], width), np.float32)
    idx[row, slot] = csr.indices
    val[row, slot] = csr.data
    return idx, val


@partial(jax.jit, static_argnames=("n_nodes",))
def _dense_rows(idx: jax.Array, val: jax.Array, n_nodes: int) -> jax.Array:
    """Padded rows → dense (rows, B) fp32 (exact: one value per column, padding adds 0)."""
    rows = jnp.zeros((idx.shape[0], n_nodes), jnp.float32)
    return rows.at[jnp.arange(idx.shape[0])[:, None], idx].add(val)


@jax.jit
def _pack(mask: jax.Array) -> jax.Array:
    return jnp.packbits(mask, axis=1)


def screen_values(arrays: tuple, idx: jax.Array, val: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The screen's GFN output ``g`` for padded rows and a bound ``E`` with |g − reference| <= E."""
    w1, b1, w2_bf16, b2, col_max, col_l1, w1_max, b1_max = arrays
    n_hidden = w1.shape[1]

    def add_neighbour(t, acc):
        return acc + val[:, t, None] * w1[idx[:, t]]

    h = jax.lax.fori_loop(0, idx.shape[1], add_neighbour, jnp.broadcast_to(b1, (idx.shape[0], n_hidden)))
    r = jax.nn.relu(h)
    g = jnp.dot(r.astype(jnp.bfloat16), w2_bf16, preferred_element_type=jnp.float32) + b2

    # Per-row scalars (fp32, then inflated to stay upper bounds).
    nnz = jnp.sum(val != 0, axis=1).astype(jnp.float32)
    s_l1 = jnp.sum(jnp.abs(val), axis=1)
    m = nnz + 1.0
    e1 = m * _U32 / (1.0 - m * _U32) * (s_l1 * w1_max + b1_max)          # layer 1, either side
    r_l1 = jnp.sum(r, axis=1) * (1.0 + 2.0 * _gamma(n_hidden))
    r_l1_ref = r_l1 + 2.0 * n_hidden * e1                                          # the reference's ||r||_1
    col_max, col_l1, b2_abs = col_max[None], col_l1[None], jnp.abs(b2)[None]
    quant = (2.0 ** -8 + 2.0 ** -17) * r_l1[:, None] * col_max                       # bf16 operands
    ours = _gamma(2 * n_hidden + 2) * ((1.0 + 2.0 ** -7) * r_l1[:, None] * col_max + b2_abs)
    ref = _gamma(n_hidden + 1) * (r_l1_ref[:, None] * col_max + b2_abs)
    bound = (quant + ours + ref + 2.0 * e1[:, None] * col_l1) * 1.01 + 1e-6
    return g, bound


@partial(jax.jit, static_argnames=("threshold",))
def _screen_block(arrays: tuple, idx: jax.Array, val: jax.Array, threshold: float):
    """Screen of a block of rows: packed bits of the proven ones and which rows have a candidate."""
    g, bound = screen_values(arrays, idx, val)
    ones = g - bound >= threshold
    zeros = g + bound < threshold
    candidate_rows = jnp.any(~(ones | zeros), axis=1)
    return jnp.packbits(ones, axis=1), candidate_rows


def _unpack_rows(bits: np.ndarray, n: int, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the set bits of packed rows, rows renumbered by ``row_ids``."""
    live = np.flatnonzero(bits.any(axis=1))
    if live.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mask = np.unpackbits(bits[live], axis=1, count=n).astype(bool)
    r, c = np.nonzero(mask)
    return row_ids[live[r]], c


def _exact_rows(gfn_params, idx: np.ndarray, val: np.ndarray, rows: np.ndarray, n: int, block: int):
    """Reference R rows for ``rows``, each computed at its own position in a (block, B) block.

    Rows from different blocks share one computed block when their positions differ, so a few
    candidate rows cost a few blocks, never more than the reference.
    """
    block = min(block, n)
    width = idx.shape[1]
    positions = rows % block
    groups: list[list[int]] = []
    used: list[set] = []
    for row, pos in zip(rows.tolist(), positions.tolist()):
        for g, taken in zip(groups, used):
            if pos not in taken:
                g.append(row)
                taken.add(pos)
                break
        else:
            groups.append([row])
            used.append({pos})
    out_r, out_c = [], []
    for g in groups:
        g = np.asarray(g)
        b_idx = np.zeros((block, width), np.int32)
        b_val = np.zeros((block, width), np.float32)
        b_idx[g % block], b_val[g % block] = idx[g], val[g]
        mask = _fused_block(gfn_params, _dense_rows(jnp.asarray(b_idx), jnp.asarray(b_val), n), n)
        bits = np.asarray(_pack(mask))[g % block]
        r, c = _unpack_rows(bits, n, g)
        out_r.append(r)
        out_c.append(c)
    return np.concatenate(out_r), np.concatenate(out_c)


def fused_matrix(gfn_params, adjacency_sum: sp.csr_matrix, block: int = 1024, method: str = "auto",
                 screen_block: int = 512) -> sp.csr_matrix:
    """R for a whole graph: exactly :func:`fused_matrix_reference`, computed faster.

    Args:
      gfn_params: parameters of :class:`GraphFusionNetwork` for B nodes, or a :class:`PreparedGfn`.
      adjacency_sum: sparse ``S = Σ_v A_v`` (B×B).
      block: rows per block of the reference computation (its shape decides the fp32 rounding).
      method: ``'screen'`` (bounded cheap pass, reference blocks only for rows near the
        threshold), ``'exact'`` (reference blocks for every row, built on the device from the
        sparse rows) or ``'auto'`` (the screen on a CPU for B >= 2048, else exact).
      screen_block: rows per screened block.

    Returns:
      R as a sparse 0/1 float32 matrix.
    """
    n = adjacency_sum.shape[0]
    gfn = PreparedGfn.of(gfn_params)
    if gfn.n_nodes != n:
        raise ValueError(f"the fusion network is for {gfn.n_nodes} nodes, the graph has {n}")
    platform = jax.devices()[0].platform
    if method == "auto":
        method = "screen" if platform == "cpu" and n >= 2048 else "exact"
    if method == "screen" and not _bf16_accumulates_in_fp32(platform):
        method = "exact"
    idx, val = padded_rows(adjacency_sum)
    if method == "exact":
        rows = np.arange(n)
        r, c = _exact_rows(gfn.params, idx, val, rows, n, block)
    elif method == "screen":
        threshold = fused_threshold()
        screen_block = min(screen_block, n)
        # Rows by decreasing length, so each block's padded width fits its own rows.
        counts = np.count_nonzero(val, axis=1)
        order = np.argsort(-counts, kind="stable")
        results = []
        for s in range(0, n, screen_block):
            rows = order[s:s + screen_block]
            # Widths in steps of 32 (zero padding adds exact zeros), so batches share compiled screens.
            width = max(-(-int(counts[rows].max()) // 32) * 32, 32)
            used = min(width, idx.shape[1])
            b_idx = np.zeros((screen_block, width), np.int32)
            b_val = np.zeros((screen_block, width), np.float32)
            b_idx[: rows.size, :used], b_val[: rows.size, :used] = idx[rows, :used], val[rows, :used]
            results.append((rows, _screen_block(gfn.screen_arrays, jnp.asarray(b_idx), jnp.asarray(b_val), threshold)))
        rs, cs, candidates = [], [], []
        for rows, (bits, cand) in results:
            cand = np.asarray(cand)[: rows.size]
            bits = np.array(bits)[: rows.size]
            bits[cand] = 0
            r, c = _unpack_rows(bits, n, rows)
            rs.append(r)
            cs.append(c)
            candidates.append(rows[cand])
        candidates = np.concatenate(candidates)
        if candidates.size:
            r, c = _exact_rows(gfn.params, idx, val, candidates, n, block)
            rs.append(r)
            cs.append(c)
        r, c = np.concatenate(rs), np.concatenate(cs)
    else:
        raise ValueError(f"method must be 'auto', 'screen' or 'exact', got {method!r}")
    fused = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, n))
    fused.sort_indices()
    return fused


def graph_fusion_loss(fused: sp.csr_matrix, views: Sequence[ViewGraph], semantics: str = "gpu") -> float:
    """``mean_v MSE(M, A_v)`` over B² entries, with M = R (``'gpu'``) or R + Rᵀ (``'cpu'``).

    The reference reports R + Rᵀ on the CPU because of an aliasing side effect and R on a
    GPU (docs: *What the reference computes*); the gradient is zero either way.
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
                    block: int = 1024, method: str = "auto") -> Consensus:
    """R, the consensus graph and ``loss_gre`` for one graph or batch.

    ``gfn_params`` may be a :class:`PreparedGfn` (prepare it once for many batches);
    ``method`` is :func:`fused_matrix`'s.
    """
    fused = fused_matrix(gfn_params, view_adjacency_sum(views), block, method)
    senders, receivers = consensus_from_fused(fused)
    return Consensus(fused, senders, receivers, graph_fusion_loss(fused, views, gre_semantics))


def majority_consensus(view_graphs, votes: int = 2):
    """Consensus graph of one graph or batch: edges in at least ``votes`` of the view graphs.

    ``variant="improved"``'s replacement for :func:`build_consensus` (same return type): symmetric,
    every node keeps exactly one self-loop, and ``fused`` holds the kept off-diagonal edges.
    ``loss_gre`` is 0 (this graph has no parameters to fit).
    """
    n = view_graphs[0].n_nodes
    need = min(int(votes), len(view_graphs))
    count = sum(view_adjacency(v) for v in view_graphs).tocsr()
    keep = (count >= need).astype(np.float32).tocsr()
    keep.setdiag(0)
    keep.eliminate_zeros()
    keep = keep.maximum(keep.T).tocsr()
    keep.sort_indices()
    coo = keep.tocoo()
    loops = np.arange(n, dtype=np.int32)
    senders = np.concatenate([coo.row.astype(np.int32), loops])
    receivers = np.concatenate([coo.col.astype(np.int32), loops])
    return Consensus(keep, senders, receivers, 0.0)
