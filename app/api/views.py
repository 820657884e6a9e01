"""The operations of ``/api/v1``: declared once here, served by Flask and documented in ``openapi.json``.

Every handler checks the permission on the very project it touches with
:func:`jobs.permissions.require` and the token's scoped actor; the job functions it
calls check again. A project the actor holds no role on is refused (403) whether
it exists or not, so the API does not reveal which projects exist.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.compute as pc
from flask import request
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.api import deployments as deploys
from app.api.auth import api_state, record_failure, refuse_if_blocked, unauthorized
from app.api.errors import ApiError, NotFound
from app.api.routing import GITHUB_SIGNATURE, PREFIX, PUBLIC, Api, Call, Param, Reply
from app.auth import db_session, services
from jobs import alerts as alert_jobs
from jobs import approvals, audit, github, registry
from jobs import deploy as deploy_job
from jobs.contracts import METRICS
from jobs.db.alerting import ALERT_STATES, Alert
from jobs.db.governance import PENDING, PROMOTION_STATUSES, Deployment, PromotionRequest
from jobs.db.models import ENVIRONMENT_NAMES, AuditEntry, Project, utcnow
from jobs.permissions import Actor, Permission, has_permission, require
from jobs.projects import find_project, get_project, list_projects

API = Api(
    title="Model Monitoring Studio API",
    version="1.0.0",
    description=(
        "REST API for CI/CD and scripts. Authenticate with `Authorization: Bearer <token>` "
        "(tokens: `python -m jobs tokens create`). Errors are `{error: {code, message}}`. Lists are "
        "paginated with `limit` and the opaque `cursor` of the previous page (`next_cursor`, `next`, "
        'and a `Link: <...>; rel="next"` header). Each operation\'s `x-permission` names the '
        "permission it needs on the project concerned."
    ),
)

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_METRICS_WINDOW = timedelta(days=92)
DEFAULT_METRICS_WINDOW = timedelta(days=7)
MAX_ROLLBACK_REASON = 5000

# ---------------------------------------------------------------------------- schema helpers

SLUG = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
KEY = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
VERSION = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}
GIT_SHA = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
ENVIRONMENT = {"type": "string", "enum": list(ENVIRONMENT_NAMES)}
ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
TEXT = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"}


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` that also accepts ``null`` (OpenAPI 3.1 style: a type list)."""
    copy = dict(schema)
    declared = copy.get("type", "string")
    copy["type"] = [*([declared] if isinstance(declared, str) else declared), "null"]
    return copy


def obj(properties: Mapping[str, Any], required: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema; every property is required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
        **extra,
    }


def page_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of one page of ``item``."""
    return obj(
        {
            "items": {"type": "array", "items": dict(item)},
            "next_cursor": nullable(TEXT),
            "next": nullable(TEXT),
        }
    )


PAGE_PARAMS = (
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, description="Page size."),
    Param("cursor", "query", CURSOR, description="`next_cursor` of the previous page."),
)


def _project_param(required: bool = False, description: str = "Project slug.") -> Param:
    return Param("project", "query", SLUG, required=required, description=description)


# ---------------------------------------------------------------------------- pagination


def encode_cursor(position: Mapping[str, Any]) -> str:
    """An opaque cursor for ``position``."""
    return (
        base64.urlsafe_b64encode(json.dumps(dict(position), separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def decode_cursor(cursor: str | None, key: str) -> int | None:
    """The integer ``key`` of a cursor made by :func:`encode_cursor`, ``None`` without a cursor.

    Raises:
        ApiError: 422 for a cursor this API did not make.
    """
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())[key]
    except (binascii.Error, ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise ApiError(422, "invalid_input", "cursor: not a cursor of this list") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(422, "invalid_input", "cursor: not a cursor of this list")
    return value


def page(items: list[Any], next_position: Mapping[str, Any] | None) -> Reply:
    """A page reply with ``next_cursor``, the ``next`` URL and a ``Link`` header."""
    if next_position is None:
        return Reply(200, {"items": items, "next_cursor": None, "next": None})
    cursor = encode_cursor(next_position)
    query = {key: value for key, value in request.args.items() if key != "cursor"}
    query["cursor"] = cursor
    url = f"{request.path}?{urlencode(query)}"
    return Reply(200, {"items": items, "next_cursor": cursor, "next": url}, {"Link": f'<{url}>; rel="next"'})


def _limit(call: Call) -> int:
    return int(call.params.get("limit", DEFAULT_PAGE))


Fetch = Callable[[Session, int | None, int], Sequence[Any]]
"""``fetch(session, position, n)``: up to ``n`` rows after ``position`` (``None``: from the start)."""


def paged(
    call: Call,
    fetch: Fetch,
    render: Callable[[Any], dict[str, Any]] | None = None,
    *,
    permission: Permission | None = None,
    keyset: Callable[[Any], int] | None = None,
) -> Reply:
    """One page of a list operation: project check, cursor, fetch, render and the next cursor.

    Args:
        call: The request.
        fetch: Reads up to ``n`` rows after ``position``; it is asked for one row more than the
            page holds, to learn whether another page follows.
        render: Turns a row into its JSON item, inside the session (default: the row as is).
        permission: When given, a ``project`` query parameter is checked for it (403) first.
        keyset: Keyset pagination: the rows come in descending key order and ``position`` is the
            key of the previous page's last row (the cursor's ``before``). ``None``: offset
            pagination, ``position`` counts the rows of the previous pages.

    Raises:
        Forbidden: if the actor lacks ``permission`` on the ``project`` parameter.
        ApiError: 422 for a cursor of another list.
    """
    actor = _actor(call)
    if permission is not None and call.params.get("project") is not None:
        require(actor, permission, call.params["project"])
    position = decode_cursor(call.params.get("cursor"), "before" if keyset else "offset")
    limit = _limit(call)
    with db_session() as session:
        rows = list(fetch(session, position, limit + 1))
        items = [render(row) if render else row for row in rows[:limit]]
    if len(rows) <= limit:
        following = None
    elif keyset is not None:
        following = {"before": keyset(rows[limit - 1])}
    else:
        following = {"offset": (position or 0) + limit}
    return page(items, following)


def from_list(rows: Sequence[Any]) -> Fetch:
    """A :data:`Fetch` over an in-memory list (for lists that do not come from the database)."""

    def fetch(_session: Session, offset: int | None, count: int) -> Sequence[Any]:
        start = offset or 0
        return rows[start : start + count]

    return fetch


def newest_first(query: Any, key: Any) -> Fetch:
    """A keyset :data:`Fetch` over ``query``: rows by descending ``key``, below the previous page's last."""

    def fetch(session: Session, before: int | None, count: int) -> Sequence[Any]:
        scoped = query if before is None else query.where(key < before)
        return session.scalars(scoped.order_by(key.desc()).limit(count)).unique().all()

    return fetch


def _in_projects(query: Any, call: Call, permission: Permission) -> Any:
    """``query`` (joined to ``Project``) limited to the ``project`` parameter and the visible projects."""
    if call.params.get("project") is not None:
        query = query.where(Project.slug == call.params["project"])
    visible = _visible(_actor(call), permission)
    return query if visible is None else query.where(Project.slug.in_(visible))


# ---------------------------------------------------------------------------- shared checks


def _actor(call: Call) -> Actor:
    assert call.actor is not None
    return call.actor


def _project_or_404(session: Session, actor: Actor, slug: str, permission: Permission) -> Project:
    """Require ``permission`` on ``slug`` (403), then the project itself (404)."""
    require(actor, permission, slug)
    found = find_project(session, slug)
    if found is None:
        raise NotFound(f"no project {slug!r}")
    return found


def _checked_project(call: Call, slug: str, permission: Permission) -> Actor:
    """The call's actor, once :func:`_project_or_404` passed for ``slug`` (403, then 404)."""
    actor = _actor(call)
    with db_session() as session:
        _project_or_404(session, actor, slug, permission)
    return actor


def _checked_id(call: Call, param: str, read: Callable[[Session, Actor, int], Any]) -> tuple[Actor, int]:
    """The call's actor and the id in path parameter ``param``, once ``read`` found it.

    ``read`` (``approvals.get_request``, ``deployments.get_deployment``) raises 404 for an
    unknown id and 403 for one on a project the actor may not view, before any job runs.
    """
    actor = _actor(call)
    key = call.params[param]
    with db_session() as session:
        read(session, actor, key)
    return actor, key


def _visible(actor: Actor, permission: Permission) -> list[str] | None:
    """Slugs where ``actor`` holds ``permission``; ``None`` for every project (admin)."""
    if actor.is_admin:
        return None
    return sorted(slug for slug in actor.roles if has_permission(actor, permission, slug))


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _settings() -> Any:
    return services().settings


def _sha_lookup() -> github.MlflowShaLookup:
    settings = _settings()
    return github.MlflowShaLookup(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)


# ---------------------------------------------------------------------------- openapi


@API.operation(
    "GET",
    "/openapi.json",
    operation_id="get_openapi",
    summary="This OpenAPI 3.1 document.",
    tag="meta",
    permission=None,
    auth=PUBLIC,
    response={"type": "object", "required": ["openapi", "paths"]},
)
def get_openapi(call: Call) -> Reply:
    """The document, generated from the same declarations the routes are built from."""
    return Reply(200, API.openapi())


# ---------------------------------------------------------------------------- projects

ENVIRONMENT_ITEM = obj({"name": ENVIRONMENT, "required_approvals": {"type": "integer", "minimum": 0}})
PROJECT = obj(
    {
        "slug": SLUG,
        "name": TEXT,
        "description": TEXT,
        "archived": {"type": "boolean"},
        "created_at": TIME,
        "environments": {"type": "array", "items": ENVIRONMENT_ITEM},
    }
)


def _project_json(project: Project) -> dict[str, Any]:
    return {
        "slug": project.slug,
        "name": project.name,
        "description": project.description,
        "archived": project.archived,
        "created_at": _time(project.created_at),
        "environments": [
            {"name": e.name, "required_approvals": e.required_approvals}
            for e in sorted(project.environments, key=lambda e: ENVIRONMENT_NAMES.index(e.name))
            if e.name in ENVIRONMENT_NAMES
        ],
    }


@API.operation(
    "GET",
    "/projects",
    operation_id="list_projects",
    summary="Projects the token may view, by slug.",
    tag="projects",
    permission=Permission.VIEW_PROJECTS,
    params=PAGE_PARAMS,
    response=page_of(PROJECT),
)
def list_projects_view(call: Call) -> Reply:
    """Projects the token's actor may view (``VIEW_PROJECTS``), ordered by slug."""
    actor = _actor(call)
    with db_session() as session:
        rows = [_project_json(p) for p in list_projects(session, actor)]
    return paged(call, from_list(rows))


@API.operation(
    "GET",
    "/projects/{project}",
    operation_id="get_project",
    summary="One project and its environments' approval policy.",
    tag="projects",
    permission=Permission.VIEW_PROJECTS,
    params=(Param("project", "path", SLUG),),
    response=PROJECT,
)
def get_project_view(call: Call) -> Reply:
    """One project (``VIEW_PROJECTS`` on it)."""
    actor = _actor(call)
    slug = call.params["project"]
    with db_session() as session:
        _project_or_404(session, actor, slug, Permission.VIEW_PROJECTS)
        return Reply(200, _project_json(get_project(session, actor, slug)))


# ---------------------------------------------------------------------------- model versions

MODEL_VERSION = obj(
    {
        "model": KEY,
        "version": TEXT,
        "run_id": nullable(TEXT),
        "status": TEXT,
        "aliases": {"type": "array", "items": TEXT},
        "created_at": TIME,
        "created_by": nullable(TEXT),
        "artifact_digest": nullable(TEXT),
        "git_sha": nullable(TEXT),
        "description": TEXT,
    }
)


@API.operation(
    "GET",
    "/projects/{project}/models/{model}/versions",
    operation_id="list_model_versions",
    summary="Registered versions of a model (MLflow registry), newest first.",
    tag="models",
    permission=Permission.VIEW_MODELS,
    params=(Param("project", "path", SLUG), Param("model", "path", KEY), *PAGE_PARAMS),
    response=page_of(MODEL_VERSION),
    description="An unregistered model has no versions (an empty list).",
)
def list_model_versions(call: Call) -> Reply:
    """Versions of ``<project>.<model>`` from the registry (``VIEW_MODELS`` on the project)."""
    slug, model = call.params["project"], call.params["model"]
    _checked_project(call, slug, Permission.VIEW_MODELS)
    settings = _settings()
    versions = registry.list_versions(
        registry.registered_model_name(slug, model),
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri,
    )
    rows = [
        {
            "model": model,
            "version": v.version,
            "run_id": v.run_id,
            "status": v.status,
            "aliases": list(v.aliases),
            "created_at": _time(v.created_at),
            "created_by": v.created_by,
            "artifact_digest": v.artifact_digest,
            "git_sha": v.tags.get(github.TAG_GIT_SHA),
            "description": v.description,
        }
        for v in reversed(versions)
    ]
    return paged(call, from_list(rows))


# ---------------------------------------------------------------------------- promotions

# What a promotion request binds and the deployment it queues carries: the version and where it goes.
RELEASE = {
    "project": SLUG,
    "model": TEXT,
    "version": TEXT,
    "run_id": TEXT,
    "artifact_digest": TEXT,
    "environment": ENVIRONMENT,
}
APPROVAL = obj({"approver": TEXT, "comment": TEXT, "created_at": TIME})
PROMOTION = obj(
    {
        "id": ID,
        **RELEASE,
        "status": {"type": "string", "enum": list(PROMOTION_STATUSES)},
        "justification": TEXT,
        "requested_by": TEXT,
        "version_creator": TEXT,
        "required_approvals": {"type": "integer", "minimum": 0},
        "approvals": {"type": "array", "items": APPROVAL},
        "created_at": TIME,
        "expires_at": TIME,
        "decided_at": nullable(TIME),
        "decision_comment": TEXT,
        "deployment_id": nullable(ID),
    }
)


def effective_status(request_row: PromotionRequest, now: datetime) -> str:
    """The request's status as callers see it: a pending request past ``expires_at`` is ``expired``."""
    if request_row.status == PENDING and now >= request_row.expires_at:
        return "expired"
    return request_row.status


def _release_json(row: PromotionRequest | Deployment) -> dict[str, Any]:
    """The :data:`RELEASE` fields of a request or a deployment."""
    return {
        "project": row.project.slug,
        "model": row.model,
        "version": row.version,
        "run_id": row.run_id,
        "artifact_digest": row.artifact_digest,
        "environment": row.environment,
    }


def _promotion_json(row: PromotionRequest, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        **_release_json(row),
        "status": effective_status(row, now),
        "justification": row.justification,
        "requested_by": row.requested_by.username,
        "version_creator": row.version_creator,
        "required_approvals": row.required_approvals,
        "approvals": [
            {"approver": a.approver.username, "comment": a.comment, "created_at": _time(a.created_at)}
            for a in row.approvals
        ],
        "created_at": _time(row.created_at),
        "expires_at": _time(row.expires_at),
        "decided_at": _time(row.decided_at),
        "decision_comment": row.decision_comment,
        "deployment_id": row.deployment.id if row.deployment is not None else None,
    }


def _versions_provider() -> approvals.MlflowVersions:
    settings = _settings()
    return approvals.MlflowVersions(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)


@API.operation(
    "GET",
    "/promotions",
    operation_id="list_promotions",
    summary="Promotion requests the token may view, newest first.",
    tag="promotions",
    permission=Permission.VIEW_APPROVALS,
    params=(
        _project_param(),
        Param("status", "query", {"type": "string", "enum": list(PROMOTION_STATUSES)}),
        *PAGE_PARAMS,
    ),
    response=page_of(PROMOTION),
)
def list_promotions(call: Call) -> Reply:
    """Requests on projects where the actor holds ``VIEW_APPROVALS``."""
    now = utcnow()
    query = select(PromotionRequest).join(Project, PromotionRequest.project_id == Project.id)
    query = _in_projects(query, call, Permission.VIEW_APPROVALS)
    status = call.params.get("status")
    if status == PENDING:
        query = query.where(PromotionRequest.status == PENDING, PromotionRequest.expires_at > now)
    elif status == "expired":
        query = query.where(
            or_(
                PromotionRequest.status == "expired",
                and_(PromotionRequest.status == PENDING, PromotionRequest.expires_at <= now),
            )
        )
    elif status is not None:
        query = query.where(PromotionRequest.status == status)
    return paged(
        call,
        newest_first(query, PromotionRequest.id),
        lambda r: _promotion_json(r, now),
        permission=Permission.VIEW_APPROVALS,
        keyset=lambda r: r.id,
    )


PROMOTION_BODY = obj(
    {
        "project": SLUG,
        "model": KEY,
        "version": VERSION,
        "target_environment": ENVIRONMENT,
        "justification": {"type": "string", "minLength": 1, "maxLength": approvals.MAX_TEXT_LENGTH},
        "requested_from": {"type": "string", "maxLength": 2048},
        "supersede": {"type": "boolean"},
    },
    required=["project", "model", "version", "target_environment", "justification"],
    additionalProperties=False,
)


@API.operation(
    "POST",
    "/promotions",
    operation_id="create_promotion",
    summary="Ask for a model version to be promoted to an environment.",
    tag="promotions",
    permission=Permission.REQUEST_PROMOTION,
    body=PROMOTION_BODY,
    success=201,
    response=PROMOTION,
    errors=(404, 409),
    description=(
        "Opens a request bound to the version's run and artifact digest (read from the registry). "
        "Where the environment needs no approval it is approved at once and the deployment is queued. "
        "`requested_from` (a CI run URL) is added to the justification. 409 when another request for "
        "the same model and environment is pending (pass `supersede: true` to replace it)."
    ),
)
def create_promotion(call: Call) -> Reply:
    """``RequestPromotion`` with the token's actor (``REQUEST_PROMOTION`` on the project)."""
    body = call.body
    slug = body["project"]
    actor = _checked_project(call, slug, Permission.REQUEST_PROMOTION)
    justification = body["justification"].strip()
    if body.get("requested_from"):
        justification = f"{justification}\n\nRequested from: {body['requested_from'].strip()}"
    created = approvals.RequestPromotion(
        actor,
        slug,
        body["model"],
        body["version"],
        body["target_environment"],
        justification,
        versions=_versions_provider(),
        supersede=bool(body.get("supersede", False)),
    ).run(services().session_factory)
    with db_session() as session:
        return Reply(201, _promotion_json(approvals.get_request(session, actor, created.id), utcnow()))


REQUEST_ID = (Param("request_id", "path", ID),)


@API.operation(
    "GET",
    "/promotions/{request_id}",
    operation_id="get_promotion",
    summary="One promotion request (poll its status: pending, approved, rejected, expired, superseded).",
    tag="promotions",
    permission=Permission.VIEW_APPROVALS,
    params=REQUEST_ID,
    response=PROMOTION,
)
def get_promotion(call: Call) -> Reply:
    """One request (``VIEW_APPROVALS`` on its project)."""
    with db_session() as session:
        found = approvals.get_request(session, _actor(call), call.params["request_id"])
        return Reply(200, _promotion_json(found, utcnow()))


APPROVE_BODY = obj(
    {
        "version": VERSION,
        "run_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "artifact_digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "comment": {"type": "string", "maxLength": approvals.MAX_TEXT_LENGTH},
    },
    required=["version", "run_id", "artifact_digest"],
    additionalProperties=False,
)


@API.operation(
    "POST",
    "/promotions/{request_id}/approve",
    operation_id="approve_promotion",
    summary="Approve a request (model sponsors; names the exact version, run and digest approved).",
    tag="promotions",
    permission=Permission.APPROVE_PROMOTION,
    params=REQUEST_ID,
    body=APPROVE_BODY,
    response=obj(
        {
            "promotion": PROMOTION,
            "approvals": {"type": "integer", "minimum": 0},
            "required": {"type": "integer", "minimum": 0},
        }
    ),
    errors=(409,),
    description="409 when the request is closed or expired, was already approved by this person, or "
    "the version, run or digest differ from the request's.",
)
def approve_promotion(call: Call) -> Reply:
    """``ApprovePromotion`` with the token's actor."""
    actor, request_id = _checked_id(call, "request_id", approvals.get_request)
    outcome = approvals.ApprovePromotion(
        actor,
        request_id,
        call.body.get("comment", ""),
        version=call.body["version"],
        run_id=call.body["run_id"],
        artifact_digest=call.body["artifact_digest"],
    ).run(services().session_factory)
    with db_session() as session:
        fresh = approvals.get_request(session, actor, request_id)
        return Reply(
            200,
            {
                "promotion": _promotion_json(fresh, utcnow()),
                "approvals": outcome.approvals,
                "required": outcome.required,
            },
        )


@API.operation(
    "POST",
    "/promotions/{request_id}/reject",
    operation_id="reject_promotion",
    summary="Reject a request (model sponsors; a comment is required).",
    tag="promotions",
    permission=Permission.APPROVE_PROMOTION,
    params=REQUEST_ID,
    body=obj(
        {"comment": {"type": "string", "minLength": 1, "maxLength": approvals.MAX_TEXT_LENGTH}},
        additionalProperties=False,
    ),
    response=PROMOTION,
    errors=(409,),
)
def reject_promotion(call: Call) -> Reply:
    """``RejectPromotion`` with the token's actor."""
    actor, request_id = _checked_id(call, "request_id", approvals.get_request)
    approvals.RejectPromotion(actor, request_id, call.body["comment"]).run(services().session_factory)
    with db_session() as session:
        return Reply(200, _promotion_json(approvals.get_request(session, actor, request_id), utcnow()))


# ---------------------------------------------------------------------------- deployments

DEPLOYMENT = obj(
    {
        "id": ID,
        "request_id": ID,
        **RELEASE,
        "strategy": TEXT,
        "status": TEXT,
        "created_at": TIME,
        "updated_at": TIME,
    }
)


def _deployment_json(row: Deployment) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        **_release_json(row),
        "strategy": row.strategy,
        "status": row.status,
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
    }


@API.operation(
    "GET",
    "/deployments",
    operation_id="list_deployments",
    summary="Deployments the token may view, newest first.",
    tag="deployments",
    permission=Permission.VIEW_CICD,
    params=(
        _project_param(),
        Param("model", "query", KEY),
        Param("environment", "query", ENVIRONMENT),
        Param("status", "query", {"type": "string", "pattern": "^[a-z_]{1,16}$"}),
        *PAGE_PARAMS,
    ),
    response=page_of(DEPLOYMENT),
)
def list_deployments(call: Call) -> Reply:
    """Deployments on projects where the actor holds ``VIEW_CICD``."""
    query = select(Deployment).join(Project, Deployment.project_id == Project.id)
    query = _in_projects(query, call, Permission.VIEW_CICD)
    for name, column in (
        ("model", Deployment.model),
        ("environment", Deployment.environment),
        ("status", Deployment.status),
    ):
        if call.params.get(name) is not None:
            query = query.where(column == call.params[name])
    return paged(
        call,
        newest_first(query, Deployment.id),
        _deployment_json,
        permission=Permission.VIEW_CICD,
        keyset=lambda r: r.id,
    )


DEPLOY_BODY = {
    **obj(
        {
            "project": SLUG,
            "model": KEY,
            "environment": ENVIRONMENT,
            "version": VERSION,
            "git_sha": GIT_SHA,
            "requested_from": {"type": "string", "maxLength": 2048},
        },
        required=["project", "model", "environment"],
        additionalProperties=False,
    ),
    "anyOf": [{"required": ["version"]}, {"required": ["git_sha"]}],
}


def _version_for_commit(session: Session, project: str, model: str, sha: str) -> str:
    found = [
        ref["version"]
        for ref in github.versions_for_commit(session, project, sha, find_versions=_sha_lookup())
        if ref["model"] == model
    ]
    if not found:
        raise ApiError(
            422,
            "unknown_version",
            f"no version of {project}/{model} was built from commit {sha} (looked for the "
            f"{github.TAG_GIT_SHA} tag on versions and runs, {github.MLFLOW_GIT_COMMIT_TAG} on runs, "
            "and the workflow runs GitHub reported)",
        )
    return max(found, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


@API.operation(
    "POST",
    "/deployments",
    operation_id="create_deployment",
    summary="Queue a model version (or the version built from a commit) for an environment.",
    tag="deployments",
    permission=Permission.DEPLOY,
    body=DEPLOY_BODY,
    success=201,
    response=DEPLOYMENT,
    extra_success={200: ("This version is already the newest deployment there; nothing queued.", DEPLOYMENT)},
    errors=(404, 409),
    description=(
        "Pass `version`, or `git_sha` to deploy the newest version built from that commit. Where the "
        "environment needs no approval (dev by default) this opens a promotion request that is approved "
        "at once, so the token also needs `request_promotion`. Elsewhere the deployment is queued by the "
        "approval of a promotion request (POST /api/v1/promotions): 409 until then."
    ),
)
def create_deployment(call: Call) -> Reply:
    """:func:`app.api.deployments.queue_deployment` with the token's actor (``DEPLOY``)."""
    actor = _actor(call)
    body = call.body
    slug, model = body["project"], body["model"]
    with db_session() as session:
        _project_or_404(session, actor, slug, Permission.DEPLOY)
        version = body.get("version") or _version_for_commit(session, slug, model, body["git_sha"])
    outcome = deploys.queue_deployment(
        services().session_factory,
        actor,
        project=slug,
        model=model,
        version=version,
        environment=body["environment"],
        versions=_versions_provider(),
        requested_from=body.get("requested_from"),
    )
    with db_session() as session:
        fresh = deploys.get_deployment(session, actor, outcome.deployment.id)
        return Reply(201 if outcome.created else 200, _deployment_json(fresh))


DEPLOYMENT_ID = (Param("deployment_id", "path", ID),)


@API.operation(
    "GET",
    "/deployments/{deployment_id}",
    operation_id="get_deployment",
    summary="One deployment and its status.",
    tag="deployments",
    permission=Permission.VIEW_CICD,
    params=DEPLOYMENT_ID,
    response=DEPLOYMENT,
)
def get_deployment_view(call: Call) -> Reply:
    """One deployment (``VIEW_CICD`` on its project)."""
    with db_session() as session:
        return Reply(
            200, _deployment_json(deploys.get_deployment(session, _actor(call), call.params["deployment_id"]))
        )


@API.operation(
    "POST",
    "/deployments/{deployment_id}/rollback",
    operation_id="rollback_deployment",
    summary="Roll the newest deployment of a model back to the version deployed before it.",
    tag="deployments",
    permission=Permission.ROLLBACK,
    params=DEPLOYMENT_ID,
    body=obj(
        {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_ROLLBACK_REASON}},
        additionalProperties=False,
    ),
    success=202,
    response=obj({"deployment": DEPLOYMENT, "rollback_to": DEPLOYMENT}),
    errors=(409,),
    description="Marks the deployment `rollback_queued`; the deployment job restores `rollback_to`.",
)
def rollback_deployment_view(call: Call) -> Reply:
    """:func:`app.api.deployments.rollback_deployment` with the token's actor (``ROLLBACK``)."""
    actor, deployment_id = _checked_id(call, "deployment_id", deploys.get_deployment)
    outcome = deploys.rollback_deployment(
        services().session_factory, actor, deployment_id, reason=call.body["reason"]
    )
    with db_session() as session:
        return Reply(
            202,
            {
                "deployment": _deployment_json(deploys.get_deployment(session, actor, outcome.deployment.id)),
                "rollback_to": _deployment_json(session.get(Deployment, outcome.rollback_to.id)),
            },
        )


DEPLOYMENT_ACTION = obj(
    {
        "deployment": DEPLOYMENT,
        "action": {"type": "string", "enum": list(deploy_job.ACTIONS)},
        "requested_action": nullable(TEXT),
        "reason": nullable(TEXT),
        "allowed_actions": {"type": "array", "items": TEXT},
    }
)
"""What a manual action on a deployment did: carried out at once, or recorded for the deployment job."""


def _declare_deployment_action(
    action: str,
    command: Callable[..., deploy_job.DeploymentView],
    permission: Permission,
    summary: str,
    description: str,
) -> None:
    """Declare ``POST /deployments/{id}/<action>``, calling ``command`` of :mod:`jobs.deploy`."""
    reason_required = action == deploy_job.ABORT
    body = obj(
        {"reason": {"type": "string", "minLength": 1, "maxLength": deploy_job.MAX_REASON_LENGTH}},
        required=["reason"] if reason_required else [],
        additionalProperties=False,
    )

    def handler(call: Call) -> Reply:
        actor, deployment_id = _checked_id(call, "deployment_id", deploys.get_deployment)
        reason = (call.body or {}).get("reason", "")
        view = command(services().session_factory, actor, deployment_id, reason)
        with db_session() as session:
            row = deploys.get_deployment(session, actor, deployment_id)
            payload = {
                "deployment": _deployment_json(row),
                "action": action,
                "requested_action": view.requested_action,
                "reason": view.reason,
                "allowed_actions": list(view.allowed_actions),
            }
        # Recorded for the job (it changes traffic within a poll) -> 202; done at once -> 200.
        return Reply(202 if view.requested_action is not None else 200, payload)

    handler.__name__ = handler.__qualname__ = f"{action}_deployment_view"
    handler.__doc__ = (
        f":func:`jobs.deploy.{command.__name__}` with the token's actor (``{permission.name}``)."
    )
    API.operation(
        "POST",
        f"/deployments/{{deployment_id}}/{action}",
        operation_id=f"{action}_deployment",
        summary=summary,
        tag="deployments",
        permission=permission,
        params=DEPLOYMENT_ID,
        body=body,
        success=202,
        response=DEPLOYMENT_ACTION,
        extra_success={200: ("Carried out at once (the rollout had not started).", DEPLOYMENT_ACTION)},
        errors=(409,),
        description=description,
    )(handler)


for _action, _command, _permission, _summary, _description in (
    (
        deploy_job.PROMOTE,
        deploy_job.promote_deployment,
        Permission.DEPLOY,
        "Promote a canary (running or paused) to 100 % now.",
        "Recorded on the deployment; the deployment job moves the stable alias to the canary within a poll.",
    ),
    (
        deploy_job.PAUSE,
        deploy_job.pause_deployment,
        Permission.DEPLOY,
        "Hold a rollout at its current traffic split.",
        "A queued deployment is paused at once (200); a running one by the deployment job (202).",
    ),
    (
        deploy_job.RESUME,
        deploy_job.resume_deployment,
        Permission.DEPLOY,
        "Resume a paused rollout: the current step bakes again.",
        "Recorded on the deployment; the deployment job carries it out.",
    ),
    (
        deploy_job.ABORT,
        deploy_job.abort_deployment,
        Permission.ROLLBACK,
        "Abort a rollout: all traffic back to the stable version.",
        "A queued deployment is aborted at once (200); otherwise the deployment job returns the traffic "
        "and marks it `aborted` (202). `reason` is required.",
    ),
):
    _declare_deployment_action(_action, _command, _permission, _summary, _description)


# ---------------------------------------------------------------------------- alerts

ALERT = obj(
    {
        "id": ID,
        "project": SLUG,
        "model": TEXT,
        "environment": TEXT,
        "version": TEXT,
        "column": TEXT,
        "metric": TEXT,
        "operator": TEXT,
        "threshold": nullable({"type": "number"}),
        "severity": TEXT,
        "state": {"type": "string", "enum": list(ALERT_STATES)},
        "statistic": nullable({"type": "number"}),
        "last_statistic": nullable({"type": "number"}),
        "window_start": TIME,
        "last_window_end": TIME,
        "breaching_windows": {"type": "integer"},
        "opened_at": TIME,
        "acknowledged_at": nullable(TIME),
        "acknowledge_comment": nullable(TEXT),
        "resolved_at": nullable(TIME),
    }
)


def _alert_json(alert: Alert, slug: str) -> dict[str, Any]:
    return {
        "id": alert.id,
        "project": slug,
        "model": alert.model,
        "environment": alert.environment,
        "version": alert.version,
        "column": alert.column_name,
        "metric": alert.metric,
        "operator": alert.operator,
        "threshold": _number(alert.threshold),
        "severity": alert.severity,
        "state": alert.state,
        "statistic": _number(alert.statistic),
        "last_statistic": _number(alert.last_statistic),
        "window_start": _time(alert.window_start),
        "last_window_end": _time(alert.last_window_end),
        "breaching_windows": alert.breaching_windows,
        "opened_at": _time(alert.opened_at),
        "acknowledged_at": _time(alert.acknowledged_at),
        "acknowledge_comment": alert.acknowledge_comment,
        "resolved_at": _time(alert.resolved_at),
    }


@API.operation(
    "GET",
    "/alerts",
    operation_id="list_alerts",
    summary="Alerts the token may view, newest first.",
    tag="alerts",
    permission=Permission.VIEW_MONITORING,
    params=(
        _project_param(),
        Param("state", "query", {"type": "string", "enum": list(ALERT_STATES)}),
        *PAGE_PARAMS,
    ),
    response=page_of(ALERT),
)
def list_alerts_view(call: Call) -> Reply:
    """Alerts of projects where the actor holds ``VIEW_MONITORING`` (``jobs.alerts.list_alerts``)."""
    state = call.params.get("state")

    def fetch(session: Session, offset: int | None, count: int) -> Sequence[tuple[Alert, str]]:
        start = offset or 0
        rows = alert_jobs.list_alerts(
            session,
            _actor(call),
            project=call.params.get("project"),
            states=[state] if state else None,
            limit=min(start + count, 10_000),
        )
        return rows[start : start + count]

    return paged(call, fetch, lambda row: _alert_json(*row), permission=Permission.VIEW_MONITORING)


@API.operation(
    "POST",
    "/alerts/{alert_id}/acknowledge",
    operation_id="acknowledge_alert",
    summary="Acknowledge an open alert.",
    tag="alerts",
    permission=Permission.ACK_ALERTS,
    params=(Param("alert_id", "path", ID),),
    body=obj(
        {"comment": {"type": "string", "maxLength": alert_jobs.MAX_COMMENT_LENGTH}},
        required=[],
        additionalProperties=False,
    ),
    response=ALERT,
    errors=(409,),
    description="409 when the alert is not open (already acknowledged or resolved).",
)
def acknowledge_alert(call: Call) -> Reply:
    """``jobs.alerts.acknowledge`` with the token's actor (``ACK_ALERTS`` on the alert's project)."""
    actor = _actor(call)
    alert_id = call.params["alert_id"]
    with db_session(write=True) as session:
        row = session.execute(
            select(Alert, Project.slug)
            .join(Project, Project.id == Alert.project_id)
            .where(Alert.id == alert_id)
        ).first()
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        require(actor, Permission.VIEW_MONITORING, row[1])
        alert = alert_jobs.acknowledge(session, actor, alert_id, call.body.get("comment", ""))
        return Reply(200, _alert_json(alert, row[1]))


# ---------------------------------------------------------------------------- metrics

METRIC_ROW = obj(
    {
        "environment": ENVIRONMENT,
        "version": TEXT,
        "window_start": TIME,
        "window_end": TIME,
        "column": TEXT,
        "metric": TEXT,
        "statistic": nullable({"type": "number"}),
        "p_value": nullable({"type": "number"}),
        "threshold": nullable({"type": "number"}),
        "drifted": nullable({"type": "boolean"}),
        "status": TEXT,
        "n_reference": {"type": "integer"},
        "n_current": {"type": "integer"},
        "reason": nullable(TEXT),
    }
)
_METRIC_COLUMNS = tuple(METRIC_ROW["properties"])  # the columns read: those a row shows


def _store() -> Any:
    state = api_state()
    with state.lock:
        store = state.extras.get("store")
        if store is None:
            from analytics.store import ParquetStore

            store = state.extras["store"] = ParquetStore(_settings().store_config())
    return store


def _metrics_window(call: Call) -> tuple[datetime, datetime]:
    from app.api.schema import parse_datetime

    until = parse_datetime(call.params["until"]) if "until" in call.params else utcnow()
    since = parse_datetime(call.params["since"]) if "since" in call.params else until - DEFAULT_METRICS_WINDOW
    assert since is not None and until is not None  # validated by the parameter schema
    if since >= until:
        raise ApiError(422, "invalid_input", "since must be before until")
    if until - since > MAX_METRICS_WINDOW:
        raise ApiError(422, "invalid_input", f"the window may span at most {MAX_METRICS_WINDOW.days} days")
    return since.astimezone(UTC), until.astimezone(UTC)


@API.operation(
    "GET",
    "/metrics",
    operation_id="query_metrics",
    summary="Monitoring metrics of a model over a time window (the `metrics` dataset).",
    tag="metrics",
    permission=Permission.VIEW_MONITORING,
    params=(
        _project_param(required=True),
        Param("model", "query", KEY, required=True),
        Param("environment", "query", ENVIRONMENT),
        Param("version", "query", KEY),
        Param("metric", "query", {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}),
        Param("column", "query", {"type": "string", "minLength": 1, "maxLength": 128}),
        Param("since", "query", TIME, description="Window start (default: 7 days before `until`)."),
        Param(
            "until", "query", TIME, description="Window end (default: now); at most 92 days after `since`."
        ),
        *PAGE_PARAMS,
    ),
    response={
        **page_of(METRIC_ROW),
        "properties": {
            **page_of(METRIC_ROW)["properties"],
            "status": {"type": "string", "enum": ["ok", "insufficient_data"]},
            "since": TIME,
            "until": TIME,
        },
        "required": ["items", "next_cursor", "next", "status", "since", "until"],
    },
    description="Rows whose window lies inside [since, until], ordered by window, version, column and "
    "metric. `status` is `insufficient_data` when no row matches.",
    errors=(404,),
)
def query_metrics(call: Call) -> Reply:
    """Rows of the ``metrics`` dataset (``VIEW_MONITORING`` on the project), via ``analytics.store``."""
    slug, model = call.params["project"], call.params["model"]
    _checked_project(call, slug, Permission.VIEW_MONITORING)
    since, until = _metrics_window(call)
    first = since.date()
    days = [(first + timedelta(days=n)).isoformat() for n in range((until.date() - first).days + 1)]
    filters: dict[str, Any] = {
        "project": slug,
        "model": model,
        "environment": [call.params["environment"]]
        if "environment" in call.params
        else list(ENVIRONMENT_NAMES),
        "date": days,
    }
    for name in ("version", "metric", "column"):
        if name in call.params:
            filters[name] = call.params[name]
    table = _store().read(METRICS, filters=filters, columns=list(_METRIC_COLUMNS))
    if table.num_rows:
        inside = pc.and_(
            pc.greater_equal(table["window_start"], pa.scalar(since, pa.timestamp("us", tz="UTC"))),
            pc.less_equal(table["window_end"], pa.scalar(until, pa.timestamp("us", tz="UTC"))),
        )
        table = table.filter(inside).sort_by(
            [
                ("window_start", "ascending"),
                ("version", "ascending"),
                ("column", "ascending"),
                ("metric", "ascending"),
            ]
        )
    rows = [
        {
            **row,
            "window_start": _time(row["window_start"]),
            "window_end": _time(row["window_end"]),
            "statistic": _number(row["statistic"]),
            "p_value": _number(row["p_value"]),
            "threshold": _number(row["threshold"]),
        }
        for row in (table.to_pylist() if table.num_rows else [])
    ]
    reply = paged(call, from_list(rows))
    payload = {
        **reply.payload,
        "status": "ok" if rows else "insufficient_data",
        "since": _time(since),
        "until": _time(until),
    }
    return Reply(200, payload, reply.headers)


# ---------------------------------------------------------------------------- audit

AUDIT_ENTRY = obj(
    {
        "chain": TEXT,
        "seq": {"type": "integer", "minimum": 1},
        "at": TIME,
        "actor": TEXT,
        "action": TEXT,
        "target": TEXT,
        "details": {"type": "object"},
        "prev_hash": TEXT,
        "hash": TEXT,
    }
)
CHAIN = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$"}


@API.operation(
    "GET",
    "/audit",
    operation_id="list_audit",
    summary="Audit log entries, newest first.",
    tag="audit",
    permission=Permission.VIEW_AUDIT,
    params=(
        Param("chain", "query", CHAIN, description="Chain name (default `main`)."),
        Param("action", "query", {"type": "string", "minLength": 1, "maxLength": 64}),
        Param("actor", "query", {"type": "string", "minLength": 1, "maxLength": 64}),
        *PAGE_PARAMS,
    ),
    response=page_of(AUDIT_ENTRY),
)
def list_audit(call: Call) -> Reply:
    """Entries of one chain (``VIEW_AUDIT``), by descending sequence number."""
    require(_actor(call), Permission.VIEW_AUDIT)
    chain = call.params.get("chain", audit.DEFAULT_CHAIN)
    query = select(AuditEntry).where(AuditEntry.chain == chain)
    if "action" in call.params:
        query = query.where(AuditEntry.action == call.params["action"])
    if "actor" in call.params:
        query = query.where(AuditEntry.actor == call.params["actor"])
    return paged(call, newest_first(query, AuditEntry.seq), _audit_json, keyset=lambda entry: entry.seq)


def _audit_json(entry: AuditEntry) -> dict[str, Any]:
    try:
        details = json.loads(entry.details)
    except ValueError:
        details = {"unreadable": entry.details}
    return {
        "chain": entry.chain,
        "seq": entry.seq,
        "at": _time(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": details if isinstance(details, dict) else {"value": details},
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


@API.operation(
    "POST",
    "/audit/verify",
    operation_id="verify_audit",
    summary="Verify the hash chain of the audit log (administrators).",
    tag="audit",
    permission=Permission.VERIFY_AUDIT,
    params=(Param("chain", "query", CHAIN, description="Chain name (default `main`)."),),
    response=obj(
        {
            "chain": TEXT,
            "ok": {"type": "boolean"},
            "checked": {"type": "integer", "minimum": 0},
            "first_broken_seq": nullable({"type": "integer"}),
            "reason": TEXT,
        }
    ),
)
def verify_audit(call: Call) -> Reply:
    """``jobs.audit.verify`` (``VERIFY_AUDIT``, global)."""
    require(_actor(call), Permission.VERIFY_AUDIT)
    chain = call.params.get("chain", audit.DEFAULT_CHAIN)
    with db_session() as session:
        result = audit.verify(session, chain)
    return Reply(
        200,
        {
            "chain": chain,
            "ok": result.ok,
            "checked": result.checked,
            "first_broken_seq": result.first_broken_seq,
            "reason": result.reason,
        },
    )


# ---------------------------------------------------------------------------- GitHub

WORKFLOW_RUN = obj(
    {
        "id": ID,
        "project": SLUG,
        "repository": TEXT,
        "github_run_id": {"type": "integer"},
        "run_attempt": {"type": "integer"},
        "workflow_name": TEXT,
        "event": TEXT,
        "head_sha": TEXT,
        "head_branch": nullable(TEXT),
        "status": TEXT,
        "conclusion": nullable(TEXT),
        "html_url": TEXT,
        "run_created_at": nullable(TIME),
        "run_updated_at": nullable(TIME),
        "model_versions": {"type": "array", "items": obj({"model": TEXT, "version": TEXT})},
    }
)


@API.operation(
    "GET",
    "/workflow-runs",
    operation_id="list_workflow_runs",
    summary="GitHub Actions workflow runs reported by webhooks, newest first.",
    tag="github",
    permission=Permission.VIEW_CICD,
    params=(
        _project_param(),
        Param("head_sha", "query", GIT_SHA),
        Param("branch", "query", {"type": "string", "minLength": 1, "maxLength": 255}),
        *PAGE_PARAMS,
    ),
    response=page_of(WORKFLOW_RUN),
)
def list_workflow_runs(call: Call) -> Reply:
    """``jobs.github.list_workflow_runs`` (``VIEW_CICD``)."""

    def fetch(session: Session, before: int | None, count: int) -> Sequence[Any]:
        return github.list_workflow_runs(
            session,
            _actor(call),
            project=call.params.get("project"),
            head_sha=call.params.get("head_sha"),
            branch=call.params.get("branch"),
            before_id=before,
            limit=count,
        )

    return paged(call, fetch, _workflow_run_json, permission=Permission.VIEW_CICD, keyset=lambda r: r.id)


def _workflow_run_json(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "project": run.project.slug,
        "repository": run.repository,
        "github_run_id": run.github_run_id,
        "run_attempt": run.run_attempt,
        "workflow_name": run.workflow_name,
        "event": run.event,
        "head_sha": run.head_sha,
        "head_branch": run.head_branch,
        "status": run.status,
        "conclusion": run.conclusion,
        "html_url": run.html_url,
        "run_created_at": _time(run.run_created_at),
        "run_updated_at": _time(run.run_updated_at),
        "model_versions": list(run.model_versions or []),
    }


WEBHOOK_RESULT = obj(
    {
        "outcome": {"type": "string", "enum": [github.STORED, github.ACCEPTED, github.IGNORED]},
        "event": TEXT,
        "delivery_id": TEXT,
        "workflow_run_id": nullable(ID),
        "model_versions": {"type": "array", "items": obj({"model": TEXT, "version": TEXT})},
    }
)


@API.operation(
    "POST",
    "/integrations/github/webhook",
    operation_id="github_webhook",
    summary="GitHub webhook receiver (workflow_run, push, pull_request).",
    tag="github",
    permission=None,
    auth=GITHUB_SIGNATURE,
    params=(
        Param(github.EVENT_HEADER, "header", TEXT, required=True),
        Param(github.DELIVERY_HEADER, "header", TEXT, required=True),
        Param(
            github.SIGNATURE_HEADER, "header", TEXT, required=True, description="sha256=<HMAC of the body>"
        ),
    ),
    body={"type": "object"},
    response=WEBHOOK_RESULT,
    extra_success={202: ("Verified, but not an event the studio uses: ignored.", WEBHOOK_RESULT)},
    errors=(401, 409, 429, 503),
    description=(
        "Authenticated by `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the repository's "
        "webhook secret, configured with `python -m jobs github configure`). A delivery id seen in the "
        "last 30 days is refused with 409."
    ),
)
def github_webhook(call: Call) -> Reply:
    """``jobs.github.receive_webhook``; failed signatures count toward the address's 429 limit."""
    refuse_if_blocked()
    try:
        result = github.receive_webhook(
            services().session_factory,
            headers=call.headers,
            body=call.raw_body,
            secret_key=_settings().secret_key,
            find_versions=_sha_lookup(),
        )
    except github.BadSignature as error:
        record_failure()
        raise unauthorized(str(error), error="invalid_signature") from None
    except github.MalformedDelivery as error:
        raise ApiError(400, "bad_request", str(error)) from None
    except github.ReplayedDelivery as error:
        raise ApiError(409, "replayed_delivery", str(error)) from None
    except github.SecretUnreadable as error:
        raise ApiError(503, "secret_unreadable", str(error)) from None
    return Reply(
        202 if result.outcome == github.IGNORED else 200,
        {
            "outcome": result.outcome,
            "event": result.event,
            "delivery_id": result.delivery_id,
            "workflow_run_id": result.workflow_run_id,
            "model_versions": result.model_versions,
        },
    )


def rule_paths() -> list[tuple[str, str]]:
    """``(METHOD, /api/v1/...)`` of every declared operation, in OpenAPI form."""
    return sorted((op.method, PREFIX + op.path) for op in API.operations)
