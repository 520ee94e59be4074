import numpy as np
import pytest

from scniche_jax.stopping import (AriStop, LossStop, ari_stop_update, loss_stop_update, lr_plateau,
                                  lr_plateau_update)


def _scales(losses, **kw):
    plateau = lr_plateau(lr=1.0, **kw)
    out = []
    for loss in losses:
        plateau = lr_plateau_update(plateau, loss)
        out.append(plateau.scale)
    return out


def test_plateau_cuts_where_pytorch_does():
    # PyTorch ReduceLROnPlateau(factor=0.5, patience=2, threshold=1e-4), worked by hand:
    # e0 best=10; e1 best=9; e2..e4 three bad epochs -> cut after e4; e5..e7 -> cut after e7;
    # e8 improves (8 < 9·0.9999); e9..e11 -> cut after e11.
    losses = [10, 9, 9, 9, 9, 9, 9, 9, 8, 8, 8, 8]
    expected = [1, 1, 1, 1, .5, .5, .5, .25, .25, .25, .25, .125]
    assert _scales(losses, patience=2, factor=0.5, min_lr=0.0) == expected


def test_plateau_relative_threshold():
    # 9.9995 is not better than 10 by PyTorch's relative threshold 1e-4: three bad epochs.
    assert _scales([10, 9.9995, 9.9995, 9.9995], patience=2, factor=0.5, min_lr=0.0) == [1, 1, 1, .5]


def test_plateau_min_lr_floor_and_patience_zero():
    # patience=0: PyTorch cuts after every epoch that does not improve
    assert _scales([5, 5, 5, 5], patience=0, factor=0.5, min_lr=0.3) == pytest.approx([1, .5, .3, .3])


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
