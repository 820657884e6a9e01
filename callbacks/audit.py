"""Audit log page callbacks: filter and page through entries on the server, verify the hash chain.

Who sees what: an administrator sees every entry. Anyone else with ``VIEW_AUDIT``
sees the entries about the projects where they hold it: entries whose target is
the project (``project:<slug>``) or something inside it (``<kind>:<slug>/...``),
and entries whose details name it (``"project":"<slug>"``; the details are
canonical JSON, so the text is exact). Sign-ins and account changes without a
project stay with the administrators.

Filtering (actor, action prefix, UTC date range) and paging (:data:`PAGE_SIZE`
entries, newest first) happen in SQL, so the page stays fast on a long log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from sqlalchemy import ColumnElement, false, func, or_, select
from sqlalchemy.orm import Session

from app.auth import current_actor, db_session
from app.components.ids.audit import ID
from app.rbac import requires
from callbacks.projects import notice
from jobs.audit import DEFAULT_CHAIN, verify
from jobs.db.models import AuditEntry
from jobs.permissions import Actor, Permission, has_permission

PAGE_SIZE = 50
MAX_DETAILS_SHOWN = 600


@dataclass(frozen=True)
class AuditFilters:
    """What the entries must match (``None``: no condition).

    Attributes:
        actor: Exact username.
        action_prefix: Start of the action, e.g. ``pipeline.`` or ``user.role``.
        date_from: First UTC day included.
        date_to: Last UTC day included.
    """

    actor: str | None = None
    action_prefix: str | None = None
    date_from: date | None = None
    date_to: date | None = None


def parse_filters(
    actor: str | None, action: str | None, date_from: str | None, date_to: str | None
) -> AuditFilters:
    """Filters from the form's text.

    Raises:
        ValueError: for a date that is not ``YYYY-MM-DD`` or a range that ends before it starts.
    """

    def day(text: str | None, what: str) -> date | None:
        if not text or not text.strip():
            return None
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"the {what} date must be YYYY-MM-DD, not {text.strip()[:40]!r}") from None

    start, end = day(date_from, "from"), day(date_to, "to")
    if start and end and end < start:
        raise ValueError("the date range ends before it starts")
    return AuditFilters(
        actor=(actor or "").strip()[:64] or None,
        action_prefix=(action or "").strip()[:64] or None,
        date_from=start,
        date_to=end,
    )


def visibility(actor: Actor | None) -> ColumnElement[bool] | None:
    """The condition limiting entries to what ``actor`` may read (``None``: everything, for admins)."""
    if actor is None:
        return false()
    if actor.is_admin:
        return None
    slugs = sorted(slug for slug in actor.roles if has_permission(actor, Permission.VIEW_AUDIT, slug))
    if not slugs:
        return false()
    conditions: list[ColumnElement[bool]] = []
    for slug in slugs:
        conditions += [
            AuditEntry.target == f"project:{slug}",
            AuditEntry.target.contains(f":{slug}/", autoescape=True),
            AuditEntry.details.contains(f'"project":"{slug}"', autoescape=True),
        ]
    return or_(*conditions)


def _conditions(viewer: Actor | None, filters: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    scope = visibility(viewer)
    if scope is not None:
        conditions.append(scope)
    if filters.actor:
        conditions.append(AuditEntry.actor == filters.actor)
    if filters.action_prefix:
        conditions.append(AuditEntry.action.startswith(filters.action_prefix, autoescape=True))
    if filters.date_from:
        conditions.append(AuditEntry.at >= datetime.combine(filters.date_from, time.min, tzinfo=UTC))
    if filters.date_to:
        conditions.append(
            AuditEntry.at < datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=UTC)
        )
    return conditions


def query_entries(
    session: Session, viewer: Actor | None, filters: AuditFilters, page: int, page_size: int = PAGE_SIZE
) -> tuple[list[AuditEntry], int, int]:
    """One page of the entries ``viewer`` may read that match ``filters``, newest first.

    Returns:
        ``(entries, total matching, page number actually shown)``; a page past the end shows the last.
    """
    conditions = _conditions(viewer, filters)
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
    pages = max(1, math.ceil(total / page_size))
    page = min(max(1, page), pages)
    entries = session.scalars(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return list(entries), total, page


def _entries_table(entries: list[AuditEntry]) -> dbc.Table:
    rows = []
    for entry in entries:
        details = entry.details if entry.details != "{}" else ""
        if len(details) > MAX_DETAILS_SHOWN:
            details = details[:MAX_DETAILS_SHOWN] + " ..."
        rows.append(
            html.Tr(
                [
                    html.Td(str(entry.seq) if entry.chain == DEFAULT_CHAIN else f"{entry.chain}:{entry.seq}"),
                    html.Td(entry.at.strftime("%Y-%m-%d %H:%M:%S"), className="text-nowrap"),
                    html.Td(entry.actor),
                    html.Td(html.Code(entry.action)),
                    html.Td(entry.target),
                    html.Td(html.Small(details, className="font-monospace text-break")),
                ]
            )
        )
    header = html.Thead(
        html.Tr([html.Th(t) for t in ("Seq", "Time (UTC)", "Actor", "Action", "Target", "Details")])
    )
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, responsive=True, id="audit-table")


@dash.callback(
    Output(ID.ENTRIES, "children"),
    Output(ID.PAGE_INFO, "children"),
    Output(ID.FILTER_MESSAGE, "children"),
    Output(ID.PREVIOUS, "disabled"),
    Output(ID.NEXT, "disabled"),
    Input(ID.PAGE, "data"),
    Input(ID.APPLY, "n_clicks"),
    State(ID.ACTOR, "value"),
    State(ID.ACTION, "value"),
    State(ID.DATE_FROM, "value"),
    State(ID.DATE_TO, "value"),
)
@requires(Permission.VIEW_AUDIT)
def show_entries(
    page: int | None,
    _apply_clicks: int | None,
    actor_name: str | None,
    action: str | None,
    date_from: str | None,
    date_to: str | None,
) -> tuple[Any, str, Any, bool, bool]:
    """One page of entries matching the filters, with "page X of Y" and the paging buttons' state."""
    try:
        filters = parse_filters(actor_name, action, date_from, date_to)
    except ValueError as error:
        return dash.no_update, dash.no_update, notice("danger", str(error)), True, True
    with db_session() as db:
        entries, total, shown = query_entries(db, current_actor(), filters, page or 1)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    body: Any = (
        _entries_table(entries)
        if entries
        else html.P(
            "No audit entry matches these filters.", className="text-body-secondary", id="audit-empty"
        )
    )
    info = f"Page {shown} of {pages} · {total} entr{'y' if total == 1 else 'ies'}"
    return body, info, None, shown <= 1, shown >= pages


@dash.callback(
    Output(ID.PAGE, "data"),
    Input(ID.PREVIOUS, "n_clicks"),
    State(ID.PAGE, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_AUDIT)
def previous_page(n_clicks: int | None, page: int | None) -> int:
    """Go one page back (towards newer entries)."""
    if not n_clicks:
        raise PreventUpdate
    return max(1, (page or 1) - 1)


@dash.callback(
    Output(ID.PAGE, "data", allow_duplicate=True),
    Input(ID.NEXT, "n_clicks"),
    State(ID.PAGE, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_AUDIT)
def next_page(n_clicks: int | None, page: int | None) -> int:
    """Go one page forward (towards older entries); the listing clamps a page past the end."""
    if not n_clicks:
        raise PreventUpdate
    return (page or 1) + 1


@dash.callback(
    Output(ID.PAGE, "data", allow_duplicate=True),
    Input(ID.APPLY, "n_clicks"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_AUDIT)
def first_page_on_filter(n_clicks: int | None) -> int:
    """New filters start at the first page."""
    if not n_clicks:
        raise PreventUpdate
    return 1


@dash.callback(Output(ID.VERIFY_SECTION, "hidden"), Input(ID.VERIFY_SECTION, "id"))
@requires(Permission.VIEW_AUDIT)
def verification_hidden(_component_id: str) -> bool:
    """Reveal the verification for those who may verify (the verify callback checks again)."""
    return not has_permission(current_actor(), Permission.VERIFY_AUDIT)


@dash.callback(
    Output(ID.VERIFY_RESULT, "children"), Input(ID.VERIFY_BUTTON, "n_clicks"), prevent_initial_call=True
)
@requires(Permission.VERIFY_AUDIT)
def verify_clicked(n_clicks: int | None) -> list[dbc.Alert]:
    """Walk every chain of the audit log and say whether it is intact, or where it first breaks."""
    if not n_clicks:
        raise PreventUpdate
    with db_session() as db:
        chains = list(db.scalars(select(AuditEntry.chain).distinct().order_by(AuditEntry.chain))) or [
            DEFAULT_CHAIN
        ]
        results = [(chain, verify(db, chain)) for chain in chains]
    notices = []
    for chain, result in results:
        if result.ok:
            notices.append(
                notice(
                    "success",
                    f"Chain {chain!r} is intact: {result.checked} entries checked.",
                    f"audit-verify-{chain}",
                )
            )
        else:
            notices.append(
                notice(
                    "danger",
                    f"Chain {chain!r} is broken at seq {result.first_broken_seq}: {result.reason} "
                    f"({result.checked} entries checked).",
                    f"audit-verify-{chain}",
                )
            )
    return notices
