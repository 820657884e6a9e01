"""The scheduler's leases on SQLite and PostgreSQL: one runner per due job, takeover after expiry."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore, StoreConfig
from app.settings import load_settings
from jobs import audit
from jobs.alerts import RuleSpec, create_rule
from jobs.approvals import RequestPromotion, VersionInfo
from jobs.audit_checkpoint import (
    CHECKPOINT_ACTION,
    CHECKPOINT_REFUSED_ACTION,
    read_checkpoints,
    verify_with_checkpoints,
)
from jobs.cli import main
from jobs.contracts import METRICS_SCHEMA
from jobs.db.alerting import Alert, SchedulerLease
from jobs.db.governance import PromotionRequest
from jobs.db.models import AuditEntry, utcnow
from jobs.permissions import Actor, Role
from jobs.projects import create_project
from jobs.scheduler import (
    ALERTS_JOB,
    AUDIT_CHECKPOINT_JOB,
    DEFAULT_JOBS,
    DEPLOY_JOB,
    EXPIRE_PENDING_JOB,
    LEADER_LEASE,
    MONITOR_JOB,
    JobContext,
    ScheduledJob,
    StudioScheduler,
    acquire_lease,
    jobs_from_settings,
    lease_holder,
    release_lease,
    run_once,
)
from jobs.users import actor_for, create_user, grant_role
from tests.integration.jobs.conftest import drop_audit_triggers

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


class Clock:
    """A settable clock shared by the schedulers of a test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def factory(migrated_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return migrated_session_factory


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ParquetStore]:
    opened = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    yield opened
    opened.close()


def test_lease_is_taken_by_compare_and_set(factory: sessionmaker[Session]) -> None:
    assert acquire_lease(factory, "job:x", "A", TTL, now=T0)
    assert not acquire_lease(factory, "job:x", "B", TTL, now=T0 + timedelta(seconds=10))
    assert acquire_lease(factory, "job:x", "A", TTL, now=T0 + timedelta(seconds=20))  # renewal
    # Renewed at +20 s: still A's at +45 s (it would have expired at +30 s without the renewal).
    assert not acquire_lease(factory, "job:x", "B", TTL, now=T0 + timedelta(seconds=45))
    assert lease_holder(factory, "job:x", now=T0 + timedelta(seconds=45)) == "A"
    assert acquire_lease(factory, "job:x", "B", TTL, now=T0 + timedelta(seconds=50))  # expired: taken over
    assert not acquire_lease(factory, "job:x", "A", TTL, now=T0 + timedelta(seconds=55))
    with factory() as session:
        lease = session.get(SchedulerLease, "job:x")
        assert (lease.owner, lease.acquired_at, lease.expires_at) == (
            "B",
            T0 + timedelta(seconds=50),
            T0 + timedelta(seconds=80),
        )
    assert not release_lease(factory, "job:x", "A", now=T0 + timedelta(seconds=56))
    assert release_lease(factory, "job:x", "B", now=T0 + timedelta(seconds=56))
    assert lease_holder(factory, "job:x", now=T0 + timedelta(seconds=56)) is None
    assert acquire_lease(factory, "job:x", "A", TTL, now=T0 + timedelta(seconds=57))
    assert acquire_lease(factory, "job:y", "B", TTL, now=T0 + timedelta(seconds=57))  # leases are per name


def test_only_one_of_many_concurrent_takers_wins(factory: sessionmaker[Session]) -> None:
    barrier = threading.Barrier(6)
    winners: list[str] = []
    errors: list[BaseException] = []

    def take(owner: str) -> None:
        try:
            barrier.wait(timeout=30)
            if acquire_lease(factory, LEADER_LEASE, owner, TTL, now=T0):
                winners.append(owner)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=take, args=(f"owner-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(winners) == 1
    assert lease_holder(factory, LEADER_LEASE, now=T0) == winners[0]


def _recording_job(runs: list[tuple[str, str]]):
    def job(context: JobContext) -> str:
        runs.append((context.owner, context.job_name))
        return f"ran by {context.owner}"

    return job


def _scheduler(factory, store, owner: str, clock: Clock, job) -> StudioScheduler:
    return StudioScheduler(
        factory,
        store,
        {"tick": ScheduledJob(CronTrigger.from_crontab("* * * * *", timezone=UTC), job)},
        owner=owner,
        lease_ttl=TTL,
        scheduler_class=BackgroundScheduler,
        clock=clock,
    )


def test_two_schedulers_only_the_lease_holder_runs_a_due_job_and_the_other_takes_over(
    factory: sessionmaker[Session], store: ParquetStore
) -> None:
    clock = Clock(T0)
    runs: list[tuple[str, str]] = []
    first = _scheduler(factory, store, "first", clock, _recording_job(runs))
    second = _scheduler(factory, store, "second", clock, _recording_job(runs))

    # The same due run fires in both processes: only the leader runs it.
    ran = first.fire("tick")
    assert ran is not None and (ran.ran, ran.result, ran.error) == (True, "ran by first", None)
    assert second.fire("tick") is None
    clock.advance(timedelta(seconds=20))
    assert first.heartbeat() and not second.heartbeat()
    clock.advance(timedelta(seconds=20))  # 40 s after the start, 20 s after first's last renewal
    assert second.fire("tick") is None
    assert first.fire("tick") is not None
    assert runs == [("first", "tick"), ("first", "tick")]
    assert (first.counters.runs, second.counters.skipped) == ({"tick": 2}, {"tick": 2})

    # The leader dies without a word (no release): the lease runs out, then the other takes over.
    clock.advance(TTL - timedelta(seconds=1))
    assert second.fire("tick") is None
    clock.advance(timedelta(seconds=2))
    took_over = second.fire("tick")
    assert took_over is not None and took_over.ran
    assert runs[-1] == ("second", "tick")
    assert second.is_leader
    # Back from the dead, the old leader no longer leads.
    assert first.fire("tick") is None
    assert not first.is_leader
    # A clean stop hands the lease over at once.
    second.shutdown()
    assert first.fire("tick") is not None
    assert [owner for owner, _ in runs] == ["first", "first", "second", "first"]


def test_real_apscheduler_instances_share_one_leader(
    factory: sessionmaker[Session], store: ParquetStore
) -> None:
    runs: list[tuple[str, str, float]] = []

    def job(context: JobContext) -> None:
        runs.append((context.owner, context.job_name, time.monotonic()))

    def every_second(owner: str) -> StudioScheduler:
        return StudioScheduler(
            factory,
            store,
            {"tick": ScheduledJob(CronTrigger(second="*", timezone=UTC), job)},
            owner=owner,
            lease_ttl=timedelta(seconds=2),
            scheduler_class=BackgroundScheduler,
        )

    first, second = every_second("first"), every_second("second")
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not first.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.is_leader
        second.start()
        time.sleep(2.3)
        assert {owner for owner, _, _ in runs} == {"first"}
        assert len(runs) >= 2
        assert second.counters.skipped.get("tick", 0) >= 2 and not second.counters.runs

        first.shutdown(wait=True, release=False)  # as if the process died: the lease is left to expire
        crashed_at = time.monotonic()
        deadline = crashed_at + 10
        while not any(owner == "second" for owner, _, _ in runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        takeover = [at for owner, _, at in runs if owner == "second"]
        assert takeover, "the second scheduler never took over"
        # Not before the 2 s lease ran out (minus the cron's one-second granularity), not much after.
        assert 0.9 <= takeover[0] - crashed_at <= 5.0
    finally:
        first.shutdown(wait=False)
        second.shutdown(wait=False)
    assert lease_holder(factory, LEADER_LEASE) is None  # both released on shutdown


def test_a_heartbeat_in_flight_at_shutdown_does_not_take_the_lease_back(
    factory: sessionmaker[Session], store: ParquetStore
) -> None:
    # The heartbeat thread is held inside heartbeat() (in its clock call, just before it takes the
    # lease) while shutdown() runs in another thread: the lease must end up released, not retaken.
    in_heartbeat, go_on = threading.Event(), threading.Event()

    def clock() -> datetime:
        if threading.current_thread().name == "heartbeat":
            in_heartbeat.set()
            go_on.wait(10)
        return utcnow()

    scheduler = StudioScheduler(
        factory,
        store,
        {},
        owner="stopping",
        lease_ttl=TTL,
        scheduler_class=BackgroundScheduler,
        clock=clock,
    )
    beat = threading.Thread(target=scheduler.heartbeat, name="heartbeat")
    stop = threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}, name="shutdown")
    beat.start()
    assert in_heartbeat.wait(10)
    stop.start()
    stop.join(0.5)  # it waits for the heartbeat in flight (an unguarded release returns at once)
    go_on.set()
    beat.join(10)
    stop.join(10)
    assert not beat.is_alive() and not stop.is_alive()
    assert lease_holder(factory, LEADER_LEASE) is None
    assert not scheduler.is_leader
    assert scheduler.heartbeat() is False  # stopped: it takes nothing any more
    assert lease_holder(factory, LEADER_LEASE) is None


def test_run_once_skips_a_job_another_process_is_running(
    factory: sessionmaker[Session], store: ParquetStore
) -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def slow(context: JobContext) -> str:
        runs.append(context.owner)
        started.set()
        release.wait(timeout=30)
        return "done"

    results = {}
    worker = threading.Thread(
        target=lambda: results.setdefault(
            "A", run_once("slow", session_factory=factory, store=store, jobs={"slow": slow}, owner="A")
        )
    )
    worker.start()
    assert started.wait(timeout=30)
    skipped = run_once("slow", session_factory=factory, store=store, jobs={"slow": slow}, owner="B")
    assert (skipped.ran, skipped.holder, skipped.ok) == (False, "A", True)
    release.set()
    worker.join(timeout=30)
    assert (results["A"].ran, results["A"].result) == (True, "done")
    # The run lease was released at the end: the next copy runs.
    again = run_once("slow", session_factory=factory, store=store, jobs={"slow": slow}, owner="B")
    assert again.ran and runs == ["A", "B"]


def test_run_once_reports_a_failing_job_and_frees_its_lease(
    factory: sessionmaker[Session], store: ParquetStore
) -> None:
    def broken(context: JobContext) -> None:
        raise RuntimeError("the store is on fire")

    result = run_once("broken", session_factory=factory, store=store, jobs={"broken": broken}, owner="A")
    assert (result.ran, result.ok, result.error) == (True, False, "RuntimeError: the store is on fire")
    assert lease_holder(factory, "job:broken") is None
    with pytest.raises(KeyError, match="unknown job 'nope'"):
        run_once("nope", session_factory=factory, store=store, jobs={"broken": broken})


def test_a_long_job_keeps_its_run_lease_renewed(factory: sessionmaker[Session], store: ParquetStore) -> None:
    seen: list[str | None] = []

    def long_job(context: JobContext) -> None:
        time.sleep(0.9)  # three times the lease's lifetime
        seen.append(lease_holder(factory, "job:long"))

    result = run_once(
        "long",
        session_factory=factory,
        store=store,
        jobs={"long": long_job},
        owner="A",
        lease_ttl=timedelta(seconds=0.3),
    )
    assert result.ran and result.ok
    assert seen == ["A"]


def _metrics_that_breach(store: ParquetStore) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    rows = [
        {
            "version": "1",
            "window_start": start + timedelta(hours=hour),
            "window_end": start + timedelta(hours=hour + 1),
            "column": "income",
            "metric": "psi",
            "statistic": 0.5,
            "p_value": None,
            "threshold": 0.2,
            "drifted": True,
            "status": "drift",
            "n_reference": 1000,
            "n_current": 400,
            "reason": None,
        }
        for hour in range(2)
    ]
    for row in rows:
        partition = {
            "project": "credit-risk",
            "model": "credit-default",
            "environment": "prod",
            "date": row["window_start"].date().isoformat(),
        }
        store.append("metrics", partition, pa.Table.from_pylist([row], schema=METRICS_SCHEMA))


def test_run_once_runs_the_real_alerts_job(
    factory: sessionmaker[Session], session: Session, admin: Actor, store: ParquetStore
) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    create_rule(
        session,
        admin,
        "credit-risk",
        RuleSpec(
            name="drift",
            model="credit-default",
            metric="psi",
            operator=">",
            threshold=0.2,
            consecutive_windows=2,
        ),
    )
    session.commit()
    _metrics_that_breach(store)

    result = run_once(ALERTS_JOB, session_factory=factory, store=store)

    assert result.ran and result.ok, result.error
    with factory() as reader:
        [alert] = reader.scalars(select(Alert)).all()
    assert result.result.opened == (alert.id,)
    assert (alert.column_name, alert.breaching_windows) == ("income", 2)


def test_scheduler_command_runs_a_job_once(
    migrated_database_url: str,
    session: Session,
    admin: Actor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    create_rule(
        session,
        admin,
        "credit-risk",
        RuleSpec(name="drift", model="credit-default", metric="psi", operator=">", threshold=0.2),
    )
    session.commit()
    data = tmp_path / "data"
    store = ParquetStore(StoreConfig(data_uri=str(data)))
    try:
        _metrics_that_breach(store)
    finally:
        store.close()
    environ = {
        "MMS_DATABASE_URL": migrated_database_url,
        "MMS_VAR_DIR": str(tmp_path / "var"),
        "MMS_DATA_URI": str(data),
    }

    assert main(["scheduler", "--once", "alerts"], environ) == 0
    assert capsys.readouterr().out.startswith("alerts: done in")
    assert main(["alerts", "list", "--actor", "root-admin"], environ) == 0
    listing = capsys.readouterr().out
    assert "open" in listing and "credit-risk/credit-default [prod/1/income] psi > 0.2" in listing


def test_cron_expressions_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MMS_VAR_DIR": str(tmp_path),
            "MMS_SCHEDULER_MONITOR_CRON": "15 * * * *",
            "MMS_SCHEDULER_ALERTS_CRON": "*/5 * * * *",
            "MMS_SCHEDULER_EXPIRE_PENDING_CRON": "0 3 * * *",
            "MMS_SCHEDULER_AUDIT_CHECKPOINT_CRON": "*/15 * * * *",
        }
    )
    jobs = jobs_from_settings(settings)
    assert set(jobs) == {MONITOR_JOB, ALERTS_JOB, EXPIRE_PENDING_JOB, AUDIT_CHECKPOINT_JOB, DEPLOY_JOB}
    after = datetime(2026, 3, 1, 10, 16, 30, tzinfo=UTC)
    expected = {
        MONITOR_JOB: datetime(2026, 3, 1, 11, 15, tzinfo=UTC),
        ALERTS_JOB: datetime(2026, 3, 1, 10, 20, tzinfo=UTC),
        EXPIRE_PENDING_JOB: datetime(2026, 3, 2, 3, 0, tzinfo=UTC),
        AUDIT_CHECKPOINT_JOB: datetime(2026, 3, 1, 10, 30, tzinfo=UTC),
        DEPLOY_JOB: datetime(2026, 3, 1, 10, 17, tzinfo=UTC),
    }
    assert {name: job.trigger.get_next_fire_time(None, after) for name, job in jobs.items()} == expected
    assert {name: job.run for name, job in jobs.items()} == dict(DEFAULT_JOBS)


def test_housekeeping_crons_have_hourly_defaults(tmp_path: Path) -> None:
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path)})
    after = datetime(2026, 3, 1, 10, 16, 30, tzinfo=UTC)
    jobs = jobs_from_settings(settings)
    assert jobs[EXPIRE_PENDING_JOB].trigger.get_next_fire_time(None, after) == datetime(
        2026, 3, 1, 11, 7, tzinfo=UTC
    )
    assert jobs[AUDIT_CHECKPOINT_JOB].trigger.get_next_fire_time(None, after) == datetime(
        2026, 3, 1, 10, 30, tzinfo=UTC
    )


def test_run_once_runs_the_real_monitor_job_then_evaluates_the_alerts(
    factory: sessionmaker[Session], session: Session, admin: Actor, store: ParquetStore
) -> None:
    from jobs.demo_data import generate_demo_data

    create_project(session, admin, "credit-risk", "Credit risk")
    create_rule(
        session,
        admin,
        "credit-risk",
        RuleSpec(name="fresh", model="credit-default", kind="freshness", max_age_hours=24),
    )
    session.commit()
    # Three days of traffic that ended two days ago: the monitor writes metrics, the rule finds them stale.
    generate_demo_data(store, datetime.now(UTC).date() - timedelta(days=5), 3, 7, volume=0.02)

    result = run_once(MONITOR_JOB, session_factory=factory, store=store)

    assert result.ran and result.ok, result.error
    monitor, alerts = result.result["monitor"], result.result["alerts"]
    assert monitor.ok and monitor.computed_dates > 0
    assert store.list_files("metrics")
    with factory() as reader:
        stale = reader.scalars(select(Alert)).all()
    assert alerts.opened == tuple(a.id for a in stale)
    assert sorted(a.environment for a in stale) == ["prod", "staging"]
    assert {a.metric for a in stale} == {"freshness"}


# --------------------------------------------------------------------------- housekeeping jobs


def _entries(factory: sessionmaker[Session], *actions: str) -> list[AuditEntry]:
    with factory() as reader:
        query = select(AuditEntry).where(AuditEntry.action.in_(actions)).order_by(AuditEntry.seq)
        return list(reader.scalars(query))


def test_run_once_expires_overdue_promotion_requests_and_audits_each_run(
    factory: sessionmaker[Session], session: Session, admin: Actor, store: ParquetStore
) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    engineer = create_user(session, admin, "maya", "maya-password-123")
    grant_role(session, admin, engineer, "credit-risk", Role.ML_ENGINEER)
    session.commit()
    maya = actor_for(session, engineer.id)
    info = VersionInfo(version="3", run_id="3f2a" * 8, artifact_digest="ab" * 32, created_by="trainer")

    def request(model: str, at: datetime) -> PromotionRequest:
        return RequestPromotion(
            maya, "credit-risk", model, "3", "prod", "better AUC", version_info=info, now=at
        ).run(factory)

    overdue = request("credit-default", T0)
    recent = request("churn", T0 + timedelta(days=10))
    run_at = Clock(T0 + timedelta(days=14, minutes=1))

    first = run_once(EXPIRE_PENDING_JOB, session_factory=factory, store=store, clock=run_at)
    again = run_once(EXPIRE_PENDING_JOB, session_factory=factory, store=store, clock=run_at)

    assert first.ran and first.ok, first.error
    assert (first.result, again.result) == ([overdue.id], [])
    with factory() as reader:
        assert reader.get(PromotionRequest, overdue.id).status == "expired"
        assert reader.get(PromotionRequest, recent.id).status == "pending"
    [expired] = _entries(factory, "promotion.expired")
    assert (expired.actor, expired.target) == ("system", f"promotion:{overdue.id}")
    runs = _entries(factory, "promotion.expiry_run")
    assert [(e.actor, json.loads(e.details)["expired"]) for e in runs] == [
        ("system", [overdue.id]),
        ("system", []),
    ]


def test_run_once_signs_the_audit_head_and_audits_each_checkpoint(
    factory: sessionmaker[Session],
    session: Session,
    admin: Actor,
    store: ParquetStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MMS_AUDIT_HMAC_KEY", raising=False)
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path / "var")})
    create_project(session, admin, "credit-risk", "Credit risk")
    session.commit()
    head = audit.head(session).seq

    first = run_once(AUDIT_CHECKPOINT_JOB, session_factory=factory, store=store, settings=settings)
    second = run_once(AUDIT_CHECKPOINT_JOB, session_factory=factory, store=store, settings=settings)

    assert first.ok and second.ok, (first.error, second.error)
    # Each checkpoint signs the head before its own entry; the next one covers that entry.
    assert (first.result.seq, second.result.seq) == (head, head + 1)
    runs = _entries(factory, CHECKPOINT_ACTION)
    assert [(e.seq, e.actor, json.loads(e.details)["seq"]) for e in runs] == [
        (head + 1, "system", head),
        (head + 2, "system", head + 1),
    ]
    assert json.loads(runs[0].details)["uri"] == first.result.uri
    key = (tmp_path / "var" / "audit_hmac.key").read_bytes().strip()
    assert [c.seq for c in read_checkpoints(store)] == [head, head + 1]
    with factory() as reader:
        verdict = verify_with_checkpoints(reader, store, key)
    assert verdict.ok, verdict.problems


def test_the_checkpoint_job_refuses_a_broken_chain_and_says_so_in_the_log(
    factory: sessionmaker[Session],
    session: Session,
    admin: Actor,
    store: ParquetStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MMS_AUDIT_HMAC_KEY", "k" * 40)
    create_project(session, admin, "credit-risk", "Credit risk")
    session.commit()
    drop_audit_triggers(session)
    session.execute(text("UPDATE audit_log SET details = '{}' WHERE seq = 1"))
    session.commit()

    result = run_once(AUDIT_CHECKPOINT_JOB, session_factory=factory, store=store)

    assert result.ran and result.error is not None and result.error.startswith("ChainBroken")
    assert read_checkpoints(store) == []
    [refused] = _entries(factory, CHECKPOINT_REFUSED_ACTION)
    assert refused.actor == "system" and "broken at seq 1" in json.loads(refused.details)["reason"]


def test_scheduler_command_runs_the_housekeeping_jobs_once(
    migrated_database_url: str,
    factory: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {
        "MMS_DATABASE_URL": migrated_database_url,
        "MMS_VAR_DIR": str(tmp_path / "var"),
        "MMS_DATA_URI": str(tmp_path / "data"),
        "MMS_AUDIT_HMAC_KEY": "k" * 40,
    }
    assert main(["scheduler", "--once", "expire_pending"], environ) == 0
    assert main(["scheduler", "--once", "audit_checkpoint"], environ) == 0
    out = capsys.readouterr().out
    assert "expire_pending: done in" in out and "audit_checkpoint: done in" in out
    entries = _entries(factory, "promotion.expiry_run", CHECKPOINT_ACTION)
    assert [(e.actor, e.action) for e in entries] == [
        ("system", "promotion.expiry_run"),
        ("system", CHECKPOINT_ACTION),
    ]


def test_run_once_deploys_the_queued_deployments(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """``scheduler --once deploy`` is one ``deploy run --once`` pass: a queued direct deployment goes live."""
    from jobs.contracts import TRAINING_DATA
    from jobs.demo_data import CREDIT_DEFAULT, training_table
    from jobs.deploy import SUCCEEDED
    from tests.integration.jobs.deploy_support import MODEL, PROJECT, Team, routing_state, train_versions

    store = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    store.write_partition(
        TRAINING_DATA, {"project": PROJECT, "model": MODEL}, training_table(CREDIT_DEFAULT, seed=5, rows=300)
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path / "var"), "MMS_MLFLOW_TRACKING_URI": tracking})
    versions, engine = train_versions(tmp_path, store, tracking, 1)
    try:
        team = Team.create(factory)
        deployment_id = team.approve(versions[0], tracking)

        result = run_once(DEPLOY_JOB, session_factory=factory, store=store, settings=settings)
        idle = run_once(DEPLOY_JOB, session_factory=factory, store=store, settings=settings)

        assert result.ran and result.ok, result.error
        assert [(o.deployment_id, o.status) for o in result.result] == [(deployment_id, SUCCEEDED)]
        assert idle.ok and idle.result == []
        assert routing_state(tracking)[0]["prod"] == versions[0]
        assert [e.actor for e in _entries(factory, "deployment.succeeded")] == ["system"]
    finally:
        store.close()
        engine.dispose()


def test_the_deploy_job_needs_the_settings(factory: sessionmaker[Session], store: ParquetStore) -> None:
    result = run_once(DEPLOY_JOB, session_factory=factory, store=store)
    assert (
        result.ran
        and result.error == "RuntimeError: the deploy job needs the studio settings (the MLflow tracking URI)"
    )
