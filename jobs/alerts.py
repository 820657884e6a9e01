"""Alert rules, their evaluation over the ``metrics`` dataset, and the alert lifecycle.

Rules (:class:`jobs.db.alerting.AlertRule`) belong to a project and a model and
are managed with :func:`create_rule`, :func:`update_rule` and :func:`disable_rule`,
which re-check ``MANAGE_ALERT_RULES`` against the roles in the database and write
the audit log. Two kinds exist:

``threshold``
    Compares the ``statistic`` of ``metric`` rows (one column, or every column when
    the rule names none) with ``>``, ``>=``, ``<``, ``<=`` or ``==`` and
    ``threshold``, or with ``drifted`` uses the row's ``drifted`` flag. Every
    (environment, version, column) is a series of its own. The rule fires when
    ``consecutive_windows`` evaluable windows in a row breach. Windows whose
    ``status`` is ``insufficient_data`` or ``error``, or that have no value, are
    skipped: they neither breach, nor recover, nor break a streak.
``freshness``
    Fires when the newest monitored traffic of an environment is older than
    ``max_age_hours``. The newest traffic time is read from the metrics: per
    window with traffic (``n_current > 0``), ``window_end - statistic`` of its
    :data:`FRESHNESS_LAG_METRIC` row (the monitor's ``freshness_lag_s``: the time
    of the window's last request), or ``window_end`` when that row is absent.

Lifecycle: ``open`` -> ``acknowledged`` (:func:`acknowledge`, ``ACK_ALERTS``) ->
``resolved``. An alert resolves by itself when its series recovers for the
rule's ``consecutive_windows`` (for freshness: when newer traffic arrives), or by
hand (:func:`resolve_alert`). Opening, resolving and acknowledging each write an
audit entry (the evaluation acts as ``system``).

Deduplication: an alert is identified by its rule, series and the *first* window
of its breaching streak, which does not move while the streak grows; the unique
key ``uq_alerts_dedup`` enforces it, and the evaluation only looks for a new
streak after the newest window an earlier alert of the series covered. Running
:func:`evaluate_alerts` again over the same metrics therefore changes nothing.
Evaluations of one project are serialised (``jobs.db.session.serialize``).

:func:`evaluate_alerts` reads only the ``metrics`` dataset, opens and resolves
alerts in one transaction per model together with their pending notifications,
and only then sends them (:mod:`jobs.notify`), so a failed delivery never loses
an alert.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import NoData, ParquetStore, StoreError
from jobs import audit
from jobs.contracts import METRICS, key_segment_problem
from jobs.db.alerting import (
    ACTIVE_ALERT_STATES,
    ALERT_SEVERITIES,
    RULE_KINDS,
    RULE_OPERATORS,
    Alert,
    AlertRule,
)
from jobs.db.models import ENVIRONMENT_NAMES, Project, utcnow
from jobs.db.session import serialize, session_scope
from jobs.notify import (
    EVENT_OPENED,
    EVENT_RESOLVED,
    DeliveryOptions,
    DeliveryOutcome,
    deliver,
    queue_deliveries,
)
from jobs.permissions import Actor, Permission, has_permission, require
from jobs.users import Conflict, InvalidInput, active_actor, actor_for

SYSTEM_ACTOR = "system"
FRESHNESS_LAG_METRIC = "freshness_lag_s"
"""The monitor's per-window row: seconds between the window's last request and its end."""
FRESHNESS_ALERT_METRIC = "freshness"
UNEVALUABLE_STATUSES = frozenset({"insufficient_data", "error"})
MAX_CONSECUTIVE_WINDOWS = 100
MAX_AGE_HOURS = 24 * 366
MAX_COMMENT_LENGTH = 2000
DEFAULT_LOOKBACK = timedelta(days=30)
_METRIC_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_COLUMN_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_RULE_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_METRIC_COLUMNS = (
    "environment",
    "version",
    "window_start",
    "window_end",
    "column",
    "metric",
    "statistic",
    "drifted",
    "status",
)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class RuleSpec:
    """The user-editable fields of an alert rule, validated together.

    Attributes:
        name: Name, unique in the project.
        model: Model name (a key segment).
        kind: ``threshold`` or ``freshness``.
        metric: Metric of a threshold rule (``psi``, ``ks``, ``null_rate``, ...).
        column: Column of a threshold rule; ``None`` for every column.
        operator: ``>``, ``>=``, ``<``, ``<=``, ``==`` or ``drifted``.
        threshold: Value compared with the statistic (``None`` for ``drifted``).
        consecutive_windows: Breaching windows in a row before the rule fires (1-100).
        max_age_hours: Freshness limit in hours.
        severity: ``info``, ``warning`` or ``critical``.
        environment: ``dev``, ``staging``, ``prod``, or ``None`` for every environment.
        enabled: Whether evaluation uses the rule.
    """

    name: str
    model: str
    kind: str = "threshold"
    metric: str | None = None
    column: str | None = None
    operator: str | None = None
    threshold: float | None = None
    consecutive_windows: int = 1
    max_age_hours: float | None = None
    severity: str = "warning"
    environment: str | None = None
    enabled: bool = True

    def validated(self) -> RuleSpec:
        """This spec, normalised (name stripped, numbers as float), if it is coherent.

        Raises:
            InvalidInput: naming the first problem.
        """
        name = self.name.strip() if isinstance(self.name, str) else ""
        if not _RULE_NAME_RE.fullmatch(name):
            raise InvalidInput("rule name must be 1 to 128 printable characters")
        if key_segment_problem(self.model) is not None:
            raise InvalidInput(f"model {self.model!r} is not a valid model name (letters, digits, '_', '-')")
        if self.environment is not None and self.environment not in ENVIRONMENT_NAMES:
            raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENT_NAMES)} or empty")
        if self.severity not in ALERT_SEVERITIES:
            raise InvalidInput(f"severity must be one of {', '.join(ALERT_SEVERITIES)}")
        if self.kind not in RULE_KINDS:
            raise InvalidInput(f"rule kind must be one of {', '.join(RULE_KINDS)}")
        if not isinstance(self.enabled, bool):
            raise InvalidInput("enabled must be true or false")
        if self.kind == "freshness":
            return self._validated_freshness(name)
        return self._validated_threshold(name)

    def _validated_freshness(self, name: str) -> RuleSpec:
        if any(v is not None for v in (self.metric, self.column, self.operator, self.threshold)):
            raise InvalidInput(
                "a freshness rule takes max_age_hours only (no metric, column, operator or threshold)"
            )
        hours = _finite(self.max_age_hours, "max_age_hours")
        if hours is None or not 0 < hours <= MAX_AGE_HOURS:
            raise InvalidInput(f"a freshness rule needs max_age_hours between 0 and {MAX_AGE_HOURS}")
        if self.consecutive_windows != 1:
            raise InvalidInput(
                "a freshness rule fires on the newest data only: consecutive_windows must be 1"
            )
        return replace(self, name=name, max_age_hours=hours)

    def _validated_threshold(self, name: str) -> RuleSpec:
        if not isinstance(self.metric, str) or not _METRIC_NAME_RE.fullmatch(self.metric):
            raise InvalidInput("a threshold rule needs a metric name (1-64 letters, digits or '_.:-')")
        if self.column is not None and (
            not isinstance(self.column, str) or not _COLUMN_NAME_RE.fullmatch(self.column)
        ):
            raise InvalidInput("column must be 1 to 128 printable characters, or empty for every column")
        if self.operator not in RULE_OPERATORS:
            raise InvalidInput(f"operator must be one of {', '.join(RULE_OPERATORS)}")
        threshold = _finite(self.threshold, "threshold")
        if self.operator == "drifted" and threshold is not None:
            raise InvalidInput("the drifted operator uses the metric's own drift flag: leave threshold empty")
        if self.operator != "drifted" and threshold is None:
            raise InvalidInput(f"operator {self.operator!r} needs a threshold")
        windows = self.consecutive_windows
        if (
            isinstance(windows, bool)
            or not isinstance(windows, int)
            or not 1 <= windows <= MAX_CONSECUTIVE_WINDOWS
        ):
            raise InvalidInput(f"consecutive_windows must be an integer from 1 to {MAX_CONSECUTIVE_WINDOWS}")
        if self.max_age_hours is not None:
            raise InvalidInput("max_age_hours belongs to freshness rules")
        return replace(self, name=name, threshold=threshold)

    @classmethod
    def of(cls, rule: AlertRule) -> RuleSpec:
        """The spec of a stored rule."""
        return cls(**_stored(rule, [f.name for f in fields(cls)]))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dictionary (the audit details)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _finite(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number")
    return float(value)


_RULE_COLUMNS = {"column": "column_name"}  # spec field -> AlertRule attribute, where they differ


def _apply(rule: AlertRule, spec: RuleSpec) -> None:
    for name, value in spec.as_dict().items():
        setattr(rule, _RULE_COLUMNS.get(name, name), value)


def _stored(rule: AlertRule, names: Iterable[str]) -> dict[str, Any]:
    """The stored values of the spec fields ``names`` of ``rule``."""
    return {name: getattr(rule, _RULE_COLUMNS.get(name, name)) for name in names}


def _project(session: Session, slug: str) -> Project:
    project = session.scalars(select(Project).where(Project.slug == slug)).first()
    if project is None:
        raise Conflict(f"no project with slug {slug!r}")
    return project


def _rule_target(slug: str, rule: AlertRule | RuleSpec) -> str:
    return f"alert_rule:{slug}/{rule.name}"[:255]


def create_rule(session: Session, actor: Actor, project: str, spec: RuleSpec) -> AlertRule:
    """Add an alert rule to a project.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who creates it; needs ``MANAGE_ALERT_RULES`` on the project.
        project: Project slug.
        spec: The rule.

    Returns:
        The new, flushed rule.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the project (now).
        InvalidInput: if the spec is incoherent.
        Conflict: if the project does not exist or the rule name is taken.
    """
    require(actor, Permission.MANAGE_ALERT_RULES, project)
    current = require(active_actor(session, actor), Permission.MANAGE_ALERT_RULES, project)
    spec = spec.validated()
    owner = _project(session, project)
    taken = session.scalar(
        select(AlertRule.id).where(AlertRule.project_id == owner.id, AlertRule.name == spec.name)
    )
    if taken is not None:
        raise Conflict(f"project {project!r} already has an alert rule named {spec.name!r}")
    now = utcnow()
    rule = AlertRule(project_id=owner.id, created_by_id=current.user_id, created_at=now, updated_at=now)
    _apply(rule, spec)
    session.add(rule)
    session.flush()
    audit.append(
        session,
        current.username,
        "alert_rule.create",
        _rule_target(project, rule),
        {"id": rule.id, **spec.as_dict()},
    )
    return rule


_UNCHANGED: Any = object()


def update_rule(
    session: Session,
    actor: Actor,
    rule_id: int,
    *,
    name: str = _UNCHANGED,
    metric: str | None = _UNCHANGED,
    column: str | None = _UNCHANGED,
    operator: str | None = _UNCHANGED,
    threshold: float | None = _UNCHANGED,
    consecutive_windows: int = _UNCHANGED,
    max_age_hours: float | None = _UNCHANGED,
    severity: str = _UNCHANGED,
    environment: str | None = _UNCHANGED,
    enabled: bool = _UNCHANGED,
) -> AlertRule:
    """Change a rule; arguments not passed keep their value (``None`` means "none", e.g. every column).

    Disabling a rule resolves its open and acknowledged alerts (nothing would
    resolve them otherwise). The model and kind of a rule are fixed: create
    another rule instead.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the rule's project (now).
        InvalidInput: if the changed rule is incoherent.
        Conflict: if there is no such rule or the new name is taken.
    """
    rule, slug = _rule_with_slug(session, rule_id)
    require(actor, Permission.MANAGE_ALERT_RULES, slug)
    current = require(active_actor(session, actor), Permission.MANAGE_ALERT_RULES, slug)
    requested = {
        "name": name,
        "metric": metric,
        "column": column,
        "operator": operator,
        "threshold": threshold,
        "consecutive_windows": consecutive_windows,
        "max_age_hours": max_age_hours,
        "severity": severity,
        "environment": environment,
        "enabled": enabled,
    }
    before = RuleSpec.of(rule)
    after = replace(before, **{k: v for k, v in requested.items() if v is not _UNCHANGED}).validated()
    changes = {
        key: {"from": old, "to": new}
        for key, old, new in (
            (f.name, getattr(before, f.name), getattr(after, f.name)) for f in fields(before)
        )
        if old != new
    }
    if not changes:
        return rule
    if after.name != before.name and session.scalar(
        select(AlertRule.id).where(AlertRule.project_id == rule.project_id, AlertRule.name == after.name)
    ):
        raise Conflict(f"project {slug!r} already has an alert rule named {after.name!r}")
    _apply(rule, after)
    rule.updated_at = utcnow()
    session.flush()
    audit.append(
        session,
        current.username,
        "alert_rule.update",
        _rule_target(slug, rule),
        {"id": rule.id, "changes": changes},
    )
    if before.enabled and not after.enabled:
        _resolve_active_alerts_of(
            session, rule, f"rule {rule.name!r} disabled by {current.username}", current
        )
    return rule


def disable_rule(session: Session, actor: Actor, rule_id: int) -> AlertRule:
    """Disable a rule (kept with its alert history) and resolve its active alerts.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the rule's project (now).
        Conflict: if there is no such rule.
    """
    return update_rule(session, actor, rule_id, enabled=False)


def _rule_with_slug(session: Session, rule_id: int) -> tuple[AlertRule, str]:
    row = session.execute(
        select(AlertRule, Project.slug)
        .join(Project, Project.id == AlertRule.project_id)
        .where(AlertRule.id == rule_id)
    ).first()
    if row is None:
        raise Conflict(f"no alert rule {rule_id}")
    return row[0], row[1]


def list_rules(session: Session, project: str, *, model: str | None = None) -> list[AlertRule]:
    """The rules of a project (optionally of one model), by name; callers check ``VIEW_MONITORING``."""
    owner = _project(session, project)
    query = select(AlertRule).where(AlertRule.project_id == owner.id).order_by(AlertRule.name)
    if model is not None:
        query = query.where(AlertRule.model == model)
    return list(session.scalars(query))


# --------------------------------------------------------------------------- lifecycle


def _audit_alert(
    session: Session, who: str, action: str, alert: Alert, slug: str, details: dict[str, Any]
) -> None:
    """Append ``action`` on ``alert`` to the audit log: ``details`` and what the alert is about."""
    audit.append(session, who, action, f"alert:{alert.id}", {**details, **_alert_details(alert, slug)})


def _alert_details(alert: Alert, slug: str) -> dict[str, Any]:
    return {
        "project": slug,
        "model": alert.model,
        "environment": alert.environment,
        "version": alert.version,
        "column": alert.column_name,
        "metric": alert.metric,
        "operator": alert.operator,
        "threshold": _json_float(alert.threshold),
        "statistic": _json_float(alert.last_statistic),
        "severity": alert.severity,
        "rule_id": alert.rule_id,
        "window_start": alert.window_start,
        "last_window_end": alert.last_window_end,
        "breaching_windows": alert.breaching_windows,
    }


def _json_float(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _alert_with_slug(session: Session, alert_id: int) -> tuple[Alert, str]:
    row = session.execute(
        select(Alert, Project.slug).join(Project, Project.id == Alert.project_id).where(Alert.id == alert_id)
    ).first()
    if row is None:
        raise Conflict(f"no alert {alert_id}")
    return row[0], row[1]


def _clean_comment(comment: str) -> str:
    if not isinstance(comment, str):
        raise InvalidInput("the comment must be text")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidInput(f"the comment must be at most {MAX_COMMENT_LENGTH} characters")
    return comment


def _alert_to_change(session: Session, actor: Actor, alert_id: int) -> tuple[Alert, str, Actor]:
    """The alert, its project's slug and the acting user as of now (``ACK_ALERTS`` on the project)."""
    alert, slug = _alert_with_slug(session, alert_id)
    require(actor, Permission.ACK_ALERTS, slug)
    return alert, slug, require(active_actor(session, actor), Permission.ACK_ALERTS, slug)


def acknowledge(session: Session, actor: Actor, alert_id: int, comment: str) -> Alert:
    """Acknowledge an open alert: someone is on it.

    The state changes by compare-and-set (``open`` -> ``acknowledged``), so of two
    people acknowledging at once one wins and the other gets :class:`Conflict`.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who acknowledges; needs ``ACK_ALERTS`` on the alert's project (now).
        alert_id: The alert.
        comment: What is being done (may be empty; at most 2000 characters).

    Returns:
        The acknowledged alert.

    Raises:
        Forbidden: if ``actor`` lacks ``ACK_ALERTS`` on the project.
        InvalidInput: for a comment that is not text or too long.
        Conflict: if there is no such alert or it is not open.
    """
    alert, slug, current = _alert_to_change(session, actor, alert_id)
    comment = _clean_comment(comment)
    now = utcnow()
    changed = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.state == "open")
        .values(
            state="acknowledged",
            acknowledged_at=now,
            acknowledged_by_id=current.user_id,
            acknowledge_comment=comment,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(alert)
    if changed != 1:
        raise Conflict(f"alert {alert_id} is {alert.state}: only an open alert can be acknowledged")
    _audit_alert(session, current.username, "alert.acknowledge", alert, slug, {"comment": comment})
    return alert


def resolve_alert(session: Session, actor: Actor, alert_id: int, comment: str) -> Alert:
    """Resolve an open or acknowledged alert by hand (and notify its channels).

    If the condition still holds, the next evaluation opens a new alert once the
    rule's consecutive windows breach again after the ones this alert covered.

    Raises:
        Forbidden: if ``actor`` lacks ``ACK_ALERTS`` on the alert's project (now).
        InvalidInput: for a comment that is not text or too long.
        Conflict: if there is no such alert or it is already resolved.
    """
    alert, slug, current = _alert_to_change(session, actor, alert_id)
    comment = _clean_comment(comment)
    resolution = f"resolved by {current.username}" + (f": {comment}" if comment else "")
    changed = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.state.in_(ACTIVE_ALERT_STATES))
        .values(state="resolved", resolved_at=utcnow(), resolved_by_id=current.user_id, resolution=resolution)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(alert)
    if changed != 1:
        raise Conflict(f"alert {alert_id} is already resolved")
    _audit_alert(session, current.username, "alert.resolve", alert, slug, {"resolution": resolution})
    queue_deliveries(session, alert, EVENT_RESOLVED)
    return alert


def _resolve_active_alerts_of(session: Session, rule: AlertRule, resolution: str, actor: Actor) -> None:
    slug = session.scalar(select(Project.slug).where(Project.id == rule.project_id)) or ""
    active = session.scalars(
        select(Alert).where(Alert.rule_id == rule.id, Alert.state.in_(ACTIVE_ALERT_STATES)).order_by(Alert.id)
    )
    for alert in active:
        alert.state = "resolved"
        alert.resolved_at = utcnow()
        alert.resolved_by_id = actor.user_id
        alert.resolution = resolution
        session.flush()
        _audit_alert(session, actor.username, "alert.resolve", alert, slug, {"resolution": resolution})
        queue_deliveries(session, alert, EVENT_RESOLVED)


def list_alerts(
    session: Session,
    actor: Actor | None,
    *,
    project: str | None = None,
    states: Sequence[str] | None = None,
    limit: int = 200,
) -> list[tuple[Alert, str]]:
    """Alerts ``actor`` may see (``VIEW_MONITORING``), newest first, with their project slug.

    Args:
        session: Session to read with.
        actor: Who asks; ``None`` sees nothing.
        project: Only this project.
        states: Only these states (e.g. ``("open", "acknowledged")``).
        limit: At most this many.
    """
    if actor is None:
        return []
    query = select(Alert, Project.slug).join(Project, Project.id == Alert.project_id)
    if not actor.is_admin:
        visible = [slug for slug in actor.roles if has_permission(actor, Permission.VIEW_MONITORING, slug)]
        query = query.where(Project.slug.in_(visible))
    if project is not None:
        query = query.where(Project.slug == project)
    if states:
        query = query.where(Alert.state.in_(list(states)))
    rows = session.execute(query.order_by(Alert.opened_at.desc(), Alert.id.desc()).limit(limit))
    return [(alert, slug) for alert, slug in rows]


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvaluationSummary:
    """What one :func:`evaluate_alerts` run did.

    Attributes:
        evaluated_at: The evaluation time (``now``).
        rules_evaluated: Enabled rules looked at.
        windows_examined: Evaluable metric windows compared with a rule.
        opened: Ids of the alerts opened.
        resolved: Ids of the alerts resolved automatically.
        updated: Ids of active alerts whose breach went on (newer breaching windows).
        insufficient_data: Why some rules could not be evaluated (no metrics, only
            windows without data, no traffic ever seen).
        errors: Models whose metrics could not be read (their alerts were left as they were).
        deliveries: Notification outcomes (empty when delivery was not requested).
    """

    evaluated_at: datetime
    rules_evaluated: int = 0
    windows_examined: int = 0
    opened: tuple[int, ...] = ()
    resolved: tuple[int, ...] = ()
    updated: tuple[int, ...] = ()
    insufficient_data: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    deliveries: tuple[DeliveryOutcome, ...] = ()


@dataclass(frozen=True)
class _Rule:
    """A rule detached from its session (the evaluation reads Parquet between transactions)."""

    id: int
    project_id: int
    project: str
    name: str
    model: str
    kind: str
    metric: str | None
    column: str | None
    operator: str | None
    threshold: float | None
    consecutive_windows: int
    max_age_hours: float | None
    severity: str
    environment: str | None


# The fields of a _Rule read from its AlertRule: all but its identity (ids and project slug).
_DETACHED_FIELDS = tuple(f.name for f in fields(_Rule) if f.name not in {"id", "project_id", "project"})


@dataclass(frozen=True)
class _Window:
    environment: str
    version: str
    column: str
    start: datetime
    end: datetime
    value: float | None
    breach: bool | None


@dataclass
class _Tally:
    windows: int = 0
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    updated: set[int] = field(default_factory=set)
    insufficient: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    to_deliver: list[int] = field(default_factory=list)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda value, limit: value > limit,
    ">=": lambda value, limit: value >= limit,
    "<": lambda value, limit: value < limit,
    "<=": lambda value, limit: value <= limit,
    "==": lambda value, limit: value == limit,
}


def _breach(rule: _Rule, row: dict[str, Any]) -> bool | None:
    """Whether one metric row breaches the rule; ``None`` when it cannot say."""
    if row["status"] in UNEVALUABLE_STATUSES:
        return None
    if rule.operator == "drifted":
        if row["drifted"] is not None:
            return bool(row["drifted"])
        return {"drift": True, "ok": False}.get(row["status"])
    value = row["statistic"]
    if value is None or not math.isfinite(value):
        return None
    assert rule.threshold is not None and rule.operator is not None
    return _COMPARE[rule.operator](value, rule.threshold)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _days(start: datetime, end: datetime) -> list[str]:
    first, last = start.date(), end.date()
    return [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]


def _read_threshold_rows(
    store: ParquetStore, project: str, model: str, metrics: Iterable[str], now: datetime, lookback: timedelta
) -> list[dict[str, Any]]:
    filters = {
        "project": project,
        "model": model,
        "date": _days(now - lookback, now),
        "metric": sorted(set(metrics)),
    }
    try:
        table = store.read(METRICS, filters=filters, columns=list(_METRIC_COLUMNS))
    except NoData:
        return []
    rows = []
    for row in table.to_pylist():
        start = _utc(row["window_start"])
        if start >= now or start < now - lookback:
            continue
        row["window_start"], row["window_end"] = start, _utc(row["window_end"])
        rows.append(row)
    return rows


def _read_last_traffic(store: ParquetStore, project: str, model: str, now: datetime) -> dict[str, datetime]:
    """Per environment, the time of the newest monitored request up to ``now``.

    A window with traffic counts up to its end, or up to ``end - lag`` when the monitor
    wrote its :data:`FRESHNESS_LAG_METRIC` row (the time of its last request).
    """
    try:
        table = store.read(
            METRICS,
            filters={"project": project, "model": model},
            columns=["environment", "window_start", "window_end", "metric", "statistic", "n_current"],
        )
    except NoData:
        return {}
    per_window: dict[tuple[str, datetime], datetime] = {}
    precise: set[tuple[str, datetime]] = set()
    for row in table.to_pylist():
        start, end = _utc(row["window_start"]), _utc(row["window_end"])
        if start >= now or not (row["n_current"] or 0) > 0:
            continue
        key = (row["environment"], start)
        lag = row["statistic"]
        if row["metric"] == FRESHNESS_LAG_METRIC and lag is not None and math.isfinite(lag) and lag >= 0:
            per_window[key] = end - timedelta(seconds=lag)
            precise.add(key)
        elif key not in precise:
            per_window[key] = end
    newest: dict[str, datetime] = {}
    for (environment, _start), seen in per_window.items():
        seen = min(seen, now)
        if environment not in newest or seen > newest[environment]:
            newest[environment] = seen
    return newest


def _latest_alerts(
    session: Session, rule: _Rule, since: datetime | None
) -> dict[tuple[str, str, str], Alert]:
    """Per series, the alert of ``rule`` with the newest streak.

    With ``since``, only active alerts and those whose streak reached ``since``: an
    older resolved alert cannot affect windows the evaluation reads.
    """
    query = select(Alert).where(Alert.rule_id == rule.id).order_by(Alert.window_start, Alert.id)
    if since is not None:
        query = query.where(or_(Alert.state.in_(ACTIVE_ALERT_STATES), Alert.last_window_start >= since))
    alerts = session.scalars(query)
    latest: dict[tuple[str, str, str], Alert] = {}
    for alert in alerts:
        latest[(alert.environment, alert.version, alert.column_name)] = alert
    return latest


def _exists(session: Session, rule: _Rule, key: tuple[str, str, str], window_start: datetime) -> bool:
    environment, version, column = key
    return (
        session.scalar(
            select(Alert.id).where(
                Alert.rule_id == rule.id,
                Alert.environment == environment,
                Alert.version == version,
                Alert.column_name == column,
                Alert.window_start == window_start,
            )
        )
        is not None
    )


def _open(
    session: Session,
    rule: _Rule,
    key: tuple[str, str, str],
    *,
    first: _Window,
    last: _Window,
    breaching_windows: int,
    metric: str,
    operator: str,
    threshold: float | None,
    now: datetime,
    tally: _Tally,
) -> Alert | None:
    if _exists(session, rule, key, first.start):
        return None
    environment, version, column = key
    alert = Alert(
        rule_id=rule.id,
        project_id=rule.project_id,
        model=rule.model,
        environment=environment,
        version=version,
        column_name=column,
        metric=metric,
        operator=operator,
        threshold=threshold,
        severity=rule.severity,
        window_start=first.start,
        window_end=first.end,
        last_window_start=last.start,
        last_window_end=last.end,
        statistic=last.value,
        last_statistic=last.value,
        breaching_windows=breaching_windows,
        state="open",
        opened_at=now,
    )
    session.add(alert)
    session.flush()
    session.refresh(alert, ["rule"])
    _audit_alert(session, SYSTEM_ACTOR, "alert.open", alert, rule.project, {"rule": rule.name})
    tally.opened.append(alert.id)
    tally.to_deliver.extend(d.id for d in queue_deliveries(session, alert, EVENT_OPENED))
    return alert


def _auto_resolve(
    session: Session, rule: _Rule, alert: Alert, resolution: str, now: datetime, tally: _Tally
) -> None:
    alert.state = "resolved"
    alert.resolved_at = now
    alert.resolution = resolution
    session.flush()
    _audit_alert(session, SYSTEM_ACTOR, "alert.resolve", alert, rule.project, {"resolution": resolution})
    tally.resolved.append(alert.id)
    tally.updated.discard(alert.id)
    tally.to_deliver.extend(d.id for d in queue_deliveries(session, alert, EVENT_RESOLVED))


def _series(rule: _Rule, rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[_Window]]:
    series: dict[tuple[str, str, str], dict[datetime, _Window]] = defaultdict(dict)
    for row in rows:
        if row["metric"] != rule.metric:
            continue
        if rule.column is not None and row["column"] != rule.column:
            continue
        if rule.environment is not None and row["environment"] != rule.environment:
            continue
        key = (row["environment"], row["version"], row["column"])
        series[key][row["window_start"]] = _Window(
            environment=row["environment"],
            version=row["version"],
            column=row["column"],
            start=row["window_start"],
            end=row["window_end"],
            value=row["statistic"] if row["statistic"] is None or math.isfinite(row["statistic"]) else None,
            breach=_breach(rule, row),
        )
    return {key: [windows[start] for start in sorted(windows)] for key, windows in series.items()}


def _evaluate_threshold(
    session: Session,
    rule: _Rule,
    rows: list[dict[str, Any]],
    now: datetime,
    lookback: timedelta,
    tally: _Tally,
) -> None:
    series = _series(rule, rows)
    evaluable = {key: [w for w in windows if w.breach is not None] for key, windows in series.items()}
    if not any(evaluable.values()):
        where = f"column {rule.column!r}" if rule.column else "any column"
        env = f" in {rule.environment}" if rule.environment else ""
        reason = "only windows without enough data" if series else "no metric rows"
        tally.insufficient.append(
            f"rule {rule.name!r} ({rule.project}/{rule.model}): {reason} for {rule.metric!r} on {where}{env} "
            f"in the last {lookback.days} days"
        )
        return
    needed = rule.consecutive_windows
    latest = _latest_alerts(session, rule, now - lookback)
    for key, windows in evaluable.items():
        previous = latest.get(key)
        active = previous if previous is not None and previous.state in ACTIVE_ALERT_STATES else None
        cursor = previous.last_window_start if previous is not None else None
        streak: list[_Window] = []
        clean = 0
        for window in windows:
            if cursor is not None and window.start <= cursor:
                continue
            tally.windows += 1
            if active is not None:
                if window.breach:
                    active.last_window_start, active.last_window_end = window.start, window.end
                    active.last_statistic = window.value
                    active.breaching_windows += 1
                    clean = 0
                    tally.updated.add(active.id)
                else:
                    clean += 1
                    if clean >= needed:
                        _auto_resolve(
                            session,
                            rule,
                            active,
                            f"recovered: {needed} consecutive window(s) within the rule, "
                            f"the last ending {window.end.isoformat()}",
                            now,
                            tally,
                        )
                        active = None
                continue
            if not window.breach:
                streak = []
                continue
            streak.append(window)
            if len(streak) >= needed:
                active = _open(
                    session,
                    rule,
                    key,
                    first=streak[0],
                    last=window,
                    breaching_windows=len(streak),
                    metric=rule.metric or "",
                    operator=rule.operator or "",
                    threshold=rule.threshold,
                    now=now,
                    tally=tally,
                )
                streak, clean = [], 0
        session.flush()


def _evaluate_freshness(
    session: Session, rule: _Rule, last_traffic: dict[str, datetime], now: datetime, tally: _Tally
) -> None:
    assert rule.max_age_hours is not None
    environments = [rule.environment] if rule.environment else sorted(last_traffic)
    if not environments:
        tally.insufficient.append(
            f"rule {rule.name!r} ({rule.project}/{rule.model}): no monitored traffic yet, freshness unknown"
        )
        return
    latest = _latest_alerts(session, rule, None)
    for environment in environments:
        seen = last_traffic.get(environment)
        if seen is None:
            tally.insufficient.append(
                f"rule {rule.name!r} ({rule.project}/{rule.model}): no monitored traffic in {environment} "
                "yet, freshness unknown"
            )
            continue
        tally.windows += 1
        age_hours = (now - seen).total_seconds() / 3600
        stale = age_hours > rule.max_age_hours
        key = (environment, "", "")
        previous = latest.get(key)
        active = previous if previous is not None and previous.state in ACTIVE_ALERT_STATES else None
        if active is not None:
            if seen > active.window_start:
                _auto_resolve(
                    session, rule, active, f"fresh: monitored traffic up to {seen.isoformat()}", now, tally
                )
                active = None
            else:
                active.last_statistic = age_hours
                tally.updated.add(active.id)
        if active is None and stale:
            point = _Window(environment, "", "", seen, seen, age_hours, True)
            _open(
                session,
                rule,
                key,
                first=point,
                last=point,
                breaching_windows=1,
                metric=FRESHNESS_ALERT_METRIC,
                operator=">",
                threshold=rule.max_age_hours,
                now=now,
                tally=tally,
            )
    session.flush()


def _load_rules(
    session_factory: sessionmaker[Session], project: str | None, model: str | None
) -> list[_Rule]:
    with session_scope(session_factory) as session:
        query = (
            select(AlertRule, Project.slug)
            .join(Project, Project.id == AlertRule.project_id)
            .where(AlertRule.enabled.is_(True), Project.archived.is_(False))
            .order_by(Project.slug, AlertRule.model, AlertRule.id)
        )
        if project is not None:
            query = query.where(Project.slug == project)
        if model is not None:
            query = query.where(AlertRule.model == model)
        return [
            _Rule(id=rule.id, project_id=rule.project_id, project=slug, **_stored(rule, _DETACHED_FIELDS))
            for rule, slug in session.execute(query).all()
        ]


def evaluate_alerts(
    session_factory: sessionmaker[Session],
    store: ParquetStore,
    *,
    project: str | None = None,
    model: str | None = None,
    now: datetime | None = None,
    delivery: DeliveryOptions | None = None,
    deliver_now: bool = True,
    lookback: timedelta = DEFAULT_LOOKBACK,
    sleep: Callable[[float], None] = time.sleep,
) -> EvaluationSummary:
    """Evaluate every enabled rule (of ``project``/``model``) against the ``metrics`` dataset.

    Per model: read its metrics (outside any transaction), then in one write
    transaction, serialised per project, open and resolve alerts, write their
    audit entries and queue their notifications. After each commit the queued
    notifications are sent (unless ``deliver_now`` is false).

    Args:
        session_factory: Session factory of the metadata database.
        store: The Parquet store holding ``metrics``.
        project: Only this project's rules.
        model: Only this model's rules.
        now: Evaluation time (timezone-aware; default: the current time). Windows
            starting at or after it are ignored, and freshness is measured at it.
        delivery: Notification options (default ``DeliveryOptions()``: https only, no SMTP).
        deliver_now: Send the notifications now; when false they stay ``pending``
            for :func:`jobs.notify.deliver_pending`.
        lookback: How far back threshold rules read windows.
        sleep: Waits between notification attempts.

    Returns:
        What was evaluated, opened, resolved and delivered.

    Raises:
        ValueError: for a naive ``now`` or a lookback shorter than a day.
    """
    now = utcnow() if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    now = now.astimezone(UTC)
    if lookback < timedelta(days=1):
        raise ValueError("lookback must be at least one day")
    rules = _load_rules(session_factory, project, model)
    groups: dict[tuple[str, str], list[_Rule]] = defaultdict(list)
    for rule in rules:
        groups[(rule.project, rule.model)].append(rule)
    tally = _Tally()
    outcomes: list[DeliveryOutcome] = []
    for (slug, model_name), group in groups.items():
        threshold_rules = [r for r in group if r.kind == "threshold"]
        freshness_rules = [r for r in group if r.kind == "freshness"]
        try:
            rows = (
                _read_threshold_rows(
                    store, slug, model_name, [r.metric or "" for r in threshold_rules], now, lookback
                )
                if threshold_rules
                else []
            )
            last_traffic = _read_last_traffic(store, slug, model_name, now) if freshness_rules else {}
        except (StoreError, pa.ArrowException, OSError) as error:
            tally.errors.append(f"{slug}/{model_name}: cannot read metrics: {error}")
            continue
        first_delivery = len(tally.to_deliver)
        with session_scope(session_factory, write=True) as session:
            serialize(session, f"alerts:{slug}")
            still_enabled = set(
                session.scalars(
                    select(AlertRule.id).where(
                        AlertRule.id.in_([r.id for r in group]), AlertRule.enabled.is_(True)
                    )
                )
            )
            for rule in group:
                if rule.id not in still_enabled:
                    continue
                if rule.kind == "threshold":
                    _evaluate_threshold(session, rule, rows, now, lookback, tally)
                else:
                    _evaluate_freshness(session, rule, last_traffic, now, tally)
        if deliver_now and len(tally.to_deliver) > first_delivery:
            outcomes += deliver(
                session_factory, tally.to_deliver[first_delivery:], delivery or DeliveryOptions(), sleep=sleep
            )
    return EvaluationSummary(
        evaluated_at=now,
        rules_evaluated=len(rules),
        windows_examined=tally.windows,
        opened=tuple(tally.opened),
        resolved=tuple(tally.resolved),
        updated=tuple(sorted(tally.updated - set(tally.opened))),
        insufficient_data=tuple(tally.insufficient),
        errors=tuple(tally.errors),
        deliveries=tuple(outcomes),
    )


# --------------------------------------------------------------------------- the demo workspace

DEMO_RULE_AUTHOR = "monitoring"
"""The seeded Monitoring Team account the demo rules are created as (``jobs.seed``)."""

DEMO_RULES = (
    RuleSpec(name="Feature drift", model="", metric="drift", operator="drifted", consecutive_windows=2),
    RuleSpec(
        name="Missing values", model="", metric="missing_share", operator="drifted", severity="critical"
    ),
    RuleSpec(name="Latency p95", model="", metric="latency_p95", column="latency_ms", operator="drifted"),
    RuleSpec(name="Traffic freshness", model="", kind="freshness", max_age_hours=48, severity="critical"),
)
"""The rules the demo installs on every demo model (``model`` filled in per model)."""


def install_demo_alerts(workspace: Any, context: Any) -> EvaluationSummary | None:
    """``after_monitor`` hook of :mod:`jobs.demo`: the demo's alert rules, then their first evaluation.

    For every demo model, creates the :data:`DEMO_RULES` it does not have yet (by
    name, so a rerun adds nothing), as the seeded Monitoring Team account, then
    evaluates every rule over the whole demo period at the demo's ``now``: the
    injected incidents open alerts, and those that ended resolve. Nothing is sent
    (the demo configures no notification channel).

    Args:
        workspace: The :class:`jobs.demo.DemoWorkspace` built so far (its ``scenario``).
        context: The :class:`jobs.demo.DemoContext` (``session_factory``, ``store``, ``now``).

    Returns:
        The evaluation, or ``None`` when there is nothing to do (no scenario, or no
        active Monitoring Team account to author the rules).
    """
    from jobs.users import get_user

    scenario = getattr(workspace, "scenario", None)
    if scenario is None:
        return None
    with session_scope(context.session_factory, write=True) as session:
        user = get_user(session, DEMO_RULE_AUTHOR)
        author = actor_for(session, user.id) if user is not None else None
        if author is None:
            return None
        for demo_model in scenario.models:
            if not has_permission(author, Permission.MANAGE_ALERT_RULES, demo_model.project):
                continue
            existing = {rule.name for rule in list_rules(session, demo_model.project, model=demo_model.model)}
            for template in DEMO_RULES:
                name = f"{template.name} ({demo_model.model})"
                if name not in existing:
                    create_rule(
                        session,
                        author,
                        demo_model.project,
                        replace(template, name=name, model=demo_model.model),
                    )
    now = context.now if context.now.tzinfo is not None else context.now.replace(tzinfo=UTC)
    first_day = datetime.combine(scenario.start_date, datetime.min.time(), UTC)
    return evaluate_alerts(
        context.session_factory,
        context.store,
        now=now,
        deliver_now=False,
        lookback=max(DEFAULT_LOOKBACK, now - first_day + timedelta(days=1)),
    )


# --------------------------------------------------------------------------- command line


def _open_resources(settings: Any) -> tuple[Any, sessionmaker[Session], ParquetStore]:
    from analytics.store import ParquetStore as Store
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine), Store(settings.store_config())


def print_summary(summary: EvaluationSummary, out: Any = None) -> None:
    """Print an evaluation summary for people (the CLI and the scheduler log)."""
    out = out or sys.stdout
    print(
        f"alerts evaluated at {summary.evaluated_at.isoformat()}: {summary.rules_evaluated} rule(s), "
        f"{summary.windows_examined} window(s); opened {list(summary.opened)}, "
        f"resolved {list(summary.resolved)}, ongoing {list(summary.updated)}",
        file=out,
    )
    for line in summary.insufficient_data:
        print(f"  insufficient data: {line}", file=out)
    for line in summary.errors:
        print(f"  error: {line}", file=out)
    for outcome in summary.deliveries:
        detail = f" ({outcome.error})" if outcome.error else ""
        print(
            f"  notify alert #{outcome.alert_id} {outcome.event} via {outcome.channel}: {outcome.status} "
            f"after {outcome.attempts} attempt(s){detail}",
            file=out,
        )


def _cli_evaluate(args: argparse.Namespace, settings: Any) -> int:
    engine, factory, store = _open_resources(settings)
    try:
        summary = evaluate_alerts(
            factory,
            store,
            project=args.project,
            model=args.model,
            delivery=DeliveryOptions.from_environ(),
        )
    finally:
        store.close()
        engine.dispose()
    print_summary(summary)
    return 1 if summary.errors else 0


def _cli_deliver(args: argparse.Namespace, settings: Any) -> int:
    from jobs.notify import deliver_pending

    engine, factory, store = _open_resources(settings)
    try:
        outcomes = deliver_pending(factory, DeliveryOptions.from_environ(), project=args.project)
    finally:
        store.close()
        engine.dispose()
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes)} delivery(ies) attempted, {len(failed)} failed")
    for outcome in failed:
        print(f"  alert #{outcome.alert_id} {outcome.event} via {outcome.channel}: {outcome.error}")
    return 1 if failed else 0


def _cli_actor(session: Session, username: str) -> Actor:
    from jobs.users import get_user

    user = get_user(session, username)
    actor = actor_for(session, user.id) if user else None
    if actor is None:
        raise InvalidInput(f"--actor {username!r} is not an active user")
    return actor


def _cli_list(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            actor = _cli_actor(session, args.actor)
            rows = list_alerts(
                session, actor, project=args.project, states=args.state or None, limit=args.limit
            )
            for alert, slug in rows:
                where = "/".join(
                    part for part in (alert.environment, alert.version, alert.column_name) if part
                )
                print(
                    f"#{alert.id}  {alert.state:<12} {alert.severity:<8} {slug}/{alert.model} [{where}] "
                    f"{alert.metric} {alert.operator} {alert.threshold}  "
                    f"since {alert.window_start.isoformat()}"
                )
    finally:
        engine.dispose()
    return 0


def _cli_ack(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            actor = _cli_actor(session, args.actor)
            alert = acknowledge(session, actor, args.alert_id, args.comment)
            print(f"alert #{alert.id} acknowledged by {actor.username}")
    finally:
        engine.dispose()
    return 0


def register_cli(subparsers: Any) -> None:
    """``alerts evaluate|deliver|list|ack``: the alerting commands of ``python -m jobs``."""
    parser = subparsers.add_parser("alerts", help="evaluate alert rules, send notifications, acknowledge")
    actions = parser.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    evaluate = actions.add_parser(
        "evaluate", help="evaluate the alert rules now (exit 1 if metrics are unreadable)"
    )
    evaluate.add_argument("--project")
    evaluate.add_argument("--model")
    evaluate.set_defaults(func=_cli_evaluate)
    deliver_parser = actions.add_parser("deliver", help="retry pending or failed notifications")
    deliver_parser.add_argument("--project")
    deliver_parser.set_defaults(func=_cli_deliver)
    listing = actions.add_parser("list", help="list the alerts a user may see, newest first")
    listing.add_argument("--actor", required=True, help="username whose view to list (needs view_monitoring)")
    listing.add_argument("--project")
    listing.add_argument("--state", action="append", choices=("open", "acknowledged", "resolved"))
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=_cli_list)
    ack = actions.add_parser("ack", help="acknowledge an open alert")
    ack.add_argument("alert_id", type=int)
    ack.add_argument("--actor", required=True, help="username of who acknowledges (needs ack_alerts)")
    ack.add_argument("--comment", default="")
    ack.set_defaults(func=_cli_ack)
