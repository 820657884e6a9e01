"""The OpenAPI document and the Flask rules come from the same declarations and agree both ways."""

from __future__ import annotations

import re

import pytest

from app.api import API_EXTENSION_KEY
from app.api.routing import PREFIX, TOKEN, Api, Param, Reply
from app.api.views import API
from app.rbac import unprotected_routes
from jobs.permissions import Permission
from tests.unit.app.api.world import ApiWorld

pytestmark = pytest.mark.unit

_FLASK_VARIABLE = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def _flask_rules(world: ApiWorld) -> set[tuple[str, str]]:
    api_app = world.studio.app.server.extensions[API_EXTENSION_KEY]
    found = set()
    for rule in api_app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX):
            continue
        path = _FLASK_VARIABLE.sub(r"{\1}", rule.rule)
        found |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def _documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_every_flask_rule_is_documented_and_every_documented_operation_is_routed(world: ApiWorld) -> None:
    document = world.call(None, "GET", "/api/v1/openapi.json").json
    flask_rules = _flask_rules(world)
    assert len(flask_rules) >= 19
    assert flask_rules == _documented(document)


def test_the_studio_server_itself_has_no_api_rules_and_keeps_every_rule_guarded(world: ApiWorld) -> None:
    world.studio.signed_in("admin", "10.9.0.1").get("/")
    server_rules = [r.rule for r in world.studio.app.server.url_map.iter_rules()]
    assert not [rule for rule in server_rules if rule.startswith(PREFIX)]
    assert unprotected_routes(world.studio.app) == []


def test_the_document_is_openapi_3_1_with_the_example_workflows_operations(world: ApiWorld) -> None:
    response = world.call(None, "GET", "/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.json
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerToken"]["description"],
    }
    paths = document["paths"]
    # What examples/github-actions/*.yml call.
    create = paths["/api/v1/promotions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"project", "model", "version", "target_environment", "justification"}
    assert "requested_from" in body["properties"]
    assert "id" in create["responses"]["201"]["content"]["application/json"]["schema"]["required"]
    status = paths["/api/v1/promotions/{request_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    assert {"pending", "approved", "rejected", "expired"} <= set(
        status["schema"]["properties"]["status"]["enum"]
    )
    deploy = paths["/api/v1/deployments"]["post"]
    deploy_body = deploy["requestBody"]["content"]["application/json"]["schema"]
    assert {"project", "model", "git_sha", "environment"} <= set(deploy_body["properties"])
    assert {"id", "model", "version", "environment", "status"} <= set(
        deploy["responses"]["201"]["content"]["application/json"]["schema"]["required"]
    )


def test_every_token_operation_documents_its_permission_security_and_error_statuses() -> None:
    document = API.openapi()
    token_operations = [op for op in API.operations if op.auth == TOKEN]
    assert len(token_operations) >= 17
    for operation in token_operations:
        documented = document["paths"][PREFIX + operation.path][operation.method.lower()]
        assert documented["x-permission"] == operation.permission.value
        assert documented["security"] == [{"bearerToken": []}]
        assert {"401", "403", "429"} <= set(documented["responses"]), operation.operation_id
        for status, response in documented["responses"].items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
    assert {op.permission for op in token_operations} >= {
        Permission.VIEW_PROJECTS,
        Permission.VIEW_MODELS,
        Permission.REQUEST_PROMOTION,
        Permission.APPROVE_PROMOTION,
        Permission.VIEW_APPROVALS,
        Permission.DEPLOY,
        Permission.ROLLBACK,
        Permission.VIEW_CICD,
        Permission.VIEW_MONITORING,
        Permission.ACK_ALERTS,
        Permission.VIEW_AUDIT,
        Permission.VERIFY_AUDIT,
    }


def _handler(_call: object) -> Reply:
    return Reply(200, {})


def test_declarations_that_could_drift_or_open_a_hole_are_refused_at_start_up() -> None:
    api = Api("t", "1")
    with pytest.raises(ValueError, match="declares no permission"):
        api.operation("GET", "/x", operation_id="x", summary="", tag="t", permission=None)(_handler)
    with pytest.raises(ValueError, match="path variables"):
        api.operation(
            "GET", "/x/{item}", operation_id="y", summary="", tag="t", permission=Permission.VIEW_PROJECTS
        )(_handler)
    with pytest.raises(ValueError, match="unsupported JSON Schema keywords"):
        api.operation(
            "GET",
            "/z",
            operation_id="z",
            summary="",
            tag="t",
            permission=Permission.VIEW_PROJECTS,
            params=(Param("q", "query", {"type": "string", "uniqueItems": True}),),
        )(_handler)
    api.operation("GET", "/ok", operation_id="ok", summary="", tag="t", permission=Permission.VIEW_PROJECTS)(
        _handler
    )
    with pytest.raises(ValueError, match="declared twice"):
        api.operation(
            "GET", "/ok", operation_id="ok2", summary="", tag="t", permission=Permission.VIEW_PROJECTS
        )(_handler)


def test_undeclared_paths_and_methods_answer_json_errors(world: ApiWorld) -> None:
    missing = world.call("admin", "GET", "/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong_method = world.call("admin", "DELETE", "/api/v1/projects")
    assert wrong_method.status_code == 405 and wrong_method.json["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]
    bare = world.call("admin", "GET", "/api/v1")
    assert bare.status_code == 404 and bare.mimetype == "application/json"
