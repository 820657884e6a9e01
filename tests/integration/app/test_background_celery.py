"""Background callbacks of the Models page run on a real Celery worker (``MMS_BACKGROUND_MANAGER=celery``).

The studio under test and a worker subprocess (``celery -A app.celery_worker worker``) are built
from the same ``MMS_*`` environment, with Redis (a database of its own, flushed) as broker and
result backend. The Flask test client posts what dash-renderer posts (start, polls, cancel), as in
``test_background_callbacks.py`` whose helpers it reuses; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from app.factory import create_app
from app.settings import load_settings
from jobs.seed import seed_demo_accounts
from tests.integration.app.test_background_callbacks import (
    _end_id,
    _poll,
    _start,
    _versions,
    assert_polls_end_without_result,
    assert_training_refused_without_permission,
    assert_training_registers_version_1,
    press_cancel,
    write_training_data,
)
from tests.unit.app.studio import Studio

# Runs beside the other tests. It once needed a pytest process of its own: in a process where other
# tests had built studios, this studio's job went to another studio's broker, because dash.get_app()
# answered the studio built last during callback dispatch (app.factory._serve_as_current_dash_app).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _redis_db() -> int:
    """A Redis database of this pytest process's own, flushed before and after: the queue and the
    results of no one else. xdist may run this module's tests on several workers at once, each with
    its own fixture and Celery worker: on one shared database a fixture's flush erased the result of
    a job another worker's test was polling (seen in a suite run)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return 15 - index % 8  # databases 8-15; the studio's own default is 0


WORKER_READY_TIMEOUT_S = 90.0
# Generous: on a loaded 2-core machine one training job has taken over 100 s (17 s when idle).
JOB_TIMEOUT_S = 240.0


@dataclass
class CeleryStudio:
    """A studio whose background callbacks go to a Celery worker subprocess."""

    studio: Studio
    worker: subprocess.Popen[bytes]
    worker_log: Path
    broker_url: str

    def log_tail(self) -> str:
        """The end of the worker's log (for failure messages)."""
        return self.worker_log.read_text(errors="replace")[-4000:]


def _studio_environ(root: Path, broker_url: str) -> dict[str, str]:
    """The ``MMS_*`` environment both the studio and the worker are built from."""
    return {
        "MMS_ENV": "test",
        "MMS_VAR_DIR": str(root / "var"),
        "MMS_DATA_URI": str(root / "data"),
        "MMS_BACKGROUND_MANAGER": "celery",
        "MMS_CELERY_BROKER_URL": broker_url,
    }


def _worker_command(hostname: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "app.celery_worker",
        "worker",
        "--pool=prefork",  # cancelling terminates the pool process running the job
        "--concurrency=1",
        "--loglevel=INFO",
        f"--hostname={hostname}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def _process_environ(mms: dict[str, str]) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MMS_")}
    environ.update(mms)
    environ.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return environ


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)  # warm shutdown of the worker and its pool processes
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


@pytest.fixture(scope="module")
def celery_studio(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[CeleryStudio]:
    """A seeded studio with training data of credit-risk/credit-default and its running Celery worker."""
    broker_url = f"{redis_server_url}/{_redis_db()}"
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    root = tmp_path_factory.mktemp("background-celery")
    mms = _studio_environ(root, broker_url)
    settings = load_settings(mms)
    studio = Studio(app=create_app(settings), settings=settings)  # migrates the SQLite database
    with studio.db(write=True) as session:
        assert seed_demo_accounts(session)
    write_training_data(settings)

    worker_log = root / "celery-worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            _worker_command(f"mms-test-{uuid.uuid4().hex[:8]}@%h"),
            cwd=ROOT,
            env=_process_environ(mms),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its pool processes
        )
    running = CeleryStudio(studio=studio, worker=worker, worker_log=worker_log, broker_url=broker_url)
    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while " ready." not in worker_log.read_text(errors="replace"):
            assert worker.poll() is None, f"the Celery worker exited:\n{running.log_tail()}"
            assert time.monotonic() < deadline, f"the Celery worker is not ready:\n{running.log_tail()}"
            time.sleep(0.3)
        yield running
    finally:
        _stop(worker)
        studio.close()
        broker.flushdb()
        broker.close()


def _pool_processes(worker: subprocess.Popen[bytes]) -> set[int]:
    """Pids of the worker's live pool processes (a killed one not yet reaped is a zombie: left out)."""
    live = set()
    for child in psutil.Process(worker.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return live


def test_the_worker_refuses_to_start_without_the_celery_manager(tmp_path: Path) -> None:
    mms = {"MMS_ENV": "test", "MMS_VAR_DIR": str(tmp_path / "var"), "MMS_DATA_URI": str(tmp_path / "data")}
    refused = subprocess.run(
        _worker_command("mms-refused@%h"),
        cwd=ROOT,
        env=_process_environ(mms),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "needs MMS_BACKGROUND_MANAGER=celery (it is 'diskcache')" in refused.stdout + refused.stderr


def test_training_runs_on_the_celery_worker_with_progress_then_its_result(
    celery_studio: CeleryStudio,
) -> None:
    studio = celery_studio.studio
    client = studio.signed_in("mlengineer", "10.32.0.1")
    end_id = _end_id(client)
    children_before = {child.pid for child in psutil.Process().children()}
    started_at = time.monotonic()
    handles = _start(client, end_id, 1)
    assert time.monotonic() - started_at < 10  # the request only sends the job to the broker
    assert_training_registers_version_1(studio, client, end_id, handles, celery_studio.log_tail)
    # The job ran on the worker: the web process forked nothing (the worker is its only child).
    assert {child.pid for child in psutil.Process().children()} <= children_before
    assert "background_callback_" in celery_studio.log_tail()  # the worker received the task


def test_cancel_terminates_the_job_on_the_worker(celery_studio: CeleryStudio) -> None:
    studio = celery_studio.studio
    client = studio.signed_in("mlengineer", "10.32.0.2")
    end_id = _end_id(client)
    before = _versions(studio)
    handles = _start(client, end_id, 2)
    # Press Cancel once the job runs on the worker (its first progress report enables the button).
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        payload = _poll(client, end_id, handles).get_json(silent=True) or {}
        assert "response" not in payload, f"the job ended before it could be cancelled: {payload}"
        if "progress" in payload:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the job reported no progress:\n{celery_studio.log_tail()}")
    pool = _pool_processes(celery_studio.worker)
    assert len(pool) == 1, pool  # --concurrency=1: the process running the job
    press_cancel(client, end_id, handles)

    # The pool process running the job is terminated (the worker replaces it) ...
    (job_process,) = pool
    deadline = time.monotonic() + 30
    while job_process in _pool_processes(celery_studio.worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_process not in _pool_processes(celery_studio.worker), celery_studio.log_tail()
    # ... polls end with no result, and no version is registered.
    assert_polls_end_without_result(client, end_id, handles)
    assert _versions(studio) == before
    assert celery_studio.worker.poll() is None  # the worker itself goes on


def test_users_without_the_permission_send_nothing_to_the_worker(celery_studio: CeleryStudio) -> None:
    studio = celery_studio.studio
    broker = redis.Redis.from_url(celery_studio.broker_url)
    try:
        tasks_before = len(broker.keys("celery-task-meta-*"))
        assert_training_refused_without_permission(studio, "10.32.0")
        assert broker.llen("celery") == 0  # nothing queued
        assert len(broker.keys("celery-task-meta-*")) == tasks_before
    finally:
        broker.close()
