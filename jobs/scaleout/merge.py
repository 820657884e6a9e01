"""The merge step: combine a run's partials and write results as the single-process job does.

:func:`merge` reads the run's listing, every partial under ``units/`` and:

1. keeps one partial per unit id (a retried task rewrote its own key; a copy under another name, or a
   partial of another run, is dropped and counted);
2. **refuses** when any unit of the listing has no readable partial: :class:`MissingUnitsError` names
   them and nothing is written;
3. merges, per (project, model, environment, date, version, window), the units' profiles in unit
   order with :meth:`analytics.profile.Profile.merge` (counts and histograms exact, moments by Chan's
   formula) and gathers their other aggregates (window counts, latency, classification and regression
   partials of ``analytics.performance``, segment partials of ``jobs._monitor_segments``);
4. runs the monitoring job's per-target run over the plan's files (:func:`run_merged_monitor`): every
   date the run covers exactly takes its profiles, counts, latency, performance and segment partials
   from the merged partials, so the merge neither lists nor reads an inference log; the job's own
   code computes drift, quality and the rows (``jobs._monitor_version.add_version_rows``, and the
   segment rows by ``jobs._monitor_segments.SegmentMetrics.add``) and writes ``profiles``,
   ``metrics``, ``segment_metrics`` and its state as in a single-process run. A date the run
   does not cover (a unit met an input problem, the labels or a reference changed since the map) is
   read and computed by the job as usual, and reported (``declined``).
"""

from __future__ import annotations

import argparse
import inspect
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from analytics.performance import (
    classification_from_partials,
    latency_from_partials,
    regression_from_partials,
)
from analytics.profile import Profile, ProfileSpec, merge_profiles
from analytics.store import ParquetStore, StoredFile
from jobs._monitor_segments import SegmentPartials, merge_segment_partials
from jobs._monitor_version import RowRules, VersionInputs, add_version_rows
from jobs.scaleout.profile_unit import (
    POSITIVE_LABEL,
    partial_aggregates,
    partial_info,
    partial_profiles,
    partial_segments,
)
from jobs.scaleout.units import (
    RunPlan,
    ScaleoutError,
    files_digest,
    list_folder,
    load_plan,
    read_table,
    spec_digest,
    write_json,
)

RESULT_FILE = "result.json"
_SHOWN = 10


class MissingUnitsError(ScaleoutError):
    """Some units of a run have no partial profile: the merge wrote nothing.

    Attributes:
        run_id: The run.
        missing: ``(index, unit_id, where)`` of every missing unit.
    """

    def __init__(self, run_id: str, missing: list[tuple[int, str, str]], unreadable: list[str]) -> None:
        self.run_id = run_id
        self.missing = missing
        shown = ", ".join(f"#{index} ({where})" for index, _unit_id, where in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        bad = f"; unreadable partials: {', '.join(unreadable[:_SHOWN])}" if unreadable else ""
        super().__init__(
            f"run {run_id}: {len(missing)} unit(s) have no partial profile: {shown}{more}{bad}. "
            "Nothing was written. Rerun those units (python -m jobs profile-unit --manifest <manifest>) "
            "and merge again."
        )


@dataclass
class Partials:
    """The partials of a run, one per unit.

    Attributes:
        tables: Unit id -> partial table.
        duplicates: URIs of further partials of a unit already read (dropped).
        foreign: URIs of partials of another run or of no unit of this run (ignored).
        unreadable: ``uri: reason`` of files that are not partials.
    """

    tables: dict[str, pa.Table] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def load_partials(store: ParquetStore, plan: RunPlan) -> Partials:
    """Read every partial of a run and keep one per unit id.

    The partial at the unit's own key (``units/<index>.parquet``) is preferred; otherwise the first
    by name. Partials are deterministic functions of their unit, so any copy holds the same profiles.

    Raises:
        MissingUnitsError: if a unit of the plan has no readable partial.
    """
    layout = plan.layout
    expected = {unit.unit_id: unit for unit in plan.units}
    found: dict[str, list[tuple[str, pa.Table]]] = defaultdict(list)
    partials = Partials()
    for uri, _size in list_folder(store, layout.units_dir):
        if not uri.endswith(".parquet"):
            continue
        try:
            table = read_table(store, uri)
            info = partial_info(table)
        except (ScaleoutError, OSError, ValueError, pa.ArrowException) as error:
            partials.unreadable.append(f"{uri}: {error}")
            continue
        unit = expected.get(info.get("unit_id"))
        if info.get("run_id") != plan.run_id or unit is None or info.get("window") != plan.window:
            partials.foreign.append(uri)
            continue
        found[unit.unit_id].append((uri, table))
    missing = []
    for unit in plan.units:
        copies = found.get(unit.unit_id)
        if not copies:
            where = f"{unit.project}/{unit.model}/{unit.environment} {unit.date}, {len(unit.files)} file(s)"
            missing.append((unit.index, unit.unit_id, where))
            continue
        own = layout.partial(unit.index)
        copies.sort(key=lambda item: (item[0] != own, item[0]))
        partials.tables[unit.unit_id] = copies[0][1]
        partials.duplicates.extend(uri for uri, _ in copies[1:])
    if missing:
        raise MissingUnitsError(plan.run_id, missing, partials.unreadable)
    return partials


DateKey = tuple[str, str, str, str]


@dataclass
class DayAggregates:
    """What the units of one date computed besides profiles: all the merge needs instead of the logs.

    Attributes:
        rows: Inference rows of the date.
        versions: Model versions seen.
        new_columns: Columns the logs carry that the reference does not know, in file order.
        scores: Version -> non-null scores (decides the task of a version without a reference).
        errors: Version -> task -> why its aggregates could not be computed.
        tasks: Version -> the tasks every unit of the date computed aggregates for.
        labels_sha256: Digests of the label files each unit read (one value when they agree).
        parts: Version -> part (``counts``, ``latency``, ``classification``, ``regression``) -> the
            units' tables, in unit order.
        segments: Version -> the units' segment partials, in unit order.
    """

    rows: int = 0
    versions: tuple[str, ...] = ()
    new_columns: tuple[str, ...] = ()
    scores: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks: dict[str, set[str]] = field(default_factory=dict)
    labels_sha256: set[str] = field(default_factory=set)
    parts: dict[str, dict[str, list[pa.Table]]] = field(default_factory=dict)
    segments: dict[str, list[SegmentPartials]] = field(default_factory=dict)

    def add(
        self,
        info: Mapping[str, Any],
        aggregates: Mapping[str, Mapping[str, pa.Table]],
        segments: Mapping[str, SegmentPartials],
    ) -> None:
        """Add one unit's partial (its metadata, aggregates and segment partials)."""
        self.rows += int(info["rows"])
        self.versions = tuple(sorted({*self.versions, *info["versions"]}))
        self.new_columns = tuple(dict.fromkeys([*self.new_columns, *info.get("new_columns", ())]))
        for version, count in info.get("scores", {}).items():
            self.scores[version] = self.scores.get(version, 0) + int(count)
        for version, computed in info.get("tasks", {}).items():
            known = self.tasks.get(version)
            self.tasks[version] = set(computed) if known is None else known & set(computed)
        for version, errors in info.get("aggregate_errors", {}).items():
            self.errors.setdefault(version, {}).update(errors)
        self.labels_sha256.add(info.get("labels_sha256", ""))
        for version, parts in aggregates.items():
            for part, table in parts.items():
                self.parts.setdefault(version, {}).setdefault(part, []).append(table)
        for version, partials in segments.items():
            self.segments.setdefault(version, []).append(partials)

    def tables(self, version: str, part: str) -> list[pa.Table]:
        """The units' tables of one version's part (empty when the version has none)."""
        return self.parts.get(version, {}).get(part, [])


@dataclass
class MergedProfiles:
    """Window profiles of a run, merged from its partials, and the monitoring job's source of them.

    Attributes:
        root: Store root of the run.
        window: ``day`` or ``hour``.
        profiles: (project, model, environment, date) -> version -> window start -> profile.
        files_sha256: (project, model, environment, date) -> digest of all the date's unit files.
        specs: ``project/model`` -> version -> spec digest the units profiled with.
        incomplete: Dates some of whose files a task could not use -> the first problem. The job
            profiles them itself: a problem it meets too is reported for the date, a passing one
            (a read that failed once) does not leave the date without its profiles.
        served: Batches the monitoring job took from the run.
        declined: Batches it had to profile itself, with why.
        aggregates: (project, model, environment, date) -> the units' other aggregates.
    """

    root: str
    window: str
    profiles: dict[DateKey, dict[str, dict[datetime, Profile]]]
    files_sha256: dict[DateKey, str]
    specs: Mapping[str, Mapping[str, str]]
    incomplete: Mapping[DateKey, str] = field(default_factory=dict)
    aggregates: dict[DateKey, DayAggregates] = field(default_factory=dict)
    served: int = 0
    declined: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def profiles_of(self, project: str, model: str, environment: str, day: date | str) -> dict[str, Any]:
        """Version -> window start -> merged profile of one date (empty if the run has none)."""
        key = (project, model, environment, day if isinstance(day, str) else day.isoformat())
        return self.profiles.get(key, {})

    def window_profiles(self, query: Any) -> Mapping[datetime, Profile] | None:
        """The ``window_profiles`` source of :func:`jobs.monitor.run_monitor`.

        Args:
            query: The job's question (``jobs.monitor.WindowProfileQuery``): project, model,
                environment, version, spec, window unit and the log files of each date of a batch.

        Returns:
            The batch's window profiles of the version (window start, naive UTC, -> profile, as
            :func:`analytics.profile.profile` returns them), or ``None`` when the run does not cover
            the batch exactly: another window unit, another spec, or other files than were profiled.
        """
        why = self._decline(query)
        with self._lock:
            if why is not None:
                self.declined.append(why)
                return None
            self.served += 1
        result: dict[datetime, Profile] = {}
        for day in query.files:
            key = (query.project, query.model, query.environment, day.isoformat())
            result.update(self.profiles.get(key, {}).get(query.version, {}))
        return dict(sorted(result.items()))

    def _decline(self, query: Any) -> str | None:
        where = f"{query.project}/{query.model}/{query.environment} version {query.version}"
        if query.window != self.window:
            return f"{where}: window {query.window}, the run profiled {self.window}"
        planned = self.specs.get(f"{query.project}/{query.model}", {}).get(query.version)
        if planned is None or planned != spec_digest(query.spec):
            return f"{where}: the reference spec differs from the run's"
        for day, files in query.files.items():
            key = (query.project, query.model, query.environment, day.isoformat())
            if self.files_sha256.get(key) != files_digest(files, self.root):
                return f"{where} {day}: the log files differ from the run's"
            if key in self.incomplete:
                return f"{where} {day}: a task could not use every file ({self.incomplete[key]})"
        return None

    def note_declined(self, why: str) -> None:
        """Record a date the job computes from its logs (the run cannot stand in for them)."""
        with self._lock:
            self.declined.append(why)

    def day_aggregates(
        self,
        key: DateKey,
        window: str,
        files: Sequence[StoredFile],
        label_files_sha256: str,
        spec_of: Callable[[str], ProfileSpec | None],
        task_of: Callable[[str], str | None],
    ) -> tuple[DayAggregates | None, str]:
        """A date's aggregates if they stand in exactly for the job's reading of the date's logs.

        They do when the date's files, label files and every version's reference spec are those the
        units used, no unit met an input problem and the aggregates of each version's task exist.

        Returns:
            ``(aggregates, "")`` or ``(None, why not)``.
        """
        where = f"{key[0]}/{key[1]}/{key[2]} {key[3]}"
        aggregates = self.aggregates.get(key)
        if aggregates is None:
            return None, f"{where}: not in the run"
        if window != self.window:
            return None, f"{where}: window {window}, the run computed {self.window}"
        if self.files_sha256.get(key) != files_digest(files, self.root):
            return None, f"{where}: the log files differ from the run's"
        if key in self.incomplete:
            return None, f"{where}: a task could not use every file ({self.incomplete[key]})"
        if aggregates.labels_sha256 != {label_files_sha256}:
            return None, f"{where}: the label files changed since the units read them"
        planned = self.specs.get(f"{key[0]}/{key[1]}", {})
        for version in aggregates.versions:
            spec = spec_of(version)
            if (spec_digest(spec) if spec is not None else None) != planned.get(version):
                return None, f"{where} version {version}: the reference spec differs from the run's"
            task = task_of(version) or ("classification" if aggregates.scores.get(version) else "regression")
            if task in aggregates.errors.get(version, {}):
                return None, f"{where} version {version}: {aggregates.errors[version][task]}"
            if task not in aggregates.tasks.get(version, ()):
                return None, f"{where} version {version}: the units did not compute {task} aggregates"
        return aggregates, ""


def merge_partials(plan: RunPlan, partials: Partials) -> MergedProfiles:
    """Merge the partials of a run into window profiles, unit by unit in index order.

    Raises:
        MissingUnitsError: if a unit has no partial.
        analytics.profile.ProfileError: if two units profiled one version with different specs.
    """
    missing = [
        (u.index, u.unit_id, f"{u.project}/{u.model}/{u.environment} {u.date}")
        for u in plan.units
        if u.unit_id not in partials.tables
    ]
    if missing:
        raise MissingUnitsError(plan.run_id, missing, partials.unreadable)
    pieces: dict[DateKey, dict[str, dict[datetime, list[Profile]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    files: dict[DateKey, list[Any]] = defaultdict(list)
    incomplete: dict[DateKey, str] = {}
    aggregates: dict[DateKey, DayAggregates] = defaultdict(DayAggregates)
    for unit in sorted(plan.units, key=lambda u: u.index):
        key = (unit.project, unit.model, unit.environment, unit.date)
        files[key].extend(unit.files)
        info = partial_info(partials.tables[unit.unit_id])
        table = partials.tables[unit.unit_id]
        aggregates[key].add(info, partial_aggregates(table), partial_segments(table))
        problems = info["problems"]
        if problems and key not in incomplete:
            incomplete[key] = problems[0]["reason"]
        for version, windows in partial_profiles(partials.tables[unit.unit_id]).items():
            for start, window_profile in windows.items():
                pieces[key][version][start].append(window_profile)
    profiles = {
        key: {
            version: {start: merge_profiles(items) for start, items in sorted(windows.items())}
            for version, windows in by_version.items()
        }
        for key, by_version in pieces.items()
    }
    return MergedProfiles(
        root=plan.root,
        window=plan.window,
        profiles=profiles,
        files_sha256={key: files_digest(items, plan.root) for key, items in files.items()},
        specs={key: {v: ref.sha256 for v, ref in refs.items()} for key, refs in plan.specs.items()},
        incomplete=incomplete,
        aggregates=dict(aggregates),
    )


# --------------------------------------------------------------------------- the job, from the aggregates


_PARTITION_RE = {name: re.compile(rf"/{name}=([^/]+)/") for name in ("project", "model", "environment")}


def plan_log_files(plan: RunPlan) -> dict[tuple[str, str, str], dict[date, list[StoredFile]]]:
    """The log files of a run, as the monitoring job's listing would give them (from the plan)."""
    targets: dict[tuple[str, str, str], dict[date, list[StoredFile]]] = defaultdict(lambda: defaultdict(list))
    for unit in sorted(plan.units, key=lambda u: u.index):
        partition = {
            "project": unit.project,
            "model": unit.model,
            "environment": unit.environment,
            "date": unit.date,
        }
        for item in unit.files:
            targets[unit.target][unit.day].append(StoredFile(item.path, item.size, dict(partition)))
    return {
        key: {day: sorted(items, key=lambda f: f.path) for day, items in sorted(days.items())}
        for key, days in targets.items()
    }


def _target_run_class() -> type:
    """The monitoring job's per-target run, taking a date's inputs from the run's aggregates.

    Built on first use: ``jobs.monitor`` imports ``jobs.scaleout`` for its command-line options.
    Every step but reading the logs and computing their aggregates is the job's own (planning,
    references, drift, quality, the rows, the latency baseline, the writes and the state); see
    ``docs/SCALE_OUT.md`` ("What the merge reads").
    """
    from jobs import _monitor_inputs as inputs
    from jobs import monitor
    from jobs._monitor_inputs import DayInput

    class MergedTargetRun(monitor._TargetRun):
        def __init__(self, *args: Any, merged: MergedProfiles) -> None:
            super().__init__(*args, merged.window_profiles)
            self.merged = merged
            self.served_days: dict[date, DayAggregates] = {}

        def _task_of(self, version: str) -> str | None:
            return self._reference(version).task

        def _read_day(self, day: date) -> DayInput:
            key = (self.project, self.model, self.environment, day.isoformat())
            labels = inputs.fingerprint(self.store, self.label_files.get(day.isoformat(), []))
            aggregates, why = self.merged.day_aggregates(
                key, self.unit, self.log_files[day], labels, self._spec_of, self._task_of
            )
            if aggregates is None:
                self.merged.note_declined(why)
                return super()._read_day(day)
            self.served_days[day] = aggregates
            return DayInput(day, versions=aggregates.versions, new_columns=aggregates.new_columns)

        def _compute(self, days: Sequence[DayInput]) -> dict[date, Any]:
            served = [d for d in days if d.day in self.served_days]
            if not served:
                return super()._compute(days)
            rest = [d for d in days if d.day not in self.served_days]
            versions = sorted({v for d in served for v in d.versions})
            latency = {
                version: latency_from_partials(
                    [t for d in served for t in self.served_days[d.day].tables(version, "latency")], self.unit
                )
                for version in versions
            }
            # Baselines see every window of the batch that precedes theirs, whatever the version.
            for _version, report in sorted(latency.items()):
                for window in report.windows:
                    self._remember_latency(monitor._utc(window.window_start), window)
            outputs: dict[date, Any] = defaultdict(monitor._DayOutput)
            if rest:
                outputs.update(super()._compute(rest))
            new_columns = {d.day: d.new_columns for d in served}
            files = {d.day: tuple(self.log_files[d.day]) for d in served}
            for version in versions:
                self._version_rows(version, served, latency[version], new_columns, files, outputs)
            return outputs

        def _version_rows(
            self,
            version: str,
            days: Sequence[DayInput],
            latency: Any,
            new_columns: Mapping[date, Sequence[str]],
            files: Mapping[date, Sequence[StoredFile]],
            outputs: dict[date, Any],
        ) -> None:
            """``_TargetRun._compute_version`` with the aggregates in place of the logs' queries."""
            day_parts = [self.served_days[d.day] for d in days]

            def tables(part: str) -> list[pa.Table]:
                return [t for item in day_parts for t in item.tables(version, part)]

            reference = self._reference(version)
            thresholds = self.request.thresholds
            counts: dict[datetime, tuple[int, datetime]] = {}
            for table in tables("counts"):
                for row in table.to_pylist():
                    start = monitor._utc(row["window_start"])
                    rows, latest = counts.get(start, (0, row["latest"]))
                    counts[start] = (rows + int(row["rows"]), max(latest, row["latest"]))
            scores = sum(item.scores.get(version, 0) for item in day_parts)
            task = reference.task or ("classification" if scores else "regression")
            if task == "classification":
                performance = classification_from_partials(
                    tables("classification"), self.unit, positive_label=POSITIVE_LABEL
                )
            else:
                performance = regression_from_partials(tables("regression"), self.unit)
            windows: dict[datetime, Profile] = {}
            if reference.profile is not None:
                query = monitor.WindowProfileQuery(
                    self.project,
                    self.model,
                    self.environment,
                    version,
                    reference.profile.spec,
                    self.unit,
                    files,
                )
                profiled = self.window_profiles(query)
                if profiled is None:
                    raise ScaleoutError(f"the run has no profiles of version {version} for {sorted(files)}")
                windows = {monitor._utc(start): item for start, item in profiled.items()}
            computed = VersionInputs(version, counts, performance, latency, windows, new_columns)
            rules = RowRules(self.length, self.request.policy, thresholds, self._baseline)
            add_version_rows(computed, reference.profile, reference.why_missing or "", rules, outputs)
            segments = [part for item in day_parts for part in item.segments.get(version, [])]
            self.segments.add(version, merge_segment_partials(segments), reference.profile, task)

        def _write_day(self, day_input: DayInput, output: Any) -> int:
            written = super()._write_day(day_input, output)
            aggregates = self.served_days.get(day_input.day)
            if aggregates is not None:
                key = (day_input.day.isoformat(), self.unit)
                self.state[key] = replace(self.state[key], rows=aggregates.rows)
            return written

        def run(self) -> Any:
            result = super().run()
            served = [self.served_days[d] for d in result.computed if d in self.served_days]
            latest = [result.latest_request] if result.latest_request is not None else []
            for item in served:
                for parts in item.parts.values():
                    for table in parts.get("counts", []):
                        latest.extend(v for v in table.column("latest").to_pylist() if v is not None)
            return replace(
                result,
                rows_read=result.rows_read + sum(item.rows for item in served),
                latest_request=max(latest) if latest else None,
            )

    return MergedTargetRun


_JOB_HOOKS = {
    "_TargetRun": ("_read_day", "_compute", "_write_day", "run", "_reference", "_spec_of", "_baseline"),
    "_DayOutput": (),
    "WindowProfileQuery": (),
}
_TARGET_RUN_PARAMETERS = ("store", "request", "key", "log_files", "now", "window_profiles")


def check_job_hooks() -> None:
    """Check that ``jobs.monitor`` still has what :func:`run_merged_monitor` builds on.

    Raises:
        ScaleoutError: naming what is missing (the merge would otherwise fail midway).
    """
    from jobs import monitor

    missing = [
        f"{name}.{method}" if method else name
        for name, methods in _JOB_HOOKS.items()
        for method in (methods or ("",))
        if not hasattr(monitor, name) or (method and not hasattr(getattr(monitor, name), method))
    ]
    if not missing:
        parameters = tuple(inspect.signature(monitor._TargetRun.__init__).parameters)[1:]
        if parameters != _TARGET_RUN_PARAMETERS:
            missing.append(f"_TargetRun({', '.join(_TARGET_RUN_PARAMETERS)})")
    if missing:
        raise ScaleoutError(
            f"jobs.monitor lacks {', '.join(missing)}: the merge cannot run the monitoring job on the "
            "run's partials (see docs/SCALE_OUT.md, 'The monitoring job's hooks')"
        )


def _plan_problems(plan: RunPlan) -> list[Any]:
    from jobs.monitor import InputProblem

    problems = []
    for text in plan.problems:
        path = text.split(" is not under ", 1)[0]
        key = [m.group(1) if (m := pattern.search(path)) else "?" for pattern in _PARTITION_RE.values()]
        problems.append(InputProblem(key[0], key[1], key[2], None, path, "bad_partition", "*", text))
    return problems


def run_merged_monitor(
    store: ParquetStore,
    plan: RunPlan,
    merged: MergedProfiles,
    request: Any,
    *,
    now: datetime | None = None,
    actor: Any = None,
) -> Any:
    """The monitoring job over a run's files, with the run's profiles and aggregates as its inputs.

    :func:`jobs.monitor.run_monitor` except that the log files come from the plan (the logs are
    neither listed nor read) and each date the run covers exactly takes its profiles, window
    counts, latency and performance from the merged partials; a date it does not cover is read and
    computed by the job as usual (``merged.declined`` says why).

    Returns:
        The job's ``MonitorSummary``.

    Raises:
        jobs.permissions.Forbidden: if ``actor`` may not run the job on a project (nothing written).
    """
    from jobs.monitor import _utc, run_targets
    from jobs.permissions import Permission, require

    started = time.monotonic()
    started_at = datetime.now(UTC)
    now = _utc(now or started_at)
    filters = request.filters()
    targets = {
        key: {day: items for day, items in days.items() if request.in_range(day)}
        for key, days in plan_log_files(plan).items()
        if key[0] not in request.exclude_projects
        and all(
            dict(zip(("project", "model", "environment"), key, strict=True))[k] == v
            for k, v in filters.items()
        )
    }
    targets = {key: days for key, days in targets.items() if days}
    if actor is not None:
        for project in sorted({key[0] for key in targets}):
            require(actor, Permission.RUN_BACKFILL, project)
    run_class = _target_run_class()

    def monitor(key: tuple[str, str, str]) -> Any:
        return run_class(store, request, key, targets[key], now, merged=merged).run()

    return run_targets(request, sorted(targets), monitor, _plan_problems(plan), started_at, started)


def request_from_plan(plan: RunPlan) -> Any:
    """Rebuild the monitor request of a run from its listing (default policy and thresholds)."""
    from jobs.monitor import MonitorRequest

    fields = plan.request
    return MonitorRequest(
        project=fields.get("project"),
        model=fields.get("model"),
        environment=fields.get("environment"),
        since=date.fromisoformat(fields["since"]) if fields.get("since") else None,
        until=date.fromisoformat(fields["until"]) if fields.get("until") else None,
        window=fields.get("window", plan.window),
        backfill=bool(fields.get("backfill", False)),
        label_horizon_days=int(fields.get("label_horizon_days", 7)),
        exclude_projects=frozenset(fields.get("exclude_projects", ())),
    )


@dataclass(frozen=True)
class MergeResult:
    """Outcome of a merge.

    Attributes:
        run_id: The run.
        units: Units merged.
        duplicates: Partials dropped as copies of a unit already read.
        foreign: Partials of no unit of the run (ignored).
        served: Batches the monitoring job took from the run's profiles.
        declined: Batches it profiled itself, with why.
        summary: The monitoring job's summary (``jobs.monitor.MonitorSummary``).
        seconds: Wall time of the merge (reading, merging and the job).
    """

    run_id: str
    units: int
    duplicates: tuple[str, ...]
    foreign: tuple[str, ...]
    served: int
    declined: tuple[str, ...]
    summary: Any
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the monitoring job used every input."""
        return bool(self.summary.ok)

    def to_text(self) -> str:
        """A human summary: the merge line, then the monitoring job's summary."""
        line = (
            f"run {self.run_id}: merged {self.units} unit(s) in {self.seconds:.1f} s; "
            f"{len(self.duplicates)} duplicate partial(s) dropped, {len(self.foreign)} foreign ignored; "
            f"{self.served} batch(es) from the run, {len(self.declined)} profiled again"
        )
        extra = [f"  profiled again: {why}" for why in self.declined[:_SHOWN]]
        return "\n".join([line, *extra, self.summary.to_text()])


def merge(
    store: ParquetStore,
    run_id: str,
    *,
    request: Any = None,
    now: datetime | None = None,
    actor: Any = None,
) -> MergeResult:
    """Merge a run and write its profiles and metrics through the monitoring job.

    Args:
        store: The Parquet store the run was planned on.
        run_id: The run.
        request: The ``jobs.monitor.MonitorRequest`` (default: rebuilt from the run's listing).
        now: Current time (UTC), for the job's label horizon.
        actor: The acting user (``None`` for the job's own identity); needs ``run_backfill``.

    Returns:
        The merge result.

    Raises:
        MissingUnitsError: if a unit has no partial (nothing written).
        ScaleoutError: if the run does not exist or the monitoring job lacks a hook the merge uses.
        jobs.permissions.Forbidden: if ``actor`` may not run the job on a project (nothing written).
    """
    check_job_hooks()
    started = time.monotonic()
    plan = load_plan(store, run_id)
    partials = load_partials(store, plan)
    merged = merge_partials(plan, partials)
    summary = run_merged_monitor(
        store,
        plan,
        merged,
        request if request is not None else request_from_plan(plan),
        now=now,
        actor=actor,
    )
    result = MergeResult(
        run_id=run_id,
        units=len(plan.units),
        duplicates=tuple(partials.duplicates),
        foreign=tuple(partials.foreign),
        served=merged.served,
        declined=tuple(merged.declined),
        summary=summary,
        seconds=time.monotonic() - started,
    )
    write_json(
        store,
        f"{plan.layout.run_dir}/{RESULT_FILE}",
        {
            "run_id": run_id,
            "merged_at": datetime.now(UTC).isoformat(),
            "units": result.units,
            "duplicates": list(result.duplicates),
            "foreign": list(result.foreign),
            "served": result.served,
            "declined": list(result.declined),
            "ok": result.ok,
            "computed_dates": summary.computed_dates,
            "problems": [str(p) for p in summary.all_problems],
        },
    )
    return result


# --------------------------------------------------------------------------- command line


def _merge_command(args: argparse.Namespace, settings: Any) -> int:
    from jobs.cli import EXIT_FAILURE, EXIT_OK

    store = ParquetStore(settings.store_config())
    try:
        result = merge(store, args.run)
    except ScaleoutError as error:
        print(f"error: {error}")
        return EXIT_FAILURE
    finally:
        store.close()
    print(result.to_text())
    return EXIT_OK if result.ok else EXIT_FAILURE


def register_merge(subparsers: Any) -> None:
    """``merge``: merge a scaled-out run's partial profiles and write its profiles and metrics."""
    parser = subparsers.add_parser(
        "merge",
        help="merge the partial profiles of a scaled-out monitoring run and write its metrics",
        description="Exit 0 when every unit was merged and every input was usable; 1 when a unit is "
        "missing (nothing written) or an input could not be used; 2 on a usage error.",
    )
    parser.add_argument("--run", required=True, help="the run id (folder under <data root>/profiling/runs/)")
    parser.set_defaults(func=_merge_command)
