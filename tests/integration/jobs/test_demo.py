"""The demo workspace from nothing, with a real MLflow store, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.cli import EXIT_OK, EXIT_USAGE, main
from jobs.contracts import INFERENCE_LOGS, REFERENCE_PROFILES
from jobs.db import make_engine, make_session_factory, session_scope
from jobs.db.alerting import AlertRule
from jobs.demo import DEMO_ACTOR, DemoContext, DemoWorkspace, build_demo_workspace
from jobs.demo_data import DEMO_MODELS, DEMO_VERSION
from jobs.monitor import read_metrics
from jobs.seed import DEMO_ACCOUNTS
from jobs.users import get_user

pytestmark = pytest.mark.integration

DAYS = 3
SMALL = ["--days", str(DAYS), "--volume", "0.05", "--training-rows", "1000"]
NAMES = [registry.registered_model_name(m.project, m.model) for m in DEMO_MODELS]


@dataclass(frozen=True)
class Built:
    """A demo workspace built by ``python -m jobs demo`` on SQLite."""

    root: Path
    output: str

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def environ(self, database_url: str | None = None) -> dict[str, str]:
        return {
            "MMS_DATA_URI": str(self.root / "data"),
            "MMS_VAR_DIR": str(self.root / "var"),
            "MMS_DATABASE_URL": database_url or f"sqlite:///{self.root / 'studio.db'}",
            "MMS_MLFLOW_TRACKING_URI": self.tracking_uri,
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("demo")
    environ = Built(root, "").environ()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["demo", *SMALL], environ) == EXIT_OK
    return Built(root, output.getvalue())


def start_of(store: ParquetStore) -> date:
    return date.fromisoformat(min(f.partition["date"] for f in store.list_files(INFERENCE_LOGS)))


def test_the_demo_command_builds_the_workspace_from_nothing(built: Built) -> None:
    assert f"3 models, {DAYS} days from" in built.output
    assert f"{6 * DAYS} date(s) computed" in built.output and "no problem" in built.output
    assert "demo accounts" in built.output and DEMO_ACTOR in built.output
    assert "after_monitor:install_demo_alerts" in built.output  # the alerting hook ran
    store = ParquetStore(StoreConfig(data_uri=str(built.root / "data")))
    engine = make_engine(built.environ()["MMS_DATABASE_URL"])
    try:
        days = sorted({f.partition["date"] for f in store.list_files(INFERENCE_LOGS)})
        assert len(days) == DAYS and days[-1] < datetime.now(UTC).date().isoformat()  # ends yesterday
        for name in NAMES:
            (version,) = registry.list_versions(name, tracking_uri=built.tracking_uri)
            assert version.version == DEMO_VERSION and version.created_by == DEMO_ACTOR
            assert version.aliases == ("prod", "staging")
        assert len(store.list_files(REFERENCE_PROFILES)) == 3
        assert read_metrics(store, "demand-forecast", "demand", "prod").num_rows > 0
        with session_scope(make_session_factory(engine)) as session:
            assert all(get_user(session, account.username) for account in DEMO_ACCOUNTS)
            rules = session.scalars(select(AlertRule.model)).all()
            assert {m.model for m in DEMO_MODELS} == set(rules)
    finally:
        store.close()
        engine.dispose()


def test_a_rebuild_reuses_everything_and_runs_the_after_monitor_hooks(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(built.root, tmp_path / "demo", symlinks=True)
    copy = Built(tmp_path / "demo", built.output)
    store = ParquetStore(StoreConfig(data_uri=str(copy.root / "data")))
    start = start_of(store)
    now = datetime.combine(start + timedelta(days=DAYS), time(6), UTC)  # the same demo days
    seen: list[tuple[DemoWorkspace, DemoContext]] = []

    def remember(workspace: DemoWorkspace, context: DemoContext) -> None:
        assert read_metrics(context.store, "credit-risk", "churn", "prod").num_rows > 0
        with session_scope(context.session_factory) as session:
            assert get_user(session, "monitoring") is not None
        seen.append((workspace, context))

    def build(**kwargs) -> DemoWorkspace:
        return build_demo_workspace(
            store=store,
            database_url=copy.environ()["MMS_DATABASE_URL"],
            tracking_uri=copy.tracking_uri,
            days=DAYS,
            volume=0.05,
            training_rows=1_000,
            now=now,
            **kwargs,
        )

    try:
        again = build(after_monitor=[remember])
        assert again.scenario is not None and again.scenario.start_date == start
        assert again.accounts_created == () and again.trained == ()
        assert again.aliases == {name: {"prod": DEMO_VERSION, "staging": DEMO_VERSION} for name in NAMES}
        assert again.monitor is not None and again.monitor.ok and again.monitor.computed_dates == 0
        assert [(c.actor.username, c.now, w is again) for w, c in seen] == [(DEMO_ACTOR, now, True)]
        assert set(again.timings) == {"seed", "data", "train", "monitor", "after_monitor:remember"}
        assert [len(registry.list_versions(n, tracking_uri=copy.tracking_uri)) for n in NAMES] == [1, 1, 1]

        # A lost reference profile is rebuilt from the same (deterministic) training data.
        shutil.rmtree(store.dataset_uri(REFERENCE_PROFILES))
        rebuilt = build()
        assert rebuilt.trained == () and len(store.list_files(REFERENCE_PROFILES)) == 3
        assert rebuilt.monitor is not None and rebuilt.monitor.ok

        # --if-empty leaves a workspace with traffic alone.
        assert build(if_empty=True).skipped
        logs = store.list_files(INFERENCE_LOGS)
        assert main(["demo", "--if-empty"], copy.environ()) == EXIT_OK
        assert "already holds inference logs: demo not rebuilt" in capsys.readouterr().out
        assert store.list_files(INFERENCE_LOGS) == logs
        assert main(["demo", "--days", "0"], copy.environ()) == EXIT_USAGE
    finally:
        store.close()


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_the_demo_seeds_a_postgresql_metadata_database(
    built: Built, database_url: str, tmp_path: Path
) -> None:
    # The data and the MLflow store of the SQLite build, a new PostgreSQL metadata database:
    # migrated and seeded there, the models reused, the monitor up to date.
    shutil.copytree(built.root, tmp_path / "demo", symlinks=True)
    copy = Built(tmp_path / "demo", built.output)
    store = ParquetStore(StoreConfig(data_uri=str(copy.root / "data")))
    try:
        workspace = build_demo_workspace(
            store=store,
            database_url=database_url,
            tracking_uri=copy.tracking_uri,
            days=DAYS,
            volume=0.05,
            training_rows=1_000,
            now=datetime.combine(start_of(store) + timedelta(days=DAYS), time(6), UTC),
        )
    finally:
        store.close()
    assert len(workspace.accounts_created) == len(DEMO_ACCOUNTS) and workspace.trained == ()
    assert workspace.monitor is not None and workspace.monitor.ok and workspace.monitor.computed_dates == 0
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            assert all(get_user(session, account.username) for account in DEMO_ACCOUNTS)
    finally:
        engine.dispose()
    assert [len(registry.list_versions(n, tracking_uri=copy.tracking_uri)) for n in NAMES] == [1, 1, 1]
