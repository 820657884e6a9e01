"""Pipeline: each project's ML pipeline stages."""

from __future__ import annotations

import dash
from dash import html

from app.components import page_header

NAME = "Pipeline"
DESCRIPTION = (
    "The eight stages of each project's pipeline, from ingestion to feedback, "
    "with their settings, locks and last run."
)


def layout() -> html.Div:
    """Heading and what the page holds."""
    return html.Div(page_header(NAME, DESCRIPTION))


dash.register_page(
    __name__,
    path="/pipeline",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=2,
    permission="view_pipeline",
    layout=layout,
)
