"""Plotly figure builders shared by the studio's pages and the notebooks.

Every builder takes plain data (typed rows, dictionaries, pandas or polars
frames, or the reports of :mod:`analytics.performance`) and returns a
``plotly.graph_objects.Figure``; nothing here imports dash.

Drift rows carry the columns ``column``, ``window_start``, ``method``,
``statistic``, ``p_value``, ``threshold``, ``drifted`` and ``status`` (the
metrics Parquet a monitor job writes has the same columns), so the builders
work on a fresh drift report and on stored history alike.

Text safety: plotly.js renders trace names, tick labels, hover labels and
annotations as "pseudo-HTML" (``<b>``, ``<br>``, ``<a>`` ... are interpreted).
Every user-provided string (feature names, categories, methods, statuses,
titles) is therefore HTML-escaped before it reaches a figure, so a name like
``<img src=x onerror=alert(1)>`` is displayed literally. User text never goes
into a ``hovertemplate`` itself (where ``%{...}`` would be expanded); hover
labels read it from ``customdata``. ``customdata`` keeps the raw, unescaped
``(column, window)`` pair first so a click handler can drill down.

Empty input (or input with nothing to draw) gives a figure with an
``insufficient data`` annotation (``name == "insufficient_data"``) instead of
raising.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import plotly.graph_objects as go

INSUFFICIENT_DATA = "insufficient_data"
INSUFFICIENT_TEXT = "insufficient data"
DRIFT_COLUMNS = ("column", "window_start", "method", "statistic", "p_value", "threshold", "drifted", "status")

REFERENCE_COLOR = "#636efa"
CURRENT_COLOR = "#ef553b"
DRIFTED_COLOR = "#d62728"
THRESHOLD_COLOR = "#7f7f7f"
INSUFFICIENT_COLOR = "#bdbdbd"
# Green below the threshold, amber at it, red at twice the threshold and above.
SEVERITY_COLORSCALE = [
    [0.0, "#1a9850"],
    [0.35, "#a6d96a"],
    [0.5, "#fee08b"],
    [0.75, "#f46d43"],
    [1.0, "#a50026"],
]
SEVERITY_MAX = 2.0
CURRENT_WINDOW_LABEL = "current"

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


# --------------------------------------------------------------------------- helpers


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
        reason: Optional detail shown under the ``insufficient data`` text.
        title: Optional figure title.

    Returns:
        A figure with hidden axes and one annotation named ``insufficient_data``.
    """
    figure = go.Figure()
    _add_insufficient_annotation(figure, reason)
    figure.update_layout(
        title=_title(title),
        xaxis={"visible": False},
        yaxis={"visible": False},
        template="plotly_white",
    )
    return figure


def _add_insufficient_annotation(figure: go.Figure, reason: str | None = None) -> None:
    text = INSUFFICIENT_TEXT if not reason else f"{INSUFFICIENT_TEXT}<br>{escape_text(reason)}"
    figure.add_annotation(
        text=text,
        name=INSUFFICIENT_DATA,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 16, "color": THRESHOLD_COLOR},
    )


def _title(title: str | None) -> dict[str, Any] | None:
    return {"text": escape_text(title)} if title else None


def _clean(value: Any) -> Any:
    """Map NaN/NaT and pandas' missing markers to ``None``; unwrap numpy scalars."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in {"NaTType", "NAType"}:
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    return value


def records(data: Any) -> list[dict[str, Any]]:
    """Turn rows in any supported shape into a list of plain dictionaries.

    Args:
        data: ``None``; a pandas or polars DataFrame; an object with a ``rows()`` method
            (the reports of :mod:`analytics.performance`); or an iterable of dataclass
            instances, mappings or objects with attributes.

    Returns:
        One dictionary per row, with NaN/NaT turned into ``None``.
    """
    if data is None:
        return []
    if hasattr(data, "to_dicts"):  # polars
        raw = data.to_dicts()
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        raw = data.to_dict("records")
    elif callable(getattr(data, "rows", None)):
        raw = data.rows()
    elif isinstance(data, Mapping):
        raise TypeError("expected rows (a sequence or a frame), not a single mapping")
    else:
        raw = [_row_dict(item) for item in data]
    return [{str(k): _clean(v) for k, v in row.items()} for row in raw]


def _row_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    if hasattr(item, "_asdict"):
        return dict(item._asdict())
    return {name: getattr(item, name) for name in DRIFT_COLUMNS if hasattr(item, name)}


def _number(value: Any) -> float | None:
    value = _clean(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
    """A stable, raw identifier of a window for ``customdata`` (ISO 8601 when a time)."""
    if window is None:
        return ""
    if isinstance(window, date):
        return window.isoformat()
    return str(window)


def _sort_key(window: Any) -> tuple[int, Any]:
    if window is None:
        return (1, "")
    if isinstance(window, datetime):
        return (0, window.timestamp())
    if isinstance(window, date):
        return (0, datetime(window.year, window.month, window.day).timestamp())
    return (0, str(window))


def _format_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _is_insufficient(row: Mapping[str, Any]) -> bool:
    return row.get("status") == INSUFFICIENT_DATA


def _drifted(row: Mapping[str, Any]) -> bool:
    return bool(row.get("drifted")) and not _is_insufficient(row)


def drift_severity(row: Mapping[str, Any]) -> float | None:
    """How far a drift result is from its threshold: 1.0 means exactly at the threshold.

    For a statistic compared with its threshold (PSI, Wasserstein, ...) this is
    ``statistic / threshold``. For a test whose threshold is a significance level on
    the p-value (``p_value`` present and ``drifted == p_value < threshold``), it is
    ``threshold / p_value`` so that, like for the statistics, larger means more drift.

    Args:
        row: A drift row with ``statistic``, ``p_value``, ``threshold`` and ``drifted``.

    Returns:
        The severity, or ``None`` when it cannot be computed (no statistic, a zero or
        missing threshold, an insufficient-data row).
    """
    if _is_insufficient(row):
        return None
    threshold = _number(row.get("threshold"))
    statistic = _number(row.get("statistic"))
    p_value = _number(row.get("p_value"))
    if threshold is None or threshold <= 0:
        return None
    if _threshold_applies_to_p_value(row):
        assert p_value is not None
        return min(threshold / p_value, SEVERITY_MAX * 10) if p_value > 0 else SEVERITY_MAX * 10
    return None if statistic is None else statistic / threshold


def _threshold_applies_to_p_value(row: Mapping[str, Any]) -> bool:
    """True when the row's threshold is a significance level on its p-value."""
    explicit = row.get("threshold_on")
    if explicit is not None:
        return str(explicit) == "p_value"
    p_value = _number(row.get("p_value"))
    threshold = _number(row.get("threshold"))
    statistic = _number(row.get("statistic"))
    if p_value is None or threshold is None:
        return False
    drifted = bool(row.get("drifted"))
    by_p = p_value < threshold
    by_stat = statistic is not None and statistic > threshold
    # Only the p-value reading explains the verdict; with both consistent prefer the p-value
    # when the threshold looks like a significance level.
    if by_p == drifted and by_stat != drifted:
        return True
    if by_stat == drifted and by_p != drifted:
        return False
    return threshold <= 0.2


# --------------------------------------------------------------------------- distributions


def distribution_overlay(
    reference_profile_column: Any,
    current_profile_column: Any,
    *,
    title: str | None = None,
    reference_name: str = "reference",
    current_name: str = "current",
) -> go.Figure:
    """Overlay the reference and current distribution of one column.

    Numeric columns are drawn as histogram bars on the shared bin edges (proportions,
    so windows of different sizes compare); categorical columns as grouped bars per
    category (the union of both sides' categories).

    Args:
        reference_profile_column: The reference profile of the column: an object or
            mapping with ``edges`` and ``counts`` (numeric) or ``categories``/``counts``
            or a category->count mapping (categorical).
        current_profile_column: The current profile of the same column.
        title: Optional title (escaped).
        reference_name: Legend name of the reference side.
        current_name: Legend name of the current side.

    Returns:
        The figure; an ``insufficient data`` figure when both sides are empty.
    """
    reference = _distribution(reference_profile_column)
    current = _distribution(current_profile_column)
    if reference is None and current is None:
        return empty_figure("no profile to draw", title)
    kind = (reference or current or {}).get("kind")
    if reference is not None and current is not None and reference["kind"] != current["kind"]:
        raise ValueError("cannot overlay a numeric and a categorical profile")
    figure = go.Figure()
    sides = [(reference, reference_name, REFERENCE_COLOR), (current, current_name, CURRENT_COLOR)]
    total_counts = 0
    if kind == "numeric":
        edges = (reference or current or {})["edges"]
        for side, _, _ in sides:
            if side is not None and list(side["edges"]) != list(edges):
                raise ValueError("reference and current profiles must share the same bin edges")
        centers = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        widths = [hi - lo for lo, hi in itertools.pairwise(edges)]
        for side, name, color in sides:
            if side is None:
                continue
            counts = side["counts"]
            total = sum(counts)
            total_counts += total
            figure.add_bar(
                x=centers,
                y=[c / total if total else 0.0 for c in counts],
                width=widths,
                name=escape_text(name),
                marker={"color": color},
                opacity=0.55,
                customdata=[
                    [_format_number(lo), _format_number(hi), c]
                    for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
                ],
                hovertemplate="[%{customdata[0]}, %{customdata[1]})<br>"
                "share %{y:.2%}<br>count %{customdata[2]}",
            )
        figure.update_layout(barmode="overlay", bargap=0)
        figure.update_xaxes(title_text="value")
    else:
        order = _category_order(reference, current)
        for side, name, color in sides:
            if side is None:
                continue
            counts = side["counts"]
            total = sum(counts.values())
            total_counts += total
            labels = [escape_text(c) for c in order]
            figure.add_bar(
                x=labels,
                y=[counts.get(c, 0) / total if total else 0.0 for c in order],
                name=escape_text(name),
                marker={"color": color},
                customdata=[[label, counts.get(c, 0)] for label, c in zip(labels, order, strict=True)],
                hovertemplate="%{customdata[0]}<br>share %{y:.2%}<br>count %{customdata[1]}",
            )
        figure.update_layout(barmode="group")
        figure.update_xaxes(title_text="category", type="category")
    figure.update_layout(title=_title(title), template="plotly_white", legend={"orientation": "h", "y": 1.1})
    figure.update_yaxes(title_text="share of rows", tickformat=".0%")
    if total_counts == 0:
        _add_insufficient_annotation(figure, "no rows in either profile")
    return figure


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _distribution(profile: Any) -> dict[str, Any] | None:
    """Read a profile column duck-typed: numeric histogram or category counts."""
    if profile is None:
        return None
    edges = _get(profile, "edges")
    if edges is not None:
        counts = [int(c) for c in _get(profile, "counts")]
        edges = [float(e) for e in edges]
        if len(edges) != len(counts) + 1:
            raise ValueError(
                f"a histogram needs len(edges) == len(counts) + 1, got {len(edges)} and {len(counts)}"
            )
        return {"kind": "numeric", "edges": edges, "counts": counts}
    categories = _get(profile, "categories")
    counts = _get(profile, "counts")
    if categories is not None and not isinstance(categories, Mapping):
        if counts is None:
            raise ValueError("a categorical profile needs counts for its categories")
        return {"kind": "categorical", "counts": dict(zip(categories, (int(c) for c in counts), strict=True))}
    mapping = (
        categories if isinstance(categories, Mapping) else counts if isinstance(counts, Mapping) else None
    )
    if mapping is None and isinstance(profile, Mapping):
        mapping = profile
    if mapping is None:
        raise ValueError(f"cannot read a distribution from {type(profile).__name__}")
    return {"kind": "categorical", "counts": {k: int(v) for k, v in mapping.items()}}


def _category_order(*sides: dict[str, Any] | None) -> list[Any]:
    totals: dict[Any, int] = {}
    for side in sides:
        if side is not None:
            for category, count in side["counts"].items():
                totals[category] = totals.get(category, 0) + count
    return sorted(totals, key=lambda c: (-totals[c], str(c)))


# --------------------------------------------------------------------------- drift


def _drift_rows(rows: Any) -> list[dict[str, Any]]:
    result = records(rows)
    for row in result:
        if "column" not in row:
            raise ValueError(f"drift rows need a 'column' field; got {sorted(row)}")
    return result


def _drift_customdata(row: Mapping[str, Any], severity: float | None) -> list[Any]:
    """``customdata`` of one drift point: raw ids first (for clicks), display text after."""
    window = row.get("window_start")
    return [
        row.get("column"),  # 0: raw column name, for drill-down
        _window_key(window),  # 1: raw window (ISO), for drill-down
        escape_text(row.get("column")),  # 2
        escape_text(_window_label(window)),  # 3
        escape_text(row.get("method")),  # 4
        _format_number(_number(row.get("statistic"))),  # 5
        _format_number(_number(row.get("p_value"))),  # 6
        _format_number(_number(row.get("threshold"))),  # 7
        "yes" if _drifted(row) else "no",  # 8
        escape_text(row.get("status") or ""),  # 9
        _format_number(severity),  # 10
    ]


_DRIFT_HOVER = (
    "<b>%{customdata[2]}</b><br>window %{customdata[3]}<br>method %{customdata[4]}<br>"
    "statistic %{customdata[5]} (threshold %{customdata[7]})<br>p-value %{customdata[6]}<br>"
    "drifted %{customdata[8]}<br>status %{customdata[9]}<extra></extra>"
)


def drift_heatmap(rows: Any, *, normalize: bool = True, title: str | None = None) -> go.Figure:
    """Feature x window heatmap of drift.

    Colour is the severity (statistic relative to its threshold, see
    :func:`drift_severity`; 1 = at the threshold) when ``normalize`` is true, else the
    raw statistic. Cells whose status is ``insufficient_data`` are drawn grey with the
    text ``n/a`` by a second trace. Hover shows method, statistic, p-value, threshold,
    drifted and status. ``customdata[0]``/``customdata[1]`` of every cell are the raw
    column name and window (ISO 8601) so a click can drill down.

    Args:
        rows: Drift rows (``column``, ``window_start``, ``method``, ``statistic``,
            ``p_value``, ``threshold``, ``drifted``, ``status``); ``window_start`` may be
            missing for a single report, shown as ``current``.
        normalize: Colour by severity (comparable across methods) instead of statistic.
        title: Optional title (escaped).

    Returns:
        The heatmap figure, or an ``insufficient data`` figure for no rows.
    """
    data = _drift_rows(rows)
    if not data:
        return empty_figure("no drift results", title)
    columns = _unique(row["column"] for row in data)
    windows = sorted({row.get("window_start") for row in data}, key=_sort_key)
    cell: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in data:
        cell[(row["column"], row.get("window_start"))] = row  # the last row for a cell wins

    x_labels = [escape_text(_window_label(w)) for w in windows]
    y_labels = [escape_text(c) for c in columns]
    z: list[list[float | None]] = []
    z_insufficient: list[list[float | None]] = []
    text_insufficient: list[list[str]] = []
    customdata: list[list[list[Any]]] = []
    for column in columns:
        z_row, gap_row, text_row, data_row = [], [], [], []
        for window in windows:
            row = cell.get((column, window))
            if row is None:
                z_row.append(None)
                gap_row.append(None)
                text_row.append("")
                data_row.append([column, _window_key(window), *[""] * 9])
                continue
            severity = drift_severity(row)
            value = severity if normalize else _number(row.get("statistic"))
            insufficient = _is_insufficient(row)
            z_row.append(None if insufficient else value)
            gap_row.append(1.0 if insufficient else None)
            text_row.append("n/a" if insufficient else "")
            data_row.append(_drift_customdata(row, severity))
        z.append(z_row)
        z_insufficient.append(gap_row)
        text_insufficient.append(text_row)
        customdata.append(data_row)

    figure = go.Figure()
    colorbar_title = "statistic / threshold" if normalize else "statistic"
    figure.add_heatmap(
        x=x_labels,
        y=y_labels,
        z=z,
        customdata=customdata,
        hovertemplate=_DRIFT_HOVER,
        colorscale=SEVERITY_COLORSCALE,
        zmin=0.0 if normalize else None,
        zmax=SEVERITY_MAX if normalize else None,
        colorbar={"title": {"text": colorbar_title}},
        xgap=2,
        ygap=2,
        name="drift",
        hoverongaps=False,
    )
    figure.add_heatmap(
        x=x_labels,
        y=y_labels,
        z=z_insufficient,
        customdata=customdata,
        text=text_insufficient,
        texttemplate="%{text}",
        hovertemplate="<b>%{customdata[2]}</b><br>window %{customdata[3]}<br>"
        + INSUFFICIENT_TEXT
        + "<br>method %{customdata[4]}<extra></extra>",
        colorscale=[[0.0, INSUFFICIENT_COLOR], [1.0, INSUFFICIENT_COLOR]],
        showscale=False,
        xgap=2,
        ygap=2,
        name=INSUFFICIENT_TEXT,
        hoverongaps=False,
    )
    figure.update_layout(
        title=_title(title),
        template="plotly_white",
        xaxis={"title": {"text": "window"}, "type": "category"},
        yaxis={"title": {"text": "feature"}, "type": "category", "autorange": "reversed"},
    )
    if all(v is None for z_row in z for v in z_row):
        _add_insufficient_annotation(figure, "no window has enough data")
    return figure


def drift_timeline(
    rows: Any,
    threshold: float | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """Drift statistic of one or more features over windows.

    One line per feature (statistic by window); a dashed threshold line (the given
    ``threshold``, else the rows' own threshold when they share one, else a step line of
    each window's threshold); red ``x`` markers on drifted windows; grey markers along the
    bottom for windows with insufficient data. Markers carry ``customdata`` (raw column,
    window) like the heatmap.

    Args:
        rows: Drift rows with ``column``, ``window_start``, ``statistic`` and optionally
            ``threshold``, ``drifted``, ``status``, ``method``, ``p_value``.
        threshold: The threshold to draw; ``None`` takes it from the rows.
        title: Optional title (escaped).

    Returns:
        The line figure, or an ``insufficient data`` figure when nothing can be drawn.
    """
    data = _drift_rows(rows)
    data = [row for row in data if row.get("window_start") is not None] or data
    if not data:
        return empty_figure("no drift results", title)
    data.sort(key=lambda row: _sort_key(row.get("window_start")))
    x_of = {id(row): row.get("window_start") or CURRENT_WINDOW_LABEL for row in data}
    figure = go.Figure()
    for column in _unique(row["column"] for row in data):
        series = [row for row in data if row["column"] == column]
        figure.add_scatter(
            x=[x_of[id(row)] for row in series],
            y=[None if _is_insufficient(row) else _number(row.get("statistic")) for row in series],
            mode="lines+markers",
            name=escape_text(column),
            customdata=[_drift_customdata(row, drift_severity(row)) for row in series],
            hovertemplate=_DRIFT_HOVER,
            connectgaps=False,
        )
    drifted = [row for row in data if _drifted(row)]
    figure.add_scatter(
        x=[x_of[id(row)] for row in drifted],
        y=[_number(row.get("statistic")) for row in drifted],
        mode="markers",
        name="drifted",
        marker={"symbol": "x", "size": 12, "color": DRIFTED_COLOR},
        customdata=[_drift_customdata(row, drift_severity(row)) for row in drifted],
        hovertemplate=_DRIFT_HOVER,
    )
    insufficient = [row for row in data if _is_insufficient(row)]
    figure.add_scatter(
        x=[x_of[id(row)] for row in insufficient],
        y=[0.02] * len(insufficient),
        yaxis="y2",
        mode="markers",
        name=INSUFFICIENT_TEXT,
        marker={"symbol": "circle-open", "size": 10, "color": INSUFFICIENT_COLOR},
        customdata=[_drift_customdata(row, None) for row in insufficient],
        hovertemplate="<b>%{customdata[2]}</b><br>window %{customdata[3]}<br>"
        + INSUFFICIENT_TEXT
        + "<extra></extra>",
    )
    _add_threshold(figure, data, threshold, x_of)
    figure.update_layout(
        title=_title(title),
        template="plotly_white",
        xaxis={"title": {"text": "window"}},
        yaxis={"title": {"text": "statistic"}},
        # An invisible axis fixed to [0, 1] keeps the insufficient-data markers at the bottom.
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True},
        legend={"orientation": "h", "y": 1.1},
    )
    if all(_number(row.get("statistic")) is None or _is_insufficient(row) for row in data):
        _add_insufficient_annotation(figure, "no window has enough data")
    return figure


def _add_threshold(
    figure: go.Figure, data: list[dict[str, Any]], threshold: float | None, x_of: dict[int, Any]
) -> None:
    if threshold is not None:
        figure.add_hline(
            y=float(threshold),
            line={"dash": "dash", "color": THRESHOLD_COLOR},
            annotation_text=f"threshold {_format_number(float(threshold))}",
            name="threshold",
        )
        return
    values = [_number(row.get("threshold")) for row in data]
    distinct = {v for v in values if v is not None}
    if len(distinct) == 1:
        _add_threshold(figure, data, distinct.pop(), x_of)
    elif distinct:
        figure.add_scatter(
            x=[x_of[id(row)] for row in data],
            y=values,
            mode="lines",
            line={"dash": "dash", "color": THRESHOLD_COLOR, "shape": "hv"},
            name="threshold",
            hoverinfo="skip",
        )


# --------------------------------------------------------------------------- performance


def _report_rows(report: Any) -> tuple[list[dict[str, Any]], str | None]:
    task = getattr(report, "task", None)
    return records(report), task


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
        ``insufficient data`` figure when there is no window or no metric value.
    """
    rows, task = _report_rows(report)
    rows = [row for row in rows if row.get("window_start") is not None]
    if not rows:
        return empty_figure("no performance window", title)
    rows.sort(key=lambda row: _sort_key(row["window_start"]))
    if task is None:
        task = "classification" if "roc_auc" in rows[0] or "accuracy" in rows[0] else "regression"
    names = (
        list(metrics)
        if metrics
        else list(_DEFAULT_CLASSIFICATION if task == "classification" else _DEFAULT_REGRESSION)
    )
    unknown = [name for name in names if name not in rows[0]]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; the rows have {sorted(rows[0])}")
    x = [row["window_start"] for row in rows]
    statuses = [escape_text(row.get("status") or "") for row in rows]
    reasons = [escape_text(row.get("reason") or "") for row in rows]
    figure = go.Figure()
    if "label_coverage" in rows[0]:
        figure.add_bar(
            x=x,
            y=[_number(row.get("label_coverage")) for row in rows],
            name="label coverage",
            yaxis="y2",
            marker={"color": "rgba(150,150,150,0.25)"},
            customdata=[[row.get("n"), row.get("n_labelled")] for row in rows],
            hovertemplate="label coverage %{y:.1%}<br>%{customdata[1]} of %{customdata[0]} labelled"
            "<extra></extra>",
        )
    for name in names:
        figure.add_scatter(
            x=x,
            y=[_number(row.get(name)) for row in rows],
            mode="lines+markers",
            name=escape_text(_METRIC_LABELS.get(name, name)),
            customdata=[[s, r] for s, r in zip(statuses, reasons, strict=True)],
            hovertemplate="%{y:.4g}<br>status %{customdata[0]}<br>%{customdata[1]}",
            connectgaps=False,
        )
    figure.update_layout(
        title=_title(title),
        template="plotly_white",
        xaxis={"title": {"text": "window"}},
        yaxis={"title": {"text": "metric"}},
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "range": [0, 1],
            "tickformat": ".0%",
            "title": {"text": "label coverage"},
            "showgrid": False,
        },
        legend={"orientation": "h", "y": 1.12},
        hovermode="x unified",
    )
    if all(_number(row.get(name)) is None for row in rows for name in names):
        _add_insufficient_annotation(figure, "no window has labelled predictions")
    return figure


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
    rows, _ = _report_rows(report)
    rows = [row for row in rows if row.get("window_start") is not None]
    if not rows:
        return empty_figure("no latency window", title)
    rows.sort(key=lambda row: _sort_key(row["window_start"]))
    x = [row["window_start"] for row in rows]
    figure = go.Figure()
    figure.add_bar(
        x=x,
        y=[_number(row.get("throughput_rps")) for row in rows],
        name="throughput (req/s)",
        yaxis="y2",
        marker={"color": "rgba(150,150,150,0.3)"},
        hovertemplate="%{y:.3g} req/s<extra>throughput</extra>",
    )
    for column, label in _LATENCY_LINES:
        figure.add_scatter(
            x=x,
            y=[_number(row.get(column)) for row in rows],
            mode="lines+markers",
            name=label,
            hovertemplate="%{y:.4g} ms",
            connectgaps=False,
        )
    figure.update_layout(
        title=_title(title),
        template="plotly_white",
        xaxis={"title": {"text": "window"}},
        yaxis={"title": {"text": "latency (ms)"}, "rangemode": "tozero"},
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "title": {"text": "throughput (req/s)"},
            "rangemode": "tozero",
            "showgrid": False,
        },
        legend={"orientation": "h", "y": 1.12},
        hovermode="x unified",
    )
    if all(_number(row.get(column)) is None for row in rows for column, _ in _LATENCY_LINES):
        _add_insufficient_annotation(figure, "no valid latency")
    return figure


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen
