"""The monitoring job on a local folder: idempotence, atomicity, incrementality, bad inputs, the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analytics.performance import LATENCY_RELATIVE_ACCURACY
from analytics.profile import merge_profiles, profiles_from_arrow
from analytics.store import ParquetStore, StoreConfig
from jobs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from jobs.contracts import (
    INFERENCE_LOGS,
    LABELS,
    METRICS,
    PROFILES,
    REFERENCE_PROFILES,
    UNIQUE_KEYS,
    segment_columns,
)
from jobs.demo_data import CREDIT_DEFAULT, DEMO_VERSION, PROD, STAGING, DemoScenario, generate_demo_data
from jobs.monitor import (
    MONITOR_POLICY,
    MONITOR_STATE,
    MonitorError,
    MonitorRequest,
    MonitorSummary,
    read_metrics,
    read_window_profiles,
    run_monitor,
)
from jobs.training import PROFILE_FILE_NAME, read_training_table, reference_profile

pytestmark = pytest.mark.unit

START = date(2024, 1, 1)
NOW = datetime(2024, 6, 1, tzinfo=UTC)
"""Long after the demo traffic: no date is within the label horizon unless a test says so."""

METRIC_KEY = ("project", "model", "environment", *UNIQUE_KEYS[METRICS])
TARGETS = {(m.project, m.model, e) for m in (CREDIT_DEFAULT,) for e in (PROD, STAGING)}


# --------------------------------------------------------------------------- workspace helpers


def write_references(store: ParquetStore, scenario: DemoScenario) -> None:
    """What training writes for version 1 of each demo model (its reference profile), without MLflow."""
    for model in scenario.models:
        table = read_training_table(store, model.project, model.model)
        columns = [*model.feature_columns, *segment_columns(table.column_names), "label"]
        store.write_partition(
            REFERENCE_PROFILES,
            {"project": model.project, "model": model.model, "version": DEMO_VERSION},
            reference_profile(store, table, columns, task=model.task).to_arrow(),
            file_name=PROFILE_FILE_NAME,
            replace_partition=True,
        )


def build_workspace(root: Path, days: int, volume: float, training_rows: int = 2_000) -> DemoScenario:
    """Demo traffic, labels and version-1 reference profiles under ``root``."""
    store = ParquetStore(StoreConfig(data_uri=str(root)))
    try:
        scenario = generate_demo_data(store, START, days, seed=7, volume=volume, training_rows=training_rows)
        write_references(store, scenario)
    finally:
        store.close()
    return scenario


def copy_workspace(source: Path, target: Path) -> ParquetStore:
    shutil.copytree(source, target)
    return ParquetStore(StoreConfig(data_uri=str(target)))


def metric_rows(store: ParquetStore, **filters: object) -> list[dict]:
    """Every metrics row, sorted by its key."""
    files = store.list_files(METRICS, filters=filters or None)
    if not files:
        return []
    table = store.read(METRICS, filters=filters or None)
    columns = [c for c in table.column_names if c != "date"]
    return table.select(columns).sort_by([(key, "ascending") for key in METRIC_KEY]).to_pylist()


FLOATS = ("statistic", "p_value", "threshold")


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """Equal rows; floats equal up to the order DuckDB summed them in (parallel aggregation)."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert {k: v for k, v in got.items() if k not in FLOATS} == {
            k: v for k, v in want.items() if k not in FLOATS
        }
        for name in FLOATS:
            if want[name] is None or got[name] is None:
                assert got[name] is want[name], (name, got)
            else:
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-300), (name, got)


def profile_counts(store: ParquetStore) -> dict[tuple, tuple]:
    """The integer content of every written window profile (exact whatever the summation order)."""
    counts = {}
    for stored in store.list_files(PROFILES):
        with store.filesystem().open_input_file(stored.path.removeprefix("s3://")) as handle:
            table = pq.ParquetFile(handle).read()
        for window, profile in profiles_from_arrow(table).items():
            for column in profile.columns:
                key = (stored.path[len(store.root) :], window, column.name)
                counts[key] = (
                    column.rows,
                    column.nulls,
                    column.bin_counts,
                    column.category_counts,
                    column.other_count,
                )
    return counts


def keys_of(rows: Iterable[dict]) -> Counter:
    return Counter(tuple(r[k] for k in METRIC_KEY) for r in rows)


def data_files(store: ParquetStore, dataset: str) -> dict[str, bytes]:
    """Relative path -> content of every file of a dataset."""
    root = Path(store.dataset_uri(dataset))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def log_file(store: ParquetStore, model: str, environment: str, day: date) -> Path:
    files = store.list_files(
        INFERENCE_LOGS, filters={"model": model, "environment": environment, "date": day.isoformat()}
    )
    assert len(files) == 1
    return Path(files[0].path)


def computed(summary: MonitorSummary) -> dict[tuple[str, str, str], set[date]]:
    return {(t.project, t.model, t.environment): set(t.computed) for t in summary.targets}


def day(index: int) -> date:
    return START + timedelta(days=index)


def cli(root: Path, var: Path, *args: str) -> int:
    return main(["monitor", *args], {"MMS_DATA_URI": str(root), "MMS_VAR_DIR": str(var)})


@pytest.fixture(scope="module")
def demo12(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoScenario]:
    """A pristine 12-day demo workspace (small volume); tests copy it before touching it."""
    root = tmp_path_factory.mktemp("demo12") / "data"
    return root, build_workspace(root, days=12, volume=0.1)


@pytest.fixture(scope="module")
def monitored12(demo12, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict]:
    """A copy of ``demo12`` monitored once from scratch: the clean run other runs must reproduce."""
    root = tmp_path_factory.mktemp("monitored12") / "data"
    store = copy_workspace(demo12[0], root)
    summary = run_monitor(store, now=NOW)
    assert summary.ok, summary.to_text()
    assert summary.computed_dates == 6 * 12
    rows, profiles = metric_rows(store), profile_counts(store)
    store.close()
    return root, rows, profiles


@pytest.fixture
def workspace(demo12, tmp_path: Path) -> ParquetStore:
    store = copy_workspace(demo12[0], tmp_path / "data")
    yield store
    store.close()


# --------------------------------------------------------------------------- idempotence


def test_a_rerun_writes_the_same_rows_and_never_duplicates(monitored12, tmp_path: Path) -> None:
    source, rows, profiles = monitored12
    workspace = copy_workspace(source, tmp_path / "data")
    assert rows and max(keys_of(rows).values()) == 1
    files = {**data_files(workspace, METRICS), **data_files(workspace, PROFILES)}

    again = run_monitor(workspace, now=NOW)
    assert again.computed_dates == 0
    assert all(len(t.skipped) == 12 for t in again.targets)

    backfill = run_monitor(workspace, MonitorRequest(backfill=True), now=NOW)
    assert backfill.computed_dates == 6 * 12
    assert set(backfill.targets[0].reasons.values()) == {"backfill"}
    assert_same_rows(metric_rows(workspace), rows)
    assert {**data_files(workspace, METRICS), **data_files(workspace, PROFILES)}.keys() == files.keys()
    assert profile_counts(workspace) == profiles


def test_every_window_has_drift_quality_performance_and_latency_rows(workspace: ParquetStore) -> None:
    run_monitor(workspace, MonitorRequest(model="credit-default", environment=PROD), now=NOW)
    rows = [r for r in metric_rows(workspace) if r["window_start"].date() == day(3)]
    metrics = {(r["column"], r["metric"]) for r in rows}
    for feature in CREDIT_DEFAULT.numeric_features:
        assert {
            (feature, m) for m in ("drift", "ks", "psi", "missing_share", "out_of_range_share")
        } <= metrics
    for feature in (*CREDIT_DEFAULT.categorical_features, "segment_region"):
        assert {(feature, m) for m in ("drift", "chi2", "missing_share", "new_category_share")} <= metrics
    assert ("label", "drift") not in metrics  # the logs carry no label
    income = next(r for r in rows if (r["column"], r["metric"]) == ("income", "drift"))
    # A few hundred values a day: the KS test decides, at the monitor's alpha, on the adjusted p-value.
    assert income["threshold"] == MONITOR_POLICY.alpha and income["reason"].startswith("method=ks")
    assert {("prediction", m) for m in ("accuracy", "roc_auc", "log_loss", "ece")} <= metrics
    assert {
        ("label", "label_coverage"),
        ("latency_ms", "latency_p95"),
        ("latency_ms", "latency_p99"),
    } <= metrics
    assert {("*", "row_count"), ("*", "schema"), ("*", "drift_share"), ("*", "throughput_rps")} <= metrics
    assert {("timestamp", "freshness_lag_s"), ("timestamp", "last_inference_at")} <= metrics
    logs = pq.read_table(log_file(workspace, "credit-default", PROD, day(3)))
    (count,) = [r for r in rows if r["metric"] == "row_count"]
    assert count["statistic"] == logs.num_rows and count["version"] == DEMO_VERSION
    assert count["window_end"] - count["window_start"] == timedelta(days=1)
    p95 = next(r for r in rows if r["metric"] == "latency_p95")
    exact_p95 = float(pc.quantile(logs["latency_ms"], q=0.95)[0].as_py())
    # Binned quantiles (the method a scaled-out merge shares), within their documented relative error.
    assert p95["statistic"] == pytest.approx(exact_p95, rel=LATENCY_RELATIVE_ACCURACY)
    latest = next(r for r in rows if r["metric"] == "last_inference_at")
    assert latest["statistic"] == pc.max(logs["timestamp"]).as_py().timestamp()
    profiles = read_window_profiles(
        workspace, "credit-risk", "credit-default", PROD, since=day(3), until=day(3)
    )
    (((version, start), window_profile),) = profiles.items()
    assert (version, start) == (DEMO_VERSION, datetime(2024, 1, 4))
    assert window_profile.rows == logs.num_rows
    assert window_profile["income"].nulls == logs["income"].null_count


# --------------------------------------------------------------------------- atomicity


class Killed(Exception):
    """Stands for the process being killed between staging and publishing."""


@pytest.mark.parametrize("failure", [Killed, OSError], ids=["killed", "publish-error"])
def test_a_run_killed_between_staging_and_publishing_then_rerun_equals_one_clean_run(
    demo12, monitored12, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    _root, clean_rows, clean_profiles = monitored12
    expected = [r for r in clean_rows if r["model"] == "credit-default"]
    request = MonitorRequest(model="credit-default", workers=1)

    store = copy_workspace(demo12[0], tmp_path / "killed")
    original = ParquetStore._publish
    calls = {"n": 0}

    def publish_once_failing(self, staged: str, final: str) -> None:
        # The 5th metrics file of the second environment: the first environment and 4 dates are done.
        if f"environment={STAGING}" in final and "/metrics/" in final.replace(os.sep, "/"):
            calls["n"] += 1
            if calls["n"] == 5:
                assert os.path.exists(staged)  # the file is staged, complete, but not yet visible
                raise failure("killed between staging and publishing")
        original(self, staged, final)

    monkeypatch.setattr(ParquetStore, "_publish", publish_once_failing)
    if failure is Killed:
        with pytest.raises(Killed):
            run_monitor(store, request, now=NOW)
    else:
        summary = run_monitor(store, request, now=NOW)
        assert not summary.ok and {p.kind for p in summary.all_problems} == {"write_failed"}
    assert calls["n"] >= 5
    # Readers see whole files only, no staging file is left behind, nothing is duplicated.
    assert not list((tmp_path / "killed" / "_staging").glob("*.parquet"))
    partial = metric_rows(store)
    assert 0 < len(partial) < len(expected) and max(keys_of(partial).values()) == 1

    rerun = run_monitor(store, request, now=NOW)
    assert rerun.ok
    assert computed(rerun) == {
        ("credit-risk", "credit-default", PROD): set(),  # its state was saved before the kill
        ("credit-risk", "credit-default", STAGING): {day(i) for i in range(12)},
    }
    assert_same_rows(metric_rows(store), expected)
    assert profile_counts(store) == {k: v for k, v in clean_profiles.items() if "credit-default" in k[0]}


# --------------------------------------------------------------------------- incremental runs


def test_incremental_runs_compute_new_days_and_days_whose_labels_arrived(
    workspace: ParquetStore, tmp_path: Path
) -> None:
    aside = tmp_path / "aside"
    root = Path(workspace.root)

    def move(dataset: str, when: date, back: bool = False) -> None:
        for model in ("credit-default",):
            for environment in (PROD, STAGING):
                relative = Path(
                    dataset, "project=credit-risk", f"model={model}", f"environment={environment}"
                )
                relative = relative / f"date={when.isoformat()}"
                source, target = (
                    (aside / relative, root / relative) if back else (root / relative, aside / relative)
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, target)

    # Day 11 has not arrived yet, nor the labels of days 3 and 9.
    move(INFERENCE_LOGS, day(11))
    move(LABELS, day(3))
    move(LABELS, day(9))
    request = MonitorRequest(model="credit-default")
    first = run_monitor(workspace, request, now=datetime(2024, 1, 12, 0, 30, tzinfo=UTC))
    assert computed(first) == {key: {day(i) for i in range(11)} for key in TARGETS}
    coverage = {
        (r["environment"], r["window_start"].date()): r["statistic"]
        for r in metric_rows(workspace)
        if r["metric"] == "label_coverage"
    }
    assert coverage[(PROD, day(9))] == 0.0 and coverage[(PROD, day(3))] == 0.0

    # Then day 11 arrives, with the labels of day 9 (within the 7-day horizon) and of day 3 (too late).
    move(INFERENCE_LOGS, day(11), back=True)
    move(LABELS, day(3), back=True)
    move(LABELS, day(9), back=True)
    second = run_monitor(workspace, request, now=datetime(2024, 1, 13, 0, 30, tzinfo=UTC))
    assert computed(second) == {key: {day(9), day(11)} for key in TARGETS}
    reasons = second.targets[0].reasons
    assert reasons == {day(9): "labels changed", day(11): "new"}
    assert all(len(t.skipped) == 10 for t in second.targets)
    coverage = {
        (r["environment"], r["window_start"].date()): r["statistic"]
        for r in metric_rows(workspace)
        if r["metric"] == "label_coverage"
    }
    assert coverage[(PROD, day(9))] > 0.1
    assert coverage[(PROD, day(3))] == 0.0  # outside the horizon: only a backfill picks it up

    # A late label appended to day 10 (a new file in its partition) triggers day 10 only.
    labels = pq.read_table(
        next(
            iter(workspace.list_files(LABELS, filters={"date": day(10).isoformat(), "environment": PROD}))
        ).path
    )
    workspace.append(
        LABELS,
        {
            "project": "credit-risk",
            "model": "credit-default",
            "environment": PROD,
            "date": day(10).isoformat(),
        },
        labels.slice(0, 1),
    )
    third = run_monitor(workspace, request, now=datetime(2024, 1, 13, 1, 0, tzinfo=UTC))
    assert computed(third) == {
        ("credit-risk", "credit-default", PROD): {day(10)},
        ("credit-risk", "credit-default", STAGING): set(),
    }

    backfill = run_monitor(
        workspace, MonitorRequest(model="credit-default", since=day(3), until=day(3), backfill=True), now=NOW
    )
    assert computed(backfill) == {key: {day(3)} for key in TARGETS}
    coverage = {
        (r["environment"], r["window_start"].date()): r["statistic"]
        for r in metric_rows(workspace)
        if r["metric"] == "label_coverage"
    }
    assert coverage[(PROD, day(3))] > 0.5


@pytest.mark.parametrize(
    ("project", "model"), [("credit-risk", "credit-default"), ("demand-forecast", "demand")]
)
def test_a_corrected_label_counts_instead_of_the_first_one(
    demo12, workspace: ParquetStore, tmp_path: Path, project: str, model: str
) -> None:
    """Labels sent again for some requests (a later ``label_timestamp``): the latest one counts, as if
    the day's file held only the corrected labels (a classification and a regression model)."""
    partition = {"project": project, "model": model, "environment": PROD}
    partition["date"] = day(10).isoformat()
    (stored,) = workspace.list_files(LABELS, filters=partition)
    labels = pq.read_table(stored.path).select(["request_id", "label", "label_timestamp"])
    first = labels.slice(0, 40)
    corrected = first.set_column(1, "label", pc.subtract(1.0, pc.cast(first.column("label"), pa.float64())))
    corrected = corrected.set_column(
        2, "label_timestamp", pc.add(first.column("label_timestamp"), pa.scalar(timedelta(hours=1)))
    )
    workspace.append(LABELS, partition, corrected)  # the first labels stay, the corrections follow

    expected_store = copy_workspace(demo12[0], tmp_path / "expected")
    only_corrected = pa.concat_tables([corrected, labels.slice(40)]).cast(labels.schema)
    expected_store.write_partition(LABELS, partition, only_corrected, replace_partition=True)
    uncorrected_store = copy_workspace(demo12[0], tmp_path / "uncorrected")
    request = MonitorRequest(model=model, environment=PROD, since=day(10), until=day(10))
    for store in (workspace, expected_store, uncorrected_store):
        assert run_monitor(store, request, now=NOW).ok
    rows = metric_rows(workspace, date=day(10).isoformat())
    assert_same_rows(rows, metric_rows(expected_store, date=day(10).isoformat()))
    assert rows != metric_rows(uncorrected_store, date=day(10).isoformat())  # the corrections changed it
    expected_store.close()
    uncorrected_store.close()


def test_the_state_records_one_entry_per_date_and_window(workspace: ParquetStore) -> None:
    run_monitor(workspace, MonitorRequest(model="credit-default", environment=PROD), now=NOW)
    (state_file,) = workspace.list_files(MONITOR_STATE)
    assert state_file.partition == {"project": "credit-risk", "model": "credit-default", "environment": PROD}
    state = pq.read_table(state_file.path).to_pylist()
    assert [s["date"] for s in state] == [day(i).isoformat() for i in range(12)]
    assert {s["window"] for s in state} == {"day"} and {s["status"] for s in state} == {"ok"}
    assert all(s["versions"] == [DEMO_VERSION] and s["rows"] > 0 for s in state)


# --------------------------------------------------------------------------- bad inputs


def truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "cannot decode"


def rename_column(path: Path) -> str:
    table = pq.read_table(path)
    pq.write_table(
        table.rename_columns(["income_usd" if n == "income" else n for n in table.column_names]), path
    )
    return (
        "column 'income' of the version 1 reference is missing "
        "(the file has unexpected column(s) 'income_usd')"
    )


def string_in_numeric_column(path: Path) -> str:
    table = pq.read_table(path)
    index = table.column_names.index("income")
    text = pc.cast(table.column("income"), pa.string()).to_pylist()
    text[0] = "n/a"
    pq.write_table(table.set_column(index, "income", pa.array(text, pa.string())), path)
    return "column 'income' is string; the version 1 reference has it numeric (DOUBLE)"


@pytest.mark.parametrize(
    ("corrupt", "kind", "column"),
    [
        (truncate, "corrupt_file", "*"),
        (rename_column, "schema", "income"),
        (string_in_numeric_column, "schema", "income"),
    ],
    ids=["truncated", "renamed-column", "string-in-numeric-column"],
)
def test_a_bad_input_file_is_reported_and_the_other_partitions_are_computed(
    workspace: ParquetStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    corrupt,
    kind: str,
    column: str,
) -> None:
    bad = log_file(workspace, "credit-default", PROD, day(4))
    why = corrupt(bad)
    code = cli(Path(workspace.root), tmp_path / "var")
    out = capsys.readouterr().out
    assert code == EXIT_FAILURE
    assert str(bad) in out and why in out
    assert "credit-risk/credit-default/prod: 11 date(s) computed, 0 up to date, 1 failed" in out
    assert "churn/staging: 12 date(s) computed" in out

    rows = metric_rows(workspace)
    dates = {
        (r["model"], r["environment"], r["window_start"].date()) for r in rows if r["metric"] == "row_count"
    }
    expected = {
        (m, e, day(i))
        for m in ("credit-default", "churn", "demand")
        for e in (PROD, STAGING)
        for i in range(12)
    }
    assert dates == expected - {("credit-default", PROD, day(4))}
    (error,) = [r for r in rows if r["status"] == "error"]
    assert (error["model"], error["environment"], error["window_start"].date()) == (
        "credit-default",
        PROD,
        day(4),
    )
    assert (error["metric"], error["column"], error["drifted"]) == (kind, column, None)
    assert str(bad) in error["reason"] and why in error["reason"]
    assert error["window_end"] - error["window_start"] == timedelta(days=1)
    # The failed date is retried (and still fails) on the next run; the others are up to date.
    assert cli(Path(workspace.root), tmp_path / "var") == EXIT_FAILURE
    assert "11 up to date, 1 failed" in capsys.readouterr().out


def test_a_file_broken_after_it_was_monitored_keeps_its_metrics_until_it_is_fixed(
    workspace: ParquetStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(Path(workspace.root), tmp_path / "var") == EXIT_OK
    before = metric_rows(workspace, model="credit-default", environment=PROD, date=day(4).isoformat())
    bad = log_file(workspace, "credit-default", PROD, day(4))
    original = bad.read_bytes()
    truncate(bad)
    assert cli(Path(workspace.root), tmp_path / "var") == EXIT_FAILURE
    assert "1 date(s) computed" not in capsys.readouterr().out
    after = metric_rows(workspace, model="credit-default", environment=PROD, date=day(4).isoformat())
    errors = [r for r in after if r["status"] == "error"]
    # Nothing already written is lost: the date's metrics file is untouched, the error sits beside it.
    assert [r for r in after if r["status"] != "error"] == before
    assert [e["metric"] for e in errors] == ["corrupt_file"] and errors[0]["version"] == DEMO_VERSION

    bad.write_bytes(original)
    os.utime(bad)
    assert cli(Path(workspace.root), tmp_path / "var") == EXIT_OK
    assert "credit-default/prod: 1 date(s) computed" in capsys.readouterr().out
    assert_same_rows(
        metric_rows(workspace, model="credit-default", environment=PROD, date=day(4).isoformat()), before
    )


def test_usage_errors_exit_2(workspace: ParquetStore, tmp_path: Path, capsys) -> None:
    assert cli(Path(workspace.root), tmp_path / "var", "--since", "2024-13-01") == EXIT_USAGE
    assert "--since must be a date" in capsys.readouterr().err
    assert (
        cli(Path(workspace.root), tmp_path / "var", "--since", "2024-02-01", "--until", "2024-01-01")
        == EXIT_USAGE
    )
    assert cli(Path(workspace.root), tmp_path / "var", "--project", "../etc") == EXIT_USAGE
    assert cli(Path(workspace.root), tmp_path / "var", "--window", "week") == EXIT_USAGE
    with pytest.raises(MonitorError, match="window"):
        MonitorRequest(window="minute")


def run_program(root: Path, var: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m jobs monitor ...`` in a process of its own, as a container runs it."""
    # Buffered output, as in a container: what the command prints must be flushed before it ends.
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("MMS_") and k != "PYTHONUNBUFFERED"
    }
    environment.update(MMS_DATA_URI=str(root), MMS_VAR_DIR=str(var))
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[3]), environment.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobs", "monitor", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_command_in_its_own_process_writes_the_same_rows_without_importing_pandas(
    demo12, monitored12, tmp_path: Path
) -> None:
    _root, clean_rows, clean_profiles = monitored12
    store = copy_workspace(demo12[0], tmp_path / "data")
    finished = run_program(tmp_path / "data", tmp_path / "var")
    assert finished.returncode == EXIT_OK, finished.stderr
    assert "72 date(s) computed" in finished.stdout  # printed before the process ended
    assert_same_rows(metric_rows(store), clean_rows)
    assert profile_counts(store) == clean_profiles
    # pyarrow was told pandas is absent (a fifth of a second of CPU saved) and nothing needed it:
    # only the probe's hidden attempts are listed, none of pandas' own modules.
    imported = [line.rsplit("|", 1)[-1].strip() for line in finished.stderr.splitlines() if "|" in line]
    assert "pyarrow" in imported and not [name for name in imported if name.startswith("pandas.")]
    # Nor DuckDB: the job's tables answer every query of clean days (store.deferred_cursor).
    assert not [name for name in imported if name == "duckdb" or name.startswith(("duckdb.", "_duckdb"))]

    log_file(store, "credit-default", PROD, day(4)).write_bytes(b"PAR1 broken")
    failed = run_program(tmp_path / "data", tmp_path / "var", "--backfill", "--since", day(4).isoformat())
    assert failed.returncode == EXIT_FAILURE, failed.stderr
    assert "corrupt_file" in failed.stdout


def test_an_in_process_command_leaves_pyarrow_as_it_found_it(workspace: ParquetStore, tmp_path: Path) -> None:
    """Only ``python -m jobs`` settles pyarrow without pandas: the studio and tests keep it whole."""
    settings = {"MMS_DATA_URI": workspace.root, "MMS_VAR_DIR": str(tmp_path / "var")}
    script = f"""
from jobs.cli import main
code = main(["monitor", "--model", "credit-default"], {settings!r})
import pandas, pyarrow as pa
# pyarrow still recognises pandas objects: a categorical Series keeps its dictionary type.
print("exit", code, pa.array(pandas.Series(["a", "b"], dtype="category")).type)
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MMS_")}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[3]), environment.get("PYTHONPATH", "")]
    )
    finished = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr
    last = finished.stdout.splitlines()[-1]
    assert last.startswith("exit 0 dictionary<"), finished.stdout


# --------------------------------------------------------------------------- versions and windows


def test_a_day_served_by_two_versions_gives_rows_per_version(workspace: ParquetStore) -> None:
    path = log_file(workspace, "credit-default", PROD, day(2))
    table = pq.read_table(path)
    half = table.num_rows // 2
    versions = pa.array([DEMO_VERSION] * half + ["2"] * (table.num_rows - half), pa.string())
    pq.write_table(table.set_column(table.column_names.index("version"), "version", versions), path)
    reference = workspace.list_files(REFERENCE_PROFILES, filters={"model": "credit-default"})[0]
    workspace.write_partition(
        REFERENCE_PROFILES,
        {"project": "credit-risk", "model": "credit-default", "version": "2"},
        pq.read_table(reference.path),
        file_name=PROFILE_FILE_NAME,
    )
    summary = run_monitor(workspace, MonitorRequest(model="credit-default", environment=PROD), now=NOW)
    assert summary.targets[0].versions == (DEMO_VERSION, "2")
    rows = metric_rows(workspace, date=day(2).isoformat())
    counts = {r["version"]: r["statistic"] for r in rows if r["metric"] == "row_count"}
    assert counts == {DEMO_VERSION: half, "2": table.num_rows - half}
    assert {r["version"] for r in rows if r["metric"] == "drift"} == {DEMO_VERSION, "2"}
    profiles = read_window_profiles(
        workspace, "credit-risk", "credit-default", PROD, since=day(2), until=day(2)
    )
    assert {version: p.rows for (version, _), p in profiles.items()} == counts
    other_day = {r["version"] for r in metric_rows(workspace, date=day(3).isoformat())}
    assert other_day == {DEMO_VERSION}


def test_a_version_without_reference_gets_performance_and_latency_and_says_why(
    workspace: ParquetStore,
) -> None:
    root = Path(workspace.dataset_uri(REFERENCE_PROFILES))
    aside = root.parent / "aside"
    shutil.move(root, aside)
    request = MonitorRequest(model="demand", environment=PROD)
    run_monitor(workspace, request, now=NOW)
    rows = metric_rows(workspace, date=day(5).isoformat())
    metrics = {r["metric"] for r in rows}
    assert "drift" not in metrics and {"rmse", "latency_p95", "label_coverage"} <= metrics
    (missing,) = [r for r in rows if r["metric"] == "reference"]
    assert (
        missing["status"] == "insufficient_data" and "no reference profile for version 1" in missing["reason"]
    )
    # When the reference appears, every date is recomputed with drift.
    shutil.move(aside, root)
    summary = run_monitor(workspace, request, now=NOW)
    assert set(summary.targets[0].reasons.values()) == {"reference changed"}
    metrics = {r["metric"] for r in metric_rows(workspace, date=day(5).isoformat())}
    assert "drift" in metrics and "reference" not in metrics


def test_hourly_windows_live_next_to_daily_ones(workspace: ParquetStore) -> None:
    request = MonitorRequest(model="credit-default", environment=PROD, until=day(1))
    run_monitor(workspace, request, now=NOW)
    hourly = run_monitor(
        workspace,
        MonitorRequest(model="credit-default", environment=PROD, until=day(1), window="hour"),
        now=NOW,
    )
    assert computed(hourly) == {("credit-risk", "credit-default", PROD): {day(0), day(1)}}
    days = read_metrics(workspace, "credit-risk", "credit-default", PROD)
    hours = read_metrics(workspace, "credit-risk", "credit-default", PROD, window="hour")
    day_starts = set(days.column("window_start").to_pylist())
    hour_starts = set(hours.column("window_start").to_pylist())
    assert len(day_starts) == 2 and 24 < len(hour_starts) <= 48
    hourly_rows = sum(r["statistic"] for r in hours.to_pylist() if r["metric"] == "row_count")
    daily_rows = sum(r["statistic"] for r in days.to_pylist() if r["metric"] == "row_count")
    assert hourly_rows == daily_rows
    # Both units are recorded in the state: neither run undoes the other.
    assert run_monitor(workspace, request, now=NOW).computed_dates == 0


# --------------------------------------------------------------------------- the 90-day demo


@pytest.fixture(scope="module")
def demo90(tmp_path_factory: pytest.TempPathFactory) -> tuple[ParquetStore, DemoScenario, MonitorSummary]:
    """The 90-day demo (half volume), monitored once."""
    root = tmp_path_factory.mktemp("demo90") / "data"
    scenario = build_workspace(root, days=90, volume=0.5, training_rows=5_000)
    store = ParquetStore(StoreConfig(data_uri=str(root)))
    summary = run_monitor(store, now=NOW)
    yield store, scenario, summary
    store.close()


def flagged(rows: Iterable[dict], metric: str) -> set[tuple[str, str, str, date]]:
    return {
        (r["model"], r["environment"], r["column"], r["window_start"].date())
        for r in rows
        if r["metric"] == metric and r["drifted"]
    }


def test_the_demo_incidents_are_flagged_exactly_where_they_were_injected(demo90) -> None:
    store, scenario, summary = demo90
    assert summary.ok and summary.computed_dates == 6 * 90
    rows = metric_rows(store)
    assert flagged(rows, "drift") == scenario.drifted_cells
    assert {r["status"] for r in rows if r["metric"] == "drift" and r["drifted"]} == {"drift"}
    burst = scenario.null_burst
    assert flagged(rows, "missing_share") == {
        (burst.model, burst.environment, burst.feature, scenario.null_burst_date)
    }
    assert flagged(rows, "latency_p95") == {(m, e, "latency_ms", d) for m, e, d in scenario.latency_cells}
    for metric in ("out_of_range_share", "new_category_share", "schema", "freshness_lag_s", "drift_share"):
        assert flagged(rows, metric) == set(), metric
    assert not [r for r in rows if r["status"] == "error"]


def test_a_page_reads_90_days_of_one_model_from_metrics_and_profiles_only(demo90, tmp_path: Path) -> None:
    store, scenario, _summary = demo90
    page_root = tmp_path / "page"
    for dataset in (METRICS, PROFILES):
        shutil.copytree(store.dataset_uri(dataset), page_root / dataset)
    page = ParquetStore(StoreConfig(data_uri=str(page_root)))
    assert page.list_files(INFERENCE_LOGS) == [] and page.list_files(LABELS) == []

    table = read_metrics(
        page, "credit-risk", "credit-default", PROD, since=scenario.day(0), until=scenario.day(89)
    )
    rows = table.to_pylist()
    assert keys_of(rows) == keys_of(metric_rows(store, model="credit-default", environment=PROD))
    # Drift heatmap: every feature on every day, drifted exactly where injected.
    heatmap = {(r["column"], r["window_start"].date()): r for r in rows if r["metric"] == "drift"}
    features = [*CREDIT_DEFAULT.feature_columns, "segment_region"]
    assert set(heatmap) == {(f, scenario.day(i)) for f in features for i in range(90)}
    assert {k for k, r in heatmap.items() if r["drifted"]} == {
        (f, d) for (m, e, f, d) in scenario.drifted_cells if (m, e) == ("credit-default", PROD)
    }
    # Performance, label coverage and latency series: one point a day.
    for column, metric in (
        ("prediction", "roc_auc"),
        ("label", "label_coverage"),
        ("latency_ms", "latency_p95"),
    ):
        series = sorted(r["window_start"] for r in rows if (r["column"], r["metric"]) == (column, metric))
        assert len(series) == 90
    auc = [r["statistic"] for r in rows if r["metric"] == "roc_auc" and r["statistic"] is not None]
    assert len(auc) >= 85 and 0.6 < sum(auc) / len(auc) < 0.95

    # Distributions: the 90 daily profiles merge into one 90-day histogram per feature.
    profiles = read_window_profiles(page, "credit-risk", "credit-default", PROD)
    assert len(profiles) == 90
    whole = merge_profiles(profiles.values())
    total = sum(r["statistic"] for r in rows if r["metric"] == "row_count")
    assert whole.rows == total == scenario.inference_rows[("credit-default", PROD)]
    assert sum(whole["income"].bin_counts) + whole["income"].missing == total
    page.close()


def test_a_date_the_analytics_cannot_compute_fails_alone(
    workspace: ParquetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.monitor as monitor_module

    original = monitor_module.stack_batch

    def failing_on_day_5(logs, relation, *args, **kwargs):
        days = {
            row[0]
            for row in relation.query("t", 'SELECT DISTINCT CAST("timestamp" AS DATE) FROM t').fetchall()
        }
        if day(5) in days:
            raise ValueError("latency cannot be computed for this data")
        return original(logs, relation, *args, **kwargs)

    monkeypatch.setattr(monitor_module, "stack_batch", failing_on_day_5)
    summary = run_monitor(workspace, MonitorRequest(model="churn", environment=PROD), now=NOW)
    (target,) = summary.targets
    assert target.failed == (day(5),) and set(target.computed) == {day(i) for i in range(12)} - {day(5)}
    (problem,) = summary.all_problems
    assert problem.kind == "compute_failed" and "latency cannot be computed" in problem.reason
    (error,) = [r for r in metric_rows(workspace) if r["status"] == "error"]
    assert (error["metric"], error["window_start"].date()) == ("compute_failed", day(5))


def test_harmless_type_variants_are_accepted_like_the_contract_types(workspace: ParquetStore) -> None:
    request = MonitorRequest(model="credit-default", environment=STAGING, until=day(1))
    run_monitor(workspace, request, now=NOW)
    expected = metric_rows(workspace, model="credit-default", environment=STAGING, date=day(1).isoformat())
    path = log_file(workspace, "credit-default", STAGING, day(1))
    table = pq.read_table(path)
    variants = {
        "timestamp": pc.cast(table["timestamp"], pa.timestamp("ns", tz="America/New_York")),
        "age": pc.cast(table["age"], pa.int64()),  # whole numbers stored as integers
        "home_ownership": pc.cast(table["home_ownership"], pa.large_string()),
        "loan_purpose": pc.dictionary_encode(table["loan_purpose"]),
    }
    for name, column in variants.items():
        table = table.set_column(table.column_names.index(name), name, column)
    pq.write_table(table, path)
    summary = run_monitor(workspace, request, now=NOW)
    assert summary.ok and computed(summary) == {("credit-risk", "credit-default", STAGING): {day(1)}}
    assert_same_rows(
        metric_rows(workspace, model="credit-default", environment=STAGING, date=day(1).isoformat()), expected
    )
