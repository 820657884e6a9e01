"""Bearer-token authentication and rate limits of the API.

The API never looks at cookies: a request is authenticated by its
``Authorization: Bearer mms_...`` header alone, so a browser's studio session can
not call it (and cross-site requests cannot add that header without a CORS
preflight, which the API never grants). That is also why the API needs no CSRF token.

Limits (per API app instance, so per worker process):

* each token: :data:`TOKEN_REQUESTS_PER_MINUTE` requests per minute;
* each client address: :data:`FAILURES_PER_MINUTE` failed authentications
  (bad token or webhook signature) per minute; past that every request from the
  address is answered 429 until the minute has passed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app, request

from app.api.errors import ApiError
from app.auth import services
from jobs import tokens
from jobs.db.session import session_scope
from jobs.permissions import Actor

TOKEN_REQUESTS_PER_MINUTE = 1200
FAILURES_PER_MINUTE = 30
WINDOW_SECONDS = 60.0
MAX_TRACKED_KEYS = 10_000
STATE_KEY = "mms_api"
_CHALLENGE = 'Bearer realm="mms-api"'


@dataclass
class RateLimiter:
    """A sliding-window counter per key.

    Attributes:
        limit: Events allowed per window.
        window: Window length in seconds.
        clock: Monotonic clock (injectable for tests).
    """

    limit: int
    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _events: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= MAX_TRACKED_KEYS:
                self._events.clear()  # bounded memory: forgetting counts only ever lets requests through
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may act again; 0 when it is within its limit now."""
        now = self.clock()
        with self._lock:
            events = self._recent(key, now)
            if len(events) < self.limit:
                return 0
            return max(1, int(events[0] + self.window - now) + 1)

    def hit(self, key: str) -> int:
        """Count one event for ``key``; returns :meth:`retry_after` as it was before counting."""
        now = self.clock()
        with self._lock:
            events = self._recent(key, now)
            if len(events) >= self.limit:
                return max(1, int(events[0] + self.window - now) + 1)
            events.append(now)
            return 0


@dataclass
class ApiState:
    """What one API app keeps between requests.

    Attributes:
        token_limiter: Requests per token.
        failure_limiter: Failed authentications per client address.
        extras: Lazily built helpers (the Parquet store), keyed by name.
    """

    token_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(TOKEN_REQUESTS_PER_MINUTE))
    failure_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(FAILURES_PER_MINUTE))
    extras: dict[str, object] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def api_state() -> ApiState:
    """The :class:`ApiState` of the API app handling the current request."""
    return current_app.extensions[STATE_KEY]


def _too_many(seconds: int, what: str) -> ApiError:
    return ApiError(429, "rate_limited", f"{what}: retry in {seconds} s", {"Retry-After": str(seconds)})


def _client() -> str:
    return request.remote_addr or "unknown"


def refuse_if_blocked() -> None:
    """Answer 429 when the client address failed to authenticate too often this minute.

    Raises:
        ApiError: 429 with ``Retry-After``.
    """
    wait = api_state().failure_limiter.retry_after(_client())
    if wait:
        raise _too_many(wait, "too many failed authentications from this address")


def record_failure() -> None:
    """Count a failed authentication of the client address."""
    api_state().failure_limiter.hit(_client())


def unauthorized(message: str, error: str = "invalid_token") -> ApiError:
    """A 401 with the ``WWW-Authenticate`` challenge."""
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": f'{_CHALLENGE}, error="{error}"'})


def authenticate() -> tuple[Actor, int]:
    """Resolve the request's bearer token: the scoped actor and the token id.

    Raises:
        ApiError: 401 without a valid token, 429 over a rate limit.
    """
    refuse_if_blocked()
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        record_failure()
        raise unauthorized(
            "send an API token as Authorization: Bearer <token> (a browser session does not work here)",
            error="invalid_request",
        )
    studio = services()
    try:
        with session_scope(studio.session_factory) as session:
            identity = tokens.authenticate(session, presented.strip())
    except tokens.InvalidToken as error:
        record_failure()
        raise unauthorized(str(error)) from None
    wait = api_state().token_limiter.hit(f"token:{identity.token_id}")
    if wait:
        raise _too_many(wait, f"token {identity.prefix} sent more than {TOKEN_REQUESTS_PER_MINUTE} requests")
    if identity.stale:
        with session_scope(studio.session_factory, write=True) as session:
            tokens.mark_used(session, identity.token_id)
    return identity.actor, identity.token_id
