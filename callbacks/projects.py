"""Projects page callbacks: list the projects the signed-in user may see."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, html

from app.auth import current_actor, db_session
from app.components import ids
from app.rbac import requires
from jobs.db.models import ENVIRONMENT_NAMES, Environment
from jobs.permissions import Permission
from jobs.projects import list_projects


def _environment_names(environments: list[Environment]) -> str:
    """Environment names in promotion order (dev, staging, prod), unknown names last."""
    rank = {name: index for index, name in enumerate(ENVIRONMENT_NAMES)}
    names = sorted((env.name for env in environments), key=lambda name: (rank.get(name, len(rank)), name))
    return ", ".join(names)


@dash.callback(Output(ids.PROJECTS_TABLE, "children"), Input(ids.PROJECTS_TABLE, "id"))
@requires(Permission.VIEW_PROJECTS)
def show_projects(_component_id: str) -> html.P | dbc.Table:
    """Table of visible projects: name, slug, description, environments and the user's roles."""
    actor = current_actor()
    with db_session() as db:
        rows = [
            html.Tr(
                [
                    html.Td(project.name),
                    html.Td(html.Code(project.slug)),
                    html.Td(project.description),
                    html.Td(_environment_names(project.environments)),
                    html.Td(
                        ", ".join(
                            sorted(role.value.replace("_", " ") for role in actor.roles_in(project.slug))
                        )
                    ),
                ]
            )
            for project in list_projects(db, actor)
        ]
    if not rows:
        return html.P("No project is visible to you yet.", className="text-body-secondary")
    header = html.Thead(
        html.Tr(
            [html.Th(title) for title in ("Project", "Slug", "Description", "Environments", "Your roles")]
        )
    )
    return dbc.Table([header, html.Tbody(rows)], bordered=False, hover=True, size="sm", id="projects-list")
