"""What the tests of a real gateway process share: its HTTP client, a switchable TCP relay to the
store, its environment and workspaces (`test_gateway_server`, `test_gateway_errors`,
`test_gateway_timeout`).

Plain functions and generators: each test module declares its own module-scoped fixtures with them,
so no test module imports another.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from analytics.store import ParquetStore
from jobs import registry
from jobs.contracts import TRAINING_DATA
from jobs.db import make_engine, make_session_factory
from jobs.db.migrate import upgrade
from jobs.demo_data import CREDIT_DEFAULT, credit_default_record, training_table
from jobs.gateway.launch import GatewayProcess, start_gateway
from jobs.gateway.routing import canary_weight_tag
from jobs.permissions import Actor, Role
from jobs.training import train_model
from tests.fixtures.relay import TcpRelay
from tests.integration.jobs.faulty_models import register_failing_version

ROOT = Path(__file__).resolve().parents[3]
PROJECT, MODEL = CREDIT_DEFAULT.project, CREDIT_DEFAULT.model
NAME = f"{PROJECT}.{MODEL}"
ENGINEER = Actor(user_id=1, username="maya", roles={PROJECT: frozenset({Role.ML_ENGINEER})})
FEATURES = credit_default_record()


class Gateway:
    """A running ``python -m jobs serve`` process (started by ``jobs.gateway.launch``) and an HTTP client."""

    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        self.process = server.process
        self.port = server.port
        self.log_path = server.log_path

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        kind = response.getheader("Content-Type", "")
        return response.status, (json.loads(data) if kind.startswith("application/json") else data.decode())

    def predict(self, body: Any = None, raw: bytes | None = None, model: str = MODEL) -> tuple[int, Any]:
        return self.request("POST", f"/v1/models/{model}/predict?project={PROJECT}", body, raw)

    def log_tail(self) -> str:
        return self.server.log_tail()


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, gateway: Gateway | None = None
) -> Any:
    """``condition()``'s first truthy value, polled every 0.1 s; fails after ``timeout_s`` (with the
    gateway's log, when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    tail = f"\nserver log:\n{gateway.log_tail()}" if gateway else ""
    raise AssertionError(f"{what}: not within {timeout_s} s{tail}")


SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
)


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition; asserts every line is well formed."""
    samples = {}
    declared = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split(" ")[2])
            continue
        if not line or line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed metrics line {line!r}"
        assert re.sub(r"_(bucket|sum|count)$", "", match.group(1)) in declared or match.group(1) in declared
        samples[line.rsplit(" ", 1)[0]] = float(match.group(3))
    return samples


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if (key == name or key.startswith(name + "{")) and all(w in key for w in wanted)
    )


def gateway_environ(workspace: dict[str, Any], relay: TcpRelay, seaweedfs: Any) -> dict[str, str]:
    """Environment of a test gateway: the workspace's store reached through ``relay``, its MLflow."""
    root: Path = workspace["root"]
    return {
        **os.environ,
        "MMS_ENV": "test",
        "MMS_VAR_DIR": str(root / "var"),
        "MMS_DATA_URI": workspace["config"].data_uri,
        "MMS_S3_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
        "MMS_S3_REGION": seaweedfs.region,
        "MMS_S3_ACCESS_KEY_ID": seaweedfs.access_key,
        "MMS_S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "MMS_MLFLOW_TRACKING_URI": workspace["tracking"],
        "MMS_GATEWAY_RETRY_INTERVAL_S": "0.5",
        "PYTHONPATH": str(ROOT),
    }


def relay_to(seaweedfs: Any) -> Iterator[TcpRelay]:
    """A relay to SeaweedFS's S3 port, switched on; closed when the generator closes."""
    relay = TcpRelay(int(seaweedfs.endpoint_url.rsplit(":", 1)[1]))
    relay.up()
    yield relay
    relay.close()


def trained_workspace(
    tmp_path_factory: pytest.TempPathFactory,
    seaweedfs: Any,
    name: str,
    *,
    rows: int,
    configs: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A fresh store on SeaweedFS with ``rows`` training rows and a fresh MLflow holding one linear
    version per entry of ``configs`` (extra training settings), trained by :data:`ENGINEER`.

    Returns:
        ``root``, ``store`` (close it), ``config``, ``tracking`` and ``versions``.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = tmp_path_factory.mktemp(name)
    config = seaweedfs.store_config(f"{name}-{os.getpid()}-{int(time.time() * 1000)}")
    store = ParquetStore(config)
    store.write_partition(
        TRAINING_DATA, {"project": PROJECT, "model": MODEL}, training_table(CREDIT_DEFAULT, seed=5, rows=rows)
    )
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    studio = f"sqlite:///{root / 'studio.db'}"  # the audit log training writes to
    upgrade(studio)
    engine = make_engine(studio)
    versions = [
        train_model(
            ENGINEER,
            project=PROJECT,
            model=MODEL,
            store=store,
            tracking_uri=tracking,
            session_factory=make_session_factory(engine),
            config={"estimator": "linear", "max_iter": 100, **extra},
        ).version
        for extra in configs
    ]
    engine.dispose()
    return {"root": root, "store": store, "config": config, "tracking": tracking, "versions": versions}


def route_canary(tracking: str, stable: str, canary: str, weight: int) -> None:
    """Serve ``stable`` in ``prod`` with ``canary`` as its canary at ``weight`` (of 10,000)."""
    registry.set_alias(NAME, "prod", stable, tracking_uri=tracking)
    registry.set_alias(NAME, "prod-canary", canary, tracking_uri=tracking)
    registry.client(tracking).set_registered_model_tag(NAME, canary_weight_tag("prod"), str(weight))


def failing_workspace(
    tmp_path_factory: pytest.TempPathFactory, seaweedfs: Any, name: str, canary_weight: int
) -> Iterator[dict[str, Any]]:
    """A trained stable version as ``prod`` and a failing copy of it (``faulty_models``) as its
    canary at ``canary_weight`` (of 10,000), in a fresh store and MLflow; closed with the generator."""
    workspace = trained_workspace(tmp_path_factory, seaweedfs, name, rows=600, configs=[{}])
    (stable,) = workspace["versions"]
    failing = register_failing_version(workspace["tracking"], PROJECT, MODEL, stable)
    route_canary(workspace["tracking"], stable, failing, canary_weight)
    yield {**workspace, "stable": stable, "failing": failing}
    workspace["store"].close()


def one_worker_gateway(
    workspace: dict[str, Any],
    relay: TcpRelay,
    seaweedfs: Any,
    *,
    environment: str = "prod",
    options: Sequence[str] = (),
) -> Iterator[Gateway]:
    """A one-worker gateway of ``environment`` on the workspace, stopped when the generator closes."""
    root: Path = workspace["root"]
    server = start_gateway(
        environment=environment,
        state_dir=root / f"state-{environment}",
        log_path=root / f"gateway-{environment}.log",
        environ=gateway_environ(workspace, relay, seaweedfs),
        cwd=ROOT,
        workers=1,
        preload=[f"{PROJECT}/{MODEL}"],
        options=["--refresh-interval", "1", "--flush-interval", "0.5", *options],
    )
    try:
        yield Gateway(server)
    finally:
        server.stop(timeout_s=60)
