"""Adam with PyTorch's operation order and accurate bias corrections, as an optax transform.

PyTorch computes ``1 − βᵗ`` in float64 on the host; ``optax.adam`` does it in float32, where
``1 − 0.999¹`` loses four digits. Here ``1 − βᵗ = −expm1(t · log β)`` keeps fp32 relative
accuracy, so near-zero gradients (which Adam amplifies) track the reference.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class TorchAdamState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def torch_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8) -> optax.GradientTransformation:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) as a pure optax transformation.

    Args:
      learning_rate: step size.
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
