"""scniche-jax: scNiche (cell niches from single-cell spatial omics) in JAX.

The public names are imported on first use, so ``import scniche_jax.cli`` (and
``scniche-jax --help``) answers without loading JAX.
"""
from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version as _version
from typing import Any

try:
    __version__ = _version("scniche-jax")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

_SUBMODULES = ("datasets", "pl", "pp", "tl")
_NAMES = {
    "fit": ".fit", "load": ".model", "Model": ".model", "History": ".history", "ModelConfig": ".config",
    "OptimizerConfig": ".config", "StoppingConfig": ".config", "BatchConfig": ".config",
    "ImprovedOptions": ".config",
}
__all__ = ["fit", "load", "Model", "History", "ModelConfig", "OptimizerConfig", "StoppingConfig", "BatchConfig",
           "ImprovedOptions", "pp", "tl", "pl", "datasets"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        module = getattr(importlib.import_module(_NAMES[name], __name__), name)
    else:
        raise AttributeError(f"module 'scniche_jax' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package module, whose ``fit`` stays the function when the submodule of that name loads.

    Importing ``scniche_jax.fit`` (``import scniche_jax.fit``, ``from scniche_jax.fit import fit``)
    would otherwise bind the submodule as ``scniche_jax.fit`` and make ``sj.fit(...)`` fail with
    "'module' object is not callable". The submodule stays in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
