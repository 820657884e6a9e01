"""Conformance of every engine that runs here with the single-process monitoring job.

For each engine (a local process pool, Spark in local mode, and the Step Functions definition run by
the ASL interpreter with the real CLI commands) and each store (a local folder, SeaweedFS S3), a
scaled-out run over the fixture workspace (an empty file, an all-null column, NaN and +-inf, a
category the reference never saw, two versions, segment columns with NULLs and with too many
values) must write the same window profiles (counts and histograms exactly, moments to 1e-9), the
same metrics rows and the same segment metrics as a single-process run over an identical copy (the
slices are decided over the merged window: a segment column sliceable in every unit can have too
many values in the window). Faults: a unit that fails once is retried without double counting, a
duplicated partial is dropped, a missing unit makes the merge refuse and write nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analytics.performance import (
    classification_from_partials,
    classification_partial,
    latency_from_partials,
    latency_partial,
)
from analytics.store import ParquetStore
from jobs._monitor_rows import SIGNIFICANT_DIGITS
from jobs._monitor_segments import MAX_SEGMENT_VALUES
from jobs.contracts import INFERENCE_LOGS
from jobs.scaleout import make_engine, run_scaleout
from jobs.scaleout.engines import UnitsFailedError
from jobs.scaleout.engines.sfn import StateMachineRun, render_template
from jobs.scaleout.merge import MissingUnitsError, merge
from jobs.scaleout.profile_unit import partial_segments, run_unit
from jobs.scaleout.units import RunLayout, fs_path, list_folder, plan_run, read_json, read_table
from tests.unit.jobs.scaleout import support
from tests.unit.jobs.scaleout.fixtures import *  # noqa: F403 - the fixtures shared with the Spark suite
from tests.unit.jobs.scaleout.support import assert_matches_baseline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ASL_TEMPLATE = ROOT / "infra" / "terraform" / "stepfunctions" / "profiling.asl.json"


# --------------------------------------------------------------------------- stores and baselines


def map_in_process(store: ParquetStore, plan) -> None:
    """Run every unit's task in this process (the fault tests are about the merge, not the engine)."""
    for unit in plan.units:
        run_unit(unit, store.config)


def engine_for(name: str, request: pytest.FixtureRequest, **options):
    if name == "spark":
        return make_engine("spark", session=request.getfixturevalue("spark_session"), **options)
    return make_engine("local", max_parallel=2, **options)


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("store_kind", ["local", "s3"])
@pytest.mark.parametrize(
    "engine_name",
    ["local", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.xdist_group("spark")])],
)
def test_engine_writes_what_the_single_process_job_writes(
    engine_name: str, store_kind: str, workspace, baseline, request: pytest.FixtureRequest
) -> None:
    store = workspace(store_kind)
    # One unit per file: every date's profiles are merged from two or three units.
    summary = run_scaleout(
        store, support.REQUEST, engine_for(engine_name, request), unit_bytes=1, now=support.NOW
    )
    assert summary.ok, summary.to_text()
    assert summary.units == sum(len(files) for files in support.LAYOUT.values())
    assert summary.merge.served == 2 and summary.merge.declined == ()
    assert summary.merge.duplicates == () and summary.retried == 0
    assert_matches_baseline(store, baseline(store_kind))


def test_the_step_functions_definition_runs_the_cli_on_s3(
    workspace, baseline, seaweedfs, tmp_path: Path
) -> None:
    """The infra's state machine, rendered for this bucket, executed by the ASL interpreter.

    Every command it starts (``profile-unit`` per listed manifest, then ``merge``) runs as a process
    with the settings a Fargate task gets from its environment.
    """
    store = workspace("s3")
    plan = plan_run(store, support.REQUEST, unit_bytes="1GB")
    bucket, prefix = store.root.removeprefix("s3://").split("/", 1)
    definition = render_template(
        ASL_TEMPLATE.read_text(),
        {
            "cluster_arn": "arn:aws:ecs:us-east-1:1:cluster/c",
            "task_definition_arn": "arn:aws:ecs:us-east-1:1:task-definition/job:1",
            "container_name": "job",
            "subnets": '["subnet-1"]',
            "security_groups": '["sg-1"]',
            "data_bucket": bucket,
            "data_prefix": prefix,
            "max_concurrency": 4,
            "tolerated_failure_percentage": 0,
            "task_timeout_seconds": 600,
        },
    )
    client = seaweedfs.client()

    def list_objects(list_bucket: str, list_prefix: str) -> list[dict]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=list_bucket, Prefix=list_prefix)
        return [item for page in pages for item in page.get("Contents", [])]

    environment = {
        **os.environ,
        "MMS_DATA_URI": store.root,
        "MMS_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "MMS_S3_ACCESS_KEY_ID": seaweedfs.access_key,
        "MMS_S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "MMS_S3_REGION": seaweedfs.region,
        "MMS_VAR_DIR": str(tmp_path / "var"),
        "MMS_DUCKDB_THREADS": "1",
    }

    def run_command(command: list[str]) -> int:
        assert command[:3] == ["python", "-m", "jobs"]
        result = subprocess.run(
            [sys.executable, *command[1:]],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.returncode

    machine = StateMachineRun(json.loads(definition), list_objects, run_command)
    status, _ = machine.execute({"run_id": plan.run_id})
    assert status == "SUCCEEDED"
    assert [c[3] for c in machine.commands] == ["profile-unit"] * len(plan.units) + ["merge"]
    assert support.partial_files(store, plan.run_id) == [f"{u.index}.parquet" for u in plan.units]
    record = read_json(store, f"{plan.layout.run_dir}/result.json")
    assert record["ok"] is True and record["served"] == 2 and record["declined"] == []
    assert_matches_baseline(store, baseline("s3"))


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_a_unit_that_fails_once_is_retried_without_double_counting(
    store_kind: str, workspace, baseline, tmp_path: Path
) -> None:
    store = workspace(store_kind)
    engine = make_engine(
        "local",
        max_parallel=2,
        retries=1,
        task=support.flaky(support.fail_once_after_writing, tmp_path / "markers"),
    )
    summary = run_scaleout(store, support.REQUEST, engine, unit_bytes=1, now=support.NOW)
    assert summary.ok and summary.retried == summary.units
    # Each unit wrote its partial twice, to the same key: one file per unit, counted once.
    assert support.partial_files(store, summary.run_id) == sorted(
        f"{i}.parquet" for i in range(summary.units)
    )
    assert summary.merge.duplicates == ()
    assert_matches_baseline(store, baseline(store_kind))


def test_a_unit_failing_before_writing_is_retried(workspace, baseline, tmp_path: Path) -> None:
    store = workspace("local")
    engine = make_engine(
        "local",
        max_parallel=2,
        retries=2,
        task=support.flaky(support.fail_once_before_writing, tmp_path / "m"),
    )
    summary = run_scaleout(store, support.REQUEST, engine, unit_bytes="1GB", now=support.NOW)
    assert summary.ok and summary.retried == summary.units == len(support.DAYS)
    assert_matches_baseline(store, baseline("local"))


def test_a_unit_failing_every_attempt_stops_the_run_before_the_merge(workspace) -> None:
    store = workspace("local")
    engine = make_engine("local", max_parallel=2, retries=1, task=support.always_fail)
    with pytest.raises(UnitsFailedError, match=r"3 unit\(s\) failed after 2 attempt\(s\)") as raised:
        run_scaleout(store, support.REQUEST, engine, unit_bytes="1GB", now=support.NOW)
    assert sorted(raised.value.failures) == [0, 1, 2]
    assert "cannot be profiled" in raised.value.failures[0]
    assert support.written_files(store) == []


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_a_duplicated_partial_is_dropped(store_kind: str, workspace, baseline) -> None:
    store = workspace(store_kind)
    plan = plan_run(store, support.REQUEST, unit_bytes=1)
    map_in_process(store, plan)
    # A second copy of unit 1's partial, as a task that wrote under another name would leave.
    own = fs_path(store, plan.layout.partial(1))
    store.filesystem().copy_file(own, own.replace("/1.parquet", "/1-attempt-2.parquet"))
    result = merge(store, plan.run_id, now=support.NOW)
    assert result.ok and [Path(p).name for p in result.duplicates] == ["1-attempt-2.parquet"]
    assert_matches_baseline(store, baseline(store_kind))


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_a_missing_unit_makes_the_merge_refuse_and_write_nothing(store_kind: str, workspace) -> None:
    store = workspace(store_kind)
    plan = plan_run(store, support.REQUEST, unit_bytes=1)
    map_in_process(store, plan)
    store.filesystem().delete_file(fs_path(store, plan.layout.partial(5)))
    with pytest.raises(MissingUnitsError, match=r"1 unit\(s\) have no partial profile: #5") as raised:
        merge(store, plan.run_id, now=support.NOW)
    assert [index for index, _, _ in raised.value.missing] == [5]
    assert support.written_files(store) == []
    names = [
        uri.rsplit("/", 1)[-1] for uri, _ in list_folder(store, RunLayout(store.root, plan.run_id).run_dir)
    ]
    assert names == ["run.json"]  # no result.json either


# --------------------------------------------------------------------------- the merge reads no log


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_the_merge_reads_no_inference_log(store_kind: str, workspace, baseline) -> None:
    """After the map, the logs are deleted: the merge still writes what the single-process job writes."""
    store = workspace(store_kind)
    plan = plan_run(store, support.REQUEST, unit_bytes=1)
    map_in_process(store, plan)
    for stored in store.list_files(INFERENCE_LOGS):
        store.filesystem().delete_file(fs_path(store, stored.path))
    assert store.list_files(INFERENCE_LOGS) == []
    result = merge(store, plan.run_id, now=support.NOW)
    assert result.ok, result.to_text()
    assert result.served == 2 and result.declined == ()
    assert result.summary.computed_dates == len(support.DAYS)
    assert sum(t.rows_read for t in result.summary.targets) == sum(
        n for files in support.LAYOUT.values() for _, versions, _ in files for n in versions.values()
    )
    assert_matches_baseline(store, baseline(store_kind))


def _day_rows(day, version: str) -> tuple[pa.Table, pa.Table]:
    """The fixture's log rows of one version and day, and the day's labels (as written)."""
    logs, labels = [], []
    for name, versions, options in support.LAYOUT[day]:
        table = support.log_table(day, name, versions, options)
        if table.num_rows:
            labels.append(support.label_table(table, day))
        columns = table.select(["version", "request_id", "timestamp", "score", "latency_ms"])
        logs.append(columns.filter(pc.equal(columns.column("version"), version)))
    return pa.concat_tables(logs), pa.concat_tables(labels)


def test_merged_latency_and_auc_equal_the_shared_method(workspace) -> None:
    """Latency quantiles and ROC AUC of the merge equal one partial of all the window's rows, exactly."""
    store = workspace("local")
    plan = plan_run(store, support.REQUEST, unit_bytes=1)  # one unit per file: two or three per date
    map_in_process(store, plan)
    assert merge(store, plan.run_id, now=support.NOW).ok
    written = {
        (r["version"], r["window_start"].date(), r["metric"]): r["statistic"]
        for r in support.metric_rows(store)
    }
    checked = 0
    con = duckdb.connect()
    for day, files in support.LAYOUT.items():
        for version in sorted({v for _, versions, _ in files for v in versions}):
            logs, labels = _day_rows(day, version)
            latency = latency_from_partials([latency_partial(con.from_arrow(logs))]).windows
            performance = classification_from_partials(
                [classification_partial(con.from_arrow(logs), con.from_arrow(labels), positive_label=1.0)]
            ).windows
            assert len(latency) == len(performance) == 1
            expected = {
                "latency_p50": latency[0].p50_ms,
                "latency_p95": latency[0].p95_ms,
                "latency_p99": latency[0].p99_ms,
                "roc_auc": performance[0].roc_auc,
            }
            for metric, value in expected.items():
                assert written[(version, day, metric)] == float(f"{value:.{SIGNIFICANT_DIGITS}g}"), metric
                checked += 1
    con.close()
    assert checked == 4 * 4


# --------------------------------------------------------------------------- segments


def test_segment_slices_are_decided_over_the_merged_window(workspace, baseline) -> None:
    """Units keep every value of a column they can slice; the merge slices what the window allows.

    ``segment_store`` has 12 values in each file: every unit can slice it, but the first two days
    hold 24 values (not sliced) and the last 18 (sliced); ``segment_user`` has too many everywhere;
    rows without a region belong to no slice.
    """
    store = workspace("local")
    plan = plan_run(store, support.REQUEST, unit_bytes=1)
    map_in_process(store, plan)
    for unit in plan.units:
        for version, partials in partial_segments(read_table(store, plan.layout.partial(unit.index))).items():
            kept = {column: found for (column, _), found in partials.values.items()}
            assert len(kept["segment_store"]) == support.STORES_PER_FILE, (unit.index, version)
            assert kept["segment_user"] is None, (unit.index, version)
    assert merge(store, plan.run_id, now=support.NOW).ok
    rows = support.segment_rows(store)
    assert_matches_baseline(store, baseline("local"))
    sliced = {(r["window_start"].date(), r["segment"].split("=")[0]) for r in rows}
    assert sliced == {(day, "region") for day in support.DAYS} | {(support.DAYS[2], "store")}
    stores = {r["segment"] for r in rows if r["segment"].startswith("store=")}
    assert len(stores) == 18 <= MAX_SEGMENT_VALUES
    for day, files in support.LAYOUT.items():
        regions = [
            value
            for name, versions, options in files
            for value in support.log_table(day, name, versions, options).column("segment_region").to_pylist()
        ]
        counted = sum(
            r["statistic"]
            for r in rows
            if r["metric"] == "row_count"
            and r["segment"].startswith("region=")
            and r["window_start"].date() == day
        )
        assert counted == sum(value is not None for value in regions) < len(regions)
