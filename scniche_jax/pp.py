"""Preprocessing: neighbourhood composition and neighbourhood expression.

Same computation and default outputs as the reference's ``sn.pp`` functions
(``obsm['X_cn']``, ``obsm['X_cn_norm']``, ``obsm['X_data']``, ``obsm['X_data_nbr']``,
``uns['CN_order']``), vectorised with sparse neighbour matrices so that a million cells take
minutes. Scanpy conventions: ``key_added`` names the outputs, ``copy=False`` works in place
and returns ``None``, ``copy=True`` returns the new AnnData. A ``spatialdata.SpatialData``
is accepted too (``table_key`` names its table of cells), and squidpy's spatial graph can
replace the kNN/radius neighbours (``use_graph=``).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Optional, Sequence, Union

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from . import validation as val
from ._deprecation import renamed_kwargs
from ._spatialdata import replace_table, resolve_table

log = logging.getLogger(__name__)

__all__ = ["cal_spatial_neighbors", "cal_spatial_exp", "process_multi_slices"]

SQUIDPY_GRAPH = "spatial_connectivities"


def _check_mode(mode: str, n_neighbors, rad_cutoff, n_cells: int, what: str) -> str:
    if not isinstance(mode, str) or mode.lower() not in ("knn", "radius"):
        raise ValueError(f"mode must be 'KNN' or 'radius', got {mode!r}.")
    mode = mode.lower()
    if mode == "knn":
        k = val.check_positive_int(n_neighbors, "n_neighbors")
        val.check_enough_cells(n_cells, k, what)
    elif rad_cutoff is None or not np.isfinite(rad_cutoff) or rad_cutoff <= 0:
        raise ValueError(f"rad_cutoff must be a positive number in radius mode, got {rad_cutoff!r}.")
    return mode


def _graph_key(use_graph: Union[None, bool, str]) -> Optional[str]:
    """``use_graph``: None/False (build neighbours here), True (squidpy's key) or an ``obsp`` key."""
    if use_graph is None or use_graph is False:
        return None
    if use_graph is True:
        return SQUIDPY_GRAPH
    if isinstance(use_graph, str):
        return use_graph
    raise ValueError(f"use_graph must be None, True or an adata.obsp key, got {use_graph!r}.")


def _checked_graph(adata, key: str) -> sp.csr_matrix:
    val.check_obsp_graph(adata, key)
    graph = adata.obsp[key]
    if graph.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"adata.obsp[{key!r}] has shape {graph.shape}, expected ({adata.n_obs}, {adata.n_obs}).")
    graph = sp.csr_matrix(graph, dtype=np.float32)
    graph.data = (graph.data != 0).astype(np.float32)  # connectivities may be weighted: keep who, not how much
    graph.eliminate_zeros()
    return graph


def spatial_neighbour_matrix(coords: np.ndarray, mode: str, n_neighbors: int, rad_cutoff: float,
                             include_self: bool) -> sp.csr_matrix:
    """0/1 sparse matrix whose row i marks cell i's spatial neighbours.

    KNN mode takes the ``n_neighbors + 1`` nearest points (the cell itself included) and, with
    ``include_self=False``, drops the first column as the reference does. Radius mode takes
    every point within ``rad_cutoff``, the cell itself included.
    """
    n = coords.shape[0]
    if mode == "knn":
        _, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(coords).kneighbors(coords)
        if not include_self:
            idx = idx[:, 1:]
        rows = np.repeat(np.arange(n), idx.shape[1])
        return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(n, n))
    graph = NearestNeighbors(radius=rad_cutoff).fit(coords).radius_neighbors_graph(coords, mode="connectivity")
    graph = graph.tocsr().astype(np.float32)
    graph.setdiag(1.0)  # every point lies within any radius of itself
    return graph


def _check_celltypes(adata, celltype_key: str, stacklevel: int = 4) -> list:
    """The cell-type column: labels (not floats), none missing; warns for one type; returns the types."""
    val.check_labels(adata, celltype_key, "cell-type column")
    order = list(pd.unique(adata.obs[celltype_key].astype(object)))
    if len(order) < 2:
        warnings.warn(
            f"adata.obs[{celltype_key!r}] holds one cell type ({order[0]!r}) for all {adata.n_obs} cells, so every "
            "cell's neighbourhood composition (X_cn_norm) is the same and carries no niche information; pass the "
            "column of cell types or clusters (celltype_key=...), or ignore this if only expression should count.",
            UserWarning, stacklevel=stacklevel)
    return order


def _cell_type_codes(adata, celltype_key: str, celltype_order: Optional[Sequence]) -> tuple[np.ndarray, list]:
    val.check_obs_key(adata, celltype_key, "cell-type column")
    labels = adata.obs[celltype_key]
    if labels.isna().any():
        raise ValueError(f"adata.obs[{celltype_key!r}] has {int(labels.isna().sum())} missing labels; "
                         "label or drop those cells.")
    if celltype_order is None:
        _check_celltypes(adata, celltype_key, stacklevel=5)
        celltype_order = sorted(pd.unique(labels.astype(object)))
    order = list(celltype_order)
    codes = pd.Categorical(labels.astype(object), categories=order).codes
    if (codes < 0).any():
        missing = sorted(set(labels.astype(object)) - set(order), key=str)[:5]
        raise ValueError(f"celltype_order lacks the cell types {missing}; add them to celltype_order.")
    return codes.astype(np.int64), order


def _order_key(key_added: str) -> str:
    return "CN_order" if key_added == "X_cn" else f"{key_added}_order"


def _params_key(key_added: str) -> str:
    return "CN_params" if key_added == "X_cn" else f"{key_added}_params"


def _check_key_added(key_added: Any) -> str:
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    return key_added


def _checked_neighbourhood_inputs(adata, table_key, key_added, use_graph, spatial_key, mode, n_neighbors,
                                  rad_cutoff):
    """The checks both neighbourhood functions run first: ``(adata, key_added, graph_key, coords,
    mode, graph)``, with ``coords``/``mode`` set for a computed graph and ``graph`` for a given one."""
    source = adata
    adata = resolve_table(adata, table_key)
    val.check_not_empty(adata)
    val.check_unique_obs_names(adata)
    key_added = _check_key_added(key_added)
    graph_key = _graph_key(use_graph)
    coords = graph = None
    if graph_key is None:
        coords = val.spatial_coordinates(adata, spatial_key, source)
        val.check_spread(coords, "adata")
        mode = _check_mode(mode, n_neighbors, rad_cutoff, adata.n_obs, "adata")
    else:
        graph = _checked_graph(adata, graph_key)
    return adata, key_added, graph_key, coords, mode, graph


@renamed_kwargs(k_cutoff="n_neighbors")
def cal_spatial_neighbors(adata: Any, celltype_key: str = "Cell_type",
                          celltype_order: Optional[list] = None, mode: str = "KNN",
                          rad_cutoff: Optional[float] = 20, n_neighbors: Optional[int] = 20,
                          verbose: bool = True, copy: bool = False, key_added: str = "X_cn",
                          use_graph: Union[None, bool, str] = None, spatial_key: str = "spatial",
                          table_key: Optional[str] = None) -> Optional[ad.AnnData]:
    """Cellular neighbourhoods: cell-type counts among each cell's spatial neighbours.

    Parameters
    ----------
    adata
        Cells with ``obsm[spatial_key]`` and a cell-type column; or a ``spatialdata.SpatialData``
        whose table ``table_key`` holds them.
    celltype_key
        ``obs`` column of cell types.
    celltype_order
        Column order of the composition; sorted types when None.
    mode
        ``'KNN'`` (``n_neighbors + 1`` nearest, the cell included) or ``'radius'``.
    rad_cutoff
        Radius in coordinate units (radius mode).
    n_neighbors
        Neighbours besides the cell itself (KNN mode; the reference's ``k_cutoff``, still accepted
        with a ``DeprecationWarning``).
    verbose
        Log progress at INFO level.
    copy
        Work on and return a copy; otherwise change ``adata`` in place and return None.
    key_added
        ``obsm`` key of the counts; the fractions go to ``obsm[key_added + '_norm']``, the column
        order to ``uns['CN_order']`` and the cell-type and coordinate keys to ``uns['CN_params']``
        (``uns[key_added + '_order']`` / ``'_params'`` for a non-default ``key_added``).
    use_graph
        Neighbours from a precomputed graph instead of ``mode``: True for squidpy's
        ``obsp['spatial_connectivities']`` (``squidpy.gr.spatial_neighbors``) or any ``obsp`` key;
        each cell counts itself and its graph neighbours.
    spatial_key
        ``obsm`` key of the coordinates.
    table_key
        The table of a SpatialData (default ``'table'``).

    Returns
    -------
    anndata.AnnData or None
        None, or with ``copy=True`` a new AnnData (the table of a SpatialData, copied), holding
        ``obsm[key_added]`` (int64 counts), ``obsm[key_added + '_norm']`` (row fractions, float64)
        and the column order in ``uns``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", n_neighbors=20)
    >>> adata.obsm["X_cn_norm"].shape
    (600, 10)
    """
    adata, key_added, graph_key, coords, mode, graph = _checked_neighbourhood_inputs(
        adata, table_key, key_added, use_graph, spatial_key, mode, n_neighbors, rad_cutoff)
    codes, order = _cell_type_codes(adata, celltype_key, celltype_order)
    if verbose:
        log.info("Calculating cellular neighbourhoods (%s) for %d cells", graph_key or mode, adata.n_obs)
    adata = adata.copy() if copy else adata
    if graph_key is None:
        nbrs = spatial_neighbour_matrix(coords, mode, n_neighbors, rad_cutoff, include_self=True)
    else:
        nbrs = graph.tolil()
        nbrs.setdiag(1.0)
        nbrs = nbrs.tocsr()
    one_hot = sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)),
                            shape=(codes.size, len(order)))
    counts = np.asarray((nbrs.astype(np.float64) @ one_hot).todense()).round().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = counts / counts.sum(axis=1, keepdims=True)
    adata.uns[_order_key(key_added)] = order
    adata.uns[_params_key(key_added)] = {"celltype_key": celltype_key, "spatial_key": spatial_key}
    adata.obsm[key_added] = counts
    adata.obsm[f"{key_added}_norm"] = norm
    return adata if copy else None


def _expression_source(adata, layer_key: Optional[str]) -> tuple[Any, str]:
    """``(matrix, its name)`` of the expression ``layer_key`` names."""
    if layer_key is None:
        if adata.X is None:
            raise ValueError("adata.X is empty (None); store the expression in adata.X or pass layer_key=...")
        return adata.X, "adata.X"
    if layer_key in adata.obsm:
        return adata.obsm[layer_key], f"adata.obsm[{layer_key!r}]"
    if layer_key in adata.layers:
        return adata.layers[layer_key], f"adata.layers[{layer_key!r}]"
    raise ValueError(f"layer_key {layer_key!r} is neither in adata.obsm ({sorted(adata.obsm.keys())}) "
                     f"nor in adata.layers ({sorted(adata.layers.keys())}); pass an existing key or None for adata.X.")


@renamed_kwargs(k_cutoff="n_neighbors", random_state="seed")
def cal_spatial_exp(adata: Any, layer_key: Optional[str] = None, is_pca: bool = False,
                    n_comps: int = 50, mode: str = "KNN", rad_cutoff: Optional[float] = 20,
                    n_neighbors: Optional[int] = 20, verbose: bool = True, seed: int = 0,
                    copy: bool = False, key_added: str = "X_data", use_graph: Union[None, bool, str] = None,
                    spatial_key: str = "spatial", table_key: Optional[str] = None) -> Optional[ad.AnnData]:
    """Each cell's expression and the mean expression of its spatial neighbours.

    Parameters
    ----------
    adata
        Cells with ``obsm[spatial_key]``; or a ``spatialdata.SpatialData`` (its table
        ``table_key``).
    layer_key
        Expression source: ``obsm[layer_key]`` (as the reference) or ``layers[layer_key]``;
        ``adata.X`` when None.
    is_pca
        Reduce each of the two matrices with its own PCA.
    n_comps
        PCA components.
    mode
        ``'KNN'`` (the ``n_neighbors`` nearest other cells) or ``'radius'`` (every cell within
        ``rad_cutoff``, itself included).
    rad_cutoff
        Radius in coordinate units (radius mode).
    n_neighbors
        Neighbours averaged per cell in KNN mode (``k_cutoff`` is the deprecated name).
    verbose
        Log progress at INFO level.
    seed
        Seed of PCA's randomized solver (the reference used numpy's global seed; ``random_state`` is
        the deprecated name).
    copy
        Work on and return a copy; otherwise change ``adata`` in place and return None.
    key_added
        ``obsm`` key of the expression; the neighbours' mean goes to ``obsm[key_added + '_nbr']``.
    use_graph
        Average over the neighbours of a precomputed graph (True for squidpy's
        ``obsp['spatial_connectivities']``, or an ``obsp`` key) instead of ``mode``; a cell without
        graph neighbours keeps its own expression.
    spatial_key
        ``obsm`` key of the coordinates.
    table_key
        The table of a SpatialData (default ``'table'``).

    Returns
    -------
    anndata.AnnData or None
        None, or with ``copy=True`` a new AnnData, holding ``obsm[key_added]`` and
        ``obsm[key_added + '_nbr']``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_genes=30, seed=0)
    >>> sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=10, n_neighbors=20)
    >>> adata.obsm["X_data"].shape, adata.obsm["X_data_nbr"].shape
    ((600, 10), (600, 10))
    """
    adata, key_added, graph_key, coords, mode, graph = _checked_neighbourhood_inputs(
        adata, table_key, key_added, use_graph, spatial_key, mode, n_neighbors, rad_cutoff)
    source, name = _expression_source(adata, layer_key)
    data = val.dense_float_matrix(source, name, adata.n_obs)
    counts_like = val.warn_raw_counts(source, name) if name == "adata.X" or name.startswith("adata.layers") \
        else val.looks_like_counts(source)
    if is_pca:
        n_comps = val.check_positive_int(n_comps, "n_comps")
        limit = min(data.shape)
        if n_comps > limit:
            raise ValueError(f"n_comps={n_comps} exceeds min(n_cells, n_features) = {limit}; "
                             f"choose n_comps <= {limit}.")
    if verbose:
        log.info("Calculating neighbourhood expression (%s) for %d cells", graph_key or mode, adata.n_obs)
    adata = adata.copy() if copy else adata
    if graph_key is None:
        nbrs = spatial_neighbour_matrix(coords, mode, n_neighbors, rad_cutoff, include_self=(mode == "radius"))
    else:
        nbrs = graph.tolil()
        nbrs.setdiag(0.0)
        nbrs = nbrs.tocsr()
        nbrs.eliminate_zeros()
        lonely = np.asarray(nbrs.sum(axis=1)).ravel() == 0
        if lonely.any():
            log.warning("%d cells have no neighbours in adata.obsp[%r]; they keep their own expression",
                        int(lonely.sum()), graph_key)
            nbrs = (nbrs + sp.diags(lonely.astype(np.float32))).tocsr()
    counts = np.asarray(nbrs.sum(axis=1)).ravel()
    weights = sp.diags(1.0 / counts) @ nbrs
    data_nbr = np.asarray(weights.astype(data.dtype) @ data, dtype=data.dtype)
    if is_pca:
        data = PCA(n_components=n_comps, random_state=seed).fit_transform(data)
        data_nbr = PCA(n_components=n_comps, random_state=seed).fit_transform(data_nbr)
    adata.obsm[key_added] = data
    adata.obsm[f"{key_added}_nbr"] = data_nbr
    adata.uns[_params_key(key_added)] = _expression_params(adata, name, layer_key, is_pca, n_comps, counts_like)
    return adata if copy else None


def _expression_params(adata, name: str, layer_key, is_pca: bool, n_comps: int, counts_like: bool) -> dict:
    """What the expression views were computed from; a saved model keeps it and ``embed`` checks new data."""
    params = {"source": name, "is_pca": bool(is_pca), "normalisation": "raw counts" if counts_like else "normalised"}
    if is_pca:  # h5ad cannot store None
        params["n_comps"] = int(n_comps)
    if not name.startswith("adata.obsm"):  # the columns are genes
        params["genes"] = [str(g) for g in adata.var_names]
    return params


@renamed_kwargs(k_cutoff="n_neighbors", random_state="seed")
def process_multi_slices(adata: Any, celltype_key: str = "Cell_type", sample_key: str = "Sample",
                         mode: str = "KNN", rad_cutoff: Optional[float] = 20,
                         n_neighbors: Optional[int] = 20, layer_key: Optional[str] = None,
                         is_pca: bool = False, n_comps: int = 50, verbose: bool = True,
                         seed: int = 0, use_graph: Union[None, bool, str] = None,
                         spatial_key: str = "spatial", table_key: Optional[str] = None) -> ad.AnnData:
    """Both preprocessing steps per slice with one shared, sorted cell-type order.

    Parameters
    ----------
    adata
        Cells of several slices; ``obs[sample_key]`` names each cell's slice. Or a
        ``spatialdata.SpatialData`` (its table ``table_key``).
    celltype_key
        ``obs`` column of cell types.
    mode
        ``'KNN'`` (the ``n_neighbors`` nearest other cells) or ``'radius'`` (every cell within
        ``rad_cutoff``, itself included).
    rad_cutoff
        Radius in coordinate units (radius mode).
    n_neighbors
        Neighbours averaged per cell in KNN mode (``k_cutoff`` is the deprecated name).
    layer_key
        Expression source: ``obsm[layer_key]`` (as the reference) or ``layers[layer_key]``;
        ``adata.X`` when None.
    is_pca
        Reduce each of the two matrices with its own PCA.
    n_comps
        PCA components (PCA runs per slice, like the reference).
    seed
        Seed of PCA's randomized solver (the reference used numpy's global seed; ``random_state`` is
        the deprecated name).
    use_graph
        Neighbours from a precomputed graph instead of ``mode``: True for squidpy's
        ``obsp['spatial_connectivities']`` (``squidpy.gr.spatial_neighbors``) or any ``obsp`` key;
        each cell counts itself and its graph neighbours. The graph is cut per slice.
    spatial_key
        ``obsm`` key of the coordinates.
    sample_key
        ``obs`` column of slice ids.
    verbose
        Log progress at INFO level.
    table_key
        The table of a SpatialData (default ``'table'``).

    Returns
    -------
    anndata.AnnData
        A new AnnData, the slices concatenated in sorted slice order (as the reference), with
        NaNs in ``X_cn*`` replaced by 0 (the default output names); ``uns['CN_params']``
        records the cell-type, coordinate and slice keys (``variant='improved'`` reads them). ``adata`` itself is not
        modified; for a SpatialData the new AnnData also replaces ``sdata.tables[table_key]``.

    Examples
    --------
    >>> import anndata as ad
    >>> import scniche_jax as sj
    >>> slices = [sj.datasets.synthetic(n_cells=400, seed=s) for s in (0, 1)]
    >>> adata = ad.concat(slices, label="slice", keys=["a", "b"], index_unique="-")
    >>> adata = sj.pp.process_multi_slices(adata, celltype_key="Cell_type", sample_key="slice",
    ...                                    n_neighbors=20, verbose=False)
    >>> sorted(k for k in adata.obsm if k.startswith("X_"))
    ['X_cn', 'X_cn_norm', 'X_data', 'X_data_nbr']
    """
    source = adata
    adata = resolve_table(adata, table_key)
    val.check_not_empty(adata)
    val.check_labels(adata, sample_key, "sample column")
    _check_celltypes(adata, celltype_key)
    graph_key = _graph_key(use_graph)
    coords = None
    if graph_key is None:
        coords = val.spatial_coordinates(adata, spatial_key, source)
    else:
        _checked_graph(adata, graph_key)
    val.check_unique_obs_names(adata)
    expression, name = _expression_source(adata, layer_key)
    val.dense_float_matrix(expression[:1], name)
    counts_like = val.warn_raw_counts(expression, name) if not name.startswith("adata.obsm") else False
    if is_pca:
        n_comps = val.check_positive_int(n_comps, "n_comps")
    order = sorted(pd.unique(adata.obs[celltype_key].astype(object)))
    samples = sorted(pd.unique(adata.obs[sample_key].astype(object)))
    parts = []
    for sample in samples:
        mask = (adata.obs[sample_key].astype(object) == sample).to_numpy()
        what = f"slice {sample!r}"
        if graph_key is None and isinstance(mode, str) and mode.lower() == "knn":
            val.check_enough_cells(int(mask.sum()), val.check_positive_int(n_neighbors, "n_neighbors"), what)
        if coords is not None:
            val.check_spread(coords[mask], what)
        if is_pca and n_comps > min(int(mask.sum()), expression.shape[1]):
            raise ValueError(f"n_comps={n_comps} exceeds min(n_cells, n_features) = "
                             f"{min(int(mask.sum()), expression.shape[1])} of {what}; choose a smaller n_comps.")
        parts.append(adata[mask].copy())
    for part, sample in zip(parts, samples):
        if verbose:
            log.info("Processing slice %s (%d cells)", sample, part.n_obs)
        common = dict(mode=mode, rad_cutoff=rad_cutoff, n_neighbors=n_neighbors, verbose=False,
                      use_graph=use_graph, spatial_key=spatial_key)
        cal_spatial_neighbors(part, celltype_key, order, **common)
        with warnings.catch_warnings():  # said once above, for the whole AnnData
            warnings.simplefilter("ignore", val.RawCountsWarning)
            cal_spatial_exp(part, layer_key, is_pca, n_comps, seed=seed, **common)
    out = ad.concat(parts, merge="same")
    out.uns[_params_key("X_data")] = _expression_params(adata, name, layer_key, is_pca, n_comps, counts_like)
    out.obsm["X_cn"] = np.nan_to_num(out.obsm["X_cn"])
    out.obsm["X_cn_norm"] = np.nan_to_num(out.obsm["X_cn_norm"])
    out.uns["CN_order"] = order
    out.uns["CN_params"] = {"celltype_key": celltype_key, "spatial_key": spatial_key, "sample_key": sample_key}
    if source is not adata:
        replace_table(source, table_key, out)
    return out
