"""Benchmark of the monitoring job: one incremental day against a plain scan, and a 90-day backfill.

Run from the repository root::

    .venv/bin/python bench/monitor_bench.py                 # the defaults below
    .venv/bin/python bench/monitor_bench.py --rows 50000    # a quicker look

What it does, in a temporary folder (``--workdir`` to keep it):

1. **Incremental day.** One model with ``--features`` features (4/5 numeric, 1/5 categorical) and a
   ``segment_region`` column of four values (so the job's per-segment metrics are measured too), a
   reference profile of ``--reference-rows`` training rows, ``--prior-days`` days of ``--rows`` requests
   already monitored, then one new day of ``--rows`` requests (with its labels). Measured, each in a
   fresh ``python`` process (wall time, CPU time and peak RSS from ``wait4``):

   * ``scan``: DuckDB reading every column of the new day's partition (``min``/``max`` of each), the
     least any job that looks at the data must pay. Two versions: the file list inlined in the SQL
     text, and the file list as a prepared parameter (the first measured version): binding a Python
     parameter makes DuckDB import pandas, about 0.6 s of CPU the scan itself does not need, so the
     ratio against that floor flatters the job;
   * ``incremental``: ``python -m jobs monitor``, which finds the one new day and computes its profile,
     drift, data quality, performance, latency and writes them.

   Target: incremental <= 2 x scan. For information, the same day is also recomputed in one process
   that stays up (as the scheduler runs the job), its imports paid before the runs are timed.

2. **Backfill.** The same model with ``--backfill-days`` days of ``--backfill-rows`` requests:
   ``python -m jobs monitor --backfill`` over all of them, then one more day added and monitored
   incrementally. Target: backfill <= ``--backfill-days`` x that incremental run.

Timings depend on the machine's load: the figures printed include the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analytics.store import ParquetStore, StoreConfig  # noqa: E402
from jobs.contracts import INFERENCE_LOGS, LABELS, REFERENCE_PROFILES, UTC_MICROS  # noqa: E402
from jobs.training import PROFILE_FILE_NAME, reference_profile  # noqa: E402

PROJECT, MODEL, ENVIRONMENT, VERSION = "bench", "model", "prod", "1"
LEVELS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
REGIONS = ("north", "south", "east", "west")
REGION_SHARES = np.array([0.3, 0.25, 0.25, 0.2])
MICROS_PER_DAY = 86_400_000_000


@dataclass
class Measure:
    """One subprocess run."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    sys_s: float
    returncode: int
    output: str


def run(command: list[str], env: dict[str, str]) -> Measure:
    """Run ``command`` in a fresh process; wall time, its CPU time and peak RSS (``wait4``).

    The peak RSS is a ceiling: Linux carries the high-water mark of the forked copy of this process
    (a few hundred MB once the data are written) across ``exec``, so a small process reads as big as
    the bench (the scan peaks near 80 MB under ``/usr/bin/time -v``).
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measure(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        sys_s=usage.ru_stime,
        returncode=process.returncode,
        output=output,
    )


# --------------------------------------------------------------------------- synthetic data


def feature_names(features: int) -> tuple[list[str], list[str]]:
    categorical = max(1, features // 5)
    numeric = features - categorical
    return [f"num_{i:02d}" for i in range(numeric)], [f"cat_{i:02d}" for i in range(categorical)]


def draw_features(rng: np.random.Generator, n: int, features: int) -> dict[str, pa.Array]:
    numeric, categorical = feature_names(features)
    columns: dict[str, pa.Array] = {}
    for i, name in enumerate(numeric):
        kind = i % 4
        if kind == 0:
            values = rng.normal(50 + i, 10 + i, n)
        elif kind == 1:
            values = rng.lognormal(2 + i / 10, 0.5, n)
        elif kind == 2:
            values = rng.poisson(3 + i % 5, n).astype(np.float64)
        else:
            values = rng.beta(2, 5, n)
        mask = rng.random(n) < 0.01  # a few nulls, as real features have
        columns[name] = pa.array(np.round(values, 4), pa.float64(), mask=mask)
    shares = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    for name in categorical:
        columns[name] = pa.array(np.array(LEVELS, dtype=object)[rng.choice(len(LEVELS), n, p=shares)])
    # A segment column, as the demo's logs carry: the job slices the traffic by its values.
    regions = rng.choice(len(REGIONS), n, p=REGION_SHARES)
    columns["segment_region"] = pa.DictionaryArray.from_arrays(
        pa.array(regions, pa.int32()), pa.array(REGIONS)
    ).cast(pa.string())
    return columns


def write_reference(store: ParquetStore, features: int, rows: int) -> None:
    rng = np.random.default_rng(1)
    table = pa.table({**draw_features(rng, rows, features), "label": (rng.random(rows) < 0.2).astype(float)})
    columns = [*table.column_names]
    profile = reference_profile(store, table, columns, task="classification")
    store.write_partition(
        REFERENCE_PROFILES,
        {"project": PROJECT, "model": MODEL, "version": VERSION},
        profile.to_arrow(),
        file_name=PROFILE_FILE_NAME,
        replace_partition=True,
    )


def write_day(store: ParquetStore, day: date, rows: int, features: int, seed: int) -> None:
    """One day of requests and the labels of 90% of them."""
    rng = np.random.default_rng([seed, day.toordinal()])
    start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp()) * 1_000_000
    micros = np.sort(rng.integers(0, MICROS_PER_DAY, rows)) + start
    score = rng.beta(2, 6, rows)
    request_ids = pa.array([f"{day:%Y%m%d}-{i:07d}" for i in range(rows)])
    logs = pa.table(
        {
            "version": pa.repeat(pa.scalar(VERSION), rows),
            "request_id": request_ids,
            "timestamp": pa.array(micros, pa.int64()).cast(UTC_MICROS),
            **draw_features(rng, rows, features),
            "prediction": pa.array((score >= 0.5).astype(float)),
            "score": pa.array(score),
            "latency_ms": pa.array(np.round(rng.lognormal(np.log(28), 0.35, rows), 3)),
        }
    )
    partition = {"project": PROJECT, "model": MODEL, "environment": ENVIRONMENT, "date": day.isoformat()}
    store.write_partition(INFERENCE_LOGS, partition, logs, replace_partition=True)
    labelled = np.flatnonzero(rng.random(rows) < 0.9)
    labels = pa.table(
        {
            "request_id": request_ids.take(labelled),
            "label": pa.array((rng.random(len(labelled)) < score[labelled]).astype(float)),
            "label_timestamp": pa.array(micros[labelled] + MICROS_PER_DAY, pa.int64()).cast(UTC_MICROS),
        }
    )
    store.write_partition(LABELS, partition, labels, replace_partition=True)


# --------------------------------------------------------------------------- the two scenarios


def environment(root: Path) -> dict[str, str]:
    """Environment of the job and scan processes.

    Bytecode is cached even where the calling shell sets ``PYTHONDONTWRITEBYTECODE``, as
    ``bench/drift_bench.py`` does (in ``pycache`` beside the scenarios' folders, not in the checkout):
    a deployed job runs from compiled modules (the image compiles the sources), and compiling the
    studio's modules from source on every run costs the job about 0.1 s that the scan, which imports no
    project module, never pays. The incremental scenario's first, untimed run writes the cache.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        MMS_DATA_URI=str(root / "data"),
        MMS_VAR_DIR=str(root / "var"),
        PYTHONPATH=str(REPO),
        PYTHONPYCACHEPREFIX=str(root.parent / "pycache"),  # shared by the two scenarios
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def monitor(env: dict[str, str], *args: str) -> Measure:
    measure = run([sys.executable, "-m", "jobs", "monitor", *args], env)
    if measure.returncode != 0:
        raise SystemExit(f"monitor failed ({measure.returncode}):\n{measure.output}")
    return measure


SCAN = """
import sys, duckdb
con = duckdb.connect(config={"threads": 2})
files = sys.argv[1:]
source = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({source})").fetchall()
columns = [row[0] for row in described]
items = ", ".join(f'min("{c}"), max("{c}")' for c in columns)
print(con.execute(f"SELECT count(*), {items} FROM read_parquet({source})").fetchone()[0])
"""

SCAN_WITH_PARAMETER = """
import sys, duckdb
con = duckdb.connect(config={"threads": 2})
files = sys.argv[1:]
described = con.execute("DESCRIBE SELECT * FROM read_parquet($files)", {"files": files}).fetchall()
columns = [row[0] for row in described]
items = ", ".join(f'min("{c}"), max("{c}")' for c in columns)
print(con.execute(f"SELECT count(*), {items} FROM read_parquet($files)", {"files": files}).fetchone()[0])
"""


IN_PROCESS = """
import sys, time
from datetime import date
from analytics.store import ParquetStore, StoreConfig
from app.settings import load_settings
from jobs.monitor import MonitorRequest, run_monitor

day = date.fromisoformat(sys.argv[1])
store = ParquetStore(load_settings().store_config())
request = MonitorRequest(since=day, until=day, backfill=True)
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    summary = run_monitor(store, request)
    assert summary.computed_dates == 1, summary.to_text()
    print(time.perf_counter() - started)
store.close()
"""


def in_process(env: dict[str, str], day: date, runs: int) -> list[float]:
    """Wall times of ``runs`` runs of the job for ``day`` in one process that stays up, as the scheduler
    runs it (``run_scheduled_monitor`` calls ``run_monitor``): the imports are paid once, before."""
    measure = run([sys.executable, "-c", IN_PROCESS, day.isoformat(), str(runs)], env)
    if measure.returncode != 0:
        raise SystemExit(f"in-process runs failed:\n{measure.output}")
    return [float(line) for line in measure.output.split()]


def scan(env: dict[str, str], store: ParquetStore, day: date, script: str = SCAN) -> Measure:
    files = [f.path for f in store.list_files(INFERENCE_LOGS, filters={"date": day.isoformat()})]
    measure = run([sys.executable, "-c", script, *files], env)
    if measure.returncode != 0:
        raise SystemExit(f"scan failed:\n{measure.output}")
    return measure


def incremental_scenario(args: argparse.Namespace, root: Path) -> dict[str, Measure]:
    env = environment(root)
    store = ParquetStore(StoreConfig(data_uri=env["MMS_DATA_URI"]))
    first = date.today() - timedelta(days=args.prior_days + 1)
    write_reference(store, args.features, args.reference_rows)
    for offset in range(args.prior_days):
        write_day(store, first + timedelta(days=offset), args.rows, args.features, seed=11)
    monitor(env)  # the days before: already monitored when the new day arrives
    new_day = first + timedelta(days=args.prior_days)
    write_day(store, new_day, args.rows, args.features, seed=11)
    scan(env, store, new_day)  # warm the page cache for both contenders
    measures = {"incremental": monitor(env)}
    if "1 date(s) computed" not in measures["incremental"].output:
        raise SystemExit(
            f"the incremental run did not compute exactly one date:\n{measures['incremental'].output}"
        )
    # Interleaved, so every contender sees the same machine load.
    repeats, scans, parameter_scans = [measures["incremental"]], [], []
    for index in range(args.repeats):
        scans.append(scan(env, store, new_day))
        parameter_scans.append(scan(env, store, new_day, SCAN_WITH_PARAMETER))
        if index < args.repeats - 1:
            repeats.append(
                monitor(env, "--backfill", "--since", new_day.isoformat(), "--until", new_day.isoformat())
            )
    measures["incremental"] = median(repeats)
    measures["scan"] = median(scans)
    measures["scan_parameter"] = median(parameter_scans)
    walls = in_process(env, new_day, args.repeats + 1)[1:]  # the first run warms the process's caches
    measures["in_process"] = Measure(statistics.median(walls), 0.0, 0.0, 0.0, 0, "")
    store.close()
    return measures


def backfill_scenario(args: argparse.Namespace, root: Path) -> dict[str, Measure]:
    env = environment(root)
    store = ParquetStore(StoreConfig(data_uri=env["MMS_DATA_URI"]))
    first = date.today() - timedelta(days=args.backfill_days + 1)
    write_reference(store, args.features, args.reference_rows)
    for offset in range(args.backfill_days):
        write_day(store, first + timedelta(days=offset), args.backfill_rows, args.features, seed=13)
    measures = {"backfill": monitor(env, "--backfill")}
    new_day = first + timedelta(days=args.backfill_days)
    write_day(store, new_day, args.backfill_rows, args.features, seed=13)
    repeats = [monitor(env)]
    for _ in range(args.repeats - 1):
        repeats.append(
            monitor(env, "--backfill", "--since", new_day.isoformat(), "--until", new_day.isoformat())
        )
    measures["incremental"] = median(repeats)
    store.close()
    return measures


def median(measures: list[Measure]) -> Measure:
    ordered = sorted(measures, key=lambda m: m.wall_s)
    middle = ordered[len(ordered) // 2]
    return Measure(
        wall_s=statistics.median(m.wall_s for m in measures),
        cpu_s=statistics.median(m.cpu_s for m in measures),
        peak_rss_mb=max(m.peak_rss_mb for m in measures),
        sys_s=statistics.median(m.sys_s for m in measures),
        returncode=middle.returncode,
        output=middle.output,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="requests of the incremental day")
    parser.add_argument("--features", type=int, default=25)
    parser.add_argument("--reference-rows", type=int, default=50_000)
    parser.add_argument("--prior-days", type=int, default=3, help="days monitored before the new one")
    parser.add_argument("--backfill-days", type=int, default=90)
    parser.add_argument("--backfill-rows", type=int, default=20_000, help="requests per backfilled day")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measure (the median is kept)")
    parser.add_argument("--workdir", help="keep the data here instead of a temporary folder")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-backfill", action="store_true", help="measure the incremental day only")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mms-monitor-bench-"))
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"python {sys.version.split()[0]}"
    )
    try:
        inc = incremental_scenario(args, workdir / "incremental")
        back = None if args.no_backfill else backfill_scenario(args, workdir / "backfill")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def line(label: str, m: Measure) -> str:
        # The system share of the CPU (page faults of fresh memory) varies most with the machine's load.
        return (
            f"  {label:<44} wall {m.wall_s:7.2f} s   cpu {m.cpu_s:7.2f} s (sys {m.sys_s:4.2f})   "
            f"peak RSS {m.peak_rss_mb:7.1f} MB"
        )

    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    print(f"\n1. one new day of {args.rows:,} rows x {args.features} features (median of {args.repeats}):")
    print(line("DuckDB scan of the day's partition", inc["scan"]))
    print(line("same scan, files as a parameter (+pandas)", inc["scan_parameter"]))
    print(line("python -m jobs monitor (incremental)", inc["incremental"]))
    ratio = inc["incremental"].wall_s / inc["scan"].wall_s
    cpu_ratio = inc["incremental"].cpu_s / inc["scan"].cpu_s
    ok_incremental = ratio <= 2.0
    print(
        f"  incremental / scan = {ratio:.2f} (wall), {cpu_ratio:.2f} (cpu); target <= 2: "
        f"{'met' if ok_incremental else 'MISSED'}"
    )
    print(
        f"  in a process that stays up (the scheduler's way, imports paid once): "
        f"{inc['in_process'].wall_s:.2f} s wall = {inc['in_process'].wall_s / inc['scan'].wall_s:.2f} x scan "
        "(not the target's measure: the target counts the whole process)"
    )
    print(
        f"  incremental / scan with parameter = "
        f"{inc['incremental'].wall_s / inc['scan_parameter'].wall_s:.2f} (wall), "
        f"{inc['incremental'].cpu_s / inc['scan_parameter'].cpu_s:.2f} (cpu)"
    )

    if back is None:
        return 1 if args.check and not ok_incremental else 0
    days = args.backfill_days
    print(f"\n2. backfill of {days} days x {args.backfill_rows:,} rows ({args.features} features):")
    print(line(f"python -m jobs monitor --backfill ({days} days)", back["backfill"]))
    print(line("python -m jobs monitor (one more day)", back["incremental"]))
    budget = days * back["incremental"].wall_s
    ok_backfill = back["backfill"].wall_s <= budget
    cpu_share = back["backfill"].cpu_s / (days * back["incremental"].cpu_s)
    print(
        f"  backfill / ({days} x incremental) = {back['backfill'].wall_s / budget:.3f} (wall), "
        f"{cpu_share:.3f} (cpu); target <= 1: {'met' if ok_backfill else 'MISSED'}"
    )
    print(
        f"  backfill per day: {back['backfill'].wall_s / days * 1000:.0f} ms wall, "
        f"{back['backfill'].cpu_s / days * 1000:.0f} ms cpu (incremental day: "
        f"{back['incremental'].wall_s * 1000:.0f} ms wall, {back['incremental'].cpu_s * 1000:.0f} ms cpu)"
    )
    if args.check and not (ok_incremental and ok_backfill):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
