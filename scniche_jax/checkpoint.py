"""Saving and loading: Orbax checkpoints, the model folder, and atomic writes.

A model folder holds ``checkpoint/`` (Orbax: parameters, optimizer state and the frozen
networks, bit-exact), ``model.pt`` (the reference's torch layout, written without torch),
``config.json`` and, when asked, ``adata.h5ad`` with the results. Training checkpoints
(``fit(checkpoint_dir=...)``) are an Orbax ``CheckpointManager`` directory, one step per
saved epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np

FORMAT_VERSION = 1
_STATE, _META = "state", "meta"


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    return ocp


def check_writable_dir(path: os.PathLike | str, what: str) -> Path:
    """An absolute path whose parent exists and is writable, or a clear ``ValueError``."""
    path = Path(path).expanduser().resolve()
    parent = path if path.is_dir() else path.parent
    if not parent.exists():
        raise ValueError(f"{what} {str(path)!r}: its parent folder {str(parent)!r} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r} is not writable; choose a folder you can write to.")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} exists and is a file, not a folder; choose another path.")
    return path


def to_numpy_tree(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], meta: dict[str, Any],
                    max_to_keep: Optional[int] = 3) -> None:
    """Saves one step of ``state`` (a pytree of arrays) and ``meta`` (JSON) with Orbax; waits."""
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
    with ocp.CheckpointManager(Path(directory).resolve(), options=options) as manager:
        manager.save(step, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave({"format": FORMAT_VERSION, **meta})}),
            force=True)
        manager.wait_until_finished()


def latest_step(directory: Path) -> Optional[int]:
    """The newest complete step in a checkpoint directory, or None."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        return None
    ocp = _ocp()
    with ocp.CheckpointManager(directory) as manager:
        return manager.latest_step()


def restore_checkpoint(directory: Path, step: Optional[int] = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(step, state, meta)`` of a checkpoint (the newest when ``step`` is None).

    Raises:
      ValueError: no checkpoint, or a truncated/corrupted one (the message names the folder).
    """
    directory = Path(directory).resolve()
    ocp = _ocp()
    if latest_step(directory) is None:
        raise ValueError(f"no checkpoint found in {str(directory)!r}")
    try:
        with ocp.CheckpointManager(directory) as manager:
            step = manager.latest_step() if step is None else step
            restored = manager.restore(step, args=ocp.args.Composite(**{
                _STATE: ocp.args.StandardRestore(), _META: ocp.args.JsonRestore()}))
    except Exception as err:  # Orbax raises many types for damaged files
        raise ValueError(f"the checkpoint in {str(directory)!r} is truncated or corrupted and cannot be "
                         f"restored ({type(err).__name__}: {err})") from err
    meta = restored[_META]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"the checkpoint in {str(directory)!r} has an unknown format {meta!r}")
    return step, restored[_STATE], meta


def replace_dir_atomically(build, destination: Path, overwrite: bool) -> None:
    """Builds a folder with ``build(tmp)`` beside ``destination``, then swaps it in.

    An interruption leaves the previous ``destination`` intact and removes the partial
    folder; nothing half-written ever sits at ``destination``.
    """
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise ValueError(f"{str(destination)!r} already exists and is not empty; pass overwrite=True "
                         "or choose another folder.")
    tag = uuid.uuid4().hex[:8]
    tmp = destination.parent / f".{destination.name}.tmp-{tag}"
    old = destination.parent / f".{destination.name}.old-{tag}"
    tmp.mkdir()
    try:
        build(tmp)
        if destination.exists():
            destination.rename(old)
        tmp.rename(destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not destination.exists():
            old.rename(destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: Path) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is truncated or corrupted: {err}") from err
