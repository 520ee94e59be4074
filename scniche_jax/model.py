"""The scNiche :class:`Model`: construct, ``train`` (again to continue), ``embed``, ``save``, ``load``.

The AnnData edge of training: it reads the views from an AnnData, hands arrays to the input
pipeline, the jitted epoch and the host loop, and keeps the results (parameters, optimizer
state, the loop's state and history) on the model, never on the AnnData.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np

from . import persistence
from . import validation as val
from ._deprecation import renamed_kwargs
from ._spatialdata import resolve_table
from .batching import batch_size_of, cells_from_batches
from .config import (BatchConfig, DataShape, ImprovedOptions, ModelConfig, OptimizerConfig, StoppingConfig,
                     resolve_precision)
from .history import History
from .improved import finish_embedding, improved_views
from .loop import LoopState, run_training
from .memory import check_memory
from .networks import GraphFusionNetwork
from .optimizer import make_optimizer, plateau_from_saved, plateau_to_dict
from .parallel import Placement
from .pipeline import (GraphBatch, batch_at, build_host_batches, embedding_batches, plan_batches,
                       resolve_batch_num)
from .progress import progress_write
from .step import StepSettings, TrainState, init_state, make_state
from .stopping import AriStop, LossStop
from .torch_format import (discriminator_params_from_state_dict, discriminator_params_to_state_dict, load_torch,
                           mgae_params_from_state_dict, mgae_params_to_state_dict, save_torch)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class _Run(NamedTuple):
    """What one ``train`` call built: the batches on their device(s), for the final embedding."""

    batches: list
    graph_batches: GraphBatch
    placement: Placement
    settings: StepSettings
    readout_views: Optional[dict] = None  # variant="improved": improved_views(...), for the readout


def read_views(adata: ad.AnnData, views: Sequence[str]) -> list[np.ndarray]:
    """The checked feature matrix of every view (dense, finite, one row per cell)."""
    out = []
    for key in views:
        val.check_obsm_key(adata, key, "Run scniche_jax.pp.cal_spatial_neighbors / cal_spatial_exp "
                                       "(or process_multi_slices) first, or pass views=[...].")
        out.append(val.dense_float_matrix(adata.obsm[key], f"adata.obsm[{key!r}]", adata.n_obs))
    return out


class Model:
    """An scNiche model, in the scvi-tools way.

    ``Model(...)`` fixes the architecture; :meth:`train` trains it on an AnnData (calling it
    again continues from the current parameters, optimizer state, learning rate, RNG and
    history); :meth:`embed` computes the embedding; :meth:`save` / :func:`scniche_jax.load`
    write and read it.

    Parameters
    ----------
    views
        ``obsm`` keys of the views; ``('X_cn_norm', 'X_data', 'X_data_nbr')`` when None.
    hidden_size_v
        View-encoder widths.
    hidden_size
        Shared-encoder widths; the last is the embedding width.
    n_neighbors
        kNN neighbours per cell in each view's feature graph (was ``k_graph``).
    mik
        Nearest neighbours per view used as positive pairs of the MI loss.
    dropout
        Dropout rate while training (the reference's 0.1, always on).
    deterministic_embedding
        Embed with dropout off (default); False reproduces the reference's random final embedding.
    gre_semantics
        ``'gpu'`` reports ``loss_gre`` with R, ``'cpu'`` with R + Rᵀ.
    variant
        ``'reference'`` (the model exactly as the reference computes it) or ``'improved'`` (better
        niches: views, consensus graph, readout and smoothing of
        :class:`~scniche_jax.config.ImprovedOptions`, computed from what pp stored; leave ``views``
        unset).
    improved_options
        The improved variant's options (None: its defaults).
    seed
        Seed of every random choice (initialisation, dropout, negatives, probes).

    Attributes
    ----------
    config
        The :class:`~scniche_jax.config.ModelConfig`.
    data_shape
        View widths and graph size, known after the first ``train``.
    params
        The MGAE parameters the embedding uses (the best-loss ones with ``restore_best``).
    gfn_params
        The parameters of the frozen graph fusion network.
    discriminator_params
        The parameters of the frozen discriminator.
    history
        A :class:`~scniche_jax.history.History` of every epoch.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.Model(n_neighbors=20, seed=0)
    >>> model.train(adata, epochs=2, progress=False)
    >>> model.train(adata, epochs=2, progress=False)   # continues: as epochs=4 at once
    >>> model.history.epochs_run
    4
    >>> adata.obsm["X_scniche"] = model.embed(adata)
    """

    @renamed_kwargs(k_graph="n_neighbors")
    def __init__(self, *, views: Optional[Sequence[str]] = None, hidden_size_v: Sequence[int] = (10,),
                 hidden_size: Sequence[int] = (32, 10), n_neighbors: int = 20, mik: int = 5, dropout: float = 0.1,
                 deterministic_embedding: bool = True, gre_semantics: str = "gpu", variant: str = "reference",
                 improved_options: Optional[ImprovedOptions] = None, seed: int = 0):
        self.config = ModelConfig(views=DEFAULT_VIEWS if views is None else views, hidden_size_v=hidden_size_v,
                                  hidden_size=hidden_size, n_neighbors=n_neighbors, mik=mik, dropout=dropout,
                                  deterministic_embedding=deterministic_embedding, gre_semantics=gre_semantics,
                                  variant=variant, improved_options=improved_options, seed=seed)
        self.data_shape: Optional[DataShape] = None
        self.optimizer_config: Optional[OptimizerConfig] = None
        self.stopping_config: Optional[StoppingConfig] = None
        self.batch_config: Optional[BatchConfig] = None
        self.params = None
        self.gfn_params = None
        self.discriminator_params = None
        self._state: Optional[TrainState] = None
        self._loop: Optional[LoopState] = None
        # what pp recorded about the training data (cell types, expression source, genes); embed checks it
        self.preprocessing: Optional[dict] = None

    # --- what the model knows ---------------------------------------------------------------

    @property
    def history(self) -> History:
        return History() if self._loop is None else self._loop.history

    @property
    def opt_state(self):
        """Adam's state after the last epoch (with the learning rate); None before training."""
        return None if self._state is None else self._state.opt_state

    @property
    def is_trained(self) -> bool:
        return self.params is not None

    def __repr__(self) -> str:
        c = self.config
        if self.data_shape is None:
            where = "not trained"
        else:
            d = self.data_shape
            mode = "full graph" if d.batch_num is None else f"{d.batch_num} batches"
            where = f"{mode} of {d.batch_size} cells, epochs run={self.history.epochs_run}"
        return (f"scniche_jax.Model(views={list(c.views)}, hidden_size={list(c.hidden_size)}, "
                f"variant={c.variant!r}, {where})")

    def plot_history(self):
        """A matplotlib figure of the loss components, the learning rate and the probe ARIs.

        Returns
        -------
        matplotlib.figure.Figure
            ``matplotlib.figure.Figure`` (needs the ``plot`` extra: ``pip install 'scniche-jax[plot]'``).

        Examples
        --------
        >>> import scniche_jax as sj
        >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
        >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
        >>> sj.pp.cal_spatial_exp(adata, verbose=False)
        >>> model = sj.fit(adata, epochs=3, progress=False)
        >>> fig = model.plot_history()
        """
        from .plotting import history_figure

        return history_figure(self.history)

    # --- training ---------------------------------------------------------------------------

    def train(self, adata: ad.AnnData, *, epochs: int = 100, lr: float = 0.01, lr_patience: Optional[int] = 5,
              lr_factor: float = 0.5, min_lr: float = 1e-6, patience: Optional[int] = None, min_delta: float = 0.0,
              restore_best: bool = True, ari_every: Optional[int] = None, ari_k: int = 10,
              ari_stop_threshold: Optional[float] = None, ari_stop_patience: int = 2,
              batch_num: Optional[int | str] = None, cells_per_batch: Optional[int] = None,
              precision: str = "auto", block_size: int = 1024, memory_limit: Optional[float] = None,
              devices: Optional[Sequence[jax.Device]] = None, checkpoint_dir: Optional[PathLike] = None,
              checkpoint_every: int = 10, progress: bool = True, table_key: Optional[str] = None) -> None:
        """Trains for up to ``epochs`` more epochs; a second call continues where this one stopped.

        Continuing is exact: ``train(epochs=10)`` twice gives the parameters of
        ``train(epochs=20)`` once (same seed; the epoch count selects each epoch's randomness).
        The learning-rate schedule continues too, unless ``lr`` differs from the previous call's,
        which restarts it at the new ``lr``. Loss patience counts across calls.

        Parameters
        ----------
        adata
            Cells with the views in ``obsm`` (see :mod:`scniche_jax.pp`), or a SpatialData whose table
            ``table_key`` holds them; not modified.
        epochs
            Most epochs of this call.
        lr
            Adam's learning rate.
        lr_patience
            Cut the LR by ``lr_factor`` once the epoch loss has not improved for more than this many
            epochs (PyTorch ``ReduceLROnPlateau``); None keeps it fixed, as the original ``Runner``.
        lr_factor
            The cut, in (0, 1).
        min_lr
            The floor of the LR, in [0, lr].
        patience
            Stop when the epoch loss has not improved by more than ``min_delta`` for this many
            epochs (None: never).
        min_delta
            The improvement that counts, >= 0.
        restore_best
            Embed with the best-loss parameters.
        ari_every
            Every this many epochs, KMeans (``ari_k`` clusters) on the embedding and its ARI against
            the previous probe (None: no probe).
        ari_k
            Clusters of the probe, >= 2.
        ari_stop_threshold
            Stop once ``ari_stop_patience`` probes in a row reach it (needs ``ari_every``).
        ari_stop_patience
            Probes in a row needed.
        batch_num
            None trains on the full graph; an integer splits the cells into that many equal batches
            exactly as the reference does; ``'auto'`` aims at ``cells_per_batch`` cells per batch
            (about 1000 on a CPU, 5000 on a GPU).
        cells_per_batch
            The target of ``batch_num='auto'`` (None: the platform's default).
        precision
            ``'bf16'`` (bf16 operands, fp32 accumulation in the B² loss matmuls), ``'fp32'``, or
            ``'auto'``: fp32 on a CPU, bf16 on an accelerator (:func:`resolve_precision`; a CPU has
            no faster bf16 path for these thin matmuls and spends time converting).
        block_size
            Rows per block of the B² loss and of the fusion network; on a CPU the loss takes fewer
            rows where a block would exceed about 2^20 entries
            (:func:`scniche_jax.step.loss_block_size`; the memory check keeps ``block_size``, an
            over-estimate there).
        memory_limit
            Bytes one device may use; None takes 90 % of what is free.
        devices
            Train data-parallel on these devices (e.g. ``jax.devices()``), one batch per device per step
            with averaged gradients; ``batch_num`` a multiple of their count.
        checkpoint_dir
            Save a training checkpoint here every ``checkpoint_every`` epochs and at the end (the newest
            three kept); ``scniche_jax.load(checkpoint_dir)`` then ``train`` resumes.
        checkpoint_every
            Epochs between checkpoints.
        progress
            Show progress bars.
        table_key
            The table of a SpatialData (default ``'table'``).

        Examples
        --------
        >>> import scniche_jax as sj
        >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
        >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
        >>> sj.pp.cal_spatial_exp(adata, verbose=False)
        >>> model = sj.Model(seed=0)
        >>> model.train(adata, epochs=5, lr_patience=None, progress=False)   # a fixed LR, as the original
        >>> model.history.lr[-1]
        0.01
        """
        self._train(resolve_table(adata, table_key), epochs=epochs, lr=lr, lr_patience=lr_patience, lr_factor=lr_factor, min_lr=min_lr,
                    patience=patience, min_delta=min_delta, restore_best=restore_best, ari_every=ari_every,
                    ari_k=ari_k, ari_stop_threshold=ari_stop_threshold, ari_stop_patience=ari_stop_patience,
                    batch_num=batch_num, cells_per_batch=cells_per_batch, precision=precision,
                    block_size=block_size, memory_limit=memory_limit, devices=devices,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress)

    def _train(self, adata: ad.AnnData, *, devices, checkpoint_dir, checkpoint_every, progress,
               **options) -> _Run:
        """:meth:`train`, returning the device batches for the final embedding."""
        optimizer = OptimizerConfig(**{k: options.pop(k) for k in ("lr", "lr_patience", "lr_factor", "min_lr")})
        stopping = StoppingConfig(**{k: options.pop(k) for k in (
            "epochs", "patience", "min_delta", "restore_best", "ari_every", "ari_k", "ari_stop_threshold",
            "ari_stop_patience")})
        placement = Placement.of(devices)
        batching = BatchConfig(n_devices=placement.n_devices, **options)
        # Recorded as run: a saved model says which precision trained it.
        batching = replace(batching, precision=resolve_precision(batching.precision, placement.platform))
        if checkpoint_dir is not None:
            checkpoint_dir = persistence.check_writable_dir(checkpoint_dir, "checkpoint_dir")
            val.check_positive_int(checkpoint_every, "checkpoint_every")
        val.check_not_empty(adata)
        val.check_unique_obs_names(adata)
        features, readout_views = self._view_matrices(adata)
        input_sizes = tuple(f.shape[1] for f in features)
        record = preprocessing_record(adata)
        if self.preprocessing is not None and self.data_shape is not None:
            check_preprocessing(self.preprocessing, record, "the model was trained")
        elif record:
            self.preprocessing = record
        batch_num = resolve_batch_num(adata.n_obs, batching.batch_num, batching.cells_per_batch,
                                      placement.platform, placement.n_devices)
        if batching.batch_num == "auto":
            chosen = ("the full graph" if batch_num is None else
                      f"batch_num={batch_num} (batches of {batch_size_of(adata.n_obs, batch_num):,} cells)")
            message = (f"scniche_jax: batch_num='auto' chose {chosen} for {adata.n_obs:,} cells on "
                       f"{placement.n_devices} {placement.platform} device(s)")
            log.info(message)
            if progress:
                progress_write(message)
        batches = plan_batches(adata.n_obs, batch_num, self.config.n_neighbors)
        shape = DataShape(input_sizes=input_sizes, batch_size=batches[0].size, batch_num=batch_num)
        if self.data_shape is not None:
            self._check_continuation(shape)
        check_memory(adata.n_obs, batch_num, input_sizes, self.config, batching, placement.device)

        k_init, _, k_train, _ = self._keys()
        if self.gfn_params is None:
            self.gfn_params = self._seeded_fusion_params(shape.batch_size)
        settings = StepSettings.of(self.config, batching, shape.batch_size, placement.platform)
        host_batches = build_host_batches(features, batches, self.gfn_params, self.config.n_neighbors,
                                          self.config.mik, self.config.gre_semantics, batching.block_size, progress,
                                          **self._consensus_options())
        loop = self._loop
        if self._state is not None:
            state = self._state
        elif self.params is not None:  # read from a reference model.pt: fresh Adam around its weights
            state = make_state(self.params, self.discriminator_params, optimizer.lr)
        else:
            state = init_state(k_init, batch_at(host_batches, 0), settings, optimizer.lr)
        if loop is None or (self.optimizer_config is not None and optimizer.lr != self.optimizer_config.lr):
            history = History() if loop is None else loop.history
            loop = replace(LoopState.start(optimizer.lr), history=history,
                           **({} if loop is None else {"loss_stop": loop.loss_stop, "ari_stop": loop.ari_stop,
                                                       "best_params": loop.best_params}))
        graph_batches = placement.put_batches(host_batches)
        del host_batches
        self.data_shape = shape if self.data_shape is None else self.data_shape
        self.optimizer_config, self.stopping_config, self.batch_config = optimizer, stopping, batching

        def probe(params) -> np.ndarray:
            return cells_from_batches(placement.embed(params, graph_batches, None, settings), batches, adata.n_obs)

        checkpoint = None
        if checkpoint_dir is not None:
            def checkpoint(state_now: TrainState, loop_now: LoopState) -> None:
                self._save_checkpoint(checkpoint_dir, state_now, loop_now)

        state, loop, final_params = run_training(
            state, graph_batches, placement, settings, optimizer, stopping, k_train, loop, probe, progress,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, probe_seed=self.config.seed)
        self._state = jax.device_get(state)
        self._loop = replace(loop, best_params=jax.device_get(loop.best_params))
        self.params = jax.device_get(final_params)
        self.discriminator_params = self._state.discriminator
        return _Run(batches, graph_batches, placement, settings, readout_views)

    def _view_matrices(self, adata: ad.AnnData) -> tuple[list[np.ndarray], Optional[dict]]:
        """The views' feature matrices, and (improved variant) all its views, for the readout."""
        if self.config.variant == "improved":
            views = improved_views(adata, self.config.improved_options)
            return [views[k] for k in self.config.views], views
        return read_views(adata, self.config.views), None

    def _consensus_options(self) -> dict[str, Any]:
        options = self.config.improved_options
        if options is None:
            return {}
        return {"consensus": options.consensus, "consensus_votes": options.consensus_votes}

    def _seeded_fusion_params(self, size: int):
        """The frozen fusion network as training initialises it (from the seed and the graph size)."""
        k_gfn = self._keys()[1]
        return GraphFusionNetwork(size).init(k_gfn, jnp.zeros((1, size), jnp.float32))["params"]

    def _keys(self):
        """``(init, fusion network, training, embedding)`` keys from the seed."""
        return jax.random.split(jax.random.key(self.config.seed), 4)

    def _check_continuation(self, shape: DataShape) -> None:
        d = self.data_shape
        if shape.input_sizes != d.input_sizes:
            raise ValueError(f"the views have widths {list(shape.input_sizes)} but the model was trained on "
                             f"{list(d.input_sizes)}; continue with data of the same features (same genes, PCA, "
                             "cell types).")
        if shape.batch_size != d.batch_size:
            raise ValueError(f"this run's graphs hold {shape.batch_size} cells but the model's hold {d.batch_size} "
                             f"(its fusion network's width); continue with batch_num={d.batch_num} on data of the "
                             "same size.")

    # --- embedding ------------------------------------------------------------------------

    def embed(self, adata: ad.AnnData, *, seed: Optional[int] = None, table_key: Optional[str] = None) -> np.ndarray:
        """The embedding of ``adata``'s cells, computed anew (what ``fit`` writes to ``obsm``).

        The view graphs are built from ``adata``'s views. An AnnData of the training size is
        embedded exactly as in training (the same batches); other data is cut into batches of
        the model's graph size (the fusion network's width), each cell embedded once. With
        ``variant='improved'`` the embedding is then read out with the composition view and
        smoothed over spatial neighbours (:func:`scniche_jax.improved.finish_embedding`).

        Parameters
        ----------
        adata
            Cells with the same views (same ``obsm`` keys and widths) as the model's.
        seed
            With ``deterministic_embedding=False``, the dropout seed.
        table_key
            The table of a SpatialData (default ``'table'``).

        Returns
        -------
        numpy.ndarray
            Float32 array (n_obs × latent_dim, wider with the improved readout) in
            ``adata.obs_names`` order; ``adata`` is not modified.

        Examples
        --------
        >>> import scniche_jax as sj
        >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
        >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
        >>> sj.pp.cal_spatial_exp(adata, verbose=False)
        >>> model = sj.fit(adata, epochs=2, progress=False)
        >>> z = model.embed(adata)
        >>> z.shape
        (600, 10)
        """
        adata = resolve_table(adata, table_key)
        if not self.is_trained:
            raise ValueError("this model is not trained yet; call model.train(adata) first.")
        val.check_not_empty(adata)
        val.check_unique_obs_names(adata)
        if self.preprocessing:
            check_preprocessing(self.preprocessing, preprocessing_record(adata), "the model was trained")
        features, readout_views = self._view_matrices(adata)
        d = self.data_shape
        for key, f, width in zip(self.config.views, features, d.input_sizes):
            if f.shape[1] != width:
                raise ValueError(f"adata.obsm[{key!r}] has {f.shape[1]} columns but the model was trained "
                                 f"on {width}; use data with the same features (same genes, PCA, cell types).")
        batches = embedding_batches(adata.n_obs, d.batch_size, d.batch_num, self.config.seed)
        block_size = self.batch_config.block_size if self.batch_config is not None else BatchConfig().block_size
        host = build_host_batches(features, batches, self.gfn_params, self.config.n_neighbors, self.config.mik,
                                  self.config.gre_semantics, block_size, **self._consensus_options())
        settings = StepSettings.of(self.config, self.batch_config or BatchConfig())
        placement = Placement.of(None)
        key = None if seed is None else jax.random.key(seed)
        run = _Run(batches, placement.put_batches(host), placement, settings, readout_views)
        return self._final_embedding(adata, run, key)

    def _embed_batches(self, run: _Run, n_cells: int, dropout_key=None) -> np.ndarray:
        """The model's embedding of the run's cells (before any readout)."""
        if self.config.deterministic_embedding:
            dropout_key = None
        elif dropout_key is None:
            dropout_key = jax.random.fold_in(jax.random.key(self.config.seed), 1)
        z = run.placement.embed(self.params, run.graph_batches, dropout_key, run.settings)
        return np.asarray(cells_from_batches(np.asarray(z), run.batches, n_cells), dtype=np.float32)

    def _final_embedding(self, adata: ad.AnnData, run: _Run, dropout_key=None) -> np.ndarray:
        """The embedding, read out and smoothed by ``variant='improved'``."""
        z = self._embed_batches(run, adata.n_obs, dropout_key)
        if self.config.variant == "improved":
            z = finish_embedding(z, adata, run.readout_views, self.config.improved_options)
        return z

    # --- torch interop ----------------------------------------------------------------------

    def to_torch_dict(self) -> dict[str, Any]:
        """The reference trainer rewrite's ``model.pt`` content (tensors as numpy arrays)."""
        c, d = self.config, self.data_shape
        mgae = mgae_params_to_state_dict(self.params, self.gfn_params, len(c.views), len(c.hidden_size_v),
                                         len(c.hidden_size))
        h = self.history
        return {
            "model_state": OrderedDict(mgae),
            "discriminator_state": OrderedDict(discriminator_params_to_state_dict(self.discriminator_params)),
            "config": {"input_size": list(d.input_sizes), "hidden_size_v": list(c.hidden_size_v),
                       "hidden_size": list(c.hidden_size), "views": len(c.views), "batch_size": d.batch_size,
                       "latent_dim": c.latent_dim, "choose_views": list(c.views)},
            "training": {"loss": list(h.loss["total"]), "lr": list(h.lr), "ari": [tuple(p) for p in h.ari],
                         "early_stop": None if h.early_stop is None else h.to_dict()["early_stop"]},
        }

    @classmethod
    def from_torch(cls, source: Union[PathLike, Mapping[str, Any]]) -> "Model":
        """A model from a reference-trained ``model.pt`` (path or loaded dict), without torch.

        Parameters
        ----------
        source
            The file (read with a restricted unpickler that never runs code) or the dictionary
            ``torch.load`` returned (tensors or numpy arrays).

        Returns
        -------
        Model
            The :class:`Model`, ready to embed (and to train further, with fresh Adam moments).

        Examples
        --------
        >>> import scniche_jax as sj
        >>> model = sj.Model.from_torch("scniche_run/model.pt")  # doctest: +SKIP
        >>> adata.obsm["X_scniche"] = model.embed(adata)  # doctest: +SKIP
        """
        data = load_torch(source) if isinstance(source, (str, os.PathLike)) else source
        name = str(source) if isinstance(source, (str, os.PathLike)) else "the model.pt dictionary"
        try:
            cfg = data["config"]
            views = tuple(cfg.get("choose_views") or [f"view{v}" for v in range(int(cfg["views"]))])
            model = cls(views=views, hidden_size_v=tuple(int(x) for x in cfg["hidden_size_v"]),
                        hidden_size=tuple(int(x) for x in cfg["hidden_size"]))
            model.data_shape = DataShape(input_sizes=tuple(int(x) for x in cfg["input_size"]),
                                         batch_size=int(cfg["batch_size"]))
            state = {k: _as_numpy(v) for k, v in data["model_state"].items()}
            model.params, model.gfn_params = mgae_params_from_state_dict(
                state, len(views), len(model.config.hidden_size_v), len(model.config.hidden_size))
            model.discriminator_params = discriminator_params_from_state_dict(
                {k: _as_numpy(v) for k, v in data["discriminator_state"].items()})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{name} is not an scNiche model.pt ({err})") from err
        training = data.get("training") or {}
        history = History.from_dict({"loss": {"total": training.get("loss", [])}, "lr": training.get("lr", []),
                                     "ari": training.get("ari", []), "early_stop": training.get("early_stop")})
        model._loop = replace(LoopState.start(history.lr[-1] if history.lr else OptimizerConfig().lr), history=history)
        return model

    # --- save and load --------------------------------------------------------------------

    def _config_dict(self) -> dict[str, Any]:
        out = {"model": self.config.to_dict(), "data": self.data_shape.to_dict()}
        if self.preprocessing:
            out["preprocessing"] = self.preprocessing
        for name, cfg in (("optimizer", self.optimizer_config), ("stopping", self.stopping_config),
                          ("batching", self.batch_config)):
            if cfg is not None:
                out[name] = cfg.to_dict()
        return out

    def _state_tree(self, params, state: Optional[TrainState], loop: Optional[LoopState]) -> dict[str, Any]:
        tree: dict[str, Any] = {"params": params, "discriminator": self.discriminator_params}
        if state is not None:
            tree["train_state"] = {"params": state.params, "discriminator": state.discriminator,
                                   "opt_state": _opt_state_tree(state.opt_state)}
        if loop is not None and loop.best_params is not None:
            tree["best_params"] = loop.best_params
        if loop is not None and loop.ari_stop.labels is not None:
            tree["ari_labels"] = np.asarray(loop.ari_stop.labels, np.int32)
        return tree

    @staticmethod
    def _meta(loop: Optional[LoopState]) -> dict[str, Any]:
        if loop is None:
            return {"history": History().to_dict()}
        return {"history": loop.history.to_dict(), "plateau": plateau_to_dict(loop.plateau),
                "loss_stop": list(loop.loss_stop), "ari_streak": loop.ari_stop.streak}

    def _save_checkpoint(self, directory: Path, state: TrainState, loop: LoopState) -> None:
        persistence.save_training_checkpoint(directory, loop.epochs_run, self._config_dict(), self.gfn_params,
                                             self._state_tree(state.params, state, loop), self._meta(loop))

    @renamed_kwargs(key="key_added")
    def save(self, path: PathLike, *, adata: Optional[ad.AnnData] = None, overwrite: bool = False,
             key_added: str = "X_scniche", torch_format: bool = True) -> Path:
        """Writes the model folder: ``config.json``, ``model.pt``, ``state/`` [, ``adata.h5ad``].

        The folder is built beside ``path`` and swapped in at the end, so an interrupted save
        (even a killed process) leaves the previous one intact and no half-written file.

        Parameters
        ----------
        path
            The folder.
        adata
            Also write ``adata.h5ad`` with the results only (``obs``, ``obsm[key_added]`` and
            ``obsm['spatial']`` when present; nothing of the model).
        overwrite
            Replace an existing non-empty folder.
        key_added
            ``obsm`` key of the embedding in ``adata`` (was ``key``).
        torch_format
            Also write ``model.pt``, the reference's file. It holds the frozen fusion network,
            4·B² bytes for graphs of B cells (94 MB at 4,839 cells on the full graph, 1.6 GB at
            20,000); False skips it, and the folder then holds only what cannot be recomputed
            (the fusion network is rebuilt from the seed on load). ``config.json`` also records
            how the training data were preprocessed (:attr:`preprocessing`), which
            :meth:`embed` checks new data against.

        Returns
        -------
        pathlib.Path
            The absolute folder path.

        Examples
        --------
        >>> import scniche_jax as sj
        >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
        >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
        >>> sj.pp.cal_spatial_exp(adata, verbose=False)
        >>> model = sj.fit(adata, epochs=2, progress=False)
        >>> path = model.save("run1", adata=adata, overwrite=True)
        >>> sorted(p.name for p in path.iterdir())
        ['adata.h5ad', 'config.json', 'model.pt', 'state']
        >>> import numpy as np
        >>> bool(np.array_equal(sj.load(path).embed(adata), model.embed(adata)))
        True
        """
        if not self.is_trained:
            raise ValueError("this model is not trained yet; call model.train(adata) before saving.")
        path = persistence.check_writable_dir(path, "save path")
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise ValueError(f"{str(path)!r} already exists and is not empty; pass overwrite=True "
                             "or choose another folder.")
        results = None
        if adata is not None:
            if key_added not in adata.obsm:
                raise ValueError(f"adata.obsm has no {key_added!r} to save; run fit or pass key_added=...")
            results = ad.AnnData(obs=adata.obs.copy())
            results.obsm[key_added] = np.asarray(adata.obsm[key_added])
            if "spatial" in adata.obsm:
                results.obsm["spatial"] = np.asarray(adata.obsm["spatial"])
        config = self._config_dict()
        tree = self._state_tree(self.params, self._state, self._loop)
        write_torch = None
        if torch_format:
            torch_dict = self.to_torch_dict()

            def write_torch(p):
                save_torch(torch_dict, p)
        else:
            config["torch_file"] = False
            if not _same_tree(self.gfn_params, self._seeded_fusion_params(self.data_shape.batch_size)):
                tree["fusion"] = self.gfn_params  # not the seeded one (e.g. read from a reference model.pt)
        persistence.save_model_folder(path, config, tree, self._meta(self._loop), write_torch, results,
                                      overwrite=overwrite)
        return path

    @classmethod
    def _from_saved(cls, config: dict, gfn_params, state: dict[str, Any], meta: dict[str, Any]) -> "Model":
        model = cls(**ModelConfig.from_saved(config["model"]).__dict__)
        model.data_shape = DataShape.from_dict(config["data"])
        model.preprocessing = config.get("preprocessing")
        model.optimizer_config = OptimizerConfig.from_dict(config["optimizer"]) if "optimizer" in config else None
        model.stopping_config = StoppingConfig.from_dict(config["stopping"]) if "stopping" in config else None
        model.batch_config = BatchConfig.from_dict(config["batching"]) if "batching" in config else None
        model.params, model.discriminator_params, model.gfn_params = state["params"], state["discriminator"], gfn_params
        if "train_state" in state:
            ts = state["train_state"]
            model._state = TrainState(ts["params"], _opt_state_from_tree(ts["opt_state"]), ts["discriminator"])
        history = History.from_dict(meta["history"])
        if "plateau" in meta:
            labels = state.get("ari_labels")
            model._loop = LoopState(plateau_from_saved(meta["plateau"]), history, LossStop(*meta["loss_stop"]),
                                    AriStop(None if labels is None else np.asarray(labels), int(meta["ari_streak"])),
                                    state.get("best_params"))
        else:
            model._loop = replace(LoopState.start(model.optimizer_config.lr if model.optimizer_config else 0.01),
                                  history=history)
        return model

    @classmethod
    def load(cls, path: PathLike) -> "Model":
        """Reads a folder written by :meth:`save`, a training-checkpoint folder, or a ``model.pt``.

        Orbax restores every array bit for bit; a folder with only ``model.pt`` is read as with
        :meth:`from_torch`. A checkpoint folder gives the newest complete checkpoint, ready to
        :meth:`train` on.
        """
        path = Path(path).expanduser().resolve()
        if path.is_file():
            return cls.from_torch(path)
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} does not exist; pass a folder written by Model.save or a model.pt.")
        kind = persistence.folder_kind(path)
        if kind == "torch":
            return cls.from_torch(path / persistence.TORCH_FILE)
        if kind == "checkpoints":
            config, gfn, state, meta = persistence.load_training_checkpoint(path)
            return cls._from_saved(config, gfn, state, meta)
        config, state, meta = persistence.load_model_folder(path)
        torch_file = path / persistence.TORCH_FILE
        if config.get("torch_file", True):
            if not torch_file.is_file():
                raise ValueError(f"the model folder {str(path)!r} lacks {persistence.TORCH_FILE} (its fusion network); "
                                 "the folder is incomplete: save the model there again.")
            torch_model = cls.from_torch(torch_file)
            _check_parts_agree(path, config, torch_model)
            model = cls._from_saved(config, torch_model.gfn_params, state, meta)
        else:
            model = cls._from_saved(config, None, state, meta)
            fusion = state.get("fusion")
            model.gfn_params = fusion if fusion is not None else model._seeded_fusion_params(model.data_shape.batch_size)
        _check_state_fits(path, model)
        return model


DEFAULT_VIEWS = ModelConfig().views


def preprocessing_record(adata: ad.AnnData) -> dict[str, Any]:
    """What the pp functions recorded in ``adata.uns`` about how the views were made (empty if nothing).

    Keys (each only where recorded): ``celltype_key``, ``celltype_order`` (the composition's
    columns), ``spatial_key``, ``sample_key``, and from the expression: ``source``
    (``'adata.X'``, ``"adata.layers['counts']"``, ...), ``is_pca``, ``n_comps``, ``normalisation`` (``'raw counts'`` or ``'normalised'``) and ``genes``.
    """
    record: dict[str, Any] = {}
    params = adata.uns.get("CN_params")
    if isinstance(params, Mapping):
        record.update({k: str(v) for k, v in params.items() if k in ("celltype_key", "spatial_key", "sample_key")
                       and v is not None})
    if "CN_order" in adata.uns:
        record["celltype_order"] = [str(t) for t in np.asarray(adata.uns["CN_order"]).tolist()]
    expression = adata.uns.get("X_data_params")
    if isinstance(expression, Mapping):
        for k in ("source", "is_pca", "n_comps", "normalisation"):
            if k in expression:
                v = expression[k]
                record[k] = v.item() if isinstance(v, np.generic) else v
        if "genes" in expression:
            record["genes"] = [str(g) for g in np.asarray(expression["genes"]).tolist()]
    return record


def check_preprocessing(saved: Mapping[str, Any], new: Mapping[str, Any], what: str) -> None:
    """Refuses data whose genes or cell types differ from the recorded ones; warns on another normalisation."""
    import warnings

    genes_a, genes_b = saved.get("genes"), new.get("genes")
    if genes_a is not None and genes_b is not None and list(genes_a) != list(genes_b):
        missing = [g for g in genes_a if g not in set(genes_b)]
        extra = [g for g in genes_b if g not in set(genes_a)]
        detail = (f"{len(missing)} of its genes are missing here (e.g. {missing[:5]}), {len(extra)} are new "
                  f"(e.g. {extra[:5]})" if missing or extra else "the same genes in another order")
        raise ValueError(f"the expression views were computed from other genes than {what} on: {detail}. Subset "
                         "and order the genes as the model's (adata = adata[:, model.preprocessing['genes']].copy()) "
                         "and rerun the scniche_jax.pp functions.")
    types_a, types_b = saved.get("celltype_order"), new.get("celltype_order")
    if types_a is not None and types_b is not None and list(types_a) != list(types_b):
        raise ValueError(f"the composition view's cell types {list(types_b)[:10]} differ from those {what} on "
                         f"({list(types_a)[:10]}); rerun scniche_jax.pp.cal_spatial_neighbors with "
                         "celltype_order=model.preprocessing['celltype_order'] (the same annotation).")
    for key, name in (("source", "expression"), ("normalisation", "normalisation"), ("is_pca", "is_pca"),
                      ("n_comps", "n_comps")):
        if key in saved and key in new and saved[key] != new[key]:
            warnings.warn(f"the expression views here were made with {name}={new[key]!r} but {what} on "
                          f"{name}={saved[key]!r}; preprocess new data as the training data (model.preprocessing), "
                          "or the embedding compares unlike features.", UserWarning, stacklevel=3)


def _same_tree(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def _check_parts_agree(path: Path, config: dict, torch_model: "Model") -> None:
    """``model.pt`` must be the one saved with ``config.json`` (same widths and graph size)."""
    saved = DataShape.from_dict(config["data"])
    model_cfg = config["model"]
    mine = {"input sizes": list(saved.input_sizes), "graph size": saved.batch_size,
            "hidden_size_v": [int(x) for x in model_cfg.get("hidden_size_v", [])],
            "hidden_size": [int(x) for x in model_cfg.get("hidden_size", [])]}
    theirs = torch_model.data_shape
    other = {"input sizes": list(theirs.input_sizes), "graph size": theirs.batch_size,
             "hidden_size_v": list(torch_model.config.hidden_size_v), "hidden_size": list(torch_model.config.hidden_size)}
    differing = [k for k in mine if mine[k] != other[k]]
    if differing:
        detail = "; ".join(f"{k} {other[k]} in model.pt, {mine[k]} in config.json" for k in differing)
        raise ValueError(f"the model folder {str(path)!r}: its {persistence.TORCH_FILE} belongs to another model "
                         f"({detail}); the folder's parts do not match: save the model there again, or load the "
                         "model.pt on its own (scniche_jax.load(path_to_model_pt)).")


def _check_state_fits(path: Path, model: "Model") -> None:
    """The parameters in ``state/`` must have the widths ``config.json`` names."""
    c, d = model.config, model.data_shape
    expected = set(d.input_sizes) | {int(c.hidden_size[-1])}
    widths = {w for x in jax.tree_util.tree_leaves(model.params) if np.ndim(x) == 2 for w in np.shape(x)}
    if not expected <= widths:
        raise ValueError(f"the model folder {str(path)!r}: the parameters in {persistence.STATE_DIR}/ do not have "
                         f"the widths of config.json (views {list(d.input_sizes)}, latent {c.hidden_size[-1]}); the "
                         "folder's parts come from different models: save the model there again.")


def _opt_state_tree(opt_state) -> dict[str, Any]:
    adam = opt_state.inner_state
    return {"count": opt_state.count, "learning_rate": opt_state.hyperparams["learning_rate"],
            "adam_count": adam.count, "mu": adam.mu, "nu": adam.nu}


def _opt_state_from_tree(tree: dict[str, Any]):
    """The optimizer state of :func:`_opt_state_tree`'s output (as :func:`make_optimizer` builds it)."""
    from .optimizer import TorchAdamState

    template = make_optimizer(float(tree["learning_rate"])).init(tree["mu"])
    inner = TorchAdamState(jnp.asarray(tree["adam_count"], jnp.int32), tree["mu"], tree["nu"])
    hyper = dict(template.hyperparams)
    hyper["learning_rate"] = jnp.asarray(tree["learning_rate"], jnp.float32)
    return template._replace(count=jnp.asarray(tree["count"], template.count.dtype), hyperparams=hyper,
                             inner_state=inner)


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor from torch.load
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


def load(path: PathLike) -> Model:
    """Loads a model saved with :meth:`Model.save`, a training-checkpoint folder, or a ``model.pt``.

    Every array (parameters, Adam state, the frozen networks, the random state) is restored bit
    for bit, so the loaded model embeds exactly as the saved one and :meth:`Model.train`
    continues exactly where it stopped. A training-checkpoint folder (``checkpoint_dir=`` of
    :func:`scniche_jax.fit`) gives its newest complete checkpoint. A folder with only a
    ``model.pt``, or a ``model.pt`` file trained by the original scNiche, is read as with
    :meth:`Model.from_torch` (without torch; the file's code is never run).

    Parameters
    ----------
    path
        The folder written by :meth:`Model.save`, a checkpoint folder, or a ``model.pt``.

    Returns
    -------
    Model
        The :class:`Model`, ready to :meth:`~Model.embed` and to :meth:`~Model.train` further.

    Raises
    ------
    FileNotFoundError
        Nothing to load at ``path``.
    ValueError
        The folder or file is not a saved scniche-jax model or a reference ``model.pt``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=2, progress=False)
    >>> path = model.save("run1", overwrite=True)
    >>> same = sj.load(path)
    >>> same.train(adata, epochs=2, progress=False)   # continues from epoch 2
    >>> same.history.epochs_run
    4
    """
    return Model.load(path)
