"""Password hashing and input validation of ``jobs.users`` (no database)."""

from __future__ import annotations

import base64

import pytest

from jobs.users import (
    InvalidInput,
    hash_password,
    validate_password,
    validate_username,
    verify_password,
)

pytestmark = pytest.mark.unit


def test_hash_format_and_parameters() -> None:
    stored = hash_password("correct horse battery")
    scheme, n, r, p, salt, derived = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(derived)) == 32
    assert len(stored) <= 255


def test_salts_are_random_and_verification_works() -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second
    assert verify_password("same password", first) and verify_password("same password", second)
    assert not verify_password("same passwore", first)
    assert not verify_password("", first)


def test_unicode_passwords_round_trip() -> None:
    stored = hash_password("pässwörd-日本語")
    assert verify_password("pässwörd-日本語", stored)
    assert not verify_password("passwörd-日本語", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "bcrypt$16384$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$not base64!$aGFzaA==",
        "scrypt$x$8$1$c2FsdA==$aGFzaA==",
        "scrypt$1073741824$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$c2FsdA==",
    ],
)
def test_malformed_stored_hashes_never_match(stored: str) -> None:
    assert verify_password("anything at all", stored) is False


@pytest.mark.parametrize("username", ["abc", "a" * 64, "first.last", "under_score", "dash-ed", "X9y"])
def test_accepted_usernames(username: str) -> None:
    assert validate_username(username) == username


@pytest.mark.parametrize(
    "username",
    ["", "ab", "a" * 65, "has space", "../x", "<img src=x>", "name\n", "naïve", "semi;colon", "a/b", None],
)
def test_refused_usernames(username: str) -> None:
    with pytest.raises(InvalidInput, match="username must be 3 to 64 characters"):
        validate_username(username)


def test_password_length_rules() -> None:
    assert validate_password("x" * 10) == "x" * 10
    for bad in ("", "x" * 9, None):
        with pytest.raises(InvalidInput, match="at least 10 characters"):
            validate_password(bad)
    with pytest.raises(InvalidInput, match="at most 1024"):
        validate_password("x" * 1025)
