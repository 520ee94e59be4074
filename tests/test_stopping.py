import numpy as np
import pytest

from scniche_jax.stopping import AriStop, LossStop, ari_stop_update, loss_stop_update


def test_loss_stop_sequence():
    state = LossStop()
    decisions = []
    for epoch, loss in enumerate([5.0, 4.0, 4.0, 3.95, 3.96, 3.97, 3.99], start=1):
        state, improved, stop = loss_stop_update(state, epoch, loss, patience=3, min_delta=0.1)
        decisions.append((improved, stop))
    # 4.0 -> 3.95 improves by only 0.05 <= min_delta: not an improvement
    assert decisions == [(True, False), (True, False), (False, False), (False, False), (False, True),
                         (False, True), (False, True)]
    assert state.best_epoch == 2 and state.best_loss == 4.0


def test_loss_stop_never_without_patience():
    state = LossStop()
    for epoch in range(1, 50):
        state, _, stop = loss_stop_update(state, epoch, 1.0, patience=None)
        assert not stop


def test_ari_stop_sequence():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([0, 0, 1, 2, 2, 2])  # ARI(a, b) < 0.9
    state = AriStop()
    state, ari, stop = ari_stop_update(state, a, 0.9, 2)
    assert ari is None and not stop
    state, ari, stop = ari_stop_update(state, a, 0.9, 2)
    assert ari == pytest.approx(1.0) and not stop
    state, ari, stop = ari_stop_update(state, b, 0.9, 2)
    assert ari < 0.9 and not stop and state.streak == 0
    state, ari, stop = ari_stop_update(state, b, 0.9, 2)
    assert not stop and state.streak == 1
    state, ari, stop = ari_stop_update(state, b[::-1][::-1], 0.9, 2)
    assert stop
