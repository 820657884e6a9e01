"""Helpers to drive a real studio through the Flask test client."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dash
from flask.testing import FlaskClient
from flask_login import login_user
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from app.auth import StudioUser, services
from app.factory import create_app
from app.rbac import ROUTER_OUTPUT
from app.security import CSRF_COOKIE_NAME, CSRF_HEADER_NAME
from app.settings import Settings, load_settings
from jobs.db import session_scope
from jobs.permissions import Actor
from jobs.projects import create_project
from jobs.seed import seed_demo_accounts
from jobs.users import actor_for, get_user
from tests.unit.app.expectations import demo_password

_TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def studio_settings(root: Path, **overrides: str) -> Settings:
    """Settings of an embedded studio under ``root`` (SQLite metadata DB, local data folder)."""
    environ = {"MMS_ENV": "test", "MMS_VAR_DIR": str(root / "var"), "MMS_DATA_URI": str(root / "data")}
    environ.update(overrides)
    return load_settings(environ)


@dataclass
class Studio:
    """A real app on a seeded temporary database."""

    app: dash.Dash
    settings: Settings

    def client(self, address: str = "127.0.0.1") -> FlaskClient:
        """A fresh test client (own cookie jar) coming from ``address``."""
        client = self.app.server.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client

    @contextmanager
    def db(self, *, write: bool = False) -> Iterator[Session]:
        """A session on the studio's metadata database (commits at the end)."""
        with session_scope(services(self.app.server).session_factory, write=write) as session:
            yield session

    def actor(self, username: str) -> Actor:
        """The current :class:`Actor` of ``username``."""
        with self.db() as session:
            user = get_user(session, username)
            assert user is not None, username
            actor = actor_for(session, user.id)
        assert actor is not None, username
        return actor

    def signed_in(self, username: str, address: str = "127.0.0.1") -> FlaskClient:
        """A client signed in as the demo account ``username``."""
        client = self.client(address)
        response = sign_in(client, username, demo_password(username))
        assert response.status_code == 302, response.text
        return client

    def close(self) -> None:
        """Release the database connections."""
        services(self.app.server).engine.dispose()

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def build_studio(root: Path, *, seed: bool = True, hidden_project: bool = False) -> Studio:
    """Create an app on a fresh database under ``root``, seeded with the demo accounts.

    Args:
        root: Folder of the studio's database and data.
        seed: Whether to create the demo accounts and projects.
        hidden_project: Whether to add ``hidden-project`` too, on which no demo member holds a role.
    """
    settings = studio_settings(root)
    app = create_app(settings)
    studio = Studio(app=app, settings=settings)
    if seed:
        with studio.db(write=True) as session:
            assert seed_demo_accounts(session)
    if hidden_project:
        with studio.db(write=True) as session:
            create_project(session, studio.actor("admin"), "hidden-project", "Hidden project")
    return studio


def login_form_token(client: FlaskClient) -> str:
    """The CSRF token of the sign-in form (GET /login)."""
    response = client.get("/login")
    assert response.status_code == 200
    match = _TOKEN_FIELD.search(response.text)
    assert match, response.text
    return match.group(1)


def sign_in(client: FlaskClient, username: str, password: str, **extra: str) -> TestResponse:
    """Post the sign-in form with a valid CSRF token."""
    token = login_form_token(client)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token, **extra}
    )


def csrf_header(client: FlaskClient) -> dict[str, str]:
    """The header dash-renderer sends: the CSRF cookie copied into ``X-CSRFToken``."""
    cookie = client.get_cookie(CSRF_COOKIE_NAME)
    assert cookie is not None, "no CSRF cookie yet"
    return {CSRF_HEADER_NAME: cookie.value}


def callback_request(
    output: str, outputs: Any, inputs: list[dict[str, Any]], changed: list[str] | None = None
) -> dict[str, Any]:
    """A ``/_dash-update-component`` body as dash-renderer builds it."""
    return {
        "output": output,
        "outputs": outputs,
        "inputs": inputs,
        "changedPropIds": changed or [],
        "state": [],
    }


def router_request(pathname: str) -> dict[str, Any]:
    """The body of Dash's page-routing callback for ``pathname``."""
    return callback_request(
        ROUTER_OUTPUT,
        [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
        [
            {"id": "_pages_location", "property": "pathname", "value": pathname},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
        ["_pages_location.pathname"],
    )


def component_request(component_id: str, prop: str = "children") -> dict[str, Any]:
    """The body of a single-output callback triggered by its own component's ``id``."""
    return callback_request(
        f"{component_id}.{prop}",
        {"id": component_id, "property": prop},
        [{"id": component_id, "property": "id", "value": component_id}],
    )


def texts(node: Any, in_children: bool = False) -> list[str]:
    """Every string a Dash JSON component tree shows as text (the values under ``children``)."""
    if isinstance(node, str):
        return [node] if in_children else []
    if isinstance(node, list):
        return [text for item in node for text in texts(item, in_children)]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in texts(value, key == "children")]
    return []


@contextmanager
def signed_in(studio: Studio, username: str) -> Iterator[None]:
    """A request context of ``studio`` in which ``username`` is the signed-in user (to call callbacks)."""
    with studio.app.server.test_request_context("/_dash-update-component", method="POST"):
        login_user(StudioUser(studio.actor(username)))
        yield


def as_sent(component: Any) -> Any:
    """A component tree as the JSON Dash sends to the browser."""
    return json.loads(json.dumps(component, cls=PlotlyJSONEncoder))


def shown(component: Any) -> list[str]:
    """The texts a component tree renders, through the JSON Dash sends to the browser."""
    return texts(as_sent(component))


def component_ids(tree: Any) -> set[str]:
    """The ids in a component tree as Dash sends it (:func:`as_sent`); pattern-matching ones as JSON."""
    found: set[str] = set()
    if isinstance(tree, dict):
        own = tree["props"].get("id") if isinstance(tree.get("props"), dict) else None
        if own is not None:
            found.add(json.dumps(own, sort_keys=True) if isinstance(own, dict) else own)
        for value in tree.values():
            found |= component_ids(value)
    elif isinstance(tree, list):
        for value in tree:
            found |= component_ids(value)
    return found
