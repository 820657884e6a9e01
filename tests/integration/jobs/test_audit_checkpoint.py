"""Signed audit checkpoints in the Parquet store: truncation, rewriting and forgery are detected.

The chain lives in SQLite or PostgreSQL (``migrated_session_factory``); checkpoints go
to a local Parquet store, and once to SeaweedFS S3. Tampering is done like an attacker
with DDL rights would: drop the append-only triggers, then delete or edit rows.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore, StoreConfig
from jobs import audit
from jobs.audit_checkpoint import (
    CHECKPOINT_DATASET,
    CHECKPOINT_SCHEMA,
    FORMAT,
    KEY_ENV,
    KEY_FILE_NAME,
    ChainBroken,
    CheckpointKeyError,
    checkpoint_mac,
    is_authentic,
    key_id,
    load_key,
    read_checkpoints,
    verify_with_checkpoints,
    write_checkpoint,
)
from jobs.db import session_scope

pytestmark = pytest.mark.integration

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
T0 = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path):
    opened = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    yield opened
    opened.close()


def append_entries(sessions: sessionmaker[Session], count: int, chain: str = "main") -> None:
    with session_scope(sessions, write=True) as session:
        for index in range(count):
            audit.append(session, "maya", "test.event", f"thing:{index}", {"index": index}, chain=chain)


def drop_audit_triggers(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        if session.get_bind().dialect.name == "sqlite":
            statements = ["DROP TRIGGER audit_log_refuse_update", "DROP TRIGGER audit_log_refuse_delete"]
        else:
            statements = [
                "DROP TRIGGER audit_log_refuse_update_delete ON audit_log",
                "DROP TRIGGER audit_log_refuse_truncate ON audit_log",
            ]
        for statement in statements:
            session.execute(text(statement))


def delete_after(sessions: sessionmaker[Session], seq: int) -> None:
    with session_scope(sessions) as session:
        session.execute(text("DELETE FROM audit_log WHERE chain = 'main' AND seq > :seq"), {"seq": seq})


def verdict(sessions: sessionmaker[Session], store: ParquetStore, key: bytes = KEY):
    with sessions() as session:
        return verify_with_checkpoints(session, store, key)


def checkpoint(sessions: sessionmaker[Session], store: ParquetStore, now: datetime | None = None, **options):
    with sessions() as session:
        return write_checkpoint(session, store, KEY, now=now, **options)


def test_a_checkpoint_signs_the_head_and_verifies(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 5)
    written = checkpoint(migrated_session_factory, store, T0)

    with migrated_session_factory() as session:
        head = audit.head(session)
    assert (written.seq, written.head_hash, written.written_at) == (5, head.hash, T0)
    assert written.key_id == key_id(KEY) and written.key_id not in KEY.decode()
    assert written.uri.startswith(store.dataset_uri(CHECKPOINT_DATASET) + "/chain=main/")
    assert [c.mac for c in read_checkpoints(store)] == [written.mac]
    # What was read back from Parquet still verifies (microsecond time survives the round trip).
    assert is_authentic(read_checkpoints(store)[0], KEY)
    assert not is_authentic(read_checkpoints(store)[0], OTHER_KEY)

    append_entries(migrated_session_factory, 3)  # the chain may grow past a checkpoint
    result = verdict(migrated_session_factory, store)
    assert result.ok, result.problems
    assert (result.head_seq, result.checkpoints, result.authentic, result.newest_checkpoint_seq) == (
        8,
        1,
        1,
        5,
    )
    # The key is nowhere in the database.
    with migrated_session_factory() as session:
        details = session.execute(text("SELECT details FROM audit_log")).scalars().all()
    assert not any(KEY.decode() in d for d in details)


def test_truncating_the_newest_entries_is_detected(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 10)
    checkpoint(migrated_session_factory, store, T0)
    drop_audit_triggers(migrated_session_factory)
    delete_after(migrated_session_factory, 7)

    result = verdict(migrated_session_factory, store)

    # The chain alone still looks perfect: only the checkpoint tells.
    assert result.chain_result.ok and result.head_seq == 7
    assert not result.ok
    assert len(result.problems) == 1 and result.problems[0].startswith("truncated")
    assert "signed seq 10, but the chain ends at seq 7" in result.problems[0]


def test_a_truncated_then_regrown_chain_is_detected(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 6)
    checkpoint(migrated_session_factory, store, T0)
    drop_audit_triggers(migrated_session_factory)
    delete_after(migrated_session_factory, 3)
    append_entries(migrated_session_factory, 5)  # seq 4..8, hashes differ from the signed seq 6

    result = verdict(migrated_session_factory, store)

    assert result.chain_result.ok and result.head_seq == 8
    assert [p.split(":")[0] for p in result.problems] == ["rewritten"]
    assert "entry 6 does not have the hash signed" in result.problems[0]


def test_forged_and_altered_checkpoints_are_reported_and_ignored(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 4)
    genuine = checkpoint(migrated_session_factory, store, T0)
    # A forger without the key claims the chain once reached seq 50 (signed with another key) ...
    forged_at = T0 + timedelta(minutes=5)
    forged_mac = checkpoint_mac(OTHER_KEY, "main", 50, "f" * 64, forged_at)
    rows = [
        {
            "seq": 50,
            "head_hash": "f" * 64,
            "written_at": forged_at,
            "key_id": key_id(OTHER_KEY),
            "mac": forged_mac,
            "format": FORMAT,
        },
        # ... and copies the genuine checkpoint with a raised seq and the genuine MAC.
        {
            "seq": genuine.seq + 1,
            "head_hash": genuine.head_hash,
            "written_at": genuine.written_at,
            "key_id": genuine.key_id,
            "mac": genuine.mac,
            "format": FORMAT,
        },
    ]
    store.write_partition(
        CHECKPOINT_DATASET,
        {"chain": "main"},
        pa.Table.from_pylist(rows, schema=CHECKPOINT_SCHEMA),
        file_name="forged.parquet",
    )

    result = verdict(migrated_session_factory, store)

    assert not result.ok
    assert (result.checkpoints, result.authentic, result.newest_checkpoint_seq) == (3, 1, 4)
    assert [p.split(" (")[0] for p in result.problems] == [
        "forged checkpoint at seq 5",
        "forged checkpoint at seq 50",
    ]
    assert "this key's id but a wrong MAC" in result.problems[0] and "another key" in result.problems[1]
    # A forged checkpoint never yields a truncation claim.
    assert not any(p.startswith("truncated") for p in result.problems)
    # Verified with the wrong key, even the genuine checkpoint is rejected.
    assert verdict(migrated_session_factory, store, OTHER_KEY).authentic == 1  # the forger's own one


def test_without_checkpoints_truncation_cannot_be_ruled_out(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 2)
    result = verdict(migrated_session_factory, store)
    assert not result.ok and result.chain_result.ok
    assert result.problems == ("no checkpoint found: the loss of the newest entries cannot be ruled out",)


def test_an_empty_chain_can_be_checkpointed_and_grows_past_it(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    with migrated_session_factory() as session:
        empty = write_checkpoint(session, store, KEY, chain="ops", now=T0)
    assert (empty.seq, empty.head_hash) == (0, audit.GENESIS_HASH)
    append_entries(migrated_session_factory, 2, chain="ops")
    with migrated_session_factory() as session:
        result = verify_with_checkpoints(session, store, KEY, chain="ops")
        other = verify_with_checkpoints(session, store, KEY, chain="main")
    assert result.ok and result.head_seq == 2
    assert other.checkpoints == 0  # chains keep their own checkpoints


def test_a_broken_chain_is_not_signed(
    migrated_session_factory: sessionmaker[Session], store: ParquetStore
) -> None:
    append_entries(migrated_session_factory, 3)
    drop_audit_triggers(migrated_session_factory)
    with session_scope(migrated_session_factory) as session:
        session.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))

    with pytest.raises(ChainBroken, match="broken at seq 2"), migrated_session_factory() as session:
        write_checkpoint(session, store, KEY)
    assert read_checkpoints(store) == []
    result = verdict(migrated_session_factory, store)
    assert result.problems[0].startswith("chain broken at seq 2")


def test_checkpoints_on_s3(migrated_session_factory: sessionmaker[Session], s3_store_config) -> None:
    s3_store = ParquetStore(s3_store_config)
    try:
        append_entries(migrated_session_factory, 4)
        written = checkpoint(migrated_session_factory, s3_store, T0)
        assert written.uri.startswith("s3://")
        assert verdict(migrated_session_factory, s3_store).ok
        drop_audit_triggers(migrated_session_factory)
        delete_after(migrated_session_factory, 2)
        assert verdict(migrated_session_factory, s3_store).problems[0].startswith("truncated")
    finally:
        s3_store.close()


# --------------------------------------------------------------------------- the key (no database)


def test_the_key_comes_from_the_environment_first(tmp_path: Path) -> None:
    assert load_key({KEY_ENV: "e" * 40}, tmp_path) == b"e" * 40
    assert not (tmp_path / KEY_FILE_NAME).exists()
    with pytest.raises(CheckpointKeyError, match="at least 32"):
        load_key({KEY_ENV: "short"}, tmp_path)


def test_the_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    with pytest.raises(CheckpointKeyError, match="no audit HMAC key"):
        load_key({}, var_dir, create=False)
    first = load_key({}, var_dir)
    path = var_dir / KEY_FILE_NAME
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key({}, var_dir) == first
    os.chmod(path, 0o640)
    with pytest.raises(CheckpointKeyError, match="chmod 600"):
        load_key({}, var_dir)
    os.chmod(path, 0o600)
    path.write_text("too short")
    with pytest.raises(CheckpointKeyError, match="fewer than 32 bytes"):
        load_key({}, var_dir)


def test_the_mac_covers_every_field() -> None:
    base = ("main", 7, "a" * 64, T0)
    reference = checkpoint_mac(KEY, *base)
    variants = [
        ("ops", 7, "a" * 64, T0),
        ("main", 8, "a" * 64, T0),
        ("main", 7, "b" * 64, T0),
        ("main", 7, "a" * 64, T0 + timedelta(microseconds=1)),
    ]
    assert all(checkpoint_mac(KEY, *variant) != reference for variant in variants)
    assert checkpoint_mac(OTHER_KEY, *base) != reference
    with pytest.raises(CheckpointKeyError):
        checkpoint_mac(b"short", *base)
