"""Model Monitoring Studio web application (Dash on Flask).

Nothing is imported eagerly here: ``app.settings`` must stay importable by
jobs and notebooks without loading dash or flask.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(name)
