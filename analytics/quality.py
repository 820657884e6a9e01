"""Data-quality checks of current data against a reference profile.

* per column (:func:`quality`, from two profiles, no data read): missing share (NULL + NaN), NaN and
  infinity counts, out-of-range share (numeric values outside the reference range ``[min, max]`` the
  spec was built from, infinities included), categories the reference did not have;
* schema drift (:func:`schema_drift`): columns missing, new or retyped against the reference schema;
* freshness (:func:`freshness`): the latest timestamp and its age.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from analytics._tabular import TabularMixin, json_safe
from analytics.drift import new_categories
from analytics.profile import ColumnProfile, Profile, ProfileError, is_temporal, quote, relation_schema


@dataclass(frozen=True)
class SchemaDrift:
    """Differences between the reference schema and the current one.

    Attributes:
        missing: Reference columns absent from the current data.
        new: Current columns the reference did not have.
        retyped: ``(column, reference_type, current_type)`` for columns whose type changed.
    """

    missing: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()

    @property
    def drifted(self) -> bool:
        """Whether the schemas differ at all."""
        return bool(self.missing or self.new or self.retyped)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        return {
            "missing": list(self.missing),
            "new": list(self.new),
            "retyped": [{"column": c, "reference": r, "current": t} for c, r, t in self.retyped],
            "drifted": self.drifted,
        }


def schema_drift(
    reference: Mapping[str, str] | Iterable[tuple[str, str]],
    current: Mapping[str, str] | Iterable[tuple[str, str]],
) -> SchemaDrift:
    """Compare two schemas given as ``{name: type}`` or ``(name, type)`` pairs.

    Args:
        reference: Reference schema (e.g. ``reference_profile.schema``).
        current: Current schema (e.g. ``relation_schema(current_rel)``).

    Returns:
        Missing, new and retyped columns, each in the order of the schema they come from.
    """
    ref = dict(reference)
    cur = dict(current)
    return SchemaDrift(
        missing=tuple(name for name in ref if name not in cur),
        new=tuple(name for name in cur if name not in ref),
        retyped=tuple((name, ref[name], cur[name]) for name in ref if name in cur and ref[name] != cur[name]),
    )


@dataclass(frozen=True)
class Freshness:
    """How recent the data is.

    Attributes:
        column: The timestamp column.
        latest: Latest timestamp (UTC, timezone-aware); ``None`` when the column has no value.
        age_seconds: ``checked_at - latest`` in seconds (negative when the data is in the future).
        rows: Rows with a timestamp.
        checked_at: When the age was measured (UTC).
    """

    column: str
    latest: datetime | None
    age_seconds: float | None
    rows: int
    checked_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        return dict(self.__dict__)


def freshness(rel: duckdb.DuckDBPyRelation, timestamp_column: str, now: datetime | None = None) -> Freshness:
    """Latest value of a timestamp column and its age.

    Naive ``TIMESTAMP`` values are taken as UTC; ``TIMESTAMP WITH TIME ZONE`` values are converted.

    Args:
        rel: Relation to check.
        timestamp_column: Date or timestamp column.
        now: Reference time (default: the current UTC time); naive values are taken as UTC.

    Returns:
        The freshness.

    Raises:
        ProfileError: if the column is missing or is not a date/timestamp.
    """
    schema = dict(relation_schema(rel))
    if timestamp_column not in schema:
        raise ProfileError(f"timestamp column {timestamp_column!r} is not in the relation")
    dtype = schema[timestamp_column].lower()
    if not is_temporal(dtype):
        raise ProfileError(f"timestamp column {timestamp_column!r} has type {dtype}, not a date or timestamp")
    column = quote(timestamp_column)
    value = (
        f"timezone('UTC', {column})"
        if dtype == "timestamp with time zone"
        else f"CAST({column} AS TIMESTAMP)"
    )
    latest, rows = rel.query(
        "__mms_source", f"SELECT max({value}), count({column}) FROM __mms_source"
    ).fetchone()
    checked_at = _as_utc(now or datetime.now(UTC))
    if latest is None:
        return Freshness(timestamp_column, None, None, int(rows), checked_at)
    latest = _as_utc(latest)
    return Freshness(timestamp_column, latest, (checked_at - latest).total_seconds(), int(rows), checked_at)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class ColumnQuality:
    """Quality of one column of the current data.

    Attributes:
        column: Column name.
        kind: ``numeric`` or ``categorical``.
        rows: Rows of the current data.
        nulls: SQL NULLs.
        nan: NaN values.
        neg_inf: ``-inf`` values.
        pos_inf: ``+inf`` values.
        missing_share: ``(nulls + nan) / rows``.
        out_of_range: Numeric: values outside the reference range (infinities included).
        out_of_range_share: ``out_of_range`` over the non-null, non-NaN values.
        range_low: Numeric: reference minimum the range check used.
        range_high: Numeric: reference maximum.
        new_categories: Categorical: values the reference did not have, most frequent first.
        new_category_share: Their share of the non-null values.
        new_categories_exact: ``False`` when either side had more rare values than the profiles list,
            so the new-category list may be incomplete or hold rare reference values.
        status: ``ok``, ``insufficient_data`` (no rows / no values) or ``error``.
        reason: Why the status is not ``ok``.
    """

    column: str
    kind: str
    rows: int
    nulls: int = 0
    nan: int = 0
    neg_inf: int = 0
    pos_inf: int = 0
    missing_share: float | None = None
    out_of_range: int | None = None
    out_of_range_share: float | None = None
    range_low: float | None = None
    range_high: float | None = None
    new_categories: tuple[str, ...] = ()
    new_category_share: float | None = None
    new_categories_exact: bool = True
    status: str = "ok"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        data = dict(self.__dict__)
        data["new_categories"] = list(self.new_categories)
        return data


@dataclass(frozen=True)
class QualityReport(TabularMixin):
    """Quality of the current data against the reference.

    Attributes:
        columns: Per-column checks.
        schema: Schema drift against the reference schema.
        freshness: Freshness of the current data, when a timestamp column was checked.
        window: Window start of the current profile, if any.
    """

    columns: tuple[ColumnQuality, ...]
    schema: SchemaDrift
    freshness: Freshness | None = None
    window: datetime | None = None

    def __getitem__(self, name: str) -> ColumnQuality:
        for column in self.columns:
            if column.column == name:
                return column
        raise KeyError(f"column {name!r} is not in the quality report")

    def to_dict(self) -> dict[str, Any]:
        """``{"window", "schema", "freshness", "columns": [...]}`` in plain Python."""
        return {
            "window": self.window,
            "schema": self.schema.to_dict(),
            "freshness": self.freshness.to_dict() if self.freshness else None,
            "columns": [column.to_dict() for column in self.columns],
        }

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with datetimes as ISO text and non-finite floats as strings."""

        def convert(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list):
                return [convert(v) for v in value]
            return value

        return json_safe(convert(self.to_dict()))

    def _records(self) -> list[dict[str, Any]]:
        return [{"window": self.window, **column.to_dict()} for column in self.columns]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _numeric_quality(column: ColumnProfile) -> dict[str, Any]:
    edges = column.spec.edges
    if not edges:
        return {}
    # Bin 0 is (-inf, nextbefore(min)] and the last bin (max, +inf): exactly the out-of-range values.
    outside = column.bin_counts[0] + column.bin_counts[-1] + column.neg_inf + column.pos_inf
    return {
        "out_of_range": outside,
        "out_of_range_share": _share(outside, column.valid),
        "range_low": math.nextafter(edges[0], math.inf),
        "range_high": edges[-1],
    }


def quality(reference: Profile, current: Profile, *, freshness: Freshness | None = None) -> QualityReport:
    """Check the current profile against the reference profile.

    Args:
        reference: Reference profile (its spec defines the reference range and categories).
        current: Current profile built from the same spec.
        freshness: Optional result of :func:`freshness` to include.

    Returns:
        The quality report. Columns missing from or retyped in the current data get status ``error``
        (and appear in the schema drift).

    Raises:
        ProfileError: if the profiles were built from different specs.
    """
    if reference.spec != current.spec:
        raise ProfileError("the current profile was not built from the reference profile's spec")
    retyped = dict(current.retyped)
    columns = []
    for spec in reference.spec.columns:
        name = spec.name
        if name not in current or name not in reference:
            where = "current" if name not in current else "reference"
            reason = (
                f"column {name!r} changed type from {spec.dtype} to {retyped[name]}"
                if name in retyped
                else f"column {name!r} is not profiled in the {where} data"
            )
            columns.append(ColumnQuality(name, spec.kind, current.rows, status="error", reason=reason))
            continue
        column = current[name]
        values: dict[str, Any] = {
            "nulls": column.nulls,
            "nan": column.nan,
            "neg_inf": column.neg_inf,
            "pos_inf": column.pos_inf,
            "missing_share": _share(column.missing, column.rows),
        }
        if spec.kind == "numeric":
            values.update(_numeric_quality(column))
        else:
            new, exact = new_categories(reference[name], column)
            counts = dict(column.unseen)
            values.update(
                new_categories=new,
                new_category_share=_share(sum(counts[v] for v in new), column.valid),
                new_categories_exact=exact,
            )
        status, reason = "ok", None
        if column.rows == 0:
            status, reason = "insufficient_data", "the current data has no rows"
        elif column.valid == 0:
            status, reason = "insufficient_data", f"column {name!r} has no non-null values"
        columns.append(ColumnQuality(name, spec.kind, column.rows, status=status, reason=reason, **values))
    return QualityReport(
        columns=tuple(columns),
        schema=schema_drift(reference.schema, current.schema),
        freshness=freshness,
        window=current.window,
    )
