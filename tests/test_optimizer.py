"""The optimizer: PyTorch-order Adam (against the update written out by hand and against real
torch), the learning rate held in the optax state, and the ReduceLROnPlateau schedule."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scniche_jax.config import OptimizerConfig
from scniche_jax.optimizer import Plateau, learning_rate, make_optimizer, plateau_update, torch_adam, with_learning_rate

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


def _lrs(losses, **kw):
    config = OptimizerConfig(lr=1.0, **kw)
    plateau, out = Plateau(1.0), []
    for loss in losses:
        plateau = plateau_update(plateau, loss, config)
        out.append(plateau.lr)
    return out


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
    assert _lrs([5, 5, 5, 5], lr_patience=0, lr_factor=0.5, min_lr=0.3) == pytest.approx([1, .5, .3, .3])


def test_plateau_off_keeps_the_lr():
    assert _lrs([5, 5, 5, 5, 5], lr_patience=None) == [1.0] * 5


def test_plateau_matches_real_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    losses = list(np.round(10 - np.cumsum(rng.choice([0, 0, 0, 0.5], 60)), 3))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3, min_lr=0.01)
    expected = []
    for loss in losses:
        sched.step(loss)
        expected.append(opt.param_groups[0]["lr"])
    assert _lrs(losses, lr_patience=3, lr_factor=0.5, min_lr=0.01) == pytest.approx(expected, rel=0, abs=0)
