"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:server``.

The studio is built when this module is imported (settings from ``MMS_*``).
In production run ``python -m jobs migrate`` before starting the workers.
"""

from __future__ import annotations

from app.factory import create_app

server = create_app().server
