"""Plotly figure builders shared by the studio's pages and the notebooks.

Every builder takes plain data and returns a ``plotly.graph_objects.Figure``;
nothing here imports dash. Accepted inputs are typed rows (dataclasses such as
:class:`analytics.drift.ColumnDrift`), dictionaries, pandas or polars frames,
and the result objects of :mod:`analytics.drift` and
:mod:`analytics.performance` (``DriftReport``, ``DriftTimeline``,
``PerformanceReport``, ``LatencyReport``).

Drift rows carry ``column``, ``window_start`` (or ``window``, as in
``DriftReport.to_pandas()``), ``method``, ``statistic``, ``p_value``
(optionally ``p_value_adjusted``), ``threshold``, ``drifted`` and ``status``;
the metrics Parquet a monitor job writes has the same columns, so the builders
work on a fresh drift report and on stored history alike. How a threshold reads
follows :mod:`analytics.policy`: for the tests (``ks``, ``chi2``) it is a
significance level on the adjusted p-value (drift below it), for effect sizes a
bound on the statistic (drift above it).

Text safety: plotly.js renders trace names, tick labels, hover labels, titles
and annotations as "pseudo-HTML" (``<b>``, ``<br>``, ``<a>`` ... are
interpreted, so ``<b>x</b>`` would display as a bold ``x``). Every
user-provided string (feature names, categories, methods, statuses, reasons,
titles) is HTML-escaped before it reaches a figure, so a name like
``<img src=x onerror=alert(1)>`` is displayed literally. User text never goes
into a ``hovertemplate`` itself (``%{...}`` in a name would be expanded);
hover labels read it from ``customdata``. Drift figures put the raw, unescaped
``(column, window)`` first in every point's ``customdata`` so a click handler
can drill down.

Empty input (or input with nothing to draw) gives a figure with an annotation
named ``insufficient_data`` instead of raising.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

import plotly.graph_objects as go
import plotly.io as pio

from analytics.policy import TEST_METHODS

INSUFFICIENT_DATA = "insufficient_data"
INSUFFICIENT_TEXT = "insufficient data"
STATUS_OK = "ok"
STATUS_ERROR = "error"
DRIFT_COLUMNS = (
    "column",
    "window_start",
    "method",
    "statistic",
    "p_value",
    "p_value_adjusted",
    "threshold",
    "drifted",
    "status",
    "reason",
)
CURRENT_WINDOW_LABEL = "current"
OTHER_VALUES_LABEL = "(other values)"

REFERENCE_COLOR = "#636efa"
CURRENT_COLOR = "#ef553b"
DRIFTED_COLOR = "#d62728"
THRESHOLD_COLOR = "#7f7f7f"
INSUFFICIENT_COLOR = "#d9d9d9"
ERROR_COLOR = "#969696"
#: Heatmap colours of the severity (statistic relative to threshold): green below the threshold,
#: amber at it (1.0), dark red at twice the threshold and above.
SEVERITY_COLORSCALE = [
    [0.0, "#1a9850"],
    [0.35, "#a6d96a"],
    [0.5, "#fee08b"],
    [0.75, "#f46d43"],
    [1.0, "#a50026"],
]
SEVERITY_MAX = 2.0
#: Severity given to an infinite statistic or a zero p-value (drawn at the top of the scale).
SEVERITY_CAP = 1e6
_INTEGER_TYPES = frozenset(
    {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger", "ubigint"}
)
_PLAIN_TYPES = frozenset({type(None), str, bool, int, datetime, date})
_P_VALUE_FLOOR = 1e-300  # log axes cannot show 0
_MAX_BIN_TICKS = 12

_METRIC_LABELS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "log_loss": "log loss",
    "ece": "ECE",
    "mae": "MAE",
    "rmse": "RMSE",
    "mape": "MAPE",
    "r2": "R²",
}
_DEFAULT_CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece")
_DEFAULT_REGRESSION = ("mae", "rmse")
_LATENCY_LINES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))

TimelineValue = Literal["auto", "statistic", "p_value", "severity"]


# --------------------------------------------------------------------------- text and values


def escape_text(value: Any) -> str:
    """Escape a value for display in a plotly figure (names, labels, hover, annotations).

    Args:
        value: Anything; ``None`` becomes an empty string.

    Returns:
        ``str(value)`` with ``&``, ``<``, ``>`` and quotes as HTML entities, which
        plotly.js displays literally.
    """
    return "" if value is None else html.escape(str(value), quote=True)


def empty_figure(reason: str | None = None, title: str | None = None) -> go.Figure:
    """A figure that says there is not enough data to draw.

    Args:
        reason: Optional detail shown under the ``insufficient data`` text (escaped).
        title: Optional figure title (escaped).

    Returns:
        A figure with hidden axes and one annotation named ``insufficient_data``.
    """
    layout = {"xaxis": {"visible": False}, "yaxis": {"visible": False}}
    if title:
        layout["title"] = _title(title)
    return _figure([], layout, insufficient=reason or "")


def _figure(
    traces: Sequence[dict[str, Any]], layout: dict[str, Any], *, insufficient: str | None = None
) -> go.Figure:
    """A ``plotly_white`` figure of trace and layout dictionaries, built without plotly's validation.

    Validation checks every item of every list (a year of windows is thousands of ``customdata``
    items) and deep-copies the template: most of a figure's cost, paid on every page request.
    The builders here pass plain, known-good properties (the unit tests draw their figures in
    Chromium), so they skip it. ``insufficient`` (``""`` for no detail) adds the
    ``insufficient_data`` annotation.
    """
    full_layout = {"template": pio.templates["plotly_white"], **layout}  # the object, not its name
    if insufficient is not None:
        full_layout["annotations"] = [*layout.get("annotations", ()), _insufficient_annotation(insufficient)]
    return go.Figure(data=list(traces), layout=full_layout, _validate=False)


def _insufficient_annotation(reason: str | None = None) -> dict[str, Any]:
    text = INSUFFICIENT_TEXT if not reason else f"{INSUFFICIENT_TEXT}<br>{escape_text(reason)}"
    return {
        "text": text,
        "name": INSUFFICIENT_DATA,
        "xref": "paper",
        "yref": "paper",
        "x": 0.5,
        "y": 0.5,
        "showarrow": False,
        "font": {"size": 16, "color": THRESHOLD_COLOR},
    }


def _title(title: str | None) -> dict[str, Any] | None:
    return {"text": escape_text(title)} if title else None


def _clean(value: Any) -> Any:
    """Map NaN/NaT and pandas' missing markers to ``None``; unwrap numpy and pandas scalars."""
    kind = type(value)
    if kind in _PLAIN_TYPES:  # most values: exact types, no subclass (a pandas Timestamp) to unwrap
        return value
    if kind is float:
        return None if math.isnan(value) else value
    if value is None or isinstance(value, str | bytes | bool | int):
        return value
    if type(value).__name__ in {"NaTType", "NAType"}:
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "tolist") and not isinstance(value, float):
        value = value.tolist()  # numpy scalars and arrays
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(data: Any) -> list[dict[str, Any]]:
    """Turn rows in any supported shape into a list of plain dictionaries.

    Args:
        data: ``None``; a pandas or polars DataFrame; a report with a ``rows()`` method
            (:mod:`analytics.performance`); an object with ``to_pandas()`` (the drift and
            profile results); or an iterable of dataclass instances, mappings or objects
            with the drift attributes.

    Returns:
        One dictionary per row, NaN/NaT turned into ``None``, numpy values into Python ones.

    Raises:
        TypeError: for a single mapping (wrap it in a list) or a non-iterable.
    """
    if data is None:
        return []
    module = type(data).__module__
    if module.startswith("polars"):
        raw = data.to_dicts()
    elif module.startswith("pandas"):
        raw = data.to_dict("records")
    elif callable(getattr(data, "rows", None)):
        raw = data.rows()
    elif callable(getattr(data, "to_pandas", None)):
        return records(data.to_pandas())
    elif isinstance(data, Mapping):
        raise TypeError("expected rows (a sequence or a frame), not a single mapping")
    else:
        raw = [_row_dict(item) for item in data]
    return [{str(key): _clean(value) for key, value in row.items()} for row in raw]


def _row_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    if hasattr(item, "_asdict"):
        return dict(item._asdict())
    return {name: getattr(item, name) for name in DRIFT_COLUMNS if hasattr(item, name)}


def _number(value: Any) -> float | None:
    """A float (infinities kept) or ``None`` for missing, NaN and non-numbers."""
    value = _clean(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # also parses "inf" as written by json_safe()
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _finite(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def _format_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if value == 0 or 1e-3 <= magnitude < 1e4:
        return f"{value:.4g}"
    if 1e4 <= magnitude < 1e12:
        # Four significant digits with thousands separators: 19,480 rather than 1.948e+04.
        return f"{round(value, 3 - math.floor(math.log10(magnitude))):,.0f}"
    return f"{value:.3e}"


def _window_of(row: Mapping[str, Any]) -> Any:
    return row.get("window_start", row.get("window"))


def _window_label(window: Any) -> str:
    if window is None:
        return CURRENT_WINDOW_LABEL
    if isinstance(window, datetime):
        if (window.hour, window.minute, window.second, window.microsecond) == (0, 0, 0, 0):
            return window.date().isoformat()
        return window.strftime("%Y-%m-%d %H:%M")
    if isinstance(window, date):
        return window.isoformat()
    return str(window)


def _window_key(window: Any) -> str:
    """A stable raw identifier of a window for ``customdata`` (ISO 8601 when a time)."""
    if window is None:
        return ""
    if isinstance(window, date):
        return window.isoformat()
    return str(window)


def _sort_key(window: Any) -> tuple[int, str]:
    if window is None:
        return (1, "")
    return (0, _window_key(window))


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


# --------------------------------------------------------------------------- drift semantics


def _status(row: Mapping[str, Any]) -> str:
    return str(row.get("status") or STATUS_OK)


def _checked(row: Mapping[str, Any]) -> bool:
    return _status(row) == STATUS_OK


def _drifted(row: Mapping[str, Any]) -> bool:
    return bool(row.get("drifted")) and _checked(row)


def _is_test(row: Mapping[str, Any]) -> bool:
    return row.get("method") in TEST_METHODS


def _decision_p_value(row: Mapping[str, Any]) -> float | None:
    """The p-value a test's threshold is compared with: the adjusted one when present."""
    adjusted = _number(row.get("p_value_adjusted"))
    return adjusted if adjusted is not None else _number(row.get("p_value"))


def drift_severity(row: Mapping[str, Any]) -> float | None:
    """How far a drift result is from its threshold; 1.0 means exactly at the threshold.

    For an effect size (PSI, normed Wasserstein, Jensen-Shannon, ...) this is
    ``statistic / threshold``; for a test (``ks``, ``chi2``), whose threshold is a
    significance level, ``threshold / p_value`` (adjusted p-value when present), so
    that for both larger means more drift and above 1 means drifted. Infinite
    statistics and zero p-values give :data:`SEVERITY_CAP`.

    Args:
        row: A drift row.

    Returns:
        The severity, or ``None`` when the row was not checked or lacks the numbers.
    """
    if not _checked(row):
        return None
    threshold = _finite(row.get("threshold"))
    if threshold is None or threshold <= 0:
        return None
    if _is_test(row):
        p_value = _decision_p_value(row)
        if p_value is None:
            return None
        return SEVERITY_CAP if p_value <= 0 else min(threshold / p_value, SEVERITY_CAP)
    statistic = _number(row.get("statistic"))
    if statistic is None:
        return None
    return min(statistic / threshold, SEVERITY_CAP) if math.isfinite(statistic) else SEVERITY_CAP


def _drift_rows(rows: Any) -> list[dict[str, Any]]:
    result = records(rows)
    for row in result:
        if "column" not in row:
            raise ValueError(f"drift rows need a 'column' field; got {sorted(row)}")
    return result


def _drift_customdata(row: Mapping[str, Any]) -> list[Any]:
    """``customdata`` of one drift point: raw ids first (for clicks), escaped display text after."""
    window = _window_of(row)
    adjusted = _number(row.get("p_value_adjusted"))
    p_text = _format_number(_number(row.get("p_value")))
    if adjusted is not None:
        p_text += f" (adjusted {_format_number(adjusted)})"
    return [
        row.get("column"),  # 0: raw column name, for drill-down
        _window_key(window),  # 1: raw window (ISO 8601), for drill-down
        escape_text(row.get("column")),  # 2
        escape_text(_window_label(window)),  # 3
        escape_text(row.get("method") or "n/a"),  # 4
        _format_number(_number(row.get("statistic"))),  # 5
        p_text,  # 6
        _format_number(_number(row.get("threshold"))),  # 7
        "yes" if _drifted(row) else "no",  # 8
        escape_text(_status(row)),  # 9
        _format_number(drift_severity(row)),  # 10
        escape_text(row.get("reason") or ""),  # 11
    ]


_DRIFT_HOVER = (
    "<b>%{customdata[2]}</b><br>window %{customdata[3]}<br>method %{customdata[4]}<br>"
    "statistic %{customdata[5]}, threshold %{customdata[7]}<br>p-value %{customdata[6]}<br>"
    "severity %{customdata[10]}<br>drifted %{customdata[8]}<br>status %{customdata[9]}<extra></extra>"
)
_UNCHECKED_HOVER = (
    "<b>%{customdata[2]}</b><br>window %{customdata[3]}<br>status %{customdata[9]}<br>"
    "%{customdata[11]}<extra></extra>"
)


# --------------------------------------------------------------------------- drift heatmap


def drift_heatmap(rows: Any, *, normalize: bool = True, title: str | None = None) -> go.Figure:
    """Feature x window heatmap of drift.

    Colour is the severity (:func:`drift_severity`: 1 = at the threshold, comparable
    across methods) when ``normalize`` is true, else the raw statistic. Cells that were
    not checked are drawn by a second trace: ``insufficient_data`` light grey with the
    text ``n/a``, ``error`` darker grey with ``error``; their hover gives the reason.
    Hover shows method, statistic, threshold, p-value, severity, drifted and status.
    ``customdata[0]`` and ``customdata[1]`` of every cell are the raw column name and
    window (ISO 8601, empty for a single report) so a click can drill down; the hover
    text follows only in the trace that draws the cell (a year of a wide model is
    thousands of cells, sent to the browser with the figure).

    Args:
        rows: Drift rows, a ``DriftReport`` or a ``DriftTimeline``, or their frames.
        normalize: Colour by severity instead of the raw statistic.
        title: Optional title (escaped).

    Returns:
        The heatmap figure, or an ``insufficient data`` figure for no rows.
    """
    data = _drift_rows(rows)
    if not data:
        return empty_figure("no drift results", title)
    columns = _unique(row["column"] for row in data)
    windows = sorted({_window_of(row) for row in data}, key=_sort_key)
    cells = {(row["column"], _window_of(row)): row for row in data}  # a repeated cell: the last wins

    x_labels = [escape_text(_window_label(w)) for w in windows]
    y_labels = [escape_text(c) for c in columns]
    z: list[list[float | None]] = []
    z_unchecked: list[list[float | None]] = []
    text_unchecked: list[list[str]] = []
    customdata: list[list[list[Any]]] = []
    unchecked_customdata: list[list[list[Any]]] = []
    for column in columns:
        z_row: list[float | None] = []
        unchecked_row: list[float | None] = []
        text_row: list[str] = []
        data_row: list[list[Any]] = []
        unchecked_data_row: list[list[Any]] = []
        for window in windows:
            row = cells.get((column, window))
            cell = [column, _window_key(window)]
            if row is None:
                z_row.append(None)
                unchecked_row.append(None)
                text_row.append("")
                data_row.append(cell)
                unchecked_data_row.append(cell)
            elif _checked(row):
                value = drift_severity(row) if normalize else _number(row.get("statistic"))
                z_row.append(None if value is None else min(value, SEVERITY_CAP))
                unchecked_row.append(None)
                text_row.append("")
                data_row.append(_drift_customdata(row)[:-1])  # the reason is not in this hover
                unchecked_data_row.append(cell)
            else:
                error = _status(row) == STATUS_ERROR
                z_row.append(None)
                unchecked_row.append(1.0 if error else 0.0)
                text_row.append("error" if error else "n/a")
                data_row.append(cell)
                unchecked_data_row.append(_drift_customdata(row))
        z.append(z_row)
        z_unchecked.append(unchecked_row)
        text_unchecked.append(text_row)
        customdata.append(data_row)
        unchecked_customdata.append(unchecked_data_row)

    shared = {"type": "heatmap", "x": x_labels, "y": y_labels}
    shared.update(xgap=2, ygap=2, hoverongaps=False)
    checked_trace = {
        **shared,
        "z": z,
        "customdata": customdata,
        "hovertemplate": _DRIFT_HOVER,
        "colorscale": SEVERITY_COLORSCALE,
        "colorbar": {"title": {"text": "statistic / threshold" if normalize else "statistic"}},
        "name": "drift",
    }
    if normalize:
        checked_trace.update(zmin=0.0, zmax=SEVERITY_MAX)
    unchecked_trace = {
        **shared,
        "z": z_unchecked,
        "customdata": unchecked_customdata,
        "zmin": 0.0,
        "zmax": 1.0,
        "text": text_unchecked,
        "texttemplate": "%{text}",
        "hovertemplate": _UNCHECKED_HOVER,
        "colorscale": [[0.0, INSUFFICIENT_COLOR], [1.0, ERROR_COLOR]],
        "showscale": False,
        "name": INSUFFICIENT_TEXT,
    }
    layout = {
        "xaxis": {"title": {"text": "window"}, "type": "category"},
        "yaxis": {"title": {"text": "feature"}, "type": "category", "autorange": "reversed"},
    }
    if title:
        layout["title"] = _title(title)
    nothing_checked = all(value is None for z_row in z for value in z_row)
    return _figure(
        [checked_trace, unchecked_trace],
        layout,
        insufficient="no window has enough data" if nothing_checked else None,
    )


# --------------------------------------------------------------------------- drift timeline


def _timeline_value(data: Sequence[Mapping[str, Any]], value: TimelineValue) -> TimelineValue:
    if value != "auto":
        return value
    checked = [row for row in data if _checked(row)]
    methods = {row.get("method") for row in checked}
    thresholds = {_number(row.get("threshold")) for row in checked}
    if len(methods) == 1 and len(thresholds) <= 1:
        return "p_value" if next(iter(methods)) in TEST_METHODS else "statistic"
    # Several methods (the default policy switches from a test to an effect size with sample
    # size) or several thresholds: only the severity is on one scale.
    return "severity"


def _timeline_y(row: Mapping[str, Any], value: TimelineValue) -> float | None:
    if not _checked(row):
        return None
    if value == "severity":
        return drift_severity(row)
    if value == "p_value":
        p_value = _decision_p_value(row)
        return None if p_value is None else max(p_value, _P_VALUE_FLOOR)
    statistic = _number(row.get("statistic"))
    return None if statistic is None or not math.isfinite(statistic) else statistic


def drift_timeline(
    rows: Any,
    threshold: float | None = None,
    *,
    value: TimelineValue = "auto",
    title: str | None = None,
) -> go.Figure:
    """Drift of one or more features over windows, with the threshold and drifted markers.

    One line per feature; a dashed threshold line; red ``x`` markers on drifted
    windows; grey markers along the bottom for windows that were not checked
    (insufficient data or error). Every marker carries ``customdata`` with the raw
    ``(column, window)`` first, like the heatmap.

    What is plotted (``value``):

    * ``statistic``: the statistic, threshold line at the threshold (drift above);
    * ``p_value``: the (adjusted) p-value on a log axis, threshold line at the
      significance level (drift below);
    * ``severity``: :func:`drift_severity`, threshold line at 1 (drift above);
    * ``auto`` (default): ``statistic`` or ``p_value`` when all checked rows share one
      method and threshold, else ``severity`` (the default policy switches from a test on
      small windows to an effect size on large ones, and those do not share a scale).

    Args:
        rows: Drift rows, a ``DriftTimeline`` or ``DriftReport``, or their frames.
        threshold: The threshold line to draw (statistic or p-value mode); ``None`` takes
            it from the rows (a step line when it varies).
        value: What to plot, see above.
        title: Optional title (escaped).

    Returns:
        The figure, or an ``insufficient data`` figure when nothing can be drawn.
    """
    data = _drift_rows(rows)
    if not data:
        return empty_figure("no drift results", title)
    data.sort(key=lambda row: _sort_key(_window_of(row)))
    mode = _timeline_value(data, value)
    x_values = [_window_of(row) or CURRENT_WINDOW_LABEL for row in data]
    x_of = {id(row): x for row, x in zip(data, x_values, strict=True)}

    def points(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "x": [x_of[id(row)] for row in rows],
            "customdata": [_drift_customdata(row) for row in rows],
        }

    traces = []
    for column in _unique(row["column"] for row in data):
        series = [row for row in data if row["column"] == column]
        traces.append(
            {
                "type": "scatter",
                **points(series),
                "y": [_timeline_y(row, mode) for row in series],
                "mode": "lines+markers",
                "name": escape_text(column),
                "hovertemplate": _DRIFT_HOVER,
                "connectgaps": False,
            }
        )
    drifted = [row for row in data if _drifted(row)]
    traces.append(
        {
            "type": "scatter",
            **points(drifted),
            "y": [_timeline_y(row, mode) for row in drifted],
            "mode": "markers",
            "name": "drifted",
            "marker": {"symbol": "x", "size": 12, "color": DRIFTED_COLOR},
            "hovertemplate": _DRIFT_HOVER,
        }
    )
    unchecked = [row for row in data if not _checked(row)]
    traces.append(
        {
            "type": "scatter",
            **points(unchecked),
            "y": [0.03] * len(unchecked),
            "yaxis": "y2",
            "mode": "markers",
            "name": INSUFFICIENT_TEXT,
            "marker": {"symbol": "circle-open", "size": 10, "color": ERROR_COLOR},
            "hovertemplate": _UNCHECKED_HOVER,
        }
    )
    y_title = {
        "statistic": f"statistic ({escape_text(_single_method(data))})",
        "p_value": "p-value (adjusted)",
        "severity": "statistic / threshold",
    }[mode]
    layout: dict[str, Any] = {
        "xaxis": {"title": {"text": "window"}},
        "yaxis": {"title": {"text": y_title}, "type": "log" if mode == "p_value" else "linear"},
        # An invisible axis fixed to [0, 1] keeps the not-checked markers at the bottom.
        "yaxis2": {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True},
        "legend": {"orientation": "h", "y": 1.1},
    }
    if title:
        layout["title"] = _title(title)
    line = _threshold_line(data, threshold, mode)
    if isinstance(line, tuple):
        layout["shapes"], layout["annotations"] = [line[0]], [line[1]]
    elif line is not None:
        traces.append({**line, "x": [x_of[id(row)] for row in data]})
    nothing = all(_timeline_y(row, mode) is None for row in data)
    return _figure(traces, layout, insufficient="no window has enough data" if nothing else None)


def _single_method(data: Sequence[Mapping[str, Any]]) -> str:
    methods = _unique(row.get("method") for row in data if _checked(row))
    return str(methods[0]) if len(methods) == 1 else "mixed"


def _threshold_line(
    data: Sequence[Mapping[str, Any]], threshold: float | None, mode: TimelineValue
) -> tuple[dict[str, Any], dict[str, Any]] | dict[str, Any] | None:
    """The threshold of a drift timeline: a horizontal line (shape and its label), or a step trace.

    A step trace (without ``x``: one point per row of ``data``) when the rows' thresholds vary,
    ``None`` when there is none.
    """
    if mode == "severity":
        threshold = 1.0
    if threshold is None:
        values = [_finite(row.get("threshold")) if _checked(row) else None for row in data]
        distinct = {v for v in values if v is not None}
        if len(distinct) > 1:
            return {
                "type": "scatter",
                "y": values,
                "mode": "lines",
                "line": {"dash": "dash", "color": THRESHOLD_COLOR, "shape": "hv"},
                "name": "threshold",
                "hoverinfo": "skip",
                "connectgaps": True,
            }
        if not distinct:
            return None
        threshold = distinct.pop()
    at = float(threshold)
    # What plotly's add_hline draws: a line across the plot and its label above the right end.
    # An annotation on a log axis is placed by the logarithm of the value (a shape by the value).
    label_at = math.log10(at) if mode == "p_value" and at > 0 else at
    shape = {
        "type": "line",
        "name": "threshold",
        "line": {"dash": "dash", "color": THRESHOLD_COLOR},
        "xref": "x domain",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": at,
        "y1": at,
    }
    label = {
        "text": f"threshold {_format_number(at)}",
        "showarrow": False,
        "xref": "x domain",
        "x": 1,
        "xanchor": "right",
        "yref": "y",
        "y": label_at,
        "yanchor": "bottom",
    }
    return shape, label


# --------------------------------------------------------------------------- distributions


def distribution_overlay(
    reference_profile_column: Any,
    current_profile_column: Any,
    *,
    title: str | None = None,
    reference_name: str = "reference",
    current_name: str = "current",
) -> go.Figure:
    """Overlay the reference and current distribution of one column, as shares of rows.

    Numeric: one bar pair per bin of the shared edges (from
    :class:`analytics.profile.ColumnProfile`: the open outer bins hold the values below
    and above the reference range, ``-inf``/``+inf`` included, and are left out when
    empty on both sides). Bars sit at equal spacing, labelled with their value range:
    the spec's quantile bins have very unequal widths (down to a single integer value),
    so a value axis would hide some bins. With quantile bins the reference is about
    flat and drift shows as the current bars departing from it.

    Categorical: one bar pair per spec category, then each listed value outside the
    spec (``unseen``: new categories), then ``(other values)`` for the rest.

    Args:
        reference_profile_column: The reference :class:`~analytics.profile.ColumnProfile`,
            a row of ``Profile.to_pandas()``, or a plain mapping (``edges`` and ``counts``
            with ``len(counts) == len(edges) - 1`` for closed bins, or ``categories`` as a
            value -> count mapping). ``None`` draws the current side only.
        current_profile_column: The current profile of the same column (same spec).
        title: Title (escaped); default ``distribution of <column>``.
        reference_name: Legend name of the reference side.
        current_name: Legend name of the current side.

    Returns:
        The figure; an ``insufficient data`` figure when both sides are missing or empty.

    Raises:
        ValueError: if the two sides are of different kinds or bins.
    """
    reference = _distribution(reference_profile_column)
    current = _distribution(current_profile_column)
    present = [side for side in (reference, current) if side is not None]
    if not present:
        return empty_figure("no profile to draw", title)
    if len({side["kind"] for side in present}) > 1:
        raise ValueError("cannot overlay a numeric and a categorical profile")
    if title is None and present[0].get("name"):
        title = f"distribution of {present[0]['name']}"
    if present[0]["kind"] == "numeric":
        labels, hovers, counts = _numeric_bars(reference, current)
    else:
        labels, hovers, counts = _categorical_bars(reference, current)
    traces = []
    sides = ((reference, reference_name, REFERENCE_COLOR, 0), (current, current_name, CURRENT_COLOR, 1))
    for side, name, color, index in sides:
        if side is None:
            continue
        side_counts = [pair[index] for pair in counts]
        total = sum(side_counts)
        traces.append(
            {
                "type": "bar",
                "x": list(range(len(labels))),
                "y": [c / total if total else 0.0 for c in side_counts],
                "name": escape_text(name),
                "marker": {"color": color},
                "customdata": [[hover, c] for hover, c in zip(hovers, side_counts, strict=True)],
                "hovertemplate": "%{customdata[0]}<br>share %{y:.2%}<br>count %{customdata[1]}",
            }
        )
    step = max(1, math.ceil(len(labels) / _MAX_BIN_TICKS)) if present[0]["kind"] == "numeric" else 1
    layout = {
        "barmode": "group",
        "bargap": 0.1,
        "legend": {"orientation": "h", "y": 1.1},
        "xaxis": {
            "title": {"text": "bin" if present[0]["kind"] == "numeric" else "category"},
            "tickmode": "array",
            "tickvals": list(range(0, len(labels), step)),
            "ticktext": labels[::step],
        },
        "yaxis": {"title": {"text": "share of rows"}, "tickformat": ".0%"},
    }
    if title:
        layout["title"] = _title(title)
    nothing = not labels or sum(a + b for a, b in counts) == 0
    return _figure(traces, layout, insufficient="no rows in either profile" if nothing else None)


def _get(obj: Any, name: str) -> Any:
    """Read a field of a profile column given as an object, a spec-bearing object or a mapping."""
    if isinstance(obj, Mapping):
        return _clean(obj.get(name))
    if hasattr(obj, name):
        return _clean(getattr(obj, name))
    spec = getattr(obj, "spec", None)
    return _clean(getattr(spec, name, None)) if spec is not None else None


def _distribution(column: Any) -> dict[str, Any] | None:
    """Read a profile column duck-typed into ``{kind, name, ...}``."""
    if column is None:
        return None
    name = _get(column, "name") or _get(column, "column")
    bin_counts = _get(column, "bin_counts")
    edges = _get(column, "edges")
    if bin_counts:  # a ColumnProfile (or its record): open outer bins
        edges = [float(e) for e in edges or ()]
        counts = [int(c) for c in bin_counts]
        if len(counts) != len(edges) + 1:
            raise ValueError(
                f"a profile histogram has len(edges) + 1 bins, got {len(edges)} and {len(counts)}"
            )
        counts[0] += int(_get(column, "neg_inf") or 0)
        counts[-1] += int(_get(column, "pos_inf") or 0)
        bins = [(None, edges[0] if edges else None)]
        bins += list(itertools.pairwise(edges))
        bins += [(edges[-1] if edges else None, None)]
        integer = str(_get(column, "dtype") or "").lower() in _INTEGER_TYPES
        return {"kind": "numeric", "name": name, "bins": bins, "counts": counts, "integer": integer}
    if edges and _get(column, "counts") is not None and not _get(column, "categories"):
        edges = [float(e) for e in edges]
        counts = [int(c) for c in _get(column, "counts")]
        if len(edges) != len(counts) + 1:
            raise ValueError(
                f"closed bins need len(edges) == len(counts) + 1, got {len(edges)} and {len(counts)}"
            )
        return {
            "kind": "numeric",
            "name": name,
            "bins": list(itertools.pairwise(edges)),
            "counts": counts,
        }
    return _categorical_distribution(column, name)


def _categorical_distribution(column: Any, name: Any) -> dict[str, Any]:
    categories = _get(column, "categories")
    if isinstance(categories, Mapping):
        return {
            "kind": "categorical",
            "name": name,
            "counts": {("value", k): int(v) for k, v in categories.items()},
        }
    if categories is None and isinstance(column, Mapping) and "kind" not in column:
        return {
            "kind": "categorical",
            "name": name,
            "counts": {("value", k): int(v) for k, v in column.items()},
        }
    if categories is None:
        raise ValueError(f"cannot read a distribution from {type(column).__name__}")
    category_counts = _get(column, "category_counts")
    if category_counts is None:
        category_counts = _get(column, "counts")
    counts = {("value", c): int(n) for c, n in zip(categories, category_counts or (), strict=True)}
    unseen = _get(column, "unseen")
    if unseen is None:
        unseen = list(
            zip(_get(column, "unseen_values") or (), _get(column, "unseen_counts") or (), strict=True)
        )
    listed = 0
    for value, count in unseen:
        counts[("value", value)] = counts.get(("value", value), 0) + int(count)
        listed += int(count)
    rest = int(_get(column, "other_count") or 0) - listed
    if rest > 0:
        counts[("other",)] = rest
    return {"kind": "categorical", "name": name, "counts": counts}


def _bin_label(low: float | None, high: float | None, integer: bool = False) -> str:
    if low is None and high is None:
        return "all values"
    if low is None:
        return f"<= {_format_number(high)}"
    if high is None:
        return f"> {_format_number(low)}"
    if integer:
        first, last = math.floor(low) + 1, math.floor(high)  # the integers in (low, high]
        if first >= last:
            return str(last)
        return f"{first}..{last}"
    if high - low <= 1e-9 * max(1.0, abs(high)):
        return _format_number(high)  # a bin that holds a single value
    return f"({_format_number(low)}, {_format_number(high)}]"


def _numeric_bars(
    reference: dict[str, Any] | None, current: dict[str, Any] | None
) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    present = [side for side in (reference, current) if side is not None]
    bins = present[0]["bins"]
    if any(side["bins"] != bins for side in present):
        raise ValueError("reference and current profiles must share the same bin edges")
    integer = bool(present[0].get("integer"))
    ref_counts = reference["counts"] if reference else [0] * len(bins)
    cur_counts = current["counts"] if current else [0] * len(bins)
    labels, hovers, counts = [], [], []
    last = len(bins) - 1
    for index, ((low, high), ref, cur) in enumerate(zip(bins, ref_counts, cur_counts, strict=True)):
        open_bin = (index == 0 and low is None) or (index == last and high is None)
        if open_bin and ref == 0 and cur == 0:
            continue
        label = escape_text(_bin_label(low, high, integer))
        labels.append(label)
        note = " (below the reference range)" if index == 0 and low is None else ""
        note = " (above the reference range)" if index == last and high is None else note
        hovers.append(label + note)
        counts.append((ref, cur))
    return labels, hovers, counts


def _categorical_bars(
    reference: dict[str, Any] | None, current: dict[str, Any] | None
) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    ref_counts = reference["counts"] if reference else {}
    cur_counts = current["counts"] if current else {}
    keys = _unique([*ref_counts, *cur_counts])
    # Listed values in order of first appearance (spec order: most frequent in the reference first),
    # the unlisted remainder last.
    keys.sort(key=lambda key: key == ("other",))
    labels = [OTHER_VALUES_LABEL if key == ("other",) else escape_text(key[1]) for key in keys]
    counts = [(ref_counts.get(key, 0), cur_counts.get(key, 0)) for key in keys]
    return labels, labels, counts


# --------------------------------------------------------------------------- performance


def _window_bars(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Bar geometry covering each window ``[window_start, window_end)`` on a date axis (in ms)."""
    widths = []
    for row in rows:
        start, end = row.get("window_start"), row.get("window_end")
        if not (isinstance(start, datetime) and isinstance(end, datetime)):
            return {}  # without window ends, plotly's default width
        widths.append((end - start).total_seconds() * 1000)
    return {"width": widths, "offset": 0}


def performance_timeline(
    report: Any,
    metrics: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """Model performance metrics per window, with label coverage as bars.

    Args:
        report: A :class:`analytics.performance.PerformanceReport`, or its rows as a
            pandas/polars frame or dictionaries (``window_start`` plus metric columns).
        metrics: Metric columns to draw; default accuracy, precision, recall, F1, ROC AUC
            and ECE for classification, MAE and RMSE for regression.
        title: Optional title (escaped).

    Returns:
        The figure (metrics on the left axis, label coverage on the right axis); an
        ``insufficient data`` figure when there is no window, an annotated one when no
        window has a metric value.

    Raises:
        ValueError: for a metric the rows do not have.
    """
    task = getattr(report, "task", None)
    rows = [row for row in records(report) if row.get("window_start") is not None]
    if not rows:
        return empty_figure("no performance window", title)
    rows.sort(key=lambda row: _sort_key(row["window_start"]))
    if task is None:
        task = "classification" if "accuracy" in rows[0] else "regression"
    names = list(metrics or (_DEFAULT_CLASSIFICATION if task == "classification" else _DEFAULT_REGRESSION))
    unknown = [name for name in names if name not in rows[0]]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; the rows have {sorted(rows[0])}")
    x = [row["window_start"] for row in rows]
    status_data = [
        [escape_text(row.get("status") or ""), escape_text(row.get("reason") or "")] for row in rows
    ]
    traces = []
    if "label_coverage" in rows[0]:
        traces.append(
            {
                "type": "bar",
                "x": x,
                "y": [_finite(row.get("label_coverage")) for row in rows],
                "name": "label coverage",
                "yaxis": "y2",
                **_window_bars(rows),
                "marker": {"color": "rgba(150,150,150,0.25)"},
                "customdata": [[row.get("n"), row.get("n_labelled")] for row in rows],
                "hovertemplate": "label coverage %{y:.1%}<br>%{customdata[1]} of %{customdata[0]} labelled"
                "<extra></extra>",
            }
        )
    traces += [
        {
            **_line(x, [_finite(row.get(name)) for row in rows], _METRIC_LABELS.get(name, name)),
            "customdata": status_data,
            "hovertemplate": "%{y:.4g}<br>status %{customdata[0]}<br>%{customdata[1]}",
        }
        for name in names
    ]
    layout = _timeline_layout(
        title,
        {"title": {"text": "metric"}},
        {
            "range": [0, 1],
            "tickmode": "linear",
            "tick0": 0,
            "dtick": 0.2,
            "tickformat": ".0%",
            "title": {"text": "label coverage"},
        },
    )
    nothing = all(_finite(row.get(name)) is None for row in rows for name in names)
    return _figure(traces, layout, insufficient="no window has labelled predictions" if nothing else None)


def _line(x: list[Any], y: list[float | None], name: str) -> dict[str, Any]:
    """A timeline trace: lines and markers, gaps where a window has no value."""
    return {
        "type": "scatter",
        "x": x,
        "y": y,
        "mode": "lines+markers",
        "name": escape_text(name),
        "connectgaps": False,
    }


def _timeline_layout(title: str | None, yaxis: dict[str, Any], yaxis2: dict[str, Any]) -> dict[str, Any]:
    """Layout of a timeline over windows with a second value axis on the right (bars)."""
    layout = {
        "xaxis": {"title": {"text": "window"}},
        "yaxis": yaxis,
        "yaxis2": {"overlaying": "y", "side": "right", **yaxis2, "showgrid": False},
        "legend": {"orientation": "h", "y": 1.12},
        "hovermode": "x unified",
    }
    if title:
        layout["title"] = _title(title)
    return layout


def latency_timeline(report: Any, *, title: str | None = None) -> go.Figure:
    """Latency p50/p95/p99 per window (left axis, ms) with throughput bars (right axis).

    Args:
        report: A :class:`analytics.performance.LatencyReport`, or its rows as a frame or
            dictionaries (``window_start``, ``p50_ms``, ``p95_ms``, ``p99_ms``,
            ``throughput_rps``).
        title: Optional title (escaped).

    Returns:
        The figure, or an ``insufficient data`` figure when there is no window.
    """
    rows = [row for row in records(report) if row.get("window_start") is not None]
    if not rows:
        return empty_figure("no latency window", title)
    rows.sort(key=lambda row: _sort_key(row["window_start"]))
    x = [row["window_start"] for row in rows]
    throughput = {
        "type": "bar",
        "x": x,
        "y": [_finite(row.get("throughput_rps")) for row in rows],
        "name": "throughput (req/s)",
        "yaxis": "y2",
        **_window_bars(rows),
        "marker": {"color": "rgba(150,150,150,0.3)"},
        "hovertemplate": "%{y:.3g} req/s<extra>throughput</extra>",
    }
    lines = [
        {**_line(x, [_finite(row.get(column)) for row in rows], label), "hovertemplate": "%{y:.4g} ms"}
        for column, label in _LATENCY_LINES
    ]
    layout = _timeline_layout(
        title,
        {"title": {"text": "latency (ms)"}, "rangemode": "tozero"},
        {"title": {"text": "throughput (req/s)"}, "rangemode": "tozero"},
    )
    nothing = all(_finite(row.get(column)) is None for row in rows for column, _ in _LATENCY_LINES)
    return _figure([throughput, *lines], layout, insufficient="no valid latency" if nothing else None)
