"""Pieces of ``variant="improved"``: better views, a non-empty consensus graph, spatial smoothing.

The reference model (REFERENCE.md) is flat on labelled data mostly because of what it is
fed and how its embedding is read out, not because of its layers: raw composition at one
scale is dominated by the abundant cell types, the consensus graph is empty from about
2,000 cells on, and KMeans on a per-cell embedding sees no spatial context. This module
holds the fixes as pure functions (arrays in, arrays out) plus :class:`ImprovedOptions`,
so that ``fit`` can wire them in without touching the reference path:

1. :func:`improved_views` (before the view graphs are built): the cell-type composition of
   each cell's k nearest spatial neighbours at several scales (``scales``, within each
   slice, computed from ``obsm['spatial']`` and the cell-type column), and the
   expression views ``pp`` stored (``X_data``, ``X_data_nbr``); every column z-scored per
   slice (``standardise``), which weighs rare cell types like abundant ones and puts the
   slices of a multi-slice set on one scale.
2. :func:`majority_consensus` (instead of the frozen GFN's ``build_consensus``): the
   consensus graph keeps the edges that at least ``consensus_votes`` of the V view graphs
   share, plus one self-loop per node: never empty, whatever the graph size.
3. :func:`readout` (after the embedding): the standardised embedding side by side with the
   standardised composition view (weight ``concat_composition``, in units of the embedding's
   total variance), and, with
   ``ensemble > 1``, several shorter-trained models side by side.
4. :func:`smooth_embedding` (after the readout, before ``tl.clustering``): replaces each
   cell's embedding ``smooth_steps`` times by the mean over its ``smooth_k`` nearest
   spatial neighbours (itself included, within its slice).
5. ``deterministic_embedding=True`` (already a ``fit`` option): no dropout when embedding.

Every piece is its own option; :data:`ABLATIONS` names the one-piece-off variants that
``benchmarks/niche_quality.py`` reports.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

__all__ = ["ImprovedOptions", "ABLATIONS", "slice_groups", "spatial_mean_operator", "standardise_per_slice",
           "multiscale_composition", "improved_views", "majority_consensus", "readout", "smooth_embedding",
           "infer_celltype_key"]


@dataclass(frozen=True)
class ImprovedOptions:
    """Options of ``variant="improved"`` (defaults = the improved variant).

    Attributes:
      scales: neighbourhood sizes (cells, the cell itself included) of the composition view;
        ``()`` keeps pp's ``X_cn_norm`` (k_cutoff + 1 cells) as the only composition.
      standardise: z-score every view column within each slice.
      expression_views: also use pp's ``X_data`` and ``X_data_nbr`` as views.
      consensus: ``"majority"`` (edges shared by ``consensus_votes`` view graphs) or
        ``"gfn"`` (the reference's frozen graph fusion network).
      consensus_votes: view graphs that must share an edge (capped at the number of views).
      smooth_k: spatial neighbours (itself included) of the embedding smoothing.
      smooth_steps: smoothing passes; 0 turns smoothing off.
      deterministic_embedding: embed with dropout off.
      concat_composition: > 0 appends the standardised composition view, with this weight,
        to the standardised embedding before smoothing (:func:`readout`).
      ensemble: train this many models (seeds ``seed, seed+1, …``), each with
        ``epochs // ensemble`` epochs (same total cost), and concatenate their standardised
        embeddings (:func:`readout`).
      slice_readout: z-score the embedding within each slice in the readout.
    """

    scales: tuple[int, ...] = (10, 20, 50)
    standardise: bool = True
    expression_views: bool = True
    consensus: str = "majority"
    consensus_votes: int = 2
    smooth_k: int = 20
    smooth_steps: int = 2
    deterministic_embedding: bool = True
    concat_composition: float = 2.0
    ensemble: int = 1
    slice_readout: bool = False

    def __post_init__(self):
        if any(int(k) < 1 for k in self.scales):
            raise ValueError(f"scales must be positive neighbourhood sizes, got {self.scales!r}.")
        if self.consensus not in ("majority", "gfn"):
            raise ValueError(f"consensus must be 'majority' or 'gfn', got {self.consensus!r}.")
        if self.ensemble < 1 or self.concat_composition < 0:
            raise ValueError("ensemble must be >= 1 and concat_composition >= 0.")
        if self.consensus_votes < 1 or self.smooth_k < 1 or self.smooth_steps < 0:
            raise ValueError("consensus_votes and smooth_k must be >= 1 and smooth_steps >= 0.")


ABLATIONS: dict[str, ImprovedOptions] = {
    "improved": ImprovedOptions(),
    "improved-no_multiscale": ImprovedOptions(scales=()),
    "improved-no_standardise": ImprovedOptions(standardise=False),
    "improved-no_smoothing": ImprovedOptions(smooth_steps=0),
    "improved-gfn_consensus": ImprovedOptions(consensus="gfn"),
    "improved-dropout_embedding": ImprovedOptions(deterministic_embedding=False),
    "improved-no_expression_views": ImprovedOptions(expression_views=False),
    "improved-concat1": ImprovedOptions(concat_composition=1.0),
    "improved-no_concat_composition": ImprovedOptions(concat_composition=0.0),
    "improved-slice_readout": ImprovedOptions(slice_readout=True),
    "improved-ensemble3": ImprovedOptions(ensemble=3),
}


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


def multiscale_composition(coords: np.ndarray, cell_types: Sequence, groups: np.ndarray,
                           scales: Sequence[int], order: Optional[Sequence] = None) -> np.ndarray:
    """Cell-type fractions among each cell's k nearest cells (itself included) for each k in ``scales``.

    Returns:
      (N, len(scales) · T) float64, the scales side by side, cell types in ``order``
      (sorted when None).
    """
    labels = pd.Series(list(cell_types)).astype(str)
    order = sorted(pd.unique(labels)) if order is None else [str(t) for t in order]
    codes = pd.Categorical(labels, categories=order).codes
    if (codes < 0).any():
        raise ValueError("cell types outside `order`.")
    one_hot = sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)), shape=(codes.size, len(order)))
    return np.hstack([np.asarray((spatial_mean_operator(coords, groups, k) @ one_hot).todense()) for k in scales])


def infer_celltype_key(adata) -> Optional[str]:
    """The ``obs`` column whose values are exactly pp's ``uns['CN_order']`` (None if none or several)."""
    order = adata.uns.get("CN_order")
    if order is None:
        return None
    target = {str(t) for t in order}
    hits = [c for c in adata.obs.columns if adata.obs[c].nunique() == len(target)
            and set(adata.obs[c].astype(str).unique()) == target]
    return hits[0] if len(hits) == 1 else None


def improved_views(adata, celltype_key: Optional[str] = None, sample_key: Optional[str] = None,
                   options: ImprovedOptions = ImprovedOptions()) -> dict[str, np.ndarray]:
    """The improved variant's view matrices (float32), computed from what ``pp`` stored.

    Args:
      adata: after ``pp.cal_spatial_neighbors`` + ``cal_spatial_exp`` or ``process_multi_slices``
        (``obsm['spatial']``, ``obsm['X_cn_norm']``, ``obsm['X_data']``, ``obsm['X_data_nbr']``).
      celltype_key: cell-type column; inferred from ``uns['CN_order']`` when None.
      sample_key: slice column (None: one slice).
      options: :class:`ImprovedOptions`.

    Returns:
      ``{"X_ms_comp": ..., "X_data_std": ..., "X_data_nbr_std": ...}`` (the last two only
      with ``expression_views``); names are ``obsm`` keys ``fit`` may use.
    """
    groups = slice_groups(adata.n_obs, None if sample_key is None else adata.obs[sample_key])
    if options.scales:
        key = celltype_key or infer_celltype_key(adata)
        if key is None or key not in adata.obs:
            raise ValueError("the improved variant needs the cell-type column: pass celltype_key=... "
                             "(the one given to pp).")
        comp = multiscale_composition(adata.obsm["spatial"], adata.obs[key], groups, options.scales,
                                      adata.uns.get("CN_order"))
    else:
        comp = np.asarray(adata.obsm["X_cn_norm"], np.float64)
    prep = (lambda x: standardise_per_slice(x, groups)) if options.standardise else (
        lambda x: np.asarray(x, np.float64))
    views = {"X_ms_comp": prep(comp)}
    if options.expression_views:
        views["X_data_std"] = prep(adata.obsm["X_data"])
        views["X_data_nbr_std"] = prep(adata.obsm["X_data_nbr"])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in views.items()}


def majority_consensus(view_graphs, votes: int = 2):
    """Consensus graph of one graph or batch: edges in at least ``votes`` of the view graphs.

    A drop-in for :func:`scniche_jax.consensus.build_consensus` (same return type): symmetric,
    every node keeps exactly one self-loop, and ``fused`` holds the kept off-diagonal edges.
    ``loss_gre`` is 0 (this graph has no parameters to fit).
    """
    from .consensus import Consensus, view_adjacency

    n = view_graphs[0].n_nodes
    need = min(int(votes), len(view_graphs))
    count = sum(view_adjacency(v) for v in view_graphs).tocsr()
    keep = (count >= need).astype(np.float32).tocsr()
    keep.setdiag(0)
    keep.eliminate_zeros()
    keep = keep.maximum(keep.T).tocsr()
    keep.sort_indices()
    coo = keep.tocoo()
    loops = np.arange(n, dtype=np.int32)
    senders = np.concatenate([coo.row.astype(np.int32), loops])
    receivers = np.concatenate([coo.col.astype(np.int32), loops])
    return Consensus(keep, senders, receivers, 0.0)


def readout(embeddings: Sequence[np.ndarray], composition: Optional[np.ndarray] = None,
            weight: float = 0.0, groups: Optional[np.ndarray] = None) -> np.ndarray:
    """One representation from one or more embeddings (ensemble members) and the composition view.

    Each member is z-scored per column and scaled to unit total variance, so that members
    (and the composition view, scaled to ``weight``² total variance) weigh the same whatever
    their width; they are concatenated. With ``groups`` (slices) the embeddings are z-scored
    within each slice (slice-aware readout). One member, ``weight=0`` and no ``groups``
    returns it unchanged.
    """
    if len(embeddings) == 1 and weight == 0 and groups is None:
        return np.asarray(embeddings[0], np.float32)

    def unit(x, per_slice=False):
        x = np.asarray(x, np.float64)
        if per_slice and groups is not None:
            x = standardise_per_slice(x, groups)
        else:
            x = (x - x.mean(0)) / np.where(x.std(0) > 1e-8, x.std(0), 1.0)
        return x / np.sqrt(x.shape[1])

    parts = [unit(z, per_slice=True) for z in embeddings]
    if weight > 0 and composition is not None:
        parts.append(weight * unit(composition))
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
