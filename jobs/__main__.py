"""``python -m jobs``: the studio's job command line (see :mod:`jobs.cli`)."""

import gc
import os
import sys


def _keep_freed_memory() -> None:
    """glibc: no mmap per block below 64 MB, no trimming of the heap below 128 MB, two arenas (not up
    to eight per core). Applied with mallopt: glibc reads its MALLOC_* variables at start."""
    import ctypes  # NumPy imports it anyway

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: leave the allocator as it is
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_mmap_threshold, 64 * 2**20)
    mallopt(m_trim_threshold, 128 * 2**20)
    mallopt(m_arena_max, 2)


if sys.argv[1:2] == ["monitor"] and "--engine" not in sys.argv:
    # Read once, when jobs.cli below imports NumPy and pyarrow; the engines' workers (Spark) keep
    # their own settings. Measured on a 200k-row day (bench/monitor_bench.py, perf):
    # - the job calls no BLAS routine, but NumPy's bundled OpenBLAS starts a server thread per extra
    #   core on import that spins for about 0.1 s before it sleeps (blas_thread_server, 7% of the CPU);
    # - pyarrow's mimalloc pool asks for transparent huge pages, and the kernel zeroes 2 MB for each
    #   first touch of the day's short-lived Arrow tables (clear_page_erms, 19% of the CPU): without
    #   them the run's system time drops from about 0.5 s to 0.2 s, its wall time by about a fifth.
    # - a fifth of the run's CPU was the kernel, mostly zeroing pages on first touch: NumPy's
    #   temporaries come from glibc, which hands big blocks back to the system when freed (mmap,
    #   trimming) and faults them in again for the next array. Keeping them for reuse
    #   (_keep_freed_memory) took about 10% of the page faults and 0.04 s of wall time (24
    #   interleaved pairs: better in 15), for 6% more peak memory in a 90-day backfill (943 MB).
    #   mimalloc's purge delay (pyarrow's pool) saved no page fault here and cost that backfill 200 MB.
    # - pyarrow's buffers from glibc too (its "system" pool), so that the day's file buffers and
    #   decoded columns, once freed, are reused by NumPy's temporaries and the next Arrow tables
    #   instead of faulted in afresh: a quarter fewer page faults, 50 MB less peak memory, and
    #   0.017 s of wall time (20 interleaved pairs against mimalloc: better in 18).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _keep_freed_memory()
    # No cyclic collection during the imports either (about 5 ms of walking their young objects):
    # the command freezes what they leave and keeps the collector off for the run (jobs.monitor).
    gc.disable()
    from jobs._deferred_import import defer

    # The job's modules import DuckDB at the top; the command computes from its Arrow tables and
    # loads DuckDB only if some query needs it (jobs.monitor, _TargetRun._compute): about 0.1 s of
    # CPU, and a connection, that a clean day never pays. pyarrow.compute (0.03 s: it writes a
    # wrapper and its docstring for each of its functions) loads beside the read of the day.
    defer(["duckdb", "pyarrow.compute"])

from jobs.cli import main  # noqa: E402 - after the process settings above

sys.exit(main(whole_process=True))
