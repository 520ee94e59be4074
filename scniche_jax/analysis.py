"""What comes after the niches: enrichment, adjacency, composition, expression, markers, and
comparison across conditions (``sj.tl.*``, AnnData in, tidy ``pandas.DataFrame`` out).

Conventions (as scanpy's and squidpy's table-producing tools):

- every function returns its result as a tidy ``pandas.DataFrame`` and also stores it in
  ``adata.uns[key_added]`` (default: the function's name); ``key_added=None`` stores nothing
  and leaves the AnnData untouched. None of them changes ``obs``/``obsm``/``X``, so there is
  no ``copy`` argument;
- the niche column (``groupby``) must be categorical (``obs[...].astype('category')``), as
  scanpy's ``groupby``; other label columns (``key``, ``sample_key``, ``condition_key``) may be
  categorical, strings, integers or booleans;
- every input is checked before any work, and a bad one raises ``ValueError`` naming the
  problem and the fix;
- a ``spatialdata.SpatialData`` is accepted in place of the AnnData: ``table_key`` names its
  table of cells (default ``'table'``), and the result is stored in that table's ``uns``.

Multiple testing: Benjamini–Hochberg within each returned table (within each sample block
for :func:`niche_adjacency`).
"""
from __future__ import annotations

import itertools
import logging
import math
import warnings
from typing import Any, Optional, Sequence, Union

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from . import validation as val
from ._spatialdata import resolve_table

log = logging.getLogger(__name__)

__all__ = ["enrichment", "niche_adjacency", "composition", "average_expression", "niche_markers",
           "differential_abundance", "benjamini_hochberg"]

PSEUDO_PROPORTION = 1e-3  # added to both proportions before a log2 ratio, so absent types give finite values
POOLED = "(pooled)"


# ----------------------------------------------------------------------------- helpers

def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; NaNs stay NaN and are not counted as tests."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    order = np.argsort(q)
    ranked = q[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.clip(ranked, 0.0, 1.0)
    out[ok] = adj
    return out


def _check_key_added(key_added: Optional[str]) -> None:
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ValueError(f"key_added must be None (store nothing) or a non-empty string, got {key_added!r}.")


def _store(adata: ad.AnnData, key_added: Optional[str], table: pd.DataFrame) -> pd.DataFrame:
    if key_added is not None:
        adata.uns[key_added] = table
    return table


def _distinct_keys(**keys: Optional[str]) -> None:
    given = {name: k for name, k in keys.items() if k is not None}
    seen: dict[str, str] = {}
    for name, k in given.items():
        if k in seen:
            raise ValueError(f"{seen[k]} and {name} both name the column {k!r}; they must be different columns.")
        seen[k] = name


def _categories(col: pd.Series) -> list:
    """Labels in their categorical order (only those present), or sorted for plain labels."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = set(col.unique())
        return [c for c in col.cat.categories if c in present]
    return sorted(pd.unique(col.astype(object)), key=lambda v: (str(type(v)), v))


def _codes(col: pd.Series, categories: list) -> np.ndarray:
    return pd.Categorical(col.astype(object) if not isinstance(col.dtype, pd.CategoricalDtype) else col,
                          categories=categories).codes.astype(np.int64)


def _as_category(values, categories: list) -> pd.Categorical:
    return pd.Categorical(values, categories=categories)


def _check_min_cells(min_cells: Any) -> int:
    return val.check_positive_int(min_cells, "min_cells", minimum=1)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def _sample_column(adata, sample_key: Optional[str]) -> tuple[np.ndarray, list]:
    """Per-cell sample codes and the sample names (one pseudo-sample when ``sample_key`` is None)."""
    if sample_key is None:
        return np.zeros(adata.n_obs, np.int64), [None]
    samples = _categories(adata.obs[sample_key])
    return _codes(adata.obs[sample_key], samples), samples


def _count_cube(s_codes, n_s, g_codes, n_g, t_codes, n_t) -> np.ndarray:
    """Cells per (sample, group, type)."""
    flat = (s_codes * n_g + g_codes) * n_t + t_codes
    return np.bincount(flat, minlength=n_s * n_g * n_t).reshape(n_s, n_g, n_t).astype(np.float64)


# ----------------------------------------------------------------------------- enrichment

def _checked_labels(adata, table_key, groupby, key, sample_key):
    """The table, after the checks of a niche column, a label column and an optional sample column."""
    adata = resolve_table(adata, table_key)
    val.check_categorical(adata, groupby, "niche column")
    val.check_labels(adata, key, "label column")
    if sample_key is not None:
        val.check_labels(adata, sample_key, "sample column")
    _distinct_keys(groupby=groupby, key=key, sample_key=sample_key)
    return adata


def enrichment(adata: Any, groupby: str = "scNiche", key: str = "Cell_type", sample_key: Optional[str] = None,
               min_cells: int = 20, key_added: Optional[str] = "enrichment",
               table_key: Optional[str] = None) -> pd.DataFrame:
    """Which labels of ``key`` (cell types, or any categorical: condition, sample) are over-represented in which niche.

    For each niche and label, the proportion of the label among the niche's cells is compared
    with its proportion among the cells outside the niche (same sample):

    - with several samples (``sample_key`` naming two or more): one proportion pair per
      sample, and a one-sided Mann–Whitney U test (in-niche > outside) across samples, the
      statistic of scNiche's ``sn.al.enrichment``. A niche with fewer than ``min_cells`` cells
      in a sample is skipped in that sample; a test needs the niche in at least two samples;
    - with one sample: a one-sided hypergeometric test (at least this many cells of the
      label in the niche, drawing the niche's cells at random from all cells).

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]`` and labels ``obs[key]``; or a
        ``spatialdata.SpatialData`` (its table ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    key
        ``obs`` column of the labels whose enrichment is tested.
    sample_key
        ``obs`` column of samples; None treats all cells as one sample.
    min_cells
        Smallest niche (cells in one sample) that is tested (scNiche uses 20).
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.

    Returns
    -------
    pandas.DataFrame
        One row per (niche, label) with columns ``groupby``, ``key`` (both categorical),
        ``proportion`` (mean over samples of the label's share in the niche),
        ``proportion_outside``, ``log2_fold_change`` (log2 of their ratio, a pseudo-proportion
        of 1e-3 added to both), ``p_value``, ``p_adj`` (Benjamini–Hochberg over the table;
        NaN where no test was possible), ``n_cells`` (cells of the label in the niche),
        ``n_samples`` (samples where the niche was tested) and ``test``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> df = sj.tl.enrichment(adata, key="Cell_type")
    >>> df[["scNiche", "Cell_type", "log2_fold_change", "p_adj"]].head()  # doctest: +SKIP
    """
    adata = _checked_labels(adata, table_key, groupby, key, sample_key)
    min_cells = _check_min_cells(min_cells)
    _check_key_added(key_added)

    groups = _categories(adata.obs[groupby])
    labels = _categories(adata.obs[key])
    s_codes, samples = _sample_column(adata, sample_key)
    g_codes = _codes(adata.obs[groupby], groups)
    t_codes = _codes(adata.obs[key], labels)
    cube = _count_cube(s_codes, len(samples), g_codes, len(groups), t_codes, len(labels))
    n_sg = cube.sum(axis=2)                      # cells per sample and niche
    n_st = cube.sum(axis=1)                      # cells per sample and label
    n_s = n_sg.sum(axis=1)                       # cells per sample
    valid = (n_sg >= min_cells) & ((n_s[:, None] - n_sg) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = cube / n_sg[:, :, None]
        p_out = (n_st[:, None, :] - cube) / (n_s[:, None] - n_sg)[:, :, None]
    multi = len(samples) >= 2
    rows = []
    for gi, group in enumerate(groups):
        use = valid[:, gi]
        if not use.any():
            continue
        for ti, label in enumerate(labels):
            inside, outside = p_in[use, gi, ti], p_out[use, gi, ti]
            if multi:
                test = "mannwhitneyu"
                p = _one_sided_mwu(inside, outside) if use.sum() >= 2 else np.nan
            else:
                test = "hypergeometric"
                total, in_niche = n_s[0], n_sg[0, gi]
                p = float(stats.hypergeom.sf(cube[0, gi, ti] - 1, total, n_st[0, ti], in_niche))
            m_in, m_out = float(inside.mean()), float(outside.mean())
            rows.append((group, label, m_in, m_out,
                         float(np.log2((m_in + PSEUDO_PROPORTION) / (m_out + PSEUDO_PROPORTION))), p,
                         int(cube[use, gi, ti].sum()), int(use.sum()), test))
    table = pd.DataFrame(rows, columns=[groupby, key, "proportion", "proportion_outside", "log2_fold_change",
                                        "p_value", "n_cells", "n_samples", "test"])
    table.insert(table.columns.get_loc("p_value") + 1, "p_adj", benjamini_hochberg(table["p_value"]))
    table[groupby] = _as_category(table[groupby], groups)
    table[key] = _as_category(table[key], labels)
    if not multi and sample_key is not None:
        log.info("enrichment: one sample in %r, using the hypergeometric test", sample_key)
    return _store(adata, key_added, table)


def _one_sided_mwu(x: np.ndarray, y: np.ndarray) -> float:
    if np.all(x == x[0]) and np.all(y == x[0]):
        return 1.0  # every value tied: no evidence either way
    return float(stats.mannwhitneyu(x, y, alternative="greater").pvalue)


# ----------------------------------------------------------------------------- adjacency

def _graph_edges(coords: np.ndarray, graph: str, n_neighbors: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (i < j) of a Delaunay triangulation or a symmetrised kNN graph."""
    n = coords.shape[0]
    if graph == "delaunay":
        if n < 3:
            raise ValueError(f"{what} has {n} cells; a Delaunay graph needs at least 3 (use graph='knn').")
        from scipy.spatial import Delaunay, QhullError

        try:
            tri = Delaunay(coords)
        except QhullError as err:
            raise ValueError(f"{what}: the Delaunay triangulation failed (are the cells collinear or duplicated?); "
                             "use graph='knn'.") from err
        simplices = tri.simplices
        pairs = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    else:
        from sklearn.neighbors import NearestNeighbors

        k = min(n_neighbors, n - 1)
        if k < 1:
            raise ValueError(f"{what} has {n} cell(s); a kNN graph needs at least 2.")
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
        pairs = np.stack([np.repeat(np.arange(n), k), idx[:, 1:].ravel()], axis=1)
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(pairs, axis=0)
    return pairs[:, 0], pairs[:, 1]


def _obsp_edges(matrix, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = sp.csr_matrix(matrix)[idx][:, idx]
    sub = ((sub + sub.T) != 0).tocoo()
    keep = sub.row < sub.col
    return sub.row[keep].astype(np.int64), sub.col[keep].astype(np.int64)


def _link_counts(labels: np.ndarray, src: np.ndarray, dst: np.ndarray, k: int) -> np.ndarray:
    """Directed link counts between labels; every undirected edge counts in both directions."""
    a, b = labels[src], labels[dst]
    flat = np.concatenate([a * k + b, b * k + a])
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.float64)


def _permuted_link_counts(labels, src, dst, k, n_perms, rng, chunk=64) -> np.ndarray:
    out = np.empty((n_perms, k, k))
    n = labels.size
    for start in range(0, n_perms, chunk):
        stop = min(start + chunk, n_perms)
        perm = np.stack([labels[rng.permutation(n)] for _ in range(stop - start)])  # (c, n)
        a, b = perm[:, src], perm[:, dst]
        offset = (np.arange(stop - start) * k * k)[:, None]
        flat = np.concatenate([offset + a * k + b, offset + b * k + a], axis=1).ravel()
        out[start:stop] = np.bincount(flat, minlength=(stop - start) * k * k).reshape(stop - start, k, k)
    return out


def niche_adjacency(adata: Any, groupby: str = "scNiche", sample_key: Optional[str] = None,
                    graph: str = "delaunay", n_neighbors: int = 6, use_graph: Union[None, bool, str] = None,
                    normalize: bool = True, n_perms: int = 1000, seed: int = 0, spatial_key: str = "spatial",
                    key_added: Optional[str] = "niche_adjacency", table_key: Optional[str] = None) -> pd.DataFrame:
    """How often cells of niche A touch cells of niche B, against label shuffling (scNiche's ``spatial_link``).

    A spatial graph is built per sample (``graph='delaunay'``: Delaunay triangulation, as
    scNiche via squidpy; ``'knn'``: each cell's ``n_neighbors`` nearest, symmetrised), or
    taken from ``obsp`` (``use_graph``, e.g. squidpy's ``spatial_connectivities``; edges
    between samples are dropped). Links are counted in both directions, so the table of
    counts is symmetric and a link inside niche A counts twice on the diagonal. The expected
    counts come from ``n_perms`` shuffles of the niche labels within each sample; the
    z-score is (observed − mean) / sd over the shuffles, the p-value two-sided.

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]`` and ``obsm[spatial_key]``; or a
        ``spatialdata.SpatialData`` (its table ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    sample_key
        ``obs`` column of samples (one graph and one shuffle per sample, plus the pooled rows);
        None: all cells form one sample.
    graph
        ``'delaunay'`` or ``'knn'``.
    n_neighbors
        Neighbours per cell for ``graph='knn'``.
    use_graph
        True for ``obsp['spatial_connectivities']`` (``squidpy.gr.spatial_neighbors``) or any
        ``obsp`` key; overrides ``graph``.
    normalize
        Report links per cell of the source niche (scNiche's ``normalize``) instead of raw counts in
        ``observed`` and ``expected`` (z-scores are unaffected).
    n_perms
        Label shuffles per sample.
    seed
        Seed of the shuffles.
    spatial_key
        ``obsm`` key of the coordinates (not needed with ``use_graph``).
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.

    Returns
    -------
    pandas.DataFrame
        One row per (sample, source niche, target niche) with columns ``sample_key`` (or
        ``'sample'``; ``'(pooled)'`` marks the rows summed over samples, the only rows when
        there is one sample), ``source``, ``target`` (categorical), ``n_links``, ``observed``,
        ``expected``, ``log2_ratio`` (log2 of (links + 1) / (expected links + 1): how much more
        or less contact than chance, comparable between niches of different sizes), ``z_score``
        (grows with the niches' sizes as well as with the effect: between two large niches a
        small deficit has a large absolute z), ``p_value``, ``p_adj`` (Benjamini–Hochberg within each
        sample block) and ``n_cells_source``. ``table.pivot(index='source', columns='target',
        values='z_score')`` of the pooled rows is the niche × niche matrix.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> df = sj.tl.niche_adjacency(adata, n_perms=100)
    >>> df[["source", "target", "n_links", "log2_ratio"]].head()  # doctest: +SKIP
    """
    source, adata = adata, resolve_table(adata, table_key)
    val.check_categorical(adata, groupby, "niche column")
    if sample_key is not None:
        val.check_labels(adata, sample_key, "sample column")
        _distinct_keys(groupby=groupby, sample_key=sample_key)
    if not isinstance(graph, str) or graph.lower() not in ("delaunay", "knn"):
        raise ValueError(f"graph must be 'delaunay' or 'knn', got {graph!r}.")
    graph = graph.lower()
    n_neighbors = val.check_positive_int(n_neighbors, "n_neighbors")
    n_perms = val.check_positive_int(n_perms, "n_perms", minimum=2)
    _check_key_added(key_added)
    if use_graph is True:
        graph_key: Optional[str] = "spatial_connectivities"
    elif use_graph is None or use_graph is False:
        graph_key = None
    elif isinstance(use_graph, str):
        graph_key = use_graph
    else:
        raise ValueError(f"use_graph must be None, True or an adata.obsp key, got {use_graph!r}.")
    if graph_key is None:
        coords = val.spatial_coordinates(adata, spatial_key, source)
    else:
        val.check_obsp_graph(adata, graph_key)
        if adata.obsp[graph_key].shape != (adata.n_obs, adata.n_obs):
            raise ValueError(f"adata.obsp[{graph_key!r}] has shape {adata.obsp[graph_key].shape}, "
                             f"expected ({adata.n_obs}, {adata.n_obs}).")

    groups = _categories(adata.obs[groupby])
    k = len(groups)
    g_codes = _codes(adata.obs[groupby], groups)
    s_codes, samples = _sample_column(adata, sample_key)
    members = [np.flatnonzero(s_codes == si) for si in range(len(samples))]
    edges = []
    for si, idx in enumerate(members):  # all graphs first: a bad sample fails before the shuffles
        what = "adata" if samples[si] is None else f"sample {samples[si]!r}"
        if graph_key is None:
            edges.append(_graph_edges(coords[idx], graph, n_neighbors, what))
        else:
            edges.append(_obsp_edges(adata.obsp[graph_key], idx))
    rng = np.random.default_rng(seed)
    blocks = []
    pooled_obs = np.zeros((k, k))
    pooled_perm = np.zeros((n_perms, k, k))
    pooled_sizes = np.zeros(k)
    for si, idx in enumerate(members):
        labels = g_codes[idx]
        src, dst = edges[si]
        observed = _link_counts(labels, src, dst, k)
        permuted = _permuted_link_counts(labels, src, dst, k, n_perms, rng)
        sizes = np.bincount(labels, minlength=k).astype(np.float64)
        pooled_obs += observed
        pooled_perm += permuted
        pooled_sizes += sizes
        if len(samples) > 1:
            blocks.append((samples[si], observed, permuted, sizes))
    blocks.append((POOLED, pooled_obs, pooled_perm, pooled_sizes))

    sample_col = sample_key or "sample"
    if sample_col in ("source", "target"):
        sample_col = f"{sample_col}_sample"
    frames = []
    for name, observed, permuted, sizes in blocks:
        mean, sd = permuted.mean(axis=0), permuted.std(axis=0, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(sd > 0, (observed - mean) / sd, np.nan)
            extreme = (np.abs(permuted - mean) >= np.abs(observed - mean)[None] - 1e-9).sum(axis=0)
            p = (1.0 + extreme) / (n_perms + 1.0)
            scale = np.where(sizes > 0, 1.0 / sizes, np.nan)[:, None] if normalize else np.ones((k, 1))
        present = np.flatnonzero(sizes > 0)
        src_i, dst_i = np.meshgrid(present, present, indexing="ij")
        src_i, dst_i = src_i.ravel(), dst_i.ravel()
        frame = pd.DataFrame({
            sample_col: name,
            "source": [groups[i] for i in src_i], "target": [groups[j] for j in dst_i],
            "n_links": observed[src_i, dst_i].astype(np.int64),
            "observed": (observed * scale)[src_i, dst_i], "expected": (mean * scale)[src_i, dst_i],
            "log2_ratio": np.log2((observed[src_i, dst_i] + 1.0) / (mean[src_i, dst_i] + 1.0)),
            "z_score": z[src_i, dst_i], "p_value": np.where(np.isfinite(z[src_i, dst_i]), p[src_i, dst_i], np.nan),
            "n_cells_source": sizes[src_i].astype(np.int64)})
        frame["p_adj"] = benjamini_hochberg(frame["p_value"])
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table = table[[sample_col, "source", "target", "n_links", "observed", "expected", "log2_ratio", "z_score", "p_value",
                   "p_adj", "n_cells_source"]]
    sample_names = [s for s in samples if s is not None] + [POOLED]
    table[sample_col] = pd.Categorical(table[sample_col].astype(object), categories=list(dict.fromkeys(sample_names)))
    table["source"] = _as_category(table["source"], groups)
    table["target"] = _as_category(table["target"], groups)
    return _store(adata, key_added, table)


# ----------------------------------------------------------------------------- composition and expression

def composition(adata: Any, groupby: str = "scNiche", key: str = "Cell_type", sample_key: Optional[str] = None,
                min_fraction: float = 0.0, key_added: Optional[str] = "composition",
                table_key: Optional[str] = None) -> pd.DataFrame:
    """Cell-type (``key``) composition of each niche, per sample (scNiche's ``calculate_composition_multi``).

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]`` and labels ``obs[key]``; or a
        ``spatialdata.SpatialData`` (its table ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    key
        ``obs`` column of the labels counted.
    sample_key
        ``obs`` column of samples; None: one table over all cells.
    min_fraction
        Drop (sample, niche) pairs whose niche holds less than this fraction of the sample's cells
        (scNiche's ``cutoff``, 0.05 there).
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.

    Returns
    -------
    pandas.DataFrame
        One row per ([sample,] niche, label), zero counts included, with columns
        [``sample_key``,] ``groupby``, ``key``, ``n_cells``, ``proportion`` (share of the label
        among the niche's cells in that sample) and ``niche_fraction`` (share of the sample's
        cells in the niche).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> df = sj.tl.composition(adata, key="Cell_type")
    >>> df.groupby("scNiche", observed=True)["proportion"].sum().round(6).unique().tolist()
    [1.0]
    """
    adata = _checked_labels(adata, table_key, groupby, key, sample_key)
    min_fraction = _check_fraction(min_fraction, "min_fraction")
    _check_key_added(key_added)
    groups = _categories(adata.obs[groupby])
    labels = _categories(adata.obs[key])
    s_codes, samples = _sample_column(adata, sample_key)
    cube = _count_cube(s_codes, len(samples), _codes(adata.obs[groupby], groups), len(groups),
                       _codes(adata.obs[key], labels), len(labels))
    n_sg = cube.sum(axis=2)
    frac = n_sg / n_sg.sum(axis=1, keepdims=True)
    si, gi, ti = np.nonzero((n_sg[:, :, None] > 0) & (frac[:, :, None] >= min_fraction) & np.ones_like(cube, bool))
    table = pd.DataFrame({groupby: _as_category([groups[i] for i in gi], groups),
                          key: _as_category([labels[i] for i in ti], labels),
                          "n_cells": cube[si, gi, ti].astype(np.int64),
                          "proportion": cube[si, gi, ti] / n_sg[si, gi],
                          "niche_fraction": frac[si, gi]})
    if sample_key is not None:
        table.insert(0, sample_key, _as_category([samples[i] for i in si], samples))
    return _store(adata, key_added, table)


def _expression_matrix(adata, layer: Optional[str]):
    if layer is None:
        return adata.X, "adata.X"
    if layer not in adata.layers:
        raise ValueError(f"adata.layers has no {layer!r}; available layers: "
                         f"{', '.join(map(repr, adata.layers.keys())) or 'none'}. Pass layer=None for adata.X.")
    return adata.layers[layer], f"adata.layers[{layer!r}]"


def _restriction_mask(adata, key: Optional[str], restrict_to) -> Optional[np.ndarray]:
    """Cells whose ``obs[key]`` is one of ``restrict_to`` (None: no restriction), checked."""
    if restrict_to is None:
        if key is not None:
            val.check_labels(adata, key, "label column")
        return None
    if key is None:
        raise ValueError("restrict_to needs key=, the obs column it refers to (e.g. key='Cell_type').")
    val.check_labels(adata, key, "label column")
    wanted = [restrict_to] if isinstance(restrict_to, (str, int, bool, np.integer)) else list(restrict_to)
    present = set(adata.obs[key].astype(object).unique())
    missing = [w for w in wanted if w not in present]
    if missing or not wanted:
        raise ValueError(f"restrict_to names {missing or wanted} not found in adata.obs[{key!r}]; "
                         f"present: {sorted(map(str, present))[:20]}.")
    return adata.obs[key].astype(object).isin(wanted).to_numpy()


def average_expression(adata: Any, groupby: str = "scNiche", sample_key: Optional[str] = None,
                       genes: Optional[Sequence[str]] = None, layer: Optional[str] = None, key: Optional[str] = None,
                       restrict_to=None, min_fraction: float = 0.0,
                       key_added: Optional[str] = "average_expression",
                       table_key: Optional[str] = None) -> pd.DataFrame:
    """Mean expression of each gene in each niche, per sample (scNiche's ``calculate_average_exp_multi``).

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]``; or a ``spatialdata.SpatialData`` (its table
        ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    sample_key
        ``obs`` column of samples; None: one table over all cells.
    genes
        Genes to report (all of ``var_names`` when None).
    layer
        ``adata.layers`` key of the expression; ``adata.X`` when None.
    key
        ``obs`` column that ``restrict_to`` refers to (e.g. ``'Cell_type'``); None uses every cell.
    restrict_to
        Only the cells whose ``obs[key]`` is this label (or one of these labels), e.g.
        ``key='Cell_type', restrict_to='Astrocyte'`` (scNiche's ``selected_celltype``).
    min_fraction
        Drop (sample, niche) pairs whose niche holds less than this fraction of the sample's cells
        (scNiche's ``cutoff``).
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.

    Returns
    -------
    pandas.DataFrame
        One row per ([sample,] niche, gene) with columns [``sample_key``,] ``groupby``, ``gene``,
        ``mean_expression``, ``fraction_expressing`` (share of cells with a value > 0) and
        ``n_cells`` (cells averaged).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> df = sj.tl.average_expression(adata, genes=["g0", "g1"])
    >>> sorted(df.columns)
    ['fraction_expressing', 'gene', 'mean_expression', 'n_cells', 'scNiche']
    """
    adata = resolve_table(adata, table_key)
    val.check_categorical(adata, groupby, "niche column")
    if sample_key is not None:
        val.check_labels(adata, sample_key, "sample column")
    _distinct_keys(groupby=groupby, key=key, sample_key=sample_key)
    gene_list = list(adata.var_names) if genes is None else val.check_genes(adata, genes)
    matrix, _ = _expression_matrix(adata, layer)
    mask = _restriction_mask(adata, key, restrict_to)
    min_fraction = _check_fraction(min_fraction, "min_fraction")
    _check_key_added(key_added)
    groups = _categories(adata.obs[groupby])
    g_codes = _codes(adata.obs[groupby], groups)
    s_codes, samples = _sample_column(adata, sample_key)
    n_sg = np.bincount(s_codes * len(groups) + g_codes, minlength=len(samples) * len(groups)).reshape(
        len(samples), len(groups))
    frac = n_sg / n_sg.sum(axis=1, keepdims=True)
    gene_idx = adata.var_names.get_indexer(gene_list)
    x = matrix[:, gene_idx]
    cells = np.ones(adata.n_obs, bool) if mask is None else mask
    frames = []
    for si, sample in enumerate(samples):
        for gi, group in enumerate(groups):
            if n_sg[si, gi] == 0 or frac[si, gi] < min_fraction:
                continue
            sel = np.flatnonzero(cells & (s_codes == si) & (g_codes == gi))
            if sel.size == 0:
                continue
            block = x[sel]
            mean = np.asarray(block.mean(axis=0)).ravel()
            nz = np.asarray((block > 0).sum(axis=0)).ravel() / sel.size
            frame = pd.DataFrame({groupby: group, "gene": gene_list, "mean_expression": mean,
                                  "fraction_expressing": nz, "n_cells": sel.size})
            if sample_key is not None:
                frame.insert(0, sample_key, sample)
            frames.append(frame)
    columns = ([sample_key] if sample_key is not None else []) + [groupby, "gene", "mean_expression",
                                                                   "fraction_expressing", "n_cells"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table[groupby] = _as_category(table[groupby], groups)
    table["gene"] = _as_category(table["gene"], gene_list)
    if sample_key is not None:
        table[sample_key] = _as_category(table[sample_key], samples)
    return _store(adata, key_added, table[columns])


# ----------------------------------------------------------------------------- marker genes

def niche_markers(adata: Any, groupby: str = "scNiche", method: str = "wilcoxon", groups: Union[str, Sequence] = "all",
                  reference: str = "rest", key: Optional[str] = None, restrict_to=None,
                  genes: Optional[Sequence[str]] = None, layer: Optional[str] = None, n_genes: Optional[int] = None,
                  min_cells: int = 3, key_added: Optional[str] = "niche_markers", table_key: Optional[str] = None,
                  **kwargs) -> pd.DataFrame:
    """Marker genes of each niche with scanpy's ``rank_genes_groups`` (needs the ``[analysis]`` extra).

    The question biologists usually ask, "what do astrocytes in niche 3 express that
    astrocytes elsewhere do not", is ``key='Cell_type', restrict_to='Astrocyte'``: only those
    cells are compared. Expression should be log-normalised, as scanpy expects (its fold
    changes undo ``log1p``). scanpy runs on a private AnnData, so ``adata`` gets nothing but
    ``uns[key_added]``.

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]``; or a ``spatialdata.SpatialData`` (its table
        ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    method
        Scanpy's test: ``'wilcoxon'``, ``'t-test'``, ``'t-test_overestim_var'`` or ``'logreg'`` (no
        p-values).
    groups
        Niches to test (``'all'`` or a list).
    reference
        ``'rest'`` or one niche to compare against.
    key
        ``obs`` column that ``restrict_to`` refers to (e.g. ``'Cell_type'``); None uses every cell.
    restrict_to
        Only the cells whose ``obs[key]`` is this label (or one of these labels), e.g.
        ``key='Cell_type', restrict_to='Astrocyte'`` (scNiche's ``selected_celltype``).
    genes
        Genes tested (all when None).
    layer
        ``adata.layers`` key of the expression; ``adata.X`` when None.
    n_genes
        Keep the top ``n_genes`` per niche (all when None).
    min_cells
        Niches with fewer cells (after the restriction) are left out, with a warning.
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.
    **kwargs
        Passed to ``scanpy.tl.rank_genes_groups`` (e.g. ``tie_correct=True``).

    Returns
    -------
    pandas.DataFrame
        Rows sorted by niche and score, columns ``groupby``, ``gene``, ``score``,
        ``log2_fold_change``, ``p_value``, ``p_adj`` (scanpy's Benjamini–Hochberg within each
        niche), ``pct_in_group``, ``pct_in_reference``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> df = sj.tl.niche_markers(adata, n_genes=5)  # needs scanpy: pip install "scniche-jax[analysis]"
    >>> df[["scNiche", "gene", "score", "p_adj"]].head()  # doctest: +SKIP
    """
    adata = resolve_table(adata, table_key)
    try:
        import scanpy as sc
    except ImportError as err:
        raise ImportError("niche_markers uses scanpy: pip install 'scniche-jax[analysis]' (or pip install scanpy)") from err
    val.check_categorical(adata, groupby, "niche column")
    _distinct_keys(groupby=groupby, key=key)
    if method not in ("wilcoxon", "t-test", "t-test_overestim_var", "logreg"):
        raise ValueError(f"method must be 'wilcoxon', 't-test', 't-test_overestim_var' or 'logreg', got {method!r}.")
    gene_list = list(adata.var_names) if genes is None else val.check_genes(adata, genes)
    matrix, _ = _expression_matrix(adata, layer)
    mask = _restriction_mask(adata, key, restrict_to)
    min_cells = val.check_positive_int(min_cells, "min_cells", minimum=2)
    if n_genes is not None:
        n_genes = val.check_positive_int(n_genes, "n_genes")
    _check_key_added(key_added)
    cells = np.ones(adata.n_obs, bool) if mask is None else mask
    niche = adata.obs[groupby][cells]
    sizes = niche.value_counts()
    present = [g for g in niche.cat.categories if sizes.get(g, 0) > 0]
    if isinstance(groups, str):
        if groups != "all":
            raise ValueError(f"groups must be 'all' or a list of niches, got {groups!r}.")
        wanted = present
    else:
        wanted = list(groups)
        unknown = [g for g in wanted if g not in list(adata.obs[groupby].cat.categories)]
        if unknown:
            raise ValueError(f"groups names {unknown}, not categories of adata.obs[{groupby!r}] "
                             f"({list(adata.obs[groupby].cat.categories)}).")
    if reference != "rest":
        if reference not in list(adata.obs[groupby].cat.categories):
            raise ValueError(f"reference must be 'rest' or a category of adata.obs[{groupby!r}], got {reference!r}.")
        if sizes.get(reference, 0) < min_cells:
            raise ValueError(f"the reference niche {reference!r} has {int(sizes.get(reference, 0))} cells here, "
                             f"fewer than min_cells={min_cells}.")
        wanted = [g for g in wanted if g != reference]
    small = [g for g in wanted if sizes.get(g, 0) < min_cells]
    tested = [g for g in wanted if g not in small]
    if small:
        warnings.warn(f"niche_markers: left out {small}, with fewer than min_cells={min_cells} cells"
                      + (f" of {restrict_to!r}" if restrict_to is not None else "") + ".", UserWarning, stacklevel=2)
    if not tested or (reference == "rest" and len(present) < 2):
        raise ValueError(f"niche_markers needs a niche with at least min_cells={min_cells} cells and another "
                         f"niche to compare with; the selected cells ({int(cells.sum())}) are in "
                         f"{len(present)} niche(s). Lower min_cells, widen restrict_to or pick other groups.")
    gene_idx = adata.var_names.get_indexer(gene_list)
    x = matrix[np.flatnonzero(cells)][:, gene_idx]
    tmp = ad.AnnData(X=x.copy() if sp.issparse(x) else np.array(x, dtype=np.float32),
                     obs=pd.DataFrame({groupby: niche.cat.remove_unused_categories().to_numpy()},
                                      index=adata.obs_names[cells]),
                     var=pd.DataFrame(index=pd.Index(gene_list, dtype=str)))
    tmp.obs[groupby] = tmp.obs[groupby].astype("category")
    if "log1p" in adata.uns:
        tmp.uns["log1p"] = dict(adata.uns["log1p"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        sc.tl.rank_genes_groups(tmp, groupby, groups=tested, reference=reference, method=method, pts=True,
                                key_added="_scniche_markers", use_raw=False, **kwargs)
        table = sc.get.rank_genes_groups_df(tmp, group=None, key="_scniche_markers")
    if "group" not in table.columns:  # one tested group: scanpy leaves the column out
        table.insert(0, "group", tested[0])
    table = table.rename(columns={"group": groupby, "names": "gene", "scores": "score",
                                  "logfoldchanges": "log2_fold_change", "pvals": "p_value", "pvals_adj": "p_adj",
                                  "pct_nz_group": "pct_in_group", "pct_nz_reference": "pct_in_reference"})
    for column in ("log2_fold_change", "p_value", "p_adj", "pct_in_group", "pct_in_reference"):
        if column not in table.columns:
            table[column] = np.nan
    table = table[[groupby, "gene", "score", "log2_fold_change", "p_value", "p_adj", "pct_in_group",
                   "pct_in_reference"]]
    if n_genes is not None:
        table = table.groupby(groupby, observed=True, sort=False).head(n_genes)
    table = table.reset_index(drop=True)
    table[groupby] = _as_category(table[groupby].astype(object), list(adata.obs[groupby].cat.categories))
    table["gene"] = table["gene"].astype(str)
    return _store(adata, key_added, table)


# ----------------------------------------------------------------------------- conditions

def _label_assignments(labels: np.ndarray, n_perms: int, rng) -> tuple[np.ndarray, bool]:
    """Relabellings of the samples that keep the condition sizes: all of them when few, else random draws.

    Returns ``(assignments, exact)``: an (m, S) array of condition codes, and whether it is the
    complete set (which includes the observed labelling).
    """
    sizes = np.bincount(labels)
    n = labels.size
    total = math.factorial(n)
    for s in sizes:
        total //= math.factorial(int(s))
    if total <= n_perms:
        out = []

        def fill(remaining: list, current: np.ndarray, code: int) -> None:
            if code == len(sizes) - 1:
                done = current.copy()
                done[remaining] = code
                out.append(done)
                return
            for chosen in itertools.combinations(remaining, int(sizes[code])):
                nxt = current.copy()
                nxt[list(chosen)] = code
                fill([r for r in remaining if r not in chosen], nxt, code + 1)

        fill(list(range(n)), np.zeros(n, np.int64), 0)
        return np.array(out), True
    return np.stack([rng.permutation(labels) for _ in range(n_perms)]), False


def _between_ss(values: np.ndarray, assignments: np.ndarray, n_cond: int) -> np.ndarray:
    """Between-condition sum of squares of ``values`` (S,) under each assignment (m, S)."""
    grand = values.mean()
    total = np.zeros(assignments.shape[0])
    for c in range(n_cond):
        member = assignments == c
        n_c = member.sum(axis=1)
        mean_c = (member * values[None]).sum(axis=1) / n_c
        total += n_c * (mean_c - grand) ** 2
    return total


def differential_abundance(adata: Any, groupby: str = "scNiche", *, condition_key: str, sample_key: str,
                           reference: Optional[str] = None, n_perms: int = 1000, seed: int = 0,
                           key_added: Optional[str] = "differential_abundance",
                           table_key: Optional[str] = None) -> pd.DataFrame:
    """Niche proportions per sample compared between conditions.

    Each sample contributes one proportion per niche (its cells in the niche / its cells).
    Two conditions: two-sided Mann–Whitney U; more: Kruskal–Wallis. Also a permutation test
    that relabels the samples' conditions (condition sizes kept; every relabelling when
    there are at most ``n_perms``, which makes it exact) with the between-condition sum of
    squares of the proportions as statistic. Samples, not cells, are the units: a condition
    needs at least two samples.

    Parameters
    ----------
    adata
        Cells with categorical ``obs[groupby]``, ``obs[condition_key]`` and ``obs[sample_key]``; or
        a ``spatialdata.SpatialData`` (its table ``table_key``).
    groupby
        ``obs`` column of niches (categorical).
    condition_key
        ``obs`` column of conditions; each sample must lie in one condition.
    sample_key
        ``obs`` column of samples (biological replicates, or spatial pieces of a slice in a
        demonstration).
    reference
        With two conditions, the baseline of the fold change (the first category, or the first
        sorted label, when None).
    n_perms
        Most relabellings of the permutation test.
    seed
        Seed of the random relabellings.
    key_added
        ``uns`` key of the stored table; None stores nothing.
    table_key
        The table of a SpatialData.

    Returns
    -------
    pandas.DataFrame
        One row per niche with columns ``groupby``, ``mean_proportion_<condition>`` for each
        condition, ``log2_fold_change`` (other vs ``reference``, two conditions only; a
        pseudo-proportion of 1e-3 added), ``comparison``, ``test``, ``statistic``, ``p_value``,
        ``p_adj``, ``p_value_permutation``, ``p_adj_permutation`` (Benjamini–Hochberg over the
        niches) and ``n_samples``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> import numpy as np
    >>> adata.obs["sample"] = np.repeat(["s1", "s2", "s3", "s4"], 150)
    >>> adata.obs["condition"] = np.repeat(["healthy", "disease"], 300)
    >>> df = sj.tl.differential_abundance(adata, condition_key="condition", sample_key="sample",
    ...                                   reference="healthy", n_perms=100)
    >>> df[["scNiche", "log2_fold_change", "p_value"]].head()  # doctest: +SKIP
    """
    adata = resolve_table(adata, table_key)
    val.check_categorical(adata, groupby, "niche column")
    val.check_labels(adata, condition_key, "condition column")
    val.check_labels(adata, sample_key, "sample column")
    _distinct_keys(groupby=groupby, condition_key=condition_key, sample_key=sample_key)
    n_perms = val.check_positive_int(n_perms, "n_perms", minimum=2)
    _check_key_added(key_added)
    pairs = adata.obs[[sample_key, condition_key]].astype(object).drop_duplicates()
    spanning = pairs[sample_key][pairs[sample_key].duplicated()].unique().tolist()
    if spanning:
        raise ValueError(f"samples {spanning[:5]} have cells in more than one condition of "
                         f"adata.obs[{condition_key!r}]; each sample must belong to one condition.")
    conditions = _categories(adata.obs[condition_key])
    if len(conditions) < 2:
        raise ValueError(f"adata.obs[{condition_key!r}] has one condition ({conditions}); "
                         "differential abundance compares at least two.")
    per_condition = pairs.groupby(condition_key)[sample_key].apply(list).to_dict()
    lonely = {c: per_condition[c] for c in conditions if len(per_condition[c]) < 2}
    if lonely:
        raise ValueError(
            f"conditions need at least 2 samples each, but {', '.join(f'{c!r} has {len(s)} ({s})' for c, s in lonely.items())}; "
            "add replicates (in a demonstration: cut each slice into spatial pieces and use those as samples).")
    if reference is not None and reference not in conditions:
        raise ValueError(f"reference {reference!r} is not a condition of adata.obs[{condition_key!r}] ({conditions}).")
    if reference is not None and len(conditions) != 2:
        raise ValueError("reference applies to two conditions only (it sets the fold change's baseline).")

    groups = _categories(adata.obs[groupby])
    samples = _categories(adata.obs[sample_key])
    s_codes = _codes(adata.obs[sample_key], samples)
    g_codes = _codes(adata.obs[groupby], groups)
    counts = np.bincount(s_codes * len(groups) + g_codes, minlength=len(samples) * len(groups)).reshape(
        len(samples), len(groups)).astype(np.float64)
    props = counts / counts.sum(axis=1, keepdims=True)
    sample_condition = pairs.set_index(sample_key)[condition_key].to_dict()
    if reference is not None:
        conditions = [reference] + [c for c in conditions if c != reference]
    cond = np.array([conditions.index(sample_condition[s]) for s in samples])
    rng = np.random.default_rng(seed)
    assignments, exact = _label_assignments(cond, n_perms, rng)
    rows = []
    for gi, group in enumerate(groups):
        v = props[:, gi]
        per = [v[cond == c] for c in range(len(conditions))]
        means = [float(p.mean()) for p in per]
        if np.all(v == v[0]):
            stat, p = 0.0, 1.0
        elif len(conditions) == 2:
            res = stats.mannwhitneyu(per[1], per[0], alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        else:
            res = stats.kruskal(*per)
            stat, p = float(res.statistic), float(res.pvalue)
        observed = _between_ss(v, cond[None], len(conditions))[0]
        null = _between_ss(v, assignments, len(conditions))
        hits = int((null >= observed - 1e-12 * max(1.0, abs(observed))).sum())
        p_perm = hits / len(null) if exact else (1.0 + hits) / (len(null) + 1.0)
        lfc = (float(np.log2((means[1] + PSEUDO_PROPORTION) / (means[0] + PSEUDO_PROPORTION)))
               if len(conditions) == 2 else np.nan)
        rows.append([group, *means, lfc, p, stat, p_perm])
    mean_cols = [f"mean_proportion_{c}" for c in conditions]
    table = pd.DataFrame(rows, columns=[groupby, *mean_cols, "log2_fold_change", "p_value", "statistic",
                                        "p_value_permutation"])
    table["comparison"] = f"{conditions[1]} vs {conditions[0]}" if len(conditions) == 2 else " vs ".join(map(str, conditions))
    table["test"] = "mannwhitneyu" if len(conditions) == 2 else "kruskal"
    table["p_adj"] = benjamini_hochberg(table["p_value"])
    table["p_adj_permutation"] = benjamini_hochberg(table["p_value_permutation"])
    table["n_samples"] = len(samples)
    table = table[[groupby, *mean_cols, "log2_fold_change", "comparison", "test", "statistic", "p_value", "p_adj",
                   "p_value_permutation", "p_adj_permutation", "n_samples"]]
    table[groupby] = _as_category(table[groupby], groups)
    return _store(adata, key_added, table)


def sample_proportions(adata: ad.AnnData, groupby: str, sample_key: str,
                       condition_key: Optional[str] = None) -> pd.DataFrame:
    """Per-sample niche proportions in long form (for :func:`scniche_jax.pl.abundance`)."""
    groups = _categories(adata.obs[groupby])
    samples = _categories(adata.obs[sample_key])
    s_codes = _codes(adata.obs[sample_key], samples)
    g_codes = _codes(adata.obs[groupby], groups)
    counts = np.bincount(s_codes * len(groups) + g_codes, minlength=len(samples) * len(groups)).reshape(
        len(samples), len(groups))
    props = counts / counts.sum(axis=1, keepdims=True)
    si, gi = np.meshgrid(np.arange(len(samples)), np.arange(len(groups)), indexing="ij")
    table = pd.DataFrame({sample_key: [samples[i] for i in si.ravel()], groupby: [groups[i] for i in gi.ravel()],
                          "proportion": props.ravel()})
    if condition_key is not None:
        mapping = adata.obs[[sample_key, condition_key]].astype(object).drop_duplicates().set_index(sample_key)
        table[condition_key] = table[sample_key].map(mapping[condition_key])
    table[groupby] = _as_category(table[groupby], groups)
    return table
