"""Monthly compaction of the metrics, segment metrics, and the columnar drift matrix.

Each store test runs on a local folder and on SeaweedFS S3 (``store_config``).
"""

from __future__ import annotations

import math
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics import metrics
from analytics.metrics import InvalidQuery, MetricsQuery, MetricsReader
from analytics.store import ParquetStore, StoreConfig
from jobs.contracts import METRICS, METRICS_SCHEMA, SEGMENT_METRICS, SEGMENT_METRICS_SCHEMA

PARTITION = {"project": "p", "model": "m", "environment": "prod"}
# Across a month boundary: two monthly files.
DAYS = [date(2024, 1, 29) + timedelta(days=i) for i in range(6)]


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _row(day: date, column: str, metric: str, **fields: object) -> dict:
    start = _utc(day)
    return {
        "version": "1",
        "window_start": start,
        "window_end": start + timedelta(days=1),
        "column": column,
        "metric": metric,
        "statistic": None,
        "p_value": None,
        "threshold": None,
        "drifted": None,
        "status": "ok",
        "n_reference": 1000,
        "n_current": 500,
        "reason": None,
        **fields,
    }


def _day_table(day: date, statistic: float) -> pa.Table:
    rows = [
        _row(
            day,
            column,
            "drift",
            statistic=statistic,
            threshold=0.1,
            drifted=statistic > 0.1,
            status="drift" if statistic > 0.1 else "ok",
            reason="method=psi: drift when statistic > threshold",
        )
        for column in ("a", "b")
    ]
    rows.append(_row(day, "latency_ms", "latency_p50", statistic=10.0 + day.day))
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def _write(store: ParquetStore, day: date, table: pa.Table, dataset: str = METRICS) -> str:
    return store.write_partition(
        dataset, {**PARTITION, "date": day.isoformat()}, table, file_name="day.parquet"
    )


@pytest.fixture
def store(store_config: StoreConfig):
    built = ParquetStore(store_config)
    yield built
    built.close()


def _query(**fields: object) -> MetricsQuery:
    return MetricsQuery("p", "m", "prod", DAYS[0], DAYS[-1], **fields)  # type: ignore[arg-type]


def test_compacted_months_are_read_instead_of_the_days_and_give_the_same_rows(store: ParquetStore) -> None:
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
    daily = MetricsReader(store).table(_query())
    written = metrics.compact_metrics(store, "p", "m", "prod")
    assert [uri.split("month=")[1] for uri in written] == ["2024-01/day.parquet", "2024-02/day.parquet"]
    reader = MetricsReader(store)
    files = reader.metric_files(_query())
    assert len(files) == 2 and [len(f.days) for f in files] == [3, 3]
    assert reader.table(_query()).equals(daily)
    # A range inside a month takes only its days from the monthly file.
    inside = MetricsQuery("p", "m", "prod", DAYS[1], DAYS[2])
    assert reader.table(inside).equals(MetricsReader(store).table(inside).slice(0))
    assert {r["window_start"].date() for r in metrics.metrics_rows(reader, inside)} == {DAYS[1], DAYS[2]}


def test_a_day_rewritten_after_the_compaction_is_read_from_its_daily_file(store: ParquetStore) -> None:
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
    metrics.compact_metrics(store, "p", "m", "prod")
    reader = MetricsReader(store)
    assert reader.table(_query()).num_rows == 18
    _write(store, DAYS[4], _day_table(DAYS[4], 0.5))  # the monitoring job recomputed a day
    late = DAYS[-1] + timedelta(days=1)
    _write(store, late, _day_table(late, 0.05))  # and added one
    files = reader.metric_files(MetricsQuery("p", "m", "prod", DAYS[0], late))
    daily = [f for f in files if not f.days]
    assert sorted(f.day for f in daily) == [DAYS[4], late]
    assert [f.days for f in files if f.days][1] == (DAYS[3], DAYS[5])
    matrix = metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], late)
    assert matrix.drifted == {("a", _utc(DAYS[4])), ("b", _utc(DAYS[4]))}
    assert reader.table(MetricsQuery("p", "m", "prod", DAYS[0], late)).num_rows == 21


def test_a_damaged_compacted_file_only_costs_the_shortcut(store: ParquetStore) -> None:
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
    first, _second = metrics.compact_metrics(store, "p", "m", "prod")
    with store.filesystem().open_output_stream(first.removeprefix("s3://")) as handle:
        handle.write(b"PAR1 not parquet")
    reader = MetricsReader(store)
    assert all(not f.days for f in reader.metric_files(_query()))
    assert reader.table(_query()).num_rows == 18


def test_compaction_refuses_bad_names_and_windows(store: ParquetStore) -> None:
    with pytest.raises(InvalidQuery, match="invalid project"):
        metrics.compact_metrics(store, "../x", "m", "prod")
    with pytest.raises(InvalidQuery, match="window must be one of"):
        metrics.compact_metrics(store, "p", "m", "prod", window="minute")
    assert metrics.compact_metrics(store, "p", "m", "prod") == []  # nothing to compact


def _segment_table(day: date, segment: str, statistic: float) -> pa.Table:
    table = _day_table(day, statistic)
    return table.append_column("segment", pa.array([segment] * table.num_rows, pa.string())).cast(
        SEGMENT_METRICS_SCHEMA
    )


def test_a_segment_query_reads_that_slice_of_the_segment_metrics(store: ParquetStore) -> None:
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
        slices = pa.concat_tables(
            [
                _segment_table(day, "region=north", 0.5 if day == DAYS[2] else 0.05),
                _segment_table(day, "region=south", 0.05),
            ]
        )
        _write(store, day, slices, SEGMENT_METRICS)
    reader = MetricsReader(store)
    assert reader.segments("p", "m", "prod", DAYS[-1]) == ["region=north", "region=south"]
    assert reader.segments("p", "m", "prod", DAYS[-1], "hour") == []
    north = metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1], segment="region=north")
    assert north.drifted == {("a", _utc(DAYS[2])), ("b", _utc(DAYS[2]))}
    assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1]).drifted == frozenset()
    assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1], segment="region=east").empty
    latency = metrics.latency_series(reader, "p", "m", "prod", DAYS[0], DAYS[-1], segment="region=south")
    assert [row["p50_ms"] for row in latency] == [10.0 + d.day for d in DAYS]
    export = metrics.export_table(reader, _query(segment="region=north"), metrics.PAGE_METRICS)
    assert export.column_names[:4] == ["project", "model", "environment", "segment"]
    assert set(export["segment"].to_pylist()) == {"region=north"} and export.num_rows == 18
    detail = metrics.feature_detail(
        reader, "p", "m", "prod", DAYS[0], DAYS[-1], "day", "a", segment="region=north"
    )
    assert detail.focus is not None and detail.focus["window_start"] == _utc(DAYS[2])
    assert detail.current is None and any("whole traffic only" in note for note in detail.notes)


@pytest.mark.unit
@pytest.mark.parametrize("segment", ["north", "=north", "a b=c", "x" * 250 + "=" + "y" * 10])
def test_a_segment_must_read_name_equals_value(segment: str) -> None:
    with pytest.raises(InvalidQuery, match="<name>=<value>"):
        MetricsQuery("p", "m", "prod", DAYS[0], DAYS[1], segment=segment)


@pytest.mark.unit
def test_the_columnar_drift_matrix_equals_the_row_by_row_one() -> None:
    """Tests and effect sizes, zero and missing p-values, infinite and NaN statistics, unchecked rows,
    two versions of one window: the fast path and the reference path agree on every field."""
    rows = []
    for offset in range(20):
        day = date(2024, 3, 1) + timedelta(days=offset)
        kind = offset % 6
        rows.append(
            _row(
                day,
                "ks_col",
                "drift",
                statistic=0.2,
                p_value=[0.5, 1e-9, 0.0, None, 0.01, float("nan")][kind],
                threshold=0.05,
                drifted=kind in (1, 2),
                status="drift" if kind in (1, 2) else "ok",
                reason="method=ks: drift when the bh-adjusted p-value < threshold",
            )
        )
        rows.append(
            _row(
                day,
                "psi_col",
                "drift",
                statistic=[0.05, 0.3, math.inf, float("nan"), None, 0.1][kind],
                threshold=0.1,
                drifted=kind == 1,
                status=["ok", "drift", "warning", "ok", "insufficient_data", "error"][kind],
                reason="method=psi: drift when statistic > threshold",
            )
        )
        if offset % 5 == 0:  # a second version serving fewer rows of the same window
            rows.append(rows[-1] | {"version": "2", "n_current": 10, "statistic": 9.0, "drifted": True})
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    for start, end in ((date(2024, 3, 1), date(2024, 3, 20)), (date(2023, 3, 25), date(2024, 3, 20))):
        query = MetricsQuery("p", "m", "prod", start, end)
        fast = metrics._drift_matrix(query, table)
        slow = metrics._matrix_of_rows(query, metrics._drift_rows_recovering_methods(table))
        assert fast.period == slow.period and fast.columns == slow.columns
        assert (fast.windows, fast.drifted, fast.checked) == (slow.windows, slow.drifted, slow.checked)
        assert _comparable(fast.rows) == _comparable(slow.rows)
        assert _comparable(metrics.drift_rows(table)) == _comparable(
            metrics._drift_rows_recovering_methods(table)
        )


def _comparable(rows: object) -> list[dict]:
    """Rows with NaN replaced by a marker (NaN != NaN)."""
    return [
        {
            key: "NaN" if isinstance(value, float) and math.isnan(value) else value
            for key, value in row.items()
        }
        for row in rows  # type: ignore[attr-defined]
    ]


def test_a_consistent_listing_block_lists_once_and_the_next_block_sees_new_files(store: ParquetStore) -> None:
    reader = MetricsReader(store)
    for day in DAYS[:-1]:
        _write(store, day, _day_table(day, 0.05))
    with reader.consistent_listing():
        before = reader.metric_files(_query())
        _write(store, DAYS[-1], _day_table(DAYS[-1], 0.5))
        # Every read of the block sees the files of its first listing ...
        assert reader.metric_files(_query()) is before
        assert reader.dates("p", "m", "prod") == DAYS[:-1]
        assert reader.table(_query()).num_rows == 3 * len(DAYS[:-1])
    # ... and the next block (or a read outside any block) lists again.
    with reader.consistent_listing():
        assert reader.dates("p", "m", "prod") == DAYS
        assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1]).drifted == {
            (column, _utc(DAYS[-1])) for column in ("a", "b")
        }


def _compacted(store: ParquetStore) -> dict[str, tuple[pa.Table, bytes]]:
    """Month -> (the monthly file's rows, columns sorted by name; its manifest)."""
    found = {}
    for month in ("2024-01", "2024-02"):
        table = store.read(metrics.COMPACTED_DATASET, filters={**PARTITION, "month": month})
        uri = store.partition_uri(metrics.COMPACTED_DATASET, {**PARTITION, "month": month}) + "/day.parquet"
        with store.filesystem().open_input_file(uri.removeprefix("s3://")) as handle:
            manifest = pq.ParquetFile(handle).schema_arrow.metadata[metrics.COMPACTED_SOURCES_KEY]
        found[month] = (table.select(sorted(table.column_names)), manifest)
    return found


def test_a_recompaction_keeps_unchanged_days_and_equals_a_compaction_from_scratch(
    store: ParquetStore,
) -> None:
    """The job compacts after every run: unchanged days are taken from the monthly file, changed and
    new ones read from their daily files, and the result is what compacting from scratch gives."""
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
    metrics.compact_metrics(store, "p", "m", "prod")
    _write(store, DAYS[4], _day_table(DAYS[4], 0.5))  # rewritten
    late = DAYS[-1] + timedelta(days=1)
    _write(store, late, _day_table(late, 0.05))  # added
    metrics.compact_metrics(store, "p", "m", "prod", months=["2024-02"])
    again = _compacted(store)
    for month in ("2024-01", "2024-02"):
        store.delete_partition(metrics.COMPACTED_DATASET, {**PARTITION, "month": month})
    metrics.compact_metrics(store, "p", "m", "prod")
    scratch = _compacted(store)
    assert again.keys() == scratch.keys()
    for month, (table, manifest) in again.items():
        assert table.equals(scratch[month][0]) and manifest == scratch[month][1], month
    reader = MetricsReader(store)
    query = MetricsQuery("p", "m", "prod", DAYS[0], late)
    assert all(f.days for f in reader.metric_files(query))  # every day from a monthly file
    assert reader.table(query).num_rows == 21


def test_an_unchanged_day_is_not_read_again(tmp_path: Path) -> None:
    """A daily file whose size and time are those the monthly file recorded is not read again: it
    stays as it was copied even if its bytes were damaged in place (a local folder, where the time
    can be set back; S3 objects cannot be)."""
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    for day in DAYS:
        _write(store, day, _day_table(day, 0.05))
    metrics.compact_metrics(store, "p", "m", "prod")
    before = MetricsReader(store).table(_query())
    path = _write(store, DAYS[5], _day_table(DAYS[5], 0.05))  # rewritten the same: new time, read again
    metrics.compact_metrics(store, "p", "m", "prod")
    stat = os.stat(path)
    with open(path, "r+b") as handle:  # damaged in place, size and time kept
        handle.write(b"\0" * 64)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    late = DAYS[-1] + timedelta(days=1)
    _write(store, late, _day_table(late, 0.05))
    metrics.compact_metrics(store, "p", "m", "prod")  # would fail reading the damaged day
    assert MetricsReader(store).table(_query()).equals(before)
    store.close()
