"""The Spark engine in local mode (``local[2,2]``): retries, failures, the cluster option, the command line.

Runs in CI, never skipped: PySpark comes from ``requirements-spark.txt`` and Java 17 from the machine.
One SparkSession serves the whole test session (``spark_session``); the conformance of the Spark
engine with the single-process job is in ``test_scaleout_conformance.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jobs.scaleout import add_engine_arguments, make_engine, run_engine_command, run_scaleout
from jobs.scaleout.engines import UnitsFailedError
from jobs.scaleout.units import ScaleoutError
from tests.unit.jobs.scaleout import support
from tests.unit.jobs.scaleout.fixtures import *  # noqa: F403 - shared with the conformance suite

# Starting Spark and its Python workers takes 10-50 s on two shared cores: slow, still run in CI.
# With pytest-xdist, ``--dist loadgroup`` keeps every Spark test on one worker (one session).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("spark")]


def test_spark_retries_a_failed_task_without_double_counting(
    spark_session, workspace, baseline, tmp_path: Path
) -> None:
    store = workspace("local")
    task = support.flaky(support.fail_once_after_writing, tmp_path / "markers")
    engine = make_engine("spark", session=spark_session, task=task)
    summary = run_scaleout(store, support.REQUEST, engine, unit_bytes="1GB", now=support.NOW)
    # local[2,2]: two attempts per task; every unit failed once after writing its partial.
    assert summary.ok and summary.retried == summary.units == len(support.DAYS)
    assert support.partial_files(store, summary.run_id) == ["0.parquet", "1.parquet", "2.parquet"]
    support.assert_matches_baseline(store, baseline("local"))


def test_a_task_failing_every_attempt_fails_the_run(spark_session, workspace) -> None:
    store = workspace("local")
    engine = make_engine("spark", session=spark_session, task=support.always_fail)
    with pytest.raises(UnitsFailedError, match=r"after 2 attempt\(s\).*cannot be profiled"):
        run_scaleout(store, support.REQUEST, engine, unit_bytes="1GB", now=support.NOW)
    assert support.written_files(store) == []
    # The session survives a failed job.
    assert spark_session.sparkContext.parallelize([1, 2, 3]).sum() == 6


def test_the_cluster_option_uses_the_running_master(spark_session, workspace, baseline) -> None:
    store = workspace("local")
    master = spark_session.sparkContext.master
    summary = run_scaleout(store, support.REQUEST, "spark", cluster=master, unit_bytes=1, now=support.NOW)
    assert summary.ok
    support.assert_matches_baseline(store, baseline("local"))
    assert spark_session.sparkContext.parallelize([1]).count() == 1  # not stopped by the engine
    with pytest.raises(ScaleoutError, match="cannot also connect to spark://elsewhere:7077"):
        run_scaleout(store, support.REQUEST, "spark", cluster="spark://elsewhere:7077", now=support.NOW)


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_the_monitor_command_options(
    engine: str, workspace, baseline, capsys, request: pytest.FixtureRequest
) -> None:
    if engine == "spark":
        request.getfixturevalue("spark_session")  # the engine joins the session's master
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(
        ["--engine", engine, "--unit-bytes", "4KB", "--max-parallel", "2", "--retries", "1"]
    )
    store = workspace("local")
    assert run_engine_command(args, store, support.REQUEST) == 0
    out = capsys.readouterr().out
    assert f"{engine} run " in out and "3 date(s) computed" in out
    support.assert_matches_baseline(store, baseline("local"))
    bad = parser.parse_args(["--engine", engine, "--unit-bytes", "lots"])
    from jobs.cli import UsageError

    with pytest.raises(UsageError, match="invalid byte size"):
        run_engine_command(bad, store, support.REQUEST)
