"""Demo seeding on SQLite and PostgreSQL: accounts, roles, idempotence."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs import audit
from jobs.db import session_scope
from jobs.db.models import AuditEntry, Membership, Project, User
from jobs.permissions import Permission, Role, has_permission
from jobs.projects import list_projects
from jobs.seed import DEMO_ACCOUNTS, seed_demo_accounts
from jobs.users import actor_for, authenticate, create_user

pytestmark = pytest.mark.integration

EXPECTED_USERNAMES = ["admin", "mlengineer", "datateam", "production", "monitoring", "sponsor1", "sponsor2"]


def _counts(session: Session) -> tuple[int, ...]:
    return tuple(
        session.scalar(select(func.count()).select_from(model))
        for model in (User, Project, Membership, AuditEntry)
    )


def test_seed_creates_the_demo_accounts_once(migrated_session_factory: sessionmaker[Session]) -> None:
    with session_scope(migrated_session_factory, write=True) as session:
        accounts = seed_demo_accounts(session)
    assert [account.username for account in accounts] == EXPECTED_USERNAMES
    assert all(account.password == f"{account.username}-demo-pass" for account in accounts)

    with session_scope(migrated_session_factory) as session:
        # 7 users, 2 projects, 6 members x 2 projects, and an intact audit chain of it all.
        assert _counts(session) == (7, 2, 12, 1 + 2 + 6 + 12)
        assert audit.verify(session).ok
        before = _counts(session)

    with session_scope(migrated_session_factory, write=True) as session:
        assert seed_demo_accounts(session) == []
    with session_scope(migrated_session_factory) as session:
        assert _counts(session) == before


def test_demo_accounts_sign_in_with_their_roles(migrated_session_factory: sessionmaker[Session]) -> None:
    with session_scope(migrated_session_factory, write=True) as session:
        seed_demo_accounts(session)

    with session_scope(migrated_session_factory) as session:
        actors = {}
        for account in DEMO_ACCOUNTS:
            user = authenticate(session, account.username, account.password)
            assert user is not None, account.username
            actors[account.username] = actor_for(session, user.id)

        assert actors["admin"].is_admin
        for name in ("sponsor1", "sponsor2"):
            assert actors[name].roles == {
                "credit-risk": frozenset({Role.MODEL_SPONSOR}),
                "demand-forecast": frozenset({Role.MODEL_SPONSOR}),
            }
            assert has_permission(actors[name], Permission.APPROVE_PROMOTION, "credit-risk")
            assert not has_permission(actors[name], Permission.DEPLOY, "credit-risk")
        assert has_permission(actors["production"], Permission.DEPLOY, "demand-forecast")
        assert has_permission(actors["mlengineer"], Permission.TRAIN_MODELS, "credit-risk")
        assert has_permission(actors["monitoring"], Permission.ACK_ALERTS, "credit-risk")
        assert has_permission(actors["datateam"], Permission.EDIT_PIPELINE, "demand-forecast")
        for actor in actors.values():
            assert [p.slug for p in list_projects(session, actor)] == ["credit-risk", "demand-forecast"]


def test_seed_leaves_a_database_with_users_alone(migrated_session_factory: sessionmaker[Session]) -> None:
    with session_scope(migrated_session_factory, write=True) as session:
        create_user(session, None, "owner", "owner-password", is_admin=True)
    with session_scope(migrated_session_factory, write=True) as session:
        assert seed_demo_accounts(session) == []
    with session_scope(migrated_session_factory) as session:
        assert session.scalars(select(User.username)).all() == ["owner"]
        assert _counts(session)[1] == 0
