"""Batch inference: score a Parquet dataset with an environment's deployed model(s).

``python -m jobs batch-predict --project P --model M --env E --input PATH --output PATH``
reads Parquet (a file or a folder of files; local or ``s3://``) in chunks of
``--chunk-rows`` rows through ``pyarrow.dataset``, routes every row exactly like
the gateway does (the environment's current traffic split, sticky by
``request_id``; a ``request_id`` column is used when present, otherwise a UUID4
is generated per row), scores each version's rows in one call per chunk, writes
the input columns plus ``request_id``, ``version``, ``prediction`` and ``score``
to one Parquet file at ``--output`` (published only when complete), and logs
every prediction to ``inference_logs`` through the same
:class:`~jobs.gateway.logbuffer.LogBuffer` as the gateway: rows the store does
not take are spilled under ``<var_dir>/batch-predict/spill`` and replayed by the
next run (the command then exits with 1 and says so). A record the version fails
(it raises, or returns a NaN prediction or a score outside [0, 1]) does not stop the
batch: it keeps a null prediction and score, becomes a ``request_errors`` row like a
failed gateway request, and is counted in the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analytics.store import ParquetStore, StoreConfig
from jobs.contracts import (
    INFERENCE_LOGS,
    MAX_ERROR_MESSAGE_LENGTH,
    REQUEST_ERRORS,
    SEGMENT_PREFIX,
    key_segment_problem,
)
from jobs.gateway.logbuffer import LogBuffer
from jobs.gateway.models import BAD_OUTPUT, MODEL_ERROR, LoadedModel, MlflowModelLoader, ModelLoader
from jobs.gateway.routing import RoutingTable, choose_route, request_bucket, routing_table_from_spec
from jobs.permissions import Actor, Permission, require

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
REQUEST_ID = "request_id"
OUTPUT_COLUMNS = ("version", "prediction", "score")
ERROR_STATUS = 500
"""``status_code`` of a batch record's ``request_errors`` row (what the gateway would answer)."""
MAX_ISOLATION_CALLS = 256
"""Estimator calls spent per chunk and version to find the records a failing call chokes on."""


class BatchPredictError(RuntimeError):
    """The batch cannot be scored as asked; the message names the column or path to fix."""


@dataclass(frozen=True)
class BatchPredictResult:
    """What a batch run did.

    Attributes:
        rows: Rows scored.
        chunks: Chunks read.
        versions: Rows per version.
        output_uri: Where the predictions were written.
        logged_rows: Rows handed to ``inference_logs``.
        written_rows: Log rows the store took during the run (replays of earlier runs included).
        spilled_rows: Log rows left on local disk for a later replay.
        duration_s: Wall time.
        spill_dir: Where unwritten log rows wait.
        failed_rows: Records not scored, per error kind (``model_error``, ``bad_output``);
            their output columns are null and each is a ``request_errors`` row.
        error_rows_logged: ``request_errors`` rows handed to the store.
    """

    rows: int
    chunks: int
    versions: dict[str, int]
    output_uri: str
    logged_rows: int
    written_rows: int
    spilled_rows: int
    duration_s: float
    spill_dir: str = field(default="")
    failed_rows: dict[str, int] = field(default_factory=dict)
    error_rows_logged: int = 0


def filesystem_for(uri: str, config: StoreConfig) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or ``s3://bucket/key`` URI.

    S3 URIs use the store's endpoint and credentials.
    """
    if uri.startswith("s3://"):
        options: dict[str, Any] = {
            "region": config.s3_region,
            "access_key": config.s3_access_key_id,
            "secret_key": config.s3_secret_access_key,
            "session_token": config.s3_session_token,
            "connect_timeout": 5,
            "request_timeout": 60,
        }
        if config.s3_endpoint_url:
            scheme, _, host = config.s3_endpoint_url.partition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None}), uri[len("s3://") :]
    if "://" in uri:
        raise BatchPredictError(f"{uri}: only local paths and s3:// URIs are supported")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _open_input(uri: str, config: StoreConfig) -> ds.Dataset:
    filesystem, path = filesystem_for(uri, config)
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise BatchPredictError(f"input {uri} does not exist")
        return ds.dataset(path, format="parquet", filesystem=filesystem, partitioning="hive")
    except (OSError, pa.ArrowException) as error:
        raise BatchPredictError(f"cannot open input {uri}: {error}") from error


def _generated_ids(count: int) -> pa.Array:
    """``count`` random UUID4 strings, built in bulk (``uuid.uuid4()`` per row costs seconds at 1M rows)."""
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S1").reshape(count, 32)
    dash = np.full((count, 1), b"-", dtype="S1")
    parts = [
        hexed[:, 0:8],
        dash,
        hexed[:, 8:12],
        dash,
        hexed[:, 12:16],
        dash,
        hexed[:, 16:20],
        dash,
        hexed[:, 20:32],
    ]
    joined = np.ascontiguousarray(np.hstack(parts)).view("S36").ravel()
    return pa.array(joined.astype(str), pa.string())


def _request_ids(batch: pa.RecordBatch) -> pa.Array:
    if REQUEST_ID not in batch.schema.names:
        return _generated_ids(batch.num_rows)
    column = batch.column(REQUEST_ID)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    if column.null_count:
        raise BatchPredictError(f"input column {REQUEST_ID!r} has {column.null_count} null value(s)")
    return pc.cast(column, pa.string())


def _feature_frame(batch: pa.Table, model: LoadedModel) -> Any:
    arrays = {}
    for name in model.numeric:
        if name not in batch.column_names:
            raise BatchPredictError(f"input lacks feature column {name!r} of version {model.version}")
        column = batch.column(name)
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_null(column.type)
        ):
            raise BatchPredictError(f"feature column {name!r} must be numeric, got {column.type}")
        arrays[name] = pc.cast(column, pa.float64())
    for name in model.categorical:
        if name not in batch.column_names:
            raise BatchPredictError(f"input lacks feature column {name!r} of version {model.version}")
        column = batch.column(name)
        if not (
            pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)
            or pa.types.is_null(column.type)
        ):
            raise BatchPredictError(f"feature column {name!r} must be text, got {column.type}")
        arrays[name] = pc.cast(column, pa.string())
    table = pa.table(arrays)
    frame = table.to_pandas()
    for name in model.categorical:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return table, frame


@dataclass
class _ScoredPart:
    """Scores of one version's rows of a chunk, with the rows it could not score."""

    predictions: np.ndarray
    scores: np.ndarray
    numeric_predictions: bool = False
    has_scores: bool = False
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Row position -> (error kind, message)."""

    @property
    def ok(self) -> np.ndarray:
        """Mask of the rows scored successfully."""
        mask = np.ones(len(self.predictions), dtype=bool)
        mask[list(self.failures)] = False
        return mask


def _score_isolating(loaded: LoadedModel, frame: Any) -> _ScoredPart:
    """Score ``frame``; when a call fails, split it in halves until the failing records are found.

    One bad record must not cost the rest of the batch. At most ``MAX_ISOLATION_CALLS``
    extra calls are spent per frame: beyond that (a version failing on most records) the
    remaining failing ranges are reported whole with the error of their call. Records
    scored to a non-finite prediction or a score outside [0, 1] fail as ``bad_output``.
    """
    size = len(frame)
    part = _ScoredPart(np.full(size, np.nan), np.full(size, np.nan))
    budget = MAX_ISOLATION_CALLS
    ranges = [(0, size)]
    while ranges:
        start, stop = ranges.pop()
        try:
            _labels, predictions, scores = loaded.predict_frame(frame.iloc[start:stop])
        except Exception as error:  # noqa: BLE001 - any model failure is a record error
            if stop - start > 1 and budget >= 2:
                budget -= 2
                middle = (start + stop) // 2
                ranges += [(middle, stop), (start, middle)]
                continue
            message = f"{type(error).__name__}: {error}"[:MAX_ERROR_MESSAGE_LENGTH]
            part.failures.update(dict.fromkeys(range(start, stop), (MODEL_ERROR, message)))
            continue
        if predictions is not None:
            part.predictions[start:stop] = predictions
            part.numeric_predictions = True
        if scores is not None:
            part.scores[start:stop] = scores
            part.has_scores = True
    scored = part.ok
    if part.numeric_predictions:
        for position in np.flatnonzero(scored & ~np.isfinite(part.predictions)):
            part.failures[int(position)] = (BAD_OUTPUT, f"the prediction is {part.predictions[position]}")
    if part.has_scores:
        valid = np.isfinite(part.scores) & (part.scores >= 0.0) & (part.scores <= 1.0)
        for position in np.flatnonzero(scored & ~valid):
            if int(position) not in part.failures:
                problem = f"the score {part.scores[position]} is not a probability"
                part.failures[int(position)] = (BAD_OUTPUT, problem)
    return part


def _error_rows(version: str, request_ids: pa.Array, part: _ScoredPart, stamp_us: int) -> pa.Table:
    """The ``request_errors`` rows of a part's failed records."""
    positions = sorted(part.failures)
    count = len(positions)
    return pa.table(
        {
            "version": pa.array([version] * count, pa.string()),
            "request_id": request_ids.take(pa.array(positions, pa.int64())),
            "timestamp": pa.array(np.full(count, stamp_us), pa.timestamp("us", tz="UTC")),
            "status_code": pa.array([ERROR_STATUS] * count, pa.int32()),
            "error_kind": pa.array([part.failures[p][0] for p in positions], pa.string()),
            "latency_ms": pa.nulls(count, pa.float64()),
            "message": pa.array([part.failures[p][1] for p in positions], pa.string()),
        }
    )


def batch_predict(
    *,
    project: str,
    model: str,
    environment: str,
    input_uri: str,
    output_uri: str,
    store: ParquetStore,
    routing: RoutingTable,
    loader: ModelLoader,
    spill_dir: str | os.PathLike[str],
    actor: Actor | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    log_predictions: bool = True,
) -> BatchPredictResult:
    """Score ``input_uri`` with the environment's deployment and write ``output_uri``.

    Args:
        project: Project slug.
        model: Model name.
        environment: Environment whose routes decide the version(s).
        input_uri: Parquet file or folder; local or ``s3://``.
        output_uri: Parquet file to write; local or ``s3://``.
        store: The Parquet store (``inference_logs``; its S3 settings also serve the input/output).
        routing: Routing source.
        loader: Model loader.
        spill_dir: Local folder for log rows the store does not take.
        actor: Who runs the job from the studio: needs ``run_backfill`` on the project
            (``None`` for system runs such as the CLI or the scheduler).
        chunk_rows: Rows per chunk.
        log_predictions: Write ``inference_logs``.

    Returns:
        Counts and timings.

    Raises:
        Forbidden: if ``actor`` lacks ``run_backfill`` (nothing is read or written).
        BatchPredictError: for a missing input, a missing or mistyped feature column, or an
            output that would overwrite a scored column.
        jobs.gateway.routing.NoRoute: if the model is not deployed in the environment.
    """
    if actor is not None:
        require(actor, Permission.RUN_BACKFILL, project)
    for what, value in (("project", project), ("model", model), ("environment", environment)):
        problem = key_segment_problem(value)
        if problem:
            raise BatchPredictError(f"invalid {what}: {problem}")
    if chunk_rows < 1:
        raise BatchPredictError("chunk_rows must be at least 1")
    started = time.monotonic()
    routes = routing.current_routes(project, model, environment)
    versions = {route.version: loader(project, model, route.version) for route in routes}
    dataset = _open_input(input_uri, store.config)
    clash = sorted(set(OUTPUT_COLUMNS) & set(dataset.schema.names))
    if clash:
        raise BatchPredictError(f"input already has column(s) {', '.join(clash)}; rename them before scoring")
    out_fs, out_path = filesystem_for(output_uri, store.config)
    staging = f"{out_path}.tmp-{uuid.uuid4().hex[:12]}"
    if not output_uri.startswith("s3://"):
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)

    buffer = LogBuffer(store, spill_dir, flush_rows=chunk_rows, max_rows=max(chunk_rows, 100_000))
    if log_predictions:
        replayed = buffer.replay_spilled()
        if replayed:
            log.warning("replayed %d spill file(s) of an earlier run", replayed)
        buffer.start()
    counts: dict[str, int] = dict.fromkeys(versions, 0)
    rows = chunks = logged = errors_logged = 0
    failed: Counter[str] = Counter()
    writer: pq.ParquetWriter | None = None
    try:
        for batch in dataset.to_batches(batch_size=chunk_rows):
            if batch.num_rows == 0:
                continue
            chunks += 1
            stamp_us = time.time_ns() // 1000
            request_ids = _request_ids(batch)
            table = pa.Table.from_batches([batch])
            if len(routes) == 1:
                assignment = np.zeros(batch.num_rows, dtype=np.int64)
            else:
                index_of = {route.version: position for position, route in enumerate(routes)}
                assignment = np.fromiter(
                    (
                        index_of[choose_route(routes, request_bucket(rid)).version]
                        for rid in request_ids.to_pylist()
                    ),
                    dtype=np.int64,
                    count=batch.num_rows,
                )
            version_column = np.empty(batch.num_rows, dtype=object)
            prediction = np.full(batch.num_rows, np.nan)
            has_prediction = np.zeros(batch.num_rows, dtype=bool)
            score = np.full(batch.num_rows, np.nan)
            has_score = np.zeros(batch.num_rows, dtype=bool)
            log_parts: list[tuple[LoadedModel, pa.Table]] = []
            error_parts: list[pa.Table] = []
            for position, route in enumerate(routes):
                selected = np.flatnonzero(assignment == position)
                if selected.size == 0:
                    continue
                loaded = versions[route.version]
                part = table.take(selected) if selected.size != batch.num_rows else table
                features, frame = _feature_frame(part, loaded)
                scored = _score_isolating(loaded, frame)
                ok = scored.ok
                version_column[selected] = route.version
                if scored.numeric_predictions:
                    prediction[selected] = scored.predictions
                    has_prediction[selected] = ok
                if scored.has_scores:
                    score[selected] = scored.scores
                    has_score[selected] = ok
                counts[route.version] += int(selected.size)
                failed.update(kind for kind, _message in scored.failures.values())
                if not log_predictions:
                    continue
                ids = request_ids.take(pa.array(selected)) if selected.size != batch.num_rows else request_ids
                if scored.failures:
                    error_parts.append(_error_rows(route.version, ids, scored, stamp_us))
                segments = {
                    name: pc.cast(part.column(name), pa.string())
                    for name in part.column_names
                    if name.startswith(SEGMENT_PREFIX)
                }
                log_table = pa.table(
                    {
                        "version": pa.array([route.version] * selected.size, pa.string()),
                        "request_id": ids,
                        "timestamp": pa.array(np.full(selected.size, stamp_us), pa.timestamp("us", tz="UTC")),
                        "prediction": pa.array(scored.predictions, pa.float64())
                        if scored.numeric_predictions
                        else pa.nulls(selected.size, pa.float64()),
                        "score": pa.array(scored.scores, pa.float64())
                        if scored.has_scores
                        else pa.nulls(selected.size, pa.float64()),
                        "latency_ms": pa.nulls(selected.size, pa.float64()),
                        **{name: features.column(name) for name in loaded.features},
                        **segments,
                    }
                )
                # A failed record is a request_errors row, never an inference_logs row.
                log_parts.append((loaded, log_table.filter(pa.array(ok)) if scored.failures else log_table))
            output = table
            if REQUEST_ID not in output.column_names:
                output = output.append_column(REQUEST_ID, request_ids)
            output = output.append_column("version", pa.array(version_column.tolist(), pa.string()))
            output = output.append_column(
                "prediction", pa.array(prediction, pa.float64(), mask=~has_prediction)
            )
            output = output.append_column("score", pa.array(score, pa.float64(), mask=~has_score))
            if writer is None:
                writer = pq.ParquetWriter(staging, output.schema, filesystem=out_fs)
            writer.write_table(output)
            if log_predictions:
                day = dt.datetime.fromtimestamp(stamp_us / 1_000_000, dt.UTC).date().isoformat()
                partition = {"project": project, "model": model, "environment": environment, "date": day}
                for loaded, log_table in log_parts:
                    buffer.submit_table(INFERENCE_LOGS, partition, log_table, loaded.features)
                    logged += log_table.num_rows
                for error_table in error_parts:
                    buffer.submit_table(REQUEST_ERRORS, partition, error_table)
                    errors_logged += error_table.num_rows
            rows += batch.num_rows
        if writer is None:
            raise BatchPredictError(f"input {input_uri} holds no rows")
        writer.close()
        writer = None
        out_fs.move(staging, out_path)
    except BaseException:
        if writer is not None:
            writer.close()
        with contextlib.suppress(OSError, pa.ArrowException):
            out_fs.delete_file(staging)
        raise
    finally:
        if log_predictions:
            buffer.close()
    stats = buffer.stats()
    return BatchPredictResult(
        rows=rows,
        chunks=chunks,
        versions=counts,
        output_uri=output_uri,
        logged_rows=logged,
        written_rows=stats["rows_written"],
        spilled_rows=_spilled_rows(buffer),
        duration_s=time.monotonic() - started,
        spill_dir=str(buffer.spill_dir),
        failed_rows=dict(failed),
        error_rows_logged=errors_logged,
    )


def _spilled_rows(buffer: LogBuffer) -> int:
    from jobs.gateway.logbuffer import read_spill_file, spill_files

    total = 0
    for path in spill_files(buffer.spill_dir):
        try:
            total += read_spill_file(path).table.num_rows
        except (OSError, pa.ArrowException, ValueError):
            continue
    return total


# --------------------------------------------------------------------------- command line


def _command(args: argparse.Namespace, settings: Any) -> int:
    from jobs.cli import EXIT_FAILURE, EXIT_OK, UsageError
    from jobs.gateway.routing import NoRoute

    actor = None
    if args.actor:
        from jobs.db import make_engine, make_session_factory, session_scope
        from jobs.users import actor_for, get_user

        engine = make_engine(settings.database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                user = get_user(session, args.actor)
                actor = actor_for(session, user.id) if user else None
        finally:
            engine.dispose()
        if actor is None:
            raise UsageError(f"--actor {args.actor!r} is not an active user")
    routing = routing_table_from_spec(
        args.routes, tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_registry_uri
    )
    loader = MlflowModelLoader(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    store = ParquetStore(settings.store_config())
    spill_dir = args.spill_dir or str(Path(settings.var_dir) / "batch-predict" / "spill")
    try:
        result = batch_predict(
            project=args.project,
            model=args.model,
            environment=args.env,
            input_uri=args.input,
            output_uri=args.output,
            store=store,
            routing=routing,
            loader=loader,
            spill_dir=spill_dir,
            actor=actor,
            chunk_rows=args.chunk_rows,
            log_predictions=not args.no_logging,
        )
    except (BatchPredictError, NoRoute) as error:
        raise UsageError(str(error)) from error
    finally:
        store.close()
    split = ", ".join(f"v{version}: {count}" for version, count in sorted(result.versions.items()))
    print(
        f"scored {result.rows} rows in {result.chunks} chunk(s) ({split}) in {result.duration_s:.1f} s; "
        f"wrote {result.output_uri}; logged {result.logged_rows} rows to {INFERENCE_LOGS}"
    )
    if result.failed_rows:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(result.failed_rows.items()))
        print(
            f"warning: {sum(result.failed_rows.values())} record(s) could not be scored ({kinds}); "
            f"their prediction and score are null in the output and {result.error_rows_logged} "
            f"row(s) went to {REQUEST_ERRORS}"
        )
    if result.spilled_rows:
        print(
            f"warning: {result.spilled_rows} log rows wait in {result.spill_dir} "
            "(the store was unavailable); the next batch-predict run replays them"
        )
        return EXIT_FAILURE
    return EXIT_OK


def register_batch_predict(subparsers: Any) -> None:
    """``batch-predict``: score a Parquet dataset with an environment's deployed model."""
    parser = subparsers.add_parser(
        "batch-predict", help="score Parquet with the deployed model; log predictions"
    )
    parser.add_argument("--project", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--env", required=True, help="environment whose deployment scores the rows")
    parser.add_argument("--input", required=True, help="Parquet file or folder (local or s3://)")
    parser.add_argument("--output", required=True, help="Parquet file to write (local or s3://)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--routes", default="mlflow", help="routing source: mlflow or json:<path>")
    parser.add_argument(
        "--spill-dir", help="local folder for unwritten log rows (default var/batch-predict/spill)"
    )
    parser.add_argument("--no-logging", action="store_true", help="do not write inference_logs")
    parser.add_argument("--actor", help="username running the job (needs run_backfill); omit for system runs")
    parser.set_defaults(func=_command)
