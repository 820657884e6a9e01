"""Integrations: the data store, MLflow and GitHub connections, each with a live connection check."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import html

from app.auth import current_actor
from app.components import page_header
from callbacks import integrations as cb
from jobs.integrations import INTEGRATIONS, TITLES
from jobs.permissions import Permission, has_permission

NAME = "Integrations"
DESCRIPTION = "Connections to the data store, the MLflow registry and GitHub, with a live check of each."

WHAT_IS_CHECKED = {
    "data_store": "Lists the data root, then writes, reads back and deletes a probe object.",
    "mlflow": "Searches the tracking server's experiments.",
    "github": "Reads the configured repository through the GitHub API (the token is never shown).",
}


def _card(integration: str, may_check: bool) -> dbc.Col:
    button = (
        dbc.Button("Check connection", id=cb.check_button(integration), color="outline-primary", size="sm")
        if may_check
        else html.P(
            "Checking needs the manage integrations permission.", className="small text-body-secondary"
        )
    )
    return dbc.Col(
        dbc.Card(
            [
                dbc.CardHeader(TITLES[integration]),
                dbc.CardBody(
                    [
                        html.Div(id=cb.config_view(integration)),
                        html.P(WHAT_IS_CHECKED[integration], className="small text-body-secondary"),
                        button,
                        html.Div(id=cb.check_result(integration), className="mt-2"),
                    ]
                ),
            ],
            class_name="h-100",
        ),
        lg=4,
        class_name="mb-3",
    )


def layout() -> html.Div:
    """One card per integration: its configuration (secrets masked) and its check."""
    may_check = has_permission(current_actor(), Permission.MANAGE_INTEGRATIONS)
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dbc.Row([_card(name, may_check) for name in INTEGRATIONS]),
        ]
    )


dash.register_page(
    __name__,
    path="/integrations",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=7,
    permission="view_integrations",
    layout=layout,
)
