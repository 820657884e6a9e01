"""Canonical JSON and entry hashing of the audit log (no database)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path

import pytest

from jobs.audit import GENESIS_HASH, canonical_json, entry_hash, format_time

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
FIELDS = (7, AT, "alice", "project.create", "project:x", '{"a":1}', GENESIS_HASH)


class Colour(StrEnum):
    RED = "red"


def test_canonical_json_sorts_keys_and_is_compact() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}}) == '{"a":{"c":null,"d":[1,2]},"b":1}'
    assert canonical_json({"name": "é"}) == '{"name":"é"}'
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


def test_canonical_json_converts_common_values() -> None:
    value = {"at": AT, "colour": Colour.RED, "path": Path("/a/b"), "tags": {"y", "x"}}
    assert json.loads(canonical_json(value)) == {
        "at": "2026-03-04T05:06:07.890123+00:00",
        "colour": "red",
        "path": "/a/b",
        "tags": ["x", "y"],
    }


def test_canonical_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot hold a object"):
        canonical_json({"x": object()})
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_format_time_is_utc_with_microseconds() -> None:
    assert format_time(AT) == "2026-03-04T05:06:07.890123Z"
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    assert format_time(paris) == "2026-03-04T05:06:07.890123Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(AT.replace(tzinfo=None))


def test_entry_hash_is_sha256_of_the_canonical_field_list() -> None:
    payload = json.dumps(
        [7, "2026-03-04T05:06:07.890123Z", "alice", "project.create", "project:x", '{"a":1}', GENESIS_HASH],
        separators=(",", ":"),
    )
    assert entry_hash(*FIELDS) == hashlib.sha256(payload.encode()).hexdigest()


@pytest.mark.parametrize(
    ("index", "replacement"),
    [
        (0, 8),
        (1, AT + timedelta(microseconds=1)),
        (2, "bob"),
        (3, "project.delete"),
        (4, "project:y"),
        (5, '{"a":2}'),
        (6, "1" * 64),
    ],
)
def test_every_field_changes_the_hash(index: int, replacement: object) -> None:
    changed = list(FIELDS)
    changed[index] = replacement
    assert entry_hash(*changed) != entry_hash(*FIELDS)
