"""Data contracts: valid tables pass, every kind of breach is reported precisely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs import contracts
from jobs.contracts import (
    INFERENCE_LOGS,
    LABELS,
    METRICS,
    TRAINING_DATA,
    ContractError,
    conform_table,
    logical_schema,
    require_valid,
    validate_inference_table,
    validate_labels_table,
    validate_metrics_table,
    validate_partition,
    validate_training_table,
)

pytestmark = pytest.mark.unit

FEATURES = ["income", "home_ownership"]
DAY = "2024-03-01"
PARTITION = {"project": "credit-risk", "model": "credit-default", "environment": "prod", "date": DAY}
NOON = datetime(2024, 3, 1, 12, tzinfo=UTC)


def inference_table(rows: int = 4, **overrides: pa.Array) -> pa.Table:
    columns = {
        "version": pa.array(["1"] * rows),
        "request_id": pa.array([f"req-{i}" for i in range(rows)]),
        "timestamp": pa.array([NOON + timedelta(minutes=i) for i in range(rows)], contracts.UTC_MICROS),
        "income": pa.array([50_000.0 + i for i in range(rows)]),
        "home_ownership": pa.array(["rent", "own", None, "mortgage"][:rows] + ["rent"] * max(0, rows - 4)),
        "segment_region": pa.array(["north"] * rows),
        "prediction": pa.array([0.0, 1.0] * (rows // 2) + [0.0] * (rows % 2)),
        "score": pa.array([0.1, 0.9] * (rows // 2) + [0.2] * (rows % 2)),
        "latency_ms": pa.array([12.5] * rows),
    }
    columns.update(overrides)
    return pa.table(columns)


def kinds(violations: list[contracts.ContractViolation]) -> set[tuple[str, str | None]]:
    return {(v.kind, v.column) for v in violations}


# --------------------------------------------------------------------------- inference logs


def test_valid_inference_table_passes_with_its_partition() -> None:
    assert validate_inference_table(inference_table(), FEATURES, partition=PARTITION) == []


def test_missing_fixed_column_is_reported() -> None:
    table = inference_table().drop_columns(["timestamp"])
    assert kinds(validate_inference_table(table, FEATURES)) == {("missing_column", "timestamp")}


def test_missing_feature_column_is_reported() -> None:
    table = inference_table().drop_columns(["income"])
    assert kinds(validate_inference_table(table, FEATURES)) == {("missing_column", "income")}


@pytest.mark.parametrize(
    ("column", "array", "column_reported"),
    [
        ("score", pa.array(["0.1", "0.9", "0.2", "0.3"]), "score"),
        ("request_id", pa.array([1, 2, 3, 4]), "request_id"),
        ("timestamp", pa.array([NOON.replace(tzinfo=None)] * 4, pa.timestamp("us")), "timestamp"),
        ("timestamp", pa.array([NOON] * 4, pa.timestamp("ms", tz="UTC")), "timestamp"),
        ("income", pa.array([1, 2, 3, 4], pa.int64()), "income"),
        ("segment_region", pa.array([1.0, 2.0, 3.0, 4.0]), "segment_region"),
    ],
)
def test_retyped_column_is_reported(column: str, array: pa.Array, column_reported: str) -> None:
    violations = validate_inference_table(inference_table(**{column: array}), FEATURES)
    assert ("wrong_type", column_reported) in kinds(violations)


def test_duplicate_request_ids_are_counted() -> None:
    table = inference_table(request_id=pa.array(["a", "a", "a", "b"]))
    [violation] = validate_inference_table(table, FEATURES)
    assert (violation.kind, violation.column, violation.rows) == ("duplicate_key", "request_id", 2)


def test_null_in_required_column_is_reported() -> None:
    table = inference_table(request_id=pa.array(["a", None, "c", "d"]))
    violations = validate_inference_table(table, FEATURES)
    assert ("null_values", "request_id") in kinds(violations)
    assert next(v for v in violations if v.kind == "null_values").rows == 1


def test_nulls_in_features_and_outputs_are_allowed() -> None:
    table = inference_table(income=pa.array([None, 1.0, None, 2.0]), score=pa.array([None] * 4, pa.float64()))
    assert validate_inference_table(table, FEATURES) == []


def test_score_outside_unit_interval_and_negative_latency_are_bad_values() -> None:
    table = inference_table(
        score=pa.array([0.5, 1.5, float("nan"), 0.1]), latency_ms=pa.array([1.0, -2.0, 3.0, 4.0])
    )
    violations = {(v.kind, v.column): v.rows for v in validate_inference_table(table, FEATURES)}
    assert violations == {("bad_value", "score"): 2, ("bad_value", "latency_ms"): 1}


def test_unexpected_column_is_reported() -> None:
    table = inference_table().append_column("customer_email", pa.array(["x"] * 4))
    assert kinds(validate_inference_table(table, FEATURES)) == {("unexpected_column", "customer_email")}


@pytest.mark.parametrize("feature", ["score", "segment_income", "timestamp", "1st", "project", "label"])
def test_reserved_or_malformed_feature_names_are_refused(feature: str) -> None:
    violations = validate_inference_table(inference_table(), [*FEATURES, feature])
    assert ("bad_column_name", feature) in kinds(violations)


def test_version_must_be_a_key_segment() -> None:
    table = inference_table(version=pa.array(["1", "../2", "1", "1"]))
    assert kinds(validate_inference_table(table, FEATURES)) == {("bad_key_segment", "version")}


def test_rows_outside_the_partition_day_are_counted() -> None:
    stamps = [NOON, NOON + timedelta(days=1), NOON - timedelta(hours=13), NOON]
    table = inference_table(timestamp=pa.array(stamps, contracts.UTC_MICROS))
    [violation] = validate_inference_table(table, FEATURES, partition=PARTITION)
    assert (violation.kind, violation.column, violation.rows) == ("partition_mismatch", "timestamp", 2)


def test_partition_columns_read_back_must_match_the_partition() -> None:
    table = inference_table().append_column("model", pa.array(["credit-default"] * 3 + ["churn"]))
    [violation] = validate_inference_table(table, FEATURES, partition=PARTITION)
    assert (violation.kind, violation.column, violation.rows) == ("partition_mismatch", "model", 1)


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    ("partition", "expected"),
    [
        ({**PARTITION, "project": "credit risk"}, ("bad_key_segment", "project")),
        ({**PARTITION, "model": "../../etc"}, ("bad_key_segment", "model")),
        ({**PARTITION, "environment": ""}, ("bad_key_segment", "environment")),
        ({**PARTITION, "date": "2024-13-01"}, ("bad_key_segment", "date")),
        ({**PARTITION, "date": "20240301"}, ("bad_key_segment", "date")),
        ({k: v for k, v in PARTITION.items() if k != "environment"}, ("bad_partition", None)),
        ({"date": DAY, **{k: v for k, v in PARTITION.items() if k != "date"}}, ("bad_partition", None)),
    ],
)
def test_bad_partitions_are_refused(partition: dict[str, str], expected: tuple[str, str | None]) -> None:
    assert expected in kinds(validate_partition(INFERENCE_LOGS, partition))


def test_key_segment_problem_uses_the_store_rules() -> None:
    assert contracts.key_segment_problem("credit-default_2") is None
    assert contracts.key_segment_problem("a/b") is not None
    assert contracts.key_segment_problem("a.b") is not None
    assert contracts.key_segment_problem("x" * 129) is not None
    assert contracts.key_segment_problem(None) is not None


def test_unknown_dataset_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        validate_partition("predictions", {"project": "p"})


# --------------------------------------------------------------------------- labels, training, metrics


def labels_table(**overrides: pa.Array) -> pa.Table:
    columns = {
        "request_id": pa.array(["req-0", "req-1"]),
        "label": pa.array([0.0, 1.0]),
        "label_timestamp": pa.array([NOON + timedelta(days=2)] * 2, contracts.UTC_MICROS),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_labels_contract() -> None:
    assert validate_labels_table(labels_table(), partition=PARTITION) == []
    missing = labels_table().drop_columns(["label_timestamp"])
    assert kinds(validate_labels_table(missing)) == {("missing_column", "label_timestamp")}
    extra = labels_table().append_column("note", pa.array(["a", "b"]))
    assert kinds(validate_labels_table(extra)) == {("unexpected_column", "note")}
    retyped = labels_table(label=pa.array([True, False]))
    assert kinds(validate_labels_table(retyped)) == {("wrong_type", "label")}


def test_training_contract() -> None:
    table = (
        inference_table().select([*FEATURES, "segment_region"]).append_column("label", pa.array([0.0] * 4))
    )
    partition = {"project": "credit-risk", "model": "credit-default"}
    assert validate_training_table(table, FEATURES, partition=partition) == []
    assert kinds(validate_training_table(table.drop_columns(["label"]), FEATURES)) == {
        ("missing_column", "label")
    }
    assert ("bad_partition", None) in kinds(validate_training_table(table, FEATURES, partition=PARTITION))


def metrics_table(**overrides: pa.Array) -> pa.Table:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    columns = {
        "version": pa.array(["1", "1"]),
        "window_start": pa.array([start] * 2, contracts.UTC_MICROS),
        "window_end": pa.array([start + timedelta(days=1)] * 2, contracts.UTC_MICROS),
        "column": pa.array(["income", "income"]),
        "metric": pa.array(["psi", "ks"]),
        "statistic": pa.array([0.31, 0.2]),
        "p_value": pa.array([None, 0.001], pa.float64()),
        "threshold": pa.array([0.2, 0.05]),
        "drifted": pa.array([True, True]),
        "status": pa.array(["drift", "drift"]),
        "n_reference": pa.array([20_000, 20_000], pa.int64()),
        "n_current": pa.array([3_000, 3_000], pa.int64()),
        "reason": pa.array([None, None], pa.string()),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_metrics_contract() -> None:
    assert validate_metrics_table(metrics_table(), partition=PARTITION) == []
    bad_status = metrics_table(status=pa.array(["drift", "alarm"]))
    assert kinds(validate_metrics_table(bad_status)) == {("bad_value", "status")}
    duplicate = metrics_table(metric=pa.array(["psi", "psi"]))
    assert kinds(validate_metrics_table(duplicate)) == {("duplicate_key", None)}
    start = datetime(2024, 3, 1, tzinfo=UTC)
    inverted = metrics_table(window_end=pa.array([start] * 2, contracts.UTC_MICROS))
    assert kinds(validate_metrics_table(inverted)) == {("bad_value", "window_end")}
    retyped = metrics_table(n_current=pa.array([1.0, 2.0]))
    assert kinds(validate_metrics_table(retyped)) == {("wrong_type", "n_current")}


# --------------------------------------------------------------------------- helpers


def test_require_valid_raises_with_every_violation() -> None:
    table = inference_table().drop_columns(["timestamp", "income"])
    violations = validate_inference_table(table, FEATURES)
    require_valid([])
    with pytest.raises(ContractError) as raised:
        require_valid(violations)
    assert raised.value.violations == tuple(violations)
    assert "timestamp" in str(raised.value) and "income" in str(raised.value)


def test_conform_table_fixes_harmless_variants_only() -> None:
    table = inference_table(
        income=pa.array([1, 2, 3, 4], pa.int32()),
        request_id=pa.array(["a", "b", "c", "d"], pa.large_string()),
        timestamp=pa.array([NOON] * 4, pa.timestamp("ms", tz="UTC")),
    ).append_column("project", pa.array(["credit-risk"] * 4))
    assert validate_inference_table(table, FEATURES) != []
    conformed = conform_table(table, INFERENCE_LOGS, FEATURES)
    assert "project" not in conformed.column_names
    assert conformed.schema.field("income").type == pa.float64()
    assert validate_inference_table(conformed, FEATURES, partition=PARTITION) == []
    naive = inference_table(timestamp=pa.array([NOON.replace(tzinfo=None)] * 4, pa.timestamp("us")))
    assert ("wrong_type", "timestamp") in kinds(
        validate_inference_table(conform_table(naive, INFERENCE_LOGS, FEATURES), FEATURES)
    )


def test_logical_schema_puts_partition_keys_first() -> None:
    schema = logical_schema(INFERENCE_LOGS, {"income": pa.float64()})
    assert schema.names[:4] == ["project", "model", "environment", "date"]
    assert schema.names[-1] == "income"
    with pytest.raises(ValueError, match=r"analytics\.profile"):
        logical_schema(contracts.REFERENCE_PROFILES)


def test_tables_round_trip_through_the_store_and_still_validate(tmp_path) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    try:
        store.write_partition(INFERENCE_LOGS, PARTITION, inference_table())
        store.write_partition(LABELS, PARTITION, labels_table())
        store.write_partition(METRICS, PARTITION, metrics_table())
        training_partition = {"project": "credit-risk", "model": "credit-default"}
        training = inference_table().select(FEATURES).append_column("label", pa.array([1.0] * 4))
        store.write_partition(TRAINING_DATA, training_partition, training)

        logs = store.read(INFERENCE_LOGS, filters={"date": DAY})
        assert set(PARTITION) <= set(logs.column_names)
        assert validate_inference_table(logs, FEATURES, partition=PARTITION) == []
        assert validate_labels_table(store.read(LABELS), partition=PARTITION) == []
        assert validate_metrics_table(store.read(METRICS), partition=PARTITION) == []
        assert (
            validate_training_table(store.read(TRAINING_DATA), FEATURES, partition=training_partition) == []
        )
    finally:
        store.close()


@pytest.mark.parametrize(
    "rows", [600, contracts._SMALL_TABLE_ROWS + 600], ids=["counted-in-python", "grouped"]
)
def test_composite_key_duplicates_are_counted_alike_small_or_large(rows: int) -> None:
    """Small tables are counted in Python, large ones grouped by Arrow: the same violations."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    # Every key once, then 3 keys twice and 1 key three times (a NULL column among them):
    # 4 repeated values, 5 extra rows.
    columns = [f"c{i % 7}" if i % 11 else None for i in range(rows - 5)]
    repeated = (0, 2, 3, 4, 4)  # row 0's column is NULL: NULLs are equal keys
    extra = [columns[i] for i in repeated]
    metrics = pa.array([f"m{i}" for i in range(rows - 5)] + [f"m{i}" for i in repeated])
    table = metrics_table(
        version=pa.array(["1"] * rows),
        window_start=pa.array([start] * rows, contracts.UTC_MICROS),
        window_end=pa.array([start + timedelta(days=1)] * rows, contracts.UTC_MICROS),
        column=pa.array(columns + extra),
        metric=metrics,
        statistic=pa.array([0.1] * rows),
        p_value=pa.array([None] * rows, pa.float64()),
        threshold=pa.array([0.2] * rows),
        drifted=pa.array([False] * rows),
        status=pa.array(["ok"] * rows),
        n_reference=pa.array([1] * rows, pa.int64()),
        n_current=pa.array([1] * rows, pa.int64()),
        reason=pa.array([None] * rows, pa.string()),
    )
    (violation,) = [v for v in validate_metrics_table(table) if v.kind == "duplicate_key"]
    assert violation.rows == 5
    assert "4 value(s) repeat, 5 extra row(s)" in violation.message
