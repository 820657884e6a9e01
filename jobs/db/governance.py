"""Governance tables: promotion requests, sponsor approvals and queued deployments.

They live on the same declarative ``Base`` as :mod:`jobs.db.models` (which imports
this module at its end, so Alembic and every session see them) and are created by
the ``0002_governance`` migration.

Invariants the database enforces, whatever the application does:

* at most one *pending* request per (project, model, environment) — a partial
  unique index (``WHERE status = 'pending'``) on both SQLite and PostgreSQL;
* one approval per person per request — ``UNIQUE (request_id, approver_id)``;
* at most one deployment per request — ``UNIQUE (request_id)`` on ``deployments``;
* a request's status is one of :data:`PROMOTION_STATUSES` (check constraint).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobs.db.models import Base, Project, User, UTCDateTime, utcnow

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
SUPERSEDED = "superseded"
PROMOTION_STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, SUPERSEDED)

DEPLOYMENT_QUEUED = "queued"
DEFAULT_DEPLOYMENT_STRATEGY = "direct"

_STATUS_LIST = ", ".join(f"'{status}'" for status in PROMOTION_STATUSES)
_PENDING_ONLY = text(f"status = '{PENDING}'")


class PromotionRequest(Base):
    """A request to promote one exact model version into an environment.

    The request binds the version number, the MLflow run that produced it and the
    digest of its artifact files: approvals must name the same three values, so a
    retrained model needs a new request.

    ``version_counter`` grows by one on every change of the row; writers update it
    with a compare-and-set (``WHERE status = 'pending' AND version_counter = :seen``)
    so two decisions can never both act on the same pending state.
    """

    __tablename__ = "promotion_requests"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
        CheckConstraint("required_approvals >= 0", name="required_approvals"),
        Index(
            "uq_promotion_requests_one_pending",
            "project_id",
            "model",
            "environment",
            unique=True,
            sqlite_where=_PENDING_ONLY,
            postgresql_where=_PENDING_ONLY,
        ),
        Index("ix_promotion_requests_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    environment: Mapped[str] = mapped_column(String(16), nullable=False)
    justification: Mapped[str] = mapped_column(Text, nullable=False)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    # Username from the registry's ``mms.created_by`` tag: the creator may not approve.
    version_creator: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=PENDING)
    # The environment's policy when the request was made; a stricter policy set later also applies.
    required_approvals: Mapped[int] = mapped_column(Integer, nullable=False)
    version_counter: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decision_comment: Mapped[str] = mapped_column(Text, nullable=False, default="")

    # Joined: the slug is needed wherever a request is authorised or shown, also after the session closed.
    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined", innerjoin=True)
    approvals: Mapped[list[PromotionApproval]] = relationship(
        back_populates="request",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="PromotionApproval.id",
    )
    deployment: Mapped[Deployment | None] = relationship(back_populates="request", lazy="selectin")

    @property
    def project_slug(self) -> str:
        """Slug of the request's project."""
        return self.project.slug


class PromotionApproval(Base):
    """One sponsor's approval of a request, bound to the exact version it approves."""

    __tablename__ = "promotion_approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("promotion_requests.id", ondelete="CASCADE"), nullable=False
    )
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    request: Mapped[PromotionRequest] = relationship(back_populates="approvals")
    approver: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Deployment(Base):
    """A deployment queued when a request reaches its quorum; the deployment job picks it up.

    ``request_id`` is unique: a request can queue one deployment only, however many
    approvals race to complete it.
    """

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("request_id"),
        Index("ix_deployments_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("promotion_requests.id"), nullable=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    environment: Mapped[str] = mapped_column(String(16), nullable=False)
    strategy: Mapped[str] = mapped_column(String(32), nullable=False, default=DEFAULT_DEPLOYMENT_STRATEGY)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=DEPLOYMENT_QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # The rollout state machine of jobs.deploy (migration 0005); see docs/DEPLOYMENTS.md.
    # Canary steps in percent ("10,25,50,100") and bake seconds, fixed when the rollout starts.
    steps: Mapped[str | None] = mapped_column(String(64))
    bake_seconds: Mapped[int | None] = mapped_column(Integer)
    # What a job restarted after a crash does with a rollout in progress: "resume" or "rollback".
    on_restart: Mapped[str | None] = mapped_column(String(16))
    current_step: Mapped[int | None] = mapped_column(Integer)
    # Canary weight in basis points as last written to the registry (0 when no split).
    canary_weight: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Version serving the environment when the rollout started: the rollback target.
    previous_version: Mapped[str | None] = mapped_column(String(32))
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The job process that owns the rollout until lease_expires_at (it renews the lease while it runs).
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A manual action waiting for the job (promote, pause, resume, abort, rollback), who asked and why.
    requested_action: Mapped[str | None] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(64))
    requested_reason: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)

    request: Mapped[PromotionRequest] = relationship(back_populates="deployment")
    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)
