"""Component ids shared by page layouts and the callbacks that fill them.

An id says what the component shows, prefixed by the page it lives on. The ids of the
studio's frame (navigation, page header) are here; each page's own ids are the ``ID``
class of the module named after the page (``app.components.ids.admin`` for
``pages/admin.py`` and ``callbacks/admin.py``): pages may not import callbacks, so
both import the ids from here.
"""

from __future__ import annotations

NAVBAR = "nav-bar"
NAV_LINK_PREFIX = "nav-link-"
USER_MENU = "nav-user-menu"
LOGOUT_BUTTON = "nav-sign-out"
PAGE_TITLE = "page-title"
PAGE_DESCRIPTION = "page-description"


def nav_link(page_path: str) -> str:
    """Id of the navigation link to the page at ``page_path`` (``/`` becomes ``dashboard``)."""
    slug = page_path.strip("/").replace("/", "-") or "dashboard"
    return f"{NAV_LINK_PREFIX}{slug}"
