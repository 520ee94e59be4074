"""Memory of a training run, estimated from shapes before anything is allocated.

Peak memory of one batch on its device (bytes; B cells, V views of widths D_v and E_v padded
edges, E_c consensus edges, C = mik·V MI terms, d the embedding width,
b = min(block_size, ⌈B/2⌉), c = the edge term's chunk, 2^15 edges):

    batch  = 4·Σ_v (B·D_v + 3·E_v + 2) + 4·B·C + 4·(3·E_c + 2) + 8               (its arrays, exact)
    step   = 4·(k_p·b·B + 2.2·d·Σ_v min(E_v, c) + 3.6·C·B·d + 5.2·B·Σ_v D_v)     (working memory)
    peak per batch = batch + step

with k_p = 2.6 for ``precision='bf16'`` and 2.25 for ``'fp32'``: the B² decoder loss holds
a few fp32 b×B row blocks (logits, exp, sigmoid; bf16 adds a copy); the other terms are the
edge terms of the loss (d-wide rows per edge, one chunk at a time), the discriminator's
activations over C·B pairs and the encoder inputs. The coefficients are a least-squares
fit to XLA's compiled memory analysis on XLA:CPU at 300–4,000 cells (within 12 %;
``tests/test_memory.py`` checks the formula within 20 %); GPU fusion differs in detail. A
run keeps every batch resident, so a device holds ``⌈batches / devices⌉`` batches plus one
step, the parameters and Adam state, and the frozen fusion network,
4·B² bytes (its two B×B/2 layers) plus 10·b_f·B for a block of b_f = min(block_size, B)
rows. Before graphs exist, ``E_v`` and ``E_c`` are bounded by 2·(k+1)·B.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import jax

from .batching import batch_size_of, splits_cleanly
from .config import BatchConfig, ModelConfig
from .losses import EDGE_CHUNK, loss_block

GB = 1e9
# Bytes of the JAX runtime and compiled programs, beyond the arrays counted here.
RUNTIME_BYTES = int(0.8 * GB)


@dataclass(frozen=True)
class BatchShapes:
    """The array shapes of one batch that memory depends on."""

    n_cells: int
    input_sizes: tuple[int, ...]
    edges: tuple[int, ...]
    consensus_edges: int
    mik_columns: int

    @classmethod
    def of(cls, batch) -> "BatchShapes":
        """Shapes of one (unstacked) :class:`train.GraphBatch`."""
        return cls(n_cells=int(batch.mik.shape[0]),
                   input_sizes=tuple(int(g.nodes.shape[-1]) for g in batch.views),
                   edges=tuple(int(g.senders.shape[-1]) for g in batch.views),
                   consensus_edges=int(batch.consensus.senders.shape[-1]),
                   mik_columns=int(batch.mik.shape[-1]))

    @classmethod
    def expected(cls, n_cells: int, input_sizes: Sequence[int], n_neighbors: int, mik: int) -> "BatchShapes":
        """Upper-bound shapes before the graphs are built (kNN graphs of ``n_neighbors``)."""
        edges = 2 * (n_neighbors + 1) * n_cells
        return cls(n_cells=n_cells, input_sizes=tuple(input_sizes), edges=(edges,) * len(input_sizes),
                   consensus_edges=edges, mik_columns=mik * len(input_sizes))


def batch_bytes(shapes: BatchShapes) -> int:
    """Bytes of one batch's device arrays (exact)."""
    b = shapes.n_cells
    views = sum(b * d + 3 * e + 2 for d, e in zip(shapes.input_sizes, shapes.edges))
    return 4 * (views + b * shapes.mik_columns + 3 * shapes.consensus_edges + 2) + 8


def step_bytes(shapes: BatchShapes, hidden_size: Sequence[int],
               block_size: int, precision: str) -> int:
    """Working memory of one training step (the documented formula)."""
    b = shapes.n_cells
    rows = loss_block(b, block_size)
    per_block = 2.25 if precision == "fp32" else 2.6  # 'auto' counted as bf16, the larger
    latent = hidden_size[-1]
    elements = (per_block * rows * b + 2.2 * latent * sum(min(e, EDGE_CHUNK) for e in shapes.edges)
                + 3.6 * shapes.mik_columns * b * latent + 5.2 * b * sum(shapes.input_sizes))
    return int(4 * elements)


def state_bytes(input_sizes: Sequence[int], hidden_size_v: Sequence[int], hidden_size: Sequence[int]) -> int:
    """Parameters, Adam moments and the best-loss copy (4 copies of the MGAE) plus the discriminator."""
    params = 0
    for d in input_sizes:
        widths = (d,) + tuple(hidden_size_v)
        params += sum(a * c + c for a, c in zip(widths[:-1], widths[1:])) + hidden_size_v[-1]
    widths = (hidden_size_v[-1],) + tuple(hidden_size)
    params += sum(a * c + c for a, c in zip(widths[:-1], widths[1:]))
    latent = hidden_size[-1]
    discriminator = 3 * (latent * latent + latent) + latent + 1 + latent * latent
    return 4 * (4 * params + discriminator)


def fusion_bytes(n_cells: int, block_size: int) -> int:
    """The frozen fusion network's parameters plus one row block of its forward pass."""
    half = n_cells // 2
    rows = min(block_size, n_cells)
    return 4 * (2 * n_cells * half + n_cells + half) + 10 * rows * n_cells


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of a run, per device and on the host."""

    batch_num: Optional[int]
    batch_size: int
    n_devices: int
    per_batch: int
    step: int
    fusion: int
    state: int
    device: int
    host: int

    def describe(self) -> str:
        return (f"{_gb(self.device)} per device (graphs {_gb(self.per_batch * self._batches_per_device)}, "
                f"step {_gb(self.step)}, fusion network {_gb(self.fusion)})")

    @property
    def _batches_per_device(self) -> int:
        return -(-(self.batch_num or 1) // self.n_devices)


def estimate(n_cells: int, batch_num: Optional[int], input_sizes: Sequence[int], model: ModelConfig,
             batching: BatchConfig, shapes: Optional[BatchShapes] = None) -> MemoryEstimate:
    """Peak memory of training ``n_cells`` cells in ``batch_num`` batches (None: the full graph).

    Args:
      n_cells: cells to train on.
      batch_num: resolved batch count (an integer or None).
      input_sizes: width of each view.
      model, batching: the run's configuration (widths, kNN, precision, block size, devices).
      shapes: the real shapes of a batch when its graphs exist; upper bounds otherwise.

    Returns:
      The estimate; ``device`` is per device, ``host`` counts the host copies made while the
      graphs are built (features, per-batch graphs and the stacked batches).
    """
    batch_size = n_cells if batch_num is None else batch_size_of(n_cells, batch_num)
    shapes = shapes or BatchShapes.expected(batch_size, input_sizes, model.n_neighbors, model.mik)
    n_batches = batch_num or 1
    n_devices = batching.n_devices
    per_batch = batch_bytes(shapes)
    step = step_bytes(shapes, model.hidden_size, batching.block_size, batching.precision)
    fusion = fusion_bytes(batch_size, batching.block_size)
    state = state_bytes(input_sizes, model.hidden_size_v, model.hidden_size)
    device = -(-n_batches // n_devices) * per_batch + step + fusion + state
    features = 4 * n_cells * sum(input_sizes)
    host = features + 2 * n_batches * per_batch + fusion
    return MemoryEstimate(batch_num, batch_size, n_devices, per_batch, step, fusion, state, device, host)


def available_bytes(device: Optional[jax.Device] = None) -> int:
    """Free memory of ``device`` (its allocator's limit on GPUs/TPUs; free RAM on CPUs)."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return host_available_bytes()


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (free pages where that file is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB" if n < 10 * GB else f"{n / GB:.0f} GB"


def _needed(e: MemoryEstimate, platform: str) -> int:
    # On a CPU the device arrays and the host copies share one RAM.
    return e.device + RUNTIME_BYTES + (e.host if platform == "cpu" else 0)


def check_memory(n_cells: int, batch_num: Optional[int], input_sizes: Sequence[int], model: ModelConfig,
                 batching: BatchConfig, device: jax.Device) -> MemoryEstimate:
    """Raises a ``ValueError`` naming a ``batch_num`` that fits when this run would not.

    Args:
      n_cells, batch_num, input_sizes, model, batching: as for :func:`estimate`.
      device: the (first) training device; its free memory is the limit unless
        ``batching.memory_limit`` sets one.

    Returns:
      The estimate of the requested configuration when it fits.
    """
    platform = device.platform
    available = int(batching.memory_limit if batching.memory_limit is not None
                    else 0.9 * available_bytes(device))
    n_devices = batching.n_devices
    wanted = estimate(n_cells, batch_num, input_sizes, model, batching)
    if _needed(wanted, platform) <= available:
        return wanted
    smallest = model.n_neighbors + 1
    most = (n_cells // smallest) // n_devices * n_devices

    def fits(count: int) -> bool:
        return _needed(estimate(n_cells, count, input_sizes, model, batching), platform) <= available

    start = max((batch_num or 1) + 1, n_devices)
    start = -(-start // n_devices) * n_devices
    what = "as one graph (batch_num=None)" if batch_num is None else f"in batch_num={batch_num} batches"
    head = (f"training {n_cells:,} cells {what} needs about {_gb(_needed(wanted, platform))} on {platform} "
            f"({wanted.describe()}) but about {_gb(available)} is free")
    if most < start or not fits(most):
        least = estimate(n_cells, max(most, n_devices), input_sizes, model, batching)
        raise ValueError(f"{head}, and no batch_num fits (the smallest batches still need about "
                         f"{_gb(_needed(least, platform))}). Use more devices, a smaller n_neighbors, or fewer "
                         "cells (e.g. one slice at a time).")
    low, high = start, most  # fits(high); binary search over multiples of n_devices
    if fits(low):
        high = low
    while high - low > n_devices:
        mid = (low + high) // 2 // n_devices * n_devices
        if mid <= low:
            break
        if fits(mid):
            high = mid
        else:
            low = mid
    while not splits_cleanly(n_cells, high) and high + n_devices <= most:
        high += n_devices
    good = estimate(n_cells, high, input_sizes, model, batching)
    raise ValueError(f"{head}. batch_num={high} fits (about {_gb(_needed(good, platform))}, batches of "
                     f"{good.batch_size:,} cells): pass batch_num={high}, or memory_limit= to override the "
                     "check.")


__all__ = ["BatchShapes", "batch_bytes", "step_bytes", "state_bytes", "fusion_bytes", "MemoryEstimate",
           "estimate", "available_bytes", "check_memory"]
