"""Scale-out benchmark: a monitoring backfill single-process, on the local engine and on Spark.

Generates (seeded numpy, Parquet through the store) ``--days`` days x ``--rows-per-day`` inference
rows of one classification model (8 numeric and 3 categorical features, two segment columns: a
region with 4 values, sliced, and a partner with 25, too many to slice; labels for half of the
requests, ``--files-per-day`` files a day) and its reference profile, then in the same process:

1. **DuckDB scan**: ``analytics.profile.profile`` over one ``read_parquet`` of every log file, per day
   (the floor: one scan, no metrics);
2. **single process**: ``jobs.monitor.run_monitor(backfill=True)``;
3. **local** and **spark** (local mode): the steps of ``jobs.scaleout.run_scaleout`` with that engine,
   timed one by one: plan, map (the units write partial profiles and partial aggregates), merge (the
   monitoring job's rows from the merged partials). During the merge the ``inference_logs`` folder is
   moved aside (``--keep-logs-at-merge`` leaves it): the merge reads no log.

After each run the window profiles written to ``profiles`` are compared with the DuckDB scan's:
every count and histogram exactly, min/max exactly, mean and m2 to a relative 1e-9 (the largest
relative difference is printed); the metrics rows of each engine are compared with the single-process
run's (floats to 1e-9; latency p50/p95/p99 and ROC AUC within their documented bounds, and the
largest differences are printed), and so are the ``segment_metrics`` rows (per region slice). Wall
and CPU times (user + system of this process and every descendant: pool workers, the JVM, Python
workers, sampled every 0.2 s by :class:`CpuMeter`) are printed with the machine's load average: on a
shared machine compare runs made together.

Usage::

    .venv/bin/python bench/scale_bench.py [--rows-per-day 1000000] [--days 30] [--files-per-day 4]
        [--unit-bytes 64MB] [--max-parallel 2] [--engines local,spark] [--workdir DIR] [--keep]
        [--keep-logs-at-merge]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.performance import AUC_SCORE_BINS, LATENCY_RELATIVE_ACCURACY  # noqa: E402
from analytics.profile import Profile, profile, profile_reference  # noqa: E402
from analytics.store import ParquetStore, StoreConfig, read_source  # noqa: E402
from jobs.contracts import INFERENCE_LOGS, LABELS, METRICS, REFERENCE_PROFILES, SEGMENT_METRICS  # noqa: E402
from jobs.monitor import MonitorRequest, read_window_profiles, run_monitor  # noqa: E402
from jobs.scaleout import make_engine  # noqa: E402
from jobs.scaleout.merge import merge  # noqa: E402
from jobs.scaleout.units import list_folder, plan_run  # noqa: E402

PROJECT, MODEL, ENVIRONMENT, VERSION = "bench", "scale", "prod", "1"
FIRST_DAY = date(2024, 1, 1)
NUMERIC = ("income", "age", "balance", "utilization", "tenure", "rate", "amount", "visits")
CATEGORICAL = {
    "channel": ("web", "app", "store", "phone"),
    "plan": ("basic", "plus", "pro"),
    "country": tuple(f"c{i:02d}" for i in range(40)),
}
SEGMENTS = ("north", "south", "east", "west")
PARTNERS = tuple(f"p{i:02d}" for i in range(25))
"""More values than a segment column may have to be sliced (``jobs._monitor_segments``)."""


# --------------------------------------------------------------------------- data


def _strings(rng: np.random.Generator, values: tuple[str, ...], rows: int, weights=None) -> pa.Array:
    indices = pa.array(rng.choice(len(values), rows, p=weights).astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(values)).cast(pa.string())


def _numeric(rng: np.random.Generator, rows: int, drift: float) -> dict[str, pa.Array]:
    return {
        "income": pa.array(rng.normal(52_000 * (1 + drift), 15_000, rows).round()),
        "age": pa.array(rng.integers(21, 80, rows), pa.int64()),
        "balance": pa.array(rng.lognormal(8 + drift, 1.0, rows)),
        "utilization": pa.array(rng.beta(2, 3, rows)),
        "tenure": pa.array(rng.gamma(2, 30, rows).round()),
        "rate": pa.array(rng.normal(11.5, 3, rows)),
        "amount": pa.array(rng.lognormal(9.5, 0.6, rows)),
        "visits": pa.array(rng.poisson(4, rows), pa.int64()),
    }


def training_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, 0])
    columns = _numeric(rng, rows, 0.0)
    for name, values in CATEGORICAL.items():
        columns[name] = _strings(rng, values, rows)
    columns["segment_region"] = _strings(rng, SEGMENTS, rows)
    columns["label"] = pa.array(rng.integers(0, 2, rows).astype(float))
    return pa.table(columns)


def log_table(day_index: int, file_index: int, rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, 1, day_index, file_index])
    day = FIRST_DAY + timedelta(days=day_index)
    start = np.datetime64(datetime(day.year, day.month, day.day), "us")
    offsets = np.sort(rng.integers(0, 86_400_000_000, rows))
    score = rng.random(rows)
    first_id = (day_index * 100 + file_index) * 10_000_000
    columns = {
        "version": pa.array(np.full(rows, VERSION)),
        "request_id": pc.cast(pa.array(np.arange(first_id, first_id + rows)), pa.string()),
        "timestamp": pa.array(start + offsets.astype("timedelta64[us]")).cast(pa.timestamp("us", tz="UTC")),
        "prediction": pa.array((score > 0.5).astype(float)),
        "score": pa.array(score),
        "latency_ms": pa.array(rng.gamma(2.0, 20.0, rows)),
        **_numeric(rng, rows, 0.02 * day_index / 30),
    }
    for name, values in CATEGORICAL.items():
        columns[name] = _strings(rng, values, rows)
    columns["segment_region"] = _strings(rng, SEGMENTS, rows)
    columns["segment_partner"] = _strings(rng, PARTNERS, rows)
    return pa.table(columns)


def generate(store: ParquetStore, days: int, rows_per_day: int, files_per_day: int, seed: int) -> None:
    training = training_table(200_000, seed)
    relation = store.cursor().from_arrow(training)
    reference = profile_reference(relation, list(training.column_names), kinds={"label": "categorical"})
    store.write_partition(
        REFERENCE_PROFILES,
        {"project": PROJECT, "model": MODEL, "version": VERSION},
        reference.to_arrow(),
        file_name="profile.parquet",
        replace_partition=True,
    )
    per_file = [
        rows_per_day // files_per_day + (1 if i < rows_per_day % files_per_day else 0)
        for i in range(files_per_day)
    ]
    for day_index in range(days):
        day = FIRST_DAY + timedelta(days=day_index)
        partition = {"project": PROJECT, "model": MODEL, "environment": ENVIRONMENT, "date": day.isoformat()}
        labels = []
        for file_index, rows in enumerate(per_file):
            table = log_table(day_index, file_index, rows, seed)
            store.write_partition(
                INFERENCE_LOGS, partition, table, file_name=f"part-{file_index:03d}.parquet"
            )
            ids = table.column("request_id").filter(
                pc.equal(pc.bit_wise_and(pc.cast(table.column("request_id"), pa.int64()), 1), 0)
            )
            labels.append(
                pa.table(
                    {
                        "request_id": ids,
                        "label": pa.array(
                            np.random.default_rng([seed, 2, day_index, file_index])
                            .integers(0, 2, len(ids))
                            .astype(float)
                        ),
                        "label_timestamp": pa.array(
                            [datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=2)]
                            * len(ids),
                            pa.timestamp("us", tz="UTC"),
                        ),
                    }
                )
            )
        store.write_partition(LABELS, partition, pa.concat_tables(labels), file_name="labels.parquet")


# --------------------------------------------------------------------------- comparisons


def compare_profiles(got: dict, want: dict) -> tuple[int, list[str], float]:
    """(windows compared, mismatches, largest relative difference of mean/m2)."""
    problems: list[str] = []
    worst = 0.0
    if sorted(got) != sorted(want):
        return 0, [f"windows differ: {len(got)} written, {len(want)} scanned"], math.nan
    exact = (
        "rows",
        "nulls",
        "nan",
        "neg_inf",
        "pos_inf",
        "finite",
        "min",
        "max",
        "bin_counts",
        "category_counts",
        "other_count",
    )
    for key, expected in want.items():
        actual: Profile = got[key]
        if actual.rows != expected.rows:
            problems.append(f"{key}: rows {actual.rows} != {expected.rows}")
        for column in expected.columns:
            other = actual[column.name]
            for name in exact:
                if getattr(other, name) != getattr(column, name):
                    problems.append(f"{key} {column.name}.{name}")
            for name in ("mean", "m2"):
                a, b = getattr(other, name), getattr(column, name)
                if (a is None) != (b is None):
                    problems.append(f"{key} {column.name}.{name}: {a} vs {b}")
                elif a is not None and b != 0:
                    worst = max(worst, abs(a - b) / abs(b))
    if worst > 1e-9:
        problems.append(f"moments differ by {worst:.2e} (> 1e-9)")
    return len(want), problems, worst


def metric_rows(store: ParquetStore, dataset: str = METRICS) -> list[dict]:
    table = store.read(dataset)
    rows = table.select([c for c in table.column_names if c != "date"]).to_pylist()
    return sorted(
        rows, key=lambda r: (r.get("segment", ""), r["version"], r["window_start"], r["column"], r["metric"])
    )


SKETCHED = {"latency_p50", "latency_p95", "latency_p99", "roc_auc"}
"""Binned in the merge (``analytics.performance`` partials), exact in today's single-process job."""


def compare_metrics(got: list[dict], want: list[dict]) -> tuple[list[str], float, float]:
    """(mismatches, largest relative difference of latency quantiles, largest AUC difference)."""
    if len(got) != len(want):
        return [f"{len(got)} metric rows, single process wrote {len(want)}"], math.nan, math.nan
    problems = []
    worst_latency = worst_auc = 0.0
    for a, b in zip(got, want, strict=True):
        sketched = b["metric"] in SKETCHED
        for key, value in b.items():
            other = a[key]
            if sketched and key in ("statistic", "threshold") and value is not None and other is not None:
                if b["metric"] == "roc_auc":
                    worst_auc = max(worst_auc, abs(other - value))
                    ok = abs(other - value) <= 1.0 / AUC_SCORE_BINS
                else:
                    worst_latency = max(worst_latency, abs(other - value) / abs(value) if value else 0.0)
                    ok = math.isclose(other, value, rel_tol=LATENCY_RELATIVE_ACCURACY * (1 + 1e-9))
                if not ok:
                    problems.append(
                        f"{b['metric']}/{b['column']} {key}: {other} vs {value} (beyond the bound)"
                    )
            elif sketched and key == "reason":
                continue  # the latency baseline's reason prints the median of sketched p95s
            elif isinstance(value, float) and isinstance(other, float) and not math.isnan(value):
                if not math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12):
                    problems.append(f"{b['metric']}/{b['column']} {key}: {other} vs {value}")
            elif other != value and not (
                isinstance(value, float) and math.isnan(value) and math.isnan(other)
            ):
                problems.append(f"{b['metric']}/{b['column']} {key}: {other!r} vs {value!r}")
    return problems, worst_latency, worst_auc


class CpuMeter:
    """CPU seconds (user + system) of this process and of every descendant, sampled in a thread.

    Descendants (pool workers, the JVM, PySpark's daemon and workers) come and go: each one's
    cumulative CPU is sampled every ``interval`` seconds and its last sample kept after it ends, so
    a process that ends loses at most one interval of CPU and none is counted twice (the reaped
    children's times of ``os.times`` are not used).
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                key = (child.pid, child.create_time())
            except psutil.Error:
                continue  # ended meanwhile: its last sample stands
            self.seen[key] = times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def total(self) -> float:
        """CPU seconds so far of this process and every descendant seen."""
        self._sample()
        own = os.times()
        return own.user + own.system + sum(self.seen.values())

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


METER: CpuMeter | None = None


class Step:
    """Wall and CPU time of a block."""

    def __enter__(self) -> Step:
        assert METER is not None
        self.wall, self.cpu = time.monotonic(), METER.total()
        return self

    def __exit__(self, *exc: object) -> None:
        assert METER is not None
        self.wall, self.cpu = time.monotonic() - self.wall, METER.total() - self.cpu


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--unit-bytes", default="64MB")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument(
        "--keep-logs-at-merge", action="store_true", help="leave inference_logs in place during the merge"
    )
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    data = workdir / "data"
    store = ParquetStore(
        StoreConfig(data_uri=str(data), threads=max(1, os.cpu_count() or 1), memory_limit="8GB")
    )
    timings: list[tuple[str, float, float]] = []
    global METER
    METER = CpuMeter()
    try:
        print(f"load average at start: {os.getloadavg()}; cpus: {os.cpu_count()}")
        if not store.list_files(INFERENCE_LOGS):
            started = time.monotonic()
            generate(store, args.days, args.rows_per_day, args.files_per_day, args.seed)
            print(
                f"generated {args.days} days x {args.rows_per_day} rows in {time.monotonic() - started:.1f} s"
            )
        files = store.list_files(INFERENCE_LOGS)
        size = sum(f.size for f in files)
        print(
            f"{len(files)} log files, {size / 1e6:.1f} MB, "
            f"{args.days * args.rows_per_day:,} rows under {data}"
        )
        request = MonitorRequest(backfill=True)
        now = datetime(2030, 1, 1, tzinfo=UTC)

        # 1. The floor: one DuckDB scan of every file, profiled per day.
        with Step() as step:
            reference = Profile.from_arrow(pq.read_table(store.list_files(REFERENCE_PROFILES)[0].path))
            spec = reference.spec.select([n for n in reference.spec.names if n != "label"])
            relation = read_source(store.cursor(), [f.path for f in files])
            scanned = profile(relation, spec, window="day", timestamp_column="timestamp")
        scanned = {(VERSION, start.replace(tzinfo=None)): p for start, p in scanned.items()}
        timings.append(("duckdb scan (profiles only)", step.wall, step.cpu))

        # 2. The single-process monitoring job.
        with Step() as step:
            summary = run_monitor(store, request, now=now)
        assert summary.ok, summary.to_text()
        timings.append(("single-process monitor backfill", step.wall, step.cpu))
        single_metrics = metric_rows(store)
        single_segments = metric_rows(store, SEGMENT_METRICS)
        windows, problems, worst = compare_profiles(
            read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT), scanned
        )
        print(
            f"single process: {windows} window profiles vs the scan: "
            f"{'EQUAL' if not problems else problems[:5]} (moments max rel diff {worst:.1e})"
        )

        # 3. The engines, step by step.
        logs_dir, hidden_dir = data / INFERENCE_LOGS, workdir / "hidden_inference_logs"
        for name in engines:
            options = {}
            if name == "spark":
                from jobs.scaleout.engines.spark import build_session, local_master

                with Step() as step:
                    session = build_session(local_master(args.max_parallel, 3), attempts=3)
                timings.append(("spark session start", step.wall, step.cpu))
                options["session"] = session
            engine = make_engine(name, max_parallel=None if name == "spark" else args.max_parallel, **options)
            with Step() as plan_step:
                threads = engine.duckdb_threads() if hasattr(engine, "duckdb_threads") else None
                plan = plan_run(store, request, unit_bytes=args.unit_bytes, duckdb_threads=threads)
            with Step() as map_step:
                report = engine.run(list(plan.units), store.config)
            partial_bytes = sum(size for _, size in list_folder(store, plan.layout.units_dir))
            if not args.keep_logs_at_merge:
                logs_dir.rename(hidden_dir)  # the merge must not need them
            try:
                with Step() as merge_step:
                    result = merge(store, plan.run_id, request=request, now=now)
            finally:
                if not args.keep_logs_at_merge:
                    hidden_dir.rename(logs_dir)
            assert result.ok, result.to_text()
            total_wall = plan_step.wall + map_step.wall + merge_step.wall
            total_cpu = plan_step.cpu + map_step.cpu + merge_step.cpu
            timings.append((f"{name}: plan + map + merge ({len(plan.units)} units)", total_wall, total_cpu))
            timings.append((f"{name}:   plan", plan_step.wall, plan_step.cpu))
            timings.append((f"{name}:   map ({report.retried} retried)", map_step.wall, map_step.cpu))
            where = "logs moved aside" if not args.keep_logs_at_merge else "logs in place"
            timings.append((f"{name}:   merge ({where})", merge_step.wall, merge_step.cpu))
            windows, problems, worst = compare_profiles(
                read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT), scanned
            )
            metric_problems, worst_latency, worst_auc = compare_metrics(metric_rows(store), single_metrics)
            segment_problems, _, _ = compare_metrics(metric_rows(store, SEGMENT_METRICS), single_segments)
            print(
                f"{name}: {windows} merged window profiles vs the DuckDB scan: "
                f"{'EQUAL' if not problems else problems[:5]} (moments max rel diff {worst:.1e}); "
                f"{len(single_metrics)} metric rows vs single process: "
                f"{'EQUAL' if not metric_problems else metric_problems[:5]} "
                f"(binned latency quantiles max rel diff {worst_latency:.1e} <= {LATENCY_RELATIVE_ACCURACY}, "
                f"binned ROC AUC max abs diff {worst_auc:.1e}); "
                f"{len(single_segments)} segment metric rows vs single process: "
                f"{'EQUAL' if not segment_problems else segment_problems[:5]}; "
                f"batches from the run {result.served}, computed from logs {len(result.declined)}; "
                f"partials {partial_bytes / 1e6:.1f} MB for {size / 1e6:.1f} MB of logs"
            )
            if result.served == 0 or result.declined:
                print(f"WARNING: {name}: the merge computed dates from the logs: {result.declined}")
            if name == "spark":
                options["session"].stop()
        print(f"\nload average at end: {os.getloadavg()}")
        print(f"{'step':<58} {'wall s':>9} {'cpu s':>9}")
        for label, seconds, cpu in timings:
            print(f"{label:<58} {seconds:>9.1f} {cpu:>9.1f}")
    finally:
        METER.stop()
        store.close()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
