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
        import scanpy as sc
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("method='leiden' needs scanpy and leidenalg: pip install 'scniche-jax[leiden]'") from err
    tmp = ad.AnnData(np.asarray(x, np.float32))
    sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X", random_state=random_state)
    sc.tl.leiden(tmp, resolution=resolution, random_state=random_state)
    return tmp.obs["leiden"].astype(str).to_numpy()
