"""The optimizer: PyTorch-order Adam (against the update written out by hand and against real
torch), the learning rate held in the optax state, and the ReduceLROnPlateau schedule
(optax.contrib.reduce_on_plateau against the rule written out and against real torch)."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax.contrib import ReduceLROnPlateauState

from scniche_jax.config import OptimizerConfig
from scniche_jax.optimizer import (learning_rate, make_optimizer, plateau_from_saved, plateau_lr, plateau_start,
                                   plateau_to_dict, plateau_update, torch_adam, with_learning_rate)

B1, B2, EPS = 0.9, 0.999, 1e-8


def torch_adam_by_hand(param, grads, lr):
    """``torch.optim.Adam`` (single-tensor path) written out: fp32 tensors, float64 host scalars.

    m ← m + (1 − β1)(g − m) (torch's lerp); v ← β2·v + (1 − β2)·g²;
    step_size = lr / (1 − β1ᵗ) and √(1 − β2ᵗ) in float64 on the host;
    p ← p − step_size · m / (√v / √(1 − β2ᵗ) + eps).
    """
    p = param.astype(np.float32).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    f32 = np.float32
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float32)
        m = m + f32(1 - B1) * (g - m)
        v = f32(B2) * v + f32(1 - B2) * g * g
        bias1 = 1 - B1 ** t                     # float64, as PyTorch's Python scalars
        bias2_sqrt = math.sqrt(1 - B2 ** t)
        step_size = lr / bias1
        denom = np.sqrt(v) / f32(bias2_sqrt) + f32(EPS)
        p = p - f32(step_size) * (m / denom)
    return p


def _gradients(rng, n_steps, shape):
    # Mixed scales, including near-zero gradients that Adam amplifies (where float32 bias
    # corrections go wrong).
    scales = rng.choice([1e-9, 1e-6, 1e-3, 1.0], size=shape)
    return [rng.normal(size=shape).astype(np.float32) * scales.astype(np.float32) for _ in range(n_steps)]


def _run(transform, param, grads):
    state = transform.init(jnp.asarray(param))
    p = jnp.asarray(param)
    update = jax.jit(transform.update)
    for g in grads:
        u, state = update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, u)
    return np.asarray(p)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    param = rng.normal(size=(64,)).astype(np.float32)
    return param, _gradients(rng, 60, (64,))


def test_torch_adam_matches_the_update_written_out(case):
    param, grads = case
    expected = torch_adam_by_hand(param, grads, 0.01)
    ours = _run(torch_adam(0.01), param, grads)
    assert np.all(np.abs(ours - expected) <= 2.5e-7 * np.maximum(1, np.abs(expected)))  # measured 1.2e-7: 1 ulp


def test_plain_optax_adam_is_measurably_different(case):
    """The check above can fail: optax.adam (bias corrections in fp32, eps inside the
    bias-corrected root) moves away from PyTorch on the same gradients."""
    param, grads = case
    expected = torch_adam_by_hand(param, grads, 0.01)
    plain = _run(optax.adam(0.01), param, grads)
    assert np.abs(plain - expected).max() > 1e-6


def test_injected_learning_rate_is_the_step_size(case):
    param, grads = case
    opt = make_optimizer(0.01)
    state = opt.init(jnp.asarray(param))
    assert learning_rate(state) == pytest.approx(0.01)
    full, _ = opt.update(jnp.asarray(grads[0]), state)
    half, _ = opt.update(jnp.asarray(grads[0]), with_learning_rate(state, 0.005))
    np.testing.assert_array_equal(np.asarray(half) * 2, np.asarray(full))  # a power-of-two scale is exact
    np.testing.assert_array_equal(_run(make_optimizer(0.01), param, grads), _run(torch_adam(0.01), param, grads))


def test_torch_adam_matches_real_torch(case):
    torch = pytest.importorskip("torch")
    param, grads = case
    p = torch.nn.Parameter(torch.tensor(param))
    opt = torch.optim.Adam([p], lr=0.01, foreach=False)
    for g in grads:
        opt.zero_grad()
        p.grad = torch.tensor(g)
        opt.step()
    ours = _run(torch_adam(0.01), param, grads)
    assert np.all(np.abs(ours - p.detach().numpy()) <= 2.5e-7 * np.maximum(1, np.abs(param)))


def plateau_by_hand(plateau, epoch_loss, lr_patience, lr_factor, min_lr):
    """PyTorch ``ReduceLROnPlateau(mode='min', threshold=1e-4, threshold_mode='rel', cooldown=0,
    eps=1e-8)`` written out on ``(lr, best, num_bad_epochs)`` in float64 (the rule the package
    used before the optax schedule)."""
    lr, best, bad = plateau
    if lr_patience is None:
        return plateau
    if epoch_loss < best * (1.0 - 1e-4):
        return lr, float(epoch_loss), 0
    bad += 1
    if bad > lr_patience:
        new_lr = max(lr * lr_factor, min_lr)
        return (new_lr if lr - new_lr > 1e-8 else lr), best, 0
    return lr, best, bad


def _lrs(losses, lr=1.0, lr_patience=5, lr_factor=0.5, min_lr=1e-6):
    config = OptimizerConfig(lr=lr, lr_patience=lr_patience, lr_factor=lr_factor, min_lr=min_lr)
    plateau, out = plateau_start(lr), []
    for loss in losses:
        plateau = plateau_update(plateau, loss, config)
        out.append(plateau_lr(plateau))
    return out


def _lrs_by_hand(losses, lr=1.0, lr_patience=5, lr_factor=0.5, min_lr=1e-6):
    plateau, out = (lr, math.inf, 0), []
    for loss in losses:
        plateau = plateau_by_hand(plateau, loss, lr_patience, lr_factor, min_lr)
        out.append(plateau[0])
    return out


def _lrs_torch(torch, losses, lr=1.0, lr_patience=5, lr_factor=0.5, min_lr=1e-6):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=lr_factor, patience=lr_patience,
                                                       threshold=1e-4, threshold_mode="rel", cooldown=0,
                                                       min_lr=min_lr)
    out = []
    for loss in losses:
        sched.step(loss)
        out.append(opt.param_groups[0]["lr"])
    return out


def _scripted_losses():
    """40 epoch losses (float32 values, as the epoch loss is): improvements, short and long
    plateaus, ties, rises, and losses on either side of the relative threshold ``best · (1 − 1e-4)``."""
    out, best = [], 10.0
    for e in range(40):
        kind = e % 8 if e < 24 or e == 32 else (1 if e % 2 else 8)  # 24-39: a long plateau, one improvement
        if kind in (0, 3):
            loss = best * 0.97                                    # clear improvement
        elif kind == 1:
            loss = best                                           # a tie
        elif kind == 2:
            loss = float(np.nextafter(np.float32(best * (1 - 1e-4)), np.float32(0)))  # just better
        elif kind == 4:
            loss = float(np.nextafter(np.float32(best * (1 - 1e-4)), np.float32(np.inf)))  # just not
        elif kind == 8:
            loss = best * (1 + 1e-6)                              # a tiny rise
        else:
            loss = best * 1.5                                     # worse
        loss = float(np.float32(loss))
        out.append(loss)
        best = min(best, loss)
    return out


# (lr, lr_patience, lr_factor, min_lr): the package's default; patience 0; factors that are not
# powers of two (the LR chain rounds in float64); a min_lr floor reached by a clamp; min_lr=0 and
# factors where PyTorch's eps=1e-8 stops the cuts (or makes them never happen).
SETTINGS = [(0.01, 5, 0.5, 1e-6), (0.01, 0, 0.5, 1e-6), (0.01, 1, 0.3, 1e-6), (0.01, 1, 0.8, 0.005),
            (1.0, 0, 0.5, 0.0), (1e-6, 0, 0.1, 0.0), (1e-5, 0, 0.999, 0.0), (0.05, 3, 0.1, 1e-4),
            (0.01, 1, 0.7, 0.0)]


def test_scripted_losses_cover_the_cases():
    losses = _scripted_losses()
    lrs = {s: _lrs_by_hand(losses, *s) for s in SETTINGS}
    assert len(set(lrs[SETTINGS[0]])) > 2                       # the default cuts on the long plateau
    assert len(set(lrs[SETTINGS[1]])) > 5                       # many cuts
    assert lrs[(0.01, 1, 0.8, 0.005)][-1] == 0.005              # reached min_lr by a clamp
    assert lrs[(1e-6, 0, 0.1, 0.0)][-1] == pytest.approx(1e-8)  # stopped by eps, above min_lr=0
    assert set(lrs[(1e-5, 0, 0.999, 0.0)]) == {1e-5}            # every cut smaller than eps


@pytest.mark.parametrize("setting", SETTINGS)
def test_optax_schedule_equals_the_rule_by_hand(setting):
    losses = _scripted_losses()
    assert _lrs(losses, *setting) == _lrs_by_hand(losses, *setting)


@pytest.mark.parametrize("setting", SETTINGS)
def test_optax_schedule_equals_real_torch(setting):
    torch = pytest.importorskip("torch")
    losses = _scripted_losses()
    expected = _lrs_torch(torch, losses, *setting)
    assert _lrs(losses, *setting) == expected  # bit for bit, float64


def test_optax_schedule_equals_real_torch_on_random_losses():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    losses = list(np.round(10 - np.cumsum(rng.choice([0, 0, 0, 0.5], 60)), 3))
    assert _lrs(losses, lr_patience=3, lr_factor=0.5, min_lr=0.01) == _lrs_torch(
        torch, losses, lr_patience=3, lr_factor=0.5, min_lr=0.01)


def test_a_float32_schedule_state_would_differ():
    """Why the schedule steps in float64: optax's state in float32 (the params' dtype, as in the
    compiled epoch) rounds ``best · (1 − 1e-4)``, so a float32 loss just below PyTorch's threshold
    counts as no improvement and the LR is cut where PyTorch keeps it."""
    torch = pytest.importorskip("torch")
    losses = [1.0, float(np.float32(1 - 1e-4))]  # 0.99989998 < 1 · 0.9999 in float64
    transform = optax.contrib.reduce_on_plateau(factor=0.5, patience=1, rtol=1e-4, atol=0.0)
    state32, lrs32 = transform.init(jnp.zeros((), jnp.float32)), []
    for loss in losses:
        _, state32 = transform.update((), state32, value=loss)
        lrs32.append(float(state32.scale))
    expected = _lrs_torch(torch, losses, lr_patience=0, lr_factor=0.5, min_lr=0.0)
    assert expected == [1.0, 1.0] and lrs32 == [1.0, 0.5]
    assert _lrs(losses, lr_patience=0, lr_factor=0.5, min_lr=0.0) == expected


def test_plateau_cuts_where_pytorch_does():
    # PyTorch ReduceLROnPlateau(factor=0.5, patience=2, threshold=1e-4), worked by hand:
    # e0 best=10; e1 best=9; e2..e4 three bad epochs -> cut after e4; e5..e7 -> cut after e7;
    # e8 improves (8 < 9·0.9999); e9..e11 -> cut after e11.
    losses = [10, 9, 9, 9, 9, 9, 9, 9, 8, 8, 8, 8]
    expected = [1, 1, 1, 1, .5, .5, .5, .25, .25, .25, .25, .125]
    assert _lrs(losses, lr_patience=2, lr_factor=0.5, min_lr=0.0) == expected


def test_plateau_relative_threshold():
    # 9.9995 is not better than 10 by PyTorch's relative threshold 1e-4: three bad epochs.
    assert _lrs([10, 9.9995, 9.9995, 9.9995], lr_patience=2, lr_factor=0.5, min_lr=0.0) == [1, 1, 1, .5]


def test_plateau_min_lr_floor_and_patience_zero():
    # patience=0: PyTorch cuts after every epoch that does not improve
    assert _lrs([5, 5, 5, 5], lr_patience=0, lr_factor=0.5, min_lr=0.3) == [1, .5, .3, .3]


def test_plateau_off_keeps_the_lr():
    assert _lrs([5, 5, 5, 5, 5], lr_patience=None) == [1.0] * 5


def test_optax_patience_is_pytorch_patience_plus_one():
    """optax cuts when its count reaches ``patience``, PyTorch when its count exceeds it."""
    losses = [5.0] * 7
    state = plateau_start(1.0)
    transform = optax.contrib.reduce_on_plateau(factor=0.5, patience=3, rtol=1e-4, atol=0.0)
    optax_state = transform.init(jnp.zeros(()))
    optax_lrs = []
    for loss in losses:
        _, optax_state = transform.update((), optax_state, value=loss)
        optax_lrs.append(float(optax_state.scale))
    assert optax_lrs == _lrs(losses, lr_patience=2, lr_factor=0.5, min_lr=0.0) == [1, 1, 1, .5, .5, .5, .25]
    assert plateau_lr(state) == 1.0


def test_a_shorter_patience_in_a_later_call_cuts_as_pytorch():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5, min_lr=0.0)
    plateau, ours, theirs = plateau_start(1.0), [], []
    for e, loss in enumerate([5.0] + [5.0] * 4 + [5.0] * 4):
        if e == 5:
            sched.patience = 1
        config = OptimizerConfig(lr=1.0, lr_patience=5 if e < 5 else 1, lr_factor=0.5, min_lr=0.0)
        sched.step(loss)
        plateau = plateau_update(plateau, loss, config)
        theirs.append(opt.param_groups[0]["lr"])
        ours.append(plateau_lr(plateau))
    assert ours == theirs and ours[5] == 0.5


def test_plateau_state_round_trips_and_old_saves_convert():
    config = OptimizerConfig(lr=0.01, lr_patience=2)
    state = plateau_start(0.01)
    for loss in (3.0, 2.0, 2.5, 2.5):
        state = plateau_update(state, loss, config)
    again = plateau_from_saved(json.loads(json.dumps(plateau_to_dict(state))))
    for a, b in zip(again, state):
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.asarray(a) == np.asarray(b)
    old = plateau_from_saved([0.005, 2.0, 2])  # an older save's [lr, best, num_bad_epochs]
    assert (plateau_lr(old), float(old.best_value), int(old.plateau_count)) == (0.005, 2.0, 2)
    assert plateau_lr(plateau_update(old, 2.0, config)) == 0.0025  # the third bad epoch cuts


def test_plateau_state_dtypes_are_float64():
    state = plateau_update(plateau_start(0.01), 1.0, OptimizerConfig())
    assert state.scale.dtype == np.float64 and state.best_value.dtype == np.float64
    assert state.plateau_count.dtype == np.int32
    assert isinstance(state, ReduceLROnPlateauState)
