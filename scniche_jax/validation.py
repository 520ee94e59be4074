"""Input checks shared by the AnnData edges (``pp``, ``fit``, ``tl``).

Every check raises ``ValueError`` naming the problem and the fix, before any work is done.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(map(str, keys))
    return ", ".join(repr(k) for k in keys) if keys else "none"


def check_obs_key(adata, key: str, what: str = "column") -> None:
    """``key`` must be a column of ``adata.obs``."""
    if key not in adata.obs.columns:
        raise ValueError(
            f"adata.obs has no {what} {key!r}; available obs columns: {_listing(adata.obs.columns)}. "
            f"Pass the right key (e.g. celltype_key=...).")


def check_obsm_key(adata, key: str, hint: str = "") -> None:
    """``key`` must be in ``adata.obsm``."""
    if key not in adata.obsm:
        raise ValueError(
            f"adata.obsm has no {key!r}; available obsm keys: {_listing(adata.obsm.keys())}. "
            + (hint or "Compute it first or pass another key."))


def dense_float_matrix(value: Any, name: str, n_rows: int | None = None) -> np.ndarray:
    """A finite 2-D float array from a dense/sparse/int input, or a clear ``ValueError``.

    Float32/float64 inputs keep their dtype (the kNN search runs in the view's own dtype,
    like the reference); integers and other numbers become float64.
    """
    if sp.issparse(value):
        value = value.toarray()
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}; convert it to float32.")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells × features), got shape {arr.shape}.")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but adata has {n_rows} cells; "
                         "recompute it on this AnnData.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns.")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN/inf values in {rows.size} cells (first rows: "
            f"{rows[:5].tolist()}); remove or impute those cells before running scniche_jax.")
    return arr


def spatial_coordinates(adata, key: str = "spatial") -> np.ndarray:
    """The first two columns of ``adata.obsm[key]`` as float64, checked."""
    check_obsm_key(adata, key, "Store the cell centroids as an (n_cells, 2) array in adata.obsm['spatial'].")
    coords = dense_float_matrix(adata.obsm[key], f"adata.obsm[{key!r}]", adata.n_obs)
    if coords.shape[1] < 2:
        raise ValueError(f"adata.obsm[{key!r}] must have 2 columns (x, y), got shape {coords.shape}.")
    return np.ascontiguousarray(coords[:, :2], dtype=np.float64)


def check_enough_cells(n_cells: int, k: int, what: str) -> None:
    """kNN with ``k`` neighbours plus the cell itself needs at least ``k + 1`` cells."""
    if n_cells < k + 1:
        raise ValueError(
            f"{what} has {n_cells} cells, fewer than {what_k(k)}; lower the neighbour count to at most "
            f"{max(n_cells - 1, 0)} or use more cells.")


def what_k(k: int) -> str:
    return f"k + 1 = {k + 1} needed for k = {k} neighbours"


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_unique_obs_names(adata) -> None:
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:5].tolist()
        raise ValueError(f"adata.obs_names are not unique (e.g. {dup}); call adata.obs_names_make_unique().")


def check_categorical(adata, key: str, what: str = "niche column") -> None:
    """``obs[key]`` must exist, be categorical and have no missing labels (as scanpy's ``groupby``)."""
    import pandas as pd

    check_obs_key(adata, key, what)
    col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        raise ValueError(
            f"adata.obs[{key!r}] ({what}) is not categorical (dtype {col.dtype}); convert it first: "
            f"adata.obs[{key!r}] = adata.obs[{key!r}].astype('category').")
    check_no_missing(adata, key, what)


def check_labels(adata, key: str, what: str = "column") -> None:
    """``obs[key]`` must exist and hold discrete labels (categorical, strings, integers or booleans), none missing."""
    import pandas as pd

    check_obs_key(adata, key, what)
    col = adata.obs[key]
    if not (isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or pd.api.types.is_string_dtype(col)
            or pd.api.types.is_integer_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise ValueError(
            f"adata.obs[{key!r}] ({what}) holds {col.dtype} values, not labels; pass a categorical column "
            f"(e.g. adata.obs[{key!r}].astype('category') if the values are ids).")
    check_no_missing(adata, key, what)


def check_no_missing(adata, key: str, what: str = "column") -> None:
    missing = int(adata.obs[key].isna().sum())
    if missing:
        raise ValueError(f"adata.obs[{key!r}] ({what}) has {missing} missing labels; label or drop those cells "
                         f"(e.g. adata = adata[adata.obs[{key!r}].notna()].copy()).")


def check_obsp_graph(adata, key: str) -> None:
    """``obsp[key]`` must exist (e.g. squidpy's ``spatial_connectivities``)."""
    if key not in adata.obsp:
        raise ValueError(
            f"adata.obsp has no {key!r}; available obsp keys: {_listing(adata.obsp.keys())}. "
            "Run squidpy.gr.spatial_neighbors(adata) first (it writes 'spatial_connectivities'), "
            "or pass use_graph=None to build the neighbours here.")


def check_genes(adata, genes, what: str = "genes") -> list:
    """Every entry of ``genes`` must be in ``adata.var_names``; returns them as a list."""
    if isinstance(genes, str):
        genes = [genes]
    genes = list(genes)
    if not genes:
        raise ValueError(f"{what} is empty; pass at least one gene or None for all genes.")
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"{len(missing)} of the {what} are not in adata.var_names: {missing[:10]}; "
                         f"check their spelling (adata.var_names starts {list(adata.var_names[:5])}).")
    return genes
