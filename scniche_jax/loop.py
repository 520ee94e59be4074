"""The host training loop: one compiled epoch per iteration, one scalar read per epoch.

It owns the LR plateau schedule, loss early stopping with restore-best, the ARI probe,
Ctrl-C and non-finite losses. Arrays in, parameters and a history out: it never sees an
AnnData. Everything it carries from one ``train`` call to the next is a :class:`LoopState`.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import jax
import numpy as np

from .config import OptimizerConfig, StoppingConfig
from .history import LOSS_NAMES, EarlyStop, History
from .optimizer import (ReduceLROnPlateauState, plateau_floor, plateau_lr, plateau_start, plateau_update,
                        with_learning_rate)
from .parallel import Placement
from .pipeline import GraphBatch
from .progress import progress_bar
from .step import StepSettings, TrainState
from .stopping import AriStop, LossStop, ari_stop_update, loss_stop_update, probe_labels

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the host loop carries between epochs and between ``train`` calls.

    Attributes:
      plateau: the LR schedule's state (``optax.contrib.reduce_on_plateau``'s); its ``scale`` is
        the next epoch's learning rate.
      history: every epoch's records so far.
      loss_stop: best loss, its epoch, epochs since it improved (patience counts across calls).
      ari_stop: the last probe's labels and the streak of probes above the threshold.
      best_params: the parameters of the best-loss epoch (None before any epoch).
    """

    plateau: ReduceLROnPlateauState
    history: History = field(default_factory=History)
    loss_stop: LossStop = field(default_factory=LossStop)
    ari_stop: AriStop = field(default_factory=AriStop)
    best_params: Any = None

    @classmethod
    def start(cls, lr: float) -> "LoopState":
        """The state before the first epoch, at learning rate ``lr``."""
        return cls(plateau=plateau_start(float(lr)))

    @property
    def epochs_run(self) -> int:
        return self.history.epochs_run


def run_training(state: TrainState, batches: GraphBatch, placement: Placement, settings: StepSettings,
                 optimizer: OptimizerConfig, stopping: StoppingConfig, key: jax.Array, loop: LoopState,
                 embed: Callable[[Any], np.ndarray], progress: bool = True,
                 checkpoint: Optional[Callable[[TrainState, LoopState], None]] = None,
                 checkpoint_every: Optional[int] = None, probe_seed: int = 0) -> tuple[TrainState, LoopState, Any]:
    """Trains up to ``stopping.epochs`` more epochs, or until a plateau, a stable ARI, Ctrl-C or a NaN.

    Args:
      state: the training state to continue from (on ``placement``).
      batches: the device batches.
      placement: where the epoch runs (one device or a mesh).
      settings: static step settings.
      optimizer: learning rate and plateau schedule.
      stopping: epochs and every stopping rule.
      key: randomness of the run; epoch ``e`` (counted over all calls) uses ``fold_in(key, e)``,
        so a run continued with another call repeats an uninterrupted one exactly.
      loop: the host state to continue from (:meth:`LoopState.start` for a new model).
      embed: maps parameters to the deterministic embedding (used by the ARI probe).
      progress: show a progress bar.
      checkpoint: called with ``(state, loop)`` every ``checkpoint_every`` epochs (counted over
        all calls) and once at the end.
      checkpoint_every: epochs between checkpoints.
      probe_seed: KMeans seed of the ARI probe.

    Returns:
      ``(state, loop, final_params)``: the last state, the host state (its history's
      ``early_stop`` says why training stopped) and the parameters the embedding should use
      (the best-loss ones with ``restore_best``).
    """
    history = loop.history
    start_epoch = loop.epochs_run
    end_epoch = start_epoch + stopping.epochs
    plateau, loss_stop, ari_stop = loop.plateau, loop.loss_stop, loop.ari_stop
    best_params = state.params if loop.best_params is None else loop.best_params
    lr_now = plateau_lr(plateau)
    # PyTorch's eps rule as optax's min_scale, for the cuts this call can make (one an epoch at most).
    min_scale = plateau_floor(lr_now, optimizer.lr_factor, optimizer.min_lr, max_cuts=stopping.epochs)
    state = state._replace(opt_state=with_learning_rate(state.opt_state, lr_now))
    state = placement.put_state(state)

    def current_loop() -> LoopState:
        return LoopState(plateau, history, loss_stop, ari_stop, best_params)

    stopped_by, epochs_run = "epochs", start_epoch
    last_ari = None
    bar = progress_bar(range(start_epoch, end_epoch), desc="scNiche", disable=not progress,
                       total=stopping.epochs)
    try:
        for epoch in bar:
            if plateau_lr(plateau) != lr_now:
                lr_now = plateau_lr(plateau)
                state = state._replace(opt_state=placement.put_state(with_learning_rate(state.opt_state, lr_now)))
            previous = state
            state, losses = placement.train_epoch(state, batches, jax.random.fold_in(key, epoch), settings)
            epoch_losses = {name: float(np.sum(np.asarray(getattr(losses, name)))) for name in LOSS_NAMES}
            if not math.isfinite(epoch_losses["total"]):
                state = previous
                stopped_by = "nonfinite"
                warnings.warn(f"scniche_jax: non-finite loss at epoch {epoch + 1}; training stopped and "
                              f"the parameters of epoch {epoch} were kept.", RuntimeWarning, stacklevel=2)
                break
            epochs_run = epoch + 1
            history.append_epoch(epoch_losses, lr_now)
            loss_stop, improved, stop = loss_stop_update(loss_stop, epochs_run, epoch_losses["total"],
                                                         stopping.patience, stopping.min_delta)
            if improved:
                best_params = state.params
            plateau = plateau_update(plateau, epoch_losses["total"], optimizer, min_scale)
            if stopping.ari_every is not None and epochs_run % stopping.ari_every == 0:
                started = time.perf_counter()
                labels = probe_labels(embed(state.params), stopping.ari_k, seed=probe_seed)
                ari_stop, ari, ari_done = ari_stop_update(ari_stop, labels, stopping.ari_stop_threshold,
                                                          stopping.ari_stop_patience)
                log.debug("ARI probe at epoch %d took %.3f s", epochs_run, time.perf_counter() - started)
                if ari is not None:
                    history.ari.append((epochs_run, ari))
                    last_ari = ari
                if ari_done:
                    stopped_by = "ari"
            postfix = {"loss": f"{epoch_losses['total']:.4f}", "lr": f"{lr_now:.2e}"}
            if last_ari is not None:
                postfix["ari"] = f"{last_ari:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if checkpoint is not None and checkpoint_every and epochs_run % checkpoint_every == 0:
                checkpoint(state, current_loop())
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
        checkpoint(state, current_loop())
    restored = bool(stopping.restore_best and loss_stop.best_epoch > 0 and loss_stop.best_epoch != epochs_run)
    final_params = best_params if restored else state.params
    history.early_stop = EarlyStop(
        best_epoch=loss_stop.best_epoch if loss_stop.best_epoch > 0 else None,
        best_loss=loss_stop.best_loss if loss_stop.best_epoch > 0 else None,
        stopped_epoch=epochs_run, stopped_by=stopped_by, restored_best=restored)
    return state, replace(current_loop(), history=history), final_params

