"""Old keyword names kept working, with a ``DeprecationWarning`` (the one shim for issue 11).

Usage::

    @renamed_kwargs(k_cutoff="n_neighbors", random_state="seed")
    def cal_spatial_exp(adata, ..., n_neighbors=20, seed=0): ...

A call with ``k_cutoff=10`` warns once per call site and runs as ``n_neighbors=10``; a call
that passes both the old and the new name is refused with a ``TypeError``. Calls from inside
scniche_jax itself (modules not yet moved to the new names, e.g. the command line) run without
the warning: a user could not act on it, and the command line promises one line on stderr.
"""
from __future__ import annotations

import functools
import sys
import warnings
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def _called_from_package(stacklevel: int) -> bool:
    """Whether the frame that the warning would point at belongs to scniche_jax (``-m`` runs included)."""
    try:
        frame = sys._getframe(stacklevel)
    except ValueError:  # pragma: no cover - shallower stack than expected
        return False
    spec = frame.f_globals.get("__spec__")
    name = getattr(spec, "name", None) or frame.f_globals.get("__name__", "")
    return name == __package__ or name.startswith(f"{__package__}.")


def map_renamed(func_name: str, kwargs: dict, renames: dict[str, str], stacklevel: int = 3) -> dict:
    """Returns ``kwargs`` with every old name in ``renames`` replaced by its new name, warning for each.

    ``stacklevel`` counts as in ``warnings.warn`` from the caller of this function.
    """
    out = dict(kwargs)
    internal = _called_from_package(stacklevel)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(f"{func_name}() got both {old!r} (deprecated) and {new!r}; pass only {new}=.")
        if not internal:
            warnings.warn(f"{func_name}(): {old}= is deprecated and will be removed; use {new}= instead.",
                          DeprecationWarning, stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Decorator: accept each old keyword (``old="new"``) as the new one, with a ``DeprecationWarning``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **map_renamed(func.__name__, kwargs, renames, stacklevel=3))

        wrapper.__deprecated_kwargs__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
