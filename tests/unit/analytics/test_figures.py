"""analytics.figures: figure structure, drill-down data, escaping and empty input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import polars as pl
import pyarrow as pa
import pytest

from analytics import figures
from analytics.drift import drift, drift_windows
from analytics.performance import classification_metrics, latency_metrics
from analytics.profile import build_spec, profile

unit = pytest.mark.unit

XSS = "<img src=x onerror=alert(1)><b>bold</b> & %{x}"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt; &amp; %{x}"
T0 = datetime(2024, 5, 1)


@dataclass(frozen=True)
class DriftRow:
    column: str
    window_start: datetime | None
    method: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    status: str


def _drift_rows() -> list[DriftRow]:
    rows = []
    for day in range(3):
        window = T0 + timedelta(days=day)
        rows.append(DriftRow("age", window, "psi", 0.1 * day, None, 0.2, 0.1 * day > 0.2, "ok"))
        insufficient = day == 1
        rows.append(
            DriftRow(
                XSS,
                window,
                "psi",
                None if insufficient else 0.3,
                None,
                0.2,
                not insufficient,
                "insufficient_data" if insufficient else "ok",
            )
        )
    return rows


def _all_text(figure: go.Figure) -> list[str]:
    """Every string plotly.js would render as pseudo-HTML."""
    texts: list[str] = []
    for trace in figure.data:
        texts.append(str(trace.name or ""))
        for attr in ("x", "y", "text"):
            values = getattr(trace, attr, None)
            if values is not None:
                texts.extend(
                    str(v) for row in values for v in (row if isinstance(row, list | tuple) else [row])
                )
    texts.extend(str(a.text) for a in figure.layout.annotations)
    if figure.layout.title and figure.layout.title.text:
        texts.append(figure.layout.title.text)
    return texts


def _assert_no_raw_markup(figure: go.Figure) -> None:
    for text in _all_text(figure):
        assert "<img" not in text and "<b>bold" not in text, text
    for trace in figure.data:
        # User text reaches hover labels only through customdata, never the template itself.
        template = trace.hovertemplate or ""
        assert "img" not in template and "bold" not in template, template


def _insufficient_annotations(figure: go.Figure) -> list[str]:
    return [a.text for a in figure.layout.annotations if a.name == figures.INSUFFICIENT_DATA]


# --------------------------------------------------------------------------- helpers


@unit
def test_escape_text_makes_markup_literal() -> None:
    assert figures.escape_text(XSS) == XSS_ESCAPED
    assert figures.escape_text(None) == ""
    assert figures.escape_text(3) == "3"


@unit
def test_records_accepts_dataclasses_dicts_and_frames() -> None:
    rows = _drift_rows()
    from_dataclasses = figures.records(rows)
    assert from_dataclasses[0] == {
        "column": "age",
        "window_start": T0,
        "method": "psi",
        "statistic": 0.0,
        "p_value": None,
        "threshold": 0.2,
        "drifted": False,
        "status": "ok",
    }
    frame = pd.DataFrame(from_dataclasses)
    assert figures.records(frame) == from_dataclasses  # NaN and NaT come back as None
    assert figures.records(pl.DataFrame(from_dataclasses)) == from_dataclasses
    assert figures.records(from_dataclasses) == from_dataclasses
    with pytest.raises(TypeError):
        figures.records({"column": "age"})


# --------------------------------------------------------------------------- drift heatmap


@unit
def test_drift_heatmap_cells_hover_and_drill_down_data() -> None:
    figure = figures.drift_heatmap(_drift_rows())
    main, gaps = figure.data
    assert (main.type, gaps.type) == ("heatmap", "heatmap")
    assert list(main.y) == ["age", XSS_ESCAPED]
    assert list(main.x) == ["2024-05-01", "2024-05-02", "2024-05-03"]
    # Colour is statistic / threshold; the insufficient cell is empty in the main trace ...
    assert main.z[0] == pytest.approx([0.0, 0.5, 1.0])
    assert main.z[1][0] == pytest.approx(1.5)
    assert main.z[1][1] is None
    # ... and drawn by the grey trace with "n/a".
    assert list(gaps.z[1]) == [None, 0.0, None]  # 0: insufficient data, 1: error
    assert gaps.text[1][1] == "n/a"
    assert gaps.name == "insufficient data"
    # customdata[0:2] is the raw (column, window) of the cell for a click handler.
    assert tuple(main.customdata[1][2][:2]) == (XSS, (T0 + timedelta(days=2)).isoformat())
    assert main.customdata[1][2][2] == XSS_ESCAPED
    assert tuple(gaps.customdata[1][1][:2]) == (XSS, (T0 + timedelta(days=1)).isoformat())
    for name in ("method", "p-value", "status", "drifted"):
        assert name in main.hovertemplate
    assert main.zmin == 0 and main.zmax == figures.SEVERITY_MAX
    _assert_no_raw_markup(figure)
    json.loads(figure.to_json())  # serialisable as a dash figure


@unit
def test_drift_heatmap_raw_statistic_and_p_value_tests() -> None:
    rows = [
        {
            "column": "a",
            "method": "ks",
            "statistic": 0.4,
            "p_value": 0.01,
            "threshold": 0.05,
            "drifted": True,
            "status": "ok",
        },
        {
            "column": "b",
            "method": "ks",
            "statistic": 0.1,
            "p_value": 0.5,
            "threshold": 0.05,
            "drifted": False,
            "status": "ok",
        },
    ]
    normalised = figures.drift_heatmap(rows).data[0]
    # A p-value test: severity is threshold / p-value, so drift is > 1 as for statistics.
    assert [r[0] for r in normalised.z] == pytest.approx([5.0, 0.1])
    assert list(normalised.x) == [figures.CURRENT_WINDOW_LABEL]
    raw = figures.drift_heatmap(rows, normalize=False).data[0]
    assert [r[0] for r in raw.z] == pytest.approx([0.4, 0.1])
    assert raw.colorbar.title.text == "statistic"


@unit
@pytest.mark.parametrize(
    "empty",
    [[], None, pd.DataFrame(columns=list(figures.DRIFT_COLUMNS)), pl.DataFrame({"column": []})],
    ids=["list", "none", "pandas", "polars"],
)
def test_empty_drift_input_gives_an_insufficient_data_figure(empty: object) -> None:
    for build in (figures.drift_heatmap, figures.drift_timeline):
        figure = build(empty)
        assert figure.data == ()
        assert _insufficient_annotations(figure) == ["insufficient data<br>no drift results"]


@unit
def test_all_insufficient_rows_are_drawn_and_annotated() -> None:
    rows = [
        DriftRow("age", T0, "psi", None, None, 0.2, False, "insufficient_data"),
        DriftRow("age", T0 + timedelta(days=1), "psi", None, None, 0.2, False, "insufficient_data"),
    ]
    heatmap = figures.drift_heatmap(rows)
    assert list(heatmap.data[1].z[0]) == [0.0, 0.0]
    assert _insufficient_annotations(heatmap)
    timeline = figures.drift_timeline(rows)
    insufficient = next(t for t in timeline.data if t.name == "insufficient data")
    assert len(insufficient.x) == 2
    assert _insufficient_annotations(timeline)


# --------------------------------------------------------------------------- drift timeline


@unit
def test_drift_timeline_lines_threshold_and_drifted_markers() -> None:
    figure = figures.drift_timeline(_drift_rows(), threshold=0.2)
    names = [trace.name for trace in figure.data]
    assert names == ["age", XSS_ESCAPED, "drifted", "insufficient data"]
    age, other, drifted, insufficient = figure.data
    assert list(age.y) == pytest.approx([0.0, 0.1, 0.2])
    assert other.y[1] is None  # the insufficient window is a gap, not a zero
    assert list(drifted.x) == [T0, T0 + timedelta(days=2)]
    assert drifted.marker.symbol == "x"
    assert [tuple(c[:2]) for c in drifted.customdata] == [
        (XSS, T0.isoformat()),
        (XSS, (T0 + timedelta(days=2)).isoformat()),
    ]
    assert list(insufficient.x) == [T0 + timedelta(days=1)]
    assert insufficient.yaxis == "y2"
    (threshold_line,) = figure.layout.shapes
    assert (threshold_line.y0, threshold_line.y1) == (0.2, 0.2)
    assert _insufficient_annotations(figure) == []
    _assert_no_raw_markup(figure)


@unit
def test_drift_timeline_takes_the_threshold_from_the_rows() -> None:
    same = figures.drift_timeline([r for r in _drift_rows() if r.column == "age"])
    assert same.layout.shapes[0].y0 == 0.2
    varying = [
        {"column": "age", "window_start": T0, "statistic": 0.1, "threshold": 0.2, "drifted": False},
        {
            "column": "age",
            "window_start": T0 + timedelta(days=1),
            "statistic": 0.1,
            "threshold": 0.05,
            "drifted": True,
        },
    ]
    # Thresholds differ between windows: by default the severity is drawn, against 1 ...
    severity = figures.drift_timeline(varying)
    assert list(severity.data[0].y) == pytest.approx([0.5, 2.0])
    assert severity.layout.shapes[0].y0 == 1.0
    # ... and the raw statistic on request, against a step line of the thresholds.
    figure = figures.drift_timeline(varying, value="statistic")
    step = next(t for t in figure.data if t.name == "threshold")
    assert list(step.y) == [0.2, 0.05]
    assert step.line.shape == "hv"


# --------------------------------------------------------------------------- distributions


@unit
def test_numeric_distribution_overlay_on_closed_bins() -> None:
    reference = {"edges": [0.0, 1.0, 2.0, 4.0], "counts": [2, 6, 2]}
    current = {"edges": [0.0, 1.0, 2.0, 4.0], "counts": [0, 5, 15]}
    figure = figures.distribution_overlay(reference, current, title=XSS)
    ref_bars, cur_bars = figure.data
    assert (ref_bars.name, cur_bars.name) == ("reference", "current")
    assert list(ref_bars.x) == [0, 1, 2]
    assert list(figure.layout.xaxis.ticktext) == ["(0, 1]", "(1, 2]", "(2, 4]"]
    assert list(ref_bars.y) == pytest.approx([0.2, 0.6, 0.2])
    assert list(cur_bars.y) == pytest.approx([0.0, 0.25, 0.75])
    assert [c[1] for c in cur_bars.customdata] == [0, 5, 15]
    assert figure.layout.title.text == figures.escape_text(XSS)
    _assert_no_raw_markup(figure)


@unit
def test_categorical_distribution_overlay_uses_the_union_of_categories() -> None:
    reference = {"categories": {"red": 6, XSS: 4}}
    current = {"categories": {"red": 1, "blue": 9}}
    figure = figures.distribution_overlay(reference, current)
    ref_bars, cur_bars = figure.data
    assert list(figure.layout.xaxis.ticktext) == ["red", XSS_ESCAPED, "blue"]
    assert list(ref_bars.y) == pytest.approx([0.6, 0.4, 0.0])
    assert list(cur_bars.y) == pytest.approx([0.1, 0.0, 0.9])
    _assert_no_raw_markup(figure)


@unit
def test_distribution_overlay_edge_cases() -> None:
    assert _insufficient_annotations(figures.distribution_overlay(None, None))
    empty = figures.distribution_overlay({"edges": [0, 1], "counts": [0]}, {"edges": [0, 1], "counts": [0]})
    assert _insufficient_annotations(empty) == ["insufficient data<br>no rows in either profile"]
    only_current = figures.distribution_overlay(None, {"categories": {"a": 3}})
    assert [t.name for t in only_current.data] == ["current"]
    with pytest.raises(ValueError, match="same bin edges"):
        figures.distribution_overlay({"edges": [0, 1], "counts": [1]}, {"edges": [0, 2], "counts": [1]})
    with pytest.raises(ValueError, match="numeric and a categorical"):
        figures.distribution_overlay({"edges": [0, 1], "counts": [1]}, {"categories": {"a": 1}})


@pytest.fixture
def profiles():
    """Reference profile, drifted current profile and its two daily window profiles."""
    con = duckdb.connect()
    n = 2000
    rng = np.random.default_rng(11)
    reference = con.from_arrow(
        pa.table(
            {
                "amount": rng.normal(0, 1, n),
                "count": rng.integers(0, 4, n),
                XSS: rng.choice(["a", "b"], n),
            }
        )
    )
    current = con.from_arrow(
        pa.table(
            {
                "ts": [T0 + timedelta(seconds=86400 * 2 * i / n) for i in range(n)],
                # The first day is drifted (shifted, plus +inf and an outlier), the second is not.
                "amount": np.concatenate(
                    [rng.normal(0.8, 1, n // 2 - 2), [np.inf, 50.0], rng.normal(0, 1, n // 2)]
                ),
                "count": rng.integers(0, 4, n),
                XSS: rng.choice(["a", "b", "<new>"], n),
            }
        )
    )
    spec = build_spec(reference, bins=8)
    yield (
        profile(reference, spec),
        profile(current, spec),
        profile(current, spec, window="day", timestamp_column="ts"),
    )
    con.close()


@unit
def test_distribution_overlay_of_profile_columns(profiles) -> None:
    reference, current, _ = profiles
    numeric = figures.distribution_overlay(reference["amount"], current["amount"])
    ref_bars, cur_bars = numeric.data
    # Interior bins, then the open upper bin that holds +inf, 50 and the other values above the
    # reference range; the empty lower bin is left out.
    assert len(ref_bars.y) == len(reference["amount"].spec.edges)
    above = current["amount"].bin_counts[-1] + current["amount"].pos_inf
    assert above >= 2
    assert cur_bars.customdata[-1][1] == above
    assert "above the reference range" in cur_bars.customdata[-1][0]
    assert sum(c[1] for c in cur_bars.customdata) == 2000
    assert sum(ref_bars.y) == pytest.approx(1.0)
    assert numeric.layout.title.text == "distribution of amount"
    # An integer column: every value has its own visible bar, labelled with the value.
    integer = figures.distribution_overlay(reference["count"], current["count"])
    assert list(integer.layout.xaxis.ticktext) == ["0", "1", "2", "3"]
    categorical = figures.distribution_overlay(reference[XSS], current[XSS])
    assert list(categorical.layout.xaxis.ticktext) == [
        *(figures.escape_text(c) for c in reference[XSS].spec.categories),
        "&lt;new&gt;",
    ]
    assert categorical.data[0].y[-1] == 0.0 and categorical.data[1].y[-1] > 0.2
    _assert_no_raw_markup(categorical)
    # Rows of Profile.to_pandas() (as stored in Parquet) draw the same figure.
    frame = reference.to_pandas().set_index("column")
    again = figures.distribution_overlay(
        frame.loc["amount"].to_dict(), current.to_pandas().set_index("column").loc["amount"].to_dict()
    )
    assert list(again.data[1].y) == pytest.approx(list(cur_bars.y))


@unit
def test_drift_figures_from_drift_results(profiles) -> None:
    reference, current, windows = profiles
    report = drift(reference, current)
    heatmap = figures.drift_heatmap(report)
    assert list(heatmap.data[0].y) == ["amount", "count", XSS_ESCAPED]
    assert list(heatmap.data[0].x) == [figures.CURRENT_WINDOW_LABEL]
    amount = report["amount"]
    assert heatmap.data[0].z[0][0] == pytest.approx(figures.drift_severity(amount.to_dict()))
    assert heatmap.data[0].z[0][0] > 1  # drifted
    assert heatmap.data[0].customdata[2][0][0] == XSS
    timeline = drift_windows(reference, windows)
    figure = figures.drift_timeline([r for r in figures.records(timeline) if r["column"] == "amount"])
    line = figure.data[0]
    assert list(line.x) == [T0, T0 + timedelta(days=1)]
    assert [tuple(c[:2]) for c in figure.data[1].customdata] == [("amount", T0.isoformat())]
    by_window = figures.drift_heatmap(timeline)
    assert list(by_window.data[0].x) == ["2024-05-01", "2024-05-02"]
    assert by_window.data[0].z[0][0] > 1 > by_window.data[0].z[0][1]


@unit
def test_severity_reads_thresholds_like_the_policy() -> None:
    effect = {"method": "wasserstein_normed", "statistic": 0.3, "threshold": 0.1, "status": "ok"}
    assert figures.drift_severity(effect) == pytest.approx(3.0)
    assert figures.drift_severity({**effect, "statistic": math.inf}) == figures.SEVERITY_CAP
    test = {"method": "ks", "statistic": 0.2, "p_value": 0.001, "p_value_adjusted": 0.004, "threshold": 0.01}
    assert figures.drift_severity(test) == pytest.approx(2.5)  # the adjusted p-value decides
    assert figures.drift_severity({**test, "p_value_adjusted": 0.0}) == figures.SEVERITY_CAP
    assert figures.drift_severity({**effect, "status": "insufficient_data"}) is None
    assert figures.drift_severity({**effect, "threshold": None}) is None


@unit
def test_timeline_switches_to_severity_when_methods_differ() -> None:
    rows = [
        {
            "column": "x",
            "window_start": T0,
            "method": "ks",
            "statistic": 0.3,
            "p_value": 0.2,
            "p_value_adjusted": 0.2,
            "threshold": 0.01,
            "drifted": False,
            "status": "ok",
        },
        {
            "column": "x",
            "window_start": T0 + timedelta(days=1),
            "method": "wasserstein_normed",
            "statistic": 0.25,
            "p_value": 1e-9,
            "p_value_adjusted": 1e-9,
            "threshold": 0.1,
            "drifted": True,
            "status": "ok",
        },
        {
            "column": "x",
            "window_start": T0 + timedelta(days=2),
            "method": None,
            "statistic": None,
            "threshold": None,
            "drifted": False,
            "status": "error",
            "reason": "column 'x' changed type",
        },
    ]
    figure = figures.drift_timeline(rows)
    line = figure.data[0]
    assert list(line.y) == pytest.approx([0.05, 2.5, None])
    assert figure.layout.shapes[0].y0 == 1.0
    assert figure.layout.yaxis.title.text == "statistic / threshold"
    p_values = figures.drift_timeline(rows[:1])
    assert p_values.layout.yaxis.type == "log"
    assert list(p_values.data[0].y) == [0.2]
    assert p_values.layout.shapes[0].y0 == 0.01
    heatmap = figures.drift_heatmap(rows)
    assert list(heatmap.data[1].text[0]) == ["", "", "error"]
    assert heatmap.data[1].z[0][2] == 1.0
    assert heatmap.data[1].customdata[0][2][11] == "column &#x27;x&#x27; changed type"


# --------------------------------------------------------------------------- performance


@pytest.fixture
def reports():
    con = duckdb.connect()
    n = 48
    logs = con.from_arrow(
        pa.table(
            {
                "request_id": list(range(n)),
                "timestamp": [T0 + timedelta(hours=i) for i in range(n)],
                "score": [(i % 10) / 10 for i in range(n)],
                "latency_ms": [float(10 + i) for i in range(n)],
            }
        )
    )
    # Only the first day is labelled: the second day is insufficient.
    labels = con.from_arrow(
        pa.table({"request_id": list(range(24)), "label": [int(i % 10 >= 4) for i in range(24)]})
    )
    yield classification_metrics(logs, labels), latency_metrics(logs)
    con.close()


@unit
def test_performance_timeline_from_report_and_frames(reports) -> None:
    report, _ = reports
    figure = figures.performance_timeline(report)
    coverage, *lines = figure.data
    assert coverage.type == "bar" and coverage.yaxis == "y2"
    assert list(coverage.y) == [1.0, 0.0]
    assert [t.name for t in lines] == ["accuracy", "precision", "recall", "F1", "ROC AUC", "ECE"]
    roc = lines[4]
    assert list(roc.x) == [T0, T0 + timedelta(days=1)]
    assert roc.y[0] == pytest.approx(report.windows[0].roc_auc)
    assert roc.y[1] is None
    assert roc.customdata[1][0] == "insufficient_data"
    for frame in (report.to_pandas(), report.to_polars(), report.rows()):
        again = figures.performance_timeline(frame)
        assert [t.name for t in again.data] == [t.name for t in figure.data]
        assert again.data[5].y[0] == pytest.approx(roc.y[0])
        assert again.data[5].y[1] is None
    chosen = figures.performance_timeline(report, metrics=["log_loss"])
    assert [t.name for t in chosen.data] == ["label coverage", "log loss"]
    with pytest.raises(ValueError, match="unknown metric"):
        figures.performance_timeline(report, metrics=["bogus"])


@unit
def test_latency_timeline_quantiles_and_throughput(reports) -> None:
    _, latency = reports
    figure = figures.latency_timeline(latency)
    throughput, p50, p95, p99 = figure.data
    assert throughput.yaxis == "y2"
    assert list(throughput.y) == pytest.approx([24 / 86400, 24 / 86400])
    assert [p50.name, p95.name, p99.name] == ["p50", "p95", "p99"]
    assert list(p99.y) == pytest.approx([w.p99_ms for w in latency.windows])
    assert _insufficient_annotations(figure) == []


@unit
def test_performance_figures_on_empty_reports() -> None:
    empty = pd.DataFrame(columns=["window_start", "accuracy", "status"])
    assert _insufficient_annotations(figures.performance_timeline(empty))
    assert _insufficient_annotations(figures.latency_timeline([]))
    unlabelled = [
        {"window_start": T0, "accuracy": None, "label_coverage": 0.0, "status": "insufficient_data"}
    ]
    figure = figures.performance_timeline(unlabelled, metrics=["accuracy"])
    assert _insufficient_annotations(figure) == ["insufficient data<br>no window has labelled predictions"]


# --------------------------------------------------------------------------- rendering


@pytest.mark.e2e
def test_markup_in_names_renders_as_text_in_chromium(page, browser_log, tmp_path: Path) -> None:
    figure = figures.drift_heatmap(_drift_rows(), title=XSS)
    path = tmp_path / "heatmap.html"
    figure.write_html(path, include_plotlyjs=True, full_html=True)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_selector(".ytick text")
    ticks = [t.text_content() for t in page.query_selector_all(".ytick text")]
    assert XSS in ticks
    assert page.query_selector(".gtitle").text_content() == XSS
    assert page.query_selector_all("img") == []
    # Hover the feature's first cell: the label shows the name literally.
    plot = page.query_selector(".nsewdrag").bounding_box()
    page.mouse.move(plot["x"] + plot["width"] / 6, plot["y"] + plot["height"] * 3 / 4)
    page.wait_for_selector(".hoverlayer .hovertext")
    hover = " ".join(t.text_content() for t in page.query_selector_all(".hoverlayer text"))
    assert XSS in hover
    assert dialogs == []
    assert browser_log.page_errors == []
