"""Scale-out benchmark: a monitoring backfill single-process, on the local engine and on Spark.

Generates (seeded numpy, Parquet through the store) ``--days`` days x ``--rows-per-day`` inference
rows of one classification model (8 numeric and 3 categorical features, a segment, labels for half of
the requests, ``--files-per-day`` files a day) and its reference profile, then in the same process:

1. **DuckDB scan**: ``analytics.profile.profile`` over one ``read_parquet`` of every log file, per day
   (the floor: one scan, no metrics);
2. **single process**: ``jobs.monitor.run_monitor(backfill=True)``;
3. **local** and **spark** (local mode): ``jobs.scaleout.run_scaleout`` with that engine (plan, map,
   merge; the merge runs the monitoring job on the merged window profiles).

After each run the window profiles written to ``profiles`` are compared with the DuckDB scan's:
every count and histogram exactly, min/max exactly, mean and m2 to a relative 1e-9 (the largest
relative difference is printed); the metrics rows of each engine are compared with the single-process
run's (floats to 1e-9). Wall times are printed with the machine's load average: on a shared machine
compare runs made together.

Usage::

    .venv/bin/python bench/scale_bench.py [--rows-per-day 1000000] [--days 30] [--files-per-day 4]
        [--unit-bytes 64MB] [--max-parallel 2] [--engines local,spark] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.profile import Profile, profile, profile_reference  # noqa: E402
from analytics.store import ParquetStore, StoreConfig, read_source  # noqa: E402
from jobs.contracts import INFERENCE_LOGS, LABELS, METRICS, REFERENCE_PROFILES  # noqa: E402
from jobs.monitor import MonitorRequest, read_window_profiles, run_monitor  # noqa: E402
from jobs.scaleout import make_engine, run_scaleout  # noqa: E402

PROJECT, MODEL, ENVIRONMENT, VERSION = "bench", "scale", "prod", "1"
FIRST_DAY = date(2024, 1, 1)
NUMERIC = ("income", "age", "balance", "utilization", "tenure", "rate", "amount", "visits")
CATEGORICAL = {
    "channel": ("web", "app", "store", "phone"),
    "plan": ("basic", "plus", "pro"),
    "country": tuple(f"c{i:02d}" for i in range(40)),
}
SEGMENTS = ("north", "south", "east", "west")


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


def metric_rows(store: ParquetStore) -> list[dict]:
    table = store.read(METRICS)
    rows = table.select([c for c in table.column_names if c != "date"]).to_pylist()
    return sorted(rows, key=lambda r: (r["version"], r["window_start"], r["column"], r["metric"]))


def compare_metrics(got: list[dict], want: list[dict]) -> list[str]:
    if len(got) != len(want):
        return [f"{len(got)} metric rows, single process wrote {len(want)}"]
    problems = []
    for a, b in zip(got, want, strict=True):
        for key, value in b.items():
            other = a[key]
            if isinstance(value, float) and isinstance(other, float) and not math.isnan(value):
                if not math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12):
                    problems.append(f"{b['metric']}/{b['column']} {key}: {other} vs {value}")
            elif other != value and not (
                isinstance(value, float) and math.isnan(value) and math.isnan(other)
            ):
                problems.append(f"{b['metric']}/{b['column']} {key}: {other!r} vs {value!r}")
    return problems


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
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    data = workdir / "data"
    store = ParquetStore(
        StoreConfig(data_uri=str(data), threads=max(1, os.cpu_count() or 1), memory_limit="8GB")
    )
    timings: list[tuple[str, float]] = []
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
        started = time.monotonic()
        reference = Profile.from_arrow(pq.read_table(store.list_files(REFERENCE_PROFILES)[0].path))
        spec = reference.spec.select([n for n in reference.spec.names if n != "label"])
        relation = read_source(store.cursor(), [f.path for f in files])
        scanned = profile(relation, spec, window="day", timestamp_column="timestamp")
        scan_s = time.monotonic() - started
        scanned = {(VERSION, start.replace(tzinfo=None)): p for start, p in scanned.items()}
        timings.append(("duckdb scan (profiles only)", scan_s))

        # 2. The single-process monitoring job.
        started = time.monotonic()
        summary = run_monitor(store, request, now=now)
        single_s = time.monotonic() - started
        assert summary.ok, summary.to_text()
        timings.append(("single-process monitor backfill", single_s))
        single_metrics = metric_rows(store)
        windows, problems, worst = compare_profiles(
            read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT), scanned
        )
        print(
            f"single process: {windows} window profiles vs the scan: "
            f"{'EQUAL' if not problems else problems[:5]} (moments max rel diff {worst:.1e})"
        )

        # 3. The engines.
        for name in engines:
            options = {}
            if name == "spark":
                from jobs.scaleout.engines.spark import build_session, local_master

                started = time.monotonic()
                session = build_session(local_master(args.max_parallel, 3), attempts=3)
                session_s = time.monotonic() - started
                timings.append(("spark session start", session_s))
                options["session"] = session
            engine = make_engine(name, max_parallel=None if name == "spark" else args.max_parallel, **options)
            started = time.monotonic()
            result = run_scaleout(store, request, engine, unit_bytes=args.unit_bytes, now=now)
            total = time.monotonic() - started
            assert result.ok, result.to_text()
            timings.append((f"{name}: plan + map + merge ({result.units} units)", total))
            timings.append((f"{name}:   map", result.map_seconds))
            timings.append((f"{name}:   merge (monitoring job on merged profiles)", result.merge_seconds))
            windows, problems, worst = compare_profiles(
                read_window_profiles(store, PROJECT, MODEL, ENVIRONMENT), scanned
            )
            metric_problems = compare_metrics(metric_rows(store), single_metrics)
            print(
                f"{name}: {windows} merged window profiles vs the DuckDB scan: "
                f"{'EQUAL' if not problems else problems[:5]} (moments max rel diff {worst:.1e}); "
                f"{len(single_metrics)} metric rows vs single process: "
                f"{'EQUAL' if not metric_problems else metric_problems[:5]}; "
                f"batches from the run {result.merge.served}, profiled again {len(result.merge.declined)}"
            )
            if result.merge.served == 0 or result.merge.declined:
                print(f"WARNING: {name}: the monitoring job profiled batches itself: {result.merge.declined}")
            if name == "spark":
                options["session"].stop()
        print(f"\nload average at end: {os.getloadavg()}")
        print(f"{'step':<58} {'wall s':>9}")
        for label, seconds in timings:
            print(f"{label:<58} {seconds:>9.1f}")
    finally:
        store.close()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
