"""Demo accounts and projects for a fresh studio (``python -m jobs seed`` / ``make run``).

The demo passwords are fixed and public (``<username>-demo-pass``): seed only
databases that are meant for demonstration, and change or deactivate the
accounts before real use. Seeding happens only while the users table is
empty, so running it again never resets a password or re-grants a role.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from jobs.db.session import serialize
from jobs.permissions import Role
from jobs.projects import create_project
from jobs.users import actor_for, count_users, create_user, grant_role

DEMO_PROJECTS = (
    ("credit-risk", "Credit risk", "Probability-of-default scoring for retail loan applications."),
    ("demand-forecast", "Demand forecast", "Daily unit demand per store and product family."),
)


@dataclass(frozen=True)
class DemoAccount:
    """A demo login.

    Attributes:
        username: Login name.
        password: Its fixed demo password.
        display_name: Name shown in the UI.
        is_admin: Global administrator.
        roles: Roles held on every demo project (none for the admin, who sees everything).
    """

    username: str
    password: str
    display_name: str
    is_admin: bool = False
    roles: tuple[Role, ...] = ()


def _account(username: str, display_name: str, *roles: Role, is_admin: bool = False) -> DemoAccount:
    return DemoAccount(username, f"{username}-demo-pass", display_name, is_admin, roles)


DEMO_ACCOUNTS = (
    _account("admin", "Studio Admin", is_admin=True),
    _account("mlengineer", "Maya ML Engineer", Role.ML_ENGINEER),
    _account("datateam", "Dara Data Team", Role.DATA_TEAM),
    _account("production", "Pat Production", Role.PRODUCTION_TEAM),
    _account("monitoring", "Mo Monitoring", Role.MONITORING_TEAM),
    _account("sponsor1", "Sam Sponsor", Role.MODEL_SPONSOR),
    _account("sponsor2", "Sasha Sponsor", Role.MODEL_SPONSOR),
)


def seed_demo_accounts(session: Session) -> list[DemoAccount]:
    """Create the demo projects and accounts when the users table is empty.

    Args:
        session: Session of the transaction (the caller commits).

    Returns:
        The accounts created by this call; empty when users already existed.
    """
    serialize(session, "users")
    if count_users(session) > 0:
        return []
    admin_account, *members = DEMO_ACCOUNTS
    admin = create_user(
        session,
        None,
        admin_account.username,
        admin_account.password,
        display_name=admin_account.display_name,
        is_admin=True,
    )
    admin_actor = actor_for(session, admin.id)
    assert admin_actor is not None
    for slug, name, description in DEMO_PROJECTS:
        create_project(session, admin_actor, slug, name, description)
    for account in members:
        user = create_user(
            session,
            admin_actor,
            account.username,
            account.password,
            display_name=account.display_name,
            is_admin=account.is_admin,
        )
        for slug, _name, _description in DEMO_PROJECTS:
            for role in account.roles:
                grant_role(session, admin_actor, user, slug, role)
    return list(DEMO_ACCOUNTS)
