"""Approvals: promotion requests and sponsor decisions."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Approvals"
DESCRIPTION = "Requests to promote a model version to staging or production, and the sponsors' decisions."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/approvals",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=5,
    permission="view_approvals",
    layout=layout,
)
