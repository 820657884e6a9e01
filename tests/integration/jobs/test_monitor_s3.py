"""The monitoring job on SeaweedFS S3 writes what it writes on a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs.contracts import INFERENCE_LOGS, METRICS
from jobs.demo_data import PROD, generate_demo_data
from jobs.monitor import MonitorRequest, read_metrics, read_window_profiles, run_monitor
from tests.unit.jobs.test_monitor import (
    NOW,
    START,
    assert_same_rows,
    metric_rows,
    profile_counts,
    write_references,
)

pytestmark = pytest.mark.integration

DAYS = 4


def demo_store(config: StoreConfig) -> ParquetStore:
    store = ParquetStore(config)
    scenario = generate_demo_data(store, START, DAYS, seed=7, volume=0.1, training_rows=1_000)
    write_references(store, scenario)
    return store


def test_the_same_run_on_s3_gives_the_same_metrics_as_on_a_local_folder(
    s3_store_config: StoreConfig, tmp_path: Path
) -> None:
    local = demo_store(StoreConfig(data_uri=str(tmp_path / "data")))
    s3 = demo_store(s3_store_config)
    assert s3.is_s3
    try:
        local_summary = run_monitor(local, now=NOW)
        s3_summary = run_monitor(s3, now=NOW)
        assert local_summary.ok and s3_summary.ok, s3_summary.to_text()
        assert s3_summary.computed_dates == local_summary.computed_dates == 6 * DAYS
        expected = metric_rows(local)
        assert_same_rows(metric_rows(s3), expected)
        assert profile_counts(s3) == profile_counts(local)
        page = read_metrics(s3, "credit-risk", "churn", PROD)
        assert page.num_rows == len(
            [r for r in expected if (r["model"], r["environment"]) == ("churn", PROD)]
        )
        assert len(read_window_profiles(s3, "credit-risk", "churn", PROD)) == DAYS

        # Incremental on S3 too: nothing to redo, and a rerun of everything changes nothing.
        assert run_monitor(s3, now=NOW).computed_dates == 0
        assert run_monitor(s3, MonitorRequest(backfill=True), now=NOW).computed_dates == 6 * DAYS
        assert_same_rows(metric_rows(s3), expected)

        # A truncated object is named by its s3:// URI; the previous metrics of its date stay.
        (bad,) = s3.list_files(
            INFERENCE_LOGS, filters={"model": "churn", "environment": PROD, "date": "2024-01-02"}
        )
        key = bad.path.removeprefix("s3://")
        with s3.filesystem().open_input_file(key) as handle:
            content = handle.read()
        with s3.filesystem().open_output_stream(key) as handle:
            handle.write(content[: len(content) // 2])
        summary = run_monitor(s3, now=NOW)
        (problem,) = summary.all_problems
        assert problem.kind == "corrupt_file" and problem.path == bad.path and bad.path in problem.reason
        after = metric_rows(s3, model="churn", environment=PROD, date="2024-01-02")
        errors = [r for r in after if r["status"] == "error"]
        assert [e["metric"] for e in errors] == ["corrupt_file"]
        before = [r for r in expected if (r["model"], r["environment"]) == ("churn", PROD)]
        before = [r for r in before if r["window_start"].date().isoformat() == "2024-01-02"]
        assert_same_rows([r for r in after if r["status"] != "error"], before)
        assert (
            len(s3.list_files(METRICS, filters={"model": "churn", "environment": PROD, "date": "2024-01-02"}))
            == 2
        )
    finally:
        local.close()
        s3.close()
