"""Role-based access control of every route, page and callback: deny unless a rule allows.

Three places declare what a request needs:

* Flask endpoints: :func:`endpoint_rules` maps each endpoint to an :class:`Access`
  level. An endpoint missing from the map is refused with 403, so a route added
  later stays closed until someone decides who may use it.
* Dash pages: ``dash.register_page(..., permission="view_projects")`` (a
  :class:`~jobs.permissions.Permission` value, or :data:`SIGNED_IN` for pages
  every signed-in user may open). Pages pass a plain string because ``pages/``
  must not import ``jobs``; :func:`protect_pages` validates it at start-up.
* Callbacks: ``@requires(Permission.X)`` placed *under* ``@dash.callback``.
  The permission travels on the function Dash stores in ``app.callback_map``
  (``functools.wraps`` copies it), so the guard reads it from the map of the very
  app serving the request. A callback without it is refused.

The single ``before_request`` guard installed by :func:`init_app` enforces all
three; the decorator re-checks inside the callback and each page layout re-checks
before rendering, so a mistake in one layer still fails closed.

Background callbacks (``@dash.callback(..., background=True)``) run in another
process (a diskcache job started from the fork server, or a Celery worker) without the Flask request.
The guard checks their permission on every request that starts, polls or cancels
them; :func:`init_app` wraps each one so the request that starts it re-checks the
permission and hands the signed-in user to the job inside Dash's callback context
(server-side data the client cannot set), where :func:`acting_actor` finds it.
The cancel callbacks Dash adds for ``cancel=[Input(...)]`` need the permission of
the background callback they cancel.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

import dash
from dash import Output, html
from dash._utils import create_callback_id
from dash.exceptions import PreventUpdate
from flask import Response, has_request_context, jsonify, redirect, request, url_for

from app.auth import current_actor, forbidden_page
from jobs.permissions import Actor, Permission, Role, has_permission

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

PERMISSION_ATTRIBUTE = "__mms_permission__"
# Key of the acting user in the callback context a background job receives (JSON-safe for Celery).
BACKGROUND_ACTOR_KEY = "mms_acting_user"
# What Dash names the callback it adds for a background callback's ``cancel`` inputs.
_DASH_CANCEL_CALLBACK = ("dash.dash", "cancel_call")
GUARDED_LAYOUT_ATTRIBUTE = "__mms_guarded_layout__"
# Page permission meaning "any signed-in user" (the not-found page).
SIGNED_IN = "signed_in"

# Ids of the components dash.page_container is made of (Dash's own routing callback).
PAGES_LOCATION_ID = "_pages_location"
PAGES_CONTENT_ID = "_pages_content"
PAGES_STORE_ID = "_pages_store"
ROUTER_OUTPUT = create_callback_id([Output(PAGES_CONTENT_ID, "children"), Output(PAGES_STORE_ID, "data")], [])


class Access(Enum):
    """What a Flask endpoint requires."""

    PUBLIC = "public"
    SIGNED_IN = "signed_in"
    PAGE = "page"
    CALLBACK = "callback"


# ---------------------------------------------------------------------------- callbacks


def requires(permission: Permission) -> Callable[[F], F]:
    """Declare the permission a Dash callback needs; put it directly under ``@dash.callback``.

    The guard refuses ``/_dash-update-component`` requests for the callback with
    403 unless the signed-in user holds ``permission`` on at least one project;
    inside the callback the check is repeated and a refused call raises
    :class:`~dash.exceptions.PreventUpdate`. Project-scoped checks stay the job's
    business (``jobs.permissions.require(actor, permission, project)``).

    Args:
        permission: The permission the callback needs.

    Raises:
        TypeError: if ``permission`` is not a :class:`Permission`.
    """
    if not isinstance(permission, Permission):
        raise TypeError(f"@requires needs a jobs.permissions.Permission, got {permission!r}")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not has_permission(acting_actor(), permission):
                raise PreventUpdate
            return func(*args, **kwargs)

        setattr(guarded, PERMISSION_ATTRIBUTE, permission)
        return guarded  # type: ignore[return-value]

    return decorate


def callback_permission(entry: Mapping[str, Any]) -> Permission | None:
    """The permission declared by ``@requires`` on a ``callback_map`` entry, ``None`` when absent."""
    func = entry.get("callback")
    permission = getattr(func, PERMISSION_ATTRIBUTE, None)
    return permission if isinstance(permission, Permission) else None


def _cancel_permissions(app: dash.Dash) -> dict[str, Permission]:
    """Output of each cancel callback Dash adds -> the permission of the background callback it stops.

    A cancel input shared by background callbacks of different permissions gets none (refused).
    """
    found: dict[str, set[Permission]] = {}
    for entry in app.callback_map.values():
        background = entry.get("background")
        permission = callback_permission(entry)
        if not isinstance(background, dict) or permission is None:
            continue
        for cancel in background.get("cancel") or []:
            if isinstance(cancel, dict) and isinstance(cancel.get("id"), str):
                found.setdefault(f"{cancel['id']}.id", set()).add(permission)
    return {output: next(iter(held)) for output, held in found.items() if len(held) == 1}


def _is_dash_cancel(entry: Mapping[str, Any]) -> bool:
    func = entry.get("callback")
    return (getattr(func, "__module__", None), getattr(func, "__name__", None)) == _DASH_CANCEL_CALLBACK


def _permission_of(app: dash.Dash, output: str, entry: Mapping[str, Any]) -> Permission | None:
    permission = callback_permission(entry)
    if permission is None and _is_dash_cancel(entry):
        return _cancel_permissions(app).get(output)
    return permission


def callback_permissions(app: dash.Dash) -> dict[str, Permission | None]:
    """Output id -> declared permission of every server-side callback of ``app`` (``None``: none).

    Dash's cancel callbacks of background callbacks count with the permission of what they cancel.
    """
    return {
        output: _permission_of(app, output, entry)
        for output, entry in app.callback_map.items()
        if "callback" in entry
    }


# ---------------------------------------------------------------------------- background callbacks


def actor_payload(actor: Actor) -> dict[str, Any]:
    """``actor`` as JSON-safe data (a Celery job receives its context as JSON)."""
    return {
        "user_id": actor.user_id,
        "username": actor.username,
        "is_admin": actor.is_admin,
        "roles": {project: sorted(role.value for role in roles) for project, roles in actor.roles.items()},
    }


def actor_from_payload(payload: Any) -> Actor | None:
    """The :class:`Actor` :func:`actor_payload` described, ``None`` for anything malformed."""
    if not isinstance(payload, Mapping):
        return None
    try:
        roles = payload.get("roles") or {}
        return Actor(
            user_id=int(payload["user_id"]),
            username=str(payload["username"]),
            is_admin=payload.get("is_admin") is True,
            roles={str(project): frozenset(Role(role) for role in held) for project, held in roles.items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def acting_actor() -> Actor | None:
    """Who a callback acts for: the signed-in user, or in a background job the user who started it.

    Inside a request the session decides (a callback context left over in a reused
    worker thread is never trusted there). Outside one (a Celery worker), the user the
    starting request placed in the job's callback context; ``None`` when there is none.
    """
    if has_request_context():
        return current_actor()
    from dash._callback_context import context_value

    try:
        context = context_value.get()
    except LookupError:
        return None
    payload = context.get(BACKGROUND_ACTOR_KEY) if isinstance(context, Mapping) else None
    return actor_from_payload(payload)


def _hand_actor_to_background(callback: Callable[..., Any], permission: Permission) -> Callable[..., Any]:
    """Wrap the request side of a background callback: re-check, then pass the user to the job."""

    @functools.wraps(callback)
    def start_or_poll(*args: Any, **kwargs: Any) -> Any:
        actor = current_actor()
        if not has_permission(actor, permission):
            raise PreventUpdate
        context = kwargs.get("callback_context")
        if isinstance(context, dict):
            # Dash copies this context into the job it starts; the client never sets this key.
            context[BACKGROUND_ACTOR_KEY] = actor_payload(actor)  # type: ignore[arg-type]
        return callback(*args, **kwargs)

    return start_or_poll


def prepare_background_callbacks(app: dash.Dash) -> None:
    """Wrap every background callback of ``app`` with :func:`_hand_actor_to_background` (once)."""
    for entry in app.callback_map.values():
        permission = callback_permission(entry)
        callback = entry.get("callback")
        if (
            entry.get("background")
            and permission is not None
            and callback is not None
            and not getattr(callback, "__mms_background_wrapped__", False)
        ):
            wrapped = _hand_actor_to_background(callback, permission)
            wrapped.__mms_background_wrapped__ = True  # type: ignore[attr-defined]
            entry["callback"] = wrapped


def unprotected_callbacks(app: dash.Dash) -> list[str]:
    """Server-side callbacks of ``app`` that declare no permission (Dash's page router excepted)."""
    return sorted(
        output
        for output, permission in callback_permissions(app).items()
        if permission is None and output != ROUTER_OUTPUT
    )


# ---------------------------------------------------------------------------- pages


def page_permission(page: Mapping[str, Any]) -> Permission | str:
    """The validated permission of a ``dash.page_registry`` entry.

    Returns:
        A :class:`Permission`, or :data:`SIGNED_IN`.

    Raises:
        ValueError: if the page declares no permission or an unknown one.
    """
    raw = page.get("permission")
    if raw == SIGNED_IN:
        return SIGNED_IN
    try:
        return Permission(raw)
    except ValueError:
        raise ValueError(
            f"page {page.get('module')!r} must declare permission=<a jobs.permissions.Permission value "
            f"or {SIGNED_IN!r}> in dash.register_page, not {raw!r}"
        ) from None


def may_open(actor: Actor | None, page: Mapping[str, Any]) -> bool:
    """Whether ``actor`` may open ``page`` (deny by default, anonymous never)."""
    if actor is None:
        return False
    try:
        permission = page_permission(page)
    except ValueError:
        return False
    return permission == SIGNED_IN or has_permission(actor, permission)


def navigation_pages(actor: Actor | None) -> list[dict[str, Any]]:
    """Pages to list in the navigation bar for ``actor``, in registry order."""
    return [page for page in dash.page_registry.values() if page.get("nav", True) and may_open(actor, page)]


def page_for_path(app: dash.Dash, pathname: str | None) -> dict[str, Any] | None:
    """The registered page Dash's router would render for ``pathname``, ``None`` for none."""
    if not isinstance(pathname, str):
        return None
    from dash._pages import _path_to_page  # the router's own resolution, so both agree

    page, _variables = _path_to_page(app.strip_relative_path(pathname))
    return page or None


def _accepted_keywords(func: Callable[..., Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    parameters = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda kwargs: kwargs
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return lambda kwargs: {k: v for k, v in kwargs.items() if k in names}


def access_denied(name: str) -> html.Div:
    """What a page shows in place of its content for a user without its permission."""
    return html.Div(
        [
            html.H1("Access denied", className="h3"),
            html.P(f"Your roles do not include access to {name}.", id="page-access-denied"),
        ]
    )


def _guard_layout(page: dict[str, Any]) -> None:
    layout = page.get("layout")
    if getattr(layout, GUARDED_LAYOUT_ATTRIBUTE, False):
        return
    if not callable(layout):
        raise ValueError(f"page {page['module']!r} must pass layout=<a function> to dash.register_page")
    select_keywords = _accepted_keywords(layout)

    @functools.wraps(layout)
    def guarded_layout(**kwargs: Any) -> Any:
        # Dash passes query-string values as keywords; a layout only receives those it declares.
        if not may_open(current_actor(), page):
            return access_denied(page["name"])
        return layout(**select_keywords(kwargs))

    setattr(guarded_layout, GUARDED_LAYOUT_ATTRIBUTE, True)
    page["layout"] = guarded_layout


def protect_pages() -> None:
    """Validate every registered page's permission and make its layout re-check it.

    Raises:
        ValueError: for a page without a valid permission or without a layout function.
    """
    for page in dash.page_registry.values():
        page_permission(page)
        _guard_layout(page)


# ---------------------------------------------------------------------------- routes


def endpoint_rules(app: dash.Dash) -> dict[str, Access]:
    """The access level of every Flask endpoint the studio serves; anything else is refused."""
    prefix = app.config.routes_pathname_prefix
    assets_blueprint = prefix.replace("/", "_").replace(".", "_") + "dash_assets"
    return {
        # Sign-in page and what it loads; sign-out (CSRF-checked) works for expired sessions too.
        "auth.login": Access.PUBLIC,
        "auth.logout": Access.PUBLIC,
        "vendor.bootstrap_css": Access.PUBLIC,
        f"{prefix}_favicon.ico": Access.PUBLIC,
        # The Dash application itself is for signed-in users only.
        f"{prefix}_dash-layout": Access.SIGNED_IN,
        f"{prefix}_dash-dependencies": Access.SIGNED_IN,
        f"{prefix}_dash-component-suites/<string:package_name>/<path:fingerprinted_path>": Access.SIGNED_IN,
        f"{prefix}_reload-hash": Access.SIGNED_IN,
        f"{assets_blueprint}.static": Access.SIGNED_IN,
        prefix: Access.PAGE,
        f"{prefix}<path:path>": Access.PAGE,
        f"{prefix}_dash-update-component": Access.CALLBACK,
    }


def unprotected_routes(app: dash.Dash) -> list[str]:
    """URL rules of ``app.server`` whose endpoint has no access rule (each would answer 403)."""
    rules = endpoint_rules(app)
    return sorted(
        f"{rule.rule} ({rule.endpoint})"
        for rule in app.server.url_map.iter_rules()
        if rule.endpoint not in rules
    )


def _refuse(reason: str, status: int = 403) -> Response:
    log.info("refused %s %s: %s", request.method, request.path, reason)
    response = jsonify({"error": "forbidden" if status == 403 else "bad request", "reason": reason})
    response.status_code = status
    return response


def _input_value(body: Mapping[str, Any], component_id: str, prop: str) -> Any:
    for item in body.get("inputs") or []:
        if isinstance(item, dict) and item.get("id") == component_id and item.get("property") == prop:
            return item.get("value")
    return None


def _check_callback(app: dash.Dash, actor: Actor) -> Response | None:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return _refuse("malformed callback request", 400)
    output = body["output"]
    entry = app.callback_map.get(output)
    if entry is None or "callback" not in entry:
        return _refuse(f"unknown callback {output[:200]!r}")
    if output == ROUTER_OUTPUT:
        page = page_for_path(app, _input_value(body, PAGES_LOCATION_ID, "pathname"))
        if page is not None and not may_open(actor, page):
            return _refuse(f"page {page['path']} needs {page.get('permission')}")
        return None
    permission = _permission_of(app, output, entry)
    if permission is None:
        return _refuse(f"callback {output[:200]!r} declares no permission")
    if not has_permission(actor, permission):
        return _refuse(f"callback needs {permission.value}")
    return None


def init_app(app: dash.Dash) -> None:
    """Install the deny-by-default guard on ``app.server`` and protect the registered pages.

    Raises:
        ValueError: if a page lacks a valid permission or a layout function.
        RuntimeError: if a server-side callback lacks ``@requires``.
    """
    protect_pages()
    missing = unprotected_callbacks(app)
    if missing:
        raise RuntimeError(f"callbacks without @requires(Permission...): {', '.join(missing)}")
    prepare_background_callbacks(app)
    rules = endpoint_rules(app)

    def guard() -> Response | tuple[str, int] | None:
        rule = request.url_rule
        if rule is None:
            return None  # no route matched: Flask answers 404/405 with nothing to protect
        access = rules.get(rule.endpoint)
        if access is None:
            return _refuse(f"endpoint {rule.endpoint!r} has no access rule")
        if access is Access.PUBLIC:
            return None
        actor = current_actor()
        if actor is None:
            if access is Access.PAGE and request.method in ("GET", "HEAD"):
                target = request.full_path if request.query_string else request.path
                return redirect(url_for("auth.login", next=target))
            return _refuse("sign-in required")
        if access is Access.SIGNED_IN:
            return None
        if access is Access.PAGE:
            page = page_for_path(app, request.path)
            if page is not None and not may_open(actor, page):
                if not actor.is_admin and not actor.roles:
                    return forbidden_page(
                        "You hold no role on any project yet. Ask an administrator to add you to a project."
                    )
                return forbidden_page(f"Your roles do not include access to {page['name']}.")
            return None
        return _check_callback(app, actor)

    app.server.before_request(guard)
