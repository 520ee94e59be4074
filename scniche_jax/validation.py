"""Input checks shared by the AnnData edges (``pp``, ``fit``, ``tl``).

Every check raises ``ValueError`` naming the problem and the fix, before any work is done.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Iterable, Optional

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(map(str, keys))
    return ", ".join(repr(k) for k in keys) if keys else "none"


# the argument that names each kind of column, for "pass the right key (e.g. groupby=...)"
_ARGUMENT_OF = {"niche column": "groupby", "cell-type column": "celltype_key", "sample column": "sample_key",
                "slice column": "sample_key", "label column": "key", "condition column": "condition_key"}


def check_obs_key(adata, key: str, what: str = "column", arg: Optional[str] = None) -> None:
    """``key`` must be a column of ``adata.obs``; ``arg`` is the argument that named it (the message says
    which one to change), by default the usual one for ``what``."""
    if key not in adata.obs.columns:
        arg = arg or _ARGUMENT_OF.get(what, "key")
        raise ValueError(
            f"adata.obs has no {what} {key!r}; available obs columns: {_listing(adata.obs.columns)}. "
            f"Pass the right column name ({arg}=...).")


def check_obsm_key(adata, key: str, hint: str = "", name: str = "adata") -> None:
    """``key`` must be in ``adata.obsm``; ``name`` is what the user calls ``adata`` (a SpatialData's table)."""
    if key not in adata.obsm:
        raise ValueError(
            f"{name}.obsm has no {key!r}; available obsm keys: {_listing(adata.obsm.keys())}. "
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


def spatial_coordinates(adata, key: str = "spatial", source: Any = None) -> np.ndarray:
    """The first two columns of ``adata.obsm[key]`` as float64, checked.

    ``source`` is what the user passed (a SpatialData whose table ``adata`` is): the messages
    then name that table, and its shapes elements where the coordinates may sit.
    """
    from ._spatialdata import table_name

    name, hint = table_name(source, adata), ""
    if key not in adata.obsm and name != "adata":
        shapes = list(getattr(source, "shapes", {}).keys())
        where = f"; the SpatialData holds them in shapes {shapes}" if shapes else ""
        hint = (f"The cells' coordinates must be in the table{where}: put the cell centroids, in the table's cell "
                f"order, into {name}.obsm[{key!r}] (e.g. from spatialdata.get_centroids(sdata[{(shapes or ['cells'])[0]!r}])), "
                "or pass spatial_key=... naming them.")
    check_obsm_key(adata, key, hint or "Store the cell centroids as an (n_cells, 2) array in "
                   "adata.obsm['spatial'] (or pass spatial_key=...).", name)
    coords = dense_float_matrix(adata.obsm[key], f"{name}.obsm[{key!r}]", adata.n_obs)
    if coords.shape[1] < 2:
        raise ValueError(f"{name}.obsm[{key!r}] must have 2 columns (x, y), got shape {coords.shape}.")
    return np.ascontiguousarray(coords[:, :2], dtype=np.float64)


def check_not_empty(adata, what: str = "adata", minimum: int = 2) -> None:
    """At least ``minimum`` cells (an empty AnnData is usually a filter that removed every cell)."""
    if adata.n_obs < minimum:
        raise ValueError(
            f"{what} has {adata.n_obs} cell{'s' if adata.n_obs != 1 else ''}; scniche_jax needs at least {minimum}. "
            "Check the filter or subset that built it (e.g. adata[mask] with a mask that is all False).")


def check_enough_cells(n_cells: int, k: int, what: str) -> None:
    """kNN with ``k`` neighbours plus the cell itself needs at least ``k + 1`` cells."""
    if n_cells < 2:
        raise ValueError(
            f"{what} has {n_cells} cell{'s' if n_cells != 1 else ''}; spatial neighbourhoods of k = {k} neighbours "
            f"need at least {k + 1} cells. Drop it (or merge it with another slice) before preprocessing.")
    if n_cells < k + 1:
        raise ValueError(
            f"{what} has {n_cells} cells, fewer than {what_k(k)}; lower the neighbour count to at most "
            f"{max(n_cells - 1, 0)} or use more cells.")


def check_spread(coords: np.ndarray, what: str) -> None:
    """The cells must not all sit at one point (coordinates of zeros, a constant column pasted twice)."""
    if coords.shape[0] > 1 and not (np.ptp(coords[:, :2], axis=0) > 0).any():
        raise ValueError(
            f"all {coords.shape[0]} cells of {what} sit at one point {coords[0, :2].tolist()}, so they have no "
            "spatial neighbourhoods; store the cells' x, y centroids in the coordinates (obsm['spatial']).")


class RawCountsWarning(UserWarning):
    """The expression looks like raw counts (non-negative integers), not normalised and log-transformed."""


def looks_like_counts(value: Any) -> bool:
    """Non-negative integer values with some above 1 (binary data is not counts); a sample of rows is checked."""
    data = value.data if sp.issparse(value) else np.asarray(value)
    data = np.asarray(data).ravel()
    if data.size > 2_000_000:
        data = data[:: data.size // 1_000_000]
    if data.size == 0 or not np.issubdtype(data.dtype, np.number):
        return False
    data = data[np.isfinite(data)]
    return bool(data.size and data.min() >= 0 and data.max() > 1 and np.all(data == np.round(data)))


def warn_raw_counts(value: Any, name: str, stacklevel: int = 4) -> bool:
    """Warns (:class:`RawCountsWarning`) when ``value`` looks like raw counts; returns whether it did."""
    if not looks_like_counts(value):
        return False
    top = value.max() if sp.issparse(value) else np.nanmax(np.asarray(value))
    warnings.warn(
        f"{name} looks like raw counts (non-negative integers up to {float(top):g}); scNiche expects normalised, "
        "log-transformed expression. Run sc.pp.normalize_total(adata) and sc.pp.log1p(adata) first "
        "(the CLI: --normalize), or ignore this warning if the counts are meant.",
        RawCountsWarning, stacklevel=stacklevel)
    return True


def distinct_rows(x: np.ndarray, at_most: Optional[int] = None) -> int:
    """The number of distinct rows of ``x`` (exact; ``at_most`` stops counting early on large data)."""
    x = np.ascontiguousarray(x)
    if at_most is not None and x.shape[0] > 50_000:
        sample = x[np.linspace(0, x.shape[0] - 1, 50_000).astype(np.int64)]
        found = np.unique(sample.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()).size
        if found >= at_most:
            return found
    return np.unique(x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()).size


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


def check_categorical(adata, key: str, what: str = "niche column", arg: Optional[str] = None) -> None:
    """``obs[key]`` must exist, be categorical and have no missing labels (as scanpy's ``groupby``).

    A column of strings is converted to a categorical in place, as scanpy does
    (``AnnData.strings_to_categoricals``); other dtypes are refused.
    """
    import pandas as pd

    check_obs_key(adata, key, what, arg)
    col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype) and _is_strings(col):
        check_no_missing(adata, key, what)
        log.info("storing adata.obs[%r] as categorical", key)
        adata.obs[key] = pd.Categorical(col)
        col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        raise ValueError(
            f"adata.obs[{key!r}] ({what}) is not categorical (dtype {col.dtype}); convert it first: "
            f"adata.obs[{key!r}] = adata.obs[{key!r}].astype('category').")
    check_no_missing(adata, key, what)


def _is_strings(col) -> bool:
    import pandas as pd

    if pd.api.types.is_string_dtype(col) and col.dtype != object:
        return True
    if col.dtype != object:
        return False
    return all(isinstance(v, str) for v in col.dropna().head(1000))


def check_labels(adata, key: str, what: str = "column", arg: Optional[str] = None) -> None:
    """``obs[key]`` must exist and hold discrete labels (categorical, strings, integers or booleans), none missing."""
    import pandas as pd

    check_obs_key(adata, key, what, arg)
    col = adata.obs[key]
    check_no_missing(adata, key, what)  # first: integer ids with NaN read as floats
    if not (isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or pd.api.types.is_string_dtype(col)
            or pd.api.types.is_integer_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise ValueError(
            f"adata.obs[{key!r}] ({what}) holds {col.dtype} values, not labels; pass a categorical column "
            f"(e.g. adata.obs[{key!r}].astype('category') if the values are ids).")


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
