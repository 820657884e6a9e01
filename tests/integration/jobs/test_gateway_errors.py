"""Failed requests through a real gateway process: ``request_errors`` rows with the failing version.

A version that raises on some inputs (``faulty_models.FailingOnSentinels``) is the canary of a
one-worker ``python -m jobs serve`` on loopback, SeaweedFS behind a TCP relay as the data
store. Requests routed to it that it fails answer 500 and become ``request_errors`` rows
(version, request id, kind, status), never ``inference_logs`` rows; client errors (422) write
nothing; a storage outage spills the error rows and replays them once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.contracts import INFERENCE_LOGS, REQUEST_ERRORS
from jobs.gateway.routing import request_bucket
from tests.integration.jobs.faulty_models import FAIL_AGE, NAN_AGE
from tests.integration.jobs.gateway_support import (
    FEATURES,
    MODEL,
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

CANARY_WEIGHT = 5000


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, seaweedfs) -> Iterator[dict[str, Any]]:
    yield from failing_workspace(tmp_path_factory, seaweedfs, "gateway-errors", CANARY_WEIGHT)


@pytest.fixture(scope="module")
def relay(seaweedfs) -> Iterator[TcpRelay]:
    yield from relay_to(seaweedfs)


@pytest.fixture(scope="module")
def gateway(workspace: dict[str, Any], relay: TcpRelay, seaweedfs) -> Iterator[Gateway]:
    yield from one_worker_gateway(workspace, relay, seaweedfs)


def ids_on(prefix: str, canary: bool, count: int) -> list[str]:
    """Request ids the routing sends to the canary (or to the stable version)."""
    found, i = [], 0
    while len(found) < count:
        rid = f"{prefix}-{i}"
        if (request_bucket(rid) < CANARY_WEIGHT) == canary:
            found.append(rid)
        i += 1
    return found


def stored(workspace: dict[str, Any], dataset: str, prefix: str) -> dict[str, dict[str, Any]]:
    table = workspace["store"].read(
        dataset, filters={"project": PROJECT, "model": MODEL, "environment": "prod"}
    )
    if table.num_rows == 0:
        return {}
    return {row["request_id"]: row for row in table.to_pylist() if row["request_id"].startswith(prefix)}


def predict(gateway: Gateway, rid: str, age: float) -> tuple[int, Any]:
    return gateway.predict({"features": {**FEATURES, "age": age}, "request_id": rid})


def test_failed_requests_are_logged_with_their_version(gateway: Gateway, workspace: dict[str, Any]) -> None:
    stable, failing = workspace["stable"], workspace["failing"]
    raising, nan, healthy = (
        ids_on("err-raise", True, 6),
        ids_on("err-nan", True, 4),
        ids_on("err-ok", True, 5),
    )
    on_stable = ids_on("err-stable", False, 5)
    for rid in raising:
        status, body = predict(gateway, rid, FAIL_AGE)
        assert status == 500, body
        assert (body["error"], body["error_kind"], body["versions"]) == ("internal", "model_error", [failing])
    for rid in nan:
        status, body = predict(gateway, rid, NAN_AGE)
        assert (status, body["error_kind"], body["versions"]) == (500, "bad_output", [failing]), body
    for rid in healthy:
        status, body = predict(gateway, rid, 40)
        assert (status, body["version"]) == (200, failing), body
    for rid in on_stable:  # the stable version scores the same sentinel input
        status, body = predict(gateway, rid, FAIL_AGE)
        assert (status, body["version"]) == (200, stable), body
    # A client error is not the model's fault: 422, nothing written to request_errors.
    status, body = gateway.predict({"features": {**FEATURES, "age": "old"}, "request_id": "err-client"})
    assert status == 422, body

    errors = wait_for(
        lambda: (
            len(stored(workspace, REQUEST_ERRORS, "err-")) == 10 and stored(workspace, REQUEST_ERRORS, "err-")
        ),
        30,
        "request errors written",
        gateway,
    )
    assert set(errors) == set(raising) | set(nan)
    for rid in raising:
        row = errors[rid]
        assert (row["version"], row["error_kind"], row["status_code"]) == (failing, "model_error", 500)
        assert "deliberate failure" in row["message"] and row["latency_ms"] >= 0
        assert row["date"] == row["timestamp"].date().isoformat()
    assert {errors[rid]["error_kind"] for rid in nan} == {"bad_output"}
    logged = wait_for(
        lambda: (
            len(stored(workspace, INFERENCE_LOGS, "err-")) == 10 and stored(workspace, INFERENCE_LOGS, "err-")
        ),
        30,
        "predictions logged",
        gateway,
    )
    assert set(logged) == set(healthy) | set(on_stable)  # failed requests never reach the inference log

    def counted() -> bool:
        samples = parse_metrics(gateway.request("GET", "/metrics")[1])
        return (
            metric_sum(samples, "mms_gateway_record_errors_total", version=failing, kind="model_error") == 6
            and metric_sum(samples, "mms_gateway_record_errors_total", version=failing, kind="bad_output")
            == 4
            and metric_sum(samples, "mms_gateway_request_errors_total", version=failing) == 10
            and metric_sum(samples, "mms_gateway_requests_total", version=failing, code="500") == 10
            and metric_sum(samples, "mms_gateway_request_errors_total", version=stable) == 0
            and metric_sum(samples, "mms_gateway_request_errors_total", reason="invalid_payload") >= 1
        )

    wait_for(counted, 30, "errors counted per version", gateway)


def test_a_batch_fails_as_a_whole_and_logs_only_the_failing_version(
    gateway: Gateway, workspace: dict[str, Any]
) -> None:
    failing = workspace["failing"]
    on_canary, on_stable = ids_on("batch-err", True, 3), ids_on("batch-err-s", False, 3)
    instances = [
        {"features": {**FEATURES, "age": FAIL_AGE}, "request_id": rid} for rid in on_canary + on_stable
    ]
    status, body = gateway.predict({"instances": instances})
    assert (status, body["error_kind"], body["versions"]) == (500, "model_error", [failing]), body
    errors = wait_for(
        lambda: stored(workspace, REQUEST_ERRORS, "batch-err"), 30, "batch request errors written", gateway
    )
    time.sleep(1.5)  # a flush interval and more: nothing else arrives
    errors = stored(workspace, REQUEST_ERRORS, "batch-err")
    assert set(errors) == set(on_canary)
    assert stored(workspace, INFERENCE_LOGS, "batch-err") == {}


def test_error_rows_survive_a_storage_outage(
    gateway: Gateway, workspace: dict[str, Any], relay: TcpRelay
) -> None:
    raising = ids_on("outage-err", True, 8)
    relay.down()
    try:
        for rid in raising:
            assert predict(gateway, rid, FAIL_AGE)[0] == 500

        def spilled() -> bool:
            samples = parse_metrics(gateway.request("GET", "/metrics")[1])
            return metric_sum(samples, "mms_gateway_log_spill_files") > 0

        wait_for(spilled, 60, "error rows spilled during the outage", gateway)
    finally:
        relay.up()
    rows = wait_for(
        lambda: (
            len(stored(workspace, REQUEST_ERRORS, "outage-err")) == 8
            and stored(workspace, REQUEST_ERRORS, "outage-err")
        ),
        120,
        "spilled error rows replayed",
        gateway,
    )
    assert set(rows) == set(raising)
    samples = parse_metrics(gateway.request("GET", "/metrics")[1])
    assert metric_sum(samples, "mms_gateway_log_rows_total", event="dropped") == 0
