"""End to end: an approved promotion rolled out as a canary through a real gateway process on loopback.

Two identical versions are trained, sponsors approve the promotion of the second, the
deployment job (in-process) runs the canary while a client thread sends requests to
``python -m jobs serve`` (one worker, routes refreshed every second, log flushed every
0.5 s into a local Parquet store). The analysis reads what the gateway logged; the
healthy candidate ends at 100 % with alias ``prod`` moved, and the gateway serves it. A
candidate that raises on 30 % of the requests (``faulty_models``) answers them with 500s the
gateway writes to ``request_errors``; the analysis counts them and rolls the canary back,
alias ``prod`` untouched. The slow-candidate path is in ``test_deploy_rollouts.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore, StoreConfig
from jobs import registry
from jobs.contracts import TRAINING_DATA
from jobs.db import make_engine, make_session_factory
from jobs.db.migrate import upgrade
from jobs.demo_data import CREDIT_DEFAULT, credit_default_record, training_table
from jobs.deploy import (
    CANARY,
    ROLLED_BACK,
    SUCCEEDED,
    DeployConfig,
    DeploymentRunner,
    Thresholds,
    configure_deployment,
    deployment_view,
)
from tests.integration.jobs.deploy_support import (
    ENV,
    MODEL,
    NAME,
    PROJECT,
    Team,
    audit_actions,
    routing_state,
    train_versions,
)
from tests.integration.jobs.faulty_models import FAIL_AGE, register_failing_version
from tests.integration.jobs.gateway_support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
FEATURES = credit_default_record()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data.decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = tmp_path_factory.mktemp("deploy-gateway")
    data_uri = str(root / "data")
    store = ParquetStore(StoreConfig(data_uri=data_uri))
    store.write_partition(
        TRAINING_DATA, {"project": PROJECT, "model": MODEL}, training_table(CREDIT_DEFAULT, seed=5, rows=600)
    )
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    versions, training_engine = train_versions(root, store, tracking, 2)
    registry.set_alias(NAME, ENV, versions[0], tracking_uri=tracking)
    studio_url = f"sqlite:///{root / 'studio.db'}"
    upgrade(studio_url)
    engine = make_engine(studio_url)
    sessions: sessionmaker[Session] = make_session_factory(engine)
    port = _free_port()
    environ = {
        **os.environ,
        "MMS_ENV": "test",
        "MMS_VAR_DIR": str(root / "var"),
        "MMS_DATA_URI": data_uri,
        "MMS_MLFLOW_TRACKING_URI": tracking,
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "jobs", "serve", "--env", ENV, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--refresh-interval", "1", "--flush-interval", "0.5",
        "--preload", f"{PROJECT}/{MODEL}", "--state-dir", str(root / "state"),
    ]  # fmt: skip
    log_path = root / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def ready() -> bool:
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        with contextlib.suppress(OSError):
            return _call(port, "GET", "/readyz")[0] == 200
        return False

    try:
        wait_for(ready, 180, "gateway ready")
        yield {"root": root, "store": store, "tracking": tracking, "versions": versions, "sessions": sessions,
               "port": port}  # fmt: skip
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        store.close()
        engine.dispose()
        training_engine.dispose()


@pytest.fixture(scope="module")
def team(world: dict[str, Any]) -> Team:
    return Team.create(world["sessions"])


class Client:
    """Single-record requests with fresh request ids, counting the version that answered.

    Args:
        port: The gateway's port.
        failing_share: Share of requests sent with ``age`` = ``FAIL_AGE`` (the failing candidate
            raises on them; any other version scores them).
    """

    def __init__(self, port: int, failing_share: float = 0.0) -> None:
        self.port = port
        self.failing_share = failing_share
        self.answers: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=30)
        self.errors: list[str] = []
        self.failures: Counter[int] = Counter()
        self._stop = threading.Event()
        # A few concurrent senders: the loaded test machine answers one connection at a time slowly.
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]

    def __enter__(self) -> Client:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        path = f"/v1/models/{MODEL}/predict?project={PROJECT}"
        draw = random.Random(11)
        while not self._stop.is_set():
            features = FEATURES
            if draw.random() < self.failing_share:
                features = {**FEATURES, "age": FAIL_AGE}
            try:
                status, body = _call(
                    self.port, "POST", path, {"features": features, "request_id": uuid.uuid4().hex}
                )
            except OSError as error:
                self.errors.append(repr(error))
                continue
            if status == 200:
                self.answers[body["version"]] += 1
                self.recent.append(body["version"])
            else:
                self.failures[status] += 1
            self._stop.wait(0.002)


def test_approved_canary_is_promoted_under_real_gateway_traffic(world: dict[str, Any], team: Team) -> None:
    sessions = world["sessions"]
    stable, candidate = world["versions"]
    deployment_id = team.approve(candidate, world["tracking"])
    configure_deployment(
        sessions, team.operator, deployment_id, strategy=CANARY, steps="20,50,100", bake_seconds=5
    )
    # The canary's p99 over a 5 s bake is a handful of requests; on the shared test machine it
    # spreads by +-100 ms between two identical versions, so the ratio check gets a wide slack here
    # (the latency checks are exercised by the unit tests and the slow-canary rollout test).
    config = DeployConfig(
        tracking_uri=world["tracking"],
        lease_seconds=6,
        poll_seconds=0.25,
        thresholds=Thresholds(min_requests=15, latency_slack_ms=400.0),
    )
    runner = DeploymentRunner(sessions, world["store"], config)
    with Client(world["port"]) as client:
        outcomes = runner.run_once()
        client.recent.clear()
        try:
            wait_for(
                lambda: len(client.recent) == 30 and set(client.recent) == {candidate},
                30,
                "only the new version serves",
            )
        except AssertionError:
            log = (world["root"] / "gateway.log").read_text(errors="replace")[-3000:]
            raise AssertionError(
                f"{outcomes} {client.answers} {client.failures} {client.errors[-3:]} "
                f"{list(client.recent)}\n{log}"
            ) from None
    assert [(o.deployment_id, o.status) for o in outcomes] == [(deployment_id, SUCCEEDED)], outcomes
    assert client.failures == Counter()
    assert client.answers[stable] > 0 and client.answers[candidate] > 0
    aliases, weight = routing_state(world["tracking"])
    assert aliases[ENV] == candidate and f"{ENV}-canary" not in aliases and weight == "0"
    with sessions() as session:
        view = deployment_view(session, team.operator, deployment_id)
    analyses = [e.details for e in view.events if e.kind == "analysis"]
    assert [a["outcome"] for a in analyses] == ["passed", "passed"]
    requests = [next(r for r in a["results"] if r["metric"] == "requests") for a in analyses]
    assert all(r["canary"] >= 15 and r["stable"] >= 15 for r in requests)
    actions = [action for action, _actor in audit_actions(sessions, deployment_id)]
    assert actions[:2] == ["deployment.queued", "deployment.configure"]
    assert actions[-1] == "deployment.succeeded"


def test_erroring_canary_is_rolled_back_under_real_gateway_traffic(world: dict[str, Any], team: Team) -> None:
    sessions = world["sessions"]
    stable = routing_state(world["tracking"])[0][ENV]
    candidate = register_failing_version(world["tracking"], PROJECT, MODEL, world["versions"][0])
    deployment_id = team.approve(candidate, world["tracking"])
    configure_deployment(
        sessions, team.operator, deployment_id, strategy=CANARY, steps="20,50,100", bake_seconds=5
    )
    config = DeployConfig(
        tracking_uri=world["tracking"],
        lease_seconds=6,
        poll_seconds=0.25,
        thresholds=Thresholds(min_requests=15),
    )
    runner = DeploymentRunner(sessions, world["store"], config)
    with Client(world["port"], failing_share=0.3) as client:
        outcomes = runner.run_once()
    detail = f"{outcomes} {client.answers} {client.failures} {client.errors[-3:]}"
    assert [(o.deployment_id, o.status) for o in outcomes] == [(deployment_id, ROLLED_BACK)], detail
    assert client.failures[500] > 0 and set(client.failures) == {500}, detail
    aliases, weight = routing_state(world["tracking"])
    assert aliases[ENV] == stable and f"{ENV}-canary" not in aliases and weight == "0"
    with sessions() as session:
        view = deployment_view(session, team.operator, deployment_id)
    assert view.status == ROLLED_BACK
    assert view.reason.startswith("automatic rollback: success rate ") and "server errors" in view.reason
    analysis = {r.metric: r for r in view.analyses}
    assert analysis["success_rate"].passed is False and analysis["success_rate"].stable == 1.0
    assert analysis["success_rate"].canary < 0.9
    assert analysis["requests"].canary >= 15
    actions = audit_actions(sessions, deployment_id)
    assert actions[-1] == ("deployment.rolled_back", "system")
