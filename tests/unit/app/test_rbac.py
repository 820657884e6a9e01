"""Deny-by-default authorisation of every route, page and callback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dash
import pytest
from dash import Input, Output
from dash.exceptions import PreventUpdate

from app.rbac import (
    ROUTER_OUTPUT,
    SIGNED_IN,
    Access,
    callback_permissions,
    endpoint_rules,
    page_permission,
    requires,
    unprotected_callbacks,
    unprotected_routes,
)
from jobs.permissions import Permission
from jobs.users import create_user
from tests.unit.app.expectations import ALL_PAGES, NAVIGATION_BY_USER, PAGE_PATHS
from tests.unit.app.studio import (
    Studio,
    as_sent,
    build_studio,
    callback_request,
    component_request,
    csrf_header,
    login_form_token,
    router_request,
    texts,
)

pytestmark = pytest.mark.unit

DASHBOARD_OUTPUT = "..dashboard-greeting.children...dashboard-roles.children.."
# Sample values for the variable parts of URL rules.
RULE_VALUES = {
    "package_name": "dash",
    "fingerprinted_path": "dash-renderer/build/dash_renderer.v4_4_1m1.min.js",
    "path": "projects",
    "filename": "studio.css",
}
PUBLIC_ENDPOINTS = {"auth.login", "auth.logout", "vendor.bootstrap_css", "/_favicon.ico"}


def _concrete_requests(studio: Studio) -> Iterator[tuple[str, str, str]]:
    adapter = studio.app.server.url_map.bind("localhost")
    for rule in studio.app.server.url_map.iter_rules():
        url = adapter.build(rule.endpoint, {name: RULE_VALUES[name] for name in rule.arguments})
        for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
            yield rule.endpoint, method, url


def test_every_url_rule_has_an_access_rule(studio: Studio) -> None:
    studio.signed_in("admin").get("/")  # Dash finishes its set-up on the first request
    assert unprotected_routes(studio.app) == []
    rules = endpoint_rules(studio.app)
    assert {endpoint for endpoint, access in rules.items() if access is Access.PUBLIC} == PUBLIC_ENDPOINTS


def test_every_callback_declares_a_permission(studio: Studio) -> None:
    studio.signed_in("admin").get("/")
    declared = callback_permissions(studio.app)
    assert declared[DASHBOARD_OUTPUT] is Permission.VIEW_DASHBOARD
    assert declared["projects-table.children"] is Permission.VIEW_PROJECTS
    assert declared[ROUTER_OUTPUT] is None  # Dash's router: checked against the page's permission instead
    assert unprotected_callbacks(studio.app) == []


def test_every_page_declares_a_valid_permission() -> None:
    for page in dash.page_registry.values():
        assert page_permission(page) in (*Permission, SIGNED_IN)
    with pytest.raises(ValueError, match="must declare permission"):
        page_permission({"module": "pages.forgotten"})
    with pytest.raises(ValueError, match="must declare permission"):
        page_permission({"module": "pages.typo", "permission": "view_everything"})


def test_anonymous_is_denied_on_every_route(studio: Studio) -> None:
    client = studio.client("10.5.0.1")
    token = login_form_token(client)
    checked = 0
    for endpoint, method, url in _concrete_requests(studio):
        if endpoint in PUBLIC_ENDPOINTS:
            continue
        response = client.open(url, method=method, headers={"X-CSRFToken": token}, json={})
        if rules_access(studio, endpoint) is Access.PAGE:
            assert response.status_code == 302, (method, url)
            assert response.headers["Location"].startswith("/login?next="), (method, url)
        else:
            assert response.status_code == 403, (method, url, response.status_code)
        checked += 1
    assert checked >= 8


def rules_access(studio: Studio, endpoint: str) -> Access:
    return endpoint_rules(studio.app)[endpoint]


def test_public_routes_reveal_nothing_private(studio: Studio) -> None:
    client = studio.client("10.5.0.2")
    assert client.get("/login").status_code == 200
    css = client.get("/vendor/bootstrap.min.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b"Bootstrap" in css.data[:200]
    assert client.get("/_favicon.ico").status_code == 200


def test_forged_callback_as_anonymous_is_refused(studio: Studio) -> None:
    client = studio.client("10.5.0.3")
    token = login_form_token(client)
    for body in (router_request("/"), component_request("projects-table"), router_request("/login")):
        response = client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
        assert response.status_code == 403
        assert response.get_json()["reason"] == "sign-in required"


def test_callback_post_without_csrf_header_is_refused(studio: Studio) -> None:
    client = studio.signed_in("admin", "10.5.0.4")
    body = component_request("projects-table")
    assert client.post("/_dash-update-component", json=body).status_code == 400
    wrong = client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": "0" * 43})
    assert wrong.status_code == 400
    assert client.post("/_dash-update-component", json=body, headers=csrf_header(client)).status_code == 200


def test_unknown_or_malformed_callbacks_are_refused(studio: Studio) -> None:
    client = studio.signed_in("admin", "10.5.0.5")
    headers = csrf_header(client)
    unknown = component_request("admin-secret-table")
    assert client.post("/_dash-update-component", json=unknown, headers=headers).status_code == 403
    assert client.post("/_dash-update-component", json={"outputs": []}, headers=headers).status_code == 400
    clientside = callback_request("_pages_dummy.children", {"id": "_pages_dummy", "property": "children"}, [])
    assert client.post("/_dash-update-component", json=clientside, headers=headers).status_code == 403


def test_user_without_roles_is_refused_page_and_callbacks(tmp_path: Path) -> None:
    studio = build_studio(tmp_path)
    try:
        with studio.db(write=True) as session:
            create_user(session, studio.actor("admin"), "newcomer", "newcomer-password")
        client = studio.client()
        token = login_form_token(client)
        response = client.post(
            "/login", data={"username": "newcomer", "password": "newcomer-password", "csrf_token": token}
        )
        assert response.status_code == 302
        page = client.get("/")
        assert page.status_code == 403 and "You hold no role on any project yet." in page.text
        headers = csrf_header(client)
        for body in (component_request("projects-table"), router_request("/projects")):
            refused = client.post("/_dash-update-component", json=body, headers=headers)
            assert refused.status_code == 403
        layout = client.get("/_dash-layout").get_json()
        assert [text for text in texts(layout) if text in ALL_PAGES] == []
        assert client.get("/not-found").status_code == 200  # the not-found page needs only a session
    finally:
        studio.close()


@pytest.mark.parametrize("username", sorted(NAVIGATION_BY_USER))
def test_pages_and_navigation_follow_the_permission_matrix(studio: Studio, username: str) -> None:
    client = studio.signed_in(username, "10.6.0.1")
    allowed = NAVIGATION_BY_USER[username]
    navigation = [text for text in texts(client.get("/_dash-layout").get_json()) if text in ALL_PAGES]
    assert navigation == list(allowed)
    headers = csrf_header(client)
    for name, path in PAGE_PATHS.items():
        expected = 200 if name in allowed else 403
        assert client.get(path).status_code == expected, (name, path)
        if path != "/":
            assert client.get(path + "/").status_code == expected, (name, path + "/")
        routed = client.post("/_dash-update-component", json=router_request(path), headers=headers)
        assert routed.status_code == expected, (name, path)
        if expected == 200:
            assert name in texts(routed.get_json())


def test_forged_login_pathname_grants_nothing(studio: Studio) -> None:
    client = studio.signed_in("sponsor1", "10.6.0.2")
    response = client.post(
        "/_dash-update-component", json=router_request("/login"), headers=csrf_header(client)
    )
    assert response.status_code == 200
    shown = texts(response.get_json())
    assert "Page not found" in shown
    assert not {"Admin", "Pipeline", "Integrations"} & set(shown)


def test_permitted_callbacks_answer_and_refused_ones_do_not(studio: Studio) -> None:
    client = studio.signed_in("sponsor2", "10.6.0.3")
    headers = csrf_header(client)
    body = callback_request(
        DASHBOARD_OUTPUT,
        [
            {"id": "dashboard-greeting", "property": "children"},
            {"id": "dashboard-roles", "property": "children"},
        ],
        [{"id": "dashboard-greeting", "property": "id", "value": "dashboard-greeting"}],
    )
    response = client.post("/_dash-update-component", json=body, headers=headers)
    assert response.status_code == 200
    shown = texts(response.get_json())
    assert "Welcome, Sasha Sponsor." in shown
    assert shown.count("model sponsor") == 2  # one role on each demo project


def test_callback_needing_a_permission_the_role_lacks_is_refused(tmp_path: Path) -> None:
    studio = build_studio(tmp_path)
    try:

        @studio.app.callback(Output("admin-users-count", "children"), Input("admin-users-count", "id"))
        @requires(Permission.ADMIN_USERS)
        def count_users(_component_id: str) -> str:
            return "7 accounts"

        @studio.app.callback(Output("forgotten-check", "children"), Input("forgotten-check", "id"))
        def forgotten(_component_id: str) -> str:
            return "anyone"

        assert unprotected_callbacks(studio.app) == ["forgotten-check.children"]
        for username, expected in (("sponsor1", 403), ("monitoring", 403), ("admin", 200)):
            client = studio.signed_in(username)
            headers = csrf_header(client)
            response = client.post(
                "/_dash-update-component", json=component_request("admin-users-count"), headers=headers
            )
            assert response.status_code == expected, username
            if expected == 200:
                assert json.loads(response.text)["response"]["admin-users-count"]["children"] == "7 accounts"
            # A callback without @requires is refused even to the administrator.
            refused = client.post(
                "/_dash-update-component", json=component_request("forgotten-check"), headers=headers
            )
            assert refused.status_code == 403
    finally:
        studio.close()


def test_requires_rechecks_inside_the_callback(studio: Studio) -> None:
    calls: list[str] = []

    @requires(Permission.VIEW_AUDIT)
    def read_audit() -> str:
        calls.append("ran")
        return "entries"

    with studio.app.server.test_request_context("/"), pytest.raises(PreventUpdate):
        read_audit()
    assert calls == []
    with pytest.raises(TypeError):
        requires("view_audit")  # type: ignore[arg-type]


def test_page_layouts_recheck_the_permission(studio: Studio) -> None:
    admin_page = next(page for page in dash.page_registry.values() if page["path"] == "/admin")
    with studio.app.server.test_request_context("/admin"):
        shown = texts(as_sent(admin_page["layout"]()))
    assert "Access denied" in shown
    assert "Admin" not in shown
