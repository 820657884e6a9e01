"""API tokens: shown once, hashed at rest, scoped, expiring, revocable, audited; the API honours all of it."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from jobs import tokens
from jobs.cli import build_parser
from jobs.db.api_models import ApiToken
from jobs.db.models import AuditEntry, utcnow
from jobs.permissions import Forbidden, Role
from jobs.users import (
    Conflict,
    InvalidInput,
    authenticate,
    get_user,
    grant_role,
    revoke_role,
    set_user_active,
)
from tests.unit.app.api.world import OTHER_PROJECT, PROJECT, ApiWorld

pytestmark = pytest.mark.unit


def _issue(world: ApiWorld, username: str, **options) -> tokens.IssuedToken:
    with world.studio.db(write=True) as session:
        return tokens.create_token(session, world.actor(username), options.pop("name", "test"), **options)


def test_the_secret_is_shown_once_and_only_its_hash_is_stored(world: ApiWorld) -> None:
    issued = _issue(world, "mlengineer", name="ci deploys")
    secret = issued.secret
    assert secret.startswith("mms_") and len(secret) == 4 + 43
    assert secret not in repr(issued)
    with world.studio.db() as session:
        row = session.get(ApiToken, issued.token.id)
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret[:12] and row.name == "ci deploys" and row.kind == tokens.PERSONAL
        stored_text = " ".join(str(value) for value in row.__dict__.values())
        assert secret not in stored_text
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "token.create").order_by(AuditEntry.id.desc())
        ).first()
        assert entry.target == f"token:{row.prefix}" and entry.actor == "mlengineer"
        assert secret not in entry.details and row.token_hash not in entry.details
        # Listing shows tokens, never a way back to the secret.
        listed = tokens.list_tokens(session, world.actor("mlengineer"), owner="mlengineer")
        assert issued.token.id in [t.id for t in listed]
    assert world.call(None, "GET", "/api/v1/projects", token=secret).status_code == 200


def test_unknown_malformed_revoked_and_expired_tokens_get_401(world: ApiWorld) -> None:
    issued = _issue(world, "monitoring")
    good = issued.secret
    assert world.call(None, "GET", "/api/v1/alerts", token=good, address="10.1.0.1").status_code == 200
    forged = good[:-1] + ("A" if good[-1] != "A" else "B")
    for bad in (forged, "mms_short", "not-a-token", good + "x"):
        response = world.call(None, "GET", "/api/v1/alerts", token=bad, address="10.1.0.2")
        assert response.status_code == 401, bad
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    with world.studio.db(write=True) as session:
        tokens.revoke_token(session, world.actor("monitoring"), issued.token.id)
    revoked = world.call(None, "GET", "/api/v1/alerts", token=good, address="10.1.0.3")
    assert revoked.status_code == 401 and "revoked" in revoked.json["error"]["message"]
    with world.studio.db(write=True) as session, pytest.raises(Conflict, match="already revoked"):
        tokens.revoke_token(session, world.actor("monitoring"), issued.token.id)

    expired = _issue(
        world, "monitoring", expires_in=timedelta(seconds=1), now=utcnow() - timedelta(seconds=5)
    )
    response = world.call(None, "GET", "/api/v1/alerts", token=expired.secret, address="10.1.0.4")
    assert response.status_code == 401 and "expired" in response.json["error"]["message"]


def test_a_scope_limits_the_token_to_fewer_projects_and_roles(world: ApiWorld) -> None:
    scope = tokens.parse_scope({PROJECT: ["ml_engineer"]})
    secret = _issue(world, "mlengineer", scope=scope).secret
    listed = world.call(None, "GET", "/api/v1/projects", token=secret, address="10.1.1.1")
    assert [p["slug"] for p in listed.json["items"]] == [PROJECT]
    assert world.call(None, "GET", f"/api/v1/projects/{OTHER_PROJECT}", token=secret).status_code == 403
    full = world.call("mlengineer", "GET", f"/api/v1/projects/{OTHER_PROJECT}")
    assert full.status_code == 200

    # A read-only slice of a production engineer: views CI/CD, cannot deploy or roll back.
    read_only = tokens.parse_scope({PROJECT: ["data_team"]})
    with world.studio.db(write=True) as session, pytest.raises(Forbidden, match="credit-risk:data_team"):
        tokens.create_token(session, world.actor("production"), "x", scope=read_only)
    production_view = tokens.parse_scope({PROJECT: ["production_team"]})
    secret = _issue(world, "production", scope=production_view).secret
    body = {"project": OTHER_PROJECT, "model": "scorecard", "environment": "staging", "version": "2"}
    refused = world.call(None, "POST", "/api/v1/deployments", body, token=secret)
    assert refused.status_code == 403 and OTHER_PROJECT in refused.json["error"]["message"]


def test_a_token_never_holds_more_than_its_owner_holds_now(world: ApiWorld) -> None:
    with world.studio.db(write=True) as session, pytest.raises(Forbidden, match="admin"):
        tokens.create_token(session, world.actor("mlengineer"), "x", scope=tokens.parse_scope({}, admin=True))
    with world.studio.db(write=True) as session:
        from jobs.users import create_user

        user = create_user(session, world.actor("admin"), "temp-engineer", "temp-engineer-password")
        grant_role(session, world.actor("admin"), user, PROJECT, Role.ML_ENGINEER)
    secret = _issue(world, "temp-engineer").secret
    assert world.call(None, "GET", f"/api/v1/projects/{PROJECT}", token=secret).status_code == 200
    with world.studio.db(write=True) as session:
        revoke_role(session, world.actor("admin"), "temp-engineer", PROJECT, Role.ML_ENGINEER)
    # Still a valid token, but the owner lost the role: the token lost it too.
    assert world.call(None, "GET", f"/api/v1/projects/{PROJECT}", token=secret).status_code == 403
    with world.studio.db(write=True) as session:
        grant_role(session, world.actor("admin"), "temp-engineer", PROJECT, Role.ML_ENGINEER)
        set_user_active(session, world.actor("admin"), "temp-engineer", False)
    deactivated = world.call(None, "GET", f"/api/v1/projects/{PROJECT}", token=secret, address="10.1.2.1")
    assert deactivated.status_code == 401 and "deactivated" in deactivated.json["error"]["message"]


def test_service_accounts_are_made_by_admins_cannot_sign_in_and_act_by_token(world: ApiWorld) -> None:
    with world.studio.db(write=True) as session, pytest.raises(Forbidden):
        tokens.create_service_account(session, world.actor("production"), "ci-bot")
    with world.studio.db(write=True) as session:
        tokens.create_service_account(session, world.actor("admin"), "ci-bot", display_name="CI")
        grant_role(session, world.actor("admin"), "ci-bot", PROJECT, Role.PRODUCTION_TEAM)
        assert authenticate(session, "ci-bot", tokens.SERVICE_ACCOUNT_PASSWORD_HASH) is None
    with world.studio.db(write=True) as session, pytest.raises(Forbidden, match="admin_users"):
        tokens.create_token(session, world.actor("production"), "bot", owner="ci-bot")
    with world.studio.db(write=True) as session, pytest.raises(Forbidden, match="only service accounts"):
        tokens.create_token(session, world.actor("admin"), "steal", owner="mlengineer")
    issued = _issue(world, "admin", name="bot deploys", owner="ci-bot")
    assert issued.token.kind == tokens.SERVICE
    listed = world.call(None, "GET", "/api/v1/deployments", token=issued.secret)
    assert listed.status_code == 200
    assert world.call(None, "GET", "/api/v1/audit", token=issued.secret).status_code == 403
    # Only the owner or an administrator revokes a token.
    with world.studio.db(write=True) as session, pytest.raises(Forbidden):
        tokens.revoke_token(session, world.actor("mlengineer"), issued.token.id)
    with world.studio.db(write=True) as session:
        tokens.revoke_token(session, world.actor("admin"), issued.token.id)
    assert (
        world.call(None, "GET", "/api/v1/deployments", token=issued.secret, address="10.1.3.1").status_code
        == 401
    )


def test_last_use_is_stamped_at_most_once_a_minute(world: ApiWorld) -> None:
    issued = _issue(world, "datateam")
    with world.studio.db() as session:
        assert session.get(ApiToken, issued.token.id).last_used_at is None
    world.call(None, "GET", "/api/v1/projects", token=issued.secret)
    with world.studio.db() as session:
        first = session.get(ApiToken, issued.token.id).last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=30)
    world.call(None, "GET", "/api/v1/projects", token=issued.secret)
    with world.studio.db(write=True) as session:
        assert session.get(ApiToken, issued.token.id).last_used_at == first
        assert tokens.mark_used(session, issued.token.id, now=first + timedelta(seconds=61))


def test_bad_token_requests_are_refused_with_clear_errors(world: ApiWorld) -> None:
    with world.studio.db(write=True) as session:
        actor = world.actor("datateam")
        with pytest.raises(InvalidInput, match="name"):
            tokens.create_token(session, actor, "  ")
        with pytest.raises(InvalidInput, match="expires"):
            tokens.create_token(session, actor, "x", expires_in=timedelta(days=400))
        with pytest.raises(InvalidInput, match="unknown role"):
            tokens.parse_scope({PROJECT: ["wizard"]})
        with pytest.raises(InvalidInput, match="global"):
            tokens.parse_scope({PROJECT: ["admin"]})
        with pytest.raises(Forbidden):
            tokens.list_tokens(session, actor, owner="mlengineer")


def test_the_tokens_command_line_creates_lists_and_revokes(
    world: ApiWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser([("tokens", "jobs.tokens:register_cli")])
    args = parser.parse_args(
        ["tokens", "create", "--actor", "sponsor1", "--name", "cli", "--project", f"{PROJECT}:model_sponsor"]
    )
    assert args.func(args, world.settings) == 0
    printed = capsys.readouterr().out
    secret = printed.strip().splitlines()[-1]
    assert secret.startswith("mms_")
    assert world.call(None, "GET", f"/api/v1/projects/{OTHER_PROJECT}", token=secret).status_code == 403
    with world.studio.db() as session:
        token_id = session.scalars(select(ApiToken.id).where(ApiToken.prefix == secret[:12])).one()
        assert get_user(session, "sponsor1") is not None
    args = parser.parse_args(["tokens", "list", "--actor", "sponsor1"])
    assert args.func(args, world.settings) == 0
    listing = capsys.readouterr().out
    assert secret[:12] in listing and secret not in listing
    args = parser.parse_args(["tokens", "revoke", str(token_id), "--actor", "sponsor1"])
    assert args.func(args, world.settings) == 0
    assert world.call(None, "GET", "/api/v1/projects", token=secret, address="10.1.4.1").status_code == 401
    args = parser.parse_args(
        ["tokens", "create", "--actor", "sponsor1", "--name", "x", "--expires-days", "0"]
    )
    with pytest.raises(InvalidInput, match="expires-days"):
        args.func(args, world.settings)
