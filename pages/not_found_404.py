"""The page shown for an address that matches no page (Dash finds it by its module name)."""

from __future__ import annotations

import dash
from dash import dcc, html

from app.components import page_header

NAME = "Page not found"


def layout() -> html.Div:
    """Say that nothing lives here and link back to the dashboard."""
    return html.Div(
        [
            page_header(NAME, "There is no page at this address."),
            dcc.Link("Back to the dashboard", href="/"),
        ]
    )


dash.register_page(
    __name__,
    path="/not-found",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    permission="signed_in",
    nav=False,
    layout=layout,
)
