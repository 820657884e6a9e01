"""The ``spark`` engine: one Spark task per unit (PySpark, an optional extra: ``requirements-spark.txt``).

``sc.parallelize(units, len(units)).map(task).collect()``: each partition holds one unit, so Spark's
own retry (``spark.task.maxFailures``) re-runs exactly the unit that failed, and the task rewrites the
same key, which the merge counts once. Tasks ship the unit (paths and sizes) and the store
configuration, never a connection; each opens its own DuckDB connection with one thread per task
(Spark already runs one task per core).

Without ``--cluster`` the engine starts Spark in local mode, ``local[<parallel>,<retries + 1>]`` (the
second number is the attempts per task). With ``--cluster`` it connects to that master URL
(``spark://host:7077``, ``yarn``, ``k8s://...``); the executors then need this code and its
requirements installed (the studio image) and credentials for the data root.

PySpark starts its Python workers from a daemon process that forks them; the daemon never loads
DuckDB, and every task opens and closes its own connection, so no DuckDB state crosses a fork.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from analytics.store import StoreConfig
from jobs.scaleout.engines import MapReport, Task, UnitsFailedError
from jobs.scaleout.engines.local import default_parallelism
from jobs.scaleout.profile_unit import UnitResult, run_unit
from jobs.scaleout.units import ScaleoutError, WorkUnit

APP_NAME = "mms-profiling"
CODE_ROOT = str(Path(__file__).resolve().parents[3])
"""The folder holding the ``jobs`` and ``analytics`` packages, put on the Python path of local workers."""


def local_master(parallel: int, attempts: int) -> str:
    """Spark's local master URL with ``parallel`` task slots and ``attempts`` tries per task."""
    return f"local[{parallel},{attempts}]"


def _import_pyspark() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise ScaleoutError(
            "the spark engine needs PySpark: pip install -r requirements-spark.txt "
            f"(PySpark and a Java 17+ runtime) ({error})"
        ) from error
    return SparkSession


def build_session(master: str, *, attempts: int = 3, conf: dict[str, str] | None = None) -> Any:
    """Start (or join) a SparkSession for profiling runs.

    Local masters run the workers on this interpreter with this code on their path, bound to the
    loopback interface, without the web UI.

    Args:
        master: Master URL (``local[2,2]``, ``spark://host:7077``, ...).
        attempts: ``spark.task.maxFailures``: tries per task (the ``local[n,f]`` form sets it too).
        conf: Further Spark settings.

    Returns:
        The ``pyspark.sql.SparkSession``.

    Raises:
        ScaleoutError: if PySpark is not installed.
    """
    session_class = _import_pyspark()
    builder = (
        session_class.builder.master(master)
        .appName(APP_NAME)
        .config("spark.task.maxFailures", str(attempts))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
    )
    if master.startswith("local"):
        python_path = os.pathsep.join(p for p in (CODE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        builder = (
            builder.config("spark.executorEnv.PYTHONPATH", python_path)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if master.startswith("local"):
        # PySpark starts workers with SparkContext.pythonExec (from PYSPARK_PYTHON, else "python3"):
        # local workers must run this interpreter, which has DuckDB and the studio's requirements.
        session.sparkContext.pythonExec = sys.executable
    return session


def _spark_reason(error: Exception) -> str:
    """The useful line of a Spark job failure: the Python error of the last failed task if shown."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    python_errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
    return (python_errors or lines or [type(error).__name__])[-1]


def _spark_task(task: Task, config: StoreConfig, unit: WorkUnit) -> tuple[UnitResult, int]:
    """Run one unit inside a Spark task; return the result and the attempt number (0 first)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return task(unit, config), (context.attemptNumber() if context is not None else 0)


@dataclass
class SparkEngine:
    """Run units as Spark tasks.

    Attributes:
        master: Master URL (``--cluster``); ``None`` for local mode on this machine.
        max_parallel: Local mode task slots (default: the available CPUs). On a cluster the executors
            decide.
        retries: Further attempts per task (``spark.task.maxFailures = retries + 1``) of a session
            this engine starts; a given ``session`` keeps its own setting.
        session: An existing SparkSession to use (kept running afterwards). Without one the engine
            uses the process's active session, else starts one and stops it when done.
        task: What runs per unit.
    """

    master: str | None = None
    max_parallel: int | None = None
    retries: int = 2
    session: Any = None
    task: Task = run_unit
    name: str = field(default="spark", init=False)

    def __post_init__(self) -> None:
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ScaleoutError(f"max_parallel must be at least 1, got {self.max_parallel}")
        if self.retries < 0:
            raise ScaleoutError(f"retries must be at least 0, got {self.retries}")

    def duckdb_threads(self) -> int:
        """One DuckDB thread per task: Spark runs a task per core."""
        return 1

    def run(self, units: list[WorkUnit], config: StoreConfig) -> MapReport:
        """Run every unit as a Spark task.

        Raises:
            UnitsFailedError: if a task failed more than ``spark.task.maxFailures`` times (Spark then
                stops the job; the message carries Spark's reason).
            ScaleoutError: if PySpark is missing.
        """
        started = time.monotonic()
        if not units:
            return MapReport(results={}, seconds=0.0)
        session, owned = self.session, False
        if session is None:
            session = _import_pyspark().getActiveSession()
            if session is not None and self.master and session.sparkContext.master != self.master:
                raise ScaleoutError(
                    f"this process already runs Spark on {session.sparkContext.master}; "
                    f"it cannot also connect to {self.master}"
                )
        if session is None:
            attempts = self.retries + 1
            master = self.master or local_master(self.max_parallel or default_parallelism(), attempts)
            session, owned = build_session(master, attempts=attempts), True
        try:
            ordered = sorted(units, key=lambda u: (-u.bytes, u.index))
            rdd = session.sparkContext.parallelize(ordered, len(ordered))
            try:
                collected = rdd.map(partial(_spark_task, self.task, config)).collect()
            except Exception as error:  # Py4J and PySpark raise their own types
                raise UnitsFailedError(
                    {-1: f"the Spark job failed: {_spark_reason(error)}"},
                    int(session.sparkContext.getConf().get("spark.task.maxFailures", "4")),
                ) from error
        finally:
            if owned:
                session.stop()
        results = {result.index: result for result, _attempt in collected}
        attempts_by_unit = {result.index: attempt + 1 for result, attempt in collected}
        return MapReport(results=results, attempts=attempts_by_unit, seconds=time.monotonic() - started)
