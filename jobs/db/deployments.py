"""History of deployment rollouts: one ``deployment_events`` row per transition or analysis.

The rollout state itself lives on :class:`jobs.db.governance.Deployment` (columns
added by migration ``0005_deployment_runs``); this table is its append-only
history, read by the CI/CD page (:func:`jobs.deploy.deployment_view`). The
module is imported at the end of :mod:`jobs.db.models`, so Alembic and every
session see the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from jobs.db.models import Base, UTCDateTime, utcnow


class DeploymentEvent(Base):
    """One step of a deployment's life: started, step, analysis, paused, rolled back, ...

    ``details`` holds the event's JSON payload (weights, analysis results, reason).
    """

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
