"""The Parquet store, on a local folder (unit) and on SeaweedFS S3 (integration).

Tests that take ``store`` run twice through the ``store_config`` fixture
(``tests/fixtures/s3.py``): ``[local]`` is marked ``unit``, ``[s3]`` ``integration``.
Tests without it check pure functions and are ``unit``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import pickle
import re
import threading
import time
import uuid
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from analytics import _duckdb
from analytics.store import (
    KEY_SEGMENT_RE,
    STAGING_DIR,
    AccessDenied,
    CorruptParquet,
    DataChanged,
    InvalidName,
    NoData,
    ParquetStore,
    StoreConfig,
    StoreError,
    _read_error,
    connect_duckdb,
    quote_identifier,
    read_source,
    validate_key_segment,
    validate_partition_value,
)

unit = pytest.mark.unit

BAD_SEGMENTS = ["../x", "a/b", "", ".", "..", "a\\b", "a b", "x\n", "é", "a=b"]


@pytest.fixture
def store(store_config: StoreConfig) -> Iterator[ParquetStore]:
    store = ParquetStore(store_config)
    yield store
    store.close()


def _fs_path(uri: str) -> str:
    """A store URI as a path on its pyarrow filesystem."""
    return uri.removeprefix("s3://")


def _all_files(store: ParquetStore) -> list[str]:
    """Every object under the root, relative to it (staging included)."""
    base = _fs_path(store.root)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return sorted(
        info.path[len(base) + 1 :]
        for info in store.filesystem().get_file_info(selector)
        if info.type == pafs.FileType.File
    )


def _outside_uri(store: ParquetStore, tmp_path, name: str) -> str:
    """A location next to the root but outside it."""
    if store.is_s3:
        bucket = store.root.removeprefix("s3://").split("/", 1)[0]
        return f"s3://{bucket}/{name}-{uuid.uuid4().hex}/x.parquet"
    return str(tmp_path / name / "x.parquet")


def _put_parquet(store: ParquetStore, uri: str, table: pa.Table) -> None:
    fs = store.filesystem()
    path = _fs_path(uri)
    if not store.is_s3:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)


def _overwrite(store: ParquetStore, uri: str, data: bytes) -> None:
    with store.filesystem().open_output_stream(_fs_path(uri)) as out:
        out.write(data)


def _read_bytes(store: ParquetStore, uri: str) -> bytes:
    with store.filesystem().open_input_stream(_fs_path(uri)) as handle:
        return handle.read()


def _write_days(store: ParquetStore) -> None:
    for model in ("churn", "fraud"):
        for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
            rows = pa.table({"score": [0.1, 0.2], "label": [f"{model}-{day}-0", f"{model}-{day}-1"]})
            store.write_partition("predictions", {"model": model, "date": day}, rows)


# --------------------------------------------------------------------------- pure functions


@unit
@pytest.mark.parametrize("good", ["predictions", "model_1", "a-b", "A9", "_x"])
def test_key_segment_accepts_plain_names(good: str) -> None:
    assert validate_key_segment(good) == good
    assert KEY_SEGMENT_RE.match(good)


@unit
@pytest.mark.parametrize("bad", BAD_SEGMENTS)
def test_key_segment_refuses_paths_and_odd_characters(bad: str) -> None:
    with pytest.raises(InvalidName, match=r"invalid dataset name .*letters, digits"):
        validate_key_segment(bad, "dataset name")


@unit
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-01-01", "2026-01-01"),
        ("2026-01-01T10:30:00", "2026-01-01T10:30:00"),
        ("v1.2", "v1.2"),
        (dt.date(2026, 1, 1), "2026-01-01"),
        (dt.datetime(2026, 1, 1, 10, 30), "2026-01-01T10:30:00"),
        (7, "7"),
    ],
)
def test_partition_value_allows_hive_values(value: object, text: str) -> None:
    assert validate_partition_value(value, "date") == text


@unit
@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "..", "x..y", "", "a b", "a=b", None, True, [1]])
def test_partition_value_refuses_traversal_and_odd_values(bad: object) -> None:
    with pytest.raises(InvalidName, match="partition 'date'"):
        validate_partition_value(bad, "date")


@unit
def test_quote_identifier_allows_only_schema_columns() -> None:
    schema = ["score", 'we"ird', "label"]
    assert quote_identifier("score", schema) == '"score"'
    assert quote_identifier('we"ird', schema) == '"we""ird"'
    with pytest.raises(InvalidName, match=r"unknown column 'x\"; DROP'.*'score'"):
        quote_identifier('x"; DROP', schema)
    with pytest.raises(InvalidName, match="unknown column"):
        quote_identifier("SCORE", schema)


@unit
def test_error_hierarchy_lets_callers_catch_broadly() -> None:
    assert issubclass(InvalidName, StoreError) and issubclass(InvalidName, ValueError)
    assert issubclass(CorruptParquet, StoreError) and issubclass(NoData, StoreError)
    error = CorruptParquet("/data/x.parquet", "no magic bytes")
    assert "/data/x.parquet" in str(error) and "no magic bytes" in str(error)


@unit
def test_store_config_comes_from_settings(tmp_path) -> None:
    from app.settings import load_settings

    settings = load_settings(
        {
            "MMS_VAR_DIR": str(tmp_path),
            "MMS_SECRET_KEY": "k" * 32,
            "MMS_DATA_URI": "s3://bucket/prefix/",
            "MMS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "MMS_S3_ACCESS_KEY_ID": "ak",
            "MMS_S3_SECRET_ACCESS_KEY": "sk",
            "MMS_DUCKDB_THREADS": "3",
        }
    )
    config = settings.store_config()
    assert isinstance(config, StoreConfig)
    assert (config.data_uri, config.s3_endpoint_url, config.threads) == (
        "s3://bucket/prefix",
        "http://127.0.0.1:9000",
        3,
    )
    assert "sk" not in repr(config)
    store = ParquetStore(config)
    assert (store.root, store.is_s3) == ("s3://bucket/prefix", True)


@unit
@pytest.mark.parametrize("uri", ["ftp://host/x", "s3://", "s3://bucket/../etc", "  "])
def test_store_refuses_unsupported_roots(uri: str) -> None:
    with pytest.raises(StoreError, match="data_uri"):
        ParquetStore(StoreConfig(data_uri=uri))


@unit
def test_s3_secret_statement_quotes_values_and_follows_the_endpoint_scheme() -> None:
    sql = _duckdb.s3_secret_sql(
        endpoint_url="http://127.0.0.1:8333",
        region="us-east-1",
        access_key_id="ak",
        secret_access_key="it's",
        session_token=None,
    )
    assert "SECRET 'it''s'" in sql
    assert "ENDPOINT '127.0.0.1:8333'" in sql and "URL_STYLE 'path'" in sql and "USE_SSL false" in sql
    assert "SESSION_TOKEN" not in sql
    secure = _duckdb.s3_secret_sql(
        endpoint_url="https://s3.example.com",
        region="eu-west-1",
        access_key_id=None,
        secret_access_key=None,
        session_token="tok",
    )
    assert "USE_SSL true" in secure and "SESSION_TOKEN 'tok'" in secure and "KEY_ID" not in secure
    with pytest.raises(ValueError, match="http"):
        _duckdb.s3_secret_sql(
            endpoint_url="127.0.0.1:8333",
            region="us-east-1",
            access_key_id=None,
            secret_access_key=None,
            session_token=None,
        )


@unit
@pytest.mark.parametrize("window", ["minute", "hour", "day", "week", "month"])
@pytest.mark.parametrize("with_time_zone", [True, False], ids=["timestamptz", "timestamp"])
def test_window_starts_are_those_of_date_trunc_in_utc(tmp_path, window: str, with_time_zone: bool) -> None:
    """The arithmetic cut of TIMESTAMPTZ windows gives date_trunc's UTC windows, before 1970 too;
    NULL stays NULL."""
    con = connect_duckdb(StoreConfig(data_uri=str(tmp_path)))
    try:
        dtype = "TIMESTAMPTZ" if with_time_zone else "TIMESTAMP"
        utc = "timezone('UTC', t)" if with_time_zone else "t"
        rows = con.sql(
            f"""
            SELECT count(*), count(a), count(*) FILTER (WHERE a IS DISTINCT FROM b), count(DISTINCT b)
            FROM (
                SELECT CAST(date_trunc('{window}', {utc}) AS TIMESTAMP) AS a,
                       {_duckdb.window_start_sql("t", window, with_time_zone=with_time_zone)} AS b
                FROM (
                    SELECT CAST(TIMESTAMP '1970-01-01' + to_microseconds(i * 7919777771 + i % 7) AS {dtype})
                        AS t
                    FROM range(-30000, 30000) AS r(i)
                    UNION ALL SELECT NULL
                )
            )
            """
        ).fetchone()
    finally:
        con.close()
    total, present, different, windows = rows
    assert (total, present, different) == (60001, 60000, 0)
    assert windows > 30  # windows on both sides of 1970, not one
    fixed = _duckdb.window_start_sql("t", window, with_time_zone=with_time_zone)
    assert ("epoch_us" in fixed) == (with_time_zone and window in _duckdb.FIXED_WINDOW_MICROS)


@unit
def test_duckdb_connection_is_locked_down(tmp_path) -> None:
    con = connect_duckdb(StoreConfig(data_uri=str(tmp_path), memory_limit="256MB", threads=1))
    try:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
                "'lock_configuration', 'autoinstall_known_extensions', 'autoload_known_extensions', "
                "'threads', 'allowed_directories')"
            ).fetchall()
        )
        assert settings["enable_external_access"] == "false"
        assert settings["lock_configuration"] == "true"
        assert settings["autoinstall_known_extensions"] == "false"
        assert settings["autoload_known_extensions"] == "false"
        assert settings["threads"] == "1"
        assert f"{tmp_path}/" in settings["allowed_directories"]
        # httpfs registers its settings when loaded (duckdb_extensions() would list a denied folder):
        # a local store reads nothing from S3 and does not load it.
        httpfs = con.execute("SELECT count(*) FROM duckdb_settings() WHERE name = 's3_region'").fetchone()
        assert httpfs == (0,)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET allowed_directories = ['/']")
    finally:
        con.close()


@unit
def test_duckdb_loads_httpfs_only_when_something_is_read_from_s3(tmp_path) -> None:
    def httpfs_loaded(config: StoreConfig, allowed: tuple[str, ...] = ()) -> bool:
        con = connect_duckdb(config, allowed_paths=allowed)
        try:
            settings = "SELECT count(*) FROM duckdb_settings() WHERE name = 's3_region'"
            return con.execute(settings).fetchone()[0] == 1
        finally:
            con.close()

    local = StoreConfig(data_uri=str(tmp_path), memory_limit="256MB", threads=1)
    assert not httpfs_loaded(local)
    assert httpfs_loaded(local, ("s3://bucket/reference/",))
    assert httpfs_loaded(StoreConfig(data_uri="s3://bucket/prefix", memory_limit="256MB", threads=1))


@unit
def test_read_errors_are_classified() -> None:
    undecodable = UnicodeDecodeError("utf-8", b"PAR1\xc0", 4, 5, "invalid start byte")
    assert isinstance(_read_error(undecodable, ["/d/x.parquet"]), DataChanged)
    corrupt = duckdb.InvalidInputException("No magic bytes found at end of file '/d/x.parquet'")
    failure = _read_error(corrupt, ["/d/x.parquet", "/d/y.parquet"])
    assert isinstance(failure, CorruptParquet) and failure.path == "/d/x.parquet"
    denied = _read_error(duckdb.PermissionException("Cannot access file"), ["/d/x.parquet"])
    assert isinstance(denied, AccessDenied)
    other = _read_error(duckdb.BinderException("something else"), ["/d/x.parquet"])
    assert type(other) is StoreError and "something else" in str(other)


@unit
def test_bad_duckdb_limits_fail_with_a_store_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="memory_limit='lots'"):
        connect_duckdb(StoreConfig(data_uri=str(tmp_path), memory_limit="lots"))


@unit
def test_extra_allowed_paths_become_readable(tmp_path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), extra / "one.parquet")
    single = tmp_path / "single.parquet"
    pq.write_table(pa.table({"a": [5]}), single)
    denied = connect_duckdb(StoreConfig(data_uri=str(tmp_path / "root")))
    allowed = connect_duckdb(
        StoreConfig(data_uri=str(tmp_path / "root")), allowed_paths=[str(extra), str(single)]
    )
    try:
        with pytest.raises(AccessDenied):
            read_source(denied, str(extra))
        assert read_source(allowed, str(extra)).aggregate("sum(a)").fetchone() == (3,)
        assert read_source(allowed, str(single)).aggregate("sum(a)").fetchone() == (5,)
        assert read_source(allowed, [str(extra / "*.parquet"), str(single)]).aggregate(
            "sum(a)"
        ).fetchone() == (8,)
    finally:
        denied.close()
        allowed.close()


# --------------------------------------------------------------------------- the store, local and S3


def test_roundtrip_with_partition_pruning(store: ParquetStore) -> None:
    _write_days(store)

    files = store.list_files("predictions", {"model": "churn", "date": ["2026-01-02", "2026-01-03"]})
    assert [f.partition for f in files] == [
        {"model": "churn", "date": "2026-01-02"},
        {"model": "churn", "date": "2026-01-03"},
    ]
    assert [f.path for f in files] == [
        store.partition_uri("predictions", {"model": "churn", "date": day}) + "/data.parquet"
        for day in ("2026-01-02", "2026-01-03")
    ]
    assert all(f.size > 0 for f in files)
    assert len(store.list_files("predictions")) == 6
    assert len(store.list_files("predictions", {"date": "2026-01-01"})) == 2

    table = store.read("predictions", filters={"model": "churn", "date": ["2026-01-02", "2026-01-03"]})
    assert sorted(table.column("label").to_pylist()) == [
        "churn-2026-01-02-0",
        "churn-2026-01-02-1",
        "churn-2026-01-03-0",
        "churn-2026-01-03-1",
    ]
    assert set(table.column("model").to_pylist()) == {"churn"}
    assert table.schema.field("date").type == pa.string()  # partition values read back as written

    relation = store.relation("predictions", filters={"model": "churn", "date": ["2026-01-02", "2026-01-03"]})
    assert relation.aggregate("count(*)").fetchone() == (4,)

    projected = store.read("predictions", filters={"label": "fraud-2026-01-03-1"}, columns=["model", "score"])
    assert projected.column_names == ["model", "score"]
    assert projected.to_pylist() == [{"model": "fraud", "score": 0.2}]


def test_list_partitions_and_exists(store: ParquetStore) -> None:
    _write_days(store)
    partitions = store.list_partitions("predictions")
    assert len(partitions) == 6
    assert partitions[0] == {"model": "churn", "date": "2026-01-01"}
    assert store.exists("predictions", {"model": "fraud", "date": "2026-01-03"})
    assert store.exists("predictions", {"model": "fraud"})
    assert not store.exists("predictions", {"model": "fraud", "date": "2026-02-01"})
    assert not store.exists("other", {"model": "fraud"})


def test_partition_pruning_does_not_descend_into_excluded_partitions(store: ParquetStore) -> None:
    _write_days(store)
    # A corrupt file in a partition the filter excludes is never opened: pruning happens in the listing.
    excluded = store.partition_uri("predictions", {"model": "fraud", "date": "2026-01-01"}) + "/data.parquet"
    _overwrite(store, excluded, b"not parquet")
    table = store.read("predictions", filters={"model": "churn"})
    assert table.num_rows == 6
    with pytest.raises(CorruptParquet):
        store.read("predictions")


def test_rerun_of_a_partition_replaces_it(store: ParquetStore) -> None:
    partition = {"model": "churn", "date": "2026-01-01"}
    store.write_partition("predictions", partition, pa.table({"score": [0.1, 0.2, 0.3]}))
    assert store.read("predictions").column("score").to_pylist() == [0.1, 0.2, 0.3]
    # Same schema and row count, so same file size: a stale cache would show the old rows.
    store.write_partition("predictions", partition, pa.table({"score": [0.7, 0.8, 0.9]}))
    assert sorted(store.read("predictions").column("score").to_pylist()) == [0.7, 0.8, 0.9]
    assert len(store.list_files("predictions")) == 1
    assert _all_files(store) == ["predictions/model=churn/date=2026-01-01/data.parquet"]


def test_append_adds_files(store: ParquetStore) -> None:
    partition = {"model": "churn"}
    first = store.append("predictions", partition, pa.table({"score": [1.0]}))
    second = store.append("predictions", partition, pa.table({"score": [2.0], "extra": ["new column"]}))
    assert first != second
    assert [f.path for f in store.list_files("predictions")] == sorted([first, second])
    table = store.read("predictions").sort_by("score")
    assert table.column("score").to_pylist() == [1.0, 2.0]
    assert table.column("extra").to_pylist() == [None, "new column"]  # union_by_name


def test_write_partition_can_replace_appended_files(store: ParquetStore) -> None:
    partition = {"model": "churn"}
    store.append("predictions", partition, pa.table({"score": [1.0]}))
    store.write_partition("predictions", partition, pa.table({"score": [5.0]}))
    assert sorted(store.read("predictions").column("score").to_pylist()) == [1.0, 5.0]
    store.write_partition("predictions", partition, pa.table({"score": [6.0]}), replace_partition=True)
    assert store.read("predictions").column("score").to_pylist() == [6.0]
    assert len(store.list_files("predictions")) == 1


@pytest.mark.parametrize("operation", ["write_partition", "append"])
def test_failure_after_staging_keeps_previous_data(
    store: ParquetStore, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    partition = {"model": "churn", "date": "2026-01-01"}
    store.write_partition("predictions", partition, pa.table({"score": [0.1, 0.2]}))
    before = _all_files(store)
    assert not [p for p in before if p.startswith(STAGING_DIR)]

    staged: list[str] = []

    def crash(staged_path: str, final_path: str) -> None:
        staged.append(staged_path)
        assert store.filesystem().get_file_info(staged_path).type == pafs.FileType.File  # it was staged
        raise RuntimeError("simulated crash between staging and publishing")

    monkeypatch.setattr(store, "_publish", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        getattr(store, operation)("predictions", partition, pa.table({"score": [9.0, 9.0, 9.0]}))

    assert len(staged) == 1 and f"/{STAGING_DIR}/" in f"/{staged[0]}"
    assert store.read("predictions").column("score").to_pylist() == [0.1, 0.2]
    assert _all_files(store) == before  # no staging leftovers, no extra file in the dataset


def test_read_runs_a_query_over_the_filtered_rows(store: ParquetStore) -> None:
    store.write_partition("scores", {"model": "churn"}, pa.table({"score": [0.2, 0.9, 0.6], "id": [1, 2, 3]}))
    store.write_partition("scores", {"model": "fraud"}, pa.table({"score": [0.99], "id": [4]}))
    queried: list[list[str]] = []

    def high_first(relation):
        queried.append(relation.columns)
        return relation.filter("score > 0.5").order("score DESC")

    table = store.read("scores", filters={"model": "churn"}, columns=["id", "score"], query=high_first)
    assert table.column_names == ["id", "score"]
    assert table.column("id").to_pylist() == [2, 3]
    assert queried == [["id", "score"]]  # after the column selection, once
    assert store.read("scores", filters={"model": "none"}, query=high_first).num_rows == 0
    assert len(queried) == 1  # nothing to read: not called


def test_readers_see_whole_versions_while_a_partition_is_rewritten(store: ParquetStore) -> None:
    rows = 20_000
    store.write_partition("versions", {"k": "v"}, pa.table({"version": pa.array([0] * rows)}))
    stop = threading.Event()
    seen: list[tuple[int, list[int]]] = []
    errors: list[BaseException] = []
    reads_done = [0, 0]  # per reader: reads finished, with or without an error

    def reader(index: int) -> None:
        while not stop.is_set():
            try:
                table = store.read("versions")
                seen.append((table.num_rows, pc.unique(table.column("version")).to_pylist()))
            except BaseException as error:
                errors.append(error)
            reads_done[index] += 1

    readers = [threading.Thread(target=reader, args=(index,)) for index in range(2)]
    for thread in readers:
        thread.start()
    try:
        for version in range(1, 11):
            store.write_partition("versions", {"k": "v"}, pa.table({"version": pa.array([version] * rows)}))
            # A rewrite every few reads, not a write storm: the next rewrite waits until each
            # reader has finished a read begun after this one. (A reader whose 20 attempts all
            # failed here was once put down to a write storm; it was its DuckDB cursor, which
            # kept failing on the replaced object until the store began dropping a cursor after
            # a failed read: tests/integration/analytics/test_store_s3.py shows it on cue.)
            before = list(reads_done)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                now < then + 2 for now, then in zip(reads_done, before, strict=True)
            ):
                time.sleep(0.01)
    finally:
        stop.set()
        for thread in readers:
            thread.join(timeout=60)
    assert not errors, errors[:3]
    assert len(seen) >= 2
    assert all(count == rows and len(values) == 1 for count, values in seen), seen[:5]
    assert store.read("versions").column("version")[0].as_py() == 10


def test_verification_refuses_a_staged_file_that_differs(store: ParquetStore) -> None:
    staged = _fs_path(store.root) + f"/{STAGING_DIR}/check.parquet"
    store._write_staged(pa.table({"score": [1.0, 2.0]}), staged)
    store._verify_staged(staged, pa.table({"score": [3.0, 4.0]}))  # same shape passes
    with pytest.raises(StoreError, match="holds 2 rows instead of 3"):
        store._verify_staged(staged, pa.table({"score": [1.0, 2.0, 3.0]}))
    with pytest.raises(StoreError, match="schema"):
        store._verify_staged(staged, pa.table({"score": ["1", "2"]}))


def test_delete_partition(store: ParquetStore) -> None:
    _write_days(store)
    assert store.delete_partition("predictions", {"model": "fraud"}) == 3
    assert {p["model"] for p in store.list_partitions("predictions")} == {"churn"}
    assert store.delete_partition("predictions", {"model": "fraud"}) == 0
    with pytest.raises(InvalidName, match="at least one partition key"):
        store.delete_partition("predictions", {})


def test_empty_dataset_reads_as_no_data(store: ParquetStore) -> None:
    assert store.list_files("predictions") == []
    assert store.list_partitions("predictions") == []
    empty = store.read("predictions")
    assert (empty.num_rows, empty.num_columns) == (0, 0)
    assert store.read("predictions", columns=["score"]).column_names == ["score"]
    with pytest.raises(NoData, match="'predictions' has no data"):
        store.relation("predictions")
    _write_days(store)
    assert store.read("predictions", filters={"model": "nope"}).num_rows == 0
    assert store.read("predictions", filters={"label": "nope"}).num_rows == 0
    assert store.read("predictions", filters={"label": []}).num_rows == 0
    with pytest.raises(NoData, match="matching"):
        store.relation("predictions", filters={"model": "nope"})


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "_staging"])
def test_bad_dataset_names_are_refused_before_any_write(store: ParquetStore, bad: str) -> None:
    with pytest.raises(InvalidName, match="dataset name"):
        store.write_partition(bad, {"k": "v"}, pa.table({"a": [1]}))
    with pytest.raises(InvalidName):
        store.read(bad)
    with pytest.raises(InvalidName):
        store.dataset_uri(bad)
    assert _all_files(store) == []


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ({"a/b": "v"}, "partition key"),
        ({"../x": "v"}, "partition key"),
        ({"k": "../x"}, "partition 'k'"),
        ({"k": "a/b"}, "partition 'k'"),
        ({"k": "a\\b"}, "partition 'k'"),
        ({"k": ".."}, "partition 'k'"),
    ],
)
def test_bad_partitions_are_refused_before_any_write(
    store: ParquetStore, partition: dict, message: str
) -> None:
    with pytest.raises(InvalidName, match=message):
        store.write_partition("predictions", partition, pa.table({"a": [1]}))
    with pytest.raises(InvalidName, match=message):
        store.append("predictions", partition, pa.table({"a": [1]}))
    assert _all_files(store) == []


def test_bad_file_names_and_tables_are_refused(store: ParquetStore) -> None:
    for name in ("../x.parquet", "a/b.parquet", "x.csv", ".hidden.parquet"):
        with pytest.raises(InvalidName, match="file name"):
            store.write_partition("predictions", {"k": "v"}, pa.table({"a": [1]}), file_name=name)
    with pytest.raises(InvalidName, match="'k' repeat partition keys"):
        store.write_partition("predictions", {"k": "v"}, pa.table({"k": ["v"], "a": [1]}))
    with pytest.raises(StoreError, match=r"pyarrow\.Table"):
        store.write_partition("predictions", {"k": "v"}, {"a": [1]})  # type: ignore[arg-type]
    assert _all_files(store) == []


def test_identifiers_are_checked_against_the_schema(store: ParquetStore) -> None:
    _write_days(store)
    with pytest.raises(InvalidName, match="unknown column 'x\"; DROP"):
        store.read("predictions", columns=['x"; DROP TABLE t; --'])
    with pytest.raises(InvalidName, match="filter key"):
        store.read("predictions", filters={'x"; DROP': "1"})
    with pytest.raises(InvalidName, match="unknown column 'nope'"):
        store.read("predictions", filters={"nope": "1"})
    with pytest.raises(InvalidName, match="non-empty list"):
        store.read("predictions", columns=[])
    # A hostile filter value is a constant, not SQL: it simply matches nothing.
    assert store.read("predictions", filters={"label": "x' OR '1'='1"}).num_rows == 0


@pytest.mark.parametrize("damage", ["truncated", "garbled pages"])
def test_corrupt_file_is_named(store: ParquetStore, damage: str) -> None:
    scores = [float(i) for i in range(20_000)]
    store.write_partition("predictions", {"model": "churn"}, pa.table({"score": scores}))
    victim = store.write_partition("predictions", {"model": "fraud"}, pa.table({"score": scores}))
    data = bytearray(_read_bytes(store, victim))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[100:4000] = b"\xab" * 3900  # inside the first compressed data page; footer intact
    _overwrite(store, victim, bytes(data))

    with pytest.raises(CorruptParquet) as caught:
        store.read("predictions")
    assert caught.value.path == victim
    assert victim in str(caught.value)
    assert store.read("predictions", filters={"model": "churn"}).num_rows == len(scores)
    with pytest.raises(CorruptParquet, match=re.escape(victim)):
        store.read("predictions", columns=["score"], filters={"model": "fraud"})
    if damage == "truncated":
        # Without a footer even building the (lazy) relation fails, naming the file.
        with pytest.raises(CorruptParquet, match=re.escape(victim)):
            store.relation("predictions")
        with pytest.raises(CorruptParquet, match=re.escape(victim)):
            read_source(store.cursor(), store.dataset_uri("predictions"))


def test_store_pickles_as_its_configuration(store: ParquetStore) -> None:
    _write_days(store)
    store.connection()
    copy = pickle.loads(pickle.dumps(store))
    try:
        assert copy.config == store.config and copy.root == store.root
        assert copy.connection() is not store.connection()
        assert copy.read("predictions").num_rows == 12
    finally:
        copy.close()


def test_filter_values_must_be_values_or_lists(store: ParquetStore) -> None:
    _write_days(store)
    for bad in ({"model": {"a": 1}}, {"model": b"churn"}, {"model": None}, {"model": [None]}):
        with pytest.raises(InvalidName, match="'model'"):
            store.read("predictions", filters=bad)
    assert store.read("predictions", filters={"model": ("churn",), "date": dt.date(2026, 1, 2)}).num_rows == 2


def test_threads_read_concurrently_with_their_own_cursors(store: ParquetStore) -> None:
    _write_days(store)
    workers = 4
    barrier = threading.Barrier(workers)
    cursors: list[object] = [None] * workers
    connections: list[object] = [None] * workers
    counts: list[list[int]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                counts[index].append(store.read("predictions", filters={"model": "churn"}).num_rows)
                counts[index].append(store.relation("predictions").aggregate("count(*)").fetchone()[0])
            cursors[index] = store.cursor()
            connections[index] = store.connection()
            assert store.cursor() is cursors[index]  # stable within a thread
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert all(c == [6, 12] * 5 for c in counts)
    assert len({id(c) for c in cursors}) == workers  # objects kept alive above, so ids are distinct
    assert all(con is store.connection() for con in connections)
    assert store.cursor() not in cursors


def test_connection_is_recreated_in_a_forked_child(store: ParquetStore) -> None:
    _write_days(store)
    parent_connection = store.connection()
    parent_cursor = store.cursor()
    assert store.read("predictions").num_rows == 12
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        try:
            rows = store.read("predictions", filters={"model": "fraud"}).num_rows
            results.put(
                (
                    os.getpid(),
                    store.connection() is not parent_connection,
                    store.cursor() is not parent_cursor,
                    rows,
                )
            )
        except BaseException as error:
            results.put(repr(error))

    process = context.Process(target=child)
    process.start()
    outcome = results.get(timeout=60)
    process.join(timeout=30)
    assert process.exitcode == 0, outcome
    pid, new_connection, new_cursor, rows = outcome
    assert pid != os.getpid()
    assert (new_connection, new_cursor, rows) == (True, True, 6)
    assert store.connection() is parent_connection  # the parent keeps its own
    assert store.read("predictions").num_rows == 12


def test_duckdb_may_not_read_outside_the_root(store: ParquetStore, tmp_path) -> None:
    outside = _outside_uri(store, tmp_path, "outside")
    # Shares the root's name as a prefix: "<root>-sibling" must not pass as "<root>".
    sibling = store.root + "-sibling/x.parquet"
    for uri in (outside, sibling):
        _put_parquet(store, uri, pa.table({"secret": [42]}))
        with pytest.raises(AccessDenied, match="outside the directories"):
            read_source(store.cursor(), uri)
        with pytest.raises(duckdb.PermissionException):
            store.cursor().sql(f"SELECT * FROM read_parquet({_duckdb.sql_literal(uri)})").fetchall()
    _write_days(store)
    assert read_source(store.cursor(), store.dataset_uri("predictions")).aggregate("count(*)").fetchone() == (
        12,
    )


def test_read_source_accepts_files_folders_and_globs(store: ParquetStore) -> None:
    _write_days(store)
    one = store.list_files("predictions")[0].path
    cursor = store.cursor()
    assert read_source(cursor, one).aggregate("count(*)").fetchone() == (2,)
    folder = read_source(cursor, store.dataset_uri("predictions"))
    assert folder.aggregate("count(*)").fetchone() == (12,)
    assert {"model", "date"} <= set(folder.columns)  # hive columns from the folder layout
    glob = store.dataset_uri("predictions") + "/model=churn/*/*.parquet"
    assert read_source(cursor, glob).aggregate("count(*)").fetchone() == (6,)
    assert read_source(cursor, [one, glob]).aggregate("count(*)").fetchone() == (8,)
    with pytest.raises(NoData, match="no Parquet files match"):
        read_source(cursor, store.dataset_uri("missing"))
    with pytest.raises(NoData, match="does not exist"):
        read_source(cursor, store.dataset_uri("predictions") + "/nope.parquet")
    with pytest.raises(StoreError, match="no Parquet source"):
        read_source(cursor, [])
    with pytest.raises(StoreError, match="only local paths and s3://"):
        read_source(cursor, "http://example.com/x.parquet")


def test_staging_files_are_invisible_to_folder_reads(store: ParquetStore) -> None:
    _write_days(store)
    # A crash that skips cleanup (kill -9) leaves a staged file; readers of the root never see it.
    staged_uri = store.root + f"/{STAGING_DIR}/leftover.parquet"
    _put_parquet(store, staged_uri, pa.table({"score": [99.0], "label": ["staged"]}))
    assert read_source(store.cursor(), store.root).aggregate("count(*)").fetchone() == (12,)
    assert store.read("predictions").num_rows == 12
