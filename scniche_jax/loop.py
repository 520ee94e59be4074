"""The host training loop: one compiled epoch per iteration, one scalar read per epoch.

It owns the LR plateau rule, loss early stopping with restore-best, the ARI probe,
Ctrl-C and non-finite losses. Arrays in, parameters and a history out: it never sees an
AnnData.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any, Callable, Optional

import jax
import numpy as np

from .config import ScnicheConfig
from .stopping import (AriStop, LossStop, ari_stop_update, loss_stop_update, lr_plateau, lr_plateau_update,
                       probe_labels)
from .progress import progress_bar
from .train import GraphBatch, StepSettings, TrainState, train_epoch

log = logging.getLogger(__name__)

LOSS_NAMES = ("total", "gre", "rec", "mim")


def empty_history() -> dict[str, Any]:
    """``{'loss': {total, gre, rec, mim}, 'lr': [], 'ari': [(epoch, ari)], 'early_stop': None}``."""
    return {"loss": {name: [] for name in LOSS_NAMES}, "lr": [], "ari": [], "early_stop": None}


def run_training(state: TrainState, graph_batches: GraphBatch, settings: StepSettings,
                 config: ScnicheConfig, key: jax.Array, embed: Callable[[Any], np.ndarray],
                 progress: bool = True, history: Optional[dict] = None, start_epoch: int = 0,
                 best_params: Any = None, ari_labels: Optional[np.ndarray] = None,
                 checkpoint: Optional[Callable[[int, dict], None]] = None,
                 checkpoint_every: Optional[int] = None,
                 epoch_fn: Optional[Callable[..., tuple[TrainState, Any]]] = None) -> tuple[TrainState, Any, dict]:
    """Trains until ``config.epochs``, a plateau of the loss, a stable ARI, Ctrl-C or a NaN.

    Args:
      state: initial training state.
      graph_batches: the stacked device batches.
      settings: static step settings.
      config: run configuration (epochs and every stopping option).
      key: randomness of the run; epoch ``e`` uses ``fold_in(key, e)``.
      embed: maps parameters to the deterministic embedding (used by the ARI probe).
      progress: show a tqdm bar.
      history: a history to continue (resume); a fresh one when None.
      start_epoch: epochs already run (resume).
      best_params: the best-loss parameters so far (resume).
      ari_labels: the last ARI probe's labels (resume).
      checkpoint: called with ``(epochs run, snapshot)`` every ``checkpoint_every`` epochs
        and once at the end; the snapshot holds ``state``, ``best_params``, ``ari_labels``
        and ``history``.
      checkpoint_every: epochs between checkpoints.
      epoch_fn: ``(state, batches, key, settings) -> (state, losses)``; :func:`train.train_epoch`
        when None (data parallelism passes its sharded epoch).

    Returns:
      ``(state, final_params, history)``: the last state, the parameters the embedding should
      use (the best-loss ones with ``restore_best``), and the history with ``early_stop``.
    """
    history = empty_history() if history is None else history
    epoch_fn = train_epoch if epoch_fn is None else epoch_fn
    plateau = (lr_plateau(config.lr, config.lr_patience, config.lr_factor, config.min_lr)
               if config.lr_patience is not None else None)
    loss_stop, ari_stop = LossStop(), AriStop()
    for epoch, loss in enumerate(history["loss"]["total"], start=1):  # replay a resumed history
        loss_stop, _, _ = loss_stop_update(loss_stop, epoch, loss, config.patience, config.min_delta)
        if plateau is not None:
            plateau = lr_plateau_update(plateau, loss)
    streak = 0
    for _, value in history["ari"]:
        streak = streak + 1 if config.ari_stop_threshold is not None and value >= config.ari_stop_threshold else 0
    ari_stop = AriStop(ari_labels, streak)
    best_params = state.params if best_params is None else best_params

    def snapshot():
        return {"state": state, "best_params": best_params, "ari_labels": ari_stop.labels, "history": history}

    stopped_by, epochs_run = "epochs", start_epoch
    last_ari = None
    bar = progress_bar(range(start_epoch, config.epochs), desc="scNiche", disable=not progress,
                       initial=start_epoch, total=config.epochs)
    try:
        for epoch in bar:
            lr_now = config.lr * (plateau.scale if plateau is not None else 1.0)
            previous = state
            state = state._replace(lr_scale=np.float32(lr_now / config.lr))
            state, losses = epoch_fn(state, graph_batches, jax.random.fold_in(key, epoch), settings)
            epoch_losses = {name: float(np.sum(np.asarray(getattr(losses, name)))) for name in LOSS_NAMES}
            if not math.isfinite(epoch_losses["total"]):
                state = previous
                stopped_by = "nonfinite"
                warnings.warn(f"scniche_jax: non-finite loss at epoch {epoch + 1}; training stopped and "
                              f"the parameters of epoch {epoch} were kept.", RuntimeWarning, stacklevel=2)
                break
            epochs_run = epoch + 1
            for name, value in epoch_losses.items():
                history["loss"][name].append(value)
            history["lr"].append(lr_now)
            loss_stop, improved, stop = loss_stop_update(loss_stop, epochs_run, epoch_losses["total"],
                                                         config.patience, config.min_delta)
            if improved:
                best_params = state.params
            if plateau is not None:
                plateau = lr_plateau_update(plateau, epoch_losses["total"])
            if config.ari_every is not None and epochs_run % config.ari_every == 0:
                started = time.perf_counter()
                labels = probe_labels(embed(state.params), config.ari_k, seed=config.seed)
                ari_stop, ari, ari_done = ari_stop_update(ari_stop, labels, config.ari_stop_threshold,
                                                          config.ari_stop_patience)
                log.debug("ARI probe at epoch %d took %.3f s", epochs_run, time.perf_counter() - started)
                if ari is not None:
                    history["ari"].append((epochs_run, ari))
                    last_ari = ari
                if ari_done:
                    stopped_by = "ari"
            postfix = {"loss": f"{epoch_losses['total']:.4f}", "lr": f"{lr_now:.2e}"}
            if last_ari is not None:
                postfix["ari"] = f"{last_ari:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if checkpoint is not None and checkpoint_every and epochs_run % checkpoint_every == 0:
                checkpoint(epochs_run, snapshot())
            if stopped_by == "ari":
                break
            if stop:
                stopped_by = "loss"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupted"
        log.warning("scniche_jax: training interrupted after %d epochs", epochs_run)
    finally:
        bar.close()
    if checkpoint is not None and epochs_run > start_epoch and not (
            checkpoint_every and epochs_run % checkpoint_every == 0):
        checkpoint(epochs_run, snapshot())
    restored = bool(config.restore_best and loss_stop.best_epoch > 0 and loss_stop.best_epoch != epochs_run)
    final_params = best_params if restored else state.params
    history["early_stop"] = {
        "best_epoch": loss_stop.best_epoch if loss_stop.best_epoch > 0 else None,
        "best_loss": loss_stop.best_loss if loss_stop.best_epoch > 0 else None,
        "stopped_epoch": epochs_run, "stopped_by": stopped_by, "restored_best": restored}
    return state, final_params, history
