"""CI/CD: deployments and rollbacks per environment."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "CI/CD"
DESCRIPTION = "Deployments and rollbacks per environment, with the checks each release passed."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/cicd",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=6,
    permission="view_cicd",
    layout=layout,
)
