"""The optimizer: Adam in PyTorch's operation order, with the learning rate as a hyperparameter
of the optax chain, and the LR plateau rule that sets it between epochs.

PyTorch computes ``1 − βᵗ`` in float64 on the host; ``optax.adam`` does it in float32, where
``1 − 0.999¹`` loses four digits. Here ``1 − βᵗ = −expm1(t · log β)`` keeps fp32 relative
accuracy, so near-zero gradients (which Adam amplifies) track the reference.

The learning rate lives in the optimizer state (``optax.inject_hyperparams``), as it lives in
PyTorch's parameter groups. The plateau schedule is ``optax.contrib.reduce_on_plateau`` stepped
once per epoch with the epoch's total loss (:func:`plateau_update`), as PyTorch steps
``ReduceLROnPlateau``; its ``scale`` is the learning rate of the next epoch, which
:func:`with_learning_rate` writes into the Adam state.

Why at the epoch boundary and in float64: a per-step ``value`` with ``accumulation_size`` equal
to the batches of an epoch averages the batch losses and applies the new scale to the epoch's
last step, one step before PyTorch does; and a float32 state (the compiled epoch's dtype)
rounds ``best · (1 − 1e-4)`` and the cut LRs differently from PyTorch's float64 Python scalars.
Stepped on the host in float64, the schedule gives PyTorch's LR sequence bit for bit.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import ReduceLROnPlateauState

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


def plateau_start(lr: float) -> ReduceLROnPlateauState:
    """The schedule's state before the first epoch, at learning rate ``lr``.

    The state is ``optax.contrib.reduce_on_plateau``'s, held on the host in float64. Its
    ``scale`` multiplies the updates of a unit-LR Adam; starting it at ``lr`` makes it the
    learning rate itself, cut in place as PyTorch cuts ``param_group['lr']``.
    """
    return ReduceLROnPlateauState(scale=np.float64(lr), best_value=np.float64(math.inf),
                                  plateau_count=np.int32(0), cooldown_count=np.int32(0), count=np.int32(0),
                                  avg_value=np.float64(0.0))


def plateau_lr(plateau: ReduceLROnPlateauState) -> float:
    """The learning rate of the next epoch held in a schedule state."""
    return float(plateau.scale)


def plateau_floor(lr: float, factor: float, min_lr: float, max_cuts: Optional[int] = None) -> float:
    """The LR at which PyTorch's ``ReduceLROnPlateau`` stops cutting, starting from ``lr``.

    PyTorch sets ``max(lr · factor, min_lr)`` only when that lowers the LR by more than
    ``eps=1e-8``; the last LR of that chain is the schedule's ``min_scale``. Only the first
    ``max_cuts`` cuts are followed (None: all); if the chain goes on, ``min_lr`` is returned,
    which none of those cuts reaches.
    """
    cuts = 0
    while max_cuts is None or cuts < max_cuts:
        new_lr = max(lr * factor, min_lr)
        if not lr - new_lr > PLATEAU_EPS:
            return lr
        lr, cuts = new_lr, cuts + 1
    return min_lr


def _plateau_step(plateau, value, factor, patience, min_scale):
    transform = optax.contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=PLATEAU_THRESHOLD,
                                                atol=0.0, cooldown=0, accumulation_size=1, min_scale=min_scale)
    return transform.update((), plateau, value=value)[1]


_plateau_step_jit = jax.jit(_plateau_step, static_argnames=("factor",))


def plateau_update(plateau: ReduceLROnPlateauState, epoch_loss: float, config: OptimizerConfig,
                   min_scale: Optional[float] = None) -> ReduceLROnPlateauState:
    """One epoch of PyTorch's ``ReduceLROnPlateau(mode='min', threshold=1e-4, cooldown=0)``.

    ``optax.contrib.reduce_on_plateau`` (``patience=lr_patience + 1``: optax cuts when its count
    of epochs without improvement reaches ``patience``, PyTorch when it exceeds it;
    ``rtol=1e-4``, ``atol=0``, ``accumulation_size=1``) stepped once with the epoch's loss, in
    float64. An epoch improves when ``loss < best · (1 − 1e-4)``; once more than ``lr_patience``
    epochs in a row did not, the LR becomes ``max(lr · lr_factor, min_lr)``, unless that changes
    it by at most 1e-8 (PyTorch's ``eps``, here ``min_scale``, :func:`plateau_floor`). With
    ``config.lr_patience=None`` the LR never changes.

    Args:
      plateau: the state after the previous epoch (:func:`plateau_start`).
      epoch_loss: this epoch's loss.
      config: the schedule's settings.
      min_scale: :func:`plateau_floor` of the current LR, if already computed (it only changes
        with the settings).

    Returns:
      The new state; :func:`plateau_lr` of it is the learning rate of the next epoch.
    """
    if config.lr_patience is None:
        return plateau
    if min_scale is None:
        min_scale = plateau_floor(plateau_lr(plateau), config.lr_factor, config.min_lr)
    # A count carried from a call with a longer patience: PyTorch cuts at the next bad epoch.
    count = np.int32(min(int(plateau.plateau_count), config.lr_patience))
    with jax.enable_x64(True):
        new = _plateau_step_jit(plateau._replace(plateau_count=count), np.float64(epoch_loss),
                                factor=float(config.lr_factor), patience=np.int32(config.lr_patience + 1),
                                min_scale=np.float64(min_scale))
        return ReduceLROnPlateauState(*(np.asarray(x) for x in new))


def plateau_to_dict(plateau: ReduceLROnPlateauState) -> dict[str, Any]:
    """The schedule state as JSON-ready numbers (:func:`plateau_from_saved` reads it back)."""
    return {name: (int(x) if np.issubdtype(np.asarray(x).dtype, np.integer) else float(x))
            for name, x in plateau._asdict().items()}


def plateau_from_saved(saved) -> ReduceLROnPlateauState:
    """The schedule state of :func:`plateau_to_dict`'s output, or of an older save's
    ``[lr, best, num_bad_epochs]`` list (PyTorch's fields, converted)."""
    if isinstance(saved, dict):
        return ReduceLROnPlateauState(
            scale=np.float64(saved["scale"]), best_value=np.float64(saved["best_value"]),
            plateau_count=np.int32(saved["plateau_count"]), cooldown_count=np.int32(saved["cooldown_count"]),
            count=np.int32(saved["count"]), avg_value=np.float64(saved["avg_value"]))
    lr, best, bad = saved
    return plateau_start(float(lr))._replace(best_value=np.float64(best), plateau_count=np.int32(bad))
