"""Projects: the projects the user may see."""

from __future__ import annotations

import dash
from dash import html

from app.components import ids, page_header

NAME = "Projects"


def layout() -> html.Div:
    """Heading and the project table (filled in by ``callbacks.projects``)."""
    return html.Div(
        [
            page_header(NAME, "The projects you hold a role on, with their environments."),
            html.Div(id=ids.PROJECTS_TABLE),
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
