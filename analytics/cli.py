"""Command line: ``python -m analytics drift --reference R --current C [...]``.

R and C are Parquet files, folders or globs, local or ``s3://``; the DuckDB connection comes from
:func:`analytics.store.connect_duckdb` with the studio settings (``MMS_*`` environment variables),
one DuckDB thread for local sources unless ``--threads`` says otherwise (see
:data:`LOCAL_DUCKDB_THREADS`), and may read only the data root and the two sources.

Exit codes: 0 when the report was produced (whether or not drift was found), 2 on bad arguments,
settings or unreadable input (with a message on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import duckdb

from analytics.drift import DriftReport, drift
from analytics.policy import Policy, PolicyError
from analytics.profile import DEFAULT_BINS, DEFAULT_TOP_K, ProfileError, profile, profile_reference

EXIT_OK = 0
EXIT_BAD_INPUT = 2

#: DuckDB threads of the report's connection when both sources are local. The numeric columns stream
#: from one DuckDB query into NumPy's two threads: with a second DuckDB thread the reading thread polls
#: for the workers' batches instead of decoding them itself, 10-25% more CPU for the whole report (2
#: shared cores, 1M rows x 25 columns). On a busy machine two threads may still finish sooner, by
#: taking a larger share of it. ``s3://`` sources keep ``MMS_DUCKDB_THREADS``: there parallel range
#: requests hide the network's latency.
LOCAL_DUCKDB_THREADS = 1


#: glibc ``mallopt`` parameters: ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Freed memory malloc keeps for reuse instead of giving it back (see :func:`_reuse_freed_memory`).
_MALLOC_KEEP_BYTES = 32 * 2**20


def _reuse_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks of up to 32 MB instead of unmapping them.

    The report streams each numeric column in Arrow batches of 256 kB that DuckDB allocates and frees
    batch after batch (and NumPy temporaries of the same size). With glibc's defaults many of those
    blocks go back to the kernel when freed, so the next batch faults its pages in again: about 20,000
    page faults and 0.05-0.1 s of CPU per million rows of 25 columns (``perf``: ``exc_page_fault`` under
    DuckDB's Arrow appender). Keeping up to 32 MB raises the peak RSS by a few MB. Process-wide, so
    only the command line does it; elsewhere (musl, macOS) it is skipped.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MALLOC_KEEP_BYTES)
    mallopt(_M_TRIM_THRESHOLD, 4 * _MALLOC_KEEP_BYTES)


class CliError(Exception):
    """A problem the user can fix; printed as ``error: <message>`` with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analytics", description="Model monitoring analytics.")
    commands = parser.add_subparsers(dest="command", required=True)
    drift_cmd = commands.add_parser(
        "drift",
        help="compare a current dataset with a reference, column by column",
        description="Per-column drift of CURRENT against REFERENCE with the default (or given) policy.",
    )
    drift_cmd.add_argument("--reference", required=True, help="Parquet file, folder or glob (local or s3://)")
    drift_cmd.add_argument("--current", required=True, help="Parquet file, folder or glob (local or s3://)")
    drift_cmd.add_argument(
        "--columns", help="comma-separated columns (default: every numeric/categorical one)"
    )
    drift_cmd.add_argument("--format", choices=("json", "table"), default="json")
    drift_cmd.add_argument(
        "--exact", action="store_true", help="numeric KS and Wasserstein on the raw values (SciPy)"
    )
    drift_cmd.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins per numeric column")
    drift_cmd.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="categories tracked per column")
    drift_cmd.add_argument("--policy", type=Path, help="JSON file with policy fields (see analytics.policy)")
    drift_cmd.add_argument(
        "--threads",
        type=_positive_int,
        help=f"DuckDB threads (default {LOCAL_DUCKDB_THREADS} for local sources, MMS_DUCKDB_THREADS for s3://)",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@contextlib.contextmanager
def _stdout_reserved_for_output() -> Iterator[None]:
    """Send file descriptor 1 to stderr while DuckDB works.

    DuckDB writes its progress bar for queries longer than two seconds straight to file descriptor
    1, and the store's connection locks its configuration so the bar cannot be switched off there;
    this keeps stdout for the report alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _load_policy(path: Path | None) -> Policy | None:
    if path is None:
        return None
    try:
        return Policy.from_dict(json.loads(path.read_text()))
    except OSError as error:
        raise CliError(f"cannot read policy file {path}: {error.strerror or error}") from error
    except (json.JSONDecodeError, PolicyError, TypeError, ValueError) as error:
        raise CliError(f"invalid policy file {path}: {error}") from error


def _connect(sources: Sequence[str], threads: int | None = None) -> duckdb.DuckDBPyConnection:
    from analytics.store import StoreError, connect_duckdb
    from app.settings import SettingsError, load_settings

    try:
        config = load_settings().store_config()
    except SettingsError as error:
        raise CliError(f"invalid settings: {error}") from error
    if threads is None and not any(source.strip().startswith("s3://") for source in sources):
        threads = LOCAL_DUCKDB_THREADS
    if threads is not None:
        config = dataclasses.replace(config, threads=threads)
    try:
        return connect_duckdb(config, allowed_paths=tuple(sources))
    except StoreError as error:
        raise CliError(f"cannot open DuckDB: {error}") from error


def _read(con: duckdb.DuckDBPyConnection, source: str, role: str) -> duckdb.DuckDBPyRelation:
    from analytics.store import StoreError, read_source

    try:
        return read_source(con, source)
    except StoreError as error:
        raise CliError(f"cannot read the {role} {source}: {error}") from error


def _on_own_cursor(
    con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation
) -> duckdb.DuckDBPyRelation | None:
    """The same relation on a new cursor of ``con``, for a query that runs beside one on ``rel``.

    Rebuilt from the relation's SQL, so it reads exactly the files ``rel`` was opened on (listing the
    source again could see files added since). ``None`` when DuckDB cannot rebuild it: the profiles then
    run their queries one after the other on ``rel``, with the same result.
    """
    try:
        return con.cursor().sql(rel.sql_query())
    except duckdb.Error:
        return None


#: Scans the numeric columns of each side are split between (see ``analytics.profile``): decoding
#: sets a profile's pace and one scan decodes in one thread, so two scans keep both cores of the
#: studio's machines busy.
NUMERIC_SCANS = 2


def _streams(con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation) -> list[duckdb.DuckDBPyRelation]:
    """``rel`` on :data:`NUMERIC_SCANS` - 1 more cursors (fewer where DuckDB cannot rebuild it)."""
    return [r for r in (_on_own_cursor(con, rel) for _ in range(NUMERIC_SCANS - 1)) if r is not None]


def run_drift(args: argparse.Namespace) -> DriftReport:
    """Compute the drift report the ``drift`` command prints.

    Raises:
        CliError: on unreadable sources, unknown columns, bad options or settings.
    """
    policy = _load_policy(args.policy)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    con = _connect([args.reference, args.current], args.threads)
    try:
        reference_rel = _read(con, args.reference, "reference")
        current_rel = _read(con, args.current, "current data")
        try:
            reference = profile_reference(
                reference_rel,
                columns,
                bins=args.bins,
                top_k=args.top_k,
                distinct=False,
                categorical_rel=_on_own_cursor(con, reference_rel),
                stream_rels=_streams(con, reference_rel),
            )
        except duckdb.Error as error:
            raise CliError(f"cannot read the reference {args.reference}: {_first_line(error)}") from error
        try:
            current = profile(
                current_rel,
                reference.spec,
                categorical_rel=_on_own_cursor(con, current_rel),
                stream_rels=_streams(con, current_rel),
            )
            return drift(
                reference, current, policy, exact=(reference_rel, current_rel) if args.exact else None
            )
        except duckdb.Error as error:
            raise CliError(f"cannot read the current data {args.current}: {_first_line(error)}") from error
    except ProfileError as error:
        raise CliError(str(error)) from error
    finally:
        con.close()


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _format_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(report: DriftReport) -> str:
    """Plain-text table of a drift report: one line per column, then the summary."""
    headers = ["column", "kind", "method", "statistic", "p_adj", "threshold", "drifted", "status", "reason"]
    rows = [
        [
            c.column,
            c.kind,
            c.method or "-",
            _format_number(c.statistic),
            _format_number(c.p_value_adjusted),
            _format_number(c.threshold),
            _format_number(c.drifted),
            c.status,
            c.reason or "",
        ]
        for c in report.columns
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    s = report.summary
    share = "-" if s.drift_share is None else f"{s.drift_share:.0%}"
    lines.append("")
    lines.append(
        f"{s.n_drifted} of {s.n_checked} checked columns drifted ({share}); "
        f"dataset drifted: {'yes' if s.dataset_drifted else 'no'} "
        f"(threshold {s.drift_share_threshold:.0%}); {s.n_insufficient} insufficient, {s.n_error} errors; "
        f"rows: reference {s.n_reference_rows}, current {s.n_current_rows}"
    )
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Entry point of ``python -m analytics``.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        stdout: Where the report goes (default ``sys.stdout``).
        stderr: Where errors go (default ``sys.stderr``).

    Returns:
        The exit code.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = _parser().parse_args(argv)
    _reuse_freed_memory()
    try:
        with _stdout_reserved_for_output():
            report = run_drift(args)
    except CliError as error:
        print(f"error: {error}", file=stderr)
        return EXIT_BAD_INPUT
    if args.format == "json":
        payload = {"reference": args.reference, "current": args.current, **report.to_json_dict()}
        json.dump(payload, stdout, indent=2, allow_nan=False)
        stdout.write("\n")
    else:
        stdout.write(render_table(report) + "\n")
    stdout.flush()
    return EXIT_OK


def end_process(code: int) -> NoReturn:
    """End a command's own process now, skipping the interpreter's teardown.

    Tearing down the imported modules (DuckDB, NumPy, pyarrow) and freeing their objects one by one
    costs 50-110 ms after the work is done (measured at 1M rows on 2 cores, about as much as a DuckDB
    scan of 100k rows), for a process about to end anyway. Logging and the standard streams are
    flushed first; the caller must have closed or published everything else (its connections, its
    files). Only for a process that runs nothing else (``python -m analytics``, ``python -m jobs
    monitor``).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main_and_exit() -> NoReturn:
    """``python -m analytics``: :func:`main`, then :func:`end_process`.

    :func:`run_drift` has closed the DuckDB connection by then, so nothing is lost; an argument error
    or an unexpected exception still exits the ordinary way.
    """
    end_process(main())
