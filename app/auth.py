"""Sign-in and sign-out, the signed-in user, and the per-app services callbacks use.

The sign-in page is plain server-rendered HTML (Bootstrap served locally), so an
anonymous visitor never loads the Dash application at all. The flask-login user
wraps a :class:`jobs.permissions.Actor` that is rebuilt from the database on every
request, so a revoked role or a deactivated account takes effect immediately. The
session itself is kept server side (:mod:`jobs.db.web_sessions`): the cookie names it,
and sign-out ends it, so a copy of the cookie is worthless from then on.

Every sign-in attempt that reaches the password check is appended to the audit
log through :func:`jobs.users.record_login`; attempts refused by the throttle are
only logged (recording them would let a flood of requests fill the audit log).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template_string,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.security import BOOTSTRAP_CSS_URL, LoginThrottle, csrf_token, rotate_csrf_token
from app.settings import Settings
from jobs.db import session_scope
from jobs.permissions import Actor
from jobs.users import MAX_PASSWORD_LENGTH, actor_for, authenticate, record_login
from jobs.web_sessions import close_web_session, open_web_session, web_session_user

log = logging.getLogger(__name__)

EXTENSION_KEY = "mms"
MAX_USERNAME_LENGTH = 64
MAX_NEXT_LENGTH = 2048

auth = Blueprint("auth", __name__)


@dataclass
class StudioServices:
    """What one app instance shares between requests (kept in ``server.extensions``).

    Attributes:
        settings: The settings the app was built with.
        engine: Engine of the metadata database.
        session_factory: Session factory bound to ``engine``.
        login_throttle: Sign-in throttle (failures counted in the audit log).
    """

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    login_throttle: LoginThrottle


def services(server: Flask | None = None) -> StudioServices:
    """The services of ``server`` (default: the app handling the current request)."""
    app = server if server is not None else current_app
    return app.extensions[EXTENSION_KEY]


@contextmanager
def db_session(*, write: bool = False) -> Iterator[Session]:
    """A metadata-database session of the current app: commits on success, rolls back on error.

    Args:
        write: The block writes (takes SQLite's write lock up front, see ``jobs.db.session_scope``).
    """
    with session_scope(services().session_factory, write=write) as db:
        yield db


class StudioUser(UserMixin):
    """The flask-login user: a thin wrapper around the authorisation :class:`Actor`.

    Args:
        actor: Who the user is and what they may do.
        session_token: The token of the user's server-side browser session
            (:func:`jobs.web_sessions.open_web_session`); ``None`` for a user built outside a sign-in.
    """

    def __init__(self, actor: Actor, session_token: str | None = None) -> None:
        self.actor = actor
        self.session_token = session_token

    def get_id(self) -> str:
        """What flask-login stores in the session cookie: ``<user id>:<session token>``."""
        if self.session_token is None:
            return str(self.actor.user_id)
        return f"{self.actor.user_id}:{self.session_token}"


def current_actor() -> Actor | None:
    """The :class:`Actor` of the signed-in user, ``None`` when anonymous (or outside a request)."""
    user = current_user
    if user is None or not user.is_authenticated:
        return None
    return user.actor


def safe_next_path(target: str | None) -> str:
    """A local path to go to after sign-in; anything else (other hosts, schemes, ``//``) becomes ``/``.

    Args:
        target: The ``next`` value the client sent.
    """
    if not target or len(target) > MAX_NEXT_LENGTH:
        return "/"
    if any(ord(char) < 0x20 or char in "\\\x7f" for char in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    if parts.path in ("/login", "/logout"):
        return "/"
    return target


_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }} · Model Monitoring Studio</title>
  <link rel="icon" href="/_favicon.ico">
  <link rel="stylesheet" href="{{ css_url }}">
</head>
<body class="bg-body-tertiary">
<main class="container py-5"><div class="row justify-content-center"><div class="col-sm-10 col-md-7 col-lg-5">
  <h1 class="h4 mb-4 text-center">Model Monitoring Studio</h1>
  <div class="card shadow-sm"><div class="card-body p-4">
  {% block body %}{% endblock %}
  </div></div>
</div></div></main>
</body>
</html>
"""

LOGIN_TEMPLATE = _PAGE.replace(
    "{% block body %}{% endblock %}",
    """
  <h2 class="h5 mb-3">Sign in</h2>
  {% if message %}
  <div class="alert alert-{{ message_kind }}" role="alert" id="login-message">{{ message }}</div>
  {% endif %}
  <form method="post" action="{{ url_for('auth.login') }}" novalidate>
    <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
    <input type="hidden" name="next" value="{{ next_path }}">
    <div class="mb-3">
      <label class="form-label" for="username">Username</label>
      <input class="form-control" id="username" name="username" value="{{ username }}"
             autocomplete="username" maxlength="64" required autofocus>
    </div>
    <div class="mb-3">
      <label class="form-label" for="password">Password</label>
      <input class="form-control" id="password" name="password" type="password"
             autocomplete="current-password" maxlength="1024" required>
    </div>
    <button class="btn btn-primary w-100" type="submit" id="login-submit">Sign in</button>
  </form>
""",
)

FORBIDDEN_TEMPLATE = _PAGE.replace(
    "{% block body %}{% endblock %}",
    """
  <h2 class="h5 mb-3" id="forbidden-title">Access denied</h2>
  <p id="forbidden-message">{{ message }}</p>
  <p class="text-body-secondary small">Signed in as {{ username }}.</p>
  <div class="d-flex gap-2">
    <a class="btn btn-outline-primary" href="/">Back to the studio</a>
    <form method="post" action="{{ url_for('auth.logout') }}">
      <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
      <button class="btn btn-outline-secondary" type="submit">Sign out</button>
    </form>
  </div>
""",
)


def _render_login(
    *,
    status: int = 200,
    message: str = "",
    message_kind: str = "danger",
    username: str = "",
    next_path: str = "/",
) -> tuple[str, int]:
    html = render_template_string(
        LOGIN_TEMPLATE,
        title="Sign in",
        css_url=BOOTSTRAP_CSS_URL,
        csrf_token=csrf_token(),
        message=message,
        message_kind=message_kind,
        username=username,
        next_path=next_path,
    )
    return html, status


def forbidden_page(message: str) -> tuple[str, int]:
    """The 403 HTML page for a signed-in user who lacks the permission of what they asked for."""
    actor = current_actor()
    html = render_template_string(
        FORBIDDEN_TEMPLATE,
        title="Access denied",
        css_url=BOOTSTRAP_CSS_URL,
        csrf_token=csrf_token(),
        message=message,
        username=actor.username if actor else "nobody",
    )
    return html, 403


@auth.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    """Show the sign-in form (GET) or check the credentials (POST; CSRF checked beforehand)."""
    next_path = safe_next_path(request.values.get("next"))
    if request.method == "GET":
        if current_actor() is not None:
            return redirect(next_path)
        if request.args.get("signed_out"):
            return _render_login(message="You have signed out.", message_kind="info", next_path=next_path)
        return _render_login(next_path=next_path)

    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return _render_login(
            status=400,
            message="Enter your username and password.",
            username=username[:64],
            next_path=next_path,
        )
    if len(username) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        return _render_login(status=400, message="Username or password is too long.", next_path=next_path)

    studio = services()
    address = request.remote_addr
    with session_scope(studio.session_factory) as db:
        wait = studio.login_throttle.retry_after(db, username, address)
    actor, token = None, None
    if not wait:
        with session_scope(studio.session_factory, write=True) as db:
            # Checked again under the write lock so parallel attempts cannot slip past the limit.
            wait = studio.login_throttle.retry_after(db, username, address)
            if not wait:
                user = authenticate(db, username, password)
                actor = actor_for(db, user.id) if user is not None else None
                record_login(db, username, actor is not None, address)
                if actor is not None:
                    token = open_web_session(db, actor.user_id, current_app.permanent_session_lifetime)
    if wait:
        log.warning("sign-in throttled for %r from %s (%d s left)", username, address, wait)
        minutes = max(1, round(wait / 60))
        html, status = _render_login(
            status=429,
            message=f"Too many failed sign-in attempts. Try again in about {minutes} minute(s).",
            username=username,
            next_path=next_path,
        )
        return Response(html, status=status, headers={"Retry-After": str(wait)})
    if actor is None:
        return _render_login(
            status=401, message="Unknown username or wrong password.", username=username, next_path=next_path
        )

    # A fresh session at sign-in: nothing an attacker planted before (session fixation) survives.
    session.clear()
    login_user(StudioUser(actor, token), remember=False, fresh=True)
    session.permanent = True
    rotate_csrf_token()
    return redirect(next_path)


@auth.post("/logout")
def logout() -> Response:
    """Sign out (POST with the CSRF token, so another site cannot sign the user out).

    The server-side session ends too, so a copy of the cookie made before is worthless.
    """
    token = getattr(current_user, "session_token", None)
    if token:
        with db_session(write=True) as db:
            close_web_session(db, token)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login", signed_out=1))


def _load_user(stored_id: str) -> StudioUser | None:
    # The cookie names a user and a server-side session: both must hold (the session unexpired and
    # not signed out, the account active). A cookie of before sessions were kept names no session.
    user_id, _, token = str(stored_id).partition(":")
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    with db_session() as db:
        if web_session_user(db, token) != uid:
            return None
        actor = actor_for(db, uid)
    return StudioUser(actor, token) if actor is not None else None


def init_app(server: Flask) -> LoginManager:
    """Register the sign-in blueprint and flask-login on ``server``.

    Returns:
        The login manager (``session_protection="strong"``: a session whose client
        address or user agent changes is dropped).
    """
    manager = LoginManager()
    manager.session_protection = "strong"
    manager.login_view = "auth.login"
    manager.user_loader(_load_user)
    manager.init_app(server)
    server.register_blueprint(auth)
    return manager
