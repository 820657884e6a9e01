"""Approvals page callbacks: the sponsors' inbox of promotion requests, decisions and new requests.

The list shows every request the user may view (``jobs.approvals.list_requests``),
pending first, each with its evidence (``jobs.approvals.promotion_evidence``: drift,
data quality and performance of the candidate against the version serving the
target environment), the approvals it has and needs, who asked and the exact
version, run id and artifact digest it binds.

Decisions and requests go through the job commands (:class:`ApprovePromotion`,
:class:`RejectPromotion`, :class:`RequestPromotion`) with the acting user; the
jobs enforce every rule (sponsor role, independence, one approval per person,
binding, expiry, quorum) and their refusals are shown as the message. The approve
form binds the version, run id and digest the sponsor was shown, so a request
whose binding changed behind the page is refused by the job. Hiding the buttons
from users who may not decide is cosmetic: ``@requires`` and the jobs check.
Everything a user typed (justifications, comments, names) is rendered as text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import current_actor, db_session, services
from app.components.ids.approvals import ANY, ID
from app.rbac import requires
from callbacks.projects import bump, notice, project_options
from jobs.approvals import (
    EVIDENCE_OK,
    ApprovePromotion,
    Evidence,
    MlflowVersions,
    RejectPromotion,
    RequestPromotion,
    VersionEvidence,
    approval_policy,
    list_requests,
    promotion_evidence,
)
from jobs.db.governance import PENDING, PROMOTION_STATUSES, PromotionRequest
from jobs.db.models import ENVIRONMENT_NAMES, User
from jobs.integrations import first_line
from jobs.permissions import Actor, Forbidden, Permission, Role, has_permission
from jobs.users import Conflict, InvalidInput

log = logging.getLogger(__name__)

MAX_SHOWN = 30
LIST_LIMIT = 500
SHOWN = {"display": "block"}
HIDDEN = {"display": "none"}
STATUS_COLORS = {
    "pending": "warning",
    "approved": "success",
    "rejected": "danger",
    "expired": "secondary",
    "superseded": "secondary",
}


def card_id(request_id: int) -> str:
    """Id of the card of one request."""
    return f"approvals-request-{request_id}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------------------- filters and form


@dash.callback(
    Output(ID.PROJECT, "options"),
    Output(ID.REQUEST_PROJECT, "options"),
    Output(ID.REQUEST_PROJECT, "value"),
    Output(ID.REQUEST_CARD, "style"),
    Input(ID.PROJECT, "id"),
)
@requires(Permission.VIEW_APPROVALS)
def fill_choices(_component_id: str) -> tuple[list[dict[str, str]], list[dict[str, str]], str | None, dict]:
    """Project filter (projects whose approvals the user sees) and the request form for those who may ask."""
    visible = [{"label": "All projects", "value": ANY}, *project_options(Permission.VIEW_APPROVALS)]
    requestable = project_options(Permission.REQUEST_PROMOTION)
    first = requestable[0]["value"] if requestable else None
    return visible, requestable, first, (SHOWN if requestable else HIDDEN)


# ---------------------------------------------------------------------------- the inbox


@dataclass(frozen=True)
class Decidable:
    """What the signed-in user may do with one request, and why not when they may not.

    Attributes:
        approve: The approve button is shown.
        reject: The reject button is shown.
        reason: Why approving is not offered (empty when it is, or when the user is no sponsor).
    """

    approve: bool
    reject: bool
    reason: str = ""


def decidable(actor: Actor | None, request: PromotionRequest) -> Decidable:
    """Which decision buttons ``actor`` gets on ``request`` (cosmetic: the jobs decide)."""
    slug = request.project.slug
    if (
        actor is None
        or request.status != PENDING
        or not has_permission(actor, Permission.APPROVE_PROMOTION, slug)
        or Role.MODEL_SPONSOR not in actor.roles.get(slug, frozenset())
    ):
        return Decidable(approve=False, reject=False)
    if actor.user_id == request.requested_by_id:
        return Decidable(False, True, "You requested this promotion: another sponsor approves it.")
    if actor.username == request.version_creator:
        return Decidable(False, True, f"You created version {request.version}: another sponsor approves it.")
    if any(approval.approver_id == actor.user_id for approval in request.approvals):
        return Decidable(False, True, "You approved this request already.")
    return Decidable(approve=True, reject=True)


def _facts(rows: Iterable[tuple[str, Any]]) -> dbc.Table:
    return dbc.Table(
        html.Tbody(
            [
                html.Tr([html.Th(label, className="fw-normal text-body-secondary"), html.Td(value)])
                for label, value in rows
            ]
        ),
        size="sm",
        borderless=True,
        class_name="mb-2",
    )


def _version_facts(facts: VersionEvidence) -> list[tuple[str, str]]:
    drift = f"{facts.drifted_checks} of {facts.drift_checks} checks drifted"
    if facts.drifted_columns:
        drift += f" ({', '.join(facts.drifted_columns)})"
    quality = f"{facts.quality_failures} of {facts.quality_checks} checks failed"
    if facts.quality_failed_columns:
        quality += f" ({', '.join(facts.quality_failed_columns)})"
    return [
        (
            "Measured in",
            f"{facts.environment}: {facts.windows} window(s), "
            f"{_when(facts.first_window_start)} to {_when(facts.last_window_end)}",
        ),
        ("Drift", drift),
        ("Data quality", quality),
    ]


def evidence_view(evidence: Evidence, request_id: int) -> html.Div:
    """The evidence of one request: candidate and current facts, then the performance comparison."""
    parts: list[Any] = [html.H3("Evidence", className="h6 mt-2")]
    if evidence.status != EVIDENCE_OK:
        parts.append(
            dbc.Alert(
                f"Insufficient data: {evidence.reason}.",
                color="secondary",
                class_name="py-2 small",
                id=f"approvals-evidence-insufficient-{request_id}",
            )
        )
        return html.Div(parts, id=f"approvals-evidence-{request_id}")
    parts.append(html.P(evidence.reason + ".", className="small text-body-secondary"))
    columns = []
    for title, facts in (
        (f"Candidate: version {evidence.candidate_version}", evidence.candidate),
        (
            f"Current: version {evidence.current_version}" if evidence.current_version else "Current",
            evidence.current,
        ),
    ):
        body = (
            _facts(_version_facts(facts))
            if facts is not None
            else html.P("No evaluated metrics.", className="small")
        )
        columns.append(dbc.Col([html.Strong(title, className="small"), body], md=6))
    parts.append(dbc.Row(columns, class_name="g-2"))
    performance_rows = []
    if evidence.comparisons:
        for comparison in evidence.comparisons:
            verdict = "better" if comparison.improved else ("same" if comparison.delta == 0 else "worse")
            performance_rows.append(
                html.Tr(
                    [
                        html.Td(comparison.metric),
                        html.Td(_number(comparison.candidate)),
                        html.Td(_number(comparison.current)),
                        html.Td(f"{comparison.delta:+.4g}"),
                        html.Td(
                            verdict,
                            className="text-success"
                            if comparison.improved
                            else "text-danger"
                            if verdict == "worse"
                            else "",
                        ),
                    ]
                )
            )
    elif evidence.candidate is not None:
        performance_rows = [
            html.Tr([html.Td(metric), html.Td(_number(value)), html.Td("n/a"), html.Td(""), html.Td("")])
            for metric, value in evidence.candidate.performance.items()
        ]
    if performance_rows:
        header = html.Thead(html.Tr([html.Th(t) for t in ("Metric", "Candidate", "Current", "Δ", "")]))
        parts.append(
            dbc.Table(
                [header, html.Tbody(performance_rows)],
                size="sm",
                class_name="mb-2",
                id=f"approvals-evidence-performance-{request_id}",
            )
        )
    return html.Div(parts, id=f"approvals-evidence-{request_id}")


def _approvals_text(request: PromotionRequest, required: int) -> list[Any]:
    given = len(request.approvals)
    items: list[Any] = [html.Span(f"{given} of {required} required", id=f"approvals-count-{request.id}")]
    for approval in request.approvals:
        line = f"{approval.approver.username} on {_when(approval.created_at)}"
        if approval.comment:
            line += f": {approval.comment}"
        items.append(html.Div(line, className="small"))
    return items


def _decision_form(request: PromotionRequest, can: Decidable) -> html.Div | None:
    if not (can.approve or can.reject):
        return None
    key = {"request": request.id}
    buttons = []
    if can.approve:
        buttons.append(
            dbc.Button("Approve", id={"type": ID.APPROVE_TYPE, **key}, color="success", class_name="me-2")
        )
    buttons.append(dbc.Button("Reject", id={"type": ID.REJECT_TYPE, **key}, color="danger", outline=True))
    return html.Div(
        [
            html.P(can.reason, className="small text-body-secondary mb-1") if can.reason else None,
            dbc.Textarea(
                id={"type": ID.COMMENT_TYPE, **key},
                placeholder="Comment (required to reject)",
                maxLength=5000,
                rows=2,
                class_name="mb-2",
            ),
            dcc.Store(
                id={"type": ID.BINDING_TYPE, **key},
                data={
                    "version": request.version,
                    "run_id": request.run_id,
                    "artifact_digest": request.artifact_digest,
                },
            ),
            html.Div(buttons),
        ],
        className="border-top pt-2",
    )


def request_card(
    request: PromotionRequest, required: int, evidence: Any, can: Decidable, decided_by: str | None
) -> dbc.Card:
    """One request: header, who and what, approvals, decision, deployment, evidence and the form."""
    status = request.status
    rows: list[tuple[str, Any]] = [
        ("Requested by", f"{request.requested_by.username} on {_when(request.created_at)}"),
        ("Justification", request.justification),
        ("Version", f"{request.version} (created by {request.version_creator})"),
        ("Run id", html.Code(request.run_id)),
        ("Artifact digest", html.Code(request.artifact_digest, className="text-break")),
        ("Approvals", _approvals_text(request, required)),
    ]
    if status == PENDING:
        rows.append(("Expires", _when(request.expires_at)))
    else:
        decision = f"{status} on {_when(request.decided_at)}"
        if decided_by:
            decision += f" by {decided_by}"
        if request.decision_comment:
            decision += f": {request.decision_comment}"
        rows.append(("Decision", decision))
    if request.deployment is not None:
        rows.append(
            (
                "Deployment",
                html.Span(
                    f"deployment {request.deployment.id} {request.deployment.status}",
                    id=f"approvals-deployment-{request.id}",
                ),
            )
        )
    if isinstance(evidence, str):
        evidence_part: Any = dbc.Alert(evidence, color="warning", class_name="py-2 small")
    else:
        evidence_part = evidence_view(evidence, request.id)
    return dbc.Card(
        [
            dbc.CardHeader(
                [
                    html.Strong(
                        f"{request.project.name} · {request.model} version {request.version} "
                        f"→ {request.environment}"
                    ),
                    dbc.Badge(
                        status,
                        color=STATUS_COLORS.get(status, "secondary"),
                        class_name="ms-2",
                        id=f"approvals-status-{request.id}",
                    ),
                ]
            ),
            dbc.CardBody([_facts(rows), evidence_part, _decision_form(request, can)]),
        ],
        class_name="mb-3",
        id=card_id(request.id),
    )


def _usernames(db: Session, user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return dict(db.execute(select(User.id, User.username).where(User.id.in_(user_ids))).all())


def _gather_evidence(store: Any, request: PromotionRequest) -> Evidence | str:
    try:
        return promotion_evidence(store, request)
    except Exception as error:  # an unreadable metrics file is a message on the card, not a crash
        log.warning("evidence of promotion request %s unreadable", request.id, exc_info=True)
        return f"The evidence cannot be read: {first_line(error)}"


@dash.callback(
    Output(ID.LIST, "children"),
    Input(ID.PROJECT, "value"),
    Input(ID.ENVIRONMENT, "value"),
    Input(ID.STATUS, "value"),
    Input(ID.DECIDED, "data"),
    Input(ID.REQUESTED, "data"),
)
@requires(Permission.VIEW_APPROVALS)
def show_requests(
    project: str | None,
    environment: str | None,
    status: str | None,
    _decided: int | None = None,
    _requested: int | None = None,
) -> Any:
    """The requests the user may view, pending first, filtered; each with its evidence and form."""
    from analytics.store import ParquetStore

    actor = current_actor()
    project = None if project in (None, "", ANY) else project
    if project is not None and not has_permission(actor, Permission.VIEW_APPROVALS, project):
        raise PreventUpdate
    status = status if status in PROMOTION_STATUSES else None
    environment = environment if environment in ENVIRONMENT_NAMES else None
    store = ParquetStore(services().settings.store_config())
    try:
        with db_session() as db:
            found = list_requests(db, actor, project=project, status=status, limit=LIST_LIMIT)
            if environment is not None:
                found = [request for request in found if request.environment == environment]
            # Newest first within each group (list_requests' order), pending before decided.
            found.sort(key=lambda request: request.status != PENDING)
            shown = found[:MAX_SHOWN]
            if not shown:
                return html.P(
                    "No promotion request matches.", className="text-body-secondary", id="approvals-empty"
                )
            policies: dict[str, dict[str, int]] = {}
            deciders = _usernames(db, {r.decided_by_id for r in shown if r.decided_by_id is not None})
            cards = []
            for request in shown:
                slug = request.project.slug
                if slug not in policies:
                    policies[slug] = approval_policy(db, slug)
                required = max(request.required_approvals, policies[slug].get(request.environment, 0))
                cards.append(
                    request_card(
                        request,
                        required,
                        _gather_evidence(store, request),
                        decidable(actor, request),
                        deciders.get(request.decided_by_id) if request.decided_by_id else None,
                    )
                )
    finally:
        store.close()
    if len(found) > MAX_SHOWN:
        cards.append(
            html.P(
                f"{len(found) - MAX_SHOWN} more request(s) not shown: narrow the filters.", className="small"
            )
        )
    return cards


# ---------------------------------------------------------------------------- decisions


def decide(actor: Actor | None, action: str, request_id: int, comment: str, binding: Any) -> dbc.Alert:
    """Approve or reject request ``request_id`` as ``actor`` through the job; its refusal is the message.

    Args:
        actor: The acting user.
        action: ``approve`` or ``reject``.
        request_id: The request.
        comment: The sponsor's comment (required by the job to reject).
        binding: The version, run id and artifact digest the sponsor was shown.
    """
    if actor is None:
        raise PreventUpdate
    sessions = services().session_factory
    binding = binding if isinstance(binding, dict) else {}
    try:
        if action == "approve":
            outcome = ApprovePromotion(
                actor,
                request_id,
                comment,
                version=str(binding.get("version", "")),
                run_id=str(binding.get("run_id", "")),
                artifact_digest=str(binding.get("artifact_digest", "")),
            ).run(sessions)
            if outcome.deployment is not None:
                text = (
                    f"Request {request_id} approved ({outcome.approvals} of {outcome.required}); "
                    f"deployment {outcome.deployment.id} queued."
                )
            else:
                text = (
                    f"Approval recorded: {outcome.approvals} of {outcome.required} for request {request_id}."
                )
        else:
            RejectPromotion(actor, request_id, comment).run(sessions)
            text = f"Request {request_id} rejected."
    except Forbidden as error:
        return notice("danger", f"Refused: {error}", "approvals-decision-result")
    except (Conflict, InvalidInput) as error:
        return notice("warning", str(error), "approvals-decision-result")
    return notice("success", text, "approvals-decision-result")


def _by_request(values: list[Any] | None, ids: list[Any] | None) -> dict[int, Any]:
    found = {}
    for value, component in zip(values or [], ids or [], strict=False):
        if isinstance(component, dict) and isinstance(component.get("request"), int):
            found[component["request"]] = value
    return found


@dash.callback(
    Output(ID.MESSAGE, "children"),
    Output(ID.DECIDED, "data"),
    Input({"type": ID.APPROVE_TYPE, "request": ALL}, "n_clicks"),
    Input({"type": ID.REJECT_TYPE, "request": ALL}, "n_clicks"),
    State({"type": ID.COMMENT_TYPE, "request": ALL}, "value"),
    State({"type": ID.COMMENT_TYPE, "request": ALL}, "id"),
    State({"type": ID.BINDING_TYPE, "request": ALL}, "data"),
    State({"type": ID.BINDING_TYPE, "request": ALL}, "id"),
    State(ID.DECIDED, "data"),
    prevent_initial_call=True,
)
@requires(Permission.APPROVE_PROMOTION)
def decision_clicked(
    _approve_clicks: list[Any],
    _reject_clicks: list[Any],
    comments: list[Any],
    comment_ids: list[Any],
    bindings: list[Any],
    binding_ids: list[Any],
    decided: int | None,
) -> tuple[dbc.Alert, int]:
    """Approve or reject the request whose button was clicked, with the comment typed on its card."""
    trigger = dash.ctx.triggered_id
    clicked = dash.ctx.triggered[0].get("value") if dash.ctx.triggered else None
    if not isinstance(trigger, dict) or not clicked:
        raise PreventUpdate  # buttons (re)appearing, not a click
    request_id = trigger.get("request")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise PreventUpdate
    action = "approve" if trigger.get("type") == ID.APPROVE_TYPE else "reject"
    comment = _by_request(comments, comment_ids).get(request_id)
    binding = _by_request(bindings, binding_ids).get(request_id)
    outcome = decide(
        current_actor(), action, request_id, comment if isinstance(comment, str) else "", binding
    )
    return outcome, bump(decided)


# ---------------------------------------------------------------------------- new requests


def request_promotion(
    actor: Actor | None,
    project: str | None,
    model: str | None,
    version: str | None,
    environment: str | None,
    justification: str | None,
    supersede: bool,
) -> dbc.Alert:
    """Ask for a promotion as ``actor`` through the job (the registry binds run id and digest)."""
    if actor is None:
        raise PreventUpdate
    settings = services().settings
    try:
        request = RequestPromotion(
            actor,
            project or "",
            (model or "").strip(),
            (version or "").strip(),
            environment or "",
            justification or "",
            versions=MlflowVersions(settings.mlflow_tracking_uri, settings.mlflow_registry_uri),
            supersede=bool(supersede),
        ).run(services().session_factory)
    except Forbidden as error:
        return notice("danger", f"Refused: {error}", "approvals-request-result")
    except (Conflict, InvalidInput) as error:
        return notice("warning", str(error), "approvals-request-result")
    if request.deployment is not None:
        text = f"Request {request.id} needs no approval in {request.environment}: deployment queued."
    else:
        text = f"Request {request.id} created: {request.required_approvals} sponsor approval(s) needed."
    return notice("success", text, "approvals-request-result")


@dash.callback(
    Output(ID.REQUEST_MESSAGE, "children"),
    Output(ID.REQUESTED, "data"),
    Input(ID.REQUEST_SUBMIT, "n_clicks"),
    State(ID.REQUEST_PROJECT, "value"),
    State(ID.REQUEST_MODEL, "value"),
    State(ID.REQUEST_VERSION, "value"),
    State(ID.REQUEST_ENVIRONMENT, "value"),
    State(ID.REQUEST_JUSTIFICATION, "value"),
    State(ID.REQUEST_SUPERSEDE, "value"),
    State(ID.REQUESTED, "data"),
    prevent_initial_call=True,
)
@requires(Permission.REQUEST_PROMOTION)
def request_clicked(
    clicks: int | None,
    project: str | None,
    model: str | None,
    version: str | None,
    environment: str | None,
    justification: str | None,
    supersede: bool | None,
    requested: int | None,
) -> tuple[dbc.Alert, Any]:
    """Create the promotion request the form describes."""
    if not clicks:
        raise PreventUpdate
    outcome = request_promotion(
        current_actor(), project, model, version, environment, justification, bool(supersede)
    )
    return outcome, (bump(requested) if outcome.color == "success" else dash.no_update)
