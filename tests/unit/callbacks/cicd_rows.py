"""Rows the CI/CD page shows, written straight into a metadata database for its tests.

A deployment needs the promotion request it came from; its history and its last
analysis are ``deployment_events`` rows, exactly as :mod:`jobs.deploy` writes them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jobs.db.api_models import WorkflowRun
from jobs.db.deployments import DeploymentEvent
from jobs.db.governance import APPROVED, Deployment, PromotionApproval, PromotionRequest
from jobs.db.models import utcnow
from jobs.projects import project_by_slug
from jobs.users import get_user

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
XSS = "<img src=x onerror=alert(1)>"

PASSED_ANALYSIS = [
    {
        "metric": "success_rate",
        "canary": 0.998,
        "stable": 0.999,
        "threshold": 0.99,
        "passed": True,
        "detail": "",
    },
    {"metric": "latency_p99_ms", "canary": 212.0, "stable": 198.0, "threshold": 500.0, "passed": True},
]
FAILED_ANALYSIS = [
    {"metric": "success_rate", "canary": 0.93, "stable": 0.999, "threshold": 0.99, "passed": False},
    {"metric": "latency_p99_ms", "canary": 180.0, "stable": 190.0, "threshold": 500.0, "passed": True},
]


def add_request(
    session: Session,
    project: str,
    model: str,
    version: str,
    environment: str,
    *,
    requested_by: str = "mlengineer",
    approvers: tuple[str, ...] = (),
    status: str = APPROVED,
    required: int = 1,
) -> PromotionRequest:
    """An approved (by default) promotion request, with one approval per name in ``approvers``."""
    now = utcnow()
    request = PromotionRequest(
        project_id=project_by_slug(session, project).id,
        model=model,
        version=version,
        run_id=f"run{version}",
        artifact_digest="0" * 64,
        environment=environment,
        justification="better recall",
        requested_by_id=get_user(session, requested_by).id,
        version_creator=requested_by,
        status=status,
        required_approvals=required,
        created_at=now,
        expires_at=now + timedelta(days=7),
    )
    session.add(request)
    session.flush()
    for name in approvers:
        session.add(
            PromotionApproval(
                request_id=request.id,
                approver_id=get_user(session, name).id,
                comment="ok",
                version=version,
                run_id=request.run_id,
                artifact_digest=request.artifact_digest,
            )
        )
    session.flush()
    return request


def add_deployment(
    session: Session,
    project: str,
    model: str,
    version: str,
    environment: str,
    *,
    status: str = "running",
    strategy: str = "canary",
    current_step: int | None = 1,
    canary_weight: int = 2500,
    previous_version: str | None = "1",
    reason: str | None = None,
    analysis: list[dict[str, Any]] | None = None,
    at: datetime | None = None,
) -> int:
    """A deployment (with its request) in the given state; ``analysis`` adds an ``analysis`` event."""
    request = add_request(session, project, model, version, environment)
    at = at or utcnow()
    deployment = Deployment(
        request_id=request.id,
        project_id=request.project_id,
        model=model,
        version=version,
        run_id=request.run_id,
        artifact_digest=request.artifact_digest,
        environment=environment,
        strategy=strategy,
        status=status,
        steps="10,25,50,100" if strategy == "canary" else None,
        bake_seconds=300,
        current_step=current_step,
        canary_weight=canary_weight,
        previous_version=previous_version,
        reason=reason,
        created_at=at,
        updated_at=at,
        started_at=at if status != "queued" else None,
        step_started_at=at,
    )
    session.add(deployment)
    session.flush()
    events = [("queued", "sponsor1", {}), ("started", "system", {"strategy": strategy})]
    if analysis is not None:
        events.append(("analysis", "system", {"step": current_step, "results": analysis}))
    if reason:
        events.append((status, "system", {"reason": reason}))
    for offset, (kind, actor, details) in enumerate(events):
        session.add(
            DeploymentEvent(
                deployment_id=deployment.id,
                at=at + timedelta(seconds=offset),
                kind=kind,
                actor=actor,
                details=details,
            )
        )
    session.flush()
    return deployment.id


def add_run(
    session: Session,
    project: str,
    github_run_id: int,
    *,
    branch: str = "main",
    sha: str = SHA,
    status: str = "completed",
    conclusion: str | None = "success",
    versions: list[dict[str, str]] | None = None,
    name: str = "Deploy to dev",
    html_url: str | None = None,
    repository: str = "example-org/credit-models",
) -> int:
    """A workflow run as the webhook receiver stores it."""
    now = utcnow()
    run = WorkflowRun(
        project_id=project_by_slug(session, project).id,
        repository=repository,
        github_run_id=github_run_id,
        run_attempt=1,
        workflow_name=name,
        event="push",
        head_sha=sha,
        head_branch=branch,
        status=status,
        conclusion=conclusion,
        html_url=html_url
        if html_url is not None
        else f"https://github.com/{repository}/actions/runs/{github_run_id}",
        run_created_at=now,
        run_updated_at=now,
        received_at=now,
        model_versions=versions or [],
    )
    session.add(run)
    session.flush()
    return run.id
