"""Models page callbacks on a real MLflow registry (SQLite store) filled by the training job."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from dash.exceptions import PreventUpdate

import callbacks.models as cb
from analytics.store import ParquetStore
from app.auth import services
from jobs import registry
from jobs.contracts import TRAINING_DATA
from jobs.demo_data import CREDIT_DEFAULT, training_table
from jobs.training import TrainConfig, train_model
from tests.unit.app.studio import Studio, build_studio, shown, signed_in

pytestmark = pytest.mark.unit

ROWS = 1_200


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Studio, Any]]:
    """A seeded studio whose MLflow store holds two versions of credit-risk.credit-default."""
    built = build_studio(tmp_path_factory.mktemp("models-callbacks"), hidden_project=True)
    store = ParquetStore(built.settings.store_config())
    try:
        store.write_partition(
            TRAINING_DATA,
            {"project": "credit-risk", "model": "credit-default"},
            training_table(CREDIT_DEFAULT, rows=ROWS),
        )
        trained = train_model(
            built.actor("mlengineer"),
            project="credit-risk",
            model="credit-default",
            store=store,
            tracking_uri=built.settings.mlflow_tracking_uri,
            session_factory=services(built.app.server).session_factory,
            config=TrainConfig(max_iter=20, max_leaf_nodes=15),
        )
        # A second version registered by hand from the same run: no studio tags (creator, digest).
        with registry.mlflow_target(built.settings.mlflow_tracking_uri) as mlflow_client:
            source = mlflow_client.get_model_version("credit-risk.credit-default", "1").source
            mlflow_client.create_model_version("credit-risk.credit-default", source, trained.run_id)
        results = [trained]
        registry.set_alias(
            "credit-risk.credit-default", "staging", "2", tracking_uri=built.settings.mlflow_tracking_uri
        )
        registry.set_alias(
            "credit-risk.credit-default", "champion", "1", tracking_uri=built.settings.mlflow_tracking_uri
        )
        yield built, results
    finally:
        store.close()
        built.close()


def test_registry_view_lists_versions_with_run_metrics_creator_digest_and_profile(studio) -> None:
    built, results = studio
    with signed_in(built, "sponsor1"):
        cards = cb.show_registry("credit-risk")
    assert len(cards) == 1
    cells = shown(cards[0])
    assert "credit-default" in cells and "  registered as credit-risk.credit-default" in cells
    (trained,) = results
    version_column = [cell for cell in cells if cell in ("1", "2")]
    assert version_column[:2] == ["2", "1"]  # newest first
    assert cells.count(trained.run_id) == 2
    assert "staging" in cells and "champion" in cells
    assert cells.count("mlengineer") == 1 and "unknown" in cells  # version 2 lacks the studio's tags
    assert trained.artifact_digest[: cb.DIGEST_SHOWN] + "…" in cells and "missing" in cells
    metrics = next(cell for cell in cells if cell.startswith("accuracy "))
    assert "roc_auc" in metrics
    profile = next(cell for cell in cells if "rows ·" in cell)
    assert profile.startswith(f"{ROWS} rows") and "numeric" in profile
    assert "No deployment recorded yet." in cells


def test_registry_entries_map_environment_aliases(studio) -> None:
    built, _results = studio
    entries = cb.registry_entries("credit-risk", built.settings)
    (entry,) = entries
    by_version = {row.version: row for row in entry.versions}
    assert by_version["2"].aliases == ("staging",) and by_version["2"].environments == ("staging",)
    assert by_version["1"].aliases == ("champion",) and by_version["1"].environments == ()
    assert by_version["1"].created_by == "mlengineer" and by_version["1"].metrics
    assert by_version["2"].created_by is None and by_version["2"].artifact_digest is None


def test_project_without_models_says_so(studio) -> None:
    built, _results = studio
    with signed_in(built, "production"):
        empty = cb.show_registry("demand-forecast")
    assert "No model of this project is registered yet" in shown(empty)[0]


def test_forged_or_unviewable_project_gets_nothing(studio) -> None:
    built, _results = studio
    with signed_in(built, "sponsor1"):
        with pytest.raises(PreventUpdate):
            cb.show_registry("hidden-project")
        with pytest.raises(PreventUpdate):
            cb.show_registry("no-such-project")
        options, value = cb.list_model_projects("models-project", "hidden-project")
    assert "hidden-project" not in [option["value"] for option in options] and value == "credit-risk"
    with signed_in(built, "admin"):
        assert "No model" in shown(cb.show_registry("hidden-project"))[0]


def test_unreachable_registry_fails_fast_with_the_first_line(studio) -> None:
    built, _results = studio
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = replace(built.settings, mlflow_tracking_uri=f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match="Connection refused"):
        cb.registry_entries("credit-risk", unreachable)


def test_missing_sqlite_registry_is_not_created_by_looking(studio, tmp_path) -> None:
    built, _results = studio
    absent = tmp_path / "absent" / "mlflow.db"
    assert (
        cb.registry_entries("credit-risk", replace(built.settings, mlflow_tracking_uri=f"sqlite:///{absent}"))
        == []
    )
    assert not absent.exists()


# --------------------------------------------------------------------------- long jobs (background callbacks)


def test_long_job_forms_follow_the_role_on_the_project(studio) -> None:
    built, _results = studio
    expected = {
        "mlengineer": (cb.SHOWN, cb.SHOWN),
        "datateam": (cb.HIDDEN, cb.SHOWN),
        "sponsor1": (cb.HIDDEN, cb.HIDDEN),
        "production": (cb.HIDDEN, cb.HIDDEN),
    }
    for username, styles in expected.items():
        with signed_in(built, username):
            assert cb.show_long_job_forms("credit-risk") == styles, username
            assert cb.show_long_job_forms(None) == (cb.HIDDEN, cb.HIDDEN)


def test_long_jobs_refuse_users_without_the_permission(studio) -> None:
    built, _results = studio
    reports: list[tuple] = []
    with signed_in(built, "sponsor1"):
        with pytest.raises(PreventUpdate):
            cb.train_new_version(reports.append, 1, "credit-risk", "credit-default")
        with pytest.raises(PreventUpdate):
            cb.backfill_monitoring(reports.append, 1, "credit-risk", "credit-default", "", "2026-01-01", None)
    with signed_in(built, "mlengineer"):
        other = cb.train_new_version(reports.append, 1, "hidden-project", "credit-default")
        unnamed = cb.train_new_version(reports.append, 1, "credit-risk", "  ")
        with pytest.raises(PreventUpdate):
            cb.train_new_version(reports.append, None, "credit-risk", "credit-default")
    assert (
        other.color == "danger"
        and "mlengineer may not train_models on project 'hidden-project'" in other.children
    )
    assert unnamed.color == "danger" and "enter the model name" in unnamed.children
    assert reports == []  # nothing started
    # Outside a request and without a user handed over by the studio, a job function does not run.
    with pytest.raises(PreventUpdate):
        cb.train_new_version(reports.append, 1, "credit-risk", "credit-default")


def test_training_callback_reports_progress_and_disables_cancel_once_registering(studio) -> None:
    built, _results = studio
    reports: list[tuple] = []
    with signed_in(built, "mlengineer"):
        outcome = cb.train_new_version(reports.append, 1, "credit-risk", "credit-default")
    assert outcome.color == "success", outcome.children
    assert "of credit-risk.credit-default registered from run" in outcome.children
    percents = [report[0] for report in reports]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100
    labels = [report[1] for report in reports]
    assert "fitting · 20%" in labels and "registering · 85%" in labels
    cancel_disabled = {report[1].split(" · ")[0]: report[2] for report in reports}
    assert cancel_disabled["starting"] is False and cancel_disabled["fitting"] is False
    assert cancel_disabled["registering"] is True and cancel_disabled["done"] is True


def test_backfill_validates_the_form_and_runs_the_monitor(studio) -> None:
    built, _results = studio
    with pytest.raises(ValueError, match="choose the first date"):
        cb.backfill_request("credit-risk", "credit-default", "", None, "2026-01-02")
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        cb.backfill_request("credit-risk", "credit-default", "", "2026-01-05", "2026-01-02")
    with pytest.raises(ValueError, match="at most 366 days"):
        cb.backfill_request("credit-risk", "credit-default", "", "2024-01-01", "2026-01-02")
    with pytest.raises(ValueError, match="not a date"):
        cb.backfill_request("credit-risk", "credit-default", "", "yesterday", "2026-01-02")
    request = cb.backfill_request("credit-risk", "credit-default", "prod", "2026-01-01", "2026-01-31")
    assert request.backfill and (request.since.day, request.until.day, request.environment) == (1, 31, "prod")
    reports: list[tuple] = []
    with signed_in(built, "monitoring"):
        outcome = cb.backfill_monitoring(
            reports.append, 1, "credit-risk", "credit-default", "", "2026-01-01", "2026-01-31"
        )
        bad = cb.backfill_monitoring(
            reports.append, 1, "credit-risk", "credit-default", "qa", "2026-01-01", "2026-01-02"
        )
    assert outcome.color == "success"
    assert "nothing to monitor" in shown(outcome)[1]
    assert reports[0] == (0, "starting · 0%", False) and reports[-1] == (100, "done · 100%", False)
    assert bad.color == "danger" and "environment must be one of" in bad.children
