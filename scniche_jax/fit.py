"""``scniche_jax.fit`` and the trained :class:`Model` (the AnnData edge of training).

AnnData in, arrays to the graph builders and the jitted epoch, arrays back, and only
``adata.obsm[key_added]`` written.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Optional, Sequence

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import validation as val
from .batching import first_occurrence, reference_batch_indices
from .config import DEFAULT_VIEWS, ScnicheConfig
from .consensus import build_consensus
from .graphs import build_view_graph
from .loop import empty_history, run_training
from .model import GraphFusionNetwork
from .train import PRECISIONS, GraphBatch, StepSettings, assemble_batches, batch_at, embed_batches, init_state

log = logging.getLogger(__name__)


def view_features(adata: ad.AnnData, views: Sequence[str]) -> list[np.ndarray]:
    """The checked feature matrix of every view (dense, finite, one row per cell)."""
    out = []
    for key in views:
        val.check_obsm_key(adata, key, "Run scniche_jax.pp.cal_spatial_neighbors / cal_spatial_exp "
                                       "(or process_multi_slices) first, or pass views=[...].")
        out.append(val.dense_float_matrix(adata.obsm[key], f"adata.obsm[{key!r}]", adata.n_obs))
    return out


def _check_settings(n_cells: int, views, hidden_size_v, hidden_size, k_graph, mik, batch_num, epochs,
                    lr, precision, dropout, gre_semantics, block_size) -> tuple[list[np.ndarray], int]:
    if len(views) == 0:
        raise ValueError("views must name at least one adata.obsm key.")
    if len(set(views)) != len(views):
        raise ValueError(f"views must be distinct, got {list(views)}.")
    for name, sizes in (("hidden_size_v", hidden_size_v), ("hidden_size", hidden_size)):
        if len(sizes) == 0:
            raise ValueError(f"{name} needs at least one layer width.")
        for s in sizes:
            val.check_positive_int(s, f"every entry of {name}")
    k_graph = val.check_positive_int(k_graph, "k_graph")
    mik = val.check_positive_int(mik, "mik")
    if mik > k_graph + 1:
        raise ValueError(f"mik={mik} exceeds the k_graph + 1 = {k_graph + 1} kNN columns; choose mik <= {k_graph + 1}.")
    val.check_positive_int(epochs, "epochs")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}.")
    if gre_semantics not in ("gpu", "cpu"):
        raise ValueError(f"gre_semantics must be 'gpu' or 'cpu', got {gre_semantics!r}.")
    val.check_positive_int(block_size, "block_size")
    if batch_num is None:
        batches = [np.arange(n_cells)]
    else:
        if isinstance(batch_num, bool) or not isinstance(batch_num, (int, np.integer)) or batch_num < 1:
            raise ValueError(f"batch_num must be None (full graph) or an integer >= 1, got {batch_num!r}.")
        batches = reference_batch_indices(n_cells, int(batch_num))
    size = batches[0].size
    if size < k_graph + 1:
        most = max(n_cells // (k_graph + 1), 1)
        where = "the graph" if batch_num is None else f"batches of {size} cells"
        raise ValueError(
            f"{where} is too small for k_graph={k_graph} (each graph needs at least {k_graph + 1} "
            f"cells); use a smaller k_graph" + ("." if batch_num is None else f" or batch_num <= {most}."))
    return batches, size


def build_batches(features: Sequence[np.ndarray], batches: Sequence[np.ndarray], gfn_params,
                  config: ScnicheConfig, progress: bool = False) -> GraphBatch:
    """View graphs and consensus of every batch, stacked as one device ``GraphBatch``."""
    per_batch = []
    for idx in tqdm(batches, desc="graphs", disable=not progress or len(batches) < 2, leave=False):
        graphs = [build_view_graph(f[idx], config.k_graph, config.mik) for f in features]
        consensus = build_consensus(gfn_params, graphs, config.gre_semantics, config.block_size)
        per_batch.append((graphs, consensus))
    return jax.device_put(assemble_batches(per_batch))


def step_settings(config: ScnicheConfig) -> StepSettings:
    return StepSettings(hidden_size_v=config.hidden_size_v, hidden_size=config.hidden_size,
                        n_views=len(config.views), dropout=config.dropout, lr=config.lr,
                        precision=config.precision, block=config.block_size)


class Model:
    """A trained scNiche model: parameters, configuration and training history.

    Attributes:
      config: the :class:`ScnicheConfig` of the run.
      params: trainable MGAE parameters (Flax tree).
      gfn_params: the frozen graph fusion network's parameters.
      discriminator_params: the frozen Discriminator's parameters.
      history: ``{'loss': {'total', 'gre', 'rec', 'mim'}: per-epoch lists, 'lr': [...],
        'ari': [(epoch, value)], 'early_stop': {...} | None}``.
    """

    def __init__(self, config: ScnicheConfig, params, gfn_params, discriminator_params,
                 history: Optional[dict[str, Any]] = None):
        self.config = config
        self.params = params
        self.gfn_params = gfn_params
        self.discriminator_params = discriminator_params
        self.history = history if history is not None else empty_history()

    def __repr__(self) -> str:
        c = self.config
        mode = "full graph" if c.batch_num is None else f"{c.batch_num} batches"
        return (f"scniche_jax.Model(views={list(c.views)}, hidden_size={list(c.hidden_size)}, "
                f"{mode} of {c.batch_size} cells, epochs run={len(self.history['loss']['total'])})")

    def plot_history(self):
        """A matplotlib figure of the loss components, the learning rate and the probe ARIs.

        Returns:
          ``matplotlib.figure.Figure`` (needs the ``plot`` extra: ``pip install 'scniche-jax[plot]'``).
        """
        from .plotting import history_figure

        return history_figure(self.history)

    def embed(self, adata: ad.AnnData, *, seed: Optional[int] = None) -> np.ndarray:
        """The embedding of ``adata``'s cells (n_obs × latent_dim), computed anew.

        Args:
          adata: the AnnData the model was trained on (same views and cells).
          seed: with ``config.deterministic_embedding=False``, the dropout seed.

        Returns:
          float32 array in ``adata.obs_names`` order; ``adata`` is not modified.
        """
        c = self.config
        features = view_features(adata, c.views)
        for key, f, width in zip(c.views, features, c.input_sizes):
            if f.shape[1] != width:
                raise ValueError(f"adata.obsm[{key!r}] has {f.shape[1]} columns but the model was trained "
                                 f"on {width}; use data with the same features.")
        batches, size = _check_settings(adata.n_obs, c.views, c.hidden_size_v, c.hidden_size, c.k_graph,
                                        c.mik, c.batch_num, c.epochs, c.lr, c.precision, c.dropout,
                                        c.gre_semantics, c.block_size)
        if size != c.batch_size:
            raise ValueError(f"this AnnData gives graphs of {size} cells but the model's fusion network "
                             f"takes {c.batch_size}; embed the AnnData the model was trained on.")
        graph_batches = build_batches(features, batches, self.gfn_params, c)
        key = None if seed is None else jax.random.key(seed)
        return _embedding(self.params, graph_batches, batches, adata.n_obs, c, key)


def _embedding(params, graph_batches: GraphBatch, batches, n_cells: int, config: ScnicheConfig,
               dropout_key) -> np.ndarray:
    if config.deterministic_embedding:
        dropout_key = None
    elif dropout_key is None:
        dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    z = np.asarray(embed_batches(params, graph_batches, dropout_key, step_settings(config)))
    which, row = first_occurrence(list(batches), n_cells)
    return np.ascontiguousarray(z[which, row], dtype=np.float32)


def _check_stopping(patience, min_delta, lr_patience, lr_factor, min_lr, lr, ari_every, ari_k,
                    ari_stop_threshold, ari_stop_patience) -> None:
    if patience is not None:
        val.check_positive_int(patience, "patience")
    if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
        raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}.")
    if lr_patience is not None:
        val.check_positive_int(lr_patience, "lr_patience", minimum=0)
    if not (isinstance(lr_factor, (int, float)) and 0 < lr_factor < 1):
        raise ValueError(f"lr_factor must lie in (0, 1), got {lr_factor!r}.")
    if not (isinstance(min_lr, (int, float)) and 0 <= min_lr <= lr):
        raise ValueError(f"min_lr must lie in [0, lr={lr}], got {min_lr!r}.")
    if ari_every is not None:
        val.check_positive_int(ari_every, "ari_every")
    val.check_positive_int(ari_k, "ari_k", minimum=2)
    if ari_stop_threshold is not None and not (isinstance(ari_stop_threshold, (int, float)) and
                                               -1 <= ari_stop_threshold <= 1):
        raise ValueError(f"ari_stop_threshold must lie in [-1, 1], got {ari_stop_threshold!r}.")
    if ari_stop_threshold is not None and ari_every is None:
        raise ValueError("ari_stop_threshold needs the ARI probe: set ari_every (e.g. ari_every=5).")
    val.check_positive_int(ari_stop_patience, "ari_stop_patience")


def fit(adata: ad.AnnData, *, views: Optional[Sequence[str]] = None,
        hidden_size_v: Sequence[int] = (10,), hidden_size: Sequence[int] = (32, 10),
        k_graph: int = 20, mik: int = 5, batch_num: Optional[int] = None, epochs: int = 100,
        lr: float = 0.01, seed: int = 0, precision: str = "bf16", progress: bool = True,
        patience: Optional[int] = None, min_delta: float = 0.0, restore_best: bool = True,
        lr_patience: Optional[int] = 5, lr_factor: float = 0.5, min_lr: float = 1e-6,
        ari_every: Optional[int] = None, ari_k: int = 10, ari_stop_threshold: Optional[float] = None,
        ari_stop_patience: int = 2, dropout: float = 0.1, deterministic_embedding: bool = True,
        gre_semantics: str = "gpu", block_size: int = 1024, key_added: str = "X_scniche") -> Model:
    """Trains scNiche on ``adata`` and writes the embedding to ``adata.obsm[key_added]``.

    Args:
      adata: cells with the view matrices in ``obsm`` (see :mod:`scniche_jax.pp`).
      views: ``obsm`` keys of the views; ``('X_cn_norm', 'X_data', 'X_data_nbr')`` when None.
      hidden_size_v: view-encoder widths.
      hidden_size: shared-encoder widths; the last is the embedding width.
      k_graph: kNN neighbours per cell in each view graph.
      mik: nearest neighbours per view used as positive pairs of the MI loss.
      batch_num: None trains on the full graph; an integer splits the cells into that many
        equal batches exactly as the reference does.
      epochs: most training epochs (one step per batch per epoch).
      lr: Adam learning rate.
      seed: seed of every random choice (initialisation, dropout, negatives, probes).
      precision: ``'bf16'`` or ``'fp32'`` operands for the B² loss matmuls.
      progress: show a progress bar.
      patience: stop when the epoch loss has not improved by more than ``min_delta`` for
        this many epochs (None: never).
      min_delta: the improvement that counts.
      restore_best: embed with the best-loss parameters.
      lr_patience: halve (``lr_factor``) the LR once the epoch loss stalls for more than this
        many epochs, as PyTorch's ``ReduceLROnPlateau``; None keeps it fixed (the original
        ``Runner``).
      lr_factor, min_lr: the cut and the floor of the LR.
      ari_every: probe every this many epochs: KMeans (``ari_k`` clusters) on the embedding
        and the ARI against the previous probe (None: no probe).
      ari_k: clusters of the probe.
      ari_stop_threshold: stop once ``ari_stop_patience`` consecutive probes reach it.
      ari_stop_patience: probes in a row needed.
      dropout: dropout rate while training (the reference's 0.1, always on).
      deterministic_embedding: compute the final embedding with dropout off (default); False
        reproduces the reference's random final embedding.
      gre_semantics: ``'gpu'`` reports ``loss_gre`` with R, ``'cpu'`` with R + Rᵀ.
      block_size: rows per block of the B² loss (memory O(block_size · B)).
      key_added: ``obsm`` key of the embedding.

    Returns:
      The trained :class:`Model`; its ``history`` holds losses, LRs, ARIs and why training
      stopped. Nothing but ``adata.obsm[key_added]`` is written, also after Ctrl-C.
    """
    views = tuple(DEFAULT_VIEWS if views is None else ([views] if isinstance(views, str) else views))
    val.check_unique_obs_names(adata)
    batches, size = _check_settings(adata.n_obs, views, tuple(hidden_size_v), tuple(hidden_size), k_graph,
                                    mik, batch_num, epochs, lr, precision, dropout, gre_semantics, block_size)
    _check_stopping(patience, min_delta, lr_patience, lr_factor, min_lr, lr, ari_every, ari_k,
                    ari_stop_threshold, ari_stop_patience)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    features = view_features(adata, views)
    config = ScnicheConfig(views=views, input_sizes=tuple(f.shape[1] for f in features),
                           hidden_size_v=tuple(int(h) for h in hidden_size_v),
                           hidden_size=tuple(int(h) for h in hidden_size), k_graph=int(k_graph),
                           mik=int(mik), batch_num=None if batch_num is None else int(batch_num),
                           batch_size=int(size), epochs=int(epochs), lr=float(lr), seed=int(seed),
                           dropout=float(dropout), deterministic_embedding=bool(deterministic_embedding),
                           precision=precision, gre_semantics=gre_semantics, block_size=int(block_size),
                           patience=patience, min_delta=float(min_delta), restore_best=bool(restore_best),
                           lr_patience=lr_patience, lr_factor=float(lr_factor), min_lr=float(min_lr),
                           ari_every=ari_every, ari_k=int(ari_k), ari_stop_threshold=ari_stop_threshold,
                           ari_stop_patience=int(ari_stop_patience))
    settings = step_settings(config)
    key = jax.random.key(seed)
    k_init, k_gfn, k_train, k_embed = jax.random.split(key, 4)
    gfn_params = GraphFusionNetwork(size).init(k_gfn, jnp.zeros((1, size), jnp.float32))["params"]

    graph_batches = build_batches(features, batches, gfn_params, config, progress)
    state = init_state(k_init, batch_at(graph_batches, 0), settings)
    probe = lambda params: _embedding(params, graph_batches, batches, adata.n_obs,
                                      replace(config, deterministic_embedding=True), None)
    state, final_params, history = run_training(state, graph_batches, settings, config, k_train, probe, progress)
    model = Model(config, jax.device_get(final_params), jax.device_get(gfn_params),
                  jax.device_get(state.discriminator), history)
    adata.obsm[key_added] = _embedding(final_params, graph_batches, batches, adata.n_obs, config, k_embed)
    return model
