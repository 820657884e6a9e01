"""Routing rules: buckets, canary order, the alias contract and the JSON routes document."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from jobs.gateway.routing import (
    TOTAL_WEIGHT,
    JsonFileRoutes,
    MlflowAliasRoutes,
    NoRoute,
    Route,
    RoutingError,
    RoutingTable,
    canary_alias,
    canary_weight_tag,
    choose_route,
    request_bucket,
    routes_from_aliases,
    routing_table_from_spec,
    validate_routes,
    write_routes_document,
)

pytestmark = pytest.mark.unit


def test_buckets_are_stable_across_processes_and_in_range() -> None:
    ids = [f"request-{i}" for i in range(200)]
    here = [request_bucket(i) for i in ids]
    code = (
        "import json, sys; from jobs.gateway.routing import request_bucket; "
        "print(json.dumps([request_bucket(i) for i in json.loads(sys.argv[1])]))"
    )
    # A fresh interpreter has another hash() salt: the bucket must not depend on it.
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, check=True
    )
    assert json.loads(other.stdout) == here
    assert all(0 <= b < TOTAL_WEIGHT for b in here)
    assert len(set(here)) > 190


def test_choose_route_follows_cumulative_weights_in_list_order() -> None:
    routes = [Route("4", 1000), Route("3", 9000)]
    assert choose_route(routes, 0).version == "4"
    assert choose_route(routes, 999).version == "4"
    assert choose_route(routes, 1000).version == "3"
    assert choose_route(routes, 9999).version == "3"
    with pytest.raises(NoRoute):
        choose_route([], 5)


def test_weights_are_respected_over_many_request_ids() -> None:
    routes = [Route("2", 2500), Route("1", 7500)]
    counts = Counter(choose_route(routes, request_bucket(f"id-{i}")).version for i in range(20_000))
    assert abs(counts["2"] / 20_000 - 0.25) < 0.015


def test_raising_the_canary_weight_keeps_canary_ids_on_the_canary() -> None:
    ids = [f"id-{i}" for i in range(5_000)]
    at_10 = {
        i for i in ids if choose_route([Route("2", 1000), Route("1", 9000)], request_bucket(i)).version == "2"
    }
    at_50 = {
        i for i in ids if choose_route([Route("2", 5000), Route("1", 5000)], request_bucket(i)).version == "2"
    }
    assert at_10 < at_50


def test_aliases_give_the_stable_version_the_whole_traffic_without_a_canary() -> None:
    assert routes_from_aliases({"prod": "3"}, {}, "prod", "m") == [Route("3", TOTAL_WEIGHT)]
    # A canary alias without a weight (or with weight 0) takes no traffic.
    assert routes_from_aliases({"prod": "3", "prod-canary": "4"}, {}, "prod", "m") == [
        Route("3", TOTAL_WEIGHT)
    ]
    assert routes_from_aliases(
        {"prod": "3", "prod-canary": "4"}, {canary_weight_tag("prod"): "0"}, "prod", "m"
    ) == [Route("3", TOTAL_WEIGHT)]


def test_aliases_with_a_canary_list_the_canary_first() -> None:
    aliases = {"prod": "3", canary_alias("prod"): "4", "staging": "4"}
    tags = {canary_weight_tag("prod"): "1500", canary_weight_tag("staging"): "9000"}
    assert routes_from_aliases(aliases, tags, "prod", "m") == [Route("4", 1500), Route("3", 8500)]
    assert routes_from_aliases(aliases, tags, "staging", "m") == [Route("4", TOTAL_WEIGHT)]


def test_aliases_refuse_a_missing_stable_alias_and_bad_weights() -> None:
    with pytest.raises(NoRoute, match="alias 'prod'"):
        routes_from_aliases({"prod-canary": "4"}, {canary_weight_tag("prod"): "100"}, "prod", "m")
    for bad in ("ten", "-1", "10001", "0.5"):
        with pytest.raises(RoutingError, match="canary weight"):
            routes_from_aliases(
                {"prod": "3", "prod-canary": "4"}, {canary_weight_tag("prod"): bad}, "prod", "m"
            )


def test_validate_routes_checks_totals_versions_and_repeats() -> None:
    assert validate_routes([Route("1", 10_000), Route("2", 0)], "x") == [Route("1", 10_000)]
    with pytest.raises(RoutingError, match="add up to 9000"):
        validate_routes([Route("1", 9000)], "x")
    with pytest.raises(RoutingError, match="listed twice"):
        validate_routes([Route("1", 5000), Route("1", 5000)], "x")
    with pytest.raises(RoutingError, match=r"version '\.\./1'"):
        validate_routes([Route("../1", 10_000)], "x")
    with pytest.raises(RoutingError, match="integer"):
        validate_routes([Route("1", 10_000.0)], "x")  # type: ignore[arg-type]


def test_json_routes_round_trip_and_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    key = ("credit-risk", "credit-default", "prod")
    write_routes_document(path, {key: [Route("2", 1000), Route("1", 9000)]})
    source = JsonFileRoutes(path)
    assert isinstance(source, RoutingTable)
    assert source.current_routes(*key) == [Route("2", 1000), Route("1", 9000)]
    with pytest.raises(NoRoute):
        source.current_routes("credit-risk", "credit-default", "staging")

    write_routes_document(path, {key: [Route("2", 10_000)]})
    assert source.current_routes(*key) == [Route("2", 10_000)]
    assert not list(tmp_path.glob(".*tmp"))


def test_json_routes_refuse_invalid_documents(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    source = JsonFileRoutes(path)
    with pytest.raises(RoutingError, match="does not exist"):
        source.current_routes("p", "m", "prod")
    cases = {
        "{": "not valid JSON",
        '{"routes": []}': '"format": 1',
        '{"format": 1, "routes": [{"project": "p", "model": "m/x", "environment": "prod", '
        '"versions": []}]}': r"routes\[0\]\.model",
        '{"format": 1, "routes": [{"project": "p", "model": "m", "environment": "prod", '
        '"versions": [{"version": "1", "weight": 4000}]}]}': "add up to 4000",
        '{"format": 1, "routes": [{"project": "p", "model": "m", "environment": "prod", '
        '"versions": [{"version": "1"}]}]}': r"versions\[0\]",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(RoutingError, match=message):
            JsonFileRoutes(path).current_routes("p", "m", "prod")
    with pytest.raises(RoutingError, match="add up to"):
        write_routes_document(tmp_path / "other.json", {("p", "m", "prod"): [Route("1", 10)]})
    assert not (tmp_path / "other.json").exists()


def test_routing_sources_are_built_from_their_spec(tmp_path: Path) -> None:
    assert isinstance(routing_table_from_spec("mlflow", tracking_uri="sqlite:///x.db"), MlflowAliasRoutes)
    source = routing_table_from_spec(f"json:{tmp_path / 'r.json'}", tracking_uri="sqlite:///x.db")
    assert isinstance(source, JsonFileRoutes)
    with pytest.raises(ValueError, match="mlflow"):
        routing_table_from_spec("redis://x", tracking_uri="sqlite:///x.db")
