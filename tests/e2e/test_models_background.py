"""Training from the Models page in Debian Chromium: a background job with a progress bar and cancel.

The live server runs the job in a process of its own (started by the diskcache manager's fork
server); the browser polls it as dash-renderer does. Training data for the model is written to
the server's store first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.contracts import TRAINING_DATA
from jobs.db import make_engine, make_session_factory, session_scope
from jobs.demo_data import CREDIT_DEFAULT, training_table
from jobs.permissions import Role
from jobs.projects import create_project
from jobs.users import actor_for, get_user, grant_role
from tests.fixtures.browser import BrowserLog, LiveServer
from tests.unit.app.expectations import demo_password

pytestmark = pytest.mark.e2e

Screenshot = Callable[[Page, str], Path]
# A project of its own: the other browser tests share the server and expect credit-risk untrained.
PROJECT = "training-sandbox"
MODEL = "e2e-train"
TRAINING_TIMEOUT_MS = 180_000


def _versions(server: LiveServer) -> int:
    tracking_uri = f"sqlite:///{Path(server.env['MMS_VAR_DIR']) / 'mlflow.db'}"
    try:
        return len(registry.list_versions(f"{PROJECT}.{MODEL}", tracking_uri=tracking_uri))
    except Exception:  # no version registered yet
        return 0


def test_an_engineer_trains_a_version_with_progress_then_cancels_another(
    page: Page, live_server: LiveServer, browser_log: BrowserLog, screenshot: Screenshot
) -> None:
    engine = make_engine(live_server.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            admin = actor_for(session, get_user(session, "admin").id)
            create_project(session, admin, PROJECT, "Training sandbox")
            grant_role(session, admin, "mlengineer", PROJECT, Role.ML_ENGINEER)
    finally:
        engine.dispose()
    store = ParquetStore(StoreConfig(data_uri=live_server.env["MMS_DATA_URI"]))
    try:
        store.write_partition(
            TRAINING_DATA, {"project": PROJECT, "model": MODEL}, training_table(CREDIT_DEFAULT, rows=3_000)
        )
    finally:
        store.close()
    page.goto(f"{live_server.url}/login?next=/models")
    page.fill("#username", "mlengineer")
    page.fill("#password", demo_password("mlengineer"))
    page.click("#login-submit")
    page.select_option("#models-project", PROJECT)
    expect(page.locator("#models-train-card")).to_be_visible()
    expect(page.locator("#models-train-cancel")).to_be_disabled()

    page.fill("#models-train-model", MODEL)
    page.click("#models-train-start")
    expect(page.locator("#models-train-start")).to_be_disabled()  # running: no second start
    expect(page.locator("#models-train-progress")).to_contain_text("·")  # a stage and its percentage
    screenshot(page, "models-training-progress")
    expect(page.locator("#models-train-result-message")).to_contain_text(
        f"Version 1 of {PROJECT}.{MODEL} registered", timeout=TRAINING_TIMEOUT_MS
    )
    expect(page.locator("#models-train-start")).to_be_enabled()
    expect(page.locator("#models-train-cancel")).to_be_disabled()
    assert _versions(live_server) == 1
    screenshot(page, "models-training-done")

    page.click("#models-train-start")
    # Cancel is enabled by the job's first progress report, once the browser holds the job's handle.
    expect(page.locator("#models-train-cancel")).to_be_enabled()
    page.click("#models-train-cancel")
    expect(page.locator("#models-train-start")).to_be_enabled()
    expect(page.locator("#models-train-cancel")).to_be_disabled()
    page.wait_for_timeout(3_000)  # long enough for a job that was not stopped to reach the registry
    assert _versions(live_server) == 1
    assert browser_log.console_errors == [] and browser_log.page_errors == []
