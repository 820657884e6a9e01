"""Route declarations: each API operation is declared once and becomes both a Flask rule and OpenAPI.

An :class:`Operation` names its method and path, the permission it needs, its
parameters and body (JSON Schema, see :mod:`app.api.schema`), its success response
schema and the error statuses it may answer. :meth:`Api.register` turns every
declaration into a Flask rule whose view authenticates, authorises, validates and
only then calls the handler; :meth:`Api.openapi` writes the same declarations as
an OpenAPI 3.1 document. A handler never sees an unvalidated value.

Every token-authenticated operation checks, in this order:

1. ``Authorization: Bearer <token>`` resolves to a live token (401 otherwise) and the
   caller is within its rate limit (429);
2. the token's scoped :class:`~jobs.permissions.Actor` holds the operation's permission
   on at least one project (403) — the handler then checks it on the very project
   (``require(actor, permission, project)``) and the job functions check it again;
3. path, query and body values satisfy their schemas, and no undeclared query parameter is
   sent (422; 400 for a body that is not JSON).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.api.errors import ERROR_SCHEMA, STATUS_TEXT, ApiError, error_body, from_exception
from app.api.schema import SchemaError, check_schema, coerce_parameter, validate
from jobs.permissions import Actor, Permission, has_permission

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
TOKEN = "token"  # noqa: S105 - the name of an authentication kind, not a secret
GITHUB_SIGNATURE = "github_signature"
PUBLIC = "public"
BEARER_SCHEME = "bearerToken"
MAX_JSON_BODY_BYTES = 1024 * 1024
_PATH_VARIABLE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter.

    Attributes:
        name: Its name.
        location: ``path``, ``query`` or ``header``.
        schema: JSON Schema of its value.
        required: Whether it must be present (path parameters always are).
        description: Shown in the document.
    """

    name: str
    location: str
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Call:
    """What a handler receives.

    Attributes:
        actor: The token's scoped actor (``None`` for operations without a token).
        token_id: The token's database id.
        params: Validated path and query values (absent optional parameters are missing).
        body: The validated JSON body (``None`` when the operation takes none).
        raw_body: The body bytes exactly as received (the webhook's signature covers them).
        headers: Request headers.
    """

    actor: Actor | None
    token_id: int | None
    params: Mapping[str, Any]
    body: Any
    raw_body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    """A handler's answer: status, JSON payload and extra headers."""

    status: int
    payload: Any
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Reply]


@dataclass(frozen=True)
class Operation:
    """One declared API operation.

    Attributes:
        method: HTTP method.
        path: OpenAPI path under :data:`PREFIX` (``/promotions/{request_id}``).
        operation_id: Unique id (also the Flask endpoint name).
        summary: One line for the document.
        tag: Document group.
        handler: The function answering it.
        permission: Permission the caller needs (on at least one project; the handler checks the project).
        auth: :data:`TOKEN`, :data:`GITHUB_SIGNATURE` or :data:`PUBLIC`.
        params: Path, query and header parameters.
        body: JSON Schema of the request body, ``None`` for none.
        success: Success status.
        response: JSON Schema of the success body.
        errors: Error statuses the operation may answer besides those every token operation may.
        description: Longer text for the document.
        extra_success: Other success statuses: status -> (description, body schema).
    """

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler
    permission: Permission | None
    auth: str = TOKEN
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None
    success: int = 200
    response: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_success: Mapping[int, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def flask_rule(self) -> str:
        """The Flask rule of :attr:`path` (``{x}`` becomes ``<x>``)."""
        return PREFIX + _PATH_VARIABLE.sub(r"<\1>", self.path)

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every status this operation may answer, in order."""
        codes = {self.success, *self.extra_success, *self.errors}
        if self.auth == TOKEN:
            codes |= {401, 403, 429}
        codes.add(422)  # an invalid parameter, or one the operation does not declare
        if any(p.location == "path" for p in self.params):
            codes.add(404)
        if self.body is not None:
            codes |= {400, 413, 422}
        return tuple(sorted(codes))


def _param_document(param: Param) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.required or param.location == "path",
        "schema": dict(param.schema),
    }
    if param.description:
        document["description"] = param.description
    return document


class Api:
    """The registry of declared operations of one API version."""

    def __init__(self, title: str, version: str, description: str = "") -> None:
        self.title = title
        self.version = version
        self.description = description
        self.operations: list[Operation] = []

    def operation(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator declaring ``handler`` as the operation ``method path`` (see :class:`Operation`).

        Raises:
            ValueError: for a duplicate operation, a path variable without a path parameter,
                a token operation without a permission, or an unsupported schema keyword.
        """

        def declare(handler: Handler) -> Handler:
            operation = Operation(method=method.upper(), path=path, handler=handler, **options)
            self._check(operation)
            self.operations.append(operation)
            return handler

        return declare

    def _check(self, operation: Operation) -> None:
        if any((o.method, o.path) == (operation.method, operation.path) for o in self.operations):
            raise ValueError(f"{operation.method} {operation.path} is declared twice")
        if any(o.operation_id == operation.operation_id for o in self.operations):
            raise ValueError(f"operation id {operation.operation_id!r} is declared twice")
        variables = set(_PATH_VARIABLE.findall(operation.path))
        path_params = {p.name for p in operation.params if p.location == "path"}
        if variables != path_params:
            raise ValueError(f"{operation.path}: path variables {variables} != path parameters {path_params}")
        if operation.auth == TOKEN and not isinstance(operation.permission, Permission):
            raise ValueError(f"{operation.operation_id} authenticates by token but declares no permission")
        for param in operation.params:
            check_schema(param.schema, f"{operation.operation_id}.{param.name}")
        if operation.body is not None:
            check_schema(operation.body, f"{operation.operation_id}.body")
        check_schema(operation.response, f"{operation.operation_id}.response")

    # ------------------------------------------------------------------ document

    def openapi(self, components: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every declared operation."""
        paths: dict[str, dict[str, Any]] = {}
        for operation in self.operations:
            paths.setdefault(PREFIX + operation.path, {})[operation.method.lower()] = (
                self._operation_document(operation)
            )
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "securitySchemes": {
                    BEARER_SCHEME: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A studio API token (mms_...): `python -m jobs tokens create`.",
                    }
                },
                "schemas": {"Error": ERROR_SCHEMA, **dict(components or {})},
            },
        }

    def _operation_document(self, operation: Operation) -> dict[str, Any]:
        responses: dict[str, Any] = {
            str(operation.success): {
                "description": "Success.",
                "content": {"application/json": {"schema": dict(operation.response)}},
            }
        }
        for status, (text, schema) in operation.extra_success.items():
            responses[str(status)] = {
                "description": text,
                "content": {"application/json": {"schema": dict(schema)}},
            }
        for status in operation.statuses:
            if str(status) in responses:
                continue
            responses[str(status)] = {
                "description": STATUS_TEXT.get(status, "Error."),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        document: dict[str, Any] = {
            "operationId": operation.operation_id,
            "summary": operation.summary,
            "tags": [operation.tag],
            "parameters": [_param_document(p) for p in operation.params],
            "responses": responses,
            "security": [{BEARER_SCHEME: []}] if operation.auth == TOKEN else [],
        }
        if operation.description:
            document["description"] = operation.description
        if operation.permission is not None:
            # Read by the schemathesis run: a 2xx answer needs this permission.
            document["x-permission"] = operation.permission.value
        if operation.body is not None:
            document["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": dict(operation.body)}},
            }
        return document

    # ------------------------------------------------------------------ Flask

    def register(self, blueprint: Blueprint, authenticate: Callable[[], tuple[Actor, int]]) -> None:
        """Add a Flask rule for every declared operation to ``blueprint``.

        Args:
            blueprint: Blueprint mounted at the application root (rules carry :data:`PREFIX`).
            authenticate: Resolves the request's bearer token (raises :class:`ApiError` 401/429).
        """
        for operation in self.operations:
            blueprint.add_url_rule(
                operation.flask_rule,
                endpoint=operation.operation_id,
                view_func=_view(operation, authenticate),
                methods=[operation.method],
            )


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response with ``status`` and ``headers``."""
    response = jsonify(payload)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: ApiError) -> Response:
    """The JSON response of ``error``."""
    return json_response(error.status, error_body(error.code, error.message), error.headers)


def _read_body(operation: Operation) -> tuple[Any, bytes]:
    if operation.body is None:
        return None, request.get_data(cache=True)
    length = request.content_length
    if length is not None and length > MAX_JSON_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body must be at most {MAX_JSON_BODY_BYTES} bytes")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_JSON_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body must be at most {MAX_JSON_BODY_BYTES} bytes")
    if request.mimetype != "application/json":
        raise ApiError(400, "bad_request", "send the body as JSON with Content-Type: application/json")
    payload = request.get_json(silent=True, cache=True)
    if payload is None and raw.strip() != b"null":
        raise ApiError(400, "bad_request", "the body is not valid JSON")
    try:
        validate(payload, operation.body, "body")
    except SchemaError as error:
        raise ApiError(422, "invalid_input", str(error)) from None
    return payload, raw


def _read_params(operation: Operation, path_values: Mapping[str, str]) -> dict[str, Any]:
    declared = {p.name for p in operation.params if p.location == "query"}
    unknown = sorted(set(request.args) - declared)
    if unknown:
        # A misspelt filter (?stauts=) must not silently widen what a script reads or changes.
        accepted = ", ".join(sorted(declared)) or "none"
        raise ApiError(
            422, "invalid_input", f"unknown query parameter(s) {unknown[:5]}; accepted: {accepted}"
        )
    params: dict[str, Any] = {}
    for param in operation.params:
        if param.location == "path":
            raw = path_values.get(param.name)
        elif param.location == "query":
            raw = request.args.get(param.name)
        else:
            continue  # header parameters are read by their handler (their meaning is theirs)
        if raw is None:
            if param.required or param.location == "path":
                raise ApiError(422, "invalid_input", f"{param.location} parameter {param.name!r} is required")
            continue
        try:
            params[param.name] = coerce_parameter(raw, param.schema, param.name)
        except SchemaError as error:
            raise ApiError(422, "invalid_input", str(error)) from None
    return params


def _view(operation: Operation, authenticate: Callable[[], tuple[Actor, int]]) -> Callable[..., Response]:
    def view(**path_values: str) -> Response:
        try:
            actor: Actor | None = None
            token_id: int | None = None
            if operation.auth == TOKEN:
                actor, token_id = authenticate()
                assert operation.permission is not None
                if not has_permission(actor, operation.permission):
                    raise ApiError(
                        403,
                        "forbidden",
                        f"this token may not {operation.permission.value} on any project",
                    )
            params = _read_params(operation, path_values)
            body, raw = _read_body(operation)
            call = Call(
                actor=actor,
                token_id=token_id,
                params=params,
                body=body,
                raw_body=raw,
                headers=dict(request.headers),
            )
            reply = operation.handler(call)
        except Exception as error:  # noqa: BLE001 - every failure becomes a JSON error; bugs are logged
            failure = from_exception(error)
            if failure.status not in operation.statuses and failure.status != 500:
                log.error(
                    "%s answered undocumented status %s (%s)", operation.operation_id, failure.status, failure
                )
            return error_response(failure)
        if reply.status not in operation.statuses:
            log.error("%s answered undocumented status %s", operation.operation_id, reply.status)
        return json_response(reply.status, reply.payload, reply.headers)

    view.__name__ = operation.operation_id
    view.__doc__ = operation.summary
    return view
