"""CI/CD: live deployments per environment (steps, analyses, actions) and GitHub workflow runs."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.cicd import ALL, ID

NAME = "CI/CD"
DESCRIPTION = "Deployments and rollbacks per environment, with the checks each release passed."

# How often the page asks for fresh deployments and runs (only while it is open: the interval lives here).
REFRESH_MS = 5_000
ENVIRONMENTS = ("dev", "staging", "prod")


# (section id, confirm id, button label, button colour, confirmation question)
ACTIONS = (
    (
        ID.PROMOTE_SECTION,
        ID.PROMOTE_CONFIRM,
        "Promote",
        "primary",
        "Promote this deployment to its next traffic step now (skipping the rest of the bake)?",
    ),
    (
        ID.PAUSE_SECTION,
        ID.PAUSE_CONFIRM,
        "Pause",
        "outline-secondary",
        "Pause this rollout at its current step?",
    ),
    (ID.RESUME_SECTION, ID.RESUME_CONFIRM, "Resume", "outline-primary", "Resume this rollout?"),
    (
        ID.ABORT_SECTION,
        ID.ABORT_CONFIRM,
        "Abort",
        "outline-danger",
        "Abort this rollout? All traffic returns to the stable version.",
    ),
    (
        ID.ROLLBACK_SECTION,
        ID.ROLLBACK_CONFIRM,
        "Roll back",
        "danger",
        "Roll back now? Traffic returns to the previous version and the environment's alias follows.",
    ),
)


def _action(section: str, confirm: str, label: str, colour: str, question: str) -> html.Span:
    return html.Span(
        dcc.ConfirmDialogProvider(
            dbc.Button(label, color=colour, size="sm", id=f"{confirm}-button"), id=confirm, message=question
        ),
        id=section,
        hidden=True,
    )


def _filters() -> dbc.Row:
    return dbc.Row(
        [
            dbc.Col(
                [
                    dbc.Label("Project", html_for=ID.PROJECT, class_name="small mb-0"),
                    dbc.Select(
                        id=ID.PROJECT, options=[{"label": "All projects", "value": ALL}], value=ALL, size="sm"
                    ),
                ],
                md=4,
            ),
            dbc.Col(
                [
                    dbc.Label("Environment", html_for=ID.ENVIRONMENT, class_name="small mb-0"),
                    dbc.Select(
                        id=ID.ENVIRONMENT,
                        options=[{"label": "All environments", "value": ALL}]
                        + [{"label": name, "value": name} for name in ENVIRONMENTS],
                        value=ALL,
                        size="sm",
                    ),
                ],
                md=3,
            ),
            dbc.Col(
                html.Span(
                    f"Refreshed every {REFRESH_MS // 1000} s while this page is open.",
                    className="small text-body-secondary",
                ),
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-3",
    )


def _pager(previous: str, info: str, following: str, older: str = "Older") -> html.Div:
    return html.Div(
        [
            dbc.Button("Newer", id=previous, color="outline-secondary", size="sm", disabled=True),
            html.Span(id=info, className="small text-body-secondary"),
            dbc.Button(older, id=following, color="outline-secondary", size="sm", disabled=True),
        ],
        className="d-flex gap-3 align-items-center mb-2",
    )


def _deployments_card() -> dbc.Card:
    detail = dbc.Card(
        [
            dbc.CardHeader(
                dbc.Row(
                    [
                        dbc.Col(
                            dbc.Label("Deployment", html_for=ID.DEPLOYMENT, class_name="mb-0"), width="auto"
                        ),
                        dbc.Col(dbc.Select(id=ID.DEPLOYMENT, options=[], size="sm")),
                    ],
                    align="center",
                    class_name="g-2",
                )
            ),
            dbc.CardBody(
                [
                    html.Div(id=ID.DETAIL),
                    dbc.Input(
                        id=ID.REASON,
                        placeholder="Reason (recorded with an abort or a rollback)",
                        maxLength=500,
                        size="sm",
                        class_name="mb-2",
                    ),
                    html.Div([_action(*action) for action in ACTIONS], className="d-flex gap-2"),
                    html.Div(id=ID.ACTION_MESSAGE, className="mt-2"),
                ]
            ),
        ]
    )
    return dbc.Card(
        [
            dbc.CardHeader("Deployments"),
            dbc.CardBody(
                [
                    dcc.Store(id=ID.DEPLOYMENTS_PAGE, data=1),
                    _pager(ID.DEPLOYMENTS_PREVIOUS, ID.DEPLOYMENTS_INFO, ID.DEPLOYMENTS_NEXT),
                    html.Div(id=ID.DEPLOYMENTS),
                    detail,
                ]
            ),
        ],
        class_name="mb-3",
    )


def _runs_card() -> dbc.Card:
    return dbc.Card(
        [
            dbc.CardHeader("GitHub workflow runs"),
            dbc.CardBody(
                [
                    dcc.Store(id=ID.RUNS_CURSORS, data=[]),
                    dcc.Store(id=ID.RUNS_NEXT_CURSOR, data=None),
                    _pager(ID.RUNS_PREVIOUS, ID.RUNS_INFO, ID.RUNS_NEXT),
                    html.Div(id=ID.RUNS),
                ]
            ),
        ],
        class_name="mb-3",
    )


def layout() -> html.Div:
    """Project and environment filters, live deployments with their actions, and GitHub's workflow runs."""
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Interval(id=ID.TICK, interval=REFRESH_MS),
            dcc.Store(id=ID.REFRESH, data=0),
            _filters(),
            _deployments_card(),
            _runs_card(),
        ]
    )


dash.register_page(
    __name__,
    path="/cicd",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=6,
    permission="view_cicd",
    layout=layout,
)
