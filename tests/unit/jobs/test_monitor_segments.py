"""Per-segment metrics of the monitoring job (``jobs._monitor_segments``) on real DuckDB and Parquet.

Three days of logs with ``segment_region`` (three regions and some rows without one) and
``segment_user`` (too many values to slice); ``x`` drifts in region ``b`` on the second day only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.drift import drift
from analytics.performance import (
    classification_from_partials,
    classification_partial,
    latency_from_partials,
    latency_partial,
)
from analytics.policy import DEFAULT_POLICY
from analytics.profile import build_spec, profile
from analytics.store import ParquetStore, StoreConfig
from jobs._monitor_rows import Thresholds
from jobs._monitor_segments import (
    MAX_SEGMENT_VALUES,
    MAX_SLICES,
    SegmentMetrics,
    SegmentPartials,
    batch_partials,
    batch_profiles,
    find_slices,
    merge_segment_partials,
    merge_window_values,
    segment_partials,
    segment_reports,
    segment_rows,
    stack_batch,
    stacked_table,
    window_counts,
)
from jobs.contracts import SEGMENT_METRICS, require_valid, validate_metrics_table
from jobs.monitor import _window_counts

pytestmark = pytest.mark.unit

DAYS = [date(2024, 4, 1) + timedelta(days=i) for i in range(3)]
REGIONS = ("a", "b", "c")
ROWS_PER_DAY = 1500
PARTITION = {"project": "p", "model": "m", "environment": "prod"}


def _logs() -> pa.Table:
    rng = np.random.default_rng(7)
    columns: dict[str, list] = {k: [] for k in ("version", "request_id", "timestamp", "x", "kind")}
    columns |= {"segment_region": [], "segment_user": [], "prediction": [], "score": [], "latency_ms": []}
    for index, day in enumerate(DAYS):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for row in range(ROWS_PER_DAY):
            region = REGIONS[row % 3] if row % 50 else None
            shifted = index == 1 and region == "b"
            columns["version"].append("1")
            columns["request_id"].append(f"{day}-{row}")
            columns["timestamp"].append(start + timedelta(seconds=row * 50))
            columns["x"].append(float(rng.normal(3.0 if shifted else 0.0, 1.0)))
            columns["kind"].append(["u", "v"][row % 2])
            columns["segment_region"].append(region)
            columns["segment_user"].append(f"user{row % (MAX_SEGMENT_VALUES + 5)}")
            columns["prediction"].append(float(row % 2))
            columns["score"].append(0.5)
            columns["latency_ms"].append(float(20 + row % 7))
    table = pa.table(columns)
    return table.set_column(2, "timestamp", table["timestamp"].cast(pa.timestamp("us", tz="UTC")))


@pytest.fixture
def store(tmp_path):
    built = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    yield built
    built.close()


@pytest.fixture
def batch(store: ParquetStore):
    """The logs, the labels (half the requests) and the reference, as the driver has them."""
    logs = _logs()
    labels = pa.table(
        {
            "request_id": logs["request_id"].to_pylist()[::2],
            "label": [float(i % 2) for i in range(0, logs.num_rows, 2)],
            "label_timestamp": logs["timestamp"].to_pylist()[::2],
        }
    )
    rng = np.random.default_rng(3)
    training = pa.table(
        {
            "x": rng.normal(0.0, 1.0, 4000),
            "kind": ["u", "v"] * 2000,
            "segment_region": list(REGIONS) * 1333 + ["a"],
        }
    )
    cursor = store.cursor()
    reference_relation = cursor.from_arrow(training)
    reference = profile(reference_relation, build_spec(reference_relation, ["x", "kind", "segment_region"]))
    return logs, labels, reference, cursor.from_arrow(logs), cursor.from_arrow(labels)


def _add_batch(segments: SegmentMetrics, store: ParquetStore, relation, labels, reference, task: str) -> None:
    """Step 1 over a batch's rows (``segment_partials``), then step 2 (``add``), as a scaled-out unit
    and its merge run them."""
    partials = segment_partials(
        store.cursor(),
        relation,
        labels,
        reference.spec if reference is not None else None,
        (task,),
        segments.unit,
        max_values=segments.max_values,
        max_slices=MAX_SLICES,
    )
    segments.add("1", partials, reference, task)


def _computed(store: ParquetStore, batch) -> SegmentMetrics:
    _logs_table, _labels, reference, relation, labels = batch
    segments = SegmentMetrics(store, "day", DEFAULT_POLICY, Thresholds())
    _add_batch(segments, store, relation, labels, reference, "classification")
    return segments


def test_only_columns_with_few_values_are_sliced(store: ParquetStore, batch) -> None:
    slices = find_slices(batch[3], "day")
    assert [s.name for s in slices] == ["region=a", "region=b", "region=c"]
    assert all(len(s.windows) == len(DAYS) for s in slices)


def test_drift_is_found_in_the_slice_and_the_day_it_was_injected(store: ParquetStore, batch) -> None:
    segments = _computed(store, batch)
    drifted = {
        (row["segment"], row["window_start"].date(), row["column"])
        for day in DAYS
        for row in segments.table(day).to_pylist()
        if row["metric"] == "drift" and row["drifted"]
    }
    assert drifted == {("region=b", DAYS[1], "x")}
    columns = {r["column"] for r in segments.table(DAYS[0]).to_pylist() if r["metric"] == "drift"}
    assert columns == {"x", "kind"}  # the segment column is not judged inside its own slices


def test_slices_match_a_direct_computation_of_each_slice(store: ParquetStore, batch) -> None:
    logs, _labels, reference, relation, _label_relation = batch
    segments = _computed(store, batch)
    table = segments.table(DAYS[1])
    spec = reference.spec.select(["x", "kind"])
    restricted = replace(reference, spec=spec, columns=tuple(reference[n] for n in spec.names))
    for region in REGIONS:
        rows = table.filter(pc.equal(table["segment"], f"region={region}")).to_pylist()
        direct = profile(
            relation.filter(f"segment_region = '{region}'"), spec, window="day", timestamp_column="timestamp"
        )
        window = next(w for w in direct if w.date() == DAYS[1])
        report = drift(restricted, direct[window], DEFAULT_POLICY)
        stored = {r["column"]: r["statistic"] for r in rows if r["metric"] == "drift"}
        assert stored == pytest.approx({c.column: c.statistic for c in report.columns}, rel=1e-9)
        count = next(r["statistic"] for r in rows if r["metric"] == "row_count")
        assert count == direct[window].rows
    per_day = pc.sum(
        pc.and_(
            pc.is_valid(logs["segment_region"]),
            pc.equal(pc.cast(pc.cast(logs["timestamp"], pa.date32()), pa.string()), DAYS[1].isoformat()),
        )
    ).as_py()
    counted = [r["statistic"] for r in table.to_pylist() if r["metric"] == "row_count"]
    assert sum(counted) == per_day  # rows without a region belong to no slice


def test_performance_and_latency_are_computed_per_slice(store: ParquetStore, batch) -> None:
    rows = _computed(store, batch).table(DAYS[0]).to_pylist()
    metrics = {(r["segment"], r["metric"]) for r in rows}
    for region in REGIONS:
        assert {(f"region={region}", m) for m in ("accuracy", "label_coverage", "latency_p95")} <= metrics
    coverage = [r["statistic"] for r in rows if r["metric"] == "label_coverage"]
    assert all(0.4 < value < 0.6 for value in coverage)
    p95 = [r for r in rows if r["metric"] == "latency_p95"]
    assert all(r["drifted"] is None and "baseline" in r["reason"] for r in p95)


def test_published_rows_follow_the_contract_and_a_rerun_replaces_them(store: ParquetStore, batch) -> None:
    segments = _computed(store, batch)
    first = segments.table(DAYS[0])
    require_valid(validate_metrics_table(first, dataset=SEGMENT_METRICS))
    _add_batch(segments, store, batch[3], batch[4], batch[2], "classification")  # the batch computed again
    assert segments.table(DAYS[0]).equals(first)  # replaced, not duplicated
    partition = {**PARTITION, "date": DAYS[0].isoformat()}
    assert segments.publish(store, partition, DAYS[0]) == first.num_rows
    written = store.read(SEGMENT_METRICS, filters=partition)
    assert written.num_rows == first.num_rows
    # Logs without segment columns any more: the day's earlier segment file goes away.
    empty = SegmentMetrics(store, "day", DEFAULT_POLICY, Thresholds())
    without = batch[3].project("* EXCLUDE (segment_region, segment_user)")
    _add_batch(empty, store, without, batch[4], batch[2], "regression")
    assert empty.publish(store, partition, DAYS[0]) == 0
    assert store.list_files(SEGMENT_METRICS, filters=partition) == []


def test_a_bad_segment_name_breaks_the_contract() -> None:
    table = pa.table({"segment": ["no equals sign"]})
    problems = validate_metrics_table(table, dataset=SEGMENT_METRICS)
    assert any(p.column == "segment" and p.kind == "bad_value" for p in problems)
    with pytest.raises(ValueError, match="not a metrics dataset"):
        validate_metrics_table(table, dataset="labels")


def test_segments_can_be_turned_off(store: ParquetStore, batch) -> None:
    segments = SegmentMetrics(store, "day", DEFAULT_POLICY, Thresholds(), max_values=0)
    _add_batch(segments, store, batch[3], batch[4], batch[2], "classification")
    assert segments.table(DAYS[0]) is None
    assert [s.name for s in find_slices(batch[3], "day", max_values=2)] == []  # three regions


@pytest.mark.parametrize("unit", ["day", "hour"])
def test_the_stacked_rows_are_the_rows_of_each_slice_moved_by_its_span(batch, unit: str) -> None:
    logs, relation = batch[0], batch[3]
    slices = find_slices(relation, unit)
    stacked, first, span = stacked_table(logs, slices, unit)
    assert (first, span) == (DAYS[0], len(DAYS))
    rows = stacked.select(["request_id", "timestamp"]).to_pylist()
    origin = datetime(first.year, first.month, first.day, tzinfo=UTC)
    got: dict[str, set[tuple[str, datetime]]] = {}
    for item in rows:
        index = (item["timestamp"] - origin).days // span
        moved_back = item["timestamp"] - timedelta(days=index * span)
        got.setdefault(slices[index].name, set()).add((item["request_id"], moved_back))
    length = timedelta(days=1) if unit == "day" else timedelta(hours=1)
    for item in slices:
        expected = {
            (row["request_id"], row["timestamp"])
            for row in logs.select(["request_id", "timestamp", item.column]).to_pylist()
            if row[item.column] == item.value
            and origin + ((row["timestamp"] - origin) // length) * length in item.windows
        }
        assert got.get(item.name, set()) == expected
    assert stacked.schema == logs.schema


def _edge_logs() -> pa.Table:
    """Nanoseconds in Paris time around midnight UTC, before 1970 too, NULL times and values."""
    moments = [
        datetime(1969, 12, 31, 23, 30, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 30, tzinfo=UTC),
        datetime(2024, 3, 30, 23, 59, 59, tzinfo=UTC),
        datetime(2024, 3, 31, 0, 0, 1, tzinfo=UTC),
        None,
    ]
    rows = [(moments[i % 5], [None, "", "n", "s", "e", "w"][i % 6], f"u{i % 7}") for i in range(60)]
    timestamps = pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "timestamp": timestamps.cast(pa.timestamp("ns", tz="Europe/Paris")),
            "segment_region": pa.array([r[1] for r in rows], pa.string()),
            "segment_user": pa.array([r[2] for r in rows], pa.string()),
            "latency_ms": pa.array([1.0] * len(rows)),
        }
    )


@pytest.mark.parametrize("edge", [False, True], ids=["batch", "edge-times"])
@pytest.mark.parametrize("unit", ["day", "hour"])
def test_the_values_counted_from_the_table_are_those_of_the_query(
    store: ParquetStore, batch, unit: str, edge: bool
) -> None:
    """With the Arrow table at hand the values are counted in NumPy; the query's answer is the same."""
    cursor = store.cursor()
    logs = _edge_logs() if edge else batch[0]
    relation = cursor.from_arrow(logs)
    for max_values in (3, MAX_SEGMENT_VALUES):
        from_table = segment_partials(
            cursor, relation, batch[4], None, (), unit, logs=logs, max_values=max_values
        )
        from_query = segment_partials(cursor, relation, batch[4], None, (), unit, max_values=max_values)
        assert from_table.values == from_query.values
        if max_values == 3:
            assert None in from_table.values.values()  # windows with too many users to slice


DAY_US = 86_400_000_000
YEAR_1_US = -62_135_596_800_000_000  # 0001-01-01, the first instant Python's datetime holds
instants = st.one_of(
    st.integers(DAY_US * 19_800, DAY_US * 19_803),  # a few days of 2024
    st.integers(-2 * DAY_US, 2 * DAY_US),  # around 1970, before it too
    st.sampled_from([YEAR_1_US, DAY_US * 2_932_000, DAY_US * 19_800 - 1, -1]),  # far off, and edges
    st.none(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(micros=st.lists(instants, max_size=40), unit=st.sampled_from(["day", "hour"]))
def test_the_windows_counted_from_the_table_are_those_of_the_query(
    micros: list[int | None], unit: str
) -> None:
    """Rows and latest request per window, in NumPy (the job's route) and by the job's query."""
    logs = pa.table({"timestamp": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))})
    with duckdb.connect() as con:
        relation = con.from_arrow(logs)
        counted = window_counts(logs, unit)
        assert counted is not None
        assert _window_counts(relation, unit, logs) == _window_counts(relation, unit)
        assert sum(rows for _start, rows, _latest in counted) == sum(m is not None for m in micros)


@pytest.mark.parametrize("change", ["nanoseconds", "infinity", "minus infinity"])
def test_what_the_table_cannot_count_is_left_to_the_query(change: str) -> None:
    ticks = [DAY_US * 19_800, DAY_US * 19_800 + 5, None]
    kind = pa.timestamp("us", tz="UTC")
    if change == "nanoseconds":
        ticks, kind = [None if t is None else t * 1_000 for t in ticks], pa.timestamp("ns", tz="UTC")
    else:
        ticks[2] = int(np.iinfo(np.int64).max) * (1 if change == "infinity" else -1)
    logs = pa.table({"timestamp": pa.array(ticks, pa.int64()).cast(kind)})
    assert window_counts(logs, "day") is None
    with duckdb.connect() as con:
        relation = con.from_arrow(logs)
        counted = _window_counts(relation, "day", logs)
        assert counted == _window_counts(relation, "day")
        assert sum(rows for rows, _latest in counted.values()) == 2


FLOATS = ("statistic", "p_value", "threshold")
"""Compared to 1e-9: profiles merge moments by Chan's formula, partial sums add in another order."""


def _row_key(row: dict) -> tuple:
    return (row["segment"], row["window_start"], row["column"], row["metric"])


def test_partials_of_disjoint_parts_give_the_rows_of_the_whole_batch(store: ParquetStore, batch) -> None:
    """Each part sees at most 13 users (sliceable there); together 25: the merge must not slice them."""
    logs, _labels, reference, _relation, labels = batch
    users = [int(u.removeprefix("user")) for u in logs["segment_user"].to_pylist()]
    cursor = store.cursor()
    parts = []
    for low in (True, False):
        part = logs.take(pa.array([i for i, u in enumerate(users) if (u < 13) == low], pa.int64()))
        computed = segment_partials(
            cursor, cursor.from_arrow(part), labels, reference.spec, ("classification",), "day", logs=part
        )
        assert all(computed.values[("segment_user", w)] is not None for w in _windows(computed))
        parts.append(SegmentPartials.from_bytes(computed.to_bytes()))  # as a work unit ships them
    merged = merge_segment_partials(parts)
    assert all(merged.values[("segment_user", w)] is None for w in _windows(merged))
    got = segment_rows(merged, "1", reference, "classification", "day", DEFAULT_POLICY, Thresholds())
    # The reports drawn first (as the job does while its profiles are computed): the same rows.
    reports = segment_reports(merged, "classification", "day", MAX_SEGMENT_VALUES)
    assert reports is not None and reports.placed
    again = segment_rows(
        merged, "1", reference, "classification", "day", DEFAULT_POLICY, Thresholds(), reports=reports
    )
    assert again == got
    whole = _computed(store, batch)
    assert sorted(got) == sorted(whole.rows) == DAYS
    for day in DAYS:
        expected = sorted(whole.rows[day]["1"], key=_row_key)
        actual = sorted(got[day], key=_row_key)
        assert [_row_key(r) for r in actual] == [_row_key(r) for r in expected]
        assert {r["segment"] for r in actual} == {f"region={r}" for r in REGIONS}
        for a, e in zip(actual, expected, strict=True):
            assert {k: v for k, v in a.items() if k not in FLOATS} == {
                k: v for k, v in e.items() if k not in FLOATS
            }, a
            for name in FLOATS:
                if e[name] is None:
                    assert a[name] is None, (name, a)
                else:
                    assert a[name] == pytest.approx(e[name], rel=1e-9, abs=1e-12), (name, a)


def _windows(partials: SegmentPartials) -> set[datetime]:
    return {w for column, w in partials.values if column == "segment_user"}


def test_window_values_merge_to_unsliceable_once_a_part_or_the_union_has_too_many() -> None:
    start = datetime(2024, 4, 1)
    a = {("segment_x", start): frozenset({"1", "2"}), ("segment_y", start): None}
    b = {("segment_x", start): frozenset({"2", "3"}), ("segment_y", start): frozenset({"1"})}
    assert merge_window_values([a, b], max_values=3) == {
        ("segment_x", start): frozenset({"1", "2", "3"}),
        ("segment_y", start): None,
    }
    assert merge_window_values([a, b], max_values=2)[("segment_x", start)] is None
    assert merge_window_values([b, a], max_values=3)[("segment_y", start)] is None


def _assert_close(actual, expected, path: str = "") -> None:
    """Equal values, floats to 1e-9 (sums added per slice, moments merged by Chan's formula)."""
    if dataclasses.is_dataclass(actual) and not isinstance(actual, type):
        assert type(actual) is type(expected), path
        for item in dataclasses.fields(actual):
            _assert_close(getattr(actual, item.name), getattr(expected, item.name), f"{path}.{item.name}")
    elif isinstance(actual, tuple | list):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{path}[{index}]")
    elif isinstance(actual, float) and isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("max_values", [MAX_SEGMENT_VALUES, MAX_SEGMENT_VALUES + 5], ids=["region", "both"])
def test_one_pass_over_the_stacked_rows_gives_the_whole_traffic_and_its_slices(
    store: ParquetStore, batch, max_values: int
) -> None:
    """The job's step 1 (stack_batch, batch_partials, batch_profiles) against two references: the
    slices' rows of segment_partials, and the whole traffic's latency, performance and window profiles
    computed directly on the logs. Rows without a region (the rest) count in the whole traffic only;
    with ``both`` the users are sliced too, their rows stacked a second time."""
    logs, _labels, reference, relation, labels = batch
    cursor = store.cursor()
    stacked = stack_batch(logs, relation, "day", max_values=max_values)
    assert {item.column for item in stacked.slices} == (
        {"segment_region"} if max_values == MAX_SEGMENT_VALUES else {"segment_region", "segment_user"}
    )
    segments, whole = batch_partials(cursor, stacked, labels, ("classification",), "day")
    segments.profiles, windows = batch_profiles(cursor, stacked, logs, reference.spec, "day")

    expected = segment_partials(
        cursor,
        relation,
        labels,
        reference.spec,
        ("classification",),
        "day",
        logs=logs,
        max_values=max_values,
        max_slices=MAX_SLICES,
    )
    assert segments.values == expected.values
    assert sorted(segments.profiles) == sorted(expected.profiles)
    for key, want in expected.profiles.items():
        _assert_close(segments.profiles[key], want, str(key))
    rows = [
        segment_rows(part, "1", reference, "classification", "day", DEFAULT_POLICY, Thresholds(), max_values)
        for part in (segments, expected)
    ]
    assert sorted(rows[0]) == sorted(rows[1]) == DAYS
    for day in DAYS:
        _assert_close(sorted(rows[0][day], key=_row_key), sorted(rows[1][day], key=_row_key), str(day))

    _assert_close(
        latency_from_partials([whole.latency], "day"),
        latency_from_partials([latency_partial(relation)], "day"),
    )
    _assert_close(
        classification_from_partials([whole.performance["classification"]], "day", positive_label=1.0),
        classification_from_partials(
            [classification_partial(relation, labels, "day", positive_label=1.0)], "day", positive_label=1.0
        ),
    )
    direct = profile(relation, reference.spec, window="day", timestamp_column="timestamp")
    assert sorted(windows) == [datetime(d.year, d.month, d.day) for d in DAYS]
    for start, want in direct.items():
        _assert_close(windows[start.replace(tzinfo=None)], want, str(start))
    assert windows[datetime(2024, 4, 1)].rows == ROWS_PER_DAY  # the rows without a region included
