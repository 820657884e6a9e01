"""Integrations: the data store, MLflow and GitHub connections, each with a live connection check."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import html

from app.components import page_header

NAME = "Integrations"
DESCRIPTION = "Connections to the data store, the MLflow registry and GitHub, with a live check of each."

# The integrations and their titles (the same keys as jobs.integrations.INTEGRATIONS).
INTEGRATIONS = {"data_store": "Data store", "mlflow": "MLflow", "github": "GitHub"}
WHAT_IS_CHECKED = {
    "data_store": "Lists the data root, then writes, reads back and deletes a probe object.",
    "mlflow": "Searches the tracking server's experiments.",
    "github": "Reads the configured repository through the GitHub API (the token is never shown).",
}


def _slug(integration: str) -> str:
    return integration.replace("_", "-")


def _card(integration: str) -> dbc.Col:
    # Ids shared with callbacks/integrations.py: integration-{config,check,result,checking}-<name>.
    name = _slug(integration)
    checking = html.Div(
        dbc.Button("Check connection", id=f"integration-check-{name}", color="outline-primary", size="sm"),
        id=f"integration-checking-{name}",
        hidden=True,
    )
    return dbc.Col(
        dbc.Card(
            [
                dbc.CardHeader(INTEGRATIONS[integration]),
                dbc.CardBody(
                    [
                        html.Div(id=f"integration-config-{name}"),
                        html.P(WHAT_IS_CHECKED[integration], className="small text-body-secondary"),
                        checking,
                        html.Div(id=f"integration-result-{name}", className="mt-2"),
                    ]
                ),
            ],
            class_name="h-100",
        ),
        lg=4,
        class_name="mb-3",
    )


def layout() -> html.Div:
    """One card per integration: its configuration (secrets masked) and its check (for managers)."""
    return html.Div([page_header(NAME, DESCRIPTION), dbc.Row([_card(name) for name in INTEGRATIONS])])


dash.register_page(
    __name__,
    path="/integrations",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=7,
    permission="view_integrations",
    layout=layout,
)
