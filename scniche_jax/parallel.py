"""Where the work runs: one device, or synchronous data parallelism over several.

:class:`Placement` is the one place that decides: it puts the batches and the state on the
device(s) and picks the compiled epoch and embedding to match.

Semantics: with D devices an epoch takes ``batch_num / D`` optimizer steps. Step ``s``
trains batches ``s·D … s·D + D − 1`` (the reference's batch order), one per device; each
device computes the gradient of its batch's loss (negatives and dropout from the same
per-batch key as a one-device run), the gradients are averaged over the devices
(``lax.pmean``, XLA's all-reduce) and every device applies the same Adam update, so the
parameters stay replicated. With D = 1 this is exactly :func:`train.train_epoch`.

Batches live on the devices as arrays of shape ``(steps, D, ...)`` sharded along the
second axis; parameters and optimizer state are replicated.

Several processes (hosts): call ``jax.distributed.initialize()`` in every process first and
pass ``jax.devices()`` (all global devices). Each process then holds only the batches of its
own devices (:meth:`Placement.local_batches`); :meth:`Placement.put_batches` takes either all
batches (and keeps its own) or only its own. Losses and embeddings come back whole on every
process. ``tests/test_multiprocess.py`` runs this with two processes on one machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .pipeline import GraphBatch
from .step import StepSettings, TrainState, apply_gradients, batch_gradients, embed_batches, embed_each, train_epoch

AXIS = "data"


def data_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A one-axis mesh (``'data'``) over ``devices``."""
    return Mesh(np.asarray(list(devices)), (AXIS,))


def check_devices(devices) -> Optional[list[jax.Device]]:
    """Validates ``devices`` (None, one device or a list of distinct devices) before any work.

    Returns:
      The list of devices, or None for the default device.
    """
    if devices is None:
        return None
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
    return devices


@dataclass(frozen=True)
class Placement:
    """One device or a data-parallel mesh: where batches and state live, which epoch runs.

    Build it with :meth:`of`; the rest of the package asks it instead of branching itself.
    """

    device: jax.Device
    mesh: Optional[Mesh] = None

    @classmethod
    def of(cls, devices: Optional[Sequence[jax.Device]]) -> "Placement":
        """The placement for ``devices`` (None or one device: the plain, one-device path)."""
        devices = check_devices(devices)
        if devices is None:
            return cls(jax.devices()[0])
        if len(devices) == 1:
            return cls(devices[0])
        return cls(devices[0], data_mesh(devices))

    @property
    def n_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    @property
    def multi_process(self) -> bool:
        """Whether the mesh has devices of other processes (``jax.distributed`` runs)."""
        return self.mesh is not None and not all(
            d.process_index == jax.process_index() for d in self.mesh.devices.flat)

    def local_batches(self, n_batches: int) -> np.ndarray:
        """Indices of the batches this process holds, in the order :meth:`put_batches` wants them.

        Batch ``s·D + d`` is trained on mesh device ``d`` at step ``s``; a process holds the
        batches of its own devices, step by step.
        """
        if self.mesh is None:
            return np.arange(n_batches)
        n_devices = self.n_devices
        mine = [d for d, dev in enumerate(self.mesh.devices.flat) if dev.process_index == jax.process_index()]
        return (np.arange(n_batches // n_devices)[:, None] * n_devices + np.asarray(mine)[None]).reshape(-1)

    @property
    def platform(self) -> str:
        return self.device.platform

    def put_batches(self, host_batches: GraphBatch, n_batches: Optional[int] = None) -> GraphBatch:
        """Host batches (n, ...) on the device, or sharded (n / D, D, ...) over the mesh.

        Args:
          host_batches: all ``n`` batches, or (with ``n_batches=n`` on several processes) only
            this process's, ordered as :meth:`local_batches` lists them.
          n_batches: the total number of batches when ``host_batches`` holds only this
            process's share.
        """
        if self.mesh is None:
            return jax.device_put(host_batches, self.device)
        return place_batches(host_batches, self.mesh, n_batches)

    def fetch(self, tree):
        """A tree of (replicated or single-device) arrays as host numpy arrays on this process."""
        return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                                      else np.asarray(x), tree)

    def put_state(self, tree):
        """The state on the device, or replicated on every device of the mesh."""
        if self.mesh is None:
            return jax.device_put(tree, self.device)
        return replicate(tree, self.mesh)

    def train_epoch(self, state: TrainState, batches: GraphBatch, key: jax.Array, settings: StepSettings):
        """One epoch (see :func:`step.train_epoch` and :func:`parallel_train_epoch`)."""
        if self.mesh is None:
            return train_epoch(state, batches, key, settings)
        return parallel_train_epoch(state, batches, key, settings, self.mesh)

    def embed(self, params, batches: GraphBatch, dropout_key: Optional[jax.Array], settings: StepSettings):
        """Embeddings of every batch, (n_batches, B, d) in batch order."""
        if self.mesh is None:
            return embed_batches(params, batches, dropout_key, settings)
        return parallel_embed_batches(params, batches, dropout_key, settings, self.mesh)


def place_batches(batches: GraphBatch, mesh: Mesh, n_batches: Optional[int] = None) -> GraphBatch:
    """Host batches (n, ...) → device batches (n / D, D, ...) sharded over the mesh.

    With ``n_batches`` given, ``batches`` holds only this process's batches (see
    :meth:`Placement.local_batches`); otherwise all of them, of which each process uses its own.
    """
    placement = Placement(mesh.devices.flat[0], mesh)
    n_devices = mesh.devices.size
    sharding = NamedSharding(mesh, P(None, AXIS))
    n_total = int(np.shape(batches.mik)[0]) if n_batches is None else n_batches
    if n_total % n_devices:
        raise ValueError(f"{n_total} batches do not split over {n_devices} devices")
    mine = placement.local_batches(n_total)
    n_local = mine.size // (n_total // n_devices)

    def put(x):
        x = np.asarray(x)
        local = x[mine] if n_batches is None else x
        if local.shape[0] != mine.size:
            raise ValueError(f"this process holds {local.shape[0]} batches, expected {mine.size}")
        local = local.reshape((n_total // n_devices, n_local) + x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, local, (n_total // n_devices, n_devices) + x.shape[1:])

    return jax.tree_util.tree_map(put, batches)


def replicate(tree, mesh: Mesh):
    """Copies every array of ``tree`` to all devices of ``mesh`` (host values, or arrays on one device).

    Works when the mesh spans several processes; every process must pass the same values.
    """
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


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
            # Every device gets every batch's losses: the host reads them on any process.
            return apply_gradients(s, grads), jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, AXIS), losses)

        # scan walks the step axis; each step sees its device-local (1, ...) slice.
        return jax.lax.scan(body, state, (local_batches, local_keys))

    state, losses = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(None, AXIS), P(None, AXIS)),
                                  out_specs=(P(), P()), check_vma=False)(state, batches, keys)
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
    def gathered(*a):
        return jax.lax.all_gather(per_device(*a)[:, 0], AXIS, axis=1)

    # Gathered on every device, so every process can read the whole embedding.
    z = jax.shard_map(gathered, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)(*args)
    return z.reshape((steps * n_devices,) + z.shape[2:])
