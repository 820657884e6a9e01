"""Monitoring: drift, data quality, performance and latency of deployed models, and their alerts.

The page is a selection bar (project, model, environment, dates, window, segment) over five panels:
the feature x window drift heatmap, the drill-down into the clicked feature, performance and latency
timelines, and the alerts of the selection. The segment (a slice of the traffic, ``region=north``,
offered when the monitoring job wrote segment metrics) filters every panel but the alerts.
``callbacks.monitoring`` fills every panel; the component
ids of ``app.components.ids.monitoring`` are the contract between the two modules (a unit test checks
that every id a monitoring callback uses exists in this layout).
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.monitoring import ID

NAME = "Monitoring"
DESCRIPTION = "Drift, data quality and performance of deployed models over time, and the alerts they raised."

GRAPH_CONFIG = {"displaylogo": False, "responsive": True}
PLACEHOLDER_FIGURE = {"data": [], "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False}}}
"""What a graph draws until its callback answers: no axes (an empty figure lays out and measures axes,
and the page has five graphs to draw twice at first render)."""


def _labelled(label: str, control: object, width: int | dict) -> dbc.Col:
    return dbc.Col([dbc.Label(label, class_name="small text-body-secondary mb-1"), control], **_width(width))


def _width(width: int | dict) -> dict:
    return {"md": width} if isinstance(width, int) else width


def _selection_bar() -> dbc.Card:
    controls = dbc.Row(
        [
            _labelled(
                "Project",
                dcc.Dropdown(id=ID.PROJECT, clearable=False, placeholder="Choose a project"),
                2,
            ),
            _labelled("Model", dcc.Dropdown(id=ID.MODEL, clearable=False, placeholder="Choose a model"), 2),
            _labelled(
                "Environment",
                dcc.Dropdown(id=ID.ENVIRONMENT, clearable=False, placeholder="Choose an environment"),
                2,
            ),
            _labelled(
                "Dates (UTC)",
                dcc.DatePickerRange(id=ID.DATES, display_format="YYYY-MM-DD", first_day_of_week=1),
                3,
            ),
            _labelled("Window", dbc.RadioItems(id=ID.WINDOW, options=[], inline=True), 1),
            _labelled(
                "Segment",
                dcc.Dropdown(id=ID.SEGMENT, disabled=True, clearable=False, placeholder="All traffic"),
                2,
            ),
        ],
        class_name="g-3",
    )
    export = html.Div(
        [
            html.Div(id=ID.SEGMENT_HELP, className="form-text mt-0 me-3"),
            html.Div(
                [
                    html.Span(id=ID.EXPORT_FEEDBACK, className="small text-body-secondary me-2"),
                    dbc.Button(
                        "Export CSV", id=ID.EXPORT, color="secondary", outline=True, size="sm", disabled=True
                    ),
                    dcc.Download(id=ID.EXPORT_DOWNLOAD),
                ],
                className="d-flex align-items-center flex-shrink-0",
            ),
        ],
        className="d-flex align-items-center justify-content-between mt-2",
    )
    return dbc.Card(dbc.CardBody([controls, export]), class_name="mb-3 shadow-sm")


def _graph(component_id: str, height: int) -> dcc.Loading:
    return dcc.Loading(
        dcc.Graph(
            id=component_id, figure=PLACEHOLDER_FIGURE, config=GRAPH_CONFIG, style={"height": f"{height}px"}
        ),
        type="default",
        delay_show=250,
    )


def _card(title: str, body: list, **kwargs: object) -> dbc.Card:
    return dbc.Card(
        [dbc.CardHeader(title, class_name="fw-semibold"), dbc.CardBody(body)],
        class_name="mb-3 shadow-sm",
        **kwargs,
    )


def layout() -> html.Div:
    """Selection bar, drift heatmap, feature drill-down, performance, latency and alerts."""
    heatmap = _card(
        "Drift by feature and window",
        [
            html.P(id=ID.SUMMARY, className="small text-body-secondary mb-2"),
            _graph(ID.HEATMAP, 520),
            dcc.Store(id=ID.HEATMAP_SHOWN),
            html.P(
                "Colour: drift statistic relative to its threshold (1 = at the threshold). "
                "Click a cell to inspect that feature and window.",
                className="small text-body-secondary mb-0",
            ),
        ],
    )
    detail = _card(
        "Feature detail",
        [
            html.H2(id=ID.FEATURE_TITLE, className="h6 mb-3"),
            dbc.Row(
                [
                    dbc.Col(_graph(ID.FEATURE_TIMELINE, 360), lg=6),
                    dbc.Col(_graph(ID.FEATURE_DISTRIBUTION, 360), lg=6),
                ]
            ),
            html.H3("Data quality of this window", className="h6 mt-3"),
            html.Div(id=ID.FEATURE_QUALITY),
        ],
    )
    performance = dbc.Row(
        [
            dbc.Col(_card("Performance and label coverage", [_graph(ID.PERFORMANCE, 360)]), lg=6),
            dbc.Col(_card("Latency", [_graph(ID.LATENCY, 360)]), lg=6),
        ]
    )
    alerts = _card(
        "Alerts",
        [
            dbc.Input(
                id=ID.ALERT_COMMENT,
                placeholder="Comment recorded with an acknowledgement (optional)",
                maxLength=2000,
                size="sm",
                class_name="mb-2",
            ),
            html.Div(id=ID.ALERT_FEEDBACK, className="small mb-2"),
            html.Div(id=ID.ALERTS),
            dcc.Store(id=ID.ALERTS_VERSION, data=0),
        ],
    )
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            _selection_bar(),
            html.Div(id=ID.STATUS),
            heatmap,
            detail,
            performance,
            alerts,
        ]
    )


dash.register_page(
    __name__,
    path="/monitoring",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=3,
    permission="view_monitoring",
    layout=layout,
)
