"""The merge step: combine a run's partial profiles and write results as the single-process job does.

:func:`merge` reads the run's listing, every partial under ``units/`` and:

1. keeps one partial per unit id (a retried task rewrote its own key; a copy under another name, or a
   partial of another run, is dropped and counted);
2. **refuses** when any unit of the listing has no readable partial: :class:`MissingUnitsError` names
   them and nothing is written;
3. merges, per (project, model, environment, date, version, window), the units' profiles in unit
   order with :meth:`analytics.profile.Profile.merge` (counts and histograms exact, moments by Chan's
   formula);
4. runs the monitoring job (:func:`jobs.monitor.run_monitor`) with those window profiles as its
   ``window_profiles`` source: the job writes ``profiles``, ``metrics`` and its state exactly as in a
   single-process run and calls :func:`analytics.profile.profile` itself only for a batch the run
   does not cover (files changed since planning, a reference written since): see
   :class:`MergedProfiles`.
"""

from __future__ import annotations

import argparse
import inspect
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from analytics.profile import Profile, merge_profiles
from analytics.store import ParquetStore
from jobs.scaleout.profile_unit import partial_info, partial_profiles
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
    """

    root: str
    window: str
    profiles: dict[DateKey, dict[str, dict[datetime, Profile]]]
    files_sha256: dict[DateKey, str]
    specs: Mapping[str, Mapping[str, str]]
    incomplete: Mapping[DateKey, str] = field(default_factory=dict)
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
    for unit in sorted(plan.units, key=lambda u: u.index):
        key = (unit.project, unit.model, unit.environment, unit.date)
        files[key].extend(unit.files)
        problems = partial_info(partials.tables[unit.unit_id])["problems"]
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
    )


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
        ScaleoutError: if the run does not exist or the monitoring job has no ``window_profiles`` hook.
        jobs.permissions.Forbidden: if ``actor`` may not run the job on a project (nothing written).
    """
    from jobs.monitor import run_monitor

    if "window_profiles" not in inspect.signature(run_monitor).parameters:
        raise ScaleoutError(
            "jobs.monitor.run_monitor takes no window_profiles source: the merge cannot hand it the "
            "run's profiles (see docs/SCALE_OUT.md, 'The monitoring job's hook')"
        )
    started = time.monotonic()
    plan = load_plan(store, run_id)
    partials = load_partials(store, plan)
    merged = merge_partials(plan, partials)
    summary = run_monitor(
        store,
        request if request is not None else request_from_plan(plan),
        now=now,
        actor=actor,
        window_profiles=merged.window_profiles,
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
