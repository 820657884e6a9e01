"""Deployment commands of the API: queue a version for an environment, roll a deployment back.

Flask-free, written like a job (acting user, permission re-checked in the
transaction, audit entry), on the ``deployments`` table of
:mod:`jobs.db.governance`. The deployment job that carries deployments out is
:mod:`jobs.deploy` (``docs/DEPLOYMENTS.md``); these two commands only change
the queue it reads. Nothing here depends on Flask.

Queueing (:func:`queue_deployment`, ``DEPLOY``). A ``deployments`` row exists only
for an approved promotion request (``UNIQUE (request_id)``), and the approval that
completes the quorum queues it. So:

* if the newest deployment of the model in that environment is already this
  version (and did not fail or get rolled back), it is returned unchanged;
* else, if the environment needs no approval (dev by default), a promotion request
  is opened through :class:`jobs.approvals.RequestPromotion`, which approves it at
  once and queues the deployment (the caller therefore also needs
  ``REQUEST_PROMOTION``; the request records who asked and from where);
* else the caller is told to open a promotion request: sponsors approve it and the
  approval queues the deployment (:class:`ApprovalRequired`, answered 409).

Rolling back (:func:`rollback_deployment`, ``ROLLBACK``) applies to the newest
deployment of a model in an environment: it is marked ``rollback_queued``, and
the audit entry ``deployment.rollback_queued`` names the version to return to —
the newest earlier deployment of another version that did not fail. The
deployment job returns traffic to the version that served before the rollout
(``previous_version``; this one when the row has none) and marks the row
``rolled_back``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.api.errors import NotFound
from jobs import audit
from jobs.approvals import (
    MAX_TEXT_LENGTH,
    PendingRequestExists,
    RequestPromotion,
    VersionInfoProvider,
)
from jobs.contracts import key_segment_problem
from jobs.db.governance import PENDING, Deployment, PromotionRequest
from jobs.db.models import ENVIRONMENT_NAMES, Environment, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Forbidden, Permission, require
from jobs.projects import project_by_slug
from jobs.users import Conflict, InvalidInput, active_actor

ROLLBACK_QUEUED = "rollback_queued"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
# A deployment in one of these states does not count as "the version running there".
NOT_RUNNING = frozenset({FAILED, ROLLBACK_QUEUED, ROLLED_BACK, "cancelled", "aborted"})


class ApprovalRequired(Conflict):
    """The environment needs sponsor approvals: open a promotion request instead."""


@dataclass(frozen=True)
class DeployOutcome:
    """What :func:`queue_deployment` did.

    Attributes:
        deployment: The deployment (new or already queued).
        created: Whether this call queued it.
    """

    deployment: Deployment
    created: bool


@dataclass(frozen=True)
class RollbackOutcome:
    """What :func:`rollback_deployment` did.

    Attributes:
        deployment: The deployment now marked ``rollback_queued``.
        rollback_to: The earlier deployment whose version is to be restored.
    """

    deployment: Deployment
    rollback_to: Deployment


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} is required")
    if len(value.strip()) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"{what} must be at most {MAX_TEXT_LENGTH} characters")
    return value.strip()


def latest_deployment(session: Session, project_id: int, model: str, environment: str) -> Deployment | None:
    """The newest deployment of ``model`` in ``environment`` of a project, ``None`` when there is none."""
    return session.scalars(
        select(Deployment)
        .where(
            Deployment.project_id == project_id,
            Deployment.model == model,
            Deployment.environment == environment,
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    ).first()


def queue_deployment(
    sessions: sessionmaker[Session],
    actor: Actor,
    *,
    project: str,
    model: str,
    version: str,
    environment: str,
    versions: VersionInfoProvider,
    requested_from: str | None = None,
    now: datetime | None = None,
) -> DeployOutcome:
    """Queue ``version`` of ``model`` for ``environment`` (see the module docstring).

    Args:
        sessions: Session factory of the metadata database.
        actor: Needs ``DEPLOY`` on the project (and ``REQUEST_PROMOTION`` where no approval is needed).
        project: Project slug.
        model: Model name.
        version: Registry version.
        environment: ``dev``, ``staging`` or ``prod``.
        versions: Resolves the version's run, digest and creator (the registry).
        requested_from: Where the request came from (a CI run URL), recorded in the request.
        now: The current time.

    Returns:
        The deployment and whether this call queued it.

    Raises:
        Forbidden: without ``DEPLOY`` (or ``REQUEST_PROMOTION`` when a request must be opened).
        InvalidInput: for a bad model, version or environment, or an unknown version.
        ApprovalRequired: if the environment needs approvals and none queued this version.
        Conflict: if a request for this target is pending, or the project does not exist or is archived.
    """
    require(actor, Permission.DEPLOY, project)
    problem = key_segment_problem(model)
    if problem:
        raise InvalidInput(f"model name: {problem}")
    if environment not in ENVIRONMENT_NAMES:
        raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENT_NAMES)}, not {environment!r}")
    with session_scope(sessions) as session:
        require(active_actor(session, actor), Permission.DEPLOY, project)
        found = project_by_slug(session, project)
        latest = latest_deployment(session, found.id, model, environment)
        if latest is not None and latest.version == version and latest.status not in NOT_RUNNING:
            return DeployOutcome(deployment=latest, created=False)
        pending = session.scalars(
            select(PromotionRequest.id).where(
                PromotionRequest.project_id == found.id,
                PromotionRequest.model == model,
                PromotionRequest.environment == environment,
                PromotionRequest.status == PENDING,
            )
        ).first()
        required = session.scalar(
            select(Environment.required_approvals).where(
                Environment.project_id == found.id, Environment.name == environment
            )
        )
    if pending is not None:
        raise PendingRequestExists(pending, project, model, environment)
    if required is None:
        raise Conflict(f"project {project!r} has no {environment} environment")
    if required > 0:
        raise ApprovalRequired(
            f"{environment} of {project} needs {required} sponsor approval(s): open a promotion request "
            "(POST /api/v1/promotions); the approval that completes it queues the deployment"
        )
    justification = f"deployment of {model} version {version} to {environment} requested by {actor.username}"
    if requested_from:
        justification += f" from {requested_from}"
    try:
        request = RequestPromotion(
            actor, project, model, version, environment, justification, versions=versions, now=now
        ).run(sessions)
    except Forbidden as error:
        raise Forbidden(
            f"deploying to {environment} opens a promotion request that needs no approval, so the token "
            f"also needs request_promotion on {project!r}: {error}"
        ) from error
    if request.deployment is None:  # the policy became stricter meanwhile
        raise ApprovalRequired(
            f"promotion request {request.id} awaits approval now; its approval queues the deployment"
        )
    return DeployOutcome(deployment=request.deployment, created=True)


def get_deployment(session: Session, actor: Actor | None, deployment_id: int) -> Deployment:
    """One deployment, if ``actor`` may view CI/CD on its project.

    Raises:
        NotFound: for an unknown id.
        Forbidden: without ``VIEW_CICD`` on the project.
    """
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFound(f"no deployment {deployment_id}")
    require(actor, Permission.VIEW_CICD, deployment.project.slug)
    return deployment


def rollback_deployment(
    sessions: sessionmaker[Session],
    actor: Actor,
    deployment_id: int,
    *,
    reason: str,
    now: datetime | None = None,
) -> RollbackOutcome:
    """Queue the rollback of the newest deployment of a model in an environment.

    Args:
        sessions: Session factory of the metadata database.
        actor: Needs ``ROLLBACK`` on the deployment's project.
        deployment_id: The deployment to roll back.
        reason: Why (required; recorded in the audit log).
        now: The current time.

    Raises:
        NotFound: for an unknown deployment.
        Forbidden: without ``ROLLBACK`` on the project.
        InvalidInput: without a reason.
        Conflict: if it is not the newest deployment, is already rolled back, or nothing earlier exists.
    """
    reason = _check_text(reason, "reason")
    now = now or utcnow()
    with session_scope(sessions, write=True) as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise NotFound(f"no deployment {deployment_id}")
        slug = deployment.project.slug
        require(actor, Permission.ROLLBACK, slug)
        current = require(active_actor(session, actor), Permission.ROLLBACK, slug)
        if deployment.status in (ROLLBACK_QUEUED, ROLLED_BACK):
            raise Conflict(f"deployment {deployment_id} is already {deployment.status}")
        latest = latest_deployment(session, deployment.project_id, deployment.model, deployment.environment)
        if latest is not None and latest.id != deployment.id:
            raise Conflict(
                f"deployment {deployment_id} is not the newest of {deployment.model} in "
                f"{deployment.environment} (deployment {latest.id} is): only the newest can be rolled back"
            )
        target = session.scalars(
            select(Deployment)
            .where(
                Deployment.project_id == deployment.project_id,
                Deployment.model == deployment.model,
                Deployment.environment == deployment.environment,
                Deployment.id < deployment.id,
                Deployment.version != deployment.version,
                Deployment.status.not_in(sorted(NOT_RUNNING)),
            )
            .order_by(Deployment.id.desc())
            .limit(1)
        ).first()
        if target is None:
            raise Conflict(
                f"no earlier deployment of {deployment.model} in {deployment.environment} to roll back to"
            )
        changed = session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id, Deployment.status == deployment.status)
            .values(status=ROLLBACK_QUEUED, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            raise Conflict(f"deployment {deployment_id} changed while the rollback was queued")
        session.refresh(deployment)
        audit.append(
            session,
            current.username,
            "deployment.rollback_queued",
            f"deployment:{deployment.id}",
            {
                "project": slug,
                "model": deployment.model,
                "environment": deployment.environment,
                "from_version": deployment.version,
                "to_version": target.version,
                "to_deployment": target.id,
                "reason": reason,
            },
        )
    return RollbackOutcome(deployment=deployment, rollback_to=target)
