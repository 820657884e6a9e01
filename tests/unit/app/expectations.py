"""What each demo account must see: the navigation derived by hand from ``jobs.permissions.MATRIX``.

Written out rather than computed so a change to the matrix or to a page's
permission shows up as a failing test that someone has to look at.
"""

from __future__ import annotations

ALL_PAGES = (
    "Dashboard",
    "Projects",
    "Pipeline",
    "Monitoring",
    "Models",
    "Approvals",
    "CI/CD",
    "Integrations",
    "Admin",
    "Audit log",
)
_BUILDERS = ("Dashboard", "Projects", "Pipeline", "Monitoring", "Models", "Approvals", "CI/CD")
_SPONSOR = ("Dashboard", "Projects", "Monitoring", "Models", "Approvals", "Audit log")

NAVIGATION_BY_USER: dict[str, tuple[str, ...]] = {
    "admin": ALL_PAGES,
    "mlengineer": _BUILDERS,
    "datateam": _BUILDERS,
    "production": (*_BUILDERS, "Integrations"),
    "monitoring": (*_BUILDERS, "Audit log"),
    "sponsor1": _SPONSOR,
    "sponsor2": _SPONSOR,
}

PAGE_PATHS: dict[str, str] = {
    "Dashboard": "/",
    "Projects": "/projects",
    "Pipeline": "/pipeline",
    "Monitoring": "/monitoring",
    "Models": "/models",
    "Approvals": "/approvals",
    "CI/CD": "/cicd",
    "Integrations": "/integrations",
    "Admin": "/admin",
    "Audit log": "/audit",
}


def demo_password(username: str) -> str:
    """The fixed demo password ``jobs.seed`` gives ``username``."""
    return f"{username}-demo-pass"
