"""Mergeable per-column profiles of a dataset, computed in DuckDB over Parquet.

A :class:`ProfileSpec` is computed once from the *reference* data (:func:`build_spec`): for every
numeric column the histogram bin edges (quantiles of the reference, so skewed features resolve), for
every categorical column its most frequent categories. :func:`profile` then profiles any relation —
the reference itself, today's data, or each hour/day of it in one scan — against that spec, so every
profile of a column shares the same bins and the profiles can be compared and merged.

What a column profile holds (:class:`ColumnProfile`):

* counts: rows, nulls, NaN, -inf and +inf (numeric), finite values;
* numeric: min/max, mean and ``m2`` (sum of squared deviations) of the finite values, and the finite
  values' histogram on the spec's edges ``e0 < ... < eK``: bins ``(-inf, e0], (e0, e1], ...,
  (eK, +inf)``. ``e0`` is the largest double below the reference minimum and ``eK`` the reference
  maximum, so the first and last bins count exactly the values below / above the reference range;
* categorical: the count of each spec category, the count of every other non-null value
  (``other_count``) and up to ``max_unseen`` of those other values, most frequent first
  (``unseen``): with them an unbiased chi-square test can use every category (see
  :mod:`analytics.drift`) unless the column has more distinct values than that;
* a distinct count: exact for categoricals, a HyperLogLog estimate for numerics.

Merging (:meth:`Profile.merge`) is exact for every count and histogram and uses Chan's parallel
formula for mean/m2 (exact up to float rounding). A HyperLogLog sketch cannot be rebuilt from its
estimate, so a merged numeric distinct count is the larger of the two (a lower bound of the true one,
flagged by ``distinct_exact=False``); categorical distinct counts stay exact while every value
outside the spec categories is still listed in ``unseen``, and become lower bounds otherwise.

Cost model (2 cores, CPU time per value of one column, measured on 20 columns x 1M rows of doubles;
a plain DuckDB ``sum`` scan costs about 7 ns): DuckDB's ``histogram(x, edges)`` (a binary search per
value) costs about 45-60 ns, ``GROUP BY`` on a uniform-grid bin 23 ns but it cannot express quantile
edges, one ``count_if(x <= e)`` per edge 430 ns, ``np.searchsorted`` 30-50 ns, moments in SQL
(``count``/``min``/``max``/``avg``/``var_pop`` over an ``isnan``/``isfinite`` projection) about 40 ns.
So the numeric columns are read once by DuckDB and streamed as Arrow batches into NumPy (the
stream itself about 19 ns, twice a ``sum`` scan; about 10 ns on a one-thread connection, where
DuckDB decodes in the reading thread instead of polling its workers), where the values'
order-preserving bit patterns (:class:`_KeyMap`; for a batch of one sign an affine function of the
raw bits, :meth:`_KeyMap.offsets`) index a look-up table that bins them exactly (:class:`_Binner`),
about 7 ns with min/max, the counts and moments (10 ns before that shortcut). The reference is
read once too: its values are counted in a fine histogram of the same buckets
(:class:`_FineHistogram`) whose quantiles become the edges, so its histogram on those edges is exact
without a second pass (a reservoir sample for the edges used to cost a whole extra scan).
Categorical columns stay in one DuckDB ``GROUPING SETS`` query (one hash table per column in a
single scan, cheaper than a scan that decodes the strings). The two read disjoint columns, so every
column is read once.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import duckdb
import numpy as np

from analytics._duckdb import FIXED_WINDOW_MICROS, window_start_sql
from analytics._native import Kernels, load_kernels
from analytics._tabular import TabularMixin
from analytics.arrays import distinct_keys, is_text_type

Kind = Literal["numeric", "categorical"]
KINDS: tuple[str, ...] = ("numeric", "categorical")
WINDOWS: tuple[str, ...] = ("minute", "hour", "day", "week", "month")

DEFAULT_BINS = 64
DEFAULT_TOP_K = 100
DEFAULT_MAX_UNSEEN = 1000
#: The tail quantile levels of the edges stop at ``1 / EDGE_SAMPLE_ROWS`` (see :func:`quantile_levels`).
EDGE_SAMPLE_ROWS = 16_384
FORMAT_VERSION = "1"

_INTEGER_TYPES = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "hugeint",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
    "uhugeint",
}
_FLOAT_TYPES = {"float", "double"}
_CATEGORICAL_TYPES = {"varchar", "boolean", "enum"}
_TEMPORAL_TYPES = {
    "date",
    "timestamp",
    "timestamp with time zone",
    "timestamp_ns",
    "timestamp_ms",
    "timestamp_s",
}


class ProfileError(ValueError):
    """A profile cannot be computed or combined as asked; the message says why."""


def quote(name: str) -> str:
    """Quote an identifier for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _double(value: float) -> str:
    return f"'{float(value)!r}'::DOUBLE"


def _type_family(dtype: str) -> str:
    lowered = dtype.lower()
    if lowered.startswith("decimal"):
        return "decimal"
    if lowered.startswith("enum"):
        return "enum"
    return lowered


def kind_of(dtype: str) -> Kind | None:
    """The profile kind of a DuckDB type, or ``None`` when it is not profiled by default.

    Integers, decimals and floats are numeric; strings, booleans and enums categorical. Temporal,
    nested and binary types are skipped unless a kind is forced in :func:`build_spec`.
    """
    family = _type_family(dtype)
    if family in _INTEGER_TYPES or family in _FLOAT_TYPES or family == "decimal":
        return "numeric"
    if family in _CATEGORICAL_TYPES:
        return "categorical"
    return None


def is_temporal(dtype: str) -> bool:
    """Whether a DuckDB type is a date or timestamp (usable as a window or freshness column)."""
    return _type_family(dtype) in _TEMPORAL_TYPES


def _fits(kind: Kind, dtype: str) -> bool:
    if kind == "numeric":
        return kind_of(dtype) == "numeric"
    return kind_of(dtype) is not None


@dataclass(frozen=True)
class ColumnSpec:
    """How one column is profiled.

    Attributes:
        name: Column name.
        kind: ``numeric`` or ``categorical``.
        dtype: DuckDB type of the column in the reference.
        edges: Numeric: increasing finite bin edges (``len(edges) + 1`` bins, see the module doc).
        categories: Categorical: the reference's most frequent values, most frequent first.
        complete: Categorical: whether ``categories`` are all the values the reference had.
    """

    name: str
    kind: Kind
    dtype: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    complete: bool = True

    @property
    def n_bins(self) -> int:
        """Number of histogram bins of a numeric column (``len(edges) + 1``)."""
        return len(self.edges) + 1


@dataclass(frozen=True)
class ProfileSpec:
    """The columns to profile and their bins/categories, computed once from the reference.

    Attributes:
        columns: One :class:`ColumnSpec` per profiled column.
        bins: Number of quantile bins asked for numeric columns.
        top_k: Categories tracked per categorical column.
        max_unseen: Values outside the tracked categories listed (with counts) per profile.
        distinct: Whether numeric profiles estimate their distinct count (``approx_count_distinct``
            costs about one extra scan of the numeric columns).
    """

    columns: tuple[ColumnSpec, ...]
    bins: int = DEFAULT_BINS
    top_k: int = DEFAULT_TOP_K
    max_unseen: int = DEFAULT_MAX_UNSEEN
    distinct: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Profiled column names, in spec order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        """The spec of one column.

        Raises:
            KeyError: if the column is not in the spec.
        """
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"column {name!r} is not in the profile spec (columns: {', '.join(self.names)})")

    def select(self, columns: Iterable[str]) -> ProfileSpec:
        """A spec restricted to ``columns`` (in the given order)."""
        return replace(self, columns=tuple(self.column(name) for name in columns))


@dataclass(frozen=True)
class ColumnProfile:
    """Profile of one column of one relation (or one time window of it).

    Attributes:
        spec: The column's spec (bins / categories).
        rows: Rows of the relation or window.
        nulls: SQL NULLs.
        nan: NaN values (numeric).
        neg_inf: ``-inf`` values (numeric).
        pos_inf: ``+inf`` values (numeric).
        finite: Finite values (numeric).
        min: Smallest finite value, ``None`` without finite values.
        max: Largest finite value.
        mean: Mean of the finite values.
        m2: Sum of squared deviations of the finite values from their mean.
        bin_counts: Numeric: finite values per bin, ``len(spec.edges) + 1`` entries.
        category_counts: Categorical: count of each of ``spec.categories``.
        other_count: Categorical: non-null values outside ``spec.categories``.
        unseen: Categorical: the most frequent values outside ``spec.categories`` with their counts.
        distinct: Distinct non-null values (exact or estimated, see ``distinct_exact``).
        distinct_exact: Whether ``distinct`` is exact (else an estimate or, after a merge, a lower bound).
    """

    spec: ColumnSpec
    rows: int
    nulls: int
    nan: int = 0
    neg_inf: int = 0
    pos_inf: int = 0
    finite: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    m2: float = 0.0
    bin_counts: tuple[int, ...] = ()
    category_counts: tuple[int, ...] = ()
    other_count: int = 0
    unseen: tuple[tuple[str, int], ...] = ()
    distinct: int | None = None
    distinct_exact: bool = False

    @property
    def name(self) -> str:
        """Column name."""
        return self.spec.name

    @property
    def kind(self) -> Kind:
        """``numeric`` or ``categorical``."""
        return self.spec.kind

    @property
    def valid(self) -> int:
        """Values a distribution is built from: non-null and not NaN (infinities included)."""
        if self.kind == "numeric":
            return self.finite + self.neg_inf + self.pos_inf
        return sum(self.category_counts) + self.other_count

    @property
    def missing(self) -> int:
        """Nulls plus NaNs."""
        return self.nulls + self.nan

    @property
    def variance(self) -> float | None:
        """Population variance of the finite values (``None`` without finite values)."""
        return self.m2 / self.finite if self.finite else None

    @property
    def std(self) -> float | None:
        """Population standard deviation of the finite values."""
        variance = self.variance
        return math.sqrt(max(variance, 0.0)) if variance is not None else None

    def category_table(self) -> dict[str, int]:
        """Categorical: count of every value the profile knows (spec categories, then listed others)."""
        table = dict(zip(self.spec.categories, self.category_counts, strict=True))
        table.update(self.unseen)
        return table

    @property
    def listed_all(self) -> bool:
        """Categorical: whether every value outside the spec categories is listed in ``unseen``."""
        return self.other_count == sum(count for _, count in self.unseen)

    def distribution(self) -> tuple[int, ...]:
        """Counts compared by the drift statistics.

        Numeric: the histogram with ``-inf`` added to the first bin and ``+inf`` to the last (both lie
        outside any finite reference range). Categorical: the spec categories followed by one
        ``other`` cell.
        """
        if self.kind == "numeric":
            counts = list(self.bin_counts)
            counts[0] += self.neg_inf
            counts[-1] += self.pos_inf
            return tuple(counts)
        return (*self.category_counts, self.other_count)

    def merge(self, other: ColumnProfile, *, keep_unseen: int | None = None) -> ColumnProfile:
        """Combine the profiles of two disjoint parts of the same data.

        Args:
            other: Profile of the other part, built from the same column spec.
            keep_unseen: How many unseen values to keep (default: as many as the longer input lists).

        Raises:
            ProfileError: if the two profiles were built from different specs.
        """
        if self.spec != other.spec:
            raise ProfileError(f"column {self.name!r}: cannot merge profiles built from different specs")
        mean, m2 = _merge_moments(self.finite, self.mean, self.m2, other.finite, other.mean, other.m2)
        every_unseen = _merge_unseen(self.unseen, other.unseen)
        keep = max(len(self.unseen), len(other.unseen)) if keep_unseen is None else keep_unseen
        distinct, exact = self._merge_distinct(other, every_unseen, keep)
        return ColumnProfile(
            spec=self.spec,
            rows=self.rows + other.rows,
            nulls=self.nulls + other.nulls,
            nan=self.nan + other.nan,
            neg_inf=self.neg_inf + other.neg_inf,
            pos_inf=self.pos_inf + other.pos_inf,
            finite=self.finite + other.finite,
            min=_pick(min, self.min, other.min),
            max=_pick(max, self.max, other.max),
            mean=mean,
            m2=m2,
            bin_counts=tuple(a + b for a, b in zip(self.bin_counts, other.bin_counts, strict=True)),
            category_counts=tuple(
                a + b for a, b in zip(self.category_counts, other.category_counts, strict=True)
            ),
            other_count=self.other_count + other.other_count,
            unseen=every_unseen[:keep],
            distinct=distinct,
            distinct_exact=exact,
        )

    def _merge_distinct(
        self, other: ColumnProfile, every_unseen: Sequence[tuple[str, int]], keep: int
    ) -> tuple[int | None, bool]:
        if self.valid == 0:
            return other.distinct, other.distinct_exact
        if other.valid == 0:
            return self.distinct, self.distinct_exact
        if self.distinct is None or other.distinct is None:
            return None, False
        if self.kind == "numeric":
            # A HyperLogLog estimate cannot be merged from the number alone: keep a lower bound.
            return max(self.distinct, other.distinct), False
        tracked = sum(
            1 for a, b in zip(self.category_counts, other.category_counts, strict=True) if a + b > 0
        )
        known = tracked + len(every_unseen)
        # Exact while every value outside the spec categories is listed on both sides and survives the cut.
        listed = all(p.distinct_exact and p.listed_all for p in (self, other))
        if listed and len(every_unseen) <= keep:
            return known, True
        return max(self.distinct, other.distinct, known), False


def _pick(func, left: float | None, right: float | None) -> float | None:
    values = [v for v in (left, right) if v is not None]
    return func(values) if values else None


def _merge_moments(
    n_a: int, mean_a: float | None, m2_a: float, n_b: int, mean_b: float | None, m2_b: float
) -> tuple[float | None, float]:
    """Chan et al.'s parallel update of (count, mean, M2)."""
    if n_a == 0 or mean_a is None:
        return (mean_b if n_b else None), (m2_b if n_b else 0.0)
    if n_b == 0 or mean_b is None:
        return mean_a, m2_a
    n = n_a + n_b
    delta = mean_b - mean_a
    if math.isinf(delta) and math.isfinite(mean_a) and math.isfinite(mean_b):
        # Means of opposite sign near the double range (say +-1.7e308): their difference overflows,
        # the weighted average does not. The spread between them exceeds the range too.
        return mean_a * (n_a / n) + mean_b * (n_b / n), math.inf
    mean = mean_a + delta * n_b / n
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
    return mean, m2


def _merge_unseen(
    left: Sequence[tuple[str, int]], right: Sequence[tuple[str, int]]
) -> tuple[tuple[str, int], ...]:
    """Union of two unseen-value lists, counts added, most frequent first.

    A value listed on one side only may hide in the other side's ``other_count`` beyond its list, so
    after a merge the listed counts are lower bounds; the totals (``other_count``) stay exact.
    """
    totals: dict[str, int] = {}
    for value, count in (*left, *right):
        totals[value] = totals.get(value, 0) + count
    return tuple(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True)
class Profile(TabularMixin):
    """Profiles of every spec column of one relation or one time window.

    Attributes:
        spec: The spec the profile was computed with.
        rows: Rows of the relation (or window).
        columns: One :class:`ColumnProfile` per spec column present in the relation.
        window: Start of the time window, ``None`` for a whole relation.
        schema: ``(name, type)`` of every column of the profiled relation (for schema drift).
        missing: Spec columns absent from the relation.
        retyped: ``(name, type)`` of spec columns whose type no longer fits their kind (not profiled).
    """

    spec: ProfileSpec
    rows: int
    columns: tuple[ColumnProfile, ...]
    window: datetime | None = None
    schema: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def _by_name(self) -> dict[str, ColumnProfile]:
        # Cached on the instance (frozen dataclasses allow it: cached_property writes __dict__
        # directly): the monitor job looks columns up tens of thousands of times per run.
        return {column.name: column for column in self.columns}

    def __getitem__(self, name: str) -> ColumnProfile:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise KeyError(f"column {name!r} is not profiled (profiled: {', '.join(self.names)})") from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._by_name
        except TypeError:  # an unhashable name is not a column name
            return False

    @property
    def names(self) -> tuple[str, ...]:
        """Profiled column names."""
        return tuple(column.name for column in self.columns)

    def merge(self, other: Profile) -> Profile:
        """Profile of the union of the two profiled datasets (e.g. two days -> a two-day profile).

        Counts and histograms add exactly; means and variances combine with Chan's formula. The
        window is kept only when both profiles share it.

        Raises:
            ProfileError: if the profiles were built from different specs.
        """
        if self.spec != other.spec:
            raise ProfileError("cannot merge profiles built from different specs")
        theirs = {column.name: column for column in other.columns}
        merged = tuple(
            column.merge(theirs[column.name], keep_unseen=self.spec.max_unseen)
            for column in self.columns
            if column.name in theirs
        )
        # A column absent (or unprofilable) in either part has no profile of the whole.
        present = {column.name for column in merged}
        retyped = sorted(set(self.retyped) | set(other.retyped))
        retyped_names = {name for name, _ in retyped}
        missing = [n for n in self.spec.names if n not in present and n not in retyped_names]
        return Profile(
            spec=self.spec,
            rows=self.rows + other.rows,
            columns=merged,
            window=self.window if self.window == other.window else None,
            schema=self.schema if self.schema == other.schema else (self.schema or other.schema),
            missing=tuple(missing),
            retyped=tuple(retyped),
        )

    def _records(self) -> list[dict[str, Any]]:
        return [_column_record(self, column) for column in self.columns]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-able apart from non-finite floats and the window datetime)."""
        return {
            "window": self.window,
            "rows": self.rows,
            "missing": list(self.missing),
            "retyped": [list(item) for item in self.retyped],
            "schema": [list(item) for item in self.schema],
            "columns": self._records(),
        }

    def to_arrow(self):
        """Long-format Arrow table: one row per profiled column (see :data:`ARROW_SCHEMA`)."""
        return profiles_to_arrow([self])

    @classmethod
    def from_arrow(cls, table) -> Profile:
        """Rebuild a profile written by :meth:`to_arrow`.

        Raises:
            ProfileError: if the table holds several windows (use :func:`profiles_from_arrow`).
        """
        profiles = profiles_from_arrow(table)
        if len(profiles) != 1:
            raise ProfileError(f"the table holds {len(profiles)} windows; use profiles_from_arrow()")
        return next(iter(profiles.values()))


def merge_profiles(profiles: Iterable[Profile]) -> Profile:
    """Merge any number of profiles built from the same spec.

    Raises:
        ProfileError: if ``profiles`` is empty or the specs differ.
    """
    items = list(profiles)
    if not items:
        raise ProfileError("no profiles to merge")
    result = items[0]
    for item in items[1:]:
        result = result.merge(item)
    return result


def _column_record(profile: Profile, column: ColumnProfile) -> dict[str, Any]:
    return {
        "window": profile.window,
        "column": column.name,
        "kind": column.kind,
        "dtype": column.spec.dtype,
        "rows": column.rows,
        "nulls": column.nulls,
        "nan": column.nan,
        "neg_inf": column.neg_inf,
        "pos_inf": column.pos_inf,
        "finite": column.finite,
        "valid": column.valid,
        "min": column.min,
        "max": column.max,
        "mean": column.mean,
        "std": column.std,
        "m2": column.m2,
        "distinct": column.distinct,
        "distinct_exact": column.distinct_exact,
        "edges": list(column.spec.edges),
        "bin_counts": list(column.bin_counts),
        "categories": list(column.spec.categories),
        "category_counts": list(column.category_counts),
        "other_count": column.other_count,
        "unseen_values": [value for value, _ in column.unseen],
        "unseen_counts": [count for _, count in column.unseen],
        "complete": column.spec.complete,
    }


# --------------------------------------------------------------------------------------------------
# Arrow persistence


def _arrow_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("window", pa.timestamp("us")),
            ("column", pa.string()),
            ("kind", pa.string()),
            ("dtype", pa.string()),
            ("rows", pa.int64()),
            ("nulls", pa.int64()),
            ("nan", pa.int64()),
            ("neg_inf", pa.int64()),
            ("pos_inf", pa.int64()),
            ("finite", pa.int64()),
            ("min", pa.float64()),
            ("max", pa.float64()),
            ("mean", pa.float64()),
            ("m2", pa.float64()),
            ("distinct", pa.int64()),
            ("distinct_exact", pa.bool_()),
            ("edges", pa.list_(pa.float64())),
            ("bin_counts", pa.list_(pa.int64())),
            ("categories", pa.list_(pa.string())),
            ("category_counts", pa.list_(pa.int64())),
            ("other_count", pa.int64()),
            ("unseen_values", pa.list_(pa.string())),
            ("unseen_counts", pa.list_(pa.int64())),
            ("complete", pa.bool_()),
        ]
    )


def profiles_to_arrow(profiles: Iterable[Profile] | Mapping[Any, Profile]):
    """Write profiles (e.g. the per-window dict of :func:`profile`) as one long-format Arrow table.

    One row per (window, column). Table metadata (``mms.profile``, JSON) keeps the spec order and
    parameters and, per window, the row count, schema and missing/retyped columns, so
    :func:`profiles_from_arrow` restores the profiles exactly (including windows with no column).

    Args:
        profiles: Profiles sharing one spec.

    Returns:
        ``pyarrow.Table``; write it with ``pyarrow.parquet.write_table``.

    Raises:
        ProfileError: if the profiles do not share one spec.
    """
    import pyarrow as pa

    items = list(profiles.values()) if isinstance(profiles, Mapping) else list(profiles)
    if not items:
        raise ProfileError("no profiles to write")
    spec = items[0].spec
    if any(item.spec != spec for item in items):
        raise ProfileError("profiles written together must share one spec")
    rows = [_column_record(item, column) for item in items for column in item.columns]
    schema = _arrow_schema()
    columns = {name: [row[name] for row in rows] for name in schema.names}
    meta = {
        "version": FORMAT_VERSION,
        "spec": {
            "bins": spec.bins,
            "top_k": spec.top_k,
            "max_unseen": spec.max_unseen,
            "distinct": spec.distinct,
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "dtype": c.dtype,
                    "edges": list(c.edges),
                    "categories": list(c.categories),
                    "complete": c.complete,
                }
                for c in spec.columns
            ],
        },
        "windows": [
            {
                "window": item.window.isoformat() if item.window else None,
                "rows": item.rows,
                "schema": [list(pair) for pair in item.schema],
                "missing": list(item.missing),
                "retyped": [list(pair) for pair in item.retyped],
            }
            for item in items
        ],
    }
    return pa.Table.from_pydict(
        columns, schema=schema.with_metadata({"mms.profile": json.dumps(meta, allow_nan=True)})
    )


def profiles_from_arrow(table) -> dict[datetime | None, Profile]:
    """Read profiles written by :func:`profiles_to_arrow` / :meth:`Profile.to_arrow`.

    Args:
        table: A ``pyarrow.Table`` (e.g. ``pyarrow.parquet.read_table(path)``).

    Returns:
        Profiles by window start (``None`` for a whole-relation profile), in window order.

    Raises:
        ProfileError: if the table was not written by this module.
    """
    raw = (table.schema.metadata or {}).get(b"mms.profile")
    if raw is None:
        raise ProfileError("not a profile table: the mms.profile metadata is missing")
    meta = json.loads(raw)
    if meta.get("version") != FORMAT_VERSION:
        raise ProfileError(f"unsupported profile format version {meta.get('version')!r}")
    spec_meta = meta["spec"]
    spec = ProfileSpec(
        columns=tuple(
            ColumnSpec(
                name=c["name"],
                kind=c["kind"],
                dtype=c["dtype"],
                edges=tuple(float(e) for e in c["edges"]),
                categories=tuple(c["categories"]),
                complete=bool(c["complete"]),
            )
            for c in spec_meta["columns"]
        ),
        bins=int(spec_meta["bins"]),
        top_k=int(spec_meta["top_k"]),
        max_unseen=int(spec_meta.get("max_unseen", DEFAULT_MAX_UNSEEN)),
        distinct=bool(spec_meta["distinct"]),
    )
    by_window: dict[datetime | None, list[ColumnProfile]] = {}
    for row in table.to_pylist():
        column_spec = spec.column(row["column"])
        by_window.setdefault(row["window"], []).append(
            ColumnProfile(
                spec=column_spec,
                rows=row["rows"],
                nulls=row["nulls"],
                nan=row["nan"],
                neg_inf=row["neg_inf"],
                pos_inf=row["pos_inf"],
                finite=row["finite"],
                min=row["min"],
                max=row["max"],
                mean=row["mean"],
                m2=row["m2"],
                bin_counts=tuple(row["bin_counts"]),
                category_counts=tuple(row["category_counts"]),
                other_count=row["other_count"],
                unseen=tuple(zip(row["unseen_values"], row["unseen_counts"], strict=True)),
                distinct=row["distinct"],
                distinct_exact=row["distinct_exact"],
            )
        )
    profiles: dict[datetime | None, Profile] = {}
    for info in meta["windows"]:
        window = datetime.fromisoformat(info["window"]) if info["window"] else None
        order = {name: i for i, name in enumerate(spec.names)}
        columns = tuple(sorted(by_window.get(window, []), key=lambda c: order[c.name]))
        profiles[window] = Profile(
            spec=spec,
            rows=info["rows"],
            columns=columns,
            window=window,
            schema=tuple(tuple(pair) for pair in info["schema"]),
            missing=tuple(info["missing"]),
            retyped=tuple(tuple(pair) for pair in info["retyped"]),
        )
    return profiles


# --------------------------------------------------------------------------------------------------
# Computing specs and profiles in DuckDB


def relation_schema(rel: duckdb.DuckDBPyRelation) -> tuple[tuple[str, str], ...]:
    """``(name, type)`` of every column of a relation."""
    return tuple((name, str(dtype)) for name, dtype in zip(rel.columns, rel.types, strict=True))


def _query(rel: duckdb.DuckDBPyRelation, sql: str) -> list[tuple]:
    return rel.query("__mms_source", sql).fetchall()


def _plan(
    rel: duckdb.DuckDBPyRelation,
    columns: Sequence[str] | None,
    kinds: Mapping[str, Kind] | None,
    exclude: Iterable[str],
) -> list[ColumnSpec]:
    """Resolve the columns to profile and their kinds (specs without edges/categories yet)."""
    schema = dict(relation_schema(rel))
    kinds = dict(kinds or {})
    for name, kind in kinds.items():
        if kind not in KINDS:
            raise ProfileError(f"column {name!r}: kind must be numeric or categorical, got {kind!r}")
    if columns is None:
        skip = set(exclude)
        selected = [n for n in schema if n not in skip and (n in kinds or kind_of(schema[n]) is not None)]
    else:
        unknown = [n for n in columns if n not in schema]
        if unknown:
            raise ProfileError(
                f"unknown column(s) {', '.join(unknown)}; the relation has {', '.join(schema)}"
            )
        selected = list(dict.fromkeys(columns))
    plan = []
    for name in selected:
        dtype = schema[name]
        kind = kinds.get(name) or kind_of(dtype)
        if kind is None or not _fits(kind, dtype):
            raise ProfileError(f"column {name!r} of type {dtype} cannot be profiled as {kind or 'a feature'}")
        plan.append(ColumnSpec(name, kind, dtype))
    return plan


def profile_reference(
    rel: duckdb.DuckDBPyRelation,
    columns: Sequence[str] | None = None,
    *,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    max_unseen: int = DEFAULT_MAX_UNSEEN,
    kinds: Mapping[str, Kind] | None = None,
    exclude: Iterable[str] = (),
    distinct: bool = True,
    categorical_rel: duckdb.DuckDBPyRelation | None = None,
    stream_rels: Sequence[duckdb.DuckDBPyRelation] = (),
) -> Profile:
    """Build the spec from a reference relation and profile it, reading every column once.

    1. one streaming scan of the numeric columns (:func:`_numeric_profiles`) counts every finite
       value exactly in a fine histogram (:class:`_FineHistogram`, thousands of buckets that adapt to
       the column's range); its quantiles at :func:`quantile_levels`, rounded up to the top of their
       bucket, become the edges along with the exact range (``nextbefore(min)`` and ``max``), and the
       fine counts fall exactly onto those edges (no bucket straddles one). Persist the reference
       profile (:meth:`Profile.to_arrow`) to compare every window on the same bins;
    2. one ``GROUPING SETS`` query over the categorical columns: the ``top_k`` most frequent values
       become the spec categories and the same counts are the reference's profile.

    Args:
        rel: The reference relation (e.g. ``analytics.store.read_source(con, path)``).
        columns: Columns to profile; default every numeric and categorical column.
        bins: Quantile bins per numeric column (2 to 1000; 50-100 resolves skewed features), before
            the tail levels of :func:`quantile_levels`.
        top_k: Categories tracked per categorical column.
        max_unseen: Other values listed per profile (see :class:`ProfileSpec`).
        kinds: Force a kind per column, e.g. ``{"zip_code": "categorical"}`` for an integer code.
        exclude: Columns left out of the default selection (e.g. the timestamp column).
        distinct: Whether numeric profiles estimate their distinct count.
        categorical_rel: The same data as ``rel`` on another cursor of its database (see
            :func:`_numeric_beside_categorical`): the categorical columns are then counted there, in a
            background thread, while the numeric ones stream from ``rel``. Same result either way.
        stream_rels: The same data as ``rel`` on yet other cursors: the numeric columns are split
            between that many more scans, each decoding in a thread of its own (see
            :func:`_numeric_profiles`). Same result either way.

    Returns:
        The reference profile; ``profile.spec`` is the spec to profile any other data with.

    Raises:
        ProfileError: on an unknown column, an unsupported type, or bad ``bins``/``top_k``.
    """
    if not 2 <= bins <= 1000:
        raise ProfileError(f"bins must be between 2 and 1000, got {bins}")
    if top_k < 1:
        raise ProfileError(f"top_k must be at least 1, got {top_k}")
    if max_unseen < 0:
        raise ProfileError(f"max_unseen must be at least 0, got {max_unseen}")
    schema = relation_schema(rel)
    types = dict(schema)
    plan = _plan(rel, columns, kinds, exclude)
    numeric = [c for c in plan if c.kind == "numeric"]
    categorical = [c for c in plan if c.kind == "categorical"]

    numeric_rows, counts = _numeric_beside_categorical(
        lambda: _numeric_profiles(
            rel, numeric, types, distinct, None, levels=quantile_levels(bins), stream_rels=stream_rels
        )[0],
        lambda source: _categorical_counts(source, categorical, top_k + max_unseen, None),
        rel,
        categorical_rel,
        schema,
        run_categorical=bool(categorical),
    )
    ((rows, numeric_profiles),) = numeric_rows.values()
    finished: dict[str, ColumnProfile] = {p.name: p for p in numeric_profiles}

    if categorical:
        for column_spec in categorical:
            column_counts = (counts or {}).get((None, column_spec.name), _CategoricalCounts())
            finished[column_spec.name] = _reference_categorical(
                column_spec, rows, column_counts, top_k, max_unseen
            )
    spec = ProfileSpec(
        columns=tuple(finished[c.name].spec for c in plan),
        bins=bins,
        top_k=top_k,
        max_unseen=max_unseen,
        distinct=distinct,
    )
    return Profile(spec=spec, rows=rows, columns=tuple(finished[c.name] for c in plan), schema=schema)


def build_spec(
    rel: duckdb.DuckDBPyRelation,
    columns: Sequence[str] | None = None,
    *,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    max_unseen: int = DEFAULT_MAX_UNSEEN,
    kinds: Mapping[str, Kind] | None = None,
    exclude: Iterable[str] = (),
    distinct: bool = True,
) -> ProfileSpec:
    """Compute the profile spec of a reference relation.

    Numeric edges: the exact finite minimum (plus the largest double below it) and maximum, and the
    reference's quantiles at :func:`quantile_levels` in between, deduplicated. Categorical: the ``top_k`` most
    frequent values. This profiles the reference on the way (see :func:`profile_reference`, which
    returns that profile too, so call it instead when you also need the reference profile).

    Args:
        rel: The reference relation.
        columns: Columns to profile; default every numeric and categorical column.
        bins: Quantile bins per numeric column.
        top_k: Categories tracked per categorical column.
        max_unseen: Other values listed per profile.
        kinds: Force a kind per column.
        exclude: Columns left out of the default selection.
        distinct: Whether numeric profiles estimate their distinct count.

    Returns:
        The spec.

    Raises:
        ProfileError: on an unknown column, an unsupported type, or bad ``bins``/``top_k``.
    """
    return profile_reference(
        rel,
        columns,
        bins=bins,
        top_k=top_k,
        max_unseen=max_unseen,
        kinds=kinds,
        exclude=exclude,
        distinct=distinct,
    ).spec


def quantile_levels(bins: int) -> list[float]:
    """Quantile levels of the numeric edges: ``i / bins`` plus geometric tail levels.

    The tails get ``1 / (2 bins), 1 / (4 bins), ...`` down to ``1 / EDGE_SAMPLE_ROWS`` (and the mirror
    levels near 1), so the outermost bins hold a handful of reference values instead of ``1 / bins`` of them
    stretched to the extremes: the binned Kolmogorov-Smirnov bound and Wasserstein distance of
    heavy-tailed features depend on those bins. Combined with the exact minimum and maximum (which
    :func:`profile_reference` adds), a discrete feature also gets a bin per frequent value.
    """
    levels = [i / bins for i in range(1, bins)]
    tail = 1 / (2 * bins)
    while tail >= 1 / EDGE_SAMPLE_ROWS:
        levels += [tail, 1 - tail]
        tail /= 2
    return sorted(levels)


def _reference_categorical(
    spec: ColumnSpec, rows: int, counts: _CategoricalCounts, top_k: int, max_unseen: int
) -> ColumnProfile:
    """Reference profile of a categorical column whose spec categories are its ``top_k`` values."""
    categories = counts.top[:top_k]
    final = replace(spec, categories=tuple(v for v, _ in categories), complete=counts.distinct <= top_k)
    tracked = sum(n for _, n in categories)
    return ColumnProfile(
        spec=final,
        rows=rows,
        nulls=rows - counts.total,
        category_counts=tuple(n for _, n in categories),
        other_count=counts.total - tracked,
        unseen=tuple(counts.top[top_k : top_k + max_unseen]),
        distinct=counts.distinct,
        distinct_exact=True,
    )


@dataclass
class _CategoricalCounts:
    """Counts of one categorical column in one window, as the query or the Arrow table gives them."""

    nulls: int = 0
    total: int = 0
    distinct: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)
    tracked: dict[str, int] = field(default_factory=dict)


def _categorical_counts(
    rel: duckdb.DuckDBPyRelation,
    specs: Sequence[ColumnSpec],
    keep: int,
    window_sql: str | None,
) -> dict[tuple[datetime | None, str], _CategoricalCounts]:
    """Count the values of every categorical column (per window) in one query.

    Returns for each (window, column) the null count, the non-null total, the exact distinct count,
    the counts of the column's spec categories and the ``keep`` most frequent other values.

    One ``GROUP BY`` per column, ``UNION ALL``-ed: each reads only its column, and DuckDB's
    dictionary-aware aggregate counts it (about 30% less CPU than ``GROUPING SETS`` over the same
    columns, measured on 5 columns x 1M rows).
    """
    window_col = "w, " if window_sql else ""
    window_input = f", {window_sql} AS w" if window_sql else ""
    source_filter = " WHERE w IS NOT NULL" if window_sql else ""
    grouped = " UNION ALL ".join(
        f"SELECT {window_col}{i} AS gid, value, count(*) AS n FROM "
        f"(SELECT CAST({quote(s.name)} AS VARCHAR) AS value{window_input} FROM __mms_source){source_filter} "
        f"GROUP BY {window_col}value"
        for i, s in enumerate(specs)
    )
    tracked_whens = [
        f"WHEN {i} THEN list_contains([{', '.join(_literal(c) for c in s.categories)}]::VARCHAR[], value)"
        for i, s in enumerate(specs)
        if s.categories
    ]
    tracked_case = f"CASE gid {' '.join(tracked_whens)} ELSE false END" if tracked_whens else "false"
    partition = ", ".join([*(["w"] if window_sql else []), "gid"])
    window_select = "w, " if window_sql else ""
    sql = f"""
        WITH folded AS ({grouped}), ranked AS (
            SELECT *, {tracked_case} AS tracked,
                   count(value) OVER (PARTITION BY {partition}) AS distinct_values,
                   sum(CASE WHEN value IS NULL THEN 0 ELSE n END) OVER (PARTITION BY {partition}) AS total
            FROM folded
        ), kept AS (
            SELECT *, row_number() OVER (
                PARTITION BY {partition}, tracked OR value IS NULL ORDER BY n DESC, value
            ) AS rank
            FROM ranked
        )
        SELECT {window_select}gid, value, n, tracked, distinct_values, total, rank
        FROM kept WHERE value IS NULL OR tracked OR rank <= {max(int(keep), 1)}
    """
    by_gid = dict(enumerate(specs))
    result: dict[tuple[datetime | None, str], _CategoricalCounts] = {}
    for row in _query(rel, sql):
        window, rest = (row[0], row[1:]) if window_sql else (None, row)
        gid, value, n, tracked, distinct_values, total, rank = rest
        counts = result.setdefault((window, by_gid[gid].name), _CategoricalCounts())
        counts.distinct, counts.total = int(distinct_values), int(total)
        if value is None:
            counts.nulls = int(n)
        elif tracked:
            counts.tracked[value] = int(n)
        elif rank <= keep:  # with keep 0, the first row still brings the column's totals
            counts.top.append((value, int(n)))
    for counts in result.values():
        counts.top.sort(key=lambda item: (-item[1], item[0]))
    return result


def _text_specs(source: _TableSource, specs: Sequence[ColumnSpec]) -> list[ColumnSpec]:
    """The categorical columns that :func:`_table_categorical_counts` counts: text in the table.

    Any other type is left to the query: its text form (``CAST AS VARCHAR``) is DuckDB's to give.
    """
    types = dict(zip(source.table.schema.names, source.table.schema.types, strict=True))
    return [
        spec
        for spec in specs
        if spec.name in types
        and is_text_type(types[spec.name])  # a dictionary is counted by its codes
        and all(isinstance(category, str) for category in spec.categories)
    ]


def _table_categorical_counts(
    source: _TableSource, specs: Sequence[ColumnSpec], keep: int
) -> dict[tuple[datetime | None, str], _CategoricalCounts]:
    """:func:`_categorical_counts` of text columns (:func:`_text_specs`) of the table behind a relation.

    The same counts (integers, so exactly): rows without a window left out, each value counted per
    window, its nulls, its non-null total and distinct values, the spec's categories and the ``keep``
    most frequent other values (by count, then value). Each column is dictionary-encoded once and its
    (window, value) pairs counted by one ``bincount``, in NumPy: about a third of the query's CPU on
    5 columns x 200k rows.
    """
    import pyarrow as pa  # the callers that pass a table have pyarrow imported already
    import pyarrow.compute as pc

    table, keys = source.keyed()
    starts: list[datetime | None] = [None]
    window_of = None
    if keys is not None:
        window_keys, window_of = distinct_keys(keys, source.window_micros or 1)
        starts = [_EPOCH + timedelta(microseconds=int(key)) for key in window_keys.tolist()]
    if table.num_rows == 0:
        return {}
    n_windows = len(starts)
    result: dict[tuple[datetime | None, str], _CategoricalCounts] = {}
    for spec in specs:
        encoded = table.column(spec.name).combine_chunks().dictionary_encode()
        dictionary = encoded.dictionary
        n_values = len(dictionary)
        # Code n_values stands for NULL; a pair is (window, code) in one integer.
        codes = _as_numpy(pc.fill_null(encoded.indices.cast(pa.int64()), n_values), np.int64)[0]
        pairs = codes if window_of is None else window_of * (n_values + 1) + codes
        size = n_windows * (n_values + 1)
        if size <= 4 * len(pairs) + 65_536:
            dense = np.bincount(pairs, minlength=size)
            present = np.flatnonzero(dense)
            present_counts = dense[present]
        else:  # many values in many windows: count the pairs seen, not every possible one
            present, present_counts = np.unique(pairs, return_counts=True)
        window_index, present_codes = np.divmod(present, n_values + 1)
        bounds = np.searchsorted(window_index, np.arange(n_windows + 1))
        found = (
            pc.index_in(pa.array(list(spec.categories), dictionary.type), value_set=dictionary).to_pylist()
            if spec.categories and n_values
            else []
        )
        tracked_codes = {code: c for code, c in zip(found, spec.categories, strict=False) if code is not None}
        tracked_array = np.array(sorted(tracked_codes), dtype=np.int64)
        for index, start in enumerate(starts):
            window_codes = present_codes[bounds[index] : bounds[index + 1]]
            window_counts = present_counts[bounds[index] : bounds[index + 1]]
            if not len(window_codes):
                continue
            valued = window_codes < n_values
            window_codes, nulls, window_counts = (
                window_codes[valued],
                int(window_counts[~valued].sum()),
                window_counts[valued],
            )
            is_tracked = np.isin(window_codes, tracked_array)
            counted = _CategoricalCounts(
                nulls=nulls, total=int(window_counts.sum()), distinct=len(window_codes)
            )
            counted.tracked = {
                tracked_codes[int(code)]: int(n)
                for code, n in zip(window_codes[is_tracked], window_counts[is_tracked], strict=True)
            }
            counted.top = _most_frequent(
                dictionary, window_codes[~is_tracked], window_counts[~is_tracked], keep
            )
            result[(start, spec.name)] = counted
    return result


def _most_frequent(
    dictionary: Any, codes: np.ndarray, counts: np.ndarray, keep: int
) -> list[tuple[str, int]]:
    """The ``keep`` values of ``codes`` (into ``dictionary``) with the largest counts, ties by value."""
    import pyarrow as pa

    if keep <= 0 or not len(codes):
        return []
    if len(codes) > keep:
        # The keep-th largest count: every value above it is kept, those on it by value.
        floor = np.partition(counts, len(counts) - keep)[len(counts) - keep]
        above = counts > floor
        tied = sorted(dictionary.take(pa.array(codes[counts == floor])).to_pylist())
        chosen = list(
            zip(dictionary.take(pa.array(codes[above])).to_pylist(), counts[above].tolist(), strict=True)
        )
        chosen += [(value, int(floor)) for value in tied[: keep - len(chosen)]]
    else:
        chosen = list(zip(dictionary.take(pa.array(codes)).to_pylist(), counts.tolist(), strict=True))
    return sorted(chosen, key=lambda item: (-item[1], item[0]))


def _rolled_counts(
    counted: Mapping[tuple[datetime | None, str], _CategoricalCounts],
    rollup: Callable[[datetime], datetime | None],
    keep: int,
) -> dict[tuple[datetime | None, str], _CategoricalCounts] | None:
    """The categorical counts of rolled-up windows added up from their windows', when that is exact.

    It is when every window that rolls up lists all its values (no value cut from ``top``): the
    counts then add per value, and the distinct values and the ``keep`` most frequent others of the
    rolled-up window follow as its own query would give them. ``None`` otherwise (the caller counts
    the rolled-up rows instead).
    """
    merged: dict[tuple[datetime, str], tuple[_CategoricalCounts, dict[str, int]]] = {}
    # Integer counts, and the ``top`` ranking is by count then value: the order of the windows
    # does not matter.
    for (start, name), counts in counted.items():
        target = rollup(start) if start is not None else None
        if target is None:
            continue
        if counts.distinct != len(counts.tracked) + len(counts.top):
            return None  # some values were cut: only a count of the rows knows them
        into, others = merged.setdefault((target, name), (_CategoricalCounts(), {}))
        into.nulls += counts.nulls
        into.total += counts.total
        for value, n in counts.tracked.items():
            into.tracked[value] = into.tracked.get(value, 0) + n
        for value, n in counts.top:
            others[value] = others.get(value, 0) + n
    result: dict[tuple[datetime | None, str], _CategoricalCounts] = {}
    for key, (into, others) in merged.items():
        into.distinct = len(into.tracked) + len(others)
        into.top = sorted(others.items(), key=lambda item: (-item[1], item[0]))[:keep]
        result[key] = into
    return result


def _window_sql(rel: duckdb.DuckDBPyRelation, window: str, timestamp_column: str) -> str:
    if window not in WINDOWS:
        raise ProfileError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    schema = dict(relation_schema(rel))
    if timestamp_column not in schema:
        raise ProfileError(f"timestamp column {timestamp_column!r} is not in the relation")
    dtype = schema[timestamp_column].lower()
    column = quote(timestamp_column)
    if not is_temporal(dtype):
        raise ProfileError(f"timestamp column {timestamp_column!r} has type {dtype}, not a date or timestamp")
    # Windows are UTC calendar periods whatever the session time zone.
    return window_start_sql(column, window, with_time_zone=dtype == "timestamp with time zone")


def profile(
    rel: duckdb.DuckDBPyRelation,
    spec: ProfileSpec,
    window: str | None = None,
    timestamp_column: str | None = None,
    *,
    categorical_rel: duckdb.DuckDBPyRelation | None = None,
    stream_rels: Sequence[duckdb.DuckDBPyRelation] = (),
    table: Any = None,
) -> Profile | dict[datetime, Profile]:
    """Profile a relation against a spec, whole or per time window.

    One aggregate scan of the numeric columns and one GROUPING SETS scan of the categorical ones,
    grouped by ``date_trunc(window, timestamp_column)`` when a window is given (rows with a NULL
    timestamp belong to no window and are left out).

    Spec columns absent from the relation are listed in ``Profile.missing``; those whose type no
    longer fits their kind (say a numeric column now stored as text) in ``Profile.retyped``. Neither
    is profiled, so drift reports them as errors instead of failing the whole profile.

    Args:
        rel: Relation to profile.
        spec: Spec from :func:`build_spec` (or ``reference_profile.spec``).
        window: ``None`` for one profile, or ``minute``/``hour``/``day``/``week``/``month``.
        timestamp_column: Column whose truncation defines the windows (required with ``window``).
        categorical_rel: The same data as ``rel`` on another cursor of its database: the categorical
            columns are then counted there, in a background thread, while the numeric ones stream
            from ``rel`` (see :func:`_numeric_beside_categorical`). Same result either way.
        stream_rels: The same data as ``rel`` on yet other cursors: the numeric columns are split
            between that many more scans, each decoding in a thread of its own (see
            :func:`_numeric_profiles`). Same result either way.
        table: The ``pyarrow.Table`` behind ``rel``, when the caller has it: its ``float64``
            columns are then read from it directly, without a DuckDB scan (for windows of a minute,
            an hour or a day over a microsecond timestamp, or no window), in the batches DuckDB
            would hand over. Same result either way.

    Returns:
        A :class:`Profile`, or with ``window`` a dict window start -> :class:`Profile` in time order
        (UTC for ``TIMESTAMP WITH TIME ZONE`` columns).

    Raises:
        ProfileError: on a bad window or timestamp column.
    """
    window_sql = None
    if window is not None:
        if timestamp_column is None:
            raise ProfileError("a windowed profile needs timestamp_column")
        window_sql = _window_sql(rel, window, timestamp_column)
    profiles, _rolled = _profile(
        rel,
        spec,
        window_sql,
        categorical_rel,
        stream_rels,
        None,
        table=table,
        window=window,
        timestamp_column=timestamp_column,
    )
    if window is None:
        return profiles[None]
    return dict(sorted(profiles.items()))


def profile_rollup(
    rel: duckdb.DuckDBPyRelation,
    spec: ProfileSpec,
    window: str,
    timestamp_column: str,
    rollup: Callable[[datetime], datetime | None],
    rolled_rel: duckdb.DuckDBPyRelation,
    *,
    categorical_rels: tuple[duckdb.DuckDBPyRelation, duckdb.DuckDBPyRelation] | None = None,
    table: Any = None,
) -> tuple[dict[datetime, Profile], dict[datetime, Profile]]:
    """Profile a relation per window, and groups of its windows together, in one numeric scan.

    For rows that come in several groupings at once, such as traffic stacked slice by slice with each
    slice's timestamps moved to windows of their own: ``rollup`` maps each window to the one it also
    counts in (``None``: in none), and the numeric columns of a rolled-up window are the merge of its
    windows' (counts, histograms and the distinct sketch exactly, mean and ``m2`` by Chan's formula,
    to about 1e-15 of one scan). Categorical counts add up per value while every window lists all its
    values; when a window's unseen values were cut (more than ``spec.max_unseen``), the distinct
    values and the most frequent ones of the rolled-up windows are not known from their windows, and
    they are counted on ``rolled_rel``: the rows of the rolled-up windows, each at its rolled-up
    window (the caller's promise).

    Args:
        rel: Relation to profile.
        spec: The spec (from :func:`build_spec`, or a reference profile's).
        window: ``minute``/``hour``/``day``/``week``/``month``.
        timestamp_column: Column whose truncation gives the windows (in both relations).
        rollup: Window start (as :func:`profile` returns it) -> the rolled-up window's, or ``None``.
        rolled_rel: The rows of the rolled-up windows, with the columns and types of ``rel``.
        categorical_rels: ``rel`` and ``rolled_rel`` on another cursor of their database: the
            categorical columns of both are then counted there, in a background thread, while the
            numeric ones stream from ``rel`` (as ``categorical_rel`` of :func:`profile`).
        table: The ``pyarrow.Table`` behind ``rel`` (as ``table`` of :func:`profile`).

    Returns:
        The profiles per window of ``rel`` and per rolled-up window, each in time order.

    Raises:
        ProfileError: on a bad window or timestamp column, or if ``rolled_rel`` has other columns.
    """
    schema = relation_schema(rel)
    _require_same_data("rolled_rel", [rolled_rel], schema)
    _require_same_data("categorical_rels", categorical_rels or (), schema)
    window_sql = _window_sql(rel, window, timestamp_column)
    categorical_rel, rolled_counted = categorical_rels or (None, rolled_rel)
    profiles, rolled = _profile(
        rel,
        spec,
        window_sql,
        categorical_rel,
        (),
        (rollup, rolled_counted),
        table=table,
        window=window,
        timestamp_column=timestamp_column,
    )
    return (
        {start: p for start, p in sorted(profiles.items()) if start is not None},
        dict(sorted(rolled.items())),
    )


def _profile(
    rel: duckdb.DuckDBPyRelation,
    spec: ProfileSpec,
    window_sql: str | None,
    categorical_rel: duckdb.DuckDBPyRelation | None,
    stream_rels: Sequence[duckdb.DuckDBPyRelation],
    rollup: tuple[Callable[[datetime], datetime | None], duckdb.DuckDBPyRelation] | None,
    *,
    table: Any = None,
    window: str | None = None,
    timestamp_column: str | None = None,
) -> tuple[dict[datetime | None, Profile], dict[datetime, Profile]]:
    """:func:`profile` and :func:`profile_rollup`: profiles per window and per rolled-up window.

    ``rollup``: the window mapping and the relation whose categorical columns the rolled-up windows
    get, counted in the same thread as ``rel``'s (``categorical_rel``'s when given). ``table``: the
    Arrow table behind ``rel``, read with ``window`` and ``timestamp_column`` (see
    :class:`_TableSource`).
    """
    schema = relation_schema(rel)
    types = dict(schema)
    missing = tuple(c.name for c in spec.columns if c.name not in types)
    retyped = tuple(
        (c.name, types[c.name]) for c in spec.columns if c.name in types and not _fits(c.kind, types[c.name])
    )
    skipped = set(missing) | {name for name, _ in retyped}
    numeric = [c for c in spec.columns if c.kind == "numeric" and c.name not in skipped]
    categorical = [c for c in spec.columns if c.kind == "categorical" and c.name not in skipped]

    # Text columns are counted from the table when there is one (_table_categorical_counts), the
    # others by the query; a rolled-up recount reads its own relation.
    categorical_table = _TableSource.of(table, (), window, timestamp_column) if categorical else None
    from_table = _text_specs(categorical_table, categorical) if categorical_table is not None else []
    by_query = [c for c in categorical if c not in from_table]

    def count(source: duckdb.DuckDBPyRelation) -> tuple[_Counted, _Counted]:
        counted: _Counted = {}
        if from_table:
            assert categorical_table is not None
            counted.update(_table_categorical_counts(categorical_table, from_table, spec.max_unseen))
        if by_query:
            counted.update(_categorical_counts(source, by_query, spec.max_unseen, window_sql))
        if rollup is None:
            return counted, {}
        rolled = _rolled_counts(counted, rollup[0], spec.max_unseen)
        if rolled is None:
            rolled = _categorical_counts(rollup[1], categorical, spec.max_unseen, window_sql)
        return counted, rolled

    (numeric_rows, numeric_rolled), counted = _numeric_beside_categorical(
        lambda: _numeric_profiles(
            rel,
            numeric,
            types,
            spec.distinct,
            window_sql,
            stream_rels=stream_rels,
            rollup=rollup[0] if rollup is not None else None,
            table=_TableSource.of(table, numeric, window, timestamp_column),
        ),
        count,
        rel,
        categorical_rel,
        schema,
        run_categorical=bool(categorical),
    )
    categorical_counts, rolled_counts = counted or ({}, {})

    def assemble(
        found: Mapping[Any, tuple[int, list[ColumnProfile]]],
        counts: Mapping[tuple[datetime | None, str], _CategoricalCounts],
    ) -> dict[Any, Profile]:
        profiles: dict[Any, Profile] = {}
        for window_start, (rows, numeric_profiles) in found.items():
            columns: dict[str, ColumnProfile] = {c.name: c for c in numeric_profiles}
            for column_spec in categorical:
                column_counts = counts.get((window_start, column_spec.name), _CategoricalCounts())
                columns[column_spec.name] = _categorical_profile(column_spec, rows, column_counts)
            profiles[window_start] = Profile(
                spec=spec,
                rows=rows,
                columns=tuple(columns[c.name] for c in spec.columns if c.name in columns),
                window=window_start,
                schema=schema,
                missing=missing,
                retyped=retyped,
            )
        return profiles

    return assemble(numeric_rows, categorical_counts), assemble(numeric_rolled, rolled_counts)


_Numeric = TypeVar("_Numeric")
_Categorical = TypeVar("_Categorical")
_Counted = dict[tuple[datetime | None, str], "_CategoricalCounts"]


def _numeric_beside_categorical(
    numeric: Callable[[], _Numeric],
    categorical: Callable[[duckdb.DuckDBPyRelation], _Categorical],
    rel: duckdb.DuckDBPyRelation,
    categorical_rel: duckdb.DuckDBPyRelation | None,
    schema: tuple[tuple[str, str], ...],
    *,
    run_categorical: bool,
) -> tuple[_Numeric, _Categorical | None]:
    """The numeric stream (``numeric()``) and the categorical counts (``categorical(relation)``).

    ``None`` for the counts without ``run_categorical``.

    Without ``categorical_rel`` one after the other on ``rel``. With it (the same data on another
    cursor: a DuckDB connection runs one query at a time) the categorical query runs there in a
    background thread while this one streams the numeric columns. The stream's pace is DuckDB's
    decoding in this thread, which leaves part of the second core idle, so the categorical query
    (single-threaded on a one-thread connection) mostly fills it instead of running after the stream:
    about 0.05 s less wall time per million rows and 5 categorical columns, for the same CPU. The
    numeric stream's errors are raised first, as without it.

    Raises:
        ProfileError: if ``categorical_rel`` does not have the columns and types of ``rel``.
    """
    if not run_categorical:
        return numeric(), None
    if categorical_rel is None:
        numeric_result = numeric()
        return numeric_result, categorical(rel)
    _require_same_data("categorical_rel", [categorical_rel], schema)
    with ThreadPoolExecutor(max_workers=1) as side:
        counts = side.submit(categorical, categorical_rel)
        numeric_result = numeric()
        return numeric_result, counts.result()


def _require_same_data(
    name: str, others: Iterable[duckdb.DuckDBPyRelation], schema: tuple[tuple[str, str], ...]
) -> None:
    """Check that relations meant to read the profiled data on other cursors have its schema.

    Raises:
        ProfileError: naming the argument (``name``) whose relation differs.
    """
    if any(relation_schema(other) != schema for other in others):
        raise ProfileError(f"{name} must have the columns and types of the profiled relation")


def _categorical_profile(spec: ColumnSpec, rows: int, counts: _CategoricalCounts) -> ColumnProfile:
    category_counts = tuple(counts.tracked.get(value, 0) for value in spec.categories)
    return ColumnProfile(
        spec=spec,
        rows=rows,
        nulls=rows - counts.total,
        other_count=counts.total - sum(category_counts),
        unseen=tuple(counts.top),
        category_counts=category_counts,
        distinct=counts.distinct,
        distinct_exact=True,
    )


def _numeric_profiles(
    rel: duckdb.DuckDBPyRelation,
    specs: Sequence[ColumnSpec],
    types: Mapping[str, str],
    distinct: bool,
    window_sql: str | None,
    levels: Sequence[float] | None = None,
    stream_rels: Sequence[duckdb.DuckDBPyRelation] = (),
    rollup: Callable[[datetime], datetime | None] | None = None,
    table: _TableSource | None = None,
) -> tuple[
    dict[datetime | None, tuple[int, list[ColumnProfile]]], dict[datetime, tuple[int, list[ColumnProfile]]]
]:
    """Profile the numeric columns (per window); returns rows and column profiles per window.

    The second result holds the rolled-up windows of ``rollup`` (see :func:`profile_rollup`), empty
    without it. With ``table`` the columns are read from the Arrow table behind ``rel``
    (:class:`_TableSource`) instead of a DuckDB scan: the same batches, the same profiles.

    With ``levels`` (the reference, not windowed) the specs' edges are ignored: each column's values
    are counted in a :class:`_FineHistogram` and the profile's spec gets the edges placed at those
    quantile levels, with the histogram on them (see :func:`profile_reference`).

    One streaming scan: DuckDB reads the columns (cast to ``DOUBLE``) and the window of each row and
    hands them over as Arrow batches of :data:`STREAM_BATCH_ROWS` rows; NumPy counts nulls, NaN and
    infinities, bins the finite values (:class:`_Binner`, exact) and accumulates min/max and
    mean/``m2`` (Chan's formula across batches, so memory stays one batch whatever the data size)
    and, with ``distinct``, a HyperLogLog sketch of the non-NaN values (:class:`_DistinctSketch`).

    With ``stream_rels`` (the same data on other cursors) the columns are split between that many
    more scans, each in a thread of its own that decodes its columns and adds them: decoding sets the
    pace of a profile, and one scan decodes in one thread. With ``table`` they are split between
    :data:`PROFILE_THREADS` scans of the table. Each column's batches are the same either way, so is
    the result.
    """
    if not specs:
        counted = _row_counts(rel, window_sql)
        rolled_rows: dict[datetime, int] = defaultdict(int)
        for start, (n, _none) in counted.items():
            target = rollup(start) if rollup is not None and start is not None else None
            if target is not None:
                rolled_rows[target] += n
        return counted, {target: (n, []) for target, n in rolled_rows.items()}
    if levels is not None and window_sql is not None:
        raise ProfileError("edges are placed on a whole relation, not per window")
    _require_same_data("stream_rels", stream_rels, relation_schema(rel))
    binners = [None if levels is not None else _Binner(spec.edges) for spec in specs]
    # An Arrow table has no decoding to share out, but adding its columns does: its columns are split
    # between PROFILE_THREADS scans of it. The monitoring job profiles in a side thread while its main
    # thread computes the partials, and when that one is done the second share keeps both cores busy
    # (bench day, 20 columns x 200k stacked rows: 0.24 s against 0.30 s for the profiles, about 0.08 s
    # of the run's wall time).
    sources = (
        [rel] * min(PROFILE_THREADS, len(specs)) if table is not None else [rel, *stream_rels][: len(specs)]
    )
    # Contiguous, near-equal shares of the columns, one per scan.
    bounds = [round(i * len(specs) / len(sources)) for i in range(len(sources) + 1)]
    shares = [range(bounds[i], bounds[i + 1]) for i in range(len(sources))]

    def scan(source: duckdb.DuckDBPyRelation, share: range) -> Any:
        # A lone scan has a helper thread add its batches; beside other scans the cores are taken.
        return _stream_numeric(
            source,
            [specs[i] for i in share],
            [binners[i] for i in share],
            distinct,
            levels,
            window_sql,
            # A helper adds while DuckDB decodes the next batch; a table has no decoding to overlap,
            # and two threads adding its batches fight over the GIL (measured slower: 0.17 s
            # against 0.12 s for 20 columns x 200k stacked rows).
            helpers=len(sources) == 1 and table is None,
            table=table,
        )

    with ThreadPoolExecutor(max_workers=max(len(sources) - 1, 1)) as pool:
        others = [
            pool.submit(scan, source, share) for source, share in zip(sources[1:], shares[1:], strict=True)
        ]
        streamed = [scan(rel, shares[0]), *(future.result() for future in others)]
    rows = streamed[0][1]
    result: dict[datetime | None, tuple[int, list[ColumnProfile]]] = {}
    rolled: dict[datetime, tuple[int, list[_NumericAccumulator]]] = {}
    for key in sorted(streamed[0][0], key=lambda k: -1 if k is None else k):
        start = None if key is None else _EPOCH + timedelta(microseconds=int(key))
        accumulators = [accumulator for windows, _rows in streamed for accumulator in windows[key]]
        target = rollup(start) if rollup is not None and start is not None else None
        if target is not None:
            # Merged before the window's profile is drawn: the sketch registers and the bins add up
            # exactly, the moments by Chan's formula; windows in time order, so the result is fixed.
            n, merged = rolled.get(target) or (
                0,
                [_NumericAccumulator(b, distinct, None, KERNELS) for b in binners],
            )
            for into, accumulator in zip(merged, accumulators, strict=True):
                into.merge(accumulator)
            rolled[target] = (n + rows[key], merged)
        profiles = [
            accumulator.profile(spec, rows[key])
            for accumulator, spec in zip(accumulators, specs, strict=True)
        ]
        result[start] = (rows[key], profiles)
    return result, {
        target: (n, [accumulator.profile(spec, n) for accumulator, spec in zip(merged, specs, strict=True)])
        for target, (n, merged) in rolled.items()
    }


def _stream_numeric(
    rel: duckdb.DuckDBPyRelation,
    specs: Sequence[ColumnSpec],
    binners: Sequence[_Binner | None],
    distinct: bool,
    levels: Sequence[float] | None,
    window_sql: str | None,
    *,
    helpers: bool,
    table: _TableSource | None = None,
) -> tuple[dict[int | None, list[_NumericAccumulator]], dict[int | None, int]]:
    """One scan of some numeric columns: their accumulators and the rows, per window key.

    With ``helpers`` a helper thread adds each batch while this one decodes the next; without, this
    thread adds its batches itself (a scan beside other scans: the cores are taken). With ``table``
    the batches are cut from the Arrow table behind ``rel`` instead of decoded by DuckDB: the same
    batches (see :class:`_TableSource`), so the same accumulators.
    """
    windowed = window_sql is not None

    def accumulators() -> list[_NumericAccumulator]:
        return [_NumericAccumulator(binner, distinct, levels, KERNELS) for binner in binners]

    windows: dict[int | None, list[_NumericAccumulator]] = {}
    rows: dict[int | None, int] = defaultdict(int)
    if not windowed:
        windows[None] = accumulators()
        rows[None] = 0
    batches = table.batches(specs) if table is not None else _duckdb_batches(rel, specs, window_sql)
    # NumPy releases the GIL in its loops: the helper threads bin one batch while DuckDB decodes the
    # next one in this thread, which then takes the batch's remaining columns (see _add_queued); the
    # next batch is handed over only once every column of this one is done (one batch in flight), so
    # each accumulator still adds its batches in order.
    pending: tuple[list[Future[None]], deque[_Work]] | None = None
    with (
        ThreadPoolExecutor(max_workers=max(PROFILE_THREADS - 1, 1) if helpers else 1) as pool,
        np.errstate(over="ignore", invalid="ignore"),
    ):
        for keys, batch_rows, columns_of_batch in batches:
            work: deque[_Work] = deque()
            if keys is None:
                rows[None] += batch_rows
                for accumulator, (values, _mask, nulls) in zip(windows[None], columns_of_batch, strict=True):
                    work.append((accumulator, values, nulls))
            else:
                for key, take in _split_by_window(keys):
                    group = windows.get(key)
                    if group is None:
                        group = windows[key] = accumulators()
                    if take is None:
                        rows[key] += batch_rows
                    else:
                        rows[key] += take.stop - take.start if isinstance(take, slice) else len(take)
                    for accumulator, (values, null_mask, nulls) in zip(group, columns_of_batch, strict=True):
                        if take is not None:
                            nulls = int(np.count_nonzero(null_mask[take])) if null_mask is not None else 0
                            values = values[take]
                        work.append((accumulator, values, nulls))
            if not helpers:
                _add_queued(work)
                continue
            _finish(pending)
            pending = ([pool.submit(_add_queued, work) for _ in range(PROFILE_THREADS - 1)], work)
        _finish(pending)
    return windows, rows


#: A batch of a numeric stream: the window key of each row (``None``: not windowed), its rows, and
#: each column's ``(values with NaN at nulls, null mask or None, null count)``.
_Batch = tuple["np.ndarray | None", int, list[tuple[np.ndarray, "np.ndarray | None", int]]]


def _duckdb_batches(
    rel: duckdb.DuckDBPyRelation, specs: Sequence[ColumnSpec], window_sql: str | None
) -> Iterator[_Batch]:
    """The numeric columns (cast to ``DOUBLE``) and window keys as DuckDB decodes them, batch by batch."""
    columns = [f"CAST({quote(spec.name)} AS DOUBLE) AS x{i}" for i, spec in enumerate(specs)]
    if window_sql:
        sql = (
            f"SELECT epoch_us(w) AS w, {', '.join(f'x{i}' for i in range(len(specs)))} FROM "
            f"(SELECT {window_sql} AS w, {', '.join(columns)} FROM __mms_source) WHERE w IS NOT NULL"
        )
    else:
        sql = f"SELECT {', '.join(columns)} FROM __mms_source"
    offset = 1 if window_sql else 0
    for batch in rel.query("__mms_source", sql).to_arrow_reader(STREAM_BATCH_ROWS):
        if batch.num_rows == 0:
            continue
        keys = _as_numpy(batch.column(0), np.int64)[0] if window_sql else None
        yield keys, batch.num_rows, [_as_numpy(batch.column(offset + i)) for i in range(len(specs))]


@dataclass(frozen=True)
class _TableSource:
    """The Arrow table behind a profiled relation, read without a DuckDB scan.

    Only where that gives DuckDB's batches exactly: ``float64`` columns (DuckDB's ``CAST AS
    DOUBLE`` leaves them as they are) and windows of a fixed length over a microsecond timestamp
    (the keys ``date_trunc`` or :func:`analytics._duckdb.window_start_sql` give, floored). Rows
    without a timestamp are left out first, as ``WHERE w IS NOT NULL`` does, then the rows are cut
    into batches of :data:`STREAM_BATCH_ROWS` in table order, as DuckDB's reader hands them over
    (``tests/unit/analytics/test_profile.py`` compares the profiles).
    """

    table: Any  # pa.Table: pyarrow is imported by the callers that have one
    window_micros: int | None
    timestamp_column: str | None

    @staticmethod
    def of(
        table: Any, specs: Sequence[ColumnSpec], window: str | None, timestamp_column: str | None
    ) -> _TableSource | None:
        """The source, or ``None`` when the table cannot stand in for the scan."""
        if table is None:
            return None
        schema = table.schema
        names = set(schema.names)
        for spec in specs:
            if spec.name not in names or str(schema.field(spec.name).type) != "double":
                return None
        if window is None:
            return _TableSource(table, None, None)
        size = FIXED_WINDOW_MICROS.get(window)
        if size is None or timestamp_column not in names:
            return None
        kind = schema.field(timestamp_column).type
        if not str(kind).startswith("timestamp[us"):
            return None
        return _TableSource(table, size, timestamp_column)

    def keyed(self) -> tuple[Any, np.ndarray | None]:
        """The rows with a window (``WHERE w IS NOT NULL``) and each one's window key (``None``: not
        windowed): its window start in microseconds since 1970."""
        table = self.table
        if self.timestamp_column is None:
            return table, None
        column = table.column(self.timestamp_column)
        if column.null_count:
            table = table.filter(column.is_valid())
            column = table.column(self.timestamp_column)
        micros = (
            np.concatenate([_as_numpy(chunk.cast("int64"), np.int64)[0] for chunk in column.chunks])
            if column.num_chunks
            else np.zeros(0, dtype=np.int64)
        )
        size = self.window_micros
        return table, micros - micros % size  # NumPy's % floors: windows before 1970 too

    @functools.cached_property
    def _in_window_order(self) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
        """:meth:`keyed`, with the keys and the row order that put each batch's rows in window order
        (``None``: they are in order already). Once per source: the scans sharing its columns
        (:func:`_numeric_profiles`) sort it once (``cached_property`` locks on Python 3.11)."""
        table, keys = self.keyed()
        n = table.num_rows
        if keys is None or n <= 1 or bool(np.all(keys[1:] >= keys[:-1])):
            return table, keys, None
        # Windows interleave (the monitoring job's stacked slices): each batch's rows are put in
        # window order once, for all the columns, so each window of a batch is a run of rows instead
        # of a gather per column and batch; within a window the rows keep their order, so every
        # accumulator adds the values a scan's batch would give it, in the same order.
        batch = np.arange(n) // STREAM_BATCH_ROWS
        windows, window_of = distinct_keys(keys, self.window_micros or 1)
        pairs = batch * len(windows) + window_of  # ascending as (batch, key)
        if int(pairs.max()) < _RADIX_PAIRS:
            # A few (batch, window) pairs: NumPy's stable sort of 16-bit integers is a radix sort,
            # the order lexsort gives in a fifth of its time (about 1 ms for 200k rows).
            order = np.argsort(pairs.astype(np.uint16), kind="stable")
        else:
            order = np.lexsort((keys, batch))
        return table, keys[order], order

    def batches(self, specs: Sequence[ColumnSpec]) -> Iterator[_Batch]:
        table, keys, order = self._in_window_order
        n = table.num_rows
        if order is not None:
            gathered = [_gathered(table.column(spec.name), order) for spec in specs]
            for start in range(0, n, STREAM_BATCH_ROWS):
                end = min(start + STREAM_BATCH_ROWS, n)
                arrays = []
                for values, mask in gathered:
                    batch_mask = mask[start:end] if mask is not None else None
                    nulls = int(np.count_nonzero(batch_mask)) if batch_mask is not None else 0
                    arrays.append((values[start:end], batch_mask if nulls else None, nulls))
                yield keys[start:end], end - start, arrays
            return
        columns = [table.column(spec.name) for spec in specs]
        for start in range(0, n, STREAM_BATCH_ROWS):
            length = min(STREAM_BATCH_ROWS, n - start)
            arrays = []
            for column in columns:
                piece = column.slice(start, length)
                arrays.append(_as_numpy(piece.chunk(0) if piece.num_chunks == 1 else piece.combine_chunks()))
            yield (None if keys is None else keys[start : start + length]), length, arrays


def _gathered(column: Any, order: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A float64 column's values (NaN at nulls) and null mask (``None``: no null), rows in ``order``."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    values, mask, _nulls = _as_numpy(array)
    return values[order], (mask[order] if mask is not None else None)


#: One column of one batch (of one window) to add: its accumulator, values and null count.
_Work = tuple["_NumericAccumulator", np.ndarray, int]


def _add_queued(work: deque[_Work]) -> None:
    """Add queued columns until the queue is empty (several threads may drain one queue).

    The decoding thread drains the batch's queue too once it has decoded the next batch: with one
    helper on two cores no thread waits while the other has columns left, and there are never more
    busy threads than cores (three threads on two cores slowed the decoding, which sets the pace).
    """
    # np.errstate is per thread: set once per batch, not per column.
    with np.errstate(over="ignore", invalid="ignore"):
        while True:
            try:
                accumulator, values, nulls = work.popleft()  # atomic: each column is taken once
            except IndexError:
                return
            accumulator._add(values, nulls)


def _finish(pending: tuple[list[Future[None]], deque[_Work]] | None) -> None:
    """Add the columns of a handed-over batch that no helper has taken yet, then wait for the helpers."""
    if pending is None:
        return
    helpers, work = pending
    _add_queued(work)
    for helper in helpers:
        helper.result()


_EPOCH = datetime(1970, 1, 1)

#: The compiled kernels of the numeric accumulators, or ``None`` (not built, or ``MMS_NATIVE_KERNELS=0``):
#: the NumPy route then computes the same numbers, bit for bit.
KERNELS = load_kernels()

#: Threads binning columns in :func:`_numeric_profiles`, the decoding one included (the studio's
#: machines have two cores).
PROFILE_THREADS = 2


def _as_numpy(array: Any, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(values with NaN at nulls, null mask or None, null count)`` of a fixed-width Arrow array.

    Read straight from the Arrow buffers (a read-only view when there are no nulls): pyarrow's own
    ``to_numpy`` imports pandas, half a second of CPU per process, for nothing here.
    """
    n = len(array)
    validity, data = array.buffers()[:2]
    values = np.frombuffer(data, dtype=dtype, count=n, offset=array.offset * np.dtype(dtype).itemsize)
    nulls = array.null_count
    if not nulls:
        return values, None, 0
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    mask = bits[array.offset : array.offset + n] == 0
    values = values.copy()
    values[mask] = np.nan
    return values, mask, nulls


#: Rows per Arrow batch streamed from DuckDB to NumPy: 256 kB per column, so the binning's temporaries
#: stay in the CPU caches (measured on 20 columns x 1M rows: 32k rows 0.57 s CPU, 128k 0.76 s, 256k 0.90 s;
#: with the bit-pattern binning 64k and 128k measured no better).
STREAM_BATCH_ROWS = 32_768
# (batch, window) pairs below this are put in order by a 16-bit radix sort (_TableSource).
_RADIX_PAIRS = 2**16

#: Register bits of the HyperLogLog distinct estimate of numeric columns (4096 registers).
HLL_PRECISION = 12

#: Beyond this magnitude squares overflow: the moments are computed on values scaled by a power of two.
_SQUARE_SAFE = 1e150


def _split_by_window(keys: np.ndarray) -> Iterable[tuple[int, np.ndarray | slice | None]]:
    """Rows of each window in a batch, in batch order: ``None`` when the whole batch is one window,
    a slice when the keys are sorted (a run of rows, taken without a copy), else their indices."""
    if keys[0] == keys[-1] and bool(np.all(keys == keys[0])):
        return [(int(keys[0]), None)]
    if bool(np.all(keys[1:] >= keys[:-1])):
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        ends = np.append(starts[1:], len(keys))
        return [(int(keys[a]), slice(int(a), int(b))) for a, b in zip(starts, ends, strict=True)]
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], len(ordered))
    return [(int(ordered[a]), order[a:b]) for a, b in zip(starts, ends, strict=True)]


def _row_counts(
    rel: duckdb.DuckDBPyRelation, window_sql: str | None
) -> dict[datetime | None, tuple[int, list[ColumnProfile]]]:
    """Rows (per window) of a relation without numeric columns to profile."""
    if window_sql:
        sql = (
            f"SELECT w, count(*) FROM (SELECT {window_sql} AS w FROM __mms_source) "
            "WHERE w IS NOT NULL GROUP BY w"
        )
        return {window: (int(n), []) for window, n in _query(rel, sql)}
    ((n,),) = _query(rel, "SELECT count(*) FROM __mms_source")
    return {None: (int(n), [])}


#: Buckets of the look-up table of :class:`_Binner` and of a :class:`_FineHistogram`.
KEY_BUCKETS = 16_384

#: Magnitudes below ``2**-ZERO_ZONE_BITS`` of a column's largest one share one bucket (see :class:`_KeyMap`).
ZERO_ZONE_BITS = 24

_SIGN = 1 << 63
_ALL_BITS = 2**64 - 1
_T_NEGATIVE_ZERO = _SIGN - 1  # order key of -0.0, the largest key of a negative value
_T_LOWEST = 0x0010_0000_0000_0000  # order key of -DBL_MAX (its bits 0xFFEF...F, inverted)


def _order_keys(finite: np.ndarray) -> np.ndarray:
    """Unsigned 64-bit keys ordered like the doubles: the sign bit flipped on positives, every bit on
    negatives (so ``a < b`` iff ``key(a) < key(b)``).

    ``-0.0`` is keyed as ``0.0`` (adding ``0.0`` turns it positive): the two compare equal, and a key
    of its own just below ``0.0`` would let an edge at ``-0.0`` split equal values between two bins.
    """
    bits = (finite + 0.0).view(np.int64)
    keys = bits >> 63  # -1 on negatives, 0 elsewhere
    keys |= np.int64(-_SIGN)
    keys ^= bits
    return keys.view(np.uint64)


#: ``np.add.reduce`` is what ``ndarray.sum`` computes (the same pairwise sum), without the 2-3 us of
#: Python wrapper per call that the hot loop pays for every column of every batch.
_sum = np.add.reduce


def _finite_range(finite: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of finite values, ``-0.0`` reported as ``0.0`` (as :func:`_order_keys` keys it)."""
    return float(np.minimum.reduce(finite)) + 0.0, float(np.maximum.reduce(finite)) + 0.0


def _order_key(value: float) -> int:
    """The :func:`_order_keys` key of one double."""
    return int(_order_keys(np.array([value], dtype=np.float64))[0])


def _from_order_key(key: int) -> float:
    """The double whose :func:`_order_keys` key is ``key``."""
    return float(_from_order_keys(np.array([key], dtype=np.uint64))[0])


def _from_order_keys(keys: np.ndarray) -> np.ndarray:
    """The doubles of order keys (the inverse of :func:`_order_keys`)."""
    positive = keys >= np.uint64(_SIGN)
    bits = np.where(positive, keys ^ np.uint64(_SIGN), ~keys)
    return bits.view(np.float64)


@dataclass(frozen=True)
class _KeyMap:
    """Buckets of consecutive doubles: order key (:func:`_order_keys`) -> bucket number, monotone.

    A value's bucket is its order key shifted right by ``shift`` bits (a contiguous range of doubles
    about ``2**(shift - 52)`` of a magnitude wide), except that the keys strictly between ``gap_low``
    and ``gap_high`` (the magnitudes below ``2**-ZERO_ZONE_BITS`` of the column's largest, zero
    included) share bucket ``gap_low + 1`` and the keys above move down by ``gap_size``: without it a
    column crossing or touching zero would span the keys of every tiny exponent, and its buckets would
    be far too coarse. Every bucket is still a contiguous range of doubles, which is all exactness
    needs.
    """

    shift: int
    gap_low: int = 0
    gap_high: int = 0

    @property
    def gap_size(self) -> int:
        return max(self.gap_high - self.gap_low - 2, 0)

    @classmethod
    def fit(cls, low_key: int, high_key: int) -> _KeyMap:
        """The finest map putting keys ``low_key..high_key`` in fewer than :data:`KEY_BUCKETS` buckets."""
        low, high = _from_order_key(low_key), _from_order_key(high_key)
        magnitude = max(abs(low), abs(high))
        gap = None
        if magnitude > 0:
            zone = math.ldexp(1.0, math.frexp(magnitude)[1] - ZERO_ZONE_BITS)
            if low < zone and high > -zone:
                gap = (_order_key(-zone), _order_key(zone))
        shift = 1  # >= 1: shifted keys fit in int64
        while True:
            keymap = cls(shift) if gap is None else cls(shift, gap[0] >> shift, gap[1] >> shift)
            if keymap.bucket(high_key >> shift) - keymap.bucket(low_key >> shift) < KEY_BUCKETS:
                return keymap
            shift += 1

    def coarser(self, extra: int) -> _KeyMap:
        """The map with ``extra`` more shift bits (each new bucket a union of old ones)."""
        if extra == 0:
            return self
        return _KeyMap(
            self.shift + extra, ((self.gap_low + 1) >> extra) - 1, ((self.gap_high - 1) >> extra) + 1
        )

    def bucket(self, shifted: int) -> int:
        """Bucket of one shifted key."""
        if self.gap_size and shifted > self.gap_low:
            return max(shifted - self.gap_size, self.gap_low + 1)
        return shifted

    def buckets(self, keys: np.ndarray) -> np.ndarray:
        """Buckets (``int64``) of order keys, computed in place in ``keys``."""
        keys >>= np.uint64(self.shift)
        shifted = keys.view(np.int64)
        if self.gap_size:
            # min(k, max(k - gap_size, gap_low + 1)) is k up to gap_low, the bucket above: no masks.
            moved = shifted - self.gap_size
            np.maximum(moved, self.gap_low + 1, out=moved)
            np.minimum(shifted, moved, out=shifted)
        return shifted

    def offsets(self, finite: np.ndarray, base: int, low: float, high: float) -> np.ndarray:
        """``bucket(order key >> shift) - base`` (``int64``) of finite values whose range is ``low..high``.

        The same buckets as :meth:`buckets` of :func:`_order_keys`, in fewer passes when the values
        share a sign (most features): a positive double's key is its bits plus the sign bit, a negative
        one's the bits inverted, so ``key >> shift`` is an affine function of ``bits >> shift`` and the
        zero zone a one-sided bound. Mixed signs take the general route.

        ``-0.0`` must land where ``0.0`` does: on the positive route its bits shift to a large
        negative number, which the zone's lower bound lifts into the zone's bucket; without a zone
        (or on the mixed route without one) the values are normalised with ``+ 0.0`` first.
        """
        shift = self.shift
        if low >= 0.0:
            if low == 0.0 and not self.gap_size:
                finite = finite + 0.0
            offsets = finite.view(np.int64) >> shift
            # key >> shift = (bits >> shift) + 2**(63 - shift): every positive key lies above gap_low.
            above = 1 << (63 - shift)
            if self.gap_size:
                np.maximum(offsets, self.gap_low + 1 - above + self.gap_size, out=offsets)
            offsets += above - self.gap_size - base
            return offsets
        if high < 0.0:
            # key >> shift = 2**(64 - shift) - 1 - (bits >> shift) (bits as unsigned), at most gap_low + 1.
            offsets = (finite.view(np.uint64) >> np.uint64(shift)).view(np.int64)
            top = (1 << (64 - shift)) - 1
            if self.gap_size:
                np.maximum(offsets, top - (self.gap_low + 1), out=offsets)
            np.subtract(top - base, offsets, out=offsets)
            return offsets
        if not self.gap_size:
            finite = finite + 0.0
        offsets = self.buckets(_order_keys(finite))
        offsets -= base
        return offsets

    def kernel_arguments(self, base: int) -> tuple[int, int, int, int]:
        """``(shift, gap_low, gap_size, base)``: the map as the compiled kernels take it (``offsets_of``)."""
        return self.shift, self.gap_low, self.gap_size, base

    def key_range(self, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest order key (``uint64``) of each bucket."""
        buckets = buckets.astype(np.int64)
        first = buckets.copy()
        last = buckets.copy()
        if self.gap_size:
            above = buckets > self.gap_low + 1
            first[above] += self.gap_size
            last[above] += self.gap_size
            zone = buckets == self.gap_low + 1
            last[zone] = self.gap_high - 1
        shift = np.uint64(self.shift)
        smallest = first.astype(np.uint64) << shift
        largest = ((last.astype(np.uint64) + np.uint64(1)) << shift) - np.uint64(1)  # wraps at the top
        return smallest, largest


class _Binner:
    """Exact histogram of finite values on increasing edges, plus their min and max, in a few passes.

    Bin ``i`` holds ``edges[i-1] < x <= edges[i]``, i.e. ``searchsorted(edges, x, side="left")`` (the
    semantics of DuckDB's ``histogram(x, edges)``, about 45 ns a value against about 8 here). A
    :class:`_KeyMap` fitted to the outer edges puts the values in at most :data:`KEY_BUCKETS` buckets
    between them, plus one below and one above; ``table`` gives each bucket its bin, found once from
    the bucket's smallest and largest double. A bucket whose two ends fall in different bins (an edge
    lies inside it) is marked ``n_bins`` and its values are placed by ``searchsorted``. So the result is
    exact by construction: buckets are contiguous ranges of doubles and bins are monotone. The
    reference's inner edges are bucket tops of its fine histogram (same map), so on its own spec only
    the buckets of the outer edges (the reference's minimum and maximum) are searched.
    """

    def __init__(self, edges: Sequence[float]) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.n_bins = len(self.edges) + 1
        self.keymap = _KeyMap(1)
        self.base = self.top = 0
        self.table = np.zeros(1, dtype=np.intp)
        self.table16: np.ndarray | None = None
        if not len(self.edges):
            return
        low_key, high_key = _order_key(self.edges[0]), _order_key(self.edges[-1])
        keymap = self.keymap = _KeyMap.fit(low_key, high_key)
        # Bucket ``base`` takes every key below the first edge's bucket and ``top`` every key above the
        # last edge's: all their values lie below the first edge / above the last one.
        low, high = keymap.bucket(low_key >> keymap.shift), keymap.bucket(high_key >> keymap.shift)
        self.base, self.top = max(low - 1, 0), high + 1
        smallest, largest = keymap.key_range(np.arange(self.base, self.top + 1))
        first = np.searchsorted(self.edges, _from_order_keys(smallest), side="left")
        last = np.searchsorted(self.edges, _from_order_keys(largest), side="left")  # NaN sorts last
        table = np.where(first == last, first, self.n_bins).astype(np.intp)
        if low > 0:
            table[0] = 0
        table[-1] = self.n_bins - 1
        self.table = table
        # The compiled kernel's copy: 16-bit bins keep the table in the L1 cache.
        self.table16 = table.astype(np.uint16) if self.n_bins < 2**16 - 1 else None

    def counts(self, finite: np.ndarray) -> np.ndarray:
        """Histogram (``int64``, :attr:`n_bins` entries) of finite values."""
        return self.counts_and_range(finite)[0] if len(finite) else np.zeros(self.n_bins, dtype=np.int64)

    def add_native(
        self, kernels: Kernels, finite: np.ndarray, bins: np.ndarray, mean: float, with_m2: bool
    ) -> float:
        """Add the histogram of finite values (at least one) to ``bins`` in the compiled kernel.

        Returns the sum of squared deviations from ``mean`` when ``with_m2`` (else 0.0).
        """
        if self.n_bins == 1:
            bins[0] += len(finite)
            return kernels.m2(finite.ctypes.data, len(finite), mean) if with_m2 else 0.0
        return kernels.bin_table(
            finite.ctypes.data,
            len(finite),
            *self.keymap.kernel_arguments(self.base),
            self.table16.ctypes.data,
            len(self.table16),
            self.n_bins,
            self.edges.ctypes.data,
            len(self.edges),
            bins.ctypes.data,
            mean,
            int(with_m2),
        )

    def counts_and_range(self, finite: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Histogram of finite values (at least one) and their ``(min, max)``."""
        low, high = _finite_range(finite)
        if self.n_bins == 1:
            return np.array([len(finite)], dtype=np.int64), low, high
        offsets = self.keymap.offsets(finite, self.base, low, high)
        # mode="clip" gives the buckets below ``base`` (above ``top``) the first (last) entry's bin.
        index = np.take(self.table, offsets, mode="clip")
        counts = np.bincount(index, minlength=self.n_bins + 1)
        if counts[-1]:
            searched = finite[index == self.n_bins]
            counts[: self.n_bins] += np.bincount(
                np.searchsorted(self.edges, searched, side="left"), minlength=self.n_bins
            )
        return counts[: self.n_bins], low, high


class _FineHistogram:
    """Exact counts of finite doubles in at most :data:`KEY_BUCKETS` buckets of consecutive doubles.

    The first batch fits the finest :class:`_KeyMap` whose buckets hold its range; a later batch
    beyond them re-bases the buckets or coarsens the map (each new bucket a union of old ones, so the
    counts move exactly). So the buckets resolve a feature of any location and scale (a mean of 1000
    with a spread of 1 as well as a lognormal over ten decades) at the cost of a shift, a subtraction
    and a ``bincount`` per value.

    :meth:`place_edges` puts the edges on bucket tops (the largest double of a bucket), so no bucket
    straddles an edge and the fine counts add up exactly to the histogram on those edges.
    """

    def __init__(self) -> None:
        self.keymap: _KeyMap | None = None
        self.base = 0
        self.counts = np.zeros(KEY_BUCKETS, dtype=np.int64)
        self.low_key = self.high_key = 0
        self.lowest = 0  # values equal to -DBL_MAX (which has no finite double below it)

    def add(self, finite: np.ndarray) -> tuple[float, float]:
        """Count finite values (at least one); returns their ``(min, max)``."""
        low, high = _finite_range(finite)
        self._take_in(finite, low, high)
        offsets = self.keymap.offsets(finite, self.base, low, high)
        self.counts += np.bincount(offsets, minlength=KEY_BUCKETS)
        return low, high

    def _take_in(self, finite: np.ndarray, low: float, high: float) -> None:
        """Fit (first batch) or widen the buckets so they hold ``low..high``, the batch's range."""
        low_key, high_key = _order_key(low), _order_key(high)
        if low_key == _T_LOWEST:
            self.lowest += int(np.count_nonzero(finite == low))
        if self.keymap is None:
            self.keymap = _KeyMap.fit(low_key, high_key)
            self.low_key, self.high_key = low_key, high_key
            self.base = self.keymap.bucket(low_key >> self.keymap.shift)
        elif low_key < self.low_key or high_key > self.high_key:
            self._widen(min(low_key, self.low_key), max(high_key, self.high_key))

    def add_native(
        self, kernels: Kernels, finite: np.ndarray, low: float, high: float, mean: float, with_m2: bool
    ) -> float:
        """:meth:`add` in the compiled kernel, given the values' ``(min, max)``.

        Returns the sum of squared deviations from ``mean`` when ``with_m2`` (else 0.0).
        """
        self._take_in(finite, low, high)
        return kernels.bin_fine(
            finite.ctypes.data,
            len(finite),
            *self.keymap.kernel_arguments(self.base),
            self.counts.ctypes.data,
            KEY_BUCKETS,
            mean,
            int(with_m2),
        )

    def _widen(self, low_key: int, high_key: int) -> None:
        """Re-base (and coarsen as far as needed) to take in keys ``low_key..high_key``."""
        old = self.keymap
        extra = 0
        while True:
            keymap = old.coarser(extra)
            low = keymap.bucket(low_key >> keymap.shift)
            if keymap.bucket(high_key >> keymap.shift) - low < KEY_BUCKETS:
                break
            extra += 1
        used = np.flatnonzero(self.counts)
        smallest, _ = old.key_range(used + self.base)
        moved = keymap.buckets(smallest) - low
        counts = np.zeros(KEY_BUCKETS, dtype=np.int64)
        np.add.at(counts, moved, self.counts[used])
        self.keymap, self.base, self.counts = keymap, low, counts
        self.low_key, self.high_key = low_key, high_key

    def _bucket_tops(self, buckets: np.ndarray, high: float) -> np.ndarray:
        """The largest double of each bucket, capped at ``high`` (the largest value counted).

        The next bucket stands in for ``-0.0``'s when ``-0.0`` is its top: ``-0.0 == 0.0``, so an edge
        at ``-0.0`` would take ``0.0`` in too, and ``0.0`` lies in the next bucket. The cap also
        replaces the infinities and NaNs that share the outermost buckets with the largest doubles.
        """
        buckets = np.asarray(buckets, dtype=np.int64) + self.base
        _, largest = self.keymap.key_range(buckets)
        negative_zero = largest == np.uint64(_T_NEGATIVE_ZERO)
        if negative_zero.any():
            _, largest[negative_zero] = self.keymap.key_range(buckets[negative_zero] + 1)
        tops = _from_order_keys(largest)
        return np.where(tops <= high, tops, high)  # NaN compares false: capped too

    def place_edges(
        self, levels: Sequence[float], n: int, low: float | None, high: float | None
    ) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Edges at the quantile ``levels`` of the counted values and the histogram on them.

        The edges are ``nextbefore(low)`` (``low`` itself when it is ``-DBL_MAX``), the tops of the
        buckets where the cumulative count first reaches ``level * n`` (the ``inverted_cdf`` quantile
        rounded up to its bucket's top, capped at ``high``) and ``high``, deduplicated.
        """
        if n == 0 or low is None or high is None or self.keymap is None:
            return (), (0,)
        cumulative = np.cumsum(self.counts)
        at = np.searchsorted(cumulative, np.asarray(levels, dtype=np.float64) * n, side="left")
        # A set, not np.unique: np.unique imports numpy.ma (about 15 ms of CPU per process).
        buckets = np.array(sorted(set(np.minimum(at, KEY_BUCKETS - 1).tolist())), dtype=np.int64)
        tops = self._bucket_tops(buckets, high).tolist()
        below = math.nextafter(low, -math.inf)
        if math.isinf(below):  # low is -DBL_MAX: no finite double lies below it
            below = low
        edges = np.array(sorted({below, *tops, high}), dtype=np.float64)
        used = np.flatnonzero(self.counts)
        bucket_tops = self._bucket_tops(used, high)
        bins = np.zeros(len(edges) + 1, dtype=np.int64)
        np.add.at(bins, np.searchsorted(edges, bucket_tops, side="left"), self.counts[used])
        if self.lowest and low == below:
            # -DBL_MAX is an edge: its values belong to bin 0, the rest of its bucket above it.
            bins[np.searchsorted(edges, bucket_tops[0], side="left")] -= self.lowest
            bins[0] += self.lowest
        return tuple(float(e) for e in edges), tuple(int(c) for c in bins)


class _DistinctSketch:
    """HyperLogLog estimate of the number of distinct doubles (about 1.6% standard error).

    :data:`HLL_PRECISION` bits of a 64-bit mix of the value's bits (``-0.0`` folded into ``0.0``)
    choose one of ``2**p`` registers, which keeps the largest rank (leading zeros + 1) of the other
    bits; the estimate is Flajolet et al.'s, with linear counting while registers are empty. In NumPy
    (a bincount of register x rank per batch) it costs a fifth of DuckDB's ``approx_count_distinct``.
    """

    _MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
    _REST_BITS = 64 - HLL_PRECISION
    _RANKS = 64

    def __init__(self) -> None:
        self.registers = np.zeros(2**HLL_PRECISION, dtype=np.int64)
        self.infinities: set[float] = set()

    def add(self, finite: np.ndarray) -> None:
        """Add finite values."""
        mix = (finite + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0: equal values, equal bits
        mix = mix ^ (mix >> np.uint64(30))
        mix *= self._MIX[0]
        mix ^= mix >> np.uint64(27)
        mix *= self._MIX[1]
        mix ^= mix >> np.uint64(31)
        register = (mix >> np.uint64(self._REST_BITS)).astype(np.intp)
        # The rest has at most 52 bits, exact as a double: frexp's exponent is its bit length.
        rest = (mix & np.uint64(2**self._REST_BITS - 1)).astype(np.float64)
        rank = self._REST_BITS + 1 - np.frexp(rest)[1]
        seen = np.bincount(register * self._RANKS + rank, minlength=self.registers.size * self._RANKS)
        seen = seen.reshape(self.registers.size, self._RANKS) > 0
        highest = np.where(seen.any(axis=1), self._RANKS - 1 - np.argmax(seen[:, ::-1], axis=1), 0)
        np.maximum(self.registers, highest, out=self.registers)

    def estimate(self) -> int:
        """Estimated distinct values added (infinities counted exactly)."""
        m = self.registers.size
        zeros = int(np.count_nonzero(self.registers == 0))
        if zeros == m:
            return len(self.infinities)
        raw = 0.7213 / (1 + 1.079 / m) * m * m / float(np.sum(np.ldexp(1.0, -self.registers)))
        if raw <= 2.5 * m and zeros:
            raw = m * math.log(m / zeros)
        return round(raw) + len(self.infinities)


class _NumericAccumulator:
    """Counts, histogram and moments of one numeric column (in one window), batch after batch.

    With a binner the histogram is on the spec's edges; without one (the reference) the values are
    counted in a :class:`_FineHistogram` and the edges are placed at ``levels`` when profiling.
    """

    def __init__(
        self,
        binner: _Binner | None,
        distinct: bool,
        levels: Sequence[float] | None = None,
        kernels: Kernels | None = None,
    ) -> None:
        self.binner = binner
        # The kernels' bin table is 16-bit: a spec of 65,535 bins or more (none the studio builds)
        # takes the NumPy route, decided once here.
        self.kernels = kernels if binner is None or binner.n_bins == 1 or binner.table16 is not None else None
        self._stats = np.empty(3, dtype=np.float64)
        self._nonfinite = np.empty(3, dtype=np.int64)
        self.fine = _FineHistogram() if binner is None else None
        self.levels = levels
        self.sketch = _DistinctSketch() if distinct else None
        self.non_null = self.nan = self.neg_inf = self.pos_inf = self.finite = 0
        self.low: float | None = None
        self.high: float | None = None
        self.mean: float | None = None
        self.m2 = 0.0
        self.bins = np.zeros(binner.n_bins, dtype=np.int64) if binner is not None else None

    def add(self, values: np.ndarray, nulls: int) -> None:
        """Add a batch: ``values`` as ``float64`` with NaN at the ``nulls`` null slots."""
        # np.errstate is per thread (batches are added from several threads, see _add_queued).
        with np.errstate(over="ignore", invalid="ignore"):
            self._add(values, nulls)

    def _add(self, values: np.ndarray, nulls: int) -> None:
        if self.kernels is not None and values.flags.c_contiguous and values.dtype == np.float64:
            self._add_native(values, nulls)
            return
        self.non_null += len(values) - nulls
        total = float(_sum(values)) if nulls == 0 else math.nan
        # A finite sum proves every value finite (a NaN or an infinity would propagate): one pass
        # instead of an isfinite mask on the common clean batch.
        if not math.isfinite(total):
            self._count_nonfinite(
                int(np.count_nonzero(np.isnan(values))),
                int(np.count_nonzero(values == -np.inf)),
                int(np.count_nonzero(values == np.inf)),
                nulls,
            )
            values = values[np.isfinite(values)]
            total = float(_sum(values))
        n = len(values)
        if n == 0:
            return
        if self.fine is not None:
            low, high = self.fine.add(values)
        else:
            counts, low, high = self.binner.counts_and_range(values)
            self.bins += counts
        if self.sketch is not None:
            self.sketch.add(values)
        self._merge_finite(n, low, high, *_moments(values, total, low, high))

    def _count_nonfinite(self, nan: int, neg_inf: int, pos_inf: int, nulls: int) -> None:
        """Count a batch's NaN (``_as_numpy`` put NaN at its ``nulls`` too) and infinities."""
        self.nan += nan - nulls
        self.neg_inf += neg_inf
        self.pos_inf += pos_inf
        if self.sketch is not None:
            self.sketch.infinities.update(v for v, k in ((-math.inf, neg_inf), (math.inf, pos_inf)) if k)

    def _merge_finite(self, n: int, low: float, high: float, mean: float, m2: float) -> None:
        """Merge the range and moments of a batch's ``n`` finite values into the column's."""
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.mean, self.m2 = _merge_moments(self.finite, self.mean, self.m2, n, mean, m2)
        self.finite += n

    def _add_native(self, values: np.ndarray, nulls: int) -> None:
        """:meth:`_add` in the compiled kernels (``_kernels.c``): the same numbers in two or three passes.

        Each step mirrors the NumPy route: non-finite values counted and dropped, the sum (NumPy's
        pairwise order), min and max of the rest, the histogram, then the moments; only values whose
        magnitude risks overflowing the squares take the NumPy :func:`_moments`.
        """
        kernels = self.kernels
        n = len(values)
        self.non_null += n - nulls
        if n == 0:
            return
        stats = self._stats
        # A finite sum proves every value finite (a NaN or an infinity would propagate), as in _add.
        summed = nulls == 0 and kernels.sum_range(values.ctypes.data, n, stats.ctypes.data)
        if not summed:
            if kernels.nonfinite(values.ctypes.data, n, self._nonfinite.ctypes.data):
                self._count_nonfinite(*(int(v) for v in self._nonfinite), nulls)
                finite = np.empty(n, dtype=np.float64)
                values = finite[: kernels.compact_finite(values.ctypes.data, n, finite.ctypes.data)]
                n = len(values)
                if n == 0:
                    return
            if not kernels.sum_range(values.ctypes.data, n, stats.ctypes.data):
                kernels.range(values.ctypes.data, n, stats.ctypes.data)  # finite values whose sum overflows
        total, low, high = float(stats[0]), float(stats[1]) + 0.0, float(stats[2]) + 0.0
        # _moments' plain route, fused into the binning pass; the scaled one stays in NumPy.
        plain = max(-low, high) < _SQUARE_SAFE and math.isfinite(total)
        mean = total / n if plain else 0.0
        if self.fine is not None:
            m2 = self.fine.add_native(kernels, values, low, high, mean, plain)
        else:
            m2 = self.binner.add_native(kernels, values, self.bins, mean, plain)
        if self.sketch is not None:
            kernels.hll_add(values.ctypes.data, n, HLL_PRECISION, self.sketch.registers.ctypes.data)
        if not plain:
            mean, m2 = _moments(values, total, low, high)
        self._merge_finite(n, low, high, mean, m2)

    def merge(self, other: _NumericAccumulator) -> None:
        """Add what another accumulator of the same column and spec counted (rows disjoint from these).

        Counts, bins, the range and the distinct sketch come out as if ``other``'s batches had been
        added here; the moments merge by Chan's formula, as batches do.

        Raises:
            ProfileError: for the reference's fine histograms, which place edges and do not merge.
        """
        if self.fine is not None or other.fine is not None:
            raise ProfileError("a reference profile's histograms do not merge")
        self.non_null += other.non_null
        self.nan += other.nan
        self.neg_inf += other.neg_inf
        self.pos_inf += other.pos_inf
        if other.finite:
            assert other.low is not None and other.high is not None and other.mean is not None
            self._merge_finite(other.finite, other.low, other.high, other.mean, other.m2)
        if self.bins is not None and other.bins is not None:
            self.bins += other.bins
        if self.sketch is not None and other.sketch is not None:
            np.maximum(self.sketch.registers, other.sketch.registers, out=self.sketch.registers)
            self.sketch.infinities |= other.sketch.infinities

    def profile(self, spec: ColumnSpec, rows: int) -> ColumnProfile:
        """The column profile of everything added (with the edges placed, for the reference)."""
        if self.fine is not None:
            edges, bins = self.fine.place_edges(self.levels or (), self.finite, self.low, self.high)
            spec = replace(spec, edges=edges)
        else:
            bins = tuple(int(v) for v in self.bins)
        return ColumnProfile(
            spec=spec,
            rows=rows,
            nulls=rows - self.non_null,
            nan=self.nan,
            neg_inf=self.neg_inf,
            pos_inf=self.pos_inf,
            finite=self.finite,
            min=self.low,
            max=self.high,
            mean=self.mean,
            m2=self.m2 if self.finite else 0.0,
            bin_counts=bins,
            distinct=self.sketch.estimate() if self.sketch is not None else None,
            distinct_exact=False,
        )


def _moments(values: np.ndarray, total: float, low: float, high: float) -> tuple[float, float]:
    """Mean and sum of squared deviations of finite values (two passes, NumPy's pairwise sums).

    Beyond about 1e150 squares (and sums) overflow: the values are scaled by a power of two (exact)
    that brings the largest magnitude to about 1, and the results scaled back (``m2`` is ``inf`` when
    it exceeds the double range).
    """
    n = len(values)
    magnitude = max(-low, high)
    if magnitude < _SQUARE_SAFE and math.isfinite(total):
        mean = total / n
        deviations = values - mean
        return mean, float(_sum(np.square(deviations, out=deviations)))
    exponent = math.frexp(magnitude)[1]
    scaled = np.ldexp(values, -exponent)
    mean_scaled = float(_sum(scaled)) / n
    deviations = scaled - mean_scaled
    m2_scaled = float(_sum(np.square(deviations, out=deviations)))
    try:
        m2 = math.ldexp(m2_scaled, 2 * exponent)
    except OverflowError:
        m2 = math.inf
    return math.ldexp(mean_scaled, exponent), m2
