"""Browser-facing protections: CSRF tokens, login throttling, security headers, vendored CSS.

CSRF uses a per-session token kept in the signed Flask session:

* server-rendered forms (sign-in, sign-out) post it in a hidden ``csrf_token`` field;
* Dash's renderer reads the ``mms_csrf`` cookie (not HttpOnly, ``SameSite=Strict``)
  and sends it back in the ``X-CSRFToken`` header on every callback POST
  (``Dash(csrf_token_name=..., csrf_header_name=...)``, built into dash-renderer).

Every POST/PUT/PATCH/DELETE must carry the token (field or header) and it must equal
the one in the session, so a cookie planted by another site proves nothing. A
cross-site page can neither read the cookie nor set a custom header without a
CORS preflight, which this server never grants.

Login throttling counts the failed sign-ins recorded in the audit log
(``auth.login_failed`` entries written by :func:`jobs.users.record_login`), so the
window is shared by every gunicorn worker and survives restarts.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from flask import Blueprint, Flask, Response, jsonify, request, send_file, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.db.models import AuditEntry, utcnow

log = logging.getLogger(__name__)

CSRF_SESSION_KEY = "_csrf_token"
CSRF_FORM_FIELD = "csrf_token"
CSRF_COOKIE_NAME = "mms_csrf"
CSRF_HEADER_NAME = "X-CSRFToken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

BOOTSTRAP_CSS_URL = "/vendor/bootstrap.min.css"
# Audit actions written by jobs.users.record_login.
LOGIN_FAILED_ACTION = "auth.login_failed"
LOGIN_OK_ACTION = "auth.login"

CSRF_REFUSAL_PAGE = (
    "<!doctype html><title>Form expired</title>"
    "<p>This form has expired or did not come from the studio. "
    '<a href="/login">Reload the sign-in page</a> and try again.</p>'
)

vendor = Blueprint("vendor", __name__)


class CSRFError(Exception):
    """A state-changing request without a valid CSRF token."""


def bootstrap_css_path() -> Path:
    """Location of the Bootstrap 5 stylesheet shipped by the Bootstrap-Flask package.

    Raises:
        FileNotFoundError: if the installed package no longer ships it.
    """
    path = Path(str(resources.files("flask_bootstrap"))) / "static/bootstrap5/css/bootstrap.min.css"
    if not path.is_file():
        raise FileNotFoundError(f"Bootstrap CSS not found at {path}: is Bootstrap-Flask installed?")
    return path


@vendor.get(BOOTSTRAP_CSS_URL)
def bootstrap_css() -> Response:
    """Serve Bootstrap 5 CSS from the local package (no CDN request, ever)."""
    return send_file(bootstrap_css_path(), mimetype="text/css", max_age=86400)


# ---------------------------------------------------------------------------- CSRF


def csrf_token() -> str:
    """The CSRF token of the current session, created on first use."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def rotate_csrf_token() -> str:
    """Replace the session's CSRF token (after sign-in, so a pre-login token is useless)."""
    session.pop(CSRF_SESSION_KEY, None)
    return csrf_token()


def verify_csrf() -> None:
    """Check the CSRF token of a state-changing request.

    Raises:
        CSRFError: when the method is not safe and neither the ``X-CSRFToken``
            header nor the ``csrf_token`` form field matches the session's token.
    """
    if request.method in SAFE_METHODS:
        return
    expected = session.get(CSRF_SESSION_KEY)
    sent = request.headers.get(CSRF_HEADER_NAME)
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = request.form.get(CSRF_FORM_FIELD)
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CSRFError("CSRF token missing or invalid")


def _set_csrf_cookie(response: Response, secure: bool) -> Response:
    token = session.get(CSRF_SESSION_KEY)
    if isinstance(token, str) and request.cookies.get(CSRF_COOKIE_NAME) != token:
        # Readable by the page's own JavaScript on purpose: dash-renderer copies it into the header.
        response.set_cookie(
            CSRF_COOKIE_NAME, token, secure=secure, httponly=False, samesite="Strict", path="/"
        )
    elif token is None and CSRF_COOKIE_NAME in request.cookies:
        response.delete_cookie(CSRF_COOKIE_NAME, path="/", samesite="Strict", secure=secure)
    return response


# ---------------------------------------------------------------------------- login throttling


@dataclass
class LoginThrottle:
    """Refuse sign-in attempts after too many recent failures for one username from one address.

    Failures are read from the audit log, so every web worker sees the same
    count. A successful sign-in from the same address restarts the count.

    Attributes:
        max_failures: Failures allowed inside ``window`` before attempts are refused.
        window: How far back failures count.
        clock: Returns the current timezone-aware UTC time (injectable for tests).
    """

    max_failures: int = 5
    window: timedelta = timedelta(minutes=5)
    clock: Callable[[], datetime] = field(default=utcnow)

    def retry_after(self, session: Session, username: str, address: str | None) -> int:
        """Seconds until ``username`` may try again from ``address``; 0 when allowed now.

        Args:
            session: Metadata database session.
            username: The name typed in (as recorded by ``record_login``).
            address: Client IP address.
        """
        now = self.clock()
        since = now - self.window
        recorded_name = (username or "?")[:64]  # the actor name record_login writes
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.at, AuditEntry.details)
            .where(
                AuditEntry.actor == recorded_name,
                AuditEntry.action.in_((LOGIN_FAILED_ACTION, LOGIN_OK_ACTION)),
                AuditEntry.at >= since,
            )
            .order_by(AuditEntry.id.desc())
            .limit(500)
        )
        failures: list[datetime] = []
        for action, at, details in rows:
            if _address_of(details) != address:
                continue
            if action == LOGIN_OK_ACTION:
                break  # newest first: failures before a success no longer count
            failures.append(at)
        if len(failures) < self.max_failures:
            return 0
        # The attempt becomes possible when the oldest failure that still blocks leaves the window.
        blocking = sorted(failures, reverse=True)[self.max_failures - 1]
        return max(1, int((blocking + self.window - now).total_seconds()) + 1)


def _address_of(details: str) -> str | None:
    try:
        value = json.loads(details).get("ip")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------- headers


def content_security_policy(script_hashes: Iterable[str] = ()) -> str:
    """The CSP of every response: same origin only, inline scripts only by hash.

    Args:
        script_hashes: CSP hash sources of the inline scripts Dash writes into its
            index page (``Dash.csp_hashes()``).
    """
    script_src = " ".join(["'self'", *script_hashes])
    directives = [
        "default-src 'self'",
        f"script-src {script_src}",
        # Dash's renderer and components inject <style> elements (checked in Chromium): styles
        # need 'unsafe-inline'; scripts do not (Dash's inline scripts are allowed by hash).
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def apply_security_headers(response: Response, csp: str, production: bool) -> Response:
    """Set CSP, anti-framing, MIME sniffing, referrer and caching headers on ``response``."""
    headers = response.headers
    headers["Content-Security-Policy"] = csp
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
    if production:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if "Cache-Control" not in headers and response.mimetype in ("text/html", "application/json"):
        # Pages and callback results carry per-user data: never store them in shared caches.
        headers["Cache-Control"] = "no-store"
    return response


def init_app(server: Flask, *, production: bool, script_hashes: Callable[[], Iterable[str]]) -> None:
    """Install the vendored CSS route, CSRF verification, the CSRF cookie and security headers.

    Args:
        server: The Flask server.
        production: Mark cookies Secure and send HSTS.
        script_hashes: Called per response to list the CSP hashes of Dash's inline scripts
            (they are only complete once Dash has served its first request).
    """
    server.register_blueprint(vendor)

    @server.before_request
    def _protect_from_csrf() -> Response | tuple[str, int] | None:
        try:
            verify_csrf()
        except CSRFError:
            log.warning("refused %s %s: CSRF token missing or invalid", request.method, request.path)
            if request.is_json:
                response = jsonify({"error": "bad request", "reason": "CSRF token missing or invalid"})
                response.status_code = 400
                return response
            return CSRF_REFUSAL_PAGE, 400
        return None

    @server.after_request
    def _finish_response(response: Response) -> Response:
        _set_csrf_cookie(response, secure=production)
        return apply_security_headers(response, content_security_policy(script_hashes()), production)
