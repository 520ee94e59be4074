"""SpatialData in, its annotation table out (the optional ``[spatialdata]`` extra).

``pp``, ``tl`` and ``pl`` accept either an ``AnnData`` or a ``spatialdata.SpatialData``; for the
latter they work on ``sdata.tables[table_key]`` (an ``AnnData``, changed in place, so results
land in the SpatialData object). Only the public API is used: ``SpatialData.tables``.
The cells' coordinates are read from the table's ``obsm['spatial']``, which the
``spatialdata-io`` readers (Xenium, MERSCOPE, CosMx, Visium) fill.
"""
from __future__ import annotations

from typing import Any, Optional

import anndata as ad

DEFAULT_TABLE_KEY = "table"


def is_spatialdata(obj: Any) -> bool:
    """True for a ``spatialdata.SpatialData`` (checked by type name, so spatialdata need not be importable)."""
    return any(cls.__name__ == "SpatialData" and cls.__module__.startswith("spatialdata")
               for cls in type(obj).__mro__)


def resolve_table(data: Any, table_key: Optional[str] = None) -> ad.AnnData:
    """The AnnData to work on: ``data`` itself, or ``data.tables[table_key]`` of a SpatialData.

    Raises:
      ValueError: ``table_key`` given with a plain AnnData, or naming no table of the SpatialData.
      TypeError: ``data`` is neither.
    """
    if isinstance(data, ad.AnnData):
        if table_key is not None:
            raise ValueError(f"table_key={table_key!r} applies to a spatialdata.SpatialData only; "
                             "drop it when passing an AnnData.")
        return data
    if is_spatialdata(data):
        tables = data.tables
        key = DEFAULT_TABLE_KEY if table_key is None else table_key
        if key not in tables:
            names = ", ".join(repr(k) for k in tables.keys()) or "none"
            raise ValueError(f"the SpatialData has no table {key!r} (tables: {names}); "
                             "pass table_key= naming the table of the cells.")
        table = tables[key]
        if not isinstance(table, ad.AnnData):  # pragma: no cover - spatialdata guarantees AnnData tables
            raise TypeError(f"sdata.tables[{key!r}] is a {type(table).__name__}, not an AnnData.")
        return table
    raise TypeError(f"expected an anndata.AnnData or a spatialdata.SpatialData, got {type(data).__name__}.")


def table_name(source: Any, table: ad.AnnData) -> str:
    """How messages name ``table``: ``'adata'``, or ``"sdata.tables['<key>']"`` for a SpatialData's table."""
    if source is None or source is table or not is_spatialdata(source):
        return "adata"
    for key, candidate in source.tables.items():
        if candidate is table:
            return f"sdata.tables[{key!r}]"
    return "the SpatialData's table"


def replace_table(data: Any, table_key: Optional[str], table: ad.AnnData) -> None:
    """Puts a new table into a SpatialData (for tools that build a new AnnData)."""
    data.tables[DEFAULT_TABLE_KEY if table_key is None else table_key] = table
