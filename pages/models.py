"""Models: registered models and their versions."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Models"
DESCRIPTION = "Registered models and their versions per environment, with the training runs behind them."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/models",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=4,
    permission="view_models",
    layout=layout,
)
