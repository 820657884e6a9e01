"""The Integrations page's GitHub webhook card in Debian Chromium: configure, secret never shown, remove."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import demo_password

pytestmark = pytest.mark.e2e

Screenshot = Callable[[Page, str], Path]
REPOSITORY = "example-org/e2e-webhooks"
SECRET = "typed-once-e2e-webhook-secret"


def _sign_in(page: Page, server: LiveServer, username: str, path: str) -> None:
    page.goto(f"{server.url}/login?next={path}")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")


def test_production_configures_and_removes_a_webhook_repository(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    dialogs: list[str] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    _sign_in(page, live_server, "production", "/integrations")
    expect(page.locator("#integration-github-webhook-url")).to_have_text(
        f"{live_server.url}/api/v1/integrations/github/webhook"
    )
    expect(page.locator("#integration-github-manage")).to_be_visible()
    page.select_option("#integration-github-project", "credit-risk")
    page.fill("#integration-github-repository", "not a repository")
    page.fill("#integration-github-secret", SECRET)
    page.click("#integration-github-save")
    expect(page.locator("#integration-github-result")).to_contain_text("must be owner/name")

    page.fill("#integration-github-repository", REPOSITORY)
    page.click("#integration-github-save")
    expect(page.locator("#integration-github-result")).to_contain_text(
        f"Webhooks of {REPOSITORY} are accepted"
    )
    expect(page.locator("#integration-github-secret")).to_have_value("")
    table = page.locator("#integration-github-table")
    expect(table).to_contain_text(REPOSITORY)
    expect(table).to_contain_text("secret set on")
    assert SECRET not in page.content()
    screenshot(page, "production-integrations-github")

    page.reload()
    expect(page.locator("#integration-github-table")).to_contain_text(REPOSITORY)
    assert SECRET not in page.content()
    page.select_option("#integration-github-remove-repository", REPOSITORY)
    page.click("#integration-github-remove-confirm button")
    expect(page.locator("#integration-github-result")).to_contain_text("no longer accepted")
    expect(page.locator("#integration-github-repositories")).not_to_contain_text(REPOSITORY)
    assert dialogs == ["confirm"]
    assert browser_log.console_errors == []
    assert browser_log.page_errors == []
