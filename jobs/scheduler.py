"""The job scheduler: monitoring, alerts, governance housekeeping and deployments on cron expressions.

``python -m jobs scheduler`` runs an APScheduler 3 ``BlockingScheduler`` with these
cron jobs, all in UTC:

========================  ==========================================  ===============
job                       cron setting                                default
========================  ==========================================  ===============
``monitor``               ``MMS_SCHEDULER_MONITOR_CRON``              ``15 * * * *``
``alerts``                ``MMS_SCHEDULER_ALERTS_CRON``               ``*/5 * * * *``
``expire_pending``        ``MMS_SCHEDULER_EXPIRE_PENDING_CRON``       ``7 * * * *``
``audit_checkpoint``      ``MMS_SCHEDULER_AUDIT_CHECKPOINT_CRON``     ``30 * * * *``
``deploy``                (fixed: :data:`DEPLOY_CRON`)                ``* * * * *``
========================  ==========================================  ===============

``python -m jobs scheduler --once JOB`` runs one job once (:func:`run_once`) and
exits. The ``monitor`` job runs :func:`jobs.monitor.run_scheduled_monitor` (every
project not archived), then evaluates the alert rules on the metrics it wrote; the
``alerts`` job evaluates the rules (freshness needs no new metrics to fire) and
retries the notifications still to deliver (:func:`jobs.notify.deliver_pending`).
``expire_pending`` marks promotion requests past their ``expires_at`` as expired
(:func:`jobs.approvals.run_expiry`); ``audit_checkpoint`` signs the audit chain's
head into the data store (:func:`jobs.audit_checkpoint.run_checkpoint`, key from
``MMS_AUDIT_HMAC_KEY`` or ``<MMS_VAR_DIR>/audit_hmac.key``); both append their run
to the audit log as the ``system`` actor. ``deploy`` makes one pass over the queued
deployments, what ``python -m jobs deploy run --once`` does (:func:`jobs.deploy.DeploymentRunner`).

Leases instead of "run exactly one scheduler"
    Several scheduler processes may run (a rolling deploy, two replicas, a
    forgotten terminal). They coordinate through rows of ``scheduler_leases``
    (owner id + ``expires_at``), taken and renewed by compare-and-set: an
    ``UPDATE ... WHERE name = :name AND (owner = :me OR expires_at <= :now)``
    that either changes one row or none (PostgreSQL re-checks the condition on
    the latest row version, SQLite runs writers one at a time), or an ``INSERT``
    that the primary key lets only one process win. This works the same on
    SQLite and PostgreSQL and needs no advisory-lock session kept open.

    * The **leader lease** (``scheduler``) is renewed by a heartbeat every
      ``lease_ttl / 4``. A scheduler that does not hold it skips its due runs;
      when the leader stops (or dies and stops renewing), another scheduler's
      heartbeat takes the lease over once it has expired, within
      ``lease_ttl`` + one heartbeat.
    * A **run lease** (``job:<name>``) is held by :func:`run_once` for the
      duration of one run (renewed by a background thread while the job runs,
      released at the end), so two copies of the same job never overlap, whoever
      started them.

    Lease times come from each process's clock: keep hosts NTP-synchronised
    (skew must stay well below ``lease_ttl``, 120 s by default).

Production: a scheduled container task instead of a long-running scheduler
    On AWS the same jobs run without a resident process: an **EventBridge
    Scheduler** schedule (cron expression in UTC, e.g. ``cron(15 * * * ? *)``)
    targets **ECS RunTask** on the studio's task definition with the command
    overridden to ``python -m jobs scheduler --once monitor`` (and one schedule
    per other job: ``--once alerts``, ``--once expire_pending``, ...). Each task takes the ``job:<name>`` run
    lease in the metadata database before working, so a second copy (EventBridge
    delivers at least once and retries; an operator may start one by hand; a
    resident scheduler may also be running) finds the lease held and exits 0
    without running. A copy that starts after the first one finished runs again
    harmlessly: the monitor rewrites the same partitions, and alert evaluation is
    idempotent (alerts are deduplicated by a unique key). The task's exit code is
    non-zero only when the job itself failed, which EventBridge's retry policy and
    CloudWatch alarms can act on. ``python -m jobs monitor`` (the monitor's own
    command) can be scheduled the same way; it does not take the run lease, so
    prefer ``scheduler --once monitor`` when overlapping runs are possible.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import case, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore
from app.settings import Settings
from jobs.db.alerting import SchedulerLease
from jobs.db.models import utcnow
from jobs.db.session import session_scope

LEADER_LEASE = "scheduler"
RUN_LEASE_PREFIX = "job:"
DEFAULT_LEASE_TTL = timedelta(seconds=120)
MONITOR_JOB = "monitor"
ALERTS_JOB = "alerts"
EXPIRE_PENDING_JOB = "expire_pending"
AUDIT_CHECKPOINT_JOB = "audit_checkpoint"
DEPLOY_JOB = "deploy"
DEPLOY_CRON = "* * * * *"
"""Queued deployments are picked up within a minute (a pass over an empty queue is one query)."""

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


# --------------------------------------------------------------------------- leases


def default_owner_id() -> str:
    """An owner id unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire_lease(
    session_factory: sessionmaker[Session],
    name: str,
    owner: str,
    ttl: timedelta,
    *,
    now: datetime | None = None,
) -> bool:
    """Take or renew the lease ``name`` for ``owner`` until ``now + ttl``, by compare-and-set.

    Succeeds when nobody holds the lease, when ``owner`` already holds it (a
    renewal) or when the holder let it expire.

    Args:
        session_factory: Session factory of the metadata database.
        name: Lease name (``scheduler`` or ``job:<name>``).
        owner: Id of the taker.
        ttl: How long the lease lasts without renewal.
        now: Current time (timezone-aware; default: the clock).

    Returns:
        Whether ``owner`` holds the lease now.
    """
    now = utcnow() if now is None else now
    expires = now + ttl
    with session_scope(session_factory, write=True) as session:
        changed = session.execute(
            update(SchedulerLease)
            .where(
                SchedulerLease.name == name,
                or_(SchedulerLease.owner == owner, SchedulerLease.expires_at <= now),
            )
            .values(
                owner=owner,
                # A renewal keeps its acquisition time; a takeover starts a new one.
                acquired_at=case((SchedulerLease.owner == owner, SchedulerLease.acquired_at), else_=now),
                renewed_at=now,
                expires_at=expires,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed == 1:
            return True
        if session.scalar(select(SchedulerLease.name).where(SchedulerLease.name == name)) is not None:
            return False
    try:
        with session_scope(session_factory, write=True) as session:
            session.add(
                SchedulerLease(name=name, owner=owner, acquired_at=now, renewed_at=now, expires_at=expires)
            )
    except IntegrityError:
        return False  # another process inserted it first
    return True


def release_lease(
    session_factory: sessionmaker[Session], name: str, owner: str, *, now: datetime | None = None
) -> bool:
    """Give the lease up now if ``owner`` holds it (it expires immediately).

    Returns:
        Whether ``owner`` held it.
    """
    now = utcnow() if now is None else now
    with session_scope(session_factory, write=True) as session:
        return (
            session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == name, SchedulerLease.owner == owner)
                .values(expires_at=now, renewed_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )


def lease_holder(
    session_factory: sessionmaker[Session], name: str, *, now: datetime | None = None
) -> str | None:
    """Who holds the lease ``name`` at ``now`` (``None`` when nobody, or it expired)."""
    now = utcnow() if now is None else now
    with session_scope(session_factory) as session:
        lease = session.get(SchedulerLease, name)
        return lease.owner if lease is not None and lease.expires_at > now else None


class _LeaseKeeper:
    """Renews a lease from a daemon thread until stopped (while a job runs)."""

    def __init__(
        self, session_factory: sessionmaker[Session], name: str, owner: str, ttl: timedelta, clock: Clock
    ) -> None:
        self._session_factory = session_factory
        self._name = name
        self._owner = owner
        self._ttl = ttl
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self.lost = False

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _renew(self) -> None:
        while not self._stop.wait(self._ttl.total_seconds() / 4):
            try:
                if not acquire_lease(
                    self._session_factory, self._name, self._owner, self._ttl, now=self._clock()
                ):
                    self.lost = True
                    log.error("lease %s was taken over while %s still ran the job", self._name, self._owner)
                    return
            except Exception:  # a database hiccup must not kill the renewal thread
                log.exception("renewing lease %s failed; retrying", self._name)


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobContext:
    """What a scheduled job receives.

    Attributes:
        job_name: Name of the job.
        owner: Id of the process running it.
        session_factory: Session factory of the metadata database.
        store: The Parquet store.
        settings: Studio settings, when the job was started from them.
        now: When the run started.
    """

    job_name: str
    owner: str
    session_factory: sessionmaker[Session]
    store: ParquetStore
    settings: Settings | None
    now: datetime


JobFunction = Callable[[JobContext], Any]


@dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`run_once`.

    Attributes:
        job_name: The job.
        ran: Whether this process ran it (``False``: another holder had the run lease).
        owner: Id of this process.
        holder: Who held the run lease when it was not taken.
        started_at: When the run started (or was skipped).
        finished_at: When it ended.
        result: What the job returned.
        error: ``"Type: message"`` when the job raised.
    """

    job_name: str
    ran: bool
    owner: str
    holder: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The job ran and did not raise, or it was rightly skipped."""
        return self.error is None


def _run_alerts(context: JobContext) -> Any:
    from jobs.alerts import evaluate_alerts
    from jobs.notify import DeliveryOptions, deliver_pending

    options = DeliveryOptions.from_environ()
    summary = evaluate_alerts(context.session_factory, context.store, delivery=options)
    retried = deliver_pending(context.session_factory, options)
    log.info(
        "alerts: %d rule(s), opened %s, resolved %s, %d notification(s) retried",
        summary.rules_evaluated,
        list(summary.opened),
        list(summary.resolved),
        len(retried),
    )
    return summary


def _evaluate_after_monitor(context: JobContext) -> Any:
    from jobs.alerts import evaluate_alerts
    from jobs.notify import DeliveryOptions

    return evaluate_alerts(context.session_factory, context.store, delivery=DeliveryOptions.from_environ())


def _run_monitor(context: JobContext) -> Any:
    """The scheduled monitor run, then the alert evaluation over the metrics it wrote.

    Alerts are evaluated here too (not only on the ``alerts`` cron) so an alert follows
    fresh metrics at once, and also when some monitor input was unusable: the other
    models' metrics were written. The job still fails in that case.
    """
    from jobs.monitor import MonitorInputError, run_scheduled_monitor

    try:
        summary = run_scheduled_monitor(
            context.session_factory, context.store, settings=context.settings, now=context.now
        )
    except MonitorInputError:
        _evaluate_after_monitor(context)
        raise
    log.info("monitor:\n%s", summary.to_text())
    return {"monitor": summary, "alerts": _evaluate_after_monitor(context)}


def _run_expire_pending(context: JobContext) -> list[int]:
    """Expire overdue promotion requests; the run is audited (``promotion.expiry_run``, actor ``system``)."""
    from jobs.approvals import run_expiry

    expired = run_expiry(context.session_factory, now=context.now)
    log.info("expire_pending: %d request(s) expired %s", len(expired), expired)
    return expired


def _run_audit_checkpoint(context: JobContext) -> Any:
    """Sign the audit chain's head into the store; audited as ``audit.checkpoint`` by ``system``."""
    from jobs.audit_checkpoint import load_key, run_checkpoint

    var_dir = context.settings.var_dir if context.settings is not None else "var"
    checkpoint = run_checkpoint(
        context.session_factory, context.store, load_key(var_dir=var_dir), now=context.now
    )
    log.info(
        "audit_checkpoint: chain %r signed at seq %d (%s)", checkpoint.chain, checkpoint.seq, checkpoint.uri
    )
    return checkpoint


def _run_deploy(context: JobContext) -> Any:
    """One pass over the queued deployments, as ``python -m jobs deploy run --once``.

    :meth:`jobs.deploy.DeploymentRunner.run_once` with the default rollout settings; it
    drives each claimable rollout until it finishes or pauses (a canary bakes for
    minutes: the job's run lease is renewed meanwhile, so no second pass overlaps) and
    audits each transition as ``system``.
    """
    from jobs.deploy import DeployConfig, DeploymentRunner

    if context.settings is None:
        raise RuntimeError("the deploy job needs the studio settings (the MLflow tracking URI)")
    config = DeployConfig(
        tracking_uri=context.settings.mlflow_tracking_uri,
        registry_uri=context.settings.mlflow_registry_uri,
        owner=context.owner[:128],
    )
    outcomes = DeploymentRunner(context.session_factory, context.store, config).run_once()
    log.info("deploy: %s", [(o.deployment_id, o.status) for o in outcomes] or "nothing to do")
    return outcomes


DEFAULT_JOBS: Mapping[str, JobFunction] = {
    MONITOR_JOB: _run_monitor,
    ALERTS_JOB: _run_alerts,
    EXPIRE_PENDING_JOB: _run_expire_pending,
    AUDIT_CHECKPOINT_JOB: _run_audit_checkpoint,
    DEPLOY_JOB: _run_deploy,
}
"""The jobs ``python -m jobs scheduler`` knows, by name."""


def run_once(
    job_name: str,
    *,
    session_factory: sessionmaker[Session],
    store: ParquetStore,
    settings: Settings | None = None,
    jobs: Mapping[str, JobFunction] | None = None,
    owner: str | None = None,
    lease_ttl: timedelta = DEFAULT_LEASE_TTL,
    clock: Clock = utcnow,
) -> RunResult:
    """Run one job now under its run lease; skip it if another process is running it.

    Args:
        job_name: Name of the job (``monitor``, ``alerts`` or one of ``jobs``).
        session_factory: Session factory of the metadata database.
        store: The Parquet store.
        settings: Studio settings passed to the job.
        jobs: Job table (default :data:`DEFAULT_JOBS`).
        owner: Id of this process (default :func:`default_owner_id`).
        lease_ttl: Lifetime of the run lease between renewals.
        clock: Current time.

    Returns:
        The outcome; a job's exception is caught and reported in ``error``.

    Raises:
        KeyError: for an unknown job name.
    """
    table = DEFAULT_JOBS if jobs is None else jobs
    if job_name not in table:
        raise KeyError(f"unknown job {job_name!r}; known jobs: {', '.join(sorted(table))}")
    owner = owner or default_owner_id()
    lease = RUN_LEASE_PREFIX + job_name
    started = clock()
    if not acquire_lease(session_factory, lease, owner, lease_ttl, now=started):
        holder = lease_holder(session_factory, lease, now=started)
        log.info("%s: skipped, run lease held by %s", job_name, holder)
        return RunResult(
            job_name, ran=False, owner=owner, holder=holder, started_at=started, finished_at=started
        )
    context = JobContext(job_name, owner, session_factory, store, settings, started)
    result, error = None, None
    try:
        with _LeaseKeeper(session_factory, lease, owner, lease_ttl, clock):
            result = table[job_name](context)
    except Exception as caught:  # reported in the result; the scheduler keeps going
        log.exception("%s failed", job_name)
        error = f"{type(caught).__name__}: {caught}"
    finally:
        release_lease(session_factory, lease, owner, now=clock())
    return RunResult(
        job_name, ran=True, owner=owner, started_at=started, finished_at=clock(), result=result, error=error
    )


# --------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class ScheduledJob:
    """A job and when it runs.

    Attributes:
        trigger: APScheduler trigger (``CronTrigger.from_crontab(expr, timezone=UTC)`` in production).
        run: The job function.
    """

    trigger: BaseTrigger
    run: JobFunction


def cron_expressions(settings: Settings) -> dict[str, str]:
    """Each default job's cron expression (UTC) from the settings."""
    return {
        MONITOR_JOB: settings.scheduler_monitor_cron,
        ALERTS_JOB: settings.scheduler_alerts_cron,
        EXPIRE_PENDING_JOB: settings.scheduler_expire_pending_cron,
        AUDIT_CHECKPOINT_JOB: settings.scheduler_audit_checkpoint_cron,
        DEPLOY_JOB: DEPLOY_CRON,
    }


def jobs_from_settings(settings: Settings) -> dict[str, ScheduledJob]:
    """Every job of :data:`DEFAULT_JOBS` on its cron expression from the settings (UTC)."""
    return {
        name: ScheduledJob(CronTrigger.from_crontab(expression, timezone=UTC), DEFAULT_JOBS[name])
        for name, expression in cron_expressions(settings).items()
    }


@dataclass
class _Counters:
    runs: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


class StudioScheduler:
    """An APScheduler scheduler whose due runs only happen while this process holds the leader lease.

    Args:
        session_factory: Session factory of the metadata database.
        store: The Parquet store.
        jobs: Jobs by name with their triggers.
        settings: Studio settings passed to the jobs.
        owner: Id of this process (default :func:`default_owner_id`).
        lease_ttl: Lifetime of the leader lease; the heartbeat renews it every quarter of it.
        scheduler_class: ``BlockingScheduler`` for the command line, ``BackgroundScheduler`` to embed.
        clock: Current time (for the leases).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ParquetStore,
        jobs: Mapping[str, ScheduledJob],
        *,
        settings: Settings | None = None,
        owner: str | None = None,
        lease_ttl: timedelta = DEFAULT_LEASE_TTL,
        scheduler_class: type[BaseScheduler] = BlockingScheduler,
        clock: Clock = utcnow,
    ) -> None:
        if lease_ttl <= timedelta(0):
            raise ValueError("lease_ttl must be positive")
        self.session_factory = session_factory
        self.store = store
        self.jobs = dict(jobs)
        self.settings = settings
        self.owner = owner or default_owner_id()
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.counters = _Counters()
        self.is_leader = False
        self._lock = threading.Lock()
        # Serialises taking and giving up the leader lease: a heartbeat still in flight when
        # shutdown() releases the lease would otherwise take it again afterwards, and a stopped
        # scheduler would keep it until it expires.
        self._lease_lock = threading.Lock()
        self._stopped = False
        self._scheduler = scheduler_class(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self._scheduler.add_job(
            self.heartbeat,
            IntervalTrigger(seconds=lease_ttl.total_seconds() / 4, timezone=UTC),
            id="lease-heartbeat",
            name="lease heartbeat",
            next_run_time=datetime.now(UTC),
        )
        for name, job in self.jobs.items():
            self._scheduler.add_job(self.fire, job.trigger, args=[name], id=f"job-{name}", name=name)

    def heartbeat(self) -> bool:
        """Take or renew the leader lease; remember and return whether this process leads.

        After :meth:`shutdown` it takes nothing and answers ``False``.
        """
        with self._lease_lock:
            if self._stopped:
                leading = False
            else:
                try:
                    leading = acquire_lease(
                        self.session_factory, LEADER_LEASE, self.owner, self.lease_ttl, now=self.clock()
                    )
                except Exception:  # an unreachable database means "not leading", not a dead scheduler
                    log.exception("scheduler heartbeat failed")
                    leading = False
            with self._lock:
                if leading != self.is_leader:
                    log.info("scheduler %s %s the leader lease", self.owner, "took" if leading else "lost")
                self.is_leader = leading
        return leading

    def fire(self, job_name: str) -> RunResult | None:
        """Run a due job if this process holds the leader lease (renewed first); else skip it.

        Returns:
            The run's outcome, ``None`` when skipped.
        """
        if not self.heartbeat():
            with self._lock:
                self.counters.skipped[job_name] = self.counters.skipped.get(job_name, 0) + 1
            log.info("%s: skipped, %s is not the leader", job_name, self.owner)
            return None
        result = run_once(
            job_name,
            session_factory=self.session_factory,
            store=self.store,
            settings=self.settings,
            jobs={name: job.run for name, job in self.jobs.items()},
            owner=self.owner,
            lease_ttl=self.lease_ttl,
            clock=self.clock,
        )
        with self._lock:
            if result.ran:
                self.counters.runs[job_name] = self.counters.runs.get(job_name, 0) + 1
            else:
                self.counters.skipped[job_name] = self.counters.skipped.get(job_name, 0) + 1
        return result

    def start(self) -> None:
        """Start the scheduler (blocks for a ``BlockingScheduler`` until :meth:`shutdown`)."""
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True, release: bool = True) -> None:
        """Stop scheduling; give the leader lease up unless ``release`` is false (as a crash would).

        A heartbeat in flight finishes first; none takes the lease afterwards, even with
        ``wait=False`` (which leaves running jobs to finish on their own).
        """
        with self._lease_lock:
            self._stopped = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        if release:
            with self._lease_lock:
                try:
                    release_lease(self.session_factory, LEADER_LEASE, self.owner, now=self.clock())
                except Exception:  # the lease expires by itself anyway
                    log.exception("could not release the leader lease")
                with self._lock:
                    self.is_leader = False


# --------------------------------------------------------------------------- command line


def _open(settings: Settings) -> tuple[Any, sessionmaker[Session], ParquetStore]:
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine), ParquetStore(settings.store_config())


def _cli(args: argparse.Namespace, settings: Settings) -> int:
    engine, factory, store = _open(settings)
    try:
        if args.once:
            result = run_once(args.once, session_factory=factory, store=store, settings=settings)
            if not result.ran:
                print(f"{args.once}: not run, another process holds its run lease ({result.holder})")
                return 0
            if result.error:
                print(f"{args.once}: failed: {result.error}")
                return 1
            print(f"{args.once}: done in {(result.finished_at - result.started_at).total_seconds():.1f} s")
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        scheduler = StudioScheduler(factory, store, jobs_from_settings(settings), settings=settings)
        schedule = ", ".join(f"{name} '{cron}'" for name, cron in cron_expressions(settings).items())
        print(f"scheduler {scheduler.owner}: {schedule} (UTC); Ctrl-C to stop", flush=True)
        # ECS stops tasks with SIGTERM: stop cleanly and hand the lease over at once.
        signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            scheduler.shutdown(wait=False)
        return 0
    finally:
        store.close()
        engine.dispose()


def register_cli(subparsers: Any) -> None:
    """``scheduler [--once JOB]``: run the cron scheduler, or one job once under its run lease."""
    parser = subparsers.add_parser(
        "scheduler", help="run the scheduled jobs on their cron schedules (one leader at a time)"
    )
    parser.add_argument(
        "--once",
        choices=sorted(DEFAULT_JOBS),
        help="run this job once now (skipped, exit 0, if another process is running it) and exit",
    )
    parser.set_defaults(func=_cli)
