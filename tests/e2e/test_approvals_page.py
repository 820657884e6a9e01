"""The Approvals page in Debian Chromium: two sponsors approve a production promotion end to end.

The pending request is made through ``jobs.approvals.RequestPromotion`` on the live server's
database (the version facts are given, so no MLflow run is needed); everything after that happens
in the browser: each sponsor opens the inbox, reads the request and its evidence, comments and
approves; the second approval reaches the prod quorum of two and queues the deployment. A user who
is no sponsor sees the request without any decision button, and a decision forged past the page is
refused with 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.security import CSRF_COOKIE_NAME, CSRF_HEADER_NAME
from jobs.approvals import RequestPromotion, VersionInfo
from jobs.db import make_engine, make_session_factory, session_scope
from jobs.db.governance import Deployment, PromotionRequest
from jobs.users import actor_for, get_user
from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import demo_password

pytestmark = pytest.mark.e2e

Screenshot = Callable[[Page, str], Path]
MODEL = "e2e-approvals"
VERSION = VersionInfo(version="4", run_id="e2e4" * 8, artifact_digest="4d" * 32, created_by="mlengineer")
JUSTIFICATION = "AUC +0.03 on staging <b>two weeks</b>"


def _sign_in(page: Page, server: LiveServer, username: str, path: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{server.url}/login?next={path}")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")
    expect(page.locator("#page-title")).to_have_text("Approvals")


def _control(kind: str, request_id: int) -> str:
    # Dash renders a dict id as its JSON text with sorted keys.
    return f"""[id='{{"request":{request_id},"type":"approvals-{kind}"}}']"""


def _pending_request(server: LiveServer, model: str) -> int:
    """A prod promotion request of ``model`` by mlengineer, made through the job on the server's database."""
    engine = make_engine(server.database_url)
    try:
        sessions = make_session_factory(engine)
        with session_scope(sessions) as session:
            requester = actor_for(session, get_user(session, "mlengineer").id)
        request = RequestPromotion(
            requester, "credit-risk", model, VERSION.version, "prod", JUSTIFICATION, version_info=VERSION
        ).run(sessions)
        return request.id
    finally:
        engine.dispose()


def _stored(server: LiveServer, request_id: int) -> tuple[str, list[str]]:
    engine = make_engine(server.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            request = session.get(PromotionRequest, request_id)
            deployments = session.scalars(
                select(Deployment.status).where(Deployment.request_id == request_id)
            )
            return request.status, list(deployments)
    finally:
        engine.dispose()


def _approve(page: Page, request_id: int, comment: str) -> None:
    card = page.locator(f"#approvals-request-{request_id}")
    expect(card).to_contain_text(JUSTIFICATION)
    page.fill(_control("comment", request_id), comment)
    page.click(_control("approve", request_id))


def test_two_sponsors_approve_a_prod_promotion_and_a_deployment_is_queued(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    request_id = _pending_request(live_server, MODEL)
    card = page.locator(f"#approvals-request-{request_id}")

    _sign_in(page, live_server, "sponsor1", "/approvals")
    expect(card).to_contain_text("0 of 2 required")
    expect(card).to_contain_text(VERSION.artifact_digest)
    expect(card).to_contain_text(VERSION.run_id)
    expect(card).to_contain_text("Insufficient data")  # no monitoring metrics for this model yet
    expect(page.locator(f"#approvals-status-{request_id}")).to_have_text("pending")
    screenshot(page, "approvals-sponsor1-inbox")
    _approve(page, request_id, "reviewed the staging run")
    expect(page.locator("#approvals-decision-result")).to_contain_text(
        f"Approval recorded: 1 of 2 for request {request_id}."
    )
    expect(card).to_contain_text("1 of 2 required")
    expect(card).to_contain_text("You approved this request already.")
    expect(page.locator(_control("approve", request_id))).to_have_count(0)
    assert _stored(live_server, request_id) == ("pending", [])

    _sign_in(page, live_server, "sponsor2", "/approvals")
    expect(card).to_contain_text("sponsor1 on")
    _approve(page, request_id, "ship it")
    expect(page.locator("#approvals-decision-result")).to_contain_text(
        f"Request {request_id} approved (2 of 2); deployment"
    )
    expect(page.locator(f"#approvals-status-{request_id}")).to_have_text("approved")
    expect(page.locator(f"#approvals-deployment-{request_id}")).to_contain_text("queued")
    expect(page.locator(_control("approve", request_id))).to_have_count(0)
    screenshot(page, "approvals-sponsor2-approved")
    assert _stored(live_server, request_id) == ("approved", ["queued"])
    assert browser_log.console_errors == [] and browser_log.page_errors == []


def test_a_non_sponsor_sees_no_decision_buttons_and_a_forged_decision_is_refused(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    request_id = _pending_request(live_server, f"{MODEL}-forged")
    _sign_in(page, live_server, "mlengineer", "/approvals")
    card = page.locator(f"#approvals-request-{request_id}")
    expect(card).to_contain_text("0 of 2 required")
    expect(page.locator(_control("approve", request_id))).to_have_count(0)
    expect(page.locator(_control("reject", request_id))).to_have_count(0)
    expect(page.locator("#approvals-request-card")).to_be_visible()  # engineers may request promotions
    screenshot(page, "approvals-mlengineer-inbox")

    csrf = next(cookie["value"] for cookie in page.context.cookies() if cookie["name"] == CSRF_COOKIE_NAME)
    clicked = {"request": request_id, "type": "approvals-approve"}
    forged = page.request.post(
        f"{live_server.url}/_dash-update-component",
        headers={CSRF_HEADER_NAME: csrf, "Content-Type": "application/json"},
        data=json.dumps(
            {
                "output": "..approvals-message.children...approvals-decided.data..",
                "outputs": [
                    {"id": "approvals-message", "property": "children"},
                    {"id": "approvals-decided", "property": "data"},
                ],
                "inputs": [[{"id": clicked, "property": "n_clicks", "value": 1}], []],
                "changedPropIds": [json.dumps(clicked, separators=(",", ":"), sort_keys=True) + ".n_clicks"],
                "state": [[], [], [], [], {"id": "approvals-decided", "property": "data", "value": 0}],
            }
        ),
    )
    assert forged.status == 403
    assert _stored(live_server, request_id) == ("pending", [])
    assert browser_log.console_errors == [] and browser_log.page_errors == []
