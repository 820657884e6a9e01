"""Audit log: the append-only record of sign-ins and changes."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Audit log"
DESCRIPTION = "The append-only, hash-chained record of every sign-in and change, and its verification."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/audit",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=9,
    permission="view_audit",
    layout=layout,
)
