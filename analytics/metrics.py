"""Read layer over the monitoring job's ``metrics`` and ``profiles`` datasets, for pages and notebooks.

The monitoring job (``jobs.monitor``) writes, per project/model/environment and UTC day, one
``metrics`` file per window unit (``day.parquet``, ``hour.parquet``, plus ``<unit>-errors.parquet``
when a day's inputs were unusable) and one ``profiles`` file per version
(``<unit>-version-<version>.parquet``); training writes each version's reference profile under
``reference_profiles``. This module reads only those datasets, never the raw inference logs, and turns
them into what a page draws: a feature x window drift matrix, one feature's drift history with its
reference and current distributions and data-quality findings, performance and latency series, a
CSV export and a cross-model overview.

Every function takes a *source*: a :class:`analytics.store.ParquetStore` (a notebook reading once) or
a :class:`MetricsReader` (a web worker reading the same files again and again).

Cost model, and why the reader caches per file. A page shows up to a year of daily windows of one
model: 365 small files. Opening them costs far more than decoding them (about 1 ms per file locally,
a round trip per file on S3, measured 0.25-1 s cold for 365 files on the 2-core CI machine, with
pyarrow or DuckDB alike), while every callback of the page reads the same files. A
:class:`MetricsReader` therefore keeps each decoded file, keyed by its path, size and modification
time, in a bounded LRU: a listing (one recursive listing of the model/environment folder, which is
also the partition pruning by date) tells which files a query needs, only new or rewritten files are
read (in parallel threads, with pyarrow), and a rerun of the job invalidates exactly the days it
rewrote. Concurrent callbacks for the same selection wait for one cold read instead of repeating it.
Results derived from the files (drift matrices, a page's figures) are memoized under the query and
the files' keys (:meth:`MetricsReader.memoized`), computed once when several callers ask together.
S3 reports modification times to the second: a file rewritten with the very same size within the
second it was read stays cached until it changes again (the job writes a day's file once per run).

Two more datasets serve the same reads. ``metrics_compacted`` holds monthly copies of the daily
``metrics`` files (:func:`compact_metrics`): the reader takes a day from a copy only while that
day's daily file is unchanged, so a first visit of a year reads 12 files instead of 365.
``segment_metrics`` holds the job's rows per slice of the traffic (``segment`` = ``region=north``):
a query with a ``segment`` reads them instead of ``metrics``.

Reading the metrics:

* ``drift`` rows (one per column and window) are the drift decisions; their method comes from the
  job's ``reason`` (``method=ks: ...``) or, failing that, from the statistics row of the same column
  and window whose value equals the decision's statistic;
* the job's verdict statuses ``drift`` and ``warning`` mean "checked"; :mod:`analytics.figures` calls
  a checked row ``ok`` and reads the verdict from ``drifted``, so rows handed to figures are mapped
  accordingly (the job's status stays in ``verdict``);
* when a window was served by several versions, the version with the most rows speaks for it.

Names are validated as key segments before any path is built; dates are ``datetime.date`` values.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analytics.policy import TEST_METHODS
from analytics.profile import ColumnProfile, Profile, ProfileError, profiles_from_arrow
from analytics.store import CorruptParquet, InvalidName, ParquetStore, StoreError, validate_key_segment

# Dataset names and file names of the monitoring job (they mirror jobs.contracts and jobs.monitor,
# which analytics may not import; a unit test keeps them equal).
METRICS_DATASET = "metrics"
PROFILES_DATASET = "profiles"
REFERENCE_PROFILES_DATASET = "reference_profiles"
REFERENCE_PROFILE_FILE = "profile.parquet"
PROFILE_INFIX = "-version-"
ERRORS_SUFFIX = "-errors"
SEGMENT_METRICS_DATASET = "segment_metrics"
"""Rows of the monitoring job for slices of the traffic (``segment`` = ``<name>=<value>``)."""
SEGMENT_FIELD = "segment"
COMPACTED_DATASET = "metrics_compacted"
"""Monthly copies of the daily ``metrics`` files (see :func:`compact_metrics`); a cache, never the truth."""
COMPACTED_DAY_COLUMN = "date"
"""Column of a compacted file naming the daily partition (ISO day) each row came from."""
COMPACTED_SOURCES_KEY = b"mms.compacted_sources"
"""Schema metadata of a compacted file: JSON ``{day: [size, mtime_ns]}`` of the daily files it copies."""

WINDOW_UNITS: Mapping[str, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
"""Window units the monitoring job computes."""

ALL_COLUMNS = "*"
"""``column`` of the rows about a whole window."""
DRIFT_METRIC = "drift"
DRIFT_SHARE_METRIC = "drift_share"
QUALITY_METRICS = ("missing_share", "out_of_range_share", "new_category_share")
WINDOW_QUALITY_METRICS = ("schema", "freshness_lag_s", "row_count")
ERROR_METRICS = ("corrupt_file", "schema", "bad_partition", "write_failed")
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece")
REGRESSION_METRICS = ("mae", "rmse", "mape", "r2")
LABEL_COVERAGE_METRIC = "label_coverage"
LATENCY_METRICS: Mapping[str, str] = {
    "latency_p50": "p50_ms",
    "latency_p95": "p95_ms",
    "latency_p99": "p99_ms",
    "latency_mean": "mean_ms",
}
THROUGHPUT_METRIC = "throughput_rps"
PAGE_METRICS = (
    DRIFT_METRIC,
    DRIFT_SHARE_METRIC,
    *QUALITY_METRICS,
    *WINDOW_QUALITY_METRICS,
    "last_inference_at",
    "reference",
    *ERROR_METRICS,
    LABEL_COVERAGE_METRIC,
    *CLASSIFICATION_METRICS,
    *REGRESSION_METRICS,
    *LATENCY_METRICS,
    THROUGHPUT_METRIC,
)
"""The metrics the monitoring page shows: all but the per-column statistics behind each drift decision
(``ks``, ``psi``, ``wasserstein_normed``, ...), which only feed the decision row."""
SEGMENT_PREFIX = "segment_"
CHECKED_STATUSES = frozenset({"ok", "drift", "warning"})
"""Job statuses of a row that was evaluated (the verdict is in ``drifted``)."""

MAX_RANGE_DAYS = 366
"""Longest date range of a query of daily windows."""
MAX_HOUR_RANGE_DAYS = 31
"""Longest date range of a query of hourly windows (744 windows)."""
MAX_HEATMAP_WINDOWS = 62
"""Most columns of a drift matrix; longer ranges are shown in coarser periods (see :func:`period_length`)."""
DEFAULT_CACHED_ROWS = 1_000_000
READ_THREADS = 8
OVERVIEW_THREADS = 4

T = TypeVar("T")

_METHOD_PATTERN = r"^method=(?P<method>[A-Za-z0-9_]+):"
_DATE_DIR_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_]+=.+$", re.DOTALL)
_PERIOD_LADDER: Mapping[str, tuple[timedelta, ...]] = {
    "hour": (
        timedelta(hours=1),
        timedelta(hours=6),
        timedelta(days=1),
        timedelta(days=7),
        timedelta(days=28),
    ),
    "day": (timedelta(days=1), timedelta(days=7), timedelta(days=28)),
}
# Periods of a week or more start on a Monday: 1970-01-05 was one.
_PERIOD_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CSV_FORMULA_PATTERN = r"^[=+\-@\t\r]"


class InvalidQuery(ValueError):
    """A metrics query names something that cannot exist (bad name, date range or window unit)."""


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class MetricsQuery:
    """Which metrics to read: one model in one environment, a range of UTC days, one window unit.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment name.
        start: First day (inclusive, UTC).
        end: Last day (inclusive, UTC).
        window: ``day`` or ``hour``.
        segment: A slice of the traffic (``region=north``, read from ``segment_metrics``), or
            ``None`` for the whole traffic.

    Raises:
        InvalidQuery: for a name that is not a key segment, a non-date bound, an inverted range,
            a range longer than :data:`MAX_RANGE_DAYS` (:data:`MAX_HOUR_RANGE_DAYS` for hours), an
            unknown window unit or a segment that does not read ``<name>=<value>``.
    """

    project: str
    model: str
    environment: str
    start: date
    end: date
    window: str = "day"
    segment: str | None = None

    def __post_init__(self) -> None:
        for what in ("project", "model", "environment"):
            _check_name(getattr(self, what), what)
        for what in ("start", "end"):
            value = getattr(self, what)
            if not isinstance(value, date) or isinstance(value, datetime):
                raise InvalidQuery(f"{what} must be a date, not {type(value).__name__}")
        if self.start > self.end:
            raise InvalidQuery(f"the range starts ({self.start}) after it ends ({self.end})")
        if self.window not in WINDOW_UNITS:
            raise InvalidQuery(f"window must be one of {', '.join(WINDOW_UNITS)}, got {self.window!r}")
        longest = MAX_HOUR_RANGE_DAYS if self.window == "hour" else MAX_RANGE_DAYS
        if self.days > longest:
            raise InvalidQuery(f"a range of {self.window}ly windows may span at most {longest} days")
        if self.segment is not None and not (
            isinstance(self.segment, str) and len(self.segment) <= 256 and _SEGMENT_RE.match(self.segment)
        ):
            raise InvalidQuery("a segment reads <name>=<value>, at most 256 characters")

    @property
    def dataset(self) -> str:
        """The dataset holding the query's rows: ``metrics``, or ``segment_metrics`` for a segment."""
        return METRICS_DATASET if self.segment is None else SEGMENT_METRICS_DATASET

    @property
    def days(self) -> int:
        """Days in the range."""
        return (self.end - self.start).days + 1

    @property
    def length(self) -> timedelta:
        """Length of one window."""
        return WINDOW_UNITS[self.window]

    @property
    def first(self) -> datetime:
        """Start of the range (UTC midnight of ``start``)."""
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def last(self) -> datetime:
        """End of the range, exclusive (UTC midnight after ``end``)."""
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1)

    @property
    def partition(self) -> dict[str, str]:
        """The project/model/environment partition."""
        return {"project": self.project, "model": self.model, "environment": self.environment}


def _check_name(value: object, what: str) -> str:
    try:
        validate_key_segment(value, what)  # type: ignore[arg-type]
    except InvalidName as error:
        raise InvalidQuery(str(error)) from None
    if len(value) > 128:  # type: ignore[arg-type]
        raise InvalidQuery(f"{what} is longer than 128 characters")
    return value  # type: ignore[return-value]


def _query(
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str,
    segment: str | None = None,
) -> MetricsQuery:
    return MetricsQuery(project, model, environment, start, end, window, segment)


def period_length(query: MetricsQuery) -> timedelta:
    """Length of one column of the drift matrix: the window, or a coarser period for long ranges.

    A drift matrix has at most :data:`MAX_HEATMAP_WINDOWS` columns (a heatmap of a year of days per
    feature is neither readable nor cheap to send): hours group into 6 hours, days, weeks or 28 days,
    days into weeks or 28 days, the finest that fits.
    """
    span = query.last - query.first
    for step in _PERIOD_LADDER[query.window]:
        if math.ceil(span / step) <= MAX_HEATMAP_WINDOWS:
            return step
    return _PERIOD_LADDER[query.window][-1]


def period_start(moment: datetime, step: timedelta) -> datetime:
    """Start of the period of length ``step`` holding ``moment`` (weeks and longer start on Mondays)."""
    return _PERIOD_EPOCH + ((moment - _PERIOD_EPOCH) // step) * step


# --------------------------------------------------------------------------- the cached reader


@dataclass(frozen=True)
class _Entry:
    """One data file of a model/environment folder."""

    path: str
    size: int
    mtime_ns: int
    day: date
    name: str
    days: tuple[date, ...] = ()
    """For a compacted monthly file: the days whose rows are taken from it (empty for a daily file)."""

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.size, self.mtime_ns)

    @property
    def token(self) -> tuple[Any, ...]:
        """What the rows taken from this entry depend on: the file's key and, if compacted, the days."""
        return (*self.key, self.days)


class MetricsReader:
    """Reads ``metrics``, ``profiles`` and reference profiles, keeping decoded files in a bounded cache.

    Thread-safe; meant to live as long as the process (one per web worker). Entries are keyed by
    (path, size, modification time), so a rewritten file is read again and nothing needs clearing.

    Args:
        store: The Parquet store.
        max_cached_rows: Metrics rows kept in memory (least recently used files are dropped first).
        max_cached_profiles: Profile files kept in memory.
        max_memoized: Derived results kept by :meth:`memoized` (drift matrices, figures).

    Attributes:
        store: The store.
    """

    def __init__(
        self,
        store: ParquetStore,
        *,
        max_cached_rows: int = DEFAULT_CACHED_ROWS,
        max_cached_profiles: int = 512,
        max_memoized: int = 64,
    ) -> None:
        self.store = store
        self._max_rows = max_cached_rows
        self._max_profiles = max_cached_profiles
        self._tables: OrderedDict[tuple[str, int, int], pa.Table] = OrderedDict()
        self._profiles: OrderedDict[tuple[str, int, int], dict[datetime | None, Profile]] = OrderedDict()
        self._cached_rows = 0
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, threading.Event] = {}
        self._max_memo = max_memoized
        self._lock = threading.Lock()
        # One cold read at a time: concurrent callbacks of one page need the same files, and the
        # second one then finds them cached instead of reading them again.
        self._read_lock = threading.Lock()
        # Listings kept by the calling thread inside consistent_listing() (None outside).
        self._pinned = threading.local()

    def __repr__(self) -> str:
        return f"MetricsReader({self.store!r}, cached_rows={self._cached_rows})"

    @property
    def cached_rows(self) -> int:
        """Metrics rows currently held in memory."""
        return self._cached_rows

    # ----------------------------------------------------------------- listing

    @contextmanager
    def consistent_listing(self) -> Iterator[None]:
        """Within the block, the calling thread lists each folder once and reuses that listing.

        A callback asks for the same files several times (the key of its memoized result, then each
        read behind it): listing a year of day folders costs about 10 ms of CPU locally and a
        request per 1,000 files on S3. Every read in the block also sees the same set of files. A
        file rewritten during the block is seen by the next block. Nested blocks share the outer
        one's listings.
        """
        if getattr(self._pinned, "listings", None) is not None:
            yield
            return
        self._pinned.listings = {}
        try:
            yield
        finally:
            self._pinned.listings = None

    def _listed(self, key: Hashable, list_files: Callable[[], T]) -> T:
        """``list_files()``, or its result from earlier in the :meth:`consistent_listing` block."""
        listings = getattr(self._pinned, "listings", None)
        if listings is None:
            return list_files()
        if key not in listings:
            listings[key] = list_files()
        return listings[key]

    def _fs_path(self, uri: str) -> str:
        return uri[len("s3://") :] if uri.startswith("s3://") else uri

    def _subfolders(self, dataset: str, partition: Mapping[str, str], key: str) -> list[str]:
        base = self._fs_path(self.store.partition_uri(dataset, partition))
        selector = pafs.FileSelector(base, recursive=False, allow_not_found=True)
        values = []
        for info in self.store.filesystem().get_file_info(selector):
            name, sep, value = info.base_name.partition("=")
            if info.type == pafs.FileType.Directory and sep and name == key and value:
                values.append(value)
        return sorted(values)

    def models(self, project: str) -> list[str]:
        """Models of ``project`` that have metrics, sorted."""
        _check_name(project, "project")
        return self._subfolders(METRICS_DATASET, {"project": project}, "model")

    def environments(self, project: str, model: str) -> list[str]:
        """Environments of a model that have metrics, sorted."""
        _check_name(project, "project")
        _check_name(model, "model")
        return self._subfolders(METRICS_DATASET, {"project": project, "model": model}, "environment")

    def _files(self, dataset: str, partition: Mapping[str, str], newest: int | None = None) -> list[_Entry]:
        """Data files under a partition folder, with their ``date``, oldest day first (do not modify).

        Args:
            dataset: Dataset name.
            partition: Project/model/environment.
            newest: Only the files of the newest ``newest`` day folders: the day folders are listed,
                then those days alone (cheaper than one recursive listing of a year of days).
        """
        key = ("files", dataset, tuple(partition.items()), newest)
        return self._listed(key, lambda: self._list_files(dataset, partition, newest))

    def _list_files(self, dataset: str, partition: Mapping[str, str], newest: int | None) -> list[_Entry]:
        base = self._fs_path(self.store.partition_uri(dataset, partition))
        filesystem = self.store.filesystem()
        if newest is None:
            infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        else:
            folders = filesystem.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
            days = sorted(
                (
                    info.path
                    for info in folders
                    if info.type == pafs.FileType.Directory and _DATE_DIR_RE.match(info.base_name)
                ),
                reverse=True,
            )[:newest]
            infos = [
                info
                for folder in days
                for info in filesystem.get_file_info(
                    pafs.FileSelector(folder, recursive=False, allow_not_found=True)
                )
            ]
        entries = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            parts = info.path[len(base) + 1 :].split("/")
            name = parts[-1]
            if len(parts) != 2 or not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            match = _DATE_DIR_RE.match(parts[0])
            day = _parse_day(match.group(1)) if match else None
            if day is None:
                continue
            entries.append(_Entry(info.path, int(info.size or 0), int(info.mtime_ns or 0), day, name))
        return sorted(entries, key=lambda e: (e.day, e.name))

    def metric_files(self, query: MetricsQuery) -> list[_Entry]:
        """The ``metrics`` files a query needs: its days, and not the files of another window unit.

        Where a compacted monthly file (:func:`compact_metrics`) still matches a day's daily file
        (same size and modification time as when it was copied), that day's rows come from the
        monthly file: a year is then read from 12 files instead of 365. Every other day (new since
        the compaction, rewritten, or not compacted) is read from its daily file.
        """
        return self._listed(("metric_files", query), lambda: self._metric_files(query))

    def _metric_files(self, query: MetricsQuery) -> list[_Entry]:
        other_units = {u for u in WINDOW_UNITS if u != query.window}
        daily = [
            entry
            for entry in self._files(query.dataset, query.partition)
            if query.start <= entry.day <= query.end and _unit_of(entry.name) not in other_units
        ]
        return daily if query.segment is not None else self._with_compacted(query, daily)

    def _with_compacted(self, query: MetricsQuery, daily: list[_Entry]) -> list[_Entry]:
        unit_file = f"{query.window}.parquet"
        by_day = {entry.day: entry for entry in daily if entry.name == unit_file}
        months = {day.isoformat()[:7] for day in by_day}
        if not months:
            return daily
        base = self._fs_path(self.store.partition_uri(COMPACTED_DATASET, query.partition))
        infos = self.store.filesystem().get_file_info(
            pafs.FileSelector(base, recursive=True, allow_not_found=True)
        )
        compacted = []
        for info in infos:
            parts = info.path[len(base) + 1 :].split("/")
            if info.type != pafs.FileType.File or len(parts) != 2 or parts[1] != unit_file:
                continue
            month = parts[0].removeprefix("month=")
            if month in months and parts[0].startswith("month="):
                entry = _month_entry(info, month, unit_file)
                if entry is not None:
                    compacted.append(entry)
        if not compacted:
            return daily
        try:
            sources = dict(zip(compacted, self._load_sources(compacted), strict=True))
        except StoreError:
            return daily  # a damaged compacted file is only a lost shortcut: the daily files remain
        taken: set[date] = set()
        entries = []
        for entry, copied in sources.items():
            days = tuple(
                day
                for day, (size, mtime_ns) in sorted(copied.items())
                if day in by_day and by_day[day].size == size and by_day[day].mtime_ns == mtime_ns
            )
            if days:
                entries.append(replace(entry, days=days))
                taken.update(days)
        entries += [e for e in daily if not (e.name == unit_file and e.day in taken)]
        return sorted(entries, key=lambda e: (e.day, e.name, e.days))

    def _load_sources(self, entries: Sequence[_Entry]) -> list[dict[date, tuple[int, int]]]:
        """The manifest of each compacted file: copied day -> (size, mtime_ns) of its daily file."""
        return [
            _manifest(entry, table)
            for entry, table in zip(entries, self._load(entries, whole=True), strict=True)
        ]

    def dates(self, project: str, model: str, environment: str) -> list[date]:
        """Days with metrics of a model in an environment, oldest first."""
        partition = _partition(project, model, environment)
        return sorted({entry.day for entry in self._files(METRICS_DATASET, partition)})

    def windows(self, project: str, model: str, environment: str) -> list[str]:
        """Window units with metrics (``day``, ``hour``), from the job's file names.

        Files named otherwise are read and their window lengths looked at.
        """
        entries = self._files(METRICS_DATASET, _partition(project, model, environment))
        units = {_unit_of(e.name) for e in entries}
        foreign = [e for e in entries if _unit_of(e.name) is None]
        if foreign:
            lengths = set()
            for table in self._load(foreign[-31:]):
                lengths.update(pc.unique(pc.subtract(table["window_end"], table["window_start"])).to_pylist())
            units.update(unit for unit, length in WINDOW_UNITS.items() if length in lengths)
        return [unit for unit in WINDOW_UNITS if unit in units]

    # ----------------------------------------------------------------- reading

    def signature(self, query: MetricsQuery) -> tuple[tuple[Any, ...], ...]:
        """What a query reads: (path, size, modification time, days) of each file; changes with any file."""
        return tuple(entry.token for entry in self.metric_files(query))

    def memoized(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` in a small LRU (results derived from the metrics).

        Put :meth:`signature` in the key so a rewritten file gives a new key. Callers asking for a
        key that is being computed wait for that computation instead of repeating it (the panels of
        one page ask for the same drift matrix at the same moment); if it fails, each computes.
        """
        while True:
            with self._lock:
                if key in self._memo:
                    self._memo.move_to_end(key)
                    return self._memo[key]
                running = self._computing.get(key)
                if running is None:
                    running = self._computing[key] = threading.Event()
                    break
            running.wait()
            with self._lock:
                if key not in self._memo:  # the computation failed: compute here
                    return compute()
        try:
            value = compute()
            with self._lock:
                self._memo[key] = value
                while len(self._memo) > self._max_memo:
                    self._memo.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._computing.pop(key, None)
            running.set()

    def table(self, query: MetricsQuery, files: Sequence[_Entry] | None = None) -> pa.Table:
        """Every metrics row of a query (its days, its window length), in file order.

        Args:
            query: What to read.
            files: The query's files when already listed (:meth:`metric_files`).

        Raises:
            CorruptParquet: naming a file that cannot be decoded.
            StoreError: if the store cannot be read.
        """
        tables = self._load(self.metric_files(query) if files is None else files)
        if not tables:
            return _EMPTY_METRICS
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        lengths = pc.subtract(table["window_end"], table["window_start"])
        table = table.filter(pc.equal(lengths, pa.scalar(query.length, pa.duration("us"))))
        if query.segment is None:
            return table
        if SEGMENT_FIELD not in table.column_names:
            return _EMPTY_METRICS
        table = table.filter(pc.fill_null(pc.equal(table[SEGMENT_FIELD], query.segment), False))
        return table.drop_columns([SEGMENT_FIELD])

    def segments(
        self, project: str, model: str, environment: str, day: date, window: str = "day"
    ) -> list[str]:
        """The segments (``<name>=<value>``) with metrics on ``day``, sorted: what a page offers to filter by.

        Raises:
            InvalidQuery: for bad names.
            CorruptParquet: naming an undecodable file.
        """
        files = [
            entry
            for entry in self._files(SEGMENT_METRICS_DATASET, _partition(project, model, environment))
            if entry.day == day and _unit_of(entry.name) == window
        ]
        tables = [t for t in self._load(files) if SEGMENT_FIELD in t.column_names]
        found: set[str] = set()
        for table in tables:
            found.update(v for v in pc.unique(table[SEGMENT_FIELD]).to_pylist() if v)
        return sorted(found)

    def _load(self, entries: Sequence[_Entry], *, whole: bool = False) -> list[pa.Table]:
        """The decoded files, from the cache or read; a compacted file cut to its entry's days.

        Args:
            entries: Files to read.
            whole: Return compacted files whole, with their day column and metadata.
        """
        tables = self._cached(entries)
        missing = [e for e in entries if e.key not in tables]
        if missing:
            with self._read_lock:
                tables.update(self._cached(missing))
                fresh = self._read_files([e for e in missing if e.key not in tables])
                tables.update(fresh)
                self._remember(fresh)
        if whole:
            return [tables[e.key] for e in entries]
        return [_days_of(tables[e.key], e.days) if e.days else tables[e.key] for e in entries]

    def _cached(self, entries: Iterable[_Entry]) -> dict[tuple[str, int, int], pa.Table]:
        found = {}
        with self._lock:
            for entry in entries:
                table = self._tables.get(entry.key)
                if table is not None:
                    self._tables.move_to_end(entry.key)
                    found[entry.key] = table
        return found

    def _remember(self, fresh: Mapping[tuple[str, int, int], pa.Table]) -> None:
        with self._lock:
            for key, table in fresh.items():
                if key not in self._tables:
                    self._tables[key] = table
                    self._cached_rows += table.num_rows
            while self._cached_rows > self._max_rows and len(self._tables) > 1:
                _key, dropped = self._tables.popitem(last=False)
                self._cached_rows -= dropped.num_rows

    def _read_one(self, entry: _Entry) -> pa.Table:
        uri = f"s3://{entry.path}" if self.store.is_s3 else entry.path
        try:
            with self.store.filesystem().open_input_file(entry.path) as handle:
                return pq.ParquetFile(handle).read()
        except FileNotFoundError as error:
            raise StoreError(f"{uri} disappeared while it was read; reload the page") from error
        except (OSError, pa.ArrowException) as error:
            raise CorruptParquet(
                uri, str(error).strip().splitlines()[0] if str(error).strip() else ""
            ) from error

    def _read_files(self, entries: Sequence[_Entry]) -> dict[tuple[str, int, int], pa.Table]:
        if not entries:
            return {}
        if len(entries) == 1:
            return {entries[0].key: self._read_one(entries[0])}
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(entries))) as pool:
            return {
                entry.key: table
                for entry, table in zip(entries, pool.map(self._read_one, entries), strict=True)
            }

    # ----------------------------------------------------------------- profiles

    def _profile_file(self, entry: _Entry) -> dict[datetime | None, Profile]:
        with self._lock:
            cached = self._profiles.get(entry.key)
            if cached is not None:
                self._profiles.move_to_end(entry.key)
                return cached
        try:
            parsed = profiles_from_arrow(self._read_one(entry))
        except (ProfileError, KeyError, ValueError) as error:
            raise CorruptParquet(entry.path, f"not a profile table: {error}") from error
        with self._lock:
            self._profiles[entry.key] = parsed
            while len(self._profiles) > self._max_profiles:
                self._profiles.popitem(last=False)
        return parsed

    def window_profile(self, query: MetricsQuery, version: str, window_start: datetime) -> Profile | None:
        """The profile the job wrote for one version and window, ``None`` when there is none.

        Raises:
            CorruptParquet: if the profile file cannot be decoded.
        """
        _check_name(version, "version")
        day = window_start.astimezone(UTC).date()
        name = f"{query.window}{PROFILE_INFIX}{version}.parquet"
        # The one file's status, not a listing of the model's profiles (a year of day folders).
        folder = self.store.partition_uri(PROFILES_DATASET, {**query.partition, "date": day.isoformat()})
        entry = self._file_entry(f"{self._fs_path(folder)}/{name}", day)
        if entry is None:
            return None
        naive = window_start.astimezone(UTC).replace(tzinfo=None)
        profiles = self._profile_file(entry)
        return profiles.get(naive) or profiles.get(window_start)

    def reference_profile(self, project: str, model: str, version: str) -> Profile | None:
        """The reference profile training wrote for a version, ``None`` when there is none.

        Raises:
            CorruptParquet: if the profile file cannot be decoded.
        """
        partition = {
            "project": _check_name(project, "project"),
            "model": _check_name(model, "model"),
            "version": _check_name(version, "version"),
        }
        base = self._fs_path(self.store.partition_uri(REFERENCE_PROFILES_DATASET, partition))
        entry = self._file_entry(f"{base}/{REFERENCE_PROFILE_FILE}", date.min)
        if entry is None:
            return None
        profiles = self._profile_file(entry)
        return next(iter(profiles.values()), None)

    def _file_entry(self, path: str, day: date) -> _Entry | None:
        """The entry of one file (``None`` when there is no such file)."""
        info = self.store.filesystem().get_file_info(path)
        if info.type != pafs.FileType.File:
            return None
        return _Entry(info.path, int(info.size or 0), int(info.mtime_ns or 0), day, info.base_name)


_EMPTY_METRICS = pa.schema(
    [
        ("version", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("column", pa.string()),
        ("metric", pa.string()),
        ("statistic", pa.float64()),
        ("p_value", pa.float64()),
        ("threshold", pa.float64()),
        ("drifted", pa.bool_()),
        ("status", pa.string()),
        ("n_reference", pa.int64()),
        ("n_current", pa.int64()),
        ("reason", pa.string()),
    ]
).empty_table()


def _month_entry(info: pafs.FileInfo, month: str, unit_file: str) -> _Entry | None:
    """The entry of a month's compacted file (dated the month's first day); ``None`` for a bad month."""
    first = _parse_day(f"{month}-01")
    if first is None:
        return None
    return _Entry(info.path, int(info.size or 0), int(info.mtime_ns or 0), first, unit_file)


def _manifest(entry: _Entry, table: pa.Table) -> dict[date, tuple[int, int]]:
    """A compacted file's manifest: copied day -> (size, mtime_ns) of its daily file when copied.

    Raises:
        StoreError: if the manifest cannot be read.
    """
    raw = (table.schema.metadata or {}).get(COMPACTED_SOURCES_KEY)
    try:
        parsed = json.loads(raw) if raw else {}
        return {date.fromisoformat(day): (int(s), int(m)) for day, (s, m) in parsed.items()}
    except (ValueError, TypeError) as error:
        raise StoreError(f"{entry.path}: unreadable list of compacted files: {error}") from error


def _still_compacted(
    reader: MetricsReader, partition: Mapping[str, str], month: str, unit_file: str, entries: Sequence[_Entry]
) -> dict[date, pa.Table]:
    """The rows (with their day column) of the days whose daily file the month's compacted file
    copied as it is now (same size and modification time), read from that one file.

    Empty when there is no compacted file of the month or it cannot be read: the days are then all
    read from their daily files.
    """
    base = reader._fs_path(reader.store.partition_uri(COMPACTED_DATASET, {**partition, "month": month}))
    info = reader.store.filesystem().get_file_info(f"{base}/{unit_file}")
    entry = _month_entry(info, month, unit_file) if info.type == pafs.FileType.File else None
    if entry is None:
        return {}
    try:
        (table,) = reader._load([entry], whole=True)
        manifest = _manifest(entry, table)
    except StoreError:
        return {}  # a damaged compacted file is rewritten from the daily files
    if COMPACTED_DAY_COLUMN not in table.column_names:
        return {}
    current = {e.day: (e.size, e.mtime_ns) for e in entries}
    column = table[COMPACTED_DAY_COLUMN]
    table = table.replace_schema_metadata(None)
    return {
        day: table.filter(pc.equal(column, day.isoformat()))
        for day, stamp in sorted(manifest.items())
        if current.get(day) == stamp
    }


def _days_of(table: pa.Table, days: Sequence[date]) -> pa.Table:
    """The rows of a compacted file that were copied from ``days``, without the day column."""
    if COMPACTED_DAY_COLUMN not in table.column_names:
        return table.slice(0, 0)
    column = table[COMPACTED_DAY_COLUMN]
    wanted = pa.array([day.isoformat() for day in days], pa.string())
    copied = pc.unique(column)
    if len(copied) != len(days) or not pc.all(pc.is_in(copied, wanted)).as_py():
        table = table.filter(pc.is_in(column, wanted))
    return table.drop_columns([COMPACTED_DAY_COLUMN]).replace_schema_metadata(None)


def _unit_of(name: str) -> str | None:
    stem = name.removesuffix(".parquet").removesuffix(ERRORS_SUFFIX)
    return stem if stem in WINDOW_UNITS else None


def _parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _partition(project: str, model: str, environment: str) -> dict[str, str]:
    return {
        "project": _check_name(project, "project"),
        "model": _check_name(model, "model"),
        "environment": _check_name(environment, "environment"),
    }


# --------------------------------------------------------------------------- compaction


def compact_metrics(
    store: ParquetStore,
    project: str,
    model: str,
    environment: str,
    window: str = "day",
    months: Iterable[str] | None = None,
) -> list[str]:
    """Copy the daily ``<window>.parquet`` metrics files of whole months into one file per month.

    Why: opening a file costs far more than decoding it (see the module doc), and a year of daily
    files is 365 opens on a first visit of a model; its 12 monthly copies are 12. The monthly file
    ``metrics_compacted/project=P/model=M/environment=E/month=YYYY-MM/<window>.parquet`` holds the
    rows of each copied daily file with a ``date`` column (the daily partition) and, in its schema
    metadata, the size and modification time of each daily file as it was copied. The daily files
    stay the truth (alert rules and approvals read them): :meth:`MetricsReader.metric_files` takes a
    day from the monthly file only while its daily file is unchanged, so a stale or missing copy
    costs speed, never correctness. Run it after the monitoring job wrote the days of a month;
    rerunning it rewrites the months asked for.

    Args:
        store: The Parquet store (written through its atomic partition write).
        project: Project slug.
        model: Model name.
        environment: Environment.
        window: Window unit of the files to copy.
        months: ``YYYY-MM`` months to (re)write; every month with daily files when ``None``.

    Returns:
        URIs of the files written.

    Raises:
        InvalidQuery: for a bad name or window unit.
        CorruptParquet: naming a daily file that cannot be decoded (nothing is written for its month).
    """
    partition = _partition(project, model, environment)
    if window not in WINDOW_UNITS:
        raise InvalidQuery(f"window must be one of {', '.join(WINDOW_UNITS)}, got {window!r}")
    reader = MetricsReader(store, max_cached_rows=0)
    unit_file = f"{window}.parquet"
    # Listed before reading: a file rewritten meanwhile is recorded with its old size and time, so
    # the reader sees it changed and reads it from its daily file.
    by_month: dict[str, list[_Entry]] = {}
    for entry in reader._files(METRICS_DATASET, partition):
        if entry.name == unit_file:
            by_month.setdefault(entry.day.strftime("%Y-%m"), []).append(entry)
    wanted = sorted(by_month if months is None else set(months) & set(by_month))
    written = []
    for month in wanted:
        entries = by_month[month]
        # Days unchanged since the month was last compacted come from that one file: the job
        # compacts after every run, and reading back a month of daily files (one open each, a
        # request each on S3) cost more than the day it added.
        kept = _still_compacted(reader, partition, month, unit_file, entries)
        fresh = [entry for entry in entries if entry.day not in kept]
        loaded = dict(zip(fresh, reader._load(fresh), strict=True))
        tables = [
            kept[entry.day]
            if entry.day in kept
            else loaded[entry].append_column(
                COMPACTED_DAY_COLUMN, pa.array([entry.day.isoformat()] * loaded[entry].num_rows, pa.string())
            )
            for entry in entries
        ]
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        sources = {entry.day.isoformat(): [entry.size, entry.mtime_ns] for entry in entries}
        table = table.replace_schema_metadata({COMPACTED_SOURCES_KEY: json.dumps(sources).encode()})
        written.append(
            store.write_partition(
                COMPACTED_DATASET, {**partition, "month": month}, table, file_name=unit_file
            )
        )
    return written


def reader_of(source: ParquetStore | MetricsReader) -> MetricsReader:
    """``source`` itself when it is a reader, else a reader (with its own, short-lived cache) over it."""
    if isinstance(source, MetricsReader):
        return source
    if isinstance(source, ParquetStore):
        return MetricsReader(source)
    raise TypeError(f"expected a ParquetStore or a MetricsReader, not {type(source).__name__}")


def list_models(source: ParquetStore | MetricsReader, project: str) -> list[str]:
    """Models of ``project`` with metrics."""
    return reader_of(source).models(project)


def list_environments(source: ParquetStore | MetricsReader, project: str, model: str) -> list[str]:
    """Environments of a model with metrics."""
    return reader_of(source).environments(project, model)


def available_dates(
    source: ParquetStore | MetricsReader, project: str, model: str, environment: str
) -> list[date]:
    """Days with metrics of a model in an environment."""
    return reader_of(source).dates(project, model, environment)


def available_windows(
    source: ParquetStore | MetricsReader, project: str, model: str, environment: str
) -> list[str]:
    """Window units (``day``, ``hour``) with metrics of a model in an environment."""
    return reader_of(source).windows(project, model, environment)


def metrics_rows(
    source: ParquetStore | MetricsReader,
    query: MetricsQuery,
    *,
    metrics: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Metrics rows of a query as dictionaries, optionally only some metrics and/or columns."""
    table = reader_of(source).table(query)
    return _rows(_select(table, metrics=metrics, columns=columns))


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, building each distinct timestamp once.

    A year of daily metrics repeats 365 window starts over tens of thousands of rows, and making a
    timezone-aware ``datetime`` is the costliest part of the conversion.
    """
    times = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    rows = table.drop_columns(times).to_pylist() if times else table.to_pylist()
    for name in times:
        built: dict[int, datetime] = {}
        for row, micros in zip(rows, pc.cast(table[name], pa.int64()).to_pylist(), strict=True):
            if micros is None:
                row[name] = None
                continue
            moment = built.get(micros)
            if moment is None:
                moment = built[micros] = _EPOCH + timedelta(microseconds=micros)
            row[name] = moment
    return rows


def _select(
    table: pa.Table, *, metrics: Sequence[str] | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    mask = None
    if metrics is not None:
        mask = pc.is_in(table["metric"], pa.array(list(metrics), pa.string()))
    if columns is not None:
        by_column = pc.is_in(table["column"], pa.array(list(columns), pa.string()))
        mask = by_column if mask is None else pc.and_(mask, by_column)
    return table if mask is None else table.filter(mask)


# --------------------------------------------------------------------------- drift


def _method(row: Mapping[str, Any], statistics: Mapping[tuple[Any, ...], Mapping[str, float]]) -> str | None:
    """The method of a decision whose reason does not name it: the statistic row of equal value."""
    value = row.get("statistic")
    if value is None:
        return None
    candidates = statistics.get((row["version"], row["window_start"], row["column"]), {})
    for name, statistic in candidates.items():
        if statistic == value:
            return name
    return None


def _statistics_index(table: pa.Table) -> dict[tuple[Any, ...], dict[str, float]]:
    """(version, window, column) -> {statistic metric: value}, to recover a decision's method."""
    rows = table.filter(
        pc.invert(pc.is_in(table["metric"], pa.array([DRIFT_METRIC, *QUALITY_METRICS])))
    ).select(["version", "window_start", "column", "metric", "statistic"])
    index: dict[tuple[Any, ...], dict[str, float]] = {}
    for item in _rows(rows):
        index.setdefault((item["version"], item["window_start"], item["column"]), {})[item["metric"]] = item[
            "statistic"
        ]
    return index


def _mapped_decisions(table: pa.Table) -> pa.Table:
    """The ``drift`` rows of a metrics table as figures read them, sorted; every version still there.

    ``status`` becomes ``ok`` for a checked row and ``drifted`` false for an unchecked one; ``method``
    (the method the job's reason names, null when it names none) and ``verdict`` (the job's status)
    are added. Rows are sorted by column, window and, within a window, most rows served first.
    """
    decisions = _select(table, metrics=[DRIFT_METRIC])
    status = decisions["status"]
    checked = pc.fill_null(pc.is_in(status, pa.array(sorted(CHECKED_STATUSES))), False)
    named = pc.extract_regex(pc.fill_null(decisions["reason"], ""), _METHOD_PATTERN)
    decisions = (
        decisions.set_column(
            decisions.schema.get_field_index("status"), "status", pc.if_else(checked, "ok", status)
        )
        .set_column(
            decisions.schema.get_field_index("drifted"),
            "drifted",
            pc.and_(pc.fill_null(decisions["drifted"], False), checked),
        )
        .append_column("method", pc.struct_field(named, "method"))
        .append_column("verdict", status)
        .sort_by([("column", "ascending"), ("window_start", "ascending"), ("n_current", "descending")])
    )
    return decisions


def _decisions(table: pa.Table) -> pa.Table | None:
    """The decision rows, columnar: status mapped, one version per window, ``severity`` computed.

    ``None`` when a decision's method must be recovered from its statistics rows (files whose
    reasons do not name the method): :func:`drift_rows` then takes the row-by-row path.
    """
    decisions = _mapped_decisions(table)
    if decisions.num_rows == 0:
        return decisions.append_column("severity", pa.array([], pa.float64()))
    unnamed = pc.and_(pc.is_null(decisions["method"]), pc.is_valid(decisions["statistic"]))
    if pc.any(unnamed).as_py():
        return None
    # Another version of the same window, serving fewer rows, follows the one that speaks for it.
    columns = (
        pc.dictionary_encode(decisions["column"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    )
    starts = pc.cast(decisions["window_start"], pa.int64()).to_numpy()
    repeated = np.zeros(len(columns), dtype=bool)
    repeated[1:] = (columns[1:] == columns[:-1]) & (starts[1:] == starts[:-1])
    if repeated.any():
        decisions = decisions.filter(pa.array(~repeated))
    return decisions.append_column("severity", _severity(decisions))


def _severity(decisions: pa.Table) -> pa.Array:
    """:func:`analytics.figures.drift_severity` of every decision, computed on columns."""
    threshold = decisions["threshold"].combine_chunks()
    usable = pc.and_(
        pc.and_(pc.equal(decisions["status"], "ok"), pc.is_finite(threshold)), pc.greater(threshold, 0.0)
    )
    from analytics.figures import SEVERITY_CAP  # see _rank

    p_value = decisions["p_value"].combine_chunks()
    p_value = pc.if_else(pc.is_nan(p_value), pa.scalar(None, pa.float64()), p_value)
    cap = pa.scalar(SEVERITY_CAP, pa.float64())
    test = pc.if_else(
        pc.less_equal(p_value, 0.0), cap, pc.min_element_wise(pc.divide(threshold, p_value), cap)
    )
    statistic = decisions["statistic"].combine_chunks()
    statistic = pc.if_else(pc.is_nan(statistic), pa.scalar(None, pa.float64()), statistic)
    effect = pc.if_else(
        pc.is_finite(statistic), pc.min_element_wise(pc.divide(statistic, threshold), cap), cap
    )
    is_test = pc.fill_null(pc.is_in(decisions["method"], pa.array(sorted(TEST_METHODS))), False)
    severity = pc.if_else(is_test, test, effect)
    return pc.if_else(usable, severity, pa.scalar(None, pa.float64())).combine_chunks()


def drift_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The ``drift`` decision rows of a metrics table, shaped for :mod:`analytics.figures`.

    Each row keeps the job's fields and gains ``method``, ``verdict`` (the job's status) and
    ``severity`` (:func:`analytics.figures.drift_severity`: 1 at the threshold); ``status`` is ``ok``
    for an evaluated row, ``insufficient_data`` or ``error`` otherwise, and ``drifted`` is false for a
    row that was not evaluated. Of several versions serving one window, the one with the most rows is
    kept. Rows come sorted by column and window.

    Args:
        table: Metrics rows (for example :meth:`MetricsReader.table`).
    """
    decisions = _decisions(table)
    if decisions is not None:
        return _rows(decisions)
    return _drift_rows_recovering_methods(table)


def _drift_rows_recovering_methods(table: pa.Table) -> list[dict[str, Any]]:
    """:func:`drift_rows` row by row, recovering each unnamed method from the statistics rows."""
    from analytics.figures import drift_severity  # see _rank

    decisions = _mapped_decisions(table)
    statistics: dict[tuple[Any, ...], dict[str, float]] | None = None
    rows: list[dict[str, Any]] = []
    previous: tuple[str, datetime] | None = None
    for row in _rows(decisions):
        key = (row["column"], row["window_start"])
        if key == previous:
            continue  # another version of the same window, serving fewer rows
        previous = key
        if row["method"] is None and row["statistic"] is not None:
            if statistics is None:
                statistics = _statistics_index(table)
            row["method"] = _method(row, statistics)
        row["severity"] = drift_severity(row)
        rows.append(row)
    return rows


def _rank(row: Mapping[str, Any]) -> tuple[int, float]:
    """Order of badness: checked rows by severity above unchecked ones (errors above missing data)."""
    # Imported where a severity is computed, not with this module: the monitoring job imports it for
    # the monthly compaction alone, and the figure helpers (plotly) cost that job about 9 ms.
    from analytics.figures import drift_severity

    severity = row["severity"] if "severity" in row else drift_severity(row)
    if severity is not None:
        return (2, severity)
    return (1 if row.get("status") == "error" else 0, 0.0)


@dataclass(frozen=True)
class DriftMatrix:
    """Feature x period drift of one model, ready for :func:`analytics.figures.drift_heatmap`.

    Attributes:
        query: What was read.
        period: Length of one matrix column (the window, or a coarser period for long ranges).
        rows: One row per (column, period): the worst window of the period (see :func:`drift_rows`),
            with ``window_start`` set to the period start and the window itself in ``window``.
        columns: Columns (features) in the matrix, sorted.
        windows: Distinct windows with a drift decision.
        drifted: Every drifted ``(column, window start)``, at window resolution.
        checked: Windows x columns that were evaluated.
    """

    query: MetricsQuery
    period: timedelta
    rows: tuple[dict[str, Any], ...]
    columns: tuple[str, ...]
    windows: int
    drifted: frozenset[tuple[str, datetime]]
    checked: int

    @property
    def empty(self) -> bool:
        """Whether there is no drift decision in the range."""
        return not self.rows

    @property
    def segments(self) -> tuple[str, ...]:
        """The ``segment_*`` columns in the matrix (monitored for drift as columns, not as slices)."""
        return tuple(c for c in self.columns if c.startswith(SEGMENT_PREFIX))

    @property
    def grouped(self) -> bool:
        """Whether a matrix column spans several windows."""
        return self.period != self.query.length

    def worst(self) -> tuple[str, datetime] | None:
        """``(column, period start)`` of the worst cell, newest first among equals; ``None`` when empty."""
        if not self.rows:
            return None
        row = max(self.rows, key=lambda r: (_rank(r), r["window_start"]))
        return row["column"], row["window_start"]


def drift_matrix(
    source: ParquetStore | MetricsReader,
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str = "day",
    segment: str | None = None,
) -> DriftMatrix:
    """Feature x window drift of a model over a date range (periods of several windows for long ranges).

    Args:
        source: Store or reader.
        project: Project slug.
        model: Model name.
        environment: Environment.
        start: First day (inclusive).
        end: Last day (inclusive).
        window: ``day`` or ``hour``.
        segment: A slice of the traffic (``<name>=<value>``), ``None`` for the whole traffic.

    Returns:
        The matrix (empty when the range holds no drift decision).

    Raises:
        InvalidQuery: for bad names or range.
        CorruptParquet: naming an undecodable metrics file.
    """
    query = _query(project, model, environment, start, end, window, segment)
    reader = reader_of(source)
    files = reader.metric_files(query)
    key = ("drift_matrix", query, tuple(entry.token for entry in files))
    return reader.memoized(key, lambda: _drift_matrix(query, reader.table(query, files)))


def _drift_matrix(query: MetricsQuery, table: pa.Table) -> DriftMatrix:
    decisions = _decisions(table)
    if decisions is None:
        return _matrix_of_rows(query, drift_rows(table))
    period = period_length(query)
    starts = pc.cast(decisions["window_start"], pa.int64()).to_numpy()
    step = period // timedelta(microseconds=1)
    origin = (_PERIOD_EPOCH - _EPOCH) // timedelta(microseconds=1)
    periods = origin + ((starts - origin) // step) * step
    severity = decisions["severity"]
    # _rank columnar: checked rows by severity above errors above the rest; the earliest window of
    # a period wins a tie, as in the row-by-row reduction.
    klass = pc.if_else(
        pc.is_valid(severity),
        2,
        pc.if_else(pc.fill_null(pc.equal(decisions["status"], "error"), False), 1, 0),
    )
    ranked = pa.table(
        {
            "row": pa.array(np.arange(decisions.num_rows)),
            "column": decisions["column"],
            "period": pa.array(periods),
            "class": klass,
            "severity": pc.fill_null(severity, 0.0),
            "start": pa.array(starts),
        }
    ).sort_by(
        [
            ("column", "ascending"),
            ("period", "ascending"),
            ("class", "descending"),
            ("severity", "descending"),
            ("start", "ascending"),
        ]
    )
    cell_columns = (
        pc.dictionary_encode(ranked["column"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    )
    cell_periods = ranked["period"].to_numpy()
    first = np.ones(ranked.num_rows, dtype=bool)
    first[1:] = (cell_columns[1:] != cell_columns[:-1]) | (cell_periods[1:] != cell_periods[:-1])
    kept = ranked["row"].to_numpy()[first]
    cells = decisions.take(pa.array(kept))
    matrix_rows = tuple(
        {**row, "window": row["window_start"], "window_start": _EPOCH + timedelta(microseconds=int(start))}
        for row, start in zip(_rows(cells), periods[kept], strict=True)
    )
    drifted = decisions.filter(decisions["drifted"]).select(["column", "window_start"])
    return DriftMatrix(
        query=query,
        period=period,
        rows=matrix_rows,
        columns=tuple(sorted(set(pc.unique(decisions["column"]).to_pylist()))),
        windows=len(np.unique(starts)),
        drifted=frozenset((row["column"], row["window_start"]) for row in _rows(drifted)),
        checked=int(pc.sum(pc.equal(decisions["status"], "ok")).as_py() or 0),
    )


def _matrix_of_rows(query: MetricsQuery, rows: list[dict[str, Any]]) -> DriftMatrix:
    """:func:`_drift_matrix` over rows of :func:`drift_rows` (files that need the row-by-row path)."""
    period = period_length(query)
    cells: dict[tuple[str, datetime], dict[str, Any]] = {}
    for row in rows:
        key = (row["column"], period_start(row["window_start"], period))
        kept = cells.get(key)
        if kept is None or _rank(row) > _rank(kept):
            cells[key] = row
    matrix_rows = tuple(
        {**row, "window": row["window_start"], "window_start": key[1]} for key, row in sorted(cells.items())
    )
    return DriftMatrix(
        query=query,
        period=period,
        rows=matrix_rows,
        columns=tuple(sorted({row["column"] for row in rows})),
        windows=len({row["window_start"] for row in rows}),
        drifted=frozenset((row["column"], row["window_start"]) for row in rows if row["drifted"]),
        checked=sum(1 for row in rows if row["status"] == "ok"),
    )


# --------------------------------------------------------------------------- one feature


@dataclass(frozen=True)
class Finding:
    """One data-quality check of a feature (or of its window) as the job recorded it.

    Attributes:
        check: What was checked: ``missing_share``, ``out_of_range_share``, ``new_category_share``,
            ``schema``, ``freshness_lag_s``, ``row_count``, ``profile`` or an input error kind.
        column: The feature, or ``*`` for a check of the whole window.
        value: The measured value (a share, seconds, a count), ``None`` when not measured.
        threshold: What the value was compared with, ``None`` when nothing was.
        status: ``ok``, ``warning``, ``insufficient_data`` or ``error``.
        detail: The job's explanation (counts, the reference range, the new categories, ...).
    """

    check: str
    column: str
    value: float | None
    threshold: float | None
    status: str
    detail: str


@dataclass(frozen=True)
class QualityFindings:
    """Data quality of one feature in one window.

    Attributes:
        column: The feature.
        window_start: The window.
        findings: The checks, feature checks first, then the window's.
    """

    column: str
    window_start: datetime | None
    findings: tuple[Finding, ...] = ()

    @property
    def problems(self) -> tuple[Finding, ...]:
        """Checks whose status is not ``ok``."""
        return tuple(f for f in self.findings if f.status != "ok")


def _findings(table: pa.Table, column: str, window_start: datetime, version: str | None) -> list[Finding]:
    rows = table.filter(
        pc.equal(table["window_start"], pa.scalar(window_start, table.schema.field("window_start").type))
    )
    if version is not None:
        rows = rows.filter(pc.equal(rows["version"], version))
    order = {name: i for i, name in enumerate((*QUALITY_METRICS, *WINDOW_QUALITY_METRICS))}
    found = []
    for row in _select(rows, columns=[column, ALL_COLUMNS, "timestamp"]).to_pylist():
        metric, status = row["metric"], row["status"]
        wanted = metric in order and (row["column"] == column) == (metric in QUALITY_METRICS)
        if not wanted and status != "error":
            continue
        found.append(
            Finding(
                check=metric,
                column=row["column"],
                value=row["statistic"],
                threshold=row["threshold"],
                status="warning" if status == "drift" else status,
                detail=row["reason"] or "",
            )
        )
    found.sort(key=lambda f: (f.column != column, order.get(f.check, len(order)), f.check))
    return found


def quality_for(
    source: ParquetStore | MetricsReader,
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str,
    column: str,
    window_start: datetime,
    segment: str | None = None,
) -> QualityFindings:
    """Data-quality findings of one feature in one window: its checks, the window's and input errors.

    Args:
        source: Store or reader.
        project: Project slug.
        model: Model name.
        environment: Environment.
        start: First day of the range the window belongs to.
        end: Last day of the range.
        window: ``day`` or ``hour``.
        column: The feature.
        window_start: Start of the window (timezone-aware).
        segment: A slice of the traffic, ``None`` for the whole traffic.

    Returns:
        The findings; empty when the window has no metrics.
    """
    query = _query(project, model, environment, start, end, window, segment)
    table = reader_of(source).table(query)
    return QualityFindings(column, window_start, tuple(_findings(table, column, window_start, None)))


@dataclass(frozen=True)
class FeatureDetail:
    """One feature of one model: drift history, the focused window's distributions and data quality.

    Attributes:
        query: What was read.
        column: The feature.
        timeline: The feature's drift rows over the whole range (see :func:`drift_rows`).
        focus: The drift row of the focused window, ``None`` when the feature has none in the range.
        reference: The feature's reference profile (from the focused version's reference).
        current: The feature's profile in the focused window.
        quality: Data-quality findings of the focused window.
        notes: Why a distribution is missing, when it is.
    """

    query: MetricsQuery
    column: str
    timeline: tuple[dict[str, Any], ...]
    focus: dict[str, Any] | None
    reference: ColumnProfile | None
    current: ColumnProfile | None
    quality: QualityFindings
    notes: tuple[str, ...] = field(default=())


def feature_detail(
    source: ParquetStore | MetricsReader,
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str,
    column: str,
    at: datetime | None = None,
    period: timedelta | None = None,
    segment: str | None = None,
) -> FeatureDetail:
    """Drill-down into one feature: its drift timeline, and for one window distributions and quality.

    The focused window is the worst window of the feature within ``[at, at + period)`` (a cell of the
    drift matrix), or of the whole range when ``at`` is ``None`` or the period holds none.

    Args:
        source: Store or reader.
        project: Project slug.
        model: Model name.
        environment: Environment.
        start: First day (inclusive).
        end: Last day (inclusive).
        window: ``day`` or ``hour``.
        column: The feature (any text: it is only compared with stored values).
        at: Start of the matrix cell clicked (timezone-aware), or ``None``.
        period: Length of that cell; the window length when ``None``.
        segment: A slice of the traffic (``<name>=<value>``), ``None`` for the whole traffic.

    Returns:
        The detail; ``focus`` is ``None`` when the feature has no drift decision in the range.
    """
    query = _query(project, model, environment, start, end, window, segment)
    reader = reader_of(source)
    table = reader.table(query)
    timeline = tuple(drift_rows(_select(table, columns=[column])))
    candidates = list(timeline)
    if at is not None:
        step = period or query.length
        inside = [r for r in timeline if at <= r["window_start"] < at + step]
        candidates = inside or candidates
    focus = max(candidates, key=lambda r: (_rank(r), r["window_start"])) if candidates else None
    if focus is None:
        return FeatureDetail(query, column, timeline, None, None, None, QualityFindings(column, at))
    notes = []
    reference_column = current_column = None
    reference = reader.reference_profile(project, model, focus["version"])
    if reference is None:
        notes.append(f"no reference profile for version {focus['version']}")
    elif column in reference:
        reference_column = reference[column]
    current = None
    if query.segment is not None:
        # The job keeps window profiles of the whole traffic only; a slice's would be another file
        # per window and version for a panel that the reference alone already explains.
        notes.append(
            f"the window's distribution is kept for the whole traffic only, not for {query.segment}: "
            "choose all traffic to overlay it"
        )
    else:
        current = reader.window_profile(query, focus["version"], focus["window_start"])
    if current is None:
        if query.segment is None:
            notes.append("no profile of this window")
    elif column in current:
        current_column = current[column]
    else:
        why = dict(current.retyped).get(column)
        notes.append(
            f"{column} changed type to {why} in this window"
            if why
            else f"{column} is absent from this window"
        )
    findings = _findings(table, column, focus["window_start"], focus["version"])
    if current is not None and column in current.missing:
        findings.append(
            Finding("profile", column, None, None, "error", f"{column} is missing from the window's data")
        )
    if current is not None and column in dict(current.retyped):
        new_type = dict(current.retyped)[column]
        findings.append(
            Finding("profile", column, None, None, "error", f"{column} changed type to {new_type}")
        )
    if (
        reference_column is not None
        and current_column is not None
        and reference_column.spec != current_column.spec
    ):
        # Profiles of different specs (a reference rewritten after the window) cannot be overlaid.
        notes.append("the window was profiled with an older reference; its distribution is not comparable")
        current_column = None
    return FeatureDetail(
        query=query,
        column=column,
        timeline=timeline,
        focus=focus,
        reference=reference_column,
        current=current_column,
        quality=QualityFindings(column, focus["window_start"], tuple(findings)),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- performance and latency


def _by_window(rows: Iterable[dict[str, Any]], size_metric: str) -> dict[datetime, str]:
    """Window -> the version that speaks for it: the one with the most rows in ``size_metric``."""
    best: dict[datetime, tuple[int, str]] = {}
    for row in rows:
        if row["metric"] != size_metric:
            continue
        current = best.get(row["window_start"])
        if current is None or row["n_current"] > current[0]:
            best[row["window_start"]] = (row["n_current"], row["version"])
    return {window: version for window, (_n, version) in best.items()}


def _per_window(
    raw: Sequence[dict[str, Any]], size_metric: str, fields: Mapping[str, Any]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], tuple[dict[str, Any], ...]]:
    """Rows of the versions that speak for their windows (:func:`_by_window`), each with its window's record.

    Returns:
        ``(row, record)`` pairs for the caller to fill the records from the rows, and the records (one
        per window, oldest first: ``window_start``, ``window_end``, ``version`` and ``fields``).
    """
    speaker = _by_window(raw, size_metric)
    records: dict[datetime, dict[str, Any]] = {}
    pairs = []
    for row in raw:
        start = row["window_start"]
        if speaker.get(start, row["version"]) != row["version"]:
            continue
        record = records.get(start)
        if record is None:
            record = records[start] = {
                "window_start": start,
                "window_end": row["window_end"],
                "version": row["version"],
                **fields,
            }
        pairs.append((row, record))
    return pairs, tuple(records[start] for start in sorted(records))


@dataclass(frozen=True)
class PerformanceSeries:
    """Model performance per window, ready for :func:`analytics.figures.performance_timeline`.

    Attributes:
        task: ``classification``, ``regression``, or ``None`` when no performance row exists.
        rows: One row per window: ``window_start``, ``window_end``, every metric of the task (``None``
            where undefined), ``label_coverage``, ``n``, ``n_labelled``, ``status`` and ``reason``.
        metrics: The task's metric names.
    """

    task: str | None
    rows: tuple[dict[str, Any], ...]
    metrics: tuple[str, ...]

    def latest(self, metric: str) -> tuple[datetime, float] | None:
        """The newest window with a value of ``metric`` and that value."""
        for row in reversed(self.rows):
            if row.get(metric) is not None:
                return row["window_start"], row[metric]
        return None


def _performance(table: pa.Table) -> PerformanceSeries:
    names = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS, LABEL_COVERAGE_METRIC)
    raw = _rows(_select(table, metrics=names))
    present = {row["metric"] for row in raw}
    if present & set(CLASSIFICATION_METRICS):
        task, metrics = "classification", CLASSIFICATION_METRICS
    elif present & set(REGRESSION_METRICS):
        task, metrics = "regression", REGRESSION_METRICS
    else:
        return PerformanceSeries(None, (), ())
    fields = {**dict.fromkeys(metrics), "label_coverage": None, "n": None, "n_labelled": None}
    rows, windows = _per_window(raw, LABEL_COVERAGE_METRIC, {**fields, "status": "ok", "reason": None})
    for row, out in rows:
        value = row["statistic"]
        if row["metric"] == LABEL_COVERAGE_METRIC:
            out["label_coverage"] = value
            out["n"] = row["n_current"]
            out["n_labelled"] = round(value * row["n_current"]) if value is not None else 0
        elif row["metric"] in metrics:
            out[row["metric"]] = value if row["status"] in CHECKED_STATUSES else None
            if row["status"] not in CHECKED_STATUSES:
                out["status"] = row["status"]
                out["reason"] = out["reason"] or row["reason"]
    return PerformanceSeries(task, windows, metrics)


def performance_series(
    source: ParquetStore | MetricsReader,
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str = "day",
    segment: str | None = None,
) -> PerformanceSeries:
    """Performance (accuracy/AUC/... or MAE/RMSE/...) and label coverage per window.

    ``segment`` (``<name>=<value>``) reads that slice of the traffic instead of the whole.

    Raises:
        InvalidQuery: for bad names or range.
    """
    query = _query(project, model, environment, start, end, window, segment)
    return _performance(reader_of(source).table(query))


def _latency(table: pa.Table) -> tuple[dict[str, Any], ...]:
    raw = _rows(_select(table, metrics=[*LATENCY_METRICS, THROUGHPUT_METRIC]))
    fields = dict.fromkeys(
        [*LATENCY_METRICS.values(), "throughput_rps", "n", "p95_threshold_ms", "p95_flagged"]
    )
    rows, windows = _per_window(raw, "latency_p50", fields)
    for row, out in rows:
        value = row["statistic"] if row["status"] in CHECKED_STATUSES else None
        if row["metric"] == THROUGHPUT_METRIC:
            out["throughput_rps"] = value
            continue
        out[LATENCY_METRICS[row["metric"]]] = value
        if row["metric"] == "latency_p50":
            out["n"] = row["n_current"]
        if row["metric"] == "latency_p95":
            out["p95_threshold_ms"] = row["threshold"]
            out["p95_flagged"] = row["drifted"]
    return windows


def latency_series(
    source: ParquetStore | MetricsReader,
    project: str,
    model: str,
    environment: str,
    start: date,
    end: date,
    window: str = "day",
    segment: str | None = None,
) -> tuple[dict[str, Any], ...]:
    """Latency p50/p95/p99/mean (ms) and throughput per window, ready for ``latency_timeline``.

    Each row also carries ``p95_threshold_ms`` and ``p95_flagged`` (the job's baseline check).

    ``segment`` (``<name>=<value>``) reads that slice of the traffic instead of the whole.

    Raises:
        InvalidQuery: for bad names or range.
    """
    query = _query(project, model, environment, start, end, window, segment)
    return _latency(reader_of(source).table(query))


# --------------------------------------------------------------------------- export


def export_table(
    source: ParquetStore | MetricsReader, query: MetricsQuery, metrics: Sequence[str] | None = None
) -> pa.Table:
    """The metrics rows of a query (all, or those of ``metrics``) with project, model and environment.

    Args:
        source: Store or reader.
        query: What to export.
        metrics: Only these metrics (e.g. :data:`PAGE_METRICS`); every row when ``None``.

    Returns:
        The rows sorted by window, version, column and metric.
    """
    table = reader_of(source).table(query)
    if metrics is not None:
        table = _select(table, metrics=metrics)
    keys = dict(query.partition)
    if query.segment is not None:
        keys[SEGMENT_FIELD] = query.segment
    for position, (name, value) in enumerate(keys.items()):
        table = table.add_column(position, name, pa.repeat(pa.scalar(value, pa.string()), table.num_rows))
    if table.num_rows:
        table = table.sort_by(
            [
                ("window_start", "ascending"),
                ("version", "ascending"),
                ("column", "ascending"),
                ("metric", "ascending"),
            ]
        )
    return table


def _csv_column(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """A column as the export writes it: UTC times as ISO 8601, text defused (see :func:`export_csv`).

    Each distinct value is formatted once (a year of windows repeats 365 times over tens of
    thousands of rows; names and reasons repeat too), then taken back to the rows.
    """
    if not (pa.types.is_timestamp(column.type) or pa.types.is_string(column.type)):
        return column
    encoded = pc.dictionary_encode(column).combine_chunks()
    values = encoded.dictionary
    if pa.types.is_timestamp(column.type):
        seconds = pc.cast(values, pa.timestamp("s", tz="UTC"), safe=False)
        values = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
    else:
        risky = pc.fill_null(pc.match_substring_regex(values, _CSV_FORMULA_PATTERN), False)
        values = pc.if_else(risky, pc.binary_join_element_wise("'", values, ""), values)
    return pc.take(values, encoded.indices)


def export_csv(
    source: ParquetStore | MetricsReader, query: MetricsQuery, metrics: Sequence[str] | None = None
) -> bytes:
    """The rows of :func:`export_table` as UTF-8 CSV with a header (written by pyarrow).

    Times are ISO 8601 UTC (``2024-03-01T00:00:00Z``), booleans ``true``/``false``, missing values
    empty. Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a
    carriage return; category values in the reasons come from live traffic) are prefixed with ``'`` so
    opening the file cannot execute anything.
    """
    table = export_table(source, query, metrics)
    table = pa.table([_csv_column(c) for c in table.columns], names=table.column_names)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(quoting_style="needed"))
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class ModelStatus:
    """The latest state of one model in one environment.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment.
        last_day: Newest day with metrics (``None`` when the model has none in the look-back).
        drifted_features: Features that drifted in a window of ``last_day``.
        latency_p95_ms: p95 latency of the newest window that has one.
        performance_metric: ``accuracy`` (classification) or ``rmse`` (regression), when known.
        performance: Its value in the newest window that has one.
        performance_at: That window's start.
    """

    project: str
    model: str
    environment: str
    last_day: date | None
    drifted_features: tuple[str, ...] = ()
    latency_p95_ms: float | None = None
    performance_metric: str | None = None
    performance: float | None = None
    performance_at: datetime | None = None


@dataclass(frozen=True)
class Overview:
    """Latest state and recent history of every model of some projects.

    Attributes:
        statuses: One per project/model/environment with metrics.
        latency: ``project, model, environment, window_start, p95_ms`` per daily window.
        performance: ``project, model, environment, window_start, metric, value`` per daily window.
    """

    statuses: tuple[ModelStatus, ...]
    latency: tuple[dict[str, Any], ...]
    performance: tuple[dict[str, Any], ...]

    def models_per_environment(self) -> dict[str, int]:
        """Environment -> number of models with metrics there."""
        counts: dict[str, int] = {}
        for status in self.statuses:
            counts[status.environment] = counts.get(status.environment, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def drifted_features(self) -> int:
        """Drifted features summed over every model's latest day."""
        return sum(len(status.drifted_features) for status in self.statuses)


def _model_overview(
    reader: MetricsReader, project: str, model: str, environment: str, days: int
) -> tuple[ModelStatus, list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The status and recent series of one model/environment (one listing, memoized per files)."""
    entries = reader._files(METRICS_DATASET, _partition(project, model, environment), newest=days)
    daily = [e for e in entries if _unit_of(e.name) in (None, "day")]
    if not daily:
        return None
    last = daily[-1].day
    query = MetricsQuery(
        project, model, environment, max(daily[0].day, last - timedelta(days=days - 1)), last
    )
    files = [e for e in daily if e.day >= query.start]

    def compute() -> tuple[ModelStatus, list[dict[str, Any]], list[dict[str, Any]]]:
        table = reader.table(query, files)
        key = {"project": project, "model": model, "environment": environment}
        drifted = {
            r["column"] for r in drift_rows(table) if r["drifted"] and r["window_start"].date() == last
        }
        series = _performance(table)
        metric = {"classification": "accuracy", "regression": "rmse"}.get(series.task or "")
        latest = series.latest(metric) if metric else None
        lat = _latency(table)
        status = ModelStatus(
            project,
            model,
            environment,
            last,
            tuple(sorted(drifted)),
            next((r["p95_ms"] for r in reversed(lat) if r["p95_ms"] is not None), None),
            metric,
            latest[1] if latest else None,
            latest[0] if latest else None,
        )
        latency = [{**key, "window_start": r["window_start"], "p95_ms": r["p95_ms"]} for r in lat]
        performance = [
            {**key, "window_start": r["window_start"], "metric": metric, "value": r[metric]}
            for r in series.rows
            if metric
        ]
        return status, latency, performance

    return reader.memoized(("overview", query, tuple(e.key for e in files)), compute)


def overview(source: ParquetStore | MetricsReader, projects: Iterable[str], *, days: int = 14) -> Overview:
    """Latest drift, latency and performance of every model of ``projects`` with daily metrics.

    Each model/environment is read over its own newest ``days`` days (labels arrive late, so the
    newest performance value may be a few days old). Model/environments are listed and read in a
    few threads (listing a folder of a year of days is most of the cost once the files are cached).

    Args:
        source: Store or reader.
        projects: Project slugs (the caller has checked the user may see them).
        days: Days of history per model/environment.
    """
    if days < 1:
        raise InvalidQuery("days must be at least 1")
    reader = reader_of(source)
    targets = [
        (project, model, environment)
        for project in projects
        for model in reader.models(project)
        for environment in reader.environments(project, model)
    ]
    if not targets:
        return Overview((), (), ())
    with ThreadPoolExecutor(max_workers=min(OVERVIEW_THREADS, len(targets))) as pool:
        parts = [p for p in pool.map(lambda t: _model_overview(reader, *t, days), targets) if p is not None]
    return Overview(
        tuple(status for status, _, _ in parts),
        tuple(row for _, latency, _ in parts for row in latency),
        tuple(row for _, _, performance in parts for row in performance),
    )
