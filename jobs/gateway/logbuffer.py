"""A bounded in-memory buffer that writes contract datasets to the store without losing rows.

Requests hand rows to :meth:`LogBuffer.add_rows` (one list append per column under
a lock: no request waits on storage). Two background threads move them on:

* the **flusher** wakes every ``flush_interval_s`` or once ``flush_rows`` rows are
  buffered, turns the rows into one Arrow table per partition, validates them
  against the data contract and hands each table (a *chunk*) to the writer, or
  spills it to local disk when the store is unavailable or the writer is behind;
* the **writer** publishes chunks to the store (``ParquetStore.write_partition``
  under a file name fixed when the chunk was built, so a retry or a replay
  replaces the same file instead of adding a copy), and replays spilled chunks
  once the store answers again.

Nothing is dropped silently: a chunk the store refuses is spilled as an Arrow IPC
file under ``spill_dir`` (fsynced, then renamed into place) and replayed later, by
any process sharing the folder (a file is claimed by renaming it). A chunk that
breaks the data contract cannot be written at all; it is moved to
``spill_dir/rejected`` for a person to look at. If the buffer reaches ``max_rows``
(the flusher is stuck), the caller spills the buffered rows itself. Only when the
local disk refuses a spill too, and more than ``max_rows`` rows wait in memory,
are rows dropped: counted, logged as errors and shown in ``/metrics``. Every
transition is counted in :meth:`LogBuffer.stats`.

:meth:`LogBuffer.close` flushes everything: rows still buffered are written, or
spilled if the store does not take them before the deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.store import InvalidName, ParquetStore, StoreError
from jobs.contracts import (
    FILE_SCHEMAS,
    INFERENCE_LOGS,
    LABELS,
    REQUEST_ERRORS,
    SEGMENT_PREFIX,
    ContractError,
    partition_keys,
    require_valid,
    validate_inference_table,
    validate_labels_table,
    validate_request_errors_table,
)

log = logging.getLogger(__name__)

SPILL_SUFFIX = ".arrow"
REJECTED_DIR = "rejected"
_CLAIM_MARK = ".claimed-"
_META_DATASET = b"mms.dataset"
_META_PARTITION = b"mms.partition"
_META_FILE_NAME = b"mms.file_name"
_META_FEATURES = b"mms.feature_columns"
_STORE_FAILURES = (StoreError, OSError, pa.ArrowException)

ColumnTypes = tuple[tuple[str, pa.DataType], ...]
"""Open columns of a dataset's rows (features, ``segment_*``) and their Arrow types."""


@dataclass(frozen=True)
class Chunk:
    """Rows of one partition, validated and ready to publish as one Parquet file.

    Attributes:
        dataset: ``inference_logs``, ``labels`` or ``request_errors``.
        partition: The partition, keys in the dataset's order.
        table: The rows, without partition-key columns.
        file_name: Name of the Parquet file inside the partition (fixed: retries replace it).
        feature_columns: The feature columns among the table's columns.
    """

    dataset: str
    partition: Mapping[str, str]
    table: pa.Table
    file_name: str
    feature_columns: tuple[str, ...] = ()


def new_file_name() -> str:
    """A unique data-file name in the store's ``part-<UTC stamp>-<random>.parquet`` style."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"


def validate_chunk(chunk: Chunk) -> None:
    """Check a chunk against its dataset's contract.

    Raises:
        ContractError: listing every violation.
        ValueError: for a dataset the buffer does not write.
    """
    if chunk.dataset == INFERENCE_LOGS:
        require_valid(validate_inference_table(chunk.table, chunk.feature_columns, partition=chunk.partition))
    elif chunk.dataset == LABELS:
        require_valid(validate_labels_table(chunk.table, partition=chunk.partition))
    elif chunk.dataset == REQUEST_ERRORS:
        require_valid(validate_request_errors_table(chunk.table, partition=chunk.partition))
    else:
        raise ValueError(
            f"the log buffer writes {INFERENCE_LOGS}, {LABELS} and {REQUEST_ERRORS}, not {chunk.dataset!r}"
        )


def split_unique(table: pa.Table, key: str = "request_id") -> list[pa.Table]:
    """Split ``table`` so that ``key`` is unique in each part (first occurrences first).

    The contracts make ``request_id`` unique within a file; a client that retries with the
    same id produces a second row, which goes to a second file instead of being dropped.
    """
    if table.num_rows == 0 or pc.count_distinct(table.column(key), mode="all").as_py() == table.num_rows:
        return [table]
    seen: Counter[str] = Counter()
    occurrence = []
    for value in table.column(key).to_pylist():
        occurrence.append(seen[value])
        seen[value] += 1
    generation = pa.array(occurrence, pa.int64())
    return [table.filter(pc.equal(generation, index)) for index in range(int(pc.max(generation).as_py()) + 1)]


# --------------------------------------------------------------------------- spill files


def write_spill_file(directory: Path, chunk: Chunk) -> Path:
    """Write ``chunk`` as an Arrow IPC file, durably, and publish it by rename.

    Returns:
        The published path (``<directory>/<stamp>-<uuid>.arrow``).

    Raises:
        OSError: if the local disk refuses the write.
    """
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {
        _META_DATASET: chunk.dataset.encode(),
        _META_PARTITION: json.dumps(dict(chunk.partition)).encode(),
        _META_FILE_NAME: chunk.file_name.encode(),
        _META_FEATURES: json.dumps(list(chunk.feature_columns)).encode(),
    }
    table = chunk.table.replace_schema_metadata({**(chunk.table.schema.metadata or {}), **metadata})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    final = directory / f"{stamp}-{uuid.uuid4().hex}{SPILL_SUFFIX}"
    temporary = directory / f".{final.name}.tmp"
    try:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return final


def read_spill_file(path: Path) -> Chunk:
    """Read a spill file back into the chunk it holds.

    Raises:
        OSError, pyarrow.ArrowInvalid: if the file is unreadable.
        ValueError: if it lacks the gateway's metadata.
    """
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_file(source).read_all()
    metadata = table.schema.metadata or {}
    try:
        dataset = metadata[_META_DATASET].decode()
        partition = json.loads(metadata[_META_PARTITION])
        file_name = metadata[_META_FILE_NAME].decode()
        features = tuple(json.loads(metadata.get(_META_FEATURES, b"[]")))
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a gateway spill file: {error}") from error
    stripped = {k: v for k, v in metadata.items() if not k.startswith(b"mms.")}
    table = table.replace_schema_metadata(stripped or None)
    return Chunk(dataset, partition, table, file_name, features)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spill_files(directory: Path) -> list[Path]:
    """Spill files waiting for replay (published and unclaimed), oldest first."""
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.is_file() and entry.name.endswith(SPILL_SUFFIX) and not entry.name.startswith(".")
        )
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / name for name in names]


def release_stale_claims(directory: Path) -> int:
    """Give back the files claimed by processes that died mid-replay.

    Returns:
        How many files were released.
    """
    released = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        name, mark, pid = entry.name.rpartition(_CLAIM_MARK)
        if not mark or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.replace(entry.path, directory / name)
            released += 1
    return released


# --------------------------------------------------------------------------- the buffer


def warm_up_arrow() -> None:
    """Pay pyarrow's one-time costs now: table building, validation kernels, the Parquet writer.

    The first ``pa.array`` call of a process imports pandas when nothing has yet (~250 ms of
    CPU, measured), and the first validation and Parquet write set up their kernels (~6 ms),
    all of it holding the GIL: paid at start, not by the requests served during the first flush.
    """
    for dataset in (INFERENCE_LOGS, LABELS, REQUEST_ERRORS):
        pending = _Pending(dataset, {}, ())
        pending.extend([{}])  # one all-null row: it breaks the contract, which is fine here
        table = pending.to_table()
        split_unique(table)
        with contextlib.suppress(ContractError, ValueError):
            validate_chunk(Chunk(dataset, {}, table, "warm-up.parquet"))
        nullable = pa.schema([field.with_nullable(True) for field in table.schema])
        pq.write_table(table.cast(nullable), pa.BufferOutputStream())


@functools.lru_cache(maxsize=256)  # bounded: segment columns are chosen by clients
def _row_schema(dataset: str, columns: ColumnTypes) -> pa.Schema:
    """The file schema of a dataset's rows: its fixed columns, then the open ``columns``."""
    return pa.schema([*FILE_SCHEMAS[dataset], *(pa.field(name, kind) for name, kind in columns)])


class _Pending:
    """Buffered rows of one ``(dataset, partition, columns)`` key, held column by column.

    Why columns: the flush then converts each column with one ``pa.array`` call (about
    3 ms for 5,000 log rows), where building the table from row dicts took ~200 ms of
    GIL-holding CPU and stalled the serving event loop for as long (``docs/GATEWAY.md``).
    Appending a row costs one list append per column on the request path.
    """

    __slots__ = ("columns", "count", "dataset", "partition", "schema", "values")

    def __init__(self, dataset: str, partition: dict[str, str], columns: ColumnTypes) -> None:
        self.dataset = dataset
        self.partition = partition
        self.columns = columns
        self.schema = _row_schema(dataset, columns)
        self.values: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self.count = 0

    def extend(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows; a missing key is a null, a key outside the schema is ignored."""
        if len(rows) == 1:
            row = rows[0]
            for name, values in self.values.items():
                values.append(row.get(name))
        else:
            for name, values in self.values.items():
                values.extend([row.get(name) for row in rows])
        self.count += len(rows)

    def to_table(self) -> pa.Table:
        """The rows as one Arrow table of :attr:`schema`.

        Raises:
            pyarrow.ArrowException, TypeError, ValueError: if a value does not fit its column.
        """
        arrays = [pa.array(self.values[field.name], type=field.type) for field in self.schema]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def rows(self) -> list[dict[str, Any]]:
        """The rows back as dicts (to set unconvertible rows aside for a person)."""
        names = list(self.values)
        return [dict(zip(names, values, strict=True)) for values in zip(*self.values.values(), strict=True)]


class LogBuffer:
    """Buffer contract rows (logs, labels, request errors), write them in the background, spill on failure.

    Args:
        store: The Parquet store to write to.
        spill_dir: Local folder for spilled chunks (may be shared by the processes of one gateway).
        flush_rows: Flush as soon as this many rows are buffered.
        flush_interval_s: Flush at least this often.
        max_rows: Buffered rows beyond which the caller spills them itself.
        max_pending_chunks: Chunks waiting for the writer beyond which new chunks are spilled.
        retry_interval_s: How often an unavailable store is tried again (by replaying a spill file).
    """

    def __init__(
        self,
        store: ParquetStore,
        spill_dir: str | os.PathLike[str],
        *,
        flush_rows: int = 20_000,
        flush_interval_s: float = 10.0,
        max_rows: int = 100_000,
        max_pending_chunks: int = 8,
        retry_interval_s: float = 5.0,
    ) -> None:
        if flush_rows < 1 or max_rows < flush_rows:
            raise ValueError(f"need 1 <= flush_rows ({flush_rows}) <= max_rows ({max_rows})")
        if flush_interval_s <= 0 or retry_interval_s <= 0:
            raise ValueError("flush_interval_s and retry_interval_s must be positive")
        self.store = store
        self.spill_dir = Path(spill_dir)
        self.rejected_dir = self.spill_dir / REJECTED_DIR
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_rows = max_rows
        self.max_pending_chunks = max_pending_chunks
        self.retry_interval_s = retry_interval_s
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], _Pending] = {}
        self._buffered = 0
        self._stranded: list[Chunk] = []
        self._queue: queue.Queue[Chunk] = queue.Queue()
        self._inflight: Chunk | None = None
        self._outstanding = 0  # chunks queued or being written; guarded by _lock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._writer_stop = threading.Event()
        self._store_available = True
        self._last_failure = 0.0
        self._counts: Counter[str] = Counter()
        self._flusher: threading.Thread | None = None
        self._writer: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the flusher and writer threads; spill files of dead processes become replayable."""
        if self._flusher is not None:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        released = release_stale_claims(self.spill_dir)
        if released:
            log.warning("released %d spill file(s) claimed by processes that died", released)
        warm_up_arrow()
        self._flusher = threading.Thread(target=self._flush_loop, name="mms-log-flusher", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="mms-log-writer", daemon=True)
        self._flusher.start()
        self._writer.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush everything: write what the store takes within ``timeout_s``, spill the rest."""
        deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=max(0.0, deadline - time.monotonic()))
        self._route(self._take_chunks(), final=True)
        self._writer_stop.set()
        if self._writer is not None:
            self._writer.join(timeout=max(0.0, deadline - time.monotonic()))
            if self._writer.is_alive():
                # The store hangs: keep a copy on disk. If the write still lands, the replay
                # later replaces the same file name, so the rows exist once.
                log.error("the store did not answer within %.0f s of shutdown; spilling", timeout_s)
                inflight = self._inflight
                if inflight is not None:
                    self._spill(inflight, reason="shutdown")
        while True:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                break
            self._spill(chunk, reason="shutdown")
            with self._lock:
                self._outstanding -= 1
        self._retry_stranded()
        self._flusher = None
        self._writer = None

    # ----------------------------------------------------------------- producers

    def add_rows(
        self,
        dataset: str,
        partition: Mapping[str, str],
        columns: ColumnTypes,
        rows: Sequence[dict[str, Any]],
    ) -> None:
        """Buffer rows of one partition (the request path: no I/O unless the buffer is full).

        Args:
            dataset: ``inference_logs``, ``labels`` or ``request_errors``.
            partition: Partition values, keys in the dataset's order.
            columns: Feature and ``segment_*`` columns of the rows with their Arrow types
                (empty for ``labels`` and ``request_errors``).
            rows: Dicts with the dataset's fixed columns (timestamps as UTC microseconds or
                aware datetimes) and the open columns.
        """
        if not rows:
            return
        key = (dataset, tuple(partition.items()), columns)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(dataset, dict(partition), columns)
            pending.extend(rows)
            self._buffered += len(rows)
            buffered = self._buffered
            self._counts["rows_received"] += len(rows)
        if buffered >= self.flush_rows:
            self._wake.set()
        if buffered >= self.max_rows:
            # The flusher cannot keep up: this caller moves the rows to local disk itself.
            with self._lock:
                self._counts["buffer_full"] += 1
            log.warning("log buffer full (%d rows): spilling on the request path", buffered)
            for chunk in self._take_chunks():
                self._spill(chunk, reason="buffer_full")

    def submit_table(
        self, dataset: str, partition: Mapping[str, str], table: pa.Table, feature_columns: Sequence[str] = ()
    ) -> None:
        """Queue a whole table (batch jobs); waits while the writer is behind and the store is up.

        Raises:
            ContractError: if the table breaks the dataset's contract (nothing is queued).
        """
        keys = set(partition_keys(dataset))
        table = table.drop_columns([c for c in table.column_names if c in keys])
        chunks = [
            Chunk(dataset, dict(partition), part, new_file_name(), tuple(feature_columns))
            for part in split_unique(table)
        ]
        for chunk in chunks:
            validate_chunk(chunk)
        with self._lock:
            self._counts["rows_received"] += table.num_rows
        for chunk in chunks:
            while self._store_available and self._queue.qsize() >= self.max_pending_chunks:
                time.sleep(0.01)
            self._route([chunk])

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Write (or spill) everything buffered now and wait until the writer is idle.

        Returns:
            Whether everything was handed over within ``timeout_s``.
        """
        self._route(self._take_chunks())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._outstanding == 0:
                    return True
            time.sleep(0.01)
        return False

    def replay_spilled(self) -> int:
        """Replay every waiting spill file now, on the calling thread (one-shot jobs).

        Stops at the first store failure; the remaining files stay for a later replay.

        Returns:
            How many files were published.
        """
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        release_stale_claims(self.spill_dir)
        replayed = 0
        for path in spill_files(self.spill_dir):
            if not self._replay(path):
                break
            replayed += 1
        return replayed

    # ----------------------------------------------------------------- state

    @property
    def store_available(self) -> bool:
        """Whether the last store write succeeded."""
        return self._store_available

    def stats(self) -> dict[str, int]:
        """Counters and gauges of the buffer (see ``docs/GATEWAY.md`` for their meaning)."""
        with self._lock:
            counts = dict(self._counts)
            buffered = self._buffered
            stranded = sum(c.table.num_rows for c in self._stranded)
        names = (
            "rows_received",
            "rows_written",
            "files_written",
            "rows_spilled",
            "files_spilled",
            "rows_replayed",
            "files_replayed",
            "rows_rejected",
            "rows_dropped",
            "store_errors",
            "spill_errors",
            "buffer_full",
            "duplicate_splits",
        )
        result = {name: counts.get(name, 0) for name in names}
        result["rows_buffered"] = buffered + stranded
        result["chunks_pending"] = self._outstanding
        result["store_available"] = int(self._store_available)
        return result

    def spill_file_count(self) -> int:
        """Spill files waiting for replay or being replayed (all processes sharing the folder)."""
        try:
            return sum(
                1
                for entry in os.scandir(self.spill_dir)
                if entry.is_file()
                and not entry.name.startswith(".")
                and (entry.name.endswith(SPILL_SUFFIX) or f"{SPILL_SUFFIX}{_CLAIM_MARK}" in entry.name)
            )
        except (FileNotFoundError, NotADirectoryError):
            return 0

    # ----------------------------------------------------------------- flusher

    def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._route(self._take_chunks())
                self._retry_stranded()
            except Exception:  # a bug here must not stop logging for the life of the process
                log.exception("log flusher failed; retrying at the next interval")

    def _take_chunks(self) -> list[Chunk]:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._buffered = 0
        chunks: list[Chunk] = []
        for item in pending.values():
            chunks.extend(self._build(item))
        return chunks

    def _build(self, item: _Pending) -> list[Chunk]:
        features = tuple(name for name, _ in item.columns if not name.startswith(SEGMENT_PREFIX))
        try:
            table = item.to_table()
        except (pa.ArrowException, TypeError, ValueError) as error:
            log.error("cannot build a %s table from %d row(s): %s", item.dataset, item.count, error)
            self._reject_rows(item, str(error))
            return []
        parts = split_unique(table)
        if len(parts) > 1:
            with self._lock:
                self._counts["duplicate_splits"] += len(parts) - 1
        chunks = []
        for part in parts:
            chunk = Chunk(item.dataset, item.partition, part, new_file_name(), features)
            try:
                validate_chunk(chunk)
            except ContractError as error:
                self._reject(chunk, str(error))
                continue
            chunks.append(chunk)
        return chunks

    def _route(self, chunks: Sequence[Chunk], *, final: bool = False) -> None:
        for chunk in chunks:
            writer_alive = (
                self._writer is not None and self._writer.is_alive() and not self._writer_stop.is_set()
            )
            if (
                self._store_available
                and writer_alive
                and (final or self._queue.qsize() < self.max_pending_chunks)
            ):
                with self._lock:
                    self._outstanding += 1
                self._queue.put(chunk)
            else:
                self._spill(chunk, reason="store_unavailable" if not self._store_available else "backlog")

    # ----------------------------------------------------------------- writer

    def _write_loop(self) -> None:
        while True:
            try:
                chunk = self._queue.get(timeout=min(0.5, self.retry_interval_s))
            except queue.Empty:
                if self._writer_stop.is_set():
                    return
                self._maybe_replay()
                continue
            self._inflight = chunk
            try:
                if self._store_available or self._writer_stop.is_set():
                    self._write(chunk)
                else:
                    self._spill(chunk, reason="store_unavailable")
            except Exception:  # never lose the chunk to a bug: keep it on disk
                log.exception("log writer failed on a chunk; spilling it")
                self._spill(chunk, reason="writer_error")
            finally:
                self._inflight = None
                with self._lock:
                    self._outstanding -= 1

    def _write(self, chunk: Chunk) -> None:
        try:
            self.store.write_partition(chunk.dataset, chunk.partition, chunk.table, file_name=chunk.file_name)
        except InvalidName as error:
            self._reject(chunk, str(error))
            return
        except _STORE_FAILURES as error:
            self._store_failed(error)
            self._spill(chunk, reason="store_error")
            return
        self._store_recovered()
        with self._lock:
            self._counts["rows_written"] += chunk.table.num_rows
            self._counts["files_written"] += 1

    def _store_failed(self, error: BaseException) -> None:
        with self._lock:
            self._counts["store_errors"] += 1
        if self._store_available:
            log.error("the store is unavailable (%s): spilling inference logs to %s", error, self.spill_dir)
        self._store_available = False
        self._last_failure = time.monotonic()

    def _store_recovered(self) -> None:
        if not self._store_available:
            log.warning("the store is available again: replaying spilled logs")
        self._store_available = True

    def _maybe_replay(self) -> None:
        if not self._store_available and time.monotonic() - self._last_failure < self.retry_interval_s:
            return
        for path in spill_files(self.spill_dir):
            if not self._queue.empty() or (self._writer_stop.is_set() and not self._store_available):
                return
            if not self._replay(path):
                return

    def _replay(self, path: Path) -> bool:
        """Publish one spill file; ``False`` when the store is still unavailable."""
        claimed = path.with_name(f"{path.name}{_CLAIM_MARK}{os.getpid()}")
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            return True  # another process claimed it
        try:
            chunk = read_spill_file(claimed)
        except (OSError, pa.ArrowException, ValueError) as error:
            log.error("spill file %s is unreadable (%s): moving it to %s", path, error, self.rejected_dir)
            self._move_rejected(claimed, path.name)
            return True
        try:
            self.store.write_partition(chunk.dataset, chunk.partition, chunk.table, file_name=chunk.file_name)
        except InvalidName as error:
            log.error(
                "spill file %s is refused by the store (%s): moving it to %s", path, error, self.rejected_dir
            )
            self._move_rejected(claimed, path.name)
            with self._lock:
                self._counts["rows_rejected"] += chunk.table.num_rows
            return True
        except _STORE_FAILURES as error:
            os.replace(claimed, path)
            self._store_failed(error)
            return False
        claimed.unlink()
        self._store_recovered()
        with self._lock:
            self._counts["rows_replayed"] += chunk.table.num_rows
            self._counts["files_replayed"] += 1
            self._counts["rows_written"] += chunk.table.num_rows
            self._counts["files_written"] += 1
        return True

    # ----------------------------------------------------------------- spilling

    def _spill(self, chunk: Chunk, *, reason: str) -> None:
        try:
            write_spill_file(self.spill_dir, chunk)
        except OSError as error:
            self._strand(chunk, error)
            return
        with self._lock:
            self._counts["rows_spilled"] += chunk.table.num_rows
            self._counts["files_spilled"] += 1
            self._counts[f"spill_reason_{reason}"] += 1

    def _strand(self, chunk: Chunk, error: BaseException) -> None:
        """Keep a chunk the local disk refused in memory, up to ``max_rows``; beyond, drop it loudly."""
        with self._lock:
            self._counts["spill_errors"] += 1
            held = sum(c.table.num_rows for c in self._stranded)
            if held + chunk.table.num_rows <= self.max_rows:
                self._stranded.append(chunk)
                kept = True
            else:
                self._counts["rows_dropped"] += chunk.table.num_rows
                kept = False
        if kept:
            log.error(
                "cannot spill %d row(s) to %s (%s); keeping them in memory",
                chunk.table.num_rows,
                self.spill_dir,
                error,
            )
        else:
            log.error(
                "DROPPED %d %s row(s) of %s: the store and the spill folder %s both fail (%s)",
                chunk.table.num_rows,
                chunk.dataset,
                dict(chunk.partition),
                self.spill_dir,
                error,
            )

    def _retry_stranded(self) -> None:
        with self._lock:
            stranded, self._stranded = self._stranded, []
        for chunk in stranded:
            self._spill(chunk, reason="retry")

    def _reject(self, chunk: Chunk, reason: str) -> None:
        log.error(
            "%d %s row(s) of %s break the data contract and are set aside in %s: %s",
            chunk.table.num_rows,
            chunk.dataset,
            dict(chunk.partition),
            self.rejected_dir,
            reason,
        )
        with self._lock:
            self._counts["rows_rejected"] += chunk.table.num_rows
        try:
            write_spill_file(self.rejected_dir, chunk)
        except OSError as error:
            self._strand(chunk, error)

    def _reject_rows(self, item: _Pending, reason: str) -> None:
        path = self.rejected_dir / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex}.jsonl"
        with self._lock:
            self._counts["rows_rejected"] += item.count
        try:
            self.rejected_dir.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(
                    json.dumps({"dataset": item.dataset, "partition": item.partition, "reason": reason})
                    + "\n"
                )
                for row in item.rows():
                    handle.write(json.dumps(row, default=str) + "\n")
        except OSError as error:
            with self._lock:
                self._counts["rows_dropped"] += item.count
            log.error("DROPPED %d unconvertible row(s): cannot write %s (%s)", item.count, path, error)

    def _move_rejected(self, claimed: Path, name: str) -> None:
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        os.replace(claimed, self.rejected_dir / name)
