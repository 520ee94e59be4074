"""Old keyword names that still work, with a ``DeprecationWarning`` naming the new one."""
from __future__ import annotations

import warnings
from typing import Any

_MISSING = object()


def renamed(kwargs: dict[str, Any], old: str, new: str, value: Any, default: Any, stacklevel: int = 3) -> Any:
    """The value of keyword ``new``, taking it from the deprecated ``old`` in ``kwargs`` if given.

    Args:
      kwargs: the caller's extra keywords; ``old`` is removed from it.
      old, new: the deprecated and the current name.
      value: what the caller received for ``new``.
      default: ``new``'s default (passing both names with different values is an error).

    Returns:
      The value to use for ``new``.
    """
    old_value = kwargs.pop(old, _MISSING)
    if old_value is _MISSING:
        return value
    warnings.warn(f"{old}= is deprecated; use {new}= instead.", DeprecationWarning, stacklevel=stacklevel)
    if value is not default and value != old_value:
        raise TypeError(f"pass either {new}= or the deprecated {old}=, not both.")
    return old_value


def refuse_unknown(kwargs: dict[str, Any], where: str) -> None:
    """A ``TypeError`` for keywords left after the deprecated ones were taken."""
    if kwargs:
        raise TypeError(f"{where} got unexpected keyword argument(s) {sorted(kwargs)}.")
