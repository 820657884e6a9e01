"""Background callbacks of the Models page run for real through the studio's Flask app.

The test client posts what dash-renderer posts: the request that starts the job, the polls
(``cacheKey``/``job``/``endId`` query arguments) that bring its progress and its result, and the
request of the cancel button. Jobs run in processes of their own started by the studio's
diskcache manager (from a fork server, never forked from this process), as in production;
nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import psutil
import pytest
from flask.testing import FlaskClient

from analytics.store import ParquetStore
from app.settings import Settings
from jobs import registry
from jobs.contracts import TRAINING_DATA
from jobs.demo_data import CREDIT_DEFAULT, training_table
from tests.unit.app.studio import Studio, build_studio, callback_request, csrf_header

pytestmark = pytest.mark.integration

TRAIN_OUTPUT = "models-train-result.children"
CANCEL_OUTPUT = "models-train-cancel.id"
JOB_TIMEOUT_S = 240.0
_CONFIG = re.compile(r'<script id="_dash-config" type="application/json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A seeded studio whose store holds training data of credit-risk/credit-default."""
    with build_studio(tmp_path_factory.mktemp("background-callbacks")) as built:
        write_training_data(built.settings)
        yield built


def write_training_data(settings: Settings) -> None:
    """Write the training data the Models page's training job reads (credit-risk/credit-default)."""
    store = ParquetStore(settings.store_config())
    try:
        store.write_partition(
            TRAINING_DATA,
            {"project": "credit-risk", "model": "credit-default"},
            training_table(CREDIT_DEFAULT, rows=3_000),
        )
    finally:
        store.close()


def _end_id(client: FlaskClient) -> str:
    page = client.get("/models")
    assert page.status_code == 200
    return json.loads(_CONFIG.search(page.text).group(1))["end_id"]


def _train_body(n_clicks: int, model: str = "credit-default") -> dict[str, Any]:
    body = callback_request(
        TRAIN_OUTPUT,
        {"id": "models-train-result", "property": "children"},
        [{"id": "models-train-start", "property": "n_clicks", "value": n_clicks}],
        ["models-train-start.n_clicks"],
    )
    body["state"] = [
        {"id": "models-project", "property": "value", "value": "credit-risk"},
        {"id": "models-train-model", "property": "value", "value": model},
    ]
    return body


def _post(client: FlaskClient, body: dict[str, Any], **args: str) -> Any:
    return client.post(f"/_dash-update-component?{urlencode(args)}", json=body, headers=csrf_header(client))


def _start(client: FlaskClient, end_id: str, n_clicks: int) -> dict[str, str]:
    started = _post(client, _train_body(n_clicks), endId=end_id)
    assert started.status_code == 200, started.text
    handles = started.get_json()
    assert {"cacheKey", "job", "cancel", "progressDefault"} <= set(handles), handles
    return handles


def _poll(client: FlaskClient, end_id: str, handles: dict[str, str]) -> Any:
    body = _train_body(0)
    for item in body["inputs"] + body["state"]:
        item["value"] = None  # dash-renderer clears the values of polls
    return _post(client, body, endId=end_id, cacheKey=handles["cacheKey"], job=handles["job"])


def _versions(studio: Studio) -> int:
    name = registry.registered_model_name("credit-risk", "credit-default")
    try:
        return len(registry.list_versions(name, tracking_uri=studio.settings.mlflow_tracking_uri))
    except Exception:  # no registered model yet
        return 0


def poll_to_result(
    client: FlaskClient, end_id: str, handles: dict[str, str], log_tail: Callable[[], str] | None = None
) -> tuple[list[str], Any]:
    """Poll a started job as dash-renderer does until its result arrives (fails after :data:`JOB_TIMEOUT_S`).

    Returns:
        The progress reports seen on the way (JSON) and the result's ``response``.
    """
    progress: list[str] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        polled = _poll(client, end_id, handles)
        assert polled.status_code in (200, 204), polled.text
        payload = polled.get_json(silent=True) or {}
        if "progress" in payload:
            progress.append(json.dumps(payload["progress"]))
        if "response" in payload:
            return progress, payload["response"]
        time.sleep(0.3)
    pytest.fail(
        f"no result within {JOB_TIMEOUT_S} s; progress seen: {progress}\n{log_tail() if log_tail else ''}"
    )


def assert_training_registers_version_1(
    studio: Studio,
    client: FlaskClient,
    end_id: str,
    handles: dict[str, str],
    log_tail: Callable[[], str] | None = None,
) -> None:
    """Poll the started training job to its end: progress on the way, then version 1 registered.

    Args:
        studio: The studio whose registry gets the version.
        client: The signed-in client that started the job.
        end_id: The page's ``end_id``.
        handles: What starting the job answered (:func:`_start`).
        log_tail: What to add to a failure message (the worker's log, where there is one).
    """
    progress, result = poll_to_result(client, end_id, handles, log_tail)
    assert progress, "no progress was reported while the job ran"
    labels = " ".join(progress)
    assert "fitting" in labels or "logging to MLflow" in labels or "registering" in labels, labels
    alert = result["models-train-result"]["children"]
    assert alert["props"]["color"] == "success", alert
    assert "Version 1 of credit-risk.credit-default registered" in alert["props"]["children"]
    assert _versions(studio) == 1


def test_training_runs_in_the_background_with_progress_then_its_result(studio: Studio) -> None:
    client = studio.signed_in("mlengineer", "10.31.0.1")
    end_id = _end_id(client)
    started_at = time.monotonic()
    handles = _start(client, end_id, 1)
    assert time.monotonic() - started_at < 10  # the request only starts the job
    assert_training_registers_version_1(studio, client, end_id, handles)


def _job_process(handles: dict[str, str]) -> psutil.Process:
    """The process of a started job: its pid is what the signed ``job`` handle carries."""
    job = psutil.Process(int(handles["job"].split("~", 1)[0]))
    # A process of its own, and no fork of this (the web worker's) process: see the next test.
    assert job.pid != os.getpid() and job.ppid() != os.getpid(), (job, job.ppid())
    return job


def test_a_job_inherits_no_lock_another_thread_of_the_web_worker_holds(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # CI saw a second training hang without progress: forked from the multi-threaded web worker
    # while another request read MLflow, the job inherited a lock that thread held, and no thread
    # of the child would ever release it. Here another thread holds MLflow's engine-cache lock
    # (taken by the first MLflow call for a database) while a job starts in a fresh studio, whose
    # registry this process never opened: a job forked from this process would wait for it forever.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with build_studio(tmp_path_factory.mktemp("lock-held")) as studio:
        write_training_data(studio.settings)
        client = studio.signed_in("mlengineer", "10.31.0.5")
        end_id = _end_id(client)
        taken, release = threading.Event(), threading.Event()

        def hold_engine_cache_lock() -> None:
            with SqlAlchemyStore._engine_map_lock:
                taken.set()
                release.wait(JOB_TIMEOUT_S)

        holder = threading.Thread(target=hold_engine_cache_lock, daemon=True)
        holder.start()
        try:
            assert taken.wait(10)
            handles = _start(client, end_id, 1)
            _job_process(handles)
            _, result = poll_to_result(client, end_id, handles)
        finally:
            release.set()
            holder.join(10)
        alert = result["models-train-result"]["children"]
        assert alert["props"]["color"] == "success", alert
        assert _versions(studio) == 1


def press_cancel(client: FlaskClient, end_id: str, handles: dict[str, str]) -> None:
    """Press the training form's Cancel button as dash-renderer does (the job's handle as ``cancelJob``)."""
    cancel = callback_request(
        CANCEL_OUTPUT,
        {"id": "models-train-cancel", "property": "id"},
        [{"id": "models-train-cancel", "property": "n_clicks", "value": 1}],
        ["models-train-cancel.n_clicks"],
    )
    cancelled = _post(client, cancel, endId=end_id, cancelJob=handles["job"])
    assert cancelled.status_code in (200, 204), cancelled.text


def assert_polls_end_without_result(client: FlaskClient, end_id: str, handles: dict[str, str]) -> None:
    """Poll a cancelled job until the polls end (within 30 s): no content, or an empty response."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        polled = _poll(client, end_id, handles)
        if polled.status_code == 204 or "response" in (polled.get_json(silent=True) or {}):
            break
        time.sleep(0.2)
    payload = polled.get_json(silent=True) or {}
    assert polled.status_code == 204 or payload.get("response", {}) == {}, payload


def test_cancel_stops_the_training_process(studio: Studio) -> None:
    client = studio.signed_in("mlengineer", "10.31.0.2")
    end_id = _end_id(client)
    before = _versions(studio)
    handles = _start(client, end_id, 2)
    job = _job_process(handles)
    # Press Cancel as soon as the browser holds the job's handle (dash-renderer sends it as cancelJob).
    press_cancel(client, end_id, handles)
    # The job's process is gone: polls end with no result, and no version is registered.
    assert_polls_end_without_result(client, end_id, handles)
    assert not job.is_running() or job.status() == psutil.STATUS_ZOMBIE
    assert _versions(studio) == before


def assert_training_refused_without_permission(studio: Studio, network: str) -> None:
    """A sponsor (no ``train_models``) gets 403 on start and cancel, and so does an anonymous client.

    Args:
        studio: The running studio.
        network: First three octets of the clients' addresses (``"10.31.0"``).
    """
    client = studio.signed_in("sponsor1", f"{network}.3")
    end_id = _end_id(client)
    refused = _post(client, _train_body(1), endId=end_id)
    assert refused.status_code == 403
    assert "train_models" in refused.get_json()["reason"]
    cancel = callback_request(
        CANCEL_OUTPUT,
        {"id": "models-train-cancel", "property": "id"},
        [{"id": "models-train-cancel", "property": "n_clicks", "value": 1}],
        ["models-train-cancel.n_clicks"],
    )
    assert _post(client, cancel, endId=end_id, cancelJob="1").status_code == 403
    anonymous = studio.client(f"{network}.4")
    anonymous.get("/login")
    assert _post(anonymous, _train_body(1)).status_code == 403


def test_users_without_the_permission_cannot_start_poll_or_cancel(studio: Studio) -> None:
    assert_training_refused_without_permission(studio, "10.31.0")
