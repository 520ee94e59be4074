"""Plots of niches (matplotlib is optional: ``pip install 'scniche-jax[plot]'``)."""
from __future__ import annotations

from typing import Optional, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from . import validation as val
from .plotting import _pyplot, history_figure

__all__ = ["niches", "history", "composition"]


def niches(adata: ad.AnnData, key: str = "scNiche", sample_key: Optional[str] = None,
           spatial_key: str = "spatial", point_size: Optional[float] = None, ncols: int = 3):
    """Cells at their spatial coordinates coloured by niche, one panel per slice.

    Args:
      adata: cells with ``obs[key]`` and ``obsm[spatial_key]``.
      key: ``obs`` column of niche labels.
      sample_key: ``obs`` column of slice ids (one panel per slice); one panel when None.
      spatial_key: ``obsm`` key of the coordinates.
      point_size: marker size; chosen from the number of cells when None.
      ncols: panels per row.

    Returns:
      ``matplotlib.figure.Figure``.
    """
    val.check_obs_key(adata, key, "niche column")
    coords = val.spatial_coordinates(adata, spatial_key)
    if sample_key is not None:
        val.check_obs_key(adata, sample_key, "sample column")
        samples = list(pd.unique(adata.obs[sample_key].astype(object)))
        masks = [(adata.obs[sample_key].astype(object) == s).to_numpy() for s in samples]
    else:
        samples, masks = [None], [np.ones(adata.n_obs, bool)]
    plt = _pyplot()
    labels = pd.Categorical(adata.obs[key])
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(labels.categories), 1), endpoint=False))
    ncols = min(ncols, len(samples))
    nrows = -(-len(samples) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 5 * nrows), squeeze=False)
    size = point_size or max(0.5, min(20.0, 30000 / max(adata.n_obs, 1)))
    for ax, sample, mask in zip(axes.flat, samples, masks):
        for code, name in enumerate(labels.categories):
            sel = mask & (labels.codes == code)
            ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=colours[code], label=str(name), linewidths=0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if sample is not None:
            ax.set_title(str(sample))
    for ax in list(axes.flat)[len(samples):]:
        ax.axis("off")
    axes.flat[0].legend(markerscale=max(1.0, 20 / size), fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    return fig


def history(model):
    """The training history of a :class:`~scniche_jax.Model` (loss components, LR, ARIs)."""
    return history_figure(model.history)


def composition(adata: ad.AnnData, key: str = "scNiche", celltype_key: str = "Cell_type",
                normalize: bool = True, order: Optional[Sequence[str]] = None):
    """Stacked bars of the cell types in each niche.

    Args:
      adata: cells with ``obs[key]`` and ``obs[celltype_key]``.
      key: ``obs`` column of niche labels.
      celltype_key: ``obs`` column of cell types.
      normalize: fractions per niche (True) or counts.
      order: niche order on the x axis.

    Returns:
      ``matplotlib.figure.Figure``.
    """
    val.check_obs_key(adata, key, "niche column")
    val.check_obs_key(adata, celltype_key, "cell-type column")
    table = pd.crosstab(adata.obs[key], adata.obs[celltype_key])
    if order is not None:
        table = table.loc[list(order)]
    if normalize:
        table = table.div(table.sum(axis=1), axis=0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(table), 4.5))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(table.shape[1], 1), endpoint=False))
    bottom = np.zeros(len(table))
    for j, cell_type in enumerate(table.columns):
        ax.bar(range(len(table)), table[cell_type].to_numpy(), bottom=bottom, color=colours[j], label=str(cell_type))
        bottom += table[cell_type].to_numpy()
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([str(i) for i in table.index], rotation=90)
    ax.set_ylabel("fraction of cells" if normalize else "cells")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
