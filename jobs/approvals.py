"""Promotion requests and sponsor approvals: commands that authorise, validate, act and audit at once.

A model version reaches an environment through a :class:`RequestPromotion`, then
as many :class:`ApprovePromotion` decisions as the environment's policy requires
(``environments.required_approvals``: dev 0, staging 1, prod 2 by default; an
admin changes it per project with :class:`SetApprovalPolicy`). The decision that
reaches the quorum — and only that one — marks the request approved, queues a
:class:`~jobs.db.governance.Deployment` in the same transaction and writes the
``promotion.approved`` and ``deployment.queued`` audit entries; ``on_quorum`` is
called with the deployment after the commit.

Rules (each enforced inside the transaction that acts on it):

* Only users holding the **Model Sponsor** role on the project decide (approve or
  reject; any sponsor may reject, since a rejection can only stop a promotion).
  The role is checked on the caller's :class:`~jobs.permissions.Actor` *and* on
  the roles read from the database in the same transaction, so a role revoked a
  moment ago no longer counts. Admin alone is not a sponsor.
* The requester and the version's creator (the registry's ``mms.created_by`` tag)
  never approve their own promotion; each person approves a request once
  (``UNIQUE (request_id, approver_id)``).
* A request binds the version number, the MLflow run id and the artifact digest;
  an approval must name the same three values, so a retrained model needs a new request.
* A request is open until it is approved, rejected (a sponsor's decision, comment
  required), superseded or past ``expires_at`` (14 days by default). Decisions on
  a closed request are refused; an overdue request is marked ``expired`` by the
  first decision that notices it, or by :func:`expire_pending`.
* One pending request per (project, model, environment). A second request is
  **refused** (:class:`PendingRequestExists`), because silently replacing it would
  discard approvals sponsors already gave; the requester passes ``supersede=True``
  to close the old request explicitly (audited as ``promotion.superseded``).
* The quorum is ``max(required approvals when requested, the current policy)``:
  a stricter policy applies to pending requests, a looser one never lowers them.
  A policy of 0 approves the request when it is made.

Concurrency: every decision locks its request row (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite the write transaction starts with ``BEGIN IMMEDIATE``),
then changes it only through a compare-and-set on ``status = 'pending'`` and
``version_counter``, and the deployment's ``UNIQUE (request_id)`` is the last
backstop: however many approvals race, one deployment is queued.

Run commands with a session factory from :func:`jobs.db.make_session_factory`
(``expire_on_commit=False``): the objects they return stay readable after the
transaction ended.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from analytics.performance import CLASSIFICATION_METRICS, LATENCY_METRICS, REGRESSION_METRICS
from analytics.policy import EFFECT_METHODS, TEST_METHODS
from jobs import audit, registry
from jobs.contracts import METRICS, key_segment_problem
from jobs.db.governance import (
    APPROVED,
    DEFAULT_DEPLOYMENT_STRATEGY,
    DEPLOYMENT_QUEUED,
    EXPIRED,
    PENDING,
    PROMOTION_STATUSES,
    REJECTED,
    SUPERSEDED,
    Deployment,
    PromotionApproval,
    PromotionRequest,
)
from jobs.db.models import ENVIRONMENT_NAMES, Environment, Project, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Forbidden, Permission, Role, has_permission, require
from jobs.projects import project_by_slug
from jobs.users import Conflict, InvalidInput, active_actor, validate_username

logger = logging.getLogger(__name__)

DEFAULT_EXPIRY = timedelta(days=14)
MAX_EXPIRY = timedelta(days=365)
MAX_REQUIRED_APPROVALS = 10
MAX_TEXT_LENGTH = 5_000
MAX_VERSION_LENGTH = 32
SYSTEM_ACTOR = "system"

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")

QuorumHook = Callable[[Deployment], None]


# --------------------------------------------------------------------------- errors


class RequestNotFound(Conflict):
    """No promotion request has this id."""


class RequestClosed(Conflict):
    """The request is no longer pending (approved, rejected, expired or superseded).

    Attributes:
        request_id: The request.
        status: Its status when the decision was refused.
    """

    def __init__(self, request_id: int, status: str, detail: str = "") -> None:
        message = f"promotion request {request_id} is {status}, not pending"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.request_id = request_id
        self.status = status


class RequestExpired(RequestClosed):
    """The request passed its ``expires_at``; it has been marked expired."""


class PendingRequestExists(Conflict):
    """Another request for the same project, model and environment is still pending.

    Attributes:
        existing_id: Id of the pending request.
    """

    def __init__(self, existing_id: int | None, project: str, model: str, environment: str) -> None:
        which = f"request {existing_id}" if existing_id is not None else "another request"
        super().__init__(
            f"{which} to promote {project}/{model} to {environment} is still pending: decide it, "
            "wait for it to expire, or pass supersede=True to replace it"
        )
        self.existing_id = existing_id


class BindingMismatch(Conflict):
    """An approval names a different version, run or artifact digest than the request."""


class AlreadyApproved(Conflict):
    """This person already approved this request."""


class NotASponsor(Forbidden):
    """The actor does not hold the Model Sponsor role on the project."""


class NotIndependent(Forbidden):
    """The requester or the version's creator tried to approve their own promotion."""


# --------------------------------------------------------------------------- version binding


@dataclass(frozen=True)
class VersionInfo:
    """What a request binds about a model version.

    Attributes:
        version: Registry version number, as text.
        run_id: MLflow run that produced it.
        artifact_digest: SHA-256 (hex) of the model's artifact files.
        created_by: Username of whoever trained it.

    Raises:
        InvalidInput: if a field is malformed (checked on construction).
    """

    version: str
    run_id: str
    artifact_digest: str
    created_by: str

    def __post_init__(self) -> None:
        _check_version(self.version)
        _check_run_id(self.run_id)
        _check_digest(self.artifact_digest)
        try:
            validate_username(self.created_by)
        except InvalidInput as error:
            raise InvalidInput(f"version creator {self.created_by!r} is not a username: {error}") from None


class VersionInfoProvider(Protocol):
    """Looks up what a request binds about a version (the registry, or anything that knows)."""

    def version_info(self, project: str, model: str, version: str) -> VersionInfo:
        """The run, digest and creator of ``version`` of ``model`` in ``project``."""
        ...


@dataclass(frozen=True)
class MlflowVersions:
    """:class:`VersionInfoProvider` reading the tags training writes on each MLflow model version.

    Attributes:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (defaults to the tracking URI).
    """

    tracking_uri: str
    registry_uri: str | None = None

    def version_info(self, project: str, model: str, version: str) -> VersionInfo:
        """Resolve ``version`` of ``<project>.<model>`` from its registry tags.

        Raises:
            InvalidInput: if the version does not exist, belongs to another project or
                lacks the run id, artifact digest or creator tags.
        """
        name = registry.registered_model_name(project, model)
        try:
            info = registry.get_version(
                name, version, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        except registry.RegistryError as error:
            raise InvalidInput(str(error)) from error
        tagged_project = info.tags.get(registry.TAG_PROJECT)
        if tagged_project is not None and tagged_project != project:
            raise InvalidInput(f"{name} version {version} is tagged with project {tagged_project!r}")
        tagged_run = info.tags.get(registry.TAG_RUN_ID)
        if tagged_run and info.run_id and tagged_run != info.run_id:
            raise InvalidInput(
                f"{name} version {version}: tag {registry.TAG_RUN_ID}={tagged_run!r} differs from its "
                f"run {info.run_id!r}"
            )
        run_id = info.run_id or tagged_run
        missing = [
            what
            for what, value in (
                ("run id", run_id),
                (registry.TAG_ARTIFACT_DIGEST, info.artifact_digest),
                (registry.TAG_CREATED_BY, info.created_by),
            )
            if not value
        ]
        if missing:
            raise InvalidInput(
                f"{name} version {version} lacks {', '.join(missing)}: only versions registered by the "
                "training job can be promoted"
            )
        return VersionInfo(
            version=info.version,
            run_id=str(run_id),
            artifact_digest=str(info.artifact_digest),
            created_by=str(info.created_by),
        )


# --------------------------------------------------------------------------- validation


def _check_text(value: object, what: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    cleaned = value.strip()
    if required and not cleaned:
        raise InvalidInput(f"{what} is required")
    if len(cleaned) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"{what} must be at most {MAX_TEXT_LENGTH} characters")
    return cleaned


def _check_model(model: object) -> str:
    problem = key_segment_problem(model)
    if problem:
        raise InvalidInput(f"model name: {problem}")
    return str(model)


def _check_version(version: object) -> str:
    if not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH or key_segment_problem(version):
        raise InvalidInput(
            f"version {version!r} must be text of 1 to {MAX_VERSION_LENGTH} letters, digits, '_' or '-'"
        )
    return version


def _check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidInput(f"run id {run_id!r} must be 1 to 64 letters, digits, '_' or '-'")
    return run_id


def _check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput(f"artifact digest {digest!r} must be 64 lowercase hex characters (SHA-256)")
    return digest


def _check_environment(environment: object) -> str:
    if environment not in ENVIRONMENT_NAMES:
        raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENT_NAMES)}, not {environment!r}")
    return str(environment)


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    return now


def _check_request_id(request_id: object) -> int:
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
        raise InvalidInput(f"request id must be a positive integer, not {request_id!r}")
    return request_id


# --------------------------------------------------------------------------- shared steps


def _authorise_sponsor(session: Session, actor: Actor, project: str) -> Actor:
    """Require APPROVE_PROMOTION *and* the Model Sponsor role, on the caller's and the database's view."""
    require(actor, Permission.APPROVE_PROMOTION, project)  # refuse before reading anything more
    fresh = active_actor(session, actor)
    for who in (actor, fresh):
        require(who, Permission.APPROVE_PROMOTION, project)
        if Role.MODEL_SPONSOR not in who.roles.get(project, frozenset()):
            raise NotASponsor(
                f"{who.username} is not a model sponsor of project {project!r}: only sponsors decide "
                "promotions (the admin role does not make one)"
            )
    return fresh


def _environment(session: Session, project: Project, name: str) -> Environment:
    environment = session.scalars(
        select(Environment).where(Environment.project_id == project.id, Environment.name == name)
    ).first()
    if environment is None:
        raise Conflict(f"project {project.slug!r} has no {name} environment")
    return environment


def _lock_request(session: Session, request_id: int) -> PromotionRequest:
    request = (
        session.scalars(
            select(PromotionRequest)
            .where(PromotionRequest.id == request_id)
            .with_for_update(of=PromotionRequest)
            .execution_options(populate_existing=True)
        )
        .unique()
        .first()
    )
    if request is None:
        raise RequestNotFound(f"no promotion request {request_id}")
    return request


def _violates_one_pending(error: IntegrityError) -> bool:
    message = str(error.orig)
    # PostgreSQL names the index; SQLite lists the indexed columns.
    return "uq_promotion_requests_one_pending" in message or (
        "UNIQUE constraint failed: promotion_requests.project_id" in message
    )


def _target(request: PromotionRequest) -> str:
    return f"promotion:{request.id}"


def _describe(request: PromotionRequest) -> dict[str, Any]:
    return {
        "project": request.project.slug,
        "model": request.model,
        "version": request.version,
        "run_id": request.run_id,
        "artifact_digest": request.artifact_digest,
        "environment": request.environment,
    }


def _compare_and_set(session: Session, request: PromotionRequest, **values: Any) -> None:
    """Change a pending request only if nobody changed it since it was read; bump its counter.

    Raises:
        RequestClosed: if the row is no longer pending or its counter moved.
    """
    seen = request.version_counter
    result = session.execute(
        update(PromotionRequest)
        .where(
            PromotionRequest.id == request.id,
            PromotionRequest.status == PENDING,
            PromotionRequest.version_counter == seen,
        )
        .values(version_counter=seen + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        current = session.scalar(
            select(PromotionRequest.status)
            .where(PromotionRequest.id == request.id)
            .execution_options(populate_existing=True)
        )
        raise RequestClosed(request.id, current or "gone", "it changed while this decision was made")
    # Keep the loaded object in step without marking it dirty (the row is already written).
    set_committed_value(request, "version_counter", seen + 1)
    for name, value in values.items():
        set_committed_value(request, name, value)


def _expire(session: Session, request: PromotionRequest, now: datetime, noticed_by: str) -> None:
    _compare_and_set(session, request, status=EXPIRED, decided_at=now)
    audit.append(
        session,
        SYSTEM_ACTOR,
        "promotion.expired",
        _target(request),
        {**_describe(request), "expires_at": request.expires_at, "noticed_by": noticed_by},
    )


def _ensure_pending(session: Session, request: PromotionRequest, now: datetime, actor: str) -> None:
    if request.status != PENDING:
        raise RequestClosed(request.id, request.status)
    if now >= request.expires_at:
        _expire(session, request, now, actor)
        raise RequestExpired(request.id, EXPIRED, f"it expired at {request.expires_at.isoformat()}")


def _required_approvals(session: Session, request: PromotionRequest) -> int:
    current = session.scalar(
        select(Environment.required_approvals).where(
            Environment.project_id == request.project_id, Environment.name == request.environment
        )
    )
    return max(request.required_approvals, current if current is not None else 0)


def _approval_count(session: Session, request: PromotionRequest) -> int:
    return session.scalar(
        select(func.count()).select_from(PromotionApproval).where(PromotionApproval.request_id == request.id)
    )


def _reach_quorum(
    session: Session, request: PromotionRequest, decided_by: Actor, now: datetime, approvals: int
) -> Deployment:
    """Approve the request and queue its deployment; refuses if another decision got there first."""
    _compare_and_set(session, request, status=APPROVED, decided_at=now, decided_by_id=decided_by.user_id)
    deployment = Deployment(
        project_id=request.project_id,
        model=request.model,
        version=request.version,
        run_id=request.run_id,
        artifact_digest=request.artifact_digest,
        environment=request.environment,
        strategy=DEFAULT_DEPLOYMENT_STRATEGY,
        status=DEPLOYMENT_QUEUED,
        created_at=now,
        updated_at=now,
    )
    deployment.request = request
    session.add(deployment)
    try:
        session.flush()
    except IntegrityError as error:
        raise RequestClosed(request.id, APPROVED, "its deployment is already queued") from error
    set_committed_value(deployment, "project", request.project)
    approvers = sorted(approval.approver.username for approval in request.approvals)
    audit.append(
        session,
        decided_by.username,
        "promotion.approved",
        _target(request),
        {**_describe(request), "approvals": approvals, "approvers": approvers},
    )
    audit.append(
        session,
        decided_by.username,
        "deployment.queued",
        f"deployment:{deployment.id}",
        {**_describe(request), "request_id": request.id, "strategy": deployment.strategy},
    )
    return deployment


def _notify(hook: QuorumHook | None, deployment: Deployment | None) -> None:
    if hook is None or deployment is None:
        return
    try:
        hook(deployment)
    except Exception:
        # The deployment is committed and queued; the deployment job picks it up without the hook.
        logger.exception("on_quorum hook failed for deployment %s; it stays queued", deployment.id)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class RequestPromotion:
    """Ask for ``version`` of ``model`` to be promoted to ``environment``.

    Attributes:
        actor: Who asks; needs ``REQUEST_PROMOTION`` on the project.
        project: Project slug.
        model: Model name within the project.
        version: Registry version number, as text.
        environment: ``dev``, ``staging`` or ``prod``.
        justification: Why (required).
        version_info: The version's run, digest and creator, when the caller already has them.
        versions: Where to look them up otherwise (for example :class:`MlflowVersions`).
        expires_in: How long the request stays open (default 14 days).
        supersede: Close a pending request for the same model and environment instead of refusing.
        on_quorum: Called with the deployment after commit when no approval is needed.
        now: The current time (defaults to the clock; tests pass one).
    """

    actor: Actor
    project: str
    model: str
    version: str
    environment: str
    justification: str
    _: KW_ONLY
    version_info: VersionInfo | None = None
    versions: VersionInfoProvider | None = None
    expires_in: timedelta = DEFAULT_EXPIRY
    supersede: bool = False
    on_quorum: QuorumHook | None = None
    now: datetime | None = None

    def run(self, sessions: sessionmaker[Session]) -> PromotionRequest:
        """Validate, record the request (and approve it at once when the policy needs no approval).

        Args:
            sessions: Session factory of the metadata database.

        Returns:
            The committed request (status ``pending``, or ``approved`` with its ``deployment``).

        Raises:
            Forbidden: if the actor may not request promotions on the project.
            InvalidInput: for a malformed field or a version the provider cannot resolve.
            PendingRequestExists: if another request for the same target is pending.
            Conflict: if the project does not exist or is archived.
        """
        require(self.actor, Permission.REQUEST_PROMOTION, self.project)
        model = _check_model(self.model)
        version = _check_version(self.version)
        environment_name = _check_environment(self.environment)
        justification = _check_text(self.justification, "justification", required=True)
        if not isinstance(self.expires_in, timedelta) or not timedelta(0) < self.expires_in <= MAX_EXPIRY:
            raise InvalidInput(f"expires_in must be a duration between 0 and {MAX_EXPIRY.days} days")
        now = _check_now(self.now)
        # The registry is asked before the transaction starts, so no database lock waits on MLflow.
        info = self._resolve(model, version)

        deployment = None
        with session_scope(sessions, write=True) as session:
            requester = active_actor(session, self.actor)
            require(requester, Permission.REQUEST_PROMOTION, self.project)
            project = project_by_slug(session, self.project)
            if project.archived:
                raise Conflict(f"project {self.project!r} is archived")
            environment = _environment(session, project, environment_name)
            self._clear_the_way(session, requester, project, model, environment_name, now)
            request = PromotionRequest(
                project=project,
                model=model,
                version=version,
                run_id=info.run_id,
                artifact_digest=info.artifact_digest,
                environment=environment_name,
                justification=justification,
                requested_by_id=requester.user_id,
                version_creator=info.created_by,
                status=PENDING,
                required_approvals=environment.required_approvals,
                version_counter=0,
                created_at=now,
                expires_at=now + self.expires_in,
                decision_comment="",
                approvals=[],
                deployment=None,
            )
            session.add(request)
            try:
                session.flush()
            except IntegrityError as error:
                if not _violates_one_pending(error):
                    raise
                # A concurrent request for the same target committed between our check and insert.
                raise PendingRequestExists(None, self.project, model, environment_name) from error
            audit.append(
                session,
                requester.username,
                "promotion.request",
                _target(request),
                {
                    **_describe(request),
                    "version_creator": request.version_creator,
                    "required_approvals": request.required_approvals,
                    "expires_at": request.expires_at,
                    "justification": justification,
                },
            )
            if request.required_approvals == 0:
                deployment = _reach_quorum(session, request, requester, now, approvals=0)
        _notify(self.on_quorum, deployment)
        return request

    def _resolve(self, model: str, version: str) -> VersionInfo:
        if self.version_info is not None:
            info = self.version_info
        elif self.versions is not None:
            info = self.versions.version_info(self.project, model, version)
        else:
            raise InvalidInput(
                "pass version_info or a versions provider to bind the version's run and digest"
            )
        if not isinstance(info, VersionInfo):
            raise InvalidInput(f"version info must be a VersionInfo, not {type(info).__name__}")
        if info.version != version:
            raise InvalidInput(f"version info describes version {info.version}, not {version}")
        return info

    def _clear_the_way(
        self,
        session: Session,
        requester: Actor,
        project: Project,
        model: str,
        environment: str,
        now: datetime,
    ) -> None:
        """Expire or supersede the pending request for the same target, or refuse."""
        existing = (
            session.scalars(
                select(PromotionRequest)
                .where(
                    PromotionRequest.project_id == project.id,
                    PromotionRequest.model == model,
                    PromotionRequest.environment == environment,
                    PromotionRequest.status == PENDING,
                )
                .with_for_update(of=PromotionRequest)
                .execution_options(populate_existing=True)
            )
            .unique()
            .first()
        )
        if existing is None:
            return
        if now >= existing.expires_at:
            _expire(session, existing, now, requester.username)
            return
        if not self.supersede:
            raise PendingRequestExists(existing.id, project.slug, model, environment)
        _compare_and_set(
            session,
            existing,
            status=SUPERSEDED,
            decided_at=now,
            decided_by_id=requester.user_id,
            decision_comment=f"superseded by a request for version {self.version}",
        )
        audit.append(
            session,
            requester.username,
            "promotion.superseded",
            _target(existing),
            {**_describe(existing), "by_version": self.version},
        )


@dataclass(frozen=True)
class ApprovalOutcome:
    """What an approval did.

    Attributes:
        request: The request after the decision.
        approval: The recorded approval.
        approvals: Approvals the request now has.
        required: Approvals its quorum needs.
        deployment: The deployment queued by this approval, ``None`` when the quorum is not reached.
    """

    request: PromotionRequest
    approval: PromotionApproval
    approvals: int
    required: int
    deployment: Deployment | None


@dataclass(frozen=True)
class ApprovePromotion:
    """A sponsor approves a pending request for the exact version it names.

    Attributes:
        actor: The sponsor.
        request_id: The request.
        comment: Optional remark.
        version: Version the sponsor reviewed; must equal the request's.
        run_id: Its run id; must equal the request's.
        artifact_digest: Its artifact digest; must equal the request's.
        on_quorum: Called with the deployment after commit when this approval reaches the quorum.
        now: The current time (defaults to the clock).
    """

    actor: Actor
    request_id: int
    comment: str = ""
    _: KW_ONLY
    version: str
    run_id: str
    artifact_digest: str
    on_quorum: QuorumHook | None = None
    now: datetime | None = None

    def run(self, sessions: sessionmaker[Session]) -> ApprovalOutcome:
        """Record the approval; queue the deployment if it completes the quorum.

        Args:
            sessions: Session factory of the metadata database.

        Returns:
            The outcome (``deployment`` set only for the approval that reached the quorum).

        Raises:
            NotASponsor: if the actor is not a model sponsor of the project.
            NotIndependent: if the actor requested the promotion or created the version.
            Forbidden: if the actor lacks ``APPROVE_PROMOTION`` or is inactive.
            RequestNotFound: for an unknown request id.
            RequestExpired: if the request is past its expiry (it is marked expired).
            RequestClosed: if the request is approved, rejected, expired or superseded.
            BindingMismatch: if version, run id or digest differ from the request's.
            AlreadyApproved: if the actor already approved it.
            InvalidInput: for malformed arguments.
        """
        request_id = _check_request_id(self.request_id)
        comment = _check_text(self.comment, "comment", required=False)
        binding = {
            "version": _check_version(self.version),
            "run_id": _check_run_id(self.run_id),
            "artifact_digest": _check_digest(self.artifact_digest),
        }
        now = _check_now(self.now)
        expired: RequestExpired | None = None
        outcome: ApprovalOutcome | None = None
        with session_scope(sessions, write=True) as session:
            try:
                outcome = self._decide(session, request_id, comment, binding, now)
            except RequestExpired as error:
                expired = error  # nothing else was written: commit the expiry mark, then refuse
        if expired is not None:
            raise expired
        assert outcome is not None
        _notify(self.on_quorum, outcome.deployment)
        return outcome

    def _decide(
        self, session: Session, request_id: int, comment: str, binding: Mapping[str, str], now: datetime
    ) -> ApprovalOutcome:
        request = _lock_request(session, request_id)
        approver = _authorise_sponsor(session, self.actor, request.project.slug)
        _ensure_pending(session, request, now, approver.username)
        if approver.user_id == request.requested_by_id:
            raise NotIndependent(f"{approver.username} requested this promotion and cannot approve it")
        if approver.username == request.version_creator:
            raise NotIndependent(
                f"{approver.username} created version {request.version} and cannot approve it"
            )
        differing = [name for name, value in binding.items() if getattr(request, name) != value]
        if differing:
            raise BindingMismatch(
                f"request {request.id} is for version {request.version} (run {request.run_id}, "
                f"digest {request.artifact_digest[:12]}...); this approval names a different "
                f"{', '.join(differing)}. A new version needs a new request"
            )
        if any(approval.approver_id == approver.user_id for approval in request.approvals):
            raise AlreadyApproved(f"{approver.username} already approved request {request.id}")
        approval = PromotionApproval(approver_id=approver.user_id, comment=comment, created_at=now, **binding)
        approval.request = request
        session.add(approval)
        try:
            session.flush()
        except IntegrityError as error:
            raise AlreadyApproved(f"{approver.username} already approved request {request.id}") from error
        session.refresh(approval, ["approver"])
        count = _approval_count(session, request)
        required = _required_approvals(session, request)
        audit.append(
            session,
            approver.username,
            "promotion.approval",
            _target(request),
            {**_describe(request), "approvals": count, "required": required, "comment": comment},
        )
        deployment = None
        if count >= required:
            deployment = _reach_quorum(session, request, approver, now, approvals=count)
        else:
            _compare_and_set(session, request)
        return ApprovalOutcome(request, approval, count, required, deployment)


@dataclass(frozen=True)
class RejectPromotion:
    """A sponsor rejects a pending request, which ends it.

    Attributes:
        actor: The sponsor.
        request_id: The request.
        comment: Why (required).
        now: The current time (defaults to the clock).
    """

    actor: Actor
    request_id: int
    comment: str
    _: KW_ONLY
    now: datetime | None = None

    def run(self, sessions: sessionmaker[Session]) -> PromotionRequest:
        """Mark the request rejected.

        Returns:
            The rejected request.

        Raises:
            NotASponsor: if the actor is not a model sponsor of the project.
            Forbidden: if the actor lacks ``APPROVE_PROMOTION`` or is inactive.
            RequestNotFound: for an unknown request id.
            RequestExpired: if the request is past its expiry (it is marked expired).
            RequestClosed: if the request is no longer pending.
            InvalidInput: for a missing comment or malformed arguments.
        """
        request_id = _check_request_id(self.request_id)
        comment = _check_text(self.comment, "rejection comment", required=True)
        now = _check_now(self.now)
        expired: RequestExpired | None = None
        with session_scope(sessions, write=True) as session:
            request = _lock_request(session, request_id)
            sponsor = _authorise_sponsor(session, self.actor, request.project.slug)
            try:
                _ensure_pending(session, request, now, sponsor.username)
            except RequestExpired as error:
                expired = error
            else:
                _compare_and_set(
                    session,
                    request,
                    status=REJECTED,
                    decided_at=now,
                    decided_by_id=sponsor.user_id,
                    decision_comment=comment,
                )
                audit.append(
                    session,
                    sponsor.username,
                    "promotion.rejected",
                    _target(request),
                    {**_describe(request), "comment": comment},
                )
        if expired is not None:
            raise expired
        return request


@dataclass(frozen=True)
class SetApprovalPolicy:
    """An admin sets how many sponsor approvals promotions to one environment of a project need.

    Pending requests keep their recorded requirement unless the new policy is stricter.

    Attributes:
        actor: An admin (``MANAGE_PROJECTS``).
        project: Project slug.
        environment: ``dev``, ``staging`` or ``prod``.
        required_approvals: 0 to :data:`MAX_REQUIRED_APPROVALS`.
    """

    actor: Actor
    project: str
    environment: str
    required_approvals: int

    def run(self, sessions: sessionmaker[Session]) -> Environment:
        """Store the policy (audited as ``promotion.policy_set`` when it changes).

        Returns:
            The environment row.

        Raises:
            Forbidden: if the actor is not an admin.
            InvalidInput: for an unknown environment or an out-of-range count.
            Conflict: if the project does not exist.
        """
        require(self.actor, Permission.MANAGE_PROJECTS)
        environment_name = _check_environment(self.environment)
        required = self.required_approvals
        if (
            not isinstance(required, int)
            or isinstance(required, bool)
            or not 0 <= required <= MAX_REQUIRED_APPROVALS
        ):
            raise InvalidInput(f"required approvals must be an integer from 0 to {MAX_REQUIRED_APPROVALS}")
        with session_scope(sessions, write=True) as session:
            admin = active_actor(session, self.actor)
            require(admin, Permission.MANAGE_PROJECTS)
            project = project_by_slug(session, self.project)
            environment = _environment(session, project, environment_name)
            previous = environment.required_approvals
            if previous != required:
                environment.required_approvals = required
                session.flush()
                audit.append(
                    session,
                    admin.username,
                    "promotion.policy_set",
                    f"project:{project.slug}",
                    {"environment": environment_name, "from": previous, "to": required},
                )
        return environment


# --------------------------------------------------------------------------- jobs and queries


def expire_pending(session: Session, now: datetime | None = None) -> list[PromotionRequest]:
    """Mark every pending request past its ``expires_at`` as expired (audited as ``promotion.expired``).

    Runs in the caller's transaction (the caller commits; on SQLite open it with
    ``session_scope(..., write=True)``). Rows are locked first and audited after,
    the same lock order as the commands, so it never deadlocks with them.

    Args:
        session: Session of the transaction.
        now: The current time (defaults to the clock).

    Returns:
        The requests it expired, oldest first.
    """
    now = _check_now(now)
    overdue = (
        session.scalars(
            select(PromotionRequest)
            .where(PromotionRequest.status == PENDING, PromotionRequest.expires_at <= now)
            .order_by(PromotionRequest.id)
            .with_for_update(of=PromotionRequest)
            .execution_options(populate_existing=True)
        )
        .unique()
        .all()
    )
    for request in overdue:
        _compare_and_set(session, request, status=EXPIRED, decided_at=now)
    for request in overdue:
        audit.append(
            session,
            SYSTEM_ACTOR,
            "promotion.expired",
            _target(request),
            {**_describe(request), "expires_at": request.expires_at, "noticed_by": SYSTEM_ACTOR},
        )
    return list(overdue)


EXPIRY_RUN_ACTION = "promotion.expiry_run"


def run_expiry(session_factory: sessionmaker[Session], now: datetime | None = None) -> list[int]:
    """The scheduled expiry: :func:`expire_pending` plus one ``promotion.expiry_run`` audit entry.

    One write transaction: the expirations and the run's entry (actor ``system``, the
    ids it expired, possibly none) commit together or not at all.

    Args:
        session_factory: Session factory of the metadata database.
        now: The current time (defaults to the clock).

    Returns:
        Ids of the requests it expired, oldest first.
    """
    now = _check_now(now)
    with session_scope(session_factory, write=True) as session:
        expired = [request.id for request in expire_pending(session, now)]
        audit.append(session, SYSTEM_ACTOR, EXPIRY_RUN_ACTION, "promotions", {"at": now, "expired": expired})
    return expired


def get_request(session: Session, actor: Actor | None, request_id: int) -> PromotionRequest:
    """One promotion request, if ``actor`` may view approvals on its project.

    Raises:
        RequestNotFound: for an unknown id.
        Forbidden: if the actor lacks ``VIEW_APPROVALS`` on the project.
    """
    request = session.get(PromotionRequest, _check_request_id(request_id))
    if request is None:
        raise RequestNotFound(f"no promotion request {request_id}")
    require(actor, Permission.VIEW_APPROVALS, request.project.slug)
    return request


def list_requests(
    session: Session,
    actor: Actor | None,
    *,
    project: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[PromotionRequest]:
    """Promotion requests ``actor`` may view, newest first.

    Args:
        session: Session to read with.
        actor: Who asks; sees the projects where it holds ``VIEW_APPROVALS`` (all for an admin).
        project: Only this project's requests.
        status: Only requests in this status.
        limit: At most this many.

    Raises:
        InvalidInput: for an unknown status or a bad limit.
    """
    if status is not None and status not in PROMOTION_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(PROMOTION_STATUSES)}, not {status!r}")
    if not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be an integer from 1 to 10000")
    if actor is None:
        return []
    query = select(PromotionRequest).join(Project, PromotionRequest.project_id == Project.id)
    if not actor.is_admin:
        visible = [slug for slug in actor.roles if has_permission(actor, Permission.VIEW_APPROVALS, slug)]
        query = query.where(Project.slug.in_(visible))
    if project is not None:
        query = query.where(Project.slug == project)
    if status is not None:
        query = query.where(PromotionRequest.status == status)
    query = query.order_by(PromotionRequest.created_at.desc(), PromotionRequest.id.desc()).limit(limit)
    return list(session.scalars(query).unique())


def approval_policy(session: Session, project: str) -> dict[str, int]:
    """Approvals required per environment of ``project`` (no permission check).

    Raises:
        Conflict: if the project does not exist.
    """
    found = project_by_slug(session, project)
    rows = session.execute(
        select(Environment.name, Environment.required_approvals).where(Environment.project_id == found.id)
    )
    return {str(name): int(required) for name, required in rows}


# --------------------------------------------------------------------------- evidence

INSUFFICIENT_DATA = "insufficient_data"
EVIDENCE_OK = "ok"
DRIFT_METRICS = frozenset(TEST_METHODS) | frozenset(EFFECT_METHODS) | {"drift_share"}
"""``metric`` values that are drift checks (a ``drifted`` verdict per column)."""
DATA_QUALITY_METRICS = frozenset(
    {
        "null_rate",
        "missing_rate",
        "out_of_range_rate",
        "unseen_category_rate",
        "type_error_rate",
        "duplicate_rate",
        "schema_violations",
    }
)
"""``metric`` values that are data-quality checks (failing when their status is not ``ok``)."""
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2", "throughput_rps"})
PERFORMANCE_METRICS = (
    frozenset(CLASSIFICATION_METRICS)
    | frozenset(REGRESSION_METRICS)
    | frozenset(LATENCY_METRICS)
    | {"latency_p50", "latency_p95", "latency_p99"}
)
"""``metric`` values summarised as performance (mean over windows, weighted by rows)."""
_VERDICT_STATUSES = ("ok", "drift", "warning")
_METRIC_COLUMNS = (
    "version",
    "window_start",
    "window_end",
    "column",
    "metric",
    "statistic",
    "drifted",
    "status",
    "n_current",
)


@dataclass(frozen=True)
class VersionEvidence:
    """Monitoring facts about one version in one environment, from the ``metrics`` dataset.

    Attributes:
        version: Model version.
        environment: Environment whose traffic the metrics describe.
        windows: Distinct monitoring windows.
        first_window_start: Start of the earliest window.
        last_window_end: End of the latest window.
        drift_checks: Drift checks with a verdict.
        drifted_checks: Of those, how many drifted.
        drifted_columns: Columns that drifted at least once.
        quality_checks: Data-quality checks with a verdict.
        quality_failures: Of those, how many were not ``ok``.
        quality_failed_columns: Columns with at least one failing check.
        performance: Mean of each performance metric over its windows, weighted by window rows.
        unevaluated: Rows whose status was ``insufficient_data`` or ``error``.
    """

    version: str
    environment: str
    windows: int
    first_window_start: datetime | None
    last_window_end: datetime | None
    drift_checks: int
    drifted_checks: int
    drifted_columns: tuple[str, ...]
    quality_checks: int
    quality_failures: int
    quality_failed_columns: tuple[str, ...]
    performance: Mapping[str, float]
    unevaluated: int

    @property
    def has_verdicts(self) -> bool:
        """Whether any drift, quality or performance figure was evaluated."""
        return bool(self.drift_checks or self.quality_checks or self.performance)

    @property
    def drift_share(self) -> float | None:
        """Share of drift checks that drifted, ``None`` without checks."""
        return self.drifted_checks / self.drift_checks if self.drift_checks else None


@dataclass(frozen=True)
class MetricComparison:
    """A performance metric of the candidate next to the current version's.

    Attributes:
        metric: Metric name.
        candidate: Candidate's value.
        current: Current version's value.
        delta: ``candidate - current``.
        higher_is_better: Direction of the metric.
        improved: Whether the candidate is better (``False`` when equal).
    """

    metric: str
    candidate: float
    current: float
    delta: float
    higher_is_better: bool
    improved: bool


@dataclass(frozen=True)
class Evidence:
    """What monitoring says about a promotion's candidate and the version it would replace.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Target environment.
        candidate_version: Version the request promotes.
        status: ``ok``, or ``insufficient_data`` when the candidate has no evaluated metrics.
        reason: Plain-language summary of what is (or is not) known.
        candidate: The candidate's facts (from the target environment if it served there,
            else from the nearest environment below it), ``None`` without data.
        current_version: Version currently serving the target environment, if known.
        current: Its facts in the target environment, ``None`` without data.
        comparisons: Performance metrics both versions have, by name.
    """

    project: str
    model: str
    environment: str
    candidate_version: str
    status: str
    reason: str
    candidate: VersionEvidence | None
    current_version: str | None
    current: VersionEvidence | None
    comparisons: tuple[MetricComparison, ...]


def _read_metrics(store: Any, project: str, model: str, environment: str) -> pa.Table:
    table = store.read(
        METRICS,
        filters={"project": project, "model": model, "environment": environment},
        columns=_METRIC_COLUMNS,
    )
    if table.num_rows == 0:
        return table
    return table.select(list(_METRIC_COLUMNS))


def _distinct(values: pa.ChunkedArray | pa.Array) -> tuple[str, ...]:
    return tuple(sorted(v for v in pc.unique(values).to_pylist() if v is not None))


def summarise_version(metrics: pa.Table, version: str, environment: str) -> VersionEvidence | None:
    """Summarise ``metrics`` rows of one version: drift, data quality and performance.

    Args:
        metrics: Rows of the ``metrics`` dataset (at least the columns evidence reads).
        version: The version to summarise.
        environment: Environment the rows come from (recorded in the result).

    Returns:
        The summary, ``None`` when the version has no rows.
    """
    if metrics.num_rows == 0:
        return None
    rows = metrics.filter(pc.equal(metrics["version"], version))
    if rows.num_rows == 0:
        return None
    with_verdict = rows.filter(pc.is_in(rows["status"], pa.array(_VERDICT_STATUSES)))
    drift = with_verdict.filter(pc.is_in(with_verdict["metric"], pa.array(sorted(DRIFT_METRICS))))
    drifted = drift.filter(pc.or_(pc.equal(drift["status"], "drift"), pc.fill_null(drift["drifted"], False)))
    quality = with_verdict.filter(pc.is_in(with_verdict["metric"], pa.array(sorted(DATA_QUALITY_METRICS))))
    failing = quality.filter(pc.not_equal(quality["status"], "ok"))
    performance_rows = with_verdict.filter(
        pc.and_(
            pc.is_in(with_verdict["metric"], pa.array(sorted(PERFORMANCE_METRICS))),
            pc.is_valid(with_verdict["statistic"]),
        )
    )
    performance: dict[str, float] = {}
    if performance_rows.num_rows:
        weights = pc.max_element_wise(pc.cast(performance_rows["n_current"], pa.float64()), 1.0)
        weighted = (
            pa.table(
                {
                    "metric": performance_rows["metric"],
                    "weighted": pc.multiply(performance_rows["statistic"], weights),
                    "weight": weights,
                }
            )
            .group_by("metric")
            .aggregate([("weighted", "sum"), ("weight", "sum")])
        )
        for metric, total, weight in zip(
            weighted["metric"].to_pylist(),
            weighted["weighted_sum"].to_pylist(),
            weighted["weight_sum"].to_pylist(),
            strict=True,
        ):
            performance[metric] = total / weight
    windows = rows.group_by(["window_start", "window_end"]).aggregate([]).num_rows
    return VersionEvidence(
        version=version,
        environment=environment,
        windows=windows,
        first_window_start=pc.min(rows["window_start"]).as_py(),
        last_window_end=pc.max(rows["window_end"]).as_py(),
        drift_checks=drift.num_rows,
        drifted_checks=drifted.num_rows,
        drifted_columns=_distinct(drifted["column"]),
        quality_checks=quality.num_rows,
        quality_failures=failing.num_rows,
        quality_failed_columns=_distinct(failing["column"]),
        performance=dict(sorted(performance.items())),
        unevaluated=rows.num_rows - with_verdict.num_rows,
    )


def _latest_other_version(metrics: pa.Table, candidate: str) -> str | None:
    if metrics.num_rows == 0:
        return None
    others = metrics.filter(pc.not_equal(metrics["version"], candidate))
    if others.num_rows == 0:
        return None
    latest = (
        others.group_by("version")
        .aggregate([("window_end", "max")])
        .sort_by([("window_end_max", "descending"), ("version", "descending")])
    )
    return latest["version"][0].as_py()


def _compare(candidate: VersionEvidence, current: VersionEvidence) -> tuple[MetricComparison, ...]:
    comparisons = []
    for metric in sorted(set(candidate.performance) & set(current.performance)):
        new, old = candidate.performance[metric], current.performance[metric]
        higher = metric in HIGHER_IS_BETTER
        comparisons.append(
            MetricComparison(
                metric=metric,
                candidate=new,
                current=old,
                delta=new - old,
                higher_is_better=higher,
                improved=new > old if higher else new < old,
            )
        )
    return tuple(comparisons)


def _environments_from(environment: str) -> Sequence[str]:
    """The target environment, then the ones below it, nearest first (prod -> staging -> dev)."""
    index = ENVIRONMENT_NAMES.index(environment)
    return tuple(reversed(ENVIRONMENT_NAMES[: index + 1]))


def promotion_evidence(
    store: Any, request: PromotionRequest, *, current_version: str | None = None
) -> Evidence:
    """Gather drift, data-quality and performance evidence for a promotion request.

    The candidate usually has not served the target environment yet, so its facts
    come from the target environment if it has metrics there, else from the nearest
    environment below (staging for prod, dev for staging). The version it would
    replace is ``current_version`` when given, else the version with the most
    recent metrics window in the target environment.

    Args:
        store: The Parquet store (``analytics.store.ParquetStore``) holding ``metrics``.
        request: The promotion request.
        current_version: The version serving the target environment, when the caller knows it.

    Returns:
        The evidence; ``status`` is ``insufficient_data`` when the candidate has no evaluated metrics.

    Raises:
        analytics.store.CorruptParquet: if a metrics file cannot be read.
    """
    project, model, environment = request.project.slug, request.model, request.environment
    candidate_version = request.version
    tables: dict[str, pa.Table] = {}

    def metrics_of(name: str) -> pa.Table:
        if name not in tables:
            tables[name] = _read_metrics(store, project, model, name)
        return tables[name]

    candidate = None
    for name in _environments_from(environment):
        summary = summarise_version(metrics_of(name), candidate_version, name)
        if summary is not None and summary.has_verdicts:
            candidate = summary
            break
    if current_version is None:
        current_version = _latest_other_version(metrics_of(environment), candidate_version)
    current = (
        summarise_version(metrics_of(environment), current_version, environment)
        if current_version is not None and current_version != candidate_version
        else None
    )
    if current is not None and not current.has_verdicts:
        current = None
    comparisons = _compare(candidate, current) if candidate and current else ()

    reasons = []
    if candidate is None:
        searched = ", ".join(_environments_from(environment))
        reasons.append(f"version {candidate_version} has no evaluated metrics in {searched}")
    else:
        reasons.append(
            f"version {candidate_version}: {candidate.windows} window(s) in {candidate.environment}, "
            f"{candidate.drifted_checks}/{candidate.drift_checks} drift checks drifted, "
            f"{candidate.quality_failures}/{candidate.quality_checks} quality checks failed"
        )
    if current_version is None:
        reasons.append(f"no other version has metrics in {environment}")
    elif current is None:
        reasons.append(f"current version {current_version} has no evaluated metrics in {environment}")
    else:
        better = sum(c.improved for c in comparisons)
        reasons.append(
            f"current version {current_version}: {current.windows} window(s); the candidate is better on "
            f"{better} of {len(comparisons)} shared performance metric(s)"
        )
    return Evidence(
        project=project,
        model=model,
        environment=environment,
        candidate_version=candidate_version,
        status=EVIDENCE_OK if candidate is not None else INSUFFICIENT_DATA,
        reason="; ".join(reasons),
        candidate=candidate,
        current_version=current_version,
        current=current,
        comparisons=comparisons,
    )
