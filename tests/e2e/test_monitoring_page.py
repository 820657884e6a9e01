"""The monitoring page and the dashboard in Debian Chromium, on the monitored demo workspace.

The session's ``live_server`` starts with an empty data folder; the studio reads the Parquet store on
every request, so the module fixture copies the monitored demo workspace (built by the demo generator
and the monitoring job, see ``tests/unit/analytics/test_metrics.py``) into that folder before the
first page is opened. Projects ``credit-risk`` and ``demand-forecast`` come from the server's seed.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from jobs.db import make_engine, make_session_factory, session_scope
from jobs.projects import create_project
from jobs.users import actor_for, get_user
from tests.fixtures.browser import SCREENSHOT_DIR, BrowserLog, LiveServer
from tests.unit.analytics.test_metrics import MonitoredDemo, monitored_demo
from tests.unit.app.expectations import demo_password

pytestmark = pytest.mark.e2e

FIRST_RENDER_BUDGET_S = 2.0
"""Target from the click on "Monitoring" to the heatmap and the feature detail drawn."""
FIRST_RENDER_LIMIT_S = 10.0
"""What fails the test: the target with headroom for a loaded CI machine (the measure is printed and
written to ``test-output/monitoring-first-render.txt``)."""
XSS_NAME = "<img src=x onerror=alert(1)>"
HEATMAP = "#monitoring-drift-heatmap"
WAIT_MS = 30_000
"""How long an assertion waits for callbacks: generous, the suite shares two cores with everything else."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> MonitoredDemo:
    return monitored_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def monitored_server(live_server: LiveServer, demo: MonitoredDemo) -> LiveServer:
    """The session's server with the monitored demo workspace in its data folder."""
    shutil.copytree(demo.data, Path(live_server.env["MMS_DATA_URI"]), dirs_exist_ok=True)
    return live_server


def _sign_in(page: Page, server: LiveServer, username: str) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#username", username)
    page.fill("#password", demo_password(username))
    page.click("#login-submit")
    expect(page.locator("#page-title")).to_have_text("Dashboard", timeout=WAIT_MS)


def _choose(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown}").click()
    page.get_by_role("option", name=option, exact=True).click()


def _heatmap_axes(page: Page) -> dict:
    """The heatmap's categories as plotly holds them, and the plot area on screen."""
    return page.evaluate(
        """(selector) => {
            const plot = document.querySelector(selector + ' .js-plotly-plot');
            const area = plot.querySelector('.nsewdrag').getBoundingClientRect();
            return {x: plot.data[0].x, y: plot.data[0].y,
                    left: area.left, top: area.top, width: area.width, height: area.height};
        }""",
        HEATMAP,
    )


def _click_cell(page: Page, feature: str, window: str) -> None:
    axes = _heatmap_axes(page)
    column, row = axes["x"].index(window), axes["y"].index(feature)
    # Categories sit at equal spacing; the feature axis runs top-down (autorange reversed).
    x = axes["left"] + (column + 0.5) * axes["width"] / len(axes["x"])
    y = axes["top"] + (row + 0.5) * axes["height"] / len(axes["y"])
    page.mouse.click(x, y)


def _assert_clean(log: BrowserLog) -> None:
    assert log.console_errors == []
    assert log.page_errors == []


def test_monitoring_page_renders_drills_down_and_exports(
    page: Page,
    monitored_server: LiveServer,
    demo: MonitoredDemo,
    browser_log: BrowserLog,
    screenshot: Callable[[Page, str], Path],
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message) or dialog.dismiss())
    _sign_in(page, monitored_server, "monitoring")
    # Measured from a settled dashboard: its own callbacks would otherwise share the clock.
    expect(page.locator("#dashboard-kpi-models-value")).not_to_be_empty(timeout=WAIT_MS)
    expect(page.locator("#dashboard-latency g.scatterlayer")).to_have_count(1, timeout=WAIT_MS)
    started = time.monotonic()
    page.locator("#nav-link-monitoring").click()
    expect(page.locator("#monitoring-summary")).to_contain_text("feature(s) over", timeout=WAIT_MS)
    expect(page.locator(f"{HEATMAP} g.hm")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#monitoring-feature-title")).to_contain_text("Feature ", timeout=WAIT_MS)
    first_render = time.monotonic() - started
    measured = f"monitoring page first render: {first_render:.2f} s (target {FIRST_RENDER_BUDGET_S:.1f} s)"
    print(f"\n{measured}")
    SCREENSHOT_DIR.parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOT_DIR.parent / "monitoring-first-render.txt").write_text(measured + "\n")
    assert first_render < FIRST_RENDER_LIMIT_S

    # The first model of the first project is shown; pick the one with the injected drift.
    _choose(page, "monitoring-model", "credit-default")
    expect(page.locator("#monitoring-summary")).to_contain_text("in income", timeout=WAIT_MS)
    expect(page.locator("#monitoring-feature-title")).to_contain_text("Feature income", timeout=WAIT_MS)
    expect(page.locator("#monitoring-feature-title")).to_contain_text("drifted", timeout=WAIT_MS)
    expect(page.locator("#monitoring-feature-distribution g.barlayer")).to_have_count(1, timeout=WAIT_MS)
    screenshot(page, "monitoring-credit-default")

    burst = demo.scenario.null_burst_date.isoformat()
    _click_cell(page, "debt_to_income", burst)
    expect(page.locator("#monitoring-feature-title")).to_contain_text(
        f"Feature debt_to_income, day {burst}", timeout=WAIT_MS
    )
    quality = page.locator("#monitoring-quality-table")
    expect(quality.locator("tr", has_text="Missing values")).to_contain_text("warning", timeout=WAIT_MS)
    expect(page.locator("#monitoring-performance g.scatterlayer")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#monitoring-latency g.scatterlayer")).to_have_count(1, timeout=WAIT_MS)
    screenshot(page, "monitoring-drilldown")

    expect(page.locator("#monitoring-export")).to_be_enabled(timeout=WAIT_MS)
    with page.expect_download() as download_info:
        page.locator("#monitoring-export").click()
    download = download_info.value
    assert (
        download.suggested_filename
        == f"metrics-credit-risk-credit-default-prod-{demo.first}-{demo.last}-day.csv"
    )
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert {
        (r["column"], r["window_start"][:10])
        for r in rows
        if r["metric"] == "drift" and r["drifted"] == "true"
    }
    expect(page.locator("#monitoring-export-feedback")).to_have_text(
        f"{len(rows)} row(s) exported.", timeout=WAIT_MS
    )
    assert dialogs == []
    _assert_clean(browser_log)


def test_sponsor_sees_monitoring_without_export(
    page: Page, monitored_server: LiveServer, browser_log: BrowserLog
) -> None:
    _sign_in(page, monitored_server, "sponsor1")
    page.locator("#nav-link-monitoring").click()
    expect(page.locator("#monitoring-summary")).to_contain_text("feature(s) over", timeout=WAIT_MS)
    export = page.locator("#monitoring-export")
    expect(export).to_have_attribute(
        "title", "Your roles on this project do not allow exports", timeout=WAIT_MS
    )
    expect(export).to_be_disabled()
    _assert_clean(browser_log)


def test_dashboard_shows_monitoring_kpis(
    page: Page,
    monitored_server: LiveServer,
    browser_log: BrowserLog,
    screenshot: Callable[[Page, str], Path],
) -> None:
    _sign_in(page, monitored_server, "monitoring")
    expect(page.locator("#dashboard-kpi-models-value")).to_have_text("prod 3 · staging 3", timeout=WAIT_MS)
    expect(page.locator("#dashboard-kpi-drift")).to_contain_text(
        "credit-default/prod: income", timeout=WAIT_MS
    )
    expect(page.locator("#dashboard-latency g.scatterlayer")).to_have_count(1, timeout=WAIT_MS)
    screenshot(page, "dashboard-monitoring-kpis")
    _assert_clean(browser_log)


def test_project_names_with_markup_are_shown_as_text(
    page: Page, monitored_server: LiveServer, browser_log: BrowserLog
) -> None:
    engine = make_engine(monitored_server.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            admin = actor_for(session, get_user(session, "admin").id)
            create_project(session, admin, "xss-monitoring", XSS_NAME)
    finally:
        engine.dispose()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message) or dialog.dismiss())
    _sign_in(page, monitored_server, "admin")
    page.locator("#nav-link-monitoring").click()
    expect(page.locator("#monitoring-summary")).to_contain_text("feature(s) over", timeout=WAIT_MS)
    page.locator("#monitoring-project").click()
    # Other e2e modules sharing this worker's database may add projects with the same hostile name.
    option = page.get_by_role("option", name=XSS_NAME, exact=True).first
    expect(option).to_be_visible(timeout=WAIT_MS)
    option.click()
    expect(page.locator("#monitoring-empty")).to_contain_text(
        "No metrics yet for this project", timeout=WAIT_MS
    )
    assert page.locator("#monitoring-project img").count() == 0
    assert dialogs == []
    _assert_clean(browser_log)
