"""Sign-in, sign-out, session handling and login throttling on a real app and database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.auth import safe_next_path, services
from app.security import CSRF_COOKIE_NAME, LoginThrottle
from jobs.db.models import AuditEntry, utcnow
from jobs.db.web_sessions import WebSession
from jobs.users import record_login, revoke_role, set_user_active
from tests.unit.app.expectations import demo_password
from tests.unit.app.studio import Studio, build_studio, login_form_token, sign_in

pytestmark = pytest.mark.unit


def _login_audit(studio: Studio, username: str) -> list[tuple[str, str]]:
    with studio.db() as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.details)
            .where(AuditEntry.actor == username, AuditEntry.action.like("auth.%"))
            .order_by(AuditEntry.id)
        )
        return [(action, details) for action, details in rows]


def test_sign_in_redirects_to_the_requested_page_and_is_audited(studio: Studio) -> None:
    client = studio.client("10.1.0.1")
    response = sign_in(client, "mlengineer", demo_password("mlengineer"), next="/projects?tab=2")
    assert response.status_code == 302
    assert response.headers["Location"] == "/projects?tab=2"
    assert client.get("/projects").status_code == 200
    assert ("auth.login", '{"ip":"10.1.0.1"}') in _login_audit(studio, "mlengineer")


def test_wrong_password_is_refused_and_audited(studio: Studio) -> None:
    client = studio.client("10.1.0.2")
    response = sign_in(client, "datateam", "not-the-password")
    assert response.status_code == 401
    assert "Unknown username or wrong password." in response.text
    assert client.get("/").status_code == 302  # still anonymous
    assert ("auth.login_failed", '{"ip":"10.1.0.2"}') in _login_audit(studio, "datateam")


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(studio: Studio) -> None:
    response = sign_in(studio.client("10.1.0.3"), "nobody-here", "whatever-password")
    assert response.status_code == 401
    assert "Unknown username or wrong password." in response.text
    assert ("auth.login_failed", '{"ip":"10.1.0.3"}') in _login_audit(studio, "nobody-here")


def test_empty_form_is_refused_without_touching_the_audit_log(studio: Studio) -> None:
    response = sign_in(studio.client("10.1.0.4"), "", "")
    assert response.status_code == 400
    assert "Enter your username and password." in response.text
    assert _login_audit(studio, "?") == []


def test_sign_in_without_csrf_token_is_refused(studio: Studio) -> None:
    client = studio.client("10.1.0.5")
    login_form_token(client)  # the session now holds a token; the post omits it
    response = client.post("/login", data={"username": "admin", "password": demo_password("admin")})
    assert response.status_code == 400
    assert client.get("/").status_code == 302
    forged = client.post(
        "/login", data={"username": "admin", "password": demo_password("admin"), "csrf_token": "x" * 43}
    )
    assert forged.status_code == 400
    assert client.get("/").status_code == 302


def test_csrf_token_is_rotated_at_sign_in(studio: Studio) -> None:
    client = studio.client("10.1.0.6")
    before = login_form_token(client)
    sign_in_response = client.post(
        "/login",
        data={"username": "production", "password": demo_password("production"), "csrf_token": before},
    )
    assert sign_in_response.status_code == 302
    after = client.get_cookie(CSRF_COOKIE_NAME)
    assert after is not None and after.value != before


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "relative/path",
        "/login",
    ],
)
def test_sign_in_never_redirects_off_site(studio: Studio, target: str) -> None:
    response = sign_in(studio.client("10.1.0.7"), "sponsor1", demo_password("sponsor1"), next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_safe_next_path_keeps_local_paths_with_query() -> None:
    assert safe_next_path("/monitoring?model=churn&window=7d") == "/monitoring?model=churn&window=7d"
    assert safe_next_path(None) == "/"
    assert safe_next_path("/" + "a" * 5000) == "/"


def test_signed_in_user_visiting_login_goes_home(studio: Studio) -> None:
    client = studio.signed_in("monitoring", "10.1.0.8")
    response = client.get("/login?next=/monitoring")
    assert response.status_code == 302
    assert response.headers["Location"] == "/monitoring"


def test_sign_out_needs_csrf_and_ends_the_session(studio: Studio) -> None:
    client = studio.signed_in("sponsor2", "10.1.0.9")
    assert client.post("/logout").status_code == 400
    client.get("/logout")  # a GET (an <img src> on another site) must not sign out either
    assert client.get("/").status_code == 200  # the forged sign-outs changed nothing
    token = client.get_cookie(CSRF_COOKIE_NAME).value
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?signed_out=1"
    assert client.get("/").status_code == 302
    assert client.get("/_dash-layout").status_code == 403
    assert client.get(response.headers["Location"]).status_code == 200


def test_a_request_answered_after_the_sign_out_does_not_sign_the_browser_back_in(studio: Studio) -> None:
    client = studio.signed_in("sponsor1", "10.1.0.11")
    signed_in_cookie = client.get_cookie("mms_session").value
    token = client.get_cookie(CSRF_COOKIE_NAME).value
    # A page request (or callback) sent with the signed-in cookie, answered once the sign-out is
    # through: its response must not carry a session cookie the browser would keep.
    in_flight = studio.client("10.1.0.11")
    in_flight.set_cookie("mms_session", signed_in_cookie)
    assert in_flight.get("/").status_code == 200  # the copy works while the session lasts
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    late_answer = in_flight.get("/")
    # The session ended server side: the copied cookie is anonymous now, and gets no cookie that
    # would sign the browser back in.
    assert late_answer.status_code == 302 and late_answer.headers["Location"].startswith("/login")
    assert not [c for c in late_answer.headers.getlist("Set-Cookie") if c.startswith("mms_session=")]
    assert in_flight.get("/_dash-layout").status_code == 403
    assert client.get("/").status_code == 302


def test_a_session_ends_when_it_expires_server_side_whatever_the_cookie_says(studio: Studio) -> None:
    client = studio.signed_in("sponsor2", "10.1.0.12")
    other = studio.signed_in("sponsor2", "10.1.0.13")  # the same user's second browser
    assert client.get("/").status_code == 200 and other.get("/").status_code == 200
    with studio.db(write=True) as session:
        rows = session.scalars(select(WebSession).order_by(WebSession.id.desc()).limit(2)).all()
        assert {row.user_id for row in rows} == {studio.actor("sponsor2").user_id}
        # Only hashes are stored: no row holds anything the cookie carries in clear.
        assert all(len(row.token_hash) == 64 for row in rows)
        rows[0].expires_at = utcnow() - timedelta(seconds=1)  # the later sign-in: `other`
    assert other.get("/").status_code == 302
    assert client.get("/").status_code == 200  # the other session is untouched
    # Signing in again clears the user's expired rows.
    studio.signed_in("sponsor2", "10.1.0.14")
    with studio.db() as session:
        expired = session.scalars(select(WebSession).where(WebSession.expires_at <= utcnow())).all()
    assert expired == []


def test_session_cookie_flags(studio: Studio) -> None:
    client = studio.client("10.1.0.10")
    token = login_form_token(client)
    response = client.post(
        "/login", data={"username": "admin", "password": demo_password("admin"), "csrf_token": token}
    )
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("mms_session="))
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    assert "Secure" not in session_cookie  # test env: plain http on the loopback
    csrf_cookie = next(c for c in cookies if c.startswith(f"{CSRF_COOKIE_NAME}="))
    assert "HttpOnly" not in csrf_cookie and "SameSite=Strict" in csrf_cookie


def test_roles_are_reloaded_on_every_request(tmp_path: Path) -> None:
    studio = build_studio(tmp_path)
    try:
        client = studio.signed_in("production")
        assert client.get("/integrations").status_code == 200
        admin = studio.actor("admin")
        with studio.db(write=True) as session:
            for project in ("credit-risk", "demand-forecast"):
                revoke_role(session, admin, "production", project, "production_team")
        assert client.get("/integrations").status_code == 403
        with studio.db(write=True) as session:
            set_user_active(session, admin, "production", False)
        response = client.get("/integrations")
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    finally:
        studio.close()


def test_sixth_failure_in_five_minutes_is_throttled_even_with_the_right_password(studio: Studio) -> None:
    client = studio.client("10.2.0.1")
    for _ in range(5):
        assert sign_in(client, "monitoring", "wrong-password-1").status_code == 401
    response = sign_in(client, "monitoring", demo_password("monitoring"))
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 300
    assert "Too many failed sign-in attempts" in response.text
    assert client.get("/").status_code == 302
    # Another address is not blocked by these failures.
    assert sign_in(studio.client("10.2.0.2"), "monitoring", demo_password("monitoring")).status_code == 302


def test_throttle_window_is_shared_by_app_instances_on_one_database(tmp_path: Path) -> None:
    first = build_studio(tmp_path)
    second = build_studio(tmp_path, seed=False)  # another "worker" on the same database
    try:
        client_a, client_b = first.client("10.3.0.1"), second.client("10.3.0.1")
        for _ in range(5):
            assert sign_in(client_a, "admin", "wrong-password-2").status_code == 401
        assert sign_in(client_b, "admin", demo_password("admin")).status_code == 429
    finally:
        first.close()
        second.close()


def test_throttle_counts_only_recent_failures_since_the_last_success(studio: Studio) -> None:
    throttle = LoginThrottle(max_failures=3, window=timedelta(minutes=5))
    with studio.db(write=True) as session:
        for _ in range(3):
            record_login(session, "datateam", False, "10.4.0.1")
        record_login(session, "datateam", False, "10.4.0.2")
    with studio.db() as session:
        wait = throttle.retry_after(session, "datateam", "10.4.0.1")
        assert 290 <= wait <= 301
        assert throttle.retry_after(session, "datateam", "10.4.0.2") == 0
        later = LoginThrottle(
            max_failures=3, window=timedelta(minutes=5), clock=lambda: utcnow() + timedelta(minutes=6)
        )
        assert later.retry_after(session, "datateam", "10.4.0.1") == 0
    with studio.db(write=True) as session:
        record_login(session, "datateam", True, "10.4.0.1")
    with studio.db() as session:
        assert throttle.retry_after(session, "datateam", "10.4.0.1") == 0


def test_throttle_is_configured_per_app(studio: Studio) -> None:
    throttle = services(studio.app.server).login_throttle
    assert throttle.max_failures == 5
    assert throttle.window == timedelta(minutes=5)
