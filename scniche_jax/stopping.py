"""When to stop training: pure host-side rules.

Each rule is a small state (a NamedTuple) and an ``update`` that takes one epoch's number
and returns the new state and a decision, so the rules can be driven by scripted
sequences in tests and by the training loop alike.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
from sklearn.metrics import adjusted_rand_score

from .clustering import kmeans_labels


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
