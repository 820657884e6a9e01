"""The deployment job: carries queued deployments out as direct, blue-green or canary rollouts.

Public interface (the CI/CD page codes against these names)::

    list_deployments(session, actor, *, project=None, environment=None, limit=50) -> list[DeploymentView]
    deployment_view(session, actor, deployment_id) -> DeploymentView
    promote_deployment(sessions, actor, deployment_id, reason="") -> DeploymentView      # DEPLOY
    pause_deployment(sessions, actor, deployment_id, reason="") -> DeploymentView        # DEPLOY
    resume_deployment(sessions, actor, deployment_id, reason="") -> DeploymentView       # DEPLOY
    abort_deployment(sessions, actor, deployment_id, reason) -> DeploymentView           # ROLLBACK
    rollback_deployment_now(sessions, actor, deployment_id, reason) -> DeploymentView    # ROLLBACK
    configure_deployment(sessions, actor, deployment_id, *, strategy, steps=None,
                         bake_seconds=None) -> DeploymentView                            # DEPLOY
    DeploymentRunner(sessions, store, config).run_once() / .run_forever()

Traffic goes through the routing contract of ``docs/GATEWAY.md`` on the registered
model ``<project>.<model>``: alias ``<env>`` is the stable version, alias
``<env>-canary`` plus the tag ``mms.canary_weight.<env>`` (basis points) the
canary. The alias is written before the tag; when a split ends the tag goes to 0
before the canary alias is removed.

Strategies:

* ``direct`` — alias ``<env>`` moves to the new version; done.
* ``blue-green`` — the version serving now is the *blue* slot (recorded as
  ``previous_version`` and as alias ``<env>-previous``), the new one *green*:
  alias ``<env>`` switches all traffic at once; green is then watched for one
  bake period on absolute thresholds (success rate, p99) and switched back to
  blue at once if it fails. A later rollback is one alias move back to blue.
* ``canary`` — the canary weight goes through ``steps`` (default 10, 25, 50,
  100 %); after each bake (default 300 s) the canary is analysed against the
  stable version on the inference log rows and the ``request_errors`` rows (requests the
  gateway failed server-side) written since the step started (:func:`analyse`): success
  rate, p99 latency, prediction drift. Passed: next
  step; at 100 % alias ``<env>`` moves to the canary, the weight goes to 0 and
  the canary alias is removed. Failed: automatic rollback (weight 0, canary
  alias removed, alias ``<env>`` untouched, status ``rolled_back`` with the
  reason). Inconclusive (fewer than ``min_requests`` requests — predictions plus
  server errors — for either version):
  status ``paused`` with the reason, the split left as it is for a person to
  promote, resume (another bake) or abort.

Ownership and restarts. A job works on a deployment only while it holds its
lease (``lease_owner`` + ``lease_expires_at``, taken and renewed with a
compare-and-set, default 30 s, renewed at every poll). A rollout whose lease
expired while it was ``running`` — the job was killed — is taken over by the
next job run, which applies the deployment's ``on_restart`` policy, fixed when
the rollout started (``DeployConfig.on_restart``, default ``resume``):

* ``resume``: the routing of the persisted step is written again (idempotent)
  and that step's bake starts over; only rows logged after the restart count;
* ``rollback``: the canary is removed (or, blue-green, the previous slot
  restored) and the deployment ends ``rolled_back``.

So a split never stays without an owner longer than one lease, as long as a
job runs (``deploy run`` loops; the scheduler can run ``deploy run --once``).
A ``paused`` deployment is owned by people: its split stays until someone acts.

Manual actions are commands (permission re-checked in the transaction, audited
as ``deployment.<action>``). They record a request on the row
(``requested_action``); the job holding the lease carries it out at its next
poll (within a second), or the next job run takes it up when nobody holds the
lease. Rows marked ``rollback_queued`` by the REST API are rolled back the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs import audit, registry
from jobs.contracts import INFERENCE_LOGS, REQUEST_ERRORS
from jobs.db.deployments import DeploymentEvent
from jobs.db.governance import Deployment
from jobs.db.models import ENVIRONMENT_NAMES, Project, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Forbidden, Permission, has_permission, require
from jobs.users import Conflict, InvalidInput, active_actor, actor_for

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- vocabulary

DIRECT = "direct"
BLUE_GREEN = "blue-green"
CANARY = "canary"
STRATEGIES = (DIRECT, BLUE_GREEN, CANARY)

QUEUED = "queued"
RUNNING = "running"
PAUSED = "paused"
SUCCEEDED = "succeeded"
ROLLED_BACK = "rolled_back"
ROLLBACK_QUEUED = "rollback_queued"
ABORTED = "aborted"
FAILED = "failed"
STATUSES = (QUEUED, RUNNING, PAUSED, SUCCEEDED, ROLLED_BACK, ROLLBACK_QUEUED, ABORTED, FAILED)
FINAL_STATUSES = frozenset({SUCCEEDED, ROLLED_BACK, ABORTED, FAILED})

PROMOTE = "promote"
PAUSE = "pause"
RESUME = "resume"
ABORT = "abort"
ROLLBACK = "rollback"
ACTIONS = (PROMOTE, PAUSE, RESUME, ABORT, ROLLBACK)

RESUME_ON_RESTART = "resume"
ROLLBACK_ON_RESTART = "rollback"
RESTART_POLICIES = (RESUME_ON_RESTART, ROLLBACK_ON_RESTART)

DEFAULT_STEPS = (10, 25, 50, 100)
DEFAULT_BAKE_SECONDS = 300
DEFAULT_LEASE_SECONDS = 30
SYSTEM_ACTOR = "system"
PREVIOUS_ALIAS_SUFFIX = "-previous"
MAX_REASON_LENGTH = 2_000
MAX_CONSECUTIVE_ERRORS = 3
"""Errors in a row after which a deployment that never routed traffic is marked ``failed``."""


class AnalysisOutcome:
    """Outcomes of one analysis."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


# ---------------------------------------------------------------------------- views


@dataclass(frozen=True)
class EventView:
    """One entry of a deployment's history.

    Attributes:
        at: When (UTC).
        kind: ``queued``, ``started``, ``step``, ``analysis``, ``paused``, ``resumed``, ``promoted``,
            ``succeeded``, ``rolled_back``, ``aborted``, ``requested``, ``lease_taken_over``, ...
        actor: Username, or ``system`` for the job.
        details: The event's JSON payload.
    """

    at: datetime
    kind: str
    actor: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AnalysisResult:
    """One metric of a canary analysis.

    Attributes:
        metric: ``requests``, ``success_rate``, ``latency_p99_ms``, ``latency_p99_vs_stable`` or
            ``prediction_drift``.
        canary: The canary's value (``None`` when it could not be computed).
        stable: The stable version's value (``None`` when not applicable).
        threshold: The limit it is held to.
        passed: Whether the canary met it (``None`` when it could not be judged).
        detail: A short explanation.
    """

    metric: str
    canary: float | None
    stable: float | None
    threshold: float | None
    passed: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the ``analysis`` event)."""
        return {
            "metric": self.metric,
            "canary": self.canary,
            "stable": self.stable,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            metric=str(data.get("metric", "")),
            canary=data.get("canary"),
            stable=data.get("stable"),
            threshold=data.get("threshold"),
            passed=data.get("passed"),
            detail=str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as the CI/CD page shows it (detached from any session).

    Attributes:
        id: Deployment id.
        project: Project slug.
        model: Model name.
        version: The version being deployed.
        environment: ``dev``, ``staging`` or ``prod``.
        strategy: ``direct``, ``blue-green`` or ``canary``.
        status: One of :data:`STATUSES`.
        current_step: Index into ``steps`` (canary), ``None`` before the start.
        steps: Canary weights in percent.
        canary_weight_pct: The canary's current share of traffic in percent.
        stable_version: The version the stable alias served when the rollout started (or now, once done).
        previous_version: The version to return to on rollback.
        reason: Why it paused, rolled back or was aborted.
        created_at: When it was queued.
        updated_at: Last change.
        events: History, oldest first.
        analyses: Results of the latest analysis.
        bake_seconds: Bake time per step.
        step_started_at: When the current step (bake) started.
        lease_owner: The job process that owns the rollout (``None`` when nobody does).
        lease_expires_at: Until when.
        requested_action: A manual action waiting for the job.
        allowed_actions: Actions that make sense in the current status (permissions not applied).
    """

    id: int
    project: str
    model: str
    version: str
    environment: str
    strategy: str
    status: str
    current_step: int | None
    steps: tuple[int, ...]
    canary_weight_pct: float
    stable_version: str | None
    previous_version: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    events: tuple[EventView, ...] = ()
    analyses: tuple[AnalysisResult, ...] = ()
    bake_seconds: int | None = None
    step_started_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    requested_action: str | None = None
    allowed_actions: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- configuration


def parse_steps(text: str | Sequence[int]) -> tuple[int, ...]:
    """Canary steps in percent: strictly increasing integers in 1-100, ending at 100.

    Args:
        text: ``"10,25,50,100"`` or a sequence of integers.

    Raises:
        InvalidInput: for anything else.
    """
    if isinstance(text, str):
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or any(not part.isdigit() for part in parts):
            raise InvalidInput(
                f"steps must be comma-separated whole percentages such as 10,25,50,100: {text!r}"
            )
        values = [int(part) for part in parts]
    else:
        values = list(text)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise InvalidInput(f"steps must be whole percentages, not {values!r}")
    if not values or len(values) > 20:
        raise InvalidInput("steps must list 1 to 20 percentages")
    if any(not 1 <= v <= 100 for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise InvalidInput(f"steps must increase strictly within 1-100: {values}")
    if values[-1] != 100:
        raise InvalidInput(f"the last step must be 100 (the canary takes all traffic), not {values[-1]}")
    return tuple(values)


def format_steps(steps: Sequence[int]) -> str:
    """Steps as stored in the database (``"10,25,50,100"``)."""
    return ",".join(str(step) for step in steps)


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} must be a whole number in {low}-{high}, not {value!r}")
    return value


def _check_float(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a number, not {value!r}")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be within {low}-{high}, not {value}")
    return float(value)


@dataclass(frozen=True)
class Thresholds:
    """What a canary must meet (defaults: issue 7).

    Attributes:
        min_success_rate: Successful predictions over successful predictions plus server-side errors
            (``request_errors``) of a version (default 0.99).
        max_p99_ms: Absolute p99 latency limit in ms (default 500).
        max_p99_ratio: p99 of the canary over p99 of the stable version (default 1.2).
        latency_slack_ms: Absolute tolerance added to the ratio limit (default 5 ms): with
            sub-millisecond models a 1.2 ratio alone would fail on scheduling noise. 0 gives the
            plain ratio.
        min_requests: Rows needed per version for a conclusive analysis (default 100).
        check_drift: Compare the canary's predictions with the stable version's (default policy).
    """

    min_success_rate: float = 0.99
    max_p99_ms: float = 500.0
    max_p99_ratio: float = 1.2
    latency_slack_ms: float = 5.0
    min_requests: int = 100
    check_drift: bool = True

    def __post_init__(self) -> None:
        _check_float(self.min_success_rate, "min_success_rate", 0.0, 1.0)
        _check_float(self.max_p99_ms, "max_p99_ms", 0.001, 3_600_000.0)
        _check_float(self.max_p99_ratio, "max_p99_ratio", 1.0, 1_000.0)
        _check_float(self.latency_slack_ms, "latency_slack_ms", 0.0, 60_000.0)
        _check_int(self.min_requests, "min_requests", 1, 100_000_000)


@dataclass(frozen=True)
class DeployConfig:
    """How the job runs rollouts.

    Attributes:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (defaults to the tracking URI).
        steps: Canary steps in percent for rollouts that do not set their own.
        bake_seconds: Bake time per step for rollouts that do not set their own (1 s - 1 day).
        thresholds: Analysis thresholds.
        on_restart: ``resume`` or ``rollback`` (see the module docstring).
        lease_seconds: Lease length; renewed at every poll.
        poll_seconds: How often a running rollout checks for manual actions and renews its lease.
        owner: This job's lease owner name (host:pid:random by default).
    """

    tracking_uri: str
    registry_uri: str | None = None
    steps: tuple[int, ...] = DEFAULT_STEPS
    bake_seconds: int = DEFAULT_BAKE_SECONDS
    thresholds: Thresholds = field(default_factory=Thresholds)
    on_restart: str = RESUME_ON_RESTART
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    poll_seconds: float = 1.0
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        parse_steps(self.steps)
        _check_int(self.bake_seconds, "bake_seconds", 1, 86_400)
        if self.on_restart not in RESTART_POLICIES:
            raise InvalidInput(
                f"on_restart must be one of {', '.join(RESTART_POLICIES)}, not {self.on_restart!r}"
            )
        _check_int(self.lease_seconds, "lease_seconds", 2, 3_600)
        _check_float(self.poll_seconds, "poll_seconds", 0.05, self.lease_seconds / 2)
        if not isinstance(self.owner, str) or not 0 < len(self.owner) <= 128:
            raise InvalidInput("owner must be 1-128 characters")


# ---------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Analysis:
    """Outcome of one canary analysis.

    Attributes:
        outcome: :class:`AnalysisOutcome` value.
        results: Every metric checked.
        reason: Why it failed or was inconclusive (empty when passed).
    """

    outcome: str
    results: tuple[AnalysisResult, ...]
    reason: str = ""


def _p99(values: pa.Array | pa.ChunkedArray) -> float | None:
    valid = pc.drop_null(values)
    if len(valid) == 0:
        return None
    return float(pc.quantile(valid, q=0.99, interpolation="higher")[0].as_py())


def _success_rate(predictions: pa.Array | pa.ChunkedArray, errors: int = 0) -> float | None:
    attempts = len(predictions) + errors
    if attempts == 0:
        return None
    floats = pc.cast(predictions, pa.float64())
    good = pc.sum(pc.and_(pc.is_valid(floats), pc.is_finite(pc.fill_null(floats, 0.0)))).as_py() or 0
    return good / attempts


def _prediction_drift(stable: pa.Table, canary: pa.Table) -> AnalysisResult:
    """Drift of the canary's predictions against the stable version's, default analytics policy."""
    import duckdb

    from analytics.drift import drift
    from analytics.policy import DEFAULT_POLICY
    from analytics.profile import profile, profile_reference

    columns = ["prediction"]
    con = duckdb.connect()
    try:
        con.register("stable_rows", stable.select(columns))
        con.register("canary_rows", canary.select(columns))
        reference = profile_reference(con.table("stable_rows"), columns)
        current = profile(con.table("canary_rows"), reference.spec)
        report = drift(reference, current, DEFAULT_POLICY)
    finally:
        con.close()
    summary = report.summary
    column = report.columns[0] if report.columns else None
    if summary.drift_share is None or column is None:
        return AnalysisResult(
            "prediction_drift", None, None, summary.drift_share_threshold, None, "insufficient data for drift"
        )
    drifted = bool(summary.dataset_drifted)
    statistic = getattr(column, "statistic", None)
    return AnalysisResult(
        "prediction_drift",
        float(summary.drift_share),
        0.0,
        float(summary.drift_share_threshold),
        not drifted,
        f"{'drift' if drifted else 'no drift'} of the predictions (default policy"
        + (f", statistic {statistic:.4g})" if isinstance(statistic, float) else ")"),
    )


def analyse(
    canary: pa.Table,
    stable: pa.Table | None,
    thresholds: Thresholds,
    *,
    canary_errors: int = 0,
    stable_errors: int = 0,
) -> Analysis:
    """Judge a canary on its inference-log rows against the stable version's rows of the same period.

    Checks: enough requests for both (logged predictions plus server-side errors; else
    inconclusive), success rate (successful predictions over predictions plus errors; a logged
    prediction that is null or not finite counts as a failure too), p99 latency of the
    predictions under the absolute limit and under ``max(ratio x stable p99, stable p99 +
    slack)``, and no drift of the predictions (analytics default policy). Without ``stable``
    (blue-green watch) only the absolute checks apply.

    Args:
        canary: Rows of the canary version (columns ``prediction``, ``latency_ms``).
        stable: Rows of the stable version, or ``None``.
        thresholds: The limits.
        canary_errors: Requests of the canary that failed server-side (``request_errors`` rows).
        stable_errors: The same for the stable version.

    Returns:
        The analysis; failed when any check failed, inconclusive when traffic was too low.
    """
    results: list[AnalysisResult] = []
    need = thresholds.min_requests
    canary_requests = canary.num_rows + canary_errors
    stable_requests = None if stable is None else stable.num_rows + stable_errors
    enough = canary_requests >= need and (stable_requests is None or stable_requests >= need)
    results.append(
        AnalysisResult(
            "requests",
            float(canary_requests),
            None if stable_requests is None else float(stable_requests),
            float(need),
            enough,
            f"at least {need} requests per version (predictions + server errors)",
        )
    )
    if not enough:
        return Analysis(
            AnalysisOutcome.INCONCLUSIVE,
            tuple(results),
            f"too little traffic to judge: canary {canary_requests}"
            + ("" if stable_requests is None else f", stable {stable_requests}")
            + f" requests, {need} needed per version",
        )
    failures: list[str] = []
    rate = _success_rate(canary.column("prediction"), canary_errors)
    stable_rate = None if stable is None else _success_rate(stable.column("prediction"), stable_errors)
    ok = rate is not None and rate >= thresholds.min_success_rate
    results.append(
        AnalysisResult(
            "success_rate",
            rate,
            stable_rate,
            thresholds.min_success_rate,
            ok,
            f"valid predictions / (predictions + server errors); canary errors {canary_errors}"
            + ("" if stable is None else f", stable errors {stable_errors}"),
        )
    )
    if not ok:
        failures.append(
            f"success rate {rate:.4f} below {thresholds.min_success_rate}"
            + (f" ({canary_errors} server errors)" if canary_errors else "")
        )
    p99 = _p99(canary.column("latency_ms"))
    stable_p99 = None if stable is None else _p99(stable.column("latency_ms"))
    if p99 is None and canary_errors and canary.num_rows == 0:
        # Every request failed: there is no latency to judge; the success rate has failed already.
        results.append(
            AnalysisResult(
                "latency_p99_ms", None, stable_p99, thresholds.max_p99_ms, None, "no successful prediction"
            )
        )
        return Analysis(AnalysisOutcome.FAILED, tuple(results), "; ".join(failures))
    ok = p99 is not None and p99 <= thresholds.max_p99_ms
    results.append(
        AnalysisResult("latency_p99_ms", p99, stable_p99, thresholds.max_p99_ms, ok, "p99 latency (ms)")
    )
    if not ok:
        failures.append(f"p99 latency {p99} ms above {thresholds.max_p99_ms} ms")
    if stable is not None and stable_p99 is not None and p99 is not None:
        limit = max(thresholds.max_p99_ratio * stable_p99, stable_p99 + thresholds.latency_slack_ms)
        ok = p99 <= limit
        results.append(
            AnalysisResult(
                "latency_p99_vs_stable",
                p99,
                stable_p99,
                limit,
                ok,
                f"p99 at most {thresholds.max_p99_ratio}x the stable p99"
                f" (+{thresholds.latency_slack_ms} ms slack)",
            )
        )
        if not ok:
            failures.append(
                f"p99 latency {p99:.1f} ms above {limit:.1f} ms ({thresholds.max_p99_ratio}x stable)"
            )
    if stable is not None and thresholds.check_drift:
        result = _prediction_drift(stable, canary)
        results.append(result)
        if result.passed is False:
            failures.append("the canary's predictions drift from the stable version's")
    if failures:
        return Analysis(AnalysisOutcome.FAILED, tuple(results), "; ".join(failures))
    return Analysis(AnalysisOutcome.PASSED, tuple(results))


def read_step_rows(
    store: Any, project: str, model: str, environment: str, since: datetime, until: datetime
) -> dict[str, pa.Table]:
    """Inference-log rows of a model in an environment logged in ``[since, until)``, per version.

    Reads only the day partitions the period touches.

    Returns:
        Version to a table with ``prediction`` and ``latency_ms``.
    """
    days = _days_between(since, until)
    table = store.read(
        INFERENCE_LOGS,
        filters={"project": project, "model": model, "environment": environment, "date": days},
        columns=["version", "timestamp", "prediction", "latency_ms"],
    )
    if table.num_rows == 0:
        return {}
    table = table.filter(_within(table.column("timestamp"), since, until))
    by_version: dict[str, pa.Table] = {}
    for version in pc.unique(table.column("version")).to_pylist():
        rows = table.filter(pc.equal(table.column("version"), version))
        by_version[str(version)] = pa.table(
            {
                "prediction": pc.cast(rows.column("prediction"), pa.float64()),
                "latency_ms": pc.cast(rows.column("latency_ms"), pa.float64()),
            }
        )
    return by_version


def _empty_rows() -> pa.Table:
    return pa.table({"prediction": pa.array([], pa.float64()), "latency_ms": pa.array([], pa.float64())})


def read_step_errors(
    store: Any, project: str, model: str, environment: str, since: datetime, until: datetime
) -> dict[str, int]:
    """Server-side errors (``request_errors`` rows) of a model in an environment in ``[since, until)``.

    Reads only the day partitions the period touches.

    Returns:
        Version to the number of failed requests (records).
    """
    table = store.read(
        REQUEST_ERRORS,
        filters={
            "project": project,
            "model": model,
            "environment": environment,
            "date": _days_between(since, until),
        },
        columns=["version", "timestamp"],
    )
    if table.num_rows == 0:
        return {}
    table = table.filter(_within(table.column("timestamp"), since, until))
    counts = pc.value_counts(table.column("version")).to_pylist()
    return {str(item["values"]): int(item["counts"]) for item in counts}


def _days_between(since: datetime, until: datetime) -> list[str]:
    days = []
    day = since.astimezone(UTC).date()
    while day <= until.astimezone(UTC).date():
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def _within(timestamps: pa.ChunkedArray, since: datetime, until: datetime) -> pa.ChunkedArray:
    utc = pa.timestamp("us", tz="UTC")
    stamps = pc.cast(timestamps, utc)
    return pc.and_(
        pc.greater_equal(stamps, pa.scalar(since.astimezone(UTC), utc)),
        pc.less(stamps, pa.scalar(until.astimezone(UTC), utc)),
    )


# ---------------------------------------------------------------------------- registry side


class TrafficSwitch:
    """Writes the routing contract of ``docs/GATEWAY.md`` to the MLflow registry.

    Args:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI.
    """

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri

    def _kw(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "registry_uri": self.registry_uri}

    def stable_version(self, name: str, environment: str) -> str | None:
        """The version alias ``<env>`` points at, ``None`` when unset."""
        try:
            return registry.version_by_alias(name, environment, **self._kw()).version
        except registry.RegistryError:
            return None

    def aliases_and_weight(self, name: str, environment: str) -> tuple[dict[str, str], int]:
        """Aliases of the model and the canary weight tag of ``environment`` (0 when absent)."""
        from jobs.gateway.routing import canary_weight_tag

        registered = registry.client(self.tracking_uri, self.registry_uri).get_registered_model(name)
        aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
        raw = (registered.tags or {}).get(canary_weight_tag(environment))
        return aliases, int(raw) if raw and raw.strip().isdigit() else 0

    def _set_weight(self, name: str, environment: str, weight: int) -> None:
        from jobs.gateway.routing import canary_weight_tag

        registry.client(self.tracking_uri, self.registry_uri).set_registered_model_tag(
            name, canary_weight_tag(environment), str(int(weight))
        )

    def set_canary(self, name: str, environment: str, version: str, weight: int) -> None:
        """Route ``weight`` basis points to ``version``: the alias first, then the tag."""
        from jobs.gateway.routing import canary_alias

        registry.set_alias(name, canary_alias(environment), version, **self._kw())
        self._set_weight(name, environment, weight)

    def remove_canary(self, name: str, environment: str) -> None:
        """End a split: weight 0 first, then the canary alias goes."""
        from jobs.gateway.routing import canary_alias

        self._set_weight(name, environment, 0)
        registry.delete_alias(name, canary_alias(environment), **self._kw())

    def switch(self, name: str, environment: str, version: str, *, keep_previous: str | None = None) -> None:
        """Point alias ``<env>`` at ``version`` (all traffic) and end any split.

        Args:
            name: Registered model name.
            environment: Environment.
            version: The version to serve.
            keep_previous: Version to mark with alias ``<env>-previous`` (the blue-green standby slot).
        """
        if keep_previous is not None:
            registry.set_alias(name, environment + PREVIOUS_ALIAS_SUFFIX, keep_previous, **self._kw())
        registry.set_alias(name, environment, version, **self._kw())
        self.remove_canary(name, environment)


# ---------------------------------------------------------------------------- helpers


def _now(now: datetime | None = None) -> datetime:
    value = now or utcnow()
    if value.tzinfo is None:
        raise InvalidInput("times must be timezone-aware")
    return value.astimezone(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _steps_of(deployment: Deployment) -> tuple[int, ...]:
    if deployment.steps:
        try:
            return parse_steps(deployment.steps)
        except InvalidInput:
            log.error(
                "deployment %s has invalid steps %r; using the defaults", deployment.id, deployment.steps
            )
    return DEFAULT_STEPS


def _add_event(
    session: Session, deployment: Deployment, kind: str, actor: str, details: Mapping[str, Any], at: datetime
) -> None:
    session.add(
        DeploymentEvent(deployment_id=deployment.id, at=at, kind=kind, actor=actor, details=dict(details))
    )


def _describe(deployment: Deployment) -> dict[str, Any]:
    return {
        "project": deployment.project.slug,
        "model": deployment.model,
        "version": deployment.version,
        "environment": deployment.environment,
        "strategy": deployment.strategy,
    }


def _target(deployment: Deployment) -> str:
    return f"deployment:{deployment.id}"


def _check_reason(value: object, *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput("reason must be text")
    value = value.strip()
    if required and not value:
        raise InvalidInput("a reason is required")
    if len(value) > MAX_REASON_LENGTH:
        raise InvalidInput(f"reason must be at most {MAX_REASON_LENGTH} characters")
    return value


def allowed_actions(deployment: Deployment) -> tuple[str, ...]:
    """The manual actions that make sense in the deployment's current state."""
    status, strategy = deployment.status, deployment.strategy
    if deployment.requested_action is not None and status not in FINAL_STATUSES:
        return ()
    if status == QUEUED:
        return (PAUSE, ABORT)
    if status == RUNNING:
        return (PROMOTE, PAUSE, ABORT, ROLLBACK) if strategy == CANARY else (ABORT, ROLLBACK)
    if status == PAUSED:
        return (PROMOTE, RESUME, ABORT, ROLLBACK)
    if (
        status == SUCCEEDED
        and deployment.previous_version
        and deployment.previous_version != deployment.version
    ):
        return (ROLLBACK,)
    return ()


def _to_view(deployment: Deployment, events: Sequence[DeploymentEvent]) -> DeploymentView:
    analyses: tuple[AnalysisResult, ...] = ()
    for event in reversed(events):
        if event.kind == "analysis":
            analyses = tuple(AnalysisResult.from_dict(r) for r in (event.details or {}).get("results", ()))
            break
    stable = deployment.previous_version
    if deployment.status == SUCCEEDED:
        stable = deployment.version
    return DeploymentView(
        id=deployment.id,
        project=deployment.project.slug,
        model=deployment.model,
        version=deployment.version,
        environment=deployment.environment,
        strategy=deployment.strategy,
        status=deployment.status,
        current_step=deployment.current_step,
        steps=_steps_of(deployment) if deployment.strategy == CANARY else (100,),
        canary_weight_pct=(deployment.canary_weight or 0) / 100.0,
        stable_version=stable,
        previous_version=deployment.previous_version,
        reason=deployment.reason,
        created_at=_aware(deployment.created_at),
        updated_at=_aware(deployment.updated_at),
        events=tuple(
            EventView(at=_aware(e.at), kind=e.kind, actor=e.actor, details=dict(e.details or {}))
            for e in events
        ),
        analyses=analyses,
        bake_seconds=deployment.bake_seconds,
        step_started_at=_aware(deployment.step_started_at),
        lease_owner=deployment.lease_owner,
        lease_expires_at=_aware(deployment.lease_expires_at),
        requested_action=deployment.requested_action,
        allowed_actions=allowed_actions(deployment),
    )


def _events_of(session: Session, deployment_id: int) -> list[DeploymentEvent]:
    return list(
        session.scalars(
            select(DeploymentEvent)
            .where(DeploymentEvent.deployment_id == deployment_id)
            .order_by(DeploymentEvent.id)
        )
    )


# ---------------------------------------------------------------------------- read helpers


def deployment_view(session: Session, actor: Actor | None, deployment_id: int) -> DeploymentView:
    """One deployment with its history, if ``actor`` may view CI/CD on its project.

    Raises:
        Conflict: for an unknown id.
        Forbidden: without ``VIEW_CICD`` on the project.
    """
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise Conflict(f"no deployment {deployment_id}")
    require(actor, Permission.VIEW_CICD, deployment.project.slug)
    return _to_view(deployment, _events_of(session, deployment.id))


def list_deployments(
    session: Session,
    actor: Actor | None,
    *,
    project: str | None = None,
    environment: str | None = None,
    limit: int = 50,
) -> list[DeploymentView]:
    """The newest deployments ``actor`` may see (``VIEW_CICD``), newest first, with their history.

    Args:
        session: Metadata DB session.
        actor: The viewer.
        project: Only this project (slug).
        environment: Only this environment.
        limit: At most this many (1-500).

    Raises:
        Forbidden: if ``project`` is given and the actor may not view its CI/CD.
        InvalidInput: for a bad environment or limit.
    """
    _check_int(limit, "limit", 1, 500)
    if environment is not None and environment not in ENVIRONMENT_NAMES:
        raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENT_NAMES)}")
    if project is not None:
        require(actor, Permission.VIEW_CICD, project)
    elif actor is None:
        raise Forbidden("anonymous may not view_cicd")
    query = select(Deployment).join(Project, Project.id == Deployment.project_id)
    if project is not None:
        query = query.where(Project.slug == project)
    if environment is not None:
        query = query.where(Deployment.environment == environment)
    if not actor.is_admin:
        visible = [slug for slug in actor.roles if has_permission(actor, Permission.VIEW_CICD, slug)]
        query = query.where(Project.slug.in_(visible))
    deployments = list(session.scalars(query.order_by(Deployment.id.desc()).limit(limit)))
    if not deployments:
        return []
    events: dict[int, list[DeploymentEvent]] = {d.id: [] for d in deployments}
    for event in session.scalars(
        select(DeploymentEvent)
        .where(DeploymentEvent.deployment_id.in_(list(events)))
        .order_by(DeploymentEvent.id)
    ):
        events[event.deployment_id].append(event)
    return [_to_view(d, events[d.id]) for d in deployments]


# ---------------------------------------------------------------------------- commands


_PERMISSION_OF = {
    PROMOTE: Permission.DEPLOY,
    PAUSE: Permission.DEPLOY,
    RESUME: Permission.DEPLOY,
    ABORT: Permission.ROLLBACK,
    ROLLBACK: Permission.ROLLBACK,
}


@dataclass(frozen=True)
class RequestAction:
    """A person asks for a manual action on a deployment; the job carries it out.

    Attributes:
        actor: Who asks (``DEPLOY`` for promote/pause/resume, ``ROLLBACK`` for abort/rollback).
        deployment_id: The deployment.
        action: One of :data:`ACTIONS`.
        reason: Why (required for abort and rollback).
        now: The current time.
    """

    actor: Actor
    deployment_id: int
    action: str
    reason: str = ""
    now: datetime | None = None

    def run(self, sessions: sessionmaker[Session]) -> DeploymentView:
        """Validate, record the request (or, where no traffic changes, act at once), audit.

        Returns:
            The deployment's view after the change.

        Raises:
            Forbidden: without the permission on the project.
            InvalidInput: for an unknown action or a missing reason.
            Conflict: for an unknown deployment, or an action its state does not allow.
        """
        if self.action not in ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        reason = _check_reason(self.reason, required=self.action in (ABORT, ROLLBACK))
        if isinstance(self.deployment_id, bool) or not isinstance(self.deployment_id, int):
            raise InvalidInput("deployment id must be an integer")
        now = _now(self.now)
        with session_scope(sessions, write=True) as session:
            deployment = session.get(Deployment, self.deployment_id)
            if deployment is None:
                raise Conflict(f"no deployment {self.deployment_id}")
            slug = deployment.project.slug
            current = active_actor(session, self.actor, _PERMISSION_OF[self.action], slug)
            if self.action not in allowed_actions(deployment):
                waiting = f" ({deployment.requested_action} requested)" if deployment.requested_action else ""
                raise Conflict(
                    f"deployment {deployment.id} is {deployment.status}{waiting}: "
                    f"{self.action} is not possible now"
                )
            seen = deployment.status
            values: dict[str, Any] = {"updated_at": now}
            immediate = seen == QUEUED and self.action in (PAUSE, ABORT)
            if immediate:
                # Nothing routed yet: the state change alone is the whole action.
                values |= {
                    "status": PAUSED if self.action == PAUSE else ABORTED,
                    "reason": reason or f"{self.action} by {current.username}",
                }
                if self.action == ABORT:
                    values["finished_at"] = now
            else:
                values |= {
                    "requested_action": self.action,
                    "requested_by": current.username,
                    "requested_reason": reason,
                }
            changed = session.execute(
                update(Deployment)
                .where(
                    Deployment.id == deployment.id,
                    Deployment.status == seen,
                    Deployment.requested_action.is_(None),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed != 1:
                raise Conflict(f"deployment {deployment.id} changed meanwhile; look again")
            session.refresh(deployment)
            details = {**_describe(deployment), "reason": reason, "status": deployment.status}
            _add_event(
                session,
                deployment,
                self.action if immediate else "requested",
                current.username,
                {"action": self.action, "reason": reason},
                now,
            )
            audit.append(session, current.username, f"deployment.{self.action}", _target(deployment), details)
            session.flush()
            return _to_view(deployment, _events_of(session, deployment.id))


def promote_deployment(
    sessions: sessionmaker[Session], actor: Actor, deployment_id: int, reason: str = ""
) -> DeploymentView:
    """Skip the remaining canary steps: the job moves the stable alias to the canary (``DEPLOY``)."""
    return RequestAction(actor, deployment_id, PROMOTE, reason).run(sessions)


def pause_deployment(
    sessions: sessionmaker[Session], actor: Actor, deployment_id: int, reason: str = ""
) -> DeploymentView:
    """Hold the rollout at its current split until someone resumes, promotes or aborts it (``DEPLOY``)."""
    return RequestAction(actor, deployment_id, PAUSE, reason).run(sessions)


def resume_deployment(
    sessions: sessionmaker[Session], actor: Actor, deployment_id: int, reason: str = ""
) -> DeploymentView:
    """Continue a paused rollout: the current step bakes again and is analysed (``DEPLOY``)."""
    return RequestAction(actor, deployment_id, RESUME, reason).run(sessions)


def abort_deployment(
    sessions: sessionmaker[Session], actor: Actor, deployment_id: int, reason: str
) -> DeploymentView:
    """Stop the rollout and return all traffic to the stable version (``ROLLBACK``); ends ``aborted``."""
    return RequestAction(actor, deployment_id, ABORT, reason).run(sessions)


def rollback_deployment_now(
    sessions: sessionmaker[Session], actor: Actor, deployment_id: int, reason: str
) -> DeploymentView:
    """Return traffic to the previous version, during or after the rollout (``ROLLBACK``)."""
    return RequestAction(actor, deployment_id, ROLLBACK, reason).run(sessions)


def configure_deployment(
    sessions: sessionmaker[Session],
    actor: Actor,
    deployment_id: int,
    *,
    strategy: str,
    steps: str | Sequence[int] | None = None,
    bake_seconds: int | None = None,
    now: datetime | None = None,
) -> DeploymentView:
    """Choose how a queued deployment rolls out (``DEPLOY``); approvals queue them as ``direct``.

    Args:
        sessions: Session factory.
        actor: Needs ``DEPLOY`` on the project.
        deployment_id: A deployment still ``queued`` or ``paused`` before its start.
        strategy: ``direct``, ``blue-green`` or ``canary``.
        steps: Canary steps (default: the job's).
        bake_seconds: Bake per step (default: the job's).
        now: The current time.

    Raises:
        Forbidden: without ``DEPLOY``.
        InvalidInput: for a bad strategy, steps or bake time.
        Conflict: if the rollout already started.
    """
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    parsed = None if steps is None else format_steps(parse_steps(steps))
    if bake_seconds is not None:
        _check_int(bake_seconds, "bake_seconds", 1, 86_400)
    moment = _now(now)
    with session_scope(sessions, write=True) as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise Conflict(f"no deployment {deployment_id}")
        current = active_actor(session, actor, Permission.DEPLOY, deployment.project.slug)
        changed = session.execute(
            update(Deployment)
            .where(
                Deployment.id == deployment.id,
                Deployment.status.in_((QUEUED, PAUSED)),
                Deployment.started_at.is_(None),
            )
            .values(strategy=strategy, steps=parsed, bake_seconds=bake_seconds, updated_at=moment)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            raise Conflict(
                f"deployment {deployment_id} already started ({deployment.status}); it cannot be reconfigured"
            )
        session.refresh(deployment)
        details = {"strategy": strategy, "steps": parsed, "bake_seconds": bake_seconds}
        _add_event(session, deployment, "configured", current.username, details, moment)
        audit.append(
            session,
            current.username,
            "deployment.configure",
            _target(deployment),
            {**_describe(deployment), **details},
        )
        session.flush()
        return _to_view(deployment, _events_of(session, deployment.id))


# ---------------------------------------------------------------------------- the job


class LeaseLost(RuntimeError):
    """Another job took the deployment over (this one was too slow to renew its lease)."""


class _RollbackQueued(RuntimeError):
    """The REST API queued a rollback of the deployment this job is driving."""


@dataclass
class _Outcome:
    deployment_id: int
    status: str
    reason: str | None = None


class DeploymentRunner:
    """Claims deployments and drives their rollouts (one at a time, in id order).

    Args:
        sessions: Session factory of the metadata database.
        store: The Parquet store holding ``inference_logs`` (analytics.store.ParquetStore).
        config: How to run.
        switch: Registry writer (default: :class:`TrafficSwitch` on the config's URIs).
        sleep: Sleep function (tests pass a faster clock).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: Any,
        config: DeployConfig,
        *,
        switch: TrafficSwitch | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.config = config
        self.switch = switch or TrafficSwitch(config.tracking_uri, config.registry_uri)
        self.sleep = sleep
        self.stop_event = threading.Event()

    # ---------------------------------------------------------------- claiming
    def _claimable(self, session: Session, now: datetime, only: int | None) -> list[int]:
        free = or_(Deployment.lease_expires_at.is_(None), Deployment.lease_expires_at < now)
        query = select(Deployment.id).where(
            free,
            or_(
                Deployment.status.in_((QUEUED, RUNNING, ROLLBACK_QUEUED)),
                and_(Deployment.status.in_((PAUSED, SUCCEEDED)), Deployment.requested_action.is_not(None)),
            ),
        )
        if only is not None:
            query = query.where(Deployment.id == only)
        return list(session.scalars(query.order_by(Deployment.id)))

    def _claim(self, deployment_id: int, now: datetime) -> Deployment | None:
        """Take the lease with a compare-and-set; ``None`` when another job was faster."""
        with session_scope(self.sessions, write=True) as session:
            free = or_(Deployment.lease_expires_at.is_(None), Deployment.lease_expires_at < now)
            changed = session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id, free)
                .values(
                    lease_owner=self.config.owner,
                    lease_expires_at=now + timedelta(seconds=self.config.lease_seconds),
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed != 1:
                return None
            return session.get(Deployment, deployment_id)

    def _release(self, deployment_id: int) -> None:
        with session_scope(self.sessions, write=True) as session:
            session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id, Deployment.lease_owner == self.config.owner)
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    def run_once(self, *, only: int | None = None) -> list[_Outcome]:
        """Drive every claimable deployment until it finishes, pauses or is left to another job.

        Args:
            only: Just this deployment id.

        Returns:
            What became of each deployment touched.
        """
        outcomes = []
        with session_scope(self.sessions) as session:
            candidates = self._claimable(session, _now(), only)
        for deployment_id in candidates:
            if self.stop_event.is_set():
                break
            deployment = self._claim(deployment_id, _now())
            if deployment is None:
                continue
            try:
                outcomes.append(self._drive(deployment))
            except LeaseLost as error:
                log.warning("%s", error)
                continue
            except Exception as error:
                # The registry or the database failed mid-step. The row keeps its persisted state; once
                # the lease is released below, the next run takes it over as its on_restart policy says.
                log.exception("deployment %s: the rollout step failed", deployment_id)
                outcomes.append(self._record_error(deployment_id, error))
                continue
            finally:
                with contextlib.suppress(Exception):
                    self._release(deployment_id)
        return outcomes

    def _record_error(self, deployment_id: int, error: Exception) -> _Outcome:
        """Record a failed step; a deployment that never routed traffic fails after repeated errors.

        A rollout that already routed traffic is retried by the next run instead (its split needs an
        owner, and the registry may be back by then).
        """
        message = f"{type(error).__name__}: {error}"[:MAX_REASON_LENGTH]
        try:
            row = self._transition(deployment_id, "error", {"error": message})
            with session_scope(self.sessions) as session:
                recent = session.scalars(
                    select(DeploymentEvent.kind)
                    .where(DeploymentEvent.deployment_id == deployment_id)
                    .order_by(DeploymentEvent.id.desc())
                    .limit(MAX_CONSECUTIVE_ERRORS)
                ).all()
            if (
                row.status == QUEUED
                and len(recent) == MAX_CONSECUTIVE_ERRORS
                and all(kind == "error" for kind in recent)
            ):
                reason = f"failed {MAX_CONSECUTIVE_ERRORS} times before routing any traffic: {message}"
                row = self._transition(
                    deployment_id, FAILED, {"reason": reason}, audit_action="deployment.failed",
                    status=FAILED, reason=reason, finished_at=_now(),
                )  # fmt: skip
                return _Outcome(deployment_id, FAILED, reason)
        except Exception:
            log.exception("deployment %s: cannot record the error", deployment_id)
        return _Outcome(deployment_id, "error", message)

    def run_forever(self, *, only: int | None = None, idle_seconds: float = 5.0) -> None:
        """Loop :meth:`run_once` until :attr:`stop_event` is set (SIGTERM in the CLI)."""
        while not self.stop_event.is_set():
            try:
                self.run_once(only=only)
            except Exception:
                log.exception("deployment run failed; retrying")
            self.stop_event.wait(idle_seconds)

    # ---------------------------------------------------------------- state writes
    def _transition(
        self,
        deployment_id: int,
        kind: str,
        details: Mapping[str, Any],
        *,
        actor: str = SYSTEM_ACTOR,
        audit_action: str | None = None,
        over_rollback_queued: bool = False,
        **values: Any,
    ) -> Deployment:
        """Change the row (while holding the lease), add the event and, if asked, the audit entry.

        Raises:
            LeaseLost: if the lease is no longer this job's.
            _RollbackQueued: if the API queued a rollback meanwhile (only the rollback may proceed).
        """
        now = _now()
        conditions = [Deployment.id == deployment_id, Deployment.lease_owner == self.config.owner]
        if not over_rollback_queued:
            conditions.append(Deployment.status != ROLLBACK_QUEUED)
        with session_scope(self.sessions, write=True) as session:
            changed = session.execute(
                update(Deployment)
                .where(*conditions)
                .values(
                    updated_at=now,
                    lease_expires_at=now + timedelta(seconds=self.config.lease_seconds),
                    **values,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed != 1:
                row = session.get(Deployment, deployment_id)
                if row is not None and row.lease_owner == self.config.owner and row.status == ROLLBACK_QUEUED:
                    raise _RollbackQueued(deployment_id)
                raise LeaseLost(f"deployment {deployment_id}: lease lost to another job; stopping here")
            deployment = session.get(Deployment, deployment_id)
            session.refresh(deployment)
            _add_event(session, deployment, kind, actor, details, now)
            if audit_action:
                audit.append(
                    session, actor, audit_action, _target(deployment), {**_describe(deployment), **details}
                )
            return deployment

    def _renew(self, deployment_id: int) -> Deployment:
        now = _now()
        with session_scope(self.sessions, write=True) as session:
            changed = session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id, Deployment.lease_owner == self.config.owner)
                .values(lease_expires_at=now + timedelta(seconds=self.config.lease_seconds))
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed != 1:
                raise LeaseLost(f"deployment {deployment_id}: lease lost to another job; stopping here")
            return session.get(Deployment, deployment_id)

    # ---------------------------------------------------------------- driving
    def _name(self, deployment: Deployment) -> str:
        return registry.registered_model_name(deployment.project.slug, deployment.model)

    def _drive(self, deployment: Deployment) -> _Outcome:
        if deployment.status == RUNNING and deployment.requested_action is None:
            # The lease of a running rollout was free: its job died or stopped. Apply the persisted policy.
            try:
                deployment = self._take_over(deployment)
            except _RollbackQueued:
                deployment = self._load(deployment.id)
        while True:
            try:
                deployment = self._step(deployment)
            except _RollbackQueued:
                deployment = self._load(deployment.id)
                continue
            if isinstance(deployment, _Outcome):
                return deployment

    def _step(self, deployment: Deployment) -> Deployment | _Outcome:
        """One move of the state machine: an outcome when this job is done with the deployment."""
        if deployment.requested_action is not None and deployment.status != ROLLBACK_QUEUED:
            result = self._handle_request(deployment)
            if result is not None:
                return result
            return self._renew(deployment.id)
        status = deployment.status
        if status == ROLLBACK_QUEUED:
            done = self._rollback(
                deployment, "rollback queued through the API", actor=SYSTEM_ACTOR, final=ROLLED_BACK
            )
            return _Outcome(done.id, done.status, done.reason)
        if status == QUEUED:
            return self._start(deployment)
        if status != RUNNING:
            return _Outcome(deployment.id, status, deployment.reason)
        return self._bake_and_judge(deployment)

    def _start(self, deployment: Deployment) -> Deployment:
        name = self._name(deployment)
        environment = deployment.environment
        # Raises RegistryError while the row is still queued: repeated failures mark it failed.
        info = registry.get_version(
            name,
            deployment.version,
            tracking_uri=self.config.tracking_uri,
            registry_uri=self.config.registry_uri,
        )
        if info.artifact_digest != deployment.artifact_digest or (info.run_id or "") != deployment.run_id:
            reason = (
                f"{name} version {deployment.version} in the registry (run {info.run_id}, digest "
                f"{(info.artifact_digest or '-')[:12]}) is not the version that was approved (run "
                f"{deployment.run_id}, digest {deployment.artifact_digest[:12]})"
            )
            return self._transition(
                deployment.id, FAILED, {"reason": reason}, audit_action="deployment.failed",
                status=FAILED, reason=reason, finished_at=_now(),
            )  # fmt: skip
        stable = self.switch.stable_version(name, environment)
        steps = _steps_of(deployment) if deployment.steps else self.config.steps
        bake = deployment.bake_seconds or self.config.bake_seconds
        strategy = deployment.strategy if deployment.strategy in STRATEGIES else DIRECT
        common = {
            "steps": format_steps(steps),
            "bake_seconds": bake,
            "on_restart": self.config.on_restart,
            "previous_version": stable,
            "started_at": _now(),
        }
        if stable == deployment.version:
            return self._transition(
                deployment.id,
                "succeeded",
                {"note": f"version {stable} already serves {environment}"},
                audit_action="deployment.succeeded",
                status=SUCCEEDED,
                finished_at=_now(),
                canary_weight=0,
                current_step=None,
                **{k: v for k, v in common.items() if k != "previous_version"},
            )
        if strategy == CANARY and stable is None:
            strategy = DIRECT
            note = (
                f"nothing serves {environment} yet: no stable version to compare a canary with, "
                "deployed directly"
            )
        else:
            note = ""
        deployment = self._transition(
            deployment.id,
            "started",
            {
                "strategy": strategy,
                "previous_version": stable,
                "steps": list(steps),
                "bake_seconds": bake,
                "on_restart": self.config.on_restart,
                "note": note,
            },
            audit_action="deployment.started",
            status=RUNNING,
            strategy=strategy,
            **common,
        )
        if strategy == CANARY:
            weight = steps[0] * 100
            # Persist the intent first: a crash between the two writes is repaired by the resume.
            deployment = self._transition(
                deployment.id,
                "step",
                {"step": 0, "weight_pct": steps[0]},
                current_step=0,
                canary_weight=weight,
                step_started_at=_now(),
            )
            if weight >= 10_000:
                return self._complete(deployment, "single step of 100 %")
            self.switch.set_canary(name, environment, deployment.version, weight)
            return self._transition(deployment.id, "routed", {"weight_bp": weight}, step_started_at=_now())
        self.switch.switch(
            name, environment, deployment.version, keep_previous=stable if strategy == BLUE_GREEN else None
        )
        if strategy == DIRECT or stable is None:
            return self._succeed(deployment)
        # Blue-green: green serves everything now; watch it for one bake on absolute thresholds.
        return self._transition(
            deployment.id,
            "switched",
            {"from_version": stable, "to_version": deployment.version},
            audit_action="deployment.switched",
            current_step=0,
            canary_weight=10_000,
            step_started_at=_now(),
        )

    def _take_over(self, deployment: Deployment) -> Deployment:
        policy = deployment.on_restart or self.config.on_restart
        details = {"policy": policy, "step": deployment.current_step, "weight_bp": deployment.canary_weight}
        if policy == ROLLBACK_ON_RESTART:
            self._transition(deployment.id, "lease_taken_over", details)
            self._rollback(
                deployment,
                "the deployment job stopped mid-rollout; on_restart policy is rollback",
                actor=SYSTEM_ACTOR,
                final=ROLLED_BACK,
            )
            return self._load(deployment.id)
        deployment = self._transition(
            deployment.id, "lease_taken_over", details, audit_action="deployment.resumed"
        )
        return self._reapply(deployment)

    def _reapply(self, deployment: Deployment) -> Deployment:
        """Write the routing of the persisted step again (idempotent) and restart its bake."""
        name = self._name(deployment)
        if deployment.strategy == CANARY:
            if deployment.current_step is None:  # stopped before the first step was persisted
                first = _steps_of(deployment)[0]
                deployment = self._transition(
                    deployment.id, "step", {"step": 0, "weight_pct": first},
                    current_step=0, canary_weight=first * 100, step_started_at=_now(),
                )  # fmt: skip
            weight = deployment.canary_weight
            if weight >= 10_000:
                return self._complete(deployment, "resumed at 100 %")
            self.switch.set_canary(name, deployment.environment, deployment.version, weight)
        elif deployment.strategy == DIRECT or not deployment.previous_version:
            self.switch.switch(name, deployment.environment, deployment.version)
            return self._succeed(deployment)
        else:
            self.switch.switch(
                name,
                deployment.environment,
                deployment.version,
                keep_previous=deployment.previous_version if deployment.strategy == BLUE_GREEN else None,
            )
        return self._transition(
            deployment.id, "routed", {"weight_bp": deployment.canary_weight}, step_started_at=_now()
        )

    def _load(self, deployment_id: int) -> Deployment:
        with session_scope(self.sessions) as session:
            return session.get(Deployment, deployment_id)

    def _bake_and_judge(self, deployment: Deployment) -> Deployment:
        started = _aware(deployment.step_started_at) or _now()
        bake = deployment.bake_seconds or self.config.bake_seconds
        until = started + timedelta(seconds=bake)
        while _now() < until:
            if self.stop_event.is_set():
                raise LeaseLost(f"deployment {deployment.id}: job stopping; the next run takes over")
            self.sleep(min(self.config.poll_seconds, max(0.0, (until - _now()).total_seconds())))
            deployment = self._renew(deployment.id)
            if deployment.requested_action is not None or deployment.status != RUNNING:
                return deployment
        analysis = self._analyse(deployment, started, _now())
        steps = _steps_of(deployment)
        step = deployment.current_step or 0
        details = {
            "step": step,
            "weight_pct": (deployment.canary_weight or 0) / 100,
            "outcome": analysis.outcome,
            "reason": analysis.reason,
            "since": started.isoformat(),
            "results": [r.to_dict() for r in analysis.results],
        }
        deployment = self._transition(deployment.id, "analysis", details)
        if analysis.outcome == AnalysisOutcome.FAILED:
            return self._rollback(
                deployment, f"automatic rollback: {analysis.reason}", actor=SYSTEM_ACTOR, final=ROLLED_BACK
            )
        if analysis.outcome == AnalysisOutcome.INCONCLUSIVE:
            return self._transition(
                deployment.id,
                "paused",
                {"reason": analysis.reason},
                audit_action="deployment.paused",
                status=PAUSED,
                reason=f"analysis inconclusive, waiting for a person: {analysis.reason}",
            )
        if deployment.strategy != CANARY:
            return self._succeed(deployment)
        next_step = step + 1
        if next_step >= len(steps) or steps[next_step] >= 100:
            return self._complete(deployment, "every step passed its analysis")
        weight = steps[next_step] * 100
        deployment = self._transition(
            deployment.id,
            "step",
            {"step": next_step, "weight_pct": steps[next_step]},
            current_step=next_step,
            canary_weight=weight,
            step_started_at=_now(),
        )
        self.switch.set_canary(self._name(deployment), deployment.environment, deployment.version, weight)
        return self._transition(deployment.id, "routed", {"weight_bp": weight}, step_started_at=_now())

    def _analyse(self, deployment: Deployment, since: datetime, until: datetime) -> Analysis:
        try:
            where = (
                self.store,
                deployment.project.slug,
                deployment.model,
                deployment.environment,
                since,
                until,
            )
            rows = read_step_rows(*where)
            errors = read_step_errors(*where)
        except Exception as error:  # storage outage: nothing to judge on, a person decides
            log.exception("cannot read the inference log for deployment %s", deployment.id)
            return Analysis(
                AnalysisOutcome.INCONCLUSIVE,
                (),
                f"the inference log or request errors cannot be read: {error}",
            )
        canary = rows.get(deployment.version, _empty_rows())
        canary_errors = errors.get(deployment.version, 0)
        if deployment.strategy != CANARY:
            return analyse(canary, None, self.config.thresholds, canary_errors=canary_errors)
        stable_version = deployment.previous_version or ""
        stable = rows.get(stable_version, _empty_rows())
        return analyse(
            canary,
            stable,
            self.config.thresholds,
            canary_errors=canary_errors,
            stable_errors=errors.get(stable_version, 0),
        )

    def _succeed(self, deployment: Deployment) -> Deployment:
        """End a rollout whose version already serves all traffic (direct, blue-green after its bake)."""
        return self._transition(
            deployment.id,
            "succeeded",
            {"stable_version": deployment.version},
            audit_action="deployment.succeeded",
            status=SUCCEEDED,
            finished_at=_now(),
            canary_weight=0,
        )

    def _complete(self, deployment: Deployment, why: str, *, actor: str = SYSTEM_ACTOR) -> Deployment:
        name = self._name(deployment)
        deployment = self._transition(
            deployment.id,
            "step",
            {"weight_pct": 100, "note": why},
            canary_weight=10_000,
            current_step=len(_steps_of(deployment)) - 1,
        )
        self.switch.switch(name, deployment.environment, deployment.version)
        return self._transition(
            deployment.id,
            "succeeded",
            {"stable_version": deployment.version, "note": why},
            actor=actor,
            audit_action="deployment.succeeded",
            status=SUCCEEDED,
            canary_weight=0,
            finished_at=_now(),
            requested_action=None,
            requested_by=None,
            requested_reason=None,
        )

    def _rollback(self, deployment: Deployment, reason: str, *, actor: str, final: str) -> Deployment:
        """Return all traffic to ``previous_version``; the stable alias moves only if it had moved."""
        name = self._name(deployment)
        environment = deployment.environment
        previous = deployment.previous_version
        if deployment.status == ROLLBACK_QUEUED and not previous:
            previous = self._api_rollback_target(deployment)
        aliases, _weight = self.switch.aliases_and_weight(name, environment)
        from jobs.gateway.routing import canary_alias

        if aliases.get(canary_alias(environment)) == deployment.version:
            self.switch.remove_canary(name, environment)
        moved_back = None
        if aliases.get(environment) == deployment.version and previous and previous != deployment.version:
            self.switch.switch(name, environment, previous)
            moved_back = previous
        details = {
            "reason": reason,
            "stable_version": moved_back or aliases.get(environment),
            "moved_alias_back_to": moved_back,
        }
        return self._transition(
            deployment.id,
            final,
            details,
            actor=actor,
            audit_action=f"deployment.{final}",
            status=final,
            reason=reason,
            canary_weight=0,
            finished_at=_now(),
            requested_action=None,
            requested_by=None,
            requested_reason=None,
            over_rollback_queued=True,
        )

    def _api_rollback_target(self, deployment: Deployment) -> str | None:
        with session_scope(self.sessions) as session:
            return session.scalars(
                select(Deployment.version)
                .where(
                    Deployment.project_id == deployment.project_id,
                    Deployment.model == deployment.model,
                    Deployment.environment == deployment.environment,
                    Deployment.id < deployment.id,
                    Deployment.version != deployment.version,
                    Deployment.status.not_in((FAILED, ROLLBACK_QUEUED, ROLLED_BACK, ABORTED, "cancelled")),
                )
                .order_by(Deployment.id.desc())
                .limit(1)
            ).first()

    def _handle_request(self, deployment: Deployment) -> _Outcome | None:
        """Carry out a manual action; ``None`` when the rollout goes on."""
        action, who = deployment.requested_action, deployment.requested_by or SYSTEM_ACTOR
        reason = deployment.requested_reason or f"{action} by {who}"
        cleared = {"requested_action": None, "requested_by": None, "requested_reason": None}
        if action == PROMOTE and deployment.status in (RUNNING, PAUSED) and deployment.strategy == CANARY:
            done = self._complete(deployment, f"promoted by {who}", actor=who)
            return _Outcome(done.id, done.status, done.reason)
        if action == PAUSE and deployment.status == RUNNING:
            done = self._transition(
                deployment.id,
                "paused",
                {"reason": reason},
                actor=who,
                status=PAUSED,
                reason=f"paused by {who}: {reason}",
                **cleared,
            )
            return _Outcome(done.id, done.status, done.reason)
        if action == RESUME and deployment.status == PAUSED:
            if deployment.started_at is None:
                self._transition(
                    deployment.id,
                    "resumed",
                    {"reason": reason},
                    actor=who,
                    status=QUEUED,
                    reason=None,
                    **cleared,
                )
                return None
            self._transition(
                deployment.id,
                "resumed",
                {"reason": reason},
                actor=who,
                status=RUNNING,
                reason=None,
                **cleared,
            )
            self._reapply(self._load(deployment.id))
            return None
        if action == ABORT and deployment.status in (RUNNING, PAUSED, QUEUED):
            done = self._rollback(deployment, f"aborted by {who}: {reason}", actor=who, final=ABORTED)
            return _Outcome(done.id, done.status, done.reason)
        if action == ROLLBACK and deployment.status in (RUNNING, PAUSED, SUCCEEDED):
            done = self._rollback(deployment, f"rolled back by {who}: {reason}", actor=who, final=ROLLED_BACK)
            return _Outcome(done.id, done.status, done.reason)
        done = self._transition(
            deployment.id, "request_ignored", {"action": action, "status": deployment.status}, **cleared
        )
        return None if done.status == RUNNING else _Outcome(done.id, done.status, done.reason)


# ---------------------------------------------------------------------------- CLI


def _thresholds_from(args: argparse.Namespace) -> Thresholds:
    return Thresholds(
        min_success_rate=args.min_success_rate,
        max_p99_ms=args.max_p99_ms,
        max_p99_ratio=args.max_p99_ratio,
        latency_slack_ms=args.latency_slack_ms,
        min_requests=args.min_requests,
        check_drift=not args.no_drift,
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def _sessions(settings: Any) -> sessionmaker[Session]:
    from jobs.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))


def _store(settings: Any) -> Any:
    from analytics.store import ParquetStore

    return ParquetStore(settings.store_config())


def _actor(sessions: sessionmaker[Session], username: str) -> Actor:
    from jobs.users import get_user

    with session_scope(sessions) as session:
        user = get_user(session, username)
        actor = None if user is None else actor_for(session, user.id)
    if actor is None:
        raise InvalidInput(f"no active user {username!r}")
    return actor


def _print_view(view: DeploymentView) -> None:
    print(
        json.dumps(
            {
                "id": view.id,
                "target": f"{view.project}/{view.model} v{view.version} -> {view.environment}",
                "strategy": view.strategy,
                "status": view.status,
                "step": view.current_step,
                "steps": list(view.steps),
                "canary_weight_pct": view.canary_weight_pct,
                "previous_version": view.previous_version,
                "reason": view.reason,
                "requested_action": view.requested_action,
                "analyses": [a.to_dict() for a in view.analyses],
                "events": [
                    {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor} for e in view.events[-10:]
                ],
            },
            indent=2,
            default=str,
        )
    )


def _deploy_command(args: argparse.Namespace, settings: Any) -> int:
    sessions = _sessions(settings)
    if args.deploy_command == "run":
        config = DeployConfig(
            tracking_uri=settings.mlflow_tracking_uri,
            registry_uri=getattr(settings, "mlflow_registry_uri", None) or None,
            steps=parse_steps(args.steps) if args.steps else DEFAULT_STEPS,
            bake_seconds=args.bake_seconds,
            thresholds=_thresholds_from(args),
            on_restart=args.on_restart,
            lease_seconds=args.lease_seconds,
        )
        runner = DeploymentRunner(sessions, _store(settings), config)
        if not args.once:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: runner.stop_event.set())
            runner.run_forever(only=args.deployment)
            return 0
        for outcome in runner.run_once(only=args.deployment):
            print(
                f"deployment {outcome.deployment_id}: {outcome.status}"
                + (f" ({outcome.reason})" if outcome.reason else "")
            )
        return 0
    if args.deployment is None:
        raise InvalidInput("--deployment ID is required")
    if args.deploy_command == "status":
        with session_scope(sessions) as session:
            actor = _actor(sessions, args.actor) if args.actor else None
            _print_view(deployment_view(session, actor, args.deployment))
        return 0
    actor = _actor(sessions, args.actor)
    if args.deploy_command == "configure":
        view = configure_deployment(
            sessions,
            actor,
            args.deployment,
            strategy=args.strategy,
            steps=args.steps,
            bake_seconds=args.bake_seconds,
        )
    else:
        view = RequestAction(actor, args.deployment, args.deploy_command, args.reason or "").run(sessions)
    _print_view(view)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``deploy run|status|configure|promote|pause|resume|abort|rollback``."""
    parser = subparsers.add_parser(
        "deploy", help="run deployments (canary, blue-green, direct) and act on them"
    )
    commands = parser.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    run = commands.add_parser("run", help="carry out queued deployments")
    run.add_argument("--once", action="store_true", help="drive what is claimable now, then exit")
    run.add_argument("--deployment", type=_positive_int, help="only this deployment")
    run.add_argument("--steps", help="default canary steps in percent, e.g. 10,25,50,100")
    run.add_argument("--bake-seconds", type=_positive_int, default=DEFAULT_BAKE_SECONDS)
    run.add_argument("--on-restart", choices=RESTART_POLICIES, default=RESUME_ON_RESTART)
    run.add_argument("--lease-seconds", type=_positive_int, default=DEFAULT_LEASE_SECONDS)
    run.add_argument("--min-requests", type=_positive_int, default=Thresholds.min_requests)
    run.add_argument("--min-success-rate", type=float, default=Thresholds.min_success_rate)
    run.add_argument("--max-p99-ms", type=float, default=Thresholds.max_p99_ms)
    run.add_argument("--max-p99-ratio", type=float, default=Thresholds.max_p99_ratio)
    run.add_argument("--latency-slack-ms", type=float, default=Thresholds.latency_slack_ms)
    run.add_argument("--no-drift", action="store_true", help="skip the prediction drift check")
    status = commands.add_parser("status", help="show a deployment")
    status.add_argument("--deployment", type=_positive_int, required=True)
    status.add_argument("--as", dest="actor", required=True, help="viewing user")
    configure = commands.add_parser("configure", help="choose the strategy of a queued deployment")
    configure.add_argument("--deployment", type=_positive_int, required=True)
    configure.add_argument("--as", dest="actor", required=True)
    configure.add_argument("--strategy", choices=STRATEGIES, required=True)
    configure.add_argument("--steps")
    configure.add_argument("--bake-seconds", type=_positive_int)
    for action in ACTIONS:
        sub = commands.add_parser(action, help=f"{action} a deployment")
        sub.add_argument("--deployment", type=_positive_int, required=True)
        sub.add_argument("--as", dest="actor", required=True, help="acting user")
        sub.add_argument("--reason", default="")
    parser.set_defaults(func=_deploy_command)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    """Run ``deploy`` through the jobs CLI."""
    from jobs.cli import main as cli_main

    return cli_main(["deploy", *(argv if argv is not None else sys.argv[1:])])


__all__ = [
    "ACTIONS",
    "STATUSES",
    "STRATEGIES",
    "Analysis",
    "AnalysisResult",
    "DeployConfig",
    "DeploymentRunner",
    "DeploymentView",
    "EventView",
    "Thresholds",
    "TrafficSwitch",
    "abort_deployment",
    "analyse",
    "configure_deployment",
    "deployment_view",
    "list_deployments",
    "pause_deployment",
    "promote_deployment",
    "read_step_errors",
    "read_step_rows",
    "resume_deployment",
    "rollback_deployment_now",
]
