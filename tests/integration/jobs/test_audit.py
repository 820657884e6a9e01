"""The audit log on SQLite and PostgreSQL: chaining, concurrency, tamper detection, append-only."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import audit
from jobs.db import session_scope
from jobs.db.models import AuditEntry
from tests.integration.jobs.conftest import drop_audit_triggers

pytestmark = pytest.mark.integration


def _entries(session: Session, chain: str = "main") -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)))


def _append_five(session: Session) -> list[AuditEntry]:
    entries = [
        audit.append(session, "alice", "thing.do", f"thing:{n}", {"n": n, "b": [1, 2], "a": "é"})
        for n in range(1, 6)
    ]
    session.commit()
    return entries


def test_append_builds_a_linked_chain_with_canonical_details(session: Session) -> None:
    first = audit.append(session, "alice", "project.create", "project:x", {"z": 1, "a": {"y": 2, "b": 3}})
    second = audit.append(session, "bob", "project.archive", "project:x")
    session.commit()

    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == audit.GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.details == '{"a":{"b":3,"y":2},"z":1}'
    assert second.details == "{}"
    stored = _entries(session)
    assert [entry.hash for entry in stored] == [first.hash, second.hash]
    # The stored time reads back timezone-aware and hashes to the stored hash on this backend.
    assert stored[0].at.tzinfo is not None
    assert stored[0].hash == audit.entry_hash(
        1, stored[0].at, "alice", "project.create", "project:x", stored[0].details, audit.GENESIS_HASH
    )
    assert audit.verify(session) == audit.VerifyResult(ok=True, checked=2, first_broken_seq=None, reason="ok")


def test_chains_are_independent(session: Session) -> None:
    audit.append(session, "alice", "a.one")
    audit.append(session, "system", "b.one", chain="scheduler")
    audit.append(session, "alice", "a.two")
    session.commit()
    assert [entry.seq for entry in _entries(session)] == [1, 2]
    assert [entry.seq for entry in _entries(session, "scheduler")] == [1]
    assert audit.verify(session, "scheduler").ok
    assert audit.head(session, "scheduler").action == "b.one"
    assert audit.head(session, "empty") is None
    assert audit.verify(session, "empty") == audit.VerifyResult(True, 0, None, "ok")


def test_bad_entries_are_refused_before_anything_is_written(session: Session) -> None:
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        audit.append(session, "alice", "x.y", details={"obj": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        audit.append(session, "alice", "x.y", details={"ratio": float("nan")})
    with pytest.raises(ValueError, match="longer than 64"):
        audit.append(session, "a" * 65, "x.y")
    with pytest.raises(ValueError, match="need a chain, an actor and an action"):
        audit.append(session, "", "x.y")
    session.commit()
    assert _entries(session) == []


def test_twenty_concurrent_appends_form_one_linear_chain(
    migrated_session_factory: sessionmaker[Session],
) -> None:
    writers = 20
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            start.wait(timeout=30)
            with session_scope(migrated_session_factory) as session:
                audit.append(session, f"writer{number}", "test.concurrent", details={"writer": number})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    with migrated_session_factory() as session:
        entries = _entries(session)
        assert [entry.seq for entry in entries] == list(range(1, writers + 1))
        assert entries[0].prev_hash == audit.GENESIS_HASH
        for previous, current in itertools.pairwise(entries):
            assert current.prev_hash == previous.hash
        assert sorted(json.loads(entry.details)["writer"] for entry in entries) == list(range(writers))
        assert audit.verify(session).ok


def test_unique_chain_seq_is_a_backstop_against_forks(session: Session) -> None:
    entry = audit.append(session, "alice", "x.y")
    session.commit()
    session.add(
        AuditEntry(chain="main", seq=entry.seq, at=entry.at, actor="mallory", action="x.fork", hash="f" * 64)
    )
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    assert len(_entries(session)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
        "UPDATE audit_log SET details = '{}'",
        "DELETE FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log",
    ],
)
def test_database_refuses_update_and_delete(session: Session, statement: str) -> None:
    before = [(entry.seq, entry.actor, entry.details, entry.hash) for entry in _append_five(session)]
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(statement))
    session.rollback()
    session.expire_all()
    assert [(e.seq, e.actor, e.details, e.hash) for e in _entries(session)] == before
    assert audit.verify(session).ok


def test_database_refuses_emptying_the_log(session: Session) -> None:
    # PostgreSQL's TRUNCATE bypasses row triggers, so it has its own statement trigger;
    # SQLite has no TRUNCATE and never applies its truncate optimisation to a table with triggers.
    postgresql = session.get_bind().dialect.name == "postgresql"
    _append_five(session)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("TRUNCATE audit_log" if postgresql else "DELETE FROM audit_log WHERE 1"))
    session.rollback()
    assert len(_entries(session)) == 5


def test_verify_detects_an_edited_row(session: Session) -> None:
    _append_five(session)
    drop_audit_triggers(session)
    session.execute(text("UPDATE audit_log SET details = :details WHERE seq = 3"), {"details": '{"n":99}'})
    session.commit()
    result = audit.verify(session)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 3, 3)
    assert "edited" in result.reason


def test_verify_detects_an_edit_whose_hash_was_recomputed(session: Session) -> None:
    entries = _append_five(session)
    third = entries[2]
    forged_hash = audit.entry_hash(
        third.seq, third.at, "mallory", third.action, third.target, third.details, third.prev_hash
    )
    drop_audit_triggers(session)
    session.execute(
        text("UPDATE audit_log SET actor = 'mallory', hash = :hash WHERE seq = 3"), {"hash": forged_hash}
    )
    session.commit()
    result = audit.verify(session)
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "prev_hash" in result.reason


def test_verify_detects_a_deleted_row(session: Session) -> None:
    _append_five(session)
    drop_audit_triggers(session)
    session.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    session.commit()
    result = audit.verify(session)
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "missing" in result.reason


def test_verify_detects_a_deleted_row_hidden_by_renumbering(session: Session) -> None:
    _append_five(session)
    drop_audit_triggers(session)
    session.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    for seq in (3, 4, 5):
        session.execute(
            text("UPDATE audit_log SET seq = :new WHERE seq = :old"), {"new": seq - 1, "old": seq}
        )
    session.commit()
    result = audit.verify(session)
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_verify_detects_reordered_rows(session: Session) -> None:
    _append_five(session)
    drop_audit_triggers(session)
    # Swap entries 2 and 4 through a free sequence number (the unique constraint forbids a direct swap).
    session.execute(text("UPDATE audit_log SET seq = 100 WHERE seq = 2"))
    session.execute(text("UPDATE audit_log SET seq = 2 WHERE seq = 4"))
    session.execute(text("UPDATE audit_log SET seq = 4 WHERE seq = 100"))
    session.commit()
    result = audit.verify(session)
    assert (result.ok, result.first_broken_seq) == (False, 2)
