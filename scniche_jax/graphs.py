"""Per-view kNN graphs: adjacency, GCN edge weights and MIK indices.

Everything here is host-side numpy/scipy; the result is turned into device arrays by
:mod:`scniche_jax.train`. A view graph is the symmetric kNN graph ``A = max(K, Kᵀ)`` of
one view's features, with self-loops, as the reference builds it.
"""
from __future__ import annotations

from dataclasses import dataclass

import jraph
import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class ViewGraph:
    """One view's graph on B cells.

    Attributes:
      features: (B, F) float32 node features.
      senders, receivers: (E,) int32 edges of ``A`` in CSR order (src → dst).
      mik: (B, mik) int32, the first ``mik`` columns of the kNN index matrix.
    """

    features: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    mik: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.senders.shape[0])


def knn_indices(features: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k + 1`` nearest points of every row (the row itself usually first).

    Uses scikit-learn's exact euclidean search like the reference, so ties among duplicate
    rows are broken the same way on the same scikit-learn version.

    Args:
      features: (N, F) array, any float dtype (the reference searches in the view's dtype).
      k: number of neighbours besides the cell itself.

    Returns:
      (N, k + 1) int64 index matrix.
    """
    nn = NearestNeighbors(n_neighbors=k + 1, metric="euclidean").fit(features)
    _, idx = nn.kneighbors(features)
    return idx


def symmetric_knn_adjacency(idx: np.ndarray) -> sp.csr_matrix:
    """``max(K, Kᵀ)`` for the 0/1 kNN connectivity ``K`` given by an index matrix."""
    n, width = idx.shape
    rows = np.repeat(np.arange(n), width)
    knn = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(n, n))
    knn.data[:] = 1.0  # duplicates (impossible for kNN) must not count twice
    adj = knn.maximum(knn.T).tocsr()
    adj.sort_indices()
    return adj


def build_view_graph(features: np.ndarray, n_neighbors: int = 20, mik: int = 5) -> ViewGraph:
    """Builds one view's kNN graph and MIK matrix as the reference does.

    Args:
      features: (B, F) view features; the kNN search runs in their own dtype.
      n_neighbors: neighbours per cell besides itself (reference ``k_cutoff_graph``).
      mik: columns of the kNN index matrix kept for the mutual-information loss.

    Returns:
      The :class:`ViewGraph`.
    """
    features = np.asarray(features)
    idx = knn_indices(features, n_neighbors)
    adj = symmetric_knn_adjacency(idx)
    coo = adj.tocoo()
    return ViewGraph(
        features=np.ascontiguousarray(features, dtype=np.float32),
        senders=coo.row.astype(np.int32),
        receivers=coo.col.astype(np.int32),
        mik=idx[:, :mik].astype(np.int32),
    )


def view_graph_from_edges(features: np.ndarray, senders: np.ndarray, receivers: np.ndarray,
                          mik: np.ndarray) -> ViewGraph:
    """Wraps an existing edge list (e.g. a fixture's) as a :class:`ViewGraph`."""
    return ViewGraph(np.asarray(features, np.float32), np.asarray(senders, np.int32),
                     np.asarray(receivers, np.int32), np.asarray(mik, np.int32))


def gcn_edge_weights(senders: np.ndarray, receivers: np.ndarray, n_nodes: int) -> np.ndarray:
    """DGL ``GraphConv(norm='both')`` weights ``outdeg(src)^-1/2 · indeg(dst)^-1/2``.

    Degrees count every edge (self-loops and duplicates included), clamped to at least 1.
    """
    out_deg = np.maximum(np.bincount(senders, minlength=n_nodes), 1).astype(np.float32)
    in_deg = np.maximum(np.bincount(receivers, minlength=n_nodes), 1).astype(np.float32)
    return (out_deg[senders] ** -0.5 * in_deg[receivers] ** -0.5).astype(np.float32)


def graphs_tuple(senders: np.ndarray, receivers: np.ndarray, n_nodes: int,
                 nodes: np.ndarray | None = None, n_edges_padded: int | None = None
                 ) -> jraph.GraphsTuple:
    """A single-graph ``jraph.GraphsTuple`` whose ``edges`` hold the GCN weights.

    Edges beyond the real ones (``n_edges_padded``) point at node 0 with weight 0, so that
    graphs of different batches share one shape and one compiled program.
    """
    weights = gcn_edge_weights(senders, receivers, n_nodes)
    n_real = senders.shape[0]
    total = n_real if n_edges_padded is None else n_edges_padded
    if total < n_real:
        raise ValueError(f"n_edges_padded={total} is smaller than the {n_real} real edges")
    pad = total - n_real
    senders = np.concatenate([senders, np.zeros(pad, np.int32)]).astype(np.int32)
    receivers = np.concatenate([receivers, np.zeros(pad, np.int32)]).astype(np.int32)
    weights = np.concatenate([weights, np.zeros(pad, np.float32)])
    return jraph.GraphsTuple(
        nodes=nodes, edges=weights, senders=senders, receivers=receivers,
        n_node=np.array([n_nodes], np.int32), n_edge=np.array([n_real], np.int32), globals=None)


def pos_weight(n_nodes: int, total_edges: int) -> float:
    """Positive-class weight of the reconstruction loss: ``(B² − E/2) / E · 2``."""
    return float(n_nodes**2 - total_edges / 2) / total_edges * 2
