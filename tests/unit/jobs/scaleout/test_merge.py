"""The merge step: one partial per unit, refusal when one is missing, the monitoring job's source."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.compute as pc
import pytest

from analytics.profile import profile
from analytics.store import ParquetStore, StoredFile, read_source
from jobs.cli import EXIT_FAILURE, EXIT_OK, main
from jobs.contracts import INFERENCE_LOGS, LABELS
from jobs.monitor import MonitorRequest, run_monitor
from jobs.scaleout.merge import (
    MergedProfiles,
    MissingUnitsError,
    load_partials,
    merge,
    merge_partials,
)
from jobs.scaleout.profile_unit import load_specs, run_unit
from jobs.scaleout.units import RunPlan, ScaleoutError, list_folder, plan_run, read_json
from tests.unit.jobs.scaleout import support

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> ParquetStore:
    """A workspace of the test's own, for tests that check what the merge wrote."""
    opened = support.make_store(support.local_config(tmp_path / "data"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> ParquetStore:
    """One workspace for the tests that only read their own run's partials."""
    opened = support.make_store(support.local_config(tmp_path_factory.mktemp("shared") / "data"))
    yield opened
    opened.close()


def mapped(
    store: ParquetStore,
    request: MonitorRequest = support.REQUEST,
    run_id: str = "merge-tests",
    unit_bytes: int | str = "1GB",
) -> RunPlan:
    """Plan a run (one unit per date by default) and run every unit in this process."""
    plan = plan_run(store, request, unit_bytes=unit_bytes, run_id=run_id)
    for unit in plan.units:
        run_unit(unit, store.config)
    return plan


def scanned(store: ParquetStore, plan: RunPlan, window: str) -> dict:
    """(date, version) -> window profiles of a DuckDB scan of all of the date's files."""
    specs = load_specs(store, plan.units[0])
    result = {}
    for day in support.DAYS:
        paths = [f.path for f in store.list_files(INFERENCE_LOGS, {"date": day.isoformat()})]
        for version, spec in specs.items():
            relation = read_source(store.cursor(), paths).filter(f"version = '{version}'")
            windows = profile(relation, spec, window=window, timestamp_column="timestamp")
            if windows:
                result[(day.isoformat(), version)] = windows
    return result


@pytest.mark.parametrize("window", ["day", "hour"])
def test_merged_profiles_equal_a_scan_of_all_files(shared: ParquetStore, window: str) -> None:
    # One unit per file: each date's profile is merged from two or three units.
    store = shared
    plan = mapped(store, MonitorRequest(window=window, backfill=True), run_id=f"scan-{window}", unit_bytes=1)
    merged = merge_partials(plan, load_partials(store, plan))
    expected = scanned(store, plan, window)
    got = {
        (key[3], version): windows
        for key, by_version in merged.profiles.items()
        for version, windows in by_version.items()
    }
    assert sorted(got) == sorted(expected)
    for key, windows in expected.items():
        assert list(got[key]) == list(windows)
        for start, want in windows.items():
            support.assert_same_profile(got[key][start], want, schema=False)


def test_a_duplicated_partial_is_dropped(shared: ParquetStore) -> None:
    store = shared
    plan = mapped(store, run_id="duplicates")
    baseline = merge_partials(plan, load_partials(store, plan)).profiles
    own = Path(plan.layout.partial(0))
    shutil.copy(own, own.with_name("0-retry-copy.parquet"))
    shutil.copy(own, own.with_name("zz.parquet"))
    partials = load_partials(store, plan)
    assert sorted(Path(p).name for p in partials.duplicates) == ["0-retry-copy.parquet", "zz.parquet"]
    merged = merge_partials(plan, partials)
    assert merged.profiles.keys() == baseline.keys()
    for key, by_version in baseline.items():
        for version, windows in by_version.items():
            for start, want in windows.items():
                support.assert_same_profile(merged.profiles[key][version][start], want)


def test_a_copy_stands_in_for_a_unit_written_under_another_name(shared: ParquetStore) -> None:
    store = shared
    plan = mapped(store, run_id="renamed")
    own = Path(plan.layout.partial(2))
    own.rename(own.with_name("written-elsewhere.parquet"))
    partials = load_partials(store, plan)
    assert partials.duplicates == [] and len(partials.tables) == len(plan.units)


def test_partials_of_other_runs_and_garbage_are_set_aside(shared: ParquetStore) -> None:
    store = shared
    plan = mapped(store, run_id="with-strangers")
    other = mapped(store, run_id="other-run")
    shutil.copy(other.layout.partial(1), Path(plan.layout.units_dir) / "from-other-run.parquet")
    (Path(plan.layout.units_dir) / "garbage.parquet").write_bytes(b"not parquet")
    (Path(plan.layout.units_dir) / "notes.txt").write_text("ignored")
    partials = load_partials(store, plan)
    assert [Path(p).name for p in partials.foreign] == ["from-other-run.parquet"]
    assert [Path(p.split(":")[0]).name for p in partials.unreadable] == ["garbage.parquet"]
    assert len(partials.tables) == len(plan.units)


def test_a_missing_unit_makes_the_merge_refuse_and_write_nothing(store: ParquetStore) -> None:
    plan = mapped(store)
    Path(plan.layout.partial(1)).unlink()
    (Path(plan.layout.units_dir) / "2.parquet").write_bytes(b"truncated")
    with pytest.raises(MissingUnitsError) as raised:
        merge(store, plan.run_id, now=support.NOW)
    error = raised.value
    assert [index for index, _, _ in error.missing] == [1, 2]
    message = str(error)
    assert "2 unit(s) have no partial profile" in message and "#1 (shop/scoring/prod 2024-03-02" in message
    assert "Nothing was written" in message and "2.parquet" in message
    assert support.written_files(store) == []
    assert [Path(uri).name for uri, _ in list_folder(store, plan.layout.run_dir)] == ["run.json"]


def test_merge_writes_through_the_monitoring_job(store: ParquetStore) -> None:
    plan = mapped(store)
    result = merge(store, plan.run_id, now=support.NOW)
    assert result.ok and result.units == len(plan.units)
    assert result.served == 2 and result.declined == ()  # one batch per version, none recomputed
    assert result.summary.computed_dates == len(support.DAYS)
    rows = support.metric_rows(store)
    assert {r["metric"] for r in rows} >= {"drift", "missing_share", "row_count", "latency_p95", "accuracy"}
    profiles = support.window_profiles(store)
    assert sorted({version for version, _ in profiles}) == ["1", "2"]
    record = read_json(store, f"{plan.layout.run_dir}/result.json")
    assert record["ok"] is True and record["served"] == 2 and record["units"] == len(plan.units)
    # A second merge of the same run writes the same rows (files replaced, never appended).
    again = merge(store, plan.run_id, now=support.NOW)
    assert again.ok
    support.assert_same_metrics(support.metric_rows(store), rows)


def test_the_source_declines_batches_the_run_does_not_cover(shared: ParquetStore) -> None:
    store = shared
    plan = mapped(store, run_id="declines")
    merged: MergedProfiles = merge_partials(plan, load_partials(store, plan))
    spec = load_specs(store, plan.units[0])["1"]
    day = support.DAYS[0]
    files = [
        StoredFile(f.path, f.size, {}) for f in store.list_files(INFERENCE_LOGS, {"date": day.isoformat()})
    ]

    def query(**changes):
        fields = {
            "project": support.PROJECT,
            "model": support.MODEL,
            "environment": support.ENVIRONMENT,
            "version": "1",
            "spec": spec,
            "window": "day",
            "files": {day: files},
        }
        return SimpleNamespace(**{**fields, **changes})

    served = merged.window_profiles(query())
    assert served is not None and [w.date() for w in served] == [day]
    assert merged.window_profiles(query(window="hour")) is None
    assert merged.window_profiles(query(spec=spec.select(["num_a"]))) is None
    assert merged.window_profiles(query(version="3")) is None
    grown = [*files, StoredFile(files[0].path.replace("a.parquet", "late.parquet"), 10, {})]
    assert merged.window_profiles(query(files={day: grown})) is None
    assert merged.served == 1 and len(merged.declined) == 4
    assert "log files differ" in merged.declined[-1]


def test_the_merge_command(shared: ParquetStore, tmp_path: Path, capsys) -> None:
    store = shared
    environ = {"MMS_DATA_URI": store.root, "MMS_VAR_DIR": str(tmp_path / "var"), "MMS_DUCKDB_THREADS": "1"}
    plan = mapped(store, run_id="command")
    assert main(["merge", "--run", "no-such-run"], environ) == EXIT_FAILURE
    assert "no profiling run 'no-such-run'" in capsys.readouterr().out
    assert main(["merge", "--run", "../escape"], environ) == EXIT_FAILURE
    assert "invalid run id" in capsys.readouterr().out
    assert main(["merge", "--run", plan.run_id], environ) == EXIT_OK
    out = capsys.readouterr().out
    assert f"merged {len(plan.units)} unit(s)" in out and "3 date(s) computed" in out


def test_a_date_a_task_could_not_fully_read_is_profiled_by_the_job(store: ParquetStore) -> None:
    """A read that failed in the task (a network error looks like a corrupt file) but works now."""
    plan = plan_run(store, support.REQUEST, unit_bytes="1GB", run_id="transient")
    first_day = plan.units[0]
    path = Path(first_day.files[0].path)
    content = path.read_bytes()
    path.write_bytes(b"unreadable for a moment")  # same path, another size: restore before the merge
    run_unit(first_day, store.config)
    path.write_bytes(content)
    for unit in plan.units[1:]:
        run_unit(unit, store.config)
    result = merge(store, plan.run_id, now=support.NOW)
    # The first day is read and profiled by the job itself (its version "1" only); the other days
    # come from the run (one batch per version).
    assert result.ok and result.served == 2
    assert len(result.declined) == 2 and all("could not use every file" in why for why in result.declined)
    assert result.summary.computed_dates == len(support.DAYS)
    first_windows = [key for key in support.window_profiles(store) if key[1].date() == support.DAYS[0]]
    assert first_windows == [("1", first_windows[0][1])]


def test_a_date_whose_labels_changed_after_the_map_is_computed_from_its_logs(store: ParquetStore) -> None:
    """Labels that arrive between the map and the merge are not lost: the job reads that date itself."""
    plan = mapped(store, run_id="late-labels")
    day = support.DAYS[1]
    partition = {**support.TARGET, "date": day.isoformat()}
    labels = store.read(LABELS, filters=partition).select(["request_id", "label", "label_timestamp"])
    flipped = labels.set_column(1, "label", pc.subtract(1.0, labels.column("label")))
    store.write_partition(LABELS, partition, flipped, file_name="labels-corrected.parquet")
    result = merge(store, plan.run_id, now=support.NOW)
    assert result.ok, result.to_text()
    assert [why for why in result.declined if "label files changed" in why] == [
        f"{support.PROJECT}/{support.MODEL}/{support.ENVIRONMENT} {day}: the label files changed since the "
        "units read them"
    ]
    merged_rows = support.metric_rows(store)
    single = run_monitor(store, support.REQUEST, now=support.NOW)
    assert single.ok
    support.assert_same_metrics(merged_rows, support.metric_rows(store))


def test_a_merge_asked_for_another_window_computes_every_date_from_the_logs(store: ParquetStore) -> None:
    plan = mapped(store, run_id="other-window")
    result = merge(store, plan.run_id, request=MonitorRequest(backfill=True, window="hour"), now=support.NOW)
    assert result.ok and result.served == 0
    assert result.summary.computed_dates == len(support.DAYS)
    assert any("window hour, the run computed day" in why for why in result.declined)
    assert {start.hour for _, start in support.read_window_profiles_hourly(store)} > {0}


def test_the_merge_refuses_a_monitoring_job_without_its_hooks(
    store: ParquetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs import monitor

    plan = mapped(store, run_id="no-hooks")
    monkeypatch.delattr(monitor._TargetRun, "_read_day")
    with pytest.raises(ScaleoutError, match=r"jobs.monitor lacks _TargetRun._read_day"):
        merge(store, plan.run_id, now=support.NOW)
    assert support.written_files(store) == []
