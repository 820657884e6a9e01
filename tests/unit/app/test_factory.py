"""create_app(): independent instances, production safeguards, entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import app.factory
from app.auth import services
from app.rbac import unprotected_callbacks
from app.settings import SettingsError
from jobs.db.migrate import current_revision, upgrade
from jobs.seed import seed_demo_accounts
from tests.unit.app.expectations import demo_password
from tests.unit.app.studio import (
    Studio,
    build_studio,
    component_request,
    csrf_header,
    sign_in,
    studio_settings,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_there_is_no_module_level_app() -> None:
    assert not hasattr(app.factory, "app") and not hasattr(app.factory, "server")


def test_two_apps_are_independent_and_both_complete(tmp_path: Path) -> None:
    first, second = build_studio(tmp_path / "one"), build_studio(tmp_path / "two")
    try:
        assert services(first.app.server).engine is not services(second.app.server).engine
        for studio in (first, second):
            assert "projects-table.children" in studio.app.callback_map
            assert unprotected_callbacks(studio.app) == []
            client = studio.signed_in("mlengineer")
            response = client.post(
                "/_dash-update-component",
                json=component_request("projects-table"),
                headers=csrf_header(client),
            )
            assert response.status_code == 200
        # A session signed by one instance's secret key means nothing to the other.
        client = first.signed_in("admin")
        session_cookie = client.get_cookie("mms_session")
        other = second.client()
        other.set_cookie("mms_session", session_cookie.value)
        assert other.get("/").status_code == 302
    finally:
        first.close()
        second.close()


def test_development_migrates_at_start_up(tmp_path: Path) -> None:
    settings = studio_settings(tmp_path)
    studio = Studio(app=app.factory.create_app(settings), settings=settings)
    try:
        assert current_revision(settings.database_url) is not None
    finally:
        studio.close()


def test_production_is_secure_and_does_not_migrate(tmp_path: Path) -> None:
    settings = studio_settings(
        tmp_path,
        MMS_ENV="production",
        MMS_SECRET_KEY="p" * 48,
        MMS_DATABASE_URL=f"sqlite:///{tmp_path}/prod.db",
    )
    studio = Studio(app=app.factory.create_app(settings), settings=settings)
    try:
        assert current_revision(settings.database_url) is None
        upgrade(settings.database_url)
        with studio.db(write=True) as session:
            seed_demo_accounts(session)
        server = studio.app.server
        assert server.debug is False
        assert server.config["SESSION_COOKIE_SECURE"] and server.config["REMEMBER_COOKIE_SECURE"]
        client = studio.client()
        response = sign_in(client, "admin", demo_password("admin"))
        assert response.status_code == 302
        cookies = response.headers.getlist("Set-Cookie")
        assert all("Secure" in cookie for cookie in cookies), cookies
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        studio.close()


def test_debug_only_outside_production(tmp_path: Path) -> None:
    settings = studio_settings(tmp_path)
    debug_app = app.factory.create_app(replace(settings, debug=True))
    assert debug_app.server.debug is True
    services(debug_app.server).engine.dispose()
    refused = replace(settings, env="production", debug=True, secret_key="s" * 40)
    production_app = app.factory.create_app(refused)
    assert production_app.server.debug is False
    services(production_app.server).engine.dispose()


def test_a_short_secret_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="secret key"):
        app.factory.create_app(replace(studio_settings(tmp_path), secret_key="short"))


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MMS_")}
    environ.update({"MMS_ENV": "test", "MMS_VAR_DIR": str(tmp_path / "var"), **extra})
    return environ


def test_wsgi_module_exposes_the_flask_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from app.wsgi import server; print(type(server).__name__, server.name)"],
        cwd=ROOT,
        env=_environ(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Flask app"


def test_python_m_app_reports_bad_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=_environ(tmp_path, MMS_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "MMS_PORT='eighty' is not an integer" in result.stderr
