"""The Parquet store: datasets of hive-partitioned Parquet under a local folder or ``s3://bucket/prefix``.

Layout under the root::

    <root>/<dataset>/<key>=<value>/.../<file>.parquet
    <root>/_staging/<uuid>.parquet          (in-flight writes, never inside a dataset)

Writes are atomic for readers: a table is written to a staging file, its footer is
read back and checked against the table, and only then is it published under its
final name (``os.replace`` locally, a server-side copy on S3, both atomic for a
reader). A rerun of the same partition replaces its file instead of adding rows.

Reads list the dataset's hive directories with pyarrow, descending only into the
directories a partition filter allows, and hand DuckDB the explicit file list.
DuckDB runs locked down: no extension downloads, only the data root (and any extra
allowed paths) readable, configuration frozen.

Local and S3 roots behave the same; every method works on both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import duckdb

from analytics import _duckdb
from analytics._arrow_relation import DeferredCursor

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

# pyarrow (about 30 ms to import), pyarrow.fs and pyarrow.parquet (15 ms more) are imported where they
# are used: a process that only opens DuckDB and reads through it (the drift command line) lists and
# writes no files, and imports pyarrow only when DuckDB first hands it an Arrow stream, by then
# beside a DuckDB query running in another thread (see analytics.profile._numeric_beside_categorical).

KEY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
"""Dataset names and partition keys."""

PARTITION_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
"""Partition values: the hive value charset, so dates and timestamps fit (``..`` is refused apart)."""

FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.parquet$")
"""Names of data files inside a partition."""

STAGING_DIR = "_staging"
"""Folder under the root that holds in-flight writes; dataset names cannot start with ``_``."""

_GLOB_CHARS = frozenset("*?[")
_MAX_NAMES_IN_MESSAGE = 20
READ_ATTEMPTS = 20
"""How often :meth:`ParquetStore.read` reads when files change underneath it (see :class:`DataChanged`)."""
_RETRY_PAUSE_S = 0.05
_MAX_RETRY_PAUSE_S = 1.0
# The pause doubles from _RETRY_PAUSE_S up to _MAX_RETRY_PAUSE_S (about 15.5 s over all attempts), so
# a reader that keeps landing on rewrites lets the writer get ahead and outlasts a burst of them.
# (The runs that once exhausted these attempts were not write storms: each retry reused a DuckDB
# cursor that kept failing on the replaced file; see ParquetStore._forget_cursor.)


def _duckdb_read_errors() -> tuple[type[Exception], ...]:
    """What DuckDB raises while reading: its own errors, and UnicodeDecodeError when its Python binding
    decodes the binary body of a failed range request (an S3 object replaced mid-read, DuckDB 1.5.5).

    A function, not a constant: an ``except`` clause evaluates it only when something is raised, so
    importing this module reads nothing of DuckDB (``jobs._deferred_import``).
    """
    return (duckdb.Error, UnicodeDecodeError)


class StoreError(Exception):
    """The Parquet store could not do what was asked; the message says why."""


class InvalidName(StoreError, ValueError):
    """A dataset name, partition key/value, file name or column is not acceptable."""


class CorruptParquet(StoreError):
    """A Parquet file cannot be decoded.

    Attributes:
        path: URI of the file.
        reason: What the reader reported.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt Parquet file {path}: {reason}")
        self.path = path
        self.reason = reason


class NoData(StoreError, LookupError):
    """Nothing matches: an empty dataset, a filter that selects no partition, a source with no files."""


class AccessDenied(StoreError, PermissionError):
    """DuckDB refused a path outside the directories its connection may read."""


class DataChanged(StoreError):
    """A file was replaced while DuckDB was reading it; reading again gives a consistent result.

    On S3 DuckDB reads a file with several range requests and checks the object's
    ETag on each, so a concurrent :meth:`ParquetStore.write_partition` of the same
    file makes the read fail instead of mixing two versions. :meth:`ParquetStore.read`
    retries by itself, each time on a new cursor (with ``query=`` for a query over the data).
    """


@dataclass(frozen=True)
class StoreConfig:
    """Where the data lives and how DuckDB may use the machine.

    Attributes:
        data_uri: Root of the store: a local folder or ``s3://bucket/prefix``.
        s3_endpoint_url: ``http(s)://host:port`` of an S3-compatible server; ``None`` for AWS.
        s3_region: S3 region.
        s3_access_key_id: S3 access key; ``None`` lets pyarrow use the AWS credential chain.
        s3_secret_access_key: S3 secret key.
        s3_session_token: Optional S3 session token.
        memory_limit: DuckDB ``memory_limit`` such as ``1GB``.
        threads: DuckDB ``threads``.
    """

    data_uri: str
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_session_token: str | None = field(default=None, repr=False)
    memory_limit: str = "1GB"
    threads: int = 2


@dataclass(frozen=True)
class StoredFile:
    """One data file of a dataset.

    Attributes:
        path: URI DuckDB reads (absolute local path or ``s3://bucket/key``).
        size: Size in bytes.
        partition: Hive partition of the file, key to value as written in the path.
    """

    path: str
    size: int
    partition: dict[str, str]


# --------------------------------------------------------------------------- validation


def validate_key_segment(value: str, what: str = "name") -> str:
    """Check a dataset name or partition key: letters, digits, ``_`` and ``-`` only.

    Args:
        value: The candidate segment.
        what: What the segment is, for the error message (``"dataset"``, ``"partition key"``).

    Returns:
        The segment unchanged.

    Raises:
        InvalidName: for an empty value, a path (``a/b``), ``..`` or any other character.
    """
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, not {type(value).__name__}")
    # fullmatch: "$" alone would accept a trailing newline.
    if not KEY_SEGMENT_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {what} {value!r}: use only letters, digits, '_' and '-' "
            "(no empty names, '/', '\\' or '..')"
        )
    return value


def validate_partition_value(value: object, key: str = "partition") -> str:
    """Turn a partition value into the text written in the path, refusing anything path-like.

    Strings are kept; integers, floats, dates and datetimes use ``str``/``isoformat``.

    Args:
        value: The value.
        key: Partition key, for the error message.

    Returns:
        The value as it appears in ``key=value``.

    Raises:
        InvalidName: for an empty value, ``..``, ``/``, ``\\`` or characters outside ``[A-Za-z0-9_.:-]``.
    """
    text = _value_text(value, key)
    if ".." in text or not PARTITION_VALUE_RE.fullmatch(text):
        raise InvalidName(
            f"invalid value {text!r} for partition {key!r}: use letters, digits and '_.:-' "
            "(no empty values, '/', '\\' or '..')"
        )
    return text


def validate_dataset_name(dataset: str) -> str:
    """Check a dataset name; names starting with ``_`` are reserved for the store (staging).

    Raises:
        InvalidName: if the name is not a key segment or starts with ``_``.
    """
    validate_key_segment(dataset, "dataset name")
    if dataset.startswith("_"):
        raise InvalidName(f"invalid dataset name {dataset!r}: names starting with '_' are reserved")
    return dataset


def quote_identifier(name: str, allowed: Iterable[str]) -> str:
    """Quote a column name for SQL after checking it against the schema's columns.

    Args:
        name: Requested column.
        allowed: Column names of the schema (the allow-list).

    Returns:
        The identifier in double quotes, inner quotes doubled.

    Raises:
        InvalidName: if ``name`` is not one of ``allowed``.
    """
    allowed_names = list(allowed)
    if not isinstance(name, str) or name not in allowed_names:
        raise InvalidName(f"unknown column {name!r}; the columns are {_names_for_message(allowed_names)}")
    return '"' + name.replace('"', '""') + '"'


def _names_for_message(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    if not names:
        return "(none)"
    return shown + (f" and {more} more" if more > 0 else "")


def _value_text(value: object, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | dt.date):
        raise InvalidName(
            f"partition {key!r} needs a string, number or date value, not {type(value).__name__}"
        )
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    return str(value)


def _validate_file_name(file_name: str) -> str:
    if not isinstance(file_name, str) or ".." in file_name or not FILE_NAME_RE.fullmatch(file_name):
        raise InvalidName(
            f"invalid file name {file_name!r}: use letters, digits and '_.-', ending in .parquet"
        )
    return file_name


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _parse_partition_dir(name: str) -> tuple[str, str] | None:
    key, sep, value = name.partition("=")
    if not sep or not value or not KEY_SEGMENT_RE.fullmatch(key):
        return None
    return key, value


def _filter_values(filters: Mapping[str, object] | None) -> dict[str, tuple[object, ...]]:
    """Validate filter keys and normalise each value to a tuple of accepted values."""
    if not filters:
        return {}
    normalised: dict[str, tuple[object, ...]] = {}
    for key, value in filters.items():
        validate_key_segment(key, "filter key")
        if isinstance(value, bytes | Mapping):
            raise InvalidName(f"filter {key!r} takes a value or a list of values, not {type(value).__name__}")
        values = (value,) if isinstance(value, str) or not isinstance(value, Iterable) else tuple(value)
        for item in values:
            _value_text(item, key)  # a clear error for None, dicts and the like
        normalised[key] = values
    return normalised


# --------------------------------------------------------------------------- roots and DuckDB


def _normalise_root(data_uri: str) -> str:
    if not isinstance(data_uri, str) or not data_uri.strip():
        raise StoreError("the store needs a data_uri: a local folder or s3://bucket/prefix")
    data_uri = data_uri.strip()
    if "://" in data_uri:
        parsed = urlparse(data_uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(
                f"data_uri {data_uri!r}: only local folders and s3://bucket/prefix are supported"
            )
        prefix = parsed.path.strip("/")
        if ".." in prefix.split("/"):
            raise StoreError(f"data_uri {data_uri!r} may not contain '..'")
        return f"s3://{parsed.netloc}/{prefix}".rstrip("/")
    return os.path.abspath(data_uri)


def _uses_s3(config: StoreConfig) -> bool:
    return config.data_uri.strip().startswith("s3://") or bool(
        config.s3_endpoint_url or config.s3_access_key_id
    )


def _allowance(path: str) -> tuple[str, str]:
    """Classify an extra readable path as ``("directory", prefix)`` or ``("file", path)``.

    A glob allows the directory its fixed part lives in.
    """
    is_s3 = path.startswith("s3://")
    if is_s3 and ".." in path.split("/"):
        raise StoreError(f"allowed path {path!r} may not contain '..'")
    if not is_s3:
        path = os.path.abspath(path)
    if _GLOB_CHARS.intersection(path):
        return "directory", _fixed_prefix(path)
    if path.endswith(".parquet") or (not is_s3 and os.path.isfile(path)):
        return "file", path
    return "directory", path.rstrip("/") + "/"


def _fixed_prefix(pattern: str) -> str:
    """The directory part of a glob before its first wildcard, with a trailing slash."""
    first = min(pattern.index(c) for c in _GLOB_CHARS if c in pattern)
    return pattern[: pattern.rindex("/", 0, first) + 1]


def connect_duckdb(config: StoreConfig, allowed_paths: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection locked to the store.

    The connection loads the httpfs extension shipped in ``duckdb-extension-httpfs``
    (nothing is ever downloaded), receives the S3 settings as a secret when S3 is
    configured, and may then read only the data root and ``allowed_paths``:
    ``allowed_directories`` lists them and ``enable_external_access = false`` makes
    that list binding (it holds for ``s3://`` prefixes too; DuckDB also keeps its
    own ``temp_directory`` readable). ``lock_configuration`` comes last so no later
    ``SET`` can widen any of it.

    Args:
        config: The store configuration.
        allowed_paths: Extra local folders, files, globs or ``s3://`` prefixes DuckDB may read.

    Returns:
        The configured connection.

    Raises:
        StoreError: if the extension is missing or a setting is refused.
    """
    root = _normalise_root(config.data_uri)
    directories, files = [root.rstrip("/") + "/"], []
    for extra in allowed_paths:
        kind, value = _allowance(extra)
        (directories if kind == "directory" else files).append(value)
    # httpfs only where something is read from S3: loading it costs ~0.1 s per connection, which a
    # local store (the embedded default, every page worker and the monitor job) would pay for nothing.
    needs_httpfs = _uses_s3(config) or any(path.startswith("s3://") for path in directories + files)
    extension = None
    if needs_httpfs:
        try:
            extension = _duckdb.httpfs_extension_path()
        except FileNotFoundError as error:
            raise StoreError(str(error)) from error
    try:
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "memory_limit": config.memory_limit,
                "threads": config.threads,
            },
        )
    except (duckdb.Error, TypeError) as error:
        raise StoreError(
            f"cannot open DuckDB with memory_limit={config.memory_limit!r}, "
            f"threads={config.threads!r}: {error}"
        ) from error
    try:
        if extension is not None:
            con.execute(f"LOAD {_duckdb.sql_literal(str(extension))}")
        if _uses_s3(config):
            con.execute(
                _duckdb.s3_secret_sql(
                    endpoint_url=config.s3_endpoint_url,
                    region=config.s3_region,
                    access_key_id=config.s3_access_key_id,
                    secret_access_key=config.s3_secret_access_key,
                    session_token=config.s3_session_token,
                )
            )
        # allowed_* must be set while external access is still on; afterwards they only narrow.
        con.execute(f"SET allowed_directories = {_duckdb.list_literal(directories)}")
        if files:
            con.execute(f"SET allowed_paths = {_duckdb.list_literal(files)}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except (duckdb.Error, ValueError) as error:
        con.close()
        raise StoreError(f"cannot configure DuckDB: {error}") from error
    except BaseException:
        con.close()
        raise
    return con


def _make_filesystem(config: StoreConfig, is_s3: bool) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    if not is_s3:
        return pafs.LocalFileSystem()
    options: dict[str, object] = {
        "region": config.s3_region,
        "access_key": config.s3_access_key_id,
        "secret_key": config.s3_secret_access_key,
        "session_token": config.s3_session_token,
        # Fail instead of hanging a page or a job when the server is unreachable.
        "connect_timeout": 5,
        "request_timeout": 60,
    }
    if config.s3_endpoint_url:
        try:
            scheme, host = _duckdb.split_endpoint(config.s3_endpoint_url)
        except ValueError as error:
            raise StoreError(str(error)) from error
        options.update(endpoint_override=host, scheme=scheme)
    return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


# --------------------------------------------------------------------------- reading errors


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_error(
    error: Exception, paths: Sequence[str], probe: Callable[[str], str | None] | None = None
) -> StoreError:
    """Turn a DuckDB error raised while reading ``paths`` into the store's error.

    Args:
        error: What DuckDB raised.
        paths: The files that were read.
        probe: Optional callable(path) -> reason or None, reading a footer independently,
            to find a corrupt file DuckDB did not name.
    """
    if isinstance(error, UnicodeDecodeError):
        return DataChanged(
            f"DuckDB failed with an undecodable message while reading {len(paths)} file(s), "
            "the sign of a file replaced during the read"
        )
    reason = _first_line(error)
    if isinstance(error, duckdb.HTTPException) and "ETag" in str(error):
        return DataChanged(reason)
    # Longest first: of two paths where one contains the other, the message names the longer.
    named = sorted((path for path in paths if path in str(error)), key=len, reverse=True)
    if isinstance(error, duckdb.HTTPException) and getattr(error, "status_code", None) == 404:
        return NoData(f"Parquet file {named[0] if named else ''} does not exist ({reason})")
    if isinstance(error, duckdb.PermissionException):
        return AccessDenied(f"{reason} (the connection may read only the data root and allowed paths)")
    # DuckDB reports undecodable files (bad magic, truncated footer, failed decompression) as InvalidInput.
    if named and isinstance(error, duckdb.InvalidInputException):
        return CorruptParquet(named[0], reason)
    if probe is not None:
        for path in named or paths:
            problem = probe(path)
            if problem:
                return CorruptParquet(path, problem)
    return StoreError(f"cannot read Parquet: {reason}")


# --------------------------------------------------------------------------- the store


class ParquetStore:
    """Hive-partitioned Parquet datasets under one root, local or S3.

    One DuckDB connection per process (created on first use, re-created in a forked
    child), one cursor per thread from it, one pyarrow filesystem per process.

    Args:
        config: Root, credentials and DuckDB limits.

    Attributes:
        config: The configuration.
        root: Normalised root URI: an absolute local path or ``s3://bucket/prefix``.
        is_s3: Whether the root is on S3.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.root = _normalise_root(config.data_uri)
        self.is_s3 = self.root.startswith("s3://")
        self._base = self.root[len("s3://") :] if self.is_s3 else self.root
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_pid: int | None = None
        self._fs: pafs.FileSystem | None = None
        self._fs_pid: int | None = None
        self._thread = threading.local()
        # Objects inherited through fork are kept, never closed: tearing down DuckDB in a child
        # whose worker threads did not survive the fork is not safe.
        self._inherited: list[object] = []

    def __repr__(self) -> str:
        return f"ParquetStore(root={self.root!r})"

    def __getstate__(self) -> dict[str, object]:
        # Pickled (e.g. to a spawned worker) as its configuration; connections are per process.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    # ----------------------------------------------------------------- connections

    def _process_lock(self) -> threading.Lock:
        pid = os.getpid()
        if self._lock_pid != pid:
            # A lock copied by fork may be held by a thread that does not exist in this process.
            self._lock = threading.Lock()
            self._lock_pid = pid
        return self._lock

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The process's DuckDB connection, created on first use and again after a fork.

        Returns:
            The locked-down connection (see :func:`connect_duckdb`).
        """
        pid = os.getpid()
        if self._con is not None and self._con_pid == pid:
            return self._con
        with self._process_lock():
            if self._con is None or self._con_pid != pid:
                if self._con is not None:
                    self._inherited.append(self._con)
                self._con = connect_duckdb(self.config)
                self._con_pid = pid
            return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """The calling thread's cursor on :meth:`connection` (DuckDB cursors are not thread-safe).

        Returns:
            A cursor used only by this thread.
        """
        con = self.connection()
        state = getattr(self._thread, "state", None)
        if state is not None and state[0] is con:
            return state[1]
        if state is not None and state[2] != os.getpid():
            self._inherited.append(state[1])
        with self._process_lock():
            cursor = con.cursor()
        self._thread.state = (con, cursor, os.getpid())
        return cursor

    def _forget_cursor(self) -> None:
        """Drop the calling thread's cursor after a failed read; :meth:`cursor` then makes a new one.

        httpfs keeps per-cursor state about the remote files a cursor has read. After a read that
        failed because an S3 object was replaced under it, that cursor's later reads of the object
        skipped the HEAD request and failed the same way for minutes (measured with SeaweedFS and
        DuckDB 1.5.5: every retry for 8 minutes, while a new cursor read the object at once).
        The cursor is not closed: a relation the caller still holds keeps it alive.
        """
        state = getattr(self._thread, "state", None)
        if state is not None and state[2] == os.getpid():
            self._thread.state = None

    def deferred_cursor(self) -> DeferredCursor:
        """A stand-in for :meth:`cursor` that connects only when a query needs it.

        Its ``from_arrow`` relations answer their columns and types from the Arrow table, which is
        all the analytics functions read of them when they are also given the table (``table=``):
        a caller holding its tables then imports DuckDB and opens the connection only if some
        query has to run (``analytics._arrow_relation``). The real cursor, when made, is the one
        :meth:`cursor` gives the thread that first needs it: use the stand-in in one thread.

        Returns:
            A deferred cursor.
        """
        return DeferredCursor(self.cursor)

    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem of the root (``LocalFileSystem`` or ``S3FileSystem``).

        Returns:
            A filesystem; paths on it are ``/abs/path`` locally and ``bucket/key`` on S3.
        """
        pid = os.getpid()
        if self._fs is None or self._fs_pid != pid:
            self._fs = _make_filesystem(self.config, self.is_s3)
            self._fs_pid = pid
        return self._fs

    def close(self) -> None:
        """Close this process's DuckDB connection; the next use opens a new one.

        Cursors other threads hold stay usable until those threads end.
        """
        with self._process_lock():
            if self._con is not None:
                if self._con_pid == os.getpid():
                    self._con.close()
                else:
                    self._inherited.append(self._con)
            self._con = None
            self._con_pid = None

    # ----------------------------------------------------------------- paths

    def _fs_path(self, *parts: str) -> str:
        return "/".join((self._base, *parts))

    def _uri(self, fs_path: str) -> str:
        return f"s3://{fs_path}" if self.is_s3 else fs_path

    def _path_of(self, uri: str) -> str:
        return uri.removeprefix("s3://") if self.is_s3 else uri

    def _partition_segments(self, partition: Mapping[str, object]) -> list[str]:
        if not isinstance(partition, Mapping):
            raise InvalidName(f"a partition is a mapping of key to value, not {type(partition).__name__}")
        return [
            f"{validate_key_segment(key, 'partition key')}={validate_partition_value(value, key)}"
            for key, value in partition.items()
        ]

    def dataset_uri(self, dataset: str) -> str:
        """URI of a dataset's folder.

        Raises:
            InvalidName: for a bad dataset name.
        """
        return self._uri(self._fs_path(validate_dataset_name(dataset)))

    def partition_uri(self, dataset: str, partition: Mapping[str, object]) -> str:
        """URI of a partition's folder: ``<dataset>/k=v/k=v`` in the mapping's key order.

        Raises:
            InvalidName: for a bad dataset name, partition key or value.
        """
        validate_dataset_name(dataset)
        return self._uri(self._fs_path(dataset, *self._partition_segments(partition)))

    # ----------------------------------------------------------------- writing

    def write_partition(
        self,
        dataset: str,
        partition: Mapping[str, object],
        table: pa.Table,
        *,
        file_name: str = "data.parquet",
        replace_partition: bool = False,
    ) -> str:
        """Atomically write ``table`` as ``<partition>/<file_name>``, replacing that file if present.

        Readers see the old file or the new one, never a partial write; a failed write
        leaves the old file and no staging file behind.

        Args:
            dataset: Dataset name.
            partition: Partition key to value, in directory order.
            table: Rows to write; must not contain the partition keys as columns.
            file_name: Name of the file inside the partition.
            replace_partition: Also delete the partition's other data files (earlier
                appends) after publishing, so the partition holds exactly ``table``.
                Between the publish and those deletes a reader can see both.

        Returns:
            URI of the published file.

        Raises:
            InvalidName: for a bad name, key, value or a column that repeats a partition key.
            StoreError: if writing or verification fails.
        """
        validate_dataset_name(dataset)
        segments = self._partition_segments(partition)
        name = _validate_file_name(file_name)
        _check_table(table, partition)
        final = self._fs_path(dataset, *segments, name)
        self._stage_and_publish(table, final)
        if replace_partition:
            self._delete_data_files(self._fs_path(dataset, *segments), keep=name)
        return self._uri(final)

    def append(self, dataset: str, partition: Mapping[str, object], table: pa.Table) -> str:
        """Atomically add ``table`` to a partition as a new, uniquely named file.

        Returns:
            URI of the new file.

        Raises:
            InvalidName: for a bad name, key, value or a column that repeats a partition key.
            StoreError: if writing or verification fails.
        """
        validate_dataset_name(dataset)
        segments = self._partition_segments(partition)
        _check_table(table, partition)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        final = self._fs_path(dataset, *segments, f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet")
        self._stage_and_publish(table, final)
        return self._uri(final)

    def _stage_and_publish(self, table: pa.Table, final: str) -> None:
        import pyarrow as pa

        fs = self.filesystem()
        staged = self._fs_path(STAGING_DIR, f"{uuid.uuid4().hex}.parquet")
        try:
            self._write_staged(table, staged)
            self._verify_staged(staged, table)
            try:
                if not self.is_s3:
                    fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
                self._publish(staged, final)
            except (OSError, pa.ArrowException) as error:
                raise StoreError(f"cannot publish {self._uri(final)}: {error}") from error
        except BaseException:
            self._discard(staged)
            raise

    def _write_staged(self, table: pa.Table, staged: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs = self.filesystem()
        try:
            if not self.is_s3:
                fs.create_dir(staged.rsplit("/", 1)[0], recursive=True)
            pq.write_table(table, staged, filesystem=fs)
            if not self.is_s3:
                _fsync(staged)  # the bytes reach the disk before the rename makes them visible
        except (OSError, pa.ArrowException) as error:
            raise StoreError(f"cannot write staging file {self._uri(staged)}: {error}") from error

    def _verify_staged(self, staged: str, table: pa.Table) -> None:
        """Read the staged footer back and compare row count and schema with ``table``.

        Raises:
            StoreError: if the staged file does not hold ``table``.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with self.filesystem().open_input_file(staged) as handle:
                parquet = pq.ParquetFile(handle)
                rows = parquet.metadata.num_rows
                schema = parquet.schema_arrow
        except (OSError, pa.ArrowException) as error:
            raise StoreError(f"staged file {self._uri(staged)} cannot be read back: {error}") from error
        if rows != table.num_rows:
            raise StoreError(
                f"staged file {self._uri(staged)} holds {rows} rows instead of {table.num_rows}; "
                "not published"
            )
        if not schema.equals(table.schema, check_metadata=False):
            raise StoreError(
                f"staged file {self._uri(staged)} has schema {schema} instead of {table.schema}; "
                "not published"
            )

    def _publish(self, staged: str, final: str) -> None:
        """Make the staged file visible under its final name in one atomic step for readers."""
        if self.is_s3:
            # pyarrow's S3 move is CopyObject then DeleteObject: the final key appears whole.
            self.filesystem().move(staged, final)
        else:
            os.replace(staged, final)
            _fsync(final.rsplit("/", 1)[0])

    def _discard(self, staged: str) -> None:
        import pyarrow as pa

        # Already published (moved away) or never written: the original error is what matters.
        with contextlib.suppress(OSError, pa.ArrowException):
            self.filesystem().delete_file(staged)

    def _delete_data_files(self, directory: str, keep: str | None = None) -> int:
        import pyarrow.fs as pafs

        fs = self.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(directory, recursive=False, allow_not_found=True))
        doomed = [
            info.path
            for info in infos
            if info.type == pafs.FileType.File and _is_data_file(info.base_name) and info.base_name != keep
        ]
        for path in doomed:
            fs.delete_file(path)
        return len(doomed)

    def delete_partition(self, dataset: str, partition: Mapping[str, object]) -> int:
        """Delete a partition folder and everything below it.

        Not atomic: a reader listing the partition meanwhile may see part of its files.

        Args:
            dataset: Dataset name.
            partition: A non-empty partition mapping (a prefix of the layout also works).

        Returns:
            Number of data files deleted (0 when the partition did not exist).

        Raises:
            InvalidName: for bad names or an empty partition (which would be the whole dataset).
        """
        import pyarrow.fs as pafs

        validate_dataset_name(dataset)
        segments = self._partition_segments(partition)
        if not segments:
            raise InvalidName("delete_partition needs at least one partition key")
        directory = self._fs_path(dataset, *segments)
        fs = self.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
        count = sum(1 for i in infos if i.type == pafs.FileType.File and _is_data_file(i.base_name))
        if infos or fs.get_file_info(directory).type == pafs.FileType.Directory:
            fs.delete_dir(directory)
        return count

    # ----------------------------------------------------------------- listing

    def list_files(
        self, dataset: str, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[StoredFile]:
        """List a dataset's data files, descending only into partitions the filters allow.

        A filter key that names a partition key prunes directories; other keys do not
        prune here (``read``/``relation`` apply them as row filters).

        Args:
            dataset: Dataset name.
            filters: Key to accepted value or values.

        Returns:
            Files sorted by path; empty if the dataset does not exist.

        Raises:
            InvalidName: for a bad dataset name or filter key.
        """
        validate_dataset_name(dataset)
        wanted = {
            key: {_value_text(v, key) for v in values} for key, values in _filter_values(filters).items()
        }
        return sorted(self._walk(self._fs_path(dataset), {}, wanted), key=lambda f: f.path)

    def _walk(
        self, directory: str, partition: dict[str, str], wanted: dict[str, set[str]]
    ) -> Iterator[StoredFile]:
        import pyarrow.fs as pafs

        fs = self.filesystem()
        if all(key in partition for key in wanted):
            # Every filter is settled on this path: one recursive listing serves the whole subtree.
            selector = pafs.FileSelector(directory, recursive=True, allow_not_found=True)
            for info in fs.get_file_info(selector):
                if info.type != pafs.FileType.File:
                    continue
                *dirs, name = info.path[len(directory) + 1 :].split("/")
                parsed = [_parse_partition_dir(d) for d in dirs]
                if not _is_data_file(name) or None in parsed:
                    continue
                yield StoredFile(self._uri(info.path), info.size, {**partition, **dict(parsed)})
            return
        for info in fs.get_file_info(pafs.FileSelector(directory, recursive=False, allow_not_found=True)):
            if info.type == pafs.FileType.File and _is_data_file(info.base_name):
                yield StoredFile(self._uri(info.path), info.size, dict(partition))
            elif info.type == pafs.FileType.Directory:
                parsed = _parse_partition_dir(info.base_name)
                if parsed is None:
                    continue
                key, value = parsed
                if key in wanted and value not in wanted[key]:
                    continue
                yield from self._walk(info.path, {**partition, key: value}, wanted)

    def list_partitions(self, dataset: str) -> list[dict[str, str]]:
        """The partitions of a dataset that hold at least one data file.

        Returns:
            Partition mappings, sorted.
        """
        unique = {tuple(f.partition.items()): f.partition for f in self.list_files(dataset)}
        return [unique[key] for key in sorted(unique)]

    def exists(self, dataset: str, partition: Mapping[str, object]) -> bool:
        """Whether a partition holds at least one data file (at any depth below it).

        Raises:
            InvalidName: for bad names.
        """
        import pyarrow.fs as pafs

        validate_dataset_name(dataset)
        directory = self._fs_path(dataset, *self._partition_segments(partition))
        selector = pafs.FileSelector(directory, recursive=True, allow_not_found=True)
        return any(
            info.type == pafs.FileType.File and _is_data_file(info.base_name)
            for info in self.filesystem().get_file_info(selector)
        )

    # ----------------------------------------------------------------- reading

    def relation(
        self,
        dataset: str,
        *,
        filters: Mapping[str, str | Sequence[str]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """A lazy DuckDB relation over the dataset's pruned file list, on this thread's cursor.

        Partition columns come back as text. Filter values are DuckDB constants, never
        SQL text; columns and filter keys must exist in the schema.

        Args:
            dataset: Dataset name.
            filters: Column (partition or not) to accepted value or values.
            columns: Columns to keep, in order; all when ``None``.

        Returns:
            The relation; consume it on the calling thread. It reads when consumed: on S3 a
            concurrent rewrite of one of its files then fails the query (DuckDB checks ETags)
            rather than mixing versions, and the cursor may fail every later read of that file
            (see :meth:`_forget_cursor`). To be retried, pass the query to :meth:`read`
            (``query=``), which reads again on a new cursor.

        Raises:
            NoData: if no file matches.
            InvalidName: for a bad name or an unknown column/filter key.
            CorruptParquet: if a file's footer cannot be decoded.
        """
        files = self.list_files(dataset, filters)
        if not files:
            raise NoData(
                f"dataset {dataset!r} has no data" + (f" matching {dict(filters)}" if filters else "")
            )
        return self._relation_over(files, filters, columns)

    def read(
        self,
        dataset: str,
        *,
        filters: Mapping[str, str | Sequence[str]] | None = None,
        columns: Sequence[str] | None = None,
        query: Callable[[duckdb.DuckDBPyRelation], duckdb.DuckDBPyRelation] | None = None,
    ) -> pa.Table:
        """Read a dataset (or the partitions and rows the filters select) into an Arrow table.

        Args:
            dataset: Dataset name.
            filters: Column (partition or not) to accepted value or values.
            columns: Columns to keep, in order; all when ``None``.
            query: Optional callable(relation) -> relation run on the filtered relation before it
                is read (a filter, an order, an aggregate): it is retried with the read, which a
                query on :meth:`relation` is not. Called once per attempt.

        Returns:
            The rows; an empty table (the requested columns, typed null) when nothing matches,
            and then ``query`` is not called.

        Raises:
            InvalidName: for a bad name or an unknown column/filter key.
            CorruptParquet: naming the file that cannot be decoded.
            DataChanged: if files kept changing during :data:`READ_ATTEMPTS` reads.
        """
        for attempt in range(1, READ_ATTEMPTS):
            try:
                return self._read_once(dataset, filters, columns, query)
            except DataChanged:
                # A writer replaced a file mid-read: list again and read the new version.
                time.sleep(min(_RETRY_PAUSE_S * 2 ** (attempt - 1), _MAX_RETRY_PAUSE_S))
        return self._read_once(dataset, filters, columns, query)

    def _read_once(
        self,
        dataset: str,
        filters: Mapping[str, str | Sequence[str]] | None,
        columns: Sequence[str] | None,
        query: Callable[[duckdb.DuckDBPyRelation], duckdb.DuckDBPyRelation] | None = None,
    ) -> pa.Table:
        import pyarrow as pa

        files = self.list_files(dataset, filters)
        if not files:
            return pa.table({name: pa.array([], pa.null()) for name in columns or ()})
        relation = self._relation_over(files, filters, columns)
        try:
            if query is not None:
                relation = query(relation)
            return relation.to_arrow_table()
        except _duckdb_read_errors() as error:
            raise self._read_failure(error, files) from error

    def _relation_over(
        self,
        files: Sequence[StoredFile],
        filters: Mapping[str, str | Sequence[str]] | None,
        columns: Sequence[str] | None,
    ) -> duckdb.DuckDBPyRelation:
        paths = [f.path for f in files]
        try:
            relation = self.cursor().sql(_duckdb.read_parquet_sql(paths))
        except _duckdb_read_errors() as error:
            raise self._read_failure(error, files) from error
        schema = relation.columns
        partition_keys = {key for f in files for key in f.partition}
        for key, values in _filter_values(filters).items():
            column = duckdb.SQLExpression(quote_identifier(key, schema))
            if not values:
                relation = relation.filter(duckdb.ConstantExpression(False))
                continue
            # Partition columns are text: compare with the text written in the path.
            constants = [_value_text(v, key) if key in partition_keys else v for v in values]
            relation = relation.filter(column.isin(*(duckdb.ConstantExpression(c) for c in constants)))
        if columns is not None:
            if isinstance(columns, str) or not columns:
                raise InvalidName("columns must be a non-empty list of column names")
            relation = relation.select(*(duckdb.SQLExpression(quote_identifier(c, schema)) for c in columns))
        return relation

    def _read_failure(self, error: Exception, files: Sequence[StoredFile]) -> StoreError:
        """Explain a DuckDB read error over listed files, telling a vanished file from a corrupt one.

        The thread's cursor is dropped first (see :meth:`_forget_cursor`), so the next read, a
        retry of :meth:`read` included, runs on a new one.
        """
        import pyarrow.fs as pafs

        self._forget_cursor()
        failure = _read_error(error, [f.path for f in files], self._footer_problem)
        if type(failure) in (StoreError, NoData):
            gone = [
                self._uri(info.path)
                for info in self.filesystem().get_file_info([self._path_of(f.path) for f in files])
                if info.type == pafs.FileType.NotFound
            ]
            if gone:
                return DataChanged(f"{gone[0]} was deleted during the read")
        return failure

    def _footer_problem(self, path: str) -> str | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with self.filesystem().open_input_file(self._path_of(path)) as handle:
                pq.ParquetFile(handle).metadata  # noqa: B018 - decoding the footer is the check
        except FileNotFoundError:
            return None  # gone (deleted meanwhile), not corrupt
        except (OSError, pa.ArrowException) as error:
            return _first_line(error)
        return None


def _check_table(table: pa.Table, partition: Mapping[str, object]) -> None:
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise StoreError(f"expected a pyarrow.Table, not {type(table).__name__}")
    repeated = sorted(set(table.column_names) & set(partition))
    if repeated:
        raise InvalidName(
            f"column(s) {', '.join(map(repr, repeated))} repeat partition keys; drop them from the "
            "table (the store reads them from the path)"
        )


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- ad-hoc sources


def read_source(con: duckdb.DuckDBPyConnection, source: str | Sequence[str]) -> duckdb.DuckDBPyRelation:
    """A relation over Parquet given as file(s), folder(s) or glob(s), local or ``s3://``.

    A folder is read recursively (``**/*.parquet``) with hive partitioning, skipping
    paths with a component starting with ``_`` or ``.`` (staging, markers). The
    connection's own restrictions apply: a path outside its allowed directories is
    refused.

    Args:
        con: A connection or cursor from :func:`connect_duckdb` (or any DuckDB connection).
        source: One source or several.

    Returns:
        A lazy relation over all matched files (``union_by_name``).

    Raises:
        NoData: if a source matches no Parquet file.
        AccessDenied: if a source lies outside the connection's allowed directories.
        CorruptParquet: naming a file that cannot be decoded.
        StoreError: for any other unreadable source.
    """
    sources = [source] if isinstance(source, str) else list(source)
    if not sources:
        raise StoreError("no Parquet source given")
    files: list[str] = []
    for item in sources:
        files.extend(_expand_source(con, item))
    try:
        return con.sql(_duckdb.read_parquet_sql(files))
    except _duckdb_read_errors() as error:
        raise _read_error(error, files) from error


def _expand_source(con: duckdb.DuckDBPyConnection, source: str) -> list[str]:
    if not isinstance(source, str) or not source.strip():
        raise StoreError(f"a Parquet source must be a non-empty path, not {source!r}")
    source = source.strip()
    is_s3 = source.startswith("s3://")
    if "://" in source and not is_s3:
        raise StoreError(f"source {source!r}: only local paths and s3:// URIs are supported")
    if is_s3 and ".." in source.split("/"):
        raise InvalidName(f"source {source!r} may not contain '..'")
    if not is_s3:
        source = os.path.abspath(source)
    if _GLOB_CHARS.intersection(source):
        return _visible(_glob(con, source), _fixed_prefix(source), source)
    if source.endswith(".parquet") or (not is_s3 and os.path.isfile(source)):
        matches = [m for m in _glob(con, source) if m == source]
        if not matches:
            raise NoData(f"Parquet file {source} does not exist")
        return matches
    folder = source.rstrip("/") + "/"
    return _visible(_glob(con, folder + "**/*.parquet"), folder, source)


def _visible(matches: list[str], prefix: str, source: str) -> list[str]:
    files = [
        path
        for path in matches
        if not path.endswith("/")
        and not any(part.startswith(("_", ".")) for part in path[len(prefix) :].split("/"))
    ]
    if not files:
        raise NoData(f"no Parquet files match {source}")
    return files


def _glob(con: duckdb.DuckDBPyConnection, pattern: str) -> list[str]:
    try:
        # The pattern goes into the SQL text as a quoted literal: a bound parameter makes DuckDB
        # import pandas to inspect it (about 0.6 s of CPU per process that globs).
        rows = con.execute(f"SELECT file FROM glob({_duckdb.sql_literal(pattern)}) ORDER BY file").fetchall()
    except duckdb.PermissionException as error:
        raise AccessDenied(
            f"{pattern} is outside the directories this connection may read ({_first_line(error)})"
        ) from error
    except duckdb.Error as error:
        raise StoreError(f"cannot list {pattern}: {_first_line(error)}") from error
    return [row[0] for row in rows]
