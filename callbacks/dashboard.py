"""Dashboard callbacks: greet the signed-in user with their roles per project."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, html

from app.auth import current_actor, db_session
from app.components import ids
from app.rbac import requires
from jobs.db.models import User
from jobs.permissions import Permission
from jobs.projects import list_projects


def _role_names(roles: frozenset) -> str:
    return ", ".join(sorted(role.value.replace("_", " ") for role in roles))


@dash.callback(
    Output(ids.DASHBOARD_GREETING, "children"),
    Output(ids.DASHBOARD_ROLES, "children"),
    Input(ids.DASHBOARD_GREETING, "id"),
)
@requires(Permission.VIEW_DASHBOARD)
def show_greeting(_component_id: str) -> tuple[list, html.Div | dbc.Table]:
    """Welcome line and the table of the user's projects and roles."""
    actor = current_actor()
    assert actor is not None  # @requires refused anonymous calls
    with db_session() as db:
        user = db.get(User, actor.user_id)
        display_name = user.display_name if user is not None and user.display_name else actor.username
        projects = [(project.slug, project.name) for project in list_projects(db, actor)]
    greeting = [html.P(f"Welcome, {display_name}.", className="lead mb-1")]
    if actor.is_admin:
        greeting.append(
            dbc.Badge(
                "Administrator: every project and setting is open to you", color="warning", text_color="dark"
            )
        )
    if not projects:
        return greeting, html.P("You hold no role on any project yet.", className="text-body-secondary")
    rows = [
        html.Tr([html.Td(name), html.Td(html.Code(slug)), html.Td(_role_names(actor.roles_in(slug)))])
        for slug, name in projects
    ]
    table = dbc.Table(
        [html.Thead(html.Tr([html.Th("Project"), html.Th("Slug"), html.Th("Your roles")])), html.Tbody(rows)],
        bordered=False,
        hover=True,
        size="sm",
    )
    return greeting, table
