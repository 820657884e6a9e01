"""The monitoring job: per-window profiles and metrics of every model from its inference logs.

``python -m jobs monitor`` (or :func:`run_monitor`) finds every (project, model, environment) with
``inference_logs`` partitions and, for each date that needs it, computes per model version and window
(a day by default, or an hour):

* the window's profile on the version's reference spec (``analytics.profile.profile``), written to
  ``profiles``;
* drift of every reference column against the reference profile (``analytics.drift`` with
  :data:`MONITOR_POLICY`), data quality (``analytics.quality``: missing share, out-of-range share, new
  categories; plus schema and freshness), performance on the labels joined by request id
  (``analytics.performance``, classification or regression by the model's task, and label coverage),
  and latency p50/p95/p99 and throughput, all written as rows of ``metrics``.

Each date's logs are read once (every file of the partition, with pyarrow); consecutive dates are
profiled together in one DuckDB query per column kind (``batch_days``), which spreads the fixed cost of
a query over several days. Every write goes through :meth:`analytics.store.ParquetStore.write_partition`,
atomic per file and replacing the file of a rerun, so a rerun writes the same rows and never duplicates
them, and a job killed midway leaves readers on the previous files.

Incremental by default: the ``monitor_state`` dataset keeps, per project/model/environment and per
(date, window unit), a fingerprint of the date's log files (path and size), of its label files and of
the reference profiles used. A date is recomputed when it is new, when its log fingerprint or its
references changed, when its labels changed while the date is within the label horizon
(``label_horizon_days``, 7 by default: labels arrive up to a week late), or when its last attempt
failed. ``backfill`` recomputes every date of the range. See ``docs/MONITORING.md``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.abc
import logging
import math
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.performance import (
    classification_from_partials,
    latency_from_partials,
    latest_labels,
    regression_from_partials,
)
from analytics.policy import DEFAULT_POLICY, Policy
from analytics.profile import Profile, ProfileSpec, profiles_from_arrow, profiles_to_arrow
from analytics.store import ParquetStore, StoredFile, StoreError
from jobs import _monitor_inputs as inputs
from jobs import _monitor_rows as rows_of
from jobs._deferred_import import load_in_background
from jobs._monitor_inputs import MONITOR_STATE, DayInput, Problem, StateEntry
from jobs._monitor_rows import Thresholds
from jobs._monitor_segments import (
    POSITIVE_LABEL,
    SegmentMetrics,
    SegmentPartials,
    SegmentReports,
    SliceKey,
    StackedBatch,
    WholePartials,
    batch_partials,
    batch_profiles,
    stack_batch,
    window_counts,
    window_sql,
)
from jobs._monitor_version import RowRules, VersionInputs, add_version_rows
from jobs.contracts import (
    INFERENCE_LOGS,
    LABEL_COLUMN,
    LABELS,
    METRICS,
    PROFILES,
    REFERENCE_PROFILES,
    key_segment_problem,
    require_valid,
    validate_metrics_table,
)
from jobs.permissions import Actor, Permission, require

logger = logging.getLogger(__name__)

__all__ = [
    "MONITOR_POLICY",
    "MONITOR_STATE",
    "WINDOW_UNITS",
    "InputProblem",
    "MonitorError",
    "MonitorInputError",
    "MonitorRequest",
    "MonitorSummary",
    "TargetResult",
    "Thresholds",
    "WindowProfileQuery",
    "WindowProfileSource",
    "read_metrics",
    "read_window_profiles",
    "register_monitor",
    "run_monitor",
    "run_scheduled_monitor",
    "run_targets",
]

WINDOW_UNITS: Mapping[str, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
"""Window units the job computes, with their length."""

DEFAULT_LOOKBACK = {"day": 7, "hour": 24}
"""Earlier windows of the latency baseline: a week of days, a day of hours."""

FORMAT = 3
"""Version of what the job computes; a date computed by another format is recomputed.

2: latency quantiles and ROC AUC from the binned partials shared with the scaled-out merge.
3: segment slices use those binned partials too (merged from units in a scaled-out run).
"""

MONITOR_POLICY: Policy = replace(DEFAULT_POLICY, alpha=1e-4)
"""The drift policy of the scheduled job: :data:`analytics.policy.DEFAULT_POLICY` with ``alpha = 1e-4``.

The default ``alpha = 0.01`` suits one comparison. The job repeats the comparison for every column of
every window of every model and environment, forever: at 0.01 about one window in a hundred raises a
false drift alarm (six model/environments of the demo gave five spurious drifted cells in 90 days,
with p-values of 0.003-0.007), while real drift of the size worth an alert has p-values many orders
below 1e-4 even at staging volumes. Everything else (methods, thresholds, the large-sample effect
sizes, the Benjamini-Hochberg correction across columns) is the default policy's.

Checked on the 90-day demo workspace (``python -m jobs demo``: 3 models x 2 environments x 90 days,
5 760 column-day drift cells): the 105 cells of the three injected drifts are all flagged, from their
first day to the last (credit-default/prod ``income`` 30 days, churn/staging ``monthly_charges`` 60,
demand/prod ``channel`` 15), and none of the 5 655 others is, so alpha stays at 1e-4.
"""

_ERRORS_SUFFIX = "-errors.parquet"


def _compute_errors() -> tuple[type[Exception], ...]:
    """What the analytics raise on data they cannot handle (ProfileError is a ValueError).

    A function, evaluated by the ``except`` clauses only when something is raised: importing this
    module reads nothing of DuckDB, which a run loads only if some query needs it
    (``jobs._deferred_import``, :meth:`_TargetRun._compute`).
    """
    return (ValueError, ArithmeticError, duckdb.Error, pa.ArrowException)


_PROFILE_INFIX = "-version-"


class MonitorError(ValueError):
    """The monitoring job cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class MonitorRequest:
    """What to monitor and how.

    Attributes:
        project: Only this project (all when ``None``).
        model: Only this model.
        environment: Only this environment.
        since: First date to consider (inclusive).
        until: Last date to consider (inclusive).
        window: ``day`` or ``hour``.
        backfill: Recompute every date of the range instead of only what changed.
        label_horizon_days: Labels arriving this many days after a date still trigger its recomputation.
        policy: Drift policy (:data:`MONITOR_POLICY` by default).
        thresholds: Data-quality, latency and freshness thresholds.
        batch_days: Dates profiled together in one query per column kind (each query has a fixed cost
            of tens of milliseconds, so a month of small days costs little more than one day).
        batch_bytes: Upper bound of the Parquet bytes of one batch (the batch is held in memory,
            decoded: a few times this); a larger single date forms a batch of its own.
        exclude_projects: Projects left out (e.g. archived ones).
        workers: Project/model/environments monitored at the same time (threads: DuckDB queries and
            file writes release the GIL, so a second worker fills the waits of the first).
    """

    project: str | None = None
    model: str | None = None
    environment: str | None = None
    since: date | None = None
    until: date | None = None
    window: str = "day"
    backfill: bool = False
    label_horizon_days: int = 7
    policy: Policy = MONITOR_POLICY
    thresholds: Thresholds = field(default_factory=Thresholds)
    batch_days: int = 31
    batch_bytes: int = 64 * 1024 * 1024
    exclude_projects: frozenset[str] = frozenset()
    workers: int = 2

    def __post_init__(self) -> None:
        for name in ("project", "model", "environment"):
            value = getattr(self, name)
            if value is not None and key_segment_problem(value):
                raise MonitorError(f"invalid {name}: {key_segment_problem(value)}")
        if self.window not in WINDOW_UNITS:
            raise MonitorError(f"window must be one of {', '.join(WINDOW_UNITS)}, got {self.window!r}")
        if self.since and self.until and self.since > self.until:
            raise MonitorError(f"since ({self.since}) is after until ({self.until})")
        if self.label_horizon_days < 0:
            raise MonitorError("label_horizon_days must be >= 0")
        if self.batch_days < 1 or self.batch_bytes < 1 or self.workers < 1:
            raise MonitorError("batch_days, batch_bytes and workers must be positive")

    def filters(self) -> dict[str, str]:
        """Partition filters of the logs listing."""
        return {
            key: value
            for key, value in (
                ("project", self.project),
                ("model", self.model),
                ("environment", self.environment),
            )
            if value is not None
        }

    def in_range(self, day: date) -> bool:
        """Whether ``day`` lies in ``[since, until]``."""
        return (self.since is None or day >= self.since) and (self.until is None or day <= self.until)


@dataclass(frozen=True)
class InputProblem:
    """An input the job could not use; the date it belongs to keeps its previous metrics.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment.
        date: Partition date (``None`` for problems not tied to one date).
        path: URI of the offending file ('' when none).
        kind: ``corrupt_file``, ``schema``, ``bad_partition`` or ``write_failed``.
        column: Offending column (``*`` when not about one column).
        reason: What is wrong.
    """

    project: str
    model: str
    environment: str
    date: date | None
    path: str
    kind: str
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.project}/{self.model}/{self.environment}" + (f" {self.date}" if self.date else "")
        return f"{where}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class TargetResult:
    """What the job did for one project/model/environment.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment.
        computed: Dates computed by this run, in order.
        skipped: Dates already up to date.
        failed: Dates that could not be computed (see ``problems``).
        reasons: Why each computed date was computed (``new``, ``logs changed``, ``labels changed``, ...).
        versions: Model versions seen in the computed dates.
        rows_read: Inference rows read.
        metric_rows: Metrics rows written.
        problems: Inputs that could not be used.
        latest_request: Latest request time among the computed dates.
    """

    project: str
    model: str
    environment: str
    computed: tuple[date, ...] = ()
    skipped: tuple[date, ...] = ()
    failed: tuple[date, ...] = ()
    reasons: Mapping[date, str] = field(default_factory=dict)
    versions: tuple[str, ...] = ()
    rows_read: int = 0
    metric_rows: int = 0
    problems: tuple[InputProblem, ...] = ()
    latest_request: datetime | None = None


@dataclass(frozen=True)
class MonitorSummary:
    """Outcome of one run.

    Attributes:
        request: What was asked.
        targets: One result per project/model/environment, sorted.
        problems: Problems not tied to one target (e.g. a malformed partition folder).
        started_at: When the run started (UTC).
        duration_s: Wall time of the run.
    """

    request: MonitorRequest
    targets: tuple[TargetResult, ...]
    problems: tuple[InputProblem, ...] = ()
    started_at: datetime | None = None
    duration_s: float = 0.0

    @property
    def all_problems(self) -> tuple[InputProblem, ...]:
        """Every problem of the run."""
        return self.problems + tuple(p for t in self.targets for p in t.problems)

    @property
    def ok(self) -> bool:
        """Whether every input could be used and every write succeeded."""
        return not self.all_problems

    @property
    def computed_dates(self) -> int:
        """(target, date) pairs computed by this run."""
        return sum(len(t.computed) for t in self.targets)

    def to_text(self) -> str:
        """A human summary: one line per target, then every problem."""
        if not self.targets and not self.problems:
            return "nothing to monitor: no inference_logs partition matches the request"
        lines = []
        for target in self.targets:
            lines.append(
                f"{target.project}/{target.model}/{target.environment}: "
                f"{len(target.computed)} date(s) computed, {len(target.skipped)} up to date, "
                f"{len(target.failed)} failed; {target.rows_read} rows read, "
                f"{target.metric_rows} metric rows written"
                + (f"; versions {', '.join(target.versions)}" if target.versions else "")
            )
        problems = self.all_problems
        lines.append(
            f"{self.computed_dates} date(s) computed in {self.duration_s:.1f} s; "
            + (f"{len(problems)} problem(s):" if problems else "no problem")
        )
        lines.extend(f"  {problem}" for problem in problems)
        return "\n".join(lines)


# --------------------------------------------------------------------------- public helpers for readers


def read_metrics(
    store: ParquetStore,
    project: str,
    model: str,
    environment: str | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    window: str = "day",
) -> pa.Table:
    """Metrics rows of one model (and environment), optionally for a date range, of one window unit.

    Reads only the ``metrics`` dataset: what a page shows over 90 days comes from here (and from
    :func:`read_window_profiles`), never from the raw logs.

    Returns:
        The rows with the partition columns (text) and the ``metrics`` columns; empty when none.
    """
    if window not in WINDOW_UNITS:
        raise MonitorError(f"window must be one of {', '.join(WINDOW_UNITS)}, got {window!r}")
    filters: dict[str, Any] = {"project": project, "model": model}
    if environment is not None:
        filters["environment"] = environment
    if since is not None or until is not None:
        files = store.list_files(METRICS, filters=filters)
        dates = sorted({f.partition.get("date", "") for f in files})
        filters["date"] = [
            d for d in dates if _parse_date(d) is not None and _in(_parse_date(d), since, until)
        ]
    length = int(WINDOW_UNITS[window].total_seconds())
    # Through read(query=), not relation(): a rewrite by a running job mid-read is then retried.
    # read lists the files itself, and gives an empty table (pa.table({})) when there are none.
    return store.read(
        METRICS,
        filters=filters,
        query=lambda relation: relation.filter(f"epoch(window_end) - epoch(window_start) = {length}").order(
            'environment, version, window_start, "column", metric'
        ),
    )


def read_window_profiles(
    store: ParquetStore,
    project: str,
    model: str,
    environment: str,
    *,
    since: date | None = None,
    until: date | None = None,
    window: str = "day",
) -> dict[tuple[str, datetime], Profile]:
    """The per-window profiles the job wrote, keyed by (version, window start as naive UTC).

    Read with pyarrow: the profile spec travels in the Arrow schema metadata, which DuckDB drops.
    """
    filters = {"project": project, "model": model, "environment": environment}
    prefix = f"{window}{_PROFILE_INFIX}"
    result: dict[tuple[str, datetime], Profile] = {}
    for stored in store.list_files(PROFILES, filters=filters):
        day = _parse_date(stored.partition.get("date", ""))
        name = stored.path.rsplit("/", 1)[-1]
        if day is None or not _in(day, since, until) or not name.startswith(prefix):
            continue
        version = name[len(prefix) : -len(".parquet")]
        with store.filesystem().open_input_file(stored.path.removeprefix("s3://")) as handle:
            table = pq.ParquetFile(handle).read()
        for window_start, window_profile in profiles_from_arrow(table).items():
            result[(version, window_start)] = window_profile
    return dict(sorted(result.items()))


def _in(day: date, since: date | None, until: date | None) -> bool:
    return (since is None or day >= since) and (until is None or day <= until)


def _parse_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- the job


Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class WindowProfileQuery:
    """What the job asks a ``window_profiles`` source for: one version's windows of one batch.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment.
        version: Model version.
        spec: The reference spec the windows must be profiled with.
        window: ``day`` or ``hour``.
        files: The log files of each date of the batch (the source must have profiled exactly these).
    """

    project: str
    model: str
    environment: str
    version: str
    spec: ProfileSpec
    window: str
    files: Mapping[date, Sequence[StoredFile]]


WindowProfileSource = Callable[[WindowProfileQuery], Mapping[datetime, Profile] | None]
"""``source(query)`` -> window start (naive UTC) -> profile, as ``analytics.profile.profile`` returns
them, or ``None`` to let the job profile the batch itself."""


def run_monitor(
    store: ParquetStore,
    request: MonitorRequest | None = None,
    *,
    now: datetime | None = None,
    actor: Actor | None = None,
    progress: Progress | None = None,
    window_profiles: WindowProfileSource | None = None,
) -> MonitorSummary:
    """Compute the profiles and metrics of every window that needs it (see the module doc).

    Args:
        store: The Parquet store holding ``inference_logs``, ``labels`` and ``reference_profiles``.
        request: What to monitor (everything, incrementally, by day, when ``None``).
        now: Current time (UTC); decides which dates are within the label horizon.
        actor: The user who asked, for runs started from the studio: needs ``run_backfill`` on every
            project monitored. ``None`` for the scheduled run (the job's own identity).
        progress: Optional ``progress(stage, fraction)`` callback.
        window_profiles: Optional source of window profiles computed elsewhere (the scaled-out
            run's merged profiles, ``docs/SCALE_OUT.md``): asked for each batch and version in place
            of profiling the batch here; when it answers ``None`` the job profiles the batch itself.
            Everything else (checks, drift, quality, performance, latency, writes, state) is unchanged.

    Returns:
        The summary; ``summary.ok`` is ``False`` when an input could not be used.

    Raises:
        Forbidden: if ``actor`` lacks ``run_backfill`` on a monitored project (nothing is written).
        StoreError: if the store cannot be listed at all.
    """
    request = request or MonitorRequest()
    started = time.monotonic()
    started_at = datetime.now(UTC)
    now = _utc(now or started_at)
    targets, problems = _targets(store, request)
    if actor is not None:
        for project in sorted({key[0] for key in targets}):
            require(actor, Permission.RUN_BACKFILL, project)
    keys = sorted(targets)
    finished: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def monitor(key: tuple[str, str, str]) -> TargetResult:
        result = _TargetRun(store, request, key, targets[key], now, window_profiles).run()
        with lock:
            finished.append(key)
            if progress is not None:
                progress(f"monitored {'/'.join(key)}", len(finished) / len(keys))
        return result

    return run_targets(request, keys, monitor, problems, started_at, started)


def run_targets(
    request: MonitorRequest,
    keys: Sequence[tuple[str, str, str]],
    monitor_one: Callable[[tuple[str, str, str]], TargetResult],
    problems: Sequence[InputProblem],
    started_at: datetime,
    started: float,
) -> MonitorSummary:
    """Monitor each target (on ``request.workers`` threads when there are several) and summarise.

    Shared by this job and the scaled-out merge (``jobs.scaleout.merge``), which differ only in how
    one target is monitored.

    Args:
        request: The run's request (its ``workers``).
        keys: The targets, in the order of the summary.
        monitor_one: Monitors one target.
        problems: Input problems found while planning.
        started_at: When the run started (UTC).
        started: ``time.monotonic()`` at the start, for the duration.
    """
    if request.workers > 1 and len(keys) > 1:
        with ThreadPoolExecutor(max_workers=request.workers, thread_name_prefix="monitor") as pool:
            results = list(pool.map(monitor_one, keys))
    else:
        results = [monitor_one(key) for key in keys]
    return MonitorSummary(
        request=request,
        targets=tuple(results),
        problems=tuple(problems),
        started_at=started_at,
        duration_s=time.monotonic() - started,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _targets(
    store: ParquetStore, request: MonitorRequest
) -> tuple[dict[tuple[str, str, str], dict[date, list[StoredFile]]], list[InputProblem]]:
    """Log files of every project/model/environment, by date, within the request's filters and range."""
    targets: dict[tuple[str, str, str], dict[date, list[StoredFile]]] = defaultdict(lambda: defaultdict(list))
    problems: list[InputProblem] = []
    for stored in store.list_files(INFERENCE_LOGS, filters=request.filters()):
        part = stored.partition
        key = (part.get("project"), part.get("model"), part.get("environment"))
        day = _parse_date(part.get("date", ""))
        if None in key or day is None:
            problems.append(
                InputProblem(
                    key[0] or "?",
                    key[1] or "?",
                    key[2] or "?",
                    None,
                    stored.path,
                    "bad_partition",
                    "*",
                    f"{stored.path} is not under project=/model=/environment=/date=YYYY-MM-DD/",
                )
            )
            continue
        if request.in_range(day) and key[0] not in request.exclude_projects:
            targets[key][day].append(stored)  # type: ignore[index]
    return {k: dict(v) for k, v in targets.items()}, problems


@dataclass
class _Reference:
    """A version's reference restricted to the columns logs carry (the label is left out)."""

    profile: Profile | None
    why_missing: str | None
    task: str | None


@dataclass
class _DayOutput:
    rows: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, list[Profile]] = field(default_factory=dict)


@dataclass
class _VersionBatch:
    """What one version's rows of a batch give, before its metric rows are written."""

    task: str
    counts: dict[datetime, tuple[int, datetime]]
    latency: Any
    performance: Any
    windows: dict[datetime, Profile]
    segments: SegmentPartials
    segment_reports: SegmentReports | None


class _TargetRun:
    """The job for one project/model/environment."""

    def __init__(
        self,
        store: ParquetStore,
        request: MonitorRequest,
        key: tuple[str, str, str],
        log_files: Mapping[date, list[StoredFile]],
        now: datetime,
        window_profiles: WindowProfileSource | None = None,
    ) -> None:
        self.store = store
        self.window_profiles = window_profiles
        self.request = request
        self.project, self.model, self.environment = key
        self.partition = {"project": self.project, "model": self.model, "environment": self.environment}
        self.log_files = log_files
        self.now = now
        self.unit = request.window
        self.length = WINDOW_UNITS[self.unit]
        self.lookback = request.thresholds.latency_lookback_windows or DEFAULT_LOOKBACK[self.unit]
        self.references: dict[str, _Reference] = {}
        self.problems: list[InputProblem] = []
        self.latency_history: dict[datetime, tuple[int, float]] = {}
        self.fresh_windows: set[datetime] = set()
        self.segments = SegmentMetrics(self.store, self.unit, self.request.policy, self.request.thresholds)

    # ----------------------------------------------------------------- planning

    def run(self) -> TargetResult:
        # One thread computing the window profiles beside the partials (see _compute_version).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-profiles") as self._side:
            return self._run()

    def _run(self) -> TargetResult:
        self.label_files = inputs.group_by_date(self.store.list_files(LABELS, filters=self.partition))
        self.reference_files: dict[str, list[StoredFile]] = defaultdict(list)
        for stored in self.store.list_files(
            REFERENCE_PROFILES, filters={"project": self.project, "model": self.model}
        ):
            if "version" in stored.partition:
                self.reference_files[stored.partition["version"]].append(stored)
        self.output_files = {
            PROFILES: inputs.group_by_date(self.store.list_files(PROFILES, filters=self.partition)),
            METRICS: inputs.group_by_date(self.store.list_files(METRICS, filters=self.partition)),
        }
        self.state = inputs.read_state(self.store, self.partition)
        plan, skipped = self._plan()
        computed: list[date] = []
        failed: list[date] = []
        versions: set[str] = set()
        rows_read = metric_rows = 0
        latest: datetime | None = None
        if plan:
            self._load_latency_history([day for day, _ in plan])
            # In `python -m jobs monitor` (jobs/__main__.py defers DuckDB, which the computation
            # needs only for a query its Arrow tables cannot answer: see _compute, and
            # pyarrow.compute), what the run needs once the days are read loads in a thread of its
            # own while this one reads them (pyarrow decodes without the GIL; imports hold it):
            # pyarrow.compute (the checks of a file use it once it is read), numpy.ma (pyarrow's
            # first conversion of a NumPy array imports it) and the monthly compaction's module.
            # Elsewhere they are loaded already and this does nothing.
            load_in_background(
                ["pyarrow.compute", "numpy.ma", "analytics.metrics"],
                when_deferred="duckdb",
            )
        try:
            for batch in self._batches([day for day, _ in plan]):
                days = [self._read_day(day) for day in batch]
                good = [d for d in days if not d.problems]
                outputs = self._compute_isolated(good) if good else {}
                for day_input in days:
                    if day_input.problems:
                        self._write_errors(day_input)
                        failed.append(day_input.day)
                        continue
                    output = outputs.get(day_input.day, _DayOutput())
                    metric_rows += self._write_day(day_input, output)
                    computed.append(day_input.day)
                    versions.update(day_input.versions)
                    rows_read += day_input.logs.num_rows if day_input.logs is not None else 0
                    day_latest = _latest(day_input.logs)
                    if day_latest is not None and (latest is None or day_latest > latest):
                        latest = day_latest
                inputs.write_state(self.store, self.partition, self.state)
                if not gc.isenabled():
                    gc.collect()  # the batch's cycles (a few hundred objects, 2 ms), see _monitor_command
        except StoreError as error:
            # A failed write ends this target; what was published stays, the state says what to redo.
            self._problem(None, "", "write_failed", "*", f"writing the results failed: {error}")
        if computed:
            self._compact_months({day.strftime("%Y-%m") for day in computed})
        computed_set = set(computed)
        return TargetResult(
            project=self.project,
            model=self.model,
            environment=self.environment,
            computed=tuple(computed),
            skipped=tuple(skipped),
            failed=tuple(failed),
            reasons={day: why for day, why in plan if day in computed_set},
            versions=tuple(sorted(versions)),
            rows_read=rows_read,
            metric_rows=metric_rows,
            problems=tuple(self.problems),
            latest_request=latest,
        )

    def _compact_months(self, months: set[str]) -> None:
        """Rewrite the monthly copies of the metrics the pages read (one file a month, not one a day).

        An optimisation only: the daily files stay the truth and a reader falls back to them for any
        day whose copy is stale, so a failed compaction is logged, never a problem of the run.
        """
        # Imported here: the read layer pulls in the figure helpers, which the job needs nowhere else.
        from analytics.metrics import compact_metrics

        try:
            compact_metrics(self.store, self.project, self.model, self.environment, self.unit, months)
        except Exception:  # see the docstring: compaction never fails the run
            logger.warning(
                "compacting the metrics of %s/%s/%s for %s failed; pages read the daily files",
                self.project,
                self.model,
                self.environment,
                ", ".join(sorted(months)),
                exc_info=True,
            )

    def _fingerprints(self, day: date, versions: Sequence[str]) -> tuple[str, str, str]:
        logs = inputs.fingerprint(self.store, self.log_files[day])
        labels = inputs.fingerprint(self.store, self.label_files.get(day.isoformat(), []))
        references = [f for v in sorted(versions) for f in self.reference_files.get(v, [])]
        return logs, labels, inputs.fingerprint(self.store, references) + ":" + ",".join(sorted(versions))

    def _plan(self) -> tuple[list[tuple[date, str]], list[date]]:
        """Dates to compute (with why) and dates already up to date."""
        horizon = self.now.date() - timedelta(days=self.request.label_horizon_days)
        plan: list[tuple[date, str]] = []
        skipped: list[date] = []
        for day in sorted(self.log_files):
            entry = self.state.get((day.isoformat(), self.unit))
            why = None
            if self.request.backfill:
                why = "backfill"
            elif entry is None:
                why = "new"
            elif entry.status != "ok":
                why = "retry after failure"
            elif entry.format != FORMAT:
                why = "new job format"
            else:
                logs, labels, references = self._fingerprints(day, entry.versions)
                if logs != entry.logs_fingerprint:
                    why = "logs changed"
                elif day >= horizon and labels != entry.labels_fingerprint:
                    why = "labels changed"
                elif references != entry.reference_fingerprint:
                    why = "reference changed"
            if why is None:
                skipped.append(day)
            else:
                plan.append((day, why))
        return plan, skipped

    def _batches(self, days: Sequence[date]) -> list[list[date]]:
        batches: list[list[date]] = []
        size = 0
        for day in days:
            day_bytes = sum(f.size for f in self.log_files[day])
            if (
                not batches
                or len(batches[-1]) >= self.request.batch_days
                or (size + day_bytes > self.request.batch_bytes and batches[-1])
            ):
                batches.append([])
                size = 0
            batches[-1].append(day)
            size += day_bytes
        return batches

    # ----------------------------------------------------------------- inputs

    def _reference(self, version: str) -> _Reference:
        if version in self.references:
            return self.references[version]
        files = [f for f in self.reference_files.get(version, []) if f.path.endswith("/profile.parquet")]
        where = f"reference_profiles/project={self.project}/model={self.model}/version={version}"
        if not files:
            reference = _Reference(None, f"no reference profile for version {version} ({where})", None)
        else:
            table, problem = inputs.read_parquet_file(self.store, files[0])
            try:
                if problem is not None:
                    raise ValueError(problem.reason)
                full = Profile.from_arrow(table)
            except (ValueError, KeyError, TypeError, pa.ArrowException) as error:
                # Written by another format or damaged: report it like a missing reference.
                reference = _Reference(
                    None, f"the reference profile of version {version} is unusable: {error}", None
                )
            else:
                reference = _restrict(full)
        self.references[version] = reference
        return reference

    def _spec_of(self, version: str) -> ProfileSpec | None:
        reference = self._reference(version)
        return reference.profile.spec if reference.profile is not None else None

    def _read_day(self, day: date) -> DayInput:
        result = DayInput(day)
        # The labels are read in the side thread while this one reads the logs (pyarrow decodes
        # without the GIL); the side thread has nothing else to do until the batch is computed.
        label_read = self._side.submit(
            inputs.read_label_files, self.store, self.label_files.get(day.isoformat(), [])
        )
        tables: list[pa.Table] = []
        versions: set[str] = set()
        new_columns: dict[str, None] = {}
        for stored in self.log_files[day]:
            # Text columns stay dictionary-encoded from the file to the counts of their values.
            table, problem = inputs.read_parquet_file(self.store, stored, dictionary_text=True)
            if problem is not None:
                result.problems.append(problem)
                continue
            checked, problems, file_versions, new = inputs.check_log_table(
                stored.path, table, day, self._spec_of, text_as_dictionary=True
            )
            versions.update(file_versions)
            result.problems.extend(problems)
            new_columns.update(dict.fromkeys(new))
            if checked is not None:
                tables.append(checked)
        labels, label_problems = label_read.result()
        result.problems.extend(label_problems)
        result.versions = tuple(sorted(versions))
        result.new_columns = tuple(new_columns)
        if not result.problems:
            result.logs = (
                pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
            )
            result.labels = pa.concat_tables(labels) if labels else inputs.EMPTY_LABELS.empty_table()
        for problem in result.problems:
            self._problem(day, problem.path, problem.kind, problem.column, problem.reason)
        return result

    def _problem(self, day: date | None, path: str, kind: str, column: str, reason: str) -> None:
        self.problems.append(
            InputProblem(self.project, self.model, self.environment, day, path, kind, column, reason)
        )

    # ----------------------------------------------------------------- computing

    def _compute_isolated(self, days: Sequence[DayInput]) -> dict[date, _DayOutput]:
        """Compute a batch; if it fails, each date alone, so one bad date cannot sink the others.

        A date that fails alone gets a ``compute_failed`` problem (and error rows) like a bad file.
        """
        try:
            return self._compute(days)
        except _compute_errors() as error:
            if len(days) == 1:
                self._compute_failed(days[0], error)
                return {}
        outputs: dict[date, _DayOutput] = {}
        for day_input in days:
            try:
                outputs.update(self._compute([day_input]))
            except _compute_errors() as error:
                self._compute_failed(day_input, error)
        return outputs

    def _compute_failed(self, day_input: DayInput, error: Exception) -> None:
        first_line = (str(error).strip().splitlines() or [""])[0]
        reason = f"computing the metrics failed: {type(error).__name__}: {first_line}"
        day_input.problems.append(Problem("", "compute_failed", "*", reason))
        self._problem(day_input.day, "", "compute_failed", "*", reason)

    def _compute(self, days: Sequence[DayInput]) -> dict[date, _DayOutput]:
        """Profiles and metrics rows of a batch of readable dates, one scan of each date's rows.

        The side thread stacks each version's rows slice by slice (``jobs._monitor_segments``
        ``stack_batch``) and profiles them (``batch_profiles``: the slices' and the whole traffic's
        window profiles from one numeric scan), while this thread joins the labels and computes the
        latency and performance partials of the same stacked rows (``batch_partials``;
        :meth:`_compute_version` says how one label per request is kept). NumPy and the kernels
        release the GIL, and the two threads share nothing but read-only Arrow tables. Each thread
        has a deferred DuckDB cursor (``store.deferred_cursor``): the analytics read their
        relations' schemas and compute from the tables, so DuckDB is imported and queried only
        for what the tables cannot answer (a request labelled twice, a task to infer, ...).
        """
        logs = pa.concat_tables([d.logs for d in days], promote_options="permissive")
        labels = pa.concat_tables([d.labels for d in days])
        new_columns = {d.day: d.new_columns for d in days}
        versions = sorted({v for d in days for v in d.versions})
        files = {d.day: tuple(self.log_files[d.day]) for d in days}
        # Filtered in Arrow: a DuckDB ConstantExpression would import pandas (half a second).
        by_version = {
            v: logs if len(versions) == 1 else logs.filter(pc.equal(logs.column("version"), v))
            for v in versions
        }
        # Every version's stack first: this thread needs them before the profiles are done.
        stacks = {v: self._side.submit(self._stack, by_version[v]) for v in versions}
        profiles = {
            v: self._side.submit(self._profiles, v, stacks[v], by_version[v], self._reference(v), files)
            for v in versions
        }
        try:
            # Deferred: DuckDB is imported and connected only if some query has to run.
            cursor = self.store.deferred_cursor()
            labels_chosen = _LabelChoice(cursor, labels)
            computed = {
                v: self._compute_version(v, by_version[v], stacks[v], profiles[v], labels_chosen)
                for v in versions
            }
        finally:
            # A failed batch leaves no task of its own behind to run into the next one.
            for future in [*profiles.values(), *stacks.values()]:
                future.cancel()
            wait([*stacks.values(), *profiles.values()])
        # Baselines see every window of the batch that precedes theirs, whatever the version.
        for version in versions:
            for window in computed[version].latency.windows:
                self._remember_latency(_utc(window.window_start), window)
        outputs: dict[date, _DayOutput] = defaultdict(_DayOutput)
        rules = RowRules(self.length, self.request.policy, self.request.thresholds, self._baseline)
        for version in versions:
            batch = computed[version]
            reference = self._reference(version)
            inputs_of_version = VersionInputs(
                version, batch.counts, batch.performance, batch.latency, batch.windows, new_columns
            )
            add_version_rows(
                inputs_of_version, reference.profile, reference.why_missing or "", rules, outputs
            )
            self.segments.add(version, batch.segments, reference.profile, batch.task, batch.segment_reports)
        return outputs

    def _stack(self, logs: pa.Table) -> StackedBatch:
        cursor = self.store.deferred_cursor()  # the calling thread's own
        return stack_batch(logs, cursor.from_arrow(logs), self.unit, max_values=self.segments.max_values)

    def _compute_version(
        self,
        version: str,
        logs: pa.Table,
        stacked: Future[StackedBatch],
        profiles: Future[tuple[dict[SliceKey, Profile], dict[datetime, Profile]]],
        labels: _LabelChoice,
    ) -> _VersionBatch:
        """One version's aggregates of a batch: its and its slices' partials, with their profiles.

        The labels are joined as read first: a request's label is usually sent once. If the join
        gave some row twice (a request labelled again, say a corrected label), the partials are
        computed again with one label per request, the latest (``latest_labels``), as every metric
        chooses it; checking that costs a sum, choosing up front a hash of every request id.
        """
        reference = self._reference(version)
        con = self.store.deferred_cursor()  # this thread's, as the labels' relations are
        relation = con.from_arrow(logs)
        counts = _window_counts(relation, self.unit, logs)
        task = reference.task or _task_from_logs(relation)
        task = task if task == "classification" else "regression"
        rows = stacked.result()
        segments, whole = batch_partials(
            con, rows, labels.as_read, (task,), self.unit, labels_unique=True, labels_table=labels.table
        )
        assert whole is not None  # stack_batch kept the rest
        if not _joined_once(whole, task):
            latest, latest_table = labels.latest()
            segments, whole = batch_partials(
                con, rows, latest, (task,), self.unit, labels_unique=True, labels_table=latest_table
            )
            assert whole is not None
        # Before waiting for the side thread's profiles: they usually take longer than the partials.
        latency = latency_from_partials([whole.latency], self.unit)
        if task == "classification":
            # Binned ROC AUC, as a scaled-out merge computes it (docs/SCALE_OUT.md, "What is exact").
            performance = classification_from_partials(
                [whole.performance[task]], self.unit, positive_label=POSITIVE_LABEL
            )
        else:
            performance = regression_from_partials([whole.performance[task]], self.unit)
        reports = self.segments.reports(segments, task)  # the slices' ones, which need no profile either
        segments.profiles, windows = profiles.result()
        return _VersionBatch(task, counts, latency, performance, windows, segments, reports)

    def _profiles(
        self,
        version: str,
        stacked: Future[StackedBatch],
        logs: pa.Table,
        reference: _Reference,
        files: Mapping[date, Sequence[StoredFile]],
    ) -> tuple[dict[SliceKey, Profile], dict[datetime, Profile]]:
        """The slices' and the whole traffic's window profiles (UTC); none without a reference."""
        if reference.profile is None:
            return {}, {}
        spec = reference.profile.spec
        given = None
        if self.window_profiles is not None:
            query = WindowProfileQuery(
                self.project, self.model, self.environment, version, spec, self.unit, files
            )
            given = self.window_profiles(query)
        cursor = self.store.deferred_cursor()  # the calling thread's own
        # Done already: the stacks are queued before the profiles on this one-thread executor.
        slices, windows = batch_profiles(cursor, stacked.result(), logs, spec, self.unit, whole=given is None)
        return slices, {_utc(start): p for start, p in (given if given is not None else windows).items()}

    # ----------------------------------------------------------------- latency baseline

    def _load_latency_history(self, days: Sequence[date]) -> None:
        """Earlier p95 latencies from the metrics already written, for the baselines of ``days``."""
        span = math.ceil(self.lookback * self.length / timedelta(days=1))
        first, last = min(days) - timedelta(days=span), max(days)
        computing = {day.isoformat() for day in days}
        # Dates this run recomputes get their p95 from the run itself (and in date order).
        dates = [
            key
            for key in self.output_files[METRICS]
            if key not in computing and _parse_date(key) is not None and first <= _parse_date(key) <= last
        ]
        # A few small files, read with pyarrow: cheaper than a DuckDB query for this.
        columns = ["metric", "window_start", "window_end", "statistic", "n_current"]
        for key in sorted(dates):
            for stored in self.output_files[METRICS][key]:
                table, problem = inputs.read_parquet_file(self.store, stored)
                if problem is not None or not set(columns) <= set(table.column_names):
                    continue  # no baseline from unreadable history: the rows say "no baseline yet"
                # Picked in Python (a few hundred rows): pyarrow.compute is not loaded yet in
                # `python -m jobs monitor` (see _run), and its import would wait for it.
                names = table.column("metric").to_pylist()
                rows = [i for i, name in enumerate(names) if name == "latency_p95"]
                for item in (table.slice(i, 1).select(columns).to_pylist()[0] for i in rows):
                    start, end = item["window_start"], item["window_end"]
                    if (
                        start is None
                        or end is None
                        or item["statistic"] is None
                        or end - start != self.length
                    ):
                        continue
                    self._keep_largest(_utc(start), int(item["n_current"]), float(item["statistic"]))

    def _remember_latency(self, start: datetime, window: Any) -> None:
        if window.p95_ms is None:
            return
        if start not in self.fresh_windows:
            # This run's value replaces what the stored metrics said about the window.
            self.fresh_windows.add(start)
            self.latency_history.pop(start, None)
        self._keep_largest(start, window.n_latency, window.p95_ms)

    def _keep_largest(self, start: datetime, n: int, p95: float) -> None:
        # One value per window: the version that served the most requests speaks for the window.
        current = self.latency_history.get(start)
        if current is None or n > current[0]:
            self.latency_history[start] = (n, p95)

    def _baseline(self, start: datetime) -> list[float]:
        earliest = start - self.lookback * self.length
        return [p95 for when, (_n, p95) in self.latency_history.items() if earliest <= when < start]

    # ----------------------------------------------------------------- writing

    def _day_partition(self, day: date) -> dict[str, str]:
        return {**self.partition, "date": day.isoformat()}

    def _write_day(self, day_input: DayInput, output: _DayOutput) -> int:
        """Publish a computed date: profiles, then metrics, then drop files they supersede."""
        day = day_input.day
        partition = self._day_partition(day)
        written_profiles = set()
        for version, window_profiles in sorted(output.profiles.items()):
            name = f"{self.unit}{_PROFILE_INFIX}{version}.parquet"
            self.store.write_partition(
                PROFILES, partition, profiles_to_arrow(window_profiles), file_name=name
            )
            written_profiles.add(name)
        self.segments.publish(self.store, partition, day)
        table = rows_of.metrics_table(output.rows)
        require_valid(validate_metrics_table(table, partition=partition))
        self.store.write_partition(METRICS, partition, table, file_name=f"{self.unit}.parquet")
        stale = [
            f.path
            for f in self.output_files[PROFILES].get(day.isoformat(), [])
            if _name(f).startswith(f"{self.unit}{_PROFILE_INFIX}") and _name(f) not in written_profiles
        ] + [
            f.path
            for f in self.output_files[METRICS].get(day.isoformat(), [])
            if _name(f) == f"{self.unit}{_ERRORS_SUFFIX}"
        ]
        inputs.delete_files(self.store, stale)
        logs, labels, references = self._fingerprints(day, day_input.versions)
        self.state[(day.isoformat(), self.unit)] = StateEntry(
            date=day.isoformat(),
            window=self.unit,
            status="ok",
            logs_fingerprint=logs,
            labels_fingerprint=labels,
            reference_fingerprint=references,
            versions=day_input.versions,
            rows=day_input.logs.num_rows if day_input.logs is not None else 0,
            format=FORMAT,
        )
        return table.num_rows

    def _write_errors(self, day_input: DayInput) -> None:
        """Record why a date failed next to its previous metrics, which stay as they were."""
        day = day_input.day
        previous = self.state.get((day.isoformat(), self.unit))
        versions = day_input.versions or (previous.versions if previous else ()) or ("unknown",)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        table = rows_of.metrics_table(
            rows_of.error_rows(
                versions,
                start,
                start + timedelta(days=1),
                [(p.kind, p.column, p.reason) for p in day_input.problems],
            )
        )
        partition = self._day_partition(day)
        require_valid(validate_metrics_table(table, partition=partition))
        self.store.write_partition(METRICS, partition, table, file_name=f"{self.unit}{_ERRORS_SUFFIX}")
        logs, labels, references = self._fingerprints(day, versions)
        self.state[(day.isoformat(), self.unit)] = StateEntry(
            date=day.isoformat(),
            window=self.unit,
            status="error",
            logs_fingerprint=logs,
            labels_fingerprint=labels,
            reference_fingerprint=references,
            versions=tuple(v for v in versions if v != "unknown"),
            rows=0,
            format=FORMAT,
        )


class _LabelChoice:
    """A batch's labels as read, and one per request (the latest) when a join needs them."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, labels: pa.Table) -> None:
        self._cursor = cursor
        self.table = labels
        self.as_read = cursor.from_arrow(labels)
        self._latest: tuple[duckdb.DuckDBPyRelation, pa.Table] | None = None

    def latest(self) -> tuple[duckdb.DuckDBPyRelation, pa.Table]:
        """One label per request, chosen once per batch, as a relation and as the table behind it."""
        if self._latest is None:
            table = latest_labels(self._cursor.from_arrow(self.table))
            self._latest = self._cursor.from_arrow(table), table
        return self._latest


def _timed_rows(table: pa.Table, where: pa.ChunkedArray) -> int:
    """Sum of ``n`` over the rows of a partial that ``where`` selects and that have a window."""
    selected = pc.and_(where, pc.is_valid(table.column("window_start")))
    return int(pc.sum(pc.filter(table.column("n"), selected)).as_py() or 0)


def _joined_once(whole: WholePartials, task: str) -> bool:
    """Whether the label join of a batch's partials kept every row once (no request with two labels).

    A left join keeps every row of the logs, once per matching label: the performance partial then
    counts as many rows with a window as the latency partial of the same rows, exactly when no row
    matched two labels.
    """
    latency = whole.latency
    rows = _timed_rows(latency, pc.is_null(latency.column("bin")))
    performance = whole.performance[task]
    if task == "classification":
        joined = _timed_rows(performance, pc.equal(performance.column("kind"), "window"))
    else:
        joined = _timed_rows(performance, pc.is_valid(performance.column("n")))
    return joined == rows


def _name(stored: StoredFile) -> str:
    return stored.path.rsplit("/", 1)[-1]


def _restrict(full: Profile) -> _Reference:
    """The reference without the label (logs have none) and the model's task from the label's kind."""
    names = [name for name in full.spec.names if name != LABEL_COLUMN]
    task = None
    if LABEL_COLUMN in full.spec.names:
        task = "classification" if full.spec.column(LABEL_COLUMN).kind == "categorical" else "regression"
    spec = full.spec.select(names)
    restricted = Profile(
        spec=spec,
        rows=full.rows,
        columns=tuple(c for c in full.columns if c.name in names),
        schema=tuple(pair for pair in full.schema if pair[0] != LABEL_COLUMN),
        missing=tuple(n for n in full.missing if n != LABEL_COLUMN),
        retyped=tuple(pair for pair in full.retyped if pair[0] != LABEL_COLUMN),
    )
    return _Reference(restricted, None, task)


def _task_from_logs(relation: duckdb.DuckDBPyRelation) -> str:
    """Without a reference: classification when scores are logged, regression otherwise."""
    row = relation.query("_mms_logs", "SELECT count(score) FROM _mms_logs").fetchone()
    return "classification" if row and row[0] else "regression"


def _window_counts(
    relation: duckdb.DuckDBPyRelation, unit: str, logs: pa.Table | None = None
) -> dict[datetime, tuple[int, datetime]]:
    """Rows and latest request time per window (UTC, timezone-aware): from ``logs`` (the table
    behind ``relation``) where ``window_counts`` can count them, else by a query."""
    counted = window_counts(logs, unit) if logs is not None else None
    if counted is not None:
        return {start: (rows, latest) for start, rows, latest in counted}
    # The windows as the profiles and partials cut them (window_start_sql): date_trunc over a
    # TIMESTAMP WITH TIME ZONE converts each row through the calendar (about 0.2 µs a row).
    sql = (
        f'SELECT * FROM (SELECT {window_sql(relation, unit)} AS w, count(*), max("timestamp") '
        'FROM _mms_logs WHERE "timestamp" IS NOT NULL GROUP BY w) WHERE w IS NOT NULL'
    )
    return {_utc(w): (int(n), _utc(latest)) for w, n, latest in relation.query("_mms_logs", sql).fetchall()}


def _latest(table: pa.Table | None) -> datetime | None:
    if table is None or table.num_rows == 0:
        return None
    value = pc.max(table.column("timestamp")).as_py()
    return _utc(value) if value is not None else None


class MonitorInputError(RuntimeError):
    """A scheduled run finished but some inputs could not be used; ``summary`` says which.

    Everything usable was computed and written before this is raised.
    """

    def __init__(self, summary: MonitorSummary) -> None:
        self.summary = summary
        problems = summary.all_problems
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"monitor run finished with {len(problems)} problem(s): {shown}{more}")


def run_scheduled_monitor(
    session_factory: Any,
    store: ParquetStore,
    *,
    settings: Any = None,
    now: datetime | None = None,
) -> MonitorSummary:
    """The scheduled run (``python -m jobs scheduler``): every project not archived, incrementally, by day.

    Args:
        session_factory: Session factory of the metadata database (to find archived projects).
        store: The Parquet store.
        settings: Studio settings (unused today; the scheduler passes them to every job).
        now: Current time (UTC).

    Returns:
        The summary, when every input was usable.

    Raises:
        MonitorInputError: after the run, when some input could not be used (the scheduler then
            reports the job as failed, like the CLI's non-zero exit).
    """
    from sqlalchemy import select

    from jobs.db.models import Project
    from jobs.db.session import session_scope

    with session_scope(session_factory) as session:
        archived = frozenset(session.scalars(select(Project.slug).where(Project.archived.is_(True))))
    summary = run_monitor(store, MonitorRequest(exclude_projects=archived), now=now)
    if not summary.ok:
        raise MonitorInputError(summary)
    return summary


# --------------------------------------------------------------------------- command line


def _parse_cli_date(value: str | None, option: str) -> date | None:
    from jobs.cli import UsageError

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be a date YYYY-MM-DD, got {value!r}") from None


class _HidePandas(importlib.abc.MetaPathFinder):
    """An import finder that makes ``import pandas`` fail while it is on ``sys.meta_path``."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError("pandas is hidden while pyarrow probes for it", name=fullname)
        return None


def _settle_pyarrow_without_pandas() -> None:
    """Have pyarrow decide, for this process, that pandas is absent: the job never uses pandas.

    pyarrow imports pandas the first time anything is converted into Arrow (``pa.array``,
    ``pa.scalar``, a compute function given a Python value), only to check whether the object is a
    pandas one: about 0.2 s of CPU, a tenth of an incremental run. It probes once per process and
    keeps the answer, so the probe is made here with pandas hidden. What needs pandas explicitly
    (``to_pandas``, ``Table.from_pandas``) still imports it when called. Two differences remain
    while pandas is not imported, neither met by the job: ``pa.array`` treats a pandas object as a
    plain sequence, and a nanosecond timestamp becomes a ``datetime`` (the job's timestamps are
    microseconds). A process that imported pandas already keeps pyarrow as it was.
    """
    if "pandas" in sys.modules:
        return
    finder = _HidePandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([])
    finally:
        sys.meta_path.remove(finder)


def _monitor_command(args: argparse.Namespace, settings: Any) -> int:
    from jobs.cli import EXIT_FAILURE, EXIT_OK, UsageError

    try:
        request = MonitorRequest(
            project=args.project,
            model=args.model,
            environment=args.env,
            since=_parse_cli_date(args.since, "--since"),
            until=_parse_cli_date(args.until, "--until"),
            window=args.window,
            backfill=args.backfill,
            label_horizon_days=args.label_horizon_days,
        )
    except MonitorError as error:
        raise UsageError(str(error)) from error
    if getattr(args, "whole_process", False) and not getattr(args, "engine", None):
        # Process-wide, so only in a process of its own (not in the studio or tests) and not for
        # the engines (local, Spark, Step Functions), whose drivers may hand pandas data to pyarrow.
        _settle_pyarrow_without_pandas()
        # The cyclic collector walks the young objects every 700 allocations: about 25 ms of CPU
        # in a run over a 200k-row day (bench/monitor_bench.py), for the few cycles a batch leaves.
        # Off for the run: the objects of the imports are frozen, and each batch's cycles are
        # collected once it is written (_TargetRun._run).
        gc.freeze()
        gc.disable()
    store = ParquetStore(settings.store_config())
    if getattr(args, "engine", None):
        from jobs.scaleout import run_engine_command

        try:
            return run_engine_command(args, store, request, settings)
        finally:
            store.close()
    try:
        summary = run_monitor(store, request)
    except StoreError as error:
        print(f"error: the monitoring job could not read the store: {error}")
        return EXIT_FAILURE
    finally:
        store.close()
    print(summary.to_text())
    code = EXIT_OK if summary.ok else EXIT_FAILURE
    if getattr(args, "whole_process", False):
        from analytics.cli import end_process

        # Every file was published atomically (and fsynced) and the store is closed.
        end_process(code)
    return code


def register_monitor(subparsers: Any) -> None:
    """``monitor``: compute per-window profiles and metrics from the inference logs."""
    parser = subparsers.add_parser(
        "monitor",
        help="compute drift, data quality, performance and latency metrics per window",
        description="Exit 0 when every input was usable, 1 when a file was corrupt or broke the contract "
        "(the other partitions are still computed), 2 on a usage error.",
    )
    parser.add_argument("--project", help="only this project")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--env", help="only this environment")
    parser.add_argument("--since", help="first date to consider (YYYY-MM-DD)")
    parser.add_argument("--until", help="last date to consider (YYYY-MM-DD, inclusive)")
    parser.add_argument("--window", choices=tuple(WINDOW_UNITS), default="day")
    parser.add_argument("--backfill", action="store_true", help="recompute every date of the range")
    parser.add_argument(
        "--label-horizon-days",
        type=int,
        default=7,
        help="labels arriving up to this many days after a date trigger its recomputation",
    )
    from jobs._engine_options import add_engine_arguments  # --engine: parallel units (SCALE_OUT.md)

    add_engine_arguments(parser)
    parser.set_defaults(func=_monitor_command)
