"""Tools on a trained embedding (the AnnData edge of clustering)."""
from __future__ import annotations

import logging

import anndata as ad
import pandas as pd

from . import validation as val
from .clustering import kmeans_labels, leiden_labels

log = logging.getLogger(__name__)

__all__ = ["clustering"]


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
