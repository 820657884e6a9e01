"""Projects: the projects the user may see, their environments and members, and project management."""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.projects import ID

NAME = "Projects"
ARCHIVE_QUESTION = "Archive this project? It disappears from every list; its data and history are kept."


def _hidden_card(title: str, body: list[Any], card_id: str) -> html.Div:
    """A form card, hidden until the callbacks reveal it to the users who may use it."""
    return html.Div(
        dbc.Card([dbc.CardHeader(title), dbc.CardBody(body)], class_name="mb-3"), id=card_id, hidden=True
    )


def _field(label: str, control: Any, width: int, *notes: Any) -> dbc.Col:
    return dbc.Col([dbc.Label(label, html_for=control.id), control, *notes], md=width)


def _create_card() -> html.Div:
    fields = dbc.Row(
        [
            _field(
                "Slug",
                dbc.Input(id=ID.CREATE_SLUG, placeholder="credit-risk", maxLength=64),
                3,
                dbc.FormText("Letters, digits, '_' and '-'; permanent."),
            ),
            _field("Name", dbc.Input(id=ID.CREATE_NAME, placeholder="Credit risk", maxLength=128), 3),
            _field("Description", dbc.Input(id=ID.CREATE_DESCRIPTION, maxLength=10_000), 6),
        ],
        class_name="g-2 mb-2",
    )
    return _hidden_card(
        "Create a project",
        [
            fields,
            dbc.Button("Create project", id=ID.CREATE_BUTTON, color="primary", size="sm"),
            html.Div(id=ID.CREATE_MESSAGE, className="mt-2"),
        ],
        ID.CREATE_CARD,
    )


def _edit_card() -> html.Div:
    buttons = html.Div(
        [
            dbc.Button("Save", id=ID.SAVE_BUTTON, color="primary", size="sm"),
            dcc.ConfirmDialogProvider(
                dbc.Button("Archive project", color="outline-danger", size="sm"),
                id=ID.ARCHIVE_CONFIRM,
                message=ARCHIVE_QUESTION,
            ),
        ],
        className="d-flex gap-2",
    )
    return _hidden_card(
        "Edit or archive",
        [
            dbc.Label("Name", html_for=ID.EDIT_NAME),
            dbc.Input(id=ID.EDIT_NAME, maxLength=128, class_name="mb-2"),
            dbc.Label("Description", html_for=ID.EDIT_DESCRIPTION),
            dbc.Textarea(id=ID.EDIT_DESCRIPTION, maxLength=10_000, rows=2, class_name="mb-2"),
            buttons,
            html.Div(id=ID.EDIT_MESSAGE, className="mt-2"),
        ],
        ID.EDIT_CARD,
    )


def _members_card() -> html.Div:
    choices = dbc.Row(
        [
            _field("User", dbc.Select(id=ID.MEMBER_USER, options=[], placeholder="Choose a user"), 6),
            _field("Role", dbc.Select(id=ID.MEMBER_ROLE, options=[], placeholder="Choose a role"), 6),
        ],
        class_name="g-2 mb-2",
    )
    buttons = html.Div(
        [
            dbc.Button("Grant role", id=ID.GRANT_BUTTON, color="primary", size="sm"),
            dbc.Button("Revoke role", id=ID.REVOKE_BUTTON, color="outline-danger", size="sm"),
        ],
        className="d-flex gap-2",
    )
    return _hidden_card(
        "Grant or revoke a role",
        [choices, buttons, html.Div(id=ID.MEMBER_MESSAGE, className="mt-2")],
        ID.MEMBERS_CARD,
    )


def layout() -> html.Div:
    """Project list, the details of one project, and the management forms (revealed by permission)."""
    details = dbc.Row(
        [
            dbc.Col(
                [
                    html.H2("Environments", className="h6"),
                    html.Div(id=ID.ENVIRONMENTS),
                    html.H2("Members", className="h6 mt-3"),
                    html.Div(id=ID.MEMBERS),
                ],
                lg=6,
            ),
            dbc.Col([_edit_card(), _members_card()], lg=6),
        ]
    )
    return html.Div(
        [
            page_header(NAME, "The projects you hold a role on, with their environments and members."),
            dcc.Store(id=ID.REFRESH, data=0),
            html.Div(html.Div(id=ID.TABLE), id=ID.TABLE_WRAPPER),
            _create_card(),
            html.H2("Project details", className="h5 mt-4"),
            dbc.Select(id=ID.SELECT, options=[], class_name="mb-3", style={"maxWidth": "28rem"}),
            details,
        ]
    )


dash.register_page(
    __name__,
    path="/projects",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=1,
    permission="view_projects",
    layout=layout,
)
