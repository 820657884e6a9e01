"""Dashboard: the landing page: greeting and roles, monitoring KPIs, latency and accuracy, recent alerts.

``callbacks.dashboard`` fills every part; both take the component ids from ``app.components.ids.dashboard``.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.dashboard import ID

NAME = "Dashboard"


GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


def _card(title: str, body: object) -> dbc.Card:
    return dbc.Card(
        [dbc.CardHeader(title, class_name="fw-semibold"), dbc.CardBody(body)], class_name="mb-3 shadow-sm"
    )


def _graph(component_id: str) -> dcc.Loading:
    return dcc.Loading(
        dcc.Graph(id=component_id, config=GRAPH_CONFIG, style={"height": "340px"}), delay_show=250
    )


def layout() -> html.Div:
    """Greeting and roles, KPI cards, latency and accuracy timelines and recent alerts."""
    return html.Div(
        [
            page_header(NAME, "Your projects and roles, and how the models you monitor are doing."),
            html.Div(id=ID.GREETING),
            dcc.Loading(html.Div(id=ID.KPIS, className="mt-3"), delay_show=250),
            dbc.Row(
                [
                    dbc.Col(_card("p95 latency per model", _graph(ID.LATENCY)), lg=6),
                    dbc.Col(_card("Accuracy of classification models", _graph(ID.ACCURACY)), lg=6),
                ]
            ),
            _card("Recent alerts", html.Div(id=ID.ALERTS)),
            _card("Your projects and roles", html.Div(id=ID.ROLES)),
        ]
    )


dash.register_page(
    __name__,
    path="/",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=0,
    permission="view_dashboard",
    layout=layout,
)
