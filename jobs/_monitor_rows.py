"""Rows of the ``metrics`` dataset, built from the analytics results of one window.

Private helpers of :mod:`jobs.monitor`. Each builder returns plain dicts in the column order of
:data:`jobs.contracts.METRICS_SCHEMA`; :func:`metrics_table` sorts and types them. The names used for
``column`` and ``metric`` are listed in ``docs/MONITORING.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from analytics.drift import DriftReport
from analytics.performance import ClassificationWindow, LatencyWindow, RegressionWindow
from analytics.policy import TEST_METHODS, Policy
from analytics.profile import Profile
from analytics.quality import QualityReport
from jobs.contracts import METRICS_SCHEMA

ALL_COLUMNS = "*"
"""``column`` of the rows about a whole window rather than one column."""

PERFORMANCE_COLUMN = "prediction"
COVERAGE_COLUMN = "label"
LATENCY_COLUMN = "latency_ms"
TIMESTAMP_COLUMN = "timestamp"

_NUMERIC_STATISTICS = ("ks", "wasserstein_normed", "mean_shift_normed", "psi", "jensenshannon")
_CATEGORICAL_STATISTICS = ("chi2", "psi", "jensenshannon")
_P_VALUES = {"ks": "ks_p_value", "chi2": "chi2_p_value"}
_MAX_LISTED = 10

Row = dict[str, Any]


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the data-quality, latency and freshness rows (drift follows the policy).

    Attributes:
        missing_share_increase: A column's missing share (NULL + NaN) is flagged when it exceeds the
            reference's by more than this (absolute share).
        out_of_range_share: Numeric values outside the reference ``[min, max]``, as a share of the
            valid values, above which a column is flagged.
        new_category_share: Share of values of categories the reference never had, above which a
            categorical column is flagged.
        latency_p95_ratio: A window's p95 latency is flagged above this multiple of its baseline, the
            median p95 of the earlier windows in the look-back.
        latency_lookback_windows: How many earlier windows the latency baseline spans (by default a
            week of daily windows or a day of hourly ones).
        latency_min_baseline: Earlier windows needed before a latency baseline exists.
        freshness_lag_share: The gap between a window's last request and its end is flagged above this
            share of the window length (traffic stopped early).
        min_rows: Windows with fewer rows (values) give ``insufficient_data`` instead of a flag.
    """

    missing_share_increase: float = 0.05
    out_of_range_share: float = 0.05
    new_category_share: float = 0.01
    latency_p95_ratio: float = 1.5
    latency_lookback_windows: int | None = None
    latency_min_baseline: int = 3
    freshness_lag_share: float = 0.25
    min_rows: int = 30

    def __post_init__(self) -> None:
        for name in (
            "missing_share_increase",
            "out_of_range_share",
            "new_category_share",
            "freshness_lag_share",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
        if not (isinstance(self.latency_p95_ratio, int | float) and self.latency_p95_ratio >= 1):
            raise ValueError(f"latency_p95_ratio must be at least 1, got {self.latency_p95_ratio!r}")
        if self.latency_lookback_windows is not None and self.latency_lookback_windows < 1:
            raise ValueError("latency_lookback_windows must be at least 1")
        if self.latency_min_baseline < 1 or self.min_rows < 1:
            raise ValueError("latency_min_baseline and min_rows must be at least 1")


SIGNIFICANT_DIGITS = 12
"""Statistics are stored to 12 significant digits: DuckDB sums in parallel, in no fixed order, so the
last bits of a mean or a loss may differ between two runs over the same data; rounding makes a rerun
write the same value (short of the rare value that straddles a rounding boundary)."""


def _number(value: float | None) -> float | None:
    """Round finite floats to :data:`SIGNIFICANT_DIGITS`; keep infinities; NaN becomes ``None``."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else value


def row(
    version: str,
    window_start: datetime,
    window_end: datetime,
    column: str,
    metric: str,
    *,
    statistic: float | None = None,
    p_value: float | None = None,
    threshold: float | None = None,
    drifted: bool | None = None,
    status: str = "ok",
    n_reference: int = 0,
    n_current: int = 0,
    reason: str | None = None,
) -> Row:
    """One metrics row (every field of :data:`jobs.contracts.METRICS_SCHEMA`)."""
    return {
        "version": version,
        "window_start": window_start,
        "window_end": window_end,
        "column": column,
        "metric": metric,
        "statistic": _number(statistic),
        "p_value": _number(p_value),
        "threshold": _number(threshold),
        "drifted": drifted,
        "status": status,
        "n_reference": int(n_reference),
        "n_current": int(n_current),
        "reason": reason,
    }


def _flag(statistic: float | None, threshold: float, enough: bool, status_if_crossed: str = "warning"):
    """``(drifted, status)`` of a thresholded statistic; ``None`` drifted when it cannot be judged."""
    if statistic is None or not enough:
        return None, "insufficient_data"
    crossed = statistic > threshold
    return crossed, status_if_crossed if crossed else "ok"


def _listed(values: Sequence[str]) -> str:
    shown = ", ".join(values[:_MAX_LISTED])
    return shown + (f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else "")


# --------------------------------------------------------------------------- drift


def drift_rows(
    version: str, start: datetime, end: datetime, report: DriftReport, policy: Policy
) -> list[Row]:
    """The decision row (``drift``) and the statistics rows of every column, plus ``drift_share``."""
    rows: list[Row] = []
    for column in report.columns:
        if column.method is None:
            explanation = column.reason
        elif column.method in TEST_METHODS:
            explanation = (
                f"method={column.method}: drift when the {policy.correction}-adjusted p-value < threshold"
            )
        else:
            explanation = f"method={column.method}: drift when statistic > threshold" + (
                f" and the adjusted p-value < {policy.alpha}" if policy.require_significance else ""
            )
        if column.status != "ok" and column.reason:
            explanation = column.reason
        p_value = column.p_value_adjusted if column.p_value_adjusted is not None else column.p_value
        rows.append(
            row(
                version,
                start,
                end,
                column.column,
                "drift",
                statistic=column.statistic,
                p_value=p_value,
                threshold=column.threshold,
                drifted=column.drifted if column.status == "ok" else None,
                status="drift" if column.drifted else column.status,
                n_reference=column.n_reference,
                n_current=column.n_current,
                reason=explanation,
            )
        )
        if column.status != "ok":
            continue
        names = _NUMERIC_STATISTICS if column.kind == "numeric" else _CATEGORICAL_STATISTICS
        for name in names:
            if name not in column.statistics:
                continue
            rows.append(
                row(
                    version,
                    start,
                    end,
                    column.column,
                    name,
                    statistic=column.statistics.get(name),
                    p_value=column.statistics.get(_P_VALUES[name]) if name in _P_VALUES else None,
                    n_reference=column.n_reference,
                    n_current=column.n_current,
                )
            )
    summary = report.summary
    rows.append(
        row(
            version,
            start,
            end,
            ALL_COLUMNS,
            "drift_share",
            statistic=summary.drift_share,
            threshold=summary.drift_share_threshold,
            drifted=summary.dataset_drifted if summary.drift_share is not None else None,
            status=(
                "insufficient_data"
                if summary.drift_share is None
                else ("drift" if summary.dataset_drifted else "ok")
            ),
            n_reference=summary.n_reference_rows,
            n_current=summary.n_current_rows,
            reason=f"{summary.n_drifted} of {summary.n_checked} checked column(s) drifted",
        )
    )
    return rows


# --------------------------------------------------------------------------- data quality


def quality_rows(
    version: str,
    start: datetime,
    end: datetime,
    reference: Profile,
    current: Profile,
    report: QualityReport,
    thresholds: Thresholds,
) -> list[Row]:
    """``missing_share`` of every column, ``out_of_range_share`` or ``new_category_share`` by kind."""
    rows: list[Row] = []
    for quality in report.columns:
        name = quality.column
        if quality.status == "error":
            rows.append(
                row(
                    version,
                    start,
                    end,
                    name,
                    "missing_share",
                    status="error",
                    n_current=quality.rows,
                    reason=quality.reason,
                )
            )
            continue
        ref = reference[name]
        ref_share = ref.missing / ref.rows if ref.rows else 0.0
        limit = min(1.0, ref_share + thresholds.missing_share_increase)
        drifted, status = _flag(quality.missing_share, limit, quality.rows >= thresholds.min_rows)
        rows.append(
            row(
                version,
                start,
                end,
                name,
                "missing_share",
                statistic=quality.missing_share,
                threshold=limit,
                drifted=drifted,
                status=status,
                n_reference=ref.rows,
                n_current=quality.rows,
                reason=f"{quality.nulls} null, {quality.nan} NaN; reference missing share {ref_share:.4f}",
            )
        )
        valid = current[name].valid if name in current else 0
        enough = valid >= thresholds.min_rows
        if quality.kind == "numeric":
            drifted, status = _flag(quality.out_of_range_share, thresholds.out_of_range_share, enough)
            rows.append(
                row(
                    version,
                    start,
                    end,
                    name,
                    "out_of_range_share",
                    statistic=quality.out_of_range_share,
                    threshold=thresholds.out_of_range_share,
                    drifted=drifted,
                    status=status,
                    n_reference=ref.valid,
                    n_current=valid,
                    reason=(
                        f"{quality.out_of_range} value(s) outside the reference range "
                        f"[{quality.range_low!r}, {quality.range_high!r}]"
                        if quality.out_of_range is not None
                        else "the reference has no finite values"
                    ),
                )
            )
        else:
            drifted, status = _flag(quality.new_category_share, thresholds.new_category_share, enough)
            listed = _listed(list(quality.new_categories))
            reason = f"new: {listed}" if quality.new_categories else "no new category"
            if not quality.new_categories_exact:
                reason += " (the profiles list only the most frequent values: a lower bound)"
            rows.append(
                row(
                    version,
                    start,
                    end,
                    name,
                    "new_category_share",
                    statistic=quality.new_category_share,
                    threshold=thresholds.new_category_share,
                    drifted=drifted,
                    status=status,
                    n_reference=ref.valid,
                    n_current=valid,
                    reason=reason,
                )
            )
    return rows


def window_rows(
    version: str,
    start: datetime,
    end: datetime,
    *,
    rows_in_window: int,
    reference_rows: int,
    latest: datetime | None,
    new_columns: Sequence[str],
    thresholds: Thresholds,
) -> list[Row]:
    """Whole-window rows: ``row_count``, ``schema``, ``last_inference_at`` and ``freshness_lag_s``."""
    length = (end - start).total_seconds()
    lag = (end - latest).total_seconds() if latest is not None else None
    limit = thresholds.freshness_lag_share * length
    drifted, status = _flag(lag, limit, True)
    return [
        row(
            version,
            start,
            end,
            ALL_COLUMNS,
            "row_count",
            statistic=rows_in_window,
            n_reference=reference_rows,
            n_current=rows_in_window,
        ),
        row(
            version,
            start,
            end,
            ALL_COLUMNS,
            "schema",
            statistic=len(new_columns),
            threshold=0.0,
            drifted=bool(new_columns),
            status="warning" if new_columns else "ok",
            n_reference=reference_rows,
            n_current=rows_in_window,
            reason=(
                f"column(s) the reference does not know: {_listed(list(new_columns))}"
                if new_columns
                else "every column matches the contract and the reference"
            ),
        ),
        row(
            version,
            start,
            end,
            TIMESTAMP_COLUMN,
            "last_inference_at",
            statistic=latest.timestamp() if latest is not None else None,
            status="ok" if latest is not None else "insufficient_data",
            n_current=rows_in_window,
            reason="Unix time (s) of the window's newest request",
        ),
        row(
            version,
            start,
            end,
            TIMESTAMP_COLUMN,
            "freshness_lag_s",
            statistic=lag,
            threshold=limit,
            drifted=drifted,
            status=status,
            n_current=rows_in_window,
            reason=f"last request at {latest.isoformat()}" if latest is not None else "no request",
        ),
    ]


def missing_reference_row(version: str, start: datetime, end: datetime, rows_in_window: int, why: str) -> Row:
    """Why drift and data quality are absent for a version without a reference profile."""
    return row(
        version,
        start,
        end,
        ALL_COLUMNS,
        "reference",
        status="insufficient_data",
        n_current=rows_in_window,
        reason=f"no drift or data-quality metrics: {why}",
    )


# --------------------------------------------------------------------------- performance and latency


_CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece")
_REGRESSION = ("mae", "rmse", "mape", "r2")


def performance_rows(
    version: str, start: datetime, end: datetime, window: ClassificationWindow | RegressionWindow
) -> list[Row]:
    """``label_coverage`` (column ``label``) and the task's metrics (column ``prediction``)."""
    names = _CLASSIFICATION if isinstance(window, ClassificationWindow) else _REGRESSION
    rows = [
        row(
            version,
            start,
            end,
            COVERAGE_COLUMN,
            "label_coverage",
            statistic=window.label_coverage,
            status="ok" if window.label_coverage is not None else "insufficient_data",
            n_current=window.n,
            reason=f"{window.n_labelled} of {window.n} prediction(s) labelled",
        )
    ]
    for name in names:
        value = getattr(window, name)
        rows.append(
            row(
                version,
                start,
                end,
                PERFORMANCE_COLUMN,
                name,
                statistic=value,
                status="ok" if _number(value) is not None else "insufficient_data",
                n_current=window.n_evaluated,
                reason=None if _number(value) is not None else window.reason,
            )
        )
    return rows


def latency_rows(
    version: str,
    start: datetime,
    end: datetime,
    window: LatencyWindow,
    baseline: Sequence[float],
    thresholds: Thresholds,
) -> list[Row]:
    """Latency quantiles and mean (column ``latency_ms``) and ``throughput_rps`` (column ``*``).

    ``latency_p95`` is flagged above ``latency_p95_ratio`` times the median p95 of ``baseline``
    (the earlier windows of the look-back).
    """
    n = window.n_latency
    defined = window.status == "ok"
    rows = []
    for name, value in (
        ("latency_p50", window.p50_ms),
        ("latency_p99", window.p99_ms),
        ("latency_mean", window.mean_ms),
    ):
        rows.append(
            row(
                version,
                start,
                end,
                LATENCY_COLUMN,
                name,
                statistic=value,
                status="ok" if defined else "insufficient_data",
                n_current=n,
                reason=None if defined else window.reason,
            )
        )
    if not defined:
        p95 = row(
            version,
            start,
            end,
            LATENCY_COLUMN,
            "latency_p95",
            status="insufficient_data",
            n_current=n,
            reason=window.reason,
        )
    elif len(baseline) < thresholds.latency_min_baseline:
        p95 = row(
            version,
            start,
            end,
            LATENCY_COLUMN,
            "latency_p95",
            statistic=window.p95_ms,
            n_current=n,
            reason=(
                f"no baseline yet: {len(baseline)} earlier window(s), "
                f"{thresholds.latency_min_baseline} needed"
            ),
        )
    else:
        median = _median(baseline)
        limit = thresholds.latency_p95_ratio * median
        crossed = window.p95_ms > limit
        p95 = row(
            version,
            start,
            end,
            LATENCY_COLUMN,
            "latency_p95",
            statistic=window.p95_ms,
            threshold=limit,
            drifted=crossed,
            status="warning" if crossed else "ok",
            n_current=n,
            reason=f"baseline: median p95 {median:.3f} ms of {len(baseline)} earlier window(s)",
        )
    rows.insert(1, p95)
    rows.append(
        row(
            version,
            start,
            end,
            ALL_COLUMNS,
            "throughput_rps",
            statistic=window.throughput_rps,
            status="ok" if window.throughput_rps is not None else "insufficient_data",
            n_current=window.n,
        )
    )
    return rows


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --------------------------------------------------------------------------- errors and the table


def error_rows(
    versions: Sequence[str], start: datetime, end: datetime, problems: Iterable[tuple[str, str, str]]
) -> list[Row]:
    """Rows recording why a date could not be computed: ``(kind, column, reason)`` per problem.

    Problems on the same (column, kind) are merged into one row, since that is the metrics key.
    """
    merged: dict[tuple[str, str], list[str]] = {}
    for kind, column, reason in problems:
        merged.setdefault((column, kind), []).append(reason)
    return [
        row(version, start, end, column, kind, status="error", reason="; ".join(dict.fromkeys(reasons)))
        for version in versions
        for (column, kind), reasons in sorted(merged.items())
    ]


def metrics_table(rows: Iterable[Row]) -> pa.Table:
    """The rows as a ``metrics`` table, sorted by (version, window, column, metric)."""
    ordered = sorted(
        rows, key=lambda r: (r["version"], r["window_start"], r["window_end"], r["column"], r["metric"])
    )
    return pa.Table.from_pylist(ordered, schema=METRICS_SCHEMA)
