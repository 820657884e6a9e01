"""JSON errors of the API: ``{"error": {"code": ..., "message": ...}}`` with a fitting HTTP status.

Handlers raise :class:`ApiError` (or let a job's exception through); :func:`from_exception`
maps the job errors to statuses in one place:

=========================================  ======  =====================
exception                                  status  code
=========================================  ======  =====================
:class:`ApiError`                          its own its own
``RequestNotFound``, :class:`NotFound`     404     ``not_found``
``jobs.permissions.Forbidden`` (+ kinds)   403     ``forbidden``
``jobs.users.InvalidInput``                422     ``invalid_input``
``jobs.users.Conflict`` (+ kinds)          409     ``conflict``
=========================================  ======  =====================

Anything else is a bug: it is logged with its traceback and answered with a 500
that names nothing internal.
"""

from __future__ import annotations

import logging
from typing import Any

from jobs.approvals import RequestNotFound
from jobs.permissions import Forbidden
from jobs.users import Conflict, InvalidInput

log = logging.getLogger(__name__)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable reason."},
                "message": {"type": "string", "description": "What went wrong, for people."},
            },
        }
    },
}

STATUS_TEXT = {
    400: "The request is malformed (not JSON, or a required header is missing).",
    401: "No valid bearer token (missing, unknown, revoked or expired).",
    403: "The token's roles do not include the permission this needs on that project.",
    404: "No such resource.",
    405: "The method is not allowed on this path.",
    409: "The request conflicts with the resource's current state.",
    413: "The request body is too large.",
    422: "A parameter or body field is invalid.",
    429: "Too many requests: wait for the number of seconds in Retry-After.",
    500: "Internal error.",
    503: "A required service is misconfigured or unavailable.",
}


class NotFound(Conflict):
    """A resource the request names does not exist (answered 404)."""


class ApiError(Exception):
    """An error answered as JSON.

    Attributes:
        status: HTTP status.
        code: Machine-readable reason (``invalid_token``, ``not_found``...).
        message: Explanation for people.
        headers: Extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message}}


def from_exception(error: BaseException) -> ApiError:
    """The :class:`ApiError` to answer for ``error`` (500 for anything unexpected)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, RequestNotFound | NotFound):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, Forbidden):
        return ApiError(403, "forbidden", str(error))
    if isinstance(error, InvalidInput):
        return ApiError(422, "invalid_input", str(error))
    if isinstance(error, Conflict):
        return ApiError(409, "conflict", str(error))
    log.error("unexpected error in an API request", exc_info=error)
    return ApiError(500, "internal_error", "the studio failed to answer this request; see its log")
