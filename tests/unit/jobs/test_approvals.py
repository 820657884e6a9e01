"""Promotion requests, approvals, policy and evidence (``jobs.approvals``).

The approval rules run on SQLite (unit: no server) and PostgreSQL (integration)
through the shared ``migrated_session_factory`` fixture, with real users made by
``jobs.users`` and projects by ``jobs.projects``. Version facts are passed as
:class:`VersionInfo`, so MLflow is only needed by the one test that resolves them
from a real MLflow store.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from analytics.store import ParquetStore, StoreConfig
from jobs import audit
from jobs.approvals import (
    DEFAULT_EXPIRY,
    INSUFFICIENT_DATA,
    AlreadyApproved,
    ApprovePromotion,
    BindingMismatch,
    MlflowVersions,
    NotASponsor,
    NotIndependent,
    PendingRequestExists,
    RejectPromotion,
    RequestClosed,
    RequestExpired,
    RequestNotFound,
    RequestPromotion,
    SetApprovalPolicy,
    VersionInfo,
    approval_policy,
    expire_pending,
    get_request,
    list_requests,
    promotion_evidence,
)
from jobs.contracts import METRICS, METRICS_SCHEMA, require_valid, validate_metrics_table
from jobs.db import session_scope
from jobs.db.governance import Deployment, PromotionApproval, PromotionRequest
from jobs.db.models import AuditEntry, Project
from jobs.permissions import Actor, Forbidden, Role
from jobs.projects import create_project
from jobs.users import (
    Conflict,
    InvalidInput,
    actor_for,
    create_user,
    grant_role,
    revoke_role,
    set_user_active,
)

PROJECT = "credit-risk"
OTHER_PROJECT = "demand-forecast"
MODEL = "credit-default"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RUN_V3 = "3f2a" * 8
DIGEST_V3 = "ab" * 32
V3 = VersionInfo(version="3", run_id=RUN_V3, artifact_digest=DIGEST_V3, created_by="trainer")
V4 = VersionInfo(version="4", run_id="4e1b" * 8, artifact_digest="cd" * 32, created_by="trainer")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]
)
def database_backend(request: pytest.FixtureRequest) -> str:
    """Overrides the shared fixture: SQLite runs count as unit tests, PostgreSQL ones as integration."""
    return request.param


class World:
    """An admin, two projects and members created on demand through ``jobs.users``."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        with session_scope(sessions, write=True) as session:
            user = create_user(session, None, "root-admin", "root-admin-password", is_admin=True)
            admin = actor_for(session, user.id)
            create_project(session, admin, PROJECT, "Credit risk")
            create_project(session, admin, OTHER_PROJECT, "Demand forecast")
        self.admin = self.actor(user.id)

    def actor(self, user_id: int) -> Actor:
        with self.sessions() as session:
            found = actor_for(session, user_id)
        assert found is not None
        return found

    def member(self, username: str, *roles: Role, project: str = PROJECT) -> Actor:
        with session_scope(self.sessions, write=True) as session:
            user = create_user(session, self.admin, username, f"{username}-password")
            for role in roles:
                grant_role(session, self.admin, user, project, role)
        return self.actor(user.id)

    def request(
        self, requester: Actor, environment: str = "prod", info: VersionInfo = V3, **options
    ) -> PromotionRequest:
        options.setdefault("now", T0)
        return RequestPromotion(
            requester,
            PROJECT,
            MODEL,
            info.version,
            environment,
            "better AUC on staging",
            version_info=info,
            **options,
        ).run(self.sessions)

    def approve(self, sponsor: Actor, request: PromotionRequest, comment: str = "", **options):
        binding = {
            "version": request.version,
            "run_id": request.run_id,
            "artifact_digest": request.artifact_digest,
            "now": T0 + timedelta(hours=1),
        }
        binding.update(options)
        return ApprovePromotion(sponsor, request.id, comment, **binding).run(self.sessions)

    def stored(self, request_id: int) -> PromotionRequest:
        with self.sessions() as session:
            return session.get(PromotionRequest, request_id)

    def count(self, model: type) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model))

    def actions(self) -> list[str]:
        with self.sessions() as session:
            return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))

    def entries(self, action: str) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
                )
            )

    def chain_ok(self) -> bool:
        with self.sessions() as session:
            return audit.verify(session).ok


@pytest.fixture
def world(migrated_session_factory: sessionmaker[Session]) -> World:
    return World(migrated_session_factory)


@pytest.fixture
def engineer(world: World) -> Actor:
    return world.member("maya", Role.ML_ENGINEER)


# --------------------------------------------------------------------------- requests


def test_request_binds_the_exact_version_and_records_requester_and_creator(
    world: World, engineer: Actor
) -> None:
    request = world.request(engineer, "prod")

    stored = world.stored(request.id)
    assert (stored.model, stored.version, stored.run_id, stored.artifact_digest) == (
        MODEL,
        "3",
        RUN_V3,
        DIGEST_V3,
    )
    assert (stored.environment, stored.status, stored.required_approvals, stored.version_counter) == (
        "prod",
        "pending",
        2,
        0,
    )
    assert stored.requested_by_id == engineer.user_id
    assert stored.version_creator == "trainer"
    assert stored.created_at == T0
    assert stored.expires_at == T0 + DEFAULT_EXPIRY == T0 + timedelta(days=14)
    assert stored.project_slug == PROJECT
    (entry,) = world.entries("promotion.request")
    details = json.loads(entry.details)
    assert (entry.actor, entry.target) == ("maya", f"promotion:{request.id}")
    assert details["artifact_digest"] == DIGEST_V3 and details["run_id"] == RUN_V3
    assert details["version_creator"] == "trainer" and details["required_approvals"] == 2
    assert world.count(Deployment) == 0


def test_expiry_is_configurable(world: World, engineer: Actor) -> None:
    request = world.request(engineer, "staging", expires_in=timedelta(hours=6))
    assert world.stored(request.id).expires_at == T0 + timedelta(hours=6)


def test_requesting_needs_the_request_permission_on_that_project(world: World) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    elsewhere = world.member("otto", Role.ML_ENGINEER, project=OTHER_PROJECT)
    for actor in (sponsor, elsewhere):
        with pytest.raises(Forbidden, match="request_promotion"):
            world.request(actor)
    assert world.count(PromotionRequest) == 0


def test_a_second_pending_request_is_refused_unless_it_supersedes(world: World, engineer: Actor) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    first = world.request(engineer, "prod")
    world.approve(sponsor, first)

    with pytest.raises(PendingRequestExists, match="still pending") as refused:
        world.request(engineer, "prod", V4)
    assert refused.value.existing_id == first.id
    # Another environment or another project is another target.
    assert world.request(engineer, "staging", V4).status == "pending"

    second = world.request(engineer, "prod", V4, supersede=True)
    assert world.stored(first.id).status == "superseded"
    assert world.stored(second.id).status == "pending"
    assert [json.loads(e.details)["by_version"] for e in world.entries("promotion.superseded")] == ["4"]
    # The approval given to the superseded request does not carry over.
    with pytest.raises(RequestClosed, match="superseded"):
        world.approve(world.member("sasha", Role.MODEL_SPONSOR), first)


def test_dev_needs_no_approval_and_queues_the_deployment_at_once(world: World, engineer: Actor) -> None:
    queued: list[Deployment] = []
    request = world.request(engineer, "dev", on_quorum=queued.append)

    assert request.status == "approved"
    assert [d.request_id for d in queued] == [request.id]
    deployment = queued[0]
    assert (deployment.environment, deployment.version, deployment.strategy, deployment.status) == (
        "dev",
        "3",
        "direct",
        "queued",
    )
    assert deployment.artifact_digest == DIGEST_V3 and deployment.project.slug == PROJECT
    assert world.actions()[-3:] == ["promotion.request", "promotion.approved", "deployment.queued"]
    assert world.count(Deployment) == 1


# --------------------------------------------------------------------------- quorum


def test_staging_needs_one_sponsor(world: World, engineer: Actor) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")
    queued: list[Deployment] = []

    outcome = world.approve(sponsor, request, "looks good", on_quorum=queued.append)

    assert (outcome.approvals, outcome.required) == (1, 1)
    assert outcome.deployment is not None and queued == [outcome.deployment]
    stored = world.stored(request.id)
    assert (stored.status, stored.decided_by_id) == ("approved", sponsor.user_id)
    assert world.count(Deployment) == 1


def test_prod_needs_two_distinct_sponsors(world: World, engineer: Actor) -> None:
    sam = world.member("sam", Role.MODEL_SPONSOR)
    sasha = world.member("sasha", Role.MODEL_SPONSOR)
    request = world.request(engineer, "prod")
    queued: list[Deployment] = []

    first = world.approve(sam, request, on_quorum=queued.append)
    assert (first.approvals, first.required, first.deployment) == (1, 2, None)
    assert first.request.status == "pending" and first.request.version_counter == 1
    assert queued == []

    with pytest.raises(AlreadyApproved, match="sam already approved"):
        world.approve(sam, request)
    assert world.stored(request.id).status == "pending"

    second = world.approve(sasha, request, on_quorum=queued.append)
    assert (second.approvals, second.deployment is not None) == (2, True)
    assert [d.id for d in queued] == [second.deployment.id]
    assert sorted(a.approver_id for a in second.request.approvals) == sorted([sam.user_id, sasha.user_id])
    assert world.count(PromotionApproval) == 2 and world.count(Deployment) == 1
    assert world.actions().count("promotion.approved") == 1
    assert world.actions().count("deployment.queued") == 1
    (approved,) = world.entries("promotion.approved")
    assert json.loads(approved.details)["approvers"] == ["sam", "sasha"]
    assert world.chain_ok()


def test_the_requester_never_approves_even_as_a_sponsor(world: World) -> None:
    both = world.member("maya", Role.ML_ENGINEER, Role.MODEL_SPONSOR)
    request = world.request(both, "staging")
    with pytest.raises(NotIndependent, match="requested this promotion"):
        world.approve(both, request)
    assert world.count(PromotionApproval) == 0


def test_the_version_creator_never_approves(world: World, engineer: Actor) -> None:
    creator = world.member("trainer", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")
    with pytest.raises(NotIndependent, match="created version 3"):
        world.approve(creator, request)
    assert world.count(PromotionApproval) == 0


def test_non_sponsors_cannot_approve(world: World, engineer: Actor) -> None:
    request = world.request(engineer, "staging")
    monitoring = world.member("monty", Role.MONITORING_TEAM, Role.PRODUCTION_TEAM)
    sponsor_elsewhere = world.member("olga", Role.MODEL_SPONSOR, project=OTHER_PROJECT)
    for actor in (monitoring, sponsor_elsewhere):
        with pytest.raises(Forbidden, match="approve_promotion"):
            world.approve(actor, request)
    assert world.count(PromotionApproval) == 0 and world.stored(request.id).status == "pending"


def test_admin_alone_is_not_a_sponsor(world: World, engineer: Actor) -> None:
    request = world.request(engineer, "staging")
    with pytest.raises(NotASponsor, match="admin role does not make one"):
        world.approve(world.admin, request)
    assert world.count(PromotionApproval) == 0
    # An admin who is also granted the sponsor role on the project may approve.
    with session_scope(world.sessions, write=True) as session:
        grant_role(session, world.admin, "root-admin", PROJECT, Role.MODEL_SPONSOR)
    assert world.approve(world.actor(world.admin.user_id), request).deployment is not None


def test_roles_are_rechecked_in_the_database(world: World, engineer: Actor) -> None:
    revoked = world.member("sam", Role.MODEL_SPONSOR)
    deactivated = world.member("sasha", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")
    with session_scope(world.sessions, write=True) as session:
        revoke_role(session, world.admin, "sam", PROJECT, Role.MODEL_SPONSOR)
        set_user_active(session, world.admin, "sasha", False)

    # Both actors still carry the sponsor role in memory; the database says otherwise.
    with pytest.raises(Forbidden):
        world.approve(revoked, request)
    with pytest.raises(Forbidden, match="not an active user"):
        world.approve(deactivated, request)
    assert world.count(PromotionApproval) == 0


def test_an_approval_must_name_the_requested_version_run_and_digest(world: World, engineer: Actor) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")
    for mismatch in ({"artifact_digest": "ef" * 32}, {"run_id": "other-run"}, {"version": "4"}):
        with pytest.raises(BindingMismatch, match="new version needs a new request"):
            world.approve(sponsor, request, **mismatch)
    assert world.count(PromotionApproval) == 0

    # After retraining, version 4 needs its own request; the approval binds it.
    newer = world.request(engineer, "staging", V4, supersede=True)
    with pytest.raises(RequestClosed):
        world.approve(sponsor, request, version="4", run_id=V4.run_id, artifact_digest=V4.artifact_digest)
    outcome = world.approve(sponsor, newer)
    assert (outcome.approval.version, outcome.approval.artifact_digest) == ("4", V4.artifact_digest)
    assert outcome.deployment.version == "4"


def test_an_expired_request_refuses_approval_and_is_marked_expired(world: World, engineer: Actor) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")

    with pytest.raises(RequestExpired, match="expired"):
        world.approve(sponsor, request, now=T0 + DEFAULT_EXPIRY)

    stored = world.stored(request.id)
    assert (stored.status, stored.decided_at) == ("expired", T0 + DEFAULT_EXPIRY)
    (entry,) = world.entries("promotion.expired")
    assert (entry.actor, json.loads(entry.details)["noticed_by"]) == ("system", "sam")
    assert world.count(PromotionApproval) == 0 and world.count(Deployment) == 0
    with pytest.raises(RequestClosed, match="is expired"):
        world.approve(sponsor, request, now=T0 + timedelta(hours=2))
    # The target is free again.
    assert world.request(engineer, "staging", now=T0 + DEFAULT_EXPIRY).status == "pending"


def test_expire_pending_marks_only_overdue_requests(world: World, engineer: Actor) -> None:
    short = world.request(engineer, "staging", expires_in=timedelta(days=1))
    long = world.request(engineer, "prod")
    with session_scope(world.sessions, write=True) as session:
        assert expire_pending(session, T0 + timedelta(hours=23)) == []
    with session_scope(world.sessions, write=True) as session:
        expired = expire_pending(session, T0 + timedelta(days=2))
    assert [r.id for r in expired] == [short.id]
    assert (world.stored(short.id).status, world.stored(long.id).status) == ("expired", "pending")
    assert [e.target for e in world.entries("promotion.expired")] == [f"promotion:{short.id}"]
    assert world.chain_ok()


def test_a_new_request_expires_an_overdue_pending_one(world: World, engineer: Actor) -> None:
    old = world.request(engineer, "prod", expires_in=timedelta(days=1))
    new = world.request(engineer, "prod", V4, now=T0 + timedelta(days=3))
    assert (world.stored(old.id).status, world.stored(new.id).status) == ("expired", "pending")


def test_rejection_needs_a_sponsor_and_a_comment_and_ends_the_request(world: World, engineer: Actor) -> None:
    sam = world.member("sam", Role.MODEL_SPONSOR)
    sasha = world.member("sasha", Role.MODEL_SPONSOR)
    request = world.request(engineer, "prod")
    world.approve(sam, request)

    with pytest.raises(InvalidInput, match="rejection comment is required"):
        RejectPromotion(sasha, request.id, "   ").run(world.sessions)
    with pytest.raises(Forbidden):
        RejectPromotion(engineer, request.id, "no").run(world.sessions)
    with pytest.raises(NotASponsor):
        RejectPromotion(world.admin, request.id, "no").run(world.sessions)

    rejected = RejectPromotion(sasha, request.id, "drift on income is unexplained", now=T0).run(
        world.sessions
    )
    assert (rejected.status, rejected.decided_by_id, rejected.decision_comment) == (
        "rejected",
        sasha.user_id,
        "drift on income is unexplained",
    )
    (entry,) = world.entries("promotion.rejected")
    assert entry.actor == "sasha"

    late = world.member("sol", Role.MODEL_SPONSOR)
    with pytest.raises(RequestClosed, match="is rejected"):
        world.approve(late, request)
    with pytest.raises(RequestClosed, match="is rejected"):
        RejectPromotion(sam, request.id, "again").run(world.sessions)
    assert world.count(Deployment) == 0 and world.count(PromotionApproval) == 1


def test_decisions_on_approved_or_unknown_requests_are_refused(world: World, engineer: Actor) -> None:
    sam = world.member("sam", Role.MODEL_SPONSOR)
    sasha = world.member("sasha", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")
    world.approve(sam, request)
    with pytest.raises(RequestClosed, match="is approved"):
        world.approve(sasha, request)
    with pytest.raises(RequestClosed, match="is approved"):
        RejectPromotion(sasha, request.id, "too late").run(world.sessions)
    with pytest.raises(RequestNotFound):
        ApprovePromotion(sam, 999_999, version="3", run_id=RUN_V3, artifact_digest=DIGEST_V3).run(
            world.sessions
        )
    assert world.count(Deployment) == 1


def test_an_admin_sets_the_policy_per_project_and_a_stricter_one_applies_to_pending_requests(
    world: World, engineer: Actor
) -> None:
    sponsors = [world.member(name, Role.MODEL_SPONSOR) for name in ("sam", "sasha", "sol")]
    request = world.request(engineer, "prod")

    with pytest.raises(Forbidden, match="manage_projects"):
        SetApprovalPolicy(sponsors[0], PROJECT, "prod", 0).run(world.sessions)
    for bad in (-1, 11, "2", True):
        with pytest.raises(InvalidInput, match="from 0 to 10"):
            SetApprovalPolicy(world.admin, PROJECT, "prod", bad).run(world.sessions)
    SetApprovalPolicy(world.admin, PROJECT, "prod", 3).run(world.sessions)
    SetApprovalPolicy(world.admin, PROJECT, "prod", 3).run(world.sessions)  # unchanged: not audited again

    with world.sessions() as session:
        assert approval_policy(session, PROJECT) == {"dev": 0, "staging": 1, "prod": 3}
        assert approval_policy(session, OTHER_PROJECT)["prod"] == 2
    (entry,) = world.entries("promotion.policy_set")
    assert json.loads(entry.details) == {"environment": "prod", "from": 2, "to": 3}

    assert world.approve(sponsors[0], request).required == 3
    assert world.approve(sponsors[1], request).deployment is None
    assert world.approve(sponsors[2], request).deployment is not None

    # A looser policy does not lower what a pending request recorded.
    later = world.request(engineer, "prod", V4)
    SetApprovalPolicy(world.admin, PROJECT, "prod", 1).run(world.sessions)
    assert world.approve(sponsors[0], later).deployment is None
    # A policy of 0 approves new requests at once, as in dev.
    SetApprovalPolicy(world.admin, PROJECT, "staging", 0).run(world.sessions)
    assert world.request(engineer, "staging", V4).status == "approved"


def test_a_failing_quorum_hook_does_not_undo_the_decision(
    world: World, engineer: Actor, caplog: pytest.LogCaptureFixture
) -> None:
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    request = world.request(engineer, "staging")

    def broken_hook(deployment: Deployment) -> None:
        raise RuntimeError("scheduler unreachable")

    with caplog.at_level(logging.ERROR, logger="jobs.approvals"):
        outcome = world.approve(sponsor, request, on_quorum=broken_hook)
    assert outcome.deployment is not None and world.count(Deployment) == 1
    assert "stays queued" in caplog.text and "scheduler unreachable" in caplog.text


def test_requests_are_listed_for_those_who_may_view_approvals(world: World, engineer: Actor) -> None:
    request = world.request(engineer, "staging")
    sponsor = world.member("sam", Role.MODEL_SPONSOR)
    outsider = world.member("olga", Role.MODEL_SPONSOR, project=OTHER_PROJECT)
    with world.sessions() as session:
        assert [r.id for r in list_requests(session, sponsor)] == [request.id]
        assert [r.id for r in list_requests(session, world.admin, status="pending")] == [request.id]
        assert list_requests(session, sponsor, status="approved") == []
        assert list_requests(session, outsider) == []
        assert list_requests(session, None) == []
        assert get_request(session, sponsor, request.id).version == "3"
        with pytest.raises(Forbidden):
            get_request(session, outsider, request.id)
        with pytest.raises(RequestNotFound):
            get_request(session, sponsor, 424242)
        with pytest.raises(InvalidInput, match="status must be one of"):
            list_requests(session, sponsor, status="done")


def test_archived_or_unknown_projects_take_no_requests(world: World, engineer: Actor) -> None:
    with session_scope(world.sessions, write=True) as session:
        session.scalars(select(Project).where(Project.slug == PROJECT)).one().archived = True
    with pytest.raises(Conflict, match="archived"):
        world.request(engineer, "staging")
    admin = world.admin
    with pytest.raises(Conflict, match="no project"):
        RequestPromotion(admin, "no-such", MODEL, "3", "staging", "x", version_info=V3).run(world.sessions)


# --------------------------------------------------------------------------- validation (no database)


class TestValidation:
    """Malformed input is refused before any database or registry access."""

    pytestmark = pytest.mark.unit
    ENGINEER = Actor(user_id=1, username="maya", roles={PROJECT: frozenset({Role.ML_ENGINEER})})
    SPONSOR = Actor(user_id=2, username="sam", roles={PROJECT: frozenset({Role.MODEL_SPONSOR})})

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"version": "3/../x"}, "version"),
            ({"run_id": "run id with spaces"}, "run id"),
            ({"artifact_digest": "AB" * 32}, "artifact digest"),
            ({"artifact_digest": "ab" * 31}, "artifact digest"),
            ({"created_by": "x"}, "version creator"),
        ],
    )
    def test_version_info_is_checked(self, fields: dict, message: str) -> None:
        values = {"version": "3", "run_id": RUN_V3, "artifact_digest": DIGEST_V3, "created_by": "trainer"}
        with pytest.raises(InvalidInput, match=message):
            VersionInfo(**{**values, **fields})

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"environment": "production"}, "environment must be one of"),
            ({"justification": "  "}, "justification is required"),
            ({"justification": "x" * 5001}, "at most 5000"),
            ({"model": "../etc"}, "model name"),
            ({"expires_in": timedelta(0)}, "expires_in"),
            ({"version_info": V4}, "describes version 4, not 3"),
            ({"version_info": None}, "pass version_info or a versions provider"),
            ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
        ],
    )
    def test_bad_requests_are_refused(self, changes: dict, message: str) -> None:
        fields = {
            "actor": self.ENGINEER,
            "project": PROJECT,
            "model": MODEL,
            "version": "3",
            "environment": "prod",
            "justification": "why",
            "version_info": V3,
        }
        fields.update(changes)
        with pytest.raises(InvalidInput, match=message):
            RequestPromotion(**fields).run(None)  # type: ignore[arg-type]

    def test_authorisation_comes_before_anything_else(self) -> None:
        with pytest.raises(Forbidden):
            RequestPromotion(self.SPONSOR, PROJECT, MODEL, "3", "nowhere", "", version_info=None).run(None)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"request_id": 0}, "request id"),
            ({"request_id": True}, "request id"),
            ({"artifact_digest": "zz"}, "artifact digest"),
            ({"comment": "x" * 5001}, "at most 5000"),
        ],
    )
    def test_bad_approvals_are_refused(self, changes: dict, message: str) -> None:
        fields = {
            "actor": self.SPONSOR,
            "request_id": 1,
            "comment": "",
            "version": "3",
            "run_id": RUN_V3,
            "artifact_digest": DIGEST_V3,
        }
        fields.update(changes)
        with pytest.raises(InvalidInput, match=message):
            ApprovePromotion(**fields).run(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evidence (local Parquet store)


def _metric_rows(version: str, day: int, rows: list[tuple]) -> list[dict]:
    start = datetime(2026, 2, day, tzinfo=UTC)
    return [
        {
            "version": version,
            "window_start": start,
            "window_end": start + timedelta(days=1),
            "column": column,
            "metric": metric,
            "statistic": statistic,
            "p_value": None,
            "threshold": None,
            "drifted": drifted,
            "status": status,
            "n_reference": 1000,
            "n_current": n_current,
            "reason": None,
        }
        for column, metric, statistic, drifted, status, n_current in rows
    ]


def _write_metrics(store: ParquetStore, environment: str, day: int, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    partition = {"project": PROJECT, "model": MODEL, "environment": environment, "date": f"2026-02-{day:02d}"}
    require_valid(validate_metrics_table(table, partition=partition))
    store.write_partition(METRICS, partition, table)


def _transient_request(environment: str = "prod", version: str = "3") -> PromotionRequest:
    return PromotionRequest(
        project=Project(slug=PROJECT, name="Credit risk"),
        model=MODEL,
        version=version,
        environment=environment,
        run_id=RUN_V3,
        artifact_digest=DIGEST_V3,
    )


@pytest.fixture
def metrics_store(tmp_path: Path):
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path / "data")))
    yield store
    store.close()


@pytest.mark.unit
def test_evidence_without_metrics_says_insufficient_data(metrics_store: ParquetStore) -> None:
    evidence = promotion_evidence(metrics_store, _transient_request())
    assert evidence.status == INSUFFICIENT_DATA
    assert (evidence.candidate, evidence.current, evidence.current_version, evidence.comparisons) == (
        None,
        None,
        None,
        (),
    )
    assert "version 3 has no evaluated metrics in prod, staging, dev" in evidence.reason


@pytest.mark.unit
def test_evidence_ignores_rows_without_a_verdict(metrics_store: ParquetStore) -> None:
    _write_metrics(
        metrics_store,
        "staging",
        1,
        _metric_rows("3", 1, [("income", "psi", None, None, "insufficient_data", 12)]),
    )
    evidence = promotion_evidence(metrics_store, _transient_request())
    assert evidence.status == INSUFFICIENT_DATA and evidence.candidate is None


@pytest.mark.unit
def test_evidence_compares_the_candidate_with_the_current_version(metrics_store: ParquetStore) -> None:
    # Version 2 serves prod; version 3 (the candidate) has run in staging only.
    for day, auc, income_psi in ((1, 0.80, 0.05), (2, 0.70, 0.30)):
        _write_metrics(
            metrics_store,
            "prod",
            day,
            _metric_rows(
                "2",
                day,
                [
                    (
                        "income",
                        "psi",
                        income_psi,
                        income_psi > 0.2,
                        "drift" if income_psi > 0.2 else "ok",
                        1000,
                    ),
                    ("age", "psi", 0.01, False, "ok", 1000),
                    ("income", "null_rate", 0.0, None, "ok", 1000),
                    ("score", "roc_auc", auc, None, "ok", 3000 if day == 1 else 1000),
                    ("latency_ms", "p95_ms", 40.0, None, "ok", 1000),
                ],
            ),
        )
    _write_metrics(
        metrics_store,
        "staging",
        2,
        _metric_rows(
            "3",
            2,
            [
                ("income", "psi", 0.02, False, "ok", 200),
                ("age", "psi", 0.01, False, "ok", 200),
                ("debt_to_income", "null_rate", 0.6, None, "warning", 200),
                ("score", "roc_auc", 0.84, None, "ok", 200),
                ("latency_ms", "p95_ms", 55.0, None, "ok", 200),
                ("score", "log_loss", None, None, "error", 200),
            ],
        ),
    )

    evidence = promotion_evidence(metrics_store, _transient_request("prod"))

    assert evidence.status == "ok"
    candidate, current = evidence.candidate, evidence.current
    assert (candidate.version, candidate.environment, candidate.windows) == ("3", "staging", 1)
    assert (candidate.drift_checks, candidate.drifted_checks, candidate.drift_share) == (2, 0, 0.0)
    assert (candidate.quality_checks, candidate.quality_failures) == (1, 1)
    assert candidate.quality_failed_columns == ("debt_to_income",)
    assert candidate.unevaluated == 1
    assert evidence.current_version == "2"
    assert (current.environment, current.windows, current.drift_checks, current.drifted_checks) == (
        "prod",
        2,
        4,
        1,
    )
    assert current.drifted_columns == ("income",)
    # Weighted by window rows: (0.80 * 3000 + 0.70 * 1000) / 4000.
    assert current.performance["roc_auc"] == pytest.approx(0.775)
    assert current.first_window_start == datetime(2026, 2, 1, tzinfo=UTC)
    assert current.last_window_end == datetime(2026, 2, 3, tzinfo=UTC)
    by_metric = {c.metric: c for c in evidence.comparisons}
    assert set(by_metric) == {"roc_auc", "p95_ms"}
    assert by_metric["roc_auc"].improved and by_metric["roc_auc"].delta == pytest.approx(0.065)
    assert not by_metric["p95_ms"].improved and not by_metric["p95_ms"].higher_is_better
    assert "better on 1 of 2" in evidence.reason

    # The caller may name the current version; one without metrics leaves nothing to compare.
    named = promotion_evidence(metrics_store, _transient_request("prod"), current_version="1")
    assert (named.current_version, named.current, named.comparisons) == ("1", None, ())
    assert "current version 1 has no evaluated metrics in prod" in named.reason


@pytest.mark.unit
def test_evidence_prefers_the_candidates_own_metrics_in_the_target_environment(
    metrics_store: ParquetStore,
) -> None:
    _write_metrics(
        metrics_store, "staging", 3, _metric_rows("3", 3, [("score", "roc_auc", 0.9, None, "ok", 10)])
    )
    _write_metrics(metrics_store, "dev", 3, _metric_rows("3", 3, [("score", "roc_auc", 0.5, None, "ok", 10)]))
    evidence = promotion_evidence(metrics_store, _transient_request("staging"))
    assert evidence.candidate.environment == "staging"
    assert evidence.candidate.performance == {"roc_auc": pytest.approx(0.9)}
    assert evidence.current_version is None and "no other version has metrics in staging" in evidence.reason


# --------------------------------------------------------------------------- MLflow as the version provider


@pytest.fixture(scope="module")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real MLflow SQLite store with one version tagged like training tags it and one untagged."""
    from jobs import registry

    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(tracking_uri)
    experiment = client.create_experiment(PROJECT, artifact_location=str(root / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    name = registry.registered_model_name(PROJECT, MODEL)
    client.create_registered_model(name)
    tags = {
        registry.TAG_CREATED_BY: "trainer",
        registry.TAG_PROJECT: PROJECT,
        registry.TAG_RUN_ID: run_id,
        registry.TAG_ARTIFACT_DIGEST: DIGEST_V3,
    }
    tagged = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    untagged = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    return {
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "tagged": str(tagged.version),
        "untagged": str(untagged.version),
    }


@pytest.mark.integration
def test_mlflow_versions_bind_run_digest_and_creator_from_registry_tags(
    world: World, engineer: Actor, mlflow_registry: dict[str, str]
) -> None:
    versions = MlflowVersions(mlflow_registry["tracking_uri"])
    tagged, untagged = mlflow_registry["tagged"], mlflow_registry["untagged"]

    request = RequestPromotion(
        engineer, PROJECT, MODEL, tagged, "staging", "first release", versions=versions, now=T0
    ).run(world.sessions)

    stored = world.stored(request.id)
    assert (stored.version, stored.run_id, stored.artifact_digest, stored.version_creator) == (
        tagged,
        mlflow_registry["run_id"],
        DIGEST_V3,
        "trainer",
    )
    with pytest.raises(InvalidInput, match="only versions registered by the training job"):
        RequestPromotion(engineer, PROJECT, MODEL, untagged, "prod", "why", versions=versions).run(
            world.sessions
        )
    with pytest.raises(InvalidInput, match="does not exist"):
        versions.version_info(PROJECT, MODEL, "99")
    assert world.count(PromotionRequest) == 1
