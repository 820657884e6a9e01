"""Component ids shared by page layouts and the callbacks that fill them.

An id says what the component shows, prefixed by the page it lives on.
"""

from __future__ import annotations

NAVBAR = "nav-bar"
NAV_LINK_PREFIX = "nav-link-"
USER_MENU = "nav-user-menu"
LOGOUT_BUTTON = "nav-sign-out"
PAGE_TITLE = "page-title"
PAGE_DESCRIPTION = "page-description"

DASHBOARD_GREETING = "dashboard-greeting"
DASHBOARD_ROLES = "dashboard-roles"

PROJECTS_TABLE = "projects-table"


def nav_link(page_path: str) -> str:
    """Id of the navigation link to the page at ``page_path`` (``/`` becomes ``dashboard``)."""
    slug = page_path.strip("/").replace("/", "-") or "dashboard"
    return f"{NAV_LINK_PREFIX}{slug}"
