"""DuckDB relations over Arrow tables that connect only when a query needs them.

The analytics functions take a relation and, where there is one, the Arrow table behind it
(``table=``): they read the relation's columns and types to check their input, then compute from
the table in NumPy and query the relation only where they cannot. A :class:`DeferredRelation`
answers ``columns`` and ``types`` from the table's schema, so a caller that has the tables (the
monitoring job) never imports DuckDB, opens a connection or registers a table unless a query
really runs: in a process of its own that is about 0.1 s of CPU (``python -m jobs monitor``, see
docs/MONITORING.md, "Performance").

Anything else read from a deferred relation or cursor makes the real one, in the calling thread,
and hands the call on: the results are DuckDB's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

_INTEGERS = {
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
}
_OTHERS = {
    pa.bool_(): "BOOLEAN",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.string_view(): "VARCHAR",
    pa.binary(): "BLOB",
    pa.large_binary(): "BLOB",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
    pa.null(): "INTEGER",  # DuckDB reads an all-null Arrow column as INTEGER
}
_TIMESTAMPS = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}


def duckdb_type_name(data_type: pa.DataType) -> str | None:
    """The name of the DuckDB type ``from_arrow`` gives a column of ``data_type``.

    Args:
        data_type: An Arrow type.

    Returns:
        The name as ``str(relation.types[i])`` spells it, or ``None`` for a type not listed here
        (nested, intervals, times, ...): ask DuckDB.
    """
    if data_type in _INTEGERS:
        return _INTEGERS[data_type]
    if data_type in _OTHERS:
        return _OTHERS[data_type]
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP WITH TIME ZONE" if data_type.tz is not None else _TIMESTAMPS.get(data_type.unit)
    if pa.types.is_dictionary(data_type):
        return duckdb_type_name(data_type.value_type)
    if pa.types.is_decimal128(data_type):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    return None


class DeferredRelation:
    """Stands for ``cursor.from_arrow(table)`` until something other than its schema is read.

    Args:
        table: The rows.
        cursor: Gives the cursor the relation is made on, when it is (called once, in the
            thread that first needs the relation: use a cursor of that thread only).
    """

    def __init__(self, table: pa.Table, cursor: Callable[[], Any]) -> None:
        self.table = table
        self._cursor = cursor
        self._relation: Any = None
        names = table.column_names
        type_names = [duckdb_type_name(field.type) for field in table.schema]
        # Known types and distinct names (DuckDB renames duplicates): else DuckDB says.
        self._schema = (
            (list(names), type_names) if None not in type_names and len(set(names)) == len(names) else None
        )

    @property
    def relation(self) -> Any:
        """The DuckDB relation (made on first use)."""
        if self._relation is None:
            self._relation = self._cursor().from_arrow(self.table)
        return self._relation

    @property
    def columns(self) -> list[str]:
        """Column names, as ``DuckDBPyRelation.columns``."""
        return list(self._schema[0]) if self._schema is not None else self.relation.columns

    @property
    def types(self) -> list[Any]:
        """Column types: their DuckDB names (``str()`` of ``DuckDBPyRelation.types``' items)."""
        return list(self._schema[1]) if self._schema is not None else self.relation.types

    def __getattr__(self, name: str) -> Any:
        # Only for what this class lacks: the relation's query methods (never a private name, so
        # a half-made object, as copy makes it, does not recurse).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.relation, name)


class DeferredCursor:
    """Stands for a DuckDB cursor: its ``from_arrow`` relations are :class:`DeferredRelation` s.

    Args:
        cursor: Gives the real cursor when one is needed (called once, in the thread that first
            needs it).
        owned: The real cursor is this object's own (``cursor()`` of another): closed on exit of
            a ``with`` block, as DuckDB's cursors are.
    """

    def __init__(self, cursor: Callable[[], Any], *, owned: bool = False) -> None:
        self._make = cursor
        self._owned = owned
        self._cursor: Any = None

    def real(self) -> Any:
        """The DuckDB cursor (made on first use)."""
        if self._cursor is None:
            self._cursor = self._make()
        return self._cursor

    def from_arrow(self, table: pa.Table) -> DeferredRelation:
        """A deferred relation over ``table`` on this cursor."""
        return DeferredRelation(table, self.real)

    def cursor(self) -> DeferredCursor:
        """Another cursor of the same database (DuckDB's ``cursor()``), made when first needed."""
        return DeferredCursor(lambda: self.real().cursor(), owned=True)

    def close(self) -> None:
        """Close the real cursor if it was made and is this object's own."""
        if self._owned and self._cursor is not None:
            self._cursor.close()

    def __enter__(self) -> DeferredCursor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real(), name)
