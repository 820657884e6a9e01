"""The compiled kernels of the numeric profile give the NumPy route's numbers, bit for bit.

Every test here runs both routes on the same batches: ``_NumericAccumulator(..., kernels=None)``
(NumPy) and ``_NumericAccumulator(..., kernels=KERNELS)`` (``analytics/_kernels.c``), and the
histograms are also checked against a direct NumPy ``searchsorted`` count.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics._native import DISABLE_VARIABLE, LIBRARY_PATH, load_kernels
from analytics.profile import (
    KERNELS,
    ColumnSpec,
    _Binner,
    _NumericAccumulator,
    profile,
    profile_reference,
    quantile_levels,
)

pytestmark = pytest.mark.unit

# The module, not the function analytics/__init__ exports under the same name.
profile_module = importlib.import_module("analytics.profile")

SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e300, -1e300]
SPECIAL += [sys.float_info.max, -sys.float_info.max]

values_strategy = st.one_of(
    # Wide, with every special value a feature may carry.
    st.lists(st.one_of(st.floats(width=64), st.sampled_from(SPECIAL)), max_size=400),
    # Discrete, many repeats and zeros: values land on the edges.
    st.lists(st.integers(-3, 12).map(float), max_size=400),
    # Large magnitudes whose squares overflow (the scaled moments).
    st.lists(st.floats(min_value=-1e200, max_value=1e200, allow_nan=False), max_size=50),
)


def kernels() -> object:
    assert KERNELS is not None, f"the kernels are not built ({LIBRARY_PATH}): run `make setup`"
    return KERNELS


def numpy_histogram(values: np.ndarray, edges: tuple[float, ...]) -> list[int]:
    finite = values[np.isfinite(values)]
    return np.bincount(
        np.searchsorted(np.asarray(edges), finite, side="left"), minlength=len(edges) + 1
    ).tolist()


def same_float(value: float | None) -> object:
    """NaN as a marker, so two NaN compare equal (the routes must agree on NaN too)."""
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def state(accumulator: _NumericAccumulator) -> tuple:
    sketch = accumulator.sketch
    return tuple(
        same_float(item)
        for item in (
            accumulator.non_null,
            accumulator.nan,
            accumulator.neg_inf,
            accumulator.pos_inf,
            accumulator.finite,
            accumulator.low,
            accumulator.high,
            accumulator.mean,
            accumulator.m2,
            None if accumulator.bins is None else accumulator.bins.tolist(),
            None if accumulator.fine is None else (accumulator.fine.counts.tolist(), accumulator.fine.base),
            None if sketch is None else (sketch.registers.tolist(), sorted(sketch.infinities)),
        )
    )


def feed(accumulator: _NumericAccumulator, values: np.ndarray, batches: int, nulls_every: int) -> None:
    """Add ``values`` in ``batches`` batches, with a null (NaN and a null count) every ``nulls_every``."""
    for part in np.array_split(values, batches):
        part = part.copy()
        nulls = 0
        if nulls_every and len(part):
            part[::nulls_every] = np.nan
            nulls = len(part[::nulls_every])
            # _as_numpy reports nulls as NaN slots: the NaN already there are NaN values, not nulls.
        accumulator.add(part, nulls)


def test_the_kernels_are_built_and_used() -> None:
    # `make setup` builds them; without them every test below would compare NumPy with itself.
    assert kernels() is not None
    accumulator = _NumericAccumulator(_Binner((0.0, 1.0)), distinct=True, kernels=KERNELS)
    assert accumulator.kernels is KERNELS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=values_strategy,
    edge_values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=30),
    take_edges_from_values=st.booleans(),
    batches=st.integers(1, 4),
    nulls_every=st.sampled_from([0, 0, 3, 7]),
    distinct=st.booleans(),
)
def test_binned_route_equals_numpy(
    values: list[float],
    edge_values: list[float],
    take_edges_from_values: bool,
    batches: int,
    nulls_every: int,
    distinct: bool,
) -> None:
    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    pool = edge_values + (finite.tolist() if take_edges_from_values else [])
    edges = tuple(sorted(set(pool)))[:60]
    binner = _Binner(edges)
    by_numpy = _NumericAccumulator(binner, distinct, kernels=None)
    by_kernel = _NumericAccumulator(binner, distinct, kernels=kernels())
    feed(by_numpy, data, batches, nulls_every)
    feed(by_kernel, data, batches, nulls_every)
    assert state(by_kernel) == state(by_numpy)
    if edges and not nulls_every:
        assert by_kernel.bins.tolist() == numpy_histogram(data, edges)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values_strategy, batches=st.integers(1, 4), nulls_every=st.sampled_from([0, 5]))
def test_fine_histogram_route_equals_numpy(values: list[float], batches: int, nulls_every: int) -> None:
    data = np.asarray(values, dtype=np.float64)
    levels = quantile_levels(20)
    by_numpy = _NumericAccumulator(None, True, levels, kernels=None)
    by_kernel = _NumericAccumulator(None, True, levels, kernels=kernels())
    feed(by_numpy, data, batches, nulls_every)
    feed(by_kernel, data, batches, nulls_every)
    assert state(by_kernel) == state(by_numpy)
    spec = ColumnSpec("x", "numeric", "DOUBLE")
    rows = len(data)
    # repr: NaN fields (a mean beyond the double range) compare equal as text.
    assert repr(by_kernel.profile(spec, rows)) == repr(by_numpy.profile(spec, rows))


def test_large_batches_of_skewed_discrete_and_zero_heavy_columns_match() -> None:
    """Batches of the stream's size, where many values fall in buckets an edge cuts (zeros)."""
    rng = np.random.default_rng(5)
    columns = {
        "lognormal": rng.lognormal(2, 1.5, 100_000),
        "poisson": rng.poisson(1.5, 100_000).astype(float),
        "zero_heavy": np.where(rng.random(100_000) < 0.6, 0.0, rng.normal(0, 1, 100_000)),
        "signed": rng.standard_t(2, 100_000),
    }
    for name, values in columns.items():
        reference = _NumericAccumulator(None, True, quantile_levels(50), kernels=None)
        feed(reference, values[:50_000], 2, 0)
        edges = reference.profile(ColumnSpec(name, "numeric", "DOUBLE"), 50_000).spec.edges
        binner = _Binner(edges)
        by_numpy = _NumericAccumulator(binner, True, kernels=None)
        by_kernel = _NumericAccumulator(binner, True, kernels=kernels())
        feed(by_numpy, values, 4, 0)
        feed(by_kernel, values, 4, 0)
        assert state(by_kernel) == state(by_numpy), name
        assert by_kernel.bins.tolist() == numpy_histogram(values, edges), name


def test_profiles_of_a_relation_are_identical_with_and_without_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(9)
    n = 120_000
    table = pa.table(
        {
            "x": rng.normal(10, 3, n),
            "y": pa.array(rng.poisson(4, n).astype(float), mask=rng.random(n) < 0.05),
            "z": np.where(rng.random(n) < 0.001, np.inf, rng.lognormal(0, 2, n)),
            "c": rng.choice(["a", "b", "c"], n),
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    con = duckdb.connect()
    rel = con.read_parquet(str(path))
    results = []
    for route in (None, kernels()):
        monkeypatch.setattr(profile_module, "KERNELS", route)
        reference = profile_reference(rel, distinct=True)
        results.append((reference.to_dict(), profile(rel, reference.spec).to_dict()))
    assert results[0] == results[1]


def test_load_kernels_reads_its_switch_strictly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    assert load_kernels() is None
    monkeypatch.setenv(DISABLE_VARIABLE, "1")
    assert load_kernels() is not None
    assert load_kernels(tmp_path / "missing.so") is None
    (tmp_path / "broken.so").write_bytes(b"not a library")
    assert load_kernels(tmp_path / "broken.so") is None
    monkeypatch.setenv(DISABLE_VARIABLE, "yes")
    with pytest.raises(ValueError, match=DISABLE_VARIABLE):
        load_kernels()


@pytest.mark.parametrize("route", ["numpy", "kernels"])
def test_batches_whose_means_are_near_the_double_range_merge_to_a_finite_mean(route: str) -> None:
    """+-1.7e308 in separate batches: the difference of the batch means overflows, the mean does not."""
    accumulator = _NumericAccumulator(
        _Binner((0.0,)), False, kernels=kernels() if route == "kernels" else None
    )
    accumulator.add(np.array([1.7e308, 1.7e308, 1.7e308]), 0)
    accumulator.add(np.array([-1.7e308]), 0)
    assert accumulator.mean == pytest.approx(0.85e308, rel=1e-12)
    assert accumulator.m2 == math.inf  # the spread exceeds the double range: reported as such
    assert accumulator.bins.tolist() == [1, 3]
