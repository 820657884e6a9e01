"""Deployment rollouts: state-machine columns on ``deployments`` and the ``deployment_events`` history.

Written against :class:`jobs.db.governance.Deployment` and
:class:`jobs.db.deployments.DeploymentEvent` (migrations never import the models).
Every new ``deployments`` column is nullable or has a server default, so queued
rows of revision 0004 stay valid; SQLite adds them with ``ALTER TABLE ... ADD
COLUMN``, so no table copy is needed (the batch mode is only used to drop them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_COLUMNS = (
    ("steps", lambda: sa.String(length=64)),
    ("bake_seconds", sa.Integer),
    ("on_restart", lambda: sa.String(length=16)),
    ("current_step", sa.Integer),
    ("previous_version", lambda: sa.String(length=32)),
    ("step_started_at", lambda: sa.DateTime(timezone=True)),
    ("started_at", lambda: sa.DateTime(timezone=True)),
    ("finished_at", lambda: sa.DateTime(timezone=True)),
    ("lease_owner", lambda: sa.String(length=128)),
    ("lease_expires_at", lambda: sa.DateTime(timezone=True)),
    ("requested_action", lambda: sa.String(length=16)),
    ("requested_by", lambda: sa.String(length=64)),
    ("requested_reason", sa.Text),
    ("reason", sa.Text),
)


def upgrade() -> None:
    """Add the rollout columns to ``deployments`` and create ``deployment_events``."""
    for name, column_type in _NEW_COLUMNS:
        op.add_column("deployments", sa.Column(name, column_type(), nullable=True))
    op.add_column("deployments", sa.Column("canary_weight", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_events_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_events")),
    )
    op.create_index(
        "ix_deployment_events_deployment_id_id", "deployment_events", ["deployment_id", "id"], unique=False
    )


def downgrade() -> None:
    """Drop ``deployment_events`` and the rollout columns."""
    op.drop_index("ix_deployment_events_deployment_id_id", table_name="deployment_events")
    op.drop_table("deployment_events")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("canary_weight")
        for name, _column_type in reversed(_NEW_COLUMNS):
            batch.drop_column(name)
