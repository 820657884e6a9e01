"""The GitHub webhook endpoint with recorded payloads: valid, forged, replayed, unknown, malformed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.api import API_EXTENSION_KEY
from app.api.auth import STATE_KEY, ApiState
from jobs import github
from jobs.db.api_models import GithubDelivery, GithubIntegration, WorkflowRun
from jobs.permissions import Forbidden
from jobs.users import InvalidInput
from tests.unit.app.api.world import GIT_SHA_V2, MODEL, PROJECT, ApiWorld, payload

pytestmark = pytest.mark.unit

REPOSITORY = "example-org/credit-models"
SECRET = "It's a Secret to Everybody"
WEBHOOK = "/api/v1/integrations/github/webhook"


@pytest.fixture(scope="module")
def configured(world: ApiWorld) -> ApiWorld:
    world.configure_github(REPOSITORY, SECRET)
    return world


def deliver(
    world: ApiWorld,
    event: str,
    body: bytes,
    *,
    secret: str = SECRET,
    delivery: str | None = None,
    signature: str | None = None,
    address: str = "10.4.0.1",
):
    headers = {
        github.EVENT_HEADER: event,
        github.DELIVERY_HEADER: delivery or str(uuid.uuid4()),
        github.SIGNATURE_HEADER: signature if signature is not None else github.signature_of(secret, body),
        "User-Agent": "GitHub-Hookshot/2f1a9c3",
    }
    return world.client(address).post(WEBHOOK, data=body, headers=headers, content_type="application/json")


def test_configuring_needs_manage_integrations_and_keeps_the_secret_encrypted(configured: ApiWorld) -> None:
    world = configured
    with pytest.raises(Forbidden, match="manage_integrations"):
        world.configure_github(REPOSITORY, "x" * 20, "mlengineer")
    with pytest.raises(InvalidInput, match="owner/name"):
        world.configure_github("not a repo", "x" * 20)
    with world.studio.db() as session:
        row = session.scalars(
            select(GithubIntegration).where(GithubIntegration.repository == REPOSITORY)
        ).one()
        assert SECRET not in row.secret_encrypted
        assert github.SecretBox(world.settings.secret_key).decrypt(row.secret_encrypted) == SECRET
        with pytest.raises(github.SecretUnreadable):
            github.SecretBox("another studio's secret key, 32+ chars long").decrypt(row.secret_encrypted)
        views = github.list_github(session, world.actor("production"))
        assert [(v.repository, v.project) for v in views] == [(REPOSITORY, PROJECT)]
        assert (
            not hasattr(views[0], "secret") and github.list_github(session, world.actor("mlengineer")) == []
        )
    audit = world.call("monitoring", "GET", "/api/v1/audit?action=github.configure&limit=1").json["items"][0]
    assert audit["details"]["secret"] == "replaced" and SECRET not in str(audit)


def test_a_signed_workflow_run_is_stored_and_linked_to_the_version_it_built(configured: ApiWorld) -> None:
    world = configured
    delivery = str(uuid.uuid4())
    response = deliver(world, "workflow_run", payload("workflow_run.completed"), delivery=delivery)
    assert response.status_code == 200, response.json
    result = response.json
    assert result["outcome"] == "stored" and result["delivery_id"] == delivery
    assert result["model_versions"] == [{"model": MODEL, "version": "2"}]
    runs = world.call("production", "GET", f"/api/v1/workflow-runs?head_sha={GIT_SHA_V2}").json["items"]
    (run,) = [r for r in runs if r["id"] == result["workflow_run_id"]]
    assert (run["project"], run["repository"], run["github_run_id"]) == (PROJECT, REPOSITORY, 7412580963)
    assert (run["status"], run["conclusion"], run["head_branch"]) == ("completed", "success", "main")
    assert run["html_url"] == "https://github.com/example-org/credit-models/actions/runs/7412580963"
    assert run["model_versions"] == [{"model": MODEL, "version": "2"}]

    # The same delivery again is a replay.
    replayed = deliver(world, "workflow_run", payload("workflow_run.completed"), delivery=delivery)
    assert replayed.status_code == 409 and replayed.json["error"]["code"] == "replayed_delivery"
    # An older event of the same run arriving late never moves it back.
    late = deliver(world, "workflow_run", payload("workflow_run.in_progress"))
    assert late.status_code == 200 and late.json["workflow_run_id"] == result["workflow_run_id"]
    with world.studio.db() as session:
        stored = session.get(WorkflowRun, result["workflow_run_id"])
        assert (stored.status, stored.conclusion) == ("completed", "success")


@pytest.mark.parametrize(
    ("what", "signature_of"),
    [
        ("wrong secret", lambda body: github.signature_of("guessed-secret-123", body)),
        ("tampered body", lambda body: github.signature_of(SECRET, body.replace(b"success", b"failure"))),
        ("sha1 style", lambda body: "sha1=" + github.signature_of(SECRET, body)[7:]),
        ("missing", lambda body: ""),
    ],
)
def test_a_forged_or_missing_signature_is_refused(configured: ApiWorld, what: str, signature_of) -> None:
    body = payload("workflow_run.completed")
    before = _count(configured, GithubDelivery)
    response = deliver(
        configured, "workflow_run", body, signature=signature_of(body), address=f"10.4.1.{len(what)}"
    )
    assert response.status_code == 401, what
    assert response.json["error"]["code"] == "unauthorized"
    assert _count(configured, GithubDelivery) == before


def test_an_unconfigured_repository_cannot_deliver(configured: ApiWorld) -> None:
    body = payload("push").replace(b"example-org/credit-models", b"example-org/someone-else")
    response = deliver(configured, "push", body, address="10.4.2.1")
    assert response.status_code == 401


def test_push_and_pull_request_are_recorded_and_other_events_ignored(configured: ApiWorld) -> None:
    world = configured
    pushed = deliver(world, "push", payload("push"))
    assert pushed.status_code == 200 and pushed.json["outcome"] == "accepted"
    opened = deliver(world, "pull_request", payload("pull_request.opened"))
    assert opened.status_code == 200 and opened.json["outcome"] == "accepted"
    pinged = deliver(world, "ping", payload("ping"))
    assert pinged.status_code == 202 and pinged.json["outcome"] == "ignored"
    with world.studio.db() as session:
        by_id = {
            d.delivery_id: d
            for d in session.scalars(select(GithubDelivery).where(GithubDelivery.repository == REPOSITORY))
        }
    assert by_id[pushed.json["delivery_id"]].summary == {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": GIT_SHA_V2,
        "commits": 1,
    }
    assert by_id[opened.json["delivery_id"]].summary["number"] == 42
    assert by_id[pinged.json["delivery_id"]].outcome == "ignored"


def test_malformed_deliveries_get_400(configured: ApiWorld) -> None:
    world = configured
    body = payload("push")
    no_event = world.client("10.4.3.1").post(
        WEBHOOK,
        data=body,
        headers={github.DELIVERY_HEADER: "d-1", github.SIGNATURE_HEADER: github.signature_of(SECRET, body)},
        content_type="application/json",
    )
    assert no_event.status_code == 400 and github.EVENT_HEADER in no_event.json["error"]["message"]
    no_repository = deliver(world, "push", b"{}")
    assert no_repository.status_code == 400
    not_json = deliver(world, "push", b"\x00\x01")
    assert not_json.status_code == 400
    bad_run = payload("workflow_run.completed").replace(GIT_SHA_V2.encode(), b"not-a-sha")
    assert deliver(world, "workflow_run", bad_run).status_code == 400


def test_a_secret_encrypted_under_another_key_answers_503(configured: ApiWorld) -> None:
    world = configured
    other = github.SecretBox("a different studio secret key, long enough")
    with world.studio.db(write=True) as session:
        row = session.scalars(
            select(GithubIntegration).where(GithubIntegration.repository == REPOSITORY)
        ).one()
        saved = row.secret_encrypted
        row.secret_encrypted = other.encrypt(SECRET)
    try:
        response = deliver(world, "push", payload("push"))
        assert (
            response.status_code == 503 and "configure the secret again" in response.json["error"]["message"]
        )
    finally:
        with world.studio.db(write=True) as session:
            session.scalars(
                select(GithubIntegration).where(GithubIntegration.repository == REPOSITORY)
            ).one().secret_encrypted = saved


def test_repeated_bad_signatures_from_one_address_are_rate_limited(configured: ApiWorld) -> None:
    world = configured
    api_app = world.studio.app.server.extensions[API_EXTENSION_KEY]
    saved = api_app.extensions[STATE_KEY]
    api_app.extensions[STATE_KEY] = ApiState()
    try:
        body = payload("push")
        statuses = [
            deliver(world, "push", body, signature="sha256=" + "0" * 64, address="10.4.9.9").status_code
            for _ in range(31)
        ]
        assert statuses[:30] == [401] * 30 and statuses[30] == 429
        assert deliver(world, "push", body, address="10.4.9.10").status_code == 200
    finally:
        api_app.extensions[STATE_KEY] = saved


def _count(world: ApiWorld, model: type) -> int:
    with world.studio.db() as session:
        return len(session.scalars(select(model.id)).all())


def test_the_github_command_line_configures_a_repository(
    configured: ApiWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.cli import build_parser

    world = configured
    monkeypatch.setenv("MMS_GITHUB_WEBHOOK_SECRET", "cli-configured-secret")
    parser = build_parser([("github", "jobs.github:register_cli")])
    args = parser.parse_args(
        ["github", "configure", "example-org/cli-repo", "--project", PROJECT, "--actor", "production"]
    )
    assert args.func(args, world.settings) == 0
    assert "example-org/cli-repo" in capsys.readouterr().out
    body = payload("push").replace(b"example-org/credit-models", b"example-org/cli-repo")
    assert deliver(world, "push", body, secret="cli-configured-secret").status_code == 200
    args = parser.parse_args(
        ["github", "configure", "example-org/x", "--project", PROJECT, "--actor", "datateam"]
    )
    with pytest.raises(Forbidden):
        args.func(args, world.settings)
