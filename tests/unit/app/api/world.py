"""A real studio with everything the API serves: tokens per demo role, MLflow versions, requests,
deployments, alerts, metrics and audit entries. Shared by the unit tests and the schemathesis run."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from analytics.store import ParquetStore
from app.auth import services
from jobs import github, registry, tokens
from jobs.alerts import RuleSpec, create_rule, evaluate_alerts
from jobs.approvals import ApprovePromotion, RequestPromotion, VersionInfo
from jobs.contracts import METRICS, METRICS_SCHEMA
from jobs.db.governance import PromotionRequest
from jobs.github import TAG_GIT_SHA
from jobs.permissions import Actor
from tests.unit.app.studio import Studio, build_studio

PROJECT = "credit-risk"
OTHER_PROJECT = "demand-forecast"
MODEL = "scorecard"
# The demo accounts, one per role (sponsor2 is the second sponsor prod approvals need).
USERS = ("admin", "mlengineer", "datateam", "production", "monitoring", "sponsor1")
TRAINER = "trainer"
# The commit of tests/fixtures/github_payloads/workflow_run.completed.json: version 2 was built from it.
GIT_SHA_V2 = "9fceb02d0ae598e95dc970b74767f19372d61af8"
PAYLOADS = Path(__file__).resolve().parents[3] / "fixtures" / "github_payloads"
DRIFT_COLUMNS = ("income", "age", "debt_ratio", "tenure", "region", "channel", "limit", "utilisation")
_counter = itertools.count(1)


@dataclass(frozen=True)
class Registered:
    """A model version registered in the world's MLflow store."""

    version: str
    run_id: str
    artifact_digest: str


@dataclass
class ApiWorld:
    """The studio, a token per demo user, and ids of what was seeded."""

    studio: Studio
    tokens: dict[str, str]
    registered: dict[str, Registered]
    staging_request_id: int = 0
    staging_deployment_id: int = 0
    alert_ids: list[int] = field(default_factory=list)
    metrics_since: datetime | None = None

    # --------------------------------------------------------------- calls

    def client(self, address: str = "127.0.0.1") -> FlaskClient:
        """A fresh test client from ``address``."""
        return self.studio.client(address)

    def call(
        self,
        user: str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        address: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Call the API as ``user`` (its token) or with an explicit ``token``."""
        sent = dict(headers or {})
        secret = token if token is not None else self.tokens.get(user or "")
        if secret:
            sent["Authorization"] = f"Bearer {secret}"
        kwargs: dict[str, Any] = {"headers": sent}
        if body is not None:
            kwargs["json"] = body
        return self.client(address).open(path, method=method, **kwargs)

    def actor(self, username: str) -> Actor:
        """The demo user's current actor."""
        return self.studio.actor(username)

    def configure_github(self, repository: str, secret: str, username: str = "production") -> None:
        """Accept ``repository``'s webhooks for :data:`PROJECT` with ``secret``, as ``username`` (the job)."""
        actor, secret_key = self.actor(username), self.settings.secret_key
        with self.studio.db(write=True) as session:
            github.configure_github(session, actor, PROJECT, repository, secret, secret_key=secret_key)

    @property
    def sessions(self) -> Any:
        """The studio's session factory."""
        return services(self.studio.app.server).session_factory

    @property
    def settings(self) -> Any:
        """The studio's settings."""
        return self.studio.settings

    # --------------------------------------------------------------- seeding helpers

    def version_info(self, version: str = "1") -> VersionInfo:
        """What a request binds for a registered version (or a made-up one for other models)."""
        found = self.registered.get(version)
        if found is None:
            return VersionInfo(
                version=version, run_id=f"run{version}", artifact_digest="ab" * 32, created_by=TRAINER
            )
        return VersionInfo(version, found.run_id, found.artifact_digest, TRAINER)

    def pending_request(self, environment: str = "prod", model: str | None = None) -> PromotionRequest:
        """A fresh pending request by the ML engineer (its own model, so it never collides)."""
        model = model or f"m{next(_counter)}"
        return RequestPromotion(
            self.actor("mlengineer"),
            PROJECT,
            model,
            "1",
            environment,
            "test request",
            version_info=self.version_info("1"),
        ).run(self.sessions)

    def dev_deployments(self, count: int = 2) -> list[int]:
        """Deploy versions 1..count of a fresh model to dev (no approval needed); their deployment ids."""
        model = f"rb{next(_counter)}"
        ids = []
        for number in range(1, count + 1):
            request = RequestPromotion(
                self.actor("mlengineer"),
                PROJECT,
                model,
                str(number),
                "dev",
                "dev deployment",
                version_info=VersionInfo(str(number), f"run{number}", "cd" * 32, TRAINER),
            ).run(self.sessions)
            assert request.deployment is not None
            ids.append(request.deployment.id)
        return ids

    def take_alert(self) -> int:
        """An open alert no test used yet."""
        return self.alert_ids.pop()


def register_versions(settings: Any, root: Path) -> dict[str, Registered]:
    """Register versions 1 and 2 of ``credit-risk.scorecard`` in MLflow, tagged as training tags them.

    Version 2 also carries ``mms.git_sha`` (the commit of the recorded workflow_run payload).
    """
    client = registry.client(settings.mlflow_tracking_uri)
    experiment = client.create_experiment(f"{PROJECT}-{MODEL}", artifact_location=str(root / "mlartifacts"))
    name = registry.registered_model_name(PROJECT, MODEL)
    client.create_registered_model(name)
    found = {}
    for number, digest in (("1", "1a" * 32), ("2", "2b" * 32)):
        run_id = client.create_run(experiment).info.run_id
        tags = {
            registry.TAG_CREATED_BY: TRAINER,
            registry.TAG_PROJECT: PROJECT,
            registry.TAG_RUN_ID: run_id,
            registry.TAG_ARTIFACT_DIGEST: digest,
        }
        if number == "2":
            tags[TAG_GIT_SHA] = GIT_SHA_V2
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
        assert str(version.version) == number
        found[number] = Registered(number, run_id, digest)
    return found


def write_metrics(settings: Any, now: datetime) -> datetime:
    """Drift metrics of ``scorecard`` in dev over three days (all columns drift); returns the first window."""
    store = ParquetStore(settings.store_config())
    first = (now - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        for day in range(3):
            start = first + timedelta(days=day)
            rows = [
                {
                    "version": "2",
                    "window_start": start,
                    "window_end": start + timedelta(hours=1),
                    "column": column,
                    "metric": "psi",
                    "statistic": 0.5 + index / 100,
                    "p_value": None,
                    "threshold": 0.2,
                    "drifted": True,
                    "status": "drift",
                    "n_reference": 1000,
                    "n_current": 200,
                    "reason": None,
                }
                for index, column in enumerate(DRIFT_COLUMNS)
            ]
            table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
            partition = {
                "project": PROJECT,
                "model": MODEL,
                "environment": "dev",
                "date": start.date().isoformat(),
            }
            store.write_partition(METRICS, partition, table)
    finally:
        store.close()
    return first


def build_world(root: Path) -> ApiWorld:
    """A seeded studio under ``root`` with everything the API can list (see the module docstring)."""
    studio = build_studio(root)
    settings = studio.settings
    registered = register_versions(settings, root)
    world = ApiWorld(studio=studio, tokens={}, registered=registered)
    with studio.db(write=True) as session:
        for user in USERS:
            world.tokens[user] = tokens.create_token(session, studio.actor(user), f"{user} api").secret
    # Version 2 approved for staging by a sponsor: its deployment is queued.
    request = RequestPromotion(
        world.actor("mlengineer"),
        PROJECT,
        MODEL,
        "2",
        "staging",
        "staging rollout",
        version_info=world.version_info("2"),
    ).run(world.sessions)
    outcome = ApprovePromotion(
        world.actor("sponsor1"),
        request.id,
        "looks good",
        version="2",
        run_id=registered["2"].run_id,
        artifact_digest=registered["2"].artifact_digest,
    ).run(world.sessions)
    assert outcome.deployment is not None
    world.staging_request_id = request.id
    world.staging_deployment_id = outcome.deployment.id
    # Drift alerts, one per column, opened by the real evaluation over real metrics files.
    now = datetime.now(UTC)
    world.metrics_since = write_metrics(settings, now)
    with studio.db(write=True) as session:
        create_rule(
            session,
            world.actor("monitoring"),
            PROJECT,
            RuleSpec(name="psi drift", model=MODEL, metric="psi", operator=">", threshold=0.2),
        )
    store = ParquetStore(settings.store_config())
    try:
        summary = evaluate_alerts(world.sessions, store, project=PROJECT, now=now, deliver_now=False)
    finally:
        store.close()
    world.alert_ids = sorted(summary.opened)
    assert len(world.alert_ids) == len(DRIFT_COLUMNS), summary
    return world


def payload(name: str) -> bytes:
    """The raw bytes of a recorded GitHub payload (``workflow_run.completed``, ``push``, ...)."""
    return (PAYLOADS / f"{name}.json").read_bytes()


def payload_json(name: str) -> dict[str, Any]:
    """A recorded GitHub payload, parsed."""
    return json.loads(payload(name))
