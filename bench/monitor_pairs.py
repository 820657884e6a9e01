"""Two versions of the monitoring job, run alternately on one bench day: which is faster, and by how much.

``bench/monitor_bench.py`` measures the job against a DuckDB scan; from one run to the next the
machine's load moves a run by more than most changes do (a round's scan by about 30 %). This runs
each contender right after the other, round after round, and reports the paired differences, so
two versions of the code are compared under the same load. Each round also times the scan, for the
target's ratio.

Run from the repository root, after a ``bench/monitor_bench.py --workdir DIR`` run wrote the data::

    .venv/bin/python bench/monitor_bench.py --no-backfill --repeats 1 --workdir /tmp/bw
    git worktree add /tmp/before HEAD~3 && make -C /tmp/before analytics/_build/libmms_kernels.so
    .venv/bin/python bench/monitor_pairs.py --workdir /tmp/bw --rounds 24 /tmp/before .

Each contender is a checkout (its own ``analytics/_build`` library built); the day recomputed is the
last day of the incremental scenario's logs (``--backfill --since D --until D``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.monitor_bench import SCAN, environment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="the contenders: checkouts of the studio")
    parser.add_argument("--workdir", type=Path, required=True, help="the --workdir of a monitor_bench.py run")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    scenario = args.workdir / "incremental"
    logs = sorted((scenario / "data" / "inference_logs").glob("*/*/*/date=*"))
    if not logs:
        raise SystemExit(f"no inference logs under {scenario}: run bench/monitor_bench.py --workdir first")
    day = logs[-1].name.removeprefix("date=")
    files = [str(path) for path in sorted(logs[-1].glob("*.parquet"))]
    env = environment(scenario)  # the bench's own: its data, and bytecode cached beside it
    job = ["-m", "jobs", "monitor", "--backfill", "--since", day, "--until", day]

    def timed(arguments: list[str], checkout: Path) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *arguments],
            env={**env, "PYTHONPATH": str(checkout)},
            cwd=checkout,
            capture_output=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(
                f"{arguments[:3]} in {checkout} failed:\n{done.stdout.decode()}{done.stderr.decode()}"
            )
        return wall

    checkouts = [path.resolve() for path in args.checkouts]
    for checkout in checkouts:
        timed(job, checkout)  # writes the checkout's bytecode under the prefix
    scans: list[float] = []
    walls: dict[Path, list[float]] = {checkout: [] for checkout in checkouts}
    for _ in range(args.rounds):
        scans.append(timed(["-c", SCAN, *files], REPO))
        for checkout in checkouts:
            walls[checkout].append(timed(job, checkout))
    print(f"{args.rounds} rounds, day {day}; scan median {statistics.median(scans):.3f} s")
    first = checkouts[0]
    for checkout in checkouts:
        ratios = [wall / scan for wall, scan in zip(walls[checkout], scans, strict=True)]
        line = (
            f"  {checkout}: median {statistics.median(walls[checkout]):.3f} s, "
            f"median ratio to the round's scan {statistics.median(ratios):.2f}"
        )
        if checkout != first:
            differences = [b - a for a, b in zip(walls[first], walls[checkout], strict=True)]
            faster = sum(d < 0 for d in differences)
            line += (
                f"; against {first.name or first}: paired median {statistics.median(differences):+.3f} s, "
                f"faster in {faster}/{args.rounds}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
