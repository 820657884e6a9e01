"""Deferred relations: the schema from Arrow as DuckDB gives it, DuckDB only when a query runs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from analytics._arrow_relation import DeferredCursor, DeferredRelation, duckdb_type_name
from analytics.performance import (
    classification_partial,
    latency_partial,
    regression_partial,
)
from analytics.store import ParquetStore, StoreConfig

pytestmark = pytest.mark.unit

# Every type the studio's contracts let through, and some they refuse (the mapping must still match).
LISTED = [
    pa.bool_(),
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
    pa.string(),
    pa.large_string(),
    pa.string_view(),
    pa.binary(),
    pa.large_binary(),
    pa.dictionary(pa.int32(), pa.string()),
    pa.dictionary(pa.int8(), pa.large_string()),
    pa.dictionary(pa.int16(), pa.int64()),
    pa.timestamp("s"),
    pa.timestamp("ms"),
    pa.timestamp("us"),
    pa.timestamp("ns"),
    pa.timestamp("us", tz="UTC"),
    pa.timestamp("ns", tz="UTC"),
    pa.timestamp("ms", tz="Europe/Paris"),
    pa.timestamp("s", tz="+01:00"),
    pa.date32(),
    pa.date64(),
    pa.null(),
    pa.decimal128(10, 2),
    pa.decimal128(38, 6),
]
LEFT_TO_DUCKDB = [pa.time64("us"), pa.duration("us"), pa.list_(pa.int64()), pa.struct([("a", pa.int64())])]


def one_row(data_type: pa.DataType) -> pa.Table:
    return pa.table({"x": pa.array([None], type=data_type)})


@pytest.mark.parametrize("data_type", LISTED, ids=str)
def test_listed_types_are_named_as_duckdb_names_them(data_type: pa.DataType) -> None:
    relation = duckdb.connect().from_arrow(one_row(data_type))
    assert duckdb_type_name(data_type) == str(relation.types[0])


@pytest.mark.parametrize("data_type", LEFT_TO_DUCKDB, ids=str)
def test_other_types_are_left_to_duckdb(data_type: pa.DataType) -> None:
    assert duckdb_type_name(data_type) is None
    con = duckdb.connect()
    made: list[int] = []
    relation = DeferredRelation(one_row(data_type), lambda: made.append(1) or con)
    assert [str(t) for t in relation.types] == [str(t) for t in con.from_arrow(one_row(data_type)).types]
    assert made == [1]


def test_the_schema_needs_no_connection_and_a_query_makes_the_relation_once() -> None:
    table = pa.table(
        {"a": [1, 2, 3], "b": ["x", None, "z"], "t": pa.array([0, 1, 2], pa.timestamp("us", "UTC"))}
    )
    con = duckdb.connect()
    made: list[int] = []
    relation = DeferredRelation(table, lambda: made.append(1) or con)
    real = con.from_arrow(table)
    assert relation.columns == real.columns
    assert relation.types == [str(t) for t in real.types]
    assert made == []
    assert relation.aggregate("sum(a), count(b)").fetchall() == [(6, 2)]
    assert relation.query("r", "SELECT max(a) FROM r").fetchone() == (3,)
    assert made == [1]
    assert relation.table is table


def test_duplicate_names_are_left_to_duckdb() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    con = duckdb.connect()
    relation = DeferredRelation(table, lambda: con)
    assert relation.columns == con.from_arrow(table).columns


def test_a_child_cursor_is_made_only_when_used_and_closed_with_its_block() -> None:
    con = duckdb.connect()
    made: list[str] = []
    parent = DeferredCursor(lambda: made.append("parent") or con)
    with parent.cursor() as unused:
        unused.from_arrow(pa.table({"a": [1]})).columns  # noqa: B018 - the schema only
    assert made == []
    with parent.cursor() as child:
        assert child.from_arrow(pa.table({"a": [1, 2]})).aggregate("sum(a)").fetchone() == (3,)
        real_child = child.real()
    assert made == ["parent"]
    with pytest.raises(duckdb.ConnectionException):
        real_child.execute("SELECT 1")
    assert parent.execute("SELECT 42").fetchone() == (42,)  # the parent's cursor stays open


def make_day(rows: int = 3000, seed: int = 3) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    seconds = rng.integers(0, 86_400, rows)
    logs = pa.table(
        {
            "request_id": [f"r{i}" for i in range(rows)],
            "timestamp": pa.array(
                [start + timedelta(seconds=int(s)) for s in seconds], pa.timestamp("us", "UTC")
            ),
            "latency_ms": rng.gamma(2.0, 20.0, rows),
            "score": rng.random(rows),
            "prediction": rng.normal(10, 3, rows),
        }
    )
    ids = [f"r{i}" for i in range(0, rows, 3)]
    labels = pa.table({"request_id": ids, "label": rng.integers(0, 2, len(ids)).astype(float)})
    return logs, labels


def test_the_partials_of_tables_connect_to_nothing_and_equal_the_queried_ones() -> None:
    logs, labels = make_day()
    con = duckdb.connect()
    made: list[int] = []
    cursor = DeferredCursor(lambda: made.append(1) or con)
    rel, lab = cursor.from_arrow(logs), cursor.from_arrow(labels)
    got = {
        "latency": latency_partial(rel, "hour", table=logs),
        "classification": classification_partial(
            rel, lab, "hour", positive_label=1.0, labels_unique=True, table=logs, labels_table=labels
        ),
        "regression": regression_partial(
            rel, lab, "hour", labels_unique=True, table=logs, labels_table=labels
        ),
    }
    assert made == []
    real, real_labels = con.from_arrow(logs), con.from_arrow(labels)
    queried = {
        "latency": latency_partial(real, "hour"),
        "classification": classification_partial(real, real_labels, "hour", positive_label=1.0),
        "regression": regression_partial(real, real_labels, "hour"),
    }
    for name, table in got.items():
        want = queried[name]
        assert table.schema == want.schema and table.num_rows == want.num_rows, name
        for column in table.column_names:
            mine, theirs = table.column(column).to_pylist(), want.column(column).to_pylist()
            assert len(mine) == len(theirs)
            for a, b in zip(mine, theirs, strict=True):
                assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-9)), (name, column)


def test_bad_arguments_are_refused_before_any_connection() -> None:
    logs, labels = make_day(50)
    made: list[int] = []
    cursor = DeferredCursor(lambda: made.append(1) or duckdb.connect())
    rel, lab = cursor.from_arrow(logs), cursor.from_arrow(labels)
    with pytest.raises(ValueError, match="finite"):
        classification_partial(rel, lab, threshold=math.inf, table=logs, labels_table=labels)
    with pytest.raises(ValueError, match="label_timestamp"):
        classification_partial(rel, lab, labels_as_of=datetime(2026, 5, 2, tzinfo=UTC), table=logs)
    with pytest.raises(ValueError, match="lacks column"):
        regression_partial(cursor.from_arrow(logs.drop(["prediction"])), lab, table=logs, labels_table=labels)
    with pytest.raises(ValueError, match="must be numeric"):
        text_labels = labels.set_column(1, "label", pa.array(["a"] * labels.num_rows))
        regression_partial(rel, cursor.from_arrow(text_labels), table=logs, labels_table=text_labels)
    assert made == []


def test_the_store_s_deferred_cursor_is_the_calling_thread_s_cursor_when_made(tmp_path) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    try:
        deferred = store.deferred_cursor()
        relation = deferred.from_arrow(pa.table({"a": [1, 2]}))
        assert relation.columns == ["a"]
        assert relation.aggregate("sum(a)").fetchone() == (3,)
        assert deferred.real() is store.cursor()
    finally:
        store.close()
