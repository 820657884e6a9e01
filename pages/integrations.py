"""Integrations: the data store, MLflow and GitHub connections, each with a live connection check."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

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


class WebhookID:
    """Component ids of the GitHub webhook card, shared with ``callbacks/integrations.py``."""

    URL = "integration-github-webhook-url"
    REPOSITORIES = "integration-github-repositories"
    REFRESH = "integration-github-refresh"
    MANAGE = "integration-github-manage"
    PROJECT = "integration-github-project"
    REPOSITORY = "integration-github-repository"
    SECRET = "integration-github-secret"  # noqa: S105 - a component id, not a password
    SAVE = "integration-github-save"
    REMOVE_REPOSITORY = "integration-github-remove-repository"
    REMOVE_CONFIRM = "integration-github-remove-confirm"
    MESSAGE = "integration-github-message"


GITHUB_EVENTS = "workflow_run, push and pull_request"
REMOVE_QUESTION = (
    "Stop accepting webhooks from this repository? Its stored workflow runs stay; "
    "GitHub's deliveries will be refused until it is configured again."
)


def _webhook_card() -> dbc.Card:
    """The repositories whose webhooks are accepted, the URL to give GitHub, and (for managers) the form."""
    manage = html.Div(
        [
            html.H3("Configure a repository", className="h6 mt-3"),
            dbc.Row(
                [
                    dbc.Col(
                        [
                            dbc.Label("Project", html_for=WebhookID.PROJECT, class_name="small mb-0"),
                            dbc.Select(id=WebhookID.PROJECT, options=[], size="sm"),
                        ],
                        md=3,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("Repository", html_for=WebhookID.REPOSITORY, class_name="small mb-0"),
                            dbc.Input(
                                id=WebhookID.REPOSITORY,
                                placeholder="owner/name",
                                maxLength=201,
                                size="sm",
                                autocomplete="off",
                            ),
                        ],
                        md=3,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("Webhook secret", html_for=WebhookID.SECRET, class_name="small mb-0"),
                            dbc.Input(
                                id=WebhookID.SECRET,
                                type="password",
                                placeholder="16 to 1024 characters",
                                maxLength=1024,
                                size="sm",
                                autocomplete="new-password",
                            ),
                        ],
                        md=4,
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
                    dbc.Col(
                        [
                            dbc.Label(
                                "Remove a repository",
                                html_for=WebhookID.REMOVE_REPOSITORY,
                                class_name="small mb-0",
                            ),
                            dbc.Select(id=WebhookID.REMOVE_REPOSITORY, options=[], size="sm"),
                        ],
                        md=4,
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
