"""From GitHub to the CI/CD page, on SQLite and PostgreSQL: the repository is configured through the
Integrations page's callback, the recorded payloads are posted (signed) to the real webhook route, and the
CI/CD page's callback shows the run with the model version it built (found in a real MLflow registry) and
that version's promotion request with its approvals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import callbacks.cicd as cicd
import callbacks.integrations as integrations
from app.factory import create_app
from jobs import github, registry
from jobs.db.api_models import GithubDelivery, WorkflowRun
from jobs.seed import seed_demo_accounts
from tests.unit.app.studio import Studio, as_sent, shown, signed_in, studio_settings, texts
from tests.unit.callbacks.cicd_rows import SHA, add_request

pytestmark = pytest.mark.integration

PAYLOADS = Path(__file__).resolve().parents[2] / "fixtures" / "github_payloads"
REPOSITORY = "example-org/credit-models"
SECRET = "recorded-payloads-webhook-secret"
WEBHOOK = "/api/v1/integrations/github/webhook"
RUN_ID = 7412580963


@pytest.fixture
def studio(tmp_path: Path, database_url: str) -> Iterator[Studio]:
    settings = studio_settings(tmp_path, MMS_DATABASE_URL=database_url, MLFLOW_DISABLE_TELEMETRY="true")
    built = Studio(app=create_app(settings), settings=settings)
    with built.db(write=True) as session:
        assert seed_demo_accounts(session)
    with built:
        yield built


def deliver(studio: Studio, event: str, name: str, *, secret: str = SECRET) -> Any:
    body = (PAYLOADS / f"{name}.json").read_bytes()
    headers = {
        github.EVENT_HEADER: event,
        github.DELIVERY_HEADER: str(uuid.uuid4()),
        github.SIGNATURE_HEADER: github.signature_of(secret, body),
        "User-Agent": "GitHub-Hookshot/2f1a9c3",
    }
    return studio.client("10.8.0.1").post(
        WEBHOOK, data=body, headers=headers, content_type="application/json"
    )


def register_version_built_from(studio: Studio, sha: str) -> str:
    """A version of credit-risk.scorecard in the studio's MLflow registry, tagged with its commit."""
    client = registry.client(studio.settings.mlflow_tracking_uri)
    experiment = client.create_experiment("training", artifact_location=str(studio.settings.var_dir / "art"))
    run_id = client.create_run(experiment).info.run_id
    name = registry.registered_model_name("credit-risk", "scorecard")
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"runs:/{run_id}/model", run_id=run_id, tags={github.TAG_GIT_SHA: sha}
    )
    return str(version.version)


def test_recorded_deliveries_show_on_the_cicd_page(studio: Studio) -> None:
    version = register_version_built_from(studio, SHA)
    with studio.db(write=True) as session:
        add_request(
            session,
            "credit-risk",
            "scorecard",
            version,
            "prod",
            approvers=("sponsor1",),
            required=2,
            status="pending",
        )

    with signed_in(studio, "production"):
        saved, secret_field, _ = integrations.save_github_clicked(1, "credit-risk", REPOSITORY, SECRET, 0)
        assert saved.color == "success", shown(saved)
        assert secret_field == ""
        empty = cicd.show_runs("credit-risk", [], 0)
    assert "No GitHub workflow run received for project credit-risk." in shown(empty[0])[0]

    forged = deliver(studio, "workflow_run", "workflow_run.completed", secret="not-the-secret-at-all")
    assert forged.status_code == 401
    assert deliver(studio, "workflow_run", "workflow_run.in_progress", secret=SECRET).status_code == 200
    with signed_in(studio, "production"):
        table = cicd.show_runs("credit-risk", [], 0)[0]
    text = shown(table)
    assert "in_progress" in text and "Deploy to dev" in text and SHA[:7] in text

    completed = deliver(studio, "workflow_run", "workflow_run.completed")
    assert completed.status_code == 200, completed.text
    assert completed.get_json()["model_versions"] == [{"model": "scorecard", "version": version}]
    assert deliver(studio, "push", "push").status_code == 200
    assert deliver(studio, "pull_request", "pull_request.opened").status_code == 200
    assert deliver(studio, "ping", "ping").status_code == 202

    for username in ("production", "mlengineer", "admin"):
        with signed_in(studio, username):
            table, info, *_ = cicd.show_runs("", [], 0)
        rows = as_sent(table)["props"]["children"][1]["props"]["children"]
        assert len(rows) == 1 and info == "Page 1 · runs 1 to 1", (
            username
        )  # one run, updated in place by the later event
        text = texts(rows[0])
        assert text[:3] == ["Deploy to dev", "credit-risk", "main"], username
        assert "completed · success" in text and "in_progress" not in text
        assert f"scorecard v{version}" in text
        assert any(t.endswith("→ prod: pending (1/2 approvals: sponsor1)") for t in text), text
    with studio.db() as session:
        assert session.scalars(select(WorkflowRun.github_run_id)).all() == [RUN_ID]
        assert sorted(session.scalars(select(GithubDelivery.event))) == [
            "ping",
            "pull_request",
            "push",
            "workflow_run",
            "workflow_run",
        ]
