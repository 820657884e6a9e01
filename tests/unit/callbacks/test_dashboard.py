"""Dashboard callbacks on the monitored demo workspace, KPIs checked against the monitoring job's reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dash.exceptions import PreventUpdate
from sqlalchemy import select

import callbacks.dashboard as cb
from analytics.figures import INSUFFICIENT_DATA
from app.auth import services
from app.factory import create_app
from jobs.alerts import RuleSpec, create_rule, evaluate_alerts
from jobs.db.alerting import Alert
from jobs.monitor import read_metrics
from jobs.permissions import Role
from jobs.projects import create_project
from jobs.seed import seed_demo_accounts
from jobs.users import create_user, grant_role
from tests.unit.analytics.test_metrics import MonitoredDemo, monitored_demo
from tests.unit.app.studio import Studio, as_sent, signed_in, studio_settings, texts

pytestmark = pytest.mark.unit

PASSWORD = "dashboard-pass-1"
MODELS = (
    ("credit-risk", "credit-default"),
    ("credit-risk", "churn"),
    ("demand-forecast", "demand"),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> MonitoredDemo:
    return monitored_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, demo: MonitoredDemo) -> Iterator[Studio]:
    """Seeded studio on the demo workspace plus ``solo`` (demand-forecast only), ``empty`` (a project
    without metrics) and ``nobody`` (no role)."""
    settings = studio_settings(tmp_path_factory.mktemp("dashboard-studio"), MMS_DATA_URI=str(demo.data))
    built = Studio(app=create_app(settings), settings=settings)
    with built.db(write=True) as session:
        assert seed_demo_accounts(session)
    admin = built.actor("admin")
    with built.db(write=True) as session:
        create_project(session, admin, "quiet", "Quiet project")
        grant_role(
            session, admin, create_user(session, admin, "solo", PASSWORD), "demand-forecast", Role.DATA_TEAM
        )
        grant_role(
            session, admin, create_user(session, admin, "empty", PASSWORD), "quiet", Role.MODEL_SPONSOR
        )
        create_user(session, admin, "nobody", PASSWORD)
    with built:
        yield built


def _by_id(node: Any, wanted: str) -> Any:
    if isinstance(node, dict):
        if isinstance(node.get("props"), dict) and node["props"].get("id") == wanted:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _by_id(child, wanted)
        if found is not None:
            return found
    return None


def _kpi(kpis: Any, key: str) -> str:
    return _by_id(kpis, f"dashboard-kpi-{key}-value")["props"]["children"]


def _latest(demo: MonitoredDemo) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per model/environment, from jobs.monitor.read_metrics: drifted features of the newest day, newest
    p95 latency and newest accuracy."""
    store = demo.store()
    facts = {}
    try:
        for project, model in MODELS:
            for environment in ("prod", "staging"):
                rows = read_metrics(store, project, model, environment).to_pylist()
                last = max(r["window_start"] for r in rows)
                p95 = [r for r in rows if r["metric"] == "latency_p95" and r["statistic"] is not None]
                accuracy = [r for r in rows if r["metric"] == "accuracy" and r["statistic"] is not None]
                facts[(project, model, environment)] = {
                    "drifted": {
                        r["column"]
                        for r in rows
                        if r["metric"] == "drift" and r["drifted"] and r["window_start"] == last
                    },
                    "p95": max(p95, key=lambda r: r["window_start"])["statistic"],
                    "accuracy": max(accuracy, key=lambda r: r["window_start"])["statistic"]
                    if accuracy
                    else None,
                }
    finally:
        store.close()
    return facts


def test_kpis_and_timelines_agree_with_the_stored_metrics(studio: Studio, demo: MonitoredDemo) -> None:
    with signed_in(studio, "monitoring"):
        kpis, latency, accuracy = cb.show_monitoring_overview(cb.ID.KPIS)
    kpis = as_sent(kpis)
    facts = _latest(demo)
    assert _kpi(kpis, "models") == "prod 3 · staging 3"
    assert _kpi(kpis, "drift") == str(sum(len(f["drifted"]) for f in facts.values()))
    assert ("credit-risk", "credit-default", "prod") in {
        k for k, f in facts.items() if "income" in f["drifted"]
    }
    assert "credit-default/prod: income" in " ".join(texts(kpis))
    assert _kpi(kpis, "latency") == f"{max(f['p95'] for f in facts.values()):,.1f} ms"
    lowest = min(f["accuracy"] for f in facts.values() if f["accuracy"] is not None)
    assert _kpi(kpis, "accuracy") == f"{lowest:.3f}"
    assert _kpi(kpis, "alerts") == "critical 0 · warning 0 · info 0"
    assert sorted(trace.name for trace in latency.data) == sorted(
        f"{model} · {env}" for _p, model in MODELS for env in ("prod", "staging")
    )
    assert {trace.name.split(" · ")[0] for trace in accuracy.data} == {"credit-default", "churn"}


def test_kpis_cover_only_the_projects_the_user_monitors(studio: Studio) -> None:
    with signed_in(studio, "solo"):
        kpis, latency, accuracy = cb.show_monitoring_overview(cb.ID.KPIS)
    kpis = as_sent(kpis)
    assert _kpi(kpis, "models") == "prod 1 · staging 1"
    assert {trace.name for trace in latency.data} == {"demand · prod", "demand · staging"}
    assert not accuracy.data and accuracy.layout.annotations[0].name == INSUFFICIENT_DATA
    assert _kpi(kpis, "accuracy") == "n/a"


def test_a_user_without_monitored_models_gets_explanations(studio: Studio) -> None:
    with signed_in(studio, "empty"):
        kpis, latency, _accuracy = cb.show_monitoring_overview(cb.ID.KPIS)
        recent = cb.show_recent_alerts(cb.ID.ALERTS)
    shown = " ".join(texts(as_sent(kpis)))
    assert "no model has monitoring metrics yet" in shown and "no latency metrics yet" in shown
    assert not latency.data
    assert texts(as_sent(recent)) == ["No alert has been raised."]
    with signed_in(studio, "nobody"), pytest.raises(PreventUpdate):
        cb.show_monitoring_overview(cb.ID.KPIS)


def test_open_alerts_are_counted_by_severity_and_listed(studio: Studio, demo: MonitoredDemo) -> None:
    spec = RuleSpec(
        name="p95 above 40 ms",
        model="demand",
        metric="latency_p95",
        column="latency_ms",
        operator=">",
        threshold=40.0,
        severity="warning",
    )
    with studio.db(write=True) as session:
        create_rule(session, studio.actor("monitoring"), "demand-forecast", spec)
    store = demo.store()
    try:
        summary = evaluate_alerts(
            services(studio.app.server).session_factory, store, now=demo.scenario.generated_until
        )
    finally:
        store.close()
    assert summary.opened
    with signed_in(studio, "monitoring"):
        kpis, _latency, _accuracy = cb.show_monitoring_overview(cb.ID.KPIS)
        recent = as_sent(cb.show_recent_alerts(cb.ID.ALERTS))
    with studio.db() as session:
        still_open = session.scalars(select(Alert).where(Alert.state == "open")).all()
    # The p95 rule flaps: the engine opened alerts and resolved those whose series recovered.
    assert still_open and {alert.severity for alert in still_open} == {"warning"}
    assert _kpi(as_sent(kpis), "alerts") == f"critical 0 · warning {len(still_open)} · info 0"
    rows = _by_id(recent, "dashboard-alerts-table")
    assert rows is not None and "latency_p95 of latency_ms" in texts(recent)
    assert "demand · prod" in texts(recent) or "demand · staging" in texts(recent)
    with signed_in(studio, "empty"):
        assert texts(as_sent(cb.show_recent_alerts(cb.ID.ALERTS))) == ["No alert has been raised."]
