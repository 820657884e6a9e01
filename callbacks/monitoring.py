"""Monitoring page callbacks: selection, drift heatmap and drill-down, performance, latency, alerts, export.

Every callback declares one permission and re-checks the project it is asked about: the project
slug, model, environment and dates arrive from the browser and are parsed and validated here, and a
project outside the signed-in user's monitoring roles gets exactly what an empty selection gets (no
data, and no hint whether the project exists). Data comes from ``analytics.metrics`` (the
``metrics``/``profiles`` datasets written by the monitoring job), figures from ``analytics.figures``.

The metrics reader, and why it is kept per app. ``analytics.metrics.MetricsReader`` caches decoded
metrics files (a page re-reads the same year of daily files for every panel) and its
``ParquetStore`` keeps one DuckDB connection per process. Building them per request would throw the
cache away each time, so :func:`metrics_reader` creates one lazily per app in
``server.extensions[READER_KEY]``: one per worker process (after a fork, the store opens its own
connection and filesystem, see ``ParquetStore``), and tests building several apps get one each.
``StudioServices`` (app/auth.py) is the natural owner of the store; until it exposes one this module
keeps it beside the services.

Component ids are those of ``app.components.ids.monitoring``, shared with ``pages.monitoring``.
"""

from __future__ import annotations

import html as html_text
import logging
import math
import re
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from flask import current_app

from analytics import figures
from analytics.metrics import (
    PAGE_METRICS,
    DriftMatrix,
    Finding,
    InvalidQuery,
    MetricsQuery,
    MetricsReader,
    drift_matrix,
    export_csv,
    feature_detail,
    latency_series,
    performance_series,
    period_length,
)
from analytics.store import ParquetStore, StoreError
from app.auth import current_actor, db_session, services
from app.components.ids.monitoring import ID
from app.rbac import requires
from jobs.alerts import acknowledge, list_alerts
from jobs.db.alerting import Alert
from jobs.permissions import Actor, Forbidden, Permission, has_permission
from jobs.projects import list_projects
from jobs.users import Conflict, InvalidInput

log = logging.getLogger(__name__)
T = TypeVar("T")

READER_KEY = "mms.metrics_reader"
DEFAULT_RANGE_DAYS = 30
MAX_ALERTS_SHOWN = 50
MAX_TEXT_INPUT = 256
MAX_SEGMENT_VALUES = 20
"""The monitoring job's cap on a segment column's values per window (``jobs._monitor_segments``)."""
WINDOW_LABELS = {"day": "Daily", "hour": "Hourly"}
NO_DATA = "no monitoring data for this selection"
PERFORMANCE_METRICS = {"classification": ("accuracy", "roc_auc"), "regression": ("rmse", "mae")}
SEVERITY_COLORS = {"critical": "danger", "warning": "warning", "info": "info"}
STATUS_COLORS = {"ok": "success", "warning": "warning", "drift": "warning", "error": "danger"}
SHARE_CHECKS = frozenset({"missing_share", "out_of_range_share", "new_category_share"})
CHECK_LABELS = {
    "missing_share": "Missing values (null + NaN)",
    "out_of_range_share": "Outside the reference range",
    "new_category_share": "Categories the reference never had",
    "schema": "Schema: columns the reference does not know",
    "freshness_lag_s": "Freshness: time from the last request to the window end",
    "row_count": "Requests in the window",
    "profile": "Profile",
    "corrupt_file": "Unreadable input file",
    "bad_partition": "Misplaced input file",
    "write_failed": "Results not written",
}

SELECTION_INPUTS = [
    Input(ID.DATES, "start_date"),
    Input(ID.DATES, "end_date"),
    Input(ID.WINDOW, "value"),
]
SELECTION_STATES = [State(ID.PROJECT, "value"), State(ID.MODEL, "value"), State(ID.ENVIRONMENT, "value")]


def _panel_inputs(**extra: Input) -> dict[str, Input]:
    """Inputs of the panels a segment filters (alerts are the whole traffic's: they keep SELECTION_INPUTS).

    New objects for every callback: Dash records the keyword of a dependency on the object itself,
    so one ``Input`` shared by two dict-signature callbacks would hand one the other's keywords.
    """
    return {
        "start": Input(ID.DATES, "start_date"),
        "end": Input(ID.DATES, "end_date"),
        "window": Input(ID.WINDOW, "value"),
        **extra,
        "segment": Input(ID.SEGMENT, "value"),
    }


def _panel_states(**extra: State) -> dict[str, State]:
    """States naming the model of the selection (new objects per callback, see :func:`_panel_inputs`)."""
    return {
        "project": State(ID.PROJECT, "value"),
        "model": State(ID.MODEL, "value"),
        "environment": State(ID.ENVIRONMENT, "value"),
        **extra,
    }


# --------------------------------------------------------------------------- shared helpers


def metrics_reader() -> MetricsReader:
    """The metrics reader of the app serving the request (created on first use, see the module doc)."""
    extensions = current_app.extensions
    reader = extensions.get(READER_KEY)
    if reader is None:
        store = ParquetStore(services().settings.store_config())
        reader = extensions.setdefault(READER_KEY, MetricsReader(store))
    return reader


def monitoring_projects(actor: Actor | None) -> dict[str, str]:
    """Slug -> name of the (non-archived) projects ``actor`` may monitor, by slug."""
    if actor is None:
        return {}
    with db_session() as db:
        projects = list_projects(db, actor)
        return {p.slug: p.name for p in projects if has_permission(actor, Permission.VIEW_MONITORING, p.slug)}


def _allowed_project(actor: Actor | None, project: object) -> str | None:
    """``project`` when it is a slug ``actor`` may monitor, else ``None`` (forged or stale values)."""
    if not isinstance(project, str) or len(project) > MAX_TEXT_INPUT:
        return None
    return project if project in monitoring_projects(actor) else None


def _parse_day(value: object) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def selection_query(
    project: object,
    model: object,
    environment: object,
    start: object,
    end: object,
    window: object,
    segment: object = None,
) -> MetricsQuery | str:
    """The validated query of the page's selection, or the message to show instead.

    The project must be one the signed-in user may monitor; any other value (a forged slug, one the
    user lost access to, an unknown one) gives the same "no monitoring data" message. ``segment`` is
    ``None`` or empty for the whole traffic.
    """
    if _allowed_project(current_actor(), project) is None:
        return "Choose a project." if not project else NO_DATA
    if not model or not environment:
        return "Choose a model and an environment."
    start_day, end_day = _parse_day(start), _parse_day(end)
    if start_day is None or end_day is None:
        return "Choose a date range."
    if not isinstance(window, str):
        return "Choose a window."
    if segment is not None and not (isinstance(segment, str) and len(segment) <= MAX_TEXT_INPUT):
        return "Choose a segment."
    try:
        return MetricsQuery(
            project,  # type: ignore[arg-type]
            model,  # type: ignore[arg-type]
            environment,  # type: ignore[arg-type]
            start_day,
            end_day,
            window,
            segment or None,
        )
    except InvalidQuery as error:
        return f"Cannot show this selection: {error}."


def _read_failed(error: StoreError) -> str:
    log.warning("monitoring page: metrics could not be read: %s", error)
    return (
        "The stored metrics of this selection could not be read; the monitoring job's output needs attention."
    )


def _describe(query: MetricsQuery) -> str:
    return f"{query.model} in {query.environment}, {query.start} to {query.end}"


def _window_label(moment: datetime, window: str) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if window == "hour" else moment.strftime("%Y-%m-%d")


def _period_label(period: timedelta) -> str:
    if period % timedelta(days=7) == timedelta(0):
        weeks = period // timedelta(days=7)
        return "week" if weeks == 1 else f"{weeks}-week period"
    if period % timedelta(days=1) == timedelta(0):
        return "day"
    return f"{int(period.total_seconds() // 3600)}-hour period"


# --------------------------------------------------------------------------- the selection bar

SELECTION_BAR = {
    "projects": Output(ID.PROJECT, "options"),
    "project": Output(ID.PROJECT, "value"),
    "project_placeholder": Output(ID.PROJECT, "placeholder"),
    "models": Output(ID.MODEL, "options"),
    "model": Output(ID.MODEL, "value"),
    "environments": Output(ID.ENVIRONMENT, "options"),
    "environment": Output(ID.ENVIRONMENT, "value"),
    "first_day": Output(ID.DATES, "min_date_allowed"),
    "last_day": Output(ID.DATES, "max_date_allowed"),
    "start": Output(ID.DATES, "start_date"),
    "end": Output(ID.DATES, "end_date"),
    "month": Output(ID.DATES, "initial_visible_month"),
    "windows": Output(ID.WINDOW, "options"),
    "window": Output(ID.WINDOW, "value"),
    "segments": Output(ID.SEGMENT, "options"),
    "segment": Output(ID.SEGMENT, "value"),
    "segments_disabled": Output(ID.SEGMENT, "disabled"),
    "export_disabled": Output(ID.EXPORT, "disabled"),
    "export_title": Output(ID.EXPORT, "title"),
    "status": Output(ID.STATUS, "children"),
    # The heatmap of the default selection comes with the selection itself: the page's first
    # render then needs one round trip after its layout, not two (see show_drift_heatmap).
    "heatmap": Output(ID.HEATMAP, "figure", allow_duplicate=True),
    "summary": Output(ID.SUMMARY, "children", allow_duplicate=True),
    "segment_help": Output(ID.SEGMENT_HELP, "children", allow_duplicate=True),
    "heatmap_shown": Output(ID.HEATMAP_SHOWN, "data", allow_duplicate=True),
}


def _empty_bar(projects: dict[str, str], project: str | None, message: str, color: str) -> dict[str, Any]:
    bar: dict[str, Any] = dict.fromkeys(SELECTION_BAR)
    bar.update(
        projects=[{"label": name, "value": slug} for slug, name in projects.items()],
        project=project,
        project_placeholder="Choose a project" if projects else "No project with monitoring access",
        models=[],
        environments=[],
        windows=[{"label": label, "value": unit, "disabled": True} for unit, label in WINDOW_LABELS.items()],
        segments=[],
        segments_disabled=True,
        export_disabled=True,
        export_title="Choose a model first",
        status=dbc.Alert(message, color=color, id="monitoring-empty"),
        heatmap=figures.empty_figure(message),
        summary=message,
        segment_help="",
        heatmap_shown=None,
    )
    return bar


def _segment_help(query: MetricsQuery | None, segments: Sequence[str] = ()) -> str:
    """The note under the selection: what the segment filter shows."""
    if query is not None and query.segment is not None:
        return (
            f"Every panel shows the traffic of {query.segment} only (alerts cover the whole traffic; "
            "distributions are kept for the whole traffic)."
        )
    text = (
        "Segments (the monitoring job's metrics per value of a segment_* log column with at most "
        f"{MAX_SEGMENT_VALUES} values) filter every panel but the alerts"
    )
    if not segments:
        return text + "."
    verb = "is" if len(segments) == 1 else "are"
    return f"{text}; {', '.join(segments)} {verb} also monitored for drift as a column."


@dash.callback(
    output=SELECTION_BAR,
    inputs={
        "project": Input(ID.PROJECT, "value"),
        "model": Input(ID.MODEL, "value"),
        "environment": Input(ID.ENVIRONMENT, "value"),
    },
    state={"window": State(ID.WINDOW, "value")},
    prevent_initial_call="initial_duplicate",
)
@requires(Permission.VIEW_MONITORING)
def show_selection(project: object, model: object, environment: object, window: object) -> dict[str, Any]:
    """The whole selection bar in one answer (one round trip from a choice to the figures).

    Projects are those the user may monitor (first one when none is chosen yet); a model and an
    environment are kept when the newly chosen project or model still has them, else the first model
    and ``prod`` (or the first environment) are taken. The range is reset to the newest 30 days
    (7 for hourly windows) of the chosen model; the window unit is kept when it has metrics.
    """
    actor = current_actor()
    projects = monitoring_projects(actor)
    if project is None and projects:
        project = next(iter(projects))
    if not isinstance(project, str) or project not in projects:
        message = "You hold no project with monitoring access." if not projects else NO_DATA
        return _empty_bar(projects, None, message, "secondary")
    reader = metrics_reader()
    with reader.consistent_listing():
        return _fill_bar(actor, projects, project, model, environment, window)


def _fill_bar(
    actor: Actor | None,
    projects: dict[str, str],
    project: str,
    model: object,
    environment: object,
    window: object,
) -> dict[str, Any]:
    """:func:`show_selection` for a project the user may monitor."""
    reader = metrics_reader()
    try:
        models = reader.models(project)
        model = model if model in models else (models[0] if models else None)
        environments = reader.environments(project, model) if isinstance(model, str) else []
        if environment not in environments:
            environment = "prod" if "prod" in environments else (environments[0] if environments else None)
        if not isinstance(model, str) or not isinstance(environment, str):
            days, units = [], []
        else:
            days, units = (
                reader.dates(project, model, environment),
                reader.windows(project, model, environment),
            )
    except (StoreError, InvalidQuery) as error:
        log.warning("monitoring page: cannot list the metrics of %s: %s", project, error)
        return _empty_bar(projects, project, _read_failed(error), "warning")
    bar = _empty_bar(projects, project, "", "info")
    bar.update(
        models=[{"label": m, "value": m} for m in models],
        model=model,
        environments=[{"label": e, "value": e} for e in environments],
        environment=environment,
    )
    if not days or not units:
        where = f"{model} in {environment}" if model and environment else "this project"
        message = (
            f"No metrics yet for {where}. "
            f"Run the monitoring job (python -m jobs monitor --project {project})."
        )
        bar.update(
            status=dbc.Alert(message, color="info", id="monitoring-empty"),
            heatmap=figures.empty_figure(message),
            summary=message,
        )
        return bar
    unit = window if window in units else units[0]
    first, last = days[0], days[-1]
    start = max(first, last - timedelta(days=(DEFAULT_RANGE_DAYS if unit == "day" else 7) - 1))
    query = MetricsQuery(project, model, environment, start, last, unit)
    try:
        segments = reader.segments(project, model, environment, last, unit)
    except StoreError as error:
        log.warning("monitoring page: cannot list the segments of %s/%s: %s", project, model, error)
        segments = []
    heatmap = _heatmap_or_message(query)
    may_export = has_permission(actor, Permission.EXPORT_DATA, project)
    bar.update(
        first_day=first.isoformat(),
        last_day=last.isoformat(),
        start=start.isoformat(),
        end=last.isoformat(),
        month=last.isoformat(),
        windows=[{"label": WINDOW_LABELS[u], "value": u, "disabled": u not in units} for u in WINDOW_LABELS],
        window=unit,
        segments=[{"label": "All traffic", "value": ""}] + [{"label": s, "value": s} for s in segments],
        segment="",
        segments_disabled=not segments,
        export_disabled=not may_export,
        export_title=(
            "Download the shown metrics as CSV"
            if may_export
            else "Your roles on this project do not allow exports"
        ),
        status=None,
        heatmap=heatmap[0],
        summary=heatmap[1],
        segment_help=heatmap[2],
        heatmap_shown=_shown_key(query),
    )
    return bar


# --------------------------------------------------------------------------- drift


def _range_of(query: MetricsQuery) -> tuple[str, str, str, date, date, str]:
    """Project, model, environment, first and last day and window unit: what every metrics reader takes."""
    return (query.project, query.model, query.environment, query.start, query.end, query.window)


def _matrix(query: MetricsQuery) -> DriftMatrix:
    return drift_matrix(metrics_reader(), *_range_of(query), query.segment)


def _memoized(query: MetricsQuery, name: Hashable, compute: Callable[[], T]) -> T:
    """A figure of the selection, built once per version of its metrics files.

    Building the figures (plotly validates every cell) costs more than reading the cached metrics, and
    every visit of a page asks for the same default selection. The result holds no user data (the
    caller has checked the project), so one copy serves every user. The files are listed once for
    the key and the reads behind ``compute`` (``MetricsReader.consistent_listing``).
    """
    reader = metrics_reader()
    with reader.consistent_listing():
        return reader.memoized((name, query, reader.signature(query)), compute)


def _summary(matrix: DriftMatrix) -> str:
    drifted_columns = sorted({column for column, _ in matrix.drifted})
    text = (
        f"{len(matrix.columns)} feature(s) over {matrix.windows} {matrix.query.window} window(s); "
        f"{len(matrix.drifted)} drifted feature-window(s)"
    )
    if drifted_columns:
        text += f" in {', '.join(drifted_columns)}"
    if matrix.grouped:
        text += f". Each cell shows the worst {matrix.query.window} of its {_period_label(matrix.period)}."
    return text + "."


@dash.callback(
    output=[
        Output(ID.HEATMAP, "figure", allow_duplicate=True),
        Output(ID.SUMMARY, "children", allow_duplicate=True),
        Output(ID.SEGMENT_HELP, "children", allow_duplicate=True),
        Output(ID.HEATMAP_SHOWN, "data", allow_duplicate=True),
    ],
    inputs=_panel_inputs(),
    state=_panel_states(shown=State(ID.HEATMAP_SHOWN, "data")),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_MONITORING)
def show_drift_heatmap(
    start: object,
    end: object,
    window: object,
    project: object,
    model: object,
    environment: object,
    segment: object = None,
    shown: object = None,
) -> tuple[go.Figure, str, str, list[str] | None]:
    """Feature x window drift heatmap of the selection, a one-line summary and the segment note.

    The selection bar sends the heatmap of the selection it sets (:func:`show_selection`) together
    with its key in ``HEATMAP_SHOWN``; the range and window it sets then trigger this callback, which
    leaves that heatmap as it is. Any later change of range, window or segment is drawn here.
    """
    query = selection_query(project, model, environment, start, end, window, segment)
    if isinstance(query, str):
        return figures.empty_figure(query), query, "", None
    key = _shown_key(query)
    if shown == key:
        raise PreventUpdate
    return (*_heatmap_or_message(query), key)


def _shown_key(query: MetricsQuery) -> list[str]:
    """What identifies the heatmap on screen (JSON, kept by the browser in ``HEATMAP_SHOWN``)."""
    fields = (query.project, query.model, query.environment, query.start, query.end, query.window)
    return [*map(str, fields), query.segment or ""]


def _heatmap_or_message(query: MetricsQuery) -> tuple[go.Figure, str, str]:
    try:
        return _memoized(query, "heatmap", lambda: _heatmap(query))
    except StoreError as error:
        message = _read_failed(error)
        return figures.empty_figure(message), message, ""


def _heatmap(query: MetricsQuery) -> tuple[go.Figure, str, str]:
    matrix = _matrix(query)
    if matrix.empty:
        message = f"No drift metrics yet for {_describe(query)}."
        return figures.empty_figure(message, "Drift"), message, _segment_help(query)
    figure = figures.drift_heatmap(list(matrix.rows))
    figure.update_layout(height=max(320, 140 + 26 * len(matrix.columns)), margin={"t": 30})
    return figure, _summary(matrix), _segment_help(query, matrix.segments)


def _clicked_cell(click: object) -> tuple[str, datetime] | None:
    """``(column, window start)`` of a heatmap click, ``None`` for anything malformed.

    ``dcc.Graph`` reports a heatmap cell by its axis labels (``x``, ``y``; it drops the cell's
    ``customdata`` because a heatmap point number is a pair): the feature label is the column name
    HTML-escaped by ``analytics.figures``, the window label an ISO day or ``YYYY-MM-DD HH:MM``, UTC.
    The raw ``customdata`` pair, when a client sends it, is read first.
    """
    try:
        point = click["points"][0]  # type: ignore[index]
        raw = point.get("customdata")
        labelled = not (isinstance(raw, list) and len(raw) >= 2)
        column, window = (point["y"], point["x"]) if labelled else (raw[0], raw[1])
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    if not isinstance(column, str) or not isinstance(window, str) or not 0 < len(column) <= MAX_TEXT_INPUT:
        return None
    try:
        moment = datetime.fromisoformat(window[:40])
    except ValueError:
        return None
    column = html_text.unescape(column) if labelled else column
    return column, (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC))


def _format_value(finding: Finding) -> str:
    value = finding.value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if finding.check in SHARE_CHECKS:
        return f"{value:.2%}"
    if finding.check == "freshness_lag_s":
        return f"{value:,.0f} s"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _format_threshold(finding: Finding) -> str:
    if finding.threshold is None:
        return ""
    shown = Finding(finding.check, finding.column, finding.threshold, None, "", "")
    return ("≤ " if finding.check != "row_count" else "") + _format_value(shown)


def quality_table(findings: Sequence[Finding]) -> html.Div | dbc.Table:
    """The data-quality findings as a table (every text a plain string)."""
    if not findings:
        return html.P("No data-quality metrics for this window.", className="text-body-secondary")
    header = html.Thead(html.Tr([html.Th(t) for t in ("Check", "Value", "Threshold", "Status", "Detail")]))
    rows = [
        html.Tr(
            [
                html.Td(CHECK_LABELS.get(f.check, f.check)),
                html.Td(_format_value(f)),
                html.Td(_format_threshold(f)),
                html.Td(
                    dbc.Badge(f.status.replace("_", " "), color=STATUS_COLORS.get(f.status, "secondary"))
                ),
                html.Td(f.detail, className="small"),
            ]
        )
        for f in findings
    ]
    return dbc.Table(
        [header, html.Tbody(rows)], size="sm", hover=True, class_name="mb-0", id="monitoring-quality-table"
    )


@dash.callback(
    output=[
        Output(ID.FEATURE_TITLE, "children"),
        Output(ID.FEATURE_TIMELINE, "figure"),
        Output(ID.FEATURE_DISTRIBUTION, "figure"),
        Output(ID.FEATURE_QUALITY, "children"),
    ],
    inputs=_panel_inputs(click=Input(ID.HEATMAP, "clickData")),
    state=_panel_states(),
)
@requires(Permission.VIEW_MONITORING)
def show_feature_detail(
    start: object,
    end: object,
    window: object,
    click: object,
    project: object,
    model: object,
    environment: object,
    segment: object = None,
) -> tuple[str, go.Figure, go.Figure, Any]:
    """Drill-down into the clicked feature, computed alongside the heatmap.

    The clicked feature stays in focus when the range or window changes (its worst window of the new
    range when the clicked one is outside it); until a cell is clicked, or when the selection has no
    such feature, the worst cell of the heatmap is shown. A click reads that feature alone: the
    drift matrix of every feature is needed only to find the worst cell.
    """
    query = selection_query(project, model, environment, start, end, window, segment)
    if isinstance(query, str):
        return _no_detail(query)
    reader = metrics_reader()
    try:
        with reader.consistent_listing():
            clicked = _clicked_cell(click)
            if clicked is not None:
                shown = _memoized(query, ("detail", *clicked), lambda: _detail(query, *clicked))
                if shown is not None:  # else the selection has no such feature
                    return shown
            cell = _matrix(query).worst()
            if cell is None:
                return _no_detail(f"No drift metrics yet for {_describe(query)}.")
            worst = _memoized(query, ("detail", *cell), lambda: _detail(query, *cell))
            return worst or _no_detail(
                f"{cell[0]} has no drift metrics between {query.start} and {query.end}."
            )
    except StoreError as error:
        return _no_detail(_read_failed(error))


def _no_detail(message: str) -> tuple[str, go.Figure, go.Figure, html.P]:
    empty = figures.empty_figure(message)
    return "No feature selected", empty, empty, html.P(message, className="text-body-secondary")


def _detail(query: MetricsQuery, column: str, at: datetime) -> tuple[str, go.Figure, go.Figure, Any] | None:
    """The drill-down panels of ``column`` around the matrix cell at ``at``; ``None`` without its drift."""
    detail = feature_detail(
        metrics_reader(),
        *_range_of(query),
        column,
        at,
        period_length(query),
        query.segment,
    )
    if detail.focus is None:
        return None
    focus = detail.focus
    label = _window_label(focus["window_start"], query.window)
    verdict = "drifted" if focus["drifted"] else focus["verdict"].replace("_", " ")
    title = f"Feature {column}, {query.window} {label}: {verdict} (version {focus['version']})"
    timeline = figures.drift_timeline(list(detail.timeline), title=f"Drift of {column}")
    timeline.update_layout(margin={"t": 50})
    if detail.reference is None and detail.current is None:
        distribution = figures.empty_figure("; ".join(detail.notes) or "no profile to draw")
    else:
        try:
            distribution = figures.distribution_overlay(
                detail.reference,
                detail.current,
                title=f"{column}: reference vs {label}",
                current_name=label,
            )
        except ValueError as error:
            distribution = figures.empty_figure(f"the profiles cannot be overlaid: {error}")
    notes = [html.P(note, className="small text-body-secondary mb-1") for note in detail.notes]
    return title, timeline, distribution, html.Div([*notes, quality_table(detail.quality.findings)])


# --------------------------------------------------------------------------- performance and latency


def _timeline_panel(name: str, build: Callable[[MetricsQuery], go.Figure], selection: dict) -> go.Figure:
    """The figure ``build`` draws for the selection (memoized), or the message why there is none.

    Args:
        name: What the figure is, in the memo key.
        build: Draws the figure of a validated query.
        selection: The panel callback's keywords: start, end, window, segment (inputs), project,
            model and environment (states), as :func:`selection_query` takes them.
    """
    query = selection_query(**selection)
    if isinstance(query, str):
        return figures.empty_figure(query)
    try:
        return _memoized(query, name, lambda: build(query))
    except StoreError as error:
        return figures.empty_figure(_read_failed(error))


@dash.callback(output=Output(ID.PERFORMANCE, "figure"), inputs=_panel_inputs(), state=_panel_states())
@requires(Permission.VIEW_MONITORING)
def show_performance(**selection: object) -> go.Figure:
    """Accuracy and ROC AUC (classification) or RMSE and MAE (regression), with label coverage."""
    return _timeline_panel("performance", _performance, selection)


def _performance(query: MetricsQuery) -> go.Figure:
    series = performance_series(metrics_reader(), *_range_of(query), query.segment)
    if series.task is None:
        return figures.empty_figure(f"no performance metrics yet for {_describe(query)} (labels arrive late)")
    figure = figures.performance_timeline(
        list(series.rows), metrics=PERFORMANCE_METRICS[series.task], title=f"{query.model} ({series.task})"
    )
    figure.update_layout(margin={"t": 60})
    return figure


@dash.callback(output=Output(ID.LATENCY, "figure"), inputs=_panel_inputs(), state=_panel_states())
@requires(Permission.VIEW_MONITORING)
def show_latency(**selection: object) -> go.Figure:
    """Latency p50/p95/p99 and throughput of the selection."""
    return _timeline_panel("latency", _latency, selection)


def _latency(query: MetricsQuery) -> go.Figure:
    rows = latency_series(metrics_reader(), *_range_of(query), query.segment)
    figure = figures.latency_timeline(list(rows), title=f"{query.model} latency")
    figure.update_layout(margin={"t": 60})
    return figure


# --------------------------------------------------------------------------- alerts


def _alert_row(alert: Alert, may_ack: bool, window: str) -> html.Tr:
    first = _window_label(alert.window_start, window)
    last = _window_label(alert.last_window_start, window)
    where = alert.column_name or "the whole model"
    statistic = "" if alert.last_statistic is None else f"{alert.last_statistic:.4g}"
    if alert.state == "open" and may_ack:
        action: Any = dbc.Button(
            "Acknowledge",
            id={"type": ID.ALERT_ACK_TYPE, "alert": alert.id},
            size="sm",
            color="primary",
            outline=True,
        )
    elif alert.state == "acknowledged":
        action = alert.acknowledge_comment or "acknowledged"
    else:
        action = alert.resolution or ""
    return html.Tr(
        [
            html.Td(dbc.Badge(alert.severity, color=SEVERITY_COLORS.get(alert.severity, "secondary"))),
            html.Td(alert.state),
            html.Td(f"{alert.metric} of {where}"),
            html.Td(first if first == last else f"{first} → {last}"),
            html.Td(statistic),
            html.Td(alert.version),
            html.Td(action, className="small"),
        ],
        id=f"monitoring-alert-{alert.id}",
    )


@dash.callback(
    Output(ID.ALERTS, "children"),
    *SELECTION_INPUTS,
    Input(ID.ALERTS_VERSION, "data"),
    *SELECTION_STATES,
)
@requires(Permission.VIEW_MONITORING)
def show_alerts(
    start: object,
    end: object,
    window: object,
    _version: object,
    project: object,
    model: object,
    environment: object,
) -> Any:
    """Alerts of the model and environment whose windows overlap the range, newest first."""
    query = selection_query(project, model, environment, start, end, window)
    if isinstance(query, str):
        return html.P(query, className="text-body-secondary")
    actor = current_actor()
    with db_session() as db:
        found = [
            alert
            for alert, _slug in list_alerts(db, actor, project=query.project, limit=2000)
            if alert.model == query.model
            and alert.environment == query.environment
            and alert.window_start < query.last
            and alert.last_window_end > query.first
        ]
    if not found:
        return html.P(
            f"No alert for {_describe(query)}.", className="text-body-secondary", id="monitoring-no-alerts"
        )
    may_ack = has_permission(actor, Permission.ACK_ALERTS, query.project)
    header = html.Thead(
        html.Tr([html.Th(t) for t in ("Severity", "State", "What", "Windows", "Last value", "Version", "")])
    )
    rows = [_alert_row(alert, may_ack, query.window) for alert in found[:MAX_ALERTS_SHOWN]]
    table = dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, id="monitoring-alerts-table")
    if len(found) > MAX_ALERTS_SHOWN:
        return html.Div(
            [table, html.P(f"{len(found) - MAX_ALERTS_SHOWN} older alert(s) not shown.", className="small")]
        )
    return table


@dash.callback(
    Output(ID.ALERT_FEEDBACK, "children"),
    Output(ID.ALERTS_VERSION, "data"),
    Input({"type": ID.ALERT_ACK_TYPE, "alert": ALL}, "n_clicks"),
    State(ID.ALERT_COMMENT, "value"),
    State(ID.ALERTS_VERSION, "data"),
    prevent_initial_call=True,
)
@requires(Permission.ACK_ALERTS)
def acknowledge_alert(_clicks: list, comment: object, version: object) -> tuple[Any, int]:
    """Acknowledge the clicked alert (``jobs.alerts.acknowledge`` re-checks the role on its project)."""
    trigger = dash.ctx.triggered_id
    clicked = dash.ctx.triggered[0].get("value") if dash.ctx.triggered else None
    if not isinstance(trigger, dict) or not clicked:
        raise PreventUpdate  # buttons (re)appearing, not a click
    alert_id = trigger.get("alert")
    if not isinstance(alert_id, int) or isinstance(alert_id, bool):
        raise PreventUpdate
    text = comment if isinstance(comment, str) else ""
    counter = version + 1 if isinstance(version, int) else 1
    try:
        with db_session(write=True) as db:
            alert = acknowledge(db, current_actor(), alert_id, text)
            message = f"Alert {alert.id} acknowledged."
    except Forbidden:
        return dbc.Alert(
            "Your roles on this project do not allow acknowledging alerts.", color="danger"
        ), counter
    except (Conflict, InvalidInput) as error:
        return dbc.Alert(str(error), color="warning"), counter
    return dbc.Alert(message, color="success", id="monitoring-ack-done"), counter


# --------------------------------------------------------------------------- export


@dash.callback(
    output=[Output(ID.EXPORT_DOWNLOAD, "data"), Output(ID.EXPORT_FEEDBACK, "children")],
    inputs={"clicks": Input(ID.EXPORT, "n_clicks")},
    state={
        "start": State(ID.DATES, "start_date"),
        "end": State(ID.DATES, "end_date"),
        "window": State(ID.WINDOW, "value"),
        **_panel_states(segment=State(ID.SEGMENT, "value")),
    },
    prevent_initial_call=True,
)
@requires(Permission.EXPORT_DATA)
def export_metrics(
    clicks: object,
    start: object,
    end: object,
    window: object,
    project: object,
    model: object,
    environment: object,
    segment: object = None,
) -> tuple[dict[str, Any] | None, str]:
    """The selection's shown metrics rows as CSV; needs ``export_data`` on the selected project itself.

    The rows are those the page draws (``analytics.metrics.PAGE_METRICS``): drift decisions, data
    quality, performance, latency and the window checks, without the statistics behind each decision.
    """
    if not clicks:
        raise PreventUpdate
    query = selection_query(project, model, environment, start, end, window, segment)
    if isinstance(query, str):
        return None, query
    if not has_permission(current_actor(), Permission.EXPORT_DATA, query.project):
        return None, "Your roles on this project do not allow exports."
    try:
        content = export_csv(metrics_reader(), query, PAGE_METRICS)
    except StoreError as error:
        return None, _read_failed(error)
    rows = content.count(b"\n") - 1
    name = "-".join(
        [
            "metrics",
            query.project,
            query.model,
            query.environment,
            str(query.start),
            str(query.end),
            query.window,
            *([re.sub(r"[^A-Za-z0-9_.]+", "_", query.segment)] if query.segment else []),
        ]
    )
    return dcc.send_bytes(content, f"{name}.csv", type="text/csv"), f"{rows} row(s) exported."
