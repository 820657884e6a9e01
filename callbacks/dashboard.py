"""Dashboard callbacks: greeting and roles, monitoring KPIs, latency and accuracy timelines, recent alerts.

The monitoring parts cover the projects the user may monitor (``view_monitoring``) and read only the
``metrics`` dataset (through the per-app reader of :mod:`callbacks.monitoring`) and the alerts in the
metadata database. Component ids of those parts repeat the constants of ``pages.dashboard``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, html

from analytics import figures
from analytics.metrics import Overview, overview
from analytics.store import StoreError
from app.auth import current_actor, db_session
from app.components.ids.dashboard import ID
from app.rbac import requires
from callbacks.monitoring import SEVERITY_COLORS, metrics_reader, monitoring_projects
from jobs.alerts import list_alerts
from jobs.db.alerting import ALERT_SEVERITIES
from jobs.db.models import User
from jobs.permissions import Permission
from jobs.projects import list_projects

OVERVIEW_DAYS = 14
RECENT_ALERTS = 10


def _role_names(roles: frozenset) -> str:
    return ", ".join(sorted(role.value.replace("_", " ") for role in roles))


@dash.callback(
    Output(ID.GREETING, "children"),
    Output(ID.ROLES, "children"),
    Input(ID.GREETING, "id"),
)
@requires(Permission.VIEW_DASHBOARD)
def show_greeting(_component_id: str) -> tuple[list, html.Div | dbc.Table]:
    """Welcome line and the table of the user's projects and roles."""
    actor = current_actor()
    assert actor is not None  # @requires refused anonymous calls
    with db_session() as db:
        user = db.get(User, actor.user_id)
        display_name = user.display_name if user is not None and user.display_name else actor.username
        projects = [(project.slug, project.name) for project in list_projects(db, actor)]
    greeting = [html.P(f"Welcome, {display_name}.", className="lead mb-1")]
    if actor.is_admin:
        greeting.append(
            dbc.Badge(
                "Administrator: every project and setting is open to you", color="warning", text_color="dark"
            )
        )
    if not projects:
        return greeting, html.P("You hold no role on any project yet.", className="text-body-secondary")
    rows = [
        html.Tr([html.Td(name), html.Td(html.Code(slug)), html.Td(_role_names(actor.roles_in(slug)))])
        for slug, name in projects
    ]
    table = dbc.Table(
        [html.Thead(html.Tr([html.Th("Project"), html.Th("Slug"), html.Th("Your roles")])), html.Tbody(rows)],
        bordered=False,
        hover=True,
        size="sm",
    )
    return greeting, table


# --------------------------------------------------------------------------- monitoring KPIs


def _kpi(key: str, title: str, value: str, caption: str) -> dbc.Col:
    body = dbc.Card(
        dbc.CardBody(
            [
                html.Div(title, className="small text-body-secondary"),
                html.Div(value, className="fs-5 fw-semibold", id=f"dashboard-kpi-{key}-value"),
                html.Div(caption, className="small text-body-secondary"),
            ]
        ),
        class_name="h-100 shadow-sm",
        id=f"dashboard-kpi-{key}",
    )
    return dbc.Col(body, md=6, lg=True, class_name="mb-3")


def _kpi_cards(data: Overview, open_alerts: Mapping[str, int], monitored: int) -> dbc.Row:
    statuses = data.statuses
    per_environment = data.models_per_environment()
    models_value = " · ".join(f"{env} {count}" for env, count in per_environment.items()) or "0"
    models_caption = (
        f"models with metrics per environment, in {monitored} project(s)"
        if per_environment
        else "no model has monitoring metrics yet (run python -m jobs monitor)"
    )
    alerts_value = " · ".join(
        f"{severity} {open_alerts.get(severity, 0)}" for severity in reversed(ALERT_SEVERITIES)
    )
    alerts_caption = f"{sum(open_alerts.values())} open alert(s) not yet acknowledged"

    drifted = [s for s in statuses if s.drifted_features]
    drift_caption = (
        "on each model's latest monitored day: "
        + "; ".join(f"{s.model}/{s.environment}: {', '.join(s.drifted_features)}" for s in drifted)
        if drifted
        else "no feature drifted on any model's latest monitored day"
    )
    latencies = [s for s in statuses if s.latency_p95_ms is not None]
    slowest = max(latencies, key=lambda s: s.latency_p95_ms or 0.0, default=None)
    latency_value = f"{slowest.latency_p95_ms:,.1f} ms" if slowest else "n/a"
    latency_caption = (
        f"highest latest p95: {slowest.model}/{slowest.environment} on {slowest.last_day}"
        if slowest
        else "no latency metrics yet"
    )
    accuracies = [s for s in statuses if s.performance_metric == "accuracy" and s.performance is not None]
    weakest = min(accuracies, key=lambda s: s.performance or 0.0, default=None)
    accuracy_value = f"{weakest.performance:.3f}" if weakest and weakest.performance is not None else "n/a"
    accuracy_caption = (
        f"lowest latest accuracy: {weakest.model}/{weakest.environment}"
        + (f" ({weakest.performance_at:%Y-%m-%d})" if weakest.performance_at else "")
        if weakest
        else "no labelled window yet (labels arrive late)"
    )
    return dbc.Row(
        [
            _kpi("models", "Monitored models", models_value, models_caption),
            _kpi("alerts", "Open alerts by severity", alerts_value, alerts_caption),
            _kpi("drift", "Drifted features", str(data.drifted_features), drift_caption),
            _kpi("latency", "p95 latency", latency_value, latency_caption),
            _kpi("accuracy", "Latest accuracy", accuracy_value, accuracy_caption),
        ],
        class_name="g-3",
    )


def _lines(rows: Iterable[Mapping[str, Any]], value: str, title: str, y_title: str, empty: str) -> go.Figure:
    """One line per project/model/environment of ``value`` over ``window_start`` (names escaped)."""
    series: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault((row["project"], row["model"], row["environment"]), []).append(row)
    if not any(row.get(value) is not None for points in series.values() for row in points):
        return figures.empty_figure(empty)
    figure = go.Figure()
    for (project, model, environment), points in sorted(series.items()):
        points = sorted(points, key=lambda r: r["window_start"])
        figure.add_scatter(
            x=[p["window_start"] for p in points],
            y=[p.get(value) for p in points],
            mode="lines+markers",
            name=figures.escape_text(f"{model} · {environment}"),
            customdata=[[figures.escape_text(project)]] * len(points),
            hovertemplate="%{y:.4g}<br>project %{customdata[0]}",
            connectgaps=False,
        )
    figure.update_layout(
        title={"text": figures.escape_text(title)},
        template="plotly_white",
        yaxis={"title": {"text": y_title}},
        legend={"orientation": "h", "y": -0.15, "yanchor": "top"},
        margin={"t": 50},
    )
    return figure


@dash.callback(
    Output(ID.KPIS, "children"),
    Output(ID.LATENCY, "figure"),
    Output(ID.ACCURACY, "figure"),
    Input(ID.KPIS, "id"),
)
@requires(Permission.VIEW_DASHBOARD)
def show_monitoring_overview(_component_id: str) -> tuple[Any, go.Figure, go.Figure]:
    """KPI cards and the p95 latency and accuracy of every monitored model over its newest two weeks."""
    actor = current_actor()
    projects = monitoring_projects(actor)
    try:
        data = overview(metrics_reader(), list(projects), days=OVERVIEW_DAYS)
    except StoreError:
        message = "The stored metrics could not be read; the monitoring job's output needs attention."
        empty = figures.empty_figure(message)
        return dbc.Alert(message, color="warning"), empty, empty
    with db_session() as db:
        open_alerts = Counter(
            alert.severity for alert, _slug in list_alerts(db, actor, states=("open",), limit=10_000)
        )
    latency = _lines(data.latency, "p95_ms", "p95 latency", "ms", "no latency metrics yet")
    accuracy = _lines(
        [row for row in data.performance if row["metric"] == "accuracy"],
        "value",
        "accuracy",
        "accuracy",
        "no labelled window of a classification model yet",
    )
    return _kpi_cards(data, open_alerts, len(projects)), latency, accuracy


@dash.callback(Output(ID.ALERTS, "children"), Input(ID.ALERTS, "id"))
@requires(Permission.VIEW_DASHBOARD)
def show_recent_alerts(_component_id: str) -> Any:
    """The newest alerts of the projects the user may monitor."""
    with db_session() as db:
        recent = list_alerts(db, current_actor(), limit=RECENT_ALERTS)
    if not recent:
        return html.P(
            "No alert has been raised.", className="text-body-secondary mb-0", id="dashboard-no-alerts"
        )
    rows = [
        html.Tr(
            [
                html.Td(f"{alert.opened_at:%Y-%m-%d %H:%M}"),
                html.Td(dbc.Badge(alert.severity, color=SEVERITY_COLORS.get(alert.severity, "secondary"))),
                html.Td(alert.state),
                html.Td(html.Code(slug)),
                html.Td(f"{alert.model} · {alert.environment}"),
                html.Td(f"{alert.metric} of {alert.column_name or 'the whole model'}"),
            ]
        )
        for alert, slug in recent
    ]
    header = html.Thead(
        html.Tr([html.Th(t) for t in ("Opened (UTC)", "Severity", "State", "Project", "Model", "What")])
    )
    return dbc.Table(
        [header, html.Tbody(rows)], size="sm", hover=True, class_name="mb-0", id="dashboard-alerts-table"
    )
