"""Background callbacks of the diskcache manager, run in a process that never ran a web thread.

Dash's :class:`dash.DiskcacheManager` starts a job by forking the web worker from the thread
that serves the request. The worker is multi-threaded (Flask's threaded server, gunicorn's
``gthread`` workers): a fork copies every lock another thread holds at that instant (the import
lock, a logging handler's, a connection pool's, MLflow's store cache) into a child where no
thread will ever release it, and a job that then needs one waits forever. CI saw it: a second
training started while the page's registry callback was reading MLflow in another thread
never reported progress.

:class:`ForkserverJobManager` keeps Dash's diskcache protocol (results and progress in the same
cache, the job's pid as its handle, cancel by killing that pid) but starts each job from
:mod:`multiprocessing`'s fork server: one single-threaded process per web worker, started with the
manager, that has imported the studio's callbacks. A job is a fork of that process, so it
starts in milliseconds and inherits no held lock. Being no fork of the web worker, it has no
Flask application: it gets the studio's :class:`~app.settings.Settings` from the manager
(:func:`current_job_settings`) and its user from the callback context, as a Celery worker does.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import multiprocessing
import multiprocessing.forkserver
from dataclasses import dataclass
from typing import Any

import dash
import psutil

from app.settings import Settings

CALLBACKS_PACKAGE = "callbacks"
_FORKSERVER = multiprocessing.get_context("forkserver")
# The fork server imports this module, and with it the callbacks, once; every job forks from it.
_FORKSERVER.set_forkserver_preload([__name__, CALLBACKS_PACKAGE])
# Per job: when its process started (psutil's create_time), to tell it from a later owner of its pid.
_STARTED_KEY = "mms-background-job-started-{pid}"
_JOB_SETTINGS: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "mms_job_settings", default=None
)


def current_job_settings() -> Settings | None:
    """The settings of the studio that started the background job running in this process.

    Returns:
        ``None`` outside such a job (in a web worker, or a job run by Celery).
    """
    return _JOB_SETTINGS.get()


@dataclass(frozen=True)
class _RegisteredJob:
    """What the manager keeps per background callback: the key a fresh process finds it by (the
    fresh process's own Dash registry knows its progress outputs)."""

    function_key: str


class ForkserverJobManager(dash.DiskcacheManager):
    """Dash's diskcache manager whose jobs start from a fork server instead of the web worker.

    Args:
        cache: The ``diskcache.Cache`` holding results and progress (shared by the host's workers).
        settings: The studio's settings, handed to every job.
        cache_by: As :class:`dash.DiskcacheManager`.
        expire: As :class:`dash.DiskcacheManager`.
    """

    def __init__(
        self, cache: Any, settings: Settings, cache_by: Any = None, expire: int | None = None
    ) -> None:
        self._settings = settings
        super().__init__(cache, cache_by=cache_by, expire=expire)
        # Start the fork server now (once per process; this returns at once): its imports take 2-3 s,
        # more on a busy host, and a job started before they end waits for them in the request.
        multiprocessing.forkserver.ensure_running()

    def make_job_fn(self, fn: Any, progress: bool, key: str | None = None) -> _RegisteredJob:
        if key is None:
            raise ValueError(f"background callback {getattr(fn, '__name__', fn)!r} registered without a key")
        return _RegisteredJob(function_key=key)

    def call_job_fn(self, key: str, job_fn: _RegisteredJob, args: Any, context: Any) -> int:
        process = _FORKSERVER.Process(
            target=run_job,
            args=(
                job_fn.function_key,
                self.handle.directory,
                key,
                self._make_progress_key(key),
                args,
                dict(context),
                self._settings,
            ),
            daemon=False,
        )
        process.start()
        assert process.pid is not None
        # Already finished (no such process): nothing left to cancel, nothing to record.
        with contextlib.suppress(psutil.NoSuchProcess):
            started = psutil.Process(process.pid).create_time()
            self.handle.set(_STARTED_KEY.format(pid=process.pid), started, expire=self.expire)
        return process.pid

    def _job_process(self, job: Any) -> psutil.Process | None:
        """The running process of the job whose handle is ``job``, or ``None``.

        The fork server reaps a finished job at once, so its pid is soon free for any new
        process: only a process started when this manager recorded it counts (Dash's own
        manager would kill whatever holds the pid now).
        """
        try:
            pid = int(job)
            started = self.handle.get(_STARTED_KEY.format(pid=pid))
            process = psutil.Process(pid)
            if started is None or process.create_time() != started:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError, ValueError):
            return None

    def job_running(self, job: Any) -> bool:
        process = self._job_process(job)
        try:
            return process is not None and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def terminate_job(self, job: Any) -> None:
        process = self._job_process(job)
        if process is None:
            return
        # The job may end on its own at any moment: each step tolerates a process already gone.
        try:
            doomed = [*process.children(recursive=True), process]
        except psutil.NoSuchProcess:
            return
        for member in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(doomed, timeout=1)

    def terminate_unhealthy_job(self, job: Any) -> None:
        if self._job_process(job) is not None and not self.job_running(job):
            self.terminate_job(job)


def run_job(
    function_key: str,
    cache_directory: str,
    result_key: str,
    progress_key: str,
    args: Any,
    context: dict[str, Any],
    settings: Settings,
) -> None:
    """Run one background callback in this (forked-from-the-fork-server) process.

    Dash's own job wrapper does the work: it calls the callback with ``set_progress`` and the
    callback's arguments and stores the result, a ``PreventUpdate`` or the error's traceback
    under ``result_key``.

    Args:
        function_key: The key Dash registered the callback under (a hash of its id and source).
        cache_directory: Directory of the manager's ``diskcache.Cache``.
        result_key: Where the job's result goes.
        progress_key: Where its progress reports go.
        args: The callback's arguments, as the starting request passed them.
        context: The callback context of the starting request (the acting user included).
        settings: The studio's settings.
    """
    import diskcache

    importlib.import_module(CALLBACKS_PACKAGE)  # registers the callbacks (already done by the preload)
    cache = diskcache.Cache(cache_directory)
    try:
        # A plain manager over the same cache: its registry wraps each callback in Dash's job function.
        job = dash.DiskcacheManager(cache).func_registry.get(function_key)
        if job is None:
            # The web worker runs other code than this process imported: say so instead of hanging.
            error = f"no background callback {function_key[:12]}... in this process: restart the studio"
            cache.set(result_key, {"background_callback_error": {"msg": error, "tb": ""}})
            return
        token = _JOB_SETTINGS.set(settings)
        try:
            job(result_key, progress_key, args, context)
        finally:
            _JOB_SETTINGS.reset(token)
    finally:
        cache.close()
