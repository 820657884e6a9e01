"""Monitoring: drift, data quality, performance and latency of deployed models, and their alerts.

The page is a selection bar (project, model, environment, dates, window, segment) over five panels:
the feature x window drift heatmap, the drill-down into the clicked feature, performance and latency
timelines, and the alerts of the selection. The segment (a slice of the traffic, ``region=north``,
offered when the monitoring job wrote segment metrics) filters every panel but the alerts.
``callbacks.monitoring`` fills every panel; the component
ids below are the contract between the two modules (``pages`` may not import ``callbacks``, and a unit
test checks that every id a monitoring callback uses exists in this layout).
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header

NAME = "Monitoring"
DESCRIPTION = "Drift, data quality and performance of deployed models over time, and the alerts they raised."

PROJECT = "monitoring-project"
MODEL = "monitoring-model"
ENVIRONMENT = "monitoring-environment"
DATES = "monitoring-dates"
WINDOW = "monitoring-window"
SEGMENT = "monitoring-segment"
SEGMENT_HELP = "monitoring-segment-help"
STATUS = "monitoring-status"
EXPORT = "monitoring-export"
EXPORT_DOWNLOAD = "monitoring-export-download"
EXPORT_FEEDBACK = "monitoring-export-feedback"
SUMMARY = "monitoring-summary"
HEATMAP = "monitoring-drift-heatmap"
FEATURE_TITLE = "monitoring-feature-title"
FEATURE_TIMELINE = "monitoring-feature-timeline"
FEATURE_DISTRIBUTION = "monitoring-feature-distribution"
FEATURE_QUALITY = "monitoring-feature-quality"
PERFORMANCE = "monitoring-performance"
LATENCY = "monitoring-latency"
ALERTS = "monitoring-alerts"
ALERT_COMMENT = "monitoring-alert-comment"
ALERT_FEEDBACK = "monitoring-alert-feedback"
ALERTS_VERSION = "monitoring-alerts-version"
HEATMAP_SHOWN = "monitoring-heatmap-shown"
"""Store of the key of the selection whose heatmap is drawn (the selection bar sends the first one)."""
ALERT_ACK_TYPE = "monitoring-alert-ack"
"""``type`` of the pattern-matching id ``{"type": ALERT_ACK_TYPE, "alert": <alert id>}`` of ack buttons."""

GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


def _labelled(label: str, control: object, width: int | dict) -> dbc.Col:
    return dbc.Col([dbc.Label(label, class_name="small text-body-secondary mb-1"), control], **_width(width))


def _width(width: int | dict) -> dict:
    return {"md": width} if isinstance(width, int) else width


def _selection_bar() -> dbc.Card:
    controls = dbc.Row(
        [
            _labelled(
                "Project",
                dcc.Dropdown(id=PROJECT, clearable=False, placeholder="Choose a project"),
                2,
            ),
            _labelled("Model", dcc.Dropdown(id=MODEL, clearable=False, placeholder="Choose a model"), 2),
            _labelled(
                "Environment",
                dcc.Dropdown(id=ENVIRONMENT, clearable=False, placeholder="Choose an environment"),
                2,
            ),
            _labelled(
                "Dates (UTC)",
                dcc.DatePickerRange(id=DATES, display_format="YYYY-MM-DD", first_day_of_week=1),
                3,
            ),
            _labelled("Window", dbc.RadioItems(id=WINDOW, options=[], inline=True), 1),
            _labelled(
                "Segment",
                dcc.Dropdown(id=SEGMENT, disabled=True, clearable=False, placeholder="All traffic"),
                2,
            ),
        ],
        class_name="g-3",
    )
    export = html.Div(
        [
            html.Div(id=SEGMENT_HELP, className="form-text mt-0 me-3"),
            html.Div(
                [
                    html.Span(id=EXPORT_FEEDBACK, className="small text-body-secondary me-2"),
                    dbc.Button(
                        "Export CSV", id=EXPORT, color="secondary", outline=True, size="sm", disabled=True
                    ),
                    dcc.Download(id=EXPORT_DOWNLOAD),
                ],
                className="d-flex align-items-center flex-shrink-0",
            ),
        ],
        className="d-flex align-items-center justify-content-between mt-2",
    )
    return dbc.Card(dbc.CardBody([controls, export]), class_name="mb-3 shadow-sm")


def _graph(component_id: str, height: int) -> dcc.Loading:
    return dcc.Loading(
        dcc.Graph(id=component_id, config=GRAPH_CONFIG, style={"height": f"{height}px"}),
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
            html.P(id=SUMMARY, className="small text-body-secondary mb-2"),
            _graph(HEATMAP, 520),
            dcc.Store(id=HEATMAP_SHOWN),
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
            html.H2(id=FEATURE_TITLE, className="h6 mb-3"),
            dbc.Row(
                [
                    dbc.Col(_graph(FEATURE_TIMELINE, 360), lg=6),
                    dbc.Col(_graph(FEATURE_DISTRIBUTION, 360), lg=6),
                ]
            ),
            html.H3("Data quality of this window", className="h6 mt-3"),
            html.Div(id=FEATURE_QUALITY),
        ],
    )
    performance = dbc.Row(
        [
            dbc.Col(_card("Performance and label coverage", [_graph(PERFORMANCE, 360)]), lg=6),
            dbc.Col(_card("Latency", [_graph(LATENCY, 360)]), lg=6),
        ]
    )
    alerts = _card(
        "Alerts",
        [
            dbc.Input(
                id=ALERT_COMMENT,
                placeholder="Comment recorded with an acknowledgement (optional)",
                maxLength=2000,
                size="sm",
                class_name="mb-2",
            ),
            html.Div(id=ALERT_FEEDBACK, className="small mb-2"),
            html.Div(id=ALERTS),
            dcc.Store(id=ALERTS_VERSION, data=0),
        ],
    )
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            _selection_bar(),
            html.Div(id=STATUS),
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
