"""Alembic migrations, driven from code (no ``alembic.ini`` needed at run time).

``upgrade(url)`` is safe to call from several processes starting together
(web workers, the scheduler, the CLI): the migration runs under a lock, so
the second caller finds the schema already at ``head``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from jobs.db.session import SQLITE_BEGIN_OPTION, is_sqlite, lock_key, make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = "mms.migrate"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at this package's migrations.

    Args:
        connection: Connection the migration environment runs on (passed through
            ``Config.attributes`` so passwords in URLs never go through ini interpolation).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision id shipped with the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def _run(url: str, action: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        connection = engine.connect()
        if is_sqlite(connection):
            # Take the write lock at BEGIN: a concurrent upgrade waits, then sees the new version.
            connection = connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection, connection.begin():
            if not is_sqlite(connection):
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock_key(_MIGRATION_LOCK)})")
            getattr(command, action)(alembic_config(connection), revision)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest).

    Raises:
        sqlalchemy.exc.OperationalError: if the database cannot be reached.
    """
    _run(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything)."""
    _run(url, "downgrade", revision)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, ``None`` when never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
