"""When to lower the learning rate and when to stop: pure host-side functions.

Each rule is a small state (a NamedTuple) and an ``update`` that takes one epoch's number
and returns the new state and a decision, so the rules can be driven by scripted
sequences in tests and by the training loop alike.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import reduce_on_plateau
from sklearn.metrics import adjusted_rand_score

from .clustering import kmeans_labels

# PyTorch ReduceLROnPlateau's default relative threshold ('rel' mode, mode='min').
PLATEAU_THRESHOLD = 1e-4


class LRPlateau(NamedTuple):
    """``optax.contrib.reduce_on_plateau`` stepped once per epoch on the epoch loss."""

    transform: optax.GradientTransformationExtraArgs
    state: optax.OptState

    @property
    def scale(self) -> float:
        return float(self.state.scale)


def lr_plateau(lr: float, patience: int, factor: float = 0.5, min_lr: float = 1e-6,
               cooldown: int = 0) -> LRPlateau:
    """A plateau rule with PyTorch ``ReduceLROnPlateau(mode='min', patience, factor, min_lr)`` semantics.

    PyTorch cuts the LR once more than ``patience`` epochs failed to improve on the best
    loss by the relative threshold 1e-4; optax cuts once ``patience`` epochs did, so the
    optax rule gets ``patience + 1``.

    Args:
      lr: the base learning rate (``min_lr`` becomes the scale floor ``min_lr / lr``).
      patience: PyTorch's patience.
      factor: multiplier applied at each cut, in (0, 1).
      min_lr: lowest learning rate.
      cooldown: epochs after a cut during which bad epochs are not counted.

    Returns:
      The :class:`LRPlateau`; its ``scale`` multiplies the base LR.
    """
    transform = reduce_on_plateau(factor=factor, patience=patience + 1, rtol=PLATEAU_THRESHOLD,
                                  atol=0.0, cooldown=cooldown, min_scale=min_lr / lr)
    return LRPlateau(transform, transform.init(jnp.zeros((), jnp.float32)))


def _plateau_step(transform, state, value):
    _, state = transform.update(jnp.zeros((), jnp.float32), state, value=value)
    return state


def lr_plateau_update(plateau: LRPlateau, epoch_loss: float) -> LRPlateau:
    """Feeds one epoch's loss to the plateau rule."""
    state = _plateau_step(plateau.transform, plateau.state, jnp.float32(epoch_loss))
    return plateau._replace(state=jax.device_get(state))


class LossStop(NamedTuple):
    """Best loss so far, its epoch, and how many epochs since it improved."""

    best_loss: float = math.inf
    best_epoch: int = -1
    wait: int = 0


def loss_stop_update(state: LossStop, epoch: int, loss: float, patience: Optional[int],
                     min_delta: float = 0.0) -> tuple[LossStop, bool, bool]:
    """One epoch of loss early stopping.

    An epoch improves when ``loss < best_loss - min_delta``. Training stops once
    ``patience`` epochs in a row did not improve (never with ``patience=None``).

    Returns:
      ``(state, improved, stop)``.
    """
    if loss < state.best_loss - min_delta:
        return LossStop(float(loss), epoch, 0), True, False
    state = state._replace(wait=state.wait + 1)
    return state, False, patience is not None and state.wait >= patience


class AriStop(NamedTuple):
    """Labels of the last probe, the ARI history, and how many recent probes passed."""

    labels: Optional[np.ndarray] = None
    streak: int = 0


def ari_stop_update(state: AriStop, labels: np.ndarray, threshold: Optional[float],
                    patience: int = 2) -> tuple[AriStop, Optional[float], bool]:
    """One ARI probe: compares ``labels`` with the previous probe's.

    Training stops once ``patience`` consecutive probes reached ``threshold`` (never with
    ``threshold=None``). The first probe has no predecessor and returns ARI None.

    Returns:
      ``(state, ari, stop)``.
    """
    if state.labels is None:
        return AriStop(labels, 0), None, False
    ari = float(adjusted_rand_score(state.labels, labels))
    streak = state.streak + 1 if threshold is not None and ari >= threshold else 0
    return AriStop(labels, streak), ari, threshold is not None and streak >= patience


def probe_labels(embedding: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """KMeans labels used by the ARI probe (one restart, fixed seed: cheap and repeatable)."""
    return kmeans_labels(embedding, n_clusters, random_state=seed, n_init=1)
