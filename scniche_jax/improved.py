"""The pieces of ``variant="improved"``, as pure functions (arrays in, arrays out).

The reference model finds niches far from labelled regions mostly because of what it is
fed and how its embedding is read out, not because of its layers: raw composition at one
scale is dominated by the abundant cell types, the consensus graph is empty from about
2,000 cells on, and KMeans on a per-cell embedding sees no spatial context. The variant
(options: :class:`~scniche_jax.config.ImprovedOptions`) changes, in the order
:class:`~scniche_jax.Model` applies them:

1. :func:`improved_views` (before the view graphs are built): the cell-type composition of
   each cell's k nearest spatial neighbours at several scales (``scales``, within each
   slice, from ``obsm['spatial']`` and the cell-type column pp recorded), and pp's
   expression views (``X_data``, ``X_data_nbr``); every column z-scored (the expression
   within each slice).
2. :func:`majority_consensus` (instead of the frozen fusion network's consensus): edges
   that at least ``consensus_votes`` view graphs share, plus self-loops: never empty.
3. ``deterministic_embedding=True``: no dropout when embedding.
4. :func:`readout` (after the embedding): the embedding z-scored (within each slice with
   ``slice_readout``) side by side with the standardised composition and neighbourhood
   expression (weights ``concat_composition``, ``concat_expression``).
5. :func:`smooth_embedding`: ``smooth_steps`` passes of the mean over each cell's
   ``smooth_k`` nearest spatial neighbours (within its slice).
6. After ``fit``: ``tl.clustering(..., **options.clustering_kwargs)`` refines KMeans with a
   spatial Potts prior (:func:`scniche_jax.clustering.potts_refine`).

:data:`ABLATIONS` names the one-piece-off variants that ``benchmarks/niche_quality.py``
reports.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from .config import ImprovedOptions
from .consensus import majority_consensus

__all__ = ["ImprovedOptions", "ABLATIONS", "slice_groups", "spatial_mean_operator", "standardise_per_slice",
           "multiscale_composition", "radius_composition", "data_keys", "improved_views", "majority_consensus", "readout",
           "smooth_embedding", "finish_embedding", "infer_celltype_key"]


ABLATIONS: dict[str, dict] = {
    "improved": {},
    "improved-no_multiscale": {"improved_options": ImprovedOptions(scales=())},
    "improved-no_standardise": {"improved_options": ImprovedOptions(standardise=False)},
    "improved-no_expression_views": {"improved_options": ImprovedOptions(expression_views=False)},
    "improved-gfn_consensus": {"improved_options": ImprovedOptions(consensus="gfn")},
    "improved-per_slice_composition": {"improved_options": ImprovedOptions(composition_per_slice=True)},
    "improved-no_concat_composition": {"improved_options": ImprovedOptions(concat_composition=0.0)},
    "improved-no_concat_expression": {"improved_options": ImprovedOptions(concat_expression=0.0)},
    "improved-no_readout_features": {"improved_options": ImprovedOptions(concat_composition=0.0,
                                                                         concat_radius_composition=0.0,
                                                                         concat_expression=0.0)},
    "improved-no_slice_readout": {"improved_options": ImprovedOptions(slice_readout=False)},
    "improved-no_smoothing": {"improved_options": ImprovedOptions(smooth_steps=0)},
    "improved-no_spatial_prior": {"improved_options": ImprovedOptions(spatial_prior=0.0)},
    "improved-no_radius_composition": {"improved_options": ImprovedOptions(concat_radius_composition=0.0)},
    "improved-embedding_weight_1": {"improved_options": ImprovedOptions(embedding_weight=1.0)},
    "improved-dropout_embedding": {"deterministic_embedding": False},
}
"""One-piece-off (or one-piece-changed) variants: ``fit`` keywords added to ``variant="improved"`` (benchmark rows)."""


def slice_groups(n_cells: int, slices: Optional[Sequence] = None) -> np.ndarray:
    """One group id per cell: the slice, or a single group when ``slices`` is None."""
    if slices is None:
        return np.zeros(n_cells, dtype=object)
    groups = np.asarray(pd.Series(list(slices)).astype(str).to_numpy(), dtype=object)
    if groups.shape[0] != n_cells:
        raise ValueError(f"slices has {groups.shape[0]} entries for {n_cells} cells.")
    return groups


def spatial_mean_operator(coords: np.ndarray, groups: np.ndarray, k: int) -> sp.csr_matrix:
    """Row-stochastic N×N matrix: row i averages cell i's ``k`` nearest cells of its own slice.

    The cell itself is included (it is its own nearest point); a slice with fewer than
    ``k`` cells averages all of them.
    """
    coords = np.asarray(coords, np.float64)[:, :2]
    n = coords.shape[0]
    rows, cols = [], []
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        kk = min(int(k), idx.size)
        _, nb = NearestNeighbors(n_neighbors=kk).fit(coords[idx]).kneighbors(coords[idx])
        rows.append(np.repeat(idx, kk))
        cols.append(idx[nb.ravel()])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    w = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    w.data[:] = 1.0
    return (sp.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w).tocsr()


def standardise_per_slice(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Every column z-scored within each slice (constant columns centred only), float64."""
    x = np.array(x, np.float64)
    for g in pd.unique(groups):
        m = groups == g
        sd = x[m].std(axis=0)
        x[m] = (x[m] - x[m].mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0)
    return x


def _one_hot_types(cell_types: Sequence, order: Optional[Sequence]) -> sp.csr_matrix:
    """(N, T) one-hot cell types, columns in ``order`` (sorted when None)."""
    labels = pd.Series(list(cell_types)).astype(str)
    order = sorted(pd.unique(labels)) if order is None else [str(t) for t in order]
    codes = pd.Categorical(labels, categories=order).codes
    if (codes < 0).any():
        raise ValueError("cell types outside `order`.")
    return sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)), shape=(codes.size, len(order)))


def multiscale_composition(coords: np.ndarray, cell_types: Sequence, groups: np.ndarray,
                           scales: Sequence[int], order: Optional[Sequence] = None) -> np.ndarray:
    """Cell-type fractions among each cell's k nearest cells (itself included) for each k in ``scales``.

    Returns:
      (N, len(scales) · T) float64, the scales side by side, cell types in ``order``
      (sorted when None).
    """
    one_hot = _one_hot_types(cell_types, order)
    return np.hstack([np.asarray((spatial_mean_operator(coords, groups, k) @ one_hot).todense()) for k in scales])


def radius_composition(coords: np.ndarray, cell_types: Sequence, groups: np.ndarray,
                       scales: Sequence[int], order: Optional[Sequence] = None) -> np.ndarray:
    """Cell-type fractions among the cells within a fixed radius of each cell, one radius per k in ``scales``.

    The radius of a slice is the median distance from its cells to their k-th nearest cell
    (itself included), so it holds about k cells on average. Unlike the k nearest cells
    (:func:`multiscale_composition`), a fixed radius does not shrink on the dense side of a
    border between a dense and a sparse layer, which would pull the composition of the
    sparse layer's border cells towards the dense one.

    Returns:
      (N, len(scales) · T) float64, the scales side by side, cell types in ``order``
      (sorted when None); each cell counts itself.
    """
    one_hot = _one_hot_types(cell_types, order)
    n_types = one_hot.shape[1]
    coords = np.asarray(coords, np.float64)[:, :2]
    out = np.zeros((one_hot.shape[0], len(scales) * n_types))
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        nn = NearestNeighbors().fit(coords[idx])
        for s, k in enumerate(scales):
            others = min(int(k), idx.size) - 1  # the k nearest cells, itself included
            radius = float(np.median(nn.kneighbors(n_neighbors=others)[0][:, -1])) if others > 0 else 0.0
            # the fitted points queried without X: each cell's own entry is left out, added once here
            within = nn.radius_neighbors_graph(radius=radius, mode="connectivity") + sp.eye(idx.size, format="csr")
            out[idx, s * n_types:(s + 1) * n_types] = (within @ one_hot[idx]).toarray() / np.asarray(within.sum(1))
    return out


def infer_celltype_key(adata) -> Optional[str]:
    """The ``obs`` column whose values are exactly pp's ``uns['CN_order']`` (None if none or several)."""
    order = adata.uns.get("CN_order")
    if order is None:
        return None
    target = {str(t) for t in order}
    hits = [c for c in adata.obs.columns if adata.obs[c].nunique() == len(target)
            and set(adata.obs[c].astype(str).unique()) == target]
    return hits[0] if len(hits) == 1 else None


def data_keys(adata, options: ImprovedOptions) -> tuple[str, Optional[str], str]:
    """``(celltype_key, sample_key, spatial_key)`` of ``adata``: the options', else what pp recorded.

    Raises:
      ValueError: no cell-type column can be found, or a named column is missing.
    """
    recorded = adata.uns.get("CN_params", {}) or {}
    celltype_key = options.celltype_key or recorded.get("celltype_key") or infer_celltype_key(adata)
    sample_key = options.sample_key or recorded.get("sample_key")
    spatial_key = recorded.get("spatial_key", "spatial")
    if celltype_key is None:
        raise ValueError("variant='improved' needs the cell-type column and cannot find it: run "
                         "scniche_jax.pp.cal_spatial_neighbors (it records it) or pass "
                         "improved_options=ImprovedOptions(celltype_key='...').")
    for name, key in (("celltype_key", celltype_key), ("sample_key", sample_key)):
        if key is not None and key not in adata.obs:
            raise ValueError(f"{name}={key!r} is not a column of adata.obs; pass "
                             f"improved_options=ImprovedOptions({name}='...') with one of {list(adata.obs.columns)}.")
    if spatial_key not in adata.obsm:
        raise ValueError(f"variant='improved' needs the coordinates adata.obsm[{spatial_key!r}] that pp used.")
    return celltype_key, sample_key, spatial_key


def improved_views(adata, options: ImprovedOptions = ImprovedOptions()) -> dict[str, np.ndarray]:
    """The improved variant's view matrices (float32), computed from what ``pp`` stored.

    Args:
      adata: after ``pp.cal_spatial_neighbors`` + ``cal_spatial_exp`` or ``process_multi_slices``
        (``obsm['spatial']``, ``obsm['X_cn_norm']``, ``obsm['X_data']``, ``obsm['X_data_nbr']``).
      options: :class:`ImprovedOptions` (scales, standardisation, expression views, the
        cell-type and slice columns).

    Returns:
      ``{name: matrix}``: the views the model trains on (``options.view_names``, in that
      order, ``X_ms_comp`` first), plus ``X_data_nbr_std`` when only the readout uses it.
    """
    celltype_key, sample_key, spatial_key = data_keys(adata, options)
    groups = slice_groups(adata.n_obs, None if sample_key is None else adata.obs[sample_key])
    if options.scales:
        comp = multiscale_composition(adata.obsm[spatial_key], adata.obs[celltype_key], groups, options.scales,
                                      adata.uns.get("CN_order"))
    else:
        comp = np.asarray(adata.obsm["X_cn_norm"], np.float64)
    one = slice_groups(adata.n_obs)
    if options.standardise:
        views = {"X_ms_comp": standardise_per_slice(comp, groups if options.composition_per_slice else one)}
    else:
        views = {"X_ms_comp": comp}
    if options.expression_views or options.concat_expression > 0:
        for key in ("X_data", "X_data_nbr"):
            x = np.asarray(adata.obsm[key], np.float64)
            views[f"{key}_std"] = standardise_per_slice(x, groups) if options.standardise else x
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in views.items()}


def readout(embeddings: Sequence[np.ndarray], features: Sequence[tuple[np.ndarray, float]] = (),
            groups: Optional[np.ndarray] = None, embedding_weight: float = 1.0) -> np.ndarray:
    """One representation from one or more embeddings and weighted feature blocks.

    Each embedding is z-scored per column (within each slice when ``groups`` are given: the
    slice-aware readout) and scaled to ``embedding_weight``² total variance (0: left out);
    each feature block of ``features`` (matrix, weight) is z-scored and scaled to ``weight``²
    total variance; they are concatenated. One embedding at weight 1, no features and no
    ``groups`` returns it unchanged.
    """
    features = [(x, w) for x, w in features if w > 0]
    embeddings = list(embeddings) if embedding_weight > 0 else []
    if len(embeddings) == 1 and embedding_weight == 1 and not features and groups is None:
        return np.asarray(embeddings[0], np.float32)
    if not embeddings and not features:
        raise ValueError("the readout is empty: give an embedding (embedding_weight > 0) or a feature block a weight > 0.")

    def unit(x, per_slice=False):
        x = standardise_per_slice(x, groups if per_slice and groups is not None else slice_groups(len(x)))
        return x / np.sqrt(x.shape[1])

    parts = [embedding_weight * unit(z, per_slice=True) for z in embeddings] + [w * unit(x) for x, w in features]
    return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)


def smooth_embedding(z: np.ndarray, coords: np.ndarray, groups: np.ndarray, k: int = 20,
                     steps: int = 2) -> np.ndarray:
    """``steps`` passes of the mean over each cell's ``k`` nearest spatial cells (its slice), float32."""
    z = np.asarray(z, np.float64)
    if steps:
        op = spatial_mean_operator(coords, groups, k)
        for _ in range(steps):
            z = op @ z
    return np.ascontiguousarray(z, dtype=np.float32)


def finish_embedding(z: np.ndarray, adata, views: dict[str, np.ndarray], options: ImprovedOptions) -> np.ndarray:
    """The variant's final representation of ``adata``'s cells: :func:`readout`, then :func:`smooth_embedding`.

    Args:
      z: the model's embedding (cells × latent).
      adata: the cells (``obsm['spatial']`` and the slice column are read).
      views: :func:`improved_views` of the same cells.
      options: :class:`ImprovedOptions`.
    """
    _, sample_key, spatial_key = data_keys(adata, options)
    groups = slice_groups(adata.n_obs, None if sample_key is None else adata.obs[sample_key])
    features = [(views["X_ms_comp"], options.concat_composition)]
    if options.concat_radius_composition > 0:
        celltype_key = data_keys(adata, options)[0]
        features.append((radius_composition(adata.obsm[spatial_key], adata.obs[celltype_key], groups, options.scales,
                                            adata.uns.get("CN_order")), options.concat_radius_composition))
    if options.concat_expression > 0:
        features.append((views["X_data_nbr_std"], options.concat_expression))
    rep = readout([z], features, groups if options.slice_readout else None, options.embedding_weight)
    return smooth_embedding(rep, adata.obsm[spatial_key], groups, options.smooth_k, options.smooth_steps)
