"""The inference gateway as a real server process (2 workers) on loopback, SeaweedFS as the data store.

Models are trained with ``jobs.training.train_model`` into a SQLite MLflow store;
the gateway reaches SeaweedFS's S3 port through a TCP relay owned by this module,
so a test can cut the storage off (the relay stops listening and drops its
connections, exactly what a stopped S3 server looks like to a client) and bring
it back, without stopping the session's SeaweedFS that other tests use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobs import registry
from jobs.contracts import INFERENCE_LOGS, LABELS
from jobs.gateway.launch import start_gateway
from jobs.gateway.logbuffer import read_spill_file, spill_files
from jobs.gateway.routing import canary_weight_tag, request_bucket
from tests.integration.jobs.gateway_support import (
    FEATURES,
    MODEL,
    NAME,
    PROJECT,
    ROOT,
    Gateway,
    TcpRelay,
    gateway_environ,
    metric_sum,
    parse_metrics,
    relay_to,
    route_canary,
    trained_workspace,
    wait_for,
)

# One xdist worker runs the whole module, in file order (tests/fixtures/scheduling.py): the tests share
# one server process, and the last one stops it.
pytestmark = pytest.mark.integration

CANARY_WEIGHT = 2000


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, seaweedfs) -> Iterator[dict[str, Any]]:
    configs = [{"c": 1.0}, {"c": 0.01}]
    workspace = trained_workspace(tmp_path_factory, seaweedfs, "gateway", rows=1_200, configs=configs)
    route_canary(workspace["tracking"], *workspace["versions"], CANARY_WEIGHT)
    yield workspace
    workspace["store"].close()


@pytest.fixture(scope="module")
def relay(seaweedfs) -> Iterator[TcpRelay]:
    yield from relay_to(seaweedfs)


@pytest.fixture(scope="module")
def gateway(workspace: dict[str, Any], relay: TcpRelay, seaweedfs) -> Iterator[Gateway]:
    root: Path = workspace["root"]
    environ = gateway_environ(workspace, relay, seaweedfs)
    server = start_gateway(
        environment="prod",
        state_dir=root / "state",
        log_path=root / "gateway.log",
        environ=environ,
        cwd=ROOT,
        preload=[f"{PROJECT}/{MODEL}"],
        options=["--refresh-interval", "1", "--flush-interval", "0.5"],
    )
    try:
        yield Gateway(server)
    finally:
        server.stop(timeout_s=60)


def stored(workspace: dict[str, Any], dataset: str, prefix: str) -> list[dict[str, Any]]:
    table = workspace["store"].read(
        dataset, filters={"project": PROJECT, "model": MODEL, "environment": "prod"}
    )
    if table.num_rows == 0:
        return []
    return [row for row in table.to_pylist() if row["request_id"].startswith(prefix)]


def expected_version(workspace: dict[str, Any], request_id: str) -> str:
    stable, canary = workspace["versions"]
    return canary if request_bucket(request_id) < CANARY_WEIGHT else stable


# --------------------------------------------------------------------------- tests


def test_health_and_readiness(gateway: Gateway, workspace: dict[str, Any]) -> None:
    assert gateway.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = gateway.request("GET", "/readyz")
    assert status == 200 and body["status"] == "ready"
    stable, canary = workspace["versions"]
    assert body["models"][NAME] == [
        {"version": canary, "weight": CANARY_WEIGHT},
        {"version": stable, "weight": 10_000 - CANARY_WEIGHT},
    ]


def test_single_prediction(gateway: Gateway, workspace: dict[str, Any]) -> None:
    status, body = gateway.predict(
        {"features": FEATURES, "request_id": "single-1", "segments": {"region": "north"}}
    )
    assert status == 200, body
    assert body["request_id"] == "single-1"
    assert body["version"] == expected_version(workspace, "single-1")
    assert body["prediction"] in (0, 1)
    assert 0.0 <= body["score"] <= 1.0
    assert (body["project"], body["model"], body["environment"]) == (PROJECT, MODEL, "prod")

    status, body = gateway.predict({"features": {**FEATURES, "age": None, "income": None}})
    assert status == 200, body
    assert len(body["request_id"]) == 36  # a generated UUID4

    # The prediction is logged with its features and segments, on the day it was served.
    rows = wait_for(lambda: stored(workspace, INFERENCE_LOGS, "single-1"), 30, "single-1 logged", gateway)
    (row,) = rows
    assert row["version"] == expected_version(workspace, "single-1")
    assert row["income"] == 52_000.0 and row["home_ownership"] == "rent"
    assert row["segment_region"] == "north"
    assert row["latency_ms"] >= 0 and 0.0 <= row["score"] <= 1.0
    assert row["date"] == row["timestamp"].date().isoformat()


def test_batch_prediction(gateway: Gateway, workspace: dict[str, Any]) -> None:
    instances = [{"features": {**FEATURES, "age": 20 + i}, "request_id": f"batch-{i}"} for i in range(60)]
    status, body = gateway.predict({"instances": instances})
    assert status == 200, body
    assert [p["request_id"] for p in body["predictions"]] == [f"batch-{i}" for i in range(60)]
    for prediction in body["predictions"]:
        assert prediction["version"] == expected_version(workspace, prediction["request_id"])
        assert 0.0 <= prediction["score"] <= 1.0
    generated = gateway.predict({"instances": [{"features": FEATURES}, {"features": FEATURES}]})[1]
    ids = [p["request_id"] for p in generated["predictions"]]
    assert len(set(ids)) == 2


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"features": {**FEATURES, "age": "forty"}}, 422, "features.age"),
        ({"features": {k: v for k, v in FEATURES.items() if k != "income"}}, 422, "features.income"),
        ({"features": {**FEATURES, "loan_purpose": 7}}, 422, "features.loan_purpose"),
        ({"features": {**FEATURES, "colour": "red"}}, 422, "features.colour"),
        ({"request_id": "no-features"}, 422, "features"),
        ({"features": FEATURES, "request_id": 42}, 422, "request_id"),
        (
            {"instances": [{"features": FEATURES}] * 3 + [{"features": {**FEATURES, "age": []}}]},
            422,
            "instances[3].features.age",
        ),
        (
            {
                "instances": [
                    {"features": FEATURES, "request_id": "dup"},
                    {"features": FEATURES, "request_id": "dup"},
                ]
            },
            422,
            "instances[1].request_id",
        ),
        ({"instances": []}, 422, "instances"),
    ],
)
def test_bad_payloads_name_the_offending_field(
    gateway: Gateway, payload: Any, status: int, field: str
) -> None:
    answer_status, body = gateway.predict(payload)
    assert answer_status == status, body
    assert body["field"] == field
    assert field in {e["field"] for e in body["errors"]}


def test_non_finite_numbers_missing_project_unknown_model_and_bad_json(gateway: Gateway) -> None:
    raw = json.dumps({"features": {**FEATURES, "age": 1}}).replace('"age": 1', '"age": Infinity').encode()
    status, body = gateway.predict(raw=raw)
    assert (status, body["field"]) == (422, "features.age") and "finite" in body["message"]
    # NaN is a missing value the signature allows (every input is optional): scored, not refused.
    raw = json.dumps({"features": {**FEATURES, "age": 1}}).replace('"age": 1', '"age": NaN').encode()
    assert gateway.predict(raw=raw)[0] == 200
    status, body = gateway.request("POST", f"/v1/models/{MODEL}/predict", {"features": FEATURES})
    assert (status, body["field"]) == (422, "project")
    status, body = gateway.predict({"features": FEATURES}, model="no-such-model")
    assert (status, body["error"], body["field"]) == (404, "unknown_model", "model")
    assert "no-such-model" in body["message"]
    status, body = gateway.predict(raw=b'{"features": ')
    assert (status, body["field"]) == (422, "body")


def test_canary_routing_respects_weights_and_is_sticky(gateway: Gateway, workspace: dict[str, Any]) -> None:
    stable, canary = workspace["versions"]
    ids = [f"sticky-{i}" for i in range(2_000)]
    served: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        instances = [{"features": FEATURES, "request_id": rid} for rid in ids[start : start + 500]]
        status, body = gateway.predict({"instances": instances})
        assert status == 200, body
        served.update((p["request_id"], p["version"]) for p in body["predictions"])
    counts = Counter(served.values())
    assert set(counts) == {stable, canary}
    assert abs(counts[canary] / len(ids) - CANARY_WEIGHT / 10_000) < 0.03
    assert all(served[rid] == expected_version(workspace, rid) for rid in ids)
    # Sticky: the same ids, asked one by one (either worker may answer), get the same versions.
    for rid in ids[:60]:
        status, body = gateway.predict({"features": FEATURES, "request_id": rid})
        assert status == 200 and body["version"] == served[rid]


def test_routes_follow_a_changed_canary_weight(gateway: Gateway, workspace: dict[str, Any]) -> None:
    stable, canary = workspace["versions"]
    client = registry.client(workspace["tracking"])
    canary_ids = [f"reroute-{i}" for i in range(400) if request_bucket(f"reroute-{i}") < CANARY_WEIGHT]
    instances = [{"features": FEATURES, "request_id": rid} for rid in canary_ids]

    def versions_served() -> set[str]:
        # Several connections: both workers must have picked up the change.
        return {
            p["version"]
            for _ in range(4)
            for p in gateway.predict({"instances": instances})[1]["predictions"]
        }

    assert versions_served() == {canary}
    client.set_registered_model_tag(NAME, canary_weight_tag("prod"), "0")
    try:
        wait_for(lambda: versions_served() == {stable}, 20, "canary weight 0 applied", gateway)
    finally:
        client.set_registered_model_tag(NAME, canary_weight_tag("prod"), str(CANARY_WEIGHT))
    wait_for(lambda: versions_served() == {canary}, 20, "canary weight restored", gateway)


def test_feedback_is_written_to_labels_on_the_request_day(
    gateway: Gateway, workspace: dict[str, Any]
) -> None:
    today = datetime.now(UTC).date().isoformat()
    for i in range(6):
        assert gateway.predict({"features": FEATURES, "request_id": f"fb-{i}"})[0] == 200
    # Six calls on fresh connections: some reach the worker that did not serve the prediction.
    for i in range(6):
        status, body = gateway.request(
            "POST",
            "/v1/feedback",
            {"project": PROJECT, "model": MODEL, "request_id": f"fb-{i}", "label": i % 2},
        )
        assert status == 202, body
        assert (body["date"], body["date_source"]) == (today, "recent_requests")
    status, body = gateway.request(
        "POST",
        "/v1/feedback",
        {
            "project": PROJECT,
            "model": MODEL,
            "labels": [
                {
                    "request_id": "fb-old",
                    "label": 1,
                    "request_date": "2024-01-15",
                    "timestamp": "2024-02-01T08:00:00Z",
                }
            ],
        },
    )
    assert status == 202, body
    assert body["labels"] == [{"request_id": "fb-old", "date": "2024-01-15", "date_source": "request_date"}]

    status, body = gateway.request(
        "POST",
        "/v1/feedback",
        {"project": PROJECT, "model": MODEL, "request_id": "fb-never-seen", "label": 1},
    )
    assert (status, body["field"]) == (422, "request_date")
    status, body = gateway.request(
        "POST",
        "/v1/feedback",
        {
            "project": PROJECT,
            "model": MODEL,
            "labels": [{"request_id": "fb-1", "label": 1}, {"request_id": "x"}],
        },
    )
    assert (status, body["field"]) == (422, "labels[1].label")
    status, body = gateway.request(
        "POST",
        "/v1/feedback",
        {"project": PROJECT, "model": MODEL, "request_id": "fb-1", "label": 1, "timestamp": "x"},
    )
    assert (status, body["field"]) == (422, "timestamp")

    rows = wait_for(
        lambda: len(stored(workspace, LABELS, "fb-")) == 7 and stored(workspace, LABELS, "fb-"), 30, "labels"
    )
    by_id = {row["request_id"]: row for row in rows}
    assert {by_id[f"fb-{i}"]["date"] for i in range(6)} == {today}
    assert [by_id[f"fb-{i}"]["label"] for i in range(6)] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert by_id["fb-old"]["date"] == "2024-01-15"
    assert by_id["fb-old"]["label_timestamp"] == datetime(2024, 2, 1, 8, tzinfo=UTC)


def test_metrics_are_prometheus_text_summed_over_workers(gateway: Gateway) -> None:
    def counts() -> tuple[float, float, float]:
        samples = parse_metrics(gateway.request("GET", "/metrics")[1])
        return (
            metric_sum(samples, "mms_gateway_predictions_total"),
            metric_sum(samples, "mms_gateway_requests_total", endpoint="predict", code="422"),
            metric_sum(samples, "mms_gateway_request_errors_total", reason="unknown_model"),
        )

    def settled() -> tuple[float, float, float]:
        # Workers publish every second: the counts are settled once two reads 1.2 s apart agree.
        previous = counts()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1.2)
            current = counts()
            if current == previous:
                return current
            previous = current
        raise AssertionError("the metrics never settled")

    before = settled()
    for i in range(40):
        assert gateway.predict({"features": FEATURES, "request_id": f"metrics-{i}"})[0] == 200
    for _ in range(3):
        assert gateway.predict({"features": {**FEATURES, "age": "x"}})[0] == 422
    assert gateway.predict({"features": FEATURES}, model="unknown-for-metrics")[0] == 404
    after = settled()
    # Whichever worker answers the scrape, the counts are the sum over both workers.
    assert [b - a for a, b in zip(before, after, strict=True)] == [40, 3, 1]

    samples = parse_metrics(gateway.request("GET", "/metrics")[1])
    buckets = sorted(
        (float(re.search(r'le="([^"]+)"', key).group(1).replace("+Inf", "inf")), value)
        for key, value in samples.items()
        if key.startswith("mms_gateway_request_duration_seconds_bucket") and 'version="' in key
    )
    assert buckets
    assert metric_sum(samples, "mms_gateway_log_rows_total", event="written") > 0
    assert metric_sum(samples, "mms_gateway_log_rows_total", event="dropped") == 0
    assert len([k for k in samples if k.startswith("mms_gateway_log_store_available")]) == 2  # one per worker
    assert "mms_gateway_log_spill_files" in samples


def test_storage_outage_spills_and_replays_every_row(
    gateway: Gateway, workspace: dict[str, Any], relay: TcpRelay
) -> None:
    def samples() -> dict[str, float]:
        return parse_metrics(gateway.request("GET", "/metrics")[1])

    relay.down()
    try:
        for i in range(200):
            status, body = gateway.predict({"features": FEATURES, "request_id": f"outage-{i}"})
            assert status == 200, body  # scoring never waits for the store
        for start in (200, 350):
            instances = [{"features": FEATURES, "request_id": f"outage-{start + i}"} for i in range(150)]
            assert gateway.predict({"instances": instances})[0] == 200

        def outage_seen() -> bool:
            # One scrape per check: each scrape may reach another worker, whose view of its
            # sibling is up to a second old.
            current = samples()
            return (
                metric_sum(current, "mms_gateway_log_spill_files") > 0
                and metric_sum(current, "mms_gateway_log_store_errors_total") > 0
                and metric_sum(current, "mms_gateway_log_store_available") < 2
            )

        wait_for(outage_seen, 60, "spill files during the outage", gateway)
        assert stored(workspace, INFERENCE_LOGS, "outage-") == []  # read directly, not through the relay
    finally:
        relay.up()

    def replayed() -> bool:
        current = samples()
        return (
            metric_sum(current, "mms_gateway_log_spill_files") == 0
            and len(stored(workspace, INFERENCE_LOGS, "outage-")) >= 500
        )

    wait_for(replayed, 120, "spilled rows replayed", gateway)
    rows = stored(workspace, INFERENCE_LOGS, "outage-")
    assert len(rows) == 500
    assert {row["request_id"] for row in rows} == {f"outage-{i}" for i in range(500)}

    def counted() -> bool:
        # Rows still queued when the store came back were written directly; every spilled row
        # was replayed. Counts settle within a second (the other worker's snapshot).
        current = samples()
        spilled = metric_sum(current, "mms_gateway_log_rows_total", event="spilled")
        replayed = metric_sum(current, "mms_gateway_log_rows_total", event="replayed")
        dropped = metric_sum(current, "mms_gateway_log_rows_total", event="dropped")
        return spilled > 0 and replayed == spilled and dropped == 0

    wait_for(counted, 30, "spilled rows counted as replayed", gateway)


def test_shutdown_writes_the_last_rows(gateway: Gateway, workspace: dict[str, Any]) -> None:
    instances = [{"features": FEATURES, "request_id": f"last-{i}"} for i in range(30)]
    assert gateway.predict({"instances": instances})[0] == 200
    os.killpg(gateway.process.pid, signal.SIGTERM)
    assert gateway.process.wait(timeout=90) == 0, gateway.log_tail()
    written = [row["request_id"] for row in stored(workspace, INFERENCE_LOGS, "last-")]
    # What the store did not take before the exit (slow under load, or still marked down after the
    # outage test on this server) is spilled to the state folder and replayed at the next start.
    spilled = [
        request_id
        for path in spill_files(workspace["root"] / "state" / "spill")
        for request_id in read_spill_file(path).table.column("request_id").to_pylist()
        if request_id.startswith("last-")
    ]
    assert sorted(written + spilled) == sorted(f"last-{i}" for i in range(30)), (written, spilled)
    assert "0 dropped" in gateway.log_path.read_text()
