"""Models: registered models and their versions per environment, from the MLflow registry.

Besides the registry view, the page starts the two long jobs of a model: training a
new version and a monitoring backfill over a date range. Both run as background
callbacks with a progress bar and a cancel button; their forms are shown only to
users who may start them (the callbacks and the jobs check again).
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.models import ALL_ENVIRONMENTS, ID

NAME = "Models"
DESCRIPTION = "Registered models and their versions per environment, with the training runs behind them."
ENVIRONMENTS = ("dev", "staging", "prod")


def _labelled(label: str, control: object, component_id: str, width: int) -> dbc.Col:
    return dbc.Col([dbc.Label(label, html_for=component_id, class_name="small mb-1"), control], md=width)


def _job_card(
    title: str, inputs: list[dbc.Col], start_label: str, ids: tuple[str, str, str, str, str]
) -> dbc.Card:
    """A long job's form: its inputs, start and cancel buttons, a progress bar and the result.

    Args:
        title: Card heading.
        inputs: Labelled input columns of the form.
        start_label: Text of the start button.
        ids: Card, start button, cancel button, progress bar and result ids.
    """
    card, start, cancel, progress, result = ids
    buttons = dbc.Col(
        [
            dbc.Button(start_label, id=start, color="primary", class_name="me-2"),
            dbc.Button("Cancel", id=cancel, color="secondary", outline=True, disabled=True),
        ],
        md="auto",
        class_name="d-flex align-items-end",
    )
    return dbc.Card(
        [
            dbc.CardHeader(title),
            dbc.CardBody(
                [
                    dbc.Row([*inputs, buttons], class_name="g-2 mb-2"),
                    dbc.Progress(id=progress, value=0, label="", class_name="mb-2"),
                    html.Div(id=result),
                ]
            ),
        ],
        id=card,
        class_name="mb-3",
        style={"display": "none"},  # shown by the callback to those who may start the job
    )


def _train_card() -> dbc.Card:
    model = dbc.Input(id=ID.TRAIN_MODEL, placeholder="credit-default", maxLength=128)
    return _job_card(
        "Train new version",
        [_labelled("Model", model, ID.TRAIN_MODEL, 5)],
        "Train",
        (ID.TRAIN_CARD, ID.TRAIN_START, ID.TRAIN_CANCEL, ID.TRAIN_PROGRESS, ID.TRAIN_RESULT),
    )


def _backfill_card() -> dbc.Card:
    model = dbc.Input(id=ID.BACKFILL_MODEL, placeholder="credit-default", maxLength=128)
    environment = dbc.Select(
        id=ID.BACKFILL_ENVIRONMENT,
        options=[{"label": "all", "value": ALL_ENVIRONMENTS}]
        + [{"label": env, "value": env} for env in ENVIRONMENTS],
        value=ALL_ENVIRONMENTS,
    )
    return _job_card(
        "Monitoring backfill",
        [
            _labelled("Model", model, ID.BACKFILL_MODEL, 3),
            _labelled("Environment", environment, ID.BACKFILL_ENVIRONMENT, 2),
            _labelled("From", dbc.Input(id=ID.BACKFILL_SINCE, type="date"), ID.BACKFILL_SINCE, 2),
            _labelled("To", dbc.Input(id=ID.BACKFILL_UNTIL, type="date"), ID.BACKFILL_UNTIL, 2),
        ],
        "Backfill",
        (ID.BACKFILL_CARD, ID.BACKFILL_START, ID.BACKFILL_CANCEL, ID.BACKFILL_PROGRESS, ID.BACKFILL_RESULT),
    )


def layout() -> html.Div:
    """Project selector, the long jobs (shown to those who may start them) and the registry view."""
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
            _train_card(),
            _backfill_card(),
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
