"""Audit log: the append-only record of sign-ins and changes, filterable, paged, and its verification."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.audit import ID

NAME = "Audit log"
DESCRIPTION = "The append-only, hash-chained record of every sign-in and change, and its verification."


def _filters() -> dbc.Row:
    def column(label: str, component_id: str, **options: object) -> dbc.Col:
        return dbc.Col(
            [
                dbc.Label(label, html_for=component_id, class_name="small mb-0"),
                dbc.Input(id=component_id, size="sm", **options),
            ],
            md=3,
        )

    return dbc.Row(
        [
            column("Actor (username)", ID.ACTOR, placeholder="e.g. admin", maxLength=64),
            column("Action starts with", ID.ACTION, placeholder="e.g. pipeline.", maxLength=64),
            column("From (UTC day)", ID.DATE_FROM, type="date"),
            column("To (UTC day)", ID.DATE_TO, type="date"),
            dbc.Col(
                dbc.Button("Apply filters", id=ID.APPLY, color="primary", size="sm"),
                width="auto",
                class_name="mt-2",
            ),
        ],
        class_name="g-2 mb-2 align-items-end",
    )


def layout() -> html.Div:
    """Filters, the paged entries and (revealed for administrators) the chain verification."""
    verification = html.Div(
        [
            dbc.Button("Verify chain", id=ID.VERIFY_BUTTON, color="outline-primary", size="sm"),
            html.Div(id=ID.VERIFY_RESULT, className="mt-2"),
        ],
        className="mb-3",
        id=ID.VERIFY_SECTION,
        hidden=True,
    )
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            verification,
            dcc.Store(id=ID.PAGE, data=1),
            _filters(),
            html.Div(id=ID.FILTER_MESSAGE),
            html.Div(
                [
                    dbc.Button("Newer", id=ID.PREVIOUS, color="outline-secondary", size="sm", disabled=True),
                    html.Span(id=ID.PAGE_INFO, className="small text-body-secondary"),
                    dbc.Button("Older", id=ID.NEXT, color="outline-secondary", size="sm", disabled=True),
                ],
                className="d-flex gap-3 align-items-center mb-2",
            ),
            html.Div(id=ID.ENTRIES),
        ]
    )


dash.register_page(
    __name__,
    path="/audit",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=9,
    permission="view_audit",
    layout=layout,
)
