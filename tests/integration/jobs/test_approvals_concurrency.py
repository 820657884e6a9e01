"""Racing decisions on one promotion request, on SQLite (busy timeout) and PostgreSQL (real concurrency).

Every decision runs in its own thread with its own session (so its own connection);
a barrier releases them together. Whatever the interleaving, the request reaches
its quorum once: one deployment row, one ``promotion.approved`` and one
``deployment.queued`` audit entry, one ``on_quorum`` call, and an intact chain.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs import audit
from jobs.approvals import (
    ApprovePromotion,
    PendingRequestExists,
    RejectPromotion,
    RequestClosed,
    RequestPromotion,
    SetApprovalPolicy,
    VersionInfo,
)
from jobs.db import session_scope
from jobs.db.governance import Deployment, PromotionApproval, PromotionRequest
from jobs.db.models import AuditEntry
from jobs.permissions import Actor, Role
from jobs.projects import create_project
from jobs.users import actor_for, create_user, grant_role

pytestmark = pytest.mark.integration

PROJECT = "credit-risk"
MODEL = "credit-default"
SPONSORS = 20
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VERSION = VersionInfo(version="7", run_id="9c" * 16, artifact_digest="5e" * 32, created_by="trainer")


class Team:
    """An admin, an ML engineer and ``SPONSORS`` model sponsors of one project."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        with session_scope(sessions, write=True) as session:
            admin_user = create_user(session, None, "root-admin", "root-admin-password", is_admin=True)
            admin = actor_for(session, admin_user.id)
            create_project(session, admin, PROJECT, "Credit risk")
            engineer = create_user(session, admin, "maya", "maya-password")
            grant_role(session, admin, engineer, PROJECT, Role.ML_ENGINEER)
            sponsors = []
            for index in range(SPONSORS):
                user = create_user(session, admin, f"sponsor{index:02d}", "sponsor-password")
                grant_role(session, admin, user, PROJECT, Role.MODEL_SPONSOR)
                sponsors.append(user.id)
        with sessions() as session:
            self.admin = actor_for(session, admin_user.id)
            self.engineer = actor_for(session, engineer.id)
            self.sponsors: list[Actor] = [actor_for(session, user_id) for user_id in sponsors]

    def request(self, environment: str = "prod") -> PromotionRequest:
        return RequestPromotion(
            self.engineer, PROJECT, MODEL, "7", environment, "quorum race", version_info=VERSION, now=T0
        ).run(self.sessions)

    def approval(self, sponsor: Actor, request_id: int, hook: Callable[[Deployment], None] | None = None):
        return ApprovePromotion(
            sponsor,
            request_id,
            "approve",
            version=VERSION.version,
            run_id=VERSION.run_id,
            artifact_digest=VERSION.artifact_digest,
            on_quorum=hook,
            now=T0 + timedelta(hours=1),
        )

    def count(self, model: type, *where: Any) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where))

    def actions(self) -> Counter[str]:
        with self.sessions() as session:
            return Counter(session.scalars(select(AuditEntry.action)))

    def chain_ok(self) -> bool:
        with self.sessions() as session:
            return audit.verify(session).ok


def race(tasks: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run every task in its own thread, released together; collect results and errors."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def runner(task: Callable[[], Any]) -> None:
        barrier.wait(timeout=60)
        try:
            outcome = task()
        except BaseException as error:
            with lock:
                errors.append(error)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=runner, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a decision never finished"
    return results, errors


@pytest.fixture
def team(migrated_session_factory: sessionmaker[Session]) -> Team:
    return Team(migrated_session_factory)


@pytest.mark.parametrize(("required", "given_before"), [(2, 1), (5, 0)], ids=["prod-at-quorum-1", "quorum-5"])
def test_racing_approvals_queue_exactly_one_deployment(team: Team, required: int, given_before: int) -> None:
    if required != 2:
        SetApprovalPolicy(team.admin, PROJECT, "prod", required).run(team.sessions)
    request = team.request("prod")
    for sponsor in team.sponsors[:given_before]:
        assert team.approval(sponsor, request.id).run(team.sessions).deployment is None
    racers = team.sponsors[given_before:]
    hook_calls: list[int] = []
    hook_lock = threading.Lock()

    def hook(deployment: Deployment) -> None:
        with hook_lock:
            hook_calls.append(deployment.id)

    results, errors = race(
        [lambda s=s: team.approval(s, request.id, hook).run(team.sessions) for s in racers]
    )

    # Every racer either approved or was told the request was already decided; nothing else.
    assert [type(e) for e in errors] == [RequestClosed] * len(errors), errors
    assert all(e.status == "approved" for e in errors)
    assert len(results) == required - given_before
    winners = [outcome for outcome in results if outcome.deployment is not None]
    assert len(winners) == 1
    assert winners[0].approvals == required
    assert hook_calls == [winners[0].deployment.id]

    assert team.count(Deployment) == 1
    assert team.count(Deployment, Deployment.request_id == request.id) == 1
    assert team.count(PromotionApproval) == required
    assert team.count(PromotionRequest, PromotionRequest.status == "approved") == 1
    actions = team.actions()
    assert (actions["deployment.queued"], actions["promotion.approved"]) == (1, 1)
    assert actions["promotion.approval"] == required
    assert team.chain_ok()
    with team.sessions() as session:
        stored = session.get(PromotionRequest, request.id)
        # One counter step per recorded approval: no decision acted on a stale read.
        assert stored.version_counter == required


def test_a_rejection_racing_the_last_approvals_wins_or_loses_whole(team: Team) -> None:
    request = team.request("prod")
    team.approval(team.sponsors[0], request.id).run(team.sessions)
    rejecter = team.sponsors[1]
    tasks = [lambda: RejectPromotion(rejecter, request.id, "not yet", now=T0).run(team.sessions)]
    tasks += [lambda s=s: team.approval(s, request.id).run(team.sessions) for s in team.sponsors[2:12]]

    results, errors = race(tasks)

    assert all(isinstance(e, RequestClosed) for e in errors), errors
    with team.sessions() as session:
        status = session.get(PromotionRequest, request.id).status
    actions = team.actions()
    if status == "approved":
        assert team.count(Deployment) == 1 and actions["deployment.queued"] == 1
        assert actions["promotion.rejected"] == 0
    else:
        assert status == "rejected"
        assert team.count(Deployment) == 0 and actions["deployment.queued"] == 0
        assert actions["promotion.rejected"] == 1
    assert len(results) + len(errors) == 11
    assert team.chain_ok()


def test_racing_requests_leave_one_pending_request_per_target(team: Team) -> None:
    results, errors = race([lambda: team.request("staging") for _ in range(8)])

    assert len(results) == 1
    assert [type(e) for e in errors] == [PendingRequestExists] * 7, errors
    assert team.count(PromotionRequest, PromotionRequest.status == "pending") == 1
    assert team.actions()["promotion.request"] == 1
    assert team.chain_ok()
