"""The studio's REST API (``/api/v1``), served by the same server as the web pages.

The API is a Flask app of its own, mounted in front of the studio's WSGI app by
path prefix (:func:`mount`): requests under ``/api/v1`` never pass through the
studio's sign-in, page guard or CSRF check, and requests elsewhere never reach
the API. That separation is the point:

* the API authenticates by bearer token only and never reads the session cookie,
  so a browser signed in to the studio cannot call it (a cross-site page could
  make the browser send the cookie, never the ``Authorization`` header);
* for the same reason it needs no CSRF token, and the studio's CSRF check stays
  unconditional for everything cookie-authenticated.

Both apps share the studio's services (settings, database sessions). The API's
own guard is deny-by-default too: every operation is declared in
:mod:`app.api.views` with the permission it needs (:mod:`app.api.routing`
refuses a token operation without one), and the OpenAPI document served at
``/api/v1/openapi.json`` is generated from the same declarations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response
from werkzeug.exceptions import HTTPException

from app.api.auth import STATE_KEY, ApiState, authenticate
from app.api.errors import ApiError
from app.api.routing import PREFIX, error_response
from app.api.views import API
from app.auth import EXTENSION_KEY, StudioServices, services
from app.security import apply_security_headers

log = logging.getLogger(__name__)

API_EXTENSION_KEY = "mms_api_app"
# The largest body the API reads: GitHub's webhook payload limit (25 MB) plus headroom.
MAX_REQUEST_BYTES = 26 * 1024 * 1024
API_CSP = "default-src 'none'; frame-ancestors 'none'"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PrefixDispatcher:
    """WSGI middleware: requests whose path is under ``prefix`` go to ``api``, the rest to ``studio``.

    The path is passed unchanged, so the API's URL rules carry the full ``/api/v1`` prefix.
    """

    def __init__(self, studio: WSGIApp, api: WSGIApp, prefix: str = PREFIX) -> None:
        self.studio = studio
        self.api = api
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return self.api(environ, start_response)
        return self.studio(environ, start_response)


def create_api_app(studio: StudioServices, *, production: bool = False) -> Flask:
    """Build the API app over the studio's services.

    Args:
        studio: The studio's settings, engine and session factory.
        production: Send HSTS with every answer.

    Returns:
        The Flask app serving ``/api/v1``.
    """
    api_app = Flask("app.api", static_folder=None)
    api_app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, JSON_SORT_KEYS=False)
    api_app.json.sort_keys = False  # type: ignore[attr-defined]
    api_app.extensions[EXTENSION_KEY] = studio
    api_app.extensions[STATE_KEY] = ApiState()
    blueprint = Blueprint("api", __name__)
    API.register(blueprint, authenticate)
    api_app.register_blueprint(blueprint)

    @api_app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        # Routing failures (unknown path, wrong method, oversized body) answer JSON like the rest.
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.code or 500, "http_error"
        )
        response = error_response(ApiError(error.code or 500, code, error.description or error.name))
        if error.code == 405:
            allowed = error.get_response().headers.get("Allow")
            if allowed:
                response.headers["Allow"] = allowed
        return response

    @api_app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.error("unexpected error in the API app", exc_info=error)
        return error_response(ApiError(500, "internal_error", "the studio failed to answer this request"))

    @api_app.after_request
    def _headers(response: Response) -> Response:
        return apply_security_headers(response, API_CSP, production)

    return api_app


def mount(server: Flask) -> Flask:
    """Serve the API at ``/api/v1`` of ``server`` (call once the studio's services are set up).

    Args:
        server: The studio's Flask server (``app.server``).

    Returns:
        The API app (also kept in ``server.extensions["mms_api_app"]``).
    """
    studio = services(server)
    api_app = create_api_app(studio, production=studio.settings.is_production)
    server.wsgi_app = PrefixDispatcher(server.wsgi_app, api_app)  # type: ignore[method-assign]
    server.extensions[API_EXTENSION_KEY] = api_app
    return api_app
