"""``scniche_jax.fit``: build a :class:`Model`, train it, write ``obsm[key_added]``; one call."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import anndata as ad
import jax

from . import persistence
from . import validation as val
from ._deprecation import renamed_kwargs
from ._spatialdata import resolve_table
from .config import ImprovedOptions, ModelConfig
from .model import Model

log = logging.getLogger(__name__)


@renamed_kwargs(k_graph="n_neighbors")
def fit(adata: ad.AnnData, *, views: Optional[Sequence[str]] = None,
        hidden_size_v: Sequence[int] = (10,), hidden_size: Sequence[int] = (32, 10),
        n_neighbors: int = 20, mik: int = 5, batch_num: Optional[int | str] = None, epochs: int = 100,
        lr: float = 0.01, seed: int = 0, precision: str = "auto", progress: bool = True,
        patience: Optional[int] = None, min_delta: float = 0.0, restore_best: bool = True,
        lr_patience: Optional[int] = 5, lr_factor: float = 0.5, min_lr: float = 1e-6,
        ari_every: Optional[int] = None, ari_k: int = 10, ari_stop_threshold: Optional[float] = None,
        ari_stop_patience: int = 2, dropout: float = 0.1, deterministic_embedding: bool = True,
        gre_semantics: str = "gpu", variant: str = "reference",
        improved_options: Optional[ImprovedOptions] = None, block_size: int = 1024,
        key_added: str = "X_scniche", checkpoint_dir: Optional[str] = None, checkpoint_every: int = 10,
        resume: bool = False, devices: Optional[Sequence[jax.Device]] = None,
        memory_limit: Optional[float] = None, cells_per_batch: Optional[int] = None,
        table_key: Optional[str] = None) -> Model:
    """Trains scNiche on ``adata`` and writes the embedding to ``adata.obsm[key_added]``.

    The same as ``model = Model(...); model.train(adata, ...)`` followed by the embedding;
    every keyword is a field of :class:`~scniche_jax.config.ModelConfig`,
    :class:`~scniche_jax.config.OptimizerConfig`, :class:`~scniche_jax.config.StoppingConfig`
    or :class:`~scniche_jax.config.BatchConfig`, documented there and in :class:`Model`.

    Parameters
    ----------
    adata
        Cells with the view matrices in ``obsm`` (see :mod:`scniche_jax.pp`), or a
        ``spatialdata.SpatialData`` whose table ``table_key`` holds them (the embedding is written
        into that table).
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
    epochs
        Number of epochs, counted from the start (also when resuming).
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
        Stop when the epoch loss has not improved by more than ``min_delta`` for this many epochs
        (None: never).
    min_delta
        The improvement that counts, >= 0.
    restore_best
        Embed with the best-loss parameters.
    ari_every
        Every this many epochs, KMeans (``ari_k`` clusters) on the embedding and its ARI against the
        previous probe (None: no probe).
    ari_k
        Clusters of the probe, >= 2.
    ari_stop_threshold
        Stop once ``ari_stop_patience`` probes in a row reach it (needs ``ari_every``).
    ari_stop_patience
        Probes in a row needed.
    batch_num
        None trains on the full graph; an integer splits the cells into that many equal batches
        exactly as the reference does; ``'auto'`` aims at ``cells_per_batch`` cells per batch (about
        1000 on a CPU, 5000 on a GPU).
    cells_per_batch
        The target of ``batch_num='auto'`` (None: the platform's default).
    precision
        ``'bf16'`` (bf16 operands, fp32 accumulation in the B² loss matmuls), ``'fp32'``, or
        ``'auto'``: fp32 on a CPU, bf16 on an accelerator (:func:`resolve_precision`; a CPU has no
        faster bf16 path for these thin matmuls and spends time converting).
    block_size
        Rows per block of the B² loss and of the fusion network; on a CPU the loss takes fewer rows
        where a block would exceed about 2^20 entries (:func:`scniche_jax.step.loss_block_size`; the
        memory check keeps ``block_size``, an over-estimate there).
    memory_limit
        Bytes one device may use; None takes 90 % of what is free.
    devices
        Train data-parallel on these devices (e.g. ``jax.devices()``), one batch per device per step
        with averaged gradients; ``batch_num`` a multiple of their count.
    checkpoint_every
        Epochs between checkpoints.
    progress
        Show progress bars.
    key_added
        ``obsm`` key of the embedding.
    checkpoint_dir
        Save training checkpoints here (the newest three kept).
    resume
        Continue from the newest checkpoint in ``checkpoint_dir`` (same data and model settings;
        stopping options may change); it reaches the state of an uninterrupted run.
    table_key
        The table of a SpatialData (default ``'table'``).

    Returns
    -------
    Model
        The trained :class:`Model`; its ``history`` holds losses, LRs, ARIs and why training
        stopped. Nothing but ``adata.obsm[key_added]`` is written, also after Ctrl-C.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=600, n_niches=4, seed=0)
    >>> sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", verbose=False)
    >>> sj.pp.cal_spatial_exp(adata, verbose=False)
    >>> model = sj.fit(adata, epochs=3, progress=False)
    >>> adata.obsm["X_scniche"].shape
    (600, 10)
    >>> len(model.history.loss["total"])
    3

    Larger data in batches, stopping once the niches stop moving:

    >>> model = sj.fit(adata, batch_num=2, epochs=20, ari_every=5, ari_k=4,
    ...                ari_stop_threshold=0.95, progress=False)
    >>> model.history.early_stop.stopped_by in ("ari", "epochs", "loss")
    True
    """
    adata = resolve_table(adata, table_key)
    val.check_not_empty(adata)
    epochs = val.check_positive_int(epochs, "epochs")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    model_options = dict(views=views, hidden_size_v=hidden_size_v, hidden_size=hidden_size, n_neighbors=n_neighbors,
                         mik=mik, dropout=dropout, deterministic_embedding=deterministic_embedding,
                         gre_semantics=gre_semantics, variant=variant, improved_options=improved_options, seed=seed)
    model = Model(**model_options)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoints to resume from.")
    if resume and persistence.has_training_checkpoint(persistence.check_writable_dir(checkpoint_dir,
                                                                                      "checkpoint_dir")):
        model = _resumed(Path(checkpoint_dir), model.config)
    elif resume:
        log.info("no checkpoint in %s yet: training from the start", checkpoint_dir)
    remaining = epochs - model.history.epochs_run
    options = dict(lr=lr, lr_patience=lr_patience, lr_factor=lr_factor, min_lr=min_lr, patience=patience,
                   min_delta=min_delta, restore_best=restore_best, ari_every=ari_every, ari_k=ari_k,
                   ari_stop_threshold=ari_stop_threshold, ari_stop_patience=ari_stop_patience, batch_num=batch_num,
                   cells_per_batch=cells_per_batch, precision=precision, block_size=block_size,
                   memory_limit=memory_limit, devices=devices, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=checkpoint_every, progress=progress)
    if remaining <= 0:  # a finished run: only the embedding is left to compute
        adata.obsm[key_added] = model.embed(adata)
        return model
    run = model._train(adata, epochs=remaining, **options)
    k_embed = model._keys()[3]
    adata.obsm[key_added] = model._final_embedding(adata, run, k_embed)
    return model


def _resumed(directory: Path, wanted: ModelConfig) -> Model:
    model = Model.load(directory)
    saved = model.config.to_dict()
    requested = wanted.to_dict()
    differing = sorted(k for k in requested if k != "deterministic_embedding" and requested[k] != saved[k])
    if differing:
        raise ValueError(f"the checkpoint in {str(directory)!r} was made with other settings "
                         f"({', '.join(f'{k}={saved[k]!r}' for k in differing)}); resume with the same data and "
                         "settings, or use a new checkpoint_dir.")
    model.config = wanted
    log.info("resuming from epoch %d of %s", model.history.epochs_run, directory)
    return model
