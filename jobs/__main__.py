"""``python -m jobs``: the studio's job command line (see :mod:`jobs.cli`)."""

import gc
import os
import sys

if sys.argv[1:2] == ["monitor"] and "--engine" not in sys.argv:
    # Read once, when jobs.cli below imports NumPy and pyarrow; the engines' workers (Spark) keep
    # their own settings. Measured on a 200k-row day (bench/monitor_bench.py, perf):
    # - the job calls no BLAS routine, but NumPy's bundled OpenBLAS starts a server thread per extra
    #   core on import that spins for about 0.1 s before it sleeps (blas_thread_server, 7% of the CPU);
    # - pyarrow's mimalloc pool asks for transparent huge pages, and the kernel zeroes 2 MB for each
    #   first touch of the day's short-lived Arrow tables (clear_page_erms, 19% of the CPU): without
    #   them the run's system time drops from about 0.5 s to 0.2 s, its wall time by about a fifth.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
    # No cyclic collection during the imports either (about 5 ms of walking their young objects):
    # the command freezes what they leave and keeps the collector off for the run (jobs.monitor).
    gc.disable()
    from jobs._deferred_import import defer

    # The job's modules import DuckDB at the top; the command loads it beside the read of the day
    # (jobs.monitor, _monitor_command), instead of before anything else.
    defer(["duckdb"])

from jobs.cli import main

sys.exit(main(whole_process=True))
