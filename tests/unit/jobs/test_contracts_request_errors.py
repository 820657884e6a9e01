"""The ``request_errors`` contract: failed requests with their version, apart from the inference log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs import contracts
from jobs.contracts import (
    ERROR_KINDS,
    MAX_ERROR_MESSAGE_LENGTH,
    REQUEST_ERRORS,
    logical_schema,
    partition_keys,
    validate_request_errors_table,
)

pytestmark = pytest.mark.unit

DAY = "2024-03-01"
PARTITION = {"project": "credit-risk", "model": "credit-default", "environment": "prod", "date": DAY}
NOON = datetime(2024, 3, 1, 12, tzinfo=UTC)


def errors_table(rows: int = 3, **overrides: pa.Array) -> pa.Table:
    columns = {
        "version": pa.array(["2"] * rows),
        "request_id": pa.array([f"req-{i}" for i in range(rows)]),
        "timestamp": pa.array([NOON + timedelta(seconds=i) for i in range(rows)], contracts.UTC_MICROS),
        "status_code": pa.array([500] * rows, pa.int32()),
        "error_kind": pa.array([ERROR_KINDS[i % len(ERROR_KINDS)] for i in range(rows)]),
        "latency_ms": pa.array([3.5] * rows),
        "message": pa.array(["ValueError: boom"] * (rows - 1) + [None]),
    }
    columns.update(overrides)
    return pa.table(columns)


def kinds(violations: list[contracts.ContractViolation]) -> set[tuple[str, str | None]]:
    return {(v.kind, v.column) for v in violations}


def test_request_errors_are_a_dataset_partitioned_like_the_inference_log() -> None:
    assert REQUEST_ERRORS in contracts.DATASETS
    assert partition_keys(REQUEST_ERRORS) == partition_keys(contracts.INFERENCE_LOGS)
    assert logical_schema(REQUEST_ERRORS).names[:4] == ["project", "model", "environment", "date"]
    assert validate_request_errors_table(errors_table(), partition=PARTITION) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"error_kind": pa.array(["model_error", "oops", "timeout"])}, ("bad_value", "error_kind")),
        ({"status_code": pa.array([500, 422, 503], pa.int32())}, ("bad_value", "status_code")),
        ({"status_code": pa.array([500, 500, 500], pa.int64())}, ("wrong_type", "status_code")),
        ({"message": pa.array(["x" * (MAX_ERROR_MESSAGE_LENGTH + 1), "a", "b"])}, ("bad_value", "message")),
        ({"latency_ms": pa.array([-1.0, 1.0, 1.0])}, ("bad_value", "latency_ms")),
        ({"version": pa.array(["2", None, "2"])}, ("null_values", "version")),
        ({"version": pa.array(["2", "../x", "2"])}, ("bad_key_segment", "version")),
        ({"request_id": pa.array(["a", "a", "b"])}, ("duplicate_key", "request_id")),
        ({"prediction": pa.array([1.0, 0.0, 1.0])}, ("unexpected_column", "prediction")),
    ],
)
def test_each_breach_is_named(overrides: dict[str, pa.Array], expected: tuple[str, str]) -> None:
    assert expected in kinds(validate_request_errors_table(errors_table(**overrides)))


def test_rows_off_the_partition_day_are_refused() -> None:
    late = pa.array([NOON + timedelta(days=1)] * 3, contracts.UTC_MICROS)
    violations = validate_request_errors_table(errors_table(timestamp=late), partition=PARTITION)
    assert kinds(violations) == {("partition_mismatch", "timestamp")}


def test_rows_round_trip_through_the_store(tmp_path) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    try:
        store.write_partition(REQUEST_ERRORS, PARTITION, errors_table())
        back = store.read(REQUEST_ERRORS, filters={"date": DAY})
    finally:
        store.close()
    assert back.num_rows == 3
    assert validate_request_errors_table(back, partition=PARTITION) == []
