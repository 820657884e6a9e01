"""Monitoring page callbacks on the monitored demo workspace, called as plain functions or over HTTP.

Plain calls run inside a Flask request context of a real studio with a signed-in user (the
``@requires`` wrapper and every project check run as in production); acknowledging an alert and the
refusals of the guard go through ``/_dash-update-component`` like the browser.
"""

from __future__ import annotations

import base64
import csv
import importlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
from dash.exceptions import PreventUpdate
from flask_login import login_user
from plotly.utils import PlotlyJSONEncoder

import callbacks.monitoring as cb
from analytics.figures import INSUFFICIENT_DATA
from app.auth import StudioUser, services
from app.components.ids.monitoring import ID
from app.factory import create_app
from jobs.alerts import RuleSpec, create_rule, evaluate_alerts
from jobs.contracts import SEGMENT_METRICS
from jobs.db.alerting import Alert
from jobs.permissions import Role
from jobs.projects import create_project
from jobs.seed import seed_demo_accounts
from jobs.users import create_user, grant_role
from tests.unit.analytics.test_metrics import MonitoredDemo, monitored_demo
from tests.unit.app.studio import Studio, csrf_header, sign_in, studio_settings, texts

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"
SOLO_PASSWORD = "solo-password-1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> MonitoredDemo:
    return monitored_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, demo: MonitoredDemo) -> Iterator[Studio]:
    """A seeded studio reading the demo workspace, plus ``solo`` (monitoring team on demand-forecast
    only), ``nobody`` (no role) and a project named with markup."""
    settings = studio_settings(tmp_path_factory.mktemp("monitoring-studio"), MMS_DATA_URI=str(demo.data))
    built = Studio(app=create_app(settings), settings=settings)
    with built.db(write=True) as session:
        assert seed_demo_accounts(session)
    admin = built.actor("admin")
    with built.db(write=True) as session:
        create_project(session, admin, "markup", XSS_NAME)
        solo = create_user(session, admin, "solo", SOLO_PASSWORD)
        grant_role(session, admin, solo, "demand-forecast", Role.MONITORING_TEAM)
        create_user(session, admin, "nobody", SOLO_PASSWORD)
    try:
        yield built
    finally:
        built.close()


@contextmanager
def signed_in(studio: Studio, username: str) -> Iterator[None]:
    """A request context of ``studio`` in which ``username`` is the signed-in user."""
    with studio.app.server.test_request_context("/_dash-update-component", method="POST"):
        login_user(StudioUser(studio.actor(username)))
        yield


def _selection(demo: MonitoredDemo, model: str = "credit-default", project: str = "credit-risk") -> dict:
    return {
        "start": demo.first.isoformat(),
        "end": demo.last.isoformat(),
        "window": "day",
        "project": project,
        "model": model,
        "environment": "prod",
    }


def _drifted_cells(figure: go.Figure) -> set[tuple[str, str]]:
    """(column, window) of the heatmap cells the hover marks as drifted."""
    return {(cell[0], cell[1]) for row in figure.data[0].customdata for cell in row if cell[8] == "yes"}


def _is_empty(figure: go.Figure) -> bool:
    return not figure.data and any(a.name == INSUFFICIENT_DATA for a in figure.layout.annotations)


def _shown(component: Any) -> list[str]:
    return texts(json.loads(json.dumps(component, cls=PlotlyJSONEncoder)), in_children=True)


def _ids(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("props"), dict) and isinstance(node["props"].get("id"), str):
            found.add(node["props"]["id"])
        for value in node.values():
            found |= _ids(value)
    elif isinstance(node, list):
        for value in node:
            found |= _ids(value)
    return found


# --------------------------------------------------------------------------- wiring


def test_every_component_a_callback_uses_is_in_the_page_layout(studio: Studio) -> None:
    # Imported here: a page registers itself with Dash, which needs an app (the studio made one).
    page = importlib.import_module("pages.monitoring")
    with signed_in(studio, "monitoring"):
        layout = json.loads(json.dumps(page.layout(), cls=PlotlyJSONEncoder))
    in_layout = _ids(layout)
    used = set()
    for output, entry in studio.app.callback_map.items():
        specs = [*entry["inputs"], *entry["state"]]
        if output.startswith("monitoring-") or output.startswith("..monitoring-"):
            used |= {spec["id"] for spec in specs}
            used |= {part.split(".")[0] for part in output.strip(".").split("...")}
    # Pattern-matching ids (the acknowledge buttons) are JSON; their rows are rendered by a callback.
    patterns = {component for component in used if component.startswith("{")}
    assert {json.loads(p)["type"] for p in patterns} == {ID.ALERT_ACK_TYPE}
    assert used - patterns and used - patterns <= in_layout, (used - patterns) - in_layout


# --------------------------------------------------------------------------- the selection bar


def _bar(studio: Studio, username: str, project=None, model=None, environment=None, window=None) -> dict:
    with signed_in(studio, username):
        return cb.show_selection(project=project, model=model, environment=environment, window=window)


def test_projects_are_those_the_user_may_monitor_and_names_stay_text(studio: Studio) -> None:
    bar = _bar(studio, "admin")
    assert {o["value"] for o in bar["projects"]} == {"credit-risk", "demand-forecast", "markup"}
    assert {"label": XSS_NAME, "value": "markup"} in bar["projects"]  # a plain label: React renders text
    assert bar["project"] == "credit-risk"
    bar = _bar(studio, "solo")
    assert bar["projects"] == [{"label": "Demand forecast", "value": "demand-forecast"}]
    assert bar["project"] == "demand-forecast" and bar["model"] == "demand"


def test_the_first_answer_fills_the_whole_bar_from_the_metrics(studio: Studio, demo: MonitoredDemo) -> None:
    bar = _bar(studio, "monitoring")
    assert bar["project"] == "credit-risk"
    assert [m["value"] for m in bar["models"]] == ["churn", "credit-default"] and bar["model"] == "churn"
    assert [e["value"] for e in bar["environments"]] == ["prod", "staging"] and bar["environment"] == "prod"
    assert (bar["first_day"], bar["last_day"]) == (demo.first.isoformat(), demo.last.isoformat())
    # The default range is the newest 30 days; the workspace holds less.
    assert (bar["start"], bar["end"]) == (demo.first.isoformat(), demo.last.isoformat())
    assert [w["value"] for w in bar["windows"] if not w["disabled"]] == ["day", "hour"]
    assert bar["window"] == "day"
    assert bar["export_disabled"] is False and bar["status"] is None
    assert set(bar) == set(cb.SELECTION_BAR)


def test_choices_are_kept_when_they_still_exist(studio: Studio, demo: MonitoredDemo) -> None:
    bar = _bar(studio, "monitoring", "credit-risk", "credit-default", "staging", "minute")
    assert (bar["model"], bar["environment"], bar["window"]) == ("credit-default", "staging", "day")
    bar = _bar(studio, "monitoring", "credit-risk", "credit-default", "prod", "hour")
    assert bar["window"] == "hour"
    assert bar["start"] == (demo.last - timedelta(days=6)).isoformat()
    # Another project: the model and environment it does not have are replaced.
    bar = _bar(studio, "monitoring", "demand-forecast", "credit-default", "staging", "day")
    assert (bar["model"], bar["environment"]) == ("demand", "staging")


def test_export_button_follows_the_role_on_the_project(studio: Studio) -> None:
    bar = _bar(studio, "sponsor1")
    assert bar["export_disabled"] is True and "do not allow exports" in bar["export_title"]


def test_a_project_without_metrics_says_so(studio: Studio) -> None:
    bar = _bar(studio, "admin", "markup")
    assert bar["project"] == "markup" and bar["models"] == [] and bar["model"] is None
    assert bar["start"] is None and bar["export_disabled"] is True
    assert "No metrics yet for this project" in " ".join(_shown(bar["status"]))


# --------------------------------------------------------------------------- drift


def test_heatmap_shows_exactly_the_injected_drift(studio: Studio, demo: MonitoredDemo) -> None:
    with signed_in(studio, "monitoring"):
        figure, summary, segments, _key = cb.show_drift_heatmap(**_selection(demo))
    expected = {
        (feature, datetime(d.year, d.month, d.day, tzinfo=UTC).isoformat())
        for feature, d in demo.drifted("credit-default", "prod")
    }
    assert _drifted_cells(figure) == expected
    assert len(figure.data[0].x) == len(demo.days)
    assert "income" in summary and f"{len(expected)} drifted" in summary
    assert "segment_region is also monitored for drift as a column" in segments
    assert "filter every panel but the alerts" in segments


def test_the_selection_brings_its_heatmap_and_the_heatmap_callback_leaves_it(
    studio: Studio, demo: MonitoredDemo
) -> None:
    bar = _bar(studio, "monitoring", "credit-risk", "credit-default", "prod")
    selection = {
        "start": bar["start"],
        "end": bar["end"],
        "window": bar["window"],
        "segment": bar["segment"],
        "project": "credit-risk",
        "model": "credit-default",
        "environment": "prod",
    }
    with signed_in(studio, "monitoring"):
        direct, summary, _help, key = cb.show_drift_heatmap(**selection)
        with pytest.raises(PreventUpdate):  # the range the bar set: its heatmap is already drawn
            cb.show_drift_heatmap(**selection, shown=bar["heatmap_shown"])
        _f, _s, _h, other = cb.show_drift_heatmap(
            **{**selection, "start": demo.days[1].isoformat()}, shown=key
        )
    assert bar["heatmap_shown"] == key and bar["summary"] == summary
    assert bar["heatmap"].data[0].z == direct.data[0].z
    assert other != key and other[3] == demo.days[1].isoformat()
    empty = _bar(studio, "admin", "markup")
    assert empty["heatmap_shown"] is None and "No metrics yet" in empty["summary"]


def test_feature_detail_defaults_to_the_worst_cell_then_follows_clicks(
    studio: Studio, demo: MonitoredDemo
) -> None:
    selection = _selection(demo)
    ranges = (selection["start"], selection["end"], "day")
    names = ("credit-risk", "credit-default", "prod")
    with signed_in(studio, "monitoring"):
        title, timeline, distribution, quality = cb.show_feature_detail(*ranges, None, *names)
        assert title.startswith("Feature income") and "drifted" in title
        assert any(trace.name == "drifted" and len(trace.x) == 2 for trace in timeline.data)
        assert [trace.name for trace in distribution.data] == [
            "reference",
            title.split(", day ")[1].split(":")[0],
        ]
        burst = demo.scenario.null_burst_date
        # What dcc.Graph sends for a heatmap cell: its axis labels (no customdata).
        click = {"points": [{"curveNumber": 0, "x": burst.isoformat(), "y": "debt_to_income", "z": 0.001}]}
        title, _timeline, _distribution, quality = cb.show_feature_detail(*ranges, click, *names)
        # The clicked feature stays in focus on another range: its worst window there.
        kept, *_ = cb.show_feature_detail(
            demo.scenario.day(56).isoformat(), selection["end"], "day", click, *names
        )
        # A model without that feature shows its own worst cell.
        other, *_ = cb.show_feature_detail(*ranges, click, "credit-risk", "churn", "prod")
    assert kept.startswith("Feature debt_to_income, day ") and burst.isoformat() not in kept
    assert other.startswith("Feature ") and "debt_to_income" not in other
    assert title.startswith(f"Feature debt_to_income, day {burst.isoformat()}")
    shown = _shown(quality)
    missing = shown.index("Missing values (null + NaN)")
    assert shown[missing + 1].startswith("60.") and shown[missing + 3] == "warning"


@pytest.mark.parametrize(
    "click",
    [
        {"points": []},
        {"points": [{"customdata": [1, 2]}]},
        {"points": [{"customdata": ["income", "not a time"]}]},
        {"points": [{"x": "2024-02-10"}]},
        {"points": [{"x": "yesterday", "y": "debt_to_income"}]},
        "garbage",
    ],
)
def test_malformed_clicks_fall_back_to_the_worst_cell(
    studio: Studio, demo: MonitoredDemo, click: Any
) -> None:
    selection = _selection(demo)
    with signed_in(studio, "monitoring"):
        title, *_ = cb.show_feature_detail(
            selection["start"], selection["end"], "day", click, "credit-risk", "credit-default", "prod"
        )
    assert title.startswith("Feature income")


def test_clicks_name_the_raw_feature_and_the_utc_window() -> None:
    hourly = {"points": [{"x": "2024-03-01 06:00", "y": "a&lt;b&gt;", "z": 1.2}]}
    assert cb._clicked_cell(hourly) == ("a<b>", datetime(2024, 3, 1, 6, tzinfo=UTC))
    raw = {"points": [{"customdata": ["a&lt;b", "2024-03-01T00:00:00+00:00", "shown"], "x": "x", "y": "y"}]}
    assert cb._clicked_cell(raw) == ("a&lt;b", datetime(2024, 3, 1, tzinfo=UTC))


def test_hourly_windows_and_ranges_too_long_for_them(studio: Studio, demo: MonitoredDemo) -> None:
    selection = {**_selection(demo), "window": "hour", "start": "2024-03-01", "end": "2024-03-02"}
    with signed_in(studio, "monitoring"):
        figure, summary, _, _key = cb.show_drift_heatmap(**selection)
        too_long, message, _, _key = cb.show_drift_heatmap(**{**selection, "start": "2024-01-01"})
    assert len(figure.data[0].x) == 48 and "hour window" in summary
    assert _is_empty(too_long) and "at most 31 days" in message


# --------------------------------------------------------------------------- segments


@contextmanager
def segment_metrics(demo: MonitoredDemo, model: str = "credit-default") -> Iterator[list[str]]:
    """The ``segment_metrics`` files the monitoring job wrote for one model in prod (``segment_region``)."""
    store = demo.store()
    try:
        partition = {"project": "credit-risk", "model": model, "environment": "prod"}
        yield [f.path for f in store.list_files(SEGMENT_METRICS, filters=partition)]
    finally:
        store.close()


def test_segments_filter_every_panel_but_the_alerts(studio: Studio, demo: MonitoredDemo) -> None:
    with segment_metrics(demo) as written:
        assert {f"date={day.isoformat()}" for day in demo.days} <= {Path(p).parent.name for p in written}
        bar = _bar(studio, "monitoring", "credit-risk", "credit-default", "prod")
        regions = ["region=east", "region=north", "region=south", "region=west"]
        assert [o["value"] for o in bar["segments"]] == ["", *regions]
        assert bar["segment"] == "" and bar["segments_disabled"] is False
        with signed_in(studio, "monitoring"):
            whole, _summary, _help, _key = cb.show_drift_heatmap(**_selection(demo), segment="")
            north, summary, note, _key = cb.show_drift_heatmap(**_selection(demo), segment="region=north")
            title, _timeline, distribution, _quality = cb.show_feature_detail(
                demo.first.isoformat(),
                demo.last.isoformat(),
                "day",
                None,
                "credit-risk",
                "credit-default",
                "prod",
                "region=north",
            )
            performance = cb.show_performance(**_selection(demo), segment="region=north")
            latency = cb.show_latency(**_selection(demo), segment="region=north")
            download, _message = cb.export_metrics(
                1,
                demo.first.isoformat(),
                demo.last.isoformat(),
                "day",
                "credit-risk",
                "credit-default",
                "prod",
                "region=north",
            )
            unknown, unknown_summary, _, _key = cb.show_drift_heatmap(
                **_selection(demo), segment="region=nowhere"
            )
            forged, forged_summary, _, _key = cb.show_drift_heatmap(**_selection(demo), segment="no-equals")
    assert "region=north only" in note and "alerts cover the whole traffic" in note
    # The slice's cells are its own: a segment column is not judged inside its slices.
    assert "segment_region" in whole.data[0].y and "segment_region" not in north.data[0].y
    assert whole.data[0].z != north.data[0].z and "feature(s) over" in summary
    assert title.startswith("Feature ") and not _is_empty(distribution)  # the reference side alone
    assert [t.name for t in performance.data] == ["label coverage", "accuracy", "ROC AUC"]
    assert any(t.name == "p95" for t in latency.data)
    assert download["filename"].endswith("-day-region_north.csv")
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(download["content"]).decode())))
    assert {r["segment"] for r in rows} == {"region=north"}
    assert _is_empty(unknown) and "No drift metrics yet" in unknown_summary
    assert _is_empty(forged) and "<name>=<value>" in forged_summary


# --------------------------------------------------------------------------- performance and latency


def test_performance_follows_the_task(studio: Studio, demo: MonitoredDemo) -> None:
    with signed_in(studio, "monitoring"):
        classification = cb.show_performance(**_selection(demo))
        regression = cb.show_performance(**_selection(demo, "demand", "demand-forecast"))
    assert [t.name for t in classification.data] == ["label coverage", "accuracy", "ROC AUC"]
    assert [t.name for t in regression.data] == ["label coverage", "RMSE", "MAE"]
    coverage = dict(zip(classification.data[0].x, classification.data[0].y, strict=True))
    assert coverage[datetime(2024, 3, 2, tzinfo=UTC)] == 0.0


def test_latency_shows_the_regression(studio: Studio, demo: MonitoredDemo) -> None:
    with signed_in(studio, "monitoring"):
        figure = cb.show_latency(**_selection(demo, "demand", "demand-forecast"))
    p95 = next(t for t in figure.data if t.name == "p95")
    by_day = {x.date(): y for x, y in zip(p95.x, p95.y, strict=True)}
    slow = {day for _m, _e, day in demo.scenario.latency_cells}
    assert min(by_day[d] for d in slow) > 2.5 * max(v for d, v in by_day.items() if d not in slow)


# --------------------------------------------------------------------------- refusals


def test_a_forged_project_gets_nothing(studio: Studio, demo: MonitoredDemo) -> None:
    forged = _selection(demo)  # credit-risk: solo holds no role there
    states = (forged["start"], forged["end"], "day", "credit-risk", "credit-default", "prod")
    with signed_in(studio, "solo"):
        bar = cb.show_selection(
            project="credit-risk", model="credit-default", environment="prod", window="day"
        )
        figure, summary, _, _key = cb.show_drift_heatmap(**forged)
        _title, timeline, distribution, _quality = cb.show_feature_detail(*states[:3], None, *states[3:])
        outputs = [figure, timeline, distribution, cb.show_performance(**forged), cb.show_latency(**forged)]
        alerts = cb.show_alerts(*states[:3], 0, *states[3:])
        download, message = cb.export_metrics(1, *states)
    assert bar["project"] is None and bar["models"] == [] and bar["start"] is None
    assert bar["projects"] == [{"label": "Demand forecast", "value": "demand-forecast"}]
    assert cb.NO_DATA in _shown(bar["status"])
    assert all(_is_empty(f) for f in outputs)
    assert summary == cb.NO_DATA and cb.NO_DATA in _shown(alerts)
    assert download is None and message == cb.NO_DATA
    # The same answer for a project that does not exist at all: nothing tells the two apart.
    with signed_in(studio, "solo"):
        unknown, unknown_summary, _, _key = cb.show_drift_heatmap(**{**forged, "project": "no-such-project"})
    assert unknown_summary == summary and _is_empty(unknown)


def test_callbacks_refuse_users_without_the_permission(studio: Studio, demo: MonitoredDemo) -> None:
    selection = _selection(demo)
    states = (selection["start"], selection["end"], "day", "credit-risk", "credit-default", "prod")
    with signed_in(studio, "nobody"), pytest.raises(PreventUpdate):
        cb.show_drift_heatmap(**selection)
    with signed_in(studio, "nobody"), pytest.raises(PreventUpdate):
        cb.show_selection(project=None, model=None, environment=None, window=None)
    with signed_in(studio, "sponsor1"), pytest.raises(PreventUpdate):
        cb.export_metrics(1, *states)
    client = studio.signed_in("sponsor1", "10.9.0.1")
    response = client.post("/_dash-update-component", json=_export_request(demo), headers=csrf_header(client))
    assert response.status_code == 403 and response.get_json()["reason"] == "callback needs export_data"
    nobody = studio.client("10.9.0.2")
    assert sign_in(nobody, "nobody", SOLO_PASSWORD).status_code == 302
    heatmap = _heatmap_request(studio, demo)
    response = nobody.post("/_dash-update-component", json=heatmap, headers=csrf_header(nobody))
    assert response.status_code == 403 and response.get_json()["reason"] == "callback needs view_monitoring"


def _state(component: str, prop: str, value: Any) -> dict[str, Any]:
    return {"id": component, "property": prop, "value": value}


def _selection_states(demo: MonitoredDemo) -> list[dict[str, Any]]:
    return [
        _state(ID.PROJECT, "value", "credit-risk"),
        _state(ID.MODEL, "value", "credit-default"),
        _state(ID.ENVIRONMENT, "value", "prod"),
    ]


def _declared_output(studio: Studio, component: str) -> str:
    """The output key Dash declares for the callback writing ``component`` (``@hash`` included)."""
    (key,) = [k for k in studio.app.callback_map if f"{component}." in k and "monitoring-project." not in k]
    return key


def _heatmap_request(studio: Studio, demo: MonitoredDemo) -> dict[str, Any]:
    output = _declared_output(studio, ID.HEATMAP)
    return {
        "output": output,
        "outputs": [
            {"id": part.split(".")[0], "property": part.split(".", 1)[1]}
            for part in output.strip(".").split("...")
        ],
        "inputs": [
            _state(ID.DATES, "start_date", demo.first.isoformat()),
            _state(ID.DATES, "end_date", demo.last.isoformat()),
            _state(ID.WINDOW, "value", "day"),
            _state(ID.SEGMENT, "value", ""),
        ],
        "state": [*_selection_states(demo), _state(ID.HEATMAP_SHOWN, "data", None)],
        "changedPropIds": [f"{ID.WINDOW}.value"],
    }


def _export_request(demo: MonitoredDemo) -> dict[str, Any]:
    return {
        "output": f"..{ID.EXPORT_DOWNLOAD}.data...{ID.EXPORT_FEEDBACK}.children..",
        "outputs": [
            {"id": ID.EXPORT_DOWNLOAD, "property": "data"},
            {"id": ID.EXPORT_FEEDBACK, "property": "children"},
        ],
        "inputs": [_state(ID.EXPORT, "n_clicks", 1)],
        "state": [
            _state(ID.DATES, "start_date", demo.first.isoformat()),
            _state(ID.DATES, "end_date", demo.last.isoformat()),
            _state(ID.WINDOW, "value", "day"),
            *_selection_states(demo),
            _state(ID.SEGMENT, "value", ""),
        ],
        "changedPropIds": [f"{ID.EXPORT}.n_clicks"],
    }


def test_heatmap_over_http_matches_the_direct_call(studio: Studio, demo: MonitoredDemo) -> None:
    client = studio.signed_in("monitoring", "10.9.0.3")
    response = client.post(
        "/_dash-update-component", json=_heatmap_request(studio, demo), headers=csrf_header(client)
    )
    assert response.status_code == 200
    figure = go.Figure(response.get_json()["response"][ID.HEATMAP]["figure"])
    assert response.get_json()["response"][ID.HEATMAP_SHOWN]["data"][:3] == [
        "credit-risk",
        "credit-default",
        "prod",
    ]
    assert {column for column, _ in _drifted_cells(figure)} == {"income"}


# --------------------------------------------------------------------------- export


def test_export_downloads_the_selection_as_csv(studio: Studio, demo: MonitoredDemo) -> None:
    selection = _selection(demo)
    states = (selection["start"], selection["end"], "day", "credit-risk", "credit-default", "prod")
    with signed_in(studio, "mlengineer"):
        download, message = cb.export_metrics(1, *states)
    assert download["filename"] == f"metrics-credit-risk-credit-default-prod-{demo.first}-{demo.last}-day.csv"
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(download["content"]).decode())))
    assert message == f"{len(rows)} row(s) exported."
    assert {r["project"] for r in rows} == {"credit-risk"}
    drifted = {
        (r["column"], r["window_start"][:10])
        for r in rows
        if r["metric"] == "drift" and r["drifted"] == "true"
    }
    assert drifted == {(f, d.isoformat()) for f, d in demo.drifted("credit-default", "prod")}
    # What the page shows, without the statistics behind each decision.
    metrics_exported = {r["metric"] for r in rows}
    assert {"drift", "missing_share", "accuracy", "latency_p95", "label_coverage"} <= metrics_exported
    assert not metrics_exported & {"ks", "psi", "chi2", "wasserstein_normed", "jensenshannon"}
    with signed_in(studio, "mlengineer"), pytest.raises(PreventUpdate):
        cb.export_metrics(None, *states)


def test_export_needs_the_permission_on_the_selected_project(studio: Studio, demo: MonitoredDemo) -> None:
    # solo may export demand-forecast (monitoring team) but sees no other project.
    selection = _selection(demo, "demand", "demand-forecast")
    states = (selection["start"], selection["end"], "day", "demand-forecast", "demand", "prod")
    with signed_in(studio, "solo"):
        download, _message = cb.export_metrics(1, *states)
    assert download is not None and download["filename"].startswith("metrics-demand-forecast-demand-prod")


# --------------------------------------------------------------------------- alerts


@pytest.fixture(scope="module")
def income_alert(studio: Studio, demo: MonitoredDemo) -> int:
    """An alert opened by the alert engine on the injected income drift."""
    spec = RuleSpec(
        name="income drift",
        model="credit-default",
        metric="drift",
        column="income",
        operator="drifted",
        severity="critical",
        environment="prod",
    )
    with studio.db(write=True) as session:
        create_rule(session, studio.actor("monitoring"), "credit-risk", spec)
    store = demo.store()
    try:
        summary = evaluate_alerts(
            services(studio.app.server).session_factory, store, now=demo.scenario.generated_until
        )
    finally:
        store.close()
    assert len(summary.opened) == 1, summary
    return summary.opened[0]


def _ack_request(alert_id: int, comment: str) -> dict[str, Any]:
    button = {"alert": alert_id, "type": ID.ALERT_ACK_TYPE}
    return {
        "output": f"..{ID.ALERT_FEEDBACK}.children...{ID.ALERTS_VERSION}.data..",
        "outputs": [
            {"id": ID.ALERT_FEEDBACK, "property": "children"},
            {"id": ID.ALERTS_VERSION, "property": "data"},
        ],
        "inputs": [[{"id": button, "property": "n_clicks", "value": 1}]],
        "state": [_state(ID.ALERT_COMMENT, "value", comment), _state(ID.ALERTS_VERSION, "data", 3)],
        "changedPropIds": [json.dumps(button, separators=(",", ":"), sort_keys=True) + ".n_clicks"],
    }


def test_alerts_of_the_selection_with_acknowledge_for_those_who_may(
    studio: Studio, demo: MonitoredDemo, income_alert: int
) -> None:
    selection = _selection(demo)
    states = (selection["start"], selection["end"], "day", 0, "credit-risk", "credit-default", "prod")
    with signed_in(studio, "production"):
        table = json.loads(json.dumps(cb.show_alerts(*states), cls=PlotlyJSONEncoder))
    shown = texts(table)
    assert "critical" in shown and "drift of income" in shown and "Acknowledge" in shown
    with studio.db() as session:
        alert = session.get(Alert, income_alert)
        first, last = alert.window_start.date(), alert.last_window_start.date()
    assert first == demo.scenario.day(60)
    assert (str(first) if first == last else f"{first} → {last}") in shown
    with signed_in(studio, "sponsor1"):
        sponsor_view = _shown(cb.show_alerts(*states))
    assert "drift of income" in sponsor_view and "Acknowledge" not in sponsor_view
    with signed_in(studio, "production"):
        staging = _shown(cb.show_alerts(*states[:6], "staging"))
    assert any(text.startswith("No alert for credit-default in staging") for text in staging)


def test_acknowledging_over_http_records_who_and_why(studio: Studio, income_alert: int) -> None:
    sponsor = studio.signed_in("sponsor1", "10.9.0.4")
    refused = sponsor.post(
        "/_dash-update-component", json=_ack_request(income_alert, "no"), headers=csrf_header(sponsor)
    )
    assert refused.status_code == 403 and refused.get_json()["reason"] == "callback needs ack_alerts"
    client = studio.signed_in("production", "10.9.0.5")
    response = client.post(
        "/_dash-update-component",
        json=_ack_request(income_alert, "on it <b>now</b>"),
        headers=csrf_header(client),
    )
    assert response.status_code == 200, response.text
    result = response.get_json()["response"]
    assert result[ID.ALERTS_VERSION]["data"] == 4
    assert f"Alert {income_alert} acknowledged." in texts(result)
    with studio.db() as session:
        alert = session.get(Alert, income_alert)
        assert alert.state == "acknowledged" and alert.acknowledge_comment == "on it <b>now</b>"
    again = client.post(
        "/_dash-update-component", json=_ack_request(income_alert, "twice"), headers=csrf_header(client)
    )
    assert "only an open alert can be acknowledged" in " ".join(texts(again.get_json()))
