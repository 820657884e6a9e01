"""Batch inference over Parquet on SeaweedFS and local disk, with a real MLflow registry."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.batch_predict import BatchPredictError, batch_predict, filesystem_for
from jobs.cli import main
from jobs.contracts import INFERENCE_LOGS, TRAINING_DATA
from jobs.db import make_engine, make_session_factory
from jobs.db.migrate import upgrade
from jobs.demo_data import CREDIT_DEFAULT, training_table
from jobs.gateway.models import MlflowModelLoader
from jobs.gateway.routing import (
    JsonFileRoutes,
    MlflowAliasRoutes,
    NoRoute,
    Route,
    request_bucket,
    write_routes_document,
)
from jobs.permissions import Actor, Forbidden, Role
from jobs.training import train_model

# One xdist worker runs the whole module (tests/fixtures/scheduling.py): its tests share one trained model.
pytestmark = pytest.mark.integration

PROJECT, MODEL = CREDIT_DEFAULT.project, CREDIT_DEFAULT.model
NAME = f"{PROJECT}.{MODEL}"
ENGINEER = Actor(user_id=1, username="maya", roles={PROJECT: frozenset({Role.ML_ENGINEER})})
SPONSOR = Actor(user_id=2, username="sam", roles={PROJECT: frozenset({Role.MODEL_SPONSOR})})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, seaweedfs) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("batch")
    prefix = f"batch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    config = seaweedfs.store_config(prefix)
    store = ParquetStore(config)
    store.write_partition(
        TRAINING_DATA,
        {"project": PROJECT, "model": MODEL},
        training_table(CREDIT_DEFAULT, seed=9, rows=1_200),
    )
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    studio = f"sqlite:///{root / 'studio.db'}"  # the audit log training appends to
    upgrade(studio)
    engine = make_engine(studio)
    trained = train_model(
        ENGINEER,
        project=PROJECT,
        model=MODEL,
        store=store,
        tracking_uri=tracking,
        session_factory=make_session_factory(engine),
        config={"estimator": "linear"},
    )
    engine.dispose()
    # A second version with the very same artifacts (and digest): a canary costs no second training.
    first = registry.get_version(NAME, trained.version, tracking_uri=tracking)
    with registry.mlflow_target(tracking) as client:  # MLflow resolves a models:/ source globally
        second = client.create_model_version(NAME, source=first.source, run_id=first.run_id, tags=first.tags)
    registry.set_alias(NAME, "prod", trained.version, tracking_uri=tracking)
    yield {
        "root": root,
        "store": store,
        "config": config,
        "prefix": prefix,
        "bucket": seaweedfs.bucket,
        "tracking": tracking,
        "versions": (trained.version, str(second.version)),
    }
    store.close()


def scoring_input(rows: int, seed: int, with_ids: bool) -> pa.Table:
    table = training_table(CREDIT_DEFAULT, seed=seed, rows=rows).drop_columns(["label"])
    if with_ids:
        table = table.append_column("request_id", pa.array([f"b{seed}-{i}" for i in range(rows)]))
    return table


def cli_environ(workspace: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Settings of a ``python -m jobs batch-predict`` run against the workspace's store and MLflow."""
    config = workspace["config"]
    return {
        "MMS_VAR_DIR": str(tmp_path / "var"),
        "MMS_DATA_URI": config.data_uri,
        "MMS_S3_ENDPOINT_URL": config.s3_endpoint_url,
        "MMS_S3_ACCESS_KEY_ID": config.s3_access_key_id,
        "MMS_S3_SECRET_ACCESS_KEY": config.s3_secret_access_key,
        "MMS_MLFLOW_TRACKING_URI": workspace["tracking"],
    }


def logged(workspace: dict[str, Any], request_ids: set[str], store: ParquetStore | None = None) -> list[dict]:
    table = (store or workspace["store"]).read(INFERENCE_LOGS, filters={"project": PROJECT, "model": MODEL})
    return [row for row in table.to_pylist() if row["request_id"] in request_ids] if table.num_rows else []


def test_batch_on_s3_routes_scores_and_logs_every_row(workspace: dict[str, Any], tmp_path: Path) -> None:
    stable, canary = workspace["versions"]
    table = scoring_input(5_000, seed=21, with_ids=True)
    s3_input = f"s3://{workspace['bucket']}/{workspace['prefix']}-in/scoring.parquet"
    s3_output = f"s3://{workspace['bucket']}/{workspace['prefix']}-out/scored.parquet"
    filesystem, path = filesystem_for(s3_input, workspace["config"])
    pq.write_table(table, path, filesystem=filesystem)
    routes = tmp_path / "routes.json"
    write_routes_document(routes, {(PROJECT, MODEL, "prod"): [Route(canary, 3000), Route(stable, 7000)]})

    result = batch_predict(
        project=PROJECT,
        model=MODEL,
        environment="prod",
        input_uri=s3_input,
        output_uri=s3_output,
        store=workspace["store"],
        routing=JsonFileRoutes(routes),
        loader=MlflowModelLoader(workspace["tracking"]),
        spill_dir=tmp_path / "spill",
        chunk_rows=1_000,
    )
    ids = table.column("request_id").to_pylist()
    expected = {rid: canary if request_bucket(rid) < 3000 else stable for rid in ids}
    assert (result.rows, result.chunks, result.logged_rows, result.spilled_rows) == (5_000, 5, 5_000, 0)
    assert result.versions == {
        canary: sum(v == canary for v in expected.values()),
        stable: sum(v == stable for v in expected.values()),
    }

    out_fs, out_path = filesystem_for(s3_output, workspace["config"])
    scored = pq.read_table(out_path, filesystem=out_fs)
    assert scored.num_rows == 5_000
    assert scored.column_names == [*table.column_names, "version", "prediction", "score"]
    assert scored.column("request_id").to_pylist() == ids  # input order is kept
    assert [expected[rid] for rid in ids] == scored.column("version").to_pylist()
    model = MlflowModelLoader(workspace["tracking"])(PROJECT, MODEL, stable)
    frame = table.select(list(model.features)).to_pandas()
    for name in model.categorical:
        frame[name] = frame[name].astype(object)
    assert np.allclose(scored.column("score").to_numpy(), model.estimator.predict_proba(frame)[:, 1])
    listed = out_fs.get_file_info(pafs.FileSelector(out_path.rsplit("/", 1)[0]))
    assert [info.base_name for info in listed] == ["scored.parquet"]  # the staging file was moved, not left

    rows = logged(workspace, set(ids))
    assert len(rows) == 5_000
    assert {row["request_id"] for row in rows} == set(ids)
    by_id = {row["request_id"]: row for row in rows}
    assert all(by_id[rid]["version"] == expected[rid] for rid in ids[:500])
    assert all(row["environment"] == "prod" and row["segment_region"] is not None for row in rows[:100])
    assert by_id[ids[0]]["income"] == table.column("income")[0].as_py()


def test_cli_generates_request_ids_and_follows_the_mlflow_alias(
    workspace: dict[str, Any], tmp_path: Path
) -> None:
    stable, _canary = workspace["versions"]
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(scoring_input(1_200, seed=22, with_ids=False), source / "part-0.parquet")
    pq.write_table(scoring_input(800, seed=23, with_ids=False), source / "part-1.parquet")
    output = tmp_path / "out" / "scored.parquet"
    environ = cli_environ(workspace, tmp_path)
    argv = ["batch-predict", "--project", PROJECT, "--model", MODEL, "--env", "prod"]
    code = main([*argv, "--input", str(source), "--output", str(output), "--chunk-rows", "500"], environ)
    assert code == 0
    scored = pq.read_table(output)
    ids = scored.column("request_id").to_pylist()
    assert scored.num_rows == 2_000 and len(set(ids)) == 2_000
    assert all(len(rid) == 36 and rid[14] == "4" for rid in ids)  # UUID4 text
    assert set(scored.column("version").to_pylist()) == {stable}
    assert len(logged(workspace, set(ids))) == 2_000

    code = main(
        [*argv[:-1], "staging", "--input", str(source), "--output", str(tmp_path / "x.parquet")], environ
    )
    assert code == 2  # not deployed in staging: a usage error, nothing written
    assert not (tmp_path / "x.parquet").exists()


def test_bad_inputs_are_refused_before_anything_is_written(workspace: dict[str, Any], tmp_path: Path) -> None:
    options = {
        "project": PROJECT,
        "model": MODEL,
        "environment": "prod",
        "store": workspace["store"],
        "routing": MlflowAliasRoutes(workspace["tracking"]),
        "loader": MlflowModelLoader(workspace["tracking"]),
        "spill_dir": tmp_path / "spill",
    }
    no_age = tmp_path / "no_age.parquet"
    pq.write_table(scoring_input(50, seed=24, with_ids=True).drop_columns(["age"]), no_age)
    with pytest.raises(BatchPredictError, match="'age'"):
        batch_predict(input_uri=str(no_age), output_uri=str(tmp_path / "a.parquet"), **options)
    clash = tmp_path / "clash.parquet"
    pq.write_table(
        scoring_input(50, seed=24, with_ids=True).append_column("score", pa.array([0.0] * 50)), clash
    )
    with pytest.raises(BatchPredictError, match="score"):
        batch_predict(input_uri=str(clash), output_uri=str(tmp_path / "b.parquet"), **options)
    with pytest.raises(BatchPredictError, match="does not exist"):
        batch_predict(
            input_uri=str(tmp_path / "missing.parquet"), output_uri=str(tmp_path / "c.parquet"), **options
        )
    with pytest.raises(NoRoute):
        batch_predict(
            input_uri=str(no_age), output_uri=str(tmp_path / "d.parquet"), **{**options, "environment": "dev"}
        )
    with pytest.raises(Forbidden):
        batch_predict(input_uri=str(no_age), output_uri=str(tmp_path / "e.parquet"), actor=SPONSOR, **options)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["clash.parquet", "no_age.parquet"]


def test_a_store_outage_spills_the_logs_and_the_next_run_replays_them(
    workspace: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "data"
    store = ParquetStore(StoreConfig(data_uri=str(root)))
    root.write_text("the store is down")  # a file where the data folder should be: every write fails
    source = tmp_path / "first.parquet"
    first_ids = scoring_input(3_000, seed=25, with_ids=True)
    pq.write_table(first_ids, source)
    options = {
        "project": PROJECT,
        "model": MODEL,
        "environment": "prod",
        "store": store,
        "routing": MlflowAliasRoutes(workspace["tracking"]),
        "loader": MlflowModelLoader(workspace["tracking"]),
        "spill_dir": tmp_path / "spill",
        "chunk_rows": 1_000,
    }
    started = time.monotonic()
    result = batch_predict(input_uri=str(source), output_uri=str(tmp_path / "first-out.parquet"), **options)
    assert time.monotonic() - started < 120
    assert (result.rows, result.written_rows, result.spilled_rows) == (3_000, 0, 3_000)
    assert (
        pq.read_table(tmp_path / "first-out.parquet").num_rows == 3_000
    )  # scoring did not wait for the store

    root.unlink()
    second = tmp_path / "second.parquet"
    second_ids = scoring_input(500, seed=26, with_ids=True)
    pq.write_table(second_ids, second)
    result = batch_predict(input_uri=str(second), output_uri=str(tmp_path / "second-out.parquet"), **options)
    assert (result.spilled_rows, result.written_rows) == (0, 3_500)
    wanted = set(first_ids.column("request_id").to_pylist()) | set(
        second_ids.column("request_id").to_pylist()
    )
    rows = logged(workspace, wanted, store)
    assert len(rows) == 3_500 and {row["request_id"] for row in rows} == wanted
    store.close()
