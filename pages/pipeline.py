"""Pipeline: each project's ML pipeline stages as a DAG, with their configuration, locks and last run."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.pipeline import ID

NAME = "Pipeline"
DESCRIPTION = (
    "The eight stages of each project's pipeline, from ingestion to feedback, "
    "with their settings, locks and last run."
)


def layout() -> html.Div:
    """Project selector, DAG, stage table and the panel of the selected stage (filled by callbacks)."""
    node_panel = dbc.Card(
        [
            dbc.CardHeader(
                dbc.Row(
                    [
                        dbc.Col(dbc.Label("Stage", html_for=ID.STAGE, class_name="mb-0"), width="auto"),
                        dbc.Col(dbc.Select(id=ID.STAGE, options=[], value="ingestion", size="sm")),
                    ],
                    align="center",
                    class_name="g-2",
                )
            ),
            dbc.CardBody(
                [
                    html.Div(id=ID.NODE_INFO),
                    html.Div(id=ID.NODE_FORM),
                    dbc.Input(
                        id=ID.LOCK_REASON,
                        placeholder="Reason for locking or unlocking (optional)",
                        maxLength=500,
                        size="sm",
                        class_name="mb-2",
                    ),
                    html.Div(
                        [
                            dbc.Button(
                                "Save configuration",
                                id=ID.SAVE_BUTTON,
                                color="primary",
                                size="sm",
                                disabled=True,
                            ),
                            dbc.Button("Lock", id=ID.LOCK_BUTTON, color="dark", size="sm", disabled=True),
                            dbc.Button(
                                "Unlock", id=ID.UNLOCK_BUTTON, color="outline-dark", size="sm", disabled=True
                            ),
                        ],
                        className="d-flex gap-2",
                    ),
                    html.Div(id=ID.NODE_MESSAGE, className="mt-2"),
                ]
            ),
        ]
    )
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Store(id=ID.REFRESH, data=0),
            dcc.Store(id=ID.NODE_VERSION),
            dbc.Row(
                [
                    dbc.Col(dbc.Label("Project", html_for=ID.PROJECT, class_name="mb-0"), width="auto"),
                    dbc.Col(dbc.Select(id=ID.PROJECT, options=[]), md=5),
                ],
                align="center",
                class_name="g-2 mb-2",
            ),
            # A fixed height: content arriving later must not move the graph (cytoscape caches its position).
            html.Div(id=ID.LEGEND, className="small text-body-secondary mb-2", style={"minHeight": "1.5rem"}),
            # The graph is mounted by the callback once the stages are known (see callbacks/pipeline.py).
            html.Div(id=ID.DAG_CONTAINER, style={"minHeight": "236px"}),
            dbc.Row(
                [
                    dbc.Col(html.Div(id=ID.STAGE_TABLE), lg=6),
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
