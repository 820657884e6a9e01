"""User accounts on SQLite and PostgreSQL: creation, sign-in, roles, audit trail."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.db.models import AuditEntry, Membership, User
from jobs.permissions import Actor, Forbidden, Permission, Role, has_permission
from jobs.projects import create_project
from jobs.users import (
    Conflict,
    InvalidInput,
    actor_for,
    authenticate,
    create_user,
    grant_role,
    record_login,
    revoke_role,
    set_user_active,
    verify_password,
)
from tests.integration.jobs.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.integration


def _actions(session: Session) -> list[tuple[str, str, str]]:
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
    return [(entry.actor, entry.action, entry.target) for entry in entries]


def _user_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User))


def test_bootstrap_creates_the_first_user_without_an_actor(session: Session) -> None:
    user = create_user(session, None, "first.admin", "a-long-password", display_name="First", is_admin=True)
    session.commit()

    assert (user.username, user.display_name, user.is_admin, user.is_active) == (
        "first.admin",
        "First",
        True,
        True,
    )
    assert user.password_hash.startswith("scrypt$16384$8$1$")
    assert verify_password("a-long-password", user.password_hash)
    assert _actions(session) == [("first.admin", "user.create", "user:first.admin")]
    assert json.loads(audit.head(session).details) == {"bootstrap": True, "is_admin": True}


def test_without_an_actor_only_the_first_user_can_be_created(session: Session, admin: Actor) -> None:
    with pytest.raises(Forbidden, match="admin_users"):
        create_user(session, None, "second", "a-long-password")
    session.rollback()
    assert _user_count(session) == 1


def test_admin_creates_users_and_the_audit_names_the_admin(session: Session, admin: Actor) -> None:
    user = create_user(session, admin, "maya", "maya-password-1")
    session.commit()
    assert user.display_name == "maya"
    assert _actions(session)[-1] == ("root-admin", "user.create", "user:maya")


@pytest.mark.parametrize("role", [role for role in Role if role is not Role.ADMIN])
def test_creating_users_needs_admin_users(session: Session, admin: Actor, role: Role) -> None:
    project = "credit-risk"
    create_project(session, admin, project, "Credit risk")
    someone = create_user(session, admin, "someone", "someone-password")
    grant_role(session, admin, someone, project, role)
    session.commit()
    actor = actor_for(session, someone.id)

    with pytest.raises(Forbidden, match="someone may not admin_users"):
        create_user(session, actor, "intruder", "intruder-password")
    session.rollback()
    assert _user_count(session) == 2


def test_bad_usernames_and_passwords_are_refused_and_nothing_is_written(
    session: Session, admin: Actor
) -> None:
    # The full list of accepted and refused names is in tests/unit/jobs/test_users.py.
    for username in ("../x", "<img src=x>", "ab", "name\n"):
        with pytest.raises(InvalidInput, match="username must be 3 to 64 characters"):
            create_user(session, admin, username, "a-long-password")
    with pytest.raises(InvalidInput, match="at least 10 characters"):
        create_user(session, admin, "newbie", "123456789")
    session.commit()
    assert _user_count(session) == 1
    assert [action for _actor, action, _target in _actions(session)] == ["user.create"]


def test_duplicate_usernames_are_a_conflict(session: Session, admin: Actor) -> None:
    create_user(session, admin, "maya", "maya-password-1")
    session.commit()
    with pytest.raises(Conflict, match="already taken"):
        create_user(session, admin, "maya", "other-password")


def test_authenticate_accepts_the_right_password_and_stamps_the_login(session: Session, admin: Actor) -> None:
    before = datetime.now(UTC)
    user = authenticate(session, "root-admin", ADMIN_PASSWORD)
    session.commit()
    assert user is not None and user.username == "root-admin"
    session.expire_all()
    stored = session.scalars(select(User).where(User.username == "root-admin")).one()
    assert stored.last_login_at is not None and stored.last_login_at.tzinfo is not None
    assert stored.last_login_at >= before


def test_authenticate_refuses_wrong_passwords_and_unknown_users(session: Session, admin: Actor) -> None:
    assert authenticate(session, "root-admin", "not-the-password") is None
    assert authenticate(session, "root-admin", ADMIN_PASSWORD.upper()) is None
    assert authenticate(session, "nobody", ADMIN_PASSWORD) is None
    assert authenticate(session, "root-admin", "x" * 5000) is None
    session.commit()
    assert session.scalars(select(User.last_login_at)).one() is None


def test_authenticate_costs_a_hash_even_for_unknown_users(session: Session, admin: Actor) -> None:
    def fastest_of_three(username: str) -> float:
        durations = []
        for _ in range(3):
            started = time.perf_counter()
            authenticate(session, username, "wrong-password")
            durations.append(time.perf_counter() - started)
        return min(durations)

    known, unknown = fastest_of_three("root-admin"), fastest_of_three("nobody-at-all")
    # Without the decoy hash an unknown user returns in well under a millisecond, ~50x faster.
    assert unknown > known * 0.3


def test_inactive_users_cannot_sign_in_and_get_no_actor(session: Session, admin: Actor) -> None:
    maya = create_user(session, admin, "maya", "maya-password-1")
    set_user_active(session, admin, "maya", False)
    session.commit()

    assert authenticate(session, "maya", "maya-password-1") is None
    assert actor_for(session, maya.id) is None
    assert _actions(session)[-1] == ("root-admin", "user.deactivate", "user:maya")

    set_user_active(session, admin, "maya", True)
    assert authenticate(session, "maya", "maya-password-1") is not None


def test_admins_cannot_deactivate_themselves(session: Session, admin: Actor) -> None:
    with pytest.raises(InvalidInput, match="your own account"):
        set_user_active(session, admin, "root-admin", False)


def test_record_login_audits_success_and_failure(session: Session, admin: Actor) -> None:
    record_login(session, "root-admin", True, "10.0.0.1")
    record_login(session, "nobody" * 20, False, None)
    session.commit()
    entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))[-2:]
    assert [(e.actor, e.action, json.loads(e.details)) for e in entries] == [
        ("root-admin", "auth.login", {"ip": "10.0.0.1"}),
        (("nobody" * 20)[:64], "auth.login_failed", {"ip": None}),
    ]
    assert audit.verify(session).ok


def test_actor_for_collects_roles_per_project(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    create_project(session, admin, "demand-forecast", "Demand forecast")
    maya = create_user(session, admin, "maya", "maya-password-1")
    grant_role(session, admin, maya, "credit-risk", Role.ML_ENGINEER)
    grant_role(session, admin, "maya", "credit-risk", "data_team")
    grant_role(session, admin, maya, "demand-forecast", Role.MODEL_SPONSOR)
    session.commit()

    actor = actor_for(session, maya.id)
    assert actor == Actor(
        user_id=maya.id,
        username="maya",
        is_admin=False,
        roles={
            "credit-risk": frozenset({Role.ML_ENGINEER, Role.DATA_TEAM}),
            "demand-forecast": frozenset({Role.MODEL_SPONSOR}),
        },
    )
    assert has_permission(actor, Permission.TRAIN_MODELS, "credit-risk")
    assert not has_permission(actor, Permission.TRAIN_MODELS, "demand-forecast")
    assert actor_for(session, 999_999) is None
    assert actor_for(session, admin.user_id).is_admin


def test_unknown_role_names_in_the_database_grant_nothing(session: Session, admin: Actor) -> None:
    project = create_project(session, admin, "credit-risk", "Credit risk")
    maya = create_user(session, admin, "maya", "maya-password-1")
    session.add(Membership(user_id=maya.id, project_id=project.id, role="superuser"))
    session.commit()
    assert actor_for(session, maya.id).roles == {}


def test_grant_and_revoke_are_audited_and_idempotent(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    maya = create_user(session, admin, "maya", "maya-password-1")
    first = grant_role(session, admin, maya, "credit-risk", Role.ML_ENGINEER)
    again = grant_role(session, admin, maya, "credit-risk", Role.ML_ENGINEER)
    session.commit()
    assert first.id == again.id
    grants = [entry for entry in _actions(session) if entry[1] == "user.role_grant"]
    assert grants == [("root-admin", "user.role_grant", "user:maya")]

    assert revoke_role(session, admin, "maya", "credit-risk", Role.ML_ENGINEER) is True
    assert revoke_role(session, admin, "maya", "credit-risk", Role.ML_ENGINEER) is False
    session.commit()
    assert actor_for(session, maya.id).roles == {}
    assert _actions(session)[-1] == ("root-admin", "user.role_revoke", "user:maya")
    assert audit.verify(session).ok


def test_granting_roles_needs_manage_members(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    maya = create_user(session, admin, "maya", "maya-password-1")
    grant_role(session, admin, maya, "credit-risk", Role.PRODUCTION_TEAM)
    session.commit()
    maya_actor = actor_for(session, maya.id)
    with pytest.raises(Forbidden, match="manage_members"):
        grant_role(session, maya_actor, maya, "credit-risk", Role.ML_ENGINEER)
    with pytest.raises(Forbidden, match="manage_members"):
        revoke_role(session, maya_actor, maya, "credit-risk", Role.PRODUCTION_TEAM)


def test_grant_refuses_admin_unknown_roles_and_missing_rows(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    create_user(session, admin, "maya", "maya-password-1")
    with pytest.raises(InvalidInput, match="global flag"):
        grant_role(session, admin, "maya", "credit-risk", Role.ADMIN)
    with pytest.raises(InvalidInput, match="unknown role"):
        grant_role(session, admin, "maya", "credit-risk", "wizard")
    with pytest.raises(Conflict, match="no user"):
        grant_role(session, admin, "ghost", "credit-risk", Role.ML_ENGINEER)
    with pytest.raises(Conflict, match="no project"):
        grant_role(session, admin, "maya", "nowhere", Role.ML_ENGINEER)
