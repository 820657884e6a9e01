"""``jobs.github`` on SQLite and PostgreSQL: replay refusal under concurrency, pruning, run updates,
version links through a real MLflow registry, and configuration rights."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import github, registry
from jobs.db.api_models import GithubDelivery, WorkflowRun
from jobs.db.models import AuditEntry, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Forbidden, Role
from jobs.projects import create_project
from jobs.users import actor_for, create_user, grant_role

pytestmark = pytest.mark.integration

PAYLOADS = Path(__file__).resolve().parents[2] / "fixtures" / "github_payloads"
REPOSITORY = "example-org/credit-models"
SECRET = "webhook-secret-for-tests"
SECRET_KEY = "studio secret key for the webhook tests (32+ chars)"
PROJECT = "credit-risk"
OTHER = "demand-forecast"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def _body(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


def _headers(event: str, body: bytes, delivery: str | None = None) -> dict[str, str]:
    return {
        github.EVENT_HEADER: event,
        github.DELIVERY_HEADER: delivery or str(uuid.uuid4()),
        github.SIGNATURE_HEADER: github.signature_of(SECRET, body),
    }


class Team:
    """An admin, two projects and a production engineer on the first."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        with session_scope(sessions, write=True) as session:
            user = create_user(session, None, "root-admin", "root-admin-password", is_admin=True)
            admin = actor_for(session, user.id)
            create_project(session, admin, PROJECT, "Credit risk")
            create_project(session, admin, OTHER, "Demand forecast")
            engineer = create_user(session, admin, "prod-engineer", "prod-engineer-password")
            grant_role(session, admin, engineer, PROJECT, Role.PRODUCTION_TEAM)
            self.admin_id, self.engineer_id = user.id, engineer.id

    def actor(self, user_id: int) -> Actor:
        with self.sessions() as session:
            found = actor_for(session, user_id)
        assert found is not None
        return found

    def configure(self) -> None:
        with session_scope(self.sessions, write=True) as session:
            github.configure_github(
                session, self.actor(self.engineer_id), PROJECT, REPOSITORY, SECRET, secret_key=SECRET_KEY
            )


@pytest.fixture
def team(migrated_session_factory: sessionmaker[Session]) -> Team:
    built = Team(migrated_session_factory)
    built.configure()
    return built


@pytest.fixture(scope="module")
def mlflow_lookup(tmp_path_factory: pytest.TempPathFactory) -> github.MlflowShaLookup:
    """A real MLflow store: version 1 tagged itself, version 2 only through its run's git commit tag."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(tracking_uri)
    experiment = client.create_experiment("training", artifact_location=str(root / "artifacts"))
    name = registry.registered_model_name(PROJECT, "scorecard")
    client.create_registered_model(name)
    tagged_run = client.create_run(experiment).info.run_id
    client.create_model_version(
        name, f"runs:/{tagged_run}/model", run_id=tagged_run, tags={github.TAG_GIT_SHA: "1" * 40}
    )
    commit_run = client.create_run(experiment, tags={github.MLFLOW_GIT_COMMIT_TAG: SHA}).info.run_id
    client.create_model_version(name, f"runs:/{commit_run}/model", run_id=commit_run)
    # Same commit, another project's model: never linked to this project's runs.
    other_name = registry.registered_model_name(OTHER, "forecast")
    client.create_registered_model(other_name)
    client.create_model_version(other_name, f"runs:/{commit_run}/model", run_id=commit_run)
    return github.MlflowShaLookup(tracking_uri)


def test_the_registry_lookup_matches_version_tags_and_run_commit_tags(
    mlflow_lookup: github.MlflowShaLookup,
) -> None:
    assert mlflow_lookup(PROJECT, SHA) == [{"model": "scorecard", "version": "2"}]
    assert mlflow_lookup(PROJECT, "1" * 40) == [{"model": "scorecard", "version": "1"}]
    assert mlflow_lookup(OTHER, SHA) == [{"model": "forecast", "version": "1"}]
    assert mlflow_lookup(PROJECT, "2" * 40) == []
    assert mlflow_lookup(PROJECT, "not-a-sha") == []


def test_a_completed_run_is_stored_with_the_versions_it_built(
    team: Team, mlflow_lookup: github.MlflowShaLookup
) -> None:
    body = _body("workflow_run.completed")
    result = github.receive_webhook(
        team.sessions,
        headers=_headers("workflow_run", body),
        body=body,
        secret_key=SECRET_KEY,
        find_versions=mlflow_lookup,
    )
    assert result.outcome == github.STORED and result.project == PROJECT
    assert result.model_versions == [{"model": "scorecard", "version": "2"}]
    with session_scope(team.sessions) as session:
        assert github.versions_for_commit(session, PROJECT, SHA) == [{"model": "scorecard", "version": "2"}]
        runs = github.list_workflow_runs(session, team.actor(team.engineer_id), head_sha=SHA)
        assert [r.github_run_id for r in runs] == [7412580963]
        assert github.list_workflow_runs(session, team.actor(team.engineer_id), project=OTHER) == []


def test_concurrent_copies_of_one_delivery_store_it_once(team: Team) -> None:
    body = _body("workflow_run.completed")
    headers = _headers("workflow_run", body)
    outcomes: list[object] = []

    def deliver() -> None:
        try:
            outcomes.append(
                github.receive_webhook(team.sessions, headers=headers, body=body, secret_key=SECRET_KEY)
            )
        except github.ReplayedDelivery as error:
            outcomes.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stored = [o for o in outcomes if isinstance(o, github.WebhookResult)]
    assert len(outcomes) == 4 and len(stored) == 1
    with session_scope(team.sessions) as session:
        assert len(session.scalars(select(WorkflowRun)).all()) == 1
        assert len(session.scalars(select(GithubDelivery)).all()) == 1


def test_deliveries_older_than_the_window_are_pruned_and_old_events_never_move_a_run_back(team: Team) -> None:
    completed = _body("workflow_run.completed")
    long_ago = utcnow() - github.REPLAY_WINDOW - timedelta(days=1)
    headers = _headers("workflow_run", completed)
    github.receive_webhook(
        team.sessions, headers=headers, body=completed, secret_key=SECRET_KEY, now=long_ago
    )
    with pytest.raises(github.ReplayedDelivery):
        github.receive_webhook(
            team.sessions, headers=headers, body=completed, secret_key=SECRET_KEY, now=long_ago
        )
    in_progress = _body("workflow_run.in_progress")
    github.receive_webhook(
        team.sessions, headers=_headers("workflow_run", in_progress), body=in_progress, secret_key=SECRET_KEY
    )
    with session_scope(team.sessions) as session:
        delivery_ids = session.scalars(select(GithubDelivery.delivery_id)).all()
        run = session.scalars(select(WorkflowRun)).one()
    assert headers[github.DELIVERY_HEADER] not in delivery_ids and len(delivery_ids) == 1
    assert (run.status, run.conclusion) == ("completed", "success")
    # A re-run (attempt 2) is newer whatever its timestamps say.
    rerun = json.loads(in_progress)
    rerun["workflow_run"]["run_attempt"] = 2
    body = json.dumps(rerun).encode()
    github.receive_webhook(
        team.sessions, headers=_headers("workflow_run", body), body=body, secret_key=SECRET_KEY
    )
    with session_scope(team.sessions) as session:
        run = session.scalars(select(WorkflowRun)).one()
    assert (run.run_attempt, run.status, run.conclusion) == (2, "in_progress", None)


def test_a_failing_or_hanging_registry_does_not_lose_the_run(team: Team) -> None:
    body = _body("workflow_run.completed")
    # MLflow retries an unreachable server for minutes: the delivery waits lookup_timeout at most.
    broken = github.MlflowShaLookup("http://127.0.0.1:9/unreachable-mlflow")
    started = time.monotonic()
    result = github.receive_webhook(
        team.sessions,
        headers=_headers("workflow_run", body),
        body=body,
        secret_key=SECRET_KEY,
        find_versions=broken,
        lookup_timeout=1.0,
    )
    assert time.monotonic() - started < 10
    assert result.outcome == github.STORED and result.model_versions == []

    def failing(project: str, sha: str) -> list:
        raise RuntimeError("registry down")

    again = json.loads(body)
    again["workflow_run"]["id"] += 1
    raw = json.dumps(again).encode()
    result = github.receive_webhook(
        team.sessions,
        headers=_headers("workflow_run", raw),
        body=raw,
        secret_key=SECRET_KEY,
        find_versions=failing,
    )
    assert result.outcome == github.STORED and result.model_versions == []
    with session_scope(team.sessions) as session:
        assert len(session.scalars(select(WorkflowRun)).all()) == 2


def test_configuration_rights_and_moves_between_projects(team: Team) -> None:
    engineer = team.actor(team.engineer_id)
    with session_scope(team.sessions, write=True) as session, pytest.raises(Forbidden):
        github.configure_github(
            session, engineer, OTHER, "example-org/forecast", SECRET, secret_key=SECRET_KEY
        )
    admin = team.actor(team.admin_id)
    with session_scope(team.sessions, write=True) as session:
        github.configure_github(
            session, admin, OTHER, REPOSITORY, "a new secret value", secret_key=SECRET_KEY
        )
    body = _body("push")
    with pytest.raises(github.BadSignature):  # the old secret no longer verifies
        github.receive_webhook(
            team.sessions, headers=_headers("push", body), body=body, secret_key=SECRET_KEY
        )
    with session_scope(team.sessions, write=True) as session, pytest.raises(Forbidden):
        github.remove_github(
            session, engineer, REPOSITORY
        )  # it now belongs to a project the engineer does not manage
    with session_scope(team.sessions, write=True) as session:
        github.remove_github(session, admin, REPOSITORY)
    with session_scope(team.sessions) as session:
        details = [
            e.details for e in session.scalars(select(AuditEntry).where(AuditEntry.action.like("github.%")))
        ]
    assert len(details) == 3 and all(SECRET not in d and "a new secret value" not in d for d in details)
