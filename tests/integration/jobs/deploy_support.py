"""Shared pieces of the deployment-job integration tests: a team, trained versions, generated traffic.

``SimulatedTraffic`` stands in for gateway workers: it routes request ids exactly as the
gateway does (:class:`jobs.gateway.routing.MlflowAliasRoutes` read every 0.2 s, sticky
buckets) and writes every prediction through the gateway's own log path
(:class:`jobs.gateway.logbuffer.LogBuffer`), with a latency chosen per version — which is
how a deliberately slow candidate is made without a slow model — and a share of failed
requests per version, written to ``request_errors`` as the gateway writes its 500s.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import registry
from jobs.approvals import ApprovePromotion, MlflowVersions, RequestPromotion
from jobs.contracts import INFERENCE_LOGS, REQUEST_ERRORS
from jobs.db import session_scope
from jobs.db.governance import Deployment
from jobs.db.models import AuditEntry
from jobs.gateway.logbuffer import LogBuffer
from jobs.gateway.routing import (
    MlflowAliasRoutes,
    NoRoute,
    RoutingError,
    canary_alias,
    canary_weight_tag,
    choose_route,
    request_bucket,
)
from jobs.permissions import Actor, Role
from jobs.projects import create_project
from jobs.users import actor_for, create_user, grant_role

PROJECT = "credit-risk"
MODEL = "credit-default"
NAME = f"{PROJECT}.{MODEL}"
ENV = "prod"
TRAINER = Actor(user_id=1, username="maya", roles={PROJECT: frozenset({Role.ML_ENGINEER})})


@dataclass
class Team:
    """Users of one project: an ML engineer (requests), two sponsors (approve), an operator (deploys)."""

    sessions: sessionmaker[Session]
    engineer: Actor
    sponsors: list[Actor]
    operator: Actor

    @classmethod
    def create(cls, sessions: sessionmaker[Session]) -> Team:
        with session_scope(sessions, write=True) as session:
            admin_user = create_user(session, None, "root-admin", "root-admin-password", is_admin=True)
            admin = actor_for(session, admin_user.id)
            create_project(session, admin, PROJECT, "Credit risk")
            ids = {}
            for name, role in (
                ("maya", Role.ML_ENGINEER),
                ("sam", Role.MODEL_SPONSOR),
                ("sue", Role.MODEL_SPONSOR),
                ("otto", Role.PRODUCTION_TEAM),
            ):
                user = create_user(session, admin, name, f"{name}-password-123")
                grant_role(session, admin, user, PROJECT, role)
                ids[name] = user.id
        with sessions() as session:
            actors = {name: actor_for(session, user_id) for name, user_id in ids.items()}
        return cls(sessions, actors["maya"], [actors["sam"], actors["sue"]], actors["otto"])

    def approve(self, version: str, tracking_uri: str) -> int:
        """Request and approve the promotion of ``version`` to prod; the id of the queued deployment."""
        request = RequestPromotion(
            self.engineer,
            PROJECT,
            MODEL,
            version,
            ENV,
            f"roll out version {version}",
            versions=MlflowVersions(tracking_uri),
        ).run(self.sessions)
        outcome = None
        for sponsor in self.sponsors:
            outcome = ApprovePromotion(
                sponsor,
                request.id,
                "looks good",
                version=request.version,
                run_id=request.run_id,
                artifact_digest=request.artifact_digest,
            ).run(self.sessions)
        assert outcome is not None and outcome.deployment is not None
        return outcome.deployment.id


def train_versions(root: Path, store: Any, tracking_uri: str, count: int) -> tuple[list[str], Any]:
    """Train ``count`` identical linear versions (identical predictions: no drift between them).

    Returns:
        The version numbers and the engine of the studio database training audits to (dispose it).
    """
    import inspect

    from jobs.db import make_engine, make_session_factory
    from jobs.db.migrate import upgrade
    from jobs.training import train_model

    studio_url = f"sqlite:///{root / 'training-studio.db'}"
    upgrade(studio_url)
    engine = make_engine(studio_url)
    extra = {}
    if "session_factory" in inspect.signature(train_model).parameters:
        extra["session_factory"] = make_session_factory(engine)
    versions = [
        train_model(
            TRAINER,
            project=PROJECT,
            model=MODEL,
            store=store,
            tracking_uri=tracking_uri,
            config={"estimator": "linear", "max_iter": 100},
            **extra,
        ).version
        for _ in range(count)
    ]
    return versions, engine


def deployment(sessions: sessionmaker[Session], deployment_id: int) -> Deployment:
    with sessions() as session:
        return session.get(Deployment, deployment_id)


def audit_actions(sessions: sessionmaker[Session], deployment_id: int) -> list[tuple[str, str]]:
    with sessions() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target == f"deployment:{deployment_id}")
            .order_by(AuditEntry.seq)
        )
        return [(entry.action, entry.actor) for entry in entries]


def routing_state(tracking_uri: str) -> tuple[dict[str, str], str | None]:
    """Aliases of the model and its prod canary-weight tag."""
    registered = registry.client(tracking_uri).get_registered_model(NAME)
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    return aliases, (registered.tags or {}).get(canary_weight_tag(ENV))


def reset_routing(tracking_uri: str, stable: str) -> None:
    """Alias prod on ``stable``, no canary."""
    registry.set_alias(NAME, ENV, stable, tracking_uri=tracking_uri)
    registry.client(tracking_uri).set_registered_model_tag(NAME, canary_weight_tag(ENV), "0")
    registry.delete_alias(NAME, canary_alias(ENV), tracking_uri=tracking_uri)


class SimulatedTraffic:
    """Requests routed like the gateway routes them, logged through the gateway's log buffer.

    Args:
        store: The Parquet store of ``inference_logs``.
        spill_dir: The log buffer's spill folder.
        tracking_uri: MLflow store holding the routing aliases.
        latency_ms: Latency to log per version (default 2 ms).
        rate: Requests per second.
        error_share: Share of a version's requests that fail server-side (default none).
    """

    def __init__(
        self,
        store: Any,
        spill_dir: Path,
        tracking_uri: str,
        latency_ms: dict[str, float] | None = None,
        rate: float = 400.0,
        error_share: dict[str, float] | None = None,
    ) -> None:
        self.routes = MlflowAliasRoutes(tracking_uri)
        self.error_share = error_share or {}
        self.failed: Counter[str] = Counter()
        self._random = random.Random(7)
        self.buffer = LogBuffer(store, spill_dir, flush_interval_s=0.2, retry_interval_s=0.5)
        self.latency_ms = latency_ms or {}
        self.rate = rate
        self.sent: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SimulatedTraffic:
        self.buffer.start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.buffer.close(timeout_s=10)

    def _run(self) -> None:
        routes = []
        refreshed = 0.0
        batch = max(1, int(self.rate / 20))
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.2:
                with contextlib.suppress(NoRoute, RoutingError):
                    routes = self.routes.current_routes(PROJECT, MODEL, ENV)
                refreshed = time.monotonic()
            if routes:
                now = datetime.now(UTC)
                rows, errors = [], []
                for _ in range(batch):
                    request_id = uuid.uuid4().hex
                    version = choose_route(routes, request_bucket(request_id)).version
                    self.sent[version] += 1
                    if self._random.random() < self.error_share.get(version, 0.0):
                        self.failed[version] += 1
                        errors.append(
                            {
                                "version": version,
                                "request_id": request_id,
                                "timestamp": now,
                                "status_code": 500,
                                "error_kind": "model_error",
                                "latency_ms": 1.0,
                                "message": "ValueError: deliberate failure",
                            }
                        )
                        continue
                    rows.append(
                        {
                            "version": version,
                            "request_id": request_id,
                            "timestamp": now,
                            "prediction": 1.0,
                            "score": 0.9,
                            "latency_ms": self.latency_ms.get(version, 2.0),
                        }
                    )
                partition = {
                    "project": PROJECT,
                    "model": MODEL,
                    "environment": ENV,
                    "date": now.date().isoformat(),
                }
                self.buffer.add_rows(INFERENCE_LOGS, partition, (), rows)
                self.buffer.add_rows(REQUEST_ERRORS, partition, (), errors)
            self._stop.wait(0.05)
