"""Integrations: connection checks of the data store (local and SeaweedFS S3), MLflow and GitHub.

GitHub cannot be reached from here (and must not be): its API is played by a small
HTTP server on the loopback that answers ``GET /repos/<owner>/<name>`` the way
GitHub does, including the 401/404 bodies, so the real HTTP client code runs.
"""

from __future__ import annotations

import importlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dash
import pytest
from dash.exceptions import PreventUpdate
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import select

import callbacks.integrations as cb
from analytics.store import StoreConfig
from jobs import github, integrations
from jobs.db.api_models import GithubIntegration
from jobs.db.models import AuditEntry
from jobs.integrations import GitHubConfig, check_data_store, check_github, check_mlflow, github_config
from jobs.permissions import Role
from jobs.registry import client
from jobs.users import InvalidInput, actor_for, create_user, get_user, grant_role
from tests.unit.app.studio import Studio, build_studio, callback_request, csrf_header, shown, signed_in

pytestmark = pytest.mark.unit

TOKEN = "ghp_test_token_never_shown"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with build_studio(tmp_path_factory.mktemp("integrations-callbacks")) as built:
        yield built


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _GitHubApi(BaseHTTPRequestHandler):
    """``GET /repos/org/studio``: 200 with the right token, 401 with another, 404 for other repositories."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if auth != f"Bearer {TOKEN}":
            status, body = 401, {"message": "Bad credentials"}
        elif self.path == "/repos/org/studio":
            status, body = 200, {"full_name": "org/studio", "private": True, "default_branch": "main"}
        else:
            status, body = 404, {"message": "Not Found"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def github_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- the checks


def test_local_data_store_is_listed_and_probed(tmp_path: Path) -> None:
    (tmp_path / "data" / "inference_logs").mkdir(parents=True)
    result = check_data_store(StoreConfig(data_uri=str(tmp_path / "data")))
    assert result.ok, result.error
    assert "1 dataset folder(s)" in result.summary
    assert result.details[0] == "datasets: inference_logs"
    assert list((tmp_path / "data" / "_staging").iterdir()) == []  # the probe was deleted


def test_unwritable_data_store_fails_with_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = check_data_store(StoreConfig(data_uri=str(tmp_path / "file" / "data")))
    assert not result.ok
    assert "is not reachable" in result.summary
    assert result.error and "\n" not in result.error


@pytest.mark.integration
def test_s3_data_store_on_seaweedfs_and_a_wrong_endpoint(s3_store_config: StoreConfig) -> None:
    result = check_data_store(s3_store_config)
    assert result.ok, result.error
    assert result.summary.startswith(s3_store_config.data_uri)
    wrong = StoreConfig(
        data_uri=s3_store_config.data_uri,
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_access_key_id=s3_store_config.s3_access_key_id,
        s3_secret_access_key=s3_store_config.s3_secret_access_key,
    )
    failed = check_data_store(wrong)
    assert not failed.ok and failed.error
    assert s3_store_config.s3_secret_access_key not in json.dumps(failed.__dict__)


def test_mlflow_store_missing_existing_and_unreachable(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    missing = check_mlflow(f"sqlite:///{database}")
    assert not missing.ok and "does not exist yet" in missing.summary
    assert not database.exists()  # checking never creates a store
    client(f"sqlite:///{database}").create_experiment("credit-risk", artifact_location=str(tmp_path / "art"))
    found = check_mlflow(f"sqlite:///{database}")
    assert found.ok and "credit-risk" in found.details[0]
    refused = check_mlflow(f"http://user:pw@127.0.0.1:{free_port()}", timeout=2)
    assert not refused.ok
    assert "Connection refused" in refused.error and "pw" not in refused.error
    assert refused.duration_s < 3


def test_github_check_reads_the_repository_and_never_shows_the_token(github_api: str) -> None:
    ok = check_github(GitHubConfig("org/studio", github_api, TOKEN))
    assert ok.ok and ok.summary == "repository org/studio is reachable"
    assert ok.details == ("default branch: main", "visibility: private")
    bad_token = check_github(GitHubConfig("org/studio", github_api, "wrong"))
    assert not bad_token.ok and bad_token.error == "HTTP 401 Bad credentials: the token was refused"
    unknown = check_github(GitHubConfig("org/elsewhere", github_api, TOKEN))
    assert "HTTP 404 Not Found: repository org/elsewhere not found" in unknown.error
    unreachable = check_github(
        GitHubConfig("org/studio", f"http://127.0.0.1:{free_port()}", TOKEN), timeout=2
    )
    assert not unreachable.ok and "unreachable" in unreachable.error
    for result in (ok, bad_token, unknown, unreachable):
        assert TOKEN not in json.dumps(result.__dict__) and TOKEN not in repr(result)
    assert TOKEN not in repr(GitHubConfig("org/studio", github_api, TOKEN))
    assert check_github(GitHubConfig(None)).summary == "no repository configured"


def test_github_settings_are_validated() -> None:
    config = github_config({"MMS_GITHUB_REPOSITORY": "org/studio", "MMS_GITHUB_TOKEN": " t "})
    assert (config.repository, config.api_url, config.token) == ("org/studio", "https://api.github.com", "t")
    with pytest.raises(InvalidInput, match="owner/name"):
        github_config({"MMS_GITHUB_REPOSITORY": "not a repo"})
    with pytest.raises(InvalidInput, match="http"):
        github_config({"MMS_GITHUB_API_URL": "ftp://example"})


def test_redact_url_masks_passwords_and_queries() -> None:
    assert integrations.redact_url("postgresql://u:p@h/db") == "postgresql://u:••••••@h/db"
    assert integrations.redact_url("https://h/x?token=abc") == "https://h/x?••••••"
    assert integrations.redact_url("/local/path") == "/local/path"
    assert integrations.redact_url("sqlite:////var/lib/mms/mlflow.db") == "sqlite:////var/lib/mms/mlflow.db"
    assert integrations.redact_url("redis://:pw@cache:6379/0") == "redis://:••••••@cache:6379/0"


# --------------------------------------------------------------------------- the page's callbacks


@pytest.fixture
def github_configured(monkeypatch: pytest.MonkeyPatch, github_api: str) -> None:
    """The studio's GitHub settings: repository ``org/studio`` and :data:`TOKEN`, on the fake API."""
    monkeypatch.setenv("MMS_GITHUB_REPOSITORY", "org/studio")
    monkeypatch.setenv("MMS_GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("MMS_GITHUB_API_URL", github_api)


@pytest.mark.usefixtures("github_configured")
def test_page_shows_configuration_with_secrets_masked(studio: Studio) -> None:
    with signed_in(studio, "production"):
        store, mlflow, github = cb.show_integrations("integration-config-data-store")
        assert cb.checks_hidden("integration-checking-data-store") == (False, False, False)
    assert str(studio.settings.data_uri) in shown(store)
    assert "org/studio" in shown(github) and "configured" in shown(github)
    assert TOKEN not in json.dumps([shown(store), shown(mlflow), shown(github)])
    with signed_in(studio, "mlengineer"), pytest.raises(PreventUpdate):
        cb.show_integrations("integration-config-data-store")


@pytest.mark.usefixtures("github_configured")
def test_checks_run_for_manage_integrations_and_are_audited(studio: Studio) -> None:
    with signed_in(studio, "production"):
        store = cb.check_data_store_clicked(1)
        mlflow = cb.check_mlflow_clicked(1)
        github = cb.check_github_clicked(1)
    assert store.color == "success" and "Connected" in shown(store)[0]
    assert mlflow.color == "danger" and "does not exist yet" in shown(mlflow)[0]
    assert github.color == "success" and "org/studio" in shown(github)[0]
    with studio.db() as session:
        entries = session.execute(
            select(AuditEntry.actor, AuditEntry.target, AuditEntry.details).where(
                AuditEntry.action == "integration.check"
            )
        ).all()
    assert [(actor, target) for actor, target, _ in entries] == [
        ("production", "integration:data_store"),
        ("production", "integration:mlflow"),
        ("production", "integration:github"),
    ]
    assert TOKEN not in json.dumps([details for *_, details in entries])


@pytest.mark.parametrize("username", ["mlengineer", "monitoring", "sponsor1"])
def test_roles_without_manage_integrations_cannot_check(studio: Studio, username: str) -> None:
    with studio.db() as session:
        before = len(
            session.scalars(select(AuditEntry.id).where(AuditEntry.action == "integration.check")).all()
        )
    with signed_in(studio, username):
        with pytest.raises(PreventUpdate):  # none of them may even see the page
            cb.checks_hidden("integration-checking-data-store")
        for call in (cb.check_data_store_clicked, cb.check_mlflow_clicked, cb.check_github_clicked):
            with pytest.raises(PreventUpdate):
                call(1)
    with studio.db() as session:
        after = len(
            session.scalars(select(AuditEntry.id).where(AuditEntry.action == "integration.check")).all()
        )
    assert after == before


# --------------------------------------------------------------------------- GitHub webhooks

REPOSITORY = "example-org/credit-models"
WEBHOOK_SECRET = "webhook-secret-typed-once-1234"


def _webhook_state(studio: Studio, username: str) -> tuple[Any, ...]:
    with signed_in(studio, username):
        return cb.show_github_webhooks(cb.WebhookID.REPOSITORIES, 0, None)


def _stored(studio: Studio) -> dict[str, tuple[str, str]]:
    with studio.db() as session:
        rows = session.scalars(select(GithubIntegration)).all()
        return {row.repository: (row.project.slug, row.secret_encrypted) for row in rows}


def _clear_webhooks(studio: Studio) -> None:
    with studio.db(write=True) as session:
        for row in session.scalars(select(GithubIntegration)).all():
            session.delete(row)


def test_every_webhook_id_is_on_the_page(studio: Studio) -> None:
    page = importlib.import_module("pages.integrations")
    assert page.WebhookID is cb.WebhookID  # one declaration (app.components.ids.integrations)
    on_page = {name: value for name, value in vars(page.WebhookID).items() if name.isupper()}
    with signed_in(studio, "admin"):
        layout = json.dumps(page.layout(), cls=PlotlyJSONEncoder)
    assert all(f'"{value}"' in layout for value in on_page.values())


def test_production_configures_a_repository_and_the_secret_is_never_shown(studio: Studio) -> None:
    _clear_webhooks(studio)
    url, table, manage_hidden, projects, project, removable, _ = _webhook_state(studio, "production")
    assert url == "http://localhost/api/v1/integrations/github/webhook"
    assert "No repository is configured" in shown(table)[0]
    assert manage_hidden is False
    assert [option["value"] for option in projects] == ["credit-risk", "demand-forecast"]
    assert project == "credit-risk" and removable == []

    with signed_in(studio, "production"):
        message, secret_field, refresh = cb.save_github_clicked(
            1, "credit-risk", f" {REPOSITORY} ", WEBHOOK_SECRET, 3
        )
    assert message.color == "success", shown(message)
    assert f"Webhooks of {REPOSITORY} are accepted for project credit-risk" in shown(message)[0]
    assert "secret set on" in shown(message)[0]
    assert (secret_field, refresh) == ("", 4)  # the field is emptied, the list refreshed

    project_slug, encrypted = _stored(studio)[REPOSITORY]
    assert project_slug == "credit-risk" and WEBHOOK_SECRET not in encrypted
    assert github.SecretBox(studio.settings.secret_key).decrypt(encrypted) == WEBHOOK_SECRET
    for username in ("production", "admin"):
        state = _webhook_state(studio, username)
        texts_shown = shown(state[1])
        assert REPOSITORY in texts_shown and "credit-risk" in texts_shown
        assert any(text.startswith("secret set on ") and text.endswith(" UTC") for text in texts_shown)
        assert state[5] == [{"label": f"{REPOSITORY} (credit-risk)", "value": REPOSITORY}]
        everything = json.dumps(state, cls=PlotlyJSONEncoder)
        assert WEBHOOK_SECRET not in everything and encrypted not in everything
    with studio.db() as session:
        details = session.scalars(
            select(AuditEntry.details).where(AuditEntry.action == "github.configure")
        ).all()
    assert details and all(WEBHOOK_SECRET not in entry for entry in details)


def test_bad_repository_or_secret_is_refused_with_the_jobs_message(studio: Studio) -> None:
    _clear_webhooks(studio)
    with signed_in(studio, "admin"):
        bad_name, kept, unchanged = cb.save_github_clicked(1, "credit-risk", "not a repo", WEBHOOK_SECRET, 0)
        short, _, _ = cb.save_github_clicked(1, "credit-risk", REPOSITORY, "too-short", 0)
        no_project, _, _ = cb.save_github_clicked(1, None, REPOSITORY, WEBHOOK_SECRET, 0)
    assert bad_name.color == "danger" and "must be owner/name" in shown(bad_name)[0]
    assert kept is dash.no_update and unchanged is dash.no_update  # what was typed stays to be corrected
    assert short.color == "danger" and "16 to 1024 characters" in shown(short)[0]
    assert no_project.color == "danger" and "Choose the project" in shown(no_project)[0]
    assert _stored(studio) == {}


def test_remove_stops_accepting_the_repository(studio: Studio) -> None:
    _clear_webhooks(studio)
    with signed_in(studio, "production"):
        cb.save_github_clicked(1, "demand-forecast", REPOSITORY, WEBHOOK_SECRET, 0)
        removed, refresh = cb.remove_github_confirmed(1, REPOSITORY, 5)
        again, unchanged = cb.remove_github_confirmed(2, REPOSITORY, 6)
    assert removed.color == "success" and "no longer accepted" in shown(removed)[0]
    assert refresh == 6 and _stored(studio) == {}
    assert again.color == "danger" and "is not configured" in shown(again)[0]
    assert unchanged is dash.no_update


def test_managing_a_repository_needs_manage_integrations_on_its_project(
    studio: Studio, tmp_path: Path
) -> None:
    _clear_webhooks(studio)
    with studio.db(write=True) as session:
        admin = actor_for(session, get_user(session, "admin").id)
        if get_user(session, "ops-one-project") is None:
            user = create_user(session, admin, "ops-one-project", "ops-one-project-password")
            grant_role(session, admin, user, "demand-forecast", Role.PRODUCTION_TEAM)
            grant_role(session, admin, user, "credit-risk", Role.ML_ENGINEER)
    with signed_in(studio, "admin"):
        cb.save_github_clicked(1, "credit-risk", REPOSITORY, WEBHOOK_SECRET, 0)
    state = _webhook_state(studio, "ops-one-project")
    assert [option["value"] for option in state[3]] == ["demand-forecast"]
    assert state[5] == []  # the credit-risk repository is not theirs to remove
    with signed_in(studio, "ops-one-project"):
        refused, _, _ = cb.save_github_clicked(1, "credit-risk", "example-org/other", WEBHOOK_SECRET, 0)
        moved, _, _ = cb.save_github_clicked(1, "demand-forecast", REPOSITORY, WEBHOOK_SECRET, 0)
        not_removed, _ = cb.remove_github_confirmed(1, REPOSITORY, 0)
    assert (
        refused.color == "danger"
        and "may not manage_integrations on project 'credit-risk'" in shown(refused)[0]
    )
    assert moved.color == "danger" and "credit-risk" in shown(moved)[0]
    assert not_removed.color == "danger"
    assert set(_stored(studio)) == {REPOSITORY} and _stored(studio)[REPOSITORY][0] == "credit-risk"


@pytest.mark.parametrize("username", ["mlengineer", "monitoring", "sponsor1"])
def test_roles_without_integrations_rights_cannot_see_or_change_webhooks(
    studio: Studio, username: str
) -> None:
    _clear_webhooks(studio)
    with signed_in(studio, username):
        with pytest.raises(PreventUpdate):
            cb.show_github_webhooks(cb.WebhookID.REPOSITORIES, 0, None)
        with pytest.raises(PreventUpdate):
            cb.save_github_clicked(1, "credit-risk", REPOSITORY, WEBHOOK_SECRET, 0)
        with pytest.raises(PreventUpdate):
            cb.remove_github_confirmed(1, REPOSITORY, 0)
    assert _stored(studio) == {}


def test_forged_save_request_is_refused_by_the_guard(studio: Studio) -> None:
    _clear_webhooks(studio)
    client = studio.signed_in("mlengineer", "10.9.0.1")
    body = callback_request(
        "..integration-github-message.children...integration-github-secret.value..."
        "integration-github-refresh.data..",
        [
            {"id": cb.WebhookID.MESSAGE, "property": "children"},
            {"id": cb.WebhookID.SECRET, "property": "value"},
            {"id": cb.WebhookID.REFRESH, "property": "data"},
        ],
        [{"id": cb.WebhookID.SAVE, "property": "n_clicks", "value": 1}],
    )
    body["state"] = [
        {"id": cb.WebhookID.PROJECT, "property": "value", "value": "credit-risk"},
        {"id": cb.WebhookID.REPOSITORY, "property": "value", "value": REPOSITORY},
        {"id": cb.WebhookID.SECRET, "property": "value", "value": WEBHOOK_SECRET},
        {"id": cb.WebhookID.REFRESH, "property": "data", "value": 0},
    ]
    assert body["output"] in studio.app.callback_map
    response = client.post("/_dash-update-component", json=body, headers=csrf_header(client))
    assert response.status_code == 403
    assert _stored(studio) == {}
