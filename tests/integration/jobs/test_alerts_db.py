"""Alert rules, evaluation and lifecycle on SQLite and PostgreSQL, over metrics in a real ParquetStore."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore, StoreConfig
from jobs import audit
from jobs.alerts import (
    DEMO_RULES,
    RuleSpec,
    acknowledge,
    create_rule,
    disable_rule,
    evaluate_alerts,
    install_demo_alerts,
    list_alerts,
    resolve_alert,
    update_rule,
)
from jobs.contracts import METRICS_SCHEMA, require_valid, validate_metrics_table
from jobs.db.alerting import Alert, AlertDelivery, AlertRule
from jobs.db.models import AuditEntry, Membership, Project, User
from jobs.notify import (
    SIGNATURE_HEADER,
    DeliveryOptions,
    RetryPolicy,
    WebhookPolicy,
    create_channel,
    deliver_pending,
    disable_channel,
    update_channel,
    verify_signature,
)
from jobs.permissions import Actor, Forbidden, Role
from jobs.projects import create_project
from jobs.users import Conflict, InvalidInput, actor_for, revoke_role
from tests.unit.jobs.test_notify import Receiver

pytestmark = pytest.mark.integration

PROJECT = "credit-risk"
MODEL = "credit-default"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOW = T0 + timedelta(days=2)
QUICK_DELIVERY = DeliveryOptions(
    retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02),
    webhook=WebhookPolicy(timeout=5.0, allow_http_loopback=True),
)


@dataclass(frozen=True)
class Team:
    admin: Actor
    monitor: Actor  # monitoring_team on credit-risk: manages rules, acknowledges
    engineer: Actor  # ml_engineer on credit-risk: sees, cannot acknowledge or manage rules
    ops: Actor  # production_team on credit-risk: acknowledges, cannot manage rules
    outsider: Actor  # monitoring_team on another project only


@pytest.fixture
def factory(migrated_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return migrated_session_factory


@pytest.fixture
def team(session: Session, admin: Actor) -> Team:
    create_project(session, admin, PROJECT, "Credit risk")
    create_project(session, admin, "demand-forecast", "Demand")
    projects = {p.slug: p.id for p in session.scalars(select(Project))}
    members = {}
    for username, project, role in [
        ("monica", PROJECT, Role.MONITORING_TEAM),
        ("eddie", PROJECT, Role.ML_ENGINEER),
        ("olga", PROJECT, Role.PRODUCTION_TEAM),
        ("otto", "demand-forecast", Role.MONITORING_TEAM),
    ]:
        # Stored directly: these accounts never sign in, so they skip the deliberately slow password hash.
        user = User(username=username, display_name=username, password_hash="!")
        session.add(user)
        session.flush()
        session.add(Membership(user_id=user.id, project_id=projects[project], role=role.value))
        members[username] = user.id
    session.commit()
    actors = {name: actor_for(session, user_id) for name, user_id in members.items()}
    return Team(admin, actors["monica"], actors["eddie"], actors["olga"], actors["otto"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ParquetStore]:
    opened = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    yield opened
    opened.close()


def metric_row(
    hour: int,
    statistic: float | None,
    *,
    column: str = "income",
    metric: str = "psi",
    version: str = "1",
    status: str | None = None,
    drifted: bool | None = None,
    n_current: int = 500,
    length: timedelta = HOUR,
) -> dict:
    start = T0 + hour * HOUR
    if status is None:
        status = "ok" if statistic is None or statistic <= 0.2 else "drift"
    return {
        "version": version,
        "window_start": start,
        "window_end": start + length,
        "column": column,
        "metric": metric,
        "statistic": statistic,
        "p_value": None,
        "threshold": 0.2,
        "drifted": drifted if drifted is not None else (None if statistic is None else statistic > 0.2),
        "status": status,
        "n_reference": 1000,
        "n_current": n_current,
        "reason": None,
    }


def write_metrics(
    store: ParquetStore,
    rows: list[dict],
    *,
    model: str = MODEL,
    environment: str = "prod",
    project: str = PROJECT,
) -> None:
    """Append rows to the metrics dataset, one file per day, validated against the contract first."""
    by_day: dict[str, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["window_start"].date().isoformat(), []).append(row)
    for day, day_rows in by_day.items():
        partition = {"project": project, "model": model, "environment": environment, "date": day}
        table = pa.Table.from_pylist(day_rows, schema=METRICS_SCHEMA)
        require_valid(validate_metrics_table(table, partition=partition))
        store.append("metrics", partition, table)


def psi_rule(session: Session, actor: Actor, **changes: object) -> int:
    fields = {
        "name": "income drift",
        "model": MODEL,
        "metric": "psi",
        "column": "income",
        "operator": ">",
        "threshold": 0.2,
        "consecutive_windows": 3,
        "severity": "critical",
    }
    fields.update(changes)
    rule = create_rule(session, actor, PROJECT, RuleSpec(**fields))  # type: ignore[arg-type]
    session.commit()
    return rule.id


def alerts_of(factory: sessionmaker[Session]) -> list[Alert]:
    with factory() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def audit_actions(factory: sessionmaker[Session], prefix: str = "alert.") -> list[tuple[str, str, str]]:
    with factory() as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.target)
            .where(AuditEntry.action.startswith(prefix))
            .order_by(AuditEntry.seq)
        )
        return [tuple(row) for row in rows]


# --------------------------------------------------------------------------- evaluation


def test_rule_fires_after_its_consecutive_breaching_windows_only(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor)
    # Two breaching windows, a recovery, then three in a row (and a fourth that continues the streak).
    values = [0.1, 0.3, 0.3, 0.1, 0.3, 0.35, 0.4, 0.5]
    write_metrics(store, [metric_row(hour, value) for hour, value in enumerate(values)])

    summary = evaluate_alerts(factory, store, now=NOW)

    assert summary.rules_evaluated == 1
    assert summary.windows_examined == 8
    [alert] = alerts_of(factory)
    assert summary.opened == (alert.id,)
    assert (alert.state, alert.severity, alert.environment, alert.version, alert.column_name) == (
        "open",
        "critical",
        "prod",
        "1",
        "income",
    )
    # Identified by the first window of the streak; follows the newest breaching window.
    assert alert.window_start == T0 + 4 * HOUR
    assert alert.last_window_start == T0 + 7 * HOUR
    assert alert.last_window_end == T0 + 8 * HOUR
    assert alert.breaching_windows == 4
    assert alert.last_statistic == pytest.approx(0.5)
    assert (alert.metric, alert.operator, alert.threshold) == ("psi", ">", 0.2)
    assert audit_actions(factory) == [("system", "alert.open", f"alert:{alert.id}")]


def test_reevaluation_never_duplicates_and_extends_the_open_alert(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=2)
    write_metrics(store, [metric_row(hour, 0.5) for hour in range(3)])
    first = evaluate_alerts(factory, store, now=NOW)
    again = evaluate_alerts(factory, store, now=NOW)
    assert len(first.opened) == 1
    assert (again.opened, again.resolved, again.updated, again.windows_examined) == ((), (), (), 0)

    write_metrics(store, [metric_row(hour, 0.6) for hour in (3, 4)])
    later = evaluate_alerts(factory, store, now=NOW)
    [alert] = alerts_of(factory)
    assert (later.opened, later.updated) == ((), (alert.id,))
    assert (alert.window_start, alert.last_window_start, alert.breaching_windows) == (T0, T0 + 4 * HOUR, 5)
    assert [action for _, action, _ in audit_actions(factory)] == ["alert.open"]


def test_concurrent_evaluations_open_each_alert_once(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, column=None, consecutive_windows=1)
    write_metrics(
        store,
        [metric_row(hour, 0.5, column=column) for hour in range(2) for column in ("income", "age", "debt")],
    )
    results, errors = [], []

    def evaluate() -> None:
        try:
            results.append(evaluate_alerts(factory, store, now=NOW))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=evaluate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(len(result.opened) for result in results) == [0, 0, 3]
    assert sorted(a.column_name for a in alerts_of(factory)) == ["age", "debt", "income"]


def test_rule_on_every_column_alerts_per_column(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, name="any drift", column=None, consecutive_windows=2)
    rows = []
    for hour in range(4):
        rows.append(metric_row(hour, 0.5, column="income"))  # breaches every window
        rows.append(metric_row(hour, 0.05, column="age"))  # never breaches
        rows.append(metric_row(hour, 0.5 if hour == 1 else 0.1, column="debt_ratio"))  # one window only
        rows.append(metric_row(hour, 0.3 if hour >= 2 else 0.1, column="channel"))  # the last two
        rows.append(metric_row(hour, 0.9, column="income", metric="ks"))  # another metric: ignored
    write_metrics(store, rows)

    summary = evaluate_alerts(factory, store, now=NOW)

    alerts = alerts_of(factory)
    assert sorted((a.column_name, a.window_start) for a in alerts) == [
        ("channel", T0 + 2 * HOUR),
        ("income", T0),
    ]
    assert len(summary.opened) == 2
    assert all(a.metric == "psi" for a in alerts)


def test_environments_and_versions_are_separate_series(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=2)
    write_metrics(store, [metric_row(hour, 0.5) for hour in range(2)], environment="prod")
    write_metrics(store, [metric_row(hour, 0.5) for hour in range(2)], environment="staging")
    # Version 2 breaches in one window only: no alert for it.
    write_metrics(
        store, [metric_row(2, 0.5, version="2"), metric_row(3, 0.1, version="2")], environment="prod"
    )
    prod_only = psi_rule(session, team.monitor, name="prod only", environment="prod", consecutive_windows=2)

    evaluate_alerts(factory, store, now=NOW)

    series = sorted((a.rule_id == prod_only, a.environment, a.version) for a in alerts_of(factory))
    assert series == [(False, "prod", "1"), (False, "staging", "1"), (True, "prod", "1")]


def test_windows_without_enough_data_neither_count_nor_break_a_streak(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=3)
    write_metrics(
        store,
        [
            metric_row(0, 0.5),
            metric_row(1, None, status="insufficient_data", n_current=3),
            metric_row(2, 0.5),
            metric_row(3, 0.9, status="error"),
            metric_row(4, float("nan"), status="warning"),
        ],
    )
    summary = evaluate_alerts(factory, store, now=NOW)
    assert summary.opened == ()
    assert summary.windows_examined == 2

    write_metrics(store, [metric_row(5, 0.5)])
    summary = evaluate_alerts(factory, store, now=NOW)
    [alert] = alerts_of(factory)
    assert summary.opened == (alert.id,)
    assert (alert.window_start, alert.last_window_start, alert.breaching_windows) == (T0, T0 + 5 * HOUR, 3)


def test_alert_resolves_itself_after_the_rule_window_of_recovery(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=2)
    write_metrics(store, [metric_row(0, 0.5), metric_row(1, 0.5), metric_row(2, 0.1)])
    opened = evaluate_alerts(factory, store, now=NOW)
    assert alerts_of(factory)[0].state == "open"

    # One good window is not a recovery for a 2-window rule; a relapse keeps the same alert open.
    write_metrics(store, [metric_row(3, 0.5), metric_row(4, 0.1)])
    assert evaluate_alerts(factory, store, now=NOW).resolved == ()
    write_metrics(store, [metric_row(5, 0.1)])
    resolved = evaluate_alerts(factory, store, now=NOW)
    [alert] = alerts_of(factory)
    assert resolved.resolved == opened.opened == (alert.id,)
    assert alert.state == "resolved"
    assert alert.resolved_by_id is None
    assert alert.resolution.startswith("recovered: 2 consecutive window(s) within the rule")
    assert alert.resolved_at == NOW
    assert alert.last_window_start == T0 + 3 * HOUR

    # The same metrics again: nothing changes. A new breach later is a new incident.
    assert evaluate_alerts(factory, store, now=NOW).opened == ()
    write_metrics(store, [metric_row(6, 0.7), metric_row(7, 0.8)])
    relapse = evaluate_alerts(factory, store, now=NOW)
    alerts = alerts_of(factory)
    assert len(alerts) == 2 and relapse.opened == (alerts[1].id,)
    assert alerts[1].window_start == T0 + 6 * HOUR
    assert [action for _, action, _ in audit_actions(factory)] == [
        "alert.open",
        "alert.resolve",
        "alert.open",
    ]


def test_drifted_and_lower_bound_operators(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(
        session,
        team.monitor,
        name="drift flag",
        metric="ks",
        operator="drifted",
        threshold=None,
        consecutive_windows=2,
    )
    psi_rule(
        session,
        team.monitor,
        name="auc floor",
        metric="roc_auc",
        column="prediction",
        operator="<",
        threshold=0.7,
        consecutive_windows=1,
    )
    write_metrics(
        store,
        [
            metric_row(0, 0.01, metric="ks", drifted=True, status="drift"),
            metric_row(1, 0.02, metric="ks", drifted=True, status="drift"),
            metric_row(0, 0.82, metric="roc_auc", column="prediction", status="ok", drifted=False),
            metric_row(1, 0.64, metric="roc_auc", column="prediction", status="warning", drifted=True),
        ],
    )
    evaluate_alerts(factory, store, now=NOW)
    got = sorted(
        (a.metric, a.column_name, a.operator, a.window_start, a.last_statistic) for a in alerts_of(factory)
    )
    assert got == [("ks", "income", "drifted", T0, 0.02), ("roc_auc", "prediction", "<", T0 + HOUR, 0.64)]


def test_windows_after_now_and_before_the_lookback_are_ignored(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=1)
    write_metrics(store, [metric_row(0, 0.5)])
    assert evaluate_alerts(factory, store, now=T0).opened == ()  # the window has not started yet
    assert evaluate_alerts(factory, store, now=T0 + timedelta(days=40)).opened == ()  # older than 30 days
    assert len(evaluate_alerts(factory, store, now=T0 + timedelta(days=1)).opened) == 1


def test_rules_without_metrics_report_insufficient_data(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor)
    psi_rule(
        session,
        team.monitor,
        name="stale",
        kind="freshness",
        metric=None,
        column=None,
        operator=None,
        threshold=None,
        consecutive_windows=1,
        max_age_hours=6,
    )
    summary = evaluate_alerts(factory, store, now=NOW)
    assert summary.opened == () and summary.errors == ()
    assert len(summary.insufficient_data) == 2
    assert "no metric rows for 'psi' on column 'income'" in summary.insufficient_data[0]
    assert "no monitored traffic yet, freshness unknown" in summary.insufficient_data[1]

    write_metrics(store, [metric_row(0, None, status="insufficient_data", n_current=0)])
    summary = evaluate_alerts(factory, store, now=NOW)
    assert "only windows without enough data" in summary.insufficient_data[0]
    assert alerts_of(factory) == []


def test_unreadable_metrics_are_reported_and_change_nothing(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    psi_rule(session, team.monitor, consecutive_windows=1)
    write_metrics(store, [metric_row(0, 0.5)])
    evaluate_alerts(factory, store, now=NOW)
    [file] = store.list_files("metrics")
    Path(file.path).write_bytes(b"PAR1 this is not parquet PAR1")
    summary = evaluate_alerts(factory, store, now=NOW)
    assert len(summary.errors) == 1 and "credit-risk/credit-default: cannot read metrics" in summary.errors[0]
    [alert] = alerts_of(factory)
    assert alert.state == "open"


# --------------------------------------------------------------------------- freshness


def freshness_rule(session: Session, actor: Actor, hours: float = 6, **changes: object) -> int:
    spec = {
        "name": "fresh data",
        "model": MODEL,
        "kind": "freshness",
        "max_age_hours": hours,
        "severity": "warning",
    }
    spec.update(changes)
    rule = create_rule(session, actor, PROJECT, RuleSpec(**spec))  # type: ignore[arg-type]
    session.commit()
    return rule.id


def test_freshness_rule_opens_when_traffic_stops_and_resolves_when_it_returns(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    freshness_rule(session, team.monitor, hours=6)
    write_metrics(store, [metric_row(hour, 0.1) for hour in range(10)])  # traffic up to T0 + 10h
    last_seen = T0 + 10 * HOUR

    assert evaluate_alerts(factory, store, now=last_seen + 5 * HOUR).opened == ()
    stale = evaluate_alerts(factory, store, now=last_seen + 7 * HOUR)
    [alert] = alerts_of(factory)
    assert stale.opened == (alert.id,)
    assert (alert.metric, alert.operator, alert.threshold, alert.version, alert.column_name) == (
        "freshness",
        ">",
        6.0,
        "",
        "",
    )
    assert alert.window_start == last_seen
    assert alert.last_statistic == pytest.approx(7.0)
    # Still stale later: the same alert, its age updated; never a second one.
    again = evaluate_alerts(factory, store, now=last_seen + 9 * HOUR)
    assert again.opened == () and again.updated == (alert.id,)
    assert alerts_of(factory)[0].last_statistic == pytest.approx(9.0)

    write_metrics(store, [metric_row(20, 0.1)])  # traffic again, up to T0 + 21h
    back = evaluate_alerts(factory, store, now=T0 + 22 * HOUR)
    [alert] = alerts_of(factory)
    assert back.resolved == (alert.id,) and alert.state == "resolved"
    assert alert.resolution == f"fresh: monitored traffic up to {(T0 + 21 * HOUR).isoformat()}"


def test_freshness_uses_the_monitors_lag_rows_and_windows_without_traffic_do_not_count(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    freshness_rule(session, team.monitor, hours=12, environment="prod")
    day = timedelta(days=1)
    write_metrics(
        store,
        [
            # A day window whose last request came 20 h before its end (the monitor's lag, in seconds).
            metric_row(
                0, 20 * 3600.0, column="timestamp", metric="freshness_lag_s", length=day, status="warning"
            ),
            metric_row(0, 0.1, length=day),
            # The next day has no traffic at all.
            metric_row(24, None, metric="row_count", n_current=0, length=day, status="insufficient_data"),
        ],
    )
    last_request = T0 + 4 * HOUR
    summary = evaluate_alerts(factory, store, now=T0 + day + HOUR)
    [alert] = alerts_of(factory)
    assert summary.opened == (alert.id,)
    assert alert.window_start == last_request
    assert alert.last_statistic == pytest.approx(21.0)
    # Staging has no traffic at all: the prod-only rule does not look at it; an any-environment rule says so.
    freshness_rule(session, team.monitor, hours=12, name="fresh anywhere")
    write_metrics(store, [metric_row(0, 0.1)], environment="staging")
    summary = evaluate_alerts(factory, store, now=T0 + day + HOUR)
    assert sorted(a.environment for a in alerts_of(factory)) == ["prod", "prod", "staging"]


# --------------------------------------------------------------------------- lifecycle and permissions


def _open_alert(factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore) -> int:
    psi_rule(session, team.monitor, consecutive_windows=1)
    write_metrics(store, [metric_row(0, 0.5)])
    [alert_id] = evaluate_alerts(factory, store, now=NOW).opened
    return alert_id


def test_acknowledge_then_resolve_with_audit_entries(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    alert_id = _open_alert(factory, session, team, store)

    acked = acknowledge(session, team.ops, alert_id, "  looking at the income feed  ")
    session.commit()
    assert (acked.state, acked.acknowledge_comment, acked.acknowledged_by_id) == (
        "acknowledged",
        "looking at the income feed",
        team.ops.user_id,
    )
    with pytest.raises(Conflict, match="is acknowledged: only an open alert can be acknowledged"):
        acknowledge(session, team.monitor, alert_id, "me too")
    session.rollback()

    resolved = resolve_alert(session, team.monitor, alert_id, "feed fixed")
    session.commit()
    assert (resolved.state, resolved.resolved_by_id, resolved.resolution) == (
        "resolved",
        team.monitor.user_id,
        "resolved by monica: feed fixed",
    )
    with pytest.raises(Conflict, match="already resolved"):
        resolve_alert(session, team.monitor, alert_id, "")
    session.rollback()
    with pytest.raises(Conflict, match="is resolved"):
        acknowledge(session, team.ops, alert_id, "")
    session.rollback()

    assert audit_actions(factory) == [
        ("system", "alert.open", f"alert:{alert_id}"),
        ("olga", "alert.acknowledge", f"alert:{alert_id}"),
        ("monica", "alert.resolve", f"alert:{alert_id}"),
    ]
    with factory() as reader:
        ack_entry = reader.scalars(select(AuditEntry).where(AuditEntry.action == "alert.acknowledge")).one()
        details = json.loads(ack_entry.details)
        assert details["comment"] == "looking at the income feed"
        assert (details["project"], details["column"], details["metric"]) == (PROJECT, "income", "psi")
        assert audit.verify(reader).ok


def test_a_manually_resolved_alert_that_still_breaches_reopens_as_a_new_incident(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    alert_id = _open_alert(factory, session, team, store)
    resolve_alert(session, team.monitor, alert_id, "")
    session.commit()
    assert evaluate_alerts(factory, store, now=NOW).opened == ()  # the covered window does not reopen it
    write_metrics(store, [metric_row(1, 0.5)])
    reopened = evaluate_alerts(factory, store, now=NOW)
    assert len(reopened.opened) == 1 and reopened.opened[0] != alert_id


def test_acknowledging_needs_ack_alerts_on_that_project_now(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    alert_id = _open_alert(factory, session, team, store)
    with pytest.raises(Forbidden, match="eddie may not ack_alerts on project 'credit-risk'"):
        acknowledge(session, team.engineer, alert_id, "")
    with pytest.raises(Forbidden, match="otto may not ack_alerts"):
        acknowledge(session, team.outsider, alert_id, "")
    with pytest.raises(Forbidden):
        resolve_alert(session, team.engineer, alert_id, "")
    session.rollback()
    # The role is re-read from the database: an Actor built before the revocation no longer counts.
    revoke_role(session, team.admin, "olga", PROJECT, Role.PRODUCTION_TEAM)
    session.commit()
    with pytest.raises(Forbidden, match="olga may not ack_alerts"):
        acknowledge(session, team.ops, alert_id, "")
    session.rollback()
    with pytest.raises(InvalidInput, match="at most 2000"):
        acknowledge(session, team.monitor, alert_id, "x" * 2001)
    session.rollback()
    assert alerts_of(factory)[0].state == "open"
    assert [action for _, action, _ in audit_actions(factory)] == ["alert.open"]
    # Visibility: the engineer sees the alert (view_monitoring); the outsider does not.
    assert [a.id for a, _ in list_alerts(session, team.engineer)] == [alert_id]
    assert list_alerts(session, team.outsider) == []


def test_rule_management_needs_manage_alert_rules_and_is_audited(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    spec = RuleSpec(
        name="income drift", model=MODEL, metric="psi", column="income", operator=">", threshold=0.2
    )
    for refused in (team.engineer, team.ops, team.outsider):
        with pytest.raises(Forbidden, match="may not manage_alert_rules"):
            create_rule(session, refused, PROJECT, spec)
        session.rollback()
    rule = create_rule(session, team.monitor, PROJECT, spec)
    session.commit()
    with pytest.raises(Conflict, match="already has an alert rule named 'income drift'"):
        create_rule(session, team.admin, PROJECT, spec)
    session.rollback()
    with pytest.raises(Forbidden):
        update_rule(session, team.ops, rule.id, threshold=0.5)
    with pytest.raises(Forbidden):
        disable_rule(session, team.engineer, rule.id)
    session.rollback()
    with pytest.raises(InvalidInput, match="needs a threshold"):
        update_rule(session, team.monitor, rule.id, threshold=None)
    session.rollback()

    updated = update_rule(session, team.monitor, rule.id, threshold=0.3, consecutive_windows=2, column=None)
    unchanged = update_rule(session, team.monitor, rule.id, threshold=0.3)
    session.commit()
    assert (updated.threshold, updated.consecutive_windows, updated.column_name) == (0.3, 2, None)
    assert unchanged is updated

    with factory() as reader:
        entries = reader.scalars(
            select(AuditEntry).where(AuditEntry.action.startswith("alert_rule.")).order_by(AuditEntry.seq)
        ).all()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("monica", "alert_rule.create", "alert_rule:credit-risk/income drift"),
        ("monica", "alert_rule.update", "alert_rule:credit-risk/income drift"),
    ]
    assert json.loads(entries[1].details)["changes"] == {
        "threshold": {"from": 0.2, "to": 0.3},
        "consecutive_windows": {"from": 1, "to": 2},
        "column": {"from": "income", "to": None},
    }


def test_disabling_a_rule_resolves_its_alerts_and_stops_evaluation(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    alert_id = _open_alert(factory, session, team, store)
    [alert] = alerts_of(factory)
    disable_rule(session, team.monitor, alert.rule_id)
    session.commit()
    [alert] = alerts_of(factory)
    assert (alert.state, alert.resolved_by_id) == ("resolved", team.monitor.user_id)
    assert alert.resolution == "rule 'income drift' disabled by monica"
    write_metrics(store, [metric_row(hour, 0.9) for hour in range(1, 4)])
    summary = evaluate_alerts(factory, store, now=NOW)
    assert (summary.rules_evaluated, summary.opened) == (0, ())
    assert audit_actions(factory, "alert") == [
        ("monica", "alert_rule.create", "alert_rule:credit-risk/income drift"),
        ("system", "alert.open", f"alert:{alert_id}"),
        ("monica", "alert_rule.update", "alert_rule:credit-risk/income drift"),
        ("monica", "alert.resolve", f"alert:{alert_id}"),
    ]


def test_the_database_refuses_a_duplicate_alert(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore
) -> None:
    _open_alert(factory, session, team, store)
    [alert] = alerts_of(factory)
    # Same rule, series and first window, even in another state: refused by uq_alerts_dedup.
    copy = {c.name: getattr(alert, c.name) for c in Alert.__table__.columns if c.name != "id"}
    with factory() as writer:
        writer.add(Alert(**{**copy, "state": "resolved"}))
        with pytest.raises(IntegrityError, match=r"uq_alerts_dedup|UNIQUE constraint failed"):
            writer.commit()


# --------------------------------------------------------------------------- notifications


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def test_evaluation_notifies_a_signed_webhook_and_records_the_delivery(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore, receiver: Receiver
) -> None:
    channel = create_channel(
        session, team.monitor, PROJECT, name="ops-chat", kind="webhook", url=receiver.url
    )
    session.commit()
    secret = channel.secret
    assert secret and len(secret) >= 32
    receiver.responses = [(503, {}), (502, {})]  # fails twice, then accepts

    alert_id = _open_alert_with(factory, session, team, store, delivery=QUICK_DELIVERY)

    [request] = receiver.requests[2:]
    assert len(receiver.requests) == 3
    assert verify_signature(request.body, secret, request.headers[SIGNATURE_HEADER])
    body = json.loads(request.body)
    assert (body["alert"]["id"], body["alert"]["event"], body["alert"]["state"]) == (
        alert_id,
        "opened",
        "open",
    )
    with factory() as reader:
        delivery = reader.scalars(select(AlertDelivery)).one()
        assert (
            delivery.alert_id,
            delivery.event,
            delivery.status,
            delivery.attempts,
            delivery.last_error,
        ) == (
            alert_id,
            "opened",
            "delivered",
            3,
            None,
        )
        assert delivery.delivered_at is not None
    # The channel secret never reaches the audit log.
    with factory() as reader:
        details = reader.scalars(
            select(AuditEntry.details).where(AuditEntry.action == "alert_channel.create")
        ).one()
    assert secret not in details and json.loads(details)["url"] == receiver.url


def _open_alert_with(
    factory: sessionmaker[Session],
    session: Session,
    team: Team,
    store: ParquetStore,
    *,
    delivery: DeliveryOptions,
) -> int:
    psi_rule(session, team.monitor, consecutive_windows=1)
    write_metrics(store, [metric_row(0, 0.5)])
    summary = evaluate_alerts(factory, store, now=NOW, delivery=delivery)
    [alert_id] = summary.opened
    return alert_id


def test_a_failed_delivery_keeps_the_alert_and_is_retried_later(
    factory: sessionmaker[Session], session: Session, team: Team, store: ParquetStore, receiver: Receiver
) -> None:
    create_channel(
        session, team.monitor, PROJECT, name="ops-chat", kind="webhook", url=receiver.url, secret="x" * 20
    )
    create_channel(
        session, team.monitor, PROJECT, name="oncall", kind="email", recipients=["oncall@example.com"]
    )
    quiet = create_channel(
        session,
        team.monitor,
        PROJECT,
        name="quiet",
        kind="webhook",
        url=receiver.url,
        min_severity="critical",
    )
    session.commit()
    receiver.responses = [(500, {})] * 3

    psi_rule(session, team.monitor, consecutive_windows=1, severity="warning")
    write_metrics(store, [metric_row(0, 0.5)])
    summary = evaluate_alerts(factory, store, now=NOW, delivery=QUICK_DELIVERY)

    [alert] = alerts_of(factory)
    assert alert.state == "open"  # the alert is there whatever happened to its notifications
    outcomes = {o.channel: o for o in summary.deliveries}
    assert set(outcomes) == {"ops-chat", "oncall"}  # "quiet" only takes critical alerts
    assert (outcomes["ops-chat"].status, outcomes["ops-chat"].attempts) == ("failed", 3)
    assert "HTTP 500" in outcomes["ops-chat"].error
    assert (outcomes["oncall"].status, outcomes["oncall"].attempts) == ("failed", 0)
    assert "no SMTP relay configured" in outcomes["oncall"].error
    with factory() as reader:
        rows = {d.channel.name: d for d in reader.scalars(select(AlertDelivery))}
        assert (rows["ops-chat"].status, rows["ops-chat"].attempts) == ("failed", 3)
        assert "gave up after 3 attempts" in rows["ops-chat"].last_error

    # The receiver is back: the sweep delivers what failed and the attempts add up. The e-mail channel
    # is switched off meanwhile: its delivery is abandoned (final), not retried forever.
    disable_channel(session, team.monitor, quiet.id)
    update_channel(session, team.monitor, rows["oncall"].channel_id, enabled=False)
    session.commit()
    retried = deliver_pending(factory, QUICK_DELIVERY)
    assert {(o.channel, o.status) for o in retried} == {("ops-chat", "delivered"), ("oncall", "abandoned")}
    with factory() as reader:
        rows = {d.channel.name: d for d in reader.scalars(select(AlertDelivery))}
        assert (rows["ops-chat"].status, rows["ops-chat"].attempts, rows["ops-chat"].last_error) == (
            "delivered",
            4,
            None,
        )
        assert (rows["oncall"].status, rows["oncall"].last_error) == (
            "abandoned",
            "channel disabled: not sent",
        )
    assert deliver_pending(factory, QUICK_DELIVERY) == []
    # Resolving notifies again, as a separate delivery.
    resolve_alert(session, team.monitor, alert.id, "done")
    session.commit()
    [resolved] = deliver_pending(factory, QUICK_DELIVERY)
    assert (resolved.channel, resolved.event, resolved.status) == ("ops-chat", "resolved", "delivered")
    assert json.loads(receiver.requests[-1].body)["alert"]["state"] == "resolved"


def test_channel_management_checks_permissions_and_input(
    factory: sessionmaker[Session], session: Session, team: Team
) -> None:
    with pytest.raises(Forbidden, match="may not manage_alert_rules"):
        create_channel(
            session, team.ops, PROJECT, name="x", kind="webhook", url="https://hooks.example.com/x"
        )
    for kwargs, message in [
        ({"kind": "sms"}, "channel kind must be one of webhook, email"),
        ({"kind": "webhook", "url": "ftp://hooks.example.com/x"}, "must be https"),
        ({"kind": "webhook", "url": "https://hooks.example.com/x", "secret": "short"}, "16 to 255"),
        ({"kind": "email", "recipients": ["not an address"]}, "not a plain e-mail address"),
        ({"kind": "email", "recipients": ["a@example.com"], "url": "https://x.example.com"}, "not a URL"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            create_channel(session, team.monitor, PROJECT, name="chan", **kwargs)  # type: ignore[arg-type]
    session.rollback()
    create_channel(session, team.monitor, PROJECT, name="chan", kind="email", recipients=["a@example.com"])
    with pytest.raises(Conflict, match="already has a channel named 'chan'"):
        create_channel(
            session, team.monitor, PROJECT, name="chan", kind="email", recipients=["b@example.com"]
        )
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AlertDelivery)) == 0


# --------------------------------------------------------------------------- the demo workspace hook


def test_demo_hook_installs_the_demo_rules_once_and_evaluates_them(
    tmp_path: Path, store: ParquetStore, request: pytest.FixtureRequest
) -> None:
    """The glue of the demo (seeded accounts, demo data, the monitor's metrics) on SQLite only.

    Every database behaviour the hook relies on is covered on both backends above; this
    test builds a small demo workspace, which is what costs time.
    """
    from jobs.db import make_engine, make_session_factory
    from jobs.db.migrate import upgrade
    from jobs.demo import DemoContext, DemoWorkspace
    from jobs.demo_data import generate_demo_data
    from jobs.monitor import MonitorRequest, run_monitor
    from jobs.seed import seed_demo_accounts

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    engine = make_engine(url)
    request.addfinalizer(engine.dispose)
    factory = make_session_factory(engine)
    with factory() as session:
        seed_demo_accounts(session)
        session.commit()
    scenario = generate_demo_data(store, T0.date(), 4, 7, volume=0.03)
    now = T0 + timedelta(days=7)  # the traffic ended three days ago: stale for the 48 h freshness rules
    monitor = run_monitor(store, MonitorRequest(), now=now)
    workspace = DemoWorkspace(data_uri=store.root, scenario=scenario, monitor=monitor)
    context = DemoContext(store, factory, "unused", None, None, now)  # type: ignore[arg-type]

    first = install_demo_alerts(workspace, context)
    again = install_demo_alerts(workspace, context)

    with factory() as reader:
        rules = reader.execute(select(AlertRule.name, AlertRule.created_by_id)).all()
        author = reader.scalars(select(User.id).where(User.username == "monitoring")).one()
    models = sorted({m.model for m in scenario.models})
    assert sorted(name for name, _ in rules) == sorted(
        f"{template.name} ({model})" for template in DEMO_RULES for model in models
    )
    assert {created_by for _, created_by in rules} == {author}
    assert first is not None and again is not None
    assert first.rules_evaluated == again.rules_evaluated == len(DEMO_RULES) * len(models)
    stale = alerts_of(factory)
    assert sorted((a.metric, a.environment) for a in stale) == sorted(
        ("freshness", environment) for _ in models for environment in scenario.environments
    )
    assert set(first.opened) == {a.id for a in stale} and again.opened == ()
