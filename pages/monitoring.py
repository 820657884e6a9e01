"""Monitoring: drift, data quality and performance of deployed models."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Monitoring"
DESCRIPTION = "Drift, data quality and performance of deployed models over time, and the alerts they raised."


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/monitoring",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=3,
    permission="view_monitoring",
    layout=layout,
)
