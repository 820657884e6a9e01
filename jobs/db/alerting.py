"""SQLAlchemy models of alerting: rules, alerts, notification channels, deliveries, scheduler leases.

They live on :class:`jobs.db.models.Base` (``jobs/db/models.py`` imports this module
at its end so Alembic and ``Base.metadata`` see them); the tables are created by the
``alerting`` Alembic revision. The behaviour is in :mod:`jobs.alerts`,
:mod:`jobs.notify` and :mod:`jobs.scheduler`.

Text columns that take part in a unique key (``environment``, ``version``,
``column_name`` of :class:`Alert`) are never NULL: both backends treat NULLs as
distinct in a unique constraint, which would let duplicates through. A freshness
alert, which is about a whole model, stores ``""`` as its version and column.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobs.db.models import Base, UTCDateTime, utcnow

RULE_KINDS = ("threshold", "freshness")
RULE_OPERATORS = (">", ">=", "<", "<=", "==", "drifted")
ALERT_SEVERITIES = ("info", "warning", "critical")
"""Least to most severe."""
ALERT_STATES = ("open", "acknowledged", "resolved")
ACTIVE_ALERT_STATES = ("open", "acknowledged")
CHANNEL_KINDS = ("webhook", "email")
DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed", "abandoned")


class AlertRule(Base):
    """When to raise an alert for one model of a project.

    A ``threshold`` rule compares ``metric`` rows of the ``metrics`` dataset (one
    column, or every column when ``column_name`` is NULL) with ``operator`` and
    ``threshold`` and fires after ``consecutive_windows`` breaching windows in a
    row. A ``freshness`` rule fires when the model's newest monitored traffic is
    older than ``max_age_hours``.
    """

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    # NULL: every environment the model has metrics for.
    environment: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="threshold")
    metric: Mapped[str | None] = mapped_column(String(64))
    # NULL: every column the metric is computed for (each column alerts on its own).
    column_name: Mapped[str | None] = mapped_column(String(128))
    operator: Mapped[str | None] = mapped_column(String(8))
    threshold: Mapped[float | None] = mapped_column(Double)
    consecutive_windows: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    max_age_hours: Mapped[float | None] = mapped_column(Double)
    severity: Mapped[str] = mapped_column(String(16), nullable=False, default="warning")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Alert(Base):
    """One incident raised by a rule for one series (environment, version, column).

    The incident is identified by the first window of its breaching streak
    (``window_start``), which stays the same while the streak grows, so the unique
    key ``(rule_id, environment, version, column_name, window_start)`` makes
    re-evaluating the same metrics a no-op. ``last_window_*`` follow the newest
    breaching window seen. For a freshness alert ``window_start`` is the end of the
    newest monitored window at the time the alert opened.

    ``state`` moves open -> acknowledged -> resolved (or open -> resolved).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint(
            "rule_id", "environment", "version", "column_name", "window_start", name="uq_alerts_dedup"
        ),
        Index("ix_alerts_project_id_state", "project_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    environment: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[str] = mapped_column(String(128), nullable=False)
    column_name: Mapped[str] = mapped_column(String(128), nullable=False)
    metric: Mapped[str] = mapped_column(String(64), nullable=False)
    operator: Mapped[str] = mapped_column(String(8), nullable=False)
    threshold: Mapped[float | None] = mapped_column(Double)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_window_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    statistic: Mapped[float | None] = mapped_column(Double)
    last_statistic: Mapped[float | None] = mapped_column(Double)
    breaching_windows: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledge_comment: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # NULL with a resolved state: resolved automatically by the evaluation.
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution: Mapped[str | None] = mapped_column(Text)

    rule: Mapped[AlertRule] = relationship(lazy="joined")
    deliveries: Mapped[list[AlertDelivery]] = relationship(
        back_populates="alert", cascade="all, delete-orphan", order_by="AlertDelivery.id"
    )


class NotificationChannel(Base):
    """Where a project's alerts are sent: a signed webhook or a list of e-mail recipients.

    The webhook secret signs the request body (HMAC-SHA256); it has to be stored
    readable because the signature is computed at send time.
    """

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str | None] = mapped_column(String(2048))
    secret: Mapped[str | None] = mapped_column(String(255))
    recipients: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    min_severity: Mapped[str] = mapped_column(String(16), nullable=False, default="info")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class AlertDelivery(Base):
    """The notification of one alert event (``opened`` or ``resolved``) to one channel.

    Created in the transaction that opens or resolves the alert, so a crash before
    sending leaves a ``pending`` row that the next delivery sweep picks up. ``status``:
    ``pending``, ``sending`` (claimed by a sender), ``delivered``, ``failed`` (retried
    by later sweeps) or ``abandoned`` (final: a permanent refusal, or out of attempts
    or time); ``attempts`` adds up every attempt, ``last_error`` keeps the last error.
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "channel_id", "event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), nullable=False
    )
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    alert: Mapped[Alert] = relationship(back_populates="deliveries")
    channel: Mapped[NotificationChannel] = relationship(lazy="joined")


class SchedulerLease(Base):
    """A named lease: held by ``owner`` until ``expires_at`` unless renewed.

    Taken and renewed by compare-and-set in :mod:`jobs.scheduler`, so only one
    scheduler process (and only one run of a job) acts at a time.
    """

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
