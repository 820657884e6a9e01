"""Engines, sessions and transaction helpers for the metadata database.

SQLite (the embedded default) and PostgreSQL get the same behaviour:

* SQLite runs in WAL mode with foreign keys enforced and a busy timeout, and
  SQLAlchemy (not the ``sqlite3`` driver) emits ``BEGIN`` so every statement of
  a transaction, SELECTs included, sees one snapshot.
* :func:`serialize` gives a transaction exclusive use of a named key until it
  ends: ``pg_advisory_xact_lock`` on PostgreSQL, the database write lock on
  SQLite. The audit chain and the first-user bootstrap rely on it.

Nothing here is a module-level singleton: callers build engines and session
factories and own their lifetime.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option read by the SQLite ``begin`` hook: "IMMEDIATE" takes the write lock at BEGIN.
SQLITE_BEGIN_OPTION = "mms_sqlite_begin"
# A write statement that matches no row: it takes SQLite's write lock and changes nothing
# (row triggers do not fire because no row qualifies).
_SQLITE_TAKE_WRITE_LOCK = "UPDATE alembic_version SET version_num = version_num WHERE 0"


def is_sqlite(bind: Engine | Connection | Session) -> bool:
    """Whether ``bind`` talks to SQLite (as opposed to PostgreSQL)."""
    engine_or_conn = bind.get_bind() if isinstance(bind, Session) else bind
    return engine_or_conn.dialect.name == "sqlite"


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for in-memory databases."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN (see _on_sqlite_begin): the driver's legacy mode would run
    # SELECTs outside the transaction and break repeatable reads.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL, retrying while another connection holds the file's lock.

    SQLite answers ``database is locked`` at once, without calling the busy handler, when two
    connections switch a new file to WAL together (each holds a shared lock and wants the exclusive
    one: SQLite refuses the second rather than deadlock). Web workers, the scheduler and the CLI
    meet exactly this on a first start, so the switch is retried up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause_s = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.05)


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE"):
        raise ValueError(f"{SQLITE_BEGIN_OPTION} must be DEFERRED or IMMEDIATE, not {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for the metadata database.

    Args:
        url: SQLAlchemy URL: ``sqlite:///path/to/studio.db`` or
            ``postgresql+psycopg://user:pass@host:5432/db``.
        echo: Log every statement (debugging only).

    Returns:
        A new engine; the caller disposes of it.

    Raises:
        ValueError: if the URL names a backend other than SQLite or PostgreSQL.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        database_file = _sqlite_file(url)
        if database_file is not None:
            database_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    if backend == "postgresql":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql+psycopg://...")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Build the session factory of ``engine``.

    Objects stay readable after commit (``expire_on_commit=False``) so a web
    request can render what a job returned without another round trip.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session], *, write: bool = False) -> Iterator[Session]:
    """Open a session, commit when the block succeeds, roll back when it raises.

    Args:
        factory: Session factory from :func:`make_session_factory`.
        write: The block will write: on SQLite the transaction starts with
            ``BEGIN IMMEDIATE`` so it never has to upgrade a stale read snapshot
            to a write (which SQLite refuses with "database is locked").
            No effect on PostgreSQL.

    Yields:
        The session.
    """
    session = factory()
    try:
        if write and is_sqlite(session):
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` derived from ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def serialize(session: Session, name: str) -> None:
    """Hold an exclusive lock named ``name`` until the session's transaction ends.

    PostgreSQL takes ``pg_advisory_xact_lock`` on a key derived from ``name``;
    SQLite takes the database write lock (waiting up to the busy timeout),
    which serialises every writer and therefore every name.

    Call it before reading the state the transaction will update. On SQLite a
    transaction that already read an older snapshot cannot upgrade and fails
    with "database is locked" instead of writing stale data; start such
    transactions with ``session_scope(..., write=True)``.
    """
    if is_sqlite(session):
        session.execute(text(_SQLITE_TAKE_WRITE_LOCK))
    else:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
