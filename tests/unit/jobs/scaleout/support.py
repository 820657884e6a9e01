"""Shared helpers of the scale-out tests: a small deterministic workspace with the hard cases.

The workspace (one project/model/environment, three days, two model versions) holds: an empty log
file, a numeric feature that is all-null in some files (typed ``double`` in one, ``null`` in another),
NaN, +inf and -inf values, a category the reference never saw, a file mixing two versions, and labels.
Segment columns: ``segment_region`` (a few values, some NULL, ``east`` in one file only),
``segment_store`` (:data:`STORES_PER_FILE` values per file, more than
``jobs._monitor_segments.MAX_SEGMENT_VALUES`` on a day with files ``a`` and ``c``, few enough on the
last day: only the merged window decides) and ``segment_user`` (too many values in every file).
Writing it twice with the same seed gives byte-identical files, so one copy can be monitored
single-process and the other scaled out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.profile import ColumnProfile, Profile, profile_reference, profiles_from_arrow
from analytics.store import ParquetStore, StoreConfig
from jobs.contracts import (
    INFERENCE_LOGS,
    LABELS,
    METRICS,
    PROFILES,
    REFERENCE_PROFILES,
    SEGMENT_METRICS,
    UNIQUE_KEYS,
)
from jobs.monitor import MonitorRequest, read_window_profiles
from jobs.scaleout.profile_unit import UnitResult, run_unit
from jobs.scaleout.units import WorkUnit

PROJECT, MODEL, ENVIRONMENT = "shop", "scoring", "prod"
TARGET = {"project": PROJECT, "model": MODEL, "environment": ENVIRONMENT}
DAYS = (date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3))
NOW = datetime(2024, 6, 1, tzinfo=UTC)
"""Long after the fixture days: no date is inside the label horizon."""

NUMERIC = ("num_a", "num_b", "num_c", "sparse")
CATEGORICAL = ("cat_a", "cat_b", "flag")
COLORS = ("red", "green", "blue")
REQUEST = MonitorRequest(backfill=True)
STORES_PER_FILE = 12
"""``segment_store`` values per file: file ``a`` holds s0-s11, ``b`` s6-s17, ``c`` s12-s23."""
STORE_OFFSETS = {"a.parquet": 0, "b.parquet": 6, "c.parquet": 12}
USERS = 30

# Per day: the files (name, rows per version, options). Sizes differ so units pack differently.
LAYOUT: Mapping[date, tuple[tuple[str, Mapping[str, int], frozenset[str]], ...]] = {
    DAYS[0]: (
        ("a.parquet", {"1": 240}, frozenset()),
        ("b.parquet", {}, frozenset({"empty"})),
        ("c.parquet", {"1": 130}, frozenset()),
    ),
    DAYS[1]: (
        ("a.parquet", {"1": 200}, frozenset({"nan_inf", "sparse_nulls"})),
        ("b.parquet", {"1": 150}, frozenset({"sparse_null_type", "unseen"})),
        ("c.parquet", {"1": 60}, frozenset({"nan_inf"})),
    ),
    DAYS[2]: (
        ("a.parquet", {"1": 110, "2": 70}, frozenset({"unseen"})),
        ("b.parquet", {"2": 90}, frozenset()),
    ),
}


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng([abs(hash_text(str(p))) for p in parts])


def hash_text(text: str) -> int:
    """A stable (unsalted) 32-bit hash."""
    value = 2166136261
    for char in text.encode():
        value = ((value ^ char) * 16777619) % 2**32
    return value


def reference_table(version: str, rows: int = 600) -> pa.Table:
    """Training rows of a version (version 2 is shifted, so its spec differs)."""
    rng = _rng("reference", version)
    shift = 0.0 if version == "1" else 1.5
    return pa.table(
        {
            "num_a": pa.array(rng.normal(10 + shift, 2, rows)),
            "num_b": pa.array(rng.integers(0, 50, rows), pa.int64()),
            "num_c": pa.array(rng.exponential(3 + shift, rows)),
            "sparse": pa.array(rng.normal(0, 1, rows)),
            "cat_a": pa.array(rng.choice(COLORS, rows)),
            "cat_b": pa.array(rng.choice(("x", "y"), rows)),
            "flag": pa.array(rng.random(rows) < 0.3),
            "segment_region": pa.array(rng.choice(("north", "south"), rows)),
            "label": pa.array(rng.integers(0, 2, rows).astype(float)),
        }
    )


def write_reference(store: ParquetStore, version: str) -> Profile:
    """Write a version's reference profile where training writes it."""
    table = reference_table(version)
    relation = store.cursor().from_arrow(table)
    reference = profile_reference(relation, list(table.column_names), kinds={"label": "categorical"}, bins=16)
    store.write_partition(
        REFERENCE_PROFILES,
        {"project": PROJECT, "model": MODEL, "version": version},
        reference.to_arrow(),
        file_name="profile.parquet",
        replace_partition=True,
    )
    return reference


def log_table(day: date, name: str, versions: Mapping[str, int], options: Iterable[str]) -> pa.Table:
    """One inference-log file."""
    options = set(options)
    rng = _rng("logs", day.isoformat(), name)
    labels = [v for v, n in sorted(versions.items()) for _ in range(n)]
    rows = len(labels)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, rows))
    num_c = rng.exponential(3.5, rows)
    if "nan_inf" in options and rows >= 6:
        num_c[:6] = [math.nan, math.inf, -math.inf, math.nan, math.inf, 1e6]
    colors = rng.choice(COLORS, rows).astype(object)
    if "unseen" in options and rows:
        colors[: max(1, rows // 10)] = "purple"
    if "sparse_null_type" in options:
        sparse = pa.nulls(rows)
    elif "sparse_nulls" in options:
        sparse = pa.array([None] * rows, pa.float64())
    else:
        sparse = pa.array(rng.normal(0.2, 1, rows))
    score = rng.random(rows)
    regions = rng.choice(("north", "south", "east" if name == "c.parquet" else "north"), rows).astype(object)
    regions[rng.random(rows) < 0.1] = None
    store_ids = STORE_OFFSETS[name] + np.arange(rows) % STORES_PER_FILE
    return pa.table(
        {
            "version": pa.array(labels, pa.string()),
            "request_id": pa.array([f"{day:%Y%m%d}-{name[0]}-{i}" for i in range(rows)], pa.string()),
            "timestamp": pa.array(
                [start + timedelta(seconds=int(s)) for s in seconds], pa.timestamp("us", tz="UTC")
            ),
            "prediction": pa.array((score > 0.5).astype(float)),
            "score": pa.array(score),
            "latency_ms": pa.array(rng.gamma(2.0, 20.0, rows)),
            "num_a": pa.array(rng.normal(10.5, 2.2, rows)),
            "num_b": pa.array(rng.integers(0, 60, rows), pa.int64()),
            "num_c": pa.array(num_c),
            "sparse": sparse,
            "cat_a": pa.array(list(colors), pa.string()),
            "cat_b": pa.array(rng.choice(("x", "y", None), rows), pa.string()),
            "flag": pa.array(rng.random(rows) < 0.35),
            "segment_region": pa.array(list(regions), pa.string()),
            "segment_store": pa.array([f"s{i}" for i in store_ids], pa.string()),
            "segment_user": pa.array([f"u{i % USERS}" for i in range(rows)], pa.string()),
        }
    )


def label_table(logs: pa.Table, day: date) -> pa.Table:
    """Labels of every other request of a file, a day later."""
    ids = logs.column("request_id").to_pylist()[::2]
    when = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "label": pa.array([float(hash_text(i) % 2) for i in ids]),
            "label_timestamp": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def write_workspace(store: ParquetStore) -> None:
    """Write the references, logs and labels of the fixture workspace."""
    write_reference(store, "1")
    write_reference(store, "2")
    for day, files in LAYOUT.items():
        partition = {**TARGET, "date": day.isoformat()}
        labels = []
        for name, versions, options in files:
            logs = log_table(day, name, versions, options)
            store.write_partition(INFERENCE_LOGS, partition, logs, file_name=name)
            if logs.num_rows:
                labels.append(label_table(logs, day))
        if labels:
            store.write_partition(LABELS, partition, pa.concat_tables(labels), file_name="labels.parquet")


def make_store(config: StoreConfig) -> ParquetStore:
    """A store with the fixture workspace written."""
    store = ParquetStore(config)
    write_workspace(store)
    return store


def local_config(root: Path) -> StoreConfig:
    """A local store configuration with one DuckDB thread (the tests share two cores)."""
    return StoreConfig(data_uri=str(root), threads=1)


# --------------------------------------------------------------------------- reading results


def window_profiles(store: ParquetStore) -> dict[tuple[str, datetime], Profile]:
    """Every window profile the job wrote for the fixture target."""
    return read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT)


def read_window_profiles_hourly(store: ParquetStore) -> dict[tuple[str, datetime], Profile]:
    """Every hourly window profile the job wrote for the fixture target."""
    return read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT, window="hour")


def metric_rows(store: ParquetStore, dataset: str = METRICS) -> list[dict]:
    """Every row of ``metrics`` (or ``segment_metrics``), sorted by its key."""
    if not store.list_files(dataset):
        return []
    table = store.read(dataset)
    rows = table.select([c for c in table.column_names if c != "date"]).to_pylist()
    key = ("project", "model", "environment", *UNIQUE_KEYS[dataset])
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))


def segment_rows(store: ParquetStore) -> list[dict]:
    """Every ``segment_metrics`` row, sorted by its key."""
    return metric_rows(store, SEGMENT_METRICS)


def written_files(store: ParquetStore) -> list[str]:
    """Every data file of the job's output datasets."""
    return [f.path for dataset in (PROFILES, METRICS, SEGMENT_METRICS) for f in store.list_files(dataset)]


def partial_files(store: ParquetStore, run_id: str) -> list[str]:
    """Names of the files in a run's ``units/`` folder."""
    from jobs.scaleout.units import RunLayout, list_folder

    return [uri.rsplit("/", 1)[-1] for uri, _ in list_folder(store, RunLayout(store.root, run_id).units_dir)]


# --------------------------------------------------------------------------- comparisons


FLOATS = ("statistic", "p_value", "threshold")

SKETCHED: dict[str, dict[str, float]] = {}
"""Metrics compared within a bound instead of to 1e-9: none, since the single-process job computes
latency quantiles and ROC AUC with the merge's own binned method (``jobs.monitor.FORMAT`` 2 and later). Put a
metric here with its documented bound only if the two paths ever use different methods again."""

_NUMBER = re.compile(r"\d+\.\d+")


def assert_same_metrics(actual: list[dict], expected: list[dict]) -> None:
    """Equal metrics rows; floats equal to 1e-9 (moments merge by Chan's formula, not one pass).

    The :data:`SKETCHED` metrics are compared within their documented bound (their reasons with the
    numbers left out: the latency baseline's median is a median of sketched p95s).
    """
    assert len(actual) == len(expected) > 0
    for got, want in zip(actual, expected, strict=True):
        bound = SKETCHED.get(want["metric"])
        skip = FLOATS + (("reason",) if bound else ())
        assert {k: v for k, v in got.items() if k not in skip} == {
            k: v for k, v in want.items() if k not in skip
        }, got
        if bound:
            assert _NUMBER.sub("#", got["reason"] or "") == _NUMBER.sub("#", want["reason"] or ""), got
        for name in FLOATS:
            if want[name] is None or got[name] is None:
                assert got[name] is want[name], (name, got)
            elif bound and name in ("statistic", "threshold"):
                assert got[name] == pytest.approx(want[name], **bound), (name, got)
            else:
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (name, got)


def assert_same_column(got: ColumnProfile, want: ColumnProfile) -> None:
    """Counts and histograms exactly, min/max exactly, mean and m2 to 1e-9."""
    assert got.spec == want.spec
    exact = [
        "rows",
        "nulls",
        "nan",
        "neg_inf",
        "pos_inf",
        "finite",
        "min",
        "max",
        "bin_counts",
        "category_counts",
        "other_count",
        "unseen",
    ]
    for name in exact:
        assert getattr(got, name) == getattr(want, name), (got.name, name)
    if want.kind == "categorical":
        assert (got.distinct, got.distinct_exact) == (want.distinct, want.distinct_exact), got.name
    for name in ("mean", "m2"):
        if getattr(want, name) is None:
            assert getattr(got, name) is None, (got.name, name)
        else:
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-9), (
                got.name,
                name,
            )


def assert_same_profile(got: Profile, want: Profile, *, schema: bool = True) -> None:
    """Every column as :func:`assert_same_column`, the same rows, missing and retyped columns."""
    assert (got.rows, got.window, got.names, got.missing, got.retyped) == (
        want.rows,
        want.window,
        want.names,
        want.missing,
        want.retyped,
    )
    if schema:
        assert got.schema == want.schema
    for column in want.columns:
        assert_same_column(got[column.name], column)


def assert_same_window_profiles(
    got: Mapping[tuple[str, datetime], Profile], want: Mapping[tuple[str, datetime], Profile]
) -> None:
    """The same (version, window) keys and equal profiles."""
    assert sorted(got) == sorted(want)
    assert want, "the single-process run wrote no window profile"
    for key, expected in want.items():
        assert_same_profile(got[key], expected)


def read_partial_profiles(path: str) -> dict:
    """Profiles of a partial file, by version (for debugging a failing comparison)."""
    from jobs.scaleout.profile_unit import partial_profiles

    return partial_profiles(pq.read_table(path))


def profiles_of_table(table: pa.Table) -> dict:
    """``profiles_from_arrow`` (re-exported for the tests)."""
    return profiles_from_arrow(table)


# --------------------------------------------------------------------------- fault injection


def fail_once_after_writing(marker_dir: str, unit: WorkUnit, config: StoreConfig) -> UnitResult:
    """A task that, on a unit's first attempt, writes the partial and then fails (a lost acknowledgement).

    Module-level so spawned workers and Spark executors can import it; the marker files live in a
    folder every process sees.
    """
    marker = Path(marker_dir) / f"{unit.run_id}-{unit.index}"
    result = run_unit(unit, config)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"injected failure after writing unit {unit.index}")
    return result


def fail_once_before_writing(marker_dir: str, unit: WorkUnit, config: StoreConfig) -> UnitResult:
    """A task that fails on a unit's first attempt before writing anything."""
    marker = Path(marker_dir) / f"{unit.run_id}-{unit.index}"
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"injected failure before writing unit {unit.index}")
    return run_unit(unit, config)


def always_fail(unit: WorkUnit, config: StoreConfig) -> UnitResult:
    """A task that never succeeds."""
    raise RuntimeError(f"unit {unit.index} cannot be profiled")


def flaky(task, marker_dir: Path):
    """Bind a fault-injecting task to its marker folder (a picklable ``functools.partial``)."""
    marker_dir.mkdir(parents=True, exist_ok=True)
    return partial(task, str(marker_dir))


def assert_matches_baseline(store: ParquetStore, expected: tuple[dict, list[dict], list[dict]]) -> None:
    """The window profiles, metrics and segment metrics in ``store`` equal a single-process run's."""
    profiles, metrics, segments = expected
    assert_same_window_profiles(window_profiles(store), profiles)
    assert_same_metrics(metric_rows(store), metrics)
    assert_same_metrics(segment_rows(store), segments)
