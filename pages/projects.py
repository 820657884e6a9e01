"""Projects: the projects the user may see, their environments and members, and project management."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.auth import current_actor
from app.components import ids, page_header
from callbacks import projects as cb
from jobs.permissions import Permission, has_permission

NAME = "Projects"


def _create_card() -> dbc.Card:
    return dbc.Card(
        [
            dbc.CardHeader("Create a project"),
            dbc.CardBody(
                [
                    dbc.Row(
                        [
                            dbc.Col(
                                [
                                    dbc.Label("Slug", html_for=cb.CREATE_SLUG),
                                    dbc.Input(id=cb.CREATE_SLUG, placeholder="credit-risk", maxLength=64),
                                    dbc.FormText("Letters, digits, '_' and '-'; permanent."),
                                ],
                                md=3,
                            ),
                            dbc.Col(
                                [
                                    dbc.Label("Name", html_for=cb.CREATE_NAME),
                                    dbc.Input(id=cb.CREATE_NAME, placeholder="Credit risk", maxLength=128),
                                ],
                                md=3,
                            ),
                            dbc.Col(
                                [
                                    dbc.Label("Description", html_for=cb.CREATE_DESCRIPTION),
                                    dbc.Input(id=cb.CREATE_DESCRIPTION, maxLength=10_000),
                                ],
                                md=6,
                            ),
                        ],
                        class_name="g-2 mb-2",
                    ),
                    dbc.Button("Create project", id=cb.CREATE_BUTTON, color="primary", size="sm"),
                    html.Div(id=cb.CREATE_MESSAGE, className="mt-2"),
                ]
            ),
        ],
        class_name="mb-3",
    )


def _edit_card() -> dbc.Card:
    return dbc.Card(
        [
            dbc.CardHeader("Edit or archive"),
            dbc.CardBody(
                [
                    dbc.Label("Name", html_for=cb.EDIT_NAME),
                    dbc.Input(id=cb.EDIT_NAME, maxLength=128, class_name="mb-2"),
                    dbc.Label("Description", html_for=cb.EDIT_DESCRIPTION),
                    dbc.Textarea(id=cb.EDIT_DESCRIPTION, maxLength=10_000, rows=2, class_name="mb-2"),
                    html.Div(
                        [
                            dbc.Button("Save", id=cb.SAVE_BUTTON, color="primary", size="sm"),
                            dcc.ConfirmDialogProvider(
                                dbc.Button("Archive project", color="outline-danger", size="sm"),
                                id=cb.ARCHIVE_CONFIRM,
                                message="Archive this project? It disappears from every list; its data and "
                                "history are kept.",
                            ),
                        ],
                        className="d-flex gap-2",
                    ),
                    html.Div(id=cb.EDIT_MESSAGE, className="mt-2"),
                ]
            ),
        ],
        class_name="mb-3",
    )


def _members_card() -> dbc.Card:
    return dbc.Card(
        [
            dbc.CardHeader("Grant or revoke a role"),
            dbc.CardBody(
                [
                    dbc.Row(
                        [
                            dbc.Col(
                                [
                                    dbc.Label("User", html_for=cb.MEMBER_USER),
                                    dbc.Select(id=cb.MEMBER_USER, options=[], placeholder="Choose a user"),
                                ],
                                md=6,
                            ),
                            dbc.Col(
                                [
                                    dbc.Label("Role", html_for=cb.MEMBER_ROLE),
                                    dbc.Select(
                                        id=cb.MEMBER_ROLE,
                                        options=cb.ROLE_OPTIONS,
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
                            dbc.Button("Grant role", id=cb.GRANT_BUTTON, color="primary", size="sm"),
                            dbc.Button("Revoke role", id=cb.REVOKE_BUTTON, color="outline-danger", size="sm"),
                        ],
                        className="d-flex gap-2",
                    ),
                    html.Div(id=cb.MEMBER_MESSAGE, className="mt-2"),
                ]
            ),
        ],
        class_name="mb-3",
    )


def layout() -> html.Div:
    """Project list, management forms (for those allowed) and the details of one project."""
    actor = current_actor()
    may_manage = has_permission(actor, Permission.MANAGE_PROJECTS)
    may_grant = has_permission(actor, Permission.MANAGE_MEMBERS)
    details = dbc.Row(
        [
            dbc.Col(
                [
                    html.H2("Environments", className="h6"),
                    html.Div(id=cb.ENVIRONMENTS),
                    html.H2("Members", className="h6 mt-3"),
                    html.Div(id=cb.MEMBERS),
                ],
                lg=6,
            ),
            dbc.Col(
                [
                    _edit_card() if may_manage else None,
                    _members_card() if may_grant else None,
                ],
                lg=6,
            ),
        ]
    )
    # Components the callbacks read stay in the page, hidden, for users who may not use them.
    hidden: list = []
    if not may_manage:
        hidden += [
            dbc.Input(id=cb.EDIT_NAME, type="hidden"),
            dbc.Input(id=cb.EDIT_DESCRIPTION, type="hidden"),
        ]
    return html.Div(
        [
            page_header(NAME, "The projects you hold a role on, with their environments and members."),
            dcc.Store(id=cb.REFRESH, data=0),
            html.Div(html.Div(id=ids.PROJECTS_TABLE), id=cb.TABLE_WRAPPER),
            _create_card() if may_manage else None,
            html.H2("Project details", className="h5 mt-4"),
            dbc.Select(id=cb.SELECT, options=[], class_name="mb-3", style={"maxWidth": "28rem"}),
            details,
            *hidden,
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
