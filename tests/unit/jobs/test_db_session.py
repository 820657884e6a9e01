"""Engines, sessions and the UTC timestamp type on SQLite (no server needed)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from jobs.db import make_engine, make_session_factory, session_scope
from jobs.db.migrate import upgrade
from jobs.db.models import User

pytestmark = pytest.mark.unit


def test_sqlite_engine_creates_folders_enables_wal_foreign_keys_and_busy_timeout(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'folder' / 'studio.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"):
                connection.exec_driver_sql(
                    "INSERT INTO memberships (user_id, project_id, role, granted_at) "
                    "VALUES (1, 1, 'x', '2026-01-01 00:00:00')"
                )
    finally:
        engine.dispose()
    assert (tmp_path / "nested" / "folder" / "studio.db").is_file()


def test_processes_opening_a_new_sqlite_file_together_all_get_a_wal_connection(tmp_path) -> None:
    # Two first connections switching a new file to WAL together: SQLite refuses one at once
    # ("database is locked", no busy wait). Without the retry about 6 % of these rounds fail.
    errors: list[BaseException] = []
    modes: list[str] = []

    def connect(url: str) -> None:
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                modes.append(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
        except BaseException as error:
            errors.append(error)
        finally:
            engine.dispose()

    rounds, connections = 150, 4
    for round_number in range(rounds):
        url = f"sqlite:///{tmp_path / f'round-{round_number}.db'}"
        threads = [threading.Thread(target=connect, args=(url,)) for _ in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert modes == ["wal"] * (rounds * connections)


def test_unsupported_database_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_engine("mysql://user@localhost/db")


def _new_user(name: str, created_at: datetime | None = None) -> User:
    return User(username=name, password_hash="x", created_at=created_at or datetime.now(UTC))


@pytest.fixture
def factory(tmp_path):
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def test_session_scope_commits_on_success_and_rolls_back_on_error(factory) -> None:
    with session_scope(factory) as session:
        session.add(_new_user("kept"))
    with pytest.raises(RuntimeError, match="boom"), session_scope(factory, write=True) as session:
        session.add(_new_user("dropped"))
        session.flush()
        raise RuntimeError("boom")
    with factory() as session:
        assert session.scalars(sa.select(User.username)).all() == ["kept"]


def test_write_scope_holds_the_sqlite_write_lock_from_the_start(factory) -> None:
    with session_scope(factory, write=True) as session:
        session.execute(sa.select(1))  # a read: with BEGIN IMMEDIATE the write lock is already held
        other = factory.kw["bind"].raw_connection()
        try:
            other.driver_connection.execute("PRAGMA busy_timeout=0")
            with pytest.raises(Exception, match="locked"):
                other.driver_connection.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_timestamps_read_back_timezone_aware_and_naive_ones_are_refused(factory) -> None:
    with session_scope(factory) as session:
        session.add(_new_user("u1", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)))
    with factory() as session:
        assert session.scalars(sa.select(User.created_at)).one() == datetime(
            2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC
        )
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session_scope(factory) as session:
        session.add(_new_user("u2", datetime(2026, 1, 2)))
        session.flush()


def test_sessions_keep_objects_readable_after_commit(factory) -> None:
    with session_scope(factory) as session:
        user = _new_user("reader")
        session.add(user)
    assert user.username == "reader" and user.id is not None
