"""Old keyword names kept working, with a ``DeprecationWarning`` (the one shim for issue 11).

Usage::

    @renamed_kwargs(k_cutoff="n_neighbors", random_state="seed")
    def cal_spatial_exp(adata, ..., n_neighbors=20, seed=0): ...

A call with ``k_cutoff=10`` warns once per call site and runs as ``n_neighbors=10``; a call
that passes both the old and the new name is refused with a ``TypeError``.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def map_renamed(func_name: str, kwargs: dict, renames: dict[str, str], stacklevel: int = 3) -> dict:
    """Returns ``kwargs`` with every old name in ``renames`` replaced by its new name, warning for each."""
    out = dict(kwargs)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(f"{func_name}() got both {old!r} (deprecated) and {new!r}; pass only {new}=.")
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
