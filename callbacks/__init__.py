"""Dash callbacks, registered with ``@dash.callback`` when this package is imported.

``app.factory.create_app`` imports it once; each module below holds the
callbacks of one page. Every callback declares its permission with
``@app.rbac.requires`` under ``@dash.callback``.
"""

import callbacks.approvals  # noqa: F401 - registers the Approvals page callbacks
from callbacks import admin, audit, cicd, dashboard, integrations, models, monitoring, pipeline, projects

__all__ = [
    "admin",
    "audit",
    "cicd",
    "dashboard",
    "integrations",
    "models",
    "monitoring",
    "pipeline",
    "projects",
]
