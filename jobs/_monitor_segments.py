"""Per-segment metrics: drift, data quality, performance and latency of each slice of the traffic.

Private helper of :mod:`jobs.monitor`. Inference logs may carry ``segment_<name>`` text columns
(``segment_region``: ``north``, ``south``, ...). For every such column with at most
:data:`MAX_SEGMENT_VALUES` distinct values in a window, the window's rows holding each value form a
slice, named ``<name>=<value>`` (``region=north``), and get the monitoring job's rows as the whole
traffic does, in the ``segment_metrics`` dataset (``jobs.contracts.SEGMENT_METRICS_SCHEMA``):

* ``row_count`` (column ``*``);
* with a reference profile: ``drift`` and its statistics per feature, ``drift_share``, and the
  data-quality shares, against the version's reference (segment columns themselves are left out: a
  slice of one region always "drifts" in its region);
* the task's performance metrics and ``label_coverage``;
* latency quantiles and throughput (not compared with a baseline: the latency alert is the whole
  traffic's).

A column with more values in a window (an id, a free text) is not sliced in that window: slices of
a few rows each say nothing, and each one costs. Rows with a NULL segment value belong to no slice.

Cost. The analytics functions group by window in one scan; calling them once per slice would pay
their fixed cost (tens of milliseconds) per slice and per batch. Instead the slices of a batch are
stacked into one relation: slice ``k`` gets its timestamps moved ``k`` batch-spans later, so each
(slice, window) becomes a distinct window of one profile, one performance and one latency query,
and the window start moved back names the slice. The data are the same rows; only their window key
differs.

Use (three lines in the job driver)::

    self.segments = SegmentMetrics(self.store, self.unit, self.request.policy, self.request.thresholds)
    self.segments.compute(version, relation, labels, reference.profile, task)   # per batch/version
    self.segments.publish(self.store, partition, day)                          # per written day
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics.drift import drift
from analytics.performance import classification_metrics, latency_metrics, regression_metrics
from analytics.policy import Policy
from analytics.profile import Profile, profile, quote
from analytics.quality import quality
from analytics.store import ParquetStore, StoreError
from jobs import _monitor_rows as rows_of
from jobs._monitor_rows import ALL_COLUMNS, Row, Thresholds
from jobs.contracts import (
    SEGMENT_COLUMN,
    SEGMENT_METRICS,
    SEGMENT_METRICS_SCHEMA,
    SEGMENT_PREFIX,
    TIMESTAMP_COLUMN,
    require_valid,
    segment_columns,
    validate_metrics_table,
)

MAX_SEGMENT_VALUES = 20
"""Most distinct values a segment column may hold in a window to be sliced there."""
MAX_SLICES = 400
"""Most slices of one batch (all segment columns together); columns beyond it are not sliced."""
WINDOW_LENGTHS: Mapping[str, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
NO_BASELINE = "segments are not compared with a latency baseline (the whole traffic's p95 is)"


@dataclass(frozen=True)
class Slice:
    """One value of one segment column.

    Attributes:
        column: The log column (``segment_region``).
        value: The value (``north``).
        windows: Window starts (UTC) where the column was sliced.
    """

    column: str
    value: str
    windows: frozenset[datetime]

    @property
    def name(self) -> str:
        """``<name>=<value>``, the ``segment`` of its rows (``region=north``)."""
        return f"{self.column.removeprefix(SEGMENT_PREFIX)}={self.value}"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _window_sql(relation: duckdb.DuckDBPyRelation, unit: str) -> str:
    types = dict(zip(relation.columns, (str(t).upper() for t in relation.types), strict=True))
    column = quote(TIMESTAMP_COLUMN)
    if types.get(TIMESTAMP_COLUMN) == "TIMESTAMP WITH TIME ZONE":
        column = f"timezone('UTC', {column})"
    return f"CAST(date_trunc('{unit}', {column}) AS TIMESTAMP)"


def find_slices(
    relation: duckdb.DuckDBPyRelation, unit: str, max_values: int = MAX_SEGMENT_VALUES
) -> list[Slice]:
    """The slices of a relation of logs: every value of every segment column, per window, capped.

    Args:
        relation: Inference logs (one version).
        unit: ``day`` or ``hour``.
        max_values: Most distinct values of a column in a window for it to be sliced there.

    Returns:
        The slices, by column then value; empty without segment columns.
    """
    columns = segment_columns(relation.columns)
    if not columns or TIMESTAMP_COLUMN not in relation.columns:
        return []
    window = _window_sql(relation, unit)
    slices: list[Slice] = []
    for column in columns:
        name = quote(column)
        sql = (
            f"SELECT {window} AS w, count(DISTINCT {name}) AS n, "
            f"CASE WHEN count(DISTINCT {name}) <= {int(max_values)} THEN list(DISTINCT {name}) END AS v "
            f"FROM _mms_segment_logs WHERE {name} IS NOT NULL AND {quote(TIMESTAMP_COLUMN)} IS NOT NULL "
            "GROUP BY w"
        )
        windows_of: dict[str, set[datetime]] = defaultdict(set)
        for start, _count, values in relation.query("_mms_segment_logs", sql).fetchall():
            for value in values or ():
                windows_of[value].add(_utc(start))
        found = [Slice(column, value, frozenset(windows_of[value])) for value in sorted(windows_of)]
        if len(slices) + len(found) > MAX_SLICES:
            break
        slices += found
    return slices


_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}
"""Microseconds per tick of a timestamp unit (``ns``: 0, ticks are divided by 1 000 instead)."""
_DAY_MICROS = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_MICROS = {"day": _DAY_MICROS, "hour": 3_600_000_000}


def _valid(array: pa.Array) -> np.ndarray:
    """Boolean mask of an array's non-null values."""
    return pc.is_valid(array).to_numpy(zero_copy_only=False)


def _ticks(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """A timestamp column's raw ticks (0 where null), a mask of its non-null rows, microseconds a tick."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_timestamp(array.type):
        raise ValueError(f"column {TIMESTAMP_COLUMN!r} must be a timestamp, not {array.type}")
    valid = _valid(array)
    ticks = pc.fill_null(array.cast(pa.int64()), 0).to_numpy()
    return ticks, valid, _MICROS_PER_UNIT[array.type.unit]


def _micros(ticks: np.ndarray, per_tick: int) -> np.ndarray:
    # Floor division keeps instants before 1970 in the right window, as date_trunc does.
    return ticks // 1_000 if per_tick == 0 else ticks * per_tick


def stacked_table(logs: pa.Table, slices: Sequence[Slice], unit: str) -> tuple[pa.Table, date, int]:
    """The rows of every slice in one table, slice ``k`` moved ``k * span`` days later.

    One pass over the logs in NumPy: each row's window and value give its slices (one per segment
    column at most), and the rows are gathered slice by slice, in their order, with their timestamps
    moved. Windows are UTC calendar windows, as ``date_trunc`` over ``timezone('UTC', ts)`` gives.

    Args:
        logs: Inference logs (one version), with a ``timestamp`` column.
        slices: The slices (:func:`find_slices`), by column then value.
        unit: ``day`` or ``hour``.

    Returns:
        The table, the first day of the logs and the span in days.
    """
    timestamps = logs.column(TIMESTAMP_COLUMN)
    ticks, has_time, per_tick = _ticks(timestamps)
    micros = _micros(ticks, per_tick)
    windows = micros // _UNIT_MICROS[unit]
    days = micros[has_time] // _DAY_MICROS
    first_day, last_day = (int(days.min()), int(days.max())) if len(days) else (0, 0)
    first = date(1970, 1, 1) + timedelta(days=first_day)
    span = last_day - first_day + 1
    first_window = int(windows[has_time].min()) if has_time.any() else 0
    window_count = int(windows[has_time].max()) - first_window + 1 if has_time.any() else 1
    unit_micros = _UNIT_MICROS[unit]
    gathered: list[np.ndarray] = []
    moved: list[np.ndarray] = []
    by_column: dict[str, list[tuple[int, Slice]]] = defaultdict(list)
    for index, item in enumerate(slices):
        by_column[item.column].append((index, item))
    for column, items in by_column.items():
        encoded = logs.column(column).combine_chunks().dictionary_encode()
        dictionary = encoded.dictionary.to_pylist()
        codes = pc.fill_null(encoded.indices.cast(pa.int64()), 0).to_numpy()
        rows = has_time & _valid(encoded.indices)
        # (dictionary code, window) -> slice index + 1; 0: the row is in no slice of this column.
        lookup = np.zeros((len(dictionary) + 1, window_count), dtype=np.int64)
        position = {value: code for code, value in enumerate(dictionary)}
        for index, item in items:
            code = position.get(item.value)
            if code is None:
                continue
            for start in item.windows:
                offset = (_utc(start) - _EPOCH) // timedelta(microseconds=unit_micros) - first_window
                if 0 <= offset < window_count:
                    lookup[code, offset] = index + 1
        selected = np.flatnonzero(rows)
        slice_of = lookup[codes[selected], windows[selected] - first_window]
        selected, slice_of = selected[slice_of > 0], slice_of[slice_of > 0] - 1
        order = np.argsort(slice_of, kind="stable")
        gathered.append(selected[order])
        moved.append(slice_of[order])
    take = np.concatenate(gathered) if gathered else np.zeros(0, dtype=np.int64)
    shift = np.concatenate(moved) if moved else np.zeros(0, dtype=np.int64)
    table = logs.take(pa.array(take, pa.int64()))
    shift_micros = shift * span * _DAY_MICROS
    shifted = ticks[take] + (shift_micros * 1_000 if per_tick == 0 else shift_micros // per_tick)
    index = table.schema.get_field_index(TIMESTAMP_COLUMN)
    table = table.set_column(
        index, table.schema.field(index), pa.array(shifted, pa.int64()).cast(timestamps.type)
    )
    return table, first, span


class SegmentMetrics:
    """Segment rows of one target's run: computed per batch and version, published per day.

    Args:
        store: The Parquet store (its DuckDB cursor of the computing thread holds the stacked rows).
        unit: Window unit of the run.
        policy: Drift policy (the run's).
        thresholds: Data-quality thresholds (the run's).
        max_values: Most values of a segment column in a window for it to be sliced there; ``0``
            turns segment metrics off (each slice costs about what the whole traffic costs in
            per-window drift work).
    """

    def __init__(
        self,
        store: ParquetStore,
        unit: str,
        policy: Policy,
        thresholds: Thresholds,
        max_values: int = MAX_SEGMENT_VALUES,
    ) -> None:
        self.store = store
        self.max_values = max_values
        self.unit = unit
        self.length = WINDOW_LENGTHS[unit]
        self.policy = policy
        self.thresholds = thresholds
        # Day -> version -> rows: a batch computed again (one day at a time after a failure)
        # replaces its rows instead of adding duplicates.
        self.rows: dict[date, dict[str, list[Row]]] = {}

    def compute(
        self,
        version: str,
        relation: duckdb.DuckDBPyRelation,
        labels: duckdb.DuckDBPyRelation,
        reference: Profile | None,
        task: str,
        logs: pa.Table | None = None,
    ) -> None:
        """Compute the segment rows of one version over a batch of days and keep them until published.

        Args:
            version: Model version of ``relation``'s rows.
            relation: The batch's logs of that version.
            labels: The batch's labels (same connection).
            reference: The version's reference profile (label left out), ``None`` when missing.
            task: ``classification`` or ``regression``.
            logs: The Arrow table behind ``relation`` when the caller has it (else read from it).
        """
        slices = find_slices(relation, self.unit, self.max_values) if self.max_values > 0 else []
        if not slices:
            return
        if logs is None:
            logs = relation.to_arrow_table()
        stacked_rows, first, span = stacked_table(logs, slices, self.unit)
        stacked = self.store.cursor().from_arrow(stacked_rows)
        origin = datetime(first.year, first.month, first.day, tzinfo=UTC)

        def place(moment: datetime) -> tuple[Slice, datetime] | None:
            moment = _utc(moment)
            index = (moment - origin).days // span
            if not 0 <= index < len(slices):
                return None
            return slices[index], moment - timedelta(days=index * span)

        if task == "classification":
            performance = classification_metrics(stacked, labels, self.unit, positive_label=1.0)
        else:
            performance = regression_metrics(stacked, labels, self.unit)
        latency = latency_metrics(stacked, self.unit)
        profiles: dict[datetime, Profile] = {}
        spec = None
        if reference is not None:
            spec = reference.spec.select(
                [n for n in reference.spec.names if not n.startswith(SEGMENT_PREFIX)]
            )
            profiles = {
                _utc(start): window_profile
                for start, window_profile in profile(
                    stacked, spec, window=self.unit, timestamp_column=TIMESTAMP_COLUMN
                ).items()
            }
        restricted = None
        if reference is not None and spec is not None:
            restricted = replace(
                reference, spec=spec, columns=tuple(reference[n] for n in spec.names if n in reference)
            )
        by_slice: dict[tuple[str, datetime], list[Row]] = defaultdict(list)
        for item in latency.windows:
            placed = place(item.window_start) if item.window_start is not None else None
            if placed is None:
                continue
            segment, start = placed
            end = start + self.length
            rows = by_slice[(segment.name, start)]
            rows.append(
                rows_of.row(version, start, end, ALL_COLUMNS, "row_count", statistic=item.n, n_current=item.n)
            )
            for row in rows_of.latency_rows(version, start, end, item, (), self.thresholds):
                if row["metric"] == "latency_p95" and row["status"] == "ok":
                    row["reason"] = NO_BASELINE
                rows.append(row)
            current = profiles.get(_utc(item.window_start))
            if restricted is not None and current is not None:
                rows += rows_of.drift_rows(
                    version, start, end, drift(restricted, current, self.policy), self.policy
                )
                rows += rows_of.quality_rows(
                    version, start, end, restricted, current, quality(restricted, current), self.thresholds
                )
        for item in performance.windows:
            placed = place(item.window_start) if item.window_start is not None else None
            if placed is None:
                continue
            segment, start = placed
            by_slice[(segment.name, start)] += rows_of.performance_rows(
                version, start, start + self.length, item
            )
        computed: dict[date, list[Row]] = defaultdict(list)
        for (name, start), rows in by_slice.items():
            for row in rows:
                row[SEGMENT_COLUMN] = name
            computed[start.date()] += rows
        for day, rows in computed.items():
            self.rows.setdefault(day, {})[version] = rows

    def table(self, day: date) -> pa.Table | None:
        """The segment rows computed for ``day`` as a ``segment_metrics`` table, ``None`` when none."""
        rows = [row for version_rows in self.rows.get(day, {}).values() for row in version_rows]
        if not rows:
            return None
        ordered = sorted(
            rows,
            key=lambda r: (r[SEGMENT_COLUMN], r["version"], r["window_start"], r["column"], r["metric"]),
        )
        return pa.Table.from_pylist(ordered, schema=SEGMENT_METRICS_SCHEMA)

    def publish(self, store: ParquetStore, partition: Mapping[str, str], day: date) -> int:
        """Write the day's segment rows (atomically), or remove an earlier file when there are none.

        Call it before the day's ``metrics`` are written: the run's state, written last, is what
        says the day is done, so a run killed in between computes the day again.

        Args:
            store: The Parquet store.
            partition: The day's project/model/environment/date partition.
            day: The day.

        Returns:
            Rows written.

        Raises:
            ContractError: if the rows break the ``segment_metrics`` contract (a bug).
            StoreError: if writing fails.
        """
        table = self.table(day)
        self.rows.pop(day, None)
        name = f"{self.unit}.parquet"
        if table is None:
            uri = store.partition_uri(SEGMENT_METRICS, partition) + "/" + name
            path = uri[len("s3://") :] if uri.startswith("s3://") else uri
            try:
                store.filesystem().delete_file(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise StoreError(f"cannot delete stale segment metrics {uri}: {error}") from error
            return 0
        require_valid(validate_metrics_table(table, partition=partition, dataset=SEGMENT_METRICS))
        store.write_partition(SEGMENT_METRICS, partition, table, file_name=name)
        return table.num_rows
