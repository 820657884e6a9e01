"""Integrations: the data store, MLflow and GitHub connections, each with a live connection check."""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.integrations import (
    WebhookID,
    check_button,
    check_result,
    checking_section,
    config_view,
)

NAME = "Integrations"
DESCRIPTION = "Connections to the data store, the MLflow registry and GitHub, with a live check of each."

# The integrations and their titles (the same keys as jobs.integrations.INTEGRATIONS).
INTEGRATIONS = {"data_store": "Data store", "mlflow": "MLflow", "github": "GitHub"}
WHAT_IS_CHECKED = {
    "data_store": "Lists the data root, then writes, reads back and deletes a probe object.",
    "mlflow": "Searches the tracking server's experiments.",
    "github": "Reads the configured repository through the GitHub API (the token is never shown).",
}


def _card(integration: str) -> dbc.Col:
    checking = html.Div(
        dbc.Button("Check connection", id=check_button(integration), color="outline-primary", size="sm"),
        id=checking_section(integration),
        hidden=True,
    )
    return dbc.Col(
        dbc.Card(
            [
                dbc.CardHeader(INTEGRATIONS[integration]),
                dbc.CardBody(
                    [
                        html.Div(id=config_view(integration)),
                        html.P(WHAT_IS_CHECKED[integration], className="small text-body-secondary"),
                        checking,
                        html.Div(id=check_result(integration), className="mt-2"),
                    ]
                ),
            ],
            class_name="h-100",
        ),
        lg=4,
        class_name="mb-3",
    )


GITHUB_EVENTS = "workflow_run, push and pull_request"
REMOVE_QUESTION = (
    "Stop accepting webhooks from this repository? Its stored workflow runs stay; "
    "GitHub's deliveries will be refused until it is configured again."
)


def _labelled(label: str, control: Any, width: int) -> dbc.Col:
    return dbc.Col([dbc.Label(label, html_for=control.id, class_name="small mb-0"), control], md=width)


def _webhook_card() -> dbc.Card:
    """The repositories whose webhooks are accepted, the URL to give GitHub, and (for managers) the form."""
    manage = html.Div(
        [
            html.H3("Configure a repository", className="h6 mt-3"),
            dbc.Row(
                [
                    _labelled("Project", dbc.Select(id=WebhookID.PROJECT, options=[], size="sm"), 3),
                    _labelled(
                        "Repository",
                        dbc.Input(
                            id=WebhookID.REPOSITORY,
                            placeholder="owner/name",
                            maxLength=201,
                            size="sm",
                            autocomplete="off",
                        ),
                        3,
                    ),
                    _labelled(
                        "Webhook secret",
                        dbc.Input(
                            id=WebhookID.SECRET,
                            type="password",
                            placeholder="16 to 1024 characters",
                            maxLength=1024,
                            size="sm",
                            autocomplete="new-password",
                        ),
                        4,
                    ),
                    dbc.Col(
                        dbc.Button("Save", id=WebhookID.SAVE, color="primary", size="sm"),
                        width="auto",
                    ),
                ],
                class_name="g-2 align-items-end",
            ),
            html.P(
                "The secret is stored encrypted and never shown again; saving a configured repository "
                "replaces its secret.",
                className="small text-body-secondary mt-1 mb-2",
            ),
            dbc.Row(
                [
                    _labelled(
                        "Remove a repository",
                        dbc.Select(id=WebhookID.REMOVE_REPOSITORY, options=[], size="sm"),
                        4,
                    ),
                    dbc.Col(
                        dcc.ConfirmDialogProvider(
                            dbc.Button("Remove", color="outline-danger", size="sm"),
                            id=WebhookID.REMOVE_CONFIRM,
                            message=REMOVE_QUESTION,
                        ),
                        width="auto",
                    ),
                ],
                class_name="g-2 align-items-end",
            ),
        ],
        id=WebhookID.MANAGE,
        hidden=True,
    )
    return dbc.Card(
        [
            dbc.CardHeader("GitHub webhooks"),
            dbc.CardBody(
                [
                    html.P(
                        [
                            "In the repository's Settings → Webhooks, add this payload URL with content type "
                            f"application/json, the same secret as below, and the events {GITHUB_EVENTS}:",
                        ],
                        className="small mb-1",
                    ),
                    html.Code(id=WebhookID.URL, className="d-block mb-3 text-break"),
                    html.Div(id=WebhookID.REPOSITORIES),
                    dcc.Store(id=WebhookID.REFRESH, data=0),
                    manage,
                    html.Div(id=WebhookID.MESSAGE, className="mt-2"),
                ]
            ),
        ],
        class_name="mb-3",
    )


def layout() -> html.Div:
    """One card per integration (configuration with secrets masked, check for managers), then webhooks."""
    return html.Div(
        [page_header(NAME, DESCRIPTION), dbc.Row([_card(name) for name in INTEGRATIONS]), _webhook_card()]
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
