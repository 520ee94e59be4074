"""Tools on a trained embedding (clustering into niches) and the analyses that follow.

Scanpy conventions: ``key_added`` names what is written, ``copy=False`` works in place and
returns ``None``, ``copy=True`` returns the new AnnData; functions that compute a table
return it as a tidy ``pandas.DataFrame`` and also store it in ``adata.uns[key_added]``. A
``spatialdata.SpatialData`` is accepted wherever an AnnData is (``table_key`` names its table).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import anndata as ad
import numpy as np
import pandas as pd

from . import validation as val
from ._deprecation import renamed_kwargs
from ._spatialdata import resolve_table
from .analysis import (average_expression, composition, differential_abundance, enrichment, niche_adjacency,
                       niche_markers)
from .clustering import (kmeans_labels, leiden_labels, potts_refine, spatial_neighbour_shares, stability_scores,
                         stability_subset)

log = logging.getLogger(__name__)

__all__ = ["clustering", "cluster_stability", "enrichment", "niche_adjacency", "composition",
           "average_expression", "niche_markers", "differential_abundance"]


@renamed_kwargs(target_k="n_niches", n_neighbor="n_neighbors", add_key="key_added", random_state="seed")
def clustering(adata: Any, n_niches: Optional[int] = None, method: str = "kmeans",
               resolution: float = 0.5, n_neighbors: int = 20, use_rep: str = "X_scniche",
               key_added: str = "scNiche", seed: int = 123, n_init: int = 10,
               spatial_prior: float = 0.0, spatial_neighbors: int = 75, spatial_key: Optional[str] = None,
               sample_key: Optional[str] = None, copy: bool = False,
               table_key: Optional[str] = None) -> Optional[ad.AnnData]:
    """Clusters the embedding into niches, labelled ``Niche<i>``, as the reference does.

    Parameters
    ----------
    adata
        Cells with ``obsm[use_rep]``; or a ``spatialdata.SpatialData`` (its table ``table_key``,
        default ``'table'``).
    n_niches
        Number of niches (KMeans; the reference's ``target_k``, still accepted with a
        ``DeprecationWarning``).
    method
        ``'kmeans'`` (scikit-learn, ``seed=123``, ``n_init=10`` like the reference on scikit-learn
        1.3) or ``'leiden'`` (needs the ``leiden`` extra).
    resolution
        Leiden resolution.
    n_neighbors
        Neighbours per cell of Leiden's kNN graph on the embedding (``n_neighbor`` is the deprecated
        name).
    use_rep
        ``obsm`` key of the embedding.
    key_added
        ``obs`` column written (``add_key`` is the deprecated name).
    seed
        KMeans seed (``random_state`` is the deprecated name).
    n_init
        KMeans restarts (10, like the reference on scikit-learn 1.3).
    spatial_prior
        Weight of a spatial Potts prior on the labels (0, the default: none). Above 0 the clusters
        are refined so that a cell between niches in ``use_rep`` takes the niche most of its spatial
        neighbours have, while a cell whose embedding clearly favours a niche keeps it
        (:func:`scniche_jax.clustering.potts_refine`; the weight is in units of a typical
        within-niche squared distance). ``variant="improved"`` embeddings are meant to be clustered
        with ``ImprovedOptions().spatial_prior`` (1.5).
    spatial_neighbors
        Spatial neighbours per cell (within its slice) of the prior.
    spatial_key
        ``obsm`` key of the coordinates; None reads what pp recorded (``uns['CN_params']``), else
        ``'spatial'``.
    sample_key
        ``obs`` column of slices (neighbours never cross slices); None reads what
        ``pp.process_multi_slices`` recorded (one slice otherwise).
    copy
        Work on and return a copy; otherwise change ``adata`` in place and return None.

    Returns
    -------
    anndata.AnnData or None
        None, or with ``copy=True`` a new AnnData; either way ``obs[key_added]`` is an ordered
        categorical of niche labels.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> adata.obs["scNiche"].cat.categories.tolist()
    ['Niche0', 'Niche1', 'Niche2', 'Niche3']

    With the improved variant, pass its spatial prior on:

    >>> model = sj.fit(adata, variant="improved", epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4, **model.config.improved_options.clustering_kwargs)
    """
    adata = resolve_table(adata, table_key)
    if not isinstance(method, str) or method.lower() not in ("kmeans", "leiden"):
        raise ValueError(f"method must be 'kmeans' or 'leiden', got {method!r}.")
    method = method.lower()
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    val.check_not_empty(adata)
    val.check_obsm_key(adata, use_rep, "Run scniche_jax.fit(adata) first or pass use_rep=...")
    x = val.dense_float_matrix(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]", adata.n_obs)
    prior = _spatial_prior_inputs(adata, spatial_prior, spatial_neighbors, spatial_key, sample_key)
    if method == "kmeans":
        if n_niches is None:
            raise ValueError("method='kmeans' needs n_niches (formerly target_k), the number of niches; "
                             "sj.tl.cluster_stability(adata) chooses one.")
        n_niches = val.check_positive_int(n_niches, "n_niches")
        if n_niches > adata.n_obs:
            raise ValueError(f"n_niches={n_niches} exceeds the {adata.n_obs} cells; choose n_niches <= {adata.n_obs}.")
        _check_distinct(x, n_niches, use_rep)
        labels = kmeans_labels(x, n_niches, seed, n_init)
    else:
        n_neighbors = val.check_positive_int(n_neighbors, "n_neighbors")
        labels = leiden_labels(x, resolution, n_neighbors)
    if prior is not None:
        weight, coords, groups, k = prior
        codes, labels = np.unique(labels, return_inverse=True)
        refined, _ = potts_refine(x, labels, spatial_neighbour_shares(coords, groups, k), weight)
        labels = codes[refined]
    order = sorted(set(labels.tolist()))
    categories = [f"Niche{i}" for i in order]
    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical([f"Niche{i}" for i in labels], categories=categories, ordered=True)
    return adata if copy else None


def _check_distinct(x, n_niches: int, use_rep: str, what: Optional[str] = None) -> None:
    """KMeans cannot find more clusters than distinct points (sklearn then warns and returns fewer)."""
    distinct = val.distinct_rows(x, at_most=n_niches)
    if distinct < n_niches:
        raise ValueError(
            f"adata.obsm[{use_rep!r}] has only {distinct} distinct rows, fewer than {what or f'n_niches={n_niches}'}; "
            f"choose fewer niches (at most {distinct}), or check the embedding (many identical rows: was it trained on these cells, "
            "for enough epochs?).")


def _spatial_prior_inputs(adata, spatial_prior, spatial_neighbors, spatial_key, sample_key):
    """``(weight, coords, slice ids, neighbours)`` for the Potts prior, or None when it is off; validates first."""
    if isinstance(spatial_prior, bool) or not isinstance(spatial_prior, (int, float, np.integer, np.floating)) \
            or not np.isfinite(spatial_prior) or spatial_prior < 0:
        raise ValueError(f"spatial_prior must be a number >= 0 (0 turns the spatial prior off), got {spatial_prior!r}.")
    spatial_neighbors = val.check_positive_int(spatial_neighbors, "spatial_neighbors")
    if spatial_prior == 0:
        return None
    recorded = adata.uns.get("CN_params", {}) or {}
    spatial_key = spatial_key or recorded.get("spatial_key") or "spatial"
    val.check_obsm_key(adata, spatial_key, "spatial_prior > 0 needs the cell coordinates; pass spatial_key=... "
                                           "or spatial_prior=0.")
    coords = val.dense_float_matrix(adata.obsm[spatial_key], f"adata.obsm[{spatial_key!r}]", adata.n_obs)
    if coords.shape[1] < 2:
        raise ValueError(f"adata.obsm[{spatial_key!r}] must have at least two columns (x, y), got {coords.shape[1]}.")
    sample_key = sample_key or recorded.get("sample_key")
    groups = None
    if sample_key is not None:
        if sample_key not in adata.obs.columns:
            raise ValueError(f"sample_key={sample_key!r} is not a column of adata.obs; pass the slice column "
                             f"(one of {list(adata.obs.columns)[:20]}) or sample_key=None for one slice.")
        val.check_no_missing(adata, sample_key, "slice column")
        groups = adata.obs[sample_key].astype(str).to_numpy()
    return float(spatial_prior), coords, groups, spatial_neighbors


@renamed_kwargs(n_clusters="n_niches", random_state="seed")
def cluster_stability(adata: Any, n_niches: tuple[int, int] = (2, 12), use_rep: str = "X_scniche",
                      max_runs: int = 10, convergence_tol: float = 1e-2, seed: int = 0,
                      n_init: int = 10, key_added: Optional[str] = None, table_key: Optional[str] = None,
                      max_cells: Optional[int] = None) -> int:
    """Chooses the number of niches by the stability of KMeans across neighbouring k.

    Parameters
    ----------
    adata
        Cells with ``obsm[use_rep]``; or a ``spatialdata.SpatialData`` (its table ``table_key``).
    n_niches
        Smallest and largest number of niches to consider, inclusive (the reference's
        ``n_clusters``, still accepted with a ``DeprecationWarning``).
    use_rep
        ``obsm`` key of the embedding.
    max_runs
        Most KMeans repetitions (a new seed each); at least 2.
    convergence_tol
        Stop once the mean stabilities change by less than this.
    seed
        Seed of the first run (``random_state`` is the deprecated name).
    n_init
        KMeans restarts per fit (10, like the reference on scikit-learn 1.3).
    key_added
        None writes the reference's ``uns['best_k']`` and ``uns['robustness_df']`` (columns ``K``,
        ``Stability``); a name writes both as ``uns[key_added] = {'best_k': ..., 'robustness_df':
        ...}`` instead.
    max_cells
        None searches on every cell (the reference); a number caps the search at a random subset of
        that many cells, drawn with ``seed`` (:func:`~scniche_jax.clustering.stability_subset`).
        Each run fits KMeans for every K in the range, so on hundreds of thousands of cells a subset
        of 20,000–50,000 is several times faster; the CLI's ``fit`` uses 50,000.

    Returns
    -------
    int
        The most stable number of niches.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> best_k = sj.tl.cluster_stability(adata, n_niches=(2, 6))
    >>> sj.tl.clustering(adata, n_niches=best_k)
    """
    adata = resolve_table(adata, table_key)
    val.check_obsm_key(adata, use_rep, "Run scniche_jax.fit(adata) first or pass use_rep=...")
    x = val.dense_float_matrix(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]", adata.n_obs)
    if (not isinstance(n_niches, (tuple, list)) or len(n_niches) != 2
            or not all(isinstance(k, (int, np.integer)) for k in n_niches) or not 2 <= n_niches[0] <= n_niches[1]):
        raise ValueError(f"n_niches must be (smallest k, largest k) with 2 <= smallest <= largest, got {n_niches!r}.")
    if n_niches[1] + 1 > adata.n_obs:
        raise ValueError(f"n_niches={tuple(n_niches)} needs at least {n_niches[1] + 1} cells, got {adata.n_obs}; "
                         f"lower the largest k to at most {max(adata.n_obs - 1, 2)}.")
    _check_distinct(x, n_niches[1] + 1, use_rep, f"the {n_niches[1] + 1} clusters n_niches={tuple(n_niches)} needs "
                                                 "(the largest k + 1)")
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ValueError(f"key_added must be None or a non-empty string, got {key_added!r}.")
    val.check_positive_int(max_runs, "max_runs", minimum=2)
    if max_cells is not None:
        val.check_positive_int(max_cells, "max_cells", minimum=n_niches[1] + 1)
    subset = stability_subset(adata.n_obs, max_cells, seed)
    if subset is not None:
        x = x[subset]
    scores, best_k, runs = stability_scores(x, tuple(n_niches), max_runs, convergence_tol, seed, n_init)
    log.info("cluster_stability: best k = %d after %d runs on %d cells", best_k, runs, x.shape[0])
    table = pd.DataFrame([(k, v) for k, vals in scores.items() for v in vals], columns=["K", "Stability"])
    if key_added is None:
        adata.uns["best_k"] = best_k
        adata.uns["robustness_df"] = table
    else:
        adata.uns[key_added] = {"best_k": best_k, "robustness_df": table}
    return best_k
