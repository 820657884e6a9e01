"""Drift statistics against SciPy / NumPy, edge cases, detection power and false-positive rate."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from analytics import stats
from analytics.drift import DriftReport, drift, drift_many, drift_relations, drift_windows
from analytics.policy import Policy, Rule
from analytics.profile import ProfileError, profile, profile_reference

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
HYPOTHESIS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(tmp_path: Path, name: str, columns: dict) -> Path:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def relation(path: Path) -> duckdb.DuckDBPyRelation:
    return duckdb.connect().read_parquet(str(path))


def labels(indices: np.ndarray, prefix: str = "v") -> pa.Array:
    """Dictionary-encoded strings ``prefix<i>`` (fast to build, read by DuckDB as VARCHAR)."""
    names = pa.array([f"{prefix}{i}" for i in range(int(indices.max(initial=0)) + 1)])
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), names)


def numpy_histogram(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Counts per bin (-inf, e0], (e0, e1], ..., (e_last, +inf) of the non-NaN values, infinities in
    the outer bins: the distribution the binned statistics compare, computed directly."""
    valid = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges), valid, side="left"), minlength=len(edges) + 1)


finite_or_special = st.one_of(
    st.floats(-1e6, 1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0]),
    st.integers(-3, 3).map(float),
)


# ------------------------------------------------------------------------------------------------
# Exact statistics on the raw values equal SciPy's


@HYPOTHESIS
@given(
    reference=st.lists(finite_or_special, min_size=0, max_size=60),
    current=st.lists(finite_or_special, min_size=0, max_size=60),
)
def test_exact_ks_and_wasserstein_equal_scipy(tmp_path: Path, reference: list, current: list) -> None:
    ref_path = write(tmp_path, "ref", {"x": pa.array(reference, pa.float64())})
    cur_path = write(tmp_path, "cur", {"x": pa.array(current, pa.float64())})
    policy = Policy(min_samples=1)
    report = drift_relations(relation(ref_path), relation(cur_path), policy=policy, exact=True, bins=8)
    result = report["x"]
    ref, cur = np.array(reference, dtype=float), np.array(current, dtype=float)
    ref_valid, cur_valid = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref_valid.size == 0 or cur_valid.size == 0:
        assert result.status == "insufficient_data" and result.drifted is False and result.reason
        return
    assert result.exact
    expected = scipy.stats.ks_2samp(ref_valid, cur_valid)
    assert result.statistics["ks"] == pytest.approx(expected.statistic, abs=1e-12)
    assert result.statistics["ks_p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    # The binned statistic is a lower bound of the exact one, within the reported error bound.
    binned = result.statistics["ks_binned"]
    assert binned <= expected.statistic + 1e-12
    assert (
        expected.statistic
        <= binned
        + stats.ks_binned(
            numpy_histogram(ref, report_edges(ref_path)), numpy_histogram(cur, report_edges(ref_path))
        ).error_bound
        + 1e-12
    )
    ref_finite, cur_finite = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref_finite.size and cur_finite.size:
        distance = scipy.stats.wasserstein_distance(ref_finite, cur_finite)
        assert result.statistics["wasserstein"] == pytest.approx(distance, rel=1e-9, abs=1e-12)
        spread = float(np.std(ref_finite))
        if spread > 0:
            assert result.statistics["wasserstein_normed"] == pytest.approx(distance / spread, rel=1e-6)
    else:
        assert result.statistics["wasserstein"] is None


def report_edges(ref_path: Path) -> tuple[float, ...]:
    return profile_reference(relation(ref_path), bins=8).spec.column("x").edges


# ------------------------------------------------------------------------------------------------
# Binned statistics equal a direct NumPy computation on the same bins


@HYPOTHESIS
@given(
    reference=st.lists(finite_or_special, min_size=1, max_size=80),
    current=st.lists(finite_or_special, min_size=1, max_size=80),
    bins=st.integers(2, 16),
)
def test_binned_statistics_equal_numpy_on_the_same_bins(
    tmp_path: Path, reference: list, current: list, bins: int
) -> None:
    ref_path = write(tmp_path, "ref", {"x": pa.array(reference, pa.float64())})
    cur_path = write(tmp_path, "cur", {"x": pa.array(current, pa.float64())})
    reference_profile = profile_reference(relation(ref_path), bins=bins)
    current_profile = profile(relation(cur_path), reference_profile.spec)
    result = drift(reference_profile, current_profile, Policy(min_samples=1))["x"]
    ref, cur = np.array(reference, dtype=float), np.array(current, dtype=float)
    if np.isnan(ref).all() or np.isnan(cur).all():
        assert result.status == "insufficient_data"
        return
    edges = reference_profile.spec.column("x").edges
    p_counts, q_counts = numpy_histogram(ref, edges), numpy_histogram(cur, edges)
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    values = result.statistics
    assert values["ks"] == pytest.approx(np.max(np.abs(np.cumsum(p) - np.cumsum(q))), abs=1e-12)
    assert values["total_variation"] == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-12)
    assert values["hellinger"] == pytest.approx(
        np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()), abs=1e-12
    )
    assert values["jensenshannon"] == pytest.approx(jensenshannon(p, q, base=2), abs=1e-7)
    floored_p, floored_q = np.maximum(p, stats.PSI_EPSILON), np.maximum(q, stats.PSI_EPSILON)
    assert values["psi"] == pytest.approx(
        np.sum((floored_q - floored_p) * np.log(floored_q / floored_p)), abs=1e-12
    )
    n_ref, n_cur = p_counts.sum(), q_counts.sum()
    assert (result.n_reference, result.n_current) == (n_ref, n_cur)


@HYPOTHESIS
@given(
    reference=st.lists(st.integers(0, 1000), min_size=2, max_size=12),
    current=st.lists(st.integers(0, 1000), min_size=2, max_size=12),
)
def test_jensen_shannon_equals_scipy(reference: list[int], current: list[int]) -> None:
    size = min(len(reference), len(current))
    ref, cur = np.array(reference[:size]), np.array(current[:size])
    if ref.sum() == 0 or cur.sum() == 0:
        with pytest.raises(ValueError, match="empty"):
            stats.jensen_shannon(ref, cur)
        return
    assert stats.jensen_shannon(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-7)


@HYPOTHESIS
@given(
    table=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=10),
)
def test_chi_square_equals_scipy_chi2_contingency(table: list[tuple[int, int]]) -> None:
    ref = np.array([r for r, _ in table])
    cur = np.array([c for _, c in table])
    if ref.sum() == 0 or cur.sum() == 0:
        with pytest.raises(ValueError, match="non-empty"):
            stats.chi_square(ref, cur)
        return
    result = stats.chi_square(ref, cur)
    used = (ref + cur) > 0
    expected = scipy.stats.chi2_contingency(np.vstack([ref[used], cur[used]]), correction=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.dof == expected.dof


def test_categorical_chi_square_uses_every_category_and_equals_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    shares = np.array([0.4, 0.3, 0.2, 0.1])
    reference = rng.choice(4, 3000, p=shares)
    current = rng.choice(4, 2500, p=[0.35, 0.32, 0.2, 0.13])
    ref_path = write(tmp_path, "ref", {"c": labels(reference)})
    cur_path = write(tmp_path, "cur", {"c": labels(current)})
    result = drift_relations(relation(ref_path), relation(cur_path), top_k=2)["c"]
    ref_counts, cur_counts = Counter(reference.tolist()), Counter(current.tolist())
    table = np.array([[ref_counts[k] for k in range(4)], [cur_counts[k] for k in range(4)]])
    expected = scipy.stats.chi2_contingency(table, correction=False)
    assert result.method == "chi2"
    assert result.statistics["chi2"] == pytest.approx(expected.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.statistics["chi2_dof"] == 3


def test_binned_ks_equals_exact_when_every_value_has_its_own_bin(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    reference, current = rng.integers(0, 8, 900), rng.integers(0, 9, 700)
    ref_path = write(tmp_path, "ref", {"n": reference})
    cur_path = write(tmp_path, "cur", {"n": current})
    result = drift_relations(relation(ref_path), relation(cur_path))["n"]
    exact = scipy.stats.ks_2samp(reference, current, method="asymp")
    assert result.statistics["ks"] == pytest.approx(exact.statistic, abs=1e-12)
    # Stephens' correction of the limiting distribution vs SciPy's finite-n distribution.
    assert result.p_value == pytest.approx(exact.pvalue, rel=0.15)


@HYPOTHESIS
@given(
    counts=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=3, max_size=10),
    gaps=st.lists(st.floats(0.01, 10), min_size=10, max_size=10),
    start=st.floats(-100, 100),
)
def test_binned_wasserstein_equals_numerical_integration(
    counts: list[tuple[int, int]], gaps: list[float], start: float
) -> None:
    ref = np.array([a for a, _ in counts], dtype=float)
    cur = np.array([b for _, b in counts], dtype=float)
    if ref.sum() == 0 or cur.sum() == 0:
        return
    edges = start + np.cumsum(gaps[: len(counts) - 1])
    low, high = edges[0] - gaps[-1], edges[-1] + gaps[-2]
    knots = np.concatenate([[low], edges, [high]])
    grid = np.linspace(low, high, 200_001)
    # Each bin's mass spread uniformly over it: piecewise-linear CDFs through the knots.
    cdf_ref = np.interp(grid, knots, np.concatenate([[0], np.cumsum(ref / ref.sum())]))
    cdf_cur = np.interp(grid, knots, np.concatenate([[0], np.cumsum(cur / cur.sum())]))
    expected = np.trapezoid(np.abs(cdf_ref - cdf_cur), grid)
    result = stats.wasserstein_binned(edges, ref, cur, low=low, high=high)
    assert result == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("make_reference", "make_current"),
    [
        (lambda rng, n: rng.normal(0, 1, n), lambda rng, n: rng.normal(0.5, 1, n)),
        (lambda rng, n: rng.normal(0, 1, n), lambda rng, n: rng.normal(0, 1.5, n)),
        (lambda rng, n: rng.lognormal(0, 1, n), lambda rng, n: rng.lognormal(0, 1.5, n)),
        (lambda rng, n: rng.exponential(1, n), lambda rng, n: rng.exponential(1.3, n)),
        (lambda rng, n: rng.poisson(3, n), lambda rng, n: rng.poisson(4, n)),
    ],
)
def test_binned_wasserstein_is_close_to_the_exact_one(tmp_path: Path, make_reference, make_current) -> None:
    rng = np.random.default_rng(21)
    ref_path = write(tmp_path, "ref", {"x": make_reference(rng, 50_000)})
    cur_path = write(tmp_path, "cur", {"x": make_current(rng, 50_000)})
    result = drift_relations(relation(ref_path), relation(cur_path), exact=True)["x"]
    # Heavy tails beyond the reference range are the hard part (the open outer bins).
    assert result.statistics["wasserstein_binned"] == pytest.approx(
        result.statistics["wasserstein"], rel=0.12
    )


def test_benjamini_hochberg_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p_values = rng.uniform(0, 1, rng.integers(1, 30)) ** 3
        assert stats.adjust_pvalues(p_values, "bh") == pytest.approx(
            scipy.stats.false_discovery_control(p_values, method="bh").tolist(), rel=1e-12
        )
    assert stats.adjust_pvalues([0.01, 0.5], "bonferroni") == [0.02, 1.0]
    assert stats.adjust_pvalues([0.01, 0.5], "none") == [0.01, 0.5]
    with pytest.raises(ValueError, match="correction"):
        stats.adjust_pvalues([0.1], "holm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.adjust_pvalues([math.nan], "bh")


def test_ks_binned_error_bound_brackets_the_exact_statistic() -> None:
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=500), rng.normal(0.3, 1.2, 400)
    edges = np.quantile(ref, np.linspace(0, 1, 9))
    binned = stats.ks_binned(numpy_histogram(ref, tuple(edges)), numpy_histogram(cur, tuple(edges)))
    exact = scipy.stats.ks_2samp(ref, cur).statistic
    assert binned.statistic <= exact <= binned.upper_bound
    assert binned.error_bound == pytest.approx(binned.upper_bound - binned.statistic)


# ------------------------------------------------------------------------------------------------
# Edge cases: never crash, never pass silently


def test_empty_all_null_and_small_columns_are_insufficient_data(tmp_path: Path) -> None:
    ref_path = write(tmp_path, "ref", {"x": pa.array(np.arange(100.0)), "c": pa.array(["a", "b"] * 50)})
    cur_path = write(
        tmp_path,
        "cur",
        {"x": pa.array([None] * 10, pa.float64()), "c": pa.array(["a"] * 5 + [None] * 5, pa.string())},
    )
    report = drift_relations(relation(ref_path), relation(cur_path))
    for column in report.columns:
        assert column.status == "insufficient_data" and column.drifted is False
        assert column.method is None and column.p_value is None
    assert "no non-null values" in report["x"].reason
    assert "fewer than min_samples=30" in report["c"].reason
    assert report.summary.n_checked == 0 and report.summary.drift_share is None
    assert report.summary.dataset_drifted is False and report.summary.n_insufficient == 2
    empty = relation(ref_path).filter("false")
    assert "has no rows" in drift_relations(relation(ref_path), empty)["x"].reason


def test_infinities_and_nan_never_pass_silently(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ref_path = write(tmp_path, "ref", {"x": rng.normal(size=2000)})
    infinite = np.full(2000, np.inf)
    infinite[:1000] = np.nan
    cur_path = write(tmp_path, "cur", {"x": infinite})
    small = drift_relations(relation(ref_path), relation(cur_path))["x"]
    assert small.status == "ok" and small.drifted  # every valid value lies beyond the reference range
    assert small.method == "ks" and small.n_current == 1000 and small.statistics["wasserstein"] is None
    # An effect size that is undefined (no finite value) is an error, not a silent "no drift".
    forced = drift_relations(
        relation(ref_path),
        relation(cur_path),
        policy=Policy().with_columns({"x": Rule("wasserstein_normed", 0.1)}),
    )["x"]
    assert forced.status == "error" and forced.drifted is False
    assert "no finite values" in forced.reason


def test_constant_columns(tmp_path: Path) -> None:
    ref_path = write(tmp_path, "ref", {"x": np.full(20_000, 3.0), "c": pa.array(["k"] * 20_000)})
    same = write(tmp_path, "same", {"x": np.full(20_000, 3.0), "c": pa.array(["k"] * 20_000)})
    moved = write(tmp_path, "moved", {"x": np.full(20_000, 3.5), "c": pa.array(["j"] * 20_000)})
    unchanged = drift_relations(relation(ref_path), relation(same))
    assert [c.drifted for c in unchanged.columns] == [False, False]
    assert unchanged["x"].statistic == 0.0 and unchanged["c"].statistics["chi2"] == 0.0
    changed = drift_relations(relation(ref_path), relation(moved))
    assert changed["x"].drifted and changed["x"].statistic == math.inf
    assert changed["c"].drifted and changed["c"].new_categories == ("j",)
    assert changed["c"].vanished_categories == ("k",)
    assert changed.to_json_dict()["columns"][0]["statistic"] == "inf"


def test_missing_and_retyped_columns_are_errors(tmp_path: Path) -> None:
    ref_path = write(tmp_path, "ref", {"x": np.arange(50.0), "y": np.arange(50.0), "z": np.arange(50.0)})
    cur_path = write(tmp_path, "cur", {"x": np.arange(50.0), "z": pa.array([str(i) for i in range(50)])})
    report = drift_relations(relation(ref_path), relation(cur_path))
    assert report["y"].status == "error" and "missing" in report["y"].reason
    assert report["z"].status == "error" and "changed type from DOUBLE to VARCHAR" in report["z"].reason
    assert report["x"].status == "ok"
    assert report.summary.n_error == 2 and report.summary.n_checked == 1


def test_drift_refuses_profiles_of_different_specs(tmp_path: Path) -> None:
    a = profile_reference(relation(write(tmp_path, "a", {"x": np.arange(10.0)})))
    b = profile_reference(relation(write(tmp_path, "b", {"x": np.arange(20.0)})))
    with pytest.raises(ProfileError, match="spec"):
        drift(a, b)


def test_report_types_convert_to_frames_and_dicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref_path = write(tmp_path, "ref", {"x": rng.normal(size=300), "c": labels(rng.integers(0, 3, 300))})
    cur_path = write(tmp_path, "cur", {"x": rng.normal(1, 1, 300), "c": labels(rng.integers(0, 3, 300))})
    report = drift_relations(relation(ref_path), relation(cur_path))
    frame = report.to_pandas()
    assert list(frame["column"]) == ["x", "c"] and "stat_psi" in frame.columns
    assert report.to_polars().height == 2
    as_dict = report.to_dict()
    assert as_dict["summary"]["n_columns"] == 2 and as_dict["columns"][0]["column"] == "x"
    assert report.drifted_columns == ("x",)


def test_drift_of_each_window_against_one_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    days = np.repeat([1, 2, 3], 2000)
    x = rng.normal(size=6000)
    x[days == 3] += 1.0  # the third day drifts
    table = {"ts": pa.array([datetime(2024, 6, int(d)) for d in days]), "x": x}
    path = write(tmp_path, "log", table)
    reference = profile_reference(relation(path).filter("ts < TIMESTAMP '2024-06-02'"), exclude=["ts"])
    windows = profile(relation(path), reference.spec, window="day", timestamp_column="ts")
    timeline = drift_windows(reference, windows)
    assert [r["x"].drifted for r in timeline.reports.values()] == [False, False, True]
    frame = timeline.to_pandas()
    assert len(frame) == 3 and frame["window"].tolist()[2] == datetime(2024, 6, 3)
    assert [row["n_drifted"] for row in timeline.summary_records()] == [0, 0, 1]


def assert_same_report(batched: DriftReport, alone: DriftReport) -> None:
    """Equal reports, floats to 1e-12 relative (a matrix row sums in another order than a vector)."""

    def same(a: object, b: object, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            assert list(a) == list(b), where
            for key in a:
                same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
            assert len(a) == len(b), where
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{index}]")
        elif isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) and math.isnan(b)):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15), where
        else:
            assert a == b or (a != a and b != b), where  # NaN equals NaN here

    same(batched.to_dict(), alone.to_dict(), "report")


@pytest.mark.parametrize("policy", [Policy(), Policy(large_sample=500, correction="bonferroni")])
def test_drift_many_equals_drift_of_each_window(tmp_path: Path, policy: Policy) -> None:
    rng = np.random.default_rng(11)
    days = np.repeat([1, 2, 3, 4, 5], [3000, 3000, 3000, 20, 1500])
    x = rng.normal(size=days.size)
    x[days == 2] += 0.4  # drifts
    x[days == 5] = np.where(rng.random(1500) < 0.5, np.inf, np.nan)  # no finite value
    tail = rng.lognormal(0, 1.5, days.size)  # heavy tail: the outer bins decay slowly
    codes = rng.integers(0, 4, days.size)
    codes[days == 3] = rng.integers(0, 7, 3000)  # new categories on day 3
    table = {"ts": pa.array([datetime(2024, 6, int(d)) for d in days]), "x": x, "tail": tail}
    path = write(tmp_path, "log", {**table, "c": labels(codes)})
    reference = profile_reference(relation(path).filter("ts < TIMESTAMP '2024-06-02'"), exclude=["ts"])
    windows = profile(relation(path), reference.spec, window="day", timestamp_column="ts")
    # A current side without the column "tail" (an error row) and one made of a constant.
    without_tail = write(tmp_path, "without", {"x": rng.normal(size=400), "c": labels(codes[:400])})
    constant = write(
        tmp_path,
        "constant",
        {"x": np.full(600, 2.0), "tail": np.full(600, 1.0), "c": labels(codes[:600] * 0)},
    )
    currents = [*windows.values(), profile(relation(without_tail), reference.spec)]
    currents.append(profile(relation(constant), reference.spec))
    batched = drift_many(reference, currents, policy)
    assert len(batched) == len(currents)
    for report, current in zip(batched, currents, strict=True):
        assert_same_report(report, drift(reference, current, policy))
    statuses = {column.status for report in batched for column in report.columns}
    assert statuses == {"ok", "insufficient_data", "error"}  # every branch was compared
    assert batched[1]["x"].drifted and not batched[0]["x"].drifted
    assert drift_many(reference, [], policy) == []
    other = profile_reference(relation(without_tail))
    with pytest.raises(ProfileError, match="spec"):
        drift_many(reference, [windows[min(windows)], other])


def test_row_statistics_equal_the_one_pair_statistics() -> None:
    rng = np.random.default_rng(12)
    reference = rng.integers(0, 50, 12)
    currents = rng.integers(0, 50, (6, 12))
    currents[2, :3] = 0  # empty bins on one side only
    edges = np.cumsum(rng.random(11)) - 3
    for name in ("psi", "jensen_shannon", "hellinger", "total_variation"):
        rows = getattr(stats, f"{name}_rows")(reference, currents)
        expected = [getattr(stats, name)(reference, row) for row in currents]
        assert rows.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15), name
    statistics, uppers = stats.ks_binned_rows(reference, currents)
    for index, row in enumerate(currents):
        alone = stats.ks_binned(reference, row)
        assert (statistics[index], uppers[index]) == pytest.approx((alone.statistic, alone.upper_bound))
    lows, highs = rng.normal(-5, 1, 6), rng.normal(9, 1, 6)
    lower, upper = stats.tail_extents_rows(edges, currents, low=lows, high=highs)
    distances = stats.wasserstein_binned_rows(edges, reference, currents, low=lows, high=highs)
    for index, row in enumerate(currents):
        extents = stats.tail_extents(edges, row, low=lows[index], high=highs[index])
        assert (lower[index], upper[index]) == pytest.approx(extents, rel=1e-12)
        alone = stats.wasserstein_binned(edges, reference, row, low=lows[index], high=highs[index])
        assert distances[index] == pytest.approx(alone, rel=1e-12)
    with pytest.raises(ValueError, match="empty distribution"):
        stats.psi_rows(reference, np.vstack([currents, np.zeros(12)]))


# ------------------------------------------------------------------------------------------------
# Detection power and false positives of the default policy


def shifted_sample(rng: np.random.Generator, n: int, sigma_shift: float, share_shift: float) -> dict:
    """A normal feature shifted by ``sigma_shift`` and a 5-category feature whose first category
    gains ``share_shift`` of the mass (taken proportionally from the others)."""
    shares = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    shares = np.concatenate([[shares[0] + share_shift], shares[1:] * (1 - share_shift / (1 - shares[0]))])
    return {
        "x": rng.normal(10.0 + 2.0 * sigma_shift, 2.0, n),
        "c": labels(rng.choice(5, n, p=shares)),
    }


def compare(tmp_path: Path, n: int, sigma_shift: float, share_shift: float, seed: int = 0) -> DriftReport:
    rng = np.random.default_rng(seed)
    ref = write(tmp_path, f"ref{n}", shifted_sample(rng, n, 0.0, 0.0))
    cur = write(
        tmp_path, f"cur{n}_{sigma_shift}_{share_shift}", shifted_sample(rng, n, sigma_shift, share_shift)
    )
    return drift_relations(relation(ref), relation(cur))


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000, 1_000_000])
def test_half_sigma_shift_and_twenty_point_share_change_are_flagged(tmp_path: Path, n: int) -> None:
    report = compare(tmp_path, n, 0.5, 0.20)
    assert report["x"].drifted and report["c"].drifted, report.to_pandas()[["column", "method", "statistic"]]
    expected_method = ("ks", "chi2") if n < 10_000 else ("wasserstein_normed", "jensenshannon")
    assert (report["x"].method, report["c"].method) == expected_method


@pytest.mark.slow
def test_tiny_shifts_on_a_million_rows_are_not_flagged(tmp_path: Path) -> None:
    report = compare(tmp_path, 1_000_000, 0.02, 0.005)
    # The tests alone would reject (p << alpha); the effect sizes say the shift is irrelevant.
    assert report["x"].p_value < 1e-3
    assert not report["x"].drifted and not report["c"].drifted
    assert report["x"].statistic < 0.05 and report["c"].statistic < 0.05


def same_distribution(rng: np.random.Generator, n: int) -> dict:
    """Ten columns: skewed, discrete, bimodal, NaN-laden numerics and Zipf categoricals up to 300."""
    with_nan = rng.normal(size=n)
    with_nan[rng.random(n) < 0.05] = np.nan
    zipf = lambda k: (rng.zipf(1.3, n) - 1) % k  # noqa: E731
    return {
        "normal": rng.normal(size=n),
        "lognormal": rng.lognormal(0.0, 1.0, n),
        "poisson": rng.poisson(3.0, n),
        "bimodal": rng.normal(np.where(rng.random(n) < 0.5, -2.0, 2.0), 1.0),
        "uniform": rng.uniform(size=n),
        "with_nan": with_nan,
        "c3": labels(zipf(3)),
        "c20": labels(zipf(20)),
        "c300": labels(zipf(300)),
        "flag": pa.array(rng.random(n) < 0.3),
    }


@pytest.mark.slow
def test_same_distribution_flags_under_one_percent_of_columns_at_1000_rows(tmp_path: Path) -> None:
    """The full default path per seed: each reference builds its own spec (edges, top-K categories)."""
    con = duckdb.connect()
    flagged = checked = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        ref = write(tmp_path, f"ref{seed}", same_distribution(rng, 1_000))
        cur = write(tmp_path, f"cur{seed}", same_distribution(rng, 1_000))
        report = drift_relations(con.read_parquet(str(ref)), con.read_parquet(str(cur)))
        assert report.summary.n_checked == 10
        flagged += report.summary.n_drifted
        checked += report.summary.n_checked
    assert flagged / checked < 0.01, f"{flagged} of {checked} columns flagged"


@pytest.mark.slow
@pytest.mark.parametrize(("n", "seeds"), [(10_000, 100), (100_000, 10)])
def test_same_distribution_flags_under_one_percent_of_columns_per_window(
    tmp_path: Path, n: int, seeds: int
) -> None:
    """Many seeds in one scan: seed ``s`` is day ``s`` of a reference and a current log, profiled per
    day on the spec of day 0's reference, and each day's current compared with its own reference."""
    paths = {}
    for side in ("ref", "cur"):
        tables = []
        for seed in range(seeds):
            rng = np.random.default_rng([seed, side == "cur"])
            data = same_distribution(rng, n)
            data["ts"] = pa.array(np.full(n, np.datetime64("2024-01-01") + seed).astype("datetime64[us]"))
            tables.append(pa.table(data))
        paths[side] = tmp_path / f"{side}.parquet"
        pq.write_table(pa.concat_tables(tables, promote_options="permissive"), paths[side])
    con = duckdb.connect()
    ref_rel, cur_rel = con.read_parquet(str(paths["ref"])), con.read_parquet(str(paths["cur"]))
    spec = profile_reference(ref_rel.filter("ts = TIMESTAMP '2024-01-01'"), exclude=["ts"]).spec
    references = profile(ref_rel, spec, window="day", timestamp_column="ts")
    currents = profile(cur_rel, spec, window="day", timestamp_column="ts")
    assert len(references) == len(currents) == seeds
    reports = [drift(references[day], currents[day]) for day in references]
    checked = sum(r.summary.n_checked for r in reports)
    flagged = sum(r.summary.n_drifted for r in reports)
    assert checked == 10 * seeds
    assert flagged / checked < 0.01, f"{flagged} of {checked} columns flagged"


@pytest.mark.slow
def test_benchmark_data_flags_exactly_the_drifted_features(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("drift_bench", ROOT / "bench" / "drift_bench.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["drift_bench"] = bench  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules["drift_bench"]
    reference = bench.generate(tmp_path / "reference", 100_000, drifted=False, seed=7)
    current = bench.generate(tmp_path / "current", 100_000, drifted=True, seed=8)
    report = drift_relations(relation(reference), relation(current))
    assert report.summary.n_checked == 25
    assert sorted(report.drifted_columns) == sorted(bench.DRIFTED)
