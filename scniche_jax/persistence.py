"""Saving and loading: the folder layout, training checkpoints and the one atomic-write helper.

A model folder (``Model.save``) holds

- ``config.json``: the configuration (``format``, then one entry per config class);
- ``model.pt``: the reference's torch layout, complete (it alone carries the frozen fusion
  network, the largest array: n × n/2 twice); ``Model.save(..., torch_format=False)`` skips
  it (``config.json`` then says ``"torch_file": false``) and the fusion network is rebuilt
  from the seed on load;
- ``state/``: an Orbax checkpoint of everything else, bit-exact (parameters, Adam state with
  its learning rate, the discriminator, the best-loss parameters, the probe's labels) plus
  the history and the host loop's state as JSON;
- ``adata.h5ad``: the results, when asked.

A training checkpoint folder (``fit(checkpoint_dir=...)``) holds ``config.json``,
``fusion.npz`` (the fusion network, written once) and ``steps/``, an Orbax
``CheckpointManager`` with one step per saved epoch (the newest three kept). Both load with
:func:`scniche_jax.load`; a crash at any moment leaves the previous complete save readable.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

FORMAT_VERSION = 2
CONFIG_FILE, TORCH_FILE, STATE_DIR, RESULTS_FILE = "config.json", "model.pt", "state", "adata.h5ad"
FUSION_FILE, STEPS_DIR = "fusion.npz", "steps"
_STATE, _META = "state", "meta"


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    _quiet_absl()
    return ocp


def _quiet_absl() -> None:
    """Orbax logs dozens of INFO lines per save through absl; keep them out of an INFO root logger.

    Only when nobody set a level on the ``absl`` logger: ``logging.getLogger('absl').setLevel(logging.INFO)``
    brings them back.
    """
    import logging

    absl = logging.getLogger("absl")
    if absl.level == logging.NOTSET:
        absl.setLevel(logging.WARNING)


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


# --- the atomic-write helper ------------------------------------------------------------

_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(destination: os.PathLike | str, build: Callable[[Path], None], folder: bool = False,
                     overwrite: bool = True) -> None:
    """Writes a file or a folder with ``build(tmp)`` beside ``destination``, then swaps it in.

    ``build`` receives a temporary path in the same folder and writes the file there, or
    fills it (already created) when ``folder`` is True. The swap
    is one rename (``os.replace`` for files, ``renameat2`` exchange for folders where the
    system has it), so at every moment ``destination`` is either the previous complete
    version or the new complete one; an interruption removes the partial copy.

    Args:
      destination: the file or folder.
      build: writes the new content at the path it is given.
      folder: the destination is a folder.
      overwrite: replace a non-empty existing folder (files are always replaced).
    """
    destination = Path(destination)
    is_dir = folder
    if is_dir and destination.exists() and any(destination.iterdir()) and not overwrite:
        raise ValueError(f"{str(destination)!r} already exists and is not empty; pass overwrite=True "
                         "or choose another folder.")
    for stale in destination.parent.glob(f".{destination.name}.tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = destination.parent / f".{destination.name}.tmp-{uuid.uuid4().hex[:8]}"
    if is_dir:
        tmp.mkdir()
    try:
        build(tmp)
        if not is_dir:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, destination)
        elif not destination.exists():
            tmp.rename(destination)
        elif _exchange(tmp, destination):
            shutil.rmtree(tmp)  # now the previous version
        else:  # no exchange: two renames; load() finds the previous version if we die in between
            old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
            destination.rename(old)
            tmp.rename(destination)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(destination.parent)


def write_json(path: os.PathLike | str, data: dict) -> None:
    """Writes ``data`` as JSON, atomically."""
    def build(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=1))

    write_atomically(path, build)


def read_json(path: Path) -> dict:
    """JSON from ``path``, or a ``ValueError`` naming a truncated or corrupted file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is truncated or corrupted: {err}") from err


def to_numpy_tree(tree):
    """Every leaf of ``tree`` as a host numpy array."""
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


# --- Orbax ------------------------------------------------------------------------------

def _save_step(directory: Path, step: int, state: dict[str, Any], meta: dict[str, Any],
               max_to_keep: Optional[int]) -> None:
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
    with ocp.CheckpointManager(Path(directory).resolve(), options=options) as manager:
        manager.save(step, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave({"format": FORMAT_VERSION, **meta})}),
            force=True)
        manager.wait_until_finished()


def latest_step(directory: Path) -> Optional[int]:
    """The newest complete step in an Orbax checkpoint directory, or None."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        return None
    ocp = _ocp()
    with ocp.CheckpointManager(directory) as manager:
        return manager.latest_step()


def _restore_step(directory: Path, step: Optional[int] = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
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


# --- the model folder -------------------------------------------------------------------

def save_model_folder(path: Path, config: dict, state: dict[str, Any], meta: dict[str, Any],
                      write_torch: Optional[Callable[[Path], None]], results=None, overwrite: bool = False) -> None:
    """Writes a model folder (see the module docstring) atomically.

    Args:
      path: the folder (checked with :func:`check_writable_dir` by the caller).
      config: the ``config.json`` content.
      state: arrays for ``state/`` (nested dicts of arrays).
      meta: JSON for ``state/`` (history, host loop state).
      write_torch: writes ``model.pt`` at the path it is given; None writes none.
      results: an AnnData written as ``adata.h5ad``, or None.
      overwrite: replace an existing non-empty folder.
    """
    def build(tmp: Path) -> None:
        _save_step(tmp / STATE_DIR, 0, to_numpy_tree(state), meta, max_to_keep=1)
        if write_torch is not None:
            write_torch(tmp / TORCH_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **config}, indent=1))
        if results is not None:
            results.write_h5ad(tmp / RESULTS_FILE)

    write_atomically(path, build, folder=True, overwrite=overwrite)


def folder_kind(path: Path) -> str:
    """``'model'``, ``'checkpoints'`` or ``'torch'`` (a folder with only ``model.pt``).

    A folder with the ``config.json`` of a saved model but without ``state/`` is incomplete and
    refused, naming the missing part.
    """
    if (path / STATE_DIR).is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"the model folder {str(path)!r} lacks {CONFIG_FILE}; the folder is incomplete: save the "
                             "model there again.")
        return "model"
    if (path / STEPS_DIR).is_dir():
        return "checkpoints"
    if (path / CONFIG_FILE).is_file() and not (path / FUSION_FILE).is_file():
        what = f"{TORCH_FILE} and {CONFIG_FILE}" if (path / TORCH_FILE).is_file() else CONFIG_FILE
        raise ValueError(f"the model folder {str(path)!r} has {what} but lacks {STATE_DIR}/ (the trained parameters, "
                         f"optimizer state and history); the folder is incomplete: save the model there again"
                         + (f", or load {str(path / TORCH_FILE)!r} on its own (the reference's file, without the "
                            "optimizer state and history)." if (path / TORCH_FILE).is_file() else "."))
    if (path / TORCH_FILE).is_file():
        return "torch"
    raise ValueError(f"{str(path)!r} holds neither a saved model (state/, model.pt) nor training checkpoints "
                     "(steps/); pass a folder written by Model.save or fit(checkpoint_dir=...).")


def read_config(path: Path) -> dict:
    """``config.json`` of a model or checkpoint folder, format-checked."""
    config = read_json(path / CONFIG_FILE)
    if config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} has format {config.get('format')!r}; this version of "
                         f"scniche-jax reads format {FORMAT_VERSION}.")
    return {k: v for k, v in config.items() if k != "format"}


def load_model_folder(path: Path) -> tuple[dict, dict[str, Any], dict[str, Any]]:
    """``(config, state, meta)`` of a model folder (the fusion network is in ``model.pt``)."""
    config = read_config(path)
    _, state, meta = _restore_step(path / STATE_DIR)
    return config, state, meta


# --- training checkpoints ---------------------------------------------------------------

def save_training_checkpoint(directory: Path, step: int, config: dict, fusion: dict[str, Any],
                             state: dict[str, Any], meta: dict[str, Any], max_to_keep: int = 3) -> None:
    """One training checkpoint: ``config.json`` and ``fusion.npz`` once, then an Orbax step."""
    directory.mkdir(exist_ok=True)
    if not (directory / CONFIG_FILE).is_file():
        write_json(directory / CONFIG_FILE, {"format": FORMAT_VERSION, **config})
    if not (directory / FUSION_FILE).is_file():
        flat = {f"{layer}/{name}": np.asarray(value) for layer, params in fusion.items()
                for name, value in params.items()}

        def build(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **flat)

        write_atomically(directory / FUSION_FILE, build)
    _save_step(directory / STEPS_DIR, step, to_numpy_tree(state), meta, max_to_keep=max_to_keep)


def has_training_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds at least one complete training checkpoint."""
    return (directory / CONFIG_FILE).is_file() and latest_step(directory / STEPS_DIR) is not None


def load_training_checkpoint(directory: Path) -> tuple[dict, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(config, fusion, state, meta)`` of the newest complete training checkpoint."""
    config = read_config(directory)
    try:
        with np.load(directory / FUSION_FILE) as f:
            flat = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(directory / FUSION_FILE)!r} is missing or corrupted ({err}).") from err
    fusion: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        layer, name = key.split("/")
        fusion.setdefault(layer, {})[name] = value
    _, state, meta = _restore_step(directory / STEPS_DIR)
    return config, fusion, state, meta
