"""Admin: user accounts and studio settings."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Admin"
DESCRIPTION = "User accounts, their global administrator flag, and the studio's settings."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/admin",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=8,
    permission="admin_users",
    layout=layout,
)
