"""Tools on a trained embedding (the AnnData edge of clustering)."""
from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from . import validation as val
from .clustering import kmeans_labels, leiden_labels, stability_scores

log = logging.getLogger(__name__)

__all__ = ["clustering", "cluster_stability"]


def clustering(adata: ad.AnnData, target_k: int | None = None, method: str = "kmeans",
               resolution: float = 0.5, n_neighbor: int = 20, use_rep: str = "X_scniche",
               add_key: str = "scNiche", random_state: int = 123, n_init: int = 10,
               copy: bool = False) -> ad.AnnData:
    """Clusters the embedding into niches, labelled ``Niche<i>`` (REFERENCE §7).

    Args:
      adata: cells with ``obsm[use_rep]``.
      target_k: number of niches (KMeans).
      method: ``'kmeans'`` (scikit-learn, ``random_state=123``, ``n_init=10`` like the
        reference on scikit-learn 1.3) or ``'leiden'`` (needs the ``leiden`` extra).
      resolution, n_neighbor: Leiden resolution and neighbour count.
      use_rep: ``obsm`` key of the embedding.
      add_key: ``obs`` column written.
      random_state, n_init: KMeans seed and restarts.
      copy: work on and return a copy.

    Returns:
      The AnnData with ``obs[add_key]``, an ordered categorical.
    """
    if not isinstance(method, str) or method.lower() not in ("kmeans", "leiden"):
        raise ValueError(f"method must be 'kmeans' or 'leiden', got {method!r}.")
    method = method.lower()
    val.check_obsm_key(adata, use_rep, "Run scniche_jax.fit(adata) first or pass use_rep=...")
    x = val.dense_float_matrix(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]", adata.n_obs)
    if method == "kmeans":
        if target_k is None:
            raise ValueError("method='kmeans' needs target_k, the number of niches.")
        target_k = val.check_positive_int(target_k, "target_k")
        if target_k > adata.n_obs:
            raise ValueError(f"target_k={target_k} exceeds the {adata.n_obs} cells; choose target_k <= {adata.n_obs}.")
        labels = kmeans_labels(x, target_k, random_state, n_init)
    else:
        labels = leiden_labels(x, resolution, n_neighbor)
    order = sorted(set(labels.tolist()))
    categories = [f"Niche{i}" for i in order]
    adata = adata.copy() if copy else adata
    adata.obs[add_key] = pd.Categorical([f"Niche{i}" for i in labels], categories=categories, ordered=True)
    return adata


def cluster_stability(adata: ad.AnnData, n_clusters: tuple[int, int] = (2, 12), use_rep: str = "X_scniche",
                      max_runs: int = 10, convergence_tol: float = 1e-2, random_state: int = 0,
                      n_init: int = 10) -> int:
    """Chooses the number of niches by the stability of KMeans across neighbouring k.

    Args:
      adata: cells with ``obsm[use_rep]``.
      n_clusters: smallest and largest k to consider (inclusive).
      use_rep: ``obsm`` key of the embedding.
      max_runs: most KMeans repetitions (a new seed each); at least 2.
      convergence_tol: stop once the mean stabilities change by less than this.
      random_state: seed of the first run.
      n_init: KMeans restarts per fit (10, like the reference on scikit-learn 1.3).

    Returns:
      The most stable k. Also writes ``adata.uns['best_k']`` and ``adata.uns['robustness_df']``
      (columns ``K``, ``Stability``), the reference's names.
    """
    val.check_obsm_key(adata, use_rep, "Run scniche_jax.fit(adata) first or pass use_rep=...")
    x = val.dense_float_matrix(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]", adata.n_obs)
    if (not isinstance(n_clusters, (tuple, list)) or len(n_clusters) != 2
            or not all(isinstance(k, (int, np.integer)) for k in n_clusters) or not 2 <= n_clusters[0] <= n_clusters[1]):
        raise ValueError(f"n_clusters must be (smallest k, largest k) with 2 <= smallest <= largest, got {n_clusters!r}.")
    if n_clusters[1] + 1 > adata.n_obs:
        raise ValueError(f"n_clusters={tuple(n_clusters)} needs at least {n_clusters[1] + 1} cells, got {adata.n_obs}.")
    val.check_positive_int(max_runs, "max_runs", minimum=2)
    scores, best_k, runs = stability_scores(x, tuple(n_clusters), max_runs, convergence_tol, random_state, n_init)
    log.info("cluster_stability: best k = %d after %d runs", best_k, runs)
    adata.uns["best_k"] = best_k
    adata.uns["robustness_df"] = pd.DataFrame([(k, v) for k, vals in scores.items() for v in vals],
                                              columns=["K", "Stability"])
    return best_k
