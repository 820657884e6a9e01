"""Prometheus rendering and the merge of the workers' snapshots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.gateway.metrics import LATENCY_BUCKETS, Metrics, SnapshotFiles, labels_of, merge_snapshots, render

pytestmark = pytest.mark.unit

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse(text: str) -> dict[str, float]:
    """Every sample of a text exposition, keyed by its name and labels as written."""
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        samples[line.rsplit(" ", 1)[0]] = float(match.group(4))
    for key in samples:
        base = key.split("{")[0]
        family = re.sub(r"_(bucket|sum|count)$", "", base)
        assert base in types or family in types, f"{key} has no TYPE line"
    return samples


def test_counters_and_histograms_render_in_text_format() -> None:
    metrics = Metrics()
    labels = labels_of(project="p", model="m", version="1")
    metrics.inc("mms_gateway_predictions_total", labels, 3)
    metrics.inc("mms_gateway_predictions_total", labels)
    for value in (0.0004, 0.003, 0.003, 7.0, 20.0):
        metrics.observe("mms_gateway_request_duration_seconds", labels, value)
    metrics.set_gauge("mms_gateway_log_rows_buffered", labels_of(worker="1"), 12)
    samples = parse(render(metrics.snapshot()))
    assert samples['mms_gateway_predictions_total{model="m",project="p",version="1"}'] == 4
    prefix = 'mms_gateway_request_duration_seconds_bucket{model="m",project="p",version="1",le='
    assert samples[prefix + '"0.0005"}'] == 1
    assert samples[prefix + '"0.005"}'] == 3
    assert samples[prefix + '"10"}'] == 4
    assert samples[prefix + '"+Inf"}'] == 5
    buckets = [samples[k] for k in samples if k.startswith(prefix)]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets == sorted(buckets)
    assert samples['mms_gateway_request_duration_seconds_count{model="m",project="p",version="1"}'] == 5
    assert (
        abs(samples['mms_gateway_request_duration_seconds_sum{model="m",project="p",version="1"}'] - 27.0064)
        < 1e-9
    )
    assert samples['mms_gateway_log_rows_buffered{worker="1"}'] == 12


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.inc("mms_gateway_request_errors_total", labels_of(reason='a "quoted"\\ line\nbreak'))
    samples = parse(render(metrics.snapshot()))
    assert samples['mms_gateway_request_errors_total{reason="a \\"quoted\\"\\\\ line\\nbreak"}'] == 1


def test_snapshots_of_workers_add_up() -> None:
    first, second = Metrics(), Metrics()
    labels = labels_of(project="p", model="m", version="1")
    first.inc("mms_gateway_predictions_total", labels, 5)
    second.inc("mms_gateway_predictions_total", labels, 7)
    second.inc("mms_gateway_predictions_total", labels_of(project="p", model="m", version="2"))
    first.observe("mms_gateway_request_duration_seconds", labels, 0.002)
    second.observe("mms_gateway_request_duration_seconds", labels, 0.2)
    merged = merge_snapshots([first.snapshot(), json.loads(json.dumps(second.snapshot()))])
    samples = parse(render(merged))
    assert samples['mms_gateway_predictions_total{model="m",project="p",version="1"}'] == 12
    assert samples['mms_gateway_predictions_total{model="m",project="p",version="2"}'] == 1
    assert samples['mms_gateway_request_duration_seconds_count{model="m",project="p",version="1"}'] == 2
    assert (
        samples['mms_gateway_request_duration_seconds_bucket{model="m",project="p",version="1",le="0.0025"}']
        == 1
    )


def test_snapshot_files_group_the_workers_of_one_gateway(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(finished.stdout)
    me = SnapshotFiles(tmp_path, group=100, pid=1)
    sibling = SnapshotFiles(tmp_path, group=100, pid=2)
    stranger = SnapshotFiles(tmp_path, group=dead, pid=3)
    for files, value in ((me, 1), (sibling, 2), (stranger, 3)):
        metrics = Metrics()
        metrics.inc("mms_gateway_predictions_total", (), value)
        files.publish(metrics.snapshot())
    others = me.others()
    assert [o["counters"][0][2] for o in others] == [2]
    assert not stranger.own_path.exists()  # its gateway is gone: the snapshot is removed
    assert sibling.own_path.exists()
