"""The map step: profile one work unit and publish its partial profile.

A task receives a :class:`~jobs.scaleout.units.WorkUnit` (an explicit file list and the specs to
profile with), never a connection: it opens its own DuckDB connection with the unit's ``threads``
and ``memory_limit`` (:func:`task_connection`) and closes it before returning. Files are read and
normalised by the monitoring job's own input functions (``jobs._monitor_inputs``), so a unit's rows
are exactly the rows the single-process job profiles, and each version's rows are profiled with
``analytics.profile.profile`` on the version's reference spec, per window. The task also reads the
labels of its date (``labels`` is partitioned by the request's date) and computes each version's
mergeable aggregates: rows and latest request per window, ``analytics.performance.latency_partial``,
``classification_partial`` or ``regression_partial`` (the reference's task; both for a version
whose reference has no label: the job then decides from the batch's scores), and its segment
partials (``jobs._monitor_segments.segment_partials``: the values of every segment column per window
and, for every value of a column the unit can slice, the slice's profile, latency and performance
partials; the merge decides which are sliced, over the whole window).

The partial is one Parquet file: the long-format profile rows of every version (a ``version`` column
in front of :func:`analytics.profile.profiles_to_arrow`'s columns) and, in the schema metadata
``mms.scaleout.partial``, the unit's identity (run, index, unit id, target, date, window, file
digest, label files digest), each version's ``mms.profile`` metadata and the problems found; the
metadata ``mms.scaleout.aggregates`` holds the aggregates (one Arrow IPC stream, base64) and
``mms.scaleout.segments`` the segment partials (JSON: version -> ``SegmentPartials.to_bytes()``). It is
written to a deterministic key (``units/<index>.parquet``) in one atomic step, so a retried task
replaces its own earlier output and the merge, which deduplicates by unit id, counts a unit once.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analytics.performance import (
    CLASSIFICATION_PARTIAL_SCHEMA,
    LATENCY_PARTIAL_SCHEMA,
    REGRESSION_PARTIAL_SCHEMA,
    classification_partial,
    latency_partial,
    latest_labels,
    regression_partial,
)
from analytics.profile import Profile, ProfileSpec, profile, profiles_from_arrow, profiles_to_arrow
from analytics.store import ParquetStore, StoreConfig, StoredFile
from jobs import _monitor_inputs as inputs
from jobs._monitor_segments import SegmentPartials, segment_partials
from jobs.contracts import LABELS
from jobs.scaleout.units import (
    FORMAT,
    RunLayout,
    ScaleoutError,
    WorkUnit,
    files_digest,
    read_json,
    read_spec,
    table_bytes,
    write_bytes_atomically,
)

PARTIAL_METADATA = b"mms.scaleout.partial"
AGGREGATES_METADATA = b"mms.scaleout.aggregates"
SEGMENTS_METADATA = b"mms.scaleout.segments"
POSITIVE_LABEL = 1.0
"""The positive class of classification models, as the monitoring job passes it."""
COUNTS_SCHEMA = pa.schema(
    [("window_start", pa.timestamp("us")), ("rows", pa.int64()), ("latest", pa.timestamp("us", tz="UTC"))]
)
"""Rows and latest request time per window of one version (the job's ``_window_counts``)."""
AGGREGATE_PARTS: Mapping[str, pa.Schema] = {
    "counts": COUNTS_SCHEMA,
    "latency": LATENCY_PARTIAL_SCHEMA,
    "classification": CLASSIFICATION_PARTIAL_SCHEMA,
    "regression": REGRESSION_PARTIAL_SCHEMA,
}
"""The aggregates a unit publishes per version besides its profiles (``docs/SCALE_OUT.md``)."""
_AGGREGATE_ERRORS = (ValueError, ArithmeticError, duckdb.Error, pa.ArrowException)
PROFILE_METADATA = b"mms.profile"
VERSION_COLUMN = "version"


@dataclass(frozen=True)
class UnitResult:
    """What one task did.

    Attributes:
        index: Unit index.
        unit_id: Unit id.
        out: URI of the partial written.
        rows: Inference rows read.
        windows: (version, window) profiles in the partial.
        problems: Input problems found (the monitoring job reports them for the date).
        seconds: Wall time of the task.
    """

    index: int
    unit_id: str
    out: str
    rows: int
    windows: int
    problems: int
    seconds: float


def unit_store_config(config: StoreConfig, unit: WorkUnit) -> StoreConfig:
    """The store configuration of a task: ``config`` with the unit's DuckDB threads and memory limit."""
    return replace(
        config,
        threads=unit.duckdb_threads or config.threads,
        memory_limit=unit.duckdb_memory_limit or config.memory_limit,
    )


def task_connection(threads: int, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """The DuckDB connection of one task: in memory, locked, with no access to any file.

    A task hands DuckDB Arrow tables (pyarrow reads the files), so the connection needs neither the
    httpfs extension nor a readable path: external access is off, no extension loads, no progress bar
    is drawn into the logs, and the configuration is locked.

    Raises:
        ScaleoutError: if DuckDB refuses the threads or memory limit.
    """
    try:
        con = duckdb.connect(
            ":memory:",
            config={
                "threads": threads,
                "memory_limit": memory_limit,
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
    except (duckdb.Error, TypeError) as error:
        raise ScaleoutError(
            f"cannot open DuckDB with threads={threads!r}, memory_limit={memory_limit!r}: {error}"
        ) from error
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    return con


def _check_inside(store: ParquetStore, uri: str, what: str) -> None:
    root = store.root.rstrip("/") + "/"
    if not uri.startswith(root) or ".." in uri[len(root) :].split("/"):
        raise ScaleoutError(f"{what} {uri} lies outside the data root {store.root}")


def _empty_partial_schema() -> pa.Schema:
    base = profiles_to_arrow([Profile(spec=ProfileSpec(columns=()), rows=0, columns=())]).schema
    return pa.schema([pa.field(VERSION_COLUMN, pa.string()), *base]).remove_metadata()


def _read_labels(
    store: ParquetStore, unit: WorkUnit
) -> tuple[list[StoredFile], pa.Table, list[inputs.Problem]]:
    """The label files of the unit's date, read and checked as the monitoring job does."""
    partition = {"project": unit.project, "model": unit.model, "environment": unit.environment}
    files = [f for f in store.list_files(LABELS, filters=partition) if f.partition.get("date") == unit.date]
    for stored in files:
        _check_inside(store, stored.path, "label file")
    tables, problems = inputs.read_label_files(store, files)
    labels = pa.concat_tables(tables) if tables else inputs.EMPTY_LABELS.empty_table()
    return files, labels, problems


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


TASKS = ("classification", "regression")


def version_aggregates(
    con: duckdb.DuckDBPyConnection,
    logs: pa.Table,
    labels: pa.Table,
    window: str,
    tasks: tuple[str, ...] = TASKS,
) -> tuple[dict[str, pa.Table], dict[str, str], int]:
    """The mergeable aggregates of one version's rows: counts, latency and the tasks' performance.

    ``tasks`` is the reference's task when the plan knows it; without a labelled reference the job
    decides from the whole batch's scores, so both are computed. A task whose columns do not fit is
    recorded as an error (the merge then lets the job compute that date from the logs, as it would
    have). ``labels`` hold one label per request (``analytics.performance.latest_labels``).

    Returns:
        ``(part -> table, task -> error, non-null scores)``.
    """
    from jobs.monitor import _window_counts  # the job's own definition of a window's rows

    relation = con.from_arrow(logs)
    label_relation = con.from_arrow(labels)
    counts = _window_counts(relation, window)
    parts = {
        "counts": pa.table(
            {
                "window_start": pa.array([w.replace(tzinfo=None) for w in counts], pa.timestamp("us")),
                "rows": pa.array([n for n, _ in counts.values()], pa.int64()),
                "latest": pa.array([latest for _, latest in counts.values()], pa.timestamp("us", tz="UTC")),
            },
            schema=COUNTS_SCHEMA,
        ),
        "latency": latency_partial(relation, window),
    }
    errors = {}
    for task in tasks:
        try:
            if task == "classification":
                parts[task] = classification_partial(
                    relation, label_relation, window, positive_label=POSITIVE_LABEL, labels_unique=True
                )
            else:
                parts[task] = regression_partial(relation, label_relation, window, labels_unique=True)
        except _AGGREGATE_ERRORS as error:
            errors[task] = _first_line(error)
    scores = int(pc.count(logs.column("score")).as_py()) if "score" in logs.column_names else 0
    return parts, errors, scores


def aggregates_bytes(by_version: Mapping[str, Mapping[str, pa.Table]]) -> bytes:
    """The aggregates of every version as one Arrow IPC stream (``version``, ``part`` + the columns)."""
    tables = []
    for version, parts in sorted(by_version.items()):
        for part, table in parts.items():
            table = table.select(AGGREGATE_PARTS[part].names).cast(AGGREGATE_PARTS[part])
            table = table.add_column(0, "part", pa.array([part] * table.num_rows, pa.string()))
            tables.append(
                table.add_column(0, VERSION_COLUMN, pa.array([version] * table.num_rows, pa.string()))
            )
    if not tables:
        return b""
    combined = pa.concat_tables(tables, promote_options="permissive")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(
        sink, combined.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")
    ) as writer:
        writer.write_table(combined)
    return sink.getvalue().to_pybytes()


def partial_aggregates(table: pa.Table) -> dict[str, dict[str, pa.Table]]:
    """The aggregates of a partial: version -> part (``counts``, ``latency``, ...) -> table.

    Raises:
        ScaleoutError: if the table is not a partial.
    """
    partial_info(table)
    raw = (table.schema.metadata or {}).get(AGGREGATES_METADATA, b"")
    if not raw:
        return {}
    combined = pa.ipc.open_stream(pa.BufferReader(base64.b64decode(raw))).read_all()
    result: dict[str, dict[str, pa.Table]] = {}
    versions = combined.column(VERSION_COLUMN)
    parts = combined.column("part")
    for version in sorted(set(versions.to_pylist())):
        for part, schema in AGGREGATE_PARTS.items():
            mask = pc.and_(pc.equal(versions, version), pc.equal(parts, part))
            rows = combined.filter(mask)
            if rows.num_rows or part in ("counts", "latency"):
                result.setdefault(version, {})[part] = rows.select(schema.names).cast(schema)
    return result


def version_segments(
    con: duckdb.DuckDBPyConnection,
    logs: pa.Table,
    labels: pa.Table,
    spec: ProfileSpec | None,
    tasks: list[str],
    unit: WorkUnit,
) -> tuple[SegmentPartials, str]:
    """The segment partials of one version's rows (``jobs._monitor_segments``, step 1, uncapped).

    ``labels`` hold one label per request (``analytics.performance.latest_labels``).

    Returns:
        ``(partials, "")``, or empty partials and why they could not be computed.
    """
    try:
        partials = segment_partials(
            con,
            con.from_arrow(logs),
            con.from_arrow(labels),
            spec,
            tasks,
            unit.window,
            logs=logs,
            labels_unique=True,
        )
    except _AGGREGATE_ERRORS as error:
        return SegmentPartials(), f"segment aggregates: {_first_line(error)}"
    return partials, ""


def partial_segments(table: pa.Table) -> dict[str, SegmentPartials]:
    """The segment partials of a partial: version -> :class:`jobs._monitor_segments.SegmentPartials`.

    Raises:
        ScaleoutError: if the table is not a partial.
    """
    partial_info(table)
    raw = (table.schema.metadata or {}).get(SEGMENTS_METADATA, b"{}")
    return {version: SegmentPartials.from_bytes(text.encode()) for version, text in json.loads(raw).items()}


def profile_unit(unit: WorkUnit, specs: Mapping[str, ProfileSpec], config: StoreConfig) -> pa.Table:
    """Profile a unit's files per version and window; return the partial profile table.

    Besides the profiles, the partial carries each version's mergeable aggregates (window counts,
    latency, classification and regression partials joined with the labels of the unit's date), so
    the merge never reads the logs again.

    Args:
        unit: The unit.
        specs: Version -> spec to profile it with (versions without one are counted, not profiled).
        config: Store configuration (the unit's DuckDB threads and memory limit apply on top).

    Returns:
        The partial: a ``version`` column plus the ``profiles_to_arrow`` columns, with the
        ``mms.scaleout.partial`` and ``mms.scaleout.aggregates`` metadata (see the module doc).

    Raises:
        ScaleoutError: if a file lies outside the data root or DuckDB refuses the unit's limits.
    """
    started = time.monotonic()
    task_config = unit_store_config(config, unit)
    store = ParquetStore(task_config)
    day = unit.day
    tables: list[pa.Table] = []
    problems: list[inputs.Problem] = []
    versions: set[str] = set()
    new_columns: dict[str, None] = {}
    for item in unit.files:
        _check_inside(store, item.path, "log file")
        table, problem = inputs.read_parquet_file(store, StoredFile(item.path, item.size, {}))
        if problem is not None:
            problems.append(problem)
            continue
        checked, file_problems, file_versions, new = inputs.check_log_table(item.path, table, day, specs.get)
        problems.extend(file_problems)
        versions.update(file_versions)
        new_columns.update(dict.fromkeys(new))
        if checked is not None:
            tables.append(checked)
    label_files, labels, label_problems = _read_labels(store, unit)
    problems.extend(label_problems)
    rows = sum(t.num_rows for t in tables)
    by_version: dict[str, dict[datetime, Profile]] = {}
    aggregates: dict[str, dict[str, pa.Table]] = {}
    errors: dict[str, dict[str, str]] = {}
    scores: dict[str, int] = {}
    tasks: dict[str, tuple[str, ...]] = {}
    segments: dict[str, SegmentPartials] = {}
    # A date with an unusable file is not computed by the monitoring job: nothing to profile.
    if tables and not problems:
        logs = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        con = task_connection(task_config.threads, task_config.memory_limit)
        try:
            # One label per request, chosen once, as the job does: every partial below joins it.
            labels = latest_labels(con.from_arrow(labels))
            for version in sorted(versions):
                # Filtered in Arrow: a DuckDB constant expression would import pandas in every task.
                version_logs = logs.filter(pc.equal(logs.column(VERSION_COLUMN), version))
                ref = unit.specs.get(version)
                tasks[version] = (ref.task,) if ref is not None and ref.task else TASKS
                aggregates[version], task_errors, scores[version] = version_aggregates(
                    con, version_logs, labels, unit.window, tasks[version]
                )
                if task_errors:
                    errors[version] = task_errors
                spec = specs.get(version)
                segments[version], segment_error = version_segments(
                    con, version_logs, labels, spec, [t for t in tasks[version] if t not in task_errors], unit
                )
                if segment_error:
                    # The merge then lets the job compute the date from its logs, as for the tasks.
                    errors[version] = dict.fromkeys(tasks[version], segment_error)
                if spec is None:
                    continue
                windows = profile(
                    con.from_arrow(version_logs), spec, window=unit.window, timestamp_column="timestamp"
                )
                if windows:
                    by_version[version] = windows
        finally:
            con.close()
    parts, profile_meta = [], {}
    for version, windows in sorted(by_version.items()):
        table = profiles_to_arrow(windows)
        profile_meta[version] = table.schema.metadata[PROFILE_METADATA].decode()
        table = table.replace_schema_metadata(None)
        parts.append(table.add_column(0, VERSION_COLUMN, pa.array([version] * table.num_rows, pa.string())))
    partial = pa.concat_tables(parts) if parts else _empty_partial_schema().empty_table()
    meta = {
        "format": FORMAT,
        "run_id": unit.run_id,
        "index": unit.index,
        "unit_id": unit.unit_id,
        "project": unit.project,
        "model": unit.model,
        "environment": unit.environment,
        "date": unit.date,
        "window": unit.window,
        "files_sha256": files_digest(unit.files, store.root),
        "labels_sha256": files_digest(label_files, store.root),
        "rows": rows,
        "versions": sorted(versions),
        "new_columns": list(new_columns),
        "scores": scores,
        "tasks": {version: list(computed) for version, computed in tasks.items()},
        "aggregate_errors": errors,
        "specs": {v: ref.sha256 for v, ref in sorted(unit.specs.items())},
        "profiles": profile_meta,
        "problems": [
            {"path": p.path, "kind": p.kind, "column": p.column, "reason": p.reason} for p in problems
        ],
        "seconds": round(time.monotonic() - started, 6),
    }
    return partial.replace_schema_metadata(
        {
            PARTIAL_METADATA: json.dumps(meta, allow_nan=False),
            AGGREGATES_METADATA: base64.b64encode(aggregates_bytes(aggregates)),
            SEGMENTS_METADATA: json.dumps(
                {version: part.to_bytes().decode() for version, part in sorted(segments.items())}
            ),
        }
    )


def partial_info(table: pa.Table) -> dict[str, Any]:
    """The ``mms.scaleout.partial`` metadata of a partial.

    Raises:
        ScaleoutError: if the table is not a partial of this format.
    """
    raw = (table.schema.metadata or {}).get(PARTIAL_METADATA)
    if raw is None:
        raise ScaleoutError("not a partial profile: the mms.scaleout.partial metadata is missing")
    info = json.loads(raw)
    if info.get("format") != FORMAT:
        raise ScaleoutError(f"unsupported partial format {info.get('format')!r} (expected {FORMAT})")
    return info


def partial_profiles(table: pa.Table) -> dict[str, dict[datetime | None, Profile]]:
    """The profiles of a partial: version -> window start -> profile.

    Raises:
        ScaleoutError: if the table is not a partial.
    """
    info = partial_info(table)
    versions = table.column(VERSION_COLUMN).to_pylist() if table.num_rows else []
    result = {}
    for version, profile_meta in sorted(info["profiles"].items()):
        rows = [i for i, v in enumerate(versions) if v == version]
        part = table.take(pa.array(rows, pa.int64())).drop_columns([VERSION_COLUMN])
        part = part.replace_schema_metadata({PROFILE_METADATA: profile_meta.encode()})
        result[version] = profiles_from_arrow(part)
    return result


def load_specs(store: ParquetStore, unit: WorkUnit) -> dict[str, ProfileSpec]:
    """Read the unit's spec files (each must lie in its run's ``specs/`` folder).

    Raises:
        ScaleoutError: if a spec is outside the run, missing or not the one referenced.
    """
    layout = RunLayout(store.root, unit.run_id)
    specs = {}
    for version, ref in unit.specs.items():
        if not layout.contains(ref.uri, f"{layout.run_dir}/specs"):
            raise ScaleoutError(f"spec {ref.uri} of version {version} is not inside run {unit.run_id}")
        specs[version] = read_spec(store, ref)
    return specs


def run_unit(unit: WorkUnit, config: StoreConfig, *, out: str | None = None) -> UnitResult:
    """Profile a unit and publish its partial atomically (the task every engine runs).

    Args:
        unit: The unit.
        config: Store configuration of the task.
        out: URI of the partial; default the run's ``units/<index>.parquet``. It must lie directly
            inside the run's ``units/`` folder.

    Returns:
        What the task did.

    Raises:
        ScaleoutError: for an ``out`` outside the run's ``units/`` folder, a missing spec or a
            failed write.
    """
    started = time.monotonic()
    store = ParquetStore(unit_store_config(config, unit))
    layout = RunLayout(store.root, unit.run_id)
    target = out or layout.partial(unit.index)
    if not layout.contains(target, layout.units_dir) or not target.endswith(".parquet"):
        raise ScaleoutError(f"--out {target} must be a .parquet file directly inside {layout.units_dir}")
    try:
        table = profile_unit(unit, load_specs(store, unit), config)
        write_bytes_atomically(store, target, table_bytes(table))
    finally:
        store.close()
    info = partial_info(table)
    return UnitResult(
        index=unit.index,
        unit_id=unit.unit_id,
        out=target,
        rows=int(info["rows"]),
        windows=sum(len(json.loads(m)["windows"]) for m in info["profiles"].values()),
        problems=len(info["problems"]),
        seconds=time.monotonic() - started,
    )


def run_manifest(manifest: str, config: StoreConfig, *, out: str | None = None) -> UnitResult:
    """Run the unit a manifest describes (the ``profile-unit`` command and the Step Functions task).

    Raises:
        ScaleoutError: if the manifest is outside a run's ``manifests/`` folder, missing or malformed.
    """
    store = ParquetStore(config)
    try:
        _check_inside(store, manifest, "manifest")
        try:
            unit = WorkUnit.from_json(read_json(store, manifest))
        except FileNotFoundError:
            raise ScaleoutError(f"manifest {manifest} does not exist") from None
    finally:
        store.close()
    layout = RunLayout(store.root, unit.run_id)
    if not layout.contains(manifest, layout.manifests_dir):
        raise ScaleoutError(f"manifest {manifest} is not inside {layout.manifests_dir}")
    return run_unit(unit, config, out=out)


# --------------------------------------------------------------------------- command line


def _profile_unit_command(args: argparse.Namespace, settings: Any) -> int:
    from jobs.cli import EXIT_FAILURE, EXIT_OK

    try:
        result = run_manifest(args.manifest, settings.store_config(), out=args.out)
    except ScaleoutError as error:
        print(f"error: {error}")
        return EXIT_FAILURE
    print(
        f"unit {result.index} ({result.unit_id[:12]}): {result.rows} rows, {result.windows} window "
        f"profile(s), {result.problems} problem(s) -> {result.out} in {result.seconds:.1f} s"
    )
    return EXIT_OK


def register_profile_unit(subparsers: Any) -> None:
    """``profile-unit``: profile the unit of one manifest (a task of a scaled-out monitoring run)."""
    parser = subparsers.add_parser(
        "profile-unit",
        help="profile one work unit of a scaled-out monitoring run",
        description="Exit 0 when the partial profile was written, 1 otherwise (the engine retries).",
    )
    parser.add_argument("--manifest", required=True, help="URI of the unit manifest (under the data root)")
    parser.add_argument(
        "--out", help="URI of the partial profile (default <run>/units/<index>.parquet)", default=None
    )
    parser.set_defaults(func=_profile_unit_command)
