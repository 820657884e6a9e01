"""Reading and checking inference logs: text columns read dictionary-encoded mean the same rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.profile import build_spec, profile
from analytics.store import ParquetStore, StoreConfig, StoredFile
from jobs._monitor_inputs import DICTIONARY_TEXT, check_label_table, check_log_table, read_parquet_file

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 4)
COLORS = ("red", "green", "blue", "violet")


def log_table(rows: int = 500, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    color = [COLORS[i] if i < 3 or rng.random() > 0.1 else None for i in rng.integers(0, 4, rows)]
    return pa.table(
        {
            "version": ["1"] * rows,
            "request_id": [f"r{i}" for i in range(rows)],
            "timestamp": pa.array(
                [start + timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, rows)],
                pa.timestamp("us", "UTC"),
            ),
            "prediction": rng.integers(0, 2, rows).astype(float),
            "score": rng.random(rows),
            "latency_ms": rng.gamma(2.0, 10.0, rows),
            "amount": rng.normal(100, 20, rows),
            "color": color,
            "segment_region": pa.array([("north", "south")[i % 2] for i in range(rows)], pa.large_string()),
            "flag": [bool(i % 3) for i in range(rows)],
            "empty": pa.nulls(rows, pa.string()),
            "extra_note": ["x"] * rows,
        }
    )


def reference_spec(table: pa.Table):
    return build_spec(duckdb.connect().from_arrow(table.select(["amount", "color", "flag"])))


def stored(store: ParquetStore, path: Path, table: pa.Table) -> StoredFile:
    pq.write_table(table, path)
    return StoredFile(str(path), path.stat().st_size, {})


@pytest.fixture
def store(tmp_path: Path):
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    yield store
    store.close()


def test_text_columns_are_read_as_dictionaries_of_the_same_values(
    store: ParquetStore, tmp_path: Path
) -> None:
    table = log_table()
    item = stored(store, tmp_path / "logs.parquet", table)
    plain, problem = read_parquet_file(store, item)
    assert problem is None
    read, problem = read_parquet_file(store, item, dictionary_text=True)
    assert problem is None
    kinds = {field.name: field.type for field in read.schema}
    for name in ("color", "segment_region", "empty", "extra_note"):
        assert pa.types.is_dictionary(kinds[name]), name
        assert read.column(name).to_pylist() == plain.column(name).to_pylist()
    for name in ("version", "request_id", "flag", "amount"):
        assert kinds[name] == plain.schema.field(name).type, name
    assert read.schema.field("segment_region").metadata == {b"mms.file_type": b"large_string"}


def test_checked_text_is_one_dictionary_type_whatever_the_file_had(
    store: ParquetStore, tmp_path: Path
) -> None:
    table = log_table()
    spec = reference_spec(table)
    as_files = {
        "plain": table,
        "dictionary of int8": table.set_column(
            table.column_names.index("color"),
            "color",
            table.column("color").dictionary_encode().cast(pa.dictionary(pa.int8(), pa.large_string())),
        ),
    }
    checked = []
    for kind, variant in as_files.items():
        item = stored(store, tmp_path / f"{kind}.parquet", variant)
        read, _ = read_parquet_file(store, item, dictionary_text=True)
        table_of, problems, versions, new = check_log_table(
            item.path, read, DAY, lambda _v: spec, text_as_dictionary=True
        )
        assert problems == [] and versions == ("1",) and new == ("empty", "extra_note")
        assert table_of.schema.field("color").type == DICTIONARY_TEXT
        assert table_of.schema.field("segment_region").type == DICTIONARY_TEXT
        assert table_of.schema.field("flag").type == pa.bool_()
        checked.append(table_of)
    # Tables of different files (or days) concatenate, as a batch needs them to.
    both = pa.concat_tables(checked, promote_options="permissive")
    plain, *_ = check_log_table("plain", table, DAY, lambda _v: spec)
    assert plain.schema.field("color").type == pa.string()
    assert both.column("color").to_pylist() == plain.column("color").to_pylist() * 2
    # An in-memory table with plain strings is encoded by the check.
    encoded, *_ = check_log_table("memory", table, DAY, lambda _v: spec, text_as_dictionary=True)
    assert encoded.schema.field("color").type == DICTIONARY_TEXT
    assert encoded.column("color").to_pylist() == plain.column("color").to_pylist()


def test_a_text_column_where_the_reference_has_numbers_is_named_with_its_file_type(
    store: ParquetStore, tmp_path: Path
) -> None:
    table = log_table()
    spec = reference_spec(table)
    broken = table.set_column(
        table.column_names.index("amount"), "amount", pa.array(["n/a"] * table.num_rows)
    )
    item = stored(store, tmp_path / "broken.parquet", broken)
    read, _ = read_parquet_file(store, item, dictionary_text=True)
    assert pa.types.is_dictionary(read.schema.field("amount").type)
    checked, problems, _versions, _new = check_log_table(
        item.path, read, DAY, lambda _v: spec, text_as_dictionary=True
    )
    assert checked is None
    assert [p.reason for p in problems] == [
        f"{item.path}: column 'amount' is string; the version 1 reference has it numeric (DOUBLE)"
    ]


def test_dictionary_text_gives_the_profiles_of_plain_text(store: ParquetStore, tmp_path: Path) -> None:
    table = log_table(4000)
    spec = reference_spec(table)
    item = stored(store, tmp_path / "logs.parquet", table)
    read, _ = read_parquet_file(store, item, dictionary_text=True)
    encoded, *_ = check_log_table(item.path, read, DAY, lambda _v: spec, text_as_dictionary=True)
    plain, *_ = check_log_table(item.path, table, DAY, lambda _v: spec)
    con = duckdb.connect()

    def profiles(rows: pa.Table):
        # Half the rows: the dictionary then lists values some windows lack.
        rows = rows.slice(0, rows.num_rows // 2)
        return profile(con.from_arrow(rows), spec, window="hour", timestamp_column="timestamp", table=rows)

    from_dictionaries, from_strings = profiles(encoded), profiles(plain)
    assert from_dictionaries == from_strings
    assert len(from_strings) == 24


@pytest.mark.parametrize("dictionary_text", [False, True], ids=["plain", "dictionary-text"])
def test_a_column_named_twice_is_a_schema_problem(
    store: ParquetStore, tmp_path: Path, dictionary_text: bool
) -> None:
    table = log_table(20)
    spec = reference_spec(table)
    doubled = pa.Table.from_arrays(
        [*table.columns, table.column("color"), table.column("version")],
        names=[*table.column_names, "color", "version"],
    )
    item = stored(store, tmp_path / "doubled.parquet", doubled)
    read, problem = read_parquet_file(store, item, dictionary_text=dictionary_text)
    assert problem is None and read.num_columns == doubled.num_columns
    checked, problems, versions, _new = check_log_table(
        item.path, read, DAY, lambda _v: spec, text_as_dictionary=dictionary_text
    )
    assert checked is None and versions == ()
    assert [(p.kind, p.column, p.reason) for p in problems] == [
        ("schema", "color", f"{item.path}: column 'color' appears 2 times"),
        ("schema", "version", f"{item.path}: column 'version' appears 2 times"),
    ]


def test_a_labels_column_named_twice_is_a_schema_problem() -> None:
    labels = pa.table(
        {
            "request_id": ["r1", "r2"],
            "label": [1.0, 0.0],
            "label_timestamp": pa.array([0, 1], pa.timestamp("us")),
        }
    )
    doubled = pa.Table.from_arrays(
        [*labels.columns, labels.column("label")], names=[*labels.column_names, "label"]
    )
    checked, problems = check_label_table("labels.parquet", doubled)
    assert checked is None
    assert [(p.kind, p.column, p.reason) for p in problems] == [
        ("schema", "label", "labels.parquet: labels column 'label' appears 2 times")
    ]
    fine, none = check_label_table("labels.parquet", labels)
    assert none == [] and fine.num_rows == 2
