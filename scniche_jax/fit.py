"""``scniche_jax.fit``: the AnnData edge of training.

AnnData in, arrays to the graph builders and the jitted epoch, arrays back, and only
``adata.obsm[key_added]`` written.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np

from . import validation as val
from .batching import auto_batch_num, batch_size_of
from .checkpoint import check_writable_dir, latest_step, restore_checkpoint, save_checkpoint, to_numpy_tree
from .config import DEFAULT_VIEWS, ScnicheConfig
from .inputs import build_host_batches, check_settings, embedding, step_settings, view_features
from .loop import run_training
from .memory import available_bytes, check_memory
from .model import GraphFusionNetwork
from .optimizer import TorchAdamState
from .progress import progress_write
from .parallel import check_devices, data_mesh, parallel_train_epoch, place_batches, replicate
from .train import batch_at, init_state
from .trained_model import Model, history_from_json

log = logging.getLogger(__name__)


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
        k_graph: int = 20, mik: int = 5, batch_num: Optional[int | str] = None, epochs: int = 100,
        lr: float = 0.01, seed: int = 0, precision: str = "bf16", progress: bool = True,
        patience: Optional[int] = None, min_delta: float = 0.0, restore_best: bool = True,
        lr_patience: Optional[int] = 5, lr_factor: float = 0.5, min_lr: float = 1e-6,
        ari_every: Optional[int] = None, ari_k: int = 10, ari_stop_threshold: Optional[float] = None,
        ari_stop_patience: int = 2, dropout: float = 0.1, deterministic_embedding: bool = True,
        gre_semantics: str = "gpu", block_size: int = 1024, key_added: str = "X_scniche",
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 10, resume: bool = False,
        devices: Optional[Sequence[jax.Device]] = None, memory_limit: Optional[float] = None,
        cells_per_batch: Optional[int] = None) -> Model:
    """Trains scNiche on ``adata`` and writes the embedding to ``adata.obsm[key_added]``.

    Args:
      adata: cells with the view matrices in ``obsm`` (see :mod:`scniche_jax.pp`).
      views: ``obsm`` keys of the views; ``('X_cn_norm', 'X_data', 'X_data_nbr')`` when None.
      hidden_size_v: view-encoder widths.
      hidden_size: shared-encoder widths; the last is the embedding width.
      k_graph: kNN neighbours per cell in each view graph.
      mik: nearest neighbours per view used as positive pairs of the MI loss.
      batch_num: None trains on the full graph; an integer splits the cells into that many
        equal batches exactly as the reference does; ``"auto"`` aims at about 1000 cells per
        batch on a CPU and 5000 on a GPU (the full graph when the data is smaller).
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
      checkpoint_dir: save Orbax training checkpoints here (the last 3 are kept).
      checkpoint_every: epochs between checkpoints (one more is saved at the end).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` (the run must use
        the same data and model settings; ``epochs`` and stopping options may change). It
        reaches the same state as an uninterrupted run of the same seed.
      devices: train data-parallel on these devices (e.g. ``jax.devices()``): each step
        trains one batch per device and averages their gradients, so ``batch_num`` must be a
        multiple of ``len(devices)`` (``"auto"`` rounds up to one). None (or one device)
        trains on the default device, one step per batch. See :mod:`scniche_jax.parallel`.
      memory_limit: bytes one device may use; None takes 90 % of what is free (RAM on a
        CPU). A run estimated to need more (:mod:`scniche_jax.memory`) is refused before
        any work, with a ``batch_num`` that fits.

    Returns:
      The trained :class:`Model`; its ``history`` holds losses, LRs, ARIs and why training
      stopped. Nothing but ``adata.obsm[key_added]`` is written, also after Ctrl-C.
    """
    views = tuple(DEFAULT_VIEWS if views is None else ([views] if isinstance(views, str) else views))
    val.check_unique_obs_names(adata)
    device_list = None if devices is None else check_devices(devices, batch_num)
    n_devices = 1 if device_list is None else len(device_list)
    if isinstance(batch_num, str) and batch_num == "auto":
        platform = jax.default_backend() if device_list is None else device_list[0].platform
        if cells_per_batch is not None:
            val.check_positive_int(cells_per_batch, "cells_per_batch", minimum=2)
        batch_num = auto_batch_num(adata.n_obs, platform, cells_per_batch, n_devices=n_devices)
        chosen = ("the full graph" if batch_num is None else
                  f"batch_num={batch_num} (batches of {batch_size_of(adata.n_obs, batch_num):,} cells)")
        message = (f"scniche_jax: batch_num='auto' chose {chosen} for {adata.n_obs:,} cells on {n_devices} "
                   f"{platform} device(s)")
        log.info(message)
        if progress:
            progress_write(message)
    elif cells_per_batch is not None:
        raise ValueError("cells_per_batch only applies to batch_num='auto'; pass batch_num='auto' or drop it.")
    batches, size = check_settings(adata.n_obs, views, tuple(hidden_size_v), tuple(hidden_size), k_graph,
                                    mik, batch_num, epochs, lr, precision, dropout, gre_semantics, block_size)
    _check_stopping(patience, min_delta, lr_patience, lr_factor, min_lr, lr, ari_every, ari_k,
                    ari_stop_threshold, ari_stop_patience)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    if checkpoint_dir is not None:
        checkpoint_dir = check_writable_dir(checkpoint_dir, "checkpoint_dir")
        val.check_positive_int(checkpoint_every, "checkpoint_every")
    elif resume:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoints to resume from.")
    features = view_features(adata, views)
    device = device_list[0] if device_list else jax.devices()[0]
    if memory_limit is not None and not (isinstance(memory_limit, (int, float)) and memory_limit > 0):
        raise ValueError(f"memory_limit must be a number of bytes > 0, got {memory_limit!r}.")
    check_memory(adata.n_obs, batch_num, size, [f.shape[1] for f in features], hidden_size_v, hidden_size,
                 k_graph, mik, block_size, precision, n_devices, device.platform,
                 int(memory_limit if memory_limit is not None else 0.9 * available_bytes(device)))
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
                           ari_stop_patience=int(ari_stop_patience), n_devices=n_devices)
    settings = step_settings(config)
    key = jax.random.key(seed)
    k_init, k_gfn, k_train, k_embed = jax.random.split(key, 4)
    gfn_params = GraphFusionNetwork(size).init(k_gfn, jnp.zeros((1, size), jnp.float32))["params"]

    resumed = _resume_point(checkpoint_dir, config) if resume else None
    if resumed is not None:
        gfn_params = resumed["gfn"]
    host_batches = build_host_batches(features, batches, gfn_params, config, progress)
    state = init_state(k_init, batch_at(host_batches, 0), settings)
    mesh = data_mesh(device_list) if n_devices > 1 else None
    graph_batches = jax.device_put(host_batches) if mesh is None else place_batches(host_batches, mesh)
    del host_batches
    extra = {}
    if resumed is not None:
        state = state._replace(params=resumed["params"], opt_state=resumed["opt_state"],
                               discriminator=resumed["discriminator"])
        extra = {"history": resumed["history"], "start_epoch": resumed["epochs_run"],
                 "best_params": resumed["best_params"], "ari_labels": resumed["ari_labels"]}
        log.info("resuming from epoch %d of %s", resumed["epochs_run"], checkpoint_dir)
    if checkpoint_dir is not None:
        extra["checkpoint"] = lambda epochs_run, snap: _save_training_checkpoint(
            checkpoint_dir, epochs_run, snap, gfn_params, config)
        extra["checkpoint_every"] = checkpoint_every
    if mesh is not None:
        state = replicate(state, mesh)
        extra["epoch_fn"] = partial(parallel_train_epoch, mesh=mesh)
    probe = lambda params: embedding(params, graph_batches, batches, adata.n_obs,
                                     replace(config, deterministic_embedding=True), None, mesh)
    state, final_params, history = run_training(state, graph_batches, settings, config, k_train, probe, progress,
                                                **extra)
    model = Model(config, jax.device_get(final_params), jax.device_get(gfn_params),
                  jax.device_get(state.discriminator), history, jax.device_get(state.opt_state))
    adata.obsm[key_added] = embedding(final_params, graph_batches, batches, adata.n_obs, config, k_embed, mesh)
    return model


# Settings that may differ between a checkpointed run and the run that resumes it.
_RESUMABLE_CHANGES = {"epochs", "patience", "min_delta", "restore_best", "ari_every", "ari_k",
                      "ari_stop_threshold", "ari_stop_patience", "deterministic_embedding", "block_size"}


def _save_training_checkpoint(directory: Path, epochs_run: int, snap: dict, gfn_params,
                              config: ScnicheConfig) -> None:
    labels = snap["ari_labels"]
    state = {"params": snap["state"].params, "opt_state": snap["state"].opt_state._asdict(),
             "discriminator": snap["state"].discriminator, "best_params": snap["best_params"],
             "gfn": gfn_params, "ari_labels": np.full(1, -1, np.int32) if labels is None else
             np.asarray(labels, np.int32), "has_ari_labels": np.asarray(labels is not None)}
    meta = {"config": config.to_dict(), "history": snap["history"], "epochs_run": epochs_run}
    save_checkpoint(directory, epochs_run, to_numpy_tree(state), meta, max_to_keep=3)


def _resume_point(directory: Path, config: ScnicheConfig) -> Optional[dict]:
    if latest_step(directory) is None:
        log.info("no checkpoint in %s yet: training from the start", directory)
        return None
    _, state, meta = restore_checkpoint(directory)
    saved = ScnicheConfig.from_dict(meta["config"])
    differing = sorted(f for f in config.to_dict() if f not in _RESUMABLE_CHANGES
                       and config.to_dict()[f] != saved.to_dict()[f])
    if differing:
        raise ValueError(f"the checkpoint in {str(directory)!r} was made with other settings "
                         f"({', '.join(f'{f}={saved.to_dict()[f]!r}' for f in differing)}); resume with the same "
                         "data and settings, or use a new checkpoint_dir.")
    return {"params": state["params"], "opt_state": TorchAdamState(**state["opt_state"]),
            "discriminator": state["discriminator"], "best_params": state["best_params"], "gfn": state["gfn"],
            "ari_labels": np.asarray(state["ari_labels"]) if bool(state["has_ari_labels"]) else None,
            "history": history_from_json(meta["history"]), "epochs_run": int(meta["epochs_run"])}
