"""The optimizer: Adam in PyTorch's operation order, with the learning rate as a hyperparameter
of the optax chain, and the LR plateau rule that sets it between epochs.

PyTorch computes ``1 − βᵗ`` in float64 on the host; ``optax.adam`` does it in float32, where
``1 − 0.999¹`` loses four digits. Here ``1 − βᵗ = −expm1(t · log β)`` keeps fp32 relative
accuracy, so near-zero gradients (which Adam amplifies) track the reference.

The learning rate lives in the optimizer state (``optax.inject_hyperparams``), as it lives in
PyTorch's parameter groups; :func:`plateau_update` is PyTorch's ``ReduceLROnPlateau`` on the
epoch loss, a pure host function whose result :func:`with_learning_rate` writes into the state.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .config import OptimizerConfig

# PyTorch ReduceLROnPlateau's default relative threshold ('rel' mode, mode='min') and the
# smallest LR change it applies.
PLATEAU_THRESHOLD = 1e-4
PLATEAU_EPS = 1e-8


class TorchAdamState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def torch_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8) -> optax.GradientTransformation:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) as a pure optax transformation.

    Args:
      learning_rate: step size (a number or a traced scalar).
      b1, b2: moment decay rates.
      eps: added to the bias-corrected root of the second moment.

    Returns:
      An ``optax.GradientTransformation`` whose updates are added to the parameters.
    """
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return TorchAdamState(jnp.zeros((), jnp.int32), zeros, jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree_util.tree_map(lambda m, g: m + (1.0 - b1) * (g - m), state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, grads)
        bias1 = -jnp.expm1(t * jnp.float32(log_b1))
        bias2 = -jnp.expm1(t * jnp.float32(log_b2))
        step_size = learning_rate / bias1
        root_bias2 = jnp.sqrt(bias2)
        updates = jax.tree_util.tree_map(
            lambda m, v: -step_size * m / (jnp.sqrt(v) / root_bias2 + eps), mu, nu)
        return updates, TorchAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(lr: float) -> optax.GradientTransformation:
    """PyTorch-order Adam whose learning rate sits in its state (``inject_hyperparams``).

    Args:
      lr: the initial learning rate.
    """
    return optax.inject_hyperparams(torch_adam, static_args=("b1", "b2", "eps"))(learning_rate=jnp.float32(lr))


def learning_rate(opt_state) -> float:
    """The learning rate held in a :func:`make_optimizer` state."""
    return float(opt_state.hyperparams["learning_rate"])


def with_learning_rate(opt_state, lr: float):
    """The state with its learning rate replaced (the rest untouched)."""
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return opt_state._replace(hyperparams=hyper)


class Plateau(NamedTuple):
    """PyTorch ``ReduceLROnPlateau`` state: the LR, the best loss, epochs since it improved."""

    lr: float
    best: float = math.inf
    num_bad_epochs: int = 0


def plateau_update(plateau: Plateau, epoch_loss: float, config: OptimizerConfig) -> Plateau:
    """One epoch of PyTorch's ``ReduceLROnPlateau(mode='min', threshold=1e-4, cooldown=0)``.

    An epoch improves when ``loss < best · (1 − 1e-4)``; once more than ``lr_patience`` epochs
    in a row did not, the LR becomes ``max(lr · lr_factor, min_lr)``. With
    ``config.lr_patience=None`` the LR never changes.

    Args:
      plateau: the state after the previous epoch.
      epoch_loss: this epoch's loss.
      config: the schedule's settings.

    Returns:
      The new state; its ``lr`` is the learning rate of the next epoch.
    """
    if config.lr_patience is None:
        return plateau
    if epoch_loss < plateau.best * (1.0 - PLATEAU_THRESHOLD):
        return Plateau(plateau.lr, float(epoch_loss), 0)
    bad = plateau.num_bad_epochs + 1
    if bad > config.lr_patience:
        new_lr = max(plateau.lr * config.lr_factor, config.min_lr)
        lr = new_lr if plateau.lr - new_lr > PLATEAU_EPS else plateau.lr
        return Plateau(lr, plateau.best, 0)
    return Plateau(plateau.lr, plateau.best, bad)
