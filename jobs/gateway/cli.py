"""``python -m jobs serve``: run the inference gateway under uvicorn.

The options become ``MMS_GATEWAY_*`` variables (see :mod:`jobs.gateway.config`)
that each worker process reads when uvicorn imports the app factory, so the same
configuration also works under gunicorn (``docs/GATEWAY.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from app.settings import Settings

FACTORY = "jobs.gateway.app:create_app_from_environ"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from jobs.cli import EXIT_OK, UsageError
    from jobs.gateway.config import GatewayConfig

    environ = {**os.environ, "MMS_GATEWAY_ENVIRONMENT": args.env}
    config = GatewayConfig.from_environ(environ)
    overrides: dict[str, Any] = {}
    for option, field in (
        ("routes", "routes"),
        ("refresh_interval", "refresh_interval_s"),
        ("state_dir", "state_dir"),
        ("flush_rows", "flush_rows"),
        ("flush_interval", "flush_interval_s"),
        ("score_timeout", "score_timeout_s"),
    ):
        value = getattr(args, option)
        if value is not None:
            overrides[field] = value
    if args.preload:
        overrides["preload"] = tuple(args.preload)
    if args.no_logging:
        overrides["logging_enabled"] = False
    config = dataclasses.replace(config, **overrides)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    os.environ.update(config.to_environ())
    # One scoring thread per worker process: with workers = cores, OpenMP/BLAS threads only contend.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    uvicorn.run(
        FACTORY,
        factory=True,
        host=args.host or settings.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(config.shutdown_timeout_s),
    )
    return EXIT_OK


def register_serve(subparsers: Any) -> None:
    """``serve``: the HTTP inference gateway of one environment."""
    parser = subparsers.add_parser("serve", help="run the inference gateway (HTTP scoring with logging)")
    parser.add_argument("--env", required=True, help="environment to serve (dev, staging, prod)")
    parser.add_argument("--host", help="bind address (default MMS_HOST)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="worker processes (one per core)"
    )
    parser.add_argument("--routes", help="routing source: mlflow (default) or json:<path>")
    parser.add_argument("--refresh-interval", type=float, help="seconds between route checks (default 5)")
    parser.add_argument(
        "--preload",
        action="append",
        metavar="PROJECT/MODEL",
        help="load at start-up; /readyz waits (repeatable)",
    )
    parser.add_argument(
        "--state-dir", help="spill files, metrics, request-date map (default var/gateway/<env>)"
    )
    parser.add_argument(
        "--flush-rows", type=int, help="flush the log buffer at this many rows (default 20000)"
    )
    parser.add_argument(
        "--flush-interval", type=float, help="flush the log buffer this often, seconds (default 10)"
    )
    parser.add_argument(
        "--score-timeout", type=float, help="scoring deadline of a request, seconds (default 5): then 504"
    )
    parser.add_argument("--no-logging", action="store_true", help="do not write inference_logs (benchmarks)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=_serve)
