"""The metrics rows of one model version over a batch, from what the batch's rows gave.

Private helper of :mod:`jobs.monitor` and of the scaled-out merge (:mod:`jobs.scaleout.merge`). The
single-process job reads the batch's logs and computes the window counts, the performance and latency
reports and the window profiles itself; the merge takes them from the units' partials. Both then call
:func:`add_version_rows`, so the rows cannot differ in how they are made from those inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from analytics.drift import drift_many
from analytics.performance import LatencyReport, PerformanceReport
from analytics.policy import Policy
from analytics.profile import Profile
from analytics.quality import quality
from jobs import _monitor_rows as rows_of
from jobs._monitor_rows import Thresholds


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class DayRows(Protocol):
    """What a computed date collects: its metrics rows and its window profiles by version."""

    rows: list[dict[str, Any]]
    profiles: dict[str, list[Profile]]


@dataclass(frozen=True)
class VersionInputs:
    """What one version's rows of a batch gave, however it was computed.

    Attributes:
        version: The model version.
        counts: Window start (UTC) -> (rows, latest request time).
        performance: The task's per-window performance report.
        latency: The per-window latency report.
        windows: Window start (UTC) -> the window's profile on the reference spec (empty without one).
        new_columns: Date -> columns the logs carry that the reference does not know.
    """

    version: str
    counts: Mapping[datetime, tuple[int, datetime]]
    performance: PerformanceReport
    latency: LatencyReport
    windows: Mapping[datetime, Profile]
    new_columns: Mapping[date, Sequence[str]]


@dataclass(frozen=True)
class RowRules:
    """How a run judges its windows.

    Attributes:
        length: Length of a window.
        policy: Drift policy.
        thresholds: Data-quality and latency thresholds.
        baseline: Window start -> the earlier p95 latencies its latency is compared with.
    """

    length: timedelta
    policy: Policy
    thresholds: Thresholds
    baseline: Callable[[datetime], Sequence[float]]


def add_version_rows(
    inputs: VersionInputs,
    reference: Profile | None,
    why_missing: str,
    rules: RowRules,
    outputs: MutableMapping[date, DayRows],
) -> None:
    """Add the version's rows (and window profiles) of every window of the batch to ``outputs``.

    Args:
        inputs: The version's counts, reports and window profiles.
        reference: The version's reference profile (label left out), ``None`` when missing.
        why_missing: Why there is no reference (used when ``reference`` is ``None``).
        rules: The run's window length, policy, thresholds and latency baseline.
        outputs: Date -> what the date collects (a ``defaultdict``: a window's date is added).
    """
    version, length, policy, thresholds = inputs.version, rules.length, rules.policy, rules.thresholds
    performance_by_window = {_utc(w.window_start): w for w in inputs.performance.windows}
    latency_by_window = {_utc(w.window_start): w for w in inputs.latency.windows}
    judged = [start for start in sorted(inputs.counts) if reference is not None and start in inputs.windows]
    # Every window of the batch against the one reference at once (analytics.drift.drift_many).
    reports = (
        dict(zip(judged, drift_many(reference, [inputs.windows[s] for s in judged], policy), strict=True))
        if reference is not None and judged
        else {}
    )
    for start, (rows_in_window, latest) in sorted(inputs.counts.items()):
        end = start + length
        output = outputs[start.date()]
        output.rows += rows_of.window_rows(
            version,
            start,
            end,
            rows_in_window=rows_in_window,
            reference_rows=reference.rows if reference is not None else 0,
            latest=latest,
            new_columns=inputs.new_columns.get(start.date(), ()),
            thresholds=thresholds,
        )
        if reference is None:
            output.rows.append(
                rows_of.missing_reference_row(version, start, end, rows_in_window, why_missing)
            )
        elif start in inputs.windows:
            current = inputs.windows[start]
            output.profiles.setdefault(version, []).append(current)
            output.rows += rows_of.drift_rows(version, start, end, reports[start], policy)
            output.rows += rows_of.quality_rows(
                version, start, end, reference, current, quality(reference, current), thresholds
            )
        if start in performance_by_window:
            output.rows += rows_of.performance_rows(version, start, end, performance_by_window[start])
        if start in latency_by_window:
            output.rows += rows_of.latency_rows(
                version, start, end, latency_by_window[start], rules.baseline(start), thresholds
            )
