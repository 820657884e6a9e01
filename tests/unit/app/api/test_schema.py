"""The request validator enforces every keyword the document declares, as JSON Schema defines it."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.schema import SchemaError, check_schema, coerce_parameter, parse_datetime, validate
from app.api.views import API, APPROVE_BODY, DEPLOY_BODY, PROMOTION_BODY

pytestmark = pytest.mark.unit

BODIES = {"promotion": PROMOTION_BODY, "approve": APPROVE_BODY, "deploy": DEPLOY_BODY}
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def _ours(value: object, schema: dict) -> bool:
    try:
        validate(value, schema)
    except SchemaError:
        return False
    return True


def _reference(value: object, schema: dict) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value)


@pytest.mark.parametrize(
    ("body", "value", "valid"),
    [
        (
            "promotion",
            {
                "project": "p",
                "model": "m",
                "version": "3",
                "target_environment": "prod",
                "justification": "x",
            },
            True,
        ),
        (
            "promotion",
            {"project": "p", "model": "m", "version": "3", "target_environment": "qa", "justification": "x"},
            False,
        ),
        (
            "promotion",
            {"project": "p", "model": "m", "version": "3", "target_environment": "dev", "justification": ""},
            False,
        ),
        (
            "promotion",
            {
                "project": "p/..",
                "model": "m",
                "version": "3",
                "target_environment": "dev",
                "justification": "x",
            },
            False,
        ),
        (
            "promotion",
            {
                "project": "p",
                "model": "m",
                "version": "3",
                "target_environment": "dev",
                "justification": "x",
                "extra": 1,
            },
            False,
        ),
        ("deploy", {"project": "p", "model": "m", "environment": "dev", "git_sha": SHA}, True),
        ("deploy", {"project": "p", "model": "m", "environment": "dev", "version": "2"}, True),
        ("deploy", {"project": "p", "model": "m", "environment": "dev"}, False),
        ("deploy", {"project": "p", "model": "m", "environment": "dev", "git_sha": SHA.upper()}, False),
        ("deploy", {"project": "p", "model": "m", "environment": "dev", "git_sha": "abc123"}, False),
        ("approve", {"version": "2", "run_id": "r1", "artifact_digest": "ab" * 32}, True),
        ("approve", {"version": "2", "run_id": "r1", "artifact_digest": "ab" * 32, "comment": 5}, False),
        ("approve", {"version": True, "run_id": "r1", "artifact_digest": "ab" * 32}, False),
        ("approve", [], False),
    ],
)
def test_bodies_are_judged_like_the_reference_validator(body: str, value: object, valid: bool) -> None:
    schema = BODIES[body]
    assert _ours(value, schema) is valid
    assert _reference(value, schema) is valid


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["project", "model", "version", "git_sha", "environment", "requested_from", "x"]),
        # No newlines: Python's re (the reference) lets "$" match before a final newline, ECMA-262 does not.
        st.one_of(
            st.text(st.characters(blacklist_characters="\n"), max_size=50),
            st.integers(),
            st.booleans(),
            st.none(),
            st.sampled_from(["dev", SHA]),
        ),
    )
)
def test_the_deploy_body_agrees_with_the_reference_validator_on_any_object(value: dict) -> None:
    assert _ours(value, DEPLOY_BODY) is _reference(value, DEPLOY_BODY)


def test_patterns_end_where_the_string_ends_as_in_ecma_262() -> None:
    body = {"project": "p\n", "model": "m", "version": "3", "target_environment": "dev", "justification": "x"}
    assert not _ours(body, PROMOTION_BODY)
    assert _ours({**body, "project": "p"}, PROMOTION_BODY)


def test_every_declared_schema_uses_only_enforced_keywords() -> None:
    for operation in API.operations:
        for param in operation.params:
            check_schema(param.schema)
        if operation.body is not None:
            check_schema(operation.body)
    with pytest.raises(ValueError, match="unsupported format"):
        check_schema({"type": "string", "format": "email"})


def test_integers_are_strict_and_parameters_are_coerced_from_text() -> None:
    schema = {"type": "integer", "minimum": 1, "maximum": 10}
    assert coerce_parameter("7", schema, "limit") == 7
    for bad in ("0", "11", "7.0", "seven", "", "1e3", "99999999999999999999"):
        with pytest.raises(SchemaError, match="limit"):
            coerce_parameter(bad, schema, "limit")
    with pytest.raises(SchemaError):
        validate(7.0, schema)
    with pytest.raises(SchemaError):
        validate(True, schema)


def test_date_times_need_a_time_zone() -> None:
    assert parse_datetime("2026-03-01T00:00:00Z") is not None
    assert parse_datetime("2026-03-01t10:00:00.5+02:00") is not None
    for bad in (
        "2026-03-01T00:00:00",
        "2026-03-01",
        "2026-13-01T00:00:00Z",
        "yesterday",
        "2026-03-01T00:00:00Z\n",
    ):
        assert parse_datetime(bad) is None, bad
