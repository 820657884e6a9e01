"""Background callbacks: the manager setting, the acting user handed to jobs, cancel callbacks' rules."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import dash
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.exceptions import PreventUpdate
from flask_login import login_user

from app.auth import StudioUser
from app.factory import make_background_manager
from app.rbac import (
    BACKGROUND_ACTOR_KEY,
    acting_actor,
    actor_from_payload,
    actor_payload,
    callback_permissions,
    requires,
    unprotected_callbacks,
)
from app.settings import SettingsError, load_settings
from jobs.permissions import Actor, Permission, Role
from tests.unit.app.studio import Studio, callback_request, csrf_header

pytestmark = pytest.mark.unit

ENGINEER = Actor(7, "eng", roles={"credit-risk": frozenset({Role.ML_ENGINEER, Role.DATA_TEAM})})


def test_broker_url_is_parsed_strictly_and_kept_out_of_repr(tmp_path: Path) -> None:
    base = {"MMS_VAR_DIR": str(tmp_path)}
    settings = load_settings(base)
    assert settings.background_manager == "diskcache" and settings.celery_broker_url is None
    assert settings.background_broker_url == settings.redis_url
    assert settings.background_cache_dir == tmp_path / "background-callbacks"
    chosen = load_settings(
        {**base, "MMS_BACKGROUND_MANAGER": "celery", "MMS_CELERY_BROKER_URL": "redis://:pw-123@queue:6379/2"}
    )
    assert chosen.background_manager == "celery"
    assert chosen.background_broker_url == "redis://:pw-123@queue:6379/2"
    assert "pw-123" not in repr(chosen)
    for bad in ("http://queue:6379", "queue:6379", "redis://"):
        with pytest.raises(SettingsError, match="MMS_CELERY_BROKER_URL"):
            load_settings({**base, "MMS_CELERY_BROKER_URL": bad})


def test_diskcache_manager_keeps_its_files_under_var_dir(tmp_path: Path) -> None:
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path)})
    manager = make_background_manager(settings)
    assert isinstance(manager, dash.DiskcacheManager)
    assert Path(manager.handle.directory) == tmp_path / "background-callbacks"
    # Every job gets its own key: two users starting the same job never share progress or result.
    first = manager.build_cache_key(test_diskcache_manager_keeps_its_files_under_var_dir, [1], [], None)
    second = manager.build_cache_key(test_diskcache_manager_keeps_its_files_under_var_dir, [1], [], None)
    assert first != second
    manager.handle.close()


def test_a_handle_whose_job_ended_never_stops_the_process_that_now_holds_its_pid(tmp_path: Path) -> None:
    # The fork server reaps a finished job at once, so its pid is free for any new process; a late
    # cancel or result fetch (Dash kills the job's pid then) must leave that process alone.
    manager = make_background_manager(load_settings({"MMS_VAR_DIR": str(tmp_path)}))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        handle = str(bystander.pid)  # as if a job had run under this pid earlier
        assert not manager.job_running(handle)
        manager.terminate_job(handle)
        manager.terminate_unhealthy_job(handle)
        time.sleep(0.2)
        assert bystander.poll() is None
        for forged in ("", "not-a-pid", "-1", None):
            manager.terminate_job(forged)
            assert not manager.job_running(forged)
    finally:
        bystander.kill()
        bystander.wait()
        manager.handle.close()


def test_celery_manager_needs_the_celery_package(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MMS_VAR_DIR": str(tmp_path),
            "MMS_BACKGROUND_MANAGER": "celery",
            "MMS_REDIS_URL": "redis://127.0.0.1:6379/9",
        }
    )
    if importlib.util.find_spec("celery") is None:
        with pytest.raises(SettingsError, match="needs the celery package"):
            make_background_manager(settings)
    else:
        manager = make_background_manager(settings)
        assert isinstance(manager, dash.CeleryManager)
        assert manager.handle.conf.broker_url == "redis://127.0.0.1:6379/9"


def test_actor_payload_round_trips_and_malformed_payloads_are_nobody() -> None:
    payload = actor_payload(ENGINEER)
    assert payload == {
        "user_id": 7,
        "username": "eng",
        "is_admin": False,
        "roles": {"credit-risk": ["data_team", "ml_engineer"]},
    }
    assert actor_from_payload(payload) == ENGINEER
    for bad in (
        None,
        "eng",
        {"username": "eng"},
        {**payload, "roles": {"x": ["emperor"]}},
        {**payload, "user_id": "x"},
    ):
        assert actor_from_payload(bad) is None
    assert actor_from_payload({**payload, "is_admin": "yes"}).is_admin is False  # only a real True counts


def test_a_job_outside_a_request_acts_for_the_user_the_request_handed_over(studio: Studio) -> None:
    calls: list[Actor | None] = []

    @requires(Permission.TRAIN_MODELS)
    def job() -> str:
        calls.append(acting_actor())
        return "trained"

    token = context_value.set(AttributeDict({BACKGROUND_ACTOR_KEY: actor_payload(ENGINEER)}))
    try:
        assert job() == "trained" and calls == [ENGINEER]  # a Celery worker: no request, the handed user
        context_value.set(AttributeDict({BACKGROUND_ACTOR_KEY: actor_payload(Actor(8, "sponsor"))}))
        with pytest.raises(PreventUpdate):
            job()
        context_value.set(AttributeDict({}))
        with pytest.raises(PreventUpdate):
            job()
        # Inside a request the session decides, whatever a stale callback context says.
        context_value.set(AttributeDict({BACKGROUND_ACTOR_KEY: actor_payload(ENGINEER)}))
        with studio.app.server.test_request_context("/_dash-update-component", method="POST"):
            assert acting_actor() is None
            with pytest.raises(PreventUpdate):
                job()
            login_user(StudioUser(studio.actor("sponsor1")))
            assert acting_actor().username == "sponsor1"
    finally:
        context_value.reset(token)
    assert len(calls) == 1


def test_cancel_callbacks_take_the_permission_of_what_they_cancel(studio: Studio) -> None:
    client = studio.signed_in("admin", "10.51.0.1")
    client.get("/")  # Dash adds the cancel callbacks on its first request
    declared = callback_permissions(studio.app)
    assert declared["models-train-cancel.id"] is Permission.TRAIN_MODELS
    assert declared["models-backfill-cancel.id"] is Permission.RUN_BACKFILL
    assert declared["models-train-result.children"] is Permission.TRAIN_MODELS
    assert unprotected_callbacks(studio.app) == []
    cancel = callback_request(
        "models-backfill-cancel.id",
        {"id": "models-backfill-cancel", "property": "id"},
        [{"id": "models-backfill-cancel", "property": "n_clicks", "value": 1}],
        ["models-backfill-cancel.n_clicks"],
    )
    sponsor = studio.signed_in("sponsor1", "10.51.0.2")
    refused = sponsor.post("/_dash-update-component", json=cancel, headers=csrf_header(sponsor))
    assert refused.status_code == 403 and "run_backfill" in refused.get_json()["reason"]
    monitoring = studio.signed_in("monitoring", "10.51.0.3")
    # A forged job handle is ignored (Dash checks its signature): nothing to stop, nothing stopped.
    allowed = monitoring.post(
        "/_dash-update-component?cancelJob=12345", json=cancel, headers=csrf_header(monitoring)
    )
    assert allowed.status_code in (200, 204)
