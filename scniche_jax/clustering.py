"""Clustering of embeddings into niches (arrays in, integer labels out)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits


def kmeans_labels(x: np.ndarray, n_clusters: int, random_state: int = 123, n_init: int = 10) -> np.ndarray:
    """KMeans labels (int64) of the rows of ``x``.

    Runs with one OpenMP thread: on small machines scikit-learn's OpenMP KMeans spins for
    seconds per call (tens of times slower on 2 cores).
    """
    with threadpool_limits(1, user_api="openmp"):
        return KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init).fit_predict(x)


def leiden_labels(x: np.ndarray, resolution: float = 0.5, n_neighbors: int = 20, random_state: int = 0) -> np.ndarray:
    """Leiden labels (strings, as scanpy returns them) on a kNN graph of ``x``."""
    try:
        import anndata as ad
        import igraph  # noqa: F401  (scanpy's leiden needs both; say which extra brings them)
        import leidenalg  # noqa: F401
        import scanpy as sc
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("method='leiden' needs scanpy and leidenalg: pip install 'scniche-jax[leiden]'") from err
    from sklearn.neighbors import KNeighborsTransformer

    tmp = ad.AnnData(np.asarray(x, np.float32))
    # Exact neighbours at every size: from 8,192 cells scanpy's default switches to
    # pynndescent, whose sparse output scanpy 1.11 cannot read under scipy >= 1.17
    # (AttributeError: 'csr_array' object has no attribute 'getnnz'). Below that size this is
    # the graph scanpy builds itself (connectivities equal to 3e-6).
    exact = KNeighborsTransformer(n_neighbors=n_neighbors, mode="distance")
    sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X", random_state=random_state, transformer=exact)
    sc.tl.leiden(tmp, resolution=resolution, random_state=random_state)
    return tmp.obs["leiden"].astype(str).to_numpy()


def stability_scores(x: np.ndarray, k_range: tuple[int, int], max_runs: int = 10, tol: float = 1e-2,
                     random_state: int = 0, n_init: int = 10) -> tuple[dict[int, list[float]], int, int]:
    """Clustering stability of each k in ``k_range`` (inclusive), for choosing the number of niches.

    Each run clusters ``x`` with KMeans for every k from ``k_range[0] - 1`` to
    ``k_range[1] + 1`` (a new seed per run). The similarity (Fowlkes–Mallows) between the
    k-clustering of a run and the (k+1)-clustering of every earlier run measures how
    consistently neighbouring k split the data; the stability of k adds its similarities to
    k − 1 and to k + 1. Runs stop early once the mean stabilities change by less than
    ``tol`` (mean absolute relative change).

    Returns:
      ``(scores, best_k, runs)``: per k the list of stability values, the k of highest mean
      stability, and the number of runs made.
    """
    from sklearn.metrics import fowlkes_mallows_score

    lo, hi = k_range
    grid = list(range(max(1, lo - 1), hi + 2))
    labels: dict[int, list[np.ndarray]] = {k: [] for k in grid}
    pair_scores: dict[int, list[float]] = {k: [] for k in grid[:-1]}
    previous = None
    runs = 0
    for run in range(max_runs):
        current = {k: kmeans_labels(x, k, random_state=random_state + run, n_init=n_init) for k in grid}
        for k in grid[:-1]:
            pair_scores[k].extend(fowlkes_mallows_score(current[k], earlier) for earlier in labels[k + 1])
        for k in grid:
            labels[k].append(current[k])
        runs = run + 1
        if run == 0:
            continue
        scores = {k: [a + b for a, b in zip(pair_scores[k - 1], pair_scores[k])] for k in range(lo, hi + 1)
                  if k - 1 in pair_scores}
        means = np.array([np.mean(v) for v in scores.values()])
        if previous is not None and np.mean(np.abs((means - previous) / previous)) < tol:
            break
        previous = means
    scores = {k: [a + b for a, b in zip(pair_scores[k - 1], pair_scores[k])] for k in range(lo, hi + 1)
              if k - 1 in pair_scores}
    best_k = max(scores, key=lambda k: np.mean(scores[k]))
    return scores, int(best_k), runs


def stability_subset(n_cells: int, max_cells: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted indices of the cells a stability search uses: None for all of them.

    Above ``max_cells`` cells, ``max_cells`` of them drawn without replacement by
    ``np.random.default_rng(seed)``: KMeans's cost grows with the cells while the choice of K
    depends on the niches' shapes, which a random subset of tens of thousands keeps.
    """
    if max_cells is None or n_cells <= max_cells:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_cells, size=int(max_cells), replace=False))


def spatial_neighbour_shares(coords: np.ndarray, groups: Optional[np.ndarray], n_neighbors: int) -> sp.csr_matrix:
    """Row-stochastic N×N matrix over each cell's ``n_neighbors`` nearest cells of its own slice.

    The cell itself is left out; a slice with too few cells uses all the others. Row ``i``
    times a one-hot label matrix is the share of ``i``'s neighbours in each niche.

    Args:
      coords: (N, ≥2) coordinates (the first two are used).
      groups: one slice id per cell, or None for one slice.
      n_neighbors: neighbours per cell.
    """
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, np.float64)[:, :2]
    n = coords.shape[0]
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    rows, cols = [], []
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = min(int(n_neighbors) + 1, idx.size)
        if k < 2:
            continue
        _, nb = NearestNeighbors(n_neighbors=k).fit(coords[idx]).kneighbors(coords[idx])
        src = np.repeat(idx, k)
        dst = idx[nb.ravel()]
        # kneighbors lists the query point first only without ties at distance 0, so drop
        # self by identity rather than by position.
        keep = src != dst
        rows.append(src[keep])
        cols.append(dst[keep])
    if not rows:
        return sp.csr_matrix((n, n))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    # Normalise by each row's own count: with duplicate coordinates the cell itself can fall
    # outside its k nearest, and its row then keeps k others instead of k - 1.
    w = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    w.data[:] = 1.0
    counts = np.asarray(w.sum(axis=1)).ravel()
    return (sp.diags(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)) @ w).tocsr()


def potts_refine(x: np.ndarray, labels: np.ndarray, shares: sp.csr_matrix, weight: float,
                 max_passes: int = 20) -> tuple[np.ndarray, int]:
    """Niche labels under a spatial Potts prior, by iterated conditional modes from ``labels``.

    Each pass gives every cell the niche ``c`` that minimises
    ``‖x_i − μ_c‖² / s − weight · share_i(c)``, where ``μ_c`` are the current niche means,
    ``s`` is the mean squared distance of a cell to its own niche mean (so ``weight`` is in
    units of a typical within-niche spread) and ``share_i(c)`` is the fraction of ``i``'s
    spatial neighbours in niche ``c`` (:func:`spatial_neighbour_shares`). A cell whose
    features clearly favour a niche keeps it; a cell between niches follows its neighbours.
    Updates are simultaneous; the passes stop when no label changes or after ``max_passes``.

    Args:
      x: (N, d) representation that was clustered.
      labels: (N,) integer start labels (e.g. KMeans).
      shares: (N, N) row-stochastic neighbour matrix.
      weight: Potts weight (0 returns ``labels`` unchanged).
      max_passes: upper bound on the passes.

    Returns:
      ``(labels, passes)``: the refined labels (same codes; a niche may empty) and the
      number of passes that changed something.
    """
    labels = np.asarray(labels).astype(np.int64)
    if weight == 0 or labels.size == 0:
        return labels, 0
    x = np.asarray(x, np.float64)
    n_labels = int(labels.max()) + 1
    rows = np.arange(labels.size)
    sq_norms = (x ** 2).sum(axis=1)
    for passes in range(max_passes):
        onehot = sp.csr_matrix((np.ones(labels.size), (rows, labels)), shape=(labels.size, n_labels))
        sizes = np.asarray(onehot.sum(axis=0)).ravel()
        means = (onehot.T @ x) / np.maximum(sizes, 1)[:, None]
        dist = np.maximum(sq_norms[:, None] - 2.0 * x @ means.T + (means ** 2).sum(axis=1)[None], 0.0)
        dist[:, sizes == 0] = np.inf
        spread = dist[rows, labels].mean()
        share = np.asarray((shares @ onehot).todense())
        new = np.argmin(dist / max(spread, np.finfo(np.float64).tiny) - weight * share, axis=1)
        if np.array_equal(new, labels):
            return labels, passes
        labels = new
    return labels, max_passes
