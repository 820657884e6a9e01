"""Fixtures shared by the scale-out integration suites (imported with ``from ... import *``).

``new_config(kind)`` makes fresh store configurations (a local folder or a SeaweedFS prefix),
``workspace(kind)`` stores holding the fixture workspace, ``baseline(kind)`` the single-process
job's profiles and metrics (once per module), ``spark_session`` one local Spark session per test
session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs.monitor import run_monitor
from tests.unit.jobs.scaleout import support

__all__ = ["baseline", "new_config", "spark_session", "workspace"]


@pytest.fixture(scope="module")
def new_config(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """``new_config(kind)``: a fresh, empty store configuration on a local folder or on SeaweedFS."""

    def make(kind: str) -> StoreConfig:
        name = f"scaleout-{uuid.uuid4().hex[:10]}"
        if kind == "s3":
            seaweedfs = request.getfixturevalue("seaweedfs")
            return replace(seaweedfs.store_config(name), threads=1)
        return support.local_config(tmp_path_factory.mktemp(name) / "data")

    return make


@pytest.fixture(scope="module")
def baseline(
    new_config: Callable[[str], StoreConfig],
) -> Callable[[str], tuple[dict, list[dict], list[dict]]]:
    """``baseline(kind)``: profiles, metrics and segment metrics of a single-process run, per store kind."""
    cache: dict[str, tuple[dict, list[dict], list[dict]]] = {}

    def compute(kind: str) -> tuple[dict, list[dict], list[dict]]:
        if kind not in cache:
            store = support.make_store(new_config(kind))
            try:
                summary = run_monitor(store, support.REQUEST, now=support.NOW)
                assert summary.ok and summary.computed_dates == len(support.DAYS), summary.to_text()
                cache[kind] = (
                    support.window_profiles(store),
                    support.metric_rows(store),
                    support.segment_rows(store),
                )
            finally:
                store.close()
        return cache[kind]

    return compute


@pytest.fixture
def workspace(new_config: Callable[[str], StoreConfig]) -> Iterator[Callable[[str], ParquetStore]]:
    """``workspace(kind)``: a fresh store holding the fixture workspace, closed after the test."""
    opened: list[ParquetStore] = []

    def make(kind: str) -> ParquetStore:
        opened.append(support.make_store(new_config(kind)))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def spark_session():
    """One local Spark session for the whole test session (2 task slots, 2 attempts per task)."""
    from jobs.scaleout.engines.spark import build_session

    session = build_session("local[2,2]", attempts=2)
    yield session
    session.stop()
