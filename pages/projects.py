"""Projects: the projects the user may see, their environments and members, and project management."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import ids, page_header

NAME = "Projects"
ARCHIVE_QUESTION = "Archive this project? It disappears from every list; its data and history are kept."


class ID:
    """Component ids shared with ``callbacks/projects.py`` (pages may not import callbacks)."""

    REFRESH = "projects-refresh"
    TABLE_WRAPPER = "projects-table-wrapper"
    CREATE_CARD = "project-create-card"
    CREATE_SLUG = "project-create-slug"
    CREATE_NAME = "project-create-name"
    CREATE_DESCRIPTION = "project-create-description"
    CREATE_BUTTON = "project-create"
    CREATE_MESSAGE = "project-create-message"
    SELECT = "project-select"
    ENVIRONMENTS = "project-environments"
    MEMBERS = "project-members"
    EDIT_CARD = "project-edit-card"
    EDIT_NAME = "project-edit-name"
    EDIT_DESCRIPTION = "project-edit-description"
    SAVE_BUTTON = "project-save"
    ARCHIVE_CONFIRM = "project-archive-confirm"
    EDIT_MESSAGE = "project-edit-message"
    MEMBERS_CARD = "project-members-card"
    MEMBER_USER = "project-member-user"
    MEMBER_ROLE = "project-member-role"
    GRANT_BUTTON = "project-member-grant"
    REVOKE_BUTTON = "project-member-revoke"
    MEMBER_MESSAGE = "project-member-message"


def _create_card() -> html.Div:
    return html.Div(
        dbc.Card(
            [
                dbc.CardHeader("Create a project"),
                dbc.CardBody(
                    [
                        dbc.Row(
                            [
                                dbc.Col(
                                    [
                                        dbc.Label("Slug", html_for=ID.CREATE_SLUG),
                                        dbc.Input(id=ID.CREATE_SLUG, placeholder="credit-risk", maxLength=64),
                                        dbc.FormText("Letters, digits, '_' and '-'; permanent."),
                                    ],
                                    md=3,
                                ),
                                dbc.Col(
                                    [
                                        dbc.Label("Name", html_for=ID.CREATE_NAME),
                                        dbc.Input(
                                            id=ID.CREATE_NAME, placeholder="Credit risk", maxLength=128
                                        ),
                                    ],
                                    md=3,
                                ),
                                dbc.Col(
                                    [
                                        dbc.Label("Description", html_for=ID.CREATE_DESCRIPTION),
                                        dbc.Input(id=ID.CREATE_DESCRIPTION, maxLength=10_000),
                                    ],
                                    md=6,
                                ),
                            ],
                            class_name="g-2 mb-2",
                        ),
                        dbc.Button("Create project", id=ID.CREATE_BUTTON, color="primary", size="sm"),
                        html.Div(id=ID.CREATE_MESSAGE, className="mt-2"),
                    ]
                ),
            ],
            class_name="mb-3",
        ),
        id=ID.CREATE_CARD,
        hidden=True,
    )


def _edit_card() -> html.Div:
    return html.Div(
        dbc.Card(
            [
                dbc.CardHeader("Edit or archive"),
                dbc.CardBody(
                    [
                        dbc.Label("Name", html_for=ID.EDIT_NAME),
                        dbc.Input(id=ID.EDIT_NAME, maxLength=128, class_name="mb-2"),
                        dbc.Label("Description", html_for=ID.EDIT_DESCRIPTION),
                        dbc.Textarea(id=ID.EDIT_DESCRIPTION, maxLength=10_000, rows=2, class_name="mb-2"),
                        html.Div(
                            [
                                dbc.Button("Save", id=ID.SAVE_BUTTON, color="primary", size="sm"),
                                dcc.ConfirmDialogProvider(
                                    dbc.Button("Archive project", color="outline-danger", size="sm"),
                                    id=ID.ARCHIVE_CONFIRM,
                                    message=ARCHIVE_QUESTION,
                                ),
                            ],
                            className="d-flex gap-2",
                        ),
                        html.Div(id=ID.EDIT_MESSAGE, className="mt-2"),
                    ]
                ),
            ],
            class_name="mb-3",
        ),
        id=ID.EDIT_CARD,
        hidden=True,
    )


def _members_card() -> html.Div:
    return html.Div(
        dbc.Card(
            [
                dbc.CardHeader("Grant or revoke a role"),
                dbc.CardBody(
                    [
                        dbc.Row(
                            [
                                dbc.Col(
                                    [
                                        dbc.Label("User", html_for=ID.MEMBER_USER),
                                        dbc.Select(
                                            id=ID.MEMBER_USER, options=[], placeholder="Choose a user"
                                        ),
                                    ],
                                    md=6,
                                ),
                                dbc.Col(
                                    [
                                        dbc.Label("Role", html_for=ID.MEMBER_ROLE),
                                        dbc.Select(
                                            id=ID.MEMBER_ROLE,
                                            options=[],
                                            placeholder="Choose a role",
                                        ),
                                    ],
                                    md=6,
                                ),
                            ],
                            class_name="g-2 mb-2",
                        ),
                        html.Div(
                            [
                                dbc.Button("Grant role", id=ID.GRANT_BUTTON, color="primary", size="sm"),
                                dbc.Button(
                                    "Revoke role", id=ID.REVOKE_BUTTON, color="outline-danger", size="sm"
                                ),
                            ],
                            className="d-flex gap-2",
                        ),
                        html.Div(id=ID.MEMBER_MESSAGE, className="mt-2"),
                    ]
                ),
            ],
            class_name="mb-3",
        ),
        id=ID.MEMBERS_CARD,
        hidden=True,
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
            html.Div(html.Div(id=ids.PROJECTS_TABLE), id=ID.TABLE_WRAPPER),
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
