"""The scoring deadline through a real gateway process: a slow version answers 504 ``timeout``.

A version that sleeps on one input (:class:`SlowOnSentinel`) is the only version of the
``slow`` environment, served by a one-worker ``python -m jobs serve --score-timeout 0.5`` on
loopback with SeaweedFS as the data store. A request it cannot score in time is answered
504 with a JSON error, counted in ``/metrics`` and logged to ``request_errors`` as
``timeout``; the worker keeps answering other requests meanwhile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

from jobs import registry
from jobs.contracts import INFERENCE_LOGS, REQUEST_ERRORS
from tests.integration.jobs import faulty_models
from tests.integration.jobs.gateway_support import (
    FEATURES,
    MODEL,
    NAME,
    PROJECT,
    Gateway,
    TcpRelay,
    failing_workspace,
    metric_sum,
    one_worker_gateway,
    parse_metrics,
    relay_to,
    wait_for,
)

pytestmark = pytest.mark.integration

ENVIRONMENT = "slow"
SLOW_AGE = 79
SLOW_SECONDS = 4.0
SCORE_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, seaweedfs) -> Iterator[dict[str, Any]]:
    # A trained model and its failing copy, in a store and MLflow of this module's own.
    yield from failing_workspace(tmp_path_factory, seaweedfs, "gateway-timeout", 5000)


@pytest.fixture(scope="module")
def relay(seaweedfs) -> Iterator[TcpRelay]:
    yield from relay_to(seaweedfs)


class SlowOnSentinel(faulty_models.FailingOnSentinels):
    """The wrapped classifier, except that a batch holding age :data:`SLOW_AGE` takes :data:`SLOW_SECONDS`."""

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Probabilities of the wrapped classifier, late for the sentinel age."""
        if np.any(self._ages(frame) == SLOW_AGE):
            time.sleep(SLOW_SECONDS)
        return super().predict_proba(frame)


@pytest.fixture(scope="module")
def slow_version(workspace: dict[str, Any]) -> str:
    # Registered like the failing candidate, with this wrapper instead; pickled by value so the
    # gateway process does not import this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faulty_models, "FailingOnSentinels", SlowOnSentinel)
        version = faulty_models.register_failing_version(
            workspace["tracking"], PROJECT, MODEL, workspace["stable"]
        )
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    registry.set_alias(NAME, ENVIRONMENT, version, tracking_uri=workspace["tracking"])
    return version


@pytest.fixture(scope="module")
def gateway(workspace: dict[str, Any], relay, seaweedfs, slow_version: str) -> Iterator[Gateway]:
    options = ["--score-timeout", str(SCORE_TIMEOUT_S)]
    yield from one_worker_gateway(workspace, relay, seaweedfs, environment=ENVIRONMENT, options=options)


def stored(workspace: dict[str, Any], dataset: str, prefix: str) -> dict[str, dict[str, Any]]:
    table = workspace["store"].read(
        dataset,
        filters={"project": PROJECT, "model": MODEL, "environment": ENVIRONMENT},
    )
    return {row["request_id"]: row for row in table.to_pylist() if row["request_id"].startswith(prefix)}


def timed_predict(gateway: Gateway, request_id: str, age: float) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body = gateway.predict({"request_id": request_id, "features": {**FEATURES, "age": age}})
    return status, body, time.monotonic() - started


def test_a_request_past_the_scoring_deadline_gets_504_and_a_timeout_error_row(
    gateway: Gateway, workspace: dict[str, Any], slow_version: str
) -> None:
    status, body, _ = timed_predict(gateway, "late-ok-0", 40)
    assert (status, body["version"]) == (200, slow_version), body

    late = ["late-0", "late-1", "late-2"]
    for request_id in late:
        status, body, elapsed = timed_predict(gateway, request_id, SLOW_AGE)
        assert status == 504, body
        assert (body["error"], body["error_kind"], body["versions"]) == ("timeout", "timeout", [slow_version])
        assert "0.5 s" in body["message"] and "SCORE_TIMEOUT_S" in body["message"]
    # Once the version is known to be slow it is scored off the event loop: the deadline answers
    # before the model returns, and other requests are served while it still runs.
    assert elapsed < SLOW_SECONDS - 1.0, f"504 after {elapsed:.1f} s: the deadline did not interrupt the wait"
    status, body, elapsed = timed_predict(gateway, "late-ok-1", 40)
    assert (status, body["version"]) == (200, slow_version), body

    errors = wait_for(
        lambda: (
            len(stored(workspace, REQUEST_ERRORS, "late-")) == 3
            and stored(workspace, REQUEST_ERRORS, "late-")
        ),
        30,
        "timeout rows written",
        gateway,
    )
    assert set(errors) == set(late)
    for row in errors.values():
        assert (row["version"], row["error_kind"], row["status_code"]) == (slow_version, "timeout", 504)
        # The deadline's timer and the latency clock start a moment apart: allow 10 ms (measured 499.5).
        assert row["latency_ms"] >= SCORE_TIMEOUT_S * 1000 - 10 and "0.5 s" in row["message"]
    logged = wait_for(
        lambda: (
            len(stored(workspace, INFERENCE_LOGS, "late-")) == 2
            and stored(workspace, INFERENCE_LOGS, "late-")
        ),
        30,
        "healthy predictions logged",
        gateway,
    )
    assert set(logged) == {"late-ok-0", "late-ok-1"}  # a timed-out request is not a prediction

    def counted() -> bool:
        samples = parse_metrics(gateway.request("GET", "/metrics")[1])
        return (
            metric_sum(samples, "mms_gateway_requests_total", version=slow_version, code="504") == 3
            and metric_sum(
                samples, "mms_gateway_request_errors_total", version=slow_version, reason="timeout"
            )
            == 3
            and metric_sum(samples, "mms_gateway_record_errors_total", version=slow_version, kind="timeout")
            == 3
        )

    wait_for(counted, 30, "timeouts counted", gateway)
