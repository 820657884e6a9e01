"""Shared helpers of the jobs integration tests (both database backends)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jobs.permissions import Actor
from jobs.users import actor_for, create_user

ADMIN_PASSWORD = "admin-password-123"


@pytest.fixture
def session(migrated_session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session on a migrated database; the test commits what it needs to."""
    with migrated_session_factory() as opened:
        yield opened


@pytest.fixture
def admin(session: Session) -> Actor:
    """The bootstrapped first user, a global admin, committed."""
    user = create_user(session, None, "root-admin", ADMIN_PASSWORD, is_admin=True)
    session.commit()
    actor = actor_for(session, user.id)
    assert actor is not None
    return actor


def drop_audit_triggers(session: Session) -> None:
    """Remove the append-only triggers so a test can tamper with the log like an attacker with DDL rights."""
    if session.get_bind().dialect.name == "sqlite":
        statements = ["DROP TRIGGER audit_log_refuse_update", "DROP TRIGGER audit_log_refuse_delete"]
    else:
        statements = [
            "DROP TRIGGER audit_log_refuse_update_delete ON audit_log",
            "DROP TRIGGER audit_log_refuse_truncate ON audit_log",
        ]
    for statement in statements:
        session.execute(text(statement))
    session.commit()
