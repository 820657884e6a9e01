"""Governance: promotion requests, sponsor approvals and queued deployments.

Written against ``jobs.db.governance`` and checked with Alembic's model comparison.
Timestamps use the plain ``DateTime(timezone=True)`` that ``models.UTCDateTime``
wraps (migrations never import the models). The "one pending request per
project/model/environment" rule is a partial unique index, which SQLite and
PostgreSQL both support.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING_ONLY = sa.text("status = 'pending'")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``promotion_requests``, ``promotion_approvals`` and ``deployments``."""
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_digest", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("version_creator", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("version_counter", sa.Integer(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("decided_at", _timestamp(), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired', 'superseded')",
            name=op.f("ck_promotion_requests_status"),
        ),
        sa.CheckConstraint("required_approvals >= 0", name=op.f("ck_promotion_requests_required_approvals")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_promotion_requests_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"], ["users.id"], name=op.f("fk_promotion_requests_requested_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_promotion_requests_decided_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_requests")),
    )
    op.create_index(
        "uq_promotion_requests_one_pending",
        "promotion_requests",
        ["project_id", "model", "environment"],
        unique=True,
        sqlite_where=_PENDING_ONLY,
        postgresql_where=_PENDING_ONLY,
    )
    op.create_index("ix_promotion_requests_status_expires_at", "promotion_requests", ["status", "expires_at"])
    op.create_table(
        "promotion_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name=op.f("fk_promotion_approvals_request_id_promotion_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["approver_id"], ["users.id"], name=op.f("fk_promotion_approvals_approver_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_approvals")),
        sa.UniqueConstraint(
            "request_id", "approver_id", name=op.f("uq_promotion_approvals_request_id_approver_id")
        ),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_digest", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name=op.f("fk_deployments_request_id_promotion_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_deployments_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("request_id", name=op.f("uq_deployments_request_id")),
    )
    op.create_index("ix_deployments_status_created_at", "deployments", ["status", "created_at"])


def downgrade() -> None:
    """Drop the governance tables (their history goes with them)."""
    op.drop_index("ix_deployments_status_created_at", table_name="deployments")
    op.drop_table("deployments")
    op.drop_table("promotion_approvals")
    op.drop_index("ix_promotion_requests_status_expires_at", table_name="promotion_requests")
    op.drop_index("uq_promotion_requests_one_pending", table_name="promotion_requests")
    op.drop_table("promotion_requests")
