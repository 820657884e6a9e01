"""``create_app()``: build one fully wired studio (Flask server + Dash) from settings.

There is no module-level app: every call returns a new, independent instance
with its own metadata-database engine, so tests can build as many as they need.

Two pieces of Dash state are process-wide and handled here:

* ``@dash.callback`` registrations land in Dash's global list when the
  ``callbacks`` package is first imported, and Dash hands them to the first app
  that serves a request. :func:`_dash_callbacks` takes them once per process and
  :func:`_attach_callbacks` gives every app its own copy.
* ``dash.page_registry`` is global; the ``pages`` modules register themselves the
  first time they are imported, and every app shares the same (stateless) pages.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dash
from flask import Flask

from app import api, auth, rbac, security
from app.auth import EXTENSION_KEY, StudioServices
from app.components import shell_layout
from app.settings import Settings, SettingsError, load_settings
from jobs.db import make_engine, make_session_factory
from jobs.db.migrate import upgrade

ASSETS_FOLDER = Path(__file__).resolve().parent / "assets"
PAGES_PACKAGE = "pages"
CALLBACKS_PACKAGE = "callbacks"
TITLE = "Model Monitoring Studio"
SESSION_LIFETIME = timedelta(hours=12)
REMEMBER_DURATION = timedelta(days=1)
# Callback payloads (uploads included) larger than this are refused with 413.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# How long a finished background job's result waits for the browser to fetch it.
BACKGROUND_RESULT_SECONDS = 60 * 60


@dataclass(frozen=True)
class _CallbackRegistrations:
    callback_map: dict[str, dict[str, Any]]
    callback_list: list[dict[str, Any]]
    inline_scripts: list[str]


@functools.cache
def _dash_callbacks() -> _CallbackRegistrations:
    """Import the ``callbacks`` package once and take what ``@dash.callback`` registered."""
    from dash import _callback as registry

    importlib.import_module(CALLBACKS_PACKAGE)
    taken = _CallbackRegistrations(
        callback_map=dict(registry.GLOBAL_CALLBACK_MAP),
        callback_list=list(registry.GLOBAL_CALLBACK_LIST),
        inline_scripts=list(registry.GLOBAL_INLINE_SCRIPTS),
    )
    # Emptied so no app's first request claims them for itself (Dash pops them into the first app).
    registry.GLOBAL_CALLBACK_MAP.clear()
    registry.GLOBAL_CALLBACK_LIST.clear()
    registry.GLOBAL_INLINE_SCRIPTS.clear()
    return taken


def _attach_callbacks(app: dash.Dash) -> None:
    registrations = _dash_callbacks()
    for output, entry in registrations.callback_map.items():
        copied = dict(entry)
        if isinstance(entry.get("background"), dict):
            copied["background"] = dict(entry["background"])  # Dash pops keys from it at start-up
        app.callback_map[output] = copied
    # Dash keeps these two lists on private attributes; it reads them when serving the page.
    app._callback_list.extend(dict(spec) for spec in registrations.callback_list)
    app._inline_scripts.extend(registrations.inline_scripts)


def _import_pages() -> None:
    package = importlib.import_module(PAGES_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{PAGES_PACKAGE}.{module.name}")


def _job_key() -> str:
    # Part of every background job's cache key: two users starting the same job with the same
    # inputs get two jobs, never each other's progress or result.
    return secrets.token_hex(16)


class _CeleryJobManager(dash.CeleryManager):
    """Dash's Celery manager whose cancel kills the job's pool process, as the diskcache manager does.

    Dash cancels with Celery's default SIGTERM, which the prefork pool turns into ``SystemExit``
    inside the job: raised while DuckDB or another library runs C code it surfaces as an ordinary
    exception ("Query interrupted"), the job catches it as a failure and goes on to report it,
    so the job is not reliably stopped. SIGKILL always stops it; the worker replaces the process.
    """

    def terminate_job(self, job: Any) -> None:
        if job is None:
            return
        self.handle.control.terminate(job, signal="SIGKILL")


def make_background_manager(settings: Settings) -> Any:
    """The manager that runs the studio's background callbacks (training, backfills).

    ``diskcache`` (default): jobs run in processes of their own on the web worker's host
    (:class:`app.background_jobs.ForkserverJobManager`: forked from a fork server, never from
    the multi-threaded worker) and keep results and progress in
    ``settings.background_cache_dir``, shared by every worker of the host.
    ``celery``: jobs are sent to Celery workers through
    ``settings.background_broker_url`` (Redis); the workers must build the studio with the
    same settings so the same callbacks are registered as tasks.

    Raises:
        SettingsError: if ``celery`` is chosen but the ``celery`` package is not installed.
    """
    if settings.background_manager == "celery":
        try:
            from celery import Celery
        except ImportError:
            raise SettingsError(
                "MMS_BACKGROUND_MANAGER=celery needs the celery package (pip install 'celery[redis]')"
            ) from None
        broker = settings.background_broker_url
        celery_app = Celery("mms-background", broker=broker, backend=broker)
        return _CeleryJobManager(celery_app, cache_by=[_job_key], expire=BACKGROUND_RESULT_SECONDS)
    import diskcache

    from app.background_jobs import ForkserverJobManager

    settings.background_cache_dir.mkdir(parents=True, exist_ok=True)
    cache = diskcache.Cache(str(settings.background_cache_dir))
    return ForkserverJobManager(cache, settings, cache_by=[_job_key], expire=BACKGROUND_RESULT_SECONDS)


def _make_server(settings: Settings) -> Flask:
    production = settings.is_production
    server = Flask("app", static_folder=None)
    server.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="mms_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=production,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # Send the session cookie only when the session changes (sign-in, sign-out). Refreshed on
        # every response, a callback answered after the sign-out put the signed-in cookie back
        # (the browser keeps the last Set-Cookie it gets): the sign-out did not stick. It also
        # makes the 12-hour lifetime absolute from sign-in instead of sliding.
        SESSION_REFRESH_EACH_REQUEST=False,
        REMEMBER_COOKIE_NAME="mms_remember",
        REMEMBER_COOKIE_DURATION=REMEMBER_DURATION,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=production,
        REMEMBER_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
    )
    server.debug = settings.debug and not production
    return server


def create_app(settings: Settings | None = None) -> dash.Dash:
    """Build the studio: Flask server, sign-in, RBAC guard, security headers and the Dash pages.

    Outside production the metadata database is migrated here, so a fresh
    checkout runs with ``python -m app`` alone. In production migrations are a
    deliberate step (``python -m jobs migrate``) and never run from web workers.

    Args:
        settings: Settings to use; read from the ``MMS_*`` environment when ``None``.

    Returns:
        The Dash app; ``app.server`` is the WSGI application.

    Raises:
        SettingsError: if the settings lack a secret key, or name a background manager
            that cannot be built.
        ValueError: if a page declares no valid permission or no layout function.
        RuntimeError: if a callback lacks ``@requires``.
    """
    settings = settings if settings is not None else load_settings()
    if len(settings.secret_key) < 32:
        raise SettingsError("the studio needs a secret key of at least 32 characters (MMS_SECRET_KEY)")
    if not settings.is_production:
        upgrade(settings.database_url)

    server = _make_server(settings)
    engine = make_engine(settings.database_url)
    server.extensions[EXTENSION_KEY] = StudioServices(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        login_throttle=security.LoginThrottle(),
    )
    app = dash.Dash(
        "app",
        server=server,
        use_pages=True,
        # Pages are imported as the regular package `pages` (see _import_pages), not by file path.
        pages_folder="",
        assets_folder=str(ASSETS_FOLDER),
        serve_locally=True,
        # Load plotly.js with the page's other scripts rather than once the first graph is laid out:
        # the Monitoring page's first full render went from ~1.9 s to ~1.2 s (median, loaded machine).
        eager_loading=True,
        suppress_callback_exceptions=True,
        external_stylesheets=[security.BOOTSTRAP_CSS_URL],
        title=TITLE,
        update_title=None,
        csrf_token_name=security.CSRF_COOKIE_NAME,
        csrf_header_name=security.CSRF_HEADER_NAME,
        enable_mcp=False,
        background_callback_manager=make_background_manager(settings),
    )
    _import_pages()
    _attach_callbacks(app)
    auth.init_app(server)
    security.init_app(server, production=settings.is_production, script_hashes=app.csp_hashes)
    rbac.init_app(app)
    api.mount(server)  # /api/v1: bearer-token REST API, dispatched before the studio's session guards
    _serve_as_current_dash_app(app)
    app.layout = shell_layout
    return app


def _serve_as_current_dash_app(app: dash.Dash) -> None:
    """Make ``app`` what ``dash.get_app()`` answers while it serves a request.

    Dash's callback dispatch does not set its app context, so ``get_app()`` falls back to the
    app built last in the process. In a process holding two studios (tests; several studios
    behind one WSGI dispatcher) the first one's background jobs then went wrong: their handles
    were signed with the other studio's secret, so its own Cancel callback ignored them, and with
    ``MMS_BACKGROUND_MANAGER=celery`` a job went to the other studio's broker, where no worker
    of this studio ever received it.
    """
    from dash._get_app import app_context

    def set_current_app() -> None:
        app_context.set(app)

    app.server.before_request(set_current_app)
