"""Pipeline: each project's ML pipeline stages as a DAG, with their configuration, locks and last run."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import dash_cytoscape as cyto
from dash import dcc, html

from app.components import page_header
from callbacks import pipeline as cb
from jobs.db.models import PIPELINE_STAGES
from jobs.pipelines import STAGE_TITLES

NAME = "Pipeline"
DESCRIPTION = (
    "The eight stages of each project's pipeline, from ingestion to feedback, "
    "with their settings, locks and last run."
)


def _legend() -> html.Div:
    swatches = [
        html.Span(
            [
                html.Span(
                    className="d-inline-block rounded-circle me-1",
                    style={"width": "0.8rem", "height": "0.8rem", "backgroundColor": colour},
                ),
                cb.STATUS_LABELS[status],
            ],
            className="me-3",
        )
        for status, colour in cb.STATUS_COLOURS.items()
    ]
    swatches.append(html.Span("square with a dark border: locked · dashed border: incomplete configuration"))
    return html.Div(swatches, className="small text-body-secondary mb-2", id="pipeline-legend")


def layout() -> html.Div:
    """Project selector, DAG, stage table and the panel of the selected stage."""
    stage_options = [{"label": STAGE_TITLES[stage], "value": stage} for stage in PIPELINE_STAGES]
    node_panel = dbc.Card(
        [
            dbc.CardHeader(
                dbc.Row(
                    [
                        dbc.Col(dbc.Label("Stage", html_for=cb.STAGE, class_name="mb-0"), width="auto"),
                        dbc.Col(
                            dbc.Select(
                                id=cb.STAGE, options=stage_options, value=PIPELINE_STAGES[0], size="sm"
                            )
                        ),
                    ],
                    align="center",
                    class_name="g-2",
                )
            ),
            dbc.CardBody(
                [
                    html.Div(id=cb.NODE_INFO),
                    html.Div(id=cb.NODE_FORM),
                    dbc.Input(
                        id=cb.LOCK_REASON,
                        placeholder="Reason for locking or unlocking (optional)",
                        maxLength=500,
                        size="sm",
                        class_name="mb-2",
                    ),
                    html.Div(
                        [
                            dbc.Button(
                                "Save configuration",
                                id=cb.SAVE_BUTTON,
                                color="primary",
                                size="sm",
                                disabled=True,
                            ),
                            dbc.Button("Lock", id=cb.LOCK_BUTTON, color="dark", size="sm", disabled=True),
                            dbc.Button(
                                "Unlock", id=cb.UNLOCK_BUTTON, color="outline-dark", size="sm", disabled=True
                            ),
                        ],
                        className="d-flex gap-2",
                    ),
                    html.Div(id=cb.NODE_MESSAGE, className="mt-2"),
                ]
            ),
        ]
    )
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Store(id=cb.REFRESH, data=0),
            dcc.Store(id=cb.NODE_VERSION),
            dbc.Row(
                [
                    dbc.Col(dbc.Label("Project", html_for=cb.PROJECT, class_name="mb-0"), width="auto"),
                    dbc.Col(dbc.Select(id=cb.PROJECT, options=[]), md=5),
                ],
                align="center",
                class_name="g-2 mb-2",
            ),
            _legend(),
            cyto.Cytoscape(
                id=cb.DAG,
                elements=[],
                layout={"name": "preset", "fit": True, "padding": 40},
                stylesheet=cb.DAG_STYLESHEET,
                style={"width": "100%", "height": "220px"},
                className="border rounded mb-3 bg-body",
                userZoomingEnabled=False,
                userPanningEnabled=False,
                boxSelectionEnabled=False,
                autoungrabify=True,
                autounselectify=False,
                wheelSensitivity=1,
            ),
            dbc.Row(
                [
                    dbc.Col(html.Div(id=cb.STAGE_TABLE), lg=6),
                    dbc.Col(node_panel, lg=6),
                ]
            ),
        ]
    )


dash.register_page(
    __name__,
    path="/pipeline",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=2,
    permission="view_pipeline",
    layout=layout,
)
