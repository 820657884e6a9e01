"""Tables of the REST API and the GitHub integration: API tokens, webhook configuration and workflow runs.

They live on :class:`jobs.db.models.Base` (``jobs/db/models.py`` imports this module
at its end, so Alembic and every session see them) and are created by the
``0004_api`` migration. The behaviour is in :mod:`jobs.tokens` and :mod:`jobs.github`.

What the database itself guarantees:

* a token's secret is never stored: ``token_hash`` is the SHA-256 of the token
  (unique), ``prefix`` the first characters shown to people so they can tell
  their tokens apart (unique as well);
* a token's ``kind`` is ``personal`` or ``service`` (check constraint);
* a repository is configured once (``UNIQUE (repository)``); its webhook secret is
  stored Fernet-encrypted (``secret_encrypted``), never in clear;
* a GitHub delivery id is recorded once (``UNIQUE (delivery_id)``): the replay check;
* one row per GitHub workflow run (``UNIQUE (repository, github_run_id)``), updated as
  later events for the same run arrive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobs.db.models import Base, Project, User, UTCDateTime, utcnow

TOKEN_KINDS = ("personal", "service")
MAX_REPOSITORY_LENGTH = 201  # owner (100) + "/" + name (100)


class ApiToken(Base):
    """A bearer token of the REST API, owned by a person or a service account.

    ``scope`` is the JSON form of :class:`jobs.tokens.TokenScope`
    (``{"admin": bool, "projects": {slug: [role, ...]}}``): the token acts with the
    intersection of this scope and the roles its owner holds at the time of use.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("kind IN ('personal', 'service')", name="kind"),
        Index("ix_api_tokens_owner_id", "owner_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined", innerjoin=True)


class GithubIntegration(Base):
    """A GitHub repository whose webhooks the studio accepts, and the project its CI belongs to."""

    __tablename__ = "github_integration"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    repository: Mapped[str] = mapped_column(String(MAX_REPOSITORY_LENGTH), unique=True, nullable=False)
    # Fernet token (key derived from the studio's secret key); never leaves jobs.github in clear.
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)


class GithubDelivery(Base):
    """One verified webhook delivery; its id is refused if it comes again (replay window)."""

    __tablename__ = "github_deliveries"
    __table_args__ = (Index("ix_github_deliveries_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    event: Mapped[str] = mapped_column(String(64), nullable=False)
    repository: Mapped[str] = mapped_column(String(MAX_REPOSITORY_LENGTH), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    # What the event said, in a few fields (ref, sha, pull request number): never the whole payload.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class WorkflowRun(Base):
    """A GitHub Actions workflow run, as its latest ``workflow_run`` event described it.

    ``model_versions`` lists the registry versions the run produced
    (``[{"model": ..., "version": ...}]``), matched by commit SHA when the run completed.
    """

    __tablename__ = "workflow_runs"
    __table_args__ = (
        UniqueConstraint("repository", "github_run_id"),
        Index("ix_workflow_runs_project_id_head_sha", "project_id", "head_sha"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    repository: Mapped[str] = mapped_column(String(MAX_REPOSITORY_LENGTH), nullable=False)
    github_run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    run_attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    workflow_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    event: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    head_sha: Mapped[str] = mapped_column(String(40), nullable=False)
    head_branch: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    conclusion: Mapped[str | None] = mapped_column(String(32))
    html_url: Mapped[str] = mapped_column(String(2048), nullable=False, default="")
    run_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    run_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    model_versions: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False, default=list)

    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)
