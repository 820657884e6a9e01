"""The frame around every page: navigation bar, user menu and the page container.

The navigation lists only the pages the signed-in user's roles open; the guard
in :mod:`app.rbac` refuses the others anyway, so hiding them is a courtesy, not
the protection.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import html

from app.auth import current_actor
from app.components import ids
from app.rbac import navigation_pages
from app.security import CSRF_FORM_FIELD, csrf_token
from jobs.permissions import Actor

BRAND = "Model Monitoring Studio"


def _roles_summary(actor: Actor) -> str:
    roles = sorted(role.value.replace("_", " ") for role in actor.roles_in(None))
    return ", ".join(roles) if roles else "no project role yet"


def _user_menu(actor: Actor) -> dbc.DropdownMenu:
    sign_out = html.Form(
        # A submit button's name/value is posted with the form: the CSRF token travels with the click.
        html.Button(
            "Sign out",
            id=ids.LOGOUT_BUTTON,
            type="submit",
            name=CSRF_FORM_FIELD,
            value=csrf_token(),
            className="dropdown-item",
        ),
        method="POST",
        action="/logout",
    )
    return dbc.DropdownMenu(
        [
            dbc.DropdownMenuItem(f"Signed in as {actor.username}", header=True),
            dbc.DropdownMenuItem(_roles_summary(actor), header=True, class_name="small"),
            dbc.DropdownMenuItem(divider=True),
            sign_out,
        ],
        id=ids.USER_MENU,
        label=actor.username,
        nav=True,
        in_navbar=True,
        align_end=True,
    )


def navbar(actor: Actor | None) -> dbc.Navbar:
    """The top bar: brand, links to the pages ``actor`` may open, and the user menu."""
    links = [
        dbc.NavItem(
            dbc.NavLink(
                page["name"], href=page["relative_path"], active="exact", id=ids.nav_link(page["path"])
            )
        )
        for page in navigation_pages(actor)
    ]
    right = [_user_menu(actor)] if actor is not None else []
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand(BRAND, href="/"),
                dbc.Nav(links, navbar=True, className="me-auto flex-wrap"),
                dbc.Nav(right, navbar=True),
            ],
            fluid=True,
        ),
        id=ids.NAVBAR,
        color="dark",
        dark=True,
        expand="lg",
        class_name="mb-3",
    )


def shell_layout() -> html.Div:
    """The application layout (a function: the navigation depends on who asks)."""
    return html.Div(
        [navbar(current_actor()), dbc.Container(dash.page_container, fluid=True, class_name="pb-4")]
    )
