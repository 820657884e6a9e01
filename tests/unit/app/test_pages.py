"""What the pages and their callbacks show, and that user text is rendered as text."""

from __future__ import annotations

import json

import dash
import pytest
from plotly.utils import PlotlyJSONEncoder

from jobs.projects import create_project
from tests.unit.app.expectations import ALL_PAGES, PAGE_PATHS
from tests.unit.app.studio import Studio, component_request, csrf_header, router_request, texts

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"
DASHBOARD_OUTPUT = "..dashboard-greeting.children...dashboard-roles.children.."


def test_each_page_has_a_heading_and_a_description(studio: Studio) -> None:
    client = studio.signed_in("admin", "10.8.0.1")
    headers = csrf_header(client)
    for name, path in PAGE_PATHS.items():
        response = client.post("/_dash-update-component", json=router_request(path), headers=headers)
        content = response.get_json()["response"]["_pages_content"]["children"]
        shown = texts(content)
        assert shown[0] == name, path
        assert len(shown[1]) > 20, path  # the one-line description
        serialized = json.dumps(content).lower()
        assert "stub" not in serialized and "todo" not in serialized


def test_pages_are_layout_functions_in_registry_order() -> None:
    pages = [page for page in dash.page_registry.values() if page.get("nav", True)]
    assert [page["name"] for page in pages] == list(ALL_PAGES)
    for page in dash.page_registry.values():
        assert callable(page["layout"])
        json.dumps(page["layout"], cls=PlotlyJSONEncoder, default=str)


def test_projects_page_lists_only_visible_projects(studio: Studio) -> None:
    client = studio.signed_in("sponsor1", "10.8.0.2")
    response = client.post(
        "/_dash-update-component", json=component_request("projects-table"), headers=csrf_header(client)
    )
    shown = texts(response.get_json())
    assert "Credit risk" in shown and "Demand forecast" in shown
    assert "dev, staging, prod" in shown
    assert shown.count("model sponsor") == 2


def test_user_provided_names_are_rendered_as_text(studio: Studio) -> None:
    with studio.db(write=True) as session:
        create_project(session, studio.actor("admin"), "xss-check", XSS_NAME, f"{XSS_NAME} description")
    client = studio.signed_in("admin", "10.8.0.3")
    headers = csrf_header(client)
    table = client.post("/_dash-update-component", json=component_request("projects-table"), headers=headers)
    payload = table.get_json()
    assert XSS_NAME in texts(payload)  # a plain string child: React renders it as text
    assert "dangerously_allow_html" not in table.text and '"type":"Markdown"' not in table.text
    greeting = client.post(
        "/_dash-update-component",
        json={
            "output": DASHBOARD_OUTPUT,
            "outputs": [
                {"id": "dashboard-greeting", "property": "children"},
                {"id": "dashboard-roles", "property": "children"},
            ],
            "inputs": [{"id": "dashboard-greeting", "property": "id", "value": "dashboard-greeting"}],
            "changedPropIds": [],
            "state": [],
        },
        headers=headers,
    )
    assert XSS_NAME in texts(greeting.get_json())
