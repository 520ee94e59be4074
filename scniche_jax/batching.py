"""Splitting cells into equally sized batches exactly as the reference does."""
from __future__ import annotations

import random

import numpy as np


def reference_batch_indices(n_cells: int, batch_num: int) -> list[np.ndarray]:
    """Batch membership identical to the reference's for the same ``n_cells`` and ``batch_num``.

    The reference seeds Python's ``random`` with 123, draws ``batch_num - left`` filler
    cells with replacement, shuffles all cells and cuts them into chunks. Every batch gets
    the same size (the fusion network's width depends on it), so some cells appear twice.

    Args:
      n_cells: number of cells N.
      batch_num: number of batches.

    Returns:
      ``batch_num`` int64 arrays of cell indices, all of one length.

    Raises:
      ValueError: when ``batch_num`` is not in ``[1, n_cells]``, or when the reference's
        second splitting rule (used when ``N % batch_num >= N // batch_num``) would leave
        some cells out of every batch.
    """
    if not isinstance(batch_num, (int, np.integer)) or isinstance(batch_num, bool):
        raise ValueError(f"batch_num must be an integer, got {batch_num!r}")
    if batch_num < 1 or batch_num > n_cells:
        raise ValueError(
            f"batch_num={batch_num} is impossible for {n_cells} cells: choose 1 <= batch_num <= {n_cells}")
    rng = random.Random(123)
    size = n_cells // batch_num
    left = n_cells % batch_num
    fillers = rng.choices(range(n_cells), k=batch_num - left)
    cells = list(range(n_cells))
    rng.shuffle(cells)
    if left < size:
        chunks = [cells[i:i + size] for i in range(0, n_cells, size)]
    else:
        size2 = n_cells // (batch_num + 1)
        chunks = [cells[i * size2:(i + 1) * size2] for i in range(batch_num)]
        chunks.append(cells[batch_num * size2:])
    if left > 0:
        leftovers = chunks[-1]
        chunks = chunks[:-1]
        for i in range(left):
            chunks[i].append(leftovers[i])
        for i, cell in enumerate(fillers):
            chunks[i + left].append(cell)
    batches = [np.asarray(c, dtype=np.int64) for c in chunks]
    covered = np.zeros(n_cells, bool)
    for b in batches:
        covered[b] = True
    if not covered.all():
        raise ValueError(
            f"batch_num={batch_num} with {n_cells} cells hits the reference's second splitting rule "
            f"and would leave {int((~covered).sum())} cells out of every batch; choose a smaller "
            f"batch_num (batches of more than batch_num cells, i.e. batch_num <= {int(np.sqrt(n_cells))})")
    return batches


def first_occurrence(batches: list[np.ndarray], n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, the (batch, row) of its first occurrence in the flattened batch order."""
    flat = np.concatenate(batches)
    cells, pos = np.unique(flat, return_index=True)
    if cells.size != n_cells:
        raise ValueError("the batches do not cover every cell")
    size = batches[0].size
    return pos // size, pos % size


def cells_from_batches(per_batch: np.ndarray, batches: list[np.ndarray], n_cells: int) -> np.ndarray:
    """One row per cell from per-batch rows (n_batches, B, ...): each cell's first occurrence."""
    which, row = first_occurrence(list(batches), n_cells)
    return np.ascontiguousarray(np.asarray(per_batch)[which, row])


def fixed_size_batches(n_cells: int, batch_size: int, seed: int = 0) -> list[np.ndarray]:
    """Batches of exactly ``batch_size`` cells covering all ``n_cells`` (for embedding new data).

    Cells are shuffled and cut into chunks; the last chunk is topped up with distinct
    cells drawn from the others, so every batch fits the fusion network's width.

    Raises:
      ValueError: when ``n_cells < batch_size``.
    """
    if n_cells < batch_size:
        raise ValueError(f"{n_cells} cells are fewer than the model's graph size of {batch_size} cells; "
                         f"embed at least {batch_size} cells at once (e.g. concatenate slices).")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_cells)
    batches = [order[i:i + batch_size] for i in range(0, n_cells, batch_size)]
    last = batches[-1]
    if last.size < batch_size:
        others = np.setdiff1d(np.arange(n_cells), last)
        batches[-1] = np.concatenate([last, rng.choice(others, batch_size - last.size, replace=False)])
    return batches


# Cells per batch that ``batch_num="auto"`` aims for: the B² decoder loss dominates a step,
# so about 1000 cells keep a CPU step near 10 ms and 5000 fill a GPU.
AUTO_BATCH_CELLS = {"cpu": 1000, "gpu": 5000}


def auto_batch_num(n_cells: int, platform: str, cells_per_batch: int | None = None,
                   n_devices: int = 1) -> int | None:
    """``batch_num`` for about ``cells_per_batch`` cells per batch (None: one full graph).

    Args:
      n_cells: number of cells.
      platform: JAX platform name (``'cpu'``, ``'gpu'``, ``'cuda'``, ``'tpu'``).
      cells_per_batch: target size; the platform's default when None.
      n_devices: data-parallel devices; the count is rounded up to a multiple of it.
    """
    target = cells_per_batch or AUTO_BATCH_CELLS["cpu" if platform == "cpu" else "gpu"]
    if n_cells <= target and n_devices == 1:
        return None
    count = max(2, int(round(n_cells / target)))
    count = -(-count // n_devices) * n_devices
    while not splits_cleanly(n_cells, count) and count + n_devices <= n_cells:
        count += n_devices  # the reference's second splitting rule would drop cells
    return count


def batch_size_of(n_cells: int, batch_num: int) -> int:
    """Cells per batch of :func:`reference_batch_indices` (its first splitting rule)."""
    return -(-n_cells // batch_num)


def splits_cleanly(n_cells: int, batch_num: int) -> bool:
    """Whether ``batch_num`` avoids the reference's second splitting rule (every cell kept)."""
    return n_cells % batch_num < n_cells // batch_num
