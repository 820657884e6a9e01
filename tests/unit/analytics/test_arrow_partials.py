"""The performance partials computed from Arrow tables (``analytics._arrow_partials``).

Given the tables behind the relations, ``latency_partial``, ``classification_partial`` and
``regression_partial`` compute in NumPy; each test compares that with the query of the same rows (no
table given): every count, bin, extremum and window equal, sums to 1e-12 (relative; a mean of
labels that cancel, to 1e-9 absolute).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import _arrow_partials
from analytics.performance import (
    _LN_GAMMA,
    CLASSIFICATION_PARTIAL_SCHEMA,
    LATENCY_PARTIAL_SCHEMA,
    REGRESSION_PARTIAL_SCHEMA,
    classification_partial,
    latency_partial,
    regression_partial,
)

pytestmark = pytest.mark.unit

HYPOTHESIS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
START_MICROS = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
SUMS = {"sum_ms", "log_loss_sum", "score_sum", "abs_sum", "sq_sum", "ape_sum", "label_mean", "label_m2"}


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def assert_same_partial(computed: pa.Table, queried: pa.Table) -> None:
    """Equal rows in the same order; sums to 1e-12 relative (the order of addition differs)."""
    assert computed.schema == queried.schema
    assert computed.num_rows == queried.num_rows
    for name in queried.schema.names:
        ours, theirs = computed.column(name).to_pylist(), queried.column(name).to_pylist()
        if name in SUMS:
            assert [v is None for v in ours] == [v is None for v in theirs], name
            for mine, other in zip(ours, theirs, strict=True):
                if other is not None:
                    assert mine == pytest.approx(other, rel=1e-12, abs=1e-9), name
        else:
            assert ours == theirs, name


# Mostly ordinary values (each strategy repeated to weigh it), with the odd ones among them: missing
# timestamps and instants before 1970, NaN, infinities, negatives, tiny and huge numbers.
timestamps = st.one_of(
    st.integers(START_MICROS - 86_400_000_000, START_MICROS + 2 * 86_400_000_000),
    st.integers(START_MICROS - 86_400_000_000, START_MICROS + 2 * 86_400_000_000),
    st.integers(-2 * 86_400_000_000, 86_400_000_000),
    st.none(),
)
odd_floats = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e-300, 1e300, None])
latencies = st.one_of(st.floats(0, 5_000), st.floats(0, 5_000), odd_floats)
scores = st.one_of(st.floats(0, 1), st.floats(0, 1), odd_floats, st.sampled_from([0.5, 1.0, 1.5, 0.99999]))
predictions = st.one_of(st.floats(-100, 100), st.floats(-100, 100), odd_floats)
# Ids of several lengths, the empty one, one with a NUL byte (as "r1" padded), non-ASCII.
ID_VALUES = ["", "r1", "r1\x00", "r2", "ré", "r10", "id-0000000000001", "r3", "r4"]
ids = st.sampled_from([*ID_VALUES, None])
label_values = st.sampled_from([0.0, 1.0, 1.0, 2.0, -3.5, -0.5, 1e-300, 250.0, math.nan, math.inf, None])


@st.composite
def logs_and_labels(draw: Any) -> tuple[pa.Table, pa.Table]:
    size = draw(st.integers(0, 40))

    def column(values: Any) -> list[Any]:
        return draw(st.lists(values, min_size=size, max_size=size))

    logs = pa.table(
        {
            "request_id": pa.array(column(ids), pa.string()),
            "timestamp": pa.array(column(timestamps), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "latency_ms": pa.array(column(latencies), pa.float64()),
            "score": pa.array(column(scores), pa.float64()),
            "prediction": pa.array(column(predictions), pa.float64()),
        }
    )
    labelled = draw(st.lists(st.sampled_from(ID_VALUES), unique=True, max_size=len(ID_VALUES)))
    labelled = [*labelled, *draw(st.lists(st.none(), max_size=2))]  # NULL ids match nothing
    values = draw(st.lists(label_values, min_size=len(labelled), max_size=len(labelled)))
    labels = pa.table(
        {"request_id": pa.array(labelled, pa.string()), "label": pa.array(values, pa.float64())}
    )
    if draw(st.booleans()):  # an integer label column (NaN and infinity become missing)
        as_int = [None if v is None or not math.isfinite(v) else int(v) for v in values]
        labels = labels.set_column(1, "label", pa.array(as_int, pa.int64()))
    return logs, labels


@HYPOTHESIS
@given(tables=logs_and_labels(), window=st.sampled_from(["minute", "hour", "day"]))
def test_the_partials_of_the_tables_are_the_query_s(tables: tuple[pa.Table, pa.Table], window: str) -> None:
    logs, labels = tables
    with duckdb.connect() as con:
        rel, label_rel = con.from_arrow(logs), con.from_arrow(labels)
        # The arrays answer (none of what is left to the query is drawn), so two routes are compared.
        assert _arrow_partials.latency_partial_of(logs, window, LATENCY_PARTIAL_SCHEMA, 0.002) is not None
        regression = _arrow_partials.regression_partial_of(
            logs, labels, window, REGRESSION_PARTIAL_SCHEMA, 1e-16
        )
        classification = _arrow_partials.classification_partial_of(
            logs, labels, window, 1, 0.5, CLASSIFICATION_PARTIAL_SCHEMA, (16384, 10), 1e-16
        )
        assert regression is not None and classification is not None
        assert_same_partial(latency_partial(rel, window, table=logs), latency_partial(rel, window))
        for threshold in (0.5, 1.0):
            queried = classification_partial(rel, label_rel, window, positive_label=1, threshold=threshold)
            computed = classification_partial(
                rel, label_rel, window, positive_label=1, threshold=threshold, table=logs, labels_table=labels
            )
            assert_same_partial(computed, queried)
        queried = regression_partial(rel, label_rel, window)
        computed = regression_partial(rel, label_rel, window, table=logs, labels_table=labels)
        assert_same_partial(computed, queried)


def latencies_on_bin_edges(n: int, rng: np.random.Generator) -> np.ndarray:
    """Log-normal latencies, a third of them on a bin edge ``gamma**k`` or a double away from it:
    where a logarithm one unit in the last place off would change the bin."""
    latency = rng.lognormal(3, 1, n)
    edges = np.exp(rng.integers(-500, 5_000, n // 3) * _LN_GAMMA)
    steps = rng.integers(-1, 2, n // 3)
    latency[: n // 3] = np.where(
        steps < 0, np.nextafter(edges, 0), np.where(steps > 0, np.nextafter(edges, np.inf), edges)
    )
    return latency


def test_a_realistic_day_with_many_score_bins_and_hours(con: duckdb.DuckDBPyConnection) -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    ids = [f"20240301-{i:07d}" for i in range(n)]
    logs = pa.table(
        {
            "request_id": ids,
            "timestamp": pa.array(START_MICROS + rng.integers(0, 86_400_000_000, n), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "latency_ms": latencies_on_bin_edges(n, rng),
            "score": rng.random(n),
            "prediction": rng.normal(50, 20, n),
        }
    )
    chosen = rng.choice(n, n // 2, replace=False)
    labels = pa.table(
        {"request_id": [ids[i] for i in chosen], "label": rng.integers(0, 2, n // 2).astype(float)}
    )
    rel, label_rel = con.from_arrow(logs), con.from_arrow(labels)
    for window in ("hour", "day"):
        assert_same_partial(latency_partial(rel, window, table=logs), latency_partial(rel, window))
        computed = classification_partial(
            rel, label_rel, window, positive_label=1.0, labels_unique=True, table=logs, labels_table=labels
        )
        queried = classification_partial(rel, label_rel, window, positive_label=1.0, labels_unique=True)
        assert computed.num_rows > 1000  # the score bins of every hour
        assert_same_partial(computed, queried)
        computed = regression_partial(rel, label_rel, window, table=logs, labels_table=labels)
        assert_same_partial(computed, regression_partial(rel, label_rel, window))


def _tables() -> tuple[pa.Table, pa.Table]:
    logs = pa.table(
        {
            "request_id": ["a", "b", "c", "d"],
            "timestamp": pa.array([START_MICROS + i * 1_000_000 for i in range(4)], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "latency_ms": [1.0, 2.0, 3.0, 4.0],
            "score": [0.9, 0.2, 0.7, 0.4],
        }
    )
    labels = pa.table({"request_id": ["a", "b", "c"], "label": [1.0, 0.0, 0.0]})
    return logs, labels


def test_a_request_labelled_twice_is_left_to_the_query(con: duckdb.DuckDBPyConnection) -> None:
    logs, labels = _tables()
    twice = pa.concat_tables([labels, pa.table({"request_id": ["a"], "label": [0.0]})])
    ids, label_ids = logs.column("request_id").combine_chunks(), twice.column("request_id").combine_chunks()
    assert _arrow_partials._label_positions(ids, label_ids) is None
    rel, label_rel = con.from_arrow(logs), con.from_arrow(twice)
    # As the monitoring job joins the labels as read (labels_unique=True), then checks the counts.
    computed = classification_partial(
        rel, label_rel, "day", positive_label=1.0, labels_unique=True, table=logs, labels_table=twice
    )
    queried = classification_partial(rel, label_rel, "day", positive_label=1.0, labels_unique=True)
    assert_same_partial(computed, queried)
    # The query's left join counts request "a" twice, once per label.
    assert computed.filter(pa.compute.equal(computed.column("kind"), "window")).column("n").to_pylist() == [5]


def arrow_join(ids: pa.Array, label_ids: pa.Array) -> tuple[list[bool], list[int | None]] | None:
    """The join by Arrow's hash tables (``index_in``), as (matched, position or None) lists."""
    joined = _arrow_partials._label_positions_hashed(ids, label_ids)
    if joined is None:
        return None
    position, matched = joined
    return matched.tolist(), [int(p) if m else None for p, m in zip(position, matched, strict=True)]


def routes() -> list[Any]:
    """The label join's routes: the compiled kernel (when built) and NumPy."""
    assert _arrow_partials.KERNELS is not None, "the kernels are not built: run `make setup`"
    return [pytest.param(_arrow_partials.KERNELS, id="kernel"), pytest.param(None, id="numpy")]


# Ids of many lengths (past the 64 bytes NumPy joins), NUL bytes, non-ASCII, the empty id.
join_ids = st.one_of(
    st.sampled_from([*ID_VALUES, "x" * 65, "x" * 65 + "\x00", "y" * 200]),
    st.text(max_size=20),
    st.none(),
)


@pytest.mark.parametrize("kernels", routes())
@HYPOTHESIS
@given(
    log_ids=st.lists(join_ids, max_size=60),
    label_ids=st.lists(join_ids, max_size=40),
    large=st.booleans(),
    offset=st.integers(0, 3),
)
def test_the_label_join_is_arrow_s(
    kernels: Any, log_ids: list[str | None], label_ids: list[str | None], large: bool, offset: int
) -> None:
    """Each route finds each request's label where Arrow's ``index_in`` does, and answers ``None``
    exactly when a non-null id is labelled twice; ids as ``string`` or ``large_string``, sliced."""
    kind = pa.large_string() if large else pa.string()
    ids = pa.array(["pad"] * offset + log_ids, kind).slice(offset)
    labels = pa.array(["pad"] * offset + label_ids, pa.string()).slice(offset)
    expected = arrow_join(ids, labels.cast(kind))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_arrow_partials, "KERNELS", kernels)
        joined = _arrow_partials._label_positions(ids, labels)
    if expected is None:
        assert joined is None
        assert len({i for i in label_ids if i is not None}) < sum(i is not None for i in label_ids)
        return
    assert joined is not None
    position, matched = joined
    assert (
        matched.tolist(),
        [int(p) if m else None for p, m in zip(position, matched, strict=True)],
    ) == expected


@pytest.mark.parametrize("kernels", routes())
def test_a_day_of_ids_is_joined_as_by_arrow(kernels: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """200k requests against 180k labels (shuffled, a tenth unknown), the bench day's shape: the hash
    table's probing and the NumPy route's shared slots are exercised at scale."""
    rng = np.random.default_rng(5)
    ids = pa.array([None if i % 1_000 == 0 else f"20261127-{i:07d}" for i in range(200_000)])
    chosen = rng.permutation(220_000)[:180_000]
    labels = pa.array([f"20261127-{i:07d}" for i in chosen.tolist()])
    monkeypatch.setattr(_arrow_partials, "KERNELS", kernels)
    joined = _arrow_partials._label_positions(ids, labels)
    assert joined is not None
    position, matched = joined
    expected_matched, expected_position = arrow_join(ids, labels)
    assert matched.tolist() == expected_matched
    assert position[matched].tolist() == [p for p in expected_position if p is not None]
    assert 0 < int(matched.sum()) < 180_000


def test_long_ids_and_clashing_hashes_are_joined_by_arrow(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The NumPy route's hash (the kernel's own probing is tested above): every id of one length
    # gets the same hash, which that route must notice and leave to Arrow.
    monkeypatch.setattr(_arrow_partials, "KERNELS", None)
    logs, labels = _tables()
    long = {value: value * 100 for value in "abcd"}  # past the 64 bytes joined in NumPy
    long_logs = logs.set_column(0, "request_id", pa.array([long[v] for v in "abcd"]))
    long_labels = labels.set_column(0, "request_id", pa.array([long[v] for v in "abc"]))
    monkeypatch.setattr(_arrow_partials, "_hashes", lambda words, lengths: lengths.astype(np.uint64))
    for left, right in ((long_logs, long_labels), (logs, labels)):
        rel, label_rel = con.from_arrow(left), con.from_arrow(right)
        computed = classification_partial(
            rel, label_rel, "day", positive_label=1.0, table=left, labels_table=right
        )
        queried = classification_partial(rel, label_rel, "day", positive_label=1.0)
        assert_same_partial(computed, queried)
        window = computed.filter(pa.compute.equal(computed.column("kind"), "window")).to_pylist()[0]
        assert (window["n_labelled"], window["tp"], window["fp"], window["tn"]) == (3, 1, 1, 1)


@pytest.mark.parametrize(
    ("change", "window"),
    [
        ("none", "week"),  # calendar windows
        ("none", "month"),
        ("nanosecond timestamps", "day"),
        ("boolean labels", "day"),
        ("text labels", "day"),
        ("infinite timestamp", "day"),
    ],
)
def test_what_the_arrays_do_not_cover_is_queried(
    con: duckdb.DuckDBPyConnection, change: str, window: str
) -> None:
    logs, labels = _tables()
    positive: Any = 1.0
    if change == "nanosecond timestamps":
        logs = logs.set_column(1, "timestamp", logs.column("timestamp").cast(pa.timestamp("ns", tz="UTC")))
    elif change == "boolean labels":
        labels, positive = labels.set_column(1, "label", pa.array([True, False, False])), True
    elif change == "text labels":
        labels, positive = labels.set_column(1, "label", pa.array(["yes", "no", "no"])), "yes"
    elif change == "infinite timestamp":
        ticks = [START_MICROS, START_MICROS, np.iinfo(np.int64).max, START_MICROS]
        logs = logs.set_column(1, "timestamp", pa.array(ticks, pa.int64()).cast(pa.timestamp("us", tz="UTC")))
    assert (
        _arrow_partials.classification_partial_of(
            logs, labels, window, positive, 0.5, CLASSIFICATION_PARTIAL_SCHEMA, (16384, 10), 1e-15
        )
        is None
    )
    rel, label_rel = con.from_arrow(logs), con.from_arrow(labels)
    computed = classification_partial(
        rel, label_rel, window, positive_label=positive, table=logs, labels_table=labels
    )
    assert_same_partial(computed, classification_partial(rel, label_rel, window, positive_label=positive))
    if change not in ("boolean labels", "text labels"):
        assert _arrow_partials.latency_partial_of(logs, window, LATENCY_PARTIAL_SCHEMA, 0.002) is None
    assert_same_partial(latency_partial(rel, window, table=logs), latency_partial(rel, window))


def test_large_string_ids_slices_and_chunks(con: duckdb.DuckDBPyConnection) -> None:
    """Ids as ``large_string`` against ``string`` labels, tables sliced (buffer offsets) and in chunks."""
    rng = np.random.default_rng(11)
    n = 5_000
    ids = [None if i % 97 == 0 else f"req-{i}" + "x" * (i % 13) for i in range(n)]
    logs = pa.table(
        {
            "request_id": pa.array(ids, pa.large_string()),
            "timestamp": pa.array(START_MICROS + rng.integers(-(10**11), 10**11, n), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "latency_ms": rng.lognormal(2, 1, n),
            "score": rng.random(n),
            "prediction": rng.normal(0, 5, n),
        }
    )
    label_ids = [f"req-{i}" + "x" * (i % 13) for i in range(0, n, 3)]
    labels = pa.table({"request_id": label_ids, "label": rng.integers(0, 2, len(label_ids)).astype(float)})
    pieces = (pa.concat_tables([logs.slice(7, 2_000), logs.slice(2_500, 2_400)]), labels.slice(5))
    for table, label_table in ((logs, labels), pieces):
        assert table.column("request_id").num_chunks == (1 if table is logs else 2)
        rel, label_rel = con.from_arrow(table), con.from_arrow(label_table)
        for window in ("hour", "day"):
            assert (
                _arrow_partials.classification_partial_of(
                    table, label_table, window, 1.0, 0.5, CLASSIFICATION_PARTIAL_SCHEMA, (16384, 10), 1e-16
                )
                is not None
            )
            assert_same_partial(latency_partial(rel, window, table=table), latency_partial(rel, window))
            computed = classification_partial(
                rel, label_rel, window, positive_label=1.0, table=table, labels_table=label_table
            )
            assert_same_partial(computed, classification_partial(rel, label_rel, window, positive_label=1.0))
            computed = regression_partial(rel, label_rel, window, table=table, labels_table=label_table)
            assert_same_partial(computed, regression_partial(rel, label_rel, window))
