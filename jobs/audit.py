"""The append-only, hash-chained audit log.

Every entry of a chain carries a sequence number (1, 2, 3, ...), the hash of
the previous entry and its own SHA-256 hash over
``(seq, at, actor, action, target, details, prev_hash)``. Editing, deleting
or reordering rows therefore breaks the chain, which :func:`verify` reports.

Appends to one chain are serialised (``pg_advisory_xact_lock`` on PostgreSQL,
the write lock on SQLite) so concurrent writers never fork it; the
``(chain, seq)`` unique constraint is the backstop. The database itself
refuses UPDATE and DELETE on ``audit_log`` (triggers created by the migration).

What a chain cannot show by itself is the loss of its newest entries; compare
``head(session).seq`` with a copy kept elsewhere to detect that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.db.models import AuditEntry, utcnow
from jobs.db.session import serialize

GENESIS_HASH = "0" * 64
DEFAULT_CHAIN = "main"
_MAX_LENGTHS = {"chain": 32, "actor": 64, "action": 64, "target": 255}


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes:
        ok: The whole chain is intact.
        checked: Entries examined (up to and including the first broken one).
        first_broken_seq: Sequence number where the chain first breaks, ``None`` when ok.
        reason: Human-readable explanation (``"ok"`` when intact).
    """

    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"audit details cannot hold a {type(value).__name__}: use JSON values")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically: sorted keys, compact separators, UTF-8 text.

    Raises:
        TypeError: for values JSON cannot represent.
        ValueError: for NaN or infinite floats.
    """
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def format_time(at: datetime) -> str:
    """The ISO form of ``at`` that enters the hash (UTC, microseconds, ``Z``)."""
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    seq: int, at: datetime, actor: str, action: str, target: str, details: str, prev_hash: str
) -> str:
    """SHA-256 (hex) of one entry's fields; ``details`` is its canonical JSON text."""
    payload = canonical_json([seq, format_time(at), actor, action, target, details, prev_hash])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def head(session: Session, chain: str = DEFAULT_CHAIN) -> AuditEntry | None:
    """The newest entry of ``chain``, ``None`` when the chain is empty."""
    return session.scalars(
        select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()


def append(
    session: Session,
    actor: str,
    action: str,
    target: str = "",
    details: Mapping[str, Any] | None = None,
    chain: str = DEFAULT_CHAIN,
) -> AuditEntry:
    """Append one entry to ``chain`` in the session's transaction.

    The chain stays locked until the transaction ends, so commit promptly.

    Args:
        session: Session whose transaction records the entry (the caller commits).
        actor: Username of who acted (``"system"`` for scheduled jobs).
        action: Dotted verb such as ``project.create``.
        target: What was acted on, such as ``project:credit-risk``.
        details: JSON-serialisable facts about the action.
        chain: Name of the chain (``main`` unless a subsystem keeps its own).

    Returns:
        The new, flushed entry.

    Raises:
        ValueError: for an empty actor/action, an over-long field or details that are not JSON.
    """
    fields = {"chain": chain, "actor": actor, "action": action, "target": target}
    for name, value in fields.items():
        if len(value) > _MAX_LENGTHS[name]:
            raise ValueError(
                f"audit {name} is longer than {_MAX_LENGTHS[name]} characters: {value[:40]!r}..."
            )
    if not actor or not action or not chain:
        raise ValueError("audit entries need a chain, an actor and an action")
    try:
        details_json = canonical_json(dict(details or {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"audit details are not JSON-serialisable: {error}") from error

    serialize(session, f"audit:{chain}")
    previous = head(session, chain)
    seq = previous.seq + 1 if previous else 1
    prev_hash = previous.hash if previous else GENESIS_HASH
    # Microseconds are what both backends store, so the hash survives the round trip.
    at = utcnow()
    entry = AuditEntry(
        chain=chain,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=details_json,
        prev_hash=prev_hash,
        hash=entry_hash(seq, at, actor, action, target, details_json, prev_hash),
    )
    session.add(entry)
    session.flush()
    return entry


def verify(session: Session, chain: str = DEFAULT_CHAIN) -> VerifyResult:
    """Walk ``chain`` from its first entry and check every link.

    Detects edited rows (hash mismatch), deleted rows (gap in ``seq`` or a
    ``prev_hash`` that no longer matches) and reordered rows (either symptom).

    Returns:
        The verdict with the first broken sequence number.
    """
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    # Plain rows, not ORM objects: the identity map could hold a stale copy of a tampered row.
    rows = session.execute(
        select(
            AuditEntry.seq,
            AuditEntry.at,
            AuditEntry.actor,
            AuditEntry.action,
            AuditEntry.target,
            AuditEntry.details,
            AuditEntry.prev_hash,
            AuditEntry.hash,
        )
        .where(AuditEntry.chain == chain)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=500)
    )
    for entry in rows:
        checked += 1
        problem = None
        if entry.seq != expected_seq:
            problem = f"expected seq {expected_seq}, found {entry.seq} (entries missing or renumbered)"
        elif entry.prev_hash != prev_hash:
            problem = "prev_hash does not match the previous entry (entries deleted or reordered)"
        elif entry.hash != entry_hash(
            entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.details, entry.prev_hash
        ):
            problem = "hash does not match the entry's content (entry edited)"
        if problem:
            rows.close()
            return VerifyResult(ok=False, checked=checked, first_broken_seq=expected_seq, reason=problem)
        expected_seq += 1
        prev_hash = entry.hash
    return VerifyResult(ok=True, checked=checked, first_broken_seq=None, reason="ok")
