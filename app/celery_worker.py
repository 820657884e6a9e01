"""Celery worker of the studio's background callbacks (model training, monitoring backfills).

With ``MMS_BACKGROUND_MANAGER=celery`` the web workers do not run long jobs: the request that
starts one sends it to Celery through the broker (``MMS_CELERY_BROKER_URL``, default
``MMS_REDIS_URL``), and the web workers only read its progress and result from the result
backend (the same Redis). This module is what the Celery workers load::

    pip install -r requirements-celery.txt
    MMS_BACKGROUND_MANAGER=celery celery -A app.celery_worker worker --pool=prefork --concurrency=2

It builds the studio with :func:`app.factory.create_app` from the same ``MMS_*`` environment
as the web workers, so the same callbacks are registered as the same Celery tasks (a task's
name is a hash of the callback's id and source: web and worker must run the same code), and
exposes the Celery application of that studio's :class:`dash.CeleryManager` as
:data:`celery_app`, which ``celery -A`` finds.

In production the worker is the studio's image (built with ``requirements-celery.txt``) run
with another command: with docker compose a ``worker`` service beside ``studio`` sharing its
environment (plus a ``redis`` service and ``MMS_BACKGROUND_MANAGER=celery`` /
``MMS_REDIS_URL=redis://redis:6379/0`` on both), on ECS a second service of the same image with
``command = ["celery", "-A", "app.celery_worker", "worker", "--concurrency=2"]`` and the studio's
environment and secrets (Redis from ElastiCache). Workers need what the jobs need (metadata
database, data store, MLflow) and the broker; they expose no port. Scale them independently of
the web workers; the web workers then fork nothing.

Use the ``prefork`` pool (the default): cancelling a job (the page's Cancel button) terminates
the pool process running it, which the ``solo`` pool cannot do (it would run the job to the
end). Each job opens its own database engine and data store, so forked pool processes share
no connection with the worker's main process.
"""

from __future__ import annotations

from typing import Any

from app.factory import create_app
from app.settings import Settings, SettingsError, load_settings


def worker_celery_app(settings: Settings | None = None) -> Any:
    """The Celery application whose tasks are the studio's background callbacks.

    Args:
        settings: Settings to build the studio with; read from the ``MMS_*`` environment when
            ``None`` (as the web workers do).

    Returns:
        The ``celery.Celery`` application of the studio's :class:`dash.CeleryManager`, with one
        task per background callback.

    Raises:
        SettingsError: if ``MMS_BACKGROUND_MANAGER`` is not ``celery`` (the studio would run its
            jobs in forked processes and send nothing to Celery), or if celery is not installed.
    """
    settings = settings if settings is not None else load_settings()
    if settings.background_manager != "celery":
        raise SettingsError(
            f"the Celery worker needs MMS_BACKGROUND_MANAGER=celery (it is {settings.background_manager!r}):"
            " with any other manager the studio sends no job to Celery"
        )
    studio = create_app(settings)
    # Dash keeps the manager on a private attribute; its ``handle`` is the Celery application.
    return studio._background_manager.handle


# Built on import because ``celery -A app.celery_worker`` imports this module to find its app;
# nothing else imports it (the web workers build their own studio with create_app).
celery_app = worker_celery_app()
