"""analytics.metrics on a real monitored demo workspace (demo generator + monitoring job) and on small stores.

:func:`monitored_demo` builds the workspace the monitoring page's tests share: the demo scenario's
reference profiles, 11 of its days of traffic (the null burst, the latency regression and the first
income drift days) and the monitoring job's daily (and, for two days, hourly) metrics. It is built once
per test session under pytest's base temporary folder and only read afterwards.

Tests taking ``store_config`` run on a local folder (unit) and on SeaweedFS S3 (integration).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import jobs.monitor
from analytics import metrics
from analytics.metrics import InvalidQuery, MetricsQuery, MetricsReader
from analytics.store import CorruptParquet, ParquetStore, StoreConfig
from jobs.contracts import (
    INFERENCE_LOGS,
    LABEL_COLUMN,
    LABELS,
    METRICS,
    METRICS_SCHEMA,
    PROFILES,
    REFERENCE_PROFILES,
    TRAINING_DATA,
)
from jobs.demo_data import DEMO_VERSION, DemoScenario, demo_scenario, iter_demo_partitions
from jobs.monitor import MonitorRequest, read_metrics, run_monitor
from jobs.training import PROFILE_FILE_NAME, reference_profile

START = date(2024, 1, 1)
SCENARIO_DAYS = 62
KEPT_DAYS = (40, 49, 50, 51, 52, 56, 57, 58, 59, 60, 61)
"""Days written: the null burst (40), the latency regression (50-52) after a baseline day, the income
drift (from 60) after four clean days."""
HOURLY_DAYS = (60, 61)
VOLUME = 0.1
TRAINING_ROWS = 5000
_BUILT_MARKER = "built.json"


@dataclass(frozen=True)
class MonitoredDemo:
    """A monitored demo workspace.

    Attributes:
        data: Root of its Parquet store.
        scenario: The demo manifest (where incidents were injected).
        days: The days written, as dates.
    """

    data: Path
    scenario: DemoScenario
    days: tuple[date, ...]

    @property
    def first(self) -> date:
        """Oldest day with metrics."""
        return self.days[0]

    @property
    def last(self) -> date:
        """Newest day with metrics."""
        return self.days[-1]

    def drifted(self, model: str, environment: str) -> set[tuple[str, date]]:
        """The manifest's drifted (feature, day) of a model among the days written."""
        return {
            (feature, day)
            for name, env, feature, day in self.scenario.drifted_cells
            if name == model and env == environment and day in self.days
        }

    def store(self) -> ParquetStore:
        """A store on the workspace (close it after use)."""
        return ParquetStore(StoreConfig(data_uri=str(self.data)))


def _build(data: Path, scenario: DemoScenario, days: tuple[date, ...]) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(data)))
    try:
        for part in iter_demo_partitions(scenario):
            if part.dataset == TRAINING_DATA:
                model = scenario.model(part.partition["model"])
                columns = [*model.feature_columns, *model.segment_columns, LABEL_COLUMN]
                profile = reference_profile(store, part.table, columns, task=model.task)
                store.write_partition(
                    REFERENCE_PROFILES,
                    {**part.partition, "version": DEMO_VERSION},
                    profile.to_arrow(),
                    file_name=PROFILE_FILE_NAME,
                )
            elif (
                part.dataset in (INFERENCE_LOGS, LABELS)
                and date.fromisoformat(part.partition["date"]) in days
            ):
                store.write_partition(part.dataset, part.partition, part.table)
        now = scenario.generated_until
        daily = run_monitor(store, MonitorRequest(), now=now)
        hourly = run_monitor(
            store,
            MonitorRequest(
                window="hour", since=scenario.day(HOURLY_DAYS[0]), until=scenario.day(HOURLY_DAYS[-1])
            ),
            now=now,
        )
        assert daily.ok and hourly.ok, daily.to_text() + hourly.to_text()
    finally:
        store.close()


def monitored_demo(factory: pytest.TempPathFactory) -> MonitoredDemo:
    """The shared monitored demo workspace, built on first use in this test session."""
    scenario = demo_scenario(START, days=SCENARIO_DAYS, volume=VOLUME, training_rows=TRAINING_ROWS)
    days = tuple(scenario.day(i) for i in KEPT_DAYS)
    root = factory.getbasetemp() / "monitored-demo"
    marker = root / _BUILT_MARKER
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)  # a build interrupted earlier in the session
        _build(root / "data", scenario, days)
        marker.write_text(json.dumps({"days": [d.isoformat() for d in days]}))
    return MonitoredDemo(root / "data", scenario, days)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> MonitoredDemo:
    """The monitored demo workspace."""
    return monitored_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def reader(demo: MonitoredDemo):
    """A caching reader over the demo workspace."""
    store = demo.store()
    yield MetricsReader(store)
    store.close()


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --------------------------------------------------------------------------- constants and queries


@pytest.mark.unit
def test_names_mirror_the_contracts_and_the_monitoring_job() -> None:
    assert metrics.METRICS_DATASET == METRICS
    assert metrics.PROFILES_DATASET == PROFILES
    assert metrics.REFERENCE_PROFILES_DATASET == REFERENCE_PROFILES
    assert metrics.REFERENCE_PROFILE_FILE == PROFILE_FILE_NAME
    assert metrics.PROFILE_INFIX == jobs.monitor._PROFILE_INFIX
    assert f"day{metrics.ERRORS_SUFFIX}.parquet" == f"day{jobs.monitor._ERRORS_SUFFIX}"
    assert dict(metrics.WINDOW_UNITS) == dict(jobs.monitor.WINDOW_UNITS)
    assert list(metrics._EMPTY_METRICS.schema.names) == METRICS_SCHEMA.names


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"project": "../etc"}, "invalid project"),
        ({"model": "a/b"}, "invalid model"),
        ({"environment": ""}, "invalid environment"),
        ({"project": "x" * 129}, "longer than 128"),
        ({"start": date(2024, 2, 1), "end": date(2024, 1, 1)}, "after it ends"),
        ({"start": "2024-01-01"}, "start must be a date"),
        ({"end": datetime(2024, 1, 1, tzinfo=UTC)}, "end must be a date"),
        ({"window": "minute"}, "window must be one of day, hour"),
        ({"start": date(2023, 1, 1), "end": date(2024, 1, 2)}, "at most 366 days"),
        ({"window": "hour", "start": date(2024, 1, 1), "end": date(2024, 2, 1)}, "at most 31 days"),
    ],
)
def test_queries_refuse_what_cannot_exist(fields: dict, message: str) -> None:
    values = {
        "project": "p",
        "model": "m",
        "environment": "prod",
        "start": date(2024, 1, 1),
        "end": date(2024, 1, 31),
        "window": "day",
    }
    with pytest.raises(InvalidQuery, match=message):
        MetricsQuery(**{**values, **fields})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("window", "days", "period"),
    [
        ("day", 30, timedelta(days=1)),
        ("day", 62, timedelta(days=1)),
        ("day", 63, timedelta(days=7)),
        ("day", 366, timedelta(days=7)),
        ("hour", 2, timedelta(hours=1)),
        ("hour", 7, timedelta(hours=6)),
        ("hour", 31, timedelta(days=1)),
    ],
)
def test_long_ranges_are_shown_in_coarser_periods(window: str, days: int, period: timedelta) -> None:
    query = MetricsQuery(
        "p", "m", "prod", date(2024, 1, 1), date(2024, 1, 1) + timedelta(days=days - 1), window
    )
    assert metrics.period_length(query) == period


@pytest.mark.unit
def test_periods_of_a_week_start_on_monday() -> None:
    week = timedelta(days=7)
    wednesday = datetime(2024, 3, 6, 15, tzinfo=UTC)
    assert metrics.period_start(wednesday, week) == datetime(2024, 3, 4, tzinfo=UTC)
    assert metrics.period_start(wednesday, timedelta(hours=6)) == datetime(2024, 3, 6, 12, tzinfo=UTC)
    assert metrics.period_start(wednesday, timedelta(days=1)) == datetime(2024, 3, 6, tzinfo=UTC)


# --------------------------------------------------------------------------- the demo workspace


@pytest.mark.unit
def test_listing_follows_the_partitions(demo: MonitoredDemo, reader: MetricsReader) -> None:
    assert metrics.list_models(reader, "credit-risk") == ["churn", "credit-default"]
    assert metrics.list_environments(reader, "demand-forecast", "demand") == ["prod", "staging"]
    assert metrics.available_dates(reader, "credit-risk", "credit-default", "prod") == list(demo.days)
    assert metrics.available_windows(reader, "credit-risk", "credit-default", "prod") == ["day", "hour"]
    assert metrics.list_models(reader, "no-such-project") == []
    assert metrics.available_dates(reader, "credit-risk", "no-such-model", "prod") == []


@pytest.mark.unit
def test_drift_matrix_marks_exactly_the_injected_drift(demo: MonitoredDemo, reader: MetricsReader) -> None:
    matrix = metrics.drift_matrix(reader, "credit-risk", "credit-default", "prod", demo.first, demo.last)
    expected = {(feature, _utc(day)) for feature, day in demo.drifted("credit-default", "prod")}
    assert expected  # the kept days include the first drifted days of income
    assert set(matrix.drifted) == expected
    model = demo.scenario.model("credit-default")
    assert set(matrix.columns) == {*model.feature_columns, *model.segment_columns}
    assert matrix.windows == len(demo.days)
    assert len(matrix.rows) == len(matrix.columns) * len(demo.days)
    assert matrix.period == timedelta(days=1) and not matrix.grouped
    assert matrix.worst()[0] == "income"
    # The figure rows: evaluated cells are "ok" with the verdict kept; the method comes from the job.
    drifted_rows = [row for row in matrix.rows if row["drifted"]]
    assert {(row["column"], row["window_start"]) for row in drifted_rows} == expected
    assert all(row["status"] == "ok" and row["verdict"] == "drift" for row in drifted_rows)
    assert {row["method"] for row in matrix.rows} == {"ks", "chi2"}
    # The same decisions as the monitoring job's own (DuckDB) reader returns.
    store = demo.store()
    try:
        table = read_metrics(
            store, "credit-risk", "credit-default", "prod", since=demo.first, until=demo.last
        )
    finally:
        store.close()
    decisions = [r for r in table.to_pylist() if r["metric"] == "drift"]
    assert {(r["column"], r["window_start"]) for r in decisions if r["drifted"]} == expected
    assert len(decisions) == len(matrix.rows)


@pytest.mark.unit
def test_other_models_show_no_drift_where_none_was_injected(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    for project, model in (("credit-risk", "churn"), ("demand-forecast", "demand")):
        matrix = metrics.drift_matrix(reader, project, model, "prod", demo.first, demo.last)
        assert matrix.rows and not matrix.drifted, model


@pytest.mark.unit
def test_a_year_range_groups_windows_into_weeks_and_keeps_the_worst(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    matrix = metrics.drift_matrix(
        reader, "credit-risk", "credit-default", "prod", demo.last - timedelta(days=364), demo.last
    )
    assert matrix.grouped and matrix.period == timedelta(days=7)
    assert all(row["window_start"].weekday() == 0 for row in matrix.rows)
    income = [row for row in matrix.rows if row["column"] == "income" and row["drifted"]]
    # 2024-03-01 (Friday) and 2024-03-02 (Saturday) share the week of Monday 2024-02-26.
    assert [row["window_start"] for row in income] == [datetime(2024, 2, 26, tzinfo=UTC)]
    assert income[0]["window"] in {_utc(day) for _feature, day in demo.drifted("credit-default", "prod")}
    assert set(matrix.drifted) == {(f, _utc(d)) for f, d in demo.drifted("credit-default", "prod")}


@pytest.mark.unit
def test_hourly_metrics_are_read_separately_from_daily_ones(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    first, last = demo.scenario.day(HOURLY_DAYS[0]), demo.scenario.day(HOURLY_DAYS[-1])
    matrix = metrics.drift_matrix(reader, "credit-risk", "credit-default", "prod", first, last, "hour")
    starts = {row["window_start"] for row in matrix.rows}
    assert len(starts) == 48
    assert all(row["window_end"] - row["window"] == timedelta(hours=1) for row in matrix.rows)
    daily = metrics.drift_matrix(reader, "credit-risk", "credit-default", "prod", first, last, "day")
    assert daily.windows == 2


@pytest.mark.unit
def test_feature_detail_focuses_the_worst_window_with_both_distributions(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    detail = metrics.feature_detail(
        reader, "credit-risk", "credit-default", "prod", demo.first, demo.last, "day", "income"
    )
    assert len(detail.timeline) == len(demo.days)
    assert detail.focus is not None and detail.focus["drifted"]
    assert ("income", detail.focus["window_start"]) in {
        ("income", _utc(d)) for _f, d in demo.drifted("credit-default", "prod")
    }
    assert detail.reference is not None and detail.current is not None
    assert detail.reference.spec == detail.current.spec and detail.current.kind == "numeric"
    # The current window is shifted by one standard deviation: its mean is far above the reference's.
    assert detail.current.mean - detail.reference.mean > 0.8 * 15_000
    assert detail.notes == ()
    checks = {f.check: f for f in detail.quality.findings}
    assert {"missing_share", "out_of_range_share", "schema", "freshness_lag_s", "row_count"} <= set(checks)


@pytest.mark.unit
def test_feature_detail_of_a_clicked_cell_shows_the_null_burst(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    burst_day = demo.scenario.null_burst_date
    assert burst_day in demo.days
    detail = metrics.feature_detail(
        reader,
        "credit-risk",
        "credit-default",
        "prod",
        demo.first,
        demo.last,
        "day",
        "debt_to_income",
        _utc(burst_day),
    )
    assert detail.focus["window_start"] == _utc(burst_day)
    missing = next(f for f in detail.quality.findings if f.check == "missing_share")
    assert missing.status == "warning" and missing.value == pytest.approx(0.6, abs=0.01)
    assert missing in detail.quality.problems
    assert detail.current.nulls > 0 and detail.reference.nulls == 0
    direct = metrics.quality_for(
        reader,
        "credit-risk",
        "credit-default",
        "prod",
        demo.first,
        demo.last,
        "day",
        "debt_to_income",
        _utc(burst_day),
    )
    assert [f.check for f in direct.findings] == [f.check for f in detail.quality.findings]


@pytest.mark.unit
def test_feature_detail_of_a_categorical_feature_and_of_an_unknown_one(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    detail = metrics.feature_detail(
        reader, "demand-forecast", "demand", "prod", demo.first, demo.last, "day", "channel"
    )
    assert detail.current.kind == "categorical"
    assert set(detail.reference.spec.categories) == {"store", "online", "wholesale"}
    assert "new_category_share" in {f.check for f in detail.quality.findings}
    unknown = metrics.feature_detail(
        reader, "demand-forecast", "demand", "prod", demo.first, demo.last, "day", "<img src=x>"
    )
    assert unknown.focus is None and unknown.timeline == () and unknown.current is None


@pytest.mark.unit
def test_performance_series_follow_the_task_and_the_late_labels(
    demo: MonitoredDemo, reader: MetricsReader
) -> None:
    classification = metrics.performance_series(
        reader, "credit-risk", "credit-default", "prod", demo.first, demo.last
    )
    assert classification.task == "classification" and "roc_auc" in classification.metrics
    by_day = {row["window_start"].date(): row for row in classification.rows}
    assert set(by_day) == set(demo.days)
    early = by_day[demo.first]
    assert early["label_coverage"] == pytest.approx(0.9, abs=0.1)
    assert 0.5 < early["accuracy"] <= 1.0 and early["n_labelled"] <= early["n"]
    # Labels arrive 1-7 days late and the traffic ends after the last day: none of it is labelled.
    assert by_day[demo.last]["label_coverage"] == 0.0 and by_day[demo.last]["accuracy"] is None
    assert classification.latest("accuracy")[0].date() < demo.last
    regression = metrics.performance_series(
        reader, "demand-forecast", "demand", "prod", demo.first, demo.last
    )
    assert regression.task == "regression" and regression.rows[0]["rmse"] > 0
    assert (
        metrics.performance_series(reader, "credit-risk", "nope", "prod", demo.first, demo.last).task is None
    )


@pytest.mark.unit
def test_latency_series_show_the_regression_days(demo: MonitoredDemo, reader: MetricsReader) -> None:
    rows = metrics.latency_series(reader, "demand-forecast", "demand", "prod", demo.first, demo.last)
    slow_days = {day for _model, _env, day in demo.scenario.latency_cells}
    slow = [r["p95_ms"] for r in rows if r["window_start"].date() in slow_days]
    normal = [r["p95_ms"] for r in rows if r["window_start"].date() not in slow_days]
    assert len(slow) == 3 and len(normal) == len(demo.days) - 3
    assert min(slow) > 2.5 * max(normal)
    assert all(r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in rows)
    # Day 50 has one earlier day (49) in the look-back: no baseline yet, so no verdict.
    assert rows[1]["p95_flagged"] is None


@pytest.mark.unit
def test_segments_and_export_of_the_demo(demo: MonitoredDemo, reader: MetricsReader) -> None:
    query = MetricsQuery("credit-risk", "credit-default", "prod", demo.first, demo.last)
    matrix = metrics.drift_matrix(reader, "credit-risk", "credit-default", "prod", demo.first, demo.last)
    assert matrix.segments == ("segment_region",)
    table = metrics.export_table(reader, query)
    assert table.column_names[:3] == ["project", "model", "environment"]
    assert table.num_rows == reader.table(query).num_rows
    rows = list(csv.DictReader(io.StringIO(metrics.export_csv(reader, query).decode())))
    assert len(rows) == table.num_rows
    shown = metrics.export_table(reader, query, metrics.PAGE_METRICS)
    assert 0 < shown.num_rows < table.num_rows
    assert set(shown["metric"].to_pylist()) == set(table["metric"].to_pylist()) & set(metrics.PAGE_METRICS)
    assert {r["model"] for r in rows} == {"credit-default"}
    assert rows[0]["window_start"] == f"{demo.first}T00:00:00Z"


@pytest.mark.unit
def test_overview_summarises_every_model(demo: MonitoredDemo, reader: MetricsReader) -> None:
    summary = metrics.overview(reader, ["credit-risk", "demand-forecast"], days=7)
    assert summary.models_per_environment() == {"prod": 3, "staging": 3}
    status = {(s.model, s.environment): s for s in summary.statuses}
    assert all(s.last_day == demo.last for s in summary.statuses)
    assert status[("credit-default", "prod")].drifted_features == ("income",)
    assert status[("demand", "prod")].performance_metric == "rmse"
    assert status[("churn", "prod")].performance_metric == "accuracy"
    assert status[("churn", "prod")].performance_at.date() < demo.last
    assert summary.drifted_features == sum(len(s.drifted_features) for s in summary.statuses)
    # Seven days back from the last day: 2024-02-25 to 2024-03-02 holds 6 of the written days.
    days = {row["window_start"].date() for row in summary.latency if row["model"] == "demand"}
    assert days == {d for d in demo.days if d > demo.last - timedelta(days=7)}
    assert metrics.overview(reader, ["nothing-here"]).statuses == ()


@pytest.mark.unit
def test_a_store_is_accepted_where_a_reader_is(demo: MonitoredDemo) -> None:
    store = demo.store()
    try:
        matrix = metrics.drift_matrix(store, "credit-risk", "credit-default", "prod", demo.first, demo.last)
        assert matrix.drifted
    finally:
        store.close()
    with pytest.raises(TypeError, match="ParquetStore or a MetricsReader"):
        metrics.reader_of("not a store")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- caching and bad files


def _metrics_table(day: date, columns: list[str], statistic: float, reason: str | None = None) -> pa.Table:
    start = _utc(day)
    rows = [
        {
            "version": "1",
            "window_start": start,
            "window_end": start + timedelta(days=1),
            "column": column,
            "metric": "drift",
            "statistic": statistic,
            "p_value": None,
            "threshold": 0.1,
            "drifted": statistic > 0.1,
            "status": "drift" if statistic > 0.1 else "ok",
            "n_reference": 1000,
            "n_current": 500,
            "reason": reason or "method=psi: drift when statistic > threshold",
        }
        for column in columns
    ]
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def _write(store: ParquetStore, day: date, table: pa.Table) -> str:
    partition = {"project": "p", "model": "m", "environment": "prod", "date": day.isoformat()}
    return store.write_partition(METRICS, partition, table, file_name="day.parquet")


@pytest.fixture
def small_store(store_config: StoreConfig):
    store = ParquetStore(store_config)
    yield store
    store.close()


DAYS = [date(2024, 5, 1) + timedelta(days=i) for i in range(5)]


def test_reader_caches_files_and_sees_rewrites(small_store: ParquetStore) -> None:
    for day in DAYS:
        _write(small_store, day, _metrics_table(day, ["a", "b"], 0.05))
    reader = MetricsReader(small_store)
    query = MetricsQuery("p", "m", "prod", DAYS[0], DAYS[-1])
    assert reader.table(query).num_rows == 10 and reader.cached_rows == 10
    assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1]).drifted == frozenset()
    reads = []
    original = reader._read_one
    reader._read_one = lambda entry: reads.append(entry.path) or original(entry)  # type: ignore[method-assign]
    assert reader.table(query).num_rows == 10 and reads == []  # every file from the cache
    first = metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1])
    assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1]) is first  # memoized
    _write(small_store, DAYS[2], _metrics_table(DAYS[2], ["a", "b", "c"], 0.5))
    matrix = metrics.drift_matrix(reader, "p", "m", "prod", DAYS[0], DAYS[-1])
    assert len(reads) == 1 and reads[0].endswith(f"date={DAYS[2].isoformat()}/day.parquet")
    assert matrix is not first  # the rewritten file changed the query's signature
    assert matrix.drifted == {(c, _utc(DAYS[2])) for c in ("a", "b", "c")}
    assert matrix.columns == ("a", "b", "c")
    assert metrics.drift_matrix(reader, "p", "m", "prod", DAYS[3], DAYS[4]).drifted == frozenset()


def test_reader_cache_stays_within_its_bound(small_store: ParquetStore) -> None:
    for day in DAYS:
        _write(small_store, day, _metrics_table(day, ["a", "b", "c"], 0.05))
    reader = MetricsReader(small_store, max_cached_rows=7)
    assert reader.table(MetricsQuery("p", "m", "prod", DAYS[0], DAYS[-1])).num_rows == 15
    assert reader.cached_rows <= 7


def test_method_comes_from_the_statistics_when_the_reason_does_not_say(small_store: ParquetStore) -> None:
    decision = _metrics_table(DAYS[0], ["a"], 0.3, reason="custom decision")
    statistics = decision.to_pylist()[0] | {
        "metric": "ks",
        "threshold": None,
        "drifted": None,
        "status": "ok",
    }
    other = statistics | {"metric": "psi", "statistic": 0.9}
    table = pa.concat_tables([decision, pa.Table.from_pylist([statistics, other], schema=METRICS_SCHEMA)])
    _write(small_store, DAYS[0], table)
    rows = metrics.drift_rows(
        MetricsReader(small_store).table(MetricsQuery("p", "m", "prod", DAYS[0], DAYS[0]))
    )
    assert [row["method"] for row in rows] == ["ks"]


def test_a_corrupt_metrics_file_is_named(small_store: ParquetStore) -> None:
    _write(small_store, DAYS[0], _metrics_table(DAYS[0], ["a"], 0.05))
    uri = _write(small_store, DAYS[1], _metrics_table(DAYS[1], ["a"], 0.05))
    path = uri.removeprefix("s3://")
    with small_store.filesystem().open_output_stream(path) as handle:
        handle.write(b"PAR1 this is not parquet")
    with pytest.raises(CorruptParquet, match="date=2024-05-02"):
        MetricsReader(small_store).table(MetricsQuery("p", "m", "prod", DAYS[0], DAYS[1]))


def test_export_defuses_spreadsheet_formulas(small_store: ParquetStore) -> None:
    _write(small_store, DAYS[0], _metrics_table(DAYS[0], ["a"], 0.05, reason='=HYPERLINK("http://x")'))
    text = metrics.export_csv(small_store, MetricsQuery("p", "m", "prod", DAYS[0], DAYS[0])).decode()
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["reason"] == '\'=HYPERLINK("http://x")' and row["column"] == "a"
    assert (
        row["window_start"] == "2024-05-01T00:00:00Z" and row["p_value"] == "" and row["drifted"] == "false"
    )


@pytest.mark.unit
def test_memoized_computes_once_for_concurrent_callers(tmp_path: Path) -> None:
    reader = MetricsReader(ParquetStore(StoreConfig(data_uri=str(tmp_path))))
    started, release, calls = threading.Event(), threading.Event(), []

    def slow() -> object:
        calls.append(1)
        started.set()
        release.wait(5)
        return object()

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(reader.memoized, "key", slow)
        assert started.wait(5)
        others = [pool.submit(reader.memoized, "key", slow) for _ in range(2)]
        release.set()
        results = {id(first.result(5)), *(id(f.result(5)) for f in others)}
    assert len(calls) == 1 and len(results) == 1


@pytest.mark.unit
def test_memoized_lets_waiters_compute_when_the_first_computation_fails(tmp_path: Path) -> None:
    reader = MetricsReader(ParquetStore(StoreConfig(data_uri=str(tmp_path))))
    started, release = threading.Event(), threading.Event()

    def failing() -> object:
        started.set()
        release.wait(5)
        raise ValueError("broken")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(reader.memoized, "key", failing)
        assert started.wait(5)
        second = pool.submit(reader.memoized, "key", lambda: "computed by the waiter")
        release.set()
        with pytest.raises(ValueError, match="broken"):
            first.result(5)
        assert second.result(5) == "computed by the waiter"
    assert reader.memoized("key", lambda: "again") == "again"  # a failure is not remembered
