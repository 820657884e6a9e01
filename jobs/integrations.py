"""Connection checks of the systems the studio talks to: the data store, MLflow and GitHub.

Each check returns a :class:`CheckResult` instead of raising: a failure is an
answer (``ok=False``) whose ``summary`` says which system failed and whose
``error`` is the first line of what the client library raised, so a wrong
endpoint shows as ``... Connection refused`` rather than a traceback.

* :func:`check_data_store` lists the data root and writes, reads back and deletes a
  probe object under ``<root>/_staging/`` (never inside a dataset).
* :func:`check_mlflow` searches experiments: a REST call with a short timeout and
  no retries for ``http(s)://`` servers, the MLflow client for database stores.
* :func:`check_github` reads ``GET /repos/<owner>/<name>`` of the configured
  repository. The token is sent in the ``Authorization`` header and never appears
  in a result, a log line or the audit log.

:func:`run_check` is what the web page and the CLI call: it needs
``MANAGE_INTEGRATIONS`` (the data store check writes an object) and records
``integration.check`` in the audit log after the check, so no database lock is
held while a remote system is slow to answer.

The GitHub settings are read from ``MMS_GITHUB_REPOSITORY`` (``owner/name``),
``MMS_GITHUB_TOKEN`` and ``MMS_GITHUB_API_URL`` (default ``https://api.github.com``)
by :func:`github_config`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy.orm import Session

from jobs import audit
from jobs.permissions import Actor, Permission, require
from jobs.users import InvalidInput

DATA_STORE = "data_store"
MLFLOW = "mlflow"
GITHUB = "github"
INTEGRATIONS = (DATA_STORE, MLFLOW, GITHUB)
TITLES: Mapping[str, str] = {DATA_STORE: "Data store", MLFLOW: "MLflow", GITHUB: "GitHub"}
DEFAULT_GITHUB_API_URL = "https://api.github.com"
CHECK_TIMEOUT_S = 5.0
PROBE_FOLDER = "_staging"
"""The store's folder for in-flight writes: dataset names cannot start with ``_``, so no reader sees it."""
MAX_LISTED = 20
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
MASK = "••••••"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one connection check.

    Attributes:
        integration: ``data_store``, ``mlflow`` or ``github``.
        ok: The system answered as expected.
        summary: One sentence for people.
        details: Further facts (what was listed, which probe was written).
        error: First line of the error, ``None`` when ok.
        duration_s: Wall time of the check.
    """

    integration: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()
    error: str | None = None
    duration_s: float = 0.0

    def as_audit(self) -> dict[str, Any]:
        """What the audit log keeps of the check (no secret is ever part of a result)."""
        return {"integration": self.integration, "ok": self.ok, "error": self.error}


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:500]
    return type(error).__name__


def redact_url(url: str | None) -> str | None:
    """``url`` with any password (and query string, which may carry tokens) masked; the rest untouched."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    redacted = url
    if "@" in parts.netloc:
        credentials, host = parts.netloc.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        masked = f"{user}:{MASK}@{host}" if ":" in credentials else f"{user}@{host}"
        redacted = redacted.replace(parts.netloc, masked, 1)
    if parts.query or parts.fragment:
        redacted = redacted.split("?", 1)[0].split("#", 1)[0] + f"?{MASK}"
    return redacted


def _timed(integration: str, check: Callable[[], CheckResult], failure: str) -> CheckResult:
    started = time.monotonic()
    try:
        result = check()
    except Exception as error:  # noqa: BLE001 - any failure of a remote system is the check's answer
        result = CheckResult(integration, False, failure, error=first_line(error))
    return CheckResult(
        result.integration,
        result.ok,
        result.summary,
        result.details,
        result.error,
        round(time.monotonic() - started, 3),
    )


# --------------------------------------------------------------------------- data store


def check_data_store(config: Any) -> CheckResult:
    """List the data root, then write, read back and delete a probe object.

    Args:
        config: ``analytics.store.StoreConfig`` of the store.
    """
    from analytics.store import ParquetStore

    def check() -> CheckResult:
        import pyarrow.fs as pafs

        store = ParquetStore(config)
        try:
            filesystem = store.filesystem()
            base = store.root.removeprefix("s3://")
            entries = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            datasets = sorted(
                info.base_name
                for info in entries
                if info.type == pafs.FileType.Directory and not info.base_name.startswith("_")
            )
            probe_dir = f"{base}/{PROBE_FOLDER}"
            probe = f"{probe_dir}/probe-{uuid.uuid4().hex}.txt"
            payload = f"model monitoring studio probe {uuid.uuid4()}".encode()
            if not store.is_s3:
                filesystem.create_dir(probe_dir, recursive=True)
            with filesystem.open_output_stream(probe) as handle:
                handle.write(payload)
            try:
                with filesystem.open_input_stream(probe) as handle:
                    read_back = handle.read()
            finally:
                filesystem.delete_file(probe)
            if read_back != payload:
                return CheckResult(
                    DATA_STORE,
                    False,
                    f"the probe object read back from {store.root} differs from what was written",
                )
            listed = ", ".join(datasets[:MAX_LISTED]) + (" ..." if len(datasets) > MAX_LISTED else "")
            return CheckResult(
                DATA_STORE,
                True,
                f"{store.root} is readable and writable ({len(datasets)} dataset folder(s))",
                (
                    f"datasets: {listed or 'none yet'}",
                    f"probe object written, read back and deleted under {PROBE_FOLDER}/",
                ),
            )
        finally:
            store.close()

    return _timed(DATA_STORE, check, f"the data store {redact_url(config.data_uri)} is not reachable")


# --------------------------------------------------------------------------- MLflow


def _mlflow_rest_search(tracking_uri: str, timeout: float) -> list[str]:
    parts = urlsplit(tracking_uri)
    # urllib does not read credentials from a URL: they travel as Basic auth, the host without them.
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    url = base + "/api/2.0/mlflow/experiments/search"
    body = json.dumps({"max_results": MAX_LISTED}).encode()
    headers = {"Content-Type": "application/json"}
    username = unquote(parts.username) if parts.username else os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = unquote(parts.password) if parts.password else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if username and password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode(
            "ascii"
        )
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read().decode("utf-8") or "{}")
    except urllib.error.HTTPError as error:
        raise ConnectionError(f"HTTP {error.code} {error.reason} from {redact_url(url)}") from error
    except urllib.error.URLError as error:
        raise ConnectionError(f"{redact_url(tracking_uri)} is unreachable: {error.reason}") from error
    except json.JSONDecodeError as error:
        raise ConnectionError(
            f"{redact_url(url)} did not answer with JSON: is it an MLflow server?"
        ) from error
    if not isinstance(answer, dict):
        raise ConnectionError(f"{redact_url(url)} did not answer like an MLflow server")
    return [str(item.get("name")) for item in answer.get("experiments", []) if isinstance(item, dict)]


def _sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and tracking_uri != prefix + ":memory:":
        return Path(tracking_uri[len(prefix) :])
    return None


def check_mlflow(tracking_uri: str, *, timeout: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Search the experiments of an MLflow tracking server or store.

    A SQLite store that does not exist yet is reported as such (MLflow would create
    it): the first training run creates it.
    """

    def check() -> CheckResult:
        scheme = urlsplit(tracking_uri).scheme
        if scheme in ("http", "https"):
            names = _mlflow_rest_search(tracking_uri, timeout)
        else:
            database = _sqlite_path(tracking_uri)
            if database is not None and not database.exists():
                return CheckResult(
                    MLFLOW,
                    False,
                    "the MLflow store does not exist yet: the first training run creates it",
                    error=f"no MLflow database at {database}",
                )
            from jobs.registry import client

            names = [e.name for e in client(tracking_uri).search_experiments(max_results=MAX_LISTED)]
        return CheckResult(
            MLFLOW,
            True,
            f"MLflow at {redact_url(tracking_uri)} answers ({len(names)} experiment(s) listed)",
            (f"experiments: {', '.join(names) or 'none yet'}",),
        )

    return _timed(MLFLOW, check, f"MLflow at {redact_url(tracking_uri)} did not answer")


# --------------------------------------------------------------------------- GitHub


@dataclass(frozen=True)
class GitHubConfig:
    """Where the studio's GitHub integration points.

    Attributes:
        repository: ``owner/name``, ``None`` when not configured.
        api_url: Base URL of the GitHub REST API.
        token: Access token (never shown: see :attr:`token_configured`).
    """

    repository: str | None
    api_url: str = DEFAULT_GITHUB_API_URL
    token: str | None = field(default=None, repr=False)

    @property
    def token_configured(self) -> bool:
        """Whether a token is set (the only thing ever shown about it)."""
        return bool(self.token)


def github_config(environ: Mapping[str, str] | None = None) -> GitHubConfig:
    """Read the GitHub settings from ``MMS_GITHUB_*`` variables.

    Raises:
        InvalidInput: for a repository that is not ``owner/name`` or an API URL that is not http(s).
    """
    env = os.environ if environ is None else environ
    repository = (env.get("MMS_GITHUB_REPOSITORY") or "").strip() or None
    if repository is not None and not _REPOSITORY_RE.fullmatch(repository):
        raise InvalidInput(f"MMS_GITHUB_REPOSITORY={repository!r} must be owner/name")
    api_url = (env.get("MMS_GITHUB_API_URL") or "").strip() or DEFAULT_GITHUB_API_URL
    if urlsplit(api_url).scheme not in ("http", "https") or not urlsplit(api_url).netloc:
        raise InvalidInput(f"MMS_GITHUB_API_URL={redact_url(api_url)!r} must be an http(s) URL")
    token = (env.get("MMS_GITHUB_TOKEN") or "").strip() or None
    return GitHubConfig(repository=repository, api_url=api_url.rstrip("/"), token=token)


def _github_failure(error: urllib.error.HTTPError, config: GitHubConfig) -> str:
    try:
        message = json.loads(error.read().decode("utf-8")).get("message", "")
    except (ValueError, AttributeError, OSError):
        message = ""
    reason = f"HTTP {error.code} {message or error.reason}".strip()
    if error.code == 401:
        return f"{reason}: the token was refused"
    if error.code == 404:
        hint = "the token cannot see it" if config.token_configured else "private repositories need a token"
        return f"{reason}: repository {config.repository} not found ({hint})"
    if error.code == 403:
        return f"{reason}: access denied or rate limit reached"
    return reason


def check_github(config: GitHubConfig, *, timeout: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Read the configured repository through the GitHub REST API."""
    if config.repository is None:
        return CheckResult(
            GITHUB, False, "no repository configured", error="set MMS_GITHUB_REPOSITORY=owner/name"
        )

    def check() -> CheckResult:
        url = f"{config.api_url}/repos/{config.repository}"
        headers = {"Accept": "application/vnd.github+json", "User-Agent": "model-monitoring-studio"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the URL is validated http(s)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                answer = json.loads(response.read().decode("utf-8") or "{}")
        except urllib.error.HTTPError as error:
            return CheckResult(
                GITHUB, False, f"GitHub refused {config.repository}", error=_github_failure(error, config)
            )
        except urllib.error.URLError as error:
            raise ConnectionError(f"{redact_url(config.api_url)} is unreachable: {error.reason}") from error
        except json.JSONDecodeError as error:
            raise ConnectionError(f"{redact_url(url)} did not answer with JSON") from error
        if not isinstance(answer, dict) or "full_name" not in answer:
            raise ConnectionError(f"{redact_url(url)} did not answer like the GitHub API")
        visibility = "private" if answer.get("private") else "public"
        return CheckResult(
            GITHUB,
            True,
            f"repository {answer['full_name']} is reachable",
            (f"default branch: {answer.get('default_branch', '?')}", f"visibility: {visibility}"),
        )

    return _timed(GITHUB, check, f"GitHub API at {redact_url(config.api_url)} did not answer")


# --------------------------------------------------------------------------- running a check


def run_check(
    session_scope: Callable[..., Any],
    actor: Actor,
    integration: str,
    settings: Any,
    environ: Mapping[str, str] | None = None,
) -> CheckResult:
    """Run one connection check for ``actor`` and record it in the audit log.

    Args:
        session_scope: ``session_scope(write=True)`` context manager factory of the metadata
            database (the audit entry is written after the check, in a short transaction).
        actor: Who asks; needs ``MANAGE_INTEGRATIONS``.
        integration: ``data_store``, ``mlflow`` or ``github``.
        settings: ``app.settings.Settings``.
        environ: Where the GitHub settings are read (default ``os.environ``).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_INTEGRATIONS``.
        InvalidInput: for an unknown integration or malformed GitHub settings.
    """
    require(actor, Permission.MANAGE_INTEGRATIONS)
    if integration == DATA_STORE:
        result = check_data_store(settings.store_config())
    elif integration == MLFLOW:
        result = check_mlflow(settings.mlflow_tracking_uri)
    elif integration == GITHUB:
        result = check_github(github_config(environ))
    else:
        raise InvalidInput(f"unknown integration {integration!r}: use one of {', '.join(INTEGRATIONS)}")
    with session_scope(write=True) as session:
        record_check(session, actor, result)
    return result


def record_check(session: Session, actor: Actor, result: CheckResult) -> None:
    """Append ``integration.check`` for ``result`` (the caller commits).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_INTEGRATIONS``.
    """
    require(actor, Permission.MANAGE_INTEGRATIONS)
    audit.append(
        session, actor.username, "integration.check", f"integration:{result.integration}", result.as_audit()
    )


# --------------------------------------------------------------------------- command line


def _cli_check(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import make_engine, make_session_factory
    from jobs.db import session_scope as scope
    from jobs.users import actor_for, get_user

    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with scope(factory) as session:
            user = get_user(session, args.actor)
            actor = actor_for(session, user.id) if user is not None else None
        if actor is None:
            raise InvalidInput(f"--actor {args.actor!r} is not an active user")
        failed = 0
        for name in args.integration or INTEGRATIONS:
            result = run_check(lambda write=False: scope(factory, write=write), actor, name, settings)
            print(f"{'OK  ' if result.ok else 'FAIL'} {TITLES[name]}: {result.summary}")
            for line in result.details:
                print(f"     {line}")
            if result.error:
                print(f"     error: {result.error}")
            failed += not result.ok
    finally:
        engine.dispose()
    return 1 if failed else 0


def register_cli(subparsers: Any) -> None:
    """``integrations check``: check the connections (exit 1 when one fails)."""
    parser = subparsers.add_parser(
        "integrations", help="check the connections to the data store, MLflow, GitHub"
    )
    actions = parser.add_subparsers(dest="integrations_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="run connection checks (needs manage_integrations)")
    check.add_argument(
        "--only",
        dest="integration",
        action="append",
        choices=INTEGRATIONS,
        help="check only this one (repeatable)",
    )
    check.add_argument("--actor", required=True, help="username of who checks")
    check.set_defaults(func=_cli_check)
