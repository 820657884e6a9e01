"""User accounts: password hashing, sign-in, roles per project.

Passwords are stored as ``scrypt$n$r$p$salt$hash`` (salt and hash in base64)
and compared in constant time. Every state change appends an audit entry in
the caller's transaction; the caller commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from functools import cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.db.models import Membership, Project, User, utcnow
from jobs.db.session import serialize
from jobs.permissions import Actor, Forbidden, Permission, Role, require

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,64}")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
# Bounds on parameters read back from the database, so a corrupted hash cannot exhaust memory.
_MAX_SCRYPT_N = 2**20
_SCRYPT_MAXMEM = 256 * 1024 * 1024
# Project roles; Admin is the global ``User.is_admin`` flag, not a membership.
PROJECT_ROLES = frozenset(Role) - {Role.ADMIN}


class InvalidInput(ValueError):
    """Input that fails validation; the message says what is wrong and what is accepted."""


class Conflict(ValueError):
    """The change clashes with existing state (a duplicate name, a missing row)."""


def hash_password(password: str) -> str:
    """Hash ``password`` with scrypt and a random salt.

    Returns:
        ``scrypt$n$r$p$salt_b64$hash_b64``.
    """
    salt = os.urandom(_SALT_BYTES)
    derived = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_KEY_BYTES
    )
    encoded_salt = base64.b64encode(salt).decode("ascii")
    encoded_hash = base64.b64encode(derived).decode("ascii")
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encoded_salt}${encoded_hash}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash (constant-time comparison).

    A malformed stored hash never matches.
    """
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(hash_text, validate=True)
    except ValueError:
        return False
    if scheme != "scrypt" or not (2 <= n <= _MAX_SCRYPT_N and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    derived = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=_SCRYPT_MAXMEM
    )
    return hmac.compare_digest(derived, expected)


@cache
def _decoy_hash() -> str:
    # Unknown usernames are checked against this, so they cost as much time as real ones.
    return hash_password("decoy password that matches nothing")


def validate_username(username: str) -> str:
    """Return ``username`` if it matches ``^[A-Za-z0-9_.-]{3,64}$``.

    Raises:
        InvalidInput: otherwise.
    """
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
        raise InvalidInput("username must be 3 to 64 characters of letters, digits, '_', '.' or '-'")
    return username


def validate_password(password: str) -> str:
    """Return ``password`` if it is long enough (and not absurdly long).

    Raises:
        InvalidInput: otherwise.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def get_user(session: Session, username: str) -> User | None:
    """The user called ``username``, ``None`` when there is none."""
    return session.scalars(select(User).where(User.username == username)).first()


def count_users(session: Session) -> int:
    """How many user accounts exist (active or not)."""
    return session.scalar(select(func.count()).select_from(User)) or 0


def create_user(
    session: Session,
    actor: Actor | None,
    username: str,
    password: str,
    *,
    display_name: str = "",
    is_admin: bool = False,
) -> User:
    """Create a user account.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who creates the account; needs ``ADMIN_USERS``. ``None`` is
            accepted only to bootstrap the very first user of an empty database.
        username: Login name, ``^[A-Za-z0-9_.-]{3,64}$``.
        password: At least 10 characters.
        display_name: Name shown in the UI (defaults to the username).
        is_admin: Global administrator.

    Returns:
        The new, flushed user.

    Raises:
        Forbidden: if ``actor`` lacks ``ADMIN_USERS`` (or is ``None`` when users exist).
        InvalidInput: for a bad username, password or display name.
        Conflict: if the username is taken.
    """
    if actor is not None:
        require(actor, Permission.ADMIN_USERS)
    validate_username(username)
    validate_password(password)
    if len(display_name) > 128:
        raise InvalidInput("display name must be at most 128 characters")
    # Serialise account creation so two bootstrap attempts cannot both find the table empty.
    serialize(session, "users")
    if actor is None and count_users(session) > 0:
        require(None, Permission.ADMIN_USERS)  # raises Forbidden naming the refused action
    if get_user(session, username) is not None:
        raise Conflict(f"username {username!r} is already taken")
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=hash_password(password),
        is_admin=is_admin,
        is_active=True,
    )
    session.add(user)
    session.flush()
    audit.append(
        session,
        actor.username if actor else username,
        "user.create",
        f"user:{username}",
        {"is_admin": is_admin, "bootstrap": actor is None},
    )
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """Check a sign-in attempt and stamp ``last_login_at`` on success.

    Unknown usernames and inactive accounts cost the same password hash as a
    real check, so timing does not reveal which usernames exist. Record the
    attempt with :func:`record_login` (it needs the client's address); the
    caller commits, which saves ``last_login_at``.

    Returns:
        The active user whose password matches, else ``None``.
    """
    user = get_user(session, username) if isinstance(username, str) else None
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        verify_password("", _decoy_hash())
        return None
    matches = verify_password(password, user.password_hash if user else _decoy_hash())
    if user is None or not matches or not user.is_active:
        return None
    user.last_login_at = utcnow()
    session.flush()
    return user


def record_login(session: Session, username: str, ok: bool, ip: str | None) -> audit.AuditEntry:
    """Append a sign-in attempt to the audit log.

    Args:
        session: Session of the transaction (the caller commits).
        username: The name typed in (kept, shortened, even when no such user exists).
        ok: Whether the attempt succeeded.
        ip: Client address, ``None`` when unknown.
    """
    name = (username or "?")[:64]
    return audit.append(
        session,
        name,
        "auth.login" if ok else "auth.login_failed",
        f"user:{name}"[:255],
        {"ip": ip},
    )


def active_actor(
    session: Session,
    actor: Actor | None,
    permission: Permission | None = None,
    project: str | None = None,
) -> Actor:
    """``actor`` as the database knows it now (roles read in this transaction).

    A job re-reads its caller before acting: a role revoked or an account deactivated a moment ago
    no longer counts, whatever the caller's session still says.

    Args:
        session: The job's session.
        actor: The caller, as the web session or the CLI built it.
        permission: When given, required on both the caller's and the database's view (the caller's
            first, so a refusal reads nothing more).
        project: Project slug ``permission`` applies to.

    Raises:
        Forbidden: if the account is missing, deactivated or renamed, or lacks ``permission``.
    """
    if permission is not None:
        require(actor, permission, project)
    fresh = actor_for(session, actor.user_id) if actor is not None else None
    if fresh is None or actor is None or fresh.username != actor.username:
        raise Forbidden(f"{actor.username if actor else 'anonymous'} is not an active user")
    return fresh if permission is None else require(fresh, permission, project)


def actor_for(session: Session, user_id: int) -> Actor | None:
    """Build the :class:`Actor` of an active user: admin flag and roles per project slug.

    Returns:
        ``None`` when the user does not exist or is inactive. Unknown role
        names in the database grant nothing (deny by default).
    """
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    rows = session.execute(
        select(Project.slug, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user_id)
    )
    roles: dict[str, set[Role]] = {}
    for slug, role_name in rows:
        try:
            role = Role(role_name)
        except ValueError:
            continue
        if role in PROJECT_ROLES:
            roles.setdefault(slug, set()).add(role)
    return Actor(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        roles={slug: frozenset(held) for slug, held in roles.items()},
    )


def _resolve_user(session: Session, user: User | str) -> User:
    if isinstance(user, User):
        return user
    found = get_user(session, user)
    if found is None:
        raise Conflict(f"no user called {user!r}")
    return found


def _resolve_project(session: Session, project_slug: str) -> Project:
    from jobs.projects import project_by_slug  # imported here: jobs.projects imports this module

    return project_by_slug(session, project_slug)


def _project_role(role: Role | str) -> Role:
    try:
        resolved = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}") from None
    if resolved not in PROJECT_ROLES:
        raise InvalidInput("admin is a global flag of the user account, not a project role")
    return resolved


def grant_role(
    session: Session, actor: Actor, user: User | str, project_slug: str, role: Role | str
) -> Membership:
    """Give ``user`` the ``role`` on a project (no-op if already held).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_MEMBERS`` on the project.
        InvalidInput: for an unknown role or ``admin``.
        Conflict: if the user or project does not exist.
    """
    require(actor, Permission.MANAGE_MEMBERS, project_slug)
    resolved_role = _project_role(role)
    member = _resolve_user(session, user)
    project = _resolve_project(session, project_slug)
    existing = session.scalars(
        select(Membership).where(
            Membership.user_id == member.id,
            Membership.project_id == project.id,
            Membership.role == resolved_role.value,
        )
    ).first()
    if existing is not None:
        return existing
    membership = Membership(user_id=member.id, project_id=project.id, role=resolved_role.value)
    session.add(membership)
    session.flush()
    audit.append(
        session,
        actor.username,
        "user.role_grant",
        f"user:{member.username}",
        {"project": project_slug, "role": resolved_role.value},
    )
    return membership


def revoke_role(
    session: Session, actor: Actor, user: User | str, project_slug: str, role: Role | str
) -> bool:
    """Take ``role`` on a project away from ``user``.

    Returns:
        Whether a membership was removed (``False`` when the role was not held).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_MEMBERS`` on the project.
        InvalidInput: for an unknown role or ``admin``.
        Conflict: if the user or project does not exist.
    """
    require(actor, Permission.MANAGE_MEMBERS, project_slug)
    resolved_role = _project_role(role)
    member = _resolve_user(session, user)
    project = _resolve_project(session, project_slug)
    membership = session.scalars(
        select(Membership).where(
            Membership.user_id == member.id,
            Membership.project_id == project.id,
            Membership.role == resolved_role.value,
        )
    ).first()
    if membership is None:
        return False
    session.delete(membership)
    session.flush()
    audit.append(
        session,
        actor.username,
        "user.role_revoke",
        f"user:{member.username}",
        {"project": project_slug, "role": resolved_role.value},
    )
    return True


def set_user_active(session: Session, actor: Actor, username: str, active: bool) -> User:
    """Activate or deactivate an account (inactive accounts cannot sign in).

    Raises:
        Forbidden: if ``actor`` lacks ``ADMIN_USERS``.
        InvalidInput: if an admin tries to deactivate their own account.
        Conflict: if there is no such user.
    """
    require(actor, Permission.ADMIN_USERS)
    user = _resolve_user(session, username)
    if not active and user.id == actor.user_id:
        raise InvalidInput("you cannot deactivate your own account")
    if user.is_active != active:
        user.is_active = active
        session.flush()
        audit.append(
            session, actor.username, "user.activate" if active else "user.deactivate", f"user:{username}"
        )
    return user
