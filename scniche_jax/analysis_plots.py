"""Plots of the analyses in :mod:`scniche_jax.analysis` (``sj.pl.enrichment``, ``niche_adjacency``,
``abundance``, ``markers``).

Each takes the AnnData (reading the table a ``sj.tl`` function stored in ``uns``) or the
table itself, ``ax=None``, returns the ``matplotlib.axes.Axes`` it drew, and calls
``plt.show()`` only with ``show=True``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from . import validation as val
from ._spatialdata import resolve_table
from .analysis import POOLED, sample_proportions
from .plotting import _pyplot, distinct_colours, finish

__all__ = ["enrichment", "niche_adjacency", "abundance", "markers"]


def _table(data: Any, uns_key: str, needed: Sequence[str], producer: str, table_key: Optional[str]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        table = data
    else:
        adata = resolve_table(data, table_key)
        if uns_key not in adata.uns:
            raise ValueError(f"adata.uns has no {uns_key!r}; run {producer} first (or pass its table, or uns_key=...).")
        table = adata.uns[uns_key]
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"adata.uns[{uns_key!r}] is a {type(table).__name__}, not the table of {producer}.")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the columns {missing}; pass the table of {producer}.")
    return table


def _significance(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _new_axes(ax, width: float, height: float):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=(width, height), layout="constrained")
    return ax


def _heatmap(ax, matrix: pd.DataFrame, cmap: str, label: str, centre: bool, annot: Optional[pd.DataFrame] = None,
             vmax: Optional[float] = None):
    values = matrix.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if vmax is None:
        vmax = float(np.nanmax(np.abs(finite))) if finite.size else 1.0
        vmax = vmax or 1.0
    vmin = -vmax if centre else (float(finite.min()) if finite.size else 0.0)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_xticklabels([str(c) for c in matrix.columns], rotation=90, fontsize=8)
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_yticklabels([str(i) for i in matrix.index], fontsize=8)
    if annot is not None:
        for i in range(annot.shape[0]):
            for j in range(annot.shape[1]):
                text = annot.iat[i, j]
                if text:
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black")
    ax.figure.colorbar(image, ax=ax, label=label, shrink=0.8)
    return image


def enrichment(data: Any, uns_key: str = "enrichment", value: str = "log2_fold_change", alpha: float = 0.05,
               vmax: Optional[float] = None, cmap: str = "RdBu_r", ax=None, show: bool = False, save: Optional[str] = None,
               table_key: Optional[str] = None):
    """Heatmap of the enrichment of each label (rows) in each niche (columns), with significance marks.

    Parameters
    ----------
    data
        An AnnData (or SpatialData) with the table of :func:`scniche_jax.tl.enrichment` in
        ``uns[uns_key]``, or that table.
    uns_key
        Where the table is stored.
    value
        Column shown as colour (``'log2_fold_change'`` or ``'proportion'``).
    alpha
        Stars mark ``p_adj`` below 0.05 (``*``), 0.01 (``**``), 0.001 (``***``) when under ``alpha``.
    vmax
        Colour limit (symmetric for the fold change); the largest absolute value when None.
    cmap
        Matplotlib colour map.
    ax
        Axes to draw into; a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.
    table_key
        The table of a SpatialData.

    Returns
    -------
    matplotlib.axes.Axes
        The ``matplotlib.axes.Axes``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> _ = sj.tl.enrichment(adata, key="Cell_type")
    >>> ax = sj.pl.enrichment(adata)
    """
    table = _table(data, uns_key, [value, "p_adj"], "sj.tl.enrichment", table_key)
    groupby, key = table.columns[0], table.columns[1]
    matrix = table.pivot(index=key, columns=groupby, values=value)
    p_adj = table.pivot(index=key, columns=groupby, values="p_adj").reindex_like(matrix)
    stars = p_adj.map(lambda p: _significance(p) if np.isfinite(p) and p < alpha else "")
    ax = _new_axes(ax, 2.5 + 0.45 * matrix.shape[1], 1.5 + 0.3 * matrix.shape[0])
    _heatmap(ax, matrix, cmap, value.replace("_", " "), centre=(value == "log2_fold_change"), annot=stars, vmax=vmax)
    ax.set_xlabel(str(groupby))
    ax.set_ylabel(str(key))
    ax.set_title(f"enrichment of {key} in {groupby} (* p_adj < 0.05)", fontsize=9)
    return finish(ax, show, save)


def niche_adjacency(data: Any, uns_key: str = "niche_adjacency", value: str = "log2_ratio",
                    sample: Optional[str] = None, annotate: bool = True, vmax: Optional[float] = None,
                    cmap: str = "RdBu_r", ax=None, show: bool = False, save: Optional[str] = None, table_key: Optional[str] = None):
    """Heatmap of niche × niche adjacency (source rows, target columns).

    Parameters
    ----------
    data
        An AnnData (or SpatialData) with the table of :func:`scniche_jax.tl.niche_adjacency` in
        ``uns[uns_key]``, or that table.
    uns_key
        Where the table is stored.
    value
        ``'log2_ratio'`` (links against shuffled labels, comparable across niche sizes),
        ``'z_score'``, ``'observed'`` or ``'expected'``.
    sample
        Which sample's block; the pooled rows when None.
    annotate
        Write the values into the cells.
    vmax
        Colour limit (symmetric for z-scores); the largest off-diagonal absolute value when None.
    cmap
        Matplotlib colour map.
    ax
        Axes to draw into; a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.
    table_key
        The table of a SpatialData.

    Returns
    -------
    matplotlib.axes.Axes
        The ``matplotlib.axes.Axes``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> _ = sj.tl.niche_adjacency(adata, n_perms=100)
    >>> ax = sj.pl.niche_adjacency(adata)
    """
    table = _table(data, uns_key, ["source", "target", value], "sj.tl.niche_adjacency", table_key)
    sample_col = table.columns[0]
    block_name = POOLED if sample is None else sample
    block = table[table[sample_col].astype(object) == block_name]
    if block.empty:
        raise ValueError(f"no rows for sample {block_name!r}; samples: {list(pd.unique(table[sample_col].astype(object)))}.")
    matrix = block.pivot(index="source", columns="target", values=value)
    if vmax is None:
        off = matrix.to_numpy(dtype=float).copy()
        if off.shape[0] == off.shape[1]:
            np.fill_diagonal(off, np.nan)
        finite = off[np.isfinite(off)]
        vmax = float(np.abs(finite).max()) if finite.size else None
    annot = matrix.map(lambda v: f"{v:.1f}" if np.isfinite(v) else "") if annotate else None
    ax = _new_axes(ax, 2.5 + 0.5 * matrix.shape[1], 1.5 + 0.45 * matrix.shape[0])
    _heatmap(ax, matrix, cmap, value.replace("_", " "), centre=value in ("z_score", "log2_ratio"), annot=annot,
             vmax=vmax)
    ax.set_xlabel("neighbouring niche")
    ax.set_ylabel("niche")
    where = "pooled" if sample is None else f"sample {sample}"
    ax.set_title(f"niche adjacency ({value.replace('_', ' ')}, {where})", fontsize=9)
    return finish(ax, show, save)


def abundance(adata: Any, groupby: str = "scNiche", *, condition_key: str, sample_key: str,
              uns_key: str = "differential_abundance", niches: Optional[Sequence] = None,
              palette: Optional[Sequence] = None, ax=None, show: bool = False, save: Optional[str] = None, table_key: Optional[str] = None):
    """Per-sample niche proportions by condition: a box per (niche, condition) and one point per sample.

    When ``uns[uns_key]`` holds the table of :func:`scniche_jax.tl.differential_abundance`, each
    niche is labelled with its ``p_adj`` (and ``p_adj_permutation``).

    Parameters
    ----------
    adata
        Cells with ``obs[groupby]``, ``obs[condition_key]``, ``obs[sample_key]``; or a SpatialData.
    groupby
        ``obs`` column of niches.
    condition_key
        ``obs`` column of conditions.
    sample_key
        ``obs`` column of samples.
    uns_key
        Where the differential-abundance table is stored (optional).
    niches
        Which niches, in this order (all when None).
    palette
        Colours, one per condition.
    ax
        Axes to draw into; a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.
    table_key
        The table of a SpatialData.

    Returns
    -------
    matplotlib.axes.Axes
        The ``matplotlib.axes.Axes``.

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
    >>> _ = sj.tl.differential_abundance(adata, condition_key="condition", sample_key="sample", n_perms=100)
    >>> ax = sj.pl.abundance(adata, condition_key="condition", sample_key="sample")
    """
    adata = resolve_table(adata, table_key)
    for column, what in ((groupby, "niche column"), (condition_key, "condition column"), (sample_key, "sample column")):
        val.check_obs_key(adata, column, what)
    props = sample_proportions(adata, groupby, sample_key, condition_key)
    groups = list(props[groupby].cat.categories)
    if niches is not None:
        unknown = [n for n in niches if n not in groups]
        if unknown:
            raise ValueError(f"niches names {unknown}, not niches of adata.obs[{groupby!r}] ({groups}).")
        groups = list(niches)
    conditions = list(pd.unique(props[condition_key]))
    if isinstance(adata.obs[condition_key].dtype, pd.CategoricalDtype):
        conditions = [c for c in adata.obs[condition_key].cat.categories if c in set(conditions)]
    else:
        conditions = sorted(conditions, key=str)
    colours = distinct_colours(len(conditions), adata, condition_key, palette)
    ax = _new_axes(ax, 2.0 + 0.6 * len(groups) * max(1, len(conditions)) / 2, 4.2)
    width = 0.8 / len(conditions)
    rng = np.random.default_rng(0)
    for ci, condition in enumerate(conditions):
        data = [props.loc[(props[groupby] == g) & (props[condition_key] == condition), "proportion"].to_numpy()
                for g in groups]
        pos = np.arange(len(groups)) - 0.4 + width * (ci + 0.5)
        parts = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=False,
                           manage_ticks=False)
        for box in parts["boxes"]:
            box.set_facecolor(colours[ci])
            box.set_alpha(0.45)
        for p, values in zip(pos, data):
            ax.scatter(p + rng.uniform(-width * 0.2, width * 0.2, values.size), values, s=14, color=colours[ci],
                       edgecolors="black", linewidths=0.4, zorder=3)
        ax.scatter([], [], color=colours[ci], label=str(condition))
    labels = [str(g) for g in groups]
    if uns_key in adata.uns and isinstance(adata.uns[uns_key], pd.DataFrame) \
            and "p_adj" in adata.uns[uns_key].columns:
        stats = adata.uns[uns_key].set_index(adata.uns[uns_key].columns[0])
        labels = []
        for g in groups:
            if g in stats.index:
                row = stats.loc[g]
                text = f"p_adj {row['p_adj']:.2g}"
                if "p_adj_permutation" in row:
                    text += f"\nperm {row['p_adj_permutation']:.2g}"
                labels.append(f"{g}\n{text}")
            else:
                labels.append(str(g))
    ax.set_xticks(np.arange(len(groups)))
    with_stats = any("\n" in label for label in labels)  # several lines read across, not rotated
    ax.set_xticklabels(labels, rotation=0 if with_stats else 90, fontsize=7, linespacing=1.1)
    ax.set_ylabel("fraction of the sample's cells")
    ax.set_xlabel(groupby)
    ax.legend(title=condition_key, frameon=False, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"niche abundance per {sample_key}", fontsize=9)
    return finish(ax, show, save)


def markers(adata: Any, groupby: str = "scNiche", n_genes: int = 3, uns_key: str = "niche_markers",
            key: Optional[str] = None, restrict_to=None, layer: Optional[str] = None, ax=None, show: bool = False, save: Optional[str] = None,
            table_key: Optional[str] = None, **kwargs):
    """Dot plot (scanpy's ``sc.pl.dotplot``) of the top marker genes of each niche.

    Parameters
    ----------
    adata
        Cells with ``obs[groupby]`` and the table of :func:`scniche_jax.tl.niche_markers` in
        ``uns[uns_key]``; or a SpatialData.
    groupby
        ``obs`` column of niches.
    n_genes
        Top genes per niche (by score, positive fold change first).
    uns_key
        Where the marker table is stored.
    key
        ``obs`` column that ``restrict_to`` refers to (e.g. ``'Cell_type'``); None uses every cell.
    restrict_to
        Only the cells whose ``obs[key]`` is this label (or one of these labels), e.g.
        ``key='Cell_type', restrict_to='Astrocyte'`` (scNiche's ``selected_celltype``).
    layer
        ``adata.layers`` key of the expression; ``adata.X`` when None.
    ax
        Axes to draw into (scanpy splits it for the legends); a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.
    table_key
        The table of a SpatialData.
    **kwargs
        Passed to ``scanpy.pl.dotplot``.

    Returns
    -------
    matplotlib.axes.Axes
        The dot plot's main ``matplotlib.axes.Axes``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> _ = sj.tl.niche_markers(adata, n_genes=3)  # needs scanpy
    >>> ax = sj.pl.markers(adata, n_genes=3)
    """
    try:
        import scanpy as sc
    except ImportError as err:
        raise ImportError("pl.markers uses scanpy: pip install 'scniche-jax[analysis]'") from err
    adata = resolve_table(adata, table_key)
    table = _table(adata, uns_key, [groupby, "gene", "score"], "sj.tl.niche_markers", None)
    n_genes = val.check_positive_int(n_genes, "n_genes")
    view = adata
    if restrict_to is not None:
        if key is None:
            raise ValueError("restrict_to needs key=, the obs column it refers to.")
        val.check_obs_key(adata, key, "label column")
        wanted = [restrict_to] if isinstance(restrict_to, (str, int)) else list(restrict_to)
        view = adata[adata.obs[key].isin(wanted).to_numpy()]
    top = table.sort_values([groupby, "score"], ascending=[True, False]).groupby(groupby, observed=True).head(n_genes)
    var_names = {str(g): list(rows["gene"]) for g, rows in top.groupby(groupby, observed=True) if len(rows)}
    if not var_names:
        raise ValueError(f"adata.uns[{uns_key!r}] holds no genes to plot.")
    if ax is None:
        n_cols = sum(len(v) for v in var_names.values())
        _, ax = _pyplot().subplots(figsize=(3.0 + 0.32 * n_cols, 1.6 + 0.35 * view.obs[groupby].nunique()))
    axes = sc.pl.dotplot(view, var_names, groupby=groupby, layer=layer, ax=ax, show=False, **kwargs)
    return finish(axes["mainplot_ax"], show, save)
