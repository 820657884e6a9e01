"""Personal and service-account API tokens: create (shown once), authenticate, revoke.

A token is ``mms_`` followed by 32 random bytes in URL-safe base64 (43 characters).
Only its SHA-256 (``api_tokens.token_hash``) is stored; the clear token exists once,
in the :class:`IssuedToken` that :func:`create_token` returns, and nowhere else (not
in the database, a log line or the audit log). The first :data:`PREFIX_LENGTH`
characters (``prefix``) are kept so people can tell their tokens apart.

Scope: a token carries a :class:`TokenScope` (roles per project, and the admin flag),
which must be a subset of what its owner holds when it is created. At each use the
token acts with the *intersection* of that scope and the roles the owner holds
*now*, so revoking a role or deactivating the account takes effect at once, and a
role granted later never widens an existing token.

Kinds:

* ``personal``: created by a signed-in person for themselves, scoped to their own roles.
* ``service``: created by an administrator (``ADMIN_USERS``) for a *service account*,
  a user made by :func:`create_service_account` that has roles like anyone else but no
  password (it can never sign in to the web pages; it acts only through tokens).

Every token expires (default 90 days, at most :data:`MAX_LIFETIME`). Creation and
revocation re-check permissions against the database and write ``token.create`` /
``token.revoke`` (``service_account.create``) audit entries naming the token by
prefix. :func:`authenticate` only reads; :func:`mark_used` stamps ``last_used_at`` at most
once a minute, so a busy CI job does not write on every request.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, lazyload

from jobs import audit
from jobs.db.api_models import ApiToken
from jobs.db.models import User, utcnow
from jobs.db.session import serialize
from jobs.permissions import Actor, Forbidden, Permission, Role, require
from jobs.users import (
    PROJECT_ROLES,
    Conflict,
    InvalidInput,
    active_actor,
    actor_for,
    get_user,
    validate_username,
)

TOKEN_PREFIX = "mms_"  # noqa: S105 - the visible marker of studio tokens, not a secret
SECRET_BYTES = 32
PREFIX_LENGTH = 12  # "mms_" + 8 characters of the secret
PERSONAL = "personal"
SERVICE = "service"
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)
MAX_NAME_LENGTH = 128
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A password hash no password matches (jobs.users.verify_password refuses malformed hashes).
SERVICE_ACCOUNT_PASSWORD_HASH = "!service-account"  # noqa: S105 - matches no password
_TOKEN_RE = re.compile(r"mms_[A-Za-z0-9_-]{43}")


class InvalidToken(Exception):
    """The presented token is unknown, malformed, revoked, expired or its owner is inactive.

    Attributes:
        reason: ``malformed``, ``unknown``, ``revoked``, ``expired`` or ``inactive_owner``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenScope:
    """What a token may do at most: roles per project slug, and whether it may act as admin.

    Attributes:
        projects: Roles per project slug (project roles only; Admin is the ``admin`` flag).
        admin: Act with the owner's global Admin role (only if the owner is an admin).
    """

    projects: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    admin: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in ``api_tokens.scope`` (sorted, so equal scopes store equal text)."""
        return {
            "admin": self.admin,
            "projects": {
                slug: sorted(r.value for r in roles) for slug, roles in sorted(self.projects.items())
            },
        }

    @classmethod
    def from_json(cls, value: Any) -> TokenScope:
        """Read a stored scope; anything unrecognised grants nothing (deny by default)."""
        if not isinstance(value, dict):
            return cls()
        projects: dict[str, frozenset[Role]] = {}
        raw_projects = value.get("projects")
        if isinstance(raw_projects, dict):
            for slug, names in raw_projects.items():
                roles = set()
                for name in names if isinstance(names, list) else []:
                    try:
                        role = Role(name)
                    except ValueError:
                        continue
                    if role in PROJECT_ROLES:
                        roles.add(role)
                if isinstance(slug, str) and roles:
                    projects[slug] = frozenset(roles)
        return cls(projects=projects, admin=value.get("admin") is True)

    @classmethod
    def of(cls, actor: Actor) -> TokenScope:
        """Everything ``actor`` holds now (the default scope of a new token)."""
        return cls(
            projects={slug: frozenset(roles) for slug, roles in actor.roles.items() if roles},
            admin=actor.is_admin,
        )

    def restrict(self, actor: Actor) -> Actor:
        """``actor`` limited to this scope: the roles both hold, admin only if both are admin."""
        roles = {}
        for slug, held in actor.roles.items():
            kept = frozenset(held) & self.projects.get(slug, frozenset())
            if kept:
                roles[slug] = kept
        return Actor(
            user_id=actor.user_id,
            username=actor.username,
            is_admin=actor.is_admin and self.admin,
            roles=roles,
        )

    def exceeds(self, actor: Actor) -> list[str]:
        """What this scope asks for that ``actor`` does not hold (empty when it is a subset)."""
        problems = []
        if self.admin and not actor.is_admin:
            problems.append("admin")
        for slug, roles in sorted(self.projects.items()):
            missing = sorted(r.value for r in roles - actor.roles.get(slug, frozenset()))
            problems.extend(f"{slug}:{name}" for name in missing)
        return problems


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only object that ever holds the clear token.

    Attributes:
        secret: The clear token, to show once and then forget.
        token: The stored row (hash, prefix, scope, expiry).
    """

    secret: str = field(repr=False)
    token: ApiToken


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token acts for.

    Attributes:
        actor: The owner restricted to the token's scope (and to the owner's current roles).
        token_id: Database id of the token.
        prefix: Its prefix (safe to log).
        kind: ``personal`` or ``service``.
        stale: ``last_used_at`` is due for an update (:func:`mark_used`).
    """

    actor: Actor
    token_id: int
    prefix: str
    kind: str
    stale: bool = False


def hash_token(token: str) -> str:
    """SHA-256 (hex) of a token: what is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A fresh random token: ``mms_`` and 32 random bytes in URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def is_service_account(user: User) -> bool:
    """Whether ``user`` is a service account (made by :func:`create_service_account`)."""
    return user.password_hash == SERVICE_ACCOUNT_PASSWORD_HASH


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    return now


def parse_scope(projects: Mapping[str, Iterable[Role | str]] | None, admin: bool = False) -> TokenScope:
    """Build a :class:`TokenScope` from plain values (``{"credit-risk": ["ml_engineer"]}``).

    Raises:
        InvalidInput: for an unknown role, the Admin role given per project, or an empty role list.
    """
    if not isinstance(admin, bool):
        raise InvalidInput("admin must be true or false")
    parsed: dict[str, frozenset[Role]] = {}
    for slug, names in (projects or {}).items():
        if not isinstance(slug, str) or not slug:
            raise InvalidInput(f"project slug {slug!r} is not text")
        if isinstance(names, str):
            names = [names]
        roles = set()
        for name in names:
            try:
                role = Role(name)
            except ValueError:
                raise InvalidInput(
                    f"unknown role {name!r} for project {slug!r}: use one of "
                    + ", ".join(sorted(r.value for r in PROJECT_ROLES))
                ) from None
            if role not in PROJECT_ROLES:
                raise InvalidInput(
                    "the admin role is global: pass admin=True instead of naming it per project"
                )
            roles.add(role)
        if not roles:
            raise InvalidInput(f"project {slug!r} needs at least one role in the token's scope")
        parsed[slug] = frozenset(roles)
    return TokenScope(projects=parsed, admin=admin)


def create_service_account(session: Session, actor: Actor, username: str, *, display_name: str = "") -> User:
    """Create a service account: a user without a password that acts only through tokens.

    Grant it roles with :func:`jobs.users.grant_role`, then issue it a token with
    :func:`create_token` (``owner=<its username>``).

    Args:
        session: Session of the transaction (the caller commits).
        actor: An administrator (``ADMIN_USERS``).
        username: Its name, ``^[A-Za-z0-9_.-]{3,64}$``.
        display_name: Name shown in the UI.

    Returns:
        The new, flushed user.

    Raises:
        Forbidden: if ``actor`` lacks ``ADMIN_USERS`` (now, in the database).
        InvalidInput: for a bad username or display name.
        Conflict: if the username is taken.
    """
    require(actor, Permission.ADMIN_USERS)
    admin = require(active_actor(session, actor), Permission.ADMIN_USERS)
    validate_username(username)
    if not isinstance(display_name, str) or len(display_name) > 128:
        raise InvalidInput("display name must be text of at most 128 characters")
    serialize(session, "users")
    if get_user(session, username) is not None:
        raise Conflict(f"username {username!r} is already taken")
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=SERVICE_ACCOUNT_PASSWORD_HASH,
        is_admin=False,
        is_active=True,
    )
    session.add(user)
    session.flush()
    audit.append(session, admin.username, "service_account.create", f"user:{username}", {})
    return user


def create_token(
    session: Session,
    actor: Actor,
    name: str,
    *,
    owner: str | None = None,
    scope: TokenScope | None = None,
    expires_in: timedelta = DEFAULT_LIFETIME,
    now: datetime | None = None,
) -> IssuedToken:
    """Create a token; the clear token is in the result and nowhere else.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who creates it. A personal token is for the actor itself; a service
            token (``owner`` names a service account) needs ``ADMIN_USERS``.
        name: What the token is for (``github-actions deploy``), 1 to 128 characters.
        owner: Username of a service account; ``None`` (or the actor's own name) for a personal token.
        scope: Roles per project and admin flag, a subset of the owner's; ``None`` means all it holds now.
        expires_in: Lifetime, more than 0 and at most :data:`MAX_LIFETIME`.
        now: The current time (defaults to the clock).

    Returns:
        The clear token and the stored row.

    Raises:
        Forbidden: if the actor may not create a token for ``owner``, or the scope asks for a
            role the owner does not hold.
        InvalidInput: for a bad name, lifetime, owner or an empty scope.
    """
    now = _check_now(now)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_LENGTH:
        raise InvalidInput(f"token name must be 1 to {MAX_NAME_LENGTH} characters")
    if not isinstance(expires_in, timedelta) or not timedelta(0) < expires_in <= MAX_LIFETIME:
        raise InvalidInput(f"a token expires after more than 0 and at most {MAX_LIFETIME.days} days")
    if scope is not None and not isinstance(scope, TokenScope):
        raise InvalidInput("scope must be a TokenScope (see jobs.tokens.parse_scope)")
    creator = active_actor(session, actor)
    if owner is None or owner == creator.username:
        kind = PERSONAL
        owner_actor = creator
    else:
        require(actor, Permission.ADMIN_USERS)
        require(creator, Permission.ADMIN_USERS)
        owner_user = get_user(session, owner) if isinstance(owner, str) else None
        if owner_user is None or not is_service_account(owner_user):
            raise Forbidden(
                f"{creator.username} may not create a token for {owner!r}: only service accounts get "
                "tokens made for them; a person creates their own"
            )
        owner_actor = actor_for(session, owner_user.id)
        if owner_actor is None:
            raise InvalidInput(f"service account {owner!r} is deactivated")
        kind = SERVICE
    granted = scope if scope is not None else TokenScope.of(owner_actor)
    excess = granted.exceeds(owner_actor)
    if excess:
        raise Forbidden(
            f"a token of {owner_actor.username} cannot hold roles its owner does not: {', '.join(excess)}"
        )
    if not granted.admin and not granted.projects:
        raise InvalidInput(f"{owner_actor.username} holds no role to put in a token: ask for a role first")

    secret = generate_token()
    token = ApiToken(
        prefix=secret[:PREFIX_LENGTH],
        token_hash=hash_token(secret),
        name=name.strip(),
        kind=kind,
        owner_id=owner_actor.user_id,
        created_by_id=creator.user_id,
        scope=granted.to_json(),
        created_at=now,
        expires_at=now + expires_in,
    )
    session.add(token)
    session.flush()
    audit.append(
        session,
        creator.username,
        "token.create",
        f"token:{token.prefix}",
        {
            "id": token.id,
            "name": token.name,
            "kind": kind,
            "owner": owner_actor.username,
            "scope": token.scope,
            "expires_at": token.expires_at,
        },
    )
    return IssuedToken(secret=secret, token=token)


def _token_by_id(session: Session, token_id: int) -> ApiToken:
    if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 1:
        raise InvalidInput(f"token id must be a positive integer, not {token_id!r}")
    token = session.get(ApiToken, token_id)
    if token is None:
        raise Conflict(f"no token {token_id}")
    return token


def revoke_token(session: Session, actor: Actor, token_id: int, *, now: datetime | None = None) -> ApiToken:
    """Revoke a token at once: its next request is refused with 401.

    Args:
        session: Session of the transaction (the caller commits).
        actor: The token's owner (a person revokes their own), or an administrator (``ADMIN_USERS``).
        token_id: The token.
        now: The current time.

    Raises:
        Forbidden: if the actor neither owns the token nor administers users.
        Conflict: if there is no such token or it is already revoked.
    """
    now = _check_now(now)
    current = active_actor(session, actor)
    token = _token_by_id(session, token_id)
    if token.owner_id != current.user_id:
        require(actor, Permission.ADMIN_USERS)
        require(current, Permission.ADMIN_USERS)
    if token.revoked_at is not None:
        raise Conflict(f"token {token.prefix} is already revoked")
    token.revoked_at = now
    token.revoked_by_id = current.user_id
    session.flush()
    audit.append(
        session,
        current.username,
        "token.revoke",
        f"token:{token.prefix}",
        {"id": token.id, "name": token.name, "kind": token.kind, "owner": token.owner.username},
    )
    return token


def list_tokens(session: Session, actor: Actor, *, owner: str | None = None) -> list[ApiToken]:
    """Tokens ``actor`` may see, newest first: their own, or anyone's for an administrator.

    Args:
        session: Session to read with.
        actor: Who asks.
        owner: Only this owner's tokens (someone else's needs ``ADMIN_USERS``).

    Raises:
        Forbidden: when asking for another user's tokens without ``ADMIN_USERS``.
    """
    query = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if owner is None or owner != actor.username:
        require(actor, Permission.ADMIN_USERS)
    if owner is not None:
        user = get_user(session, owner)
        if user is None:
            return []
        query = query.where(ApiToken.owner_id == user.id)
    return list(session.scalars(query).unique())


def authenticate(session: Session, presented: str, *, now: datetime | None = None) -> TokenIdentity:
    """Resolve a presented bearer token to the actor it may act as (reads only).

    Call :func:`mark_used` afterwards, in a write transaction, to stamp ``last_used_at``.

    Args:
        session: Session of the request.
        presented: The token from ``Authorization: Bearer ...``.
        now: The current time.

    Returns:
        The scoped identity.

    Raises:
        InvalidToken: for a malformed, unknown, revoked or expired token, or an inactive owner.
    """
    now = _check_now(now)
    if not isinstance(presented, str) or not _TOKEN_RE.fullmatch(presented):
        raise InvalidToken("malformed", "the bearer token is not a studio API token")
    digest = hash_token(presented)
    # The owner is read by actor_for below: no need to join it (and its memberships) here too.
    token = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == digest).options(lazyload(ApiToken.owner))
    ).first()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise InvalidToken("unknown", "the bearer token is not valid")
    if token.revoked_at is not None:
        raise InvalidToken("revoked", f"token {token.prefix} was revoked")
    if now >= token.expires_at:
        raise InvalidToken("expired", f"token {token.prefix} expired at {token.expires_at.isoformat()}")
    owner = actor_for(session, token.owner_id)
    if owner is None:
        raise InvalidToken("inactive_owner", f"the owner of token {token.prefix} is deactivated")
    actor = TokenScope.from_json(token.scope).restrict(owner)
    stale = token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION
    return TokenIdentity(actor=actor, token_id=token.id, prefix=token.prefix, kind=token.kind, stale=stale)


def mark_used(session: Session, token_id: int, *, now: datetime | None = None) -> bool:
    """Stamp ``last_used_at`` unless it was stamped less than a minute ago (the caller commits).

    Returns:
        Whether the row was updated.
    """
    now = _check_now(now)
    changed = session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


# --------------------------------------------------------------------------- command line


def _open(settings: Any) -> Any:
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine)


def _cli_actor(session: Session, username: str) -> Actor:
    user = get_user(session, username)
    actor = actor_for(session, user.id) if user else None
    if actor is None:
        raise InvalidInput(f"--actor {username!r} is not an active user")
    return actor


def _cli_scope(items: list[str] | None, admin: bool) -> TokenScope | None:
    if not items and not admin:
        return None
    projects: dict[str, list[str]] = {}
    for item in items or []:
        slug, _, names = item.partition(":")
        if not slug or not names:
            raise InvalidInput(f"--project {item!r} must be slug:role[,role...]")
        projects.setdefault(slug, []).extend(n.strip() for n in names.split(",") if n.strip())
    return parse_scope(projects, admin)


def _cli_create(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    if not 1 <= args.expires_days <= MAX_LIFETIME.days:
        raise InvalidInput(f"--expires-days must be 1 to {MAX_LIFETIME.days}")
    engine, factory = _open(settings)
    try:
        with session_scope(factory, write=True) as session:
            actor = _cli_actor(session, args.actor)
            issued = create_token(
                session,
                actor,
                args.name,
                owner=args.owner,
                scope=_cli_scope(args.project, args.admin),
                expires_in=timedelta(days=args.expires_days),
            )
            token = issued.token
            print(
                f"token {token.id} ({token.prefix}, {token.kind}) for {token.owner.username}, "
                f"expires {token.expires_at.isoformat()}; scope {token.scope}"
            )
            print("store it now, it is not shown again:")
            print(issued.secret)
    finally:
        engine.dispose()
    return 0


def _cli_revoke(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    engine, factory = _open(settings)
    try:
        with session_scope(factory, write=True) as session:
            token = revoke_token(session, _cli_actor(session, args.actor), args.token_id)
            print(f"token {token.id} ({token.prefix}) revoked")
    finally:
        engine.dispose()
    return 0


def _cli_list(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    engine, factory = _open(settings)
    try:
        with session_scope(factory) as session:
            actor = _cli_actor(session, args.actor)
            for token in list_tokens(session, actor, owner=args.owner or actor.username):
                state = "revoked" if token.revoked_at else f"expires {token.expires_at.isoformat()}"
                used = token.last_used_at.isoformat() if token.last_used_at else "never"
                print(
                    f"{token.id:>5}  {token.prefix}  {token.kind:<8} {token.owner.username:<20} "
                    f"{token.name!r}  {state}  last used {used}"
                )
    finally:
        engine.dispose()
    return 0


def _cli_service_account(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    engine, factory = _open(settings)
    try:
        with session_scope(factory, write=True) as session:
            user = create_service_account(
                session, _cli_actor(session, args.actor), args.username, display_name=args.display_name
            )
            print(f"service account {user.username} created: grant it roles, then create its token")
    finally:
        engine.dispose()
    return 0


def register_cli(subparsers: Any) -> None:
    """``tokens create|revoke|list|service-account``: the API token commands of ``python -m jobs``."""
    parser = subparsers.add_parser("tokens", help="create, list and revoke API tokens")
    actions = parser.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a token (printed once)")
    create.add_argument("--actor", required=True, help="username of who creates it")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--owner", help="service account to create it for (admins only)")
    create.add_argument(
        "--project", action="append", metavar="SLUG:ROLE[,ROLE]", help="scope (default: every role held)"
    )
    create.add_argument("--admin", action="store_true", help="include the owner's admin role")
    create.add_argument("--expires-days", type=int, default=DEFAULT_LIFETIME.days)
    create.set_defaults(func=_cli_create)
    revoke = actions.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token_id", type=int)
    revoke.add_argument("--actor", required=True)
    revoke.set_defaults(func=_cli_revoke)
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--actor", required=True)
    listing.add_argument("--owner", help="whose tokens (another user's needs admin_users)")
    listing.set_defaults(func=_cli_list)
    account = actions.add_parser("service-account", help="create a service account (admins only)")
    account.add_argument("username")
    account.add_argument("--actor", required=True)
    account.add_argument("--display-name", default="")
    account.set_defaults(func=_cli_service_account)
