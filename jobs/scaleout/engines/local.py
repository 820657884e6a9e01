"""The ``local`` engine: a pool of processes on this machine (the default).

Workers are started with the ``spawn`` method, never ``fork``: a forked child would inherit the
parent's DuckDB connections and threads, which DuckDB does not support. Each task opens its own
connection (see :func:`jobs.scaleout.profile_unit.run_unit`). Units are submitted largest first so
the long ones do not end the run alone.

A failed task is submitted again, up to ``retries`` more times. It rewrites the same key
(``units/<index>.parquet``) and the merge keeps one partial per unit id, so a task that failed after
writing its partial is never counted twice. A worker that dies (out of memory, killed) breaks the
pool: a new pool is started and every unit that was running is retried.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from analytics.store import StoreConfig
from jobs.scaleout.engines import MapReport, Task, UnitsFailedError
from jobs.scaleout.profile_unit import UnitResult, run_unit
from jobs.scaleout.units import ScaleoutError, WorkUnit


def default_parallelism() -> int:
    """Processes used when none is asked: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class LocalEngine:
    """Run units in a spawn-started process pool.

    Attributes:
        max_parallel: Worker processes (default: the available CPUs).
        retries: Further attempts of a failed unit.
        task: What runs per unit (default :func:`~jobs.scaleout.profile_unit.run_unit`); must be
            picklable (a module-level function or a ``functools.partial`` of one).
    """

    max_parallel: int | None = None
    retries: int = 2
    task: Task = run_unit
    name: str = "local"

    def __post_init__(self) -> None:
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ScaleoutError(f"max_parallel must be at least 1, got {self.max_parallel}")
        if self.retries < 0:
            raise ScaleoutError(f"retries must be at least 0, got {self.retries}")

    @property
    def parallelism(self) -> int:
        """Worker processes of the pool."""
        return self.max_parallel or default_parallelism()

    def duckdb_threads(self) -> int:
        """DuckDB threads per task: the CPUs shared among the workers."""
        return max(1, default_parallelism() // self.parallelism)

    def run(self, units: list[WorkUnit], config: StoreConfig) -> MapReport:
        """Run every unit; retry failures.

        Args:
            units: The run's units.
            config: Store configuration shipped to each task (pickled: no connection travels).

        Returns:
            The results and attempts.

        Raises:
            UnitsFailedError: if a unit still fails after ``retries`` further attempts.
        """
        started = time.monotonic()
        context = multiprocessing.get_context("spawn")
        workers = min(self.parallelism, max(1, len(units)))
        attempts: Counter[int] = Counter()
        results: dict[int, UnitResult] = {}
        failures: dict[int, str] = {}
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        running: dict[Future[Any], tuple[WorkUnit, ProcessPoolExecutor]] = {}

        def submit(unit: WorkUnit) -> None:
            running[pool.submit(self.task, unit, config)] = (unit, pool)

        try:
            for unit in sorted(units, key=lambda u: (-u.bytes, u.index)):
                submit(unit)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    unit, owner = running.pop(future)
                    attempts[unit.index] += 1
                    try:
                        results[unit.index] = future.result()
                        failures.pop(unit.index, None)
                        continue
                    except BrokenProcessPool as error:
                        failures[unit.index] = f"worker process died: {error}"
                        if owner is pool:
                            # Every task of the broken pool fails: start a new pool for the retries.
                            pool.shutdown(wait=False, cancel_futures=True)
                            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
                    except Exception as error:  # noqa: BLE001 - any failure of a task is retried
                        failures[unit.index] = f"{type(error).__name__}: {error}"
                    if attempts[unit.index] <= self.retries:
                        submit(unit)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            raise UnitsFailedError(failures, self.retries + 1)
        return MapReport(results=results, attempts=dict(attempts), seconds=time.monotonic() - started)
