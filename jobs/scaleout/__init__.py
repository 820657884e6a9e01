"""Scaled-out monitoring: profile the inference logs in parallel units, merge, write as the job does.

A run has three steps (see ``docs/SCALE_OUT.md``):

1. **plan** (:func:`jobs.scaleout.units.plan_run`): list the logs once, pack them into work units,
   write the run's manifests;
2. **map**: profile every unit on an engine (``local`` process pool, ``spark``, or AWS Step Functions
   ``sfn``), each writing a partial profile to a deterministic key;
3. **merge** (:func:`jobs.scaleout.merge.merge`): check every unit is there, merge the partials and
   run the monitoring job on the merged window profiles, which writes ``profiles`` and ``metrics``
   exactly as a single-process run.

:func:`run_scaleout` does all three (for ``sfn`` the state machine runs the map and the merge).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from analytics.store import ParquetStore

# The monitor command's options live apart: parsing them must not import this package's planning.
from jobs._engine_options import DEFAULT_RETRIES, ENGINES, add_engine_arguments
from jobs.scaleout.units import DEFAULT_UNIT_BYTES, ScaleoutError, parse_bytes, plan_run


@dataclass(frozen=True)
class ScaleoutSummary:
    """Outcome of a scaled-out run.

    Attributes:
        engine: ``local``, ``spark`` or ``sfn``.
        run_id: The run.
        units: Units planned.
        bytes: Log bytes planned.
        plan_seconds: Time to list and plan.
        map_seconds: Time of the map step (``sfn``: until the execution ended, 0 when not waited for).
        merge_seconds: Time of the merge step (``sfn``: part of the execution).
        retried: Units that needed more than one attempt.
        merge: The merge result (``None`` for ``sfn``).
        execution_arn: The Step Functions execution (``sfn`` only).
        execution_status: Its final status, or ``RUNNING`` when not waited for.
        execution_result: The merge's ``result.json`` written by the state machine (``sfn``).
    """

    engine: str
    run_id: str
    units: int
    bytes: int
    plan_seconds: float
    map_seconds: float
    merge_seconds: float
    retried: int = 0
    merge: Any = None
    execution_arn: str | None = None
    execution_status: str | None = None
    execution_result: dict[str, Any] | None = None

    @property
    def summary(self) -> Any:
        """The monitoring job's ``MonitorSummary`` (``None`` for ``sfn``)."""
        return self.merge.summary if self.merge is not None else None

    @property
    def ok(self) -> bool:
        """Whether the run finished and every input was usable."""
        if self.merge is not None:
            return self.merge.ok
        if self.execution_status in (None, "RUNNING"):
            return True
        return self.execution_status == "SUCCEEDED" and bool((self.execution_result or {}).get("ok"))

    def to_text(self) -> str:
        """A human summary."""
        head = (
            f"{self.engine} run {self.run_id}: {self.units} unit(s), {self.bytes / 1e6:.1f} MB; "
            f"plan {self.plan_seconds:.1f} s, map {self.map_seconds:.1f} s, merge {self.merge_seconds:.1f} s"
            + (f"; {self.retried} unit(s) retried" if self.retried else "")
        )
        if self.merge is not None:
            return f"{head}\n{self.merge.to_text()}"
        status = self.execution_status or "RUNNING"
        return f"{head}\nStep Functions execution {self.execution_arn}: {status}"


def make_engine(
    engine: str,
    *,
    max_parallel: int | None = None,
    retries: int = DEFAULT_RETRIES,
    cluster: str | None = None,
    **options: Any,
) -> Any:
    """Build an engine by name.

    Args:
        engine: ``local``, ``spark`` or ``sfn``.
        max_parallel: Parallel tasks (``local``: processes, ``spark`` local mode: task slots). ``sfn``
            takes its concurrency from the state machine (``MaxConcurrency``).
        retries: Further attempts of a failed unit (``sfn``: the state machine's Retry).
        cluster: ``spark``: a master URL; ``sfn``: the state machine ARN.
        **options: Engine fields (``task``, ``session`` for spark, ``client`` for sfn, ...).

    Raises:
        ScaleoutError: for an unknown engine or options it does not take.
    """
    if engine == "local":
        from jobs.scaleout.engines.local import LocalEngine

        if cluster:
            raise ScaleoutError("the local engine takes no --cluster")
        return LocalEngine(max_parallel=max_parallel, retries=retries, **options)
    if engine == "spark":
        from jobs.scaleout.engines.spark import SparkEngine

        return SparkEngine(master=cluster, max_parallel=max_parallel, retries=retries, **options)
    if engine == "sfn":
        from jobs.scaleout.engines.sfn import SfnEngine

        if not cluster:
            raise ScaleoutError("the sfn engine needs the state machine ARN (--cluster ARN)")
        if max_parallel is not None:
            raise ScaleoutError(
                "the sfn engine's concurrency is the state machine's MaxConcurrency "
                "(Terraform variable profiling_max_concurrency), not --max-parallel"
            )
        return SfnEngine(state_machine_arn=cluster, **options)
    raise ScaleoutError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


def run_scaleout(
    store: ParquetStore,
    request: Any,
    engine: str | Any = "local",
    *,
    unit_bytes: int | str = DEFAULT_UNIT_BYTES,
    max_parallel: int | None = None,
    retries: int = DEFAULT_RETRIES,
    cluster: str | None = None,
    run_id: str | None = None,
    now: Any = None,
    actor: Any = None,
    wait: bool = True,
) -> ScaleoutSummary:
    """Plan, map and merge one monitoring run on an engine.

    Args:
        store: The Parquet store.
        request: The ``jobs.monitor.MonitorRequest``. Every date of its range is profiled; the
            monitoring job then recomputes the dates it would recompute anyway (all of them with
            ``backfill``).
        engine: An engine name (see :func:`make_engine`) or an engine object.
        unit_bytes: Log bytes per unit (``512MB``, ``64MiB`` or a number).
        max_parallel: Parallel tasks (see :func:`make_engine`).
        retries: Further attempts of a failed unit.
        cluster: Spark master URL or Step Functions state machine ARN.
        run_id: Run id (default: time plus random hex).
        now: Current time (UTC), for the monitoring job.
        actor: The acting user; needs ``run_backfill`` on every project of the run.
        wait: ``sfn``: wait for the execution to end.

    Returns:
        The summary.

    Raises:
        ScaleoutError: for bad options, a failed unit (after retries) or a missing unit at merge.
        jobs.permissions.Forbidden: if ``actor`` lacks ``run_backfill`` (nothing is planned).
    """
    from jobs.permissions import Permission, require

    if isinstance(engine, str):
        engine = make_engine(engine, max_parallel=max_parallel, retries=retries, cluster=cluster)
    unit_bytes = parse_bytes(unit_bytes)

    def authorize(projects: list[str]) -> None:
        for project in projects:
            require(actor, Permission.RUN_BACKFILL, project)

    started = time.monotonic()
    threads = engine.duckdb_threads() if hasattr(engine, "duckdb_threads") else None
    plan = plan_run(
        store,
        request,
        unit_bytes=unit_bytes,
        run_id=run_id,
        duckdb_threads=threads,
        authorize=authorize if actor is not None else None,
    )
    plan_seconds = time.monotonic() - started
    if engine.name == "sfn":
        started = time.monotonic()
        arn = engine.start(store, plan)
        status, result = ("RUNNING", None)
        if wait:
            status, result = engine.wait(store, arn, plan)
        return ScaleoutSummary(
            engine="sfn",
            run_id=plan.run_id,
            units=len(plan.units),
            bytes=plan.bytes,
            plan_seconds=plan_seconds,
            map_seconds=time.monotonic() - started if wait else 0.0,
            merge_seconds=0.0,
            execution_arn=arn,
            execution_status=status,
            execution_result=result,
        )
    from jobs.scaleout.merge import merge

    report = engine.run(list(plan.units), store.config)
    merged = merge(store, plan.run_id, request=request, now=now, actor=actor)
    return ScaleoutSummary(
        engine=engine.name,
        run_id=plan.run_id,
        units=len(plan.units),
        bytes=plan.bytes,
        plan_seconds=plan_seconds,
        map_seconds=report.seconds,
        merge_seconds=merged.seconds,
        retried=report.retried,
        merge=merged,
    )


def run_engine_command(
    args: argparse.Namespace, store: ParquetStore, request: Any, settings: Any = None
) -> int:
    """Run ``python -m jobs monitor --engine ...``: print the summary, return the exit code.

    Args:
        args: Parsed arguments with the options of :func:`add_engine_arguments`.
        store: The Parquet store.
        request: The monitor request built from the other options.
        settings: Studio settings; ``profiling_state_machine_arn`` is the default ``--cluster`` of
            ``sfn`` when the settings have it.

    Returns:
        0 when the run finished and every input was usable, 1 otherwise.

    Raises:
        jobs.cli.UsageError: for bad scale-out options.
    """
    from jobs.cli import EXIT_FAILURE, EXIT_OK, UsageError

    cluster = args.cluster
    if args.engine == "sfn" and not cluster:
        cluster = getattr(settings, "profiling_state_machine_arn", None)
    try:
        engine = make_engine(
            args.engine, max_parallel=args.max_parallel, retries=args.retries, cluster=cluster
        )
        unit_bytes = parse_bytes(args.unit_bytes)
    except ScaleoutError as error:
        raise UsageError(str(error)) from error
    try:
        summary = run_scaleout(store, request, engine, unit_bytes=unit_bytes)
    except ScaleoutError as error:
        print(f"error: {error}")
        return EXIT_FAILURE
    print(summary.to_text())
    return EXIT_OK if summary.ok else EXIT_FAILURE


__all__ = [
    "ENGINES",
    "ScaleoutError",
    "ScaleoutSummary",
    "add_engine_arguments",
    "make_engine",
    "run_engine_command",
    "run_scaleout",
]
