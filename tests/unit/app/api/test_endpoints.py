"""Every endpoint as every role: allowed exactly where the permission matrix says so, 403 elsewhere.

The expectation is derived from ``jobs.permissions.MATRIX`` (through ``has_permission``)
for the project each request touches, plus the approvals rule that only model
sponsors decide (the admin role alone is not a sponsor). State-changing requests
act on objects made for that very call, so the order of the cases does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.api.routing import TOKEN
from app.api.views import API
from jobs.db.governance import Deployment
from jobs.deploy import pause_deployment
from jobs.permissions import Permission, Role, has_permission
from tests.unit.app.api.world import MODEL, PROJECT, USERS, ApiWorld

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Case:
    """One request: method, path, body and the status it answers when allowed."""

    method: str
    path: str
    body: Any = None
    success: int = 200


def _approval_body(world: ApiWorld) -> dict[str, str]:
    info = world.version_info("1")
    return {"version": "1", "run_id": info.run_id, "artifact_digest": info.artifact_digest, "comment": "ok"}


def _approve(world: ApiWorld) -> Case:
    request = world.pending_request("prod")
    return Case("POST", f"/api/v1/promotions/{request.id}/approve", _approval_body(world))


def _reject(world: ApiWorld) -> Case:
    request = world.pending_request("prod")
    return Case("POST", f"/api/v1/promotions/{request.id}/reject", {"comment": "not yet"})


def _rollback(world: ApiWorld) -> Case:
    _first, latest = world.dev_deployments(2)
    return Case("POST", f"/api/v1/deployments/{latest}/rollback", {"reason": "latency regression"}, 202)


def _paused_deployment(world: ApiWorld) -> int:
    (deployment_id,) = world.dev_deployments(1)
    pause_deployment(world.sessions, world.actor("admin"), deployment_id, "hold")
    return deployment_id


def _deployment_action(action: str, body: dict[str, str], success: int) -> Callable[[ApiWorld], Case]:
    def case(world: ApiWorld) -> Case:
        if action in ("promote", "resume"):
            deployment_id = _paused_deployment(world)
        else:
            (deployment_id,) = world.dev_deployments(1)
        return Case("POST", f"/api/v1/deployments/{deployment_id}/{action}", body, success)

    return case


def _metrics(world: ApiWorld) -> Case:
    since = world.metrics_since.isoformat().replace("+00:00", "Z")
    return Case("GET", f"/api/v1/metrics?project={PROJECT}&model={MODEL}&since={since}")


CASES: dict[str, Callable[[ApiWorld], Case]] = {
    "list_projects": lambda w: Case("GET", "/api/v1/projects"),
    "get_project": lambda w: Case("GET", f"/api/v1/projects/{PROJECT}"),
    "list_model_versions": lambda w: Case("GET", f"/api/v1/projects/{PROJECT}/models/{MODEL}/versions"),
    "list_promotions": lambda w: Case("GET", f"/api/v1/promotions?project={PROJECT}"),
    "create_promotion": lambda w: Case(
        "POST",
        "/api/v1/promotions",
        {
            "project": PROJECT,
            "model": MODEL,
            "version": "1",
            "target_environment": "prod",
            "justification": "evidence attached",
            "requested_from": "https://github.com/example-org/credit-models/actions/runs/1",
            "supersede": True,
        },
        201,
    ),
    "get_promotion": lambda w: Case("GET", f"/api/v1/promotions/{w.staging_request_id}"),
    "approve_promotion": _approve,
    "reject_promotion": _reject,
    "list_deployments": lambda w: Case("GET", f"/api/v1/deployments?project={PROJECT}"),
    "create_deployment": lambda w: Case(
        "POST",
        "/api/v1/deployments",
        {"project": PROJECT, "model": MODEL, "environment": "staging", "version": "2"},
        200,  # approved for staging already: its queued deployment is returned
    ),
    "get_deployment": lambda w: Case("GET", f"/api/v1/deployments/{w.staging_deployment_id}"),
    "rollback_deployment": _rollback,
    # Queued deployments are paused or aborted at once (200); promote/resume wait for the job (202).
    "pause_deployment": _deployment_action("pause", {}, 200),
    "abort_deployment": _deployment_action("abort", {"reason": "wrong version"}, 200),
    "promote_deployment": _deployment_action("promote", {"reason": "looks good"}, 202),
    "resume_deployment": _deployment_action("resume", {}, 202),
    "list_alerts": lambda w: Case("GET", f"/api/v1/alerts?project={PROJECT}"),
    "acknowledge_alert": lambda w: Case(
        "POST", f"/api/v1/alerts/{w.take_alert()}/acknowledge", {"comment": "looking"}
    ),
    "query_metrics": _metrics,
    "list_audit": lambda w: Case("GET", "/api/v1/audit?limit=5"),
    "verify_audit": lambda w: Case("POST", "/api/v1/audit/verify"),
    "list_workflow_runs": lambda w: Case("GET", f"/api/v1/workflow-runs?project={PROJECT}"),
}
TOKEN_OPERATIONS = {op.operation_id: op for op in API.operations if op.auth == TOKEN}
DECIDERS = {"approve_promotion", "reject_promotion"}


def test_every_token_operation_has_a_case() -> None:
    assert set(CASES) == set(TOKEN_OPERATIONS)


def _allowed(world: ApiWorld, operation_id: str, user: str) -> bool:
    actor = world.actor(user)
    permission = TOKEN_OPERATIONS[operation_id].permission
    if permission in (Permission.VIEW_AUDIT, Permission.VERIFY_AUDIT):
        allowed = has_permission(actor, permission)  # the audit log is not per project
    else:
        allowed = has_permission(actor, permission, PROJECT)
    if operation_id in DECIDERS:
        allowed = allowed and Role.MODEL_SPONSOR in actor.roles.get(PROJECT, frozenset())
    return allowed


def _visible_projects(world: ApiWorld, user: str, permission: Permission) -> set[str]:
    actor = world.actor(user)
    return {slug for slug in ("credit-risk", "demand-forecast") if has_permission(actor, permission, slug)}


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("operation_id", sorted(CASES))
def test_each_endpoint_answers_each_role_as_the_matrix_says(
    world: ApiWorld, operation_id: str, user: str
) -> None:
    allowed = _allowed(world, operation_id, user)
    if operation_id == "acknowledge_alert" and not allowed:
        case = Case("POST", f"/api/v1/alerts/{world.alert_ids[0]}/acknowledge", {"comment": "x"})
    else:
        case = CASES[operation_id](world)
    response = world.call(user, case.method, case.path, case.body)
    if not allowed:
        assert response.status_code == 403, (response.status_code, response.json)
        assert response.json["error"]["code"] == "forbidden"
        return
    assert response.status_code == case.success, response.json
    payload = response.json
    if "items" in payload:
        permission = TOKEN_OPERATIONS[operation_id].permission
        projects = {item["project"] for item in payload["items"] if "project" in item}
        assert projects <= _visible_projects(world, user, permission)


def test_a_sponsor_approval_counts_toward_the_quorum_and_a_rejection_closes(world: ApiWorld) -> None:
    request = world.pending_request("prod")
    body = _approval_body(world)
    first = world.call("sponsor1", "POST", f"/api/v1/promotions/{request.id}/approve", body)
    assert first.status_code == 200
    assert (first.json["approvals"], first.json["required"], first.json["promotion"]["status"]) == (
        1,
        2,
        "pending",
    )
    again = world.call("sponsor1", "POST", f"/api/v1/promotions/{request.id}/approve", body)
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    # sponsor2 has no token in the world yet: give it one.
    from jobs import tokens

    with world.studio.db(write=True) as session:
        secret = tokens.create_token(session, world.actor("sponsor2"), "second sponsor").secret
    mismatch = world.call(
        None, "POST", f"/api/v1/promotions/{request.id}/approve", {**body, "version": "9"}, token=secret
    )
    assert mismatch.status_code == 409 and "version" in mismatch.json["error"]["message"]
    second = world.call(None, "POST", f"/api/v1/promotions/{request.id}/approve", body, token=secret)
    assert second.status_code == 200 and second.json["promotion"]["status"] == "approved"
    deployment_id = second.json["promotion"]["deployment_id"]
    assert deployment_id is not None
    polled = world.call("mlengineer", "GET", f"/api/v1/promotions/{request.id}")
    assert polled.json["status"] == "approved" and polled.json["deployment_id"] == deployment_id

    other = world.pending_request("prod")
    rejected = world.call(
        "sponsor1", "POST", f"/api/v1/promotions/{other.id}/reject", {"comment": "no evidence"}
    )
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    late = world.call("sponsor1", "POST", f"/api/v1/promotions/{other.id}/approve", body)
    assert late.status_code == 409


def test_an_overdue_pending_request_reads_as_expired(world: ApiWorld) -> None:
    from datetime import timedelta

    from jobs.approvals import RequestPromotion
    from jobs.db.models import utcnow

    request = RequestPromotion(
        world.actor("mlengineer"),
        PROJECT,
        "expiring",
        "1",
        "prod",
        "will expire",
        version_info=world.version_info("1"),
        expires_in=timedelta(seconds=1),
        now=utcnow() - timedelta(minutes=1),
    ).run(world.sessions)
    polled = world.call("mlengineer", "GET", f"/api/v1/promotions/{request.id}")
    assert polled.json["status"] == "expired"
    listed = world.call("mlengineer", "GET", f"/api/v1/promotions?project={PROJECT}&status=expired&limit=200")
    assert request.id in [item["id"] for item in listed.json["items"]]
    pending = world.call(
        "mlengineer", "GET", f"/api/v1/promotions?project={PROJECT}&status=pending&limit=200"
    )
    assert request.id not in [item["id"] for item in pending.json["items"]]


def test_create_promotion_reads_the_version_from_the_registry_and_refuses_a_second_pending(
    world: ApiWorld,
) -> None:
    body = {
        "project": PROJECT,
        "model": MODEL,
        "version": "2",
        "target_environment": "prod",
        "justification": "drift fixed",
        "requested_from": "https://github.com/example-org/credit-models/actions/runs/99",
        "supersede": True,
    }
    created = world.call("mlengineer", "POST", "/api/v1/promotions", body)
    assert created.status_code == 201
    promotion = created.json
    assert (promotion["status"], promotion["version"]) == ("pending", "2")
    assert promotion["run_id"] == world.registered["2"].run_id
    assert promotion["artifact_digest"] == world.registered["2"].artifact_digest
    assert promotion["justification"].endswith(
        "Requested from: https://github.com/example-org/credit-models/actions/runs/99"
    )
    duplicate = world.call("mlengineer", "POST", "/api/v1/promotions", {**body, "supersede": False})
    assert duplicate.status_code == 409 and str(promotion["id"]) in duplicate.json["error"]["message"]
    unknown = world.call("mlengineer", "POST", "/api/v1/promotions", {**body, "version": "77"})
    assert unknown.status_code == 422 and "does not exist" in unknown.json["error"]["message"]
    missing_project = world.call(
        "admin", "POST", "/api/v1/promotions", {**body, "project": "no-such-project"}
    )
    assert missing_project.status_code == 404


def test_deploying_a_commit_to_dev_resolves_its_version_and_is_idempotent(world: ApiWorld) -> None:
    from jobs import tokens

    sha = "9fceb02d0ae598e95dc970b74767f19372d61af8"
    body = {"project": PROJECT, "model": MODEL, "git_sha": sha, "environment": "dev"}
    # DEPLOY alone is not enough for dev: it opens a promotion request, which needs request_promotion.
    refused = world.call("production", "POST", "/api/v1/deployments", body)
    assert refused.status_code == 403 and "request_promotion" in refused.json["error"]["message"]
    with world.studio.db(write=True) as session:
        from jobs.users import create_user, grant_role

        admin = world.actor("admin")
        create_user(session, admin, "ci-deployer", "ci-deployer-password")
        grant_role(session, admin, "ci-deployer", PROJECT, Role.ML_ENGINEER)
        grant_role(session, admin, "ci-deployer", PROJECT, Role.PRODUCTION_TEAM)
    with world.studio.db(write=True) as session:
        secret = tokens.create_token(session, world.actor("ci-deployer"), "deploy-dev").secret
    first = world.call(None, "POST", "/api/v1/deployments", body, token=secret)
    assert first.status_code == 201, first.json
    deployed = first.json
    assert (deployed["model"], deployed["version"], deployed["environment"], deployed["status"]) == (
        MODEL,
        "2",
        "dev",
        "queued",
    )
    again = world.call(None, "POST", "/api/v1/deployments", body, token=secret)
    assert again.status_code == 200 and again.json["id"] == deployed["id"]
    status = world.call(None, "GET", f"/api/v1/deployments/{deployed['id']}", token=secret)
    assert status.json["status"] == "queued"
    unknown_commit = world.call(
        None, "POST", "/api/v1/deployments", {**body, "git_sha": "0" * 40}, token=secret
    )
    assert unknown_commit.status_code == 422 and unknown_commit.json["error"]["code"] == "unknown_version"
    staging = {"project": PROJECT, "model": MODEL, "version": "1", "environment": "staging"}
    needs_approval = world.call(None, "POST", "/api/v1/deployments", staging, token=secret)
    assert needs_approval.status_code == 409
    assert "POST /api/v1/promotions" in needs_approval.json["error"]["message"]


def test_rollback_restores_the_previous_version_once(world: ApiWorld) -> None:
    first, latest = world.dev_deployments(2)
    older = world.call("production", "POST", f"/api/v1/deployments/{first}/rollback", {"reason": "x"})
    assert older.status_code == 409 and "not the newest" in older.json["error"]["message"]
    rolled = world.call(
        "production", "POST", f"/api/v1/deployments/{latest}/rollback", {"reason": "errors up"}
    )
    assert rolled.status_code == 202
    assert rolled.json["deployment"]["status"] == "rollback_queued"
    assert rolled.json["rollback_to"]["id"] == first and rolled.json["rollback_to"]["version"] == "1"
    twice = world.call("production", "POST", f"/api/v1/deployments/{latest}/rollback", {"reason": "again"})
    assert twice.status_code == 409
    (only,) = world.dev_deployments(1)
    nothing = world.call("production", "POST", f"/api/v1/deployments/{only}/rollback", {"reason": "x"})
    assert nothing.status_code == 409 and "no earlier deployment" in nothing.json["error"]["message"]
    with world.studio.db() as session:
        assert session.get(Deployment, first).status == "queued"
    audit = world.call("monitoring", "GET", "/api/v1/audit?action=deployment.rollback_queued&limit=1").json
    assert audit["items"][0]["details"]["to_version"] == "1" and audit["items"][0]["actor"] == "production"


def test_manual_deployment_actions_follow_the_deployment_job(world: ApiWorld) -> None:
    (queued,) = world.dev_deployments(1)
    paused = world.call("production", "POST", f"/api/v1/deployments/{queued}/pause", {})
    assert paused.status_code == 200, paused.json
    assert paused.json["deployment"]["status"] == "paused" and paused.json["requested_action"] is None
    assert set(paused.json["allowed_actions"]) == {"promote", "resume", "abort", "rollback"}
    resumed = world.call("production", "POST", f"/api/v1/deployments/{queued}/resume", {"reason": "go on"})
    assert resumed.status_code == 202, resumed.json
    assert resumed.json["requested_action"] == "resume" and resumed.json["allowed_actions"] == []
    # One request waits at a time: a second is a conflict until the job carries the first out.
    again = world.call("production", "POST", f"/api/v1/deployments/{queued}/promote", {})
    assert again.status_code == 409 and "not possible now" in again.json["error"]["message"]
    (other,) = world.dev_deployments(1)
    no_reason = world.call("production", "POST", f"/api/v1/deployments/{other}/abort", {"reason": "  "})
    assert no_reason.status_code == 422 and "reason" in no_reason.json["error"]["message"]
    missing = world.call("production", "POST", f"/api/v1/deployments/{other}/abort", {})
    assert missing.status_code == 422
    aborted = world.call("production", "POST", f"/api/v1/deployments/{other}/abort", {"reason": "bad build"})
    assert aborted.status_code == 200 and aborted.json["deployment"]["status"] == "aborted"
    assert world.call("production", "POST", "/api/v1/deployments/999999/pause", {}).status_code == 404
    audit = world.call("monitoring", "GET", "/api/v1/audit?action=deployment.resume&limit=1").json
    assert audit["items"][0]["actor"] == "production"
    assert audit["items"][0]["target"] == f"deployment:{queued}"


def test_acknowledging_an_alert_twice_is_a_conflict(world: ApiWorld) -> None:
    alert_id = world.take_alert()
    first = world.call("monitoring", "POST", f"/api/v1/alerts/{alert_id}/acknowledge", {"comment": "on it"})
    assert first.status_code == 200 and first.json["state"] == "acknowledged"
    assert first.json["acknowledge_comment"] == "on it"
    second = world.call("production", "POST", f"/api/v1/alerts/{alert_id}/acknowledge", {})
    assert second.status_code == 409
    missing = world.call("monitoring", "POST", "/api/v1/alerts/999999/acknowledge", {})
    assert missing.status_code == 404


def test_metrics_answer_rows_of_the_window_or_insufficient_data(world: ApiWorld) -> None:
    since = world.metrics_since.isoformat().replace("+00:00", "Z")
    rows = world.call(
        "sponsor1", "GET", f"/api/v1/metrics?project={PROJECT}&model={MODEL}&since={since}&limit=200"
    )
    assert rows.status_code == 200 and rows.json["status"] == "ok"
    items = rows.json["items"]
    assert len(items) == 24 and {item["metric"] for item in items} == {"psi"}
    assert items == sorted(items, key=lambda i: (i["window_start"], i["version"], i["column"], i["metric"]))
    one_column = world.call(
        "sponsor1", "GET", f"/api/v1/metrics?project={PROJECT}&model={MODEL}&since={since}&column=age"
    )
    assert [item["column"] for item in one_column.json["items"]] == ["age"] * 3
    empty = world.call("sponsor1", "GET", f"/api/v1/metrics?project={PROJECT}&model=unmonitored")
    assert empty.json["status"] == "insufficient_data" and empty.json["items"] == []
    too_wide = world.call(
        "sponsor1", "GET", f"/api/v1/metrics?project={PROJECT}&model={MODEL}&since=2020-01-01T00:00:00Z"
    )
    assert too_wide.status_code == 422 and "92 days" in too_wide.json["error"]["message"]
    backwards = world.call(
        "sponsor1",
        "GET",
        f"/api/v1/metrics?project={PROJECT}&model={MODEL}&since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
    )
    assert backwards.status_code == 422


def test_the_audit_chain_verifies_for_admins(world: ApiWorld) -> None:
    verified = world.call("admin", "POST", "/api/v1/audit/verify")
    assert verified.status_code == 200
    assert verified.json["ok"] is True and verified.json["checked"] > 10 and verified.json["reason"] == "ok"
