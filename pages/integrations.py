"""Integrations: connections to outside systems."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Integrations"
DESCRIPTION = "Connections to data sources, notification channels and webhooks outside the studio."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/integrations",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=7,
    permission="view_integrations",
    layout=layout,
)
