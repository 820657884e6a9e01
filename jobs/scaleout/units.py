"""Work units of a scaled-out profiling run: planning, the run layout, manifests and atomic writes.

The driver lists the ``inference_logs`` files of the request **once** through the store and packs
each (project, model, environment, date) into units of at most ``unit_bytes`` (a larger file gets a
unit of its own). A unit never crosses a model, environment or date boundary, carries an explicit
file list (never a glob) and is identified by a hash of its sorted file paths and sizes, so planning
the same files twice gives the same units.

A run lives under the data root::

    <root>/profiling/runs/<run_id>/run.json                  the listing: request, units, specs
    <root>/profiling/runs/<run_id>/specs/<sha256>.parquet    profile specs, content-addressed
    <root>/profiling/runs/<run_id>/manifests/<index>.json    one JSON manifest per unit
    <root>/profiling/runs/<run_id>/units/<index>.parquet     one partial profile per unit

``manifests/`` holds nothing but the unit manifests: the Step Functions Distributed Map
(``infra/terraform/stepfunctions/profiling.asl.json``) lists that prefix and runs one task per object,
writing ``units/<listing index>.parquet``. Manifest names are the zero-padded unit index, so the
listing order (lexicographic) is the index order.

Every file is written atomically: to ``<root>/_staging/<uuid>`` first, then moved to its final name
(``os.replace`` locally, a server-side copy on S3), so a reader sees the old object or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analytics.profile import Profile, ProfileSpec, profiles_from_arrow, profiles_to_arrow
from analytics.store import STAGING_DIR, ParquetStore, StoredFile
from jobs.contracts import INFERENCE_LOGS, LABEL_COLUMN, REFERENCE_PROFILES

FORMAT = 3
"""Version of the run layout and of the manifest, partial and listing formats.

3: partials carry the segment partials (``mms.scaleout.segments``).
"""

RUNS_DIR = "profiling/runs"
RUN_FILE = "run.json"
MANIFESTS_DIR = "manifests"
UNITS_DIR = "units"
SPECS_DIR = "specs"
REFERENCE_FILE = "profile.parquet"
"""Name of a version's reference profile (``jobs.training.PROFILE_FILE_NAME``)."""

DEFAULT_UNIT_BYTES = 512 * 1000**2
MANIFEST_DIGITS = 8
MAX_UNITS = 10**MANIFEST_DIGITS
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Run ids: they become a folder name and part of a Step Functions execution name (80 characters)."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


class ScaleoutError(RuntimeError):
    """A scaled-out run cannot be planned, run or merged as asked; the message says why."""


# --------------------------------------------------------------------------- small helpers


def parse_bytes(value: str | int) -> int:
    """Parse a byte size: ``512MB`` (powers of 1000), ``512MiB`` (powers of 1024) or a plain number.

    Args:
        value: The size as text or an integer.

    Returns:
        The size in bytes (at least 1).

    Raises:
        ScaleoutError: for anything else, or a size below one byte.
    """
    if isinstance(value, bool):
        raise ScaleoutError(f"a byte size is a number such as 512MB, not {value!r}")
    if isinstance(value, int):
        amount = value
    else:
        match = _SIZE_RE.fullmatch(str(value))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ScaleoutError(
                f"invalid byte size {value!r}: use a number with KB, MB, GB (or KiB, MiB, GiB)"
            )
        amount = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if amount < 1:
        raise ScaleoutError(f"a byte size must be at least 1 byte, got {value!r}")
    return amount


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id: UTC time plus random hex, sortable by start time."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    """Validate a run id (letters, digits, ``_`` and ``-``, at most 64 characters).

    Raises:
        ScaleoutError: if the id could escape its folder or is too long.
    """
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ScaleoutError(
            f"invalid run id {run_id!r}: use 1-64 letters, digits, '_' or '-' (first a letter or digit)"
        )
    return run_id


def files_digest(files: Iterable[UnitFile | StoredFile], root: str) -> str:
    """SHA-256 of sorted (path relative to ``root``, size) lines.

    The same text as the monitoring job's log fingerprint (``jobs._monitor_inputs.fingerprint``), so a
    unit id is independent of where the store is mounted.
    """
    prefix = root.rstrip("/") + "/"
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.path):
        relative = item.path[len(prefix) :] if item.path.startswith(prefix) else item.path
        digest.update(f"{relative}\t{item.size}\n".encode())
    return digest.hexdigest()


def spec_digest(spec: ProfileSpec) -> str:
    """SHA-256 of a profile spec in the library's own serialisation (``profiles_to_arrow`` metadata)."""
    meta = json.loads(
        profiles_to_arrow([Profile(spec=spec, rows=0, columns=())]).schema.metadata[b"mms.profile"]
    )
    return hashlib.sha256(json.dumps(meta["spec"], sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- run layout


@dataclass(frozen=True)
class RunLayout:
    """Where the files of one run live, as URIs (local paths or ``s3://bucket/key``).

    Attributes:
        root: The store root (``ParquetStore.root``).
        run_id: The run.
    """

    root: str
    run_id: str

    def __post_init__(self) -> None:
        check_run_id(self.run_id)

    @property
    def run_dir(self) -> str:
        """``<root>/profiling/runs/<run_id>``."""
        return f"{self.root.rstrip('/')}/{RUNS_DIR}/{self.run_id}"

    @property
    def run_file(self) -> str:
        """The run listing (``run.json``)."""
        return f"{self.run_dir}/{RUN_FILE}"

    @property
    def manifests_dir(self) -> str:
        """The folder the Distributed Map lists; nothing but unit manifests lives there."""
        return f"{self.run_dir}/{MANIFESTS_DIR}"

    @property
    def units_dir(self) -> str:
        """The folder of the partial profiles."""
        return f"{self.run_dir}/{UNITS_DIR}"

    def manifest(self, index: int) -> str:
        """URI of unit ``index``'s manifest (zero-padded: the listing order is the index order)."""
        return f"{self.manifests_dir}/{index:0{MANIFEST_DIGITS}d}.json"

    def partial(self, index: int) -> str:
        """URI of unit ``index``'s partial profile, the key the state machine writes too."""
        return f"{self.units_dir}/{index}.parquet"

    def spec(self, digest: str) -> str:
        """URI of a content-addressed spec file."""
        return f"{self.run_dir}/{SPECS_DIR}/{digest}.parquet"

    def contains(self, uri: str, folder: str) -> bool:
        """Whether ``uri`` names a file directly inside ``folder`` of this run (no ``..``)."""
        prefix = folder.rstrip("/") + "/"
        rest = uri[len(prefix) :] if uri.startswith(prefix) else ""
        return bool(rest) and "/" not in rest and rest not in (".", "..")


def fs_path(store: ParquetStore, uri: str) -> str:
    """The pyarrow filesystem path of a store URI (``bucket/key`` on S3)."""
    return uri.removeprefix("s3://") if store.is_s3 else uri


def write_bytes_atomically(store: ParquetStore, uri: str, data: bytes) -> str:
    """Publish ``data`` at ``uri`` in one step for readers: staging file first, then a move.

    Args:
        store: The store whose filesystem and staging folder are used.
        uri: Final URI, inside the store root.
        data: The content.

    Returns:
        ``uri``.

    Raises:
        ScaleoutError: if ``uri`` lies outside the store root or the write fails.
    """
    root = store.root.rstrip("/") + "/"
    if not uri.startswith(root) or ".." in uri[len(root) :].split("/"):
        raise ScaleoutError(f"{uri} is outside the data root {store.root}")
    fs = store.filesystem()
    staged = fs_path(store, f"{root}{STAGING_DIR}/{uuid.uuid4().hex}.tmp")
    final = fs_path(store, uri)
    try:
        if not store.is_s3:
            fs.create_dir(staged.rsplit("/", 1)[0], recursive=True)
            fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(staged) as handle:
            handle.write(data)
        fs.move(staged, final)
    except (OSError, pa.ArrowException) as error:
        # Never written or already moved: the original error is what matters.
        with contextlib.suppress(OSError, pa.ArrowException):
            fs.delete_file(staged)
        raise ScaleoutError(f"cannot write {uri}: {error}") from error
    return uri


def read_bytes(store: ParquetStore, uri: str) -> bytes:
    """Read a whole object of the store.

    Raises:
        FileNotFoundError: if it does not exist.
        ScaleoutError: if it cannot be read.
    """
    try:
        with store.filesystem().open_input_stream(fs_path(store, uri)) as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as error:
        if "does not exist" in str(error) or "NoSuchKey" in str(error):
            raise FileNotFoundError(uri) from error
        raise ScaleoutError(f"cannot read {uri}: {error}") from error


def write_json(store: ParquetStore, uri: str, payload: Mapping[str, Any]) -> str:
    """Atomically write ``payload`` as JSON (non-finite floats refused)."""
    return write_bytes_atomically(store, uri, json.dumps(payload, indent=1, allow_nan=False).encode())


def read_json(store: ParquetStore, uri: str) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`.

    Raises:
        FileNotFoundError: if it does not exist.
        ScaleoutError: if it is not a JSON object.
    """
    try:
        payload = json.loads(read_bytes(store, uri))
    except ValueError as error:
        raise ScaleoutError(f"{uri} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ScaleoutError(f"{uri} does not hold a JSON object")
    return payload


def table_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes, decoded once more before they are used (never publish a bad file)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    if pq.read_metadata(io.BytesIO(data)).num_rows != table.num_rows:
        raise ScaleoutError("the Parquet encoder lost rows; nothing was written")
    return data


def read_table(store: ParquetStore, uri: str) -> pa.Table:
    """Read a Parquet object whole (schema metadata kept: DuckDB would drop it)."""
    return pq.read_table(io.BytesIO(read_bytes(store, uri)))


def list_folder(store: ParquetStore, uri: str) -> list[tuple[str, int]]:
    """(URI, size) of the files directly inside a folder, sorted; empty if it does not exist."""
    selector = pafs.FileSelector(fs_path(store, uri), recursive=False, allow_not_found=True)
    entries = []
    for info in store.filesystem().get_file_info(selector):
        if info.type == pafs.FileType.File:
            entries.append((f"s3://{info.path}" if store.is_s3 else info.path, int(info.size or 0)))
    return sorted(entries)


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class UnitFile:
    """One inference-log file of a unit.

    Attributes:
        path: URI DuckDB and pyarrow read (absolute local path or ``s3://bucket/key``).
        size: Size in bytes when listed.
    """

    path: str
    size: int


@dataclass(frozen=True)
class SpecRef:
    """A version's profile spec, stored once per run under ``specs/<sha256>.parquet``.

    Attributes:
        uri: Where the spec file is.
        sha256: :func:`spec_digest` of the spec, checked when it is read.
        task: ``classification`` or ``regression`` from the reference's label (as the monitoring
            job decides it), ``None`` when the reference has no label (the job then decides from
            the logged scores, so a task computes both tasks' aggregates).
    """

    uri: str
    sha256: str
    task: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The reference as JSON (``task`` only when known)."""
        return {"uri": self.uri, "sha256": self.sha256, **({"task": self.task} if self.task else {})}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> SpecRef:
        """Read :meth:`to_json`'s form."""
        task = payload.get("task")
        return cls(str(payload["uri"]), str(payload["sha256"]), str(task) if task else None)


@dataclass(frozen=True)
class WorkUnit:
    """Log files of one (project, model, environment, date) profiled by one task.

    Attributes:
        run_id: The run.
        index: Position in the run (also the manifest name and the partial key).
        unit_id: SHA-256 of the sorted (relative path, size) of ``files``.
        project: Project slug.
        model: Model name.
        environment: Environment.
        date: Partition date, ``YYYY-MM-DD``.
        window: ``day`` or ``hour``.
        files: The files, sorted by path.
        specs: Version -> its reference spec (versions without a usable reference are absent).
        duckdb_threads: DuckDB threads of the task (``None``: the task's own settings).
        duckdb_memory_limit: DuckDB memory limit of the task (``None``: the task's own settings).
    """

    run_id: str
    index: int
    unit_id: str
    project: str
    model: str
    environment: str
    date: str
    window: str
    files: tuple[UnitFile, ...]
    specs: Mapping[str, SpecRef] = field(default_factory=dict)
    duckdb_threads: int | None = None
    duckdb_memory_limit: str | None = None

    @property
    def bytes(self) -> int:
        """Total size of the unit's files."""
        return sum(f.size for f in self.files)

    @property
    def target(self) -> tuple[str, str, str]:
        """(project, model, environment)."""
        return (self.project, self.model, self.environment)

    @property
    def day(self) -> date:
        """The partition date."""
        return date.fromisoformat(self.date)

    def to_json(self) -> dict[str, Any]:
        """The manifest: everything a task needs, as JSON."""
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "index": self.index,
            "unit_id": self.unit_id,
            "project": self.project,
            "model": self.model,
            "environment": self.environment,
            "date": self.date,
            "window": self.window,
            "files": [{"path": f.path, "size": f.size} for f in self.files],
            "specs": {v: s.to_json() for v, s in sorted(self.specs.items())},
            "duckdb": {"threads": self.duckdb_threads, "memory_limit": self.duckdb_memory_limit},
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> WorkUnit:
        """Rebuild a unit from its manifest.

        Raises:
            ScaleoutError: if the manifest is of another format or malformed.
        """
        if payload.get("format") != FORMAT:
            raise ScaleoutError(f"unsupported manifest format {payload.get('format')!r} (expected {FORMAT})")
        try:
            duckdb = payload.get("duckdb") or {}
            unit = cls(
                run_id=check_run_id(str(payload["run_id"])),
                index=int(payload["index"]),
                unit_id=str(payload["unit_id"]),
                project=str(payload["project"]),
                model=str(payload["model"]),
                environment=str(payload["environment"]),
                date=date.fromisoformat(str(payload["date"])).isoformat(),
                window=str(payload["window"]),
                files=tuple(UnitFile(str(f["path"]), int(f["size"])) for f in payload["files"]),
                specs={str(v): SpecRef.from_json(s) for v, s in payload["specs"].items()},
                duckdb_threads=int(duckdb["threads"]) if duckdb.get("threads") is not None else None,
                duckdb_memory_limit=(
                    str(duckdb["memory_limit"]) if duckdb.get("memory_limit") is not None else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ScaleoutError(f"malformed unit manifest: {error!r}") from error
        return unit


def pack_files(files: Sequence[StoredFile | UnitFile], unit_bytes: int) -> list[list[StoredFile | UnitFile]]:
    """Pack files (in path order) into consecutive groups of at most ``unit_bytes``.

    A file larger than ``unit_bytes`` forms a group of its own; an empty file joins its neighbours.

    Raises:
        ScaleoutError: if ``unit_bytes`` is below 1.
    """
    if unit_bytes < 1:
        raise ScaleoutError(f"unit_bytes must be at least 1, got {unit_bytes}")
    groups: list[list[StoredFile | UnitFile]] = []
    size = 0
    for stored in sorted(files, key=lambda f: f.path):
        if groups and (stored.size == 0 or size + stored.size <= unit_bytes):
            groups[-1].append(stored)
            size += stored.size
        else:
            groups.append([stored])
            size = stored.size
    return groups


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RunPlan:
    """A planned run: its units and what was asked.

    Attributes:
        run_id: The run.
        root: Store root the run was planned on.
        window: ``day`` or ``hour``.
        unit_bytes: The packing limit.
        request: The monitor request's plain fields (project, model, environment, since, until,
            window, backfill, label_horizon_days, exclude_projects).
        units: The units, by index.
        specs: ``project/model`` -> version -> spec reference.
        problems: Listed files that are not under ``project=/model=/environment=/date=``.
        created_at: When the plan was made (UTC, ISO).
    """

    run_id: str
    root: str
    window: str
    unit_bytes: int
    request: Mapping[str, Any]
    units: tuple[WorkUnit, ...]
    specs: Mapping[str, Mapping[str, SpecRef]]
    problems: tuple[str, ...] = ()
    created_at: str = ""

    @property
    def layout(self) -> RunLayout:
        """The run's file layout."""
        return RunLayout(self.root, self.run_id)

    @property
    def bytes(self) -> int:
        """Total bytes of every unit."""
        return sum(u.bytes for u in self.units)

    def to_json(self) -> dict[str, Any]:
        """The run listing (``run.json``)."""
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "root": self.root,
            "window": self.window,
            "unit_bytes": self.unit_bytes,
            "created_at": self.created_at,
            "request": dict(self.request),
            "specs": {
                key: {v: s.to_json() for v, s in sorted(by_version.items())}
                for key, by_version in sorted(self.specs.items())
            },
            "problems": list(self.problems),
            "units": [
                {
                    "index": u.index,
                    "unit_id": u.unit_id,
                    "manifest": self.layout.manifest(u.index),
                    "project": u.project,
                    "model": u.model,
                    "environment": u.environment,
                    "date": u.date,
                    "bytes": u.bytes,
                    "files": len(u.files),
                }
                for u in self.units
            ],
        }


def load_plan(store: ParquetStore, run_id: str) -> RunPlan:
    """Read a run's listing and its unit manifests.

    Raises:
        ScaleoutError: if the run does not exist, belongs to another data root or is malformed.
    """
    layout = RunLayout(store.root, run_id)
    try:
        listing = read_json(store, layout.run_file)
    except FileNotFoundError:
        raise ScaleoutError(f"no profiling run {run_id!r}: {layout.run_file} does not exist") from None
    if listing.get("format") != FORMAT or listing.get("run_id") != run_id:
        raise ScaleoutError(f"{layout.run_file} is not the listing of run {run_id} (format {FORMAT})")
    if listing.get("root") != store.root:
        raise ScaleoutError(f"run {run_id} was planned on {listing.get('root')}, not on {store.root}")
    units = []
    for entry in listing["units"]:
        try:
            unit = WorkUnit.from_json(read_json(store, layout.manifest(int(entry["index"]))))
        except FileNotFoundError:
            raise ScaleoutError(f"run {run_id}: the manifest of unit {entry['index']} is missing") from None
        if unit.unit_id != entry["unit_id"] or unit.index != entry["index"]:
            raise ScaleoutError(
                f"run {run_id}: manifest {layout.manifest(unit.index)} does not match run.json"
            )
        units.append(unit)
    specs = {
        key: {v: SpecRef.from_json(s) for v, s in by_version.items()}
        for key, by_version in listing.get("specs", {}).items()
    }
    return RunPlan(
        run_id=run_id,
        root=store.root,
        window=listing["window"],
        unit_bytes=int(listing["unit_bytes"]),
        request=listing.get("request", {}),
        units=tuple(units),
        specs=specs,
        problems=tuple(listing.get("problems", ())),
        created_at=listing.get("created_at", ""),
    )


def reference_spec(profile: Profile) -> ProfileSpec:
    """The spec the monitoring job profiles logs with: the reference's, without the label column."""
    return profile.spec.select([name for name in profile.spec.names if name != LABEL_COLUMN])


def reference_task(profile: Profile) -> str | None:
    """The model's task as the monitoring job reads it from a reference: the label column's kind."""
    if LABEL_COLUMN not in profile.spec.names:
        return None
    return "classification" if profile.spec.column(LABEL_COLUMN).kind == "categorical" else "regression"


def read_spec(store: ParquetStore, ref: SpecRef) -> ProfileSpec:
    """Read a spec file and check it is the one referenced.

    Raises:
        ScaleoutError: if it is missing, unreadable or its digest differs.
    """
    try:
        profiles = profiles_from_arrow(read_table(store, ref.uri))
    except FileNotFoundError:
        raise ScaleoutError(f"spec file {ref.uri} is missing") from None
    except (ValueError, KeyError, pa.ArrowException) as error:
        raise ScaleoutError(f"spec file {ref.uri} is unreadable: {error}") from error
    spec = next(iter(profiles.values())).spec
    if spec_digest(spec) != ref.sha256:
        raise ScaleoutError(f"spec file {ref.uri} does not hold spec {ref.sha256}")
    return spec


def _load_specs(
    store: ParquetStore, layout: RunLayout, project: str, model: str
) -> tuple[dict[str, SpecRef], list[str]]:
    """Snapshot the reference spec of every version of a model into the run (content-addressed)."""
    refs: dict[str, SpecRef] = {}
    notes: list[str] = []
    for stored in store.list_files(REFERENCE_PROFILES, filters={"project": project, "model": model}):
        version = stored.partition.get("version")
        if version is None or not stored.path.endswith("/" + REFERENCE_FILE):
            continue
        try:
            reference = Profile.from_arrow(read_table(store, stored.path))
        except (ValueError, KeyError, TypeError, OSError, pa.ArrowException) as error:
            # The monitoring job reports an unusable reference itself; nothing to profile with.
            notes.append(f"{project}/{model} version {version}: unusable reference ({error})")
            continue
        spec = reference_spec(reference)
        digest = spec_digest(spec)
        uri = layout.spec(digest)
        write_bytes_atomically(
            store, uri, table_bytes(profiles_to_arrow([Profile(spec=spec, rows=0, columns=())]))
        )
        refs[version] = SpecRef(uri, digest, reference_task(reference))
    return refs, notes


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def plan_run(
    store: ParquetStore,
    request: Any,
    *,
    unit_bytes: int | str = DEFAULT_UNIT_BYTES,
    run_id: str | None = None,
    duckdb_threads: int | None = None,
    duckdb_memory_limit: str | None = None,
    authorize: Callable[[Sequence[str]], None] | None = None,
) -> RunPlan:
    """List the request's log files once, pack them into units and write the run's files.

    Writes the spec snapshots, one manifest per unit and, last, ``run.json`` (the run exists for
    ``merge`` only once its listing is complete).

    Args:
        store: The Parquet store.
        request: A :class:`jobs.monitor.MonitorRequest` (filters, date range, window).
        unit_bytes: Packing limit per unit (bytes, or text such as ``512MB``).
        run_id: The run id (default: :func:`new_run_id`).
        duckdb_threads: DuckDB threads of each task (``None``: each task's settings).
        duckdb_memory_limit: DuckDB memory limit of each task (``None``: each task's settings).
        authorize: Called with the projects of the listed files before anything is written; raises
            to refuse the run (e.g. ``jobs.permissions.require`` for the acting user).

    Returns:
        The plan.

    Raises:
        ScaleoutError: for a bad run id, an existing run of that id, or more than
            :data:`MAX_UNITS` units.
    """
    created = datetime.now(UTC)
    unit_bytes = parse_bytes(unit_bytes)
    run_id = check_run_id(run_id or new_run_id(created))
    layout = RunLayout(store.root, run_id)
    if list_folder(store, layout.run_dir) or list_folder(store, layout.manifests_dir):
        raise ScaleoutError(f"run {run_id} exists already under {layout.run_dir}; pick another run id")
    by_date: dict[tuple[str, str, str, str], list[StoredFile]] = defaultdict(list)
    problems: list[str] = []
    for stored in store.list_files(INFERENCE_LOGS, filters=request.filters()):
        part = stored.partition
        key = (part.get("project"), part.get("model"), part.get("environment"))
        day = _parse_day(part.get("date", ""))
        if None in key or day is None:
            problems.append(f"{stored.path} is not under project=/model=/environment=/date=YYYY-MM-DD/")
            continue
        if request.in_range(day) and key[0] not in request.exclude_projects:
            by_date[(*key, day.isoformat())].append(stored)  # type: ignore[arg-type]
    if authorize is not None:
        authorize(sorted({key[0] for key in by_date}))
    specs: dict[str, dict[str, SpecRef]] = {}
    for project, model in sorted({(k[0], k[1]) for k in by_date}):
        refs, notes = _load_specs(store, layout, project, model)
        specs[f"{project}/{model}"] = refs
        problems.extend(notes)
    units: list[WorkUnit] = []
    for key in sorted(by_date):
        project, model, environment, day = key
        for group in pack_files(by_date[key], unit_bytes):
            files = tuple(UnitFile(f.path, f.size) for f in group)
            units.append(
                WorkUnit(
                    run_id=run_id,
                    index=len(units),
                    unit_id=files_digest(files, store.root),
                    project=project,
                    model=model,
                    environment=environment,
                    date=day,
                    window=request.window,
                    files=files,
                    specs=specs[f"{project}/{model}"],
                    duckdb_threads=duckdb_threads,
                    duckdb_memory_limit=duckdb_memory_limit,
                )
            )
    if len(units) > MAX_UNITS:
        raise ScaleoutError(f"{len(units)} units exceed {MAX_UNITS}: raise unit_bytes")
    plan = RunPlan(
        run_id=run_id,
        root=store.root,
        window=request.window,
        unit_bytes=unit_bytes,
        request=request_fields(request),
        units=tuple(units),
        specs=specs,
        problems=tuple(problems),
        created_at=created.isoformat(),
    )
    for unit in units:
        write_json(store, layout.manifest(unit.index), unit.to_json())
    write_json(store, layout.run_file, plan.to_json())
    return plan


def request_fields(request: Any) -> dict[str, Any]:
    """The plain fields of a monitor request (what ``merge --run`` rebuilds the request from)."""
    return {
        "project": request.project,
        "model": request.model,
        "environment": request.environment,
        "since": request.since.isoformat() if request.since else None,
        "until": request.until.isoformat() if request.until else None,
        "window": request.window,
        "backfill": bool(request.backfill),
        "label_horizon_days": int(request.label_horizon_days),
        "exclude_projects": sorted(request.exclude_projects),
    }
