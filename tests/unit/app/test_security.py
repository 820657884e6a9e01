"""Security headers, CSP, the CSRF cookie and locally served assets."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from app.security import CSRF_COOKIE_NAME, bootstrap_css_path, content_security_policy
from tests.unit.app.studio import Studio

pytestmark = pytest.mark.unit

_INLINE_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_URL_ATTRIBUTE = re.compile(r'\b(?:src|href)="([^"]*)"')


def _directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        parsed[name] = values
    return parsed


def test_every_response_carries_the_security_headers(studio: Studio) -> None:
    anonymous = studio.client("10.7.0.1")
    signed_in = studio.signed_in("admin", "10.7.0.2")
    for client, path in ((anonymous, "/login"), (anonymous, "/vendor/bootstrap.min.css"), (signed_in, "/")):
        headers = client.get(path).headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        policy = _directives(headers["Content-Security-Policy"])
        assert policy["default-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert "Strict-Transport-Security" not in headers  # only in production
    assert signed_in.get("/_dash-layout").headers["Cache-Control"] == "no-store"


def test_csp_allows_exactly_dash_inline_scripts_and_no_other_origin(studio: Studio) -> None:
    client = studio.signed_in("admin", "10.7.0.3")
    response = client.get("/projects")
    policy = _directives(response.headers["Content-Security-Policy"])
    script_sources = policy["script-src"]
    assert script_sources[0] == "'self'"
    assert "'unsafe-eval'" not in script_sources and "'unsafe-inline'" not in script_sources
    for values in policy.values():
        assert not [value for value in values if "://" in value or value == "*"], values
    page = _HTML_COMMENT.sub("", response.text)  # Dash's IE warning sits in a conditional comment
    executed = [
        match["body"]
        for match in _INLINE_SCRIPT.finditer(page)
        if match["body"] and "json" not in match["attrs"]
    ]
    assert executed, "Dash writes at least its renderer start-up inline"
    for body in executed:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_sources


def test_pages_load_nothing_from_another_host(studio: Studio) -> None:
    anonymous = studio.client("10.7.0.4")
    signed_in = studio.signed_in("admin", "10.7.0.5")
    for html in (anonymous.get("/login").text, signed_in.get("/").text, signed_in.get("/monitoring").text):
        urls = _URL_ATTRIBUTE.findall(html)
        assert urls
        assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "plotlyjs_url" not in signed_in.get("/").text


def test_bootstrap_is_served_from_the_installed_package(studio: Studio) -> None:
    response = studio.client("10.7.0.6").get("/vendor/bootstrap.min.css")
    assert response.status_code == 200
    assert response.data == bootstrap_css_path().read_bytes()
    assert b"Bootstrap  v5" in response.data[:100]


def test_csrf_cookie_matches_the_session_token_and_is_script_readable(studio: Studio) -> None:
    client = studio.client("10.7.0.7")
    response = client.get("/login")
    set_cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(CSRF_COOKIE_NAME))
    assert "HttpOnly" not in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    token = client.get_cookie(CSRF_COOKIE_NAME).value
    assert f'name="csrf_token" value="{token}"' in response.text
    # The cookie is not re-sent on every response once the browser holds the current value.
    again = client.get("/login")
    assert not [c for c in again.headers.getlist("Set-Cookie") if c.startswith(CSRF_COOKIE_NAME)]


def test_content_security_policy_lists_given_hashes() -> None:
    policy = content_security_policy(["'sha256-abc='"])
    assert "script-src 'self' 'sha256-abc='" in policy
    assert "object-src 'none'" in policy and "form-action 'self'" in policy
