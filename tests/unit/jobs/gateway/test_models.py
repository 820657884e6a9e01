"""Payload validation, scoring, micro-batching and the deployment cache, on real scikit-learn models."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.gateway.app import MicroBatcher
from jobs.gateway.models import DeploymentCache, LoadedModel, parse_segments
from jobs.gateway.routing import JsonFileRoutes, NoRoute, Route, request_bucket, write_routes_document
from tests.unit.jobs.gateway.support import CATEGORICAL, MODEL, NUMERIC, PROJECT, features, loaded_model

pytestmark = pytest.mark.unit


def _run_in_fresh_loop(coroutine):
    """Run ``coroutine`` on a new event loop in its own thread.

    A browser test earlier on the same xdist worker can leave Playwright's loop running in this
    thread, where ``asyncio.run`` refuses to start.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def fields_of(errors) -> list[str]:
    return [e.field for e in errors]


def test_valid_features_are_normalised() -> None:
    model = loaded_model()
    values, errors = model.parse_features(
        features(age=40, home_ownership=None, income=float("nan")), "features"
    )
    assert errors == []
    assert values["age"] == 40.0 and isinstance(values["age"], float)
    assert values["home_ownership"] is None
    assert values["income"] is None  # NaN counts as missing: the pipeline imputes it
    assert list(values) == list(NUMERIC + CATEGORICAL)


def test_every_bad_field_is_named() -> None:
    model = loaded_model()
    payload = features(
        age="forty", loan_purpose=3, interest_rate=math.inf, num_late_payments=True, colour="red"
    )
    del payload["income"]
    _values, errors = model.parse_features(payload, "instances[2].features")
    assert sorted(fields_of(errors)) == sorted(
        f"instances[2].features.{name}"
        for name in ("age", "loan_purpose", "interest_rate", "num_late_payments", "colour", "income")
    )
    messages = {e.field.rsplit(".", 1)[1]: e.message for e in errors}
    assert "number" in messages["age"]
    assert "string" in messages["loan_purpose"]
    assert "finite" in messages["interest_rate"]
    assert "unknown feature" in messages["colour"]
    assert "missing" in messages["income"]
    _values, errors = model.parse_features(["not", "an", "object"], "features")
    assert fields_of(errors) == ["features"]


def test_inputs_the_signature_requires_refuse_null_and_nan() -> None:
    model = loaded_model(required=frozenset({"age", "home_ownership"}))
    _values, errors = model.parse_features(features(age=float("nan"), home_ownership=None), "features")
    assert sorted(fields_of(errors)) == ["features.age", "features.home_ownership"]
    assert all("required" in e.message for e in errors)


def test_segments_become_segment_columns() -> None:
    assert parse_segments({"region": "north", "tier": None}, "segments") == (
        {"segment_region": "north", "segment_tier": None},
        [],
    )
    values, errors = parse_segments({"re-gion": "x", "tier": 3}, "segments")
    assert values == {}
    assert sorted(fields_of(errors)) == ["segments.re-gion", "segments.tier"]


def test_predict_matches_the_estimator_on_the_same_rows() -> None:
    model = loaded_model()
    records = [model.parse_features(features(age=age, income=None), "f")[0] for age in (25, 45, 70)]
    answers, predictions, scores = model.predict(records)
    frame = pd.DataFrame({n: [r[n] for r in records] for n in NUMERIC + CATEGORICAL})
    for name in CATEGORICAL:
        frame[name] = frame[name].astype(object)
    expected = model.estimator.predict_proba(frame)[:, 1]
    assert np.allclose(scores, expected)
    assert answers == [int(s >= 0.5) for s in expected]
    assert predictions == [float(a) for a in answers]
    assert all(isinstance(a, int) for a in answers)


def test_the_micro_batcher_scores_concurrent_requests_in_one_call() -> None:
    class Counting(LoadedModel):
        calls: list[int]

        def predict(self, records):
            self.calls.append(len(records))
            return super().predict(records)

    base = loaded_model()
    model = Counting(
        **{
            k: getattr(base, k)
            for k in ("project", "model", "version", "estimator", "numeric", "categorical", "task", "classes")
        }
    )
    model.calls = []
    record = model.parse_features(features(), "f")[0]

    async def scenario() -> list:
        batcher = MicroBatcher(max_rows=8)
        return await asyncio.gather(*(batcher.score(model, [record] * size) for size in (1, 2, 1, 3, 1, 4)))

    results = _run_in_fresh_loop(scenario())
    assert [len(r[0]) for r in results] == [1, 2, 1, 3, 1, 4]
    assert sum(model.calls) == 12
    assert len(model.calls) == 2  # 12 rows in batches of at most 8 rows, not 6 calls
    assert all(r[2][0] == results[0][2][0] for r in results)


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    model = loaded_model()
    good = model.parse_features(features(), "f")[0]
    broken = {**good, "age": "not a number"}  # bypasses validation: the estimator raises

    async def scenario() -> list:
        batcher = MicroBatcher()
        return await asyncio.gather(
            batcher.score(model, [good]),
            batcher.score(model, [broken]),
            batcher.score(model, [good]),
            return_exceptions=True,
        )

    first, second, third = _run_in_fresh_loop(scenario())
    assert isinstance(second, Exception)
    assert first[2] == third[2] and 0.0 <= first[2][0] <= 1.0


def test_the_cache_loads_on_first_use_and_swaps_when_routes_change(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    key = (PROJECT, MODEL, "prod")
    write_routes_document(path, {key: [Route("1", 10_000)]})
    loads: list[str] = []

    def loader(project: str, model: str, version: str) -> LoadedModel:
        loads.append(version)
        return loaded_model(version)

    cache = DeploymentCache(JsonFileRoutes(path), loader, "prod", refresh_interval_s=0.05)
    assert cache.get(PROJECT, MODEL) is None
    deployment = cache.ensure(PROJECT, MODEL)
    assert deployment.pick("anything").version == "1"
    assert cache.ensure(PROJECT, MODEL) is deployment and loads == ["1"]

    write_routes_document(path, {key: [Route("2", 3000), Route("1", 7000)]})
    cache.start()
    try:
        deadline = time.monotonic() + 10
        while len(cache.get(PROJECT, MODEL).routes) != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        deployment = cache.get(PROJECT, MODEL)
        assert deployment.routes == (Route("2", 3000), Route("1", 7000))
        assert loads == ["1", "2"]  # version 1 was kept, only version 2 was loaded
        for request_id in (f"r{i}" for i in range(200)):
            expected = "2" if request_bucket(request_id) < 3000 else "1"
            assert deployment.pick(request_id).version == expected

        write_routes_document(path, {key: [Route("2", 10_000)]})
        while len(cache.get(PROJECT, MODEL).routes) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.get(PROJECT, MODEL).routes == (Route("2", 10_000),)

        write_routes_document(path, {})  # undeployed: no longer served
        while cache.get(PROJECT, MODEL) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.get(PROJECT, MODEL) is None
    finally:
        cache.stop()


def test_unknown_models_are_remembered_for_one_refresh_interval(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    write_routes_document(path, {})
    cache = DeploymentCache(
        JsonFileRoutes(path), lambda p, m, v: loaded_model(v), "prod", refresh_interval_s=0.3
    )
    with pytest.raises(NoRoute):
        cache.ensure(PROJECT, MODEL)
    write_routes_document(path, {(PROJECT, MODEL, "prod"): [Route("1", 10_000)]})
    with pytest.raises(NoRoute):  # still remembered as unknown: the source is not asked again yet
        cache.ensure(PROJECT, MODEL)
    time.sleep(0.35)
    assert cache.ensure(PROJECT, MODEL).routes == (Route("1", 10_000),)
    with pytest.raises(NoRoute, match="not valid"):
        cache.ensure("../etc", MODEL)
