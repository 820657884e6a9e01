"""The log buffer against a real local Parquet store and real spill files (no mocks)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.contracts import INFERENCE_LOGS, LABELS, REQUEST_ERRORS
from jobs.gateway.logbuffer import (
    Chunk,
    LogBuffer,
    read_spill_file,
    release_stale_claims,
    spill_files,
    split_unique,
    write_spill_file,
)
from tests.unit.jobs.gateway.support import MODEL, PROJECT, column_types, features, local_store

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 3, 1)
PARTITION = {"project": PROJECT, "model": MODEL, "environment": "prod", "date": DAY.isoformat()}
NOON_US = int(dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC).timestamp()) * 1_000_000


def log_rows(count: int, start: int = 0, prefix: str = "req") -> list[dict[str, object]]:
    values = features()
    values = {k: (float(v) if isinstance(v, int) else v) for k, v in values.items()}
    return [
        {
            "version": "1",
            "request_id": f"{prefix}-{start + i}",
            "timestamp": NOON_US + start + i,
            "prediction": float(i % 2),
            "score": 0.25,
            "latency_ms": 1.5,
            **values,
        }
        for i in range(count)
    ]


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s} s")


class Outage:
    """Makes the local store root unusable (a regular file in its place) and restores it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.away = root.with_name(root.name + "-away")

    def start(self) -> None:
        if self.root.exists():
            os.replace(self.root, self.away)
        self.root.write_text("not a directory: the store is down\n")

    def stop(self) -> None:
        self.root.unlink()
        if self.away.exists():
            os.replace(self.away, self.root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_buffer(root: Path, tmp_path: Path) -> Iterator[Callable[..., LogBuffer]]:
    made: list[LogBuffer] = []

    def make(**options: object) -> LogBuffer:
        settings = {"flush_interval_s": 60.0, "retry_interval_s": 0.1, **options}
        buffer = LogBuffer(local_store(root), tmp_path / "spill", **settings)  # type: ignore[arg-type]
        made.append(buffer)
        return buffer

    yield make
    for buffer in made:
        buffer.close(timeout_s=5)


def stored_ids(root: Path, dataset: str = INFERENCE_LOGS) -> list[str]:
    store = local_store(root)
    try:
        table = store.read(dataset)
    finally:
        store.close()
    return table.column("request_id").to_pylist() if table.num_rows else []


def test_rows_reach_the_store_with_the_contract_layout(make_buffer, root: Path) -> None:
    buffer = make_buffer()
    buffer.start()
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(300))
    assert buffer.stats()["rows_buffered"] == 300
    assert buffer.flush(timeout_s=30)

    store = local_store(root)
    table = store.read(INFERENCE_LOGS, filters={"date": DAY.isoformat()})
    store.close()
    assert table.num_rows == 300
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"req-{i}" for i in range(300))
    assert table.schema.field("timestamp").type.tz in ("UTC", "Etc/UTC")
    assert table.column("income").to_pylist()[0] == 52_000.0
    stats = buffer.stats()
    assert (stats["rows_written"], stats["rows_spilled"], stats["rows_buffered"]) == (300, 0, 0)
    assert stats["files_written"] == 1


def test_reaching_flush_rows_wakes_the_flusher(make_buffer, root: Path) -> None:
    buffer = make_buffer(flush_rows=100)
    buffer.start()
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(150))
    # The flush interval is a minute: only the size trigger can write the rows this soon.
    wait_for(lambda: buffer.stats()["rows_written"] == 150)
    assert len(stored_ids(root)) == 150


def test_outage_spills_to_disk_and_replays_every_row_exactly_once(
    make_buffer, root: Path, tmp_path: Path
) -> None:
    buffer = make_buffer()
    buffer.start()
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(100, 0))
    buffer.flush()
    outage = Outage(root)
    outage.start()
    for start in (100, 250, 400):
        buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(150, start))
        buffer.flush()
    wait_for(lambda: buffer.stats()["rows_spilled"] == 450)
    stats = buffer.stats()
    assert stats["store_available"] == 0
    assert stats["store_errors"] >= 1
    assert buffer.spill_file_count() >= 3
    assert all(f.suffix == ".arrow" for f in spill_files(tmp_path / "spill"))

    outage.stop()
    wait_for(lambda: buffer.spill_file_count() == 0)
    ids = stored_ids(root)
    assert len(ids) == 550
    assert len(set(ids)) == 550
    stats = buffer.stats()
    assert stats["rows_replayed"] == 450
    assert stats["rows_written"] == 550
    assert stats["store_available"] == 1
    assert stats["rows_dropped"] == 0


def error_rows(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "version": "2",
            "request_id": f"err-{start + i}",
            "timestamp": NOON_US + start + i,
            "status_code": 500,
            "error_kind": "model_error" if i % 2 else "bad_output",
            "latency_ms": 2.0,
            "message": "ValueError: boom",
        }
        for i in range(count)
    ]


def test_request_errors_are_written_spilled_and_replayed_like_the_log(
    make_buffer, root: Path, tmp_path: Path
) -> None:
    buffer = make_buffer()
    buffer.start()
    buffer.add_rows(REQUEST_ERRORS, PARTITION, (), error_rows(10))
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(5))
    assert buffer.flush(timeout_s=30)
    assert len(stored_ids(root, REQUEST_ERRORS)) == 10
    assert len(stored_ids(root)) == 5  # the inference log holds predictions only
    outage = Outage(root)
    outage.start()
    buffer.add_rows(REQUEST_ERRORS, PARTITION, (), error_rows(20, 10))
    buffer.flush()
    wait_for(lambda: buffer.stats()["rows_spilled"] == 20)
    assert buffer.stats()["rows_written"] == 15  # nothing reached the store during the outage
    outage.stop()
    wait_for(lambda: buffer.spill_file_count() == 0)
    assert sorted(stored_ids(root, REQUEST_ERRORS)) == sorted(f"err-{i}" for i in range(30))
    store = local_store(root)
    try:
        table = store.read(REQUEST_ERRORS, filters={"date": DAY.isoformat()})
    finally:
        store.close()
    assert set(table.column("error_kind").to_pylist()) == {"model_error", "bad_output"}
    assert set(table.column("version").to_pylist()) == {"2"}
    assert buffer.stats()["rows_dropped"] == 0


def test_request_errors_breaking_the_contract_are_set_aside(make_buffer, root: Path, tmp_path: Path) -> None:
    buffer = make_buffer()
    buffer.start()
    bad = [{**row, "error_kind": "client_error"} for row in error_rows(3)]
    buffer.add_rows(REQUEST_ERRORS, PARTITION, (), bad)
    buffer.flush()
    assert buffer.stats()["rows_rejected"] == 3
    assert stored_ids(root, REQUEST_ERRORS) == []


def test_replaying_the_same_spill_file_twice_does_not_duplicate_rows(root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    table = pa.Table.from_pylist(log_rows(40), schema=_schema())
    chunk = Chunk(
        INFERENCE_LOGS, PARTITION, table, "part-20240301T120000000000-abcdef012345.parquet", _features()
    )
    first = write_spill_file(spill, chunk)
    # A process that published the file but died before deleting its spill copy leaves two copies.
    shutil.copy(first, first.with_name("0-copy.arrow"))
    buffer = LogBuffer(local_store(root), spill)
    assert buffer.replay_spilled() == 2
    assert spill_files(spill) == []
    assert sorted(stored_ids(root)) == sorted(f"req-{i}" for i in range(40))


def test_close_writes_everything_still_buffered(make_buffer, root: Path) -> None:
    buffer = make_buffer()
    buffer.start()
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(75))
    buffer.add_rows(
        LABELS, PARTITION, (), [{"request_id": "req-1", "label": 1.0, "label_timestamp": NOON_US}]
    )
    buffer.close(timeout_s=30)
    assert len(stored_ids(root)) == 75
    assert stored_ids(root, LABELS) == ["req-1"]


def test_close_during_an_outage_spills_and_the_next_process_replays(
    make_buffer, root: Path, tmp_path: Path
) -> None:
    outage = Outage(root)
    outage.start()
    buffer = make_buffer()
    buffer.start()
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(120))
    buffer.close(timeout_s=10)
    assert buffer.stats()["rows_spilled"] == 120
    assert sum(read_spill_file(p).table.num_rows for p in spill_files(tmp_path / "spill")) == 120

    outage.stop()
    successor = make_buffer()
    successor.start()
    wait_for(lambda: successor.spill_file_count() == 0)
    assert sorted(stored_ids(root)) == sorted(f"req-{i}" for i in range(120))
    assert successor.stats()["rows_replayed"] == 120


def test_a_full_buffer_spills_on_the_request_path(make_buffer, tmp_path: Path) -> None:
    buffer = make_buffer(flush_rows=50, max_rows=100)  # not started: nothing drains the buffer
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(60))
    assert buffer.stats()["buffer_full"] == 0
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(60, 60))
    stats = buffer.stats()
    assert stats["buffer_full"] == 1
    assert stats["rows_buffered"] == 0
    assert stats["rows_spilled"] == 120
    assert sum(read_spill_file(p).table.num_rows for p in spill_files(tmp_path / "spill")) == 120


def test_a_repeated_request_id_goes_to_a_second_file(make_buffer, root: Path) -> None:
    buffer = make_buffer()
    buffer.start()
    rows = log_rows(10)
    retry = dict(rows[3], prediction=1.0)
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), [*rows, retry])
    assert buffer.flush()
    ids = stored_ids(root)
    assert len(ids) == 11
    assert ids.count("req-3") == 2
    stats = buffer.stats()
    assert stats["duplicate_splits"] == 1
    assert stats["files_written"] == 2


def test_rows_breaking_the_contract_are_set_aside_not_written(
    make_buffer, root: Path, tmp_path: Path
) -> None:
    buffer = make_buffer()
    buffer.start()
    bad = [dict(row, score=1.5) for row in log_rows(5)]
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), bad)
    buffer.add_rows(INFERENCE_LOGS, {**PARTITION, "environment": "staging"}, column_types(), log_rows(5))
    assert buffer.flush()
    assert buffer.stats()["rows_rejected"] == 5
    rejected = list((tmp_path / "spill" / "rejected").glob("*.arrow"))
    assert len(rejected) == 1
    assert read_spill_file(rejected[0]).table.column("score").to_pylist() == [1.5] * 5
    assert len(stored_ids(root)) == 5  # only the valid staging rows


def test_rows_are_kept_in_memory_when_the_disk_refuses_and_dropped_only_beyond_the_limit(
    root: Path, tmp_path: Path
) -> None:
    outage = Outage(root)
    outage.start()
    spill = tmp_path / "spill"
    spill.write_text("the spill folder is a file: the disk refuses")
    buffer = LogBuffer(local_store(root), spill, flush_rows=50, max_rows=100, flush_interval_s=60)
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(100))  # full: spill fails, rows kept
    stats = buffer.stats()
    assert (stats["spill_errors"], stats["rows_dropped"], stats["rows_buffered"]) == (1, 0, 100)
    buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(100, 100))  # beyond the limit
    stats = buffer.stats()
    assert stats["rows_dropped"] == 100
    assert stats["rows_buffered"] == 100

    spill.unlink()
    outage.stop()
    buffer.close(timeout_s=10)  # the kept rows are spilled at last
    assert sum(read_spill_file(p).table.num_rows for p in spill_files(spill)) == 100


def test_claims_of_dead_processes_are_released(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    table = pa.Table.from_pylist(log_rows(3), schema=_schema())
    path = write_spill_file(spill, Chunk(INFERENCE_LOGS, PARTITION, table, "part-x.parquet", _features()))
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(finished.stdout)
    path.rename(path.with_name(f"{path.name}.claimed-{dead_pid}"))
    alive = write_spill_file(spill, Chunk(INFERENCE_LOGS, PARTITION, table, "part-y.parquet", _features()))
    alive.rename(alive.with_name(f"{alive.name}.claimed-{os.getpid()}"))
    assert spill_files(spill) == []
    assert release_stale_claims(spill) == 1
    assert spill_files(spill) == [path]


def test_spill_files_round_trip_the_chunk(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(log_rows(7), schema=_schema())
    chunk = Chunk(INFERENCE_LOGS, PARTITION, table, "part-abc.parquet", _features())
    path = write_spill_file(tmp_path, chunk)
    back = read_spill_file(path)
    assert back.table.equals(table)
    assert (back.dataset, dict(back.partition), back.file_name) == (
        INFERENCE_LOGS,
        PARTITION,
        "part-abc.parquet",
    )
    assert back.feature_columns == _features()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_split_unique_keeps_every_row() -> None:
    table = pa.table({"request_id": ["a", "b", "a", "c", "a"], "value": [1, 2, 3, 4, 5]})
    parts = split_unique(table)
    assert [p.column("request_id").to_pylist() for p in parts] == [["a", "b", "c"], ["a"], ["a"]]
    assert sum(p.num_rows for p in parts) == 5
    assert split_unique(table.slice(1, 2))[0].num_rows == 2


def _schema() -> pa.Schema:
    from jobs.contracts import INFERENCE_SCHEMA

    return pa.schema([*INFERENCE_SCHEMA, *(pa.field(n, t) for n, t in column_types())])


def _features() -> tuple[str, ...]:
    return tuple(name for name, _ in column_types())
