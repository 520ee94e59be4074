"""Preprocessing (REFERENCE §1): neighbourhood composition and neighbourhood expression.

Same arguments and outputs as the reference's ``sn.pp`` functions (``obsm['X_cn']``,
``obsm['X_cn_norm']``, ``obsm['X_data']``, ``obsm['X_data_nbr']``, ``uns['CN_order']``),
vectorised with sparse neighbour matrices so that a million cells take minutes.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from . import validation as val

log = logging.getLogger(__name__)

__all__ = ["cal_spatial_neighbors", "cal_spatial_exp", "process_multi_slices"]


def _check_mode(mode: str, k_cutoff, rad_cutoff, n_cells: int, what: str) -> str:
    if not isinstance(mode, str) or mode.lower() not in ("knn", "radius"):
        raise ValueError(f"mode must be 'KNN' or 'radius', got {mode!r}.")
    mode = mode.lower()
    if mode == "knn":
        k = val.check_positive_int(k_cutoff, "k_cutoff")
        val.check_enough_cells(n_cells, k, what)
    elif rad_cutoff is None or not np.isfinite(rad_cutoff) or rad_cutoff <= 0:
        raise ValueError(f"rad_cutoff must be a positive number in radius mode, got {rad_cutoff!r}.")
    return mode


def spatial_neighbour_matrix(coords: np.ndarray, mode: str, k_cutoff: int, rad_cutoff: float,
                             include_self: bool) -> sp.csr_matrix:
    """0/1 sparse matrix whose row i marks cell i's spatial neighbours.

    KNN mode takes the ``k_cutoff + 1`` nearest points (the cell itself included) and, with
    ``include_self=False``, drops the first column as the reference does. Radius mode takes
    every point within ``rad_cutoff``, the cell itself included.
    """
    n = coords.shape[0]
    if mode == "knn":
        _, idx = NearestNeighbors(n_neighbors=k_cutoff + 1).fit(coords).kneighbors(coords)
        if not include_self:
            idx = idx[:, 1:]
        rows = np.repeat(np.arange(n), idx.shape[1])
        return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(n, n))
    graph = NearestNeighbors(radius=rad_cutoff).fit(coords).radius_neighbors_graph(coords, mode="connectivity")
    graph = graph.tocsr().astype(np.float32)
    graph.setdiag(1.0)  # every point lies within any radius of itself
    return graph


def _cell_type_codes(adata, celltype_key: str, celltype_order: Optional[Sequence]) -> tuple[np.ndarray, list]:
    val.check_obs_key(adata, celltype_key, "cell-type column")
    labels = adata.obs[celltype_key]
    if labels.isna().any():
        raise ValueError(f"adata.obs[{celltype_key!r}] has {int(labels.isna().sum())} missing labels; "
                         "label or drop those cells.")
    if celltype_order is None:
        celltype_order = sorted(pd.unique(labels.astype(object)))
    order = list(celltype_order)
    codes = pd.Categorical(labels.astype(object), categories=order).codes
    if (codes < 0).any():
        missing = sorted(set(labels.astype(object)) - set(order), key=str)[:5]
        raise ValueError(f"celltype_order lacks the cell types {missing}; add them to celltype_order.")
    return codes.astype(np.int64), order


def cal_spatial_neighbors(adata: ad.AnnData, celltype_key: str = "Cell_type",
                          celltype_order: Optional[list] = None, mode: str = "KNN",
                          rad_cutoff: Optional[float] = 20, k_cutoff: Optional[int] = 20,
                          verbose: bool = True, copy: bool = False) -> ad.AnnData:
    """Cellular neighbourhoods: cell-type counts among each cell's spatial neighbours.

    Args:
      adata: cells with ``obsm['spatial']`` and a cell-type column.
      celltype_key: ``obs`` column of cell types.
      celltype_order: column order of the composition; sorted types when None.
      mode: ``'KNN'`` (``k_cutoff + 1`` nearest, the cell included) or ``'radius'``.
      rad_cutoff: radius in coordinate units (radius mode).
      k_cutoff: neighbours besides the cell itself (KNN mode).
      verbose: log progress at INFO level.
      copy: work on and return a copy instead of ``adata``.

    Returns:
      The AnnData with ``obsm['X_cn']`` (int64 counts), ``obsm['X_cn_norm']`` (row
      fractions, float64) and ``uns['CN_order']``.
    """
    coords = val.spatial_coordinates(adata)
    mode = _check_mode(mode, k_cutoff, rad_cutoff, adata.n_obs, "adata")
    codes, order = _cell_type_codes(adata, celltype_key, celltype_order)
    if verbose:
        log.info("Calculating cellular neighbourhoods (%s) for %d cells", mode, adata.n_obs)
    adata = adata.copy() if copy else adata
    nbrs = spatial_neighbour_matrix(coords, mode, k_cutoff, rad_cutoff, include_self=True)
    one_hot = sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)),
                            shape=(codes.size, len(order)))
    counts = np.asarray((nbrs.astype(np.float64) @ one_hot).todense()).round().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = counts / counts.sum(axis=1, keepdims=True)
    adata.uns["CN_order"] = order
    adata.obsm["X_cn"] = counts
    adata.obsm["X_cn_norm"] = norm
    return adata


def _expression(adata, layer_key: Optional[str]) -> np.ndarray:
    if layer_key is None:
        return val.dense_float_matrix(adata.X, "adata.X", adata.n_obs)
    if layer_key in adata.obsm:
        return val.dense_float_matrix(adata.obsm[layer_key], f"adata.obsm[{layer_key!r}]", adata.n_obs)
    if layer_key in adata.layers:
        return val.dense_float_matrix(adata.layers[layer_key], f"adata.layers[{layer_key!r}]", adata.n_obs)
    raise ValueError(f"layer_key {layer_key!r} is neither in adata.obsm ({sorted(adata.obsm.keys())}) "
                     f"nor in adata.layers ({sorted(adata.layers.keys())}); pass an existing key or None for adata.X.")


def cal_spatial_exp(adata: ad.AnnData, layer_key: Optional[str] = None, is_pca: bool = False,
                    n_comps: int = 50, mode: str = "KNN", rad_cutoff: Optional[float] = 20,
                    k_cutoff: Optional[int] = 20, verbose: bool = True, random_state: int = 0,
                    copy: bool = False) -> ad.AnnData:
    """Each cell's expression and the mean expression of its spatial neighbours.

    Args:
      adata: cells with ``obsm['spatial']``.
      layer_key: expression source: ``obsm[layer_key]`` (as the reference) or
        ``layers[layer_key]``; ``adata.X`` when None.
      is_pca: reduce each of the two matrices with its own PCA.
      n_comps: PCA components.
      mode, rad_cutoff, k_cutoff: as in :func:`cal_spatial_neighbors`; KNN mode averages the
        ``k_cutoff`` nearest other cells, radius mode every cell within the radius (itself
        included).
      verbose: log progress at INFO level.
      random_state: seed of PCA's randomized solver (the reference used numpy's global seed).
      copy: work on and return a copy instead of ``adata``.

    Returns:
      The AnnData with ``obsm['X_data']`` and ``obsm['X_data_nbr']``.
    """
    coords = val.spatial_coordinates(adata)
    mode = _check_mode(mode, k_cutoff, rad_cutoff, adata.n_obs, "adata")
    data = _expression(adata, layer_key)
    if is_pca:
        n_comps = val.check_positive_int(n_comps, "n_comps")
        limit = min(data.shape)
        if n_comps > limit:
            raise ValueError(f"n_comps={n_comps} exceeds min(n_cells, n_features) = {limit}; "
                             f"choose n_comps <= {limit}.")
    if verbose:
        log.info("Calculating neighbourhood expression (%s) for %d cells", mode, adata.n_obs)
    adata = adata.copy() if copy else adata
    nbrs = spatial_neighbour_matrix(coords, mode, k_cutoff, rad_cutoff, include_self=(mode == "radius"))
    counts = np.asarray(nbrs.sum(axis=1)).ravel()
    weights = sp.diags(1.0 / counts) @ nbrs
    data_nbr = np.asarray(weights.astype(data.dtype) @ data, dtype=data.dtype)
    if is_pca:
        data = PCA(n_components=n_comps, random_state=random_state).fit_transform(data)
        data_nbr = PCA(n_components=n_comps, random_state=random_state).fit_transform(data_nbr)
    adata.obsm["X_data"] = data
    adata.obsm["X_data_nbr"] = data_nbr
    return adata


def process_multi_slices(adata: ad.AnnData, celltype_key: str = "Cell_type", sample_key: str = "Sample",
                         mode: str = "KNN", rad_cutoff: Optional[float] = 20,
                         k_cutoff: Optional[int] = 20, layer_key: Optional[str] = None,
                         is_pca: bool = False, n_comps: int = 50, verbose: bool = True,
                         random_state: int = 0) -> ad.AnnData:
    """Both preprocessing steps per slice with one shared, sorted cell-type order.

    Args:
      adata: cells of several slices; ``obs[sample_key]`` names each cell's slice.
      celltype_key, mode, rad_cutoff, k_cutoff, layer_key, is_pca, n_comps, random_state:
        as in :func:`cal_spatial_neighbors` and :func:`cal_spatial_exp` (PCA runs per slice,
        like the reference).
      sample_key: ``obs`` column of slice ids.
      verbose: log progress at INFO level.

    Returns:
      A new AnnData, the slices concatenated in sorted slice order (as the reference), with
      NaNs in ``X_cn*`` replaced by 0. ``adata`` itself is not modified.
    """
    val.check_obs_key(adata, sample_key, "sample column")
    val.check_obs_key(adata, celltype_key, "cell-type column")
    val.spatial_coordinates(adata)
    val.check_unique_obs_names(adata)
    order = sorted(pd.unique(adata.obs[celltype_key].astype(object)))
    samples = sorted(pd.unique(adata.obs[sample_key].astype(object)))
    parts = []
    for sample in samples:
        mask = (adata.obs[sample_key].astype(object) == sample).to_numpy()
        what = f"slice {sample!r}"
        if isinstance(mode, str) and mode.lower() == "knn":
            val.check_enough_cells(int(mask.sum()), val.check_positive_int(k_cutoff, "k_cutoff"), what)
        parts.append(adata[mask].copy())
    for part, sample in zip(parts, samples):
        if verbose:
            log.info("Processing slice %s (%d cells)", sample, part.n_obs)
        cal_spatial_neighbors(part, celltype_key, order, mode, rad_cutoff, k_cutoff, verbose=False)
        cal_spatial_exp(part, layer_key, is_pca, n_comps, mode, rad_cutoff, k_cutoff,
                        verbose=False, random_state=random_state)
    out = ad.concat(parts, merge="same")
    out.obsm["X_cn"] = np.nan_to_num(out.obsm["X_cn"])
    out.obsm["X_cn_norm"] = np.nan_to_num(out.obsm["X_cn_norm"])
    out.uns["CN_order"] = order
    return out
