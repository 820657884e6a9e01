"""Projects, Pipeline, Models, Integrations, Admin and Audit pages in Debian Chromium."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from jobs.db import make_engine, make_session_factory, session_scope
from jobs.projects import create_project
from jobs.users import actor_for, get_user
from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import demo_password

pytestmark = pytest.mark.e2e

XSS_NAME = "<img src=x onerror=alert(1)>"
Screenshot = Callable[[Page, str], Path]


def _sign_in(page: Page, server: LiveServer, username: str, path: str = "/") -> None:
    page.goto(f"{server.url}/login?next={path}")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")
    expect(page.locator("#page-title")).to_be_visible()


def _assert_clean(log: BrowserLog) -> None:
    assert log.console_errors == []
    assert log.page_errors == []


def _field(name: str) -> str:
    # Dash renders a dict id as its JSON text with sorted keys.
    return f"""[id='{{"name":"{name}","type":"pipeline-field"}}']"""


def _click_dag_node(page: Page, stage: str) -> None:
    """Click a node of the cytoscape DAG where it is drawn (cytoscape keeps its instance on the container)."""
    where = """(stage) => {
        const candidates = document.querySelectorAll('#pipeline-dag, #pipeline-dag div');
        const container = [...candidates].find((el) => el._cyreg);
        const node = container && container._cyreg.cy.getElementById(stage);
        if (!node || node.empty()) { return null; }
        const box = container.getBoundingClientRect();
        const at = node.renderedPosition();
        return {x: Math.round(box.left + at.x), y: Math.round(box.top + at.y)};
    }"""
    # Wait until the graph has been laid out and fitted: the same position twice in a row.
    previous = None
    for _attempt in range(50):
        position = page.evaluate(where, stage)
        if position is not None and position == previous:
            break
        previous = position
        page.wait_for_timeout(100)
    assert position is not None, f"no {stage} node in the DAG"
    page.mouse.click(position["x"], position["y"])


def test_admin_creates_a_project_and_sees_it(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "admin", "/projects")
    expect(page.locator("#projects-list")).to_contain_text("Credit risk")
    page.fill("#project-create-slug", "fraud-watch")
    page.fill("#project-create-name", "Fraud watch")
    page.fill("#project-create-description", "Card fraud scoring.")
    page.click("#project-create")
    expect(page.locator("#project-create-message")).to_contain_text(
        "Project Fraud watch (fraud-watch) created"
    )
    expect(page.locator("#projects-list")).to_contain_text("Fraud watch")
    page.select_option("#project-select", "fraud-watch")
    environments = page.locator("#project-environments-table tbody tr")
    expect(environments).to_have_count(3)
    expect(environments.nth(2)).to_contain_text("prod")
    expect(environments.nth(2)).to_contain_text("2")
    expect(page.locator("#project-edit-name")).to_have_value("Fraud watch")

    # A duplicate slug is refused with the job's message and nothing else changes.
    page.click("#project-create")
    expect(page.locator("#project-create-message")).to_contain_text("already taken")
    screenshot(page, "admin-projects-create")
    _assert_clean(browser_log)


def test_pipeline_dag_renders_and_production_locks_a_node(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "production", "/pipeline")
    expect(page.locator("#pipeline-stages tbody tr")).to_have_count(8)
    expect(page.locator("#pipeline-dag canvas").first).to_be_visible()
    expect(page.locator("#pipeline-node-facts")).to_contain_text("Ingestion")
    # Production may lock but not edit: the form and the save button are disabled.
    expect(page.locator("#pipeline-node-save")).to_be_disabled()
    expect(page.locator(_field("source_uri"))).to_be_disabled()

    _click_dag_node(page, "monitoring")
    expect(page.locator("#pipeline-stage")).to_have_value("monitoring")
    expect(page.locator("#pipeline-node-facts")).to_contain_text("Monitoring")
    page.fill("#pipeline-node-lock-reason", "release freeze")
    page.click("#pipeline-node-lock")
    expect(page.locator("#pipeline-node-message")).to_contain_text("Monitoring locked")
    expect(page.locator("#pipeline-row-monitoring")).to_contain_text("locked by production")
    expect(page.locator("#pipeline-node-unlock")).to_be_enabled()
    screenshot(page, "production-pipeline-locked")
    page.click("#pipeline-node-unlock")
    expect(page.locator("#pipeline-node-message")).to_contain_text("Monitoring unlocked")
    expect(page.locator("#pipeline-row-monitoring")).to_contain_text("unlocked")
    _assert_clean(browser_log)


def test_data_team_edits_a_stage_configuration(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "datateam", "/pipeline")
    expect(page.locator("#pipeline-stages tbody tr")).to_have_count(8)
    page.fill(_field("source_uri"), "s3://raw-data/credit")
    page.fill(_field("schedule"), "99 * * * *")
    page.click("#pipeline-node-save")
    expect(page.locator("#pipeline-node-message")).to_contain_text("schedule: is not a valid cron expression")
    page.fill(_field("schedule"), "0 * * * *")
    page.click("#pipeline-node-save")
    expect(page.locator("#pipeline-node-message")).to_contain_text("Ingestion configuration saved")
    expect(page.locator("#pipeline-row-ingestion")).to_contain_text("configured")
    expect(page.locator(_field("source_uri"))).to_have_value("s3://raw-data/credit")
    screenshot(page, "datateam-pipeline-configured")
    _assert_clean(browser_log)


def test_audit_page_shows_entries_and_the_chain_verifies(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "admin", "/audit")
    rows = page.locator("#audit-table tbody tr")
    expect(rows.first).to_be_visible()
    expect(page.locator("#audit-table")).to_contain_text("project.create")
    page.fill("#audit-filter-action", "user.role")
    page.click("#audit-filter-apply")
    expect(page.locator("#audit-table")).to_contain_text("user.role_grant")
    expect(page.locator("#audit-table")).not_to_contain_text("project.create")
    page.click("#audit-verify")
    expect(page.locator("#audit-verify-main")).to_contain_text("Chain 'main' is intact")
    screenshot(page, "admin-audit-verified")
    _assert_clean(browser_log)


def test_admin_integrations_models_and_settings_pages(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    _sign_in(page, live_server, "admin", "/integrations")
    expect(page.locator("#integration-facts-data-store")).to_contain_text("Data root")
    page.click("#integration-check-data-store")
    expect(page.locator("#integration-result-data-store")).to_contain_text("Connected")
    page.click("#integration-check-github")
    expect(page.locator("#integration-result-github")).to_contain_text("no repository configured")
    screenshot(page, "admin-integrations")

    page.goto(f"{live_server.url}/models")
    expect(page.locator("#models-empty")).to_contain_text("No model of this project is registered yet")
    screenshot(page, "admin-models-empty")

    page.goto(f"{live_server.url}/admin")
    expect(page.locator("#admin-users-table")).to_contain_text("production")
    expect(page.locator("#admin-roles-table")).to_contain_text("Production Team")
    settings = page.locator("#admin-settings-table")
    expect(settings).to_contain_text("secret_key")
    expect(settings).to_contain_text("set (hidden)")
    secret = (Path(live_server.env["MMS_VAR_DIR"]) / "secret_key").read_text().strip()
    assert secret not in page.content()
    screenshot(page, "admin-admin")
    _assert_clean(browser_log)


def test_markup_in_a_project_name_renders_as_text_everywhere(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    engine = make_engine(live_server.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            admin = actor_for(session, get_user(session, "admin").id)
            create_project(session, admin, "markup-pages", XSS_NAME, f"{XSS_NAME} description")
    finally:
        engine.dispose()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _sign_in(page, live_server, "admin", "/projects")
    page.select_option("#project-select", "markup-pages")
    expect(page.locator("#project-edit-name")).to_have_value(XSS_NAME)
    expect(page.locator("#project-select")).to_contain_text(XSS_NAME)
    page.goto(f"{live_server.url}/pipeline")
    expect(page.locator("#pipeline-project")).to_contain_text(XSS_NAME)
    page.goto(f"{live_server.url}/audit")
    page.fill("#audit-filter-action", "project.create")
    page.click("#audit-filter-apply")
    expect(page.locator("#audit-table")).to_contain_text(XSS_NAME)
    assert page.locator("#audit-table img, #page-content img, select img").count() == 0
    screenshot(page, "admin-audit-markup-name")
    assert dialogs == []
    _assert_clean(browser_log)
