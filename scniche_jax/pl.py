"""Plots of niches and of the analyses after them (matplotlib is optional:
``pip install 'scniche-jax[plot]'``).

Every function takes ``ax=None`` (draw into your Axes, or a new figure when None), returns
the matplotlib object it drew (an ``Axes``; a ``Figure`` for the multi-panel ``niches`` and
``history``, ``niches(ax=<one Axes>)`` that Axes), calls ``plt.show()`` only with
``show=True`` and writes the figure to a file with ``save='name.png'`` (scanpy's ``save=``). A ``spatialdata.SpatialData``
is accepted wherever an AnnData is (``table_key`` names its table).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from . import validation as val
from ._deprecation import map_renamed, renamed_kwargs
from ._spatialdata import resolve_table
from .analysis_plots import abundance, enrichment, markers, niche_adjacency
from .plotting import _pyplot, distinct_colours, finish, history_figure

__all__ = ["niches", "history", "composition", "enrichment", "niche_adjacency", "abundance", "markers"]


def _legend_columns(n: int, per_column: int = 18) -> int:
    return max(1, -(-n // per_column))


@renamed_kwargs(key="groupby")
def niches(adata: Any, groupby: str = "scNiche", sample_key: Optional[str] = None,
           spatial_key: str = "spatial", point_size: Optional[float] = None, ncols: int = 3,
           title: Optional[str] = None, palette: Optional[Sequence] = None, ax=None, show: bool = False, save: Optional[str] = None,
           table_key: Optional[str] = None):
    """Cells at their spatial coordinates coloured by niche, one panel per slice.

    Parameters
    ----------
    adata
        Cells with ``obs[groupby]`` and ``obsm[spatial_key]``; or a SpatialData.
    groupby
        ``obs`` column of niche labels (``key`` is the deprecated name).
    sample_key
        ``obs`` column of slice ids (one panel per slice); one panel when None.
    spatial_key
        ``obsm`` key of the coordinates.
    point_size
        Marker size; chosen from the number of cells when None.
    ncols
        Panels per row.
    title
        Figure title; ``groupby`` when None (each panel is titled with its slice).
    palette
        Colours, one per niche (else ``uns[groupby + '_colors']`` or a distinct palette).
    ax
        An Axes (one slice) or a sequence of Axes (one per slice); a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.
    table_key
        The table of a SpatialData.

    Returns
    -------
    matplotlib.figure.Figure or matplotlib.axes.Axes
        The ``matplotlib.figure.Figure`` of the panels (the legend sits outside them, on the
        right); with one Axes passed as ``ax``, that ``Axes``, as the other plots return.
        Slices are drawn in sorted order (a categorical's own order).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> fig = sj.pl.niches(adata)
    >>> fig.savefig("niches.png", dpi=120)  # doctest: +SKIP
    """
    source, adata = adata, resolve_table(adata, table_key)
    val.check_obs_key(adata, groupby, "niche column")
    coords = val.spatial_coordinates(adata, spatial_key, source)
    if sample_key is not None:
        val.check_obs_key(adata, sample_key, "sample column")
        column = adata.obs[sample_key]
        samples = (list(column.cat.categories[column.cat.categories.isin(column.unique())])
                   if isinstance(column.dtype, pd.CategoricalDtype) else sorted(pd.unique(column.astype(object)), key=str))
        masks = [(adata.obs[sample_key].astype(object) == s).to_numpy() for s in samples]
    else:
        samples, masks = [None], [np.ones(adata.n_obs, bool)]
    plt = _pyplot()
    labels = pd.Categorical(adata.obs[groupby])
    colours = distinct_colours(len(labels.categories), adata, groupby, palette)
    if ax is None:
        ncols = max(1, min(ncols, len(samples)))
        nrows = -(-len(samples) // ncols)
        spans = [np.ptp(coords[m], axis=0) if m.any() else np.ones(2) for m in masks]
        ratio = float(np.clip(max(s[1] / max(s[0], 1e-12) for s in spans), 0.4, 2.5))  # height / width of a slice
        width = 5.0 if ratio <= 1 else 5.0 / ratio ** 0.5
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 2.6, width * ratio * nrows + 0.6),
                                 squeeze=False, layout="constrained")
        axes = list(axes.flat)
    else:
        single = not isinstance(ax, (list, tuple, np.ndarray))
        axes = list(np.ravel(ax))
        if len(axes) < len(samples):
            raise ValueError(f"ax holds {len(axes)} Axes for {len(samples)} slices; pass one per slice or ax=None.")
        fig = axes[0].figure
    size = point_size or max(0.5, min(20.0, 30000 / max(adata.n_obs, 1)))
    for panel, sample, mask in zip(axes, samples, masks):
        for code, name in enumerate(labels.categories):
            sel = mask & (labels.codes == code)
            panel.scatter(coords[sel, 0], coords[sel, 1], s=size, color=colours[code], label=str(name),
                          linewidths=0)
        panel.set_aspect("equal")
        panel.set_xticks([])
        panel.set_yticks([])
        if sample is not None:
            panel.set_title(str(sample))
    for panel in axes[len(samples):]:
        panel.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[i], label=str(name))
               for i, name in enumerate(labels.categories)]
    fig.legend(handles=handles, loc="outside right upper" if ax is None else "center left",
               bbox_to_anchor=None if ax is None else (1.0, 0.5), fontsize=8, frameon=False,
               ncols=_legend_columns(len(handles)), title=groupby)
    heading = title if title is not None else groupby
    if sample_key is None and len(axes) == 1:
        axes[0].set_title(heading)
    else:
        fig.suptitle(heading)
    if ax is not None and single:
        return finish(axes[0], show, save)
    return finish(fig, show, save)


def history(model, ax=None, show: bool = False, save: Optional[str] = None):
    """The training history of a :class:`~scniche_jax.Model` (loss components, LR, probe ARIs).

    Parameters
    ----------
    model
        A ``Model`` or its ``history`` (a dict, or an object with ``loss``, ``lr``, ``ari``,
        ``early_stop`` attributes).
    ax
        Three Axes (loss, learning rate, ARI); a new figure when None.
    show
        Call ``plt.show()``.
    save
        Write the figure to this file (the format from its extension, e.g. ``'niches.png'``), as
        scanpy's ``save=`` does; nothing is written when None.

    Returns
    -------
    matplotlib.figure.Figure
        The ``matplotlib.figure.Figure``. When no ARI probe ran the ARI panel says so and how to
        get one (``sj.fit(..., ari_every=k)``).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> fig = sj.pl.history(model)
    """
    hist = getattr(model, "history", model)
    return finish(history_figure(hist, axes=ax), show, save)


def composition(adata: Any, groupby: str = "scNiche", key: Optional[str] = None, sample_key: Optional[str] = None,
                normalize: bool = True, order: Optional[Sequence[str]] = None, palette: Optional[Sequence] = None,
                ax=None, show: bool = False, save: Optional[str] = None, table_key: Optional[str] = None, **deprecated):
    """Stacked bars of the cell types (``key``) in each niche, optionally one bar per sample.

    Parameters
    ----------
    adata
        Cells with ``obs[groupby]`` and ``obs[key]``; or a SpatialData.
    groupby
        ``obs`` column of niche labels.
    key
        ``obs`` column of cell types; ``'Cell_type'`` when None. (Deprecated spelling:
        ``celltype_key=`` for this column, with ``key=`` then naming the niche column.)
    sample_key
        ``obs`` column of samples: bars per niche and sample, grouped by niche.
    normalize
        Fractions per bar (True) or counts.
    order
        Niche order on the x axis.
    palette
        Colours, one per cell type (else ``uns[key + '_colors']`` or a palette that stays distinct
        up to 60 types).
    ax
        Axes to draw into; a new figure (sized for the legend) when None.
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
        The ``matplotlib.axes.Axes``; the legend sits right of it, in several columns for many types.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> sj.tl.clustering(adata, n_niches=4)
    >>> ax = sj.pl.composition(adata, key="Cell_type")
    """
    if deprecated:
        unknown = set(deprecated) - {"celltype_key"}
        if unknown:
            raise TypeError(f"composition() got unexpected keyword arguments {sorted(unknown)}.")
        if key is not None:  # the old call composition(adata, key=<niche column>, celltype_key=<types>)
            warnings.warn("composition(): key= named the niche column when combined with celltype_key=; "
                          "use groupby=<niche column>, key=<cell-type column>.", DeprecationWarning, stacklevel=2)
            groupby, key = key, None
        key = map_renamed("composition", {"celltype_key": deprecated["celltype_key"]}, {"celltype_key": "key"})["key"]
    key = "Cell_type" if key is None else key
    adata = resolve_table(adata, table_key)
    val.check_obs_key(adata, groupby, "niche column")
    val.check_obs_key(adata, key, "cell-type column", arg="key")
    if sample_key is not None:
        val.check_obs_key(adata, sample_key, "sample column")
    niche_col = adata.obs[groupby]
    index = [niche_col] if sample_key is None else [niche_col, adata.obs[sample_key]]
    table = pd.crosstab(index, adata.obs[key])
    niches_present = list(pd.unique(table.index.get_level_values(0)))
    if order is not None:
        missing = [o for o in order if o not in niches_present]
        if missing:
            raise ValueError(f"order names {missing}, not niches of adata.obs[{groupby!r}] ({niches_present}).")
        table = table.loc[[row for o in order for row in table.index if (row[0] if sample_key else row) == o]]
    if normalize:
        table = table.div(table.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    plt = _pyplot()
    n_types = table.shape[1]
    colours = distinct_colours(n_types, adata, key, palette)
    ncol = _legend_columns(n_types)
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.0 + 0.35 * len(table) + 2.2 * ncol, 4.8), layout="constrained")
    positions = np.arange(len(table), dtype=float)
    if sample_key is not None:  # a gap between niches
        first = table.index.get_level_values(0)
        positions += np.cumsum(np.r_[0, (first[1:] != first[:-1]).astype(float)]) * 0.6
    bottom = np.zeros(len(table))
    for j, cell_type in enumerate(table.columns):
        values = table[cell_type].to_numpy(dtype=float)
        ax.bar(positions, values, bottom=bottom, color=colours[j], label=str(cell_type), width=0.85, linewidth=0)
        bottom += values
    ax.set_xticks(positions)
    if sample_key is None:
        ax.set_xticklabels([str(i) for i in table.index], rotation=90)
        ax.set_xlabel(groupby)
    else:
        ax.set_xticklabels([f"{n} | {s}" for n, s in table.index], rotation=90, fontsize=7)
        ax.set_xlabel(f"{groupby} | {sample_key}")
    ax.set_ylabel("fraction of cells" if normalize else "cells")
    ax.margins(x=0.01)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=7, frameon=False, ncols=ncol, title=key)
    return finish(ax, show, save)
