"""GitHub webhooks: configuration, signature verification, replay refusal and workflow-run storage.

Configuration: :func:`configure_github` links a repository (``owner/name``) to a
project and stores its webhook secret, encrypted with Fernet under a key derived
from the studio's ``secret_key`` by HKDF-SHA256 (:class:`SecretBox`). It needs
``MANAGE_INTEGRATIONS`` on the project and writes ``github.configure`` to the
audit log (without the secret). No function returns the secret: only
:func:`receive_webhook` decrypts it, to check a signature.

A delivery (:func:`receive_webhook`) is accepted only when

1. it names its event (``X-GitHub-Event``) and delivery id (``X-GitHub-Delivery``),
2. its body is a JSON object naming a configured ``repository.full_name``,
3. ``X-Hub-Signature-256`` equals ``sha256=`` + HMAC-SHA256(secret, raw body),
   compared with :func:`hmac.compare_digest`, and
4. its delivery id was not seen before. Ids are kept for :data:`REPLAY_WINDOW`
   (older ones are pruned by every delivery): the same id again inside the window
   is refused with :class:`ReplayedDelivery`. GitHub's own "Redeliver" button
   re-sends the same id, so a redelivery is refused too.

Events: ``workflow_run`` is stored in ``workflow_runs`` (one row per run, updated
by later events of the same run; an event older than the stored one never moves
it back, so even a replay older than the window changes nothing). ``push`` and
``pull_request`` are recorded as deliveries with a short summary (ref, SHAs,
pull request number and action). Any other event is acknowledged and ignored.

Model versions: when a run completes successfully, the versions it produced are
looked up by commit SHA and stored on the run (``model_versions``). A version
matches when, in this order of preference,

* the model version carries the tag ``mms.git_sha`` equal to the run's ``head_sha``, or
* the MLflow run that produced it carries the tag ``mms.git_sha``, or
* that run carries MLflow's standard ``mlflow.source.git.commit`` tag,

and its registered name is ``<project>.<model>`` of the run's project.
:class:`MlflowShaLookup` implements this; a lookup failure stores the run
without versions (logged) rather than losing it. :func:`versions_for_commit`
answers the same question later (the API's "deploy this commit").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import audit, registry
from jobs.contracts import key_segment_problem
from jobs.db.api_models import MAX_REPOSITORY_LENGTH, GithubDelivery, GithubIntegration, WorkflowRun
from jobs.db.models import Project, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Permission, has_permission, require
from jobs.projects import project_by_slug
from jobs.users import Conflict, InvalidInput, active_actor, actor_for

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
WORKFLOW_RUN = "workflow_run"
PUSH = "push"
PULL_REQUEST = "pull_request"
HANDLED_EVENTS = (WORKFLOW_RUN, PUSH, PULL_REQUEST)
STORED = "stored"
ACCEPTED = "accepted"
IGNORED = "ignored"
REPLAY_WINDOW = timedelta(days=30)
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 1024
LOOKUP_TIMEOUT_S = 5.0
TAG_GIT_SHA = "mms.git_sha"
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"
HKDF_INFO = b"mms github webhook secret v1"
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_DELIVERY_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_EVENT_RE = re.compile(r"[a-z_]{1,64}")
_SHA_RE = re.compile(r"[0-9a-f]{40}")

ModelVersionRef = dict[str, str]
VersionFinder = Callable[[str, str], list[ModelVersionRef]]
"""``(project, commit sha) -> [{"model": ..., "version": ...}]``."""


# --------------------------------------------------------------------------- errors


class BadSignature(Exception):
    """The delivery's signature is missing or wrong, or its repository is not configured."""


class MalformedDelivery(InvalidInput):
    """A header is missing or the body is not a GitHub event payload."""


class ReplayedDelivery(Conflict):
    """This delivery id was already received (inside the replay window)."""


class SecretUnreadable(RuntimeError):
    """The stored secret cannot be decrypted: the studio's secret key changed since it was configured."""


# --------------------------------------------------------------------------- secret storage


class SecretBox:
    """Encrypts webhook secrets with Fernet under a key derived from the studio's secret key.

    HKDF-SHA256 (no salt, info :data:`HKDF_INFO`) turns ``secret_key`` into the 32-byte
    Fernet key, so the key is never stored and a different purpose would derive a
    different key from the same secret.

    Args:
        secret_key: The studio's ``Settings.secret_key`` (at least 32 characters).

    Raises:
        InvalidInput: for a missing or short secret key.
    """

    def __init__(self, secret_key: str) -> None:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not isinstance(secret_key, str) or len(secret_key) < 32:
            raise InvalidInput("encrypting secrets needs the studio's secret key (at least 32 characters)")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
            secret_key.encode("utf-8")
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plain: str) -> str:
        """The Fernet token of ``plain`` (ASCII)."""
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The clear text of a Fernet token made by :meth:`encrypt`.

        Raises:
            SecretUnreadable: if the token was made with another key or was altered.
        """
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as error:
            raise SecretUnreadable(
                "the stored GitHub webhook secret cannot be decrypted (the studio's secret key changed?): "
                "configure the secret again"
            ) from error


# --------------------------------------------------------------------------- configuration


def validate_repository(repository: object) -> str:
    """Return ``repository`` if it is ``owner/name``.

    Raises:
        InvalidInput: otherwise.
    """
    if not isinstance(repository, str) or not _REPOSITORY_RE.fullmatch(repository):
        raise InvalidInput(f"repository {repository!r} must be owner/name (letters, digits, '_', '.', '-')")
    return repository


def configure_github(
    session: Session,
    actor: Actor,
    project: str,
    repository: str,
    secret: str,
    *,
    secret_key: str,
) -> GithubIntegration:
    """Accept webhooks from ``repository`` for ``project``, signed with ``secret``.

    Configuring a repository again replaces its secret (and may move it to another
    project the actor also manages).

    Args:
        session: Session of the transaction (the caller commits).
        actor: Needs ``MANAGE_INTEGRATIONS`` on the project (and on the previous project when moving).
        project: Project slug whose CI runs in the repository.
        repository: ``owner/name``.
        secret: The webhook secret entered in GitHub (16 to 1024 characters).
        secret_key: The studio's secret key (encrypts the secret).

    Returns:
        The stored configuration (the secret only encrypted).

    Raises:
        Forbidden: if the actor may not manage integrations of the project.
        InvalidInput: for a bad repository or secret.
        Conflict: if the project does not exist.
    """
    require(actor, Permission.MANAGE_INTEGRATIONS, project)
    current = require(active_actor(session, actor), Permission.MANAGE_INTEGRATIONS, project)
    repository = validate_repository(repository)
    if not isinstance(secret, str) or not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise InvalidInput(
            f"the webhook secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters"
        )
    box = SecretBox(secret_key)
    found = project_by_slug(session, project)
    now = utcnow()
    integration = session.scalars(
        select(GithubIntegration).where(GithubIntegration.repository == repository)
    ).first()
    previous_project = None
    if integration is None:
        integration = GithubIntegration(repository=repository, created_at=now)
        session.add(integration)
    elif integration.project_id != found.id:
        previous_project = integration.project.slug
        require(current, Permission.MANAGE_INTEGRATIONS, previous_project)
    integration.project = found
    integration.secret_encrypted = box.encrypt(secret)
    integration.updated_at = now
    integration.updated_by_id = current.user_id
    session.flush()
    audit.append(
        session,
        current.username,
        "github.configure",
        f"github:{repository}",
        {"project": project, "previous_project": previous_project, "secret": "replaced"},
    )
    return integration


def remove_github(session: Session, actor: Actor, repository: str) -> None:
    """Stop accepting webhooks from ``repository`` (its stored runs stay).

    Raises:
        Forbidden: if the actor may not manage integrations of the repository's project.
        Conflict: if the repository is not configured.
    """
    repository = validate_repository(repository)
    integration = session.scalars(
        select(GithubIntegration).where(GithubIntegration.repository == repository)
    ).first()
    if integration is None:
        raise Conflict(f"repository {repository!r} is not configured")
    slug = integration.project.slug
    require(actor, Permission.MANAGE_INTEGRATIONS, slug)
    current = require(active_actor(session, actor), Permission.MANAGE_INTEGRATIONS, slug)
    session.delete(integration)
    session.flush()
    audit.append(session, current.username, "github.remove", f"github:{repository}", {"project": slug})


@dataclass(frozen=True)
class IntegrationView:
    """A configured repository as people may see it (never the secret).

    Attributes:
        repository: ``owner/name``.
        project: Project slug.
        updated_at: When it was last configured.
    """

    repository: str
    project: str
    updated_at: datetime


def list_github(session: Session, actor: Actor | None) -> list[IntegrationView]:
    """Configured repositories of the projects where ``actor`` holds ``VIEW_INTEGRATIONS``."""
    if actor is None:
        return []
    rows = session.scalars(select(GithubIntegration).order_by(GithubIntegration.repository)).unique()
    return [
        IntegrationView(row.repository, row.project.slug, row.updated_at)
        for row in rows
        if has_permission(actor, Permission.VIEW_INTEGRATIONS, row.project.slug)
    ]


# --------------------------------------------------------------------------- signatures


def signature_of(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` signed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time comparison)."""
    if not isinstance(header, str) or not header.startswith("sha256="):
        return False
    expected = signature_of(secret, body)
    return hmac.compare_digest(header.encode("utf-8", "replace"), expected.encode("ascii"))


# --------------------------------------------------------------------------- model versions by commit


@dataclass(frozen=True)
class MlflowShaLookup:
    """:data:`VersionFinder` over the MLflow registry (see the module docstring for the matching rules).

    Attributes:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (defaults to the tracking URI).
        max_results: At most this many versions or runs are examined per query.
    """

    tracking_uri: str
    registry_uri: str | None = None
    max_results: int = 200

    def __call__(self, project: str, sha: str) -> list[ModelVersionRef]:
        """Versions of ``project``'s models produced from commit ``sha``, by model then version."""
        if key_segment_problem(project) or not _SHA_RE.fullmatch(sha or ""):
            return []
        client = registry.client(self.tracking_uri, self.registry_uri)
        prefix = f"{project}."
        found: dict[tuple[str, str], ModelVersionRef] = {}

        def add(version: Any) -> None:
            name = str(version.name)
            if name.startswith(prefix) and not key_segment_problem(name[len(prefix) :]):
                model = name[len(prefix) :]
                found[(model, str(version.version))] = {"model": model, "version": str(version.version)}

        for version in client.search_model_versions(
            filter_string=f"tags.`{TAG_GIT_SHA}` = '{sha}'", max_results=self.max_results
        ):
            add(version)
        experiments = [e.experiment_id for e in client.search_experiments(max_results=self.max_results)]
        run_ids: set[str] = set()
        if experiments:
            for tag in (TAG_GIT_SHA, MLFLOW_GIT_COMMIT_TAG):
                runs = client.search_runs(
                    experiments, filter_string=f"tags.`{tag}` = '{sha}'", max_results=self.max_results
                )
                run_ids.update(run.info.run_id for run in runs)
        for run_id in sorted(run_ids):
            for version in client.search_model_versions(
                filter_string=f"run_id = '{run_id}'", max_results=self.max_results
            ):
                add(version)
        return [found[key] for key in sorted(found, key=lambda k: (k[0], _version_order(k[1])))]


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def versions_for_commit(
    session: Session,
    project: str,
    sha: str,
    *,
    find_versions: VersionFinder | None = None,
) -> list[ModelVersionRef]:
    """Model versions of ``project`` built from commit ``sha``: the registry's answer, else the stored runs'.

    Args:
        session: Session to read stored workflow runs with.
        project: Project slug.
        sha: Full 40-character commit SHA (lowercase hex).
        find_versions: Registry lookup (:class:`MlflowShaLookup`); ``None`` uses the stored runs only.

    Raises:
        InvalidInput: for a malformed SHA.
    """
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise InvalidInput(f"commit {sha!r} must be a full 40-character lowercase hex SHA")
    if find_versions is not None:
        found = find_versions(project, sha)
        if found:
            return found
    rows = session.scalars(
        select(WorkflowRun)
        .join(Project, Project.id == WorkflowRun.project_id)
        .where(Project.slug == project, WorkflowRun.head_sha == sha)
    ).unique()
    merged = {(ref["model"], ref["version"]): ref for row in rows for ref in row.model_versions or []}
    return [merged[key] for key in sorted(merged, key=lambda k: (k[0], _version_order(k[1])))]


# --------------------------------------------------------------------------- deliveries


@dataclass(frozen=True)
class WebhookResult:
    """What :func:`receive_webhook` did with a delivery.

    Attributes:
        outcome: ``stored`` (a workflow run was written), ``accepted`` (push / pull request
            recorded) or ``ignored`` (another event).
        event: The event name.
        delivery_id: GitHub's delivery id.
        repository: ``owner/name``.
        project: Project slug the repository belongs to.
        workflow_run_id: Database id of the stored workflow run, for ``workflow_run`` events.
        model_versions: Versions linked to that run.
    """

    outcome: str
    event: str
    delivery_id: str
    repository: str
    project: str
    workflow_run_id: int | None = None
    model_versions: list[ModelVersionRef] = field(default_factory=list)


def _find_in_time(
    find_versions: VersionFinder, project: str, sha: str, timeout: float
) -> list[ModelVersionRef]:
    """``find_versions(project, sha)``, or ``[]`` if it fails or takes longer than ``timeout`` seconds."""
    found: list[list[ModelVersionRef]] = []

    def look() -> None:
        try:
            found.append(find_versions(project, sha))
        except Exception:
            logger.exception("model versions of %s@%s: lookup failed, run stored without", project, sha)

    # A daemon thread: a registry that hangs (MLflow retries for minutes) holds neither request nor process.
    worker = threading.Thread(target=look, name="mms-github-version-lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        logger.warning(
            "model versions of %s@%s: no answer in %.0f s, run stored without", project, sha, timeout
        )
        return []
    return found[0] if found else []


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if isinstance(value, str) else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


@dataclass(frozen=True)
class _Run:
    github_run_id: int
    run_attempt: int
    workflow_name: str
    event: str
    head_sha: str
    head_branch: str | None
    status: str
    conclusion: str | None
    html_url: str
    created_at: datetime | None
    updated_at: datetime | None

    @property
    def succeeded(self) -> bool:
        return self.status == "completed" and self.conclusion == "success"


def _workflow_run(payload: Mapping[str, Any]) -> _Run:
    run = payload.get("workflow_run")
    if not isinstance(run, dict):
        raise MalformedDelivery("a workflow_run event needs a workflow_run object")
    run_id = run.get("id")
    head_sha = run.get("head_sha")
    status = run.get("status")
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not 0 < run_id < 2**63:
        raise MalformedDelivery("workflow_run.id must be a positive integer")
    if not isinstance(head_sha, str) or not _SHA_RE.fullmatch(head_sha):
        raise MalformedDelivery("workflow_run.head_sha must be a 40-character commit SHA")
    if not isinstance(status, str) or not status or len(status) > 32:
        raise MalformedDelivery("workflow_run.status must be text")
    attempt = run.get("run_attempt")
    conclusion = run.get("conclusion")
    return _Run(
        github_run_id=run_id,
        run_attempt=attempt if isinstance(attempt, int) and 0 < attempt < 2**31 else 1,
        workflow_name=_text(run.get("name"), 255) or "",
        event=_text(run.get("event"), 64) or "",
        head_sha=head_sha,
        head_branch=_text(run.get("head_branch"), 255),
        status=status,
        conclusion=_text(conclusion, 32),
        html_url=_text(run.get("html_url"), 2048) or "",
        created_at=_parse_time(run.get("created_at")),
        updated_at=_parse_time(run.get("updated_at")),
    )


def _summary(event: str, payload: Mapping[str, Any], run: _Run | None) -> dict[str, Any]:
    if run is not None:
        return {
            "run_id": run.github_run_id,
            "head_sha": run.head_sha,
            "status": run.status,
            "conclusion": run.conclusion,
        }
    if event == PUSH:
        return {
            "ref": _text(payload.get("ref"), 255),
            "before": _text(payload.get("before"), 40),
            "after": _text(payload.get("after"), 40),
            "commits": len(payload["commits"]) if isinstance(payload.get("commits"), list) else 0,
        }
    if event == PULL_REQUEST:
        pull = payload.get("pull_request") if isinstance(payload.get("pull_request"), dict) else {}
        head = pull.get("head") if isinstance(pull.get("head"), dict) else {}
        number = payload.get("number")
        return {
            "action": _text(payload.get("action"), 64),
            "number": number if isinstance(number, int) and not isinstance(number, bool) else None,
            "head_sha": _text(head.get("sha"), 40),
            "head_ref": _text(head.get("ref"), 255),
            "merged": pull.get("merged") is True,
        }
    return {"action": _text(payload.get("action"), 64)}


def _newer(run: _Run, stored: WorkflowRun) -> bool:
    """Whether the event describes the run at least as recently as the stored row (never move back)."""
    if run.run_attempt != stored.run_attempt:
        return run.run_attempt > stored.run_attempt
    if run.updated_at is None or stored.run_updated_at is None:
        return True
    return run.updated_at >= stored.run_updated_at


def _store_run(
    session: Session,
    integration: GithubIntegration,
    run: _Run,
    versions: list[ModelVersionRef],
    now: datetime,
) -> WorkflowRun:
    stored = session.scalars(
        select(WorkflowRun).where(
            WorkflowRun.repository == integration.repository,
            WorkflowRun.github_run_id == run.github_run_id,
        )
    ).first()
    if stored is None:
        stored = WorkflowRun(
            repository=integration.repository, github_run_id=run.github_run_id, model_versions=[]
        )
        session.add(stored)
    elif not _newer(run, stored):
        return stored
    stored.project_id = integration.project_id
    stored.run_attempt = run.run_attempt
    stored.workflow_name = run.workflow_name
    stored.event = run.event
    stored.head_sha = run.head_sha
    stored.head_branch = run.head_branch
    stored.status = run.status
    stored.conclusion = run.conclusion
    stored.html_url = run.html_url
    stored.run_created_at = run.created_at
    stored.run_updated_at = run.updated_at
    stored.received_at = now
    if versions:
        stored.model_versions = versions
    session.flush()
    return stored


def receive_webhook(
    sessions: sessionmaker[Session],
    *,
    headers: Mapping[str, str],
    body: bytes,
    secret_key: str,
    find_versions: VersionFinder | None = None,
    lookup_timeout: float = LOOKUP_TIMEOUT_S,
    now: datetime | None = None,
) -> WebhookResult:
    """Verify and record one webhook delivery (see the module docstring for the rules).

    Args:
        sessions: Session factory of the metadata database.
        headers: The request headers (names case-insensitive).
        body: The raw request body, exactly as received (the signature covers these bytes).
        secret_key: The studio's secret key (decrypts the stored webhook secret).
        find_versions: Finds the model versions a successful run produced; ``None`` links none.
        lookup_timeout: Seconds to wait for ``find_versions``; past that the run is stored without
            versions (the API's deploy-by-commit asks the registry again later).
        now: The current time.

    Returns:
        What was done.

    Raises:
        BadSignature: if the signature is missing or wrong, or the repository is not configured.
        MalformedDelivery: if a header is missing or the body is not an event payload.
        ReplayedDelivery: if the delivery id was seen inside the replay window.
        SecretUnreadable: if the stored secret cannot be decrypted.
    """
    now = now or utcnow()
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        raise BadSignature(f"the {SIGNATURE_HEADER} header is missing")
    event = _header(headers, EVENT_HEADER)
    delivery_id = _header(headers, DELIVERY_HEADER)
    if not event or not _EVENT_RE.fullmatch(event):
        raise MalformedDelivery(f"the {EVENT_HEADER} header is missing or malformed")
    if not delivery_id or not _DELIVERY_RE.fullmatch(delivery_id):
        raise MalformedDelivery(f"the {DELIVERY_HEADER} header is missing or malformed")
    if not isinstance(body, bytes) or len(body) > MAX_PAYLOAD_BYTES:
        raise MalformedDelivery(f"the payload must be at most {MAX_PAYLOAD_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise MalformedDelivery("the payload is not JSON") from None
    repository = payload.get("repository") if isinstance(payload, dict) else None
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    if not isinstance(full_name, str) or len(full_name) > MAX_REPOSITORY_LENGTH:
        raise MalformedDelivery("the payload names no repository (repository.full_name)")

    with session_scope(sessions) as session:
        integration = session.scalars(
            select(GithubIntegration).where(GithubIntegration.repository == full_name)
        ).first()
        encrypted = integration.secret_encrypted if integration is not None else None
        project = integration.project.slug if integration is not None else ""
    if encrypted is None:
        logger.warning("webhook delivery %s for unconfigured repository %r refused", delivery_id, full_name)
        raise BadSignature("the signature does not verify")
    secret = SecretBox(secret_key).decrypt(encrypted)
    if not signature_matches(secret, body, signature):
        logger.warning("webhook delivery %s for %s: signature mismatch", delivery_id, full_name)
        raise BadSignature("the signature does not verify")

    run = _workflow_run(payload) if event == WORKFLOW_RUN else None
    versions: list[ModelVersionRef] = []
    if run is not None and run.succeeded and find_versions is not None:
        # Asked before the write transaction (no database lock waits on the registry), and only for
        # lookup_timeout seconds: GitHub gives up on a delivery after 10 s.
        versions = _find_in_time(find_versions, project, run.head_sha, lookup_timeout)
    outcome = STORED if run is not None else ACCEPTED if event in HANDLED_EVENTS else IGNORED

    with session_scope(sessions, write=True) as session:
        session.execute(delete(GithubDelivery).where(GithubDelivery.received_at < now - REPLAY_WINDOW))
        if session.scalars(
            select(GithubDelivery.id).where(GithubDelivery.delivery_id == delivery_id)
        ).first():
            raise ReplayedDelivery(f"delivery {delivery_id} was already received")
        integration = session.scalars(
            select(GithubIntegration).where(GithubIntegration.repository == full_name)
        ).first()
        if integration is None:  # removed while the delivery was being checked
            raise BadSignature("the signature does not verify")
        session.add(
            GithubDelivery(
                delivery_id=delivery_id,
                event=event,
                repository=full_name,
                outcome=outcome,
                summary=_summary(event, payload, run),
                received_at=now,
            )
        )
        try:
            session.flush()
        except IntegrityError as error:  # a concurrent copy of the same delivery committed first
            raise ReplayedDelivery(f"delivery {delivery_id} was already received") from error
        stored = _store_run(session, integration, run, versions, now) if run is not None else None
        return WebhookResult(
            outcome=outcome,
            event=event,
            delivery_id=delivery_id,
            repository=full_name,
            project=integration.project.slug,
            workflow_run_id=stored.id if stored is not None else None,
            model_versions=list(stored.model_versions or []) if stored is not None else [],
        )


def list_workflow_runs(
    session: Session,
    actor: Actor | None,
    *,
    project: str | None = None,
    head_sha: str | None = None,
    branch: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[WorkflowRun]:
    """Stored workflow runs ``actor`` may see (``VIEW_CICD``), newest first (by id).

    Args:
        session: Session to read with.
        actor: Who asks; ``None`` sees nothing.
        project: Only this project.
        head_sha: Only runs of this commit.
        branch: Only runs of this branch.
        before_id: Only runs with a smaller id (keyset pagination).
        limit: At most this many (1 to 1000).

    Raises:
        InvalidInput: for a bad limit.
    """
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput("limit must be an integer from 1 to 1000")
    if actor is None:
        return []
    query = select(WorkflowRun).join(Project, Project.id == WorkflowRun.project_id)
    if not actor.is_admin:
        visible = [slug for slug in actor.roles if has_permission(actor, Permission.VIEW_CICD, slug)]
        query = query.where(Project.slug.in_(visible))
    if project is not None:
        query = query.where(Project.slug == project)
    if head_sha is not None:
        query = query.where(WorkflowRun.head_sha == head_sha)
    if branch is not None:
        query = query.where(WorkflowRun.head_branch == branch)
    if before_id is not None:
        query = query.where(WorkflowRun.id < before_id)
    return list(session.scalars(query.order_by(WorkflowRun.id.desc()).limit(limit)).unique())


# --------------------------------------------------------------------------- command line


def _cli_configure(args: argparse.Namespace, settings: Any) -> int:
    import getpass
    import os

    from jobs.db import make_engine, make_session_factory
    from jobs.users import get_user

    secret = os.environ.get("MMS_GITHUB_WEBHOOK_SECRET") or getpass.getpass("webhook secret: ")
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            user = get_user(session, args.actor)
            actor = actor_for(session, user.id) if user else None
            if actor is None:
                raise InvalidInput(f"--actor {args.actor!r} is not an active user")
            configure_github(
                session, actor, args.project, args.repository, secret, secret_key=settings.secret_key
            )
            print(f"webhooks of {args.repository} accepted for project {args.project}")
    finally:
        engine.dispose()
    return 0


def register_cli(subparsers: Any) -> None:
    """``github configure``: link a repository to a project and store its webhook secret."""
    parser = subparsers.add_parser("github", help="GitHub webhook configuration")
    actions = parser.add_subparsers(dest="github_command", metavar="ACTION", required=True)
    configure = actions.add_parser(
        "configure",
        help="accept a repository's webhooks (secret from MMS_GITHUB_WEBHOOK_SECRET or a prompt)",
    )
    configure.add_argument("repository", help="owner/name")
    configure.add_argument("--project", required=True)
    configure.add_argument("--actor", required=True, help="username (needs manage_integrations)")
    configure.set_defaults(func=_cli_configure)
