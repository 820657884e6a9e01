"""The demo workspace from nothing, on SQLite and PostgreSQL, with a real MLflow store."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.cli import EXIT_OK, main
from jobs.contracts import INFERENCE_LOGS, REFERENCE_PROFILES
from jobs.db import make_engine, make_session_factory, session_scope
from jobs.demo import DEMO_ACTOR, DemoContext, DemoWorkspace, build_demo_workspace
from jobs.demo_data import DEMO_MODELS, DEMO_VERSION
from jobs.monitor import read_metrics
from jobs.users import get_user

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, 6, 0, tzinfo=UTC)
DAYS = 3
FAST = {"max_iter": 15, "max_leaf_nodes": 7}
NAMES = [registry.registered_model_name(m.project, m.model) for m in DEMO_MODELS]


def test_the_demo_workspace_is_built_from_nothing_and_rebuilt_idempotently(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "db").mkdir(exist_ok=True)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    seen: list[tuple[DemoWorkspace, DemoContext]] = []

    def remember(workspace: DemoWorkspace, context: DemoContext) -> None:
        # What the alert hooks will need: the metrics are there, the database is seeded.
        assert read_metrics(context.store, "credit-risk", "churn", "prod").num_rows > 0
        with session_scope(context.session_factory) as session:
            assert get_user(session, "monitoring") is not None
        seen.append((workspace, context))

    def build(**kwargs) -> DemoWorkspace:
        return build_demo_workspace(
            store=store,
            database_url=database_url,
            tracking_uri=tracking_uri,
            days=DAYS,
            volume=0.05,
            training_rows=1_000,
            training=FAST,
            now=NOW,
            **kwargs,
        )

    try:
        workspace = build(after_monitor=[remember])
        scenario = workspace.scenario
        assert scenario is not None and scenario.start_date == (NOW - timedelta(days=DAYS)).date()
        assert len(workspace.accounts_created) == 7 and DEMO_ACTOR in workspace.accounts_created
        assert sorted(workspace.trained) == sorted(NAMES)
        for name in NAMES:
            (version,) = registry.list_versions(name, tracking_uri=tracking_uri)
            assert version.version == DEMO_VERSION and version.created_by == DEMO_ACTOR
            assert version.aliases == ("prod", "staging")
            assert workspace.aliases[name] == {"prod": DEMO_VERSION, "staging": DEMO_VERSION}
        assert len(store.list_files(REFERENCE_PROFILES)) == 3
        monitor = workspace.monitor
        assert monitor is not None and monitor.ok, monitor.to_text()
        assert monitor.computed_dates == 6 * DAYS
        assert [(w.scenario, c.actor.username, c.now) for w, c in seen] == [(scenario, DEMO_ACTOR, NOW)]
        assert set(workspace.timings) == {"seed", "data", "train", "monitor", "after_monitor:remember"}

        # Again: same data, versions reused, nothing to recompute.
        again = build()
        assert again.accounts_created == () and again.trained == ()
        assert again.monitor is not None and again.monitor.computed_dates == 0
        assert [len(registry.list_versions(n, tracking_uri=tracking_uri)) for n in NAMES] == [1, 1, 1]

        # A lost reference profile is rebuilt from the same training data; the monitor picks it up.
        shutil.rmtree(store.dataset_uri(REFERENCE_PROFILES))
        rebuilt = build()
        assert rebuilt.trained == () and len(store.list_files(REFERENCE_PROFILES)) == 3
        assert rebuilt.monitor is not None and rebuilt.monitor.computed_dates == 0  # same files, same sizes

        assert build(if_empty=True).skipped
        environ = {
            "MMS_DATA_URI": str(tmp_path / "data"),
            "MMS_VAR_DIR": str(tmp_path / "var"),
            "MMS_DATABASE_URL": database_url,
            "MMS_MLFLOW_TRACKING_URI": tracking_uri,
        }
        logs_before = store.list_files(INFERENCE_LOGS)
        assert main(["demo", "--if-empty"], environ) == EXIT_OK
        assert "already holds inference logs: demo not rebuilt" in capsys.readouterr().out
        assert store.list_files(INFERENCE_LOGS) == logs_before
    finally:
        store.close()
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            assert get_user(session, DEMO_ACTOR) is not None
    finally:
        engine.dispose()


def test_the_demo_command_builds_a_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"MMS_VAR_DIR": str(tmp_path / "var"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    assert main(["demo", "--days", "1"], environ) == EXIT_OK
    out = capsys.readouterr().out
    assert "demo workspace in" in out and "3 models, 1 days" in out
    assert "6 date(s) computed" in out and "no problem" in out
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path / "var" / "data")))
    try:
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
        (logs,) = store.list_files(INFERENCE_LOGS, filters={"model": "churn", "environment": "prod"})
        assert logs.partition["date"] == yesterday.isoformat()
    finally:
        store.close()
    assert main(["demo", "--if-empty"], environ) == EXIT_OK
    assert "demo not rebuilt" in capsys.readouterr().out
