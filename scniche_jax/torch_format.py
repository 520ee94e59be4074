"""Conversion between our parameter trees and the reference's torch state-dict layout.

The reference's MGAE state dict holds the view encoders (``layers_per_view.{v}.{j}``), the
shared encoder (``layer_m.{j}``), the fusion weights (``featfusion.weights.{v}``) and the
GFN (``gfn.gfn.0`` / ``gfn.gfn.2``); the Discriminator's holds ``discriminator.{0,2,4,6}``.
GraphConv weights are (in, out) in both; ``nn.Linear`` weights are (out, in), Flax
kernels (in, out).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Union

import jax
import numpy as np

from .persistence import write_atomically

Params = dict[str, Any]
_DISC_LAYERS = (0, 2, 4, 6)


def mgae_params_to_state_dict(params: Mapping, gfn_params: Mapping, n_views: int,
                              n_layers_v: int, n_layers: int) -> dict[str, np.ndarray]:
    """The reference MGAE state dict (float32 numpy arrays, torch key names and layouts)."""
    out: dict[str, np.ndarray] = {}
    for v in range(n_views):
        for j in range(n_layers_v):
            layer = params[f"view{v}_layer{j}"]
            out[f"layers_per_view.{v}.{j}.weight"] = np.asarray(layer["kernel"], np.float32)
            out[f"layers_per_view.{v}.{j}.bias"] = np.asarray(layer["bias"], np.float32)
    for j in range(n_layers):
        layer = params[f"shared_layer{j}"]
        out[f"layer_m.{j}.weight"] = np.asarray(layer["kernel"], np.float32)
        out[f"layer_m.{j}.bias"] = np.asarray(layer["bias"], np.float32)
    for v in range(n_views):
        out[f"featfusion.weights.{v}"] = np.asarray(params["feature_fusion"][f"weight_{v}"], np.float32)
    for torch_idx, name in ((0, "hidden"), (2, "output")):
        out[f"gfn.gfn.{torch_idx}.weight"] = np.ascontiguousarray(np.asarray(gfn_params[name]["kernel"], np.float32).T)
        out[f"gfn.gfn.{torch_idx}.bias"] = np.asarray(gfn_params[name]["bias"], np.float32)
    return out


def mgae_params_from_state_dict(state: Mapping[str, Any], n_views: int, n_layers_v: int,
                                n_layers: int) -> tuple[Params, Params]:
    """Inverse of :func:`mgae_params_to_state_dict`: ``(trainable params, gfn params)``."""
    def arr(key):
        if key not in state:
            raise KeyError(f"state dict has no entry {key!r}")
        return np.asarray(state[key], np.float32)

    params: Params = {}
    for v in range(n_views):
        for j in range(n_layers_v):
            params[f"view{v}_layer{j}"] = {"kernel": arr(f"layers_per_view.{v}.{j}.weight"),
                                           "bias": arr(f"layers_per_view.{v}.{j}.bias")}
    params["feature_fusion"] = {f"weight_{v}": arr(f"featfusion.weights.{v}") for v in range(n_views)}
    for j in range(n_layers):
        params[f"shared_layer{j}"] = {"kernel": arr(f"layer_m.{j}.weight"), "bias": arr(f"layer_m.{j}.bias")}
    gfn = {name: {"kernel": np.ascontiguousarray(arr(f"gfn.gfn.{i}.weight").T), "bias": arr(f"gfn.gfn.{i}.bias")}
           for i, name in ((0, "hidden"), (2, "output"))}
    return params, gfn


def discriminator_params_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """The reference Discriminator state dict."""
    out = {}
    for j, torch_idx in enumerate(_DISC_LAYERS):
        out[f"discriminator.{torch_idx}.weight"] = np.ascontiguousarray(np.asarray(params[f"layer{j}"]["kernel"], np.float32).T)
        out[f"discriminator.{torch_idx}.bias"] = np.asarray(params[f"layer{j}"]["bias"], np.float32)
    return out


def discriminator_params_from_state_dict(state: Mapping[str, Any]) -> Params:
    """Inverse of :func:`discriminator_params_to_state_dict`."""
    return {f"layer{j}": {"kernel": np.ascontiguousarray(np.asarray(state[f"discriminator.{i}.weight"], np.float32).T),
                          "bias": np.asarray(state[f"discriminator.{i}.bias"], np.float32)}
            for j, i in enumerate(_DISC_LAYERS)}


# --- torch's file format, read and written without torch --------------------------------
#
# ``torch.save`` writes an uncompressed zip: ``<name>/data.pkl`` (a protocol-2 pickle in
# which every tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
# requires_grad, hooks)`` and every storage a persistent id ``('storage', torch.FloatStorage,
# key, 'cpu', numel)``), the raw little-endian bytes of each storage in ``<name>/data/<key>``
# (aligned to 64 bytes so torch can mmap them), ``<name>/byteorder`` and ``<name>/version``.

_STORAGE_OF_DTYPE = {
    np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage", np.dtype(np.bool_): "BoolStorage",
}
_DTYPE_OF_STORAGE = {name: dtype for dtype, name in _STORAGE_OF_DTYPE.items()}
_ALIGN = 64


class UnsafeTorchFileError(pickle.UnpicklingError):
    """A ``model.pt`` asked to run something other than tensor and container rebuilding."""


class _Pickle2Writer:
    """Emits the protocol-2 opcodes of plain containers, numbers, strings and tensors."""

    def __init__(self):
        self.out = io.BytesIO()
        self.storages: list[np.ndarray] = []

    def emit(self, obj) -> bytes:
        self.out.write(b"\x80\x02")
        self._obj(obj)
        self.out.write(b".")
        return self.out.getvalue()

    def _str(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.out.write(b"X" + struct.pack("<I", len(raw)) + raw)

    def _global(self, module: str, name: str) -> None:
        self.out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def _int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out.write(b"K" + struct.pack("<B", value))
        elif -(2**31) <= value < 2**31:
            self.out.write(b"J" + struct.pack("<i", value))
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out.write(b"\x8a" + struct.pack("<B", len(raw)) + raw)

    def _tuple(self, items) -> None:
        self.out.write(b"(")
        for item in items:
            self._obj(item)
        self.out.write(b"t")

    def _tensor(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if array.dtype not in _STORAGE_OF_DTYPE:
            raise TypeError(f"cannot write arrays of dtype {array.dtype} in torch format")
        key = str(len(self.storages))
        self.storages.append(array)
        strides = tuple(int(np.prod(array.shape[i + 1:], dtype=np.int64)) for i in range(array.ndim))
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out.write(b"(")
        self.out.write(b"(")
        self._str("storage")
        self._global("torch", _STORAGE_OF_DTYPE[array.dtype])
        self._str(key)
        self._str("cpu")
        self._int(int(array.size))
        self.out.write(b"tQ")  # TUPLE, BINPERSID
        self._int(0)
        self._tuple(array.shape)
        self._tuple(strides)
        self.out.write(b"\x89")  # False: requires_grad
        self._global("collections", "OrderedDict")
        self.out.write(b")R")
        self.out.write(b"tR")

    def _obj(self, obj) -> None:
        if obj is None:
            self.out.write(b"N")
        elif obj is True or obj is False:
            self.out.write(b"\x88" if obj else b"\x89")
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.out.write(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, (np.ndarray, jax.Array)):
            self._tensor(np.asarray(obj))
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self.out.write(b"]")
            if obj:
                self.out.write(b"(")
                for item in obj:
                    self._obj(item)
                self.out.write(b"e")
        elif isinstance(obj, dict):
            if isinstance(obj, OrderedDict):
                self._global("collections", "OrderedDict")
                self.out.write(b")R")
            else:
                self.out.write(b"}")
            if obj:
                self.out.write(b"(")
                for key, value in obj.items():
                    if not isinstance(key, str):
                        raise TypeError(f"dictionary keys must be strings, got {key!r}")
                    self._str(key)
                    self._obj(value)
                self.out.write(b"u")
        else:
            raise TypeError(f"cannot write {type(obj).__name__} in torch format")


def _aligned_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_end = zf.fp.tell() + 30 + len(name.encode()) + 4
    info.extra = b"FB" + struct.pack("<H", (-header_end) % _ALIGN) + b"Z" * ((-header_end) % _ALIGN)
    zf.writestr(info, data)


def save_torch(obj, path: Union[str, os.PathLike]) -> None:
    """Writes ``obj`` (dicts, lists, tuples, numbers, strings, None and numpy/JAX arrays)
    as a file that ``torch.load(path, weights_only=True)`` reads; atomically.

    Args:
      obj: the object; arrays become CPU tensors, ``OrderedDict`` stays an OrderedDict.
      path: destination file; written to a temporary file beside it, then renamed.
    """
    path = Path(path)
    writer = _Pickle2Writer()
    pickled = writer.emit(obj)
    prefix = path.stem or "archive"
    digest = hashlib.sha1(pickled).hexdigest()

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zf:
                _aligned_entry(zf, f"{prefix}/data.pkl", pickled)
                _aligned_entry(zf, f"{prefix}/byteorder", b"little")
                for key, array in enumerate(writer.storages):
                    _aligned_entry(zf, f"{prefix}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
                _aligned_entry(zf, f"{prefix}/version", b"3\n")
                _aligned_entry(zf, f"{prefix}/.data/serialization_id", digest.encode())

    write_atomically(path, build)


class _Storage(NamedTuple):
    dtype: np.dtype


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    itemsize = storage.dtype.itemsize
    if all(s > 0 for s in size) and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= storage.size:
        raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only what ``torch.load(weights_only=True)`` needs for a state-dict file."""

    def __init__(self, handle, zf: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(handle)
        self.zf, self.prefix, self.path = zf, prefix, path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _DTYPE_OF_STORAGE:
            return _Storage(_DTYPE_OF_STORAGE[name])
        raise UnsafeTorchFileError(
            f"{self.path} asks to load the global '{module}.{name}', which is not a tensor or container "
            "type; refusing to load it (files are never executed). Load it in torch with "
            "weights_only=True to inspect it.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise UnsafeTorchFileError(f"{self.path}: unexpected persistent id {pid!r}")
        _, storage, key, _location, numel = pid
        try:
            raw = self.zf.read(f"{self.prefix}data/{key}")
        except KeyError as err:
            raise pickle.UnpicklingError(f"storage record data/{key} is missing") from err
        array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
        if array.size != numel:
            raise pickle.UnpicklingError(f"storage data/{key} holds {array.size} values, expected {numel}")
        return array.astype(storage.dtype)


def load_torch(path_or_bytes: Union[str, os.PathLike, bytes]) -> Any:
    """Reads a ``torch.save`` file of tensors and plain containers, without torch.

    Never executes code from the file: only tensor rebuilding, storages and
    ``OrderedDict`` are allowed, as with ``torch.load(weights_only=True)``.

    Returns:
      The object with tensors as numpy arrays.

    Raises:
      UnsafeTorchFileError: the file references any other global.
      ValueError: the file is truncated, corrupted or not a torch zip file.
    """
    name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
            if not pkl:
                raise ValueError(f"{name} is not a torch file: no data.pkl record")
            prefix = pkl[0][: -len("data.pkl")]
            byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
            if byteorder != "little":
                raise ValueError(f"{name} was written on a big-endian machine; not supported")
            with zf.open(pkl[0]) as handle:
                return _RestrictedUnpickler(handle, zf, prefix, name).load()
    except UnsafeTorchFileError:
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, zlib.error, struct.error, KeyError,
            IndexError, TypeError) as err:
        raise ValueError(f"{name} is truncated or corrupted and cannot be read as a torch file ({err})") from err
