"""Records a version fails in ``batch-predict`` become ``request_errors`` rows; the rest is scored.

The version deployed to the ``batch-errors`` environment raises on one age and returns a NaN
probability on another (``faulty_models.FailingOnSentinels``); the input mixes a few such
records into healthy ones across several chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import registry
from jobs.cli import main
from jobs.contracts import INFERENCE_LOGS, REQUEST_ERRORS
from tests.integration.jobs import test_batch_predict as batch_suite
from tests.integration.jobs.faulty_models import FAIL_AGE, NAN_AGE, register_failing_version

pytestmark = pytest.mark.integration

ENVIRONMENT = "batch-errors"

# The trained model, its SeaweedFS store and MLflow (module-scoped: fresh for this module).
workspace = batch_suite.workspace


@pytest.fixture(scope="module")
def failing_version(workspace: dict[str, Any]) -> str:
    stable = workspace["versions"][0]
    version = register_failing_version(workspace["tracking"], batch_suite.PROJECT, batch_suite.MODEL, stable)
    registry.set_alias(batch_suite.NAME, ENVIRONMENT, version, tracking_uri=workspace["tracking"])
    return version


def stored(workspace: dict[str, Any], dataset: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    table = workspace["store"].read(
        dataset,
        filters={"project": batch_suite.PROJECT, "model": batch_suite.MODEL, "environment": ENVIRONMENT},
    )
    return {row["request_id"]: row for row in table.to_pylist() if row["request_id"] in ids}


def test_failing_records_are_logged_as_errors_and_the_rest_is_scored(
    workspace: dict[str, Any], failing_version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = batch_suite.scoring_input(1_000, seed=41, with_ids=True)
    ages = table.column("age").to_numpy(zero_copy_only=False).astype(np.float64)
    raising, nan = [3, 250, 251, 999], [10, 600]  # spread over the 4 chunks, two side by side
    ages[raising], ages[nan] = FAIL_AGE, NAN_AGE
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(ages))
    source, output = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, source)
    environ = batch_suite.cli_environ(workspace, tmp_path)
    argv = ["batch-predict", "--project", batch_suite.PROJECT, "--model", batch_suite.MODEL]
    argv += ["--env", ENVIRONMENT, "--input", str(source), "--output", str(output), "--chunk-rows", "250"]

    assert main(argv, environ) == 0
    summary = capsys.readouterr().out
    assert "scored 1000 rows in 4 chunk(s)" in summary
    assert "6 record(s) could not be scored (bad_output: 2, model_error: 4)" in summary
    assert f"6 row(s) went to {REQUEST_ERRORS}" in summary

    scored = pq.read_table(output)
    ids = scored.column("request_id").to_pylist()
    failed = {ids[i] for i in raising + nan}
    assert scored.num_rows == 1_000 and set(scored.column("version").to_pylist()) == {failing_version}
    assert {ids[i] for i, value in enumerate(scored.column("score").to_pylist()) if value is None} == failed
    assert pc.all(pc.is_finite(scored.column("score").drop_null())).as_py()

    errors = stored(workspace, REQUEST_ERRORS, set(ids))
    assert set(errors) == failed
    for i in raising:
        row = errors[ids[i]]
        assert (row["version"], row["error_kind"], row["status_code"]) == (
            failing_version,
            "model_error",
            500,
        )
        assert "deliberate failure" in row["message"] and row["latency_ms"] is None
    assert {errors[ids[i]]["error_kind"] for i in nan} == {"bad_output"}
    assert "not a probability" in errors[ids[nan[0]]]["message"]
    logged = stored(workspace, INFERENCE_LOGS, set(ids))
    assert len(logged) == 994 and not failed & set(logged)  # every other record is scored and logged
