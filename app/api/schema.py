"""The JSON Schema subset the API declares, and the validator that enforces exactly that subset.

Every request parameter and body is declared once, as a JSON Schema (draft 2020-12,
the dialect of OpenAPI 3.1); the same object is written into ``openapi.json`` and
checked here, so the document and the behaviour cannot disagree. Only the keywords
in :data:`SUPPORTED_KEYWORDS` may appear: :func:`check_schema` refuses anything
else at start-up, so no constraint is ever documented without being enforced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "maxItems",
        "minItems",
        "enum",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "anyOf",
        "description",
        "default",
        "examples",
    }
)
SUPPORTED_FORMATS = frozenset({"date-time"})
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class SchemaError(ValueError):
    """A value does not satisfy its schema.

    Attributes:
        where: JSON-pointer-like location of the offending value (``body.version``).
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


def check_schema(schema: Mapping[str, Any], where: str = "schema") -> None:
    """Refuse a schema that uses a keyword or format the validator does not enforce.

    Raises:
        ValueError: naming the unsupported keyword.
    """
    unknown = set(schema) - SUPPORTED_KEYWORDS
    if unknown:
        raise ValueError(f"{where} uses unsupported JSON Schema keywords {sorted(unknown)}")
    if "format" in schema and schema["format"] not in SUPPORTED_FORMATS:
        raise ValueError(f"{where} uses unsupported format {schema['format']!r}")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), Mapping):
        check_schema(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        check_schema(schema["additionalProperties"], f"{where}.*")
    for index, sub in enumerate(schema.get("anyOf") or ()):
        check_schema(sub, f"{where}.anyOf[{index}]")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # ECMA-262's "$" ends the string; Python's would also accept a trailing newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _types(schema: Mapping[str, Any]) -> tuple[str, ...]:
    declared = schema.get("type")
    if declared is None:
        return ()
    return (declared,) if isinstance(declared, str) else tuple(declared)


def _matches_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        # Strict on purpose: 1.0 would reach handlers as a float.
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown JSON Schema type {name!r}")


def parse_datetime(value: str) -> datetime | None:
    """An RFC 3339 date-time with an offset, or ``None`` when ``value`` is not one."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _equal(a: Any, b: Any) -> bool:
    # JSON Schema equality: true is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def validate(value: Any, schema: Mapping[str, Any], where: str = "") -> None:
    """Check ``value`` against ``schema`` (the :data:`SUPPORTED_KEYWORDS` subset).

    Raises:
        SchemaError: naming the first offending location.
    """
    types = _types(schema)
    if types and not any(_matches_type(value, name) for name in types):
        raise SchemaError(where, f"must be of type {' or '.join(types)}")
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        allowed = ", ".join(repr(option) for option in schema["enum"])
        raise SchemaError(where, f"must be one of {allowed}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(where, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(where, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
            raise SchemaError(where, f"must match {schema['pattern']}")
        if schema.get("format") == "date-time" and parse_datetime(value) is None:
            raise SchemaError(where, "must be an RFC 3339 date-time with a time zone (2026-03-01T00:00:00Z)")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(where, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(where, f"must be at most {schema['maximum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(where, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(where, f"must have at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), Mapping):
            for index, item in enumerate(value):
                validate(item, schema["items"], f"{where}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                raise SchemaError(f"{where}.{name}" if where else name, "is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            location = f"{where}.{name}" if where else str(name)
            if name in properties:
                validate(item, properties[name], location)
            elif extra is False:
                raise SchemaError(location, "is not an accepted field")
            elif isinstance(extra, Mapping):
                validate(item, extra, location)
    alternatives: Sequence[Mapping[str, Any]] = schema.get("anyOf") or ()
    if alternatives:
        errors = []
        for option in alternatives:
            try:
                validate(value, option, where)
            except SchemaError as error:
                errors.append(str(error))
            else:
                break
        else:
            raise SchemaError(where, "matches none of the accepted forms: " + "; ".join(errors))


def coerce_parameter(raw: str, schema: Mapping[str, Any], where: str) -> Any:
    """Turn a path or query string into the value its schema describes, then validate it.

    Raises:
        SchemaError: if the text is not of the declared type or fails the schema.
    """
    types = _types(schema)
    value: Any = raw
    if "integer" in types and re.fullmatch(r"-?\d{1,19}", raw):
        value = int(raw)
    elif "boolean" in types and raw in ("true", "false"):
        value = raw == "true"
    elif "string" not in types and types:
        raise SchemaError(where, f"must be of type {' or '.join(types)}")
    validate(value, schema, where)
    return value
