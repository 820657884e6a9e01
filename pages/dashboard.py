"""Dashboard: the landing page, greeting the user with their roles per project."""

from __future__ import annotations

import dash
from dash import html

from app.components import ids, page_header

NAME = "Dashboard"


def layout() -> html.Div:
    """Greeting and roles (filled in by ``callbacks.dashboard``)."""
    return html.Div(
        [
            page_header(NAME, "Your projects and the roles you hold on each."),
            html.Div(id=ids.DASHBOARD_GREETING),
            html.Div(id=ids.DASHBOARD_ROLES, className="mt-3"),
        ]
    )


dash.register_page(
    __name__,
    path="/",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=0,
    permission="view_dashboard",
    layout=layout,
)
