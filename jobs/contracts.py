"""Data contracts of the Parquet datasets under ``MMS_DATA_URI``.

Each dataset is a hive-partitioned folder (``<dataset>/<key>=<value>/...``) so a
query for one model, environment and date range opens only those files. This
module names the datasets, their partition keys and their columns as pyarrow
schemas, and validates tables *before* they are written: a validator returns
every :class:`ContractViolation` it finds (an empty list means the table
honours the contract) and :func:`require_valid` turns a non-empty list into a
:class:`ContractError`.

Partition keys live in the path, never in the files: ``analytics.store``
refuses a table that repeats them and gives them back as text columns on read.
The validators therefore accept a table with or without the partition-key
columns (the file as written, or the rows as read back); when present they
must be text equal to the partition value.

Feature columns are stored as-is under their own names (no prefix); which
columns are features is a per-model list (recorded on the registered model
version and in its reference profile) that the caller passes to the
validators. Segment columns are the ones named ``segment_<name>``.

The full description of every dataset lives in ``docs/DATA_CONTRACTS.md``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import pyarrow as pa
import pyarrow.compute as pc

from analytics.store import InvalidName, validate_key_segment

# Dataset names: the first path segment under MMS_DATA_URI.
INFERENCE_LOGS = "inference_logs"
LABELS = "labels"
TRAINING_DATA = "training_data"
REFERENCE_PROFILES = "reference_profiles"
PROFILES = "profiles"
METRICS = "metrics"
SEGMENT_METRICS = "segment_metrics"
REQUEST_ERRORS = "request_errors"
DATASETS = (
    INFERENCE_LOGS,
    LABELS,
    TRAINING_DATA,
    REFERENCE_PROFILES,
    PROFILES,
    METRICS,
    SEGMENT_METRICS,
    REQUEST_ERRORS,
)

# Partition keys, outermost first. ``date`` is an ISO day (YYYY-MM-DD, UTC).
PARTITION_KEYS: Mapping[str, tuple[str, ...]] = {
    INFERENCE_LOGS: ("project", "model", "environment", "date"),
    LABELS: ("project", "model", "environment", "date"),
    TRAINING_DATA: ("project", "model"),
    REFERENCE_PROFILES: ("project", "model", "version"),
    PROFILES: ("project", "model", "environment", "date"),
    METRICS: ("project", "model", "environment", "date"),
    SEGMENT_METRICS: ("project", "model", "environment", "date"),
    REQUEST_ERRORS: ("project", "model", "environment", "date"),
}

SEGMENT_PREFIX = "segment_"
LABEL_COLUMN = "label"
PREDICTION_COLUMN = "prediction"
SCORE_COLUMN = "score"
TIMESTAMP_COLUMN = "timestamp"

UTC_MICROS = pa.timestamp("us", tz="UTC")
UTC_ALIASES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z"})
"""Time-zone names of UTC: DuckDB hands TIMESTAMPTZ back as ``Etc/UTC``."""

INFERENCE_SCHEMA = pa.schema(
    [
        pa.field("version", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field(TIMESTAMP_COLUMN, UTC_MICROS, nullable=False),
        pa.field(PREDICTION_COLUMN, pa.float64(), nullable=True),
        pa.field(SCORE_COLUMN, pa.float64(), nullable=True),
        pa.field("latency_ms", pa.float64(), nullable=True),
    ]
)
"""Fixed file columns of ``inference_logs``; feature and ``segment_*`` columns come on top."""

LABELS_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field(LABEL_COLUMN, pa.float64(), nullable=False),
        pa.field("label_timestamp", UTC_MICROS, nullable=False),
    ]
)
"""File columns of ``labels``; its ``date`` partition is the day of the *request*."""

TRAINING_SCHEMA = pa.schema([pa.field(LABEL_COLUMN, pa.float64(), nullable=False)])
"""Fixed file columns of ``training_data``; feature and ``segment_*`` columns come on top."""

METRICS_SCHEMA = pa.schema(
    [
        pa.field("version", pa.string(), nullable=False),
        pa.field("window_start", UTC_MICROS, nullable=False),
        pa.field("window_end", UTC_MICROS, nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("statistic", pa.float64(), nullable=True),
        pa.field("p_value", pa.float64(), nullable=True),
        pa.field("threshold", pa.float64(), nullable=True),
        pa.field("drifted", pa.bool_(), nullable=True),
        pa.field("status", pa.string(), nullable=False),
        pa.field("n_reference", pa.int64(), nullable=False),
        pa.field("n_current", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=True),
    ]
)
"""File columns of ``metrics``: one row per version/window/column/metric of a partition."""

SEGMENT_COLUMN = "segment"
SEGMENT_METRICS_SCHEMA = METRICS_SCHEMA.append(pa.field(SEGMENT_COLUMN, pa.string(), nullable=False))
"""File columns of ``segment_metrics``: the ``metrics`` columns for one slice of the traffic, named by
``segment`` as ``<name>=<value>`` (the log column ``segment_<name>`` holding ``<value>``).

The all-traffic rows stay in ``metrics`` (alert rules, approvals and every reader of old files read
them unchanged); a separate dataset keeps slices from being counted as more rows of the model."""

METRIC_STATUSES = ("ok", "drift", "warning", "insufficient_data", "error")

REQUEST_ERRORS_SCHEMA = pa.schema(
    [
        pa.field("version", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field(TIMESTAMP_COLUMN, UTC_MICROS, nullable=False),
        pa.field("status_code", pa.int32(), nullable=False),
        pa.field("error_kind", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=True),
        pa.field("message", pa.string(), nullable=True),
    ]
)
"""File columns of ``request_errors``: one row per record routed to a version that failed server-side.

Kept apart from ``inference_logs`` so that monitoring (drift, quality, performance) never sees a row
without a prediction; the deployment analysis adds them to the success rate."""

ERROR_KINDS = ("model_error", "bad_output", "timeout")
"""``error_kind`` values: the model raised, returned a non-finite/invalid output, or took too long."""

MAX_ERROR_MESSAGE_LENGTH = 500
"""Longest ``message`` of ``request_errors`` (writers truncate)."""

FILE_SCHEMAS: Mapping[str, pa.Schema] = {
    INFERENCE_LOGS: INFERENCE_SCHEMA,
    LABELS: LABELS_SCHEMA,
    TRAINING_DATA: TRAINING_SCHEMA,
    METRICS: METRICS_SCHEMA,
    SEGMENT_METRICS: SEGMENT_METRICS_SCHEMA,
    REQUEST_ERRORS: REQUEST_ERRORS_SCHEMA,
}
"""Fixed columns as stored in the files (``reference_profiles``/``profiles`` follow ``analytics.profile``)."""

UNIQUE_KEYS: Mapping[str, tuple[str, ...]] = {
    INFERENCE_LOGS: ("request_id",),
    LABELS: ("request_id",),
    METRICS: ("version", "window_start", "window_end", "column", "metric"),
    SEGMENT_METRICS: ("segment", "version", "window_start", "window_end", "column", "metric"),
    REQUEST_ERRORS: ("request_id",),
}
"""Columns whose combination is unique within one partition."""

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COLUMN_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEGMENT_VALUE_RE = re.compile(r"^[A-Za-z0-9_]+=.*$", re.DOTALL)
_KEY_SEGMENT_MAX = 128
_MICROS_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class ContractViolation:
    """One way a table or partition breaks its dataset's contract.

    Attributes:
        dataset: Dataset name (one of :data:`DATASETS`).
        kind: What is wrong: ``missing_column``, ``wrong_type``, ``null_values``,
            ``duplicate_key``, ``unexpected_column``, ``bad_column_name``, ``bad_value``,
            ``bad_key_segment``, ``bad_partition`` or ``partition_mismatch``.
        column: Offending column or partition key, ``None`` for table-wide problems.
        message: Human-readable explanation naming the column and the expectation.
        rows: Number of offending rows, when the violation is about values.
    """

    dataset: str
    kind: str
    column: str | None
    message: str
    rows: int = 0

    def __str__(self) -> str:
        return f"{self.dataset}: {self.message}"


class ContractError(ValueError):
    """A table or partition violates its dataset's contract; ``violations`` lists why."""

    def __init__(self, violations: Sequence[ContractViolation]):
        self.violations = tuple(violations)
        shown = "; ".join(str(v) for v in self.violations[:10])
        more = f" (and {len(self.violations) - 10} more)" if len(self.violations) > 10 else ""
        super().__init__(f"{len(self.violations)} contract violation(s): {shown}{more}")


# --------------------------------------------------------------------------- names and partitions


def key_segment_problem(value: object) -> str | None:
    """Why ``value`` cannot be a partition value or registry name part, ``None`` if it can.

    A key segment is 1-128 characters of ``[A-Za-z0-9_-]``, checked with
    ``analytics.store.validate_key_segment``: it becomes a folder name under the
    data root, so anything else could escape the dataset or break hive parsing.
    """
    try:
        validate_key_segment(value, "value")  # type: ignore[arg-type]
    except InvalidName as error:
        return str(error)
    if len(value) > _KEY_SEGMENT_MAX:  # type: ignore[arg-type]
        return f"{value!r} is longer than {_KEY_SEGMENT_MAX} characters"
    return None


def date_partition(day: date) -> str:
    """Partition value of a UTC day (``YYYY-MM-DD``)."""
    return day.isoformat()


def _date_problem(value: str) -> str | None:
    if not _DATE_RE.match(value):
        return f"{value!r} is not an ISO day (YYYY-MM-DD)"
    try:
        date.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not a valid calendar day"
    return None


def validate_partition(dataset: str, partition: Mapping[str, str]) -> list[ContractViolation]:
    """Check that ``partition`` names exactly the dataset's keys, in order, with valid values.

    Args:
        dataset: Dataset name.
        partition: Key -> value, e.g. ``{"project": "credit-risk", ..., "date": "2024-03-01"}``.

    Returns:
        The violations (empty when the partition is valid).

    Raises:
        ValueError: if the dataset is unknown.
    """
    keys = partition_keys(dataset)
    problems: list[ContractViolation] = []
    if tuple(partition) != keys:
        missing = [k for k in keys if k not in partition]
        extra = [k for k in partition if k not in keys]
        detail = (f"; missing {', '.join(missing)}" if missing else "") + (
            f"; unexpected {', '.join(extra)}" if extra else ""
        )
        problems.append(
            ContractViolation(
                dataset,
                "bad_partition",
                None,
                f"partition must name {', '.join(keys)} in this order{detail or f', got {list(partition)}'}",
            )
        )
    for key in keys:
        if key not in partition:
            continue
        value = partition[key]
        problem = key_segment_problem(value)
        if problem is None and key == "date":
            problem = _date_problem(value)
        if problem is not None:
            problems.append(
                ContractViolation(dataset, "bad_key_segment", key, f"partition key {key!r}: {problem}")
            )
    return problems


def partition_keys(dataset: str) -> tuple[str, ...]:
    """Partition keys of ``dataset``, outermost first.

    Raises:
        ValueError: if the dataset is unknown.
    """
    if dataset not in PARTITION_KEYS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return PARTITION_KEYS[dataset]


def logical_schema(dataset: str, feature_types: Mapping[str, pa.DataType] | None = None) -> pa.Schema:
    """Schema of the rows as read back: partition keys (text) followed by the file columns.

    Args:
        dataset: Dataset with a fixed layout (not the profile datasets).
        feature_types: Feature name -> ``float64`` or ``string``, appended in order.

    Raises:
        ValueError: for an unknown dataset or one whose layout ``analytics.profile`` owns.
    """
    keys = partition_keys(dataset)
    if dataset not in FILE_SCHEMAS:
        raise ValueError(f"the layout of {dataset!r} is defined by analytics.profile")
    fields = [pa.field(k, pa.string(), nullable=False) for k in keys]
    fields += list(FILE_SCHEMAS[dataset])
    fields += [pa.field(name, t) for name, t in (feature_types or {}).items()]
    return pa.schema(fields)


def feature_name_problem(name: str, dataset: str = INFERENCE_LOGS) -> str | None:
    """Why ``name`` cannot be a feature column of ``dataset``, ``None`` if it can.

    Feature names are identifiers (``[A-Za-z_][A-Za-z0-9_]*``) that collide neither
    with the fixed columns and partition keys of ``inference_logs``/``training_data``
    nor with the ``segment_`` prefix.
    """
    if not isinstance(name, str) or not _COLUMN_NAME_RE.match(name):
        return f"feature name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"
    if name.startswith(SEGMENT_PREFIX):
        return f"feature name {name!r} must not start with {SEGMENT_PREFIX!r} (reserved for segments)"
    if name in _RESERVED_FEATURE_NAMES:
        return f"feature name {name!r} is a reserved column of {dataset}"
    return None


_RESERVED_FEATURE_NAMES = frozenset(
    [
        *PARTITION_KEYS[INFERENCE_LOGS],
        *INFERENCE_SCHEMA.names,
        *TRAINING_SCHEMA.names,
        *LABELS_SCHEMA.names,
    ]
)


def segment_columns(column_names: Iterable[str]) -> list[str]:
    """The ``segment_<name>`` columns among ``column_names``, in order."""
    return [c for c in column_names if c.startswith(SEGMENT_PREFIX)]


# --------------------------------------------------------------------------- checks


def _is_string(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _type_matches(actual: pa.DataType, expected: pa.DataType) -> bool:
    if _is_string(expected):
        return _is_string(actual)
    if pa.types.is_timestamp(expected):
        return (
            pa.types.is_timestamp(actual)
            and actual.unit == expected.unit  # type: ignore[attr-defined]
            and actual.tz in UTC_ALIASES  # type: ignore[attr-defined]
        )
    return actual.equals(expected)


def _check_column_names(dataset: str, table: pa.Table) -> list[ContractViolation]:
    seen: set[str] = set()
    problems = []
    for name in table.column_names:
        if name in seen:
            problems.append(
                ContractViolation(dataset, "bad_column_name", name, f"column {name!r} appears twice")
            )
        seen.add(name)
    return problems


def _check_fixed_columns(dataset: str, table: pa.Table, schema: pa.Schema) -> list[ContractViolation]:
    problems: list[ContractViolation] = []
    for fld in schema:
        if fld.name not in table.column_names:
            problems.append(
                ContractViolation(
                    dataset, "missing_column", fld.name, f"column {fld.name!r} ({fld.type}) is missing"
                )
            )
            continue
        actual = table.schema.field(fld.name).type
        if not _type_matches(actual, fld.type):
            problems.append(
                ContractViolation(
                    dataset, "wrong_type", fld.name, f"column {fld.name!r} must be {fld.type}, got {actual}"
                )
            )
            continue
        nulls = table.column(fld.name).null_count
        if not fld.nullable and nulls:
            problems.append(
                ContractViolation(
                    dataset,
                    "null_values",
                    fld.name,
                    f"column {fld.name!r} must not be null ({nulls} null row(s))",
                    rows=nulls,
                )
            )
    return problems


# Tables up to this many rows have a composite key checked in Python (see _check_unique).
_SMALL_TABLE_ROWS = 20_000


def _check_unique(dataset: str, table: pa.Table, key: tuple[str, ...]) -> list[ContractViolation]:
    if not key or table.num_rows == 0 or any(k not in table.column_names for k in key):
        return []
    if len(key) == 1:
        # count_distinct is far cheaper than a group-by; group only when a duplicate exists.
        distinct = pc.count_distinct(table.column(key[0]), mode="all").as_py()
        if distinct == table.num_rows:
            return []
    if table.num_rows <= _SMALL_TABLE_ROWS and not any(
        pa.types.is_floating(table.schema.field(k).type) for k in key
    ):
        # A day's metric rows: counted in Python, without importing Acero for a group-by (about
        # 5 ms, half the monitoring job's write). Equal keys as the group-by has them: NULLs equal,
        # and no float key (NaN) is taken this way.
        counts = Counter(zip(*(table.column(k).to_pylist() for k in key), strict=True))
        duplicated = sum(1 for n in counts.values() if n > 1)
        groups = len(counts)
    else:
        grouped = table.select(list(key)).group_by(list(key)).aggregate([([], "count_all")])
        duplicated = pc.sum(pc.greater(grouped.column("count_all"), 1)).as_py() or 0
        groups = grouped.num_rows
    if not duplicated:
        return []
    extra_rows = table.num_rows - groups
    return [
        ContractViolation(
            dataset,
            "duplicate_key",
            key[0] if len(key) == 1 else None,
            f"({', '.join(key)}) must be unique: {duplicated} value(s) repeat, {extra_rows} extra row(s)",
            rows=extra_rows,
        )
    ]


def _check_key_segment_column(dataset: str, table: pa.Table, column: str) -> list[ContractViolation]:
    """A text column whose values become partition values or registry names must hold key segments."""
    if column not in table.column_names or not _is_string(table.schema.field(column).type):
        return []
    bad = [v for v in pc.unique(table.column(column)).to_pylist() if v is not None and key_segment_problem(v)]
    if not bad:
        return []
    more = f" (and {len(bad) - 1} more value(s))" if len(bad) > 1 else ""
    return [
        ContractViolation(
            dataset, "bad_key_segment", column, f"column {column!r}: {key_segment_problem(bad[0])}{more}"
        )
    ]


def _check_partition_columns(
    dataset: str, table: pa.Table, partition: Mapping[str, str] | None, day_column: str | None
) -> list[ContractViolation]:
    """Partition keys may appear as text columns (rows read back) and must then match the partition.

    With a ``date`` partition and a ``day_column``, every row's UTC day must be the partition's day.
    """
    problems: list[ContractViolation] = []
    if partition is not None:
        problems += validate_partition(dataset, partition)
    for key in partition_keys(dataset):
        if key not in table.column_names:
            continue
        column = table.column(key)
        if not _is_string(column.type):
            problems.append(
                ContractViolation(
                    dataset, "wrong_type", key, f"partition column {key!r} must be string, got {column.type}"
                )
            )
            continue
        if partition is None or key not in partition:
            problems += _check_key_segment_column(dataset, table, key)
            continue
        mismatched = table.num_rows - (
            pc.sum(pc.fill_null(pc.equal(column, partition[key]), False)).as_py() or 0
        )
        if mismatched:
            problems.append(
                ContractViolation(
                    dataset,
                    "partition_mismatch",
                    key,
                    f"column {key!r} must equal the partition value {partition[key]!r} on every row "
                    f"({mismatched} row(s) differ)",
                    rows=mismatched,
                )
            )
    day = (partition or {}).get("date")
    if (
        day is None
        or day_column is None
        or day_column not in table.column_names
        or _date_problem(day) is not None
        or not table.num_rows
        or not _type_matches(table.schema.field(day_column).type, UTC_MICROS)
    ):
        return problems
    # Integer comparison with the day's bounds: no per-row formatting or time-zone work.
    first = int(datetime.combine(date.fromisoformat(day), time.min, UTC).timestamp()) * 1_000_000
    micros = table.column(day_column).cast(pa.int64())
    outside = pc.or_(pc.less(micros, first), pc.greater_equal(micros, first + _MICROS_PER_DAY))
    mismatched = pc.sum(pc.fill_null(outside, False)).as_py() or 0
    if mismatched:
        problems.append(
            ContractViolation(
                dataset,
                "partition_mismatch",
                day_column,
                f"column {day_column!r} must fall on the partition day {day} (UTC) "
                f"({mismatched} row(s) do not)",
                rows=mismatched,
            )
        )
    return problems


def _check_open_columns(
    dataset: str, table: pa.Table, feature_columns: Sequence[str], fixed: Iterable[str]
) -> list[ContractViolation]:
    """Features must be present as double or string; ``segment_*`` as string; nothing else extra."""
    problems: list[ContractViolation] = []
    features = list(feature_columns)
    for name in sorted({f for f in features if features.count(f) > 1}):
        problems.append(
            ContractViolation(dataset, "bad_column_name", name, f"feature {name!r} is listed twice")
        )
    for name in dict.fromkeys(features):
        problem = feature_name_problem(name, dataset)
        if problem:
            problems.append(ContractViolation(dataset, "bad_column_name", str(name), problem))
            continue
        if name not in table.column_names:
            problems.append(
                ContractViolation(dataset, "missing_column", name, f"feature column {name!r} is missing")
            )
            continue
        actual = table.schema.field(name).type
        if not (pa.types.is_float64(actual) or _is_string(actual)):
            problems.append(
                ContractViolation(
                    dataset,
                    "wrong_type",
                    name,
                    f"feature column {name!r} must be double or string, got {actual}",
                )
            )
    for name in segment_columns(table.column_names):
        suffix = name[len(SEGMENT_PREFIX) :]
        if not _COLUMN_NAME_RE.match(suffix):
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_column_name",
                    name,
                    f"segment column {name!r} needs a name of [A-Za-z0-9_] after 'segment_'",
                )
            )
        elif not _is_string(table.schema.field(name).type):
            problems.append(
                ContractViolation(
                    dataset,
                    "wrong_type",
                    name,
                    f"segment column {name!r} must be string, got {table.schema.field(name).type}",
                )
            )
    known = set(fixed) | set(features) | set(partition_keys(dataset))
    for name in table.column_names:
        if name not in known and not name.startswith(SEGMENT_PREFIX):
            problems.append(
                ContractViolation(
                    dataset,
                    "unexpected_column",
                    name,
                    f"column {name!r} is neither a fixed column, a listed feature nor a segment_* column",
                )
            )
    return problems


def _check_closed_columns(dataset: str, table: pa.Table, schema: pa.Schema) -> list[ContractViolation]:
    allowed = set(schema.names) | set(partition_keys(dataset))
    return [
        ContractViolation(dataset, "unexpected_column", name, f"column {name!r} is not part of {dataset}")
        for name in table.column_names
        if name not in allowed
    ]


def _check_range(
    dataset: str, table: pa.Table, column: str, *, low: float, high: float | None = None
) -> list[ContractViolation]:
    if column not in table.column_names or not pa.types.is_float64(table.schema.field(column).type):
        return []
    values = table.column(column)
    bad = pc.or_(pc.less(values, low), pc.is_nan(values))
    if high is not None:
        bad = pc.or_(bad, pc.greater(values, high))
    count = pc.sum(pc.fill_null(bad, False)).as_py() or 0
    if not count:
        return []
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    return [
        ContractViolation(
            dataset,
            "bad_value",
            column,
            f"column {column!r} must be {bounds} ({count} row(s) are not)",
            count,
        )
    ]


# --------------------------------------------------------------------------- validators


def validate_inference_table(
    table: pa.Table,
    feature_columns: Sequence[str],
    *,
    partition: Mapping[str, str] | None = None,
) -> list[ContractViolation]:
    """Validate a batch of inference logs against the ``inference_logs`` contract.

    Args:
        table: The rows to write (partition-key columns optional, see the module docstring).
        feature_columns: The model's feature list; each must be present as double or string.
        partition: When given, the target partition: its keys and values are validated and
            every ``timestamp`` must fall on its UTC ``date``.

    Returns:
        Every violation found (empty when the table honours the contract).
    """
    dataset = INFERENCE_LOGS
    problems = _check_column_names(dataset, table)
    problems += _check_fixed_columns(dataset, table, INFERENCE_SCHEMA)
    problems += _check_open_columns(dataset, table, feature_columns, INFERENCE_SCHEMA.names)
    problems += _check_key_segment_column(dataset, table, "version")
    problems += _check_unique(dataset, table, UNIQUE_KEYS[dataset])
    problems += _check_range(dataset, table, SCORE_COLUMN, low=0.0, high=1.0)
    problems += _check_range(dataset, table, "latency_ms", low=0.0)
    problems += _check_partition_columns(dataset, table, partition, TIMESTAMP_COLUMN)
    return problems


def validate_labels_table(
    table: pa.Table, *, partition: Mapping[str, str] | None = None
) -> list[ContractViolation]:
    """Validate a batch of ground-truth labels against the ``labels`` contract.

    The ``date`` partition is the day of the request the label belongs to (not the
    day the label arrived), so it is not compared with ``label_timestamp``.

    Args:
        table: The rows to write.
        partition: When given, the target partition.

    Returns:
        Every violation found.
    """
    dataset = LABELS
    problems = _check_column_names(dataset, table)
    problems += _check_fixed_columns(dataset, table, LABELS_SCHEMA)
    problems += _check_closed_columns(dataset, table, LABELS_SCHEMA)
    problems += _check_unique(dataset, table, UNIQUE_KEYS[dataset])
    problems += _check_partition_columns(dataset, table, partition, None)
    return problems


def validate_training_table(
    table: pa.Table,
    feature_columns: Sequence[str],
    *,
    partition: Mapping[str, str] | None = None,
) -> list[ContractViolation]:
    """Validate a model's training set against the ``training_data`` contract.

    Args:
        table: Feature columns, optional ``segment_*`` columns and the ``label`` target.
        feature_columns: The model's feature list.
        partition: When given, the target ``project``/``model`` partition.

    Returns:
        Every violation found.
    """
    dataset = TRAINING_DATA
    problems = _check_column_names(dataset, table)
    problems += _check_fixed_columns(dataset, table, TRAINING_SCHEMA)
    problems += _check_open_columns(dataset, table, feature_columns, TRAINING_SCHEMA.names)
    problems += _check_partition_columns(dataset, table, partition, None)
    return problems


def validate_metrics_table(
    table: pa.Table, *, partition: Mapping[str, str] | None = None, dataset: str = METRICS
) -> list[ContractViolation]:
    """Validate monitoring metrics against the ``metrics`` (or ``segment_metrics``) contract.

    Args:
        table: One row per (version, window, column, metric), and segment for ``segment_metrics``.
        partition: When given, the target partition; every ``window_start`` must fall on its day.
        dataset: ``metrics`` or ``segment_metrics``.

    Returns:
        Every violation found.

    Raises:
        ValueError: for another dataset.
    """
    if dataset not in (METRICS, SEGMENT_METRICS):
        raise ValueError(f"not a metrics dataset: {dataset!r}")
    schema = FILE_SCHEMAS[dataset]
    problems = _check_column_names(dataset, table)
    problems += _check_fixed_columns(dataset, table, schema)
    problems += _check_closed_columns(dataset, table, schema)
    if dataset == SEGMENT_METRICS and SEGMENT_COLUMN in table.column_names:
        segments = [s for s in pc.unique(table.column(SEGMENT_COLUMN)).to_pylist() if s is not None]
        bad = [s for s in segments if not _SEGMENT_VALUE_RE.match(s)]
        if bad:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    SEGMENT_COLUMN,
                    f"column 'segment' must read <name>=<value> with a [A-Za-z0-9_] name; got {bad[0]!r}",
                    len(bad),
                )
            )
    problems += _check_key_segment_column(dataset, table, "version")
    problems += _check_unique(dataset, table, UNIQUE_KEYS[dataset])
    if "status" in table.column_names and _is_string(table.schema.field("status").type):
        statuses = pc.unique(table.column("status")).to_pylist()
        unknown = sorted(s for s in statuses if s is not None and s not in METRIC_STATUSES)
        if unknown:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    "status",
                    f"column 'status' must be one of {', '.join(METRIC_STATUSES)}; got {', '.join(unknown)}",
                )
            )
    names = table.column_names
    if (
        "window_start" in names
        and "window_end" in names
        and _type_matches(table.schema.field("window_start").type, UTC_MICROS)
        and _type_matches(table.schema.field("window_end").type, UTC_MICROS)
    ):
        inverted = pc.fill_null(pc.greater_equal(table["window_start"], table["window_end"]), False)
        count = pc.sum(inverted).as_py() or 0
        if count:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    "window_end",
                    f"window_end must be after window_start ({count} row(s) are not)",
                    count,
                )
            )
    problems += _check_partition_columns(dataset, table, partition, "window_start")
    return problems


def validate_request_errors_table(
    table: pa.Table, *, partition: Mapping[str, str] | None = None
) -> list[ContractViolation]:
    """Validate failed requests against the ``request_errors`` contract.

    Args:
        table: One row per record that a version failed to score (status 5xx).
        partition: When given, the target partition; every ``timestamp`` must fall on its day.

    Returns:
        Every violation found.
    """
    dataset = REQUEST_ERRORS
    problems = _check_column_names(dataset, table)
    problems += _check_fixed_columns(dataset, table, REQUEST_ERRORS_SCHEMA)
    problems += _check_closed_columns(dataset, table, REQUEST_ERRORS_SCHEMA)
    problems += _check_key_segment_column(dataset, table, "version")
    problems += _check_unique(dataset, table, UNIQUE_KEYS[dataset])
    problems += _check_range(dataset, table, "latency_ms", low=0.0)
    names = table.column_names
    if "error_kind" in names and _is_string(table.schema.field("error_kind").type):
        kinds = pc.unique(table.column("error_kind")).to_pylist()
        unknown = sorted(k for k in kinds if k is not None and k not in ERROR_KINDS)
        if unknown:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    "error_kind",
                    f"column 'error_kind' must be one of {', '.join(ERROR_KINDS)}; got {', '.join(unknown)}",
                )
            )
    if "status_code" in names and pa.types.is_integer(table.schema.field("status_code").type):
        codes = table.column("status_code")
        bad = pc.sum(pc.fill_null(pc.or_(pc.less(codes, 500), pc.greater(codes, 599)), False)).as_py() or 0
        if bad:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    "status_code",
                    f"column 'status_code' must be a server error in 500-599 ({bad} row(s) are not)",
                    bad,
                )
            )
    if "message" in names and _is_string(table.schema.field("message").type):
        longest = pc.max(pc.utf8_length(table.column("message"))).as_py() or 0
        if longest > MAX_ERROR_MESSAGE_LENGTH:
            problems.append(
                ContractViolation(
                    dataset,
                    "bad_value",
                    "message",
                    f"column 'message' holds at most {MAX_ERROR_MESSAGE_LENGTH} characters (got {longest})",
                )
            )
    problems += _check_partition_columns(dataset, table, partition, TIMESTAMP_COLUMN)
    return problems


def require_valid(violations: Sequence[ContractViolation]) -> None:
    """Raise :class:`ContractError` when ``violations`` is not empty.

    Raises:
        ContractError: listing every violation.
    """
    if violations:
        raise ContractError(violations)


# --------------------------------------------------------------------------- conforming


def _casts_losslessly(actual: pa.DataType, target: pa.DataType) -> bool:
    if actual.equals(target):
        return False
    if pa.types.is_float64(target):
        return pa.types.is_integer(actual) or pa.types.is_floating(actual)
    if _is_string(target):
        return pa.types.is_large_string(actual)
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(actual):
        return actual.tz in UTC_ALIASES  # type: ignore[attr-defined]
    return False


def conform_table(table: pa.Table, dataset: str, feature_columns: Sequence[str] = ()) -> pa.Table:
    """Cast harmless type variants to the contract's exact types, and drop partition-key columns.

    Integer and float32 columns become double where the contract (or a numeric feature)
    wants double, ``large_string`` becomes ``string`` and UTC timestamps of another unit
    become microseconds (a cast that would lose precision raises). Partition-key columns
    are dropped because the store writes them in the path. Anything else is left for the
    validators to report.

    Args:
        table: Table to conform.
        dataset: Dataset whose contract to follow.
        feature_columns: The model's feature list (``inference_logs``/``training_data``).

    Returns:
        The conformed table (same column order, minus partition keys).

    Raises:
        pyarrow.ArrowInvalid: if a timestamp cast would truncate.
    """
    keys = set(partition_keys(dataset))
    schema = FILE_SCHEMAS.get(dataset)
    wanted: dict[str, pa.DataType] = {f.name: f.type for f in schema} if schema else {}
    names, columns = [], []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in keys:
            continue
        actual = column.type
        target = wanted.get(name)
        if target is None and (name in feature_columns or name.startswith(SEGMENT_PREFIX)):
            numeric = pa.types.is_integer(actual) or pa.types.is_floating(actual)
            target = pa.float64() if numeric and name in feature_columns else pa.string()
        cast = target is not None and _casts_losslessly(actual, target)
        names.append(name)
        columns.append(column.cast(target) if cast else column)
    return pa.table(columns, names=names)
