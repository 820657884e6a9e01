"""A browser's studio session can not call the API: no bearer token, no access (so no CSRF hole)."""

from __future__ import annotations

import pytest

from tests.unit.app.api.world import MODEL, PROJECT, ApiWorld
from tests.unit.app.studio import csrf_header

pytestmark = pytest.mark.unit

STATE_CHANGING = [
    (
        "POST",
        "/api/v1/promotions",
        {
            "project": PROJECT,
            "model": MODEL,
            "version": "1",
            "target_environment": "dev",
            "justification": "x",
        },
    ),
    (
        "POST",
        "/api/v1/deployments",
        {"project": PROJECT, "model": MODEL, "version": "1", "environment": "dev"},
    ),
    ("POST", "/api/v1/promotions/1/approve", {"version": "1", "run_id": "r", "artifact_digest": "ab" * 32}),
    ("POST", "/api/v1/promotions/1/reject", {"comment": "no"}),
    ("POST", "/api/v1/deployments/1/rollback", {"reason": "x"}),
    ("POST", "/api/v1/alerts/1/acknowledge", {}),
    ("POST", "/api/v1/audit/verify", None),
]


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGING)
def test_a_signed_in_browser_session_alone_is_refused(
    world: ApiWorld, method: str, path: str, body: object
) -> None:
    browser = world.studio.signed_in("admin", "10.3.0.1")
    headers = csrf_header(browser)  # even with the studio's own CSRF token
    response = browser.open(path, method=method, json=body, headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "unauthorized"
    assert "browser session" in response.json["error"]["message"]
    assert "Set-Cookie" not in response.headers


def test_reads_need_the_token_too_and_the_studio_pages_still_work(world: ApiWorld) -> None:
    browser = world.studio.signed_in("admin", "10.3.0.2")
    assert browser.get("/api/v1/projects").status_code == 401
    assert browser.get("/projects").status_code == 200
    # The studio's own CSRF check still guards its cookie-authenticated routes.
    refused = browser.post("/_dash-update-component", json={"output": "x"})
    assert refused.status_code == 400


def test_api_answers_carry_no_cors_grant_and_are_never_cached(world: ApiWorld) -> None:
    response = world.call(
        "admin",
        "GET",
        "/api/v1/projects",
        headers={"Origin": "https://evil.example", "Cookie": "mms_session=x"},
    )
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    preflight = world.client().options(
        "/api/v1/promotions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
