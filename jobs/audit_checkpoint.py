"""Signed checkpoints of the audit chain's head, kept outside the database.

The hash chain of :mod:`jobs.audit` shows edits, deletions and reorderings, but
not the loss of its newest entries: a chain cut after entry 90 of 100 is still a
valid chain. A checkpoint records ``(chain, seq, head hash, time)`` of the head,
signed with HMAC-SHA256 under a key that never enters the database, in the
Parquet store's ``audit_checkpoints`` dataset (one atomically published file per
checkpoint, partition ``chain=<name>``).

:func:`verify_with_checkpoints` then reports

* **truncation**: an authentic checkpoint names a ``seq`` beyond the chain's head;
* **rewriting**: the entry at a checkpoint's ``seq`` no longer has the signed hash
  (the chain was cut and re-grown, or recomputed from scratch);
* **forged checkpoints**: a checkpoint whose HMAC does not verify under the key
  (it is ignored for the checks above);
* the chain's own breaks, from :func:`jobs.audit.verify`.

:func:`run_checkpoint` is the scheduled job (``python -m jobs scheduler --once
audit_checkpoint``): it signs the head, then records ``audit.checkpoint`` (or
``audit.checkpoint_refused`` for a broken chain) as the ``system`` actor. The
checkpoint signs the head *before* that entry, so each run's entry is covered by
the next run's checkpoint.

The key comes from ``MMS_AUDIT_HMAC_KEY`` (at least 32 characters) or from the
file ``<var_dir>/audit_hmac.key``, created with 32 random bytes and mode 0600 on
first use. Someone who can rewrite both the database and every checkpoint file,
or who holds the key, can still hide a truncation: keep the store write-once
(for example S3 Object Lock) and the key away from database administrators.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.db.models import AuditEntry, utcnow
from jobs.db.session import session_scope

CHECKPOINT_DATASET = "audit_checkpoints"
KEY_ENV = "MMS_AUDIT_HMAC_KEY"
KEY_FILE_NAME = "audit_hmac.key"
MIN_KEY_BYTES = 32
FORMAT = "mms-audit-checkpoint/v1"
_UTC_MICROS = pa.timestamp("us", tz="UTC")
CHECKPOINT_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("head_hash", pa.string(), nullable=False),
        pa.field("written_at", _UTC_MICROS, nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("mac", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
    ]
)
"""Columns of an ``audit_checkpoints`` file (the chain is the partition)."""
_LOOKUP_CHUNK = 500
SYSTEM_ACTOR = "system"
CHECKPOINT_ACTION = "audit.checkpoint"
CHECKPOINT_REFUSED_ACTION = "audit.checkpoint_refused"


class CheckpointKeyError(RuntimeError):
    """The HMAC key is missing, too short or readable by others."""


class ChainBroken(RuntimeError):
    """The chain fails its own verification, so its head is not worth signing."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed record of a chain's head.

    Attributes:
        chain: Audit chain name.
        seq: Sequence number of the head (0 for an empty chain).
        head_hash: Hash of the head entry (:data:`jobs.audit.GENESIS_HASH` when empty).
        written_at: When the checkpoint was taken (UTC, microseconds).
        key_id: Fingerprint of the signing key (not the key).
        mac: HMAC-SHA256 (hex) over the fields above.
        uri: Where the checkpoint is stored, when known.
    """

    chain: str
    seq: int
    head_hash: str
    written_at: datetime
    key_id: str
    mac: str
    uri: str | None = None


@dataclass(frozen=True)
class CheckpointVerdict:
    """Outcome of :func:`verify_with_checkpoints`.

    Attributes:
        ok: Chain intact and consistent with every authentic checkpoint (and at least one exists).
        chain: Chain name.
        head_seq: Sequence number of the chain's head in the database (0 when empty).
        checkpoints: Checkpoints found in the store.
        authentic: Of those, how many carry a valid HMAC.
        newest_checkpoint_seq: Highest ``seq`` among authentic checkpoints, ``None`` without one.
        chain_result: The chain's own verification.
        problems: One plain-language line per problem found (empty when ok).
    """

    ok: bool
    chain: str
    head_seq: int
    checkpoints: int
    authentic: int
    newest_checkpoint_seq: int | None
    chain_result: audit.VerifyResult
    problems: tuple[str, ...]


# --------------------------------------------------------------------------- the key


def key_id(key: bytes) -> str:
    """A short public fingerprint of ``key`` (SHA-256 of a labelled key, 16 hex characters)."""
    return hashlib.sha256(b"mms-audit-key-id\0" + key).hexdigest()[:16]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise CheckpointKeyError(f"the audit HMAC key must be at least {MIN_KEY_BYTES} bytes")
    return key


def load_key(
    environ: Mapping[str, str] | None = None, var_dir: str | os.PathLike[str] = "var", *, create: bool = True
) -> bytes:
    """The audit checkpoint key: ``MMS_AUDIT_HMAC_KEY``, else ``<var_dir>/audit_hmac.key``.

    Args:
        environ: Environment to read (defaults to ``os.environ``).
        var_dir: Folder of the key file.
        create: Generate the key file (32 random bytes, hex, mode 0600) when it does not exist.

    Returns:
        The key bytes (the variable's UTF-8 text, or the file's stripped content).

    Raises:
        CheckpointKeyError: if the key is too short, the file is missing (with ``create=False``)
            or the file is readable or writable by group or others.
    """
    env = os.environ if environ is None else environ
    raw = env.get(KEY_ENV)
    if raw:
        if len(raw.encode("utf-8")) < MIN_KEY_BYTES:
            raise CheckpointKeyError(f"{KEY_ENV} must be at least {MIN_KEY_BYTES} characters")
        return raw.encode("utf-8")
    path = Path(var_dir) / KEY_FILE_NAME
    if not path.exists():
        if not create:
            raise CheckpointKeyError(f"no audit HMAC key: set {KEY_ENV} or create {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Exclusive create with 0600: two processes starting together cannot overwrite each other's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(MIN_KEY_BYTES))
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CheckpointKeyError(
            f"{path} is accessible by group or others (mode {mode & 0o777:o}); chmod 600 it"
        )
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointKeyError(f"{path} holds fewer than {MIN_KEY_BYTES} bytes")
    return key


# --------------------------------------------------------------------------- signing


def _format_time(at: datetime) -> str:
    return audit.format_time(at)


def checkpoint_mac(key: bytes, chain: str, seq: int, head_hash: str, written_at: datetime) -> str:
    """HMAC-SHA256 (hex) of a checkpoint's fields under ``key``.

    The message is ``FORMAT NUL chain NUL seq NUL head_hash NUL written_at``; NUL
    never occurs in the fields, so no two field lists give the same message.
    """
    message = "\0".join((FORMAT, chain, str(int(seq)), head_hash, _format_time(written_at)))
    return hmac.new(_check_key(key), message.encode("utf-8"), hashlib.sha256).hexdigest()


def _chain_partition(chain: str) -> dict[str, str]:
    if not isinstance(chain, str) or not chain or len(chain) > 32:
        raise ValueError("chain must be a name of 1 to 32 characters")
    return {"chain": chain}


def write_checkpoint(
    session: Session,
    store: Any,
    key: bytes,
    chain: str = audit.DEFAULT_CHAIN,
    *,
    verify_chain: bool = True,
    now: datetime | None = None,
) -> Checkpoint:
    """Sign the chain's current head and publish it to the ``audit_checkpoints`` dataset.

    Args:
        session: Session to read the chain with (nothing is written to the database).
        store: The Parquet store (``analytics.store.ParquetStore``).
        key: HMAC key (see :func:`load_key`); never stored.
        chain: Audit chain name.
        verify_chain: Verify the whole chain first and refuse to sign a broken one.
        now: Checkpoint time (defaults to the clock).

    Returns:
        The checkpoint, with the URI of its file.

    Raises:
        ChainBroken: if ``verify_chain`` and the chain is broken.
        ValueError: for a bad chain name or a naive ``now``.
        CheckpointKeyError: for a key shorter than 32 bytes.
        analytics.store.StoreError: if the file cannot be written (nothing is published then).
    """
    _check_key(key)
    partition = _chain_partition(chain)
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if verify_chain:
        result = audit.verify(session, chain)
        if not result.ok:
            raise ChainBroken(
                f"audit chain {chain!r} is broken at seq {result.first_broken_seq} ({result.reason}); "
                "not signing it"
            )
    newest = audit.head(session, chain)
    seq = newest.seq if newest is not None else 0
    head_hash = newest.hash if newest is not None else audit.GENESIS_HASH
    # Microsecond precision: what Parquet stores, so the MAC verifies after the round trip.
    written_at = (now or utcnow()).astimezone(UTC)
    mac = checkpoint_mac(key, chain, seq, head_hash, written_at)
    fingerprint = key_id(key)
    table = pa.Table.from_pylist(
        [
            {
                "seq": seq,
                "head_hash": head_hash,
                "written_at": written_at,
                "key_id": fingerprint,
                "mac": mac,
                "format": FORMAT,
            }
        ],
        schema=CHECKPOINT_SCHEMA,
    )
    stamp = written_at.strftime("%Y%m%dT%H%M%S%fZ")
    uri = store.write_partition(
        CHECKPOINT_DATASET, partition, table, file_name=f"checkpoint-{seq:016d}-{stamp}-{mac[:8]}.parquet"
    )
    return Checkpoint(chain, seq, head_hash, written_at, fingerprint, mac, uri)


def run_checkpoint(
    session_factory: Any,
    store: Any,
    key: bytes,
    chain: str = audit.DEFAULT_CHAIN,
    *,
    now: datetime | None = None,
) -> Checkpoint:
    """The scheduled checkpoint: :func:`write_checkpoint` of a verified chain, then its audit entry.

    The chain is read in one session and the entry appended in a second, short write
    transaction, so signing (a store write) never holds the chain's append lock.

    Args:
        session_factory: Session factory of the metadata database.
        store: The Parquet store.
        key: HMAC key (:func:`load_key`).
        chain: Audit chain name.
        now: Checkpoint time (defaults to the clock).

    Returns:
        The checkpoint written.

    Raises:
        ChainBroken: if the chain is broken (nothing is signed; ``audit.checkpoint_refused``
            is appended to the chain, which stays broken, so ``verify`` still finds the break).
        CheckpointKeyError: for a key shorter than 32 bytes.
        analytics.store.StoreError: if the checkpoint file cannot be written.
    """
    target = f"audit_chain:{chain}"
    try:
        with session_scope(session_factory) as session:
            checkpoint = write_checkpoint(session, store, key, chain, now=now)
    except ChainBroken as error:
        with session_scope(session_factory, write=True) as session:
            audit.append(session, SYSTEM_ACTOR, CHECKPOINT_REFUSED_ACTION, target, {"reason": str(error)})
        raise
    details = {
        "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash,
        "written_at": checkpoint.written_at,
        "key_id": checkpoint.key_id,
        "uri": checkpoint.uri,
    }
    with session_scope(session_factory, write=True) as session:
        audit.append(session, SYSTEM_ACTOR, CHECKPOINT_ACTION, target, details)
    return checkpoint


def read_checkpoints(store: Any, chain: str = audit.DEFAULT_CHAIN) -> list[Checkpoint]:
    """Every checkpoint stored for ``chain``, authentic or not, ordered by ``seq`` then time.

    Raises:
        analytics.store.CorruptParquet: if a checkpoint file cannot be decoded.
    """
    partition = _chain_partition(chain)
    table = store.read(CHECKPOINT_DATASET, filters=partition)
    if table.num_rows == 0:
        return []
    checkpoints = [
        Checkpoint(
            chain=chain,
            seq=int(row["seq"]),
            head_hash=str(row["head_hash"]),
            written_at=row["written_at"],
            key_id=str(row["key_id"]),
            mac=str(row["mac"]),
        )
        for row in table.select(["seq", "head_hash", "written_at", "key_id", "mac"]).to_pylist()
    ]
    return sorted(checkpoints, key=lambda c: (c.seq, c.written_at))


def is_authentic(checkpoint: Checkpoint, key: bytes) -> bool:
    """Whether ``checkpoint``'s MAC verifies under ``key`` (constant-time comparison)."""
    expected = checkpoint_mac(
        key, checkpoint.chain, checkpoint.seq, checkpoint.head_hash, checkpoint.written_at
    )
    return hmac.compare_digest(expected, checkpoint.mac)


def _hashes_at(session: Session, chain: str, seqs: Sequence[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    ordered = sorted(set(seqs))
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        chunk = ordered[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(AuditEntry.seq, AuditEntry.hash).where(
                AuditEntry.chain == chain, AuditEntry.seq.in_(chunk)
            )
        )
        found.update({int(seq): str(value) for seq, value in rows})
    return found


def verify_with_checkpoints(
    session: Session, store: Any, key: bytes, chain: str = audit.DEFAULT_CHAIN
) -> CheckpointVerdict:
    """Verify the chain and compare it with every authentic checkpoint.

    Args:
        session: Session to read the chain with.
        store: The Parquet store holding ``audit_checkpoints``.
        key: HMAC key the checkpoints were signed with.
        chain: Audit chain name.

    Returns:
        The verdict; ``problems`` names each truncation, rewrite, forged checkpoint and chain break.
    """
    _check_key(key)
    chain_result = audit.verify(session, chain)
    newest = audit.head(session, chain)
    head_seq = newest.seq if newest is not None else 0
    problems: list[str] = []
    if not chain_result.ok:
        problems.append(f"chain broken at seq {chain_result.first_broken_seq}: {chain_result.reason}")

    checkpoints = read_checkpoints(store, chain)
    authentic: list[Checkpoint] = []
    fingerprint = key_id(key)
    for checkpoint in checkpoints:
        if is_authentic(checkpoint, key):
            authentic.append(checkpoint)
            continue
        signer = "another key" if checkpoint.key_id != fingerprint else "this key's id but a wrong MAC"
        problems.append(
            f"forged checkpoint at seq {checkpoint.seq} (written {checkpoint.written_at.isoformat()}): "
            f"its HMAC does not verify ({signer})"
        )
    if not checkpoints:
        problems.append("no checkpoint found: the loss of the newest entries cannot be ruled out")
    elif not authentic:
        problems.append("no authentic checkpoint: the loss of the newest entries cannot be ruled out")

    hashes = _hashes_at(session, chain, [c.seq for c in authentic if 0 < c.seq <= head_seq])
    for checkpoint in authentic:
        if checkpoint.seq > head_seq:
            problems.append(
                f"truncated: the checkpoint of {checkpoint.written_at.isoformat()} signed seq "
                f"{checkpoint.seq}, but the chain ends at seq {head_seq}"
            )
        elif checkpoint.seq == 0:
            continue  # an empty chain's checkpoint: any chain extends it
        elif hashes.get(checkpoint.seq) != checkpoint.head_hash:
            problems.append(
                f"rewritten: entry {checkpoint.seq} does not have the hash signed by the checkpoint of "
                f"{checkpoint.written_at.isoformat()}"
            )
    return CheckpointVerdict(
        ok=not problems,
        chain=chain,
        head_seq=head_seq,
        checkpoints=len(checkpoints),
        authentic=len(authentic),
        newest_checkpoint_seq=max((c.seq for c in authentic), default=None),
        chain_result=chain_result,
        problems=tuple(problems),
    )
