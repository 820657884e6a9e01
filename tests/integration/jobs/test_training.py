"""Training job against a real MLflow tracking store (SQLite) and the Parquet store."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import r2_score, roc_auc_score
from sqlalchemy import select

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.contracts import INFERENCE_LOGS, REFERENCE_PROFILES, TRAINING_DATA, ContractError
from jobs.db import make_engine, make_session_factory
from jobs.db.migrate import upgrade
from jobs.db.models import AuditEntry
from jobs.demo_data import CREDIT_DEFAULT, DEMAND, generate_demo_data, training_table
from jobs.github import TAG_GIT_SHA, MlflowShaLookup
from jobs.permissions import Actor, Forbidden, Role
from jobs.training import (
    AUDIT_ACTION,
    InsufficientData,
    TrainConfig,
    TrainingError,
    read_reference_profile,
    resolve_git_sha,
    train_model,
)

pytestmark = pytest.mark.integration

NAME = "credit-risk.credit-default"
DEMAND_NAME = "demand-forecast.demand"
FAST = {"max_iter": 30, "max_leaf_nodes": 15}
TRAIN_DEMAND = ["train", "--actor", "root-admin", "--project", "demand-forecast", "--model", "demand"]
ENGINEER = Actor(
    user_id=7,
    username="maya",
    roles={"credit-risk": frozenset({Role.ML_ENGINEER}), "demand-forecast": frozenset({Role.ML_ENGINEER})},
)


def features_frame(table: pa.Table, columns) -> object:
    frame = table.select(list(columns)).to_pandas()
    for name in CREDIT_DEFAULT.categorical_features + DEMAND.categorical_features:
        if name in frame:
            frame[name] = frame[name].astype(object)
    return frame


class Workspace:
    """A data root, an MLflow store and a migrated metadata database (the audit log) under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = ParquetStore(StoreConfig(data_uri=str(root / "data")))
        self.database = root / "mlflow" / "mlflow.db"
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{self.database}"
        self.studio_url = f"sqlite:///{root / 'studio.db'}"
        upgrade(self.studio_url)
        self.engine = make_engine(self.studio_url)
        self.session_factory = make_session_factory(self.engine)

    def audit_entries(self, action: str = AUDIT_ACTION) -> list[dict]:
        with self.session_factory() as session:
            rows = session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
            return [
                {"actor": r.actor, "target": r.target, "seq": r.seq, **json.loads(r.details)} for r in rows
            ]

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()

    def write_training(self, model, rows: int, seed: int = 7) -> None:
        table = training_table(model, seed=seed, rows=rows)
        self.store.write_partition(TRAINING_DATA, {"project": model.project, "model": model.model}, table)

    def train(self, project: str, model: str, actor: Actor = ENGINEER, **kwargs):
        return train_model(
            actor,
            project=project,
            model=model,
            store=self.store,
            tracking_uri=self.tracking_uri,
            session_factory=self.session_factory,
            **kwargs,
        )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    space = Workspace(tmp_path_factory.mktemp("training"))
    space.write_training(CREDIT_DEFAULT, rows=3_000)
    space.write_training(DEMAND, rows=2_000)
    yield space
    space.close()


@pytest.fixture(scope="module")
def first(workspace: Workspace):
    stages: list[tuple[str, float]] = []
    result = workspace.train(
        "credit-risk", "credit-default", config=FAST, progress=lambda s, f: stages.append((s, f))
    )
    return result, stages


def test_training_registers_a_tagged_version_with_progress(workspace: Workspace, first) -> None:
    result, stages = first
    assert (result.registered_model, result.version, result.task) == (NAME, "1", "classification")
    assert result.metrics["roc_auc"] > 0.7
    assert set(result.metrics) == {"roc_auc", "accuracy", "log_loss", "f1"}
    assert result.n_train + result.n_test == 3_000
    assert result.feature_columns == CREDIT_DEFAULT.feature_columns
    fractions = [f for _stage, f in stages]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert [s for s, _f in stages][-1] == "done"

    version = registry.get_version(NAME, "1", tracking_uri=workspace.tracking_uri)
    assert version.created_by == "maya"
    assert version.tags[registry.TAG_PROJECT] == "credit-risk"
    assert version.tags[registry.TAG_RUN_ID] == result.run_id == version.run_id
    assert json.loads(version.tags[registry.TAG_NUMERIC_FEATURES]) == list(CREDIT_DEFAULT.numeric_features)
    assert version.tags[registry.TAG_REFERENCE_PROFILE] == result.reference_profile_uri

    # The digest tag is the digest of the files MLflow stores, recomputed independently.
    mlflow = registry.import_mlflow()
    with registry.mlflow_target(workspace.tracking_uri):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{NAME}/1", dst_path=str(workspace.root / "check")
        )
    assert version.artifact_digest == result.artifact_digest == registry.artifact_digest(local)
    # Artifacts sit next to the SQLite database, not in the working directory.
    assert (workspace.database.parent / "mlartifacts" / "credit-risk").is_dir()

    client = registry.client(workspace.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    assert run.data.params["model.max_iter"] == "30"


def test_training_appends_one_audit_entry_with_the_version_it_registered(workspace: Workspace, first) -> None:
    result, _stages = first
    entries = [
        e for e in workspace.audit_entries() if e["target"] == f"model_version:{NAME}/{result.version}"
    ]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["seq"] == result.audit_seq
    assert (entry["actor"], entry["target"]) == ("maya", f"model_version:{NAME}/{result.version}")
    assert entry["project"] == "credit-risk" and entry["model"] == "credit-default"
    assert entry["run_id"] == result.run_id and entry["artifact_digest"] == result.artifact_digest
    assert entry["git_sha"] == result.git_sha
    assert entry["reference_profile"] == result.reference_profile_uri
    assert entry["metrics"]["roc_auc"] == pytest.approx(result.metrics["roc_auc"])


def test_the_commit_is_a_version_tag_that_links_workflow_runs_to_the_version(workspace: Workspace) -> None:
    sha = "C0FFEE" + "1" * 34
    # The demand model: credit-default's version numbers belong to the tests below.
    result = workspace.train("demand-forecast", "demand", config={"estimator": "linear"}, git_sha=sha)
    assert result.git_sha == sha.lower()
    version = registry.get_version(DEMAND_NAME, result.version, tracking_uri=workspace.tracking_uri)
    assert version.tags[TAG_GIT_SHA] == sha.lower()
    run = registry.client(workspace.tracking_uri).get_run(result.run_id)
    assert run.data.tags[TAG_GIT_SHA] == sha.lower()
    # The GitHub webhook's registry lookup finds exactly this version from the commit.
    lookup = MlflowShaLookup(workspace.tracking_uri)
    assert lookup("demand-forecast", sha.lower()) == [{"model": "demand", "version": result.version}]
    assert lookup("demand-forecast", "d" * 40) == [] and lookup("credit-risk", sha.lower()) == []
    audited = [
        e for e in workspace.audit_entries() if e["target"] == f"model_version:{DEMAND_NAME}/{result.version}"
    ]
    assert [e["git_sha"] for e in audited] == [sha.lower()]


def test_the_commit_comes_from_github_sha_when_not_given(workspace: Workspace, monkeypatch) -> None:
    sha = "e" * 40
    monkeypatch.setenv("GITHUB_SHA", sha)
    result = workspace.train("demand-forecast", "demand", config={"estimator": "linear"})
    assert result.git_sha == sha
    tags = registry.get_version(
        "demand-forecast.demand", result.version, tracking_uri=workspace.tracking_uri
    ).tags
    assert tags[TAG_GIT_SHA] == sha


def test_a_malformed_commit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    space = Workspace(tmp_path)
    space.write_training(CREDIT_DEFAULT, rows=200)
    with pytest.raises(ValueError, match="40-character"):
        space.train("credit-risk", "credit-default", git_sha="abc123")
    assert not space.database.exists()
    assert space.audit_entries() == []
    space.close()


def test_raising_from_progress_cancels_before_registration_and_is_ignored_after(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    space = Workspace(tmp_path)
    space.write_training(CREDIT_DEFAULT, rows=300)

    def cancel_at(stage_to_cancel: str):
        seen: list[str] = []

        def progress(stage: str, _fraction: float) -> None:
            seen.append(stage)
            if stage == stage_to_cancel:
                raise Cancelled(stage)

        return progress, seen

    for stage in ("splitting", "fitting", "logging to MLflow", "registering"):
        progress, seen = cancel_at(stage)
        with pytest.raises(Cancelled):
            space.train("credit-risk", "credit-default", config={"estimator": "linear"}, progress=progress)
        assert seen[-1] == stage
    assert registry.list_versions(NAME, tracking_uri=space.tracking_uri) == []
    assert space.audit_entries() == []
    assert space.store.list_files(REFERENCE_PROFILES) == []

    # Once the version is registered, a cancellation no longer stops the job halfway.
    progress, seen = cancel_at("writing reference profile")
    result = space.train("credit-risk", "credit-default", config={"estimator": "linear"}, progress=progress)
    assert seen[-1] == "done" and result.version == "1"
    assert read_reference_profile(space.store, "credit-risk", "credit-default", "1").rows == 300
    assert [e["version"] for e in space.audit_entries()] == ["1"]
    space.close()


def test_alias_loads_the_model_and_it_predicts(workspace: Workspace, first) -> None:
    result, _stages = first
    moved = registry.set_alias(NAME, "champion", result.version, tracking_uri=workspace.tracking_uri)
    assert moved.aliases == ("champion",)
    model = registry.load_model_by_alias(NAME, "champion", tracking_uri=workspace.tracking_uri)

    fresh = training_table(CREDIT_DEFAULT, seed=99, rows=2_000)
    frame = features_frame(fresh, CREDIT_DEFAULT.feature_columns)
    scores = model.predict_proba(frame)[:, 1]
    assert roc_auc_score(fresh.column("label").to_numpy(), scores) > 0.7

    # Serving-time rows with nulls and an unseen category still get a prediction.
    frame.loc[0, "income"] = np.nan
    frame.loc[1, "home_ownership"] = None
    frame.loc[2, "loan_purpose"] = "a brand new purpose"
    assert set(np.unique(model.predict(frame.head(3)))) <= {0, 1}


def test_reference_profile_is_written_per_version_and_readable(workspace: Workspace, first) -> None:
    result, _stages = first
    profile = read_reference_profile(workspace.store, "credit-risk", "credit-default", result.version)
    assert profile.rows == 3_000
    assert profile.names == (*CREDIT_DEFAULT.feature_columns, "segment_region", "label")
    assert profile["label"].kind == "categorical" and set(profile["label"].spec.categories) == {"0.0", "1.0"}
    assert profile["home_ownership"].kind == "categorical"
    income = profile["income"]
    training = training_table(CREDIT_DEFAULT, rows=3_000).column("income").to_numpy()
    assert income.kind == "numeric" and income.finite == 3_000
    assert income.mean == pytest.approx(training.mean()) and income.std == pytest.approx(training.std())
    assert sum(income.bin_counts) == 3_000
    listed = workspace.store.list_partitions(REFERENCE_PROFILES)
    assert {"project": "credit-risk", "model": "credit-default", "version": "1"} in listed
    with pytest.raises(InsufficientData):
        read_reference_profile(workspace.store, "credit-risk", "credit-default", "42")
    with pytest.raises(ValueError, match="version"):
        read_reference_profile(workspace.store, "credit-risk", "credit-default", "../1")


def test_second_training_adds_a_version_and_aliases_move(workspace: Workspace, first) -> None:
    second = workspace.train("credit-risk", "credit-default", config={"estimator": "linear"})
    assert second.version == "2" and second.estimator == "linear"
    assert second.artifact_digest != first[0].artifact_digest
    # Set here too: this test must not depend on another test having run first on its worker.
    registry.set_alias(NAME, "champion", first[0].version, tracking_uri=workspace.tracking_uri)
    registry.set_alias(NAME, "challenger", "2", tracking_uri=workspace.tracking_uri)
    versions = registry.list_versions(NAME, tracking_uri=workspace.tracking_uri)
    assert [v.version for v in versions] == ["1", "2"]
    assert [v.aliases for v in versions] == [("champion",), ("challenger",)]
    registry.set_alias(NAME, "champion", "2", tracking_uri=workspace.tracking_uri)
    assert registry.version_by_alias(NAME, "champion", tracking_uri=workspace.tracking_uri).version == "2"
    assert registry.list_versions("credit-risk.unknown", tracking_uri=workspace.tracking_uri) == []
    with pytest.raises(ValueError, match="latest"):
        registry.set_alias(NAME, "latest", "1", tracking_uri=workspace.tracking_uri)
    with pytest.raises(registry.RegistryError):
        registry.set_alias(NAME, "champion", "9", tracking_uri=workspace.tracking_uri)


def test_tampered_model_files_are_refused(workspace: Workspace, first) -> None:
    tampered = workspace.train("credit-risk", "credit-default", config={"estimator": "linear"})
    registry.set_alias(NAME, "tampered", tampered.version, tracking_uri=workspace.tracking_uri)
    source = registry.get_version(NAME, tampered.version, tracking_uri=workspace.tracking_uri).source
    model_id = source.removeprefix("models:/")
    stored = workspace.database.parent / "mlartifacts" / "credit-risk" / "models" / model_id / "artifacts"
    requirements = stored / "requirements.txt"
    requirements.write_text(requirements.read_text() + "evil-package==1.0\n")
    with pytest.raises(registry.DigestMismatch, match="changed after registration"):
        registry.load_model_by_alias(NAME, "tampered", tracking_uri=workspace.tracking_uri)


def test_regression_model_with_a_linear_estimator(workspace: Workspace) -> None:
    result = workspace.train("demand-forecast", "demand", config=TrainConfig(estimator="linear"))
    assert (result.registered_model, result.task) == ("demand-forecast.demand", "regression")
    assert set(result.metrics) == {"rmse", "mae", "r2"} and result.metrics["r2"] > 0.3
    registry.set_alias(
        result.registered_model, "champion", result.version, tracking_uri=workspace.tracking_uri
    )
    model = registry.load_model_by_alias(
        result.registered_model, "champion", tracking_uri=workspace.tracking_uri
    )
    fresh = training_table(DEMAND, seed=5, rows=1_000)
    predicted = model.predict(features_frame(fresh, DEMAND.feature_columns))
    assert r2_score(fresh.column("label").to_numpy(), predicted) > 0.3


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "actor",
    [
        Actor(user_id=8, username="sam", roles={"credit-risk": frozenset({Role.MODEL_SPONSOR})}),
        Actor(user_id=9, username="dara", roles={"credit-risk": frozenset({Role.DATA_TEAM})}),
        Actor(user_id=10, username="other", roles={"demand-forecast": frozenset({Role.ML_ENGINEER})}),
        None,
    ],
)
def test_actor_without_train_models_is_refused_before_anything_is_written(tmp_path: Path, actor) -> None:
    space = Workspace(tmp_path)
    space.write_training(CREDIT_DEFAULT, rows=200)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    stages: list[str] = []
    with pytest.raises(Forbidden, match="train_models"):
        space.train("credit-risk", "credit-default", actor=actor, progress=lambda s, _f: stages.append(s))
    assert stages == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not space.database.exists()
    assert space.audit_entries() == []
    space.close()


def test_missing_or_broken_training_data_is_refused_before_mlflow(tmp_path: Path) -> None:
    space = Workspace(tmp_path)
    with pytest.raises(InsufficientData, match="no training data"):
        space.train("credit-risk", "credit-default")
    broken = training_table(CREDIT_DEFAULT, rows=200).append_column("customer_id", pa.array(range(200)))
    space.store.write_partition(TRAINING_DATA, {"project": "credit-risk", "model": "credit-default"}, broken)
    with pytest.raises(ContractError, match="customer_id"):
        space.train(
            "credit-risk",
            "credit-default",
            config={"numeric_features": list(CREDIT_DEFAULT.numeric_features)},
        )
    tiny = training_table(CREDIT_DEFAULT, rows=30)
    space.store.write_partition(
        TRAINING_DATA, {"project": "credit-risk", "model": "credit-default"}, tiny, replace_partition=True
    )
    with pytest.raises(InsufficientData, match="at least 50"):
        space.train("credit-risk", "credit-default")
    assert not space.database.exists()
    assert space.audit_entries() == []
    space.close()


def test_bad_names_and_options_are_refused(tmp_path: Path) -> None:
    space = Workspace(tmp_path)
    with pytest.raises(ValueError, match="unknown training option"):
        space.train("credit-risk", "credit-default", config={"max_depth": 3})
    with pytest.raises(ValueError, match="estimator"):
        TrainConfig(estimator="xgboost")
    with pytest.raises(ValueError, match="model"):
        space.train("credit-risk", "credit/default")
    with pytest.raises(TrainingError, match="both numeric and categorical"):
        space.write_training(CREDIT_DEFAULT, rows=100)
        space.train(
            "credit-risk",
            "credit-default",
            config={"numeric_features": ["income"], "categorical_features": ["income"]},
        )
    space.close()


def test_demo_workspace_on_s3_trains_and_profiles(tmp_path: Path, s3_store_config) -> None:
    """The whole path on SeaweedFS: demo data written to S3, trained on, profile read back from S3."""
    store = ParquetStore(s3_store_config)
    try:
        scenario = generate_demo_data(store, date(2024, 1, 1), days=2, volume=0.02, training_rows=600)
        assert store.read(INFERENCE_LOGS, columns=["request_id"]).num_rows == sum(
            scenario.inference_rows.values()
        )
        tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        studio_url = f"sqlite:///{tmp_path / 'studio.db'}"
        upgrade(studio_url)
        engine = make_engine(studio_url)
        result = train_model(
            ENGINEER,
            project="credit-risk",
            model="churn",
            store=store,
            tracking_uri=tracking_uri,
            session_factory=make_session_factory(engine),
            config={"estimator": "linear"},
        )
        engine.dispose()
        assert result.reference_profile_uri.startswith("s3://")
        profile = read_reference_profile(store, "credit-risk", "churn", result.version)
        assert profile.rows == 600 and "monthly_charges" in profile.names
    finally:
        store.close()


def test_command_line_writes_the_demo_and_trains(tmp_path: Path, capsys) -> None:
    """``demo-data`` then ``train`` through the jobs CLI parser, as an operator would run them."""
    from app.settings import load_settings
    from jobs.cli import UsageError, build_parser
    from jobs.db import make_engine, make_session_factory, session_scope
    from jobs.db.migrate import upgrade
    from jobs.demo_data import register_demo_data
    from jobs.training import register_train
    from jobs.users import create_user

    settings = load_settings(
        {
            "MMS_VAR_DIR": str(tmp_path / "var"),
            "MMS_DATA_URI": str(tmp_path / "data"),
            "MMS_DATABASE_URL": f"sqlite:///{tmp_path / 'studio.db'}",
            "MMS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
        }
    )
    (tmp_path / "mlflow").mkdir()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine), write=True) as session:
        create_user(session, None, "root-admin", "admin-password-123", is_admin=True)
    engine.dispose()
    parser = build_parser([("demo-data", register_demo_data), ("train", register_train)])

    args = parser.parse_args(["demo-data", "--days", "2", "--volume", "0.02", "--training-rows", "1000"])
    assert args.func(args, settings) == 0
    assert "null burst" not in capsys.readouterr().out  # day 40 lies outside two days

    args = parser.parse_args(
        [
            "train",
            "--actor",
            "root-admin",
            "--project",
            "demand-forecast",
            "--model",
            "demand",
            "--estimator",
            "linear",
        ]
    )
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert "[100%] done" in out and "registered demand-forecast.demand version 1" in out
    versions = registry.list_versions("demand-forecast.demand", tracking_uri=settings.mlflow_tracking_uri)
    assert [v.created_by for v in versions] == ["root-admin"]
    assert versions[0].tags.get(TAG_GIT_SHA) == resolve_git_sha()

    sha = "f" * 40
    # --as is --actor's alias (the spelling of the deploy command).
    as_root = ["train", "--as", "root-admin", "--project", "demand-forecast", "--model", "demand"]
    args = parser.parse_args([*as_root, "--estimator", "linear", "--git-sha", sha])
    assert args.func(args, settings) == 0
    assert "version 2 (regression; " in capsys.readouterr().out
    version = registry.get_version("demand-forecast.demand", "2", tracking_uri=settings.mlflow_tracking_uri)
    assert version.tags[TAG_GIT_SHA] == sha
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        trained = session.scalars(
            select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION).order_by(AuditEntry.seq)
        ).all()
        assert [(e.actor, json.loads(e.details)["version"]) for e in trained] == [
            ("root-admin", "1"),
            ("root-admin", "2"),
        ]
        assert json.loads(trained[1].details)["git_sha"] == sha
    engine.dispose()

    args = parser.parse_args([*TRAIN_DEMAND, "--git-sha", "not-a-sha"])
    with pytest.raises(UsageError, match="40-character"):
        args.func(args, settings)

    args = parser.parse_args(
        ["train", "--actor", "nobody", "--project", "demand-forecast", "--model", "demand"]
    )
    with pytest.raises(UsageError, match="nobody"):
        args.func(args, settings)
