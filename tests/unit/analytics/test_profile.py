"""Profiles computed in DuckDB over Parquet: counts, histograms, moments, merging and persistence."""

from __future__ import annotations

import importlib
import math
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.profile import (
    STREAM_BATCH_ROWS,
    ColumnSpec,
    Profile,
    ProfileError,
    ProfileSpec,
    build_spec,
    kind_of,
    merge_profiles,
    profile,
    profile_reference,
    profile_rollup,
    profiles_from_arrow,
    profiles_to_arrow,
)

pytestmark = pytest.mark.unit

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324]


def write(tmp_path: Path, name: str, columns: dict[str, pa.Array | list]) -> Path:
    """Write columns as one Parquet file and return its path."""
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def relation(path: Path) -> duckdb.DuckDBPyRelation:
    return duckdb.connect().read_parquet(str(path))


def float_column(values: list[float | None]) -> pa.Array:
    return pa.array(values, type=pa.float64())


def numpy_histogram(values: np.ndarray, edges: tuple[float, ...]) -> list[int]:
    """Counts of finite values in (-inf, e0], (e0, e1], ..., (e_last, +inf) computed with NumPy."""
    finite = values[np.isfinite(values)]
    index = np.searchsorted(np.asarray(edges, dtype=float), finite, side="left")
    return np.bincount(index, minlength=len(edges) + 1).tolist()


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(SPECIAL_FLOATS),
    st.integers(-5, 5).map(float),  # ties
    st.none(),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reference=st.lists(floats, max_size=40), current=st.lists(floats, max_size=40), bins=st.integers(2, 12)
)
# Found by fuzzing: an edge at -0.0 once sent +0.0 (equal to it) to the bin above.
@example(reference=[-0.0], current=[0.0, -0.0, 5e-324, -5e-324, 0.0, 3.0, -1e308], bins=8)
def test_numeric_profile_matches_numpy(tmp_path: Path, reference: list, current: list, bins: int) -> None:
    ref_path = write(tmp_path, "ref", {"x": float_column(reference)})
    cur_path = write(tmp_path, "cur", {"x": float_column(current)})
    reference_profile = profile_reference(relation(ref_path), bins=bins)
    spec = reference_profile.spec
    edges = spec.column("x").edges
    assert list(edges) == sorted(set(edges)) and all(math.isfinite(e) for e in edges)
    for values, result in (
        (reference, reference_profile["x"]),
        (current, profile(relation(cur_path), spec)["x"]),
    ):
        data = np.array([math.nan if v is None else v for v in values], dtype=float)
        finite = data[np.isfinite(data)]
        assert result.rows == len(values)
        assert result.nulls == sum(v is None for v in values)
        assert result.nan == sum(v is not None and math.isnan(v) for v in values)
        assert result.pos_inf == int(np.sum(data == math.inf))
        assert result.neg_inf == int(np.sum(data == -math.inf))
        assert result.finite == finite.size
        assert list(result.bin_counts) == numpy_histogram(data, edges)
        if finite.size:
            assert result.min == finite.min() and result.max == finite.max()
            with np.errstate(over="ignore", invalid="ignore"):
                mean, variance = float(np.mean(finite)), float(np.var(finite))
            scale = float(np.max(np.abs(finite)))
            if math.isfinite(mean) and scale < 1e150:  # beyond, sums and squares overflow any float
                # Summation order differs (DuckDB vs NumPy): allow rounding relative to the magnitudes.
                assert result.mean == pytest.approx(mean, rel=1e-9, abs=1e-12 * scale)
                assert result.variance == pytest.approx(variance, rel=1e-9, abs=1e-12 * scale * scale)
            elif math.isfinite(variance):
                assert result.variance == pytest.approx(variance, rel=1e-9)
        else:
            assert result.min is None and result.mean is None and result.m2 == 0.0
    # The reference lies inside its own range: the outer bins are empty, so they count exactly the
    # current values outside it.
    if reference_profile["x"].finite and reference_profile["x"].min > -sys.float_info.max:
        assert reference_profile["x"].bin_counts[0] == reference_profile["x"].bin_counts[-1] == 0
        assert edges[-1] == reference_profile["x"].max
        assert math.nextafter(edges[0], math.inf) == reference_profile["x"].min


def test_integer_and_decimal_columns_are_numeric_with_one_bin_per_small_value(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, 2000)
    path = write(
        tmp_path,
        "ints",
        {
            "n": pa.array(counts.astype(np.int32)),
            "d": pa.array([f"{v:.2f}" for v in rng.uniform(0, 10, 2000)]).cast(pa.decimal128(6, 2)),
        },
    )
    reference = profile_reference(relation(path), bins=64)
    n = reference["n"]
    assert reference.spec.column("n").kind == "numeric" and reference.spec.column("d").kind == "numeric"
    # Every value holding more than a couple of quantiles' mass gets a bin of its own (0 included:
    # the minimum is an edge), the rare top values share the last bins.
    assert n.bin_counts[1:8] == tuple(int(np.sum(counts == v)) for v in range(7))
    assert sum(n.bin_counts) == counts.size
    assert n.mean == pytest.approx(counts.mean(), rel=1e-12)


def test_categorical_profile_counts_top_k_other_and_unseen(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference_values = [f"c{v}" for v in rng.zipf(1.6, 3000) % 40] + [None] * 7
    current_values = [f"c{v}" for v in rng.zipf(1.6, 2000) % 40] + ["brand-new"] * 3 + [None]
    ref_path = write(tmp_path, "ref", {"c": pa.array(reference_values, pa.string())})
    cur_path = write(tmp_path, "cur", {"c": pa.array(current_values, pa.string())})
    reference = profile_reference(relation(ref_path), top_k=5)
    spec = reference.spec.column("c")
    ref_counts = Counter(v for v in reference_values if v is not None)
    top = sorted(ref_counts.items(), key=lambda item: (-item[1], item[0]))
    assert spec.categories == tuple(v for v, _ in top[:5])
    assert spec.complete is False
    assert reference["c"].category_counts == tuple(n for _, n in top[:5])
    assert reference["c"].other_count == sum(n for _, n in top[5:])
    assert reference["c"].unseen == tuple(top[5:])  # every other value is listed (max_unseen=1000)
    assert reference["c"].nulls == 7 and reference["c"].distinct == len(ref_counts)
    current = profile(relation(cur_path), reference.spec)["c"]
    cur_counts = Counter(v for v in current_values if v is not None)
    assert current.category_counts == tuple(cur_counts.get(v, 0) for v in spec.categories)
    assert current.other_count == sum(n for v, n in cur_counts.items() if v not in spec.categories)
    others = sorted(
        ((v, n) for v, n in cur_counts.items() if v not in spec.categories), key=lambda i: (-i[1], i[0])
    )
    assert current.unseen == tuple(others)
    capped = profile_reference(relation(ref_path), top_k=5, max_unseen=3)
    assert capped["c"].unseen == tuple(top[5:8])
    assert capped["c"].other_count == sum(n for _, n in top[5:])
    assert current.distinct == len(cur_counts) and current.distinct_exact


def test_booleans_are_categorical_and_a_small_cardinality_spec_is_complete(tmp_path: Path) -> None:
    path = write(tmp_path, "b", {"flag": pa.array([True, False, True, None])})
    reference = profile_reference(relation(path))
    assert reference.spec.column("flag").categories == ("true", "false")
    assert reference.spec.column("flag").complete
    assert reference["flag"].nulls == 1


def test_all_null_empty_and_constant_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "odd",
        {
            "nulls": pa.array([None, None, None], pa.float64()),
            "constant": pa.array([2.5, 2.5, 2.5]),
            "text_nulls": pa.array([None, None, None], pa.string()),
        },
    )
    reference = profile_reference(relation(path))
    assert reference["nulls"].finite == 0 and reference.spec.column("nulls").edges == ()
    assert reference["nulls"].bin_counts == (0,)
    constant = reference["constant"]
    assert constant.spec.edges == (math.nextafter(2.5, -math.inf), 2.5)
    assert constant.bin_counts == (0, 3, 0) and constant.variance == 0.0
    assert reference["text_nulls"].nulls == 3 and reference.spec.column("text_nulls").categories == ()
    empty = duckdb.connect().read_parquet(str(path)).filter("false")
    result = profile(empty, reference.spec)
    assert result.rows == 0
    assert all(c.valid == 0 and c.nulls == 0 for c in result.columns)


def test_merging_the_profiles_of_two_halves_equals_the_profile_of_the_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 4000
    values = rng.lognormal(2.0, 1.0, n)
    values[rng.choice(n, 30, replace=False)] = np.nan
    values[:5] = np.inf
    counts = rng.poisson(4, n)
    labels = np.array([f"v{i}" for i in range(60)], dtype=object)[rng.zipf(1.3, n) % 60]
    day = np.where(np.arange(n) < n // 2, 1, 2)
    table = pa.table(
        {
            "ts": pa.array([datetime(2024, 5, int(d), 12) for d in day]),
            "x": pa.array(values),
            "n": pa.array(counts),
            "c": pa.array(labels.tolist(), pa.string()),
        }
    )
    whole_path = tmp_path / "whole.parquet"
    pq.write_table(table, whole_path)
    reference = profile_reference(relation(whole_path), exclude=["ts"], top_k=10)
    whole = profile(relation(whole_path), reference.spec)
    halves = profile(relation(whole_path), reference.spec, window="day", timestamp_column="ts")
    assert list(halves) == [datetime(2024, 5, 1), datetime(2024, 5, 2)]
    merged = merge_profiles(halves.values())
    assert merged.rows == whole.rows == n
    for name in ("x", "n", "c"):
        a, b = merged[name], whole[name]
        for attribute in ("nulls", "nan", "neg_inf", "pos_inf", "finite", "min", "max", "bin_counts"):
            assert getattr(a, attribute) == getattr(b, attribute), (name, attribute)
        assert (a.category_counts, a.other_count) == (b.category_counts, b.other_count)
        if a.kind == "numeric":
            assert a.mean == pytest.approx(b.mean, rel=1e-9)
            assert a.m2 == pytest.approx(b.m2, rel=1e-9)
    # The reference profile itself equals a profile of the same data on its spec.
    assert reference["x"].bin_counts == whole["x"].bin_counts
    assert reference["c"].category_counts == whole["c"].category_counts
    # Categorical distinct counts stay exact while every other value is listed.
    assert merged["c"].distinct == whole["c"].distinct
    # A HyperLogLog estimate merges to a lower bound.
    assert merged["x"].distinct_exact is False
    assert merged["x"].distinct <= max(whole["x"].distinct, merged["x"].distinct)


def test_windowed_profile_equals_profiles_of_each_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    stamps = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 24 * 60, 600)]
    table = pa.table(
        {
            "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "x": pa.array(rng.normal(size=600)),
            "c": pa.array(rng.choice(["a", "b", "c"], 600).tolist()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'")  # windows stay UTC days whatever the session zone
    rel = con.read_parquet(str(path))
    spec = build_spec(rel, exclude=["ts"])
    windows = profile(rel, spec, window="day", timestamp_column="ts")
    assert list(windows) == [datetime(2024, 3, d) for d in (1, 2, 3)]
    for day, result in windows.items():
        end = day + timedelta(days=1)
        part = rel.filter(
            f"ts >= TIMESTAMPTZ '{day.isoformat()}+00:00' AND ts < TIMESTAMPTZ '{end.isoformat()}+00:00'"
        )
        alone = profile(part, spec)
        assert result.rows == alone.rows
        assert result["x"].bin_counts == alone["x"].bin_counts
        assert result["c"].category_counts == alone["c"].category_counts
        assert result.window == day


def test_profiles_round_trip_through_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    table = pa.table(
        {
            "ts": pa.array([datetime(2024, 1, 1 + i % 3) for i in range(300)]),
            "x": pa.array(np.concatenate([rng.normal(size=297), [np.nan, np.inf, -np.inf]])),
            "c": pa.array([f"k{i % 7}" for i in range(300)]),
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    rel = relation(path)
    reference = profile_reference(rel, exclude=["ts"], top_k=3)
    windows = profile(rel, reference.spec, window="day", timestamp_column="ts")
    pq.write_table(profiles_to_arrow(windows), tmp_path / "profiles.parquet")
    assert profiles_from_arrow(pq.read_table(tmp_path / "profiles.parquet")) == windows
    pq.write_table(reference.to_arrow(), tmp_path / "reference.parquet")
    restored = Profile.from_arrow(pq.read_table(tmp_path / "reference.parquet"))
    assert restored == reference
    # The restored spec profiles new data exactly like the original one.
    assert profile(rel, restored.spec) == profile(rel, reference.spec)
    with pytest.raises(ProfileError, match="windows"):
        Profile.from_arrow(profiles_to_arrow(windows))
    with pytest.raises(ProfileError, match="metadata"):
        profiles_from_arrow(pa.table({"x": [1]}))


def test_long_format_has_one_row_per_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t", {"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    result = profile_reference(relation(path))
    table = result.to_arrow()
    assert table.column("column").to_pylist() == ["x", "c"]
    frame = result.to_pandas()
    assert list(frame["column"]) == ["x", "c"] and list(frame["valid"]) == [3, 3]
    assert result.to_polars().height == 2
    assert result.to_dict()["columns"][1]["category_counts"] == [2, 1]


def test_missing_and_retyped_columns_are_reported_not_profiled(tmp_path: Path) -> None:
    ref = write(tmp_path, "ref", {"x": [1.0, 2.0], "y": [3.0, 4.0], "c": ["a", "b"]})
    cur = write(tmp_path, "cur", {"x": ["one", "two"], "c": ["a", "a"], "extra": [1, 2]})
    reference = profile_reference(relation(ref))
    current = profile(relation(cur), reference.spec)
    assert current.missing == ("y",)
    assert current.retyped == (("x", "VARCHAR"),)
    assert current.names == ("c",)


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "t", {"x": [1.0], "ts": [datetime(2024, 1, 1)], "l": [[1, 2]]})
    rel = relation(path)
    with pytest.raises(ProfileError, match="bins"):
        build_spec(rel, bins=1)
    with pytest.raises(ProfileError, match="top_k"):
        build_spec(rel, top_k=0)
    with pytest.raises(ProfileError, match="unknown column"):
        build_spec(rel, ["nope"])
    with pytest.raises(ProfileError, match="cannot be profiled"):
        build_spec(rel, ["l"])
    with pytest.raises(ProfileError, match="kind"):
        build_spec(rel, kinds={"x": "ordinal"})
    spec = build_spec(rel)
    assert spec.names == ("x",)  # temporal and nested columns are skipped by default
    with pytest.raises(ProfileError, match="window"):
        profile(rel, spec, window="fortnight", timestamp_column="ts")
    with pytest.raises(ProfileError, match="timestamp_column"):
        profile(rel, spec, window="day")
    with pytest.raises(ProfileError, match="not a date"):
        profile(rel, spec, window="day", timestamp_column="x")


def test_forced_kind_profiles_an_integer_code_as_categorical(tmp_path: Path) -> None:
    path = write(tmp_path, "t", {"zip": pa.array([75001, 75002, 75001], pa.int64())})
    spec = build_spec(relation(path), kinds={"zip": "categorical"})
    assert spec.column("zip").categories == ("75001", "75002")


def test_merge_refuses_profiles_of_different_specs() -> None:
    a = ProfileSpec(columns=(ColumnSpec("x", "numeric", "DOUBLE", edges=(0.0, 1.0)),))
    b = ProfileSpec(columns=(ColumnSpec("x", "numeric", "DOUBLE", edges=(0.0, 2.0)),))
    with pytest.raises(ProfileError, match="different specs"):
        Profile(spec=a, rows=0, columns=()).merge(Profile(spec=b, rows=0, columns=()))
    with pytest.raises(ProfileError, match="no profiles"):
        merge_profiles([])


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [
        ("DOUBLE", "numeric"),
        ("DECIMAL(5,2)", "numeric"),
        ("UBIGINT", "numeric"),
        ("VARCHAR", "categorical"),
        ("BOOLEAN", "categorical"),
        ("ENUM('a', 'b')", "categorical"),
        ("TIMESTAMP", None),
        ("INTEGER[]", None),
    ],
)
def test_kind_of_duckdb_types(dtype: str, kind: str | None) -> None:
    assert kind_of(dtype) == kind


finite_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(-1e3, 1e3),
    st.floats(1e15, 1e16),
    st.integers(-20, 20).map(float),
)


@settings(max_examples=300, deadline=None)
@given(
    edges=st.lists(finite_floats, min_size=1, max_size=90, unique=True).map(sorted),
    values=st.lists(finite_floats, max_size=200),
    near=st.integers(0, 3),
)
def test_lookup_grid_binning_equals_searchsorted(edges: list[float], values: list[float], near: int) -> None:
    from analytics.profile import _Binner

    # Values on, just below and just above every edge: where a rounding slip would show.
    around = [math.nextafter(e, direction) for e in edges for direction in (-math.inf, math.inf)] * (near > 0)
    data = np.array(values + list(edges) + around, dtype=float)
    data = data[np.isfinite(data)]
    binner = _Binner(edges)
    assert binner.counts(data).tolist() == numpy_histogram(data, tuple(edges))


def test_lookup_table_searches_only_the_buckets_holding_an_edge_and_stays_exact() -> None:
    from analytics.profile import _Binner

    rng = np.random.default_rng(11)
    for values in (rng.normal(5, 2, 50_000), rng.lognormal(0, 2, 50_000), rng.poisson(3, 50_000) * 1.0):
        edges = tuple(sorted(set(np.quantile(values[:2000], np.linspace(0, 1, 80)).tolist())))
        binner = _Binner(edges)
        # An edge lies inside at most one bucket; only those buckets are searched.
        assert int(np.count_nonzero(binner.table == binner.n_bins)) <= len(edges)
        probe = np.concatenate([values, np.asarray(edges), np.nextafter(np.asarray(edges), np.inf)])
        assert binner.counts(probe).tolist() == numpy_histogram(probe, edges)


signed_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, sys.float_info.max, -sys.float_info.max]),
)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(signed_floats, min_size=1, max_size=50),
    sign=st.sampled_from([1.0, -1.0, None]),
    fitted=st.lists(signed_floats, min_size=2, max_size=2).map(sorted),
    coarser=st.integers(0, 12),
)
def test_bucket_offsets_of_one_signed_batches_equal_the_order_key_buckets(
    values: list[float], sign: float | None, fitted: list[float], coarser: int
) -> None:
    """The shortcut for batches of one sign puts every value (``-0.0`` too) in its order key's bucket."""
    from analytics.profile import _finite_range, _KeyMap, _order_key, _order_keys

    data = np.array(values, dtype=float)
    if sign is not None:
        data = np.abs(data) * sign
        data[data == 0.0] = -0.0  # -0.0 >= 0.0: a batch of "positive" values may hold it
    keymap = _KeyMap.fit(_order_key(fitted[0]), _order_key(fitted[1])).coarser(coarser)
    base = keymap.bucket(_order_key(fitted[0]) >> keymap.shift)
    low, high = _finite_range(data)
    expected = keymap.buckets(_order_keys(data)) - base
    assert keymap.offsets(data.copy(), base, low, high).tolist() == expected.tolist()


def test_numeric_distinct_estimate_is_close(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    values = np.concatenate(
        [rng.normal(size=30_000), np.arange(500.0), [math.inf, -math.inf, math.nan, -0.0, 0.0]]
    )
    path = write(
        tmp_path, "d", {"x": float_column(values.tolist()), "k": pa.array(rng.integers(0, 40, values.size))}
    )
    result = profile_reference(relation(path))
    exact = len(set(values[~np.isnan(values)].tolist()))  # -0.0 == 0.0
    assert result["x"].distinct == pytest.approx(exact, rel=0.05)
    assert result["k"].distinct == 40 and not result["k"].distinct_exact


fine_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, sys.float_info.max, -sys.float_info.max, 2.2e-308]),
    st.floats(999.0, 1001.0),
    st.integers(-5, 5).map(float),
)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(st.lists(fine_floats, min_size=1, max_size=60), min_size=1, max_size=4),
    bins=st.integers(2, 40),
)
def test_reference_edges_from_the_fine_histogram_count_exactly(batches: list[list[float]], bins: int) -> None:
    """Edges placed on the fine buckets (re-based and coarsened across batches) keep every count exact."""
    from analytics.profile import _FineHistogram, quantile_levels

    fine = _FineHistogram()
    lows, highs = [], []
    for batch in batches:
        low, high = fine.add(np.array(batch, dtype=float))
        lows.append(low)
        highs.append(high)
    data = np.array([v for batch in batches for v in batch], dtype=float)
    assert min(lows) == data.min() and max(highs) == data.max()
    edges, counts = fine.place_edges(quantile_levels(bins), data.size, min(lows), max(highs))
    assert list(edges) == sorted(set(edges)) and all(math.isfinite(e) for e in edges)
    assert list(counts) == numpy_histogram(data, edges)
    assert edges[-1] == data.max()
    if data.min() > -sys.float_info.max:
        assert math.nextafter(edges[0], math.inf) == data.min() and counts[0] == 0


def test_fine_histogram_resolves_a_narrow_feature_far_from_zero() -> None:
    from analytics.profile import _FineHistogram, quantile_levels

    rng = np.random.default_rng(13)
    values = rng.normal(1000.0, 1.0, 100_000)
    fine = _FineHistogram()
    for chunk in np.array_split(values, 4):
        fine.add(chunk)
    edges, counts = fine.place_edges(quantile_levels(64), values.size, values.min(), values.max())
    assert list(counts) == numpy_histogram(values, edges)
    # Every quantile level keeps its own edge, within a few thousandths of a standard deviation.
    assert len(edges) >= len(quantile_levels(64))
    inner = np.quantile(values, np.arange(1, 64) / 64)
    nearest = np.min(np.abs(np.asarray(edges)[None, :] - inner[:, None]), axis=1)
    assert np.max(nearest) < 0.01


def mixed_columns(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """A timestamp over three days, numeric columns with nulls, integers and a skewed categorical one."""
    start = datetime(2026, 1, 1)
    return {
        "ts": pa.array([start + timedelta(hours=int(h)) for h in rng.integers(0, 72, n)]),
        "x": float_column([None if i % 97 == 0 else float(v) for i, v in enumerate(rng.normal(size=n))]),
        "y": pa.array(rng.lognormal(size=n)),
        "k": pa.array(rng.integers(0, 9, n)),
        "c": pa.array([None if i % 13 == 0 else f"v{v}" for i, v in enumerate(rng.zipf(1.5, n) % 300)]),
    }


def test_categorical_counts_on_another_cursor_give_the_same_profiles(tmp_path: Path) -> None:
    """``categorical_rel`` only moves the categorical query to a background thread: same profiles,
    whole or windowed, over several stream batches (numeric columns added by two threads)."""
    rng = np.random.default_rng(7)
    n = 3 * STREAM_BATCH_ROWS + 5
    columns = {**mixed_columns(rng, n), "b": pa.array(rng.random(n) < 0.3)}
    ref_path = write(tmp_path, "ref", columns)
    cur_path = write(tmp_path, "cur", {**columns, "x": pa.array(rng.normal(0.5, size=n))})
    con = duckdb.connect()
    side = con.cursor()
    reference = profile_reference(con.read_parquet(str(ref_path)), exclude=["ts"], top_k=5, max_unseen=50)
    beside = profile_reference(
        con.read_parquet(str(ref_path)),
        exclude=["ts"],
        top_k=5,
        max_unseen=50,
        categorical_rel=side.read_parquet(str(ref_path)),
    )
    assert beside == reference
    assert profile(
        con.read_parquet(str(cur_path)), reference.spec, categorical_rel=side.read_parquet(str(cur_path))
    ) == profile(con.read_parquet(str(cur_path)), reference.spec)
    windowed = {"window": "day", "timestamp_column": "ts"}
    assert profile(
        con.read_parquet(str(cur_path)),
        reference.spec,
        **windowed,
        categorical_rel=side.read_parquet(str(cur_path)),
    ) == profile(con.read_parquet(str(cur_path)), reference.spec, **windowed)


def test_numeric_columns_split_between_scans_give_the_same_profiles(tmp_path: Path) -> None:
    """``stream_rels`` splits the numeric columns between scans on other cursors, each in a thread:
    every column still adds the same batches in the same order, so the profiles are equal, whole or
    windowed, with distinct estimates, and whatever the number of scans (more than columns too)."""
    rng = np.random.default_rng(17)
    n = 3 * STREAM_BATCH_ROWS + 11
    columns = {
        **mixed_columns(rng, n),
        "y": pa.array(np.where(rng.random(n) < 0.001, np.inf, rng.lognormal(size=n))),
        "z": pa.array(rng.standard_t(2, n)),
    }
    path = write(tmp_path, "data", columns)
    con = duckdb.connect()

    def others(count: int) -> list[duckdb.DuckDBPyRelation]:
        return [con.cursor().read_parquet(str(path)) for _ in range(count)]

    reference = profile_reference(con.read_parquet(str(path)), exclude=["ts"], distinct=True)
    windowed = {"window": "day", "timestamp_column": "ts"}
    whole = profile(con.read_parquet(str(path)), reference.spec)
    by_day = profile(con.read_parquet(str(path)), reference.spec, **windowed)
    for count in (1, 2, 6):
        split = profile_reference(
            con.read_parquet(str(path)), exclude=["ts"], distinct=True, stream_rels=others(count)
        )
        assert split == reference
        assert profile(con.read_parquet(str(path)), reference.spec, stream_rels=others(count)) == whole
        assert (
            profile(con.read_parquet(str(path)), reference.spec, **windowed, stream_rels=others(count))
            == by_day
        )
    other = write(tmp_path, "other", {**columns, "x": pa.array(["a"] * n)})
    with pytest.raises(ProfileError, match="stream_rels"):
        profile(
            con.read_parquet(str(path)), reference.spec, stream_rels=[con.cursor().read_parquet(str(other))]
        )


def test_categorical_rel_must_match_the_profiled_relation(tmp_path: Path) -> None:
    path = write(tmp_path, "data", {"x": float_column([1.0, 2.0]), "c": pa.array(["a", "b"])})
    other = write(tmp_path, "other", {"x": float_column([1.0, 2.0]), "c": pa.array([1, 2])})
    con = duckdb.connect()
    with pytest.raises(ProfileError, match="categorical_rel"):
        profile_reference(con.read_parquet(str(path)), categorical_rel=con.cursor().read_parquet(str(other)))


def _close(actual: Profile, expected: Profile) -> None:
    """Equal profiles, but mean and m2 to 1e-9 (Chan's formula merges them in another order)."""
    assert actual.rows == expected.rows and actual.window == expected.window
    assert actual.spec == expected.spec and actual.names == expected.names
    for got, want in zip(actual.columns, expected.columns, strict=True):
        assert replace(got, mean=None, m2=None) == replace(want, mean=None, m2=None), got.name
        for name in ("mean", "m2"):
            a, e = getattr(got, name), getattr(want, name)
            assert (a is None) == (e is None) and (a is None or a == pytest.approx(e, rel=1e-9, abs=1e-9))


@pytest.mark.parametrize("max_unseen", [1000, 5], ids=["values-added-up", "values-cut-counted-again"])
@pytest.mark.parametrize("beside", [False, True], ids=["one-thread", "categorical-beside"])
def test_a_rollup_of_stacked_windows_equals_the_profile_of_their_rows(
    tmp_path: Path, beside: bool, max_unseen: int
) -> None:
    """Rows stacked in three copies (blocks moved 3 and 6 days on), the third left out of the rollup:
    the rolled-up windows equal a profile of the original rows (counts, bins, distinct sketches and
    categorical counts exactly, moments to 1e-9), and the stacked windows a plain windowed profile.
    Categorical counts add up while every window lists all its values; with ``max_unseen=5`` some
    are cut, and the rolled-up rows are counted instead."""
    rng = np.random.default_rng(23)
    n = 2 * STREAM_BATCH_ROWS + 7
    columns = {
        **mixed_columns(rng, n),
        "y": pa.array(np.where(rng.random(n) < 0.002, np.inf, rng.lognormal(size=n))),
        "z": pa.array(np.where(rng.random(n) < 0.002, np.nan, rng.normal(size=n))),
    }
    original = pa.table(columns)
    block = rng.integers(0, 2, n)  # rows split between blocks 0 and 1: disjoint, every row once
    moved = pc_add_days(original.column("ts"), block * 3)
    extra = original.slice(0, 1000).set_column(0, "ts", pc_add_days(original.column("ts")[:1000], 6))
    stacked = pa.concat_tables([original.set_column(0, "ts", moved), extra])
    con = duckdb.connect()
    reference = profile_reference(
        con.from_arrow(original), exclude=["ts"], distinct=True, max_unseen=max_unseen
    )
    start = datetime(2026, 1, 1)

    def rollup(window: datetime) -> datetime | None:
        days = (window - start).days
        return None if days >= 6 else window - timedelta(days=3 * (days // 3))

    categorical_rels = (
        (con.cursor().from_arrow(stacked), con.cursor().from_arrow(original)) if beside else None
    )
    windows, rolled = profile_rollup(
        con.from_arrow(stacked),
        reference.spec,
        "day",
        "ts",
        rollup,
        con.from_arrow(original),
        categorical_rels=categorical_rels,
    )
    assert windows == profile(con.from_arrow(stacked), reference.spec, window="day", timestamp_column="ts")
    expected = profile(con.from_arrow(original), reference.spec, window="day", timestamp_column="ts")
    assert list(rolled) == list(expected) == [start + timedelta(days=d) for d in range(3)]
    for window_start, want in expected.items():
        _close(rolled[window_start], want)
    assert any(c.pos_inf for p in rolled.values() for c in p.columns)  # the special values were merged
    assert all(c.distinct for p in rolled.values() for c in p.columns if c.spec.kind == "numeric")
    unseen = [len(p["c"].unseen) for p in rolled.values()]
    assert max(unseen) == max_unseen if max_unseen < 100 else 5 < max(unseen) < max_unseen
    other = con.from_arrow(original.drop_columns(["c"]))
    with pytest.raises(ProfileError, match="rolled_rel"):
        profile_rollup(con.from_arrow(stacked), reference.spec, "day", "ts", rollup, other)


def pc_add_days(timestamps: pa.ChunkedArray | pa.Array, days: np.ndarray | int) -> pa.Array:
    """Timestamps (microseconds) moved by whole days."""
    micros = np.asarray(timestamps.cast(pa.int64()).to_numpy(zero_copy_only=False))
    return pa.array(micros + np.asarray(days) * 86_400_000_000, pa.int64()).cast(timestamps.type)


@pytest.mark.parametrize("zone", [None, "UTC"], ids=["naive", "utc"])
def test_the_arrow_table_behind_a_relation_gives_the_profiles_of_its_scan(zone: str | None) -> None:
    """``table=``: the float columns are cut from the Arrow table instead of a DuckDB scan, in the
    batches DuckDB hands over, so the profiles are equal (several batches and chunks, NULL times
    left out, instants before 1970, NaN, infinities and nulls); a table that differs from the
    relation shows in the profile, so the table is what was read."""
    rng = np.random.default_rng(41)
    n = 3 * STREAM_BATCH_ROWS + 17
    micros = (rng.integers(-1, 3, n) * 86_400 + rng.integers(0, 86_400, n)) * 1_000_000
    timestamps = pa.array(micros, pa.int64(), mask=rng.random(n) < 0.01).cast(pa.timestamp("us", tz=zone))
    x = rng.normal(size=n)
    x[rng.random(n) < 0.003] = np.inf
    x[rng.random(n) < 0.003] = np.nan
    columns = {
        "ts": timestamps,
        "x": pa.array(x, mask=rng.random(n) < 0.02),
        "y": pa.array(rng.lognormal(size=n)),
        "c": pa.array([f"v{v}" for v in rng.integers(0, 7, n)]),
    }
    whole = pa.table(columns)
    table = pa.concat_tables([whole.slice(0, 40_000), whole.slice(40_000)])  # two chunks
    con = duckdb.connect()
    spec = profile_reference(con.from_arrow(whole), exclude=["ts"], distinct=True).spec
    relation = con.from_arrow(table)
    for window in ("day", "hour"):
        windowed = {"window": window, "timestamp_column": "ts"}
        assert profile(relation, spec, **windowed, table=table) == profile(relation, spec, **windowed)
    assert profile(relation, spec, table=table) == profile(relation, spec)
    start = datetime(1969, 12, 31)

    def rollup(window: datetime) -> datetime | None:
        return start if window.replace(tzinfo=None) < datetime(1970, 1, 1) else None

    assert profile_rollup(relation, spec, "day", "ts", rollup, relation, table=table) == profile_rollup(
        relation, spec, "day", "ts", rollup, relation
    )
    other = table.set_column(1, "x", pa.array(rng.normal(size=n)))
    assert profile(relation, spec, table=other) != profile(relation, spec)
    by_day = {"window": "day", "timestamp_column": "ts"}
    assert profile(relation, spec, **by_day, table=other) != profile(relation, spec, **by_day)


def test_rows_are_put_in_window_order_alike_by_the_radix_sort_and_by_lexsort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interleaved windows (the job's stacked slices) are ordered once per source: a 16-bit radix sort
    of (batch, window) pairs where they are few, else lexsort; the same order either way."""
    # The module (``analytics.profile`` is also the package's function of that name).
    profile_module = importlib.import_module("analytics.profile")
    rng = np.random.default_rng(5)
    n = 2 * STREAM_BATCH_ROWS + 999
    micros = (rng.integers(0, 40, n) * 3_600 + rng.integers(0, 3_600, n)) * 1_000_000
    table = pa.table({"ts": pa.array(micros, pa.int64()).cast(pa.timestamp("us")), "x": rng.normal(size=n)})
    specs = [ColumnSpec("x", "numeric", "DOUBLE", (0.0,))]

    def ordered() -> tuple[np.ndarray, np.ndarray]:
        source = profile_module._TableSource.of(table, specs, "hour", "ts")
        _table, keys, order = source._in_window_order
        return keys, order

    radix_keys, radix_order = ordered()
    monkeypatch.setattr(profile_module, "_RADIX_PAIRS", 0)
    sorted_keys, sorted_order = ordered()
    assert np.array_equal(radix_order, sorted_order) and np.array_equal(radix_keys, sorted_keys)
    batches = np.arange(n) // STREAM_BATCH_ROWS
    assert np.array_equal(radix_order, np.lexsort((micros - micros % 3_600_000_000, batches)))


TEXT_VALUES = st.sampled_from(["a", "b", "c", "", "é", "zz", "Z", "a b", "日本", "b\u00e9"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), TEXT_VALUES),
            st.one_of(st.none(), TEXT_VALUES),
            st.one_of(st.none(), st.integers(-2 * 86_400, 3 * 86_400)),
        ),
        max_size=120,
    ),
    tracked=st.lists(TEXT_VALUES, unique=True, max_size=3),
    max_unseen=st.integers(0, 4),
    window=st.sampled_from([None, "day", "hour"]),
    large=st.booleans(),
)
@example(rows=[], tracked=[], max_unseen=1, window="day", large=False)
@example(rows=[("a", None, None)], tracked=["a"], max_unseen=0, window="day", large=False)
def test_text_columns_are_counted_from_the_table_as_the_scan_counts_them(
    rows: list[tuple[str | None, str | None, int | None]],
    tracked: list[str],
    max_unseen: int,
    window: str | None,
    large: bool,
) -> None:
    """``table=``: text columns are counted in NumPy; the profiles equal the query's: nulls, the
    spec's categories, the most frequent unseen values with ties on the cut broken by value, the
    distinct values, rows without a timestamp left out, instants before 1970, empty strings."""
    text = pa.large_string() if large else pa.string()
    table = pa.table(
        {
            "c": pa.array([r[0] for r in rows], text),
            "d": pa.array([r[1] for r in rows], text),
            "ts": pa.array([None if r[2] is None else r[2] * 1_000_000 for r in rows], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    spec = ProfileSpec(
        columns=(
            ColumnSpec("c", "categorical", "VARCHAR", categories=tuple(tracked)),
            ColumnSpec("d", "categorical", "VARCHAR"),
        ),
        max_unseen=max_unseen,
    )
    relation = duckdb.connect().from_arrow(table)
    windowed = {"window": window, "timestamp_column": "ts"} if window else {}
    assert profile(relation, spec, **windowed, table=table) == profile(relation, spec, **windowed)


def test_the_counted_table_is_the_one_given_and_other_types_are_left_to_the_scan() -> None:
    """The categorical counts come from the table given (a different one shows), and a column that
    is not text (its text form is DuckDB's) is counted by the query."""
    con = duckdb.connect()
    table = pa.table({"c": ["a", "b", "b", None], "n": pa.array([1, 2, 2, 3], pa.int64())})
    spec = ProfileSpec(
        columns=(
            ColumnSpec("c", "categorical", "VARCHAR", categories=("b",)),
            ColumnSpec("n", "categorical", "BIGINT", categories=("2",)),
        )
    )
    relation = con.from_arrow(table)
    assert profile(relation, spec, table=table) == profile(relation, spec)
    other = table.set_column(0, "c", pa.array(["a", "a", "a", None]))
    counted = profile(relation, spec, table=other)
    assert counted != profile(relation, spec)
    assert counted["c"].category_counts == (0,) and counted["n"].category_counts == (2,)


def test_a_spec_that_lists_no_unseen_value_still_counts_them() -> None:
    """``max_unseen=0``: no unseen value is listed, yet they count as non-null, other and distinct
    (the query used to drop every row of a column without nulls or tracked values, whose values
    then read as nulls)."""
    table = pa.table({"c": ["x", "y", "y", None, "t"], "d": ["x", "y", "y", "z", "z"]})
    spec = ProfileSpec(
        columns=(
            ColumnSpec("c", "categorical", "VARCHAR", categories=("t",)),
            ColumnSpec("d", "categorical", "VARCHAR", categories=("t",)),
        ),
        max_unseen=0,
    )
    for counted in (
        profile(duckdb.connect().from_arrow(table), spec),
        profile(duckdb.connect().from_arrow(table), spec, table=table),
    ):
        c, d = counted["c"], counted["d"]
        assert (c.nulls, c.other_count, c.distinct, c.unseen, c.category_counts) == (1, 3, 3, (), (1,))
        assert (d.nulls, d.other_count, d.distinct, d.unseen, d.category_counts) == (0, 5, 3, (), (0,))


def test_many_values_in_many_windows_are_counted_from_the_table_as_the_scan_counts_them() -> None:
    """Thousands of values over thousands of hourly windows: the table's counts take the pairs seen
    (not a windows x values grid, which would not fit), and equal the query's."""
    rng = np.random.default_rng(7)
    n = 6_000
    seconds = rng.integers(0, 200 * 86_400, n)
    table = pa.table(
        {
            "c": pa.array([f"v{v}" for v in rng.integers(0, 3_000, n)], mask=rng.random(n) < 0.05),
            "ts": pa.array(seconds * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    spec = ProfileSpec(
        columns=(ColumnSpec("c", "categorical", "VARCHAR", categories=("v1", "v2")),), max_unseen=2
    )
    relation = duckdb.connect().from_arrow(table)
    windowed = {"window": "hour", "timestamp_column": "ts"}
    counted = profile(relation, spec, **windowed, table=table)
    assert len(counted) > 3_000
    assert counted == profile(relation, spec, **windowed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.one_of(st.none(), TEXT_VALUES), st.integers(0, 2), st.integers(0, 1)), max_size=80
    ),
    tracked=st.lists(TEXT_VALUES, unique=True, max_size=2),
    max_unseen=st.integers(0, 3),
    from_table=st.booleans(),
)
def test_rolled_up_text_counts_equal_the_profile_of_the_rows(
    rows: list[tuple[str | None, int, int]], tracked: list[str], max_unseen: int, from_table: bool
) -> None:
    """Rows split between two blocks (the second moved 3 days on) and rolled up: the categorical
    counts of each rolled-up day equal a profile of the rows themselves, whether they add up or
    are counted again (values cut by ``max_unseen``), from the table or from the query."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    micros = [int((start + timedelta(days=d, hours=1)).timestamp() * 1_000_000) for _v, d, _b in rows]
    moved = [m + b * 3 * 86_400_000_000 for m, (_v, _d, b) in zip(micros, rows, strict=True)]
    stamp = pa.timestamp("us", tz="UTC")
    original = pa.table(
        {"ts": pa.array(micros, pa.int64()).cast(stamp), "c": pa.array([r[0] for r in rows], pa.string())}
    )
    stacked = original.set_column(0, "ts", pa.array(moved, pa.int64()).cast(stamp))
    spec = ProfileSpec(
        columns=(ColumnSpec("c", "categorical", "VARCHAR", categories=tuple(tracked)),), max_unseen=max_unseen
    )
    naive = start.replace(tzinfo=None)

    def rollup(window: datetime) -> datetime | None:
        days = (window.replace(tzinfo=None) - naive).days
        return window - timedelta(days=3 * (days // 3))

    con = duckdb.connect()
    table = {"table": stacked} if from_table else {}
    _windows, rolled = profile_rollup(
        con.from_arrow(stacked), spec, "day", "ts", rollup, con.from_arrow(original), **table
    )
    expected = profile(con.from_arrow(original), spec, window="day", timestamp_column="ts")
    assert rolled == expected
