"""JSON errors for every failure status, rate limits, and cursor pagination with next links."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest

from app.api import API_EXTENSION_KEY
from app.api.auth import STATE_KEY, ApiState, RateLimiter
from tests.unit.app.api.world import MODEL, PROJECT, ApiWorld

pytestmark = pytest.mark.unit


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    assert set(response.json) == {"error"} and set(response.json["error"]) == {"code", "message"}
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    return response.json["error"]["message"]


def test_each_failure_status_answers_the_same_json_error_shape(world: ApiWorld) -> None:
    client = world.client("10.2.0.1")
    auth = {"Authorization": f"Bearer {world.tokens['mlengineer']}"}
    not_json = client.post("/api/v1/promotions", data="{oops", headers=auth, content_type="application/json")
    assert "not valid JSON" in _error(not_json, 400, "bad_request")
    form = client.post("/api/v1/promotions", data={"project": PROJECT}, headers=auth)
    assert "Content-Type: application/json" in _error(form, 400, "bad_request")
    _error(world.call(None, "GET", "/api/v1/projects", address="10.2.0.2"), 401, "unauthorized")
    _error(world.call("datateam", "POST", "/api/v1/audit/verify"), 403, "forbidden")
    _error(world.call("admin", "GET", "/api/v1/projects/no-such-project"), 404, "not_found")
    _error(world.call("admin", "GET", "/api/v1/promotions/999999"), 404, "not_found")
    _error(world.call("admin", "GET", "/api/v1/deployments/999999"), 404, "not_found")
    alert_id = world.take_alert()
    assert world.call("monitoring", "POST", f"/api/v1/alerts/{alert_id}/acknowledge", {}).status_code == 200
    _error(world.call("monitoring", "POST", f"/api/v1/alerts/{alert_id}/acknowledge", {}), 409, "conflict")
    message = _error(world.call("admin", "GET", "/api/v1/projects?limit=0"), 422, "invalid_input")
    assert "limit" in message
    _error(world.call("admin", "GET", "/api/v1/promotions/abc"), 422, "invalid_input")
    _error(world.call("admin", "GET", "/api/v1/promotions?status=maybe"), 422, "invalid_input")
    misspelt = _error(world.call("admin", "GET", "/api/v1/promotions?stauts=pending"), 422, "invalid_input")
    assert "stauts" in misspelt and "status" in misspelt
    message = _error(
        world.call("mlengineer", "POST", "/api/v1/promotions", {"project": PROJECT, "model": MODEL}),
        422,
        "invalid_input",
    )
    assert "version" in message
    big = client.post(
        "/api/v1/promotions",
        data=b"[" + b"1," * 600_000 + b"1]",
        headers=auth,
        content_type="application/json",
    )
    _error(big, 413, "payload_too_large")


@contextmanager
def _limits(world: ApiWorld, *, per_token: int, failures: int) -> Iterator[None]:
    api_app = world.studio.app.server.extensions[API_EXTENSION_KEY]
    saved = api_app.extensions[STATE_KEY]
    api_app.extensions[STATE_KEY] = ApiState(
        token_limiter=RateLimiter(per_token), failure_limiter=RateLimiter(failures)
    )
    try:
        yield
    finally:
        api_app.extensions[STATE_KEY] = saved


def test_too_many_requests_per_token_or_failed_authentications_get_429(world: ApiWorld) -> None:
    with _limits(world, per_token=3, failures=2):
        statuses = [world.call("datateam", "GET", "/api/v1/projects").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = world.call("datateam", "GET", "/api/v1/projects")
        _error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 61
        assert (
            world.call("production", "GET", "/api/v1/projects").status_code == 200
        )  # other tokens unaffected

        bad = [
            world.call(None, "GET", "/api/v1/projects", token="mms_" + "x" * 43, address="10.2.1.1")
            for _ in range(3)
        ]
        assert [r.status_code for r in bad] == [401, 401, 429]
        # Once an address is blocked even a valid token waits; other addresses do not.
        assert world.call("production", "GET", "/api/v1/projects", address="10.2.1.1").status_code == 429
        assert world.call("production", "GET", "/api/v1/projects", address="10.2.1.2").status_code == 200


def test_rate_limiter_windows_slide() -> None:
    now = [100.0]
    limiter = RateLimiter(2, window=60.0, clock=lambda: now[0])
    assert [limiter.hit("k"), limiter.hit("k")] == [0, 0]
    assert limiter.hit("k") == 61
    now[0] += 30
    assert limiter.retry_after("k") == 31
    now[0] += 31
    assert limiter.hit("k") == 0 and limiter.retry_after("other") == 0


def _walk(world: ApiWorld, user: str, first: str, key: str) -> list:
    seen, url, pages = [], first, 0
    while url:
        response = world.call(user, "GET", url)
        assert response.status_code == 200, response.json
        payload = response.json
        seen.extend(item[key] for item in payload["items"])
        if payload["next"]:
            assert response.headers["Link"] == f'<{payload["next"]}>; rel="next"'
            assert parse_qs(urlsplit(payload["next"]).query)["cursor"] == [payload["next_cursor"]]
        else:
            assert payload["next_cursor"] is None and "Link" not in response.headers
        url, pages = payload["next"], pages + 1
    assert pages > 1
    return seen


def test_cursor_pages_cover_every_item_once_in_order(world: ApiWorld) -> None:
    audit = _walk(world, "monitoring", "/api/v1/audit?limit=7", "seq")
    everything = world.call("monitoring", "GET", "/api/v1/audit?limit=200").json["items"]
    assert audit[: len(everything)] == [e["seq"] for e in everything]
    assert audit == sorted(audit, reverse=True) and len(audit) == len(set(audit))
    assert audit[-1] == 1

    metrics = _walk(world, "monitoring", f"/api/v1/metrics?project={PROJECT}&model={MODEL}&limit=5", "column")
    assert len(metrics) == 24
    alerts = _walk(world, "monitoring", f"/api/v1/alerts?project={PROJECT}&limit=3", "id")
    assert len(alerts) == len(set(alerts)) >= 8
    projects = _walk(world, "admin", "/api/v1/projects?limit=1", "slug")
    assert projects == ["credit-risk", "demand-forecast"]


def test_a_cursor_from_elsewhere_is_refused(world: ApiWorld) -> None:
    first = world.call("monitoring", "GET", "/api/v1/audit?limit=2").json
    other_list = world.call("monitoring", "GET", f"/api/v1/alerts?cursor={first['next_cursor']}")
    _error(other_list, 422, "invalid_input")
    _error(world.call("monitoring", "GET", "/api/v1/audit?cursor=bm90LWEtY3Vyc29y"), 422, "invalid_input")
