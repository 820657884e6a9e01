"""The inference gateway: a Starlette (ASGI) app served by uvicorn workers.

Why ASGI on uvicorn rather than WSGI: jobs never import Flask, and both Starlette
and uvicorn already come with MLflow. One event loop per worker process scores
requests inline when the version is fast (scoring is CPU-bound: with one worker per
core, a thread pool would only add GIL hand-offs; slow or not yet measured versions
go to a small pool so the scoring deadline can fire), while background threads
refresh routes and write logs. Single-record requests that arrive together are scored in one estimator
call (:class:`MicroBatcher`): a scikit-learn pipeline costs about as much for 64
rows as for one. Linear pipelines trained by ``jobs.training`` skip scikit-learn on
the request path altogether (:mod:`jobs.gateway.fastpath`, checked against the
estimator at load), so the per-request cost is mostly the HTTP handling (about
0.3-0.5 ms of CPU per request in ``bench/gateway_bench.py``).

Endpoints (``docs/GATEWAY.md`` has the payloads):

* ``POST /v1/models/{model}/predict?project=P`` — one record or ``{"instances": [...]}``;
* ``POST /v1/feedback`` — late labels, written to ``labels``;
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import anyio
import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from analytics.store import ParquetStore, StoreError
from app.settings import Settings, load_settings
from jobs import registry
from jobs.contracts import (
    INFERENCE_LOGS,
    LABELS,
    MAX_ERROR_MESSAGE_LENGTH,
    REQUEST_ERRORS,
    key_segment_problem,
)
from jobs.gateway import metrics as m
from jobs.gateway.config import PREFIX, GatewayConfig
from jobs.gateway.logbuffer import LogBuffer
from jobs.gateway.models import (
    BAD_OUTPUT,
    MODEL_ERROR,
    TIMEOUT,
    DeploymentCache,
    FieldError,
    LoadedModel,
    MlflowModelLoader,
    ModelLoader,
    PayloadError,
    parse_segments,
)
from jobs.gateway.request_dates import RequestDates
from jobs.gateway.routing import NoRoute, RoutingError, RoutingTable, routing_table_from_spec

log = logging.getLogger(__name__)

MAX_REQUEST_ID_LENGTH = 256
_MICROS_PER_DAY = 86_400_000_000
_INLINE_LIMIT_S = 0.05  # slowest micro-batch kept on the event loop (see MicroBatcher)
_EPOCH = dt.date(1970, 1, 1)
_BUFFER_COUNTERS = {
    "rows_received": ("mms_gateway_log_rows_total", "received"),
    "rows_written": ("mms_gateway_log_rows_total", "written"),
    "rows_spilled": ("mms_gateway_log_rows_total", "spilled"),
    "rows_replayed": ("mms_gateway_log_rows_total", "replayed"),
    "rows_rejected": ("mms_gateway_log_rows_total", "rejected"),
    "rows_dropped": ("mms_gateway_log_rows_total", "dropped"),
    "files_written": ("mms_gateway_log_files_total", "written"),
    "files_spilled": ("mms_gateway_log_files_total", "spilled"),
    "files_replayed": ("mms_gateway_log_files_total", "replayed"),
    "store_errors": ("mms_gateway_log_store_errors_total", None),
    "spill_errors": ("mms_gateway_log_spill_errors_total", None),
    "buffer_full": ("mms_gateway_log_buffer_full_total", None),
    "duplicate_splits": ("mms_gateway_log_duplicate_splits_total", None),
}


class HttpError(Exception):
    """An error answered as JSON ``{"error", "field", "message"}`` with an HTTP status."""

    def __init__(self, status: int, error: str, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.field = field
        self.message = message


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def _error_response(error: HttpError | PayloadError) -> Response:
    if isinstance(error, PayloadError):
        first = error.errors[0]
        return _json(
            {
                "error": "invalid_payload",
                "field": first.field,
                "message": first.message,
                "errors": [{"field": e.field, "message": e.message} for e in error.errors],
            },
            422,
        )
    return _json({"error": error.error, "field": error.field, "message": error.message}, error.status)


def _day_of(micros: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=micros // _MICROS_PER_DAY)


# --------------------------------------------------------------------------- micro-batching


class DaemonThreadPool(Executor):
    """A fixed pool of daemon threads: a model call that never returns cannot hold up the exit.

    ``ThreadPoolExecutor`` joins its threads when the interpreter exits, so one hung
    scoring call would keep a stopping worker alive until it was killed.

    Args:
        threads: Number of threads.
        name: Thread name prefix.
    """

    def __init__(self, threads: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads = threads
        for index in range(threads):
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a pool thread."""
        future: Future[Any] = Future()
        self._jobs.put((future, functools.partial(fn, **kwargs) if kwargs else fn, args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the threads end once the queued calls are done (never waits for them)."""
        for _ in range(self._threads):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(error)


_Waiting = tuple[list[dict[str, Any]], "asyncio.Future[Any]"]
"""One request's records and the future its handler awaits."""


class MicroBatcher:
    """Scores the single-record requests that are ready together in one estimator call.

    A request hands its records over and awaits a future. The first one schedules a run
    a couple of event-loop iterations later (``yields``), by which time every request
    whose bytes arrived in the same poll has been parsed and queued too. At low load a
    request waits only those few iterations (microseconds); under load the requests
    that queued while the previous batch was scored are scored together.

    Where a batch is scored: on the event loop (no thread hand-off: the fast path) only
    for versions whose last micro-batch took at most ``inline_limit_s``; a version not
    yet measured, or slower, is scored by a small thread pool, so the loop keeps
    answering and the request's scoring deadline can fire while the model still runs
    (the thread finishes in the background; its result is dropped). Requests of
    ``max_rows`` records or more always go to the pool.

    Args:
        max_rows: Most records per estimator call; larger requests are scored alone in a
            pool thread so the loop stays responsive.
        yields: Event-loop iterations to wait before a run.
        inline_limit_s: Slowest micro-batch that keeps a version on the event loop.
        threads: Pool threads; a version that hangs holds at most this many, and the
            requests queued behind them time out at their deadline.
    """

    def __init__(
        self, max_rows: int = 256, yields: int = 2, inline_limit_s: float = 0.05, threads: int = 4
    ) -> None:
        self.max_rows = max_rows
        self.yields = yields
        self.inline_limit_s = inline_limit_s
        self._pool = DaemonThreadPool(threads, "mms-score")
        self._waiting: dict[int, tuple[LoadedModel, list[_Waiting]]] = {}
        self._inline: set[tuple[str, str, str]] = set()
        self._scheduled = False

    def close(self) -> None:
        """Stop the pool without waiting for a model that hangs."""
        self._pool.shutdown(wait=False)

    def scored_inline(self, model: LoadedModel) -> bool:
        """Whether ``model``'s micro-batches currently run on the event loop."""
        return _version_key(model) in self._inline

    async def score(
        self, model: LoadedModel, records: list[dict[str, Any]]
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """Score ``records`` with ``model``; returns ``(answers, predictions, scores)``."""
        loop = asyncio.get_running_loop()
        if len(records) >= self.max_rows:
            return await loop.run_in_executor(self._pool, model.predict, records)
        future: asyncio.Future[Any] = loop.create_future()
        waiting = self._waiting.get(id(model))
        if waiting is None:
            self._waiting[id(model)] = (model, [(records, future)])
        else:
            waiting[1].append((records, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._tick, loop, self.yields)
        return await future

    def _tick(self, loop: asyncio.AbstractEventLoop, remaining: int) -> None:
        if remaining > 0:
            loop.call_soon(self._tick, loop, remaining - 1)
            return
        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        for model, items in waiting.values():
            group: list[_Waiting] = []
            size = 0
            for item in items:
                if group and size + len(item[0]) > self.max_rows:
                    self._dispatch(loop, model, group)
                    group, size = [], 0
                group.append(item)
                size += len(item[0])
            if group:
                self._dispatch(loop, model, group)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, model: LoadedModel, group: list[_Waiting]) -> None:
        if self.scored_inline(model):
            _deliver(self._score_group(model, group))
        else:
            self._pool.submit(self._score_in_pool, loop, model, group)

    def _score_in_pool(
        self, loop: asyncio.AbstractEventLoop, model: LoadedModel, group: list[_Waiting]
    ) -> None:
        # Requests that gave up (deadline) while queued are not scored: a slow model's backlog
        # would otherwise grow without bound. Reading done() across threads is only a hint.
        group = [item for item in group if not item[1].done()]
        if not group:
            return
        outcomes = self._score_group(model, group)
        with contextlib.suppress(RuntimeError):  # the loop closed at shutdown: nobody waits
            loop.call_soon_threadsafe(_deliver, outcomes)

    def _score_group(
        self, model: LoadedModel, group: list[_Waiting]
    ) -> list[tuple[asyncio.Future[Any], Any]]:
        """Each request's outcome: its slice of one estimator call, or, when that call fails,
        the result or exception of scoring the request alone (isolates the request that breaks
        the model)."""
        records = [record for records, _ in group for record in records]
        started = time.perf_counter()
        try:
            answers, predictions, scores = model.predict(records)
        except Exception as error:  # noqa: BLE001 - reported to the request(s) that caused it
            if len(group) == 1:
                return [(group[0][1], error)]
            return [outcome for item in group for outcome in self._score_group(model, [item])]
        finally:
            self._judge(model, time.perf_counter() - started)
        outcomes: list[tuple[asyncio.Future[Any], Any]] = []
        start = 0
        for records_of, future in group:
            end = start + len(records_of)
            outcomes.append((future, (answers[start:end], predictions[start:end], scores[start:end])))
            start = end
        return outcomes

    def _judge(self, model: LoadedModel, seconds: float) -> None:
        # set.add/discard are atomic: the pool threads and the loop may both judge.
        if seconds <= self.inline_limit_s:
            self._inline.add(_version_key(model))
        else:
            self._inline.discard(_version_key(model))


def _version_key(model: LoadedModel) -> tuple[str, str, str]:
    return (model.project, model.model, model.version)


def _deliver(outcomes: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Resolve each request's future (on the loop), skipping those that gave up."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


# --------------------------------------------------------------------------- the gateway


@dataclass
class _Record:
    request_id: str
    model: LoadedModel
    features: dict[str, Any]
    segments: dict[str, str | None]


class Gateway:
    """Everything one worker process holds: routes, models, log buffer, metrics.

    Args:
        config: Gateway configuration.
        settings: Studio settings (MLflow URIs, data store, var dir).
        routing: Routing source; built from ``config.routes`` when ``None``.
        loader: Model loader; :class:`MlflowModelLoader` when ``None``.
        store: Parquet store; built from the settings when ``None``.
    """

    def __init__(
        self,
        config: GatewayConfig,
        settings: Settings,
        *,
        routing: RoutingTable | None = None,
        loader: ModelLoader | None = None,
        store: ParquetStore | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.environment = config.environment
        self.state_dir = config.resolved_state_dir(settings)
        self.metrics = m.Metrics()
        self.routing = routing or routing_table_from_spec(
            config.routes,
            tracking_uri=settings.mlflow_tracking_uri,
            registry_uri=settings.mlflow_registry_uri,
        )
        self.cache = DeploymentCache(
            self.routing,
            loader or MlflowModelLoader(settings.mlflow_tracking_uri, settings.mlflow_registry_uri),
            config.environment,
            refresh_interval_s=config.refresh_interval_s,
            on_refresh_error=self._routing_failed,
        )
        self.store = store or ParquetStore(settings.store_config())
        self.buffer = LogBuffer(
            self.store,
            self.state_dir / "spill",
            flush_rows=config.flush_rows,
            flush_interval_s=config.flush_interval_s,
            max_rows=config.max_buffer_rows,
            retry_interval_s=config.retry_interval_s,
        )
        # A batch that may take a good part of the deadline goes to the pool, where the deadline can fire.
        self.batcher = MicroBatcher(
            config.max_batch_rows, inline_limit_s=min(_INLINE_LIMIT_S, config.score_timeout_s / 4)
        )
        self.request_dates: RequestDates | None = None
        self.snapshots: m.SnapshotFiles | None = None
        self._publisher_stop = threading.Event()
        self._publisher: threading.Thread | None = None
        self._preload_problems: list[str] | None = None
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the shared state, start the background threads and the preload."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.request_dates = RequestDates(
            self.state_dir / "request_dates.bin", self.config.request_date_slots
        )
        self.snapshots = m.SnapshotFiles(self.state_dir / "metrics")
        self.buffer.start()
        self.cache.start()
        self._publisher_stop.clear()
        self._publisher = threading.Thread(target=self._publish_loop, name="mms-gateway-metrics", daemon=True)
        self._publisher.start()
        threading.Thread(target=self._preload, name="mms-gateway-preload", daemon=True).start()
        self._started = True
        log.info(
            "gateway for %s started (pid %d, state %s, routes %s)",
            self.environment,
            os.getpid(),
            self.state_dir,
            self.config.routes,
        )

    def _preload(self) -> None:
        self._preload_problems = self.cache.preload(self.config.preload_models)

    def stop(self) -> None:
        """Stop refreshing, flush every buffered row (or spill it), publish the last metrics."""
        self.cache.stop()
        self.batcher.close()
        self.buffer.close(self.config.shutdown_timeout_s)
        self._publisher_stop.set()
        if self._publisher is not None:
            self._publisher.join(timeout=5)
        self._publish()
        if self.request_dates is not None:
            self.request_dates.close()
        self.store.close()
        stats = self.buffer.stats()
        log.info(
            "gateway stopped: %d log rows written, %d spilled, %d replayed, %d dropped",
            stats["rows_written"],
            stats["rows_spilled"],
            stats["rows_replayed"],
            stats["rows_dropped"],
        )

    def _publish_loop(self) -> None:
        while not self._publisher_stop.wait(1.0):
            try:
                self._publish()
            except OSError as error:
                log.warning("cannot publish the metrics snapshot: %s", error)

    def _publish(self) -> None:
        if self.snapshots is not None:
            self.snapshots.publish(self._snapshot())

    def _routing_failed(self, project: str, model: str, error: Exception) -> None:
        self.metrics.inc("mms_gateway_routing_errors_total", m.labels_of(project=project, model=model))

    # ----------------------------------------------------------------- metrics

    def _snapshot(self) -> dict[str, Any]:
        stats = self.buffer.stats()
        worker = str(os.getpid())
        snapshot = self.metrics.snapshot()
        for key, (name, event) in _BUFFER_COUNTERS.items():
            labels = m.labels_of(event=event) if event else ()
            snapshot["counters"].append([name, [list(p) for p in labels], stats[key]])
        for name, value in (
            ("mms_gateway_log_rows_buffered", stats["rows_buffered"]),
            ("mms_gateway_log_store_available", stats["store_available"]),
        ):
            snapshot["gauges"].append([name, [["worker", worker]], value])
        for deployment in self.cache.snapshot().values():
            for route in deployment.routes:
                labels = m.labels_of(
                    project=deployment.project, model=deployment.model, version=route.version, worker=worker
                )
                snapshot["gauges"].append(
                    ["mms_gateway_route_weight", [list(p) for p in labels], route.weight]
                )
        return snapshot

    def render_metrics(self) -> str:
        """The gateway's metrics (this worker's live counts plus the other workers' snapshots)."""
        snapshots = [self._snapshot()]
        if self.snapshots is not None:
            snapshots += self.snapshots.others()
        merged = m.merge_snapshots(snapshots)
        spill_files = [("mms_gateway_log_spill_files", (), float(self.buffer.spill_file_count()))]
        return m.render(merged, spill_files)

    def _count(self, endpoint: str, code: int, project: str = "", model: str = "", version: str = "") -> None:
        self.metrics.inc(
            "mms_gateway_requests_total",
            m.labels_of(endpoint=endpoint, project=project, model=model, version=version, code=code),
        )

    def _served_labels(self, project: object, model: object) -> tuple[str, str]:
        """``(project, model)`` as metric labels when the model is served here, else empty labels."""
        if isinstance(project, str) and isinstance(model, str) and self.cache.get(project, model) is not None:
            return project, model
        return "", ""

    def _count_error(
        self, endpoint: str, reason: str, project: str = "", model: str = "", version: str = ""
    ) -> None:
        self.metrics.inc(
            "mms_gateway_request_errors_total",
            m.labels_of(endpoint=endpoint, reason=reason, project=project, model=model, version=version),
        )

    # ----------------------------------------------------------------- predict

    async def predict(self, request: Request) -> Response:
        """``POST /v1/models/{model}/predict``."""
        started = time.perf_counter()
        received_us = time.time_ns() // 1000
        model_name = request.path_params["model"]
        project = request.query_params.get("project", "")
        deployment = None
        try:
            payload = await self._read_json(request)
            project = project or payload.get("project") or ""
            if not isinstance(project, str) or not project:
                raise HttpError(
                    422, "invalid_payload", "project", "project is required (query ?project= or body)"
                )
            if key_segment_problem(project):
                raise HttpError(422, "invalid_payload", "project", key_segment_problem(project) or "")
            deployment = self.cache.get(project, model_name)
            if deployment is None:
                deployment = await self._ensure(project, model_name)
            batch = "instances" in payload
            records = self._parse_records(payload, deployment, batch)
            by_model: dict[int, tuple[LoadedModel, list[int]]] = {}
            for index, record in enumerate(records):
                by_model.setdefault(id(record.model), (record.model, []))[1].append(index)
            results: list[Any] = [None] * len(records)
            groups = list(by_model.values())
            scored = await self._score_within_deadline(groups, records)
            if scored is None:
                return self._timed_out(project, model_name, received_us, started, records)
            failures: list[_Failure] = []
            for (model, indexes), outcome in zip(groups, scored, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome
                    log.error(
                        "%s.%s version %s failed to score %d record(s): %r",
                        project,
                        model_name,
                        model.version,
                        len(indexes),
                        outcome,
                    )
                    failures += [
                        _Failure(i, MODEL_ERROR, f"{type(outcome).__name__}: {outcome}") for i in indexes
                    ]
                    continue
                answers, predictions, scores = outcome
                for position, index in enumerate(indexes):
                    results[index] = (answers[position], predictions[position], scores[position])
                    problem = _output_problem(predictions[position], scores[position])
                    if problem is not None:
                        failures.append(_Failure(index, BAD_OUTPUT, problem))
            if failures:
                return self._failed(project, model_name, received_us, started, records, failures)
        except (HttpError, PayloadError) as error:
            reason = error.error if isinstance(error, HttpError) else "invalid_payload"
            status = error.status if isinstance(error, HttpError) else 422
            # Label with the model only when it is served: client-chosen names must not create series.
            known = ("", "") if deployment is None else (project, model_name)
            self._count("predict", status, *known)
            self._count_error("predict", reason, *known)
            return _error_response(error)
        except Exception:
            log.exception("scoring failed for %s.%s", project, model_name)
            self._count("predict", 500, project, model_name)
            self._count_error("predict", "internal", project, model_name)
            return _json(
                {"error": "internal", "field": "", "message": "the model failed to score the request"}, 500
            )
        latency_ms = (time.perf_counter() - started) * 1000.0
        if self.config.logging_enabled:
            self._log_predictions(project, model_name, received_us, latency_ms, records, results)
        elapsed = time.perf_counter() - started
        answer_items = []
        versions_seen: dict[str, int] = {}
        for record, (answer, _prediction, score) in zip(records, results, strict=True):
            version = record.model.version
            versions_seen[version] = versions_seen.get(version, 0) + 1
            answer_items.append(
                {
                    "request_id": record.request_id,
                    "version": version,
                    "prediction": _plain(answer),
                    "score": score,
                }
            )
        for version, count in versions_seen.items():
            labels = m.labels_of(project=project, model=model_name, version=version)
            self.metrics.inc("mms_gateway_predictions_total", labels, count)
            self.metrics.observe("mms_gateway_request_duration_seconds", labels, elapsed)
            self._count("predict", 200, project, model_name, version)
        common = {"project": project, "model": model_name, "environment": self.environment}
        if batch:
            return _json({**common, "predictions": answer_items})
        return _json({**common, **answer_items[0]})

    async def _score_within_deadline(
        self, groups: list[tuple[LoadedModel, list[int]]], records: list[_Record]
    ) -> list[Any] | None:
        """:meth:`_score_groups` under the scoring deadline; ``None`` when the deadline passed.

        The deadline is checked again once the results are in: a batch scored on the event
        loop cannot be interrupted, and its request must not be served late as a success.
        """
        limit = self.config.score_timeout_s
        scoring_started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                scored = await self._score_groups(groups, records)
        except TimeoutError:
            return None
        return None if time.perf_counter() - scoring_started > limit else scored

    def _timed_out(
        self, project: str, model: str, received_us: int, started: float, records: Sequence[_Record]
    ) -> Response:
        message = (
            f"scoring did not finish within {self.config.score_timeout_s:g} s "
            f"(the gateway's scoring deadline, {PREFIX}SCORE_TIMEOUT_S)"
        )
        failures = [_Failure(index, TIMEOUT, message) for index in range(len(records))]
        return self._failed(project, model, received_us, started, records, failures, status=504)

    async def _score_groups(
        self, groups: list[tuple[LoadedModel, list[int]]], records: list[_Record]
    ) -> list[Any]:
        """Each group's ``(answers, predictions, scores)``, or the exception its version raised."""
        if len(groups) == 1:
            # The common case (one version): no gather, i.e. no extra task per request.
            model, indexes = groups[0]
            try:
                return [await self.batcher.score(model, [records[i].features for i in indexes])]
            except Exception as error:  # noqa: BLE001 - reported per group, as gather would
                return [error]
        return await asyncio.gather(
            *(self.batcher.score(model, [records[i].features for i in indexes]) for model, indexes in groups),
            return_exceptions=True,
        )

    def _failed(
        self,
        project: str,
        model: str,
        received_us: int,
        started: float,
        records: Sequence[_Record],
        failures: Sequence[_Failure],
        status: int = 500,
    ) -> Response:
        """Answer ``status`` (500, or 504 past the scoring deadline) for a request a version
        failed to score, and record each failed record.

        Only the records of the failing versions become ``request_errors`` rows: the other records
        of a batch request were scored correctly but are not served (the request fails as a whole),
        so they count neither as predictions nor as errors of their version.
        """
        latency_ms = (time.perf_counter() - started) * 1000.0
        elapsed = latency_ms / 1000.0
        by_version: dict[str, list[_Failure]] = {}
        for failure in failures:
            by_version.setdefault(records[failure.index].model.version, []).append(failure)
        for version, failed in by_version.items():
            kinds = sorted({f.kind for f in failed})
            labels = m.labels_of(project=project, model=model, version=version)
            self.metrics.observe("mms_gateway_request_duration_seconds", labels, elapsed)
            self._count("predict", status, project, model, version)
            self._count_error("predict", kinds[0], project, model, version)
            for kind in kinds:
                count = sum(1 for f in failed if f.kind == kind)
                self.metrics.inc(
                    "mms_gateway_record_errors_total",
                    m.labels_of(project=project, model=model, version=version, kind=kind),
                    count,
                )
        if self.config.logging_enabled:
            partition = {
                "project": project,
                "model": model,
                "environment": self.environment,
                "date": _day_of(received_us).isoformat(),
            }
            rows = [
                {
                    "version": records[f.index].model.version,
                    "request_id": records[f.index].request_id,
                    "timestamp": received_us,
                    "status_code": status,
                    "error_kind": f.kind,
                    "latency_ms": latency_ms,
                    "message": f.message[:MAX_ERROR_MESSAGE_LENGTH],
                }
                for f in failures
            ]
            self.buffer.add_rows(REQUEST_ERRORS, partition, (), rows)
        first = failures[0]
        return _json(
            {
                "error": "timeout" if first.kind == TIMEOUT else "internal",
                "field": "",
                "message": _FAILURE_MESSAGES.get(first.kind, first.message),
                "error_kind": first.kind,
                "versions": sorted(by_version),
            },
            status,
        )

    async def _read_json(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, "payload_too_large", "body", f"the body exceeds {limit} bytes")
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise HttpError(413, "payload_too_large", "body", f"the body exceeds {limit} bytes")
            parts.append(part)
        body = b"".join(parts)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HttpError(422, "invalid_payload", "body", f"the body is not valid JSON: {error}") from error
        if not isinstance(payload, dict):
            raise HttpError(422, "invalid_payload", "body", "the body must be a JSON object")
        return payload

    async def _ensure(self, project: str, model: str) -> Any:
        try:
            return await anyio.to_thread.run_sync(self.cache.ensure, project, model)
        except NoRoute as error:
            raise HttpError(404, "unknown_model", "model", str(error)) from error
        except (RoutingError, registry.RegistryError) as error:
            raise HttpError(503, "model_unavailable", "model", str(error)) from error
        except Exception as error:  # MLflow and artifact stores raise many types
            log.exception("cannot load %s.%s", project, model)
            raise HttpError(
                503, "model_unavailable", "model", f"cannot load {project}.{model}: {error}"
            ) from error

    def _parse_records(self, payload: dict[str, Any], deployment: Any, batch: bool) -> list[_Record]:
        if batch:
            instances = payload["instances"]
            if not isinstance(instances, list) or not instances:
                raise PayloadError([FieldError("instances", "must be a non-empty array of records")])
            if len(instances) > self.config.max_instances:
                raise PayloadError(
                    [
                        FieldError(
                            "instances",
                            f"holds {len(instances)} records; at most {self.config.max_instances}",
                        )
                    ]
                )
            items = [(f"instances[{i}]", item) for i, item in enumerate(instances)]
        else:
            items = [("", payload)]
        errors: list[FieldError] = []
        records: list[_Record] = []
        seen: dict[str, str] = {}
        for where, item in items:
            prefix = f"{where}." if where else ""
            if not isinstance(item, dict):
                errors.append(FieldError(where or "body", "must be an object with a features object"))
                continue
            request_id = item.get("request_id")
            if request_id is None:
                request_id = str(uuid.uuid4())
            elif not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
                errors.append(
                    FieldError(
                        f"{prefix}request_id", f"must be a string of 1-{MAX_REQUEST_ID_LENGTH} characters"
                    )
                )
                continue
            elif not request_id.isprintable():
                errors.append(FieldError(f"{prefix}request_id", "must not contain control characters"))
                continue
            if request_id in seen:
                errors.append(
                    FieldError(f"{prefix}request_id", f"repeats the request_id of {seen[request_id]}")
                )
                continue
            seen[request_id] = where or "body"
            if "features" not in item:
                errors.append(FieldError(f"{prefix}features", "missing: send the model inputs as an object"))
                continue
            model = deployment.pick(request_id)
            features, problems = model.parse_features(item["features"], f"{prefix}features")
            segments, segment_problems = parse_segments(item.get("segments"), f"{prefix}segments")
            errors += problems + segment_problems
            records.append(_Record(request_id, model, features, segments))
        if errors:
            raise PayloadError(errors)
        return records

    def _log_predictions(
        self,
        project: str,
        model: str,
        received_us: int,
        latency_ms: float,
        records: Sequence[_Record],
        results: Sequence[Any],
    ) -> None:
        day = _day_of(received_us)
        partition = {
            "project": project,
            "model": model,
            "environment": self.environment,
            "date": day.isoformat(),
        }
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        dates = self.request_dates
        for record, (_answer, prediction, score) in zip(records, results, strict=True):
            row = {
                "version": record.model.version,
                "request_id": record.request_id,
                "timestamp": received_us,
                "prediction": prediction,
                "score": score,
                "latency_ms": latency_ms,
                **record.features,
                **record.segments,
            }
            columns = record.model.column_types
            if record.segments:
                columns = columns + tuple((name, pa.string()) for name in sorted(record.segments))
            groups.setdefault(columns, []).append(row)
            if dates is not None:
                dates.put(project, model, record.request_id, day)
        for columns, rows in groups.items():
            self.buffer.add_rows(INFERENCE_LOGS, partition, columns, rows)

    # ----------------------------------------------------------------- feedback

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/feedback``: one label, or ``{"project", "model", "labels": [...]}``."""
        project = model = ""
        try:
            payload = await self._read_json(request)
            project, model = payload.get("project"), payload.get("model")
            for field, value in (("project", project), ("model", model)):
                if not isinstance(value, str) or key_segment_problem(value):
                    raise PayloadError([FieldError(field, key_segment_problem(value) or "must be a string")])
            if "labels" in payload:
                items = payload["labels"]
                if not isinstance(items, list) or not items or len(items) > self.config.max_instances:
                    raise PayloadError(
                        [FieldError("labels", f"must be an array of 1-{self.config.max_instances} labels")]
                    )
                entries = [(f"labels[{i}]", item) for i, item in enumerate(items)]
            else:
                entries = [("", payload)]
            labels = self._parse_labels(entries)
            resolved = await self._resolve_dates(project, model, labels)
        except (HttpError, PayloadError) as error:
            status = error.status if isinstance(error, HttpError) else 422
            reason = error.error if isinstance(error, HttpError) else "invalid_payload"
            known = self._served_labels(project, model)
            self._count("feedback", status, *known)
            self._count_error("feedback", reason, *known)
            return _error_response(error)
        by_day: dict[str, list[dict[str, Any]]] = {}
        accepted = []
        project_label, model_label = self._served_labels(project, model)
        for label, (day, source) in zip(labels, resolved, strict=True):
            by_day.setdefault(day.isoformat(), []).append(
                {"request_id": label.request_id, "label": label.value, "label_timestamp": label.timestamp_us}
            )
            accepted.append({"request_id": label.request_id, "date": day.isoformat(), "date_source": source})
            self.metrics.inc(
                "mms_gateway_feedback_total",
                m.labels_of(project=project_label, model=model_label, source=source),
            )
        for day, rows in by_day.items():
            partition = {"project": project, "model": model, "environment": self.environment, "date": day}
            self.buffer.add_rows(LABELS, partition, (), rows)
        self._count("feedback", 202, project_label, model_label)
        if len(accepted) == 1 and "labels" not in payload:
            return _json({"status": "accepted", **accepted[0]}, 202)
        return _json({"status": "accepted", "labels": accepted}, 202)

    def _parse_labels(self, entries: list[tuple[str, Any]]) -> list[_Label]:
        errors: list[FieldError] = []
        labels: list[_Label] = []
        now_us = time.time_ns() // 1000
        for where, item in entries:
            prefix = f"{where}." if where else ""
            if not isinstance(item, dict):
                errors.append(FieldError(where or "body", "must be an object"))
                continue
            request_id = item.get("request_id")
            if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
                errors.append(
                    FieldError(
                        f"{prefix}request_id", f"required: a string of 1-{MAX_REQUEST_ID_LENGTH} characters"
                    )
                )
                continue
            value = item.get("label")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                errors.append(FieldError(f"{prefix}label", "required: a finite number"))
                continue
            timestamp_us = now_us
            if item.get("timestamp") is not None:
                parsed = _parse_timestamp(item["timestamp"])
                if parsed is None:
                    errors.append(
                        FieldError(
                            f"{prefix}timestamp",
                            "must be an ISO-8601 time with a UTC offset, e.g. 2024-03-01T12:00:00Z",
                        )
                    )
                    continue
                timestamp_us = parsed
            request_date = None
            if item.get("request_date") is not None:
                try:
                    request_date = dt.date.fromisoformat(str(item["request_date"]))
                    if len(str(item["request_date"])) != 10:
                        raise ValueError("not YYYY-MM-DD")
                except ValueError:
                    errors.append(FieldError(f"{prefix}request_date", "must be a day YYYY-MM-DD (UTC)"))
                    continue
            labels.append(_Label(where, request_id, float(value), timestamp_us, request_date))
        if errors:
            raise PayloadError(errors)
        return labels

    async def _resolve_dates(
        self, project: str, model: str, labels: list[_Label]
    ) -> list[tuple[dt.date, str]]:
        """The request day of each label: the shared map, else ``request_date``, else the store."""
        resolved: list[tuple[dt.date, str] | None] = []
        missing: list[int] = []
        for index, label in enumerate(labels):
            day = self.request_dates.get(project, model, label.request_id) if self.request_dates else None
            if day is not None:
                resolved.append((day, "recent_requests"))
            elif label.request_date is not None:
                resolved.append((label.request_date, "request_date"))
            else:
                resolved.append(None)
                missing.append(index)
        if missing and self.config.feedback_lookup_days > 0:
            ids = [labels[i].request_id for i in missing]
            found = await anyio.to_thread.run_sync(self._lookup_days, project, model, ids)
            for index in missing:
                day = found.get(labels[index].request_id)
                if day is not None:
                    resolved[index] = (day, "inference_logs")
        errors = [
            FieldError(
                f"{labels[i].where}.request_date" if labels[i].where else "request_date",
                f"request {labels[i].request_id!r} is unknown to this gateway and not found in the last "
                f"{self.config.feedback_lookup_days} day(s) of inference_logs: "
                "give the request's day as request_date",
            )
            for i, item in enumerate(resolved)
            if item is None
        ]
        if errors:
            raise PayloadError(errors)
        return [item for item in resolved if item is not None]

    def _lookup_days(self, project: str, model: str, request_ids: list[str]) -> dict[str, dt.date]:
        today = dt.datetime.now(dt.UTC).date()
        days = [(today - dt.timedelta(days=n)).isoformat() for n in range(self.config.feedback_lookup_days)]
        filters = {
            "project": project,
            "model": model,
            "environment": self.environment,
            "date": days,
            "request_id": request_ids,
        }
        try:
            table = self.store.read(INFERENCE_LOGS, filters=filters, columns=["request_id", "date"])
        except StoreError as error:
            log.warning("cannot look request ids up in inference_logs: %s", error)
            return {}
        found: dict[str, dt.date] = {}
        for request_id, day in zip(
            table.column("request_id").to_pylist(), table.column("date").to_pylist(), strict=True
        ):
            candidate = dt.date.fromisoformat(str(day))
            if request_id not in found or candidate > found[request_id]:
                found[request_id] = candidate
        return found

    # ----------------------------------------------------------------- health

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process answers."""
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 once the preloaded models are served, else 503."""
        deployments = self.cache.snapshot()
        served = {
            f"{p}.{mo}": [{"version": r.version, "weight": r.weight} for r in d.routes]
            for (p, mo), d in deployments.items()
        }
        missing = [f"{p}.{mo}" for p, mo in self.config.preload_models if (p, mo) not in deployments]
        ready = self._started and self._preload_problems is not None and not missing
        body = {
            "status": "ready" if ready else "not_ready",
            "environment": self.environment,
            "models": served,
            "missing": missing,
            "problems": self._preload_problems or [],
            "store_available": self.buffer.store_available,
        }
        return _json(body, 200 if ready else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        text = await anyio.to_thread.run_sync(self.render_metrics)
        return Response(text, media_type=m.CONTENT_TYPE)


_FAILURE_MESSAGES = {
    MODEL_ERROR: "the model failed to score the request",
    BAD_OUTPUT: "the model returned an invalid prediction",
}


@dataclass(frozen=True)
class _Failure:
    index: int
    kind: str
    message: str


def _output_problem(prediction: Any, score: Any) -> str | None:
    """Why a scored record's output cannot be served, ``None`` when it can."""
    if isinstance(prediction, float) and not math.isfinite(prediction):
        return f"the prediction is {prediction}"
    if score is not None and not (isinstance(score, float) and math.isfinite(score) and 0.0 <= score <= 1.0):
        return f"the score {score!r} is not a probability"
    return None


@dataclass(frozen=True)
class _Label:
    where: str
    request_id: str
    value: float
    timestamp_us: int
    request_date: dt.date | None


def _parse_timestamp(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- factories


def create_app(
    config: GatewayConfig,
    settings: Settings,
    *,
    routing: RoutingTable | None = None,
    loader: ModelLoader | None = None,
    store: ParquetStore | None = None,
) -> Starlette:
    """Build the gateway app for one worker process.

    Args:
        config: Gateway configuration.
        settings: Studio settings.
        routing: Routing source (default: from ``config.routes``).
        loader: Model loader (default: MLflow by version, digest verified).
        store: Parquet store (default: from the settings).

    Returns:
        The Starlette app; ``app.state.gateway`` is its :class:`Gateway`.
    """
    gateway = Gateway(config, settings, routing=routing, loader=loader, store=store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(gateway.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(gateway.stop)

    routes = [
        HttpRoute("/v1/models/{model}/predict", gateway.predict, methods=["POST"]),
        HttpRoute("/v1/feedback", gateway.feedback, methods=["POST"]),
        HttpRoute("/healthz", gateway.healthz, methods=["GET"]),
        HttpRoute("/readyz", gateway.readyz, methods=["GET"]),
        HttpRoute("/metrics", gateway.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway

    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        return JSONResponse({"error": "internal", "field": "", "message": str(error)}, status_code=500)

    app.add_exception_handler(Exception, unexpected)
    return app


def create_app_from_environ() -> Starlette:
    """The uvicorn/gunicorn factory: settings from ``MMS_*``, gateway from ``MMS_GATEWAY_*``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    return create_app(GatewayConfig.from_environ(), load_settings())
