"""The mergeable partials of analytics.performance: any split of the rows gives the same report.

Counts, bins and quantiles are equal exactly for every split; sums to 1e-9. Against the exact
functions: counts and every sum-based metric to 1e-9, latency quantiles within
``LATENCY_RELATIVE_ACCURACY`` (relative) and ROC AUC within the score-bin bound.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analytics.performance import (
    AUC_SCORE_BINS,
    LATENCY_RELATIVE_ACCURACY,
    binned_latency_quantiles,
    classification_from_partials,
    classification_metrics,
    classification_partial,
    latency_from_partials,
    latency_metrics,
    latency_partial,
    latest_labels,
    regression_from_partials,
    regression_metrics,
    regression_partial,
)

pytestmark = pytest.mark.unit

START = datetime(2024, 3, 1, tzinfo=UTC)


def make_logs(rows: int = 4000, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 3 * 86_400, rows)
    timestamps = [START + timedelta(seconds=int(s)) for s in seconds]
    timestamps[3] = None
    latency = rng.gamma(2.0, 20.0, rows)
    latency[:8] = [0.0, math.nan, math.inf, -1.0, 0.0, 1e-6, 5e4, 0.0]
    score = rng.random(rows)
    score[8:12] = [math.nan, 1.5, 1.0, 0.0]
    logs = pa.table(
        {
            "request_id": [f"r{i}" for i in range(rows)],
            "timestamp": pa.array(timestamps, pa.timestamp("us", tz="UTC")),
            "latency_ms": latency,
            "score": score,
            "prediction": rng.normal(10, 3, rows),
        }
    )
    ids = [f"r{i}" for i in range(0, rows, 2)]
    label = rng.integers(0, 2, len(ids)).astype(float)
    label[:3] = [math.nan, 0.0, 1.0]
    labels = pa.table({"request_id": ids, "label": label})
    return logs, labels


def splits(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def without(row: object, *names: str) -> dict:
    return {k: v for k, v in dataclasses.asdict(row).items() if k not in names}


@pytest.mark.parametrize("window", ["hour", "day", "month"])
def test_latency_is_the_same_for_any_split_and_within_the_bound_of_the_exact(window: str) -> None:
    con = duckdb.connect()
    logs, _ = make_logs()
    whole = latency_from_partials([latency_partial(con.from_arrow(logs), window)], window)
    split = latency_from_partials(
        [latency_partial(con.from_arrow(t), window) for t in splits(logs, 333)], window
    )
    exact = latency_metrics(con.from_arrow(logs), window)
    assert whole.n_missing_timestamp == split.n_missing_timestamp == exact.n_missing_timestamp == 1
    for got, again, want in zip(
        (*whole.windows, whole.overall),
        (*split.windows, split.overall),
        (*exact.windows, exact.overall),
        strict=True,
    ):
        assert without(got, "mean_ms") == without(again, "mean_ms")
        assert got.mean_ms == pytest.approx(again.mean_ms, rel=1e-12)
        assert without(got, "mean_ms", "p50_ms", "p95_ms", "p99_ms") == without(
            want, "mean_ms", "p50_ms", "p95_ms", "p99_ms"
        )
        assert got.mean_ms == pytest.approx(want.mean_ms, rel=1e-12)
        for name in ("p50_ms", "p95_ms", "p99_ms"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=LATENCY_RELATIVE_ACCURACY)


def test_the_bins_of_many_partials_add_up_as_counted_one_by_one() -> None:
    """latency_from_partials adds the bins of its partials in NumPy: each window's and the overall
    quantiles equal binned_latency_quantiles over the bins summed in a dict, partial by partial,
    with windows before 1970, zeros, invalid values and rows without a timestamp."""
    rng = np.random.default_rng(31)
    con = duckdb.connect()
    parts = []
    for size in (2500, 1, 0, 1700):
        micros = (rng.integers(-2, 2, size) * 86_400 + rng.integers(0, 86_400, size)) * 1_000_000
        timestamps = pa.array(micros, pa.int64(), mask=rng.random(size) < 0.02).cast(pa.timestamp("us"))
        latency = np.where(rng.random(size) < 0.05, 0.0, rng.lognormal(3, 1, size))
        latency[rng.random(size) < 0.01] = -1.0  # invalid: counted in n, not in the latencies
        table = pa.table({"timestamp": timestamps, "latency_ms": latency})
        parts.append(latency_partial(con.from_arrow(table), "day"))
    report = latency_from_partials(parts, "day")
    bins: dict = defaultdict(lambda: defaultdict(int))
    zeros: dict = defaultdict(int)
    lows: dict = defaultdict(list)
    highs: dict = defaultdict(list)
    for part in parts:
        for row in part.to_pylist():
            if row["window_start"] is None:
                continue
            if row["bin"] is not None:
                bins[row["window_start"]][row["bin"]] += row["count"]
            else:
                zeros[row["window_start"]] += row["n_zero"]
                lows[row["window_start"]] += [row["min_ms"]] if row["min_ms"] is not None else []
                highs[row["window_start"]] += [row["max_ms"]] if row["max_ms"] is not None else []
    assert [w.window_start for w in report.windows] == sorted(zeros) and len(zeros) == 4
    for window in report.windows:
        start = window.window_start
        expected = binned_latency_quantiles(
            zeros[start], list(bins[start].items()), min(lows[start]), max(highs[start])
        )
        assert (window.p50_ms, window.p95_ms, window.p99_ms) == expected
    overall: dict = defaultdict(int)
    for found in bins.values():
        for key, count in found.items():
            overall[key] += count
    low = min(v for values in lows.values() for v in values)
    high = max(v for values in highs.values() for v in values)
    expected = binned_latency_quantiles(sum(zeros.values()), list(overall.items()), low, high)
    assert (report.overall.p50_ms, report.overall.p95_ms, report.overall.p99_ms) == expected
    assert report.n_missing_timestamp == sum(
        r["n"] for p in parts for r in p.to_pylist() if r["window_start"] is None
    )


def test_binned_quantiles_keep_zero_min_and_max_exact() -> None:
    assert binned_latency_quantiles(0, [], 0.0, 0.0) is None
    assert binned_latency_quantiles(3, [], 0.0, 0.0) == (0.0, 0.0, 0.0)
    one = binned_latency_quantiles(0, [(2000, 1)], 7.25, 7.25)
    assert one == (7.25, 7.25, 7.25)
    con = duckdb.connect()
    values = np.array([0.0, 0.0, 3.0, 1e-3, 42.0, 1e5])
    table = pa.table({"timestamp": pa.array([START] * len(values)), "latency_ms": values})
    report = latency_from_partials([latency_partial(con.from_arrow(table))])
    exact = latency_metrics(con.from_arrow(table))
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        assert getattr(report.overall, name) == pytest.approx(
            getattr(exact.overall, name), rel=LATENCY_RELATIVE_ACCURACY
        )
    assert report.overall.max_ms == 1e5


def test_no_valid_latency_and_no_rows() -> None:
    con = duckdb.connect()
    table = pa.table({"timestamp": pa.array([START, START]), "latency_ms": [math.nan, -2.0]})
    report = latency_from_partials([latency_partial(con.from_arrow(table))])
    assert report.windows[0] == latency_metrics(con.from_arrow(table)).windows[0]
    empty = latency_from_partials([])
    assert empty.windows == () and empty.overall.n == 0 and empty.overall.status == "insufficient_data"


def auc_bound(logs: pa.Table, labels: pa.Table) -> float:
    """The documented bound: pairs of one score bin count as ties."""
    label_of = dict(
        zip(labels.column("request_id").to_pylist(), labels.column("label").to_pylist(), strict=True)
    )
    pos, neg = np.zeros(AUC_SCORE_BINS), np.zeros(AUC_SCORE_BINS)
    for rid, score, ts in zip(
        *(logs.column(n).to_pylist() for n in ("request_id", "score", "timestamp")), strict=True
    ):
        label = label_of.get(rid)
        if ts is None or label is None or not math.isfinite(label) or not (0 <= score <= 1):
            continue
        b = min(math.floor(score * AUC_SCORE_BINS), AUC_SCORE_BINS - 1)
        (pos if label == 1.0 else neg)[b] += 1
    return float((pos * neg).sum() / (2 * pos.sum() * neg.sum()))


@pytest.mark.parametrize("window", ["day", "week"])
def test_classification_is_the_same_for_any_split_and_equal_to_the_exact_but_auc(window: str) -> None:
    con = duckdb.connect()
    logs, labels = make_logs()
    lab = con.from_arrow(labels)

    def report(parts: list[pa.Table]):
        return classification_from_partials(
            [classification_partial(con.from_arrow(t), lab, window, positive_label=1.0) for t in parts],
            window,
            positive_label=1.0,
        )

    whole, split = report([logs]), report(splits(logs, 250))
    exact = classification_metrics(con.from_arrow(logs), lab, window, positive_label=1.0)
    assert (whole.n_missing_timestamp, whole.decision) == (exact.n_missing_timestamp, exact.decision)
    floats = ("log_loss", "ece", "roc_auc")
    for got, again, want in zip(
        (*whole.windows, whole.overall),
        (*split.windows, split.overall),
        (*exact.windows, exact.overall),
        strict=True,
    ):
        assert without(got, "log_loss", "ece") == without(again, "log_loss", "ece")
        assert without(got, *floats) == without(want, *floats)
        for name in ("log_loss", "ece"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9)
            assert getattr(again, name) == pytest.approx(getattr(want, name), rel=1e-9)
    assert abs(whole.overall.roc_auc - exact.overall.roc_auc) <= auc_bound(logs, labels) + 1e-12


@pytest.mark.parametrize("window", ["hour", "day"])
def test_regression_is_the_same_for_any_split_and_equal_to_the_exact(window: str) -> None:
    con = duckdb.connect()
    logs, labels = make_logs()
    lab = con.from_arrow(labels)
    exact = regression_metrics(con.from_arrow(logs), lab, window)
    split = regression_from_partials(
        [regression_partial(con.from_arrow(t), lab, window) for t in splits(logs, 97)], window
    )
    floats = ("mae", "rmse", "mape", "r2")
    assert split.n_missing_timestamp == exact.n_missing_timestamp
    for got, want in zip((*split.windows, split.overall), (*exact.windows, exact.overall), strict=True):
        assert without(got, *floats) == without(want, *floats)
        for name in floats:
            if getattr(want, name) is None:
                assert getattr(got, name) is None
            else:
                assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-12)


def test_regression_constant_and_single_labels_are_insufficient() -> None:
    con = duckdb.connect()
    logs = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "timestamp": pa.array([START, START, START + timedelta(days=1)]),
            "prediction": [1.0, 2.0, 3.0],
        }
    )
    labels = pa.table({"request_id": ["a", "b", "c"], "label": [5.0, 5.0, 0.0]})
    parts = [regression_partial(con.from_arrow(logs.slice(i, 1)), con.from_arrow(labels)) for i in range(3)]
    got = regression_from_partials(parts)
    want = regression_metrics(con.from_arrow(logs), con.from_arrow(labels))
    assert [(w.r2, w.mape, w.reason) for w in got.windows] == [(w.r2, w.mape, w.reason) for w in want.windows]


def test_latest_labels_joined_as_unique_give_the_partials_of_the_raw_labels() -> None:
    con = duckdb.connect()
    logs, labels = make_logs()
    # Every request labelled twice, at two times, and the later label differs: one must be chosen.
    early = labels.append_column("label_timestamp", pa.array([START] * labels.num_rows))
    late = pa.table(
        {
            "request_id": labels.column("request_id"),
            "label": pa.array(1.0 - np.nan_to_num(labels.column("label").to_numpy(), nan=0.5)),
            "label_timestamp": pa.array([START + timedelta(days=1)] * labels.num_rows),
        }
    )
    raw = pa.concat_tables([early, late])
    latest = latest_labels(con.from_arrow(raw))
    assert latest.num_rows == labels.num_rows
    assert latest.column_names == raw.column_names
    unique = con.from_arrow(latest)
    assert_same_partial(
        classification_partial(con.from_arrow(logs), unique, labels_unique=True),
        classification_partial(con.from_arrow(logs), con.from_arrow(raw)),
    )
    assert_same_partial(
        regression_partial(con.from_arrow(logs), unique, labels_unique=True),
        regression_partial(con.from_arrow(logs), con.from_arrow(raw)),
    )
    # The flag is what skips the choice: duplicates joined as unique count twice.
    doubled = classification_partial(con.from_arrow(logs), con.from_arrow(raw), labels_unique=True)
    once = classification_partial(con.from_arrow(logs), unique, labels_unique=True)
    assert pc.sum(doubled.column("n")).as_py() > pc.sum(once.column("n")).as_py()


def assert_same_partial(got: pa.Table, want: pa.Table) -> None:
    """Equal partials: counts exactly, float sums up to their order of addition (DuckDB's threads)."""
    assert got.schema == want.schema
    for name in got.column_names:
        if pa.types.is_floating(got.schema.field(name).type):
            got_values, want_values = (t.column(name).to_numpy() for t in (got, want))
            np.testing.assert_allclose(got_values, want_values, rtol=1e-12, err_msg=name)  # nulls: NaN
        else:
            assert got.column(name).equals(want.column(name)), name
