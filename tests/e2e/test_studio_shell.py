"""The studio shell in Debian Chromium: sign-in per role, navigation, pages, sign-out, XSS, CSRF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from jobs.db import make_engine, make_session_factory, session_scope
from jobs.projects import create_project
from jobs.users import actor_for, get_user
from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import NAVIGATION_BY_USER, PAGE_PATHS, demo_password

pytestmark = pytest.mark.e2e

XSS_NAME = "<img src=x onerror=alert(1)>"
NAV_LINKS = "#nav-bar a.nav-link[id^='nav-link-']"


def _sign_in(page: Page, server: LiveServer, username: str, path: str = "/login") -> None:
    page.goto(f"{server.url}{path}")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")
    expect(page.locator("#page-title")).to_be_visible()


def _slug(name: str) -> str:
    return name.lower().replace("/", "").replace(" ", "-")


def _sign_out(page: Page) -> None:
    """Sign out through the user menu and wait for the sign-in page, however slow the server is."""
    page.click("#nav-user-menu")
    expect(page.locator("#nav-sign-out")).to_be_visible()
    page.click("#nav-sign-out")
    page.wait_for_url("**/login?signed_out=1", timeout=60_000)


def _assert_clean(log: BrowserLog) -> None:
    assert log.console_errors == []
    assert log.page_errors == []


@pytest.mark.parametrize("username", list(NAVIGATION_BY_USER))
def test_each_role_sees_its_pages_and_signs_out(
    page: Page,
    live_server: LiveServer,
    browser_log: BrowserLog,
    screenshot: Callable[[Page, str], Path],
    username: str,
) -> None:
    _sign_in(page, live_server, username)
    expect(page.locator("#page-title")).to_have_text("Dashboard")
    expect(page.locator("#dashboard-greeting")).to_contain_text("Welcome, ")
    expect(page.locator("#dashboard-roles table, #dashboard-roles p").first).to_be_visible()
    allowed = NAVIGATION_BY_USER[username]
    expect(page.locator(NAV_LINKS)).to_have_text(list(allowed))
    screenshot(page, f"{username}-dashboard")

    for name in allowed:
        page.locator(NAV_LINKS, has_text=name).first.click()
        expect(page.locator("#page-title")).to_have_text(name)
        assert page.url == f"{live_server.url}{PAGE_PATHS[name]}"
        expect(page.locator("#page-description")).not_to_be_empty()
        if name == "Projects":
            expect(page.locator("#projects-list")).to_contain_text("Credit risk")
        if username == "admin":
            screenshot(page, f"page-{_slug(name)}")

    # Sign out from the Dashboard once its callbacks have answered. The CI/CD page polls every 5 s,
    # and a poll racing the sign-out is (rightly) refused for its stale CSRF token, which shows up
    # as a console error; a click while callbacks are in flight can also be lost to a re-render.
    page.locator(NAV_LINKS, has_text="Dashboard").first.click()
    expect(page.locator("#page-title")).to_have_text("Dashboard")
    page.wait_for_load_state("networkidle")
    _sign_out(page)
    expect(page.locator("#login-message")).to_have_text("You have signed out.")
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(f"{live_server.url}/login?next=/")
    _assert_clean(browser_log)


def test_forbidden_page_is_refused_with_a_way_out(
    page: Page, live_server: LiveServer, screenshot: Callable[[Page, str], Path]
) -> None:
    _sign_in(page, live_server, "sponsor1")
    response = page.goto(f"{live_server.url}/pipeline")
    assert response is not None and response.status == 403
    expect(page.locator("#forbidden-message")).to_have_text("Your roles do not include access to Pipeline.")
    screenshot(page, "sponsor1-forbidden-pipeline")
    page.click("text=Back to the studio")
    expect(page.locator("#page-title")).to_have_text("Dashboard")


def test_deep_link_survives_sign_in(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Callable[[Page, str], Path]
) -> None:
    page.goto(f"{live_server.url}/monitoring")
    expect(page).to_have_url(f"{live_server.url}/login?next=/monitoring")
    screenshot(page, "login")
    page.fill("#username", "monitoring")
    page.fill("#password", demo_password("monitoring"))
    page.click("#login-submit")
    expect(page.locator("#page-title")).to_have_text("Monitoring")
    assert page.url == f"{live_server.url}/monitoring"
    _assert_clean(browser_log)


def test_project_name_with_markup_renders_as_text(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Callable[[Page, str], Path]
) -> None:
    engine = make_engine(live_server.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            admin = actor_for(session, get_user(session, "admin").id)
            create_project(session, admin, "markup-name", XSS_NAME, "A name that looks like HTML.")
    finally:
        engine.dispose()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _sign_in(page, live_server, "admin", "/login?next=/projects")
    table = page.locator("#projects-list")
    expect(table).to_contain_text(XSS_NAME)
    assert table.locator("img").count() == 0
    screenshot(page, "admin-projects-markup-name")
    page.locator(NAV_LINKS, has_text="Dashboard").click()
    expect(page.locator("#dashboard-roles")).to_contain_text(XSS_NAME)
    assert page.locator("#dashboard-roles img").count() == 0
    assert dialogs == []
    assert "x" not in [Path(url).name for url in browser_log.requests]  # no <img src=x> was ever fetched
    _assert_clean(browser_log)


def test_renderer_sends_the_csrf_header_and_a_bare_post_is_refused(
    page: Page, live_server: LiveServer, browser_log: BrowserLog
) -> None:
    callback_headers: list[dict[str, str]] = []
    page.on(
        "request",
        lambda request: (
            callback_headers.append(request.headers)
            if request.url.split("?")[0].endswith("/_dash-update-component")
            else None
        ),
    )
    _sign_in(page, live_server, "datateam", "/login?next=/projects")
    expect(page.locator("#projects-list")).to_contain_text("Demand forecast")
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "mms_csrf")
    assert callback_headers and all(headers.get("x-csrftoken") == cookie for headers in callback_headers)
    statuses = page.evaluate(
        """async (token) => {
            const body = JSON.stringify({output: "projects-table.children",
                outputs: {id: "projects-table", property: "children"},
                inputs: [{id: "projects-table", property: "id", value: "projects-table"}],
                changedPropIds: [], state: []});
            const post = (headers) => fetch("/_dash-update-component",
                {method: "POST", headers: {"Content-Type": "application/json", ...headers}, body});
            return [(await post({})).status, (await post({"X-CSRFToken": "forged"})).status,
                    (await post({"X-CSRFToken": token})).status];
        }""",
        cookie,
    )
    assert statuses == [400, 400, 200]
    browser_log.console_errors.clear()  # the two refused fetches log "Failed to load resource"
    _assert_clean(browser_log)
