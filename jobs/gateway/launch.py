"""Start ``python -m jobs serve`` as a child process on loopback and wait until every worker serves.

For the benchmark (``bench/gateway_bench.py``) and the server tests
(``tests/integration/jobs/test_gateway_server.py``): both need a real multi-worker
gateway on a free port, ready in the sense that each worker answers ``/readyz``
*and* has loaded its routes (``/metrics`` lists ``mms_gateway_route_weight`` for
every worker), and a clean stop (SIGTERM to the process group, so the workers
flush their logs; SIGKILL only after a timeout).

The child runs in a new session (process group) so the stop reaches the workers
and nothing else.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORKER_ROUTES = re.compile(r'mms_gateway_route_weight\{[^}]*worker="(\d+)"')


class GatewayStartError(RuntimeError):
    """The gateway exited or did not become ready in time; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises:
        TimeoutError: naming ``what`` when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


def http_get(port: int, path: str, timeout_s: float = 30) -> tuple[int, str]:
    """``GET path`` on ``127.0.0.1:port``: status and body text."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@dataclass
class GatewayProcess:
    """A running gateway.

    Attributes:
        process: The ``python -m jobs serve`` process (leader of its process group).
        port: Its loopback port.
        log_path: File receiving its stdout and stderr.
        workers: Number of worker processes.
    """

    process: subprocess.Popen
    port: int
    log_path: Path
    workers: int

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def is_ready(self) -> bool:
        """Whether every worker answers ``/readyz`` and lists its routes in ``/metrics``.

        Raises:
            GatewayStartError: if the process has exited.
        """
        if self.process.poll() is not None:
            raise GatewayStartError(f"the gateway exited with {self.process.returncode}:\n{self.log_tail()}")
        with contextlib.suppress(OSError):
            if http_get(self.port, "/readyz")[0] != 200:
                return False
            workers = set(_WORKER_ROUTES.findall(http_get(self.port, "/metrics")[1]))
            return len(workers) == self.workers
        return False

    def stop(self, timeout_s: float = 90) -> int | None:
        """SIGTERM the process group and wait; SIGKILL it after ``timeout_s``.

        Returns:
            The exit code (``None`` if it could not be reaped).
        """
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def serve_command(
    *,
    environment: str,
    port: int,
    state_dir: str | os.PathLike[str],
    workers: int = 2,
    preload: Sequence[str] = (),
    options: Sequence[str] = (),
) -> list[str]:
    """The ``python -m jobs serve`` command line (this interpreter, loopback only)."""
    command = [sys.executable, "-m", "jobs", "serve", "--env", environment, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--state-dir", str(state_dir)]
    for model in preload:
        command += ["--preload", model]
    return command + list(options)


def start_gateway(
    *,
    environment: str,
    state_dir: str | os.PathLike[str],
    log_path: str | os.PathLike[str],
    environ: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    workers: int = 2,
    preload: Sequence[str] = (),
    options: Sequence[str] = (),
    ready_timeout_s: float = 180,
) -> GatewayProcess:
    """Start a gateway on a free port and return it once every worker is ready.

    Args:
        environment: Deployment environment it serves (``--env``).
        state_dir: Its ``--state-dir`` (spill files, request-date map).
        log_path: File for its stdout and stderr (overwritten).
        environ: Its environment (``MMS_*`` settings).
        cwd: Its working directory.
        workers: Worker processes.
        preload: ``project/model`` pairs to load before serving.
        options: Further ``serve`` options, such as ``("--no-logging",)``.
        ready_timeout_s: How long to wait for readiness.

    Raises:
        GatewayStartError: if it exits or is not ready in time (it is stopped then).
    """
    port = free_port()
    log_path = Path(log_path)
    command = serve_command(
        environment=environment,
        port=port,
        state_dir=state_dir,
        workers=workers,
        preload=preload,
        options=options,
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=dict(environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = GatewayProcess(process, port, log_path, workers)
    try:
        wait_until(gateway.is_ready, ready_timeout_s, "gateway ready")
    except TimeoutError as error:
        gateway.stop()
        raise GatewayStartError(f"{error}; server log:\n{gateway.log_tail()}") from error
    except GatewayStartError:
        gateway.stop()
        raise
    return gateway
