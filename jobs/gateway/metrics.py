"""Prometheus metrics of the gateway, summed over its worker processes.

Each worker counts in memory (:class:`Metrics`) and publishes a JSON snapshot to
``<state_dir>/metrics/<group>-<pid>.json`` every second, where ``group`` is the
pid of the process that started the workers (uvicorn's supervisor or gunicorn's
arbiter). ``/metrics``, answered by whichever worker gets the scrape, adds its
live counters to the snapshots of the other workers of the same group, so the
counters are the gateway's totals. Snapshots of a worker that died stay in the
sum (its counts happened); snapshots of another group whose leader is gone are
deleted. Gauges that describe one worker carry a ``worker`` label.

Only the text exposition format 0.0.4 is produced; no client library is needed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request-duration histogram; ``+Inf`` is implied."""

Labels = tuple[tuple[str, str], ...]

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

DESCRIPTIONS: Mapping[str, tuple[str, str]] = {
    "mms_gateway_requests_total": (
        COUNTER,
        "HTTP requests answered, by endpoint, model, version and status code.",
    ),
    "mms_gateway_request_errors_total": (
        COUNTER,
        "Requests answered with an error, by reason, model and version (version empty before routing).",
    ),
    "mms_gateway_record_errors_total": (
        COUNTER,
        "Records a version failed to score server-side, by kind (written to request_errors).",
    ),
    "mms_gateway_request_duration_seconds": (
        HISTOGRAM,
        "Time from request receipt to response, per model version.",
    ),
    "mms_gateway_predictions_total": (COUNTER, "Records scored (a batch request counts each instance)."),
    "mms_gateway_feedback_total": (COUNTER, "Labels accepted, by where the request's day came from."),
    "mms_gateway_routing_errors_total": (COUNTER, "Failed refreshes of a model's routes (old routes kept)."),
    "mms_gateway_log_rows_total": (
        COUNTER,
        "Log rows by event: received, written, spilled, replayed, rejected, dropped.",
    ),
    "mms_gateway_log_files_total": (COUNTER, "Log files by event: written, spilled, replayed."),
    "mms_gateway_log_store_errors_total": (COUNTER, "Store writes that failed (the chunk was spilled)."),
    "mms_gateway_log_spill_errors_total": (COUNTER, "Spills the local disk refused (rows kept in memory)."),
    "mms_gateway_log_buffer_full_total": (
        COUNTER,
        "Times the buffer reached its row limit and spilled on the request path.",
    ),
    "mms_gateway_log_duplicate_splits_total": (
        COUNTER,
        "Extra files written because a request id repeated in one flush.",
    ),
    "mms_gateway_log_rows_buffered": (GAUGE, "Log rows held in memory by a worker."),
    "mms_gateway_log_store_available": (GAUGE, "1 when a worker's last store write succeeded."),
    "mms_gateway_log_spill_files": (GAUGE, "Spill files waiting for replay (shared by the workers)."),
    "mms_gateway_route_weight": (GAUGE, "Routed share of a version in basis points, as seen by a worker."),
}


def labels_of(**values: object) -> Labels:
    """Labels as the sorted tuple used as a key."""
    return tuple(sorted((k, "" if v is None else str(v)) for k, v in values.items()))


class Metrics:
    """Thread-safe counters and histograms of one process."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], list[float]] = {}
        self._gauges: dict[tuple[str, Labels], float] = {}

    def set_gauge(self, name: str, labels: Labels, value: float) -> None:
        """Set a gauge (give it a ``worker`` label when it describes one process)."""
        with self._lock:
            self._gauges[(name, labels)] = value

    def inc(self, name: str, labels: Labels = (), amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        key = (name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, labels: Labels, value: float) -> None:
        """Record one observation in a histogram."""
        key = (name, labels)
        index = len(self.buckets)
        for position, bound in enumerate(self.buckets):
            if value <= bound:
                index = position
                break
        with self._lock:
            cells = self._histograms.get(key)
            if cells is None:
                cells = self._histograms[key] = [0.0] * (len(self.buckets) + 3)
            cells[index] += 1  # per-bucket (non-cumulative) count; the last bucket is +Inf
            cells[-2] += value
            cells[-1] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable copy of every counter and histogram."""
        with self._lock:
            return {
                "buckets": list(self.buckets),
                "counters": [
                    [name, [list(p) for p in labels], value]
                    for (name, labels), value in self._counters.items()
                ],
                "histograms": [
                    [name, [list(p) for p in labels], list(cells)]
                    for (name, labels), cells in self._histograms.items()
                ],
                "gauges": [
                    [name, [list(p) for p in labels], value] for (name, labels), value in self._gauges.items()
                ],
            }


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum counters and histograms of several snapshots (same bucket bounds); gauges are listed."""
    gauges: list[Any] = []
    counters: dict[tuple[str, Labels], float] = {}
    histograms: dict[tuple[str, Labels], list[float]] = {}
    buckets: list[float] | None = None
    for snapshot in snapshots:
        if buckets is None:
            buckets = list(snapshot.get("buckets", LATENCY_BUCKETS))
        elif list(snapshot.get("buckets", buckets)) != buckets:
            continue  # a worker of another build; its histogram cannot be added
        for name, labels, value in snapshot.get("counters", []):
            key = (name, tuple(tuple(p) for p in labels))
            counters[key] = counters.get(key, 0.0) + value
        gauges.extend(snapshot.get("gauges", []))
        for name, labels, cells in snapshot.get("histograms", []):
            key = (name, tuple(tuple(p) for p in labels))
            current = histograms.get(key)
            if current is None:
                histograms[key] = list(cells)
            elif len(current) == len(cells):
                histograms[key] = [a + b for a, b in zip(current, cells, strict=True)]
    return {
        "buckets": buckets or list(LATENCY_BUCKETS),
        "counters": [[n, [list(p) for p in labels], v] for (n, labels), v in counters.items()],
        "histograms": [[n, [list(p) for p in labels], c] for (n, labels), c in histograms.items()],
        "gauges": gauges,
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Iterable[Sequence[str]], extra: Sequence[tuple[str, str]] = ()) -> str:
    pairs = [*(tuple(p) for p in labels), *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(snapshot: Mapping[str, Any], gauges: Iterable[tuple[str, Labels, float]] = ()) -> str:
    """The Prometheus text exposition of a (merged) snapshot plus gauges."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in sorted(snapshot.get("counters", []), key=lambda item: (item[0], item[1])):
        by_name.setdefault(name, []).append(f"{name}{_label_text(labels)} {_number(value)}")
    buckets = list(snapshot.get("buckets", LATENCY_BUCKETS))
    for name, labels, cells in sorted(snapshot.get("histograms", []), key=lambda item: (item[0], item[1])):
        lines = by_name.setdefault(name, [])
        cumulative = 0.0
        for bound, count in zip([*buckets, math.inf], cells[: len(buckets) + 1], strict=True):
            cumulative += count
            lines.append(
                f"{name}_bucket{_label_text(labels, [('le', _number(bound))])} {_number(cumulative)}"
            )
        lines.append(f"{name}_sum{_label_text(labels)} {_number(cells[-2])}")
        lines.append(f"{name}_count{_label_text(labels)} {_number(cells[-1])}")
    for name, labels, value in [*snapshot.get("gauges", []), *gauges]:
        by_name.setdefault(name, []).append(f"{name}{_label_text(labels)} {_number(value)}")
    out = []
    for name in sorted(by_name):
        kind, text = DESCRIPTIONS.get(name, (COUNTER if name.endswith("_total") else GAUGE, name))
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(by_name[name])
    return "\n".join(out) + "\n"


class SnapshotFiles:
    """Where the workers of one gateway publish their snapshots.

    Args:
        directory: ``<state_dir>/metrics``.
        group: Id shared by the workers of one gateway (the pid of their parent).
        pid: This worker's pid.
    """

    def __init__(
        self, directory: str | os.PathLike[str], group: int | None = None, pid: int | None = None
    ) -> None:
        self.directory = Path(directory)
        self.group = os.getppid() if group is None else group
        self.pid = os.getpid() if pid is None else pid
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def own_path(self) -> Path:
        """This worker's snapshot file."""
        return self.directory / f"{self.group}-{self.pid}.json"

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        """Replace this worker's snapshot atomically."""
        temporary = self.directory / f".{self.group}-{self.pid}.json.tmp"
        temporary.write_text(json.dumps(snapshot), encoding="utf-8")
        os.replace(temporary, self.own_path)

    def others(self) -> list[dict[str, Any]]:
        """Snapshots of the other workers of this group; removes those of dead groups."""
        found = []
        for path in self.directory.glob("*.json"):
            group, _, pid = path.stem.partition("-")
            if not (group.isdigit() and pid.isdigit()):
                continue
            if int(group) != self.group:
                if not _alive(int(group)):
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            if int(pid) == self.pid:
                continue
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # replaced meanwhile or half-written by a dying worker
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
