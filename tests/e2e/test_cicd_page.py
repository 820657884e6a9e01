"""The CI/CD page in Debian Chromium: live deployments with their actions, workflow runs, access refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, expect

from jobs.db import make_engine, make_session_factory, session_scope
from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import demo_password
from tests.unit.callbacks.cicd_rows import FAILED_ANALYSIS, PASSED_ANALYSIS, SHA, XSS, add_deployment, add_run

pytestmark = pytest.mark.e2e

Screenshot = Callable[[Page, str], Path]


def _sign_in(page: Page, server: LiveServer, username: str, path: str = "/") -> None:
    page.goto(f"{server.url}/login?next={path}")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")


def _seed(server: LiveServer) -> dict[str, int]:
    engine = make_engine(server.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            return {
                "running": add_deployment(
                    session, "credit-risk", "scorecard", "12", "staging", analysis=PASSED_ANALYSIS
                ),
                "rolled_back": add_deployment(
                    session,
                    "credit-risk",
                    "scorecard",
                    "13",
                    "prod",
                    status="rolled_back",
                    current_step=0,
                    canary_weight=0,
                    reason="success_rate 0.93 < 0.99",
                    analysis=FAILED_ANALYSIS,
                ),
                "run": add_run(
                    session,
                    "credit-risk",
                    880001,
                    versions=[{"model": "scorecard", "version": "12"}],
                    name="Train and register",
                ),
                "markup": add_run(session, "credit-risk", 880002, branch=XSS, name=XSS, sha="b" * 40),
            }
    finally:
        engine.dispose()


def test_production_sees_deployments_and_runs_and_pauses_a_canary(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    ids = _seed(live_server)
    dialogs: list[tuple[str, str]] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append((dialog.type, dialog.message))
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    _sign_in(page, live_server, "production", "/cicd")
    expect(page.locator("#page-title")).to_have_text("CI/CD")
    running_row = page.locator(f"#cicd-deployment-row-{ids['running']}")
    expect(running_row).to_contain_text("step 2 of 4 (25%)")
    expect(running_row).to_contain_text("v12 25%")
    expect(running_row).to_contain_text("2/2 passed")
    expect(page.locator(f"#cicd-deployment-row-{ids['rolled_back']}")).to_contain_text(
        "success_rate 0.93 < 0.99"
    )

    # The newest deployment (rolled back) is selected: its failed analysis and reason, and no action.
    expect(page.locator("#cicd-detail-reason")).to_contain_text("Rolled back: success_rate 0.93 < 0.99")
    expect(page.locator("#cicd-analyses-table")).to_contain_text("fail")
    expect(page.locator("#cicd-pause-confirm-button")).to_be_hidden()

    page.select_option("#cicd-deployment", str(ids["running"]))
    expect(page.locator("#cicd-detail-facts")).to_contain_text(f"#{ids['running']}")
    expect(page.locator("#cicd-pause-confirm-button")).to_be_visible()
    expect(page.locator("#cicd-resume-confirm-button")).to_be_hidden()

    runs = page.locator("#cicd-runs-table")
    expect(page.locator(f"#cicd-run-row-{ids['run']}")).to_contain_text("scorecard v12")
    expect(page.locator(f"#cicd-run-row-{ids['run']}")).to_contain_text(SHA[:7])
    commit = page.locator(f"#cicd-run-row-{ids['run']} a[href$='/commit/{SHA}']")
    expect(commit).to_have_attribute("href", f"https://github.com/example-org/credit-models/commit/{SHA}")
    expect(page.locator(f"#cicd-run-row-{ids['markup']}")).to_contain_text(XSS)
    assert runs.locator("img").count() == 0
    screenshot(page, "production-cicd")

    page.click("#cicd-pause-confirm-button")
    expect(page.locator("#cicd-action-result")).to_contain_text(
        f"Pause requested for deployment #{ids['running']}"
    )
    expect(page.locator("#cicd-detail-requested")).to_contain_text("pause requested")
    expect(page.locator("#cicd-pause-confirm-button")).to_be_hidden()
    assert [kind for kind, _ in dialogs] == ["confirm"]
    screenshot(page, "production-cicd-pause-requested")
    assert browser_log.console_errors == []
    assert browser_log.page_errors == []


def test_a_sponsor_is_refused_the_cicd_page(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "sponsor1", "/cicd")
    expect(page.locator("#forbidden-title")).to_have_text("Access denied")
    expect(page.locator("#forbidden-message")).to_contain_text("CI/CD")
    screenshot(page, "sponsor-cicd-denied")
    assert browser_log.page_errors == []
