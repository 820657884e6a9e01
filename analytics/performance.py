"""Model performance and serving latency per time window, computed in DuckDB.

Inference logs (one row per prediction) are joined with labels that arrive
later (LEFT JOIN on ``request_id``) and aggregated per window
(``date_trunc(window, timestamp)``). Only per-window aggregates leave DuckDB:
no column is ever loaded whole into Python.

Expected columns:

* logs: ``request_id``, ``timestamp`` (TIMESTAMP, TIMESTAMPTZ or DATE),
  ``score`` (probability of the positive class, classification),
  ``prediction`` (predicted class for classification, predicted value for
  regression), ``latency_ms`` (latency); other columns are ignored.
* labels: ``request_id``, ``label`` and optionally ``label_timestamp``.
  When a request has several label rows the one with the latest
  ``label_timestamp`` wins (a correction replaces the first label).

Definitions (each checked against scikit-learn / numpy in the tests):

* accuracy, precision, recall, F1: from the confusion counts; a ratio whose
  denominator is zero is ``None`` (scikit-learn's ``zero_division=nan``).
* ROC AUC: exact, rank based (Mann-Whitney U with mid-ranks for tied
  scores), from per-window counts of positives and negatives per distinct
  score, in integer arithmetic: equal to ``sklearn.metrics.roc_auc_score``.
* log loss: natural log, scores clipped to ``[eps, 1 - eps]`` with
  ``eps = numpy.finfo(float64).eps`` exactly like ``sklearn.metrics.log_loss``.
* expected calibration error (ECE) of the positive-class probability:
  10 equal-width bins on ``[0, 1]``, bin index ``min(floor(score * 10), 9)``
  (so ``score == 1`` falls in the last bin),
  ``ECE = sum_b n_b / n * |mean(label_b) - mean(score_b)|``.
* regression: MAE, RMSE, MAPE (a fraction, not a percentage, like
  scikit-learn; rows whose label is 0 are skipped and counted in
  ``n_mape_skipped``), R² (``None`` when the labels are constant or fewer
  than two).
* latency quantiles: ``quantile_cont``, i.e. linear interpolation between
  the closest ranks at position ``(n - 1) * q``, the same as
  ``numpy.percentile(..., method="linear")``.
* throughput: requests in the window divided by the window length in seconds
  (the full window, even if traffic covered only part of it).

Bad values never raise: NULL/NaN/±inf scores, scores outside ``[0, 1]``,
NULL/NaN/±inf labels, predictions or latencies are counted per window
(``n_invalid_*``) and excluded from the metrics. A window whose metrics are
not all defined has ``status == "insufficient_data"`` and a ``reason``.

Mergeable partials (for the scaled-out monitoring job, ``docs/SCALE_OUT.md``):
``latency_partial``, ``classification_partial`` and ``regression_partial`` aggregate some rows;
``*_from_partials`` combine partials of disjoint rows into the same reports. Counts are exact and
sums merge up to the order of addition; latency p50/p95/p99 use log-spaced bins
(:data:`LATENCY_RELATIVE_ACCURACY`, 0.1 %) and ROC AUC equal-width score bins
(:data:`AUC_SCORE_BINS`), so those two differ slightly from ``latency_metrics`` /
``classification_metrics`` but are identical for any split of the rows.

Windows are calendar periods (``date_trunc``; weeks start on Monday) returned as
naive ``TIMESTAMP`` values; on ``TIMESTAMPTZ`` columns they are UTC periods
whatever the session time zone, exactly like :func:`analytics.profile.profile`,
so performance and drift windows line up.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics._arrow_partials import classification_partial_of, latency_partial_of, regression_partial_of
from analytics._duckdb import window_start_sql

_EPOCH_NAIVE = datetime(1970, 1, 1)

STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_data"

WINDOWS: dict[str, str] = {
    "minute": "INTERVAL 1 MINUTE",
    "hour": "INTERVAL 1 HOUR",
    "day": "INTERVAL 1 DAY",
    "week": "INTERVAL 7 DAY",
    "month": "INTERVAL 1 MONTH",
}
"""Supported window units and the interval each adds to a window start."""

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece")
REGRESSION_METRICS = ("mae", "rmse", "mape", "r2")
LATENCY_METRICS = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms", "throughput_rps")
LATENCY_QUANTILES = (0.5, 0.95, 0.99)
ECE_BINS = 10

# The clipping of sklearn.metrics.log_loss: the machine epsilon of float64.
_LOG_LOSS_EPS = float(np.finfo(np.float64).eps)
# The floor of sklearn.metrics.mean_absolute_percentage_error's denominator.
_MAPE_EPS = float(np.finfo(np.float64).eps)

_NUMERIC_PREFIXES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
)
_STRING_TYPES = ("VARCHAR",)

# Internal column names, prefixed so they cannot collide with user columns.
_LABEL_ID = "_mms_label_request_id"
_LABEL = "_mms_label"
_LABEL_TS = "_mms_label_ts"


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ClassificationWindow:
    """Binary classification metrics of one window (or of all windows).

    Attributes:
        window_start: Inclusive start of the window; ``None`` for the overall row.
        window_end: Exclusive end of the window; ``None`` for the overall row.
        n: Predictions logged in the window.
        n_labelled: Predictions with a valid label joined.
        label_coverage: ``n_labelled / n`` (``None`` when ``n == 0``).
        n_invalid_label: Predictions whose joined label is NULL/NaN/inf (excluded).
        n_invalid_score: Predictions whose score is NULL/NaN/inf or outside [0, 1] (excluded).
        n_evaluated: Rows the metrics use: valid label and valid score (and prediction).
        n_positive: Evaluated rows whose label is the positive label.
        n_negative: Evaluated rows whose label is not the positive label.
        tp: True positives.
        fp: False positives.
        tn: True negatives.
        fn: False negatives.
        accuracy: ``(tp + tn) / n_evaluated``.
        precision: ``tp / (tp + fp)``.
        recall: ``tp / (tp + fn)``.
        f1: ``2 tp / (2 tp + fp + fn)``.
        roc_auc: Exact ROC AUC of the scores; ``None`` with a single class.
        log_loss: Mean log loss with sklearn's clipping.
        ece: Expected calibration error, 10 equal-width bins.
        status: ``ok`` or ``insufficient_data``.
        reason: Why some metric is undefined (``None`` when status is ``ok``).
    """

    window_start: datetime | None
    window_end: datetime | None
    n: int
    n_labelled: int
    label_coverage: float | None
    n_invalid_label: int
    n_invalid_score: int
    n_evaluated: int
    n_positive: int
    n_negative: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    log_loss: float | None
    ece: float | None
    status: str
    reason: str | None


@dataclass(frozen=True)
class RegressionWindow:
    """Regression metrics of one window (or of all windows).

    Attributes:
        window_start: Inclusive start of the window; ``None`` for the overall row.
        window_end: Exclusive end of the window; ``None`` for the overall row.
        n: Predictions logged in the window.
        n_labelled: Predictions with a valid (finite) label joined.
        label_coverage: ``n_labelled / n`` (``None`` when ``n == 0``).
        n_invalid_label: Predictions whose joined label is NULL/NaN/inf (excluded).
        n_invalid_prediction: Predictions that are NULL/NaN/inf (excluded).
        n_evaluated: Rows the metrics use (valid label and valid prediction).
        mae: Mean absolute error.
        rmse: Root mean squared error.
        mape: Mean absolute percentage error as a fraction, zero labels skipped.
        n_mape_skipped: Evaluated rows left out of MAPE because their label is 0.
        r2: Coefficient of determination; ``None`` for constant or < 2 labels.
        status: ``ok`` or ``insufficient_data``.
        reason: Why some metric is undefined (``None`` when status is ``ok``).
    """

    window_start: datetime | None
    window_end: datetime | None
    n: int
    n_labelled: int
    label_coverage: float | None
    n_invalid_label: int
    n_invalid_prediction: int
    n_evaluated: int
    mae: float | None
    rmse: float | None
    mape: float | None
    n_mape_skipped: int
    r2: float | None
    status: str
    reason: str | None


@dataclass(frozen=True)
class LatencyWindow:
    """Serving latency and throughput of one window (or of all windows).

    Attributes:
        window_start: Inclusive start of the window; ``None`` for the overall row.
        window_end: Exclusive end of the window; ``None`` for the overall row.
        n: Requests logged in the window.
        n_latency: Requests with a valid latency (finite, >= 0).
        n_invalid_latency: Requests whose latency is NULL/NaN/inf/negative (excluded).
        p50_ms: Median latency (linear interpolation, as ``numpy.percentile``).
        p95_ms: 95th percentile latency.
        p99_ms: 99th percentile latency.
        mean_ms: Mean latency.
        max_ms: Largest latency.
        throughput_rps: ``n`` divided by the window length in seconds.
        status: ``ok`` or ``insufficient_data`` (no valid latency).
        reason: Why the latency is undefined (``None`` when status is ``ok``).
    """

    window_start: datetime | None
    window_end: datetime | None
    n: int
    n_latency: int
    n_invalid_latency: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    throughput_rps: float | None
    status: str
    reason: str | None


def _column_names(row_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(row_type)]


def _frame_rows(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(row) for row in rows]


class _TabularReport:
    """Shared conversions of the reports: rows, pandas and polars frames."""

    windows: tuple[Any, ...]

    @property
    def row_type(self) -> type:  # pragma: no cover - overridden by every report
        raise NotImplementedError

    def rows(self) -> list[dict[str, Any]]:
        """Return the per-window rows as plain dictionaries, oldest window first.

        Returns:
            One dictionary per window with the fields of the row dataclass.
        """
        return _frame_rows(self.windows)

    def to_pandas(self) -> Any:
        """Return the per-window rows as a pandas DataFrame (one row per window).

        Returns:
            A ``pandas.DataFrame`` whose columns are the row dataclass fields, in order,
            also when there is no window.
        """
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=_column_names(self.row_type))

    def to_polars(self) -> Any:
        """Return the per-window rows as a polars DataFrame (one row per window).

        Returns:
            A ``polars.DataFrame`` whose columns are the row dataclass fields, in order,
            also when there is no window.
        """
        import polars as pl

        names = _column_names(self.row_type)
        schema = {name: _polars_dtype(pl, self.row_type, name) for name in names}
        if not self.windows:
            return pl.DataFrame(schema=schema)
        columns = {name: [getattr(row, name) for row in self.windows] for name in names}
        # Timestamps keep the (possibly tz-aware) type polars infers from the datetimes.
        overrides = {k: v for k, v in schema.items() if not isinstance(v, pl.Datetime)}
        return pl.DataFrame(columns, schema_overrides=overrides, strict=False)


def _polars_dtype(pl: Any, row_type: type, name: str) -> Any:
    hint = {f.name: f.type for f in dataclasses.fields(row_type)}[name]
    text = str(hint)
    if "datetime" in text:
        return pl.Datetime("us")
    if text == "int":
        return pl.Int64
    if "float" in text:
        return pl.Float64
    return pl.String


@dataclass(frozen=True)
class PerformanceReport(_TabularReport):
    """Per-window model performance.

    Attributes:
        task: ``classification`` or ``regression``.
        window: Window unit (``minute``, ``hour``, ``day``, ``week`` or ``month``).
        windows: One row per window that has at least one prediction, oldest first.
        overall: The same metrics over all windows together.
        n_missing_timestamp: Predictions without a timestamp (excluded everywhere).
        decision: How the predicted class was derived (classification), e.g. ``score >= 0.5``.
        positive_label: The positive class (classification).
        labels_as_of: Only labels with ``label_timestamp <= labels_as_of`` were used.
    """

    task: Literal["classification", "regression"]
    window: str
    windows: tuple[ClassificationWindow, ...] | tuple[RegressionWindow, ...]
    overall: ClassificationWindow | RegressionWindow
    n_missing_timestamp: int = 0
    decision: str | None = None
    positive_label: Any = None
    labels_as_of: datetime | None = None

    @property
    def row_type(self) -> type:
        """The dataclass of one window row of this task."""
        return ClassificationWindow if self.task == "classification" else RegressionWindow

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names of the metric fields of this task, in display order."""
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS


@dataclass(frozen=True)
class LatencyReport(_TabularReport):
    """Per-window serving latency and throughput.

    Attributes:
        window: Window unit (``minute``, ``hour``, ``day``, ``week`` or ``month``).
        windows: One row per window that has at least one request, oldest first.
        overall: Quantiles over all windows; throughput over the span from the first
            window start to the last window end.
        n_missing_timestamp: Requests without a timestamp (excluded everywhere).
    """

    window: str
    windows: tuple[LatencyWindow, ...]
    overall: LatencyWindow
    n_missing_timestamp: int = 0

    @property
    def row_type(self) -> type:
        """The dataclass of one window row."""
        return LatencyWindow

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names of the metric fields, in display order."""
        return LATENCY_METRICS


# --------------------------------------------------------------------------- SQL helpers


def _types(rel: duckdb.DuckDBPyRelation) -> dict[str, str]:
    return {name: str(kind).upper() for name, kind in zip(rel.columns, rel.types, strict=True)}


def _require_columns(rel: duckdb.DuckDBPyRelation, names: Sequence[str], what: str) -> dict[str, str]:
    types = _types(rel)
    missing = [name for name in names if name not in types]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {sorted(types)}")
    return types


def _is_numeric(sql_type: str) -> bool:
    return sql_type.startswith(_NUMERIC_PREFIXES) and not sql_type.endswith("]")


def _is_float(sql_type: str) -> bool:
    return sql_type.startswith(("FLOAT", "DOUBLE"))


def _check_window(window: str) -> str:
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {sorted(WINDOWS)}, not {window!r}")
    return window


def _double(value: float) -> str:
    """Render a finite float as an exact DOUBLE literal (a bare literal could parse as DECIMAL)."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def _literal(value: Any) -> str:
    """Render a Python constant as a SQL literal, escaped by DuckDB itself."""
    if isinstance(value, float):
        return _double(value)
    return str(duckdb.ConstantExpression(value))


def _window_expr(sql_type: str, window: str) -> str:
    """SQL of a row's window start: a naive TIMESTAMP, in UTC for TIMESTAMPTZ columns."""
    if sql_type in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        # UTC calendar windows whatever the session time zone, like analytics.profile.
        return window_start_sql('"timestamp"', window, with_time_zone=True)
    if sql_type == "DATE" or sql_type.startswith("TIMESTAMP"):
        return window_start_sql('CAST("timestamp" AS TIMESTAMP)', window, with_time_zone=False)
    raise ValueError(f"column 'timestamp' must be a TIMESTAMP, TIMESTAMPTZ or DATE, not {sql_type}")


def _timed_and_labelled(
    log_types: dict[str, str], label_types: dict[str, str], window: str, labels_as_of: datetime | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The checks every performance metric makes last: the timestamp's type and ``labels_as_of``."""
    _window_expr(log_types["timestamp"], window)  # refuses a timestamp of another type
    _check_labels_as_of(label_types, labels_as_of)
    return log_types, label_types


def _check_labels_as_of(label_types: dict[str, str], labels_as_of: datetime | None) -> None:
    if labels_as_of is not None and "label_timestamp" not in label_types:
        raise ValueError("labels_as_of needs a 'label_timestamp' column in labels")


def _labels_relation(
    labels: duckdb.DuckDBPyRelation,
    label_types: dict[str, str],
    labels_as_of: datetime | None,
    labels_unique: bool = False,
) -> duckdb.DuckDBPyRelation:
    """Keep one label per request: the latest one known at ``labels_as_of``.

    ``labels_unique``: the labels are already one per request (:func:`latest_labels`), so only the
    columns are renamed and the cut-off applied.
    """
    _check_labels_as_of(label_types, labels_as_of)
    has_ts = "label_timestamp" in label_types
    where = f"WHERE label_timestamp <= {_literal(labels_as_of)}" if labels_as_of is not None else ""
    order = "label_timestamp DESC NULLS LAST, label DESC NULLS LAST" if has_ts else "label DESC NULLS LAST"
    ts = f", label_timestamp AS {_LABEL_TS}" if has_ts else ""
    latest = f"QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY {order}) = 1"
    if labels_unique:
        latest = ""
    sql = f"SELECT request_id AS {_LABEL_ID}, label AS {_LABEL}{ts} FROM _mms_labels {where} {latest}"
    return labels.query("_mms_labels", sql)


def latest_labels(labels: duckdb.DuckDBPyRelation, labels_as_of: datetime | None = None) -> pa.Table:
    """One label per request, chosen as every metric of this module chooses it, computed once.

    Pass the result (as a relation) with ``labels_unique=True`` to several partials of the same
    requests (:func:`classification_partial`, :func:`regression_partial`): each then joins it
    without deduplicating the labels again, with the same results.

    Args:
        labels: Labels with ``request_id``, ``label`` and optionally ``label_timestamp``.
        labels_as_of: When given, only labels with ``label_timestamp <= labels_as_of`` are kept.

    Returns:
        The labels kept, with the columns of ``labels``; ``labels`` unchanged when it lacks
        ``request_id`` or ``label`` (the partials then say so).
    """
    label_types = _types(labels)
    if "request_id" not in label_types or "label" not in label_types:
        return labels.to_arrow_table()
    kept = ["request_id", "label"] + (["label_timestamp"] if "label_timestamp" in label_types else [])
    if labels_as_of is None:
        table = labels.to_arrow_table()
        # Labels already one per request (the usual case) are the answer: checking costs about a fifth
        # of choosing (a hash of the ids against a window function). A NULL id counts once, as there.
        if len(pc.unique(table.column("request_id"))) == table.num_rows:
            return table.select(kept)
    columns = [f"{_LABEL_ID} AS request_id", f"{_LABEL} AS label"]
    if "label_timestamp" in label_types:
        columns.append(f"{_LABEL_TS} AS label_timestamp")
    latest = _labels_relation(labels, label_types, labels_as_of)
    return latest.query("_mms_latest", f"SELECT {', '.join(columns)} FROM _mms_latest").to_arrow_table()


def _joined(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    label_types: dict[str, str],
    labels_as_of: datetime | None,
    labels_unique: bool = False,
) -> duckdb.DuckDBPyRelation:
    latest = _labels_relation(labels, label_types, labels_as_of, labels_unique)
    try:
        return logs.join(latest, f"request_id = {_LABEL_ID}", how="left")
    except duckdb.InvalidInputException as error:
        if "different connections" not in str(error):
            raise
        # DuckDB's message names no remedy; say what to do.
        raise ValueError(
            "logs and labels must be relations of the same DuckDB connection "
            "(read both through the same connection)"
        ) from error


def _keyed_sql(flags_sql: str) -> str:
    """Wrap the per-row CTE so every row counts once in its window and once overall.

    The overall copy has ``window_start = NULL`` (rows without a timestamp are excluded
    upstream, so NULL marks the overall group). A single partition key matters: DuckDB
    1.5 runs a window function partitioned by ``(flag, window_start)`` about 7x slower
    than one partitioned by ``window_start`` alone.
    """
    return (
        f"flags AS MATERIALIZED ({flags_sql}), "
        "keyed AS (SELECT * FROM flags UNION ALL SELECT * REPLACE (NULL AS window_start) FROM flags)"
    )


_SAME_KEY = "{a}.window_start IS NOT DISTINCT FROM {b}.window_start"


def _same_key(a: str, b: str) -> str:
    return _SAME_KEY.format(a=a, b=b)


def _fetch(rel: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    # Through Arrow: TIMESTAMPTZ values come back with zoneinfo time zones (fetchall needs pytz).
    return rel.to_arrow_table().to_pylist()


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _count_missing_timestamp(logs: duckdb.DuckDBPyRelation) -> int:
    row = logs.query("_mms_logs", 'SELECT count(*) FROM _mms_logs WHERE "timestamp" IS NULL').fetchone()
    return int(row[0]) if row else 0


def _window_end_sql(window: str) -> str:
    return f"window_start + {WINDOWS[window]}"


def _split_overall(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    windows = [row for row in rows if row["window_start"] is not None]
    overall = next((row for row in rows if row["window_start"] is None), None)
    return windows, overall


# --------------------------------------------------------------------------- classification


def _classification_types(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str,
    positive_label: Any,
    threshold: float | None,
    labels_as_of: datetime | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Check the arguments of a classification metric; the logs' and the labels' column types.

    Reads the relations' schemas only (no query: see ``analytics._arrow_relation``).
    """
    _check_window(window)
    needed = ["request_id", "timestamp", "score"] + (["prediction"] if threshold is None else [])
    log_types = _require_columns(logs, needed, "logs")
    label_types = _require_columns(labels, ["request_id", "label"], "labels")
    if not _is_numeric(log_types["score"]):
        raise ValueError(f"column 'score' must be numeric, not {log_types['score']}")
    _check_label_literal(positive_label, label_types["label"], "label")
    if threshold is None:
        _check_label_literal(positive_label, log_types["prediction"], "prediction")
    else:
        _double(threshold)  # refuses a threshold that is not finite
    return _timed_and_labelled(log_types, label_types, window, labels_as_of)


def _classification_flags(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str,
    positive_label: Any,
    threshold: float | None,
    labels_as_of: datetime | None,
    labels_unique: bool = False,
) -> tuple[duckdb.DuckDBPyRelation, str, str]:
    """The joined relation (``_mms_joined``), the per-row flags SQL and the decision rule."""
    log_types, label_types = _classification_types(
        logs, labels, window, positive_label, threshold, labels_as_of
    )
    label_type = label_types["label"]
    if threshold is None:
        pred_ok = _valid_value_sql('"prediction"', log_types["prediction"])
        predicted = f'("prediction" = {_literal(positive_label)})'
        decision = "prediction column"
    else:
        threshold_sql = _double(threshold)
        pred_ok = "true"
        predicted = f"(CAST(score AS DOUBLE) >= {threshold_sql})"
        decision = f"score >= {float(threshold)!r}"

    joined = _joined(logs, labels, label_types, labels_as_of, labels_unique)
    window_start = _window_expr(log_types["timestamp"], window)
    label_ok = _valid_value_sql(_LABEL, label_type)
    positive = _literal(positive_label)

    flags = f"""
        SELECT window_start, _s, _labelled, _bad_label, _score_ok, _eval,
               CASE WHEN _eval THEN CAST(_is_pos AS INTEGER) END AS _y,
               CASE WHEN _eval THEN CAST(_pred_pos AS INTEGER) END AS _yhat
        FROM (
            SELECT *, _labelled AND _score_ok AND _pred_ok AS _eval FROM (
                SELECT {window_start} AS window_start,
                       CAST(score AS DOUBLE) AS _s,
                       {_LABEL_ID} IS NOT NULL AND coalesce({label_ok}, false) AS _labelled,
                       {_LABEL_ID} IS NOT NULL AND NOT coalesce({label_ok}, false) AS _bad_label,
                       coalesce(isfinite(CAST(score AS DOUBLE)) AND CAST(score AS DOUBLE) >= 0
                                AND CAST(score AS DOUBLE) <= 1, false) AS _score_ok,
                       coalesce({pred_ok}, false) AS _pred_ok,
                       coalesce({_LABEL} = {positive}, false) AS _is_pos,
                       {predicted} AS _pred_pos
                FROM _mms_joined WHERE "timestamp" IS NOT NULL
            )
        )
    """
    return joined, flags, decision


# Per-window counts and log-loss sum over the flagged rows (``_classification_flags``): the same
# aggregate for the exact metrics and for the mergeable partials, so the two cannot disagree.
_CLASSIFICATION_AGGREGATES_SQL = f"""
    count(*) AS n,
    count(*) FILTER (WHERE _labelled) AS n_labelled,
    count(*) FILTER (WHERE _bad_label) AS n_invalid_label,
    count(*) FILTER (WHERE NOT _score_ok) AS n_invalid_score,
    count(*) FILTER (WHERE _eval) AS n_evaluated,
    count(*) FILTER (WHERE _y = 1) AS n_positive,
    count(*) FILTER (WHERE _y = 0) AS n_negative,
    count(*) FILTER (WHERE _y = 1 AND _yhat = 1) AS tp,
    count(*) FILTER (WHERE _y = 0 AND _yhat = 1) AS fp,
    count(*) FILTER (WHERE _y = 0 AND _yhat = 0) AS tn,
    count(*) FILTER (WHERE _y = 1 AND _yhat = 0) AS fn,
    sum(CASE WHEN _eval THEN -ln(greatest(least(
        CASE WHEN _y = 1 THEN _s ELSE CAST(1 AS DOUBLE) - _s END,
        (CAST(1 AS DOUBLE) - {_double(_LOG_LOSS_EPS)})), {_double(_LOG_LOSS_EPS)}))
        END) AS log_loss_sum"""


def classification_metrics(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str = "day",
    positive_label: Any = 1,
    threshold: float | None = 0.5,
    labels_as_of: datetime | None = None,
) -> PerformanceReport:
    """Binary classification metrics per window of inference logs joined with late labels.

    Args:
        logs: Inference logs with ``request_id``, ``timestamp``, ``score`` and, when
            ``threshold`` is ``None``, ``prediction``.
        labels: Labels with ``request_id``, ``label`` and optionally ``label_timestamp``;
            a relation of the same DuckDB connection as ``logs``.
        window: Window unit: ``minute``, ``hour``, ``day``, ``week`` or ``month``.
        positive_label: The label value of the positive class; every other label is negative.
        threshold: Predicted positive when ``score >= threshold``; ``None`` uses the logged
            ``prediction`` column instead (positive when it equals ``positive_label``).
        labels_as_of: When given, only labels with ``label_timestamp <= labels_as_of`` count,
            which shows the label coverage as it was at that time.

    Returns:
        The per-window and overall metrics.

    Raises:
        ValueError: A column is missing or of the wrong type, the window is unknown, the
            threshold is not finite, or the relations belong to different connections.
    """
    joined, flags, decision = _classification_flags(
        logs, labels, window, positive_label, threshold, labels_as_of
    )
    sql = f"""
        WITH {_keyed_sql(flags)},
        agg AS (
            SELECT window_start, {_CLASSIFICATION_AGGREGATES_SQL}
            FROM keyed GROUP BY window_start
        ),
        calibration_bins AS (
            SELECT window_start, least(floor(_s * {ECE_BINS}), {ECE_BINS - 1}) AS bin,
                   sum(_y) - sum(_s) AS gap
            FROM keyed WHERE _eval GROUP BY window_start, bin
        ),
        calibration AS (
            SELECT window_start, sum(abs(gap)) AS ece_gap_sum
            FROM calibration_bins GROUP BY window_start
        ),
        score_counts AS (
            -- "+ 0.0" folds -0.0 into 0.0 so equal scores always share one group.
            SELECT window_start, _s + 0.0 AS s, sum(_y) AS pos, count(*) - sum(_y) AS neg
            FROM keyed WHERE _eval GROUP BY window_start, s
        ),
        ranked AS (
            -- A running sum up to the current row streams; a frame ending at "1 PRECEDING" does
            -- not (measured 50x slower), so subtract the row's own negatives instead.
            SELECT window_start, pos, neg,
                   sum(neg) OVER (PARTITION BY window_start ORDER BY s
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - neg AS neg_below
            FROM score_counts
        ),
        auc AS (
            -- Twice the Mann-Whitney U: each positive beats the negatives below its score and
            -- ties half of those at its score. Integer arithmetic keeps it exact.
            SELECT window_start,
                   sum(CAST(pos AS HUGEINT) * (2 * CAST(neg_below AS HUGEINT) + CAST(neg AS HUGEINT)))
                       AS auc_twice_u
            FROM ranked GROUP BY window_start
        )
        SELECT agg.*, {_window_end_sql(window).replace("window_start", "agg.window_start")} AS window_end,
               calibration.ece_gap_sum, auc.auc_twice_u
        FROM agg
        LEFT JOIN calibration ON {_same_key("agg", "calibration")}
        LEFT JOIN auc ON {_same_key("agg", "auc")}
        ORDER BY agg.window_start NULLS LAST
    """
    rows = _fetch(joined.query("_mms_joined", sql))
    window_rows, overall_row = _split_overall(rows)
    return PerformanceReport(
        task="classification",
        window=window,
        windows=tuple(_classification_window(row) for row in window_rows),
        overall=_classification_window(overall_row or _empty_classification_row()),
        n_missing_timestamp=_count_missing_timestamp(logs),
        decision=decision,
        positive_label=positive_label,
        labels_as_of=labels_as_of,
    )


def _check_label_literal(value: Any, sql_type: str, column: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"positive_label must be finite, got {value!r}")
    if _is_numeric(sql_type) and not isinstance(value, bool | int | float):
        raise ValueError(f"column {column!r} is {sql_type} but positive_label {value!r} is not a number")
    if sql_type in _STRING_TYPES and not isinstance(value, str):
        raise ValueError(f"column {column!r} is {sql_type} but positive_label {value!r} is not a string")
    if sql_type == "BOOLEAN" and not isinstance(value, bool | int):
        raise ValueError(f"column {column!r} is BOOLEAN but positive_label {value!r} is not a bool")


def _valid_value_sql(expr: str, sql_type: str) -> str:
    """SQL that is true for a usable value: not NULL and, for numbers, finite."""
    if _is_float(sql_type) or sql_type.startswith("DECIMAL"):
        return f"isfinite(CAST({expr} AS DOUBLE))"
    return f"({expr} IS NOT NULL)"


def _empty_classification_row() -> dict[str, Any]:
    zero = dict.fromkeys(
        ("n", "n_labelled", "n_invalid_label", "n_invalid_score", "n_evaluated", "n_positive", "n_negative"),
        0,
    )
    return {
        "window_start": None,
        "window_end": None,
        **zero,
        **dict.fromkeys(("tp", "fp", "tn", "fn"), 0),
        "log_loss_sum": None,
        "ece_gap_sum": None,
        "auc_twice_u": None,
    }


def _coverage_reason(n: int, n_labelled: int) -> str:
    if n == 0:
        return "no predictions"
    if n_labelled == 0:
        return "no labels joined yet (label coverage 0)"
    return "no labelled prediction with a valid score"


def _classification_window(row: dict[str, Any]) -> ClassificationWindow:
    n, n_labelled, n_eval = int(row["n"]), int(row["n_labelled"]), int(row["n_evaluated"])
    n_pos, n_neg = int(row["n_positive"]), int(row["n_negative"])
    tp, fp, tn, fn = (int(row[k]) for k in ("tp", "fp", "tn", "fn"))
    reasons: list[str] = []
    roc_auc = None
    if n_eval == 0:
        reasons.append(_coverage_reason(n, n_labelled))
    elif n_pos == 0 or n_neg == 0:
        reasons.append(
            f"only one class among labels (positives={n_pos}, negatives={n_neg}): roc_auc undefined"
        )
    else:
        roc_auc = int(row["auc_twice_u"]) / (2 * n_pos * n_neg)
    precision = _ratio(tp, tp + fp)
    if n_eval and precision is None:
        reasons.append("no predicted positives: precision undefined")
    return ClassificationWindow(
        window_start=row["window_start"],
        window_end=row["window_end"],
        n=n,
        n_labelled=n_labelled,
        label_coverage=_ratio(n_labelled, n),
        n_invalid_label=int(row["n_invalid_label"]),
        n_invalid_score=int(row["n_invalid_score"]),
        n_evaluated=n_eval,
        n_positive=n_pos,
        n_negative=n_neg,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, n_eval),
        precision=precision,
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        roc_auc=roc_auc,
        log_loss=float(row["log_loss_sum"]) / n_eval if n_eval else None,
        ece=float(row["ece_gap_sum"]) / n_eval if n_eval else None,
        status=STATUS_INSUFFICIENT if reasons else STATUS_OK,
        reason="; ".join(reasons) or None,
    )


# --------------------------------------------------------------------------- regression


def _regression_types(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str,
    labels_as_of: datetime | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Check the arguments of a regression metric; the logs' and the labels' column types."""
    _check_window(window)
    log_types = _require_columns(logs, ["request_id", "timestamp", "prediction"], "logs")
    label_types = _require_columns(labels, ["request_id", "label"], "labels")
    for column, sql_type in (("prediction", log_types["prediction"]), ("label", label_types["label"])):
        if not _is_numeric(sql_type):
            raise ValueError(f"column {column!r} must be numeric for regression, not {sql_type}")
    return _timed_and_labelled(log_types, label_types, window, labels_as_of)


def _regression_flags(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str,
    labels_as_of: datetime | None,
    labels_unique: bool = False,
) -> tuple[duckdb.DuckDBPyRelation, str]:
    """The joined relation (``_mms_joined``) and the per-row flags SQL of regression."""
    log_types, label_types = _regression_types(logs, labels, window, labels_as_of)
    joined = _joined(logs, labels, label_types, labels_as_of, labels_unique)
    window_start = _window_expr(log_types["timestamp"], window)
    label_ok = f"coalesce(isfinite(CAST({_LABEL} AS DOUBLE)), false)"

    flags = f"""
        SELECT *, _labelled AND _pred_ok AS _eval FROM (
            SELECT {window_start} AS window_start,
                   CAST(prediction AS DOUBLE) AS _pred,
                   CAST({_LABEL} AS DOUBLE) AS _lab,
                   {_LABEL_ID} IS NOT NULL AND {label_ok} AS _labelled,
                   {_LABEL_ID} IS NOT NULL AND NOT {label_ok} AS _bad_label,
                   coalesce(isfinite(CAST(prediction AS DOUBLE)), false) AS _pred_ok
            FROM _mms_joined WHERE "timestamp" IS NOT NULL
        )
    """
    return joined, flags


def _regression_sums_sql(source: str, label_sums: str) -> str:
    """The ``agg`` (counts), ``evaluated`` and ``errors`` (error sums) CTEs of regression metrics.

    Args:
        source: The CTE of per-row flags to aggregate (``keyed`` or ``flags``).
        label_sums: The label aggregates the caller needs, SQL over ``_lab`` and ``_mean`` (the
            window's label mean: two passes, the mean first, keep sums of squares accurate).
    """
    mape_eps = _double(_MAPE_EPS)
    return f"""
        agg AS (
            SELECT window_start,
                   count(*) AS n,
                   count(*) FILTER (WHERE _labelled) AS n_labelled,
                   count(*) FILTER (WHERE _bad_label) AS n_invalid_label,
                   count(*) FILTER (WHERE NOT _pred_ok) AS n_invalid_prediction,
                   count(*) FILTER (WHERE _eval) AS n_evaluated
            FROM {source} GROUP BY window_start
        ),
        evaluated AS (
            SELECT window_start, _lab, _pred, _lab - _pred AS _err,
                   avg(_lab) OVER (PARTITION BY window_start) AS _mean
            FROM {source} WHERE _eval
        ),
        errors AS (
            SELECT window_start,
                   sum(abs(_err)) AS abs_sum,
                   sum(_err * _err) AS sq_sum,
                   sum(CASE WHEN _lab <> 0 THEN abs(_err) / greatest(abs(_lab), {mape_eps}) END) AS ape_sum,
                   count(*) FILTER (WHERE _lab <> 0) AS n_mape,
                   count(*) FILTER (WHERE _lab = 0) AS n_mape_skipped,
                   {label_sums}
            FROM evaluated GROUP BY window_start
        )"""


def regression_metrics(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str = "day",
    labels_as_of: datetime | None = None,
) -> PerformanceReport:
    """Regression metrics per window of inference logs joined with late labels.

    Args:
        logs: Inference logs with ``request_id``, ``timestamp`` and a numeric ``prediction``.
        labels: Labels with ``request_id``, a numeric ``label`` and optionally
            ``label_timestamp``; a relation of the same DuckDB connection as ``logs``.
        window: Window unit: ``minute``, ``hour``, ``day``, ``week`` or ``month``.
        labels_as_of: When given, only labels with ``label_timestamp <= labels_as_of`` count.

    Returns:
        The per-window and overall metrics (MAE, RMSE, MAPE, R²).

    Raises:
        ValueError: A column is missing or not numeric, the window is unknown, or the
            relations belong to different connections.
    """
    joined, flags = _regression_flags(logs, labels, window, labels_as_of)
    label_sums = "sum((_lab - _mean) * (_lab - _mean)) AS ss_tot, min(_lab) = max(_lab) AS constant_labels"
    sql = f"""
        WITH {_keyed_sql(flags)},
        {_regression_sums_sql("keyed", label_sums)}
        SELECT agg.*, {_window_end_sql(window).replace("window_start", "agg.window_start")} AS window_end,
               errors.* EXCLUDE (window_start)
        FROM agg LEFT JOIN errors ON {_same_key("agg", "errors")}
        ORDER BY agg.window_start NULLS LAST
    """
    rows = _fetch(joined.query("_mms_joined", sql))
    window_rows, overall_row = _split_overall(rows)
    empty = {
        "window_start": None,
        "window_end": None,
        **dict.fromkeys(("n", "n_labelled", "n_invalid_label", "n_invalid_prediction", "n_evaluated"), 0),
    }
    return PerformanceReport(
        task="regression",
        window=window,
        windows=tuple(_regression_window(row) for row in window_rows),
        overall=_regression_window(overall_row or empty),
        n_missing_timestamp=_count_missing_timestamp(logs),
        labels_as_of=labels_as_of,
    )


def _regression_window(row: dict[str, Any]) -> RegressionWindow:
    n, n_labelled, n_eval = int(row["n"]), int(row["n_labelled"]), int(row["n_evaluated"])
    reasons: list[str] = []
    mae = rmse = mape = r2 = None
    n_mape = int(row.get("n_mape") or 0)
    if n_eval == 0:
        reasons.append(_coverage_reason(n, n_labelled).replace("a valid score", "a valid prediction"))
    else:
        mae = float(row["abs_sum"]) / n_eval
        rmse = math.sqrt(float(row["sq_sum"]) / n_eval)
        if n_mape:
            mape = float(row["ape_sum"]) / n_mape
        else:
            reasons.append("all labels are 0: mape undefined")
        if n_eval < 2:
            reasons.append("fewer than 2 labelled predictions: r2 undefined")
        elif row["constant_labels"]:
            reasons.append("labels are constant: r2 undefined")
        else:
            r2 = 1.0 - float(row["sq_sum"]) / float(row["ss_tot"])
    return RegressionWindow(
        window_start=row["window_start"],
        window_end=row["window_end"],
        n=n,
        n_labelled=n_labelled,
        label_coverage=_ratio(n_labelled, n),
        n_invalid_label=int(row["n_invalid_label"]),
        n_invalid_prediction=int(row["n_invalid_prediction"]),
        n_evaluated=n_eval,
        mae=mae,
        rmse=rmse,
        mape=mape,
        n_mape_skipped=int(row.get("n_mape_skipped") or 0),
        r2=r2,
        status=STATUS_INSUFFICIENT if reasons else STATUS_OK,
        reason="; ".join(reasons) or None,
    )


# --------------------------------------------------------------------------- latency


def latency_metrics(logs: duckdb.DuckDBPyRelation, window: str = "day") -> LatencyReport:
    """Latency quantiles and throughput per window of inference logs.

    Args:
        logs: Inference logs with ``timestamp`` and a numeric ``latency_ms``.
        window: Window unit: ``minute``, ``hour``, ``day``, ``week`` or ``month``.

    Returns:
        The per-window and overall latency report.

    Raises:
        ValueError: A column is missing or of the wrong type, or the window is unknown.
    """
    _check_window(window)
    log_types = _require_columns(logs, ["timestamp", "latency_ms"], "logs")
    if not _is_numeric(log_types["latency_ms"]):
        raise ValueError(f"column 'latency_ms' must be numeric, not {log_types['latency_ms']}")
    window_start = _window_expr(log_types["timestamp"], window)
    quantiles = ", ".join(repr(q) for q in LATENCY_QUANTILES)
    flags = f"""
        SELECT window_start, _lat, coalesce(isfinite(_lat) AND _lat >= 0, false) AS _ok FROM (
            SELECT {window_start} AS window_start, CAST(latency_ms AS DOUBLE) AS _lat
            FROM _mms_logs WHERE "timestamp" IS NOT NULL
        )
    """
    sql = f"""
        WITH {_keyed_sql(flags)}
        SELECT window_start, {_window_end_sql(window)} AS window_end,
               epoch({_window_end_sql(window)}) - epoch(window_start) AS window_seconds,
               count(*) AS n,
               count(*) FILTER (WHERE _ok) AS n_latency,
               quantile_cont(_lat, [{quantiles}]) FILTER (WHERE _ok) AS quantiles,
               avg(_lat) FILTER (WHERE _ok) AS mean_ms,
               max(_lat) FILTER (WHERE _ok) AS max_ms
        FROM keyed GROUP BY window_start
        ORDER BY window_start NULLS LAST
    """
    rows = _fetch(logs.query("_mms_logs", sql))
    window_rows, overall_row = _split_overall(rows)
    windows = tuple(_latency_window(row) for row in window_rows)
    if overall_row is None:
        overall_row = {"window_start": None, "window_end": None, "n": 0, "n_latency": 0}
    elif windows:
        # The overall throughput spans from the first window start to the last window end.
        first, last = windows[0], windows[-1]
        assert first.window_start is not None and last.window_end is not None
        overall_row["window_seconds"] = (last.window_end - first.window_start).total_seconds()
    return LatencyReport(
        window=window,
        windows=windows,
        overall=_latency_window(overall_row),
        n_missing_timestamp=_count_missing_timestamp(logs),
    )


def _latency_window(row: dict[str, Any]) -> LatencyWindow:
    n, n_latency = int(row["n"]), int(row["n_latency"])
    quantiles = row.get("quantiles") if n_latency else None
    p50, p95, p99 = (float(q) for q in quantiles) if quantiles else (None, None, None)
    seconds = row.get("window_seconds")
    reason = None
    if n_latency == 0:
        reason = "no requests" if n == 0 else "no valid latency in the window"
    return LatencyWindow(
        window_start=row["window_start"],
        window_end=row["window_end"],
        n=n,
        n_latency=n_latency,
        n_invalid_latency=n - n_latency,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(row["mean_ms"]) if n_latency else None,
        max_ms=float(row["max_ms"]) if n_latency else None,
        throughput_rps=n / float(seconds) if n and seconds else None,
        status=STATUS_INSUFFICIENT if reason else STATUS_OK,
        reason=reason,
    )


# --------------------------------------------------------------------------- mergeable partials
#
# The scaled-out monitoring job (docs/SCALE_OUT.md) computes these per work unit and merges them
# without reading the logs again. ``*_partial`` aggregates one set of rows; ``*_from_partials``
# combines any number of partials (of disjoint rows) into the report. A single partial of all rows
# and the partials of any split of them give the same counts, bins and quantiles exactly, and sums
# equal up to the order of floating-point addition.

LATENCY_RELATIVE_ACCURACY = 0.001
"""Relative error bound of the binned latency quantiles (0.1 %).

A latency ``x > 0`` falls in bin ``i = ceil(ln(x) / ln(gamma))`` with
``gamma = (1 + a) / (1 - a)``; the bin covers ``(gamma**(i-1), gamma**i]`` and is represented by
``2 gamma**i / (gamma + 1)``, within ``a`` of every value of the bin (relative). 0 has a bin of its own
(exact); the smallest and largest latency are kept exactly. A quantile interpolates linearly between
the values of the closest ranks (``quantile_cont``), so it is within ``a`` of the exact
``quantile_cont`` too (up to floating-point rounding at a bin boundary).
"""

AUC_SCORE_BINS = 16384
"""Equal-width score bins of the mergeable ROC AUC (``bin = min(floor(score * B), B - 1)``).

Scores of one bin count as tied (half a win), so the binned AUC differs from the exact one by at
most ``sum_b pos_b * neg_b / (2 * P * N)`` over the bins: about ``1 / (2 B) = 3e-5`` for scores
spread over ``[0, 1]``.
"""

_LATENCY_GAMMA = (1.0 + LATENCY_RELATIVE_ACCURACY) / (1.0 - LATENCY_RELATIVE_ACCURACY)
_LN_GAMMA = math.log(_LATENCY_GAMMA)

LATENCY_PARTIAL_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us")),
        ("bin", pa.int64()),
        ("count", pa.int64()),
        ("n", pa.int64()),
        ("n_latency", pa.int64()),
        ("n_zero", pa.int64()),
        ("sum_ms", pa.float64()),
        ("min_ms", pa.float64()),
        ("max_ms", pa.float64()),
    ]
)
"""Rows of a latency partial: one summary row per window (``bin`` NULL), one row per non-empty
latency bin (``bin``, ``count``), and one row with ``window_start`` NULL whose ``n`` counts the requests
without a timestamp."""

_CLASSIFICATION_COUNTS = (
    "n",
    "n_labelled",
    "n_invalid_label",
    "n_invalid_score",
    "n_evaluated",
    "n_positive",
    "n_negative",
    "tp",
    "fp",
    "tn",
    "fn",
)
CLASSIFICATION_PARTIAL_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us")),
        ("kind", pa.string()),
        ("bin", pa.int64()),
        *((name, pa.int64()) for name in _CLASSIFICATION_COUNTS),
        ("log_loss_sum", pa.float64()),
        ("pos", pa.int64()),
        ("neg", pa.int64()),
        ("score_sum", pa.float64()),
    ]
)
"""Rows of a classification partial, by ``kind``: ``window`` (the confusion and validity counts and
the log-loss sum of a window), ``auc`` (positives and negatives per score bin of
:data:`AUC_SCORE_BINS`), ``ece`` (positives, negatives and the score sum per calibration bin) and
``missing_timestamp`` (``n``: predictions without a timestamp, ``window_start`` NULL)."""

_REGRESSION_COUNTS = ("n", "n_labelled", "n_invalid_label", "n_invalid_prediction", "n_evaluated")
REGRESSION_PARTIAL_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us")),
        *((name, pa.int64()) for name in _REGRESSION_COUNTS),
        ("abs_sum", pa.float64()),
        ("sq_sum", pa.float64()),
        ("ape_sum", pa.float64()),
        ("n_mape", pa.int64()),
        ("n_mape_skipped", pa.int64()),
        ("label_mean", pa.float64()),
        ("label_m2", pa.float64()),
        ("label_min", pa.float64()),
        ("label_max", pa.float64()),
    ]
)
"""Rows of a regression partial: one per window (``window_start`` NULL: the predictions without a
timestamp, in ``n``). The labels' mean and sum of squared deviations merge by Chan's formula."""


def _partial_table(rel: duckdb.DuckDBPyRelation, schema: pa.Schema) -> pa.Table:
    table = rel.to_arrow_table()
    return pa.Table.from_arrays(
        [table.column(field.name).cast(field.type) for field in schema], schema=schema
    )


def latency_partial(
    logs: duckdb.DuckDBPyRelation, window: str = "day", *, table: pa.Table | None = None
) -> pa.Table:
    """Mergeable latency aggregates of some inference logs, per window.

    Args:
        logs: Inference logs with ``timestamp`` and a numeric ``latency_ms``.
        window: Window unit: ``minute``, ``hour``, ``day``, ``week`` or ``month``.
        table: The Arrow table behind ``logs``, when there is one: the partial is then computed from
            it in NumPy where it can be (``analytics._arrow_partials``: the same rows, sums up to the
            order of addition), else by the query.

    Returns:
        A table of :data:`LATENCY_PARTIAL_SCHEMA`; its size grows with the windows and the spread
        of the latencies (a few thousand bins per window), not with the rows.

    Raises:
        ValueError: A column is missing or of the wrong type, or the window is unknown.
    """
    _check_window(window)
    log_types = _require_columns(logs, ["timestamp", "latency_ms"], "logs")
    if not _is_numeric(log_types["latency_ms"]):
        raise ValueError(f"column 'latency_ms' must be numeric, not {log_types['latency_ms']}")
    window_start = _window_expr(log_types["timestamp"], window)
    if table is not None:
        computed = latency_partial_of(table, window, LATENCY_PARTIAL_SCHEMA, _LN_GAMMA)
        if computed is not None:
            return computed
    sql = f"""
        WITH flags AS MATERIALIZED (
            SELECT window_start, _lat, coalesce(isfinite(_lat) AND _lat >= 0, false) AS _ok FROM (
                SELECT {window_start} AS window_start, CAST(latency_ms AS DOUBLE) AS _lat
                FROM _mms_logs WHERE "timestamp" IS NOT NULL
            )
        )
        SELECT window_start, CAST(NULL AS BIGINT) AS bin, CAST(NULL AS BIGINT) AS count,
               count(*) AS n, count(*) FILTER (WHERE _ok) AS n_latency,
               count(*) FILTER (WHERE _ok AND _lat = 0) AS n_zero,
               sum(_lat) FILTER (WHERE _ok) AS sum_ms,
               min(_lat) FILTER (WHERE _ok) AS min_ms, max(_lat) FILTER (WHERE _ok) AS max_ms
        FROM flags GROUP BY window_start
        UNION ALL
        SELECT window_start, CAST(ceil(ln(_lat) / {_double(_LN_GAMMA)}) AS BIGINT) AS bin,
               count(*) AS count, NULL, NULL, NULL, NULL, NULL, NULL
        FROM flags WHERE _ok AND _lat > 0 GROUP BY window_start, bin
        UNION ALL
        SELECT NULL, NULL, NULL, count(*), NULL, NULL, NULL, NULL, NULL
        FROM _mms_logs WHERE "timestamp" IS NULL HAVING count(*) > 0
        ORDER BY window_start NULLS FIRST, bin NULLS FIRST
    """
    return _partial_table(logs.query("_mms_logs", sql), LATENCY_PARTIAL_SCHEMA)


def _window_end(start: datetime, window: str) -> datetime:
    if window == "month":
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month)
    step = {"minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400}[window]
    return start + timedelta(seconds=step)


def _concat_partials(partials: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [table.select(schema.names).cast(schema) for table in partials]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _binned_value(
    rank: int, n: int, n_zero: int, edges: np.ndarray, bins: np.ndarray, low: float, high: float
):
    """The value of the ``rank``-th smallest latency (0-based) under the binned method."""
    if rank <= 0:
        return low
    if rank >= n - 1:
        return high
    if rank < n_zero:
        return 0.0
    position = int(np.searchsorted(edges, rank - n_zero, side="right"))
    representative = 2.0 * math.exp(int(bins[position]) * _LN_GAMMA) / (_LATENCY_GAMMA + 1.0)
    return min(max(representative, low), high)


def binned_latency_quantiles(
    n_zero: int, bins: Sequence[tuple[int, int]], low: float, high: float
) -> tuple[float, ...] | None:
    """p50, p95 and p99 of binned latencies (see :data:`LATENCY_RELATIVE_ACCURACY`).

    Args:
        n_zero: Latencies equal to 0.
        bins: ``(bin, count)`` of the positive latencies, any order, each bin once.
        low: Smallest latency.
        high: Largest latency.

    Returns:
        The quantiles of :data:`LATENCY_QUANTILES`, or ``None`` when there is no latency.
    """
    ordered = sorted(bins)
    keys = np.array([b for b, _ in ordered], dtype=np.int64)
    counts = np.array([count for _, count in ordered], dtype=np.int64)
    return _sorted_bin_quantiles(n_zero, keys, counts, low, high)


def _sorted_bin_quantiles(
    n_zero: int, keys: np.ndarray, counts: np.ndarray, low: float, high: float
) -> tuple[float, ...] | None:
    """:func:`binned_latency_quantiles` of bins given as arrays, ``keys`` sorted and distinct."""
    n = n_zero + int(counts.sum())
    if n == 0:
        return None
    edges = np.cumsum(counts)
    result = []
    for q in LATENCY_QUANTILES:
        position = (n - 1) * q
        below = math.floor(position)
        lo = _binned_value(below, n, n_zero, edges, keys, low, high)
        if below == position:
            result.append(lo)
            continue
        hi = _binned_value(below + 1, n, n_zero, edges, keys, low, high)
        result.append(lo + (hi - lo) * (position - below))
    return tuple(result)


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts in an array (empty for an empty array)."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))


def _summed_bins(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct bins, sorted, with the counts of each bin added up."""
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    first = _run_starts(keys)
    return keys[first], np.add.reduceat(counts, first) if len(first) else counts[:0]


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    total = 0.0
    for value in present:  # in partial order: the same order gives the same sum
        total += value
    return total if present else None


def latency_from_partials(partials: Sequence[pa.Table], window: str = "day") -> LatencyReport:
    """The latency report of the rows of some partials (:func:`latency_partial`).

    Counts, the largest latency and throughput are exact; the mean is a sum over partials divided by
    the count; p50/p95/p99 are binned (:data:`LATENCY_RELATIVE_ACCURACY`) and the same for any split of
    the rows into partials.

    Args:
        partials: Partials of disjoint sets of rows, of the same window unit.
        window: Window unit of the partials.

    Returns:
        The per-window and overall report, like :func:`latency_metrics`.
    """
    _check_window(window)
    table = _concat_partials(partials, LATENCY_PARTIAL_SCHEMA)
    is_bin = pc.fill_null(
        pc.and_(pc.is_valid(table.column("bin")), pc.is_valid(table.column("window_start"))), False
    )
    summary: dict[Any, dict[str, Any]] = {}
    missing_timestamp = 0
    # One summary row per window and partial (and the predictions without a timestamp): few rows.
    for row in table.filter(pc.invert(is_bin)).to_pylist():
        start = row["window_start"]
        if start is None:
            missing_timestamp += int(row["n"] or 0)
        elif row["bin"] is None:
            item = summary.setdefault(
                start, {"n": 0, "n_latency": 0, "n_zero": 0, "sums": [], "mins": [], "maxs": []}
            )
            for name in ("n", "n_latency", "n_zero"):
                item[name] += int(row[name])
            item["sums"].append(row["sum_ms"])
            item["mins"].append(row["min_ms"])
            item["maxs"].append(row["max_ms"])
    # The bins (thousands per window) add up in NumPy: window -> (bins, counts).
    bin_rows = table.filter(is_bin)
    bin_starts = pc.cast(bin_rows.column("window_start"), pa.int64()).to_numpy()
    bin_keys = bin_rows.column("bin").to_numpy()
    bin_counts = pc.fill_null(bin_rows.column("count"), 0).to_numpy()
    bins: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    order = np.argsort(bin_starts, kind="stable")
    bin_starts, bin_keys, bin_counts = bin_starts[order], bin_keys[order], bin_counts[order]
    window_first = _run_starts(bin_starts).tolist()
    window_end = [*window_first[1:], len(bin_starts)] if window_first else []
    for a, b in zip(window_first, window_end, strict=True):
        start = _EPOCH_NAIVE + timedelta(microseconds=int(bin_starts[a]))
        bins[start] = _summed_bins(bin_keys[a:b], bin_counts[a:b])

    def merged(keys: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        found = [bins[key] for key in keys if key in bins]
        if len(found) == 1:
            return found[0]
        return _summed_bins(
            np.concatenate([k for k, _ in found] or [np.zeros(0, dtype=np.int64)]),
            np.concatenate([c for _, c in found] or [np.zeros(0, dtype=np.int64)]),
        )

    def window_row(
        start: Any, end: Any, seconds: float | None, parts: list[tuple[Any, dict]]
    ) -> LatencyWindow:
        n = sum(item["n"] for _, item in parts)
        n_latency = sum(item["n_latency"] for _, item in parts)
        n_zero = sum(item["n_zero"] for _, item in parts)
        keys, counts = merged([key for key, _ in parts])
        lows = [v for _, item in parts for v in item["mins"] if v is not None]
        highs = [v for _, item in parts for v in item["maxs"] if v is not None]
        quantiles = _sorted_bin_quantiles(n_zero, keys, counts, min(lows), max(highs)) if n_latency else None
        row = {
            "window_start": start,
            "window_end": end,
            "window_seconds": seconds,
            "n": n,
            "n_latency": n_latency,
            "quantiles": quantiles,
            "mean_ms": (_sum_or_none([v for _, item in parts for v in item["sums"]]) or 0.0) / n_latency
            if n_latency
            else None,
            "max_ms": max(highs) if highs else None,
        }
        return _latency_window(row)

    windows = []
    for start in sorted(summary):
        end = _window_end(start, window)
        windows.append(window_row(start, end, (end - start).total_seconds(), [(start, summary[start])]))
    if windows:
        first, last = windows[0], windows[-1]
        assert first.window_start is not None and last.window_end is not None
        seconds = (last.window_end - first.window_start).total_seconds()
        overall = window_row(None, None, seconds, sorted(summary.items()))
    else:
        overall = _latency_window({"window_start": None, "window_end": None, "n": 0, "n_latency": 0})
    return LatencyReport(
        window=window, windows=tuple(windows), overall=overall, n_missing_timestamp=missing_timestamp
    )


def classification_partial(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str = "day",
    positive_label: Any = 1,
    threshold: float | None = 0.5,
    labels_as_of: datetime | None = None,
    *,
    labels_unique: bool = False,
    table: pa.Table | None = None,
    labels_table: pa.Table | None = None,
) -> pa.Table:
    """Mergeable classification aggregates of some inference logs joined with their labels.

    The arguments and their checks are those of :func:`classification_metrics`. Each request must
    have all its label rows in ``labels`` (one label per request is kept, as there).
    ``labels_unique``: ``labels`` come from :func:`latest_labels` (same ``labels_as_of``), so they
    are joined without being deduplicated again. ``table`` and ``labels_table``: the Arrow tables
    behind ``logs`` and ``labels``, when there are: as in :func:`latency_partial` (without
    ``labels_as_of``, and while no request id has two labels). The relations are then read for
    their columns only, and joined (so checked to share a connection) only if the tables cannot
    answer.

    Returns:
        A table of :data:`CLASSIFICATION_PARTIAL_SCHEMA` (size: windows x non-empty score bins).

    Raises:
        ValueError: As :func:`classification_metrics`.
    """
    _classification_types(logs, labels, window, positive_label, threshold, labels_as_of)
    if table is not None and labels_table is not None and labels_as_of is None:
        computed = classification_partial_of(
            table,
            labels_table,
            window,
            positive_label,
            threshold,
            CLASSIFICATION_PARTIAL_SCHEMA,
            (AUC_SCORE_BINS, ECE_BINS),
            _LOG_LOSS_EPS,
        )
        if computed is not None:
            return _with_missing_timestamps(
                *computed, CLASSIFICATION_PARTIAL_SCHEMA, kind="missing_timestamp"
            )
    joined, flags, _decision = _classification_flags(
        logs, labels, window, positive_label, threshold, labels_as_of, labels_unique
    )
    sql = f"""
        WITH flags AS MATERIALIZED ({flags})
        SELECT window_start, 'window' AS kind, CAST(NULL AS BIGINT) AS bin, {_CLASSIFICATION_AGGREGATES_SQL},
               CAST(NULL AS BIGINT) AS pos, CAST(NULL AS BIGINT) AS neg, CAST(NULL AS DOUBLE) AS score_sum
        FROM flags GROUP BY window_start
        UNION ALL BY NAME
        SELECT window_start, 'auc' AS kind,
               CAST(least(floor(_s * {AUC_SCORE_BINS}), {AUC_SCORE_BINS - 1}) AS BIGINT) AS bin,
               sum(_y) AS pos, count(*) - sum(_y) AS neg
        FROM flags WHERE _eval GROUP BY window_start, bin
        UNION ALL BY NAME
        SELECT window_start, 'ece' AS kind,
               CAST(least(floor(_s * {ECE_BINS}), {ECE_BINS - 1}) AS BIGINT) AS bin,
               sum(_y) AS pos, count(*) - sum(_y) AS neg, sum(_s) AS score_sum
        FROM flags WHERE _eval GROUP BY window_start, bin
        ORDER BY window_start, kind DESC, bin NULLS FIRST
    """
    table = _partial_table(joined.query("_mms_joined", sql), CLASSIFICATION_PARTIAL_SCHEMA)
    return _with_missing_timestamps(
        table, _count_missing_timestamp(logs), CLASSIFICATION_PARTIAL_SCHEMA, kind="missing_timestamp"
    )


def _with_missing_timestamps(table: pa.Table, missing: int, schema: pa.Schema, **columns: Any) -> pa.Table:
    """A partial with, when there are rows without a timestamp, a last row counting them (``n``),
    its window NULL and the other ``columns`` set as given."""
    if not missing:
        return table
    extra: dict[str, list[Any]] = {name: [None] for name in schema.names}
    extra.update({name: [value] for name, value in columns.items()}, n=[missing])
    return pa.concat_tables([table, pa.table(extra, schema=schema)])


class _AucBins:
    """The ``auc`` rows of classification partials: positives and negatives per (window, score bin).

    :meth:`twice_u` is the Mann-Whitney ``2U`` of some windows' rows from their bins (ties within a
    bin count half): the integer of a loop over the sorted bins, computed in NumPy.
    """

    _EPOCH = datetime(1970, 1, 1)

    def __init__(self, rows: pa.Table) -> None:
        rows = rows.filter(pc.is_valid(rows.column("window_start")))
        starts = pc.cast(rows.column("window_start"), pa.int64()).to_numpy()
        bins = pc.fill_null(rows.column("bin"), 0).to_numpy()
        order = np.lexsort((bins, starts))
        self.starts, self.bins = starts[order], bins[order]
        self.pos = pc.fill_null(rows.column("pos"), 0).to_numpy()[order]
        self.neg = pc.fill_null(rows.column("neg"), 0).to_numpy()[order]
        firsts = np.flatnonzero(np.r_[True, self.starts[1:] != self.starts[:-1]]) if len(order) else []
        bounds = [*map(int, firsts), len(order)]
        # Window start (a naive datetime, as to_pylist gives it) -> its rows [lo, hi).
        self.windows = {
            self._EPOCH + timedelta(microseconds=int(self.starts[lo])): (lo, hi)
            for lo, hi in pairwise(bounds)
        }

    def twice_u(self, keys: Sequence[Any]) -> int:
        """``2U`` of the rows of the windows ``keys`` (window starts as in the partials)."""
        spans = [self.windows[key] for key in keys if key in self.windows]
        if not spans:
            return 0
        pieces = [np.arange(lo, hi) for lo, hi in spans]
        chosen = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        bins, pos, neg = self.bins[chosen], self.pos[chosen], self.neg[chosen]
        if int(pos.sum()) * int(neg.sum()) >= 2**60:  # int64 could overflow: exact Python integers
            pos, neg = pos.astype(object), neg.astype(object)
        if len(spans) > 1:
            order = np.argsort(bins, kind="stable")
            bins, pos, neg = bins[order], pos[order], neg[order]
        first = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        pos, neg = np.add.reduceat(pos, first), np.add.reduceat(neg, first)
        below = np.cumsum(neg) - neg
        return int((pos * (2 * below + neg)).sum())


def classification_from_partials(
    partials: Sequence[pa.Table],
    window: str = "day",
    positive_label: Any = 1,
    threshold: float | None = 0.5,
    labels_as_of: datetime | None = None,
) -> PerformanceReport:
    """The classification report of the rows of some partials (:func:`classification_partial`).

    Counts and the confusion-matrix metrics are exact; log loss and ECE are sums over partials
    (equal to one pass up to the order of addition); ROC AUC is computed from the score bins
    (:data:`AUC_SCORE_BINS`) and is the same for any split of the rows.

    Args:
        partials: Partials of disjoint sets of rows, made with the same arguments.
        window: Window unit of the partials.
        positive_label: The positive label the partials used (reported).
        threshold: The threshold the partials used (reported as the decision).
        labels_as_of: The label cut-off the partials used (reported).

    Returns:
        The per-window and overall report, like :func:`classification_metrics`.
    """
    _check_window(window)
    table = _concat_partials(partials, CLASSIFICATION_PARTIAL_SCHEMA)
    counts: dict[Any, dict[str, Any]] = {}
    ece: dict[Any, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(lambda: [0, []]))
    missing = 0
    is_auc = pc.equal(table.column("kind"), "auc")
    # The score-bin rows (up to AUC_SCORE_BINS per window) are summed in NumPy; the others are few.
    auc_rows = _AucBins(table.filter(is_auc))
    for row in table.filter(pc.invert(pc.fill_null(is_auc, False))).to_pylist():
        start, kind = row["window_start"], row["kind"]
        if kind == "missing_timestamp":
            missing += int(row["n"])
        elif kind == "window":
            item = counts.setdefault(start, {**dict.fromkeys(_CLASSIFICATION_COUNTS, 0), "log_loss": []})
            for name in _CLASSIFICATION_COUNTS:
                item[name] += int(row[name])
            item["log_loss"].append(row["log_loss_sum"])
        elif kind == "ece":
            entry = ece[start][int(row["bin"])]
            entry[0] += int(row["pos"])
            entry[1].append(row["score_sum"])

    def window_row(start: Any, end: Any, keys: list[Any]) -> ClassificationWindow:
        row: dict[str, Any] = {"window_start": start, "window_end": end}
        for name in _CLASSIFICATION_COUNTS:
            row[name] = sum(counts[key][name] for key in keys)
        row["log_loss_sum"] = _sum_or_none([v for key in keys for v in counts[key]["log_loss"]])
        ece_bins: dict[int, list[Any]] = defaultdict(lambda: [0, []])
        for key in keys:
            for b, (pos, sums) in ece.get(key, {}).items():
                ece_bins[b][0] += pos
                ece_bins[b][1].extend(sums)
        row["auc_twice_u"] = auc_rows.twice_u(keys)
        gaps = [abs(pos - (_sum_or_none(sums) or 0.0)) for _b, (pos, sums) in sorted(ece_bins.items())]
        row["ece_gap_sum"] = _sum_or_none(gaps)
        return _classification_window(row)

    windows = tuple(window_row(start, _window_end(start, window), [start]) for start in sorted(counts))
    overall = (
        window_row(None, None, sorted(counts))
        if counts
        else _classification_window(_empty_classification_row())
    )
    return PerformanceReport(
        task="classification",
        window=window,
        windows=windows,
        overall=overall,
        n_missing_timestamp=missing,
        decision="prediction column" if threshold is None else f"score >= {float(threshold)!r}",
        positive_label=positive_label,
        labels_as_of=labels_as_of,
    )


def regression_partial(
    logs: duckdb.DuckDBPyRelation,
    labels: duckdb.DuckDBPyRelation,
    window: str = "day",
    labels_as_of: datetime | None = None,
    *,
    labels_unique: bool = False,
    table: pa.Table | None = None,
    labels_table: pa.Table | None = None,
) -> pa.Table:
    """Mergeable regression aggregates of some inference logs joined with their labels.

    The arguments and their checks are those of :func:`regression_metrics`; ``labels_unique``,
    ``table`` and ``labels_table`` are those of :func:`classification_partial`.

    Returns:
        A table of :data:`REGRESSION_PARTIAL_SCHEMA`, one row per window.

    Raises:
        ValueError: As :func:`regression_metrics`.
    """
    _regression_types(logs, labels, window, labels_as_of)
    if table is not None and labels_table is not None and labels_as_of is None:
        computed = regression_partial_of(table, labels_table, window, REGRESSION_PARTIAL_SCHEMA, _MAPE_EPS)
        if computed is not None:
            return _with_missing_timestamps(*computed, REGRESSION_PARTIAL_SCHEMA)
    joined, flags = _regression_flags(logs, labels, window, labels_as_of, labels_unique)
    label_sums = (
        "avg(_lab) AS label_mean, sum((_lab - _mean) * (_lab - _mean)) AS label_m2, "
        "min(_lab) AS label_min, max(_lab) AS label_max"
    )
    sql = f"""
        WITH flags AS MATERIALIZED ({flags}),
        {_regression_sums_sql("flags", label_sums)}
        SELECT agg.*, errors.* EXCLUDE (window_start)
        FROM agg LEFT JOIN errors ON {_same_key("agg", "errors")}
        ORDER BY agg.window_start
    """
    table = _partial_table(joined.query("_mms_joined", sql), REGRESSION_PARTIAL_SCHEMA)
    return _with_missing_timestamps(table, _count_missing_timestamp(logs), REGRESSION_PARTIAL_SCHEMA)


def regression_from_partials(
    partials: Sequence[pa.Table], window: str = "day", labels_as_of: datetime | None = None
) -> PerformanceReport:
    """The regression report of the rows of some partials (:func:`regression_partial`).

    Counts are exact; MAE, RMSE and MAPE are sums over partials; R² uses the labels' sum of squared
    deviations merged by Chan's formula (equal to the two-pass value to about 1e-15 relative).

    Args:
        partials: Partials of disjoint sets of rows.
        window: Window unit of the partials.
        labels_as_of: The label cut-off the partials used (reported).

    Returns:
        The per-window and overall report, like :func:`regression_metrics`.
    """
    _check_window(window)
    table = _concat_partials(partials, REGRESSION_PARTIAL_SCHEMA)
    by_window: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    missing = 0
    for row in table.to_pylist():
        if row["window_start"] is None:
            missing += int(row["n"])
        else:
            by_window[row["window_start"]].append(row)

    def window_row(start: Any, end: Any, rows: list[dict[str, Any]]) -> RegressionWindow:
        merged: dict[str, Any] = {"window_start": start, "window_end": end}
        for name in (*_REGRESSION_COUNTS, "n_mape", "n_mape_skipped"):
            merged[name] = sum(int(r[name] or 0) for r in rows)
        for name in ("abs_sum", "sq_sum", "ape_sum"):
            merged[name] = _sum_or_none([r[name] for r in rows])
        count, mean, m2 = 0, 0.0, 0.0
        lows, highs = [], []
        for r in rows:
            n_b = int(r["n_evaluated"])
            if not n_b or r["label_mean"] is None:
                continue
            if count == 0:
                count, mean, m2 = n_b, float(r["label_mean"]), float(r["label_m2"])
            else:
                delta = float(r["label_mean"]) - mean
                total = count + n_b
                m2 = m2 + float(r["label_m2"]) + delta * delta * count * n_b / total
                mean = mean + delta * n_b / total
                count = total
            lows.append(r["label_min"])
            highs.append(r["label_max"])
        merged["ss_tot"] = m2
        merged["constant_labels"] = bool(lows) and min(lows) == max(highs)
        return _regression_window(merged)

    windows = tuple(
        window_row(start, _window_end(start, window), by_window[start]) for start in sorted(by_window)
    )
    all_rows = [r for start in sorted(by_window) for r in by_window[start]]
    overall = window_row(None, None, all_rows)
    return PerformanceReport(
        task="regression",
        window=window,
        windows=windows,
        overall=overall,
        n_missing_timestamp=missing,
        labels_as_of=labels_as_of,
    )
