"""The log buffer keeps rows column by column: the table it writes is the one the rows describe."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.contracts import FILE_SCHEMAS, INFERENCE_LOGS, REQUEST_ERRORS
from jobs.gateway.logbuffer import LogBuffer
from tests.unit.jobs.gateway.support import column_types, local_store
from tests.unit.jobs.gateway.test_logbuffer import DAY, NOON_US, PARTITION, log_rows

pytestmark = pytest.mark.unit

SEGMENTED = (*column_types(), ("segment_region", pa.string()))


def stored(root: Path, dataset: str) -> pa.Table:
    store = local_store(root)
    try:
        return store.read(dataset, filters={"date": DAY.isoformat()}).sort_by("request_id")
    finally:
        store.close()


def test_rows_added_one_by_one_and_in_batches_are_written_as_given(tmp_path: Path) -> None:
    rows = log_rows(7, prefix="col")
    rows[1]["timestamp"] = dt.datetime(2024, 3, 1, 13, tzinfo=dt.UTC)  # aware datetime, not micros
    rows[2]["segment_region"] = "north"
    rows[3]["score"] = None
    del rows[4]["income"]  # a missing key is a null, as from a row dict
    rows[5]["income"] = 60_000  # an int in a double column
    rows[6]["unknown_column"] = "ignored"  # outside the columns declared for the rows
    buffer = LogBuffer(local_store(tmp_path / "data"), tmp_path / "spill", flush_interval_s=60.0)
    buffer.start()
    try:
        buffer.add_rows(INFERENCE_LOGS, PARTITION, SEGMENTED, rows[:1])
        buffer.add_rows(INFERENCE_LOGS, PARTITION, SEGMENTED, rows[1:2])
        buffer.add_rows(INFERENCE_LOGS, PARTITION, SEGMENTED, rows[2:])
        assert buffer.stats()["rows_buffered"] == 7
        assert buffer.flush(timeout_s=30)
    finally:
        buffer.close(timeout_s=5)

    table = stored(tmp_path / "data", INFERENCE_LOGS)
    schema = pa.schema([*FILE_SCHEMAS[INFERENCE_LOGS], *(pa.field(n, t) for n, t in SEGMENTED)])
    expected = pa.Table.from_pylist(rows, schema=schema).sort_by("request_id")
    assert table.select(schema.names).cast(schema).equals(expected)
    assert table.column("segment_region").to_pylist().count("north") == 1
    assert buffer.stats()["rows_written"] == 7


def test_rows_whose_values_do_not_fit_are_set_aside_with_their_values(tmp_path: Path) -> None:
    good = {
        "version": "1",
        "request_id": "err-1",
        "timestamp": NOON_US,
        "status_code": 500,
        "error_kind": "model_error",
        "latency_ms": 2.0,
        "message": "boom",
    }
    unconvertible = dict(good, request_id="err-2", status_code="five hundred")
    buffer = LogBuffer(local_store(tmp_path / "data"), tmp_path / "spill", flush_interval_s=60.0)
    buffer.start()
    try:
        buffer.add_rows(REQUEST_ERRORS, PARTITION, (), [good, unconvertible])
        buffer.add_rows(INFERENCE_LOGS, PARTITION, column_types(), log_rows(3))
        assert buffer.flush(timeout_s=30)
    finally:
        buffer.close(timeout_s=5)

    stats = buffer.stats()
    assert (stats["rows_rejected"], stats["rows_written"], stats["rows_dropped"]) == (2, 3, 0)
    [aside] = (tmp_path / "spill" / "rejected").glob("*.jsonl")
    header, *lines = aside.read_text().splitlines()
    assert json.loads(header)["dataset"] == REQUEST_ERRORS
    assert [json.loads(line)["request_id"] for line in lines] == ["err-1", "err-2"]
    assert json.loads(lines[1])["status_code"] == "five hundred"
    assert stored(tmp_path / "data", INFERENCE_LOGS).num_rows == 3
