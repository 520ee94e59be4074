"""Clustering of embeddings into niches (arrays in, integer labels out)."""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits


def kmeans_labels(x: np.ndarray, n_clusters: int, random_state: int = 123, n_init: int = 10) -> np.ndarray:
    """KMeans labels (int64) of the rows of ``x``.

    Runs with one OpenMP thread: on small machines scikit-learn's OpenMP KMeans spins for
    seconds per call (STACK.md measured 65× on 2 cores).
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
    tmp = ad.AnnData(np.asarray(x, np.float32))
    sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X", random_state=random_state)
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
