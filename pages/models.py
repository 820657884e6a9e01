"""Models: registered models and their versions per environment, from the MLflow registry."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header

NAME = "Models"
DESCRIPTION = "Registered models and their versions per environment, with the training runs behind them."


class ID:
    """Component ids shared with ``callbacks/models.py`` (pages may not import callbacks)."""

    PROJECT = "models-project"
    REGISTRY = "models-registry"


def layout() -> html.Div:
    """Project selector and the registry view of that project."""
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dbc.Row(
                [
                    dbc.Col(dbc.Label("Project", html_for=ID.PROJECT, class_name="mb-0"), width="auto"),
                    dbc.Col(dbc.Select(id=ID.PROJECT, options=[]), md=5),
                ],
                align="center",
                class_name="g-2 mb-3",
            ),
            dcc.Loading(html.Div(id=ID.REGISTRY), type="default"),
        ]
    )


dash.register_page(
    __name__,
    path="/models",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=4,
    permission="view_models",
    layout=layout,
)
