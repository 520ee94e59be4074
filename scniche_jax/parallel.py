"""Synchronous data parallelism over several devices with ``jax.sharding``.

Semantics: with D devices an epoch takes ``batch_num / D`` optimizer steps. Step ``s``
trains batches ``s·D … s·D + D − 1`` (the reference's batch order), one per device; each
device computes the gradient of its batch's loss (negatives and dropout from the same
per-batch key as a one-device run), the gradients are averaged over the devices
(``lax.pmean``, XLA's all-reduce) and every device applies the same Adam update, so the
parameters stay replicated. With D = 1 this is exactly :func:`train.train_epoch`.

Batches live on the devices as arrays of shape ``(steps, D, ...)`` sharded along the
second axis; parameters and optimizer state are replicated. On several hosts, call
``jax.distributed.initialize()`` on every host first and pass ``jax.devices()`` (all
global devices); nothing else changes.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .train import GraphBatch, StepSettings, TrainState, apply_gradients, batch_gradients, embed_each

AXIS = "data"


def data_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A one-axis mesh (``'data'``) over ``devices``."""
    return Mesh(np.asarray(list(devices)), (AXIS,))


def check_devices(devices, batch_num) -> list[jax.Device]:
    """Validates ``fit``'s ``devices`` against ``batch_num`` (before any work).

    Raises:
      ValueError: for an empty or non-device list, repeated devices, data parallelism on the
        full graph, or a ``batch_num`` that is not a multiple of the device count.
    """
    if isinstance(devices, jax.Device):
        devices = [devices]
    try:
        devices = list(devices)
    except TypeError:
        raise ValueError(f"devices must be a list of jax devices (e.g. jax.devices()), got {devices!r}.") from None
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty list of jax devices (e.g. jax.devices()), got {devices!r}.")
    if len(set(devices)) != len(devices):
        raise ValueError("devices lists the same device more than once.")
    n = len(devices)
    if n > 1 and not (isinstance(batch_num, str) and batch_num == "auto"):
        if batch_num is None:
            raise ValueError(f"training on {n} devices splits the batches across them: set batch_num to a "
                             f"multiple of {n} (e.g. batch_num={n}) or batch_num='auto'.")
        if isinstance(batch_num, (int, np.integer)) and not isinstance(batch_num, bool) and batch_num % n:
            lower, upper = (batch_num // n) * n, (batch_num // n + 1) * n
            options = f"batch_num={upper}" if lower == 0 else f"batch_num={lower} or {upper}"
            raise ValueError(f"batch_num={batch_num} is not a multiple of the {n} devices (each step trains one "
                             f"batch per device); use {options}.")
    return devices


def place_batches(batches: GraphBatch, mesh: Mesh) -> GraphBatch:
    """Host batches (n, ...) → device batches (n / D, D, ...) sharded over the mesh."""
    n_devices = mesh.devices.size
    sharding = NamedSharding(mesh, P(None, AXIS))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.reshape(x, (-1, n_devices) + np.shape(x)[1:]), sharding), batches)


def replicate(tree, mesh: Mesh):
    """Copies every array of ``tree`` to all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _local(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


@partial(jax.jit, static_argnames=("settings", "mesh"))
def parallel_train_epoch(state: TrainState, batches: GraphBatch, key: jax.Array, settings: StepSettings,
                         mesh: Mesh):
    """One data-parallel epoch (see the module docstring) as one compiled program.

    Args:
      state: replicated training state.
      batches: device batches from :func:`place_batches`, shape (steps, D, ...).
      key: the epoch's key; batch ``i`` uses ``split(key, n_batches)[i]`` as in one-device runs.
      settings: static step settings.
      mesh: the device mesh.

    Returns:
      ``(state, losses)`` with loss fields of shape (n_batches,) in batch order.
    """
    steps, n_devices = batches.mik.shape[:2]
    keys = jax.random.split(key, steps * n_devices).reshape(steps, n_devices)

    def per_device(state, local_batches, local_keys):
        def body(s, inputs):
            batch, k = _local(inputs)
            grads, losses = batch_gradients(s, batch, k, settings)
            grads = jax.lax.pmean(grads, AXIS)
            return apply_gradients(s, grads, settings), jax.tree_util.tree_map(lambda x: x[None], losses)

        # scan walks the step axis; each step sees its device-local (1, ...) slice.
        return jax.lax.scan(body, state, (local_batches, local_keys))

    state, losses = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(None, AXIS), P(None, AXIS)),
                                  out_specs=(P(), P(None, AXIS)), check_vma=False)(state, batches, keys)
    return state, jax.tree_util.tree_map(lambda x: x.reshape(-1), losses)


@partial(jax.jit, static_argnames=("settings", "mesh"))
def parallel_embed_batches(params, batches: GraphBatch, dropout_key: jax.Array | None, settings: StepSettings,
                           mesh: Mesh) -> jax.Array:
    """Embeddings of all device batches, (n_batches, B, d) in batch order."""
    steps, n_devices = batches.mik.shape[:2]
    deterministic = dropout_key is None or settings.dropout == 0.0

    def per_device(params, local_batches, *local_keys):
        flat = jax.tree_util.tree_map(lambda x: x[:, 0], local_batches)
        keys = local_keys[0][:, 0] if local_keys else None
        return embed_each(params, flat, keys, settings)[:, None]

    args = (params, batches)
    specs = (P(), P(None, AXIS))
    if not deterministic:
        args += (jax.random.split(dropout_key, steps * n_devices).reshape(steps, n_devices),)
        specs += (P(None, AXIS),)
    z = jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P(None, AXIS), check_vma=False)(*args)
    return z.reshape((steps * n_devices,) + z.shape[2:])
