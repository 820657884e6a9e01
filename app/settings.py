"""Typed studio settings read from ``MMS_*`` environment variables.

This module uses the standard library only, so jobs, the analytics CLI and
notebooks build exactly the settings the web app uses without importing
dash or flask. Parsing is strict: a bad value raises :class:`SettingsError`
naming the variable.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ENVIRONMENTS = ("development", "test", "production")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KIB|MB|MIB|GB|GIB|TB|TIB)\s*$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the studio, frozen once read.

    Attributes:
        env: ``development``, ``test`` or ``production``.
        var_dir: Folder for embedded state (SQLite, MLflow store, secret key, caches).
        data_uri: Root of the Parquet data store: a local folder or ``s3://bucket/prefix``.
        s3_endpoint_url: S3 endpoint (for MinIO/SeaweedFS/LocalStack); ``None`` for AWS.
        s3_region: S3 region.
        s3_access_key_id: S3 access key (``MMS_S3_ACCESS_KEY_ID`` or ``AWS_ACCESS_KEY_ID``).
        s3_secret_access_key: S3 secret key.
        s3_session_token: Optional session token.
        database_url: SQLAlchemy URL of the metadata database.
        mlflow_tracking_uri: MLflow tracking URI.
        mlflow_registry_uri: MLflow registry URI (defaults to the tracking URI).
        secret_key: Flask secret key.
        duckdb_memory_limit: DuckDB ``memory_limit`` (e.g. ``1GB``).
        duckdb_threads: DuckDB ``threads``.
        host: Address the studio binds to.
        port: Port the studio binds to.
        debug: Dash/Flask debug mode; refused in production.
        background_manager: ``diskcache`` or ``celery`` for long callbacks.
        redis_url: Redis URL, used when ``background_manager`` is ``celery``.
        celery_broker_url: Celery broker (and result backend) URL; ``redis_url`` when unset.
        scheduler_monitor_cron: Cron expression of the scheduled monitor run.
        scheduler_alerts_cron: Cron expression of the scheduled alert evaluation.
        scheduler_expire_pending_cron: Cron expression of the expiry of overdue promotion requests.
        scheduler_audit_checkpoint_cron: Cron expression of the signed audit checkpoint.
    """

    env: str = "development"
    var_dir: Path = Path("var")
    data_uri: str = "var/data"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_session_token: str | None = field(default=None, repr=False)
    database_url: str = "sqlite:///var/studio.db"
    mlflow_tracking_uri: str = "sqlite:///var/mlflow.db"
    mlflow_registry_uri: str | None = None
    secret_key: str = field(default="", repr=False)
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 2
    host: str = "127.0.0.1"
    port: int = 8050
    debug: bool = False
    background_manager: str = "diskcache"
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = field(default=None, repr=False)
    scheduler_monitor_cron: str = "15 * * * *"
    scheduler_alerts_cron: str = "*/5 * * * *"
    scheduler_expire_pending_cron: str = "7 * * * *"
    scheduler_audit_checkpoint_cron: str = "30 * * * *"

    @property
    def is_production(self) -> bool:
        """Whether the studio runs with production safeguards."""
        return self.env == "production"

    @property
    def background_cache_dir(self) -> Path:
        """Folder of the diskcache background-callback manager (results, progress), under ``var_dir``."""
        return self.var_dir / "background-callbacks"

    @property
    def background_broker_url(self) -> str:
        """Broker of the Celery background-callback manager."""
        return self.celery_broker_url or self.redis_url

    @property
    def data_is_s3(self) -> bool:
        """Whether the Parquet store lives on S3."""
        return self.data_uri.startswith("s3://")

    def store_config(self):  # -> analytics.store.StoreConfig (imported lazily: analytics stays app-free)
        """Build the analytics store configuration from these settings.

        Returns:
            analytics.store.StoreConfig: the data root, S3 credentials and DuckDB limits.
        """
        from analytics.store import StoreConfig

        return StoreConfig(
            data_uri=self.data_uri,
            s3_endpoint_url=self.s3_endpoint_url,
            s3_region=self.s3_region,
            s3_access_key_id=self.s3_access_key_id,
            s3_secret_access_key=self.s3_secret_access_key,
            s3_session_token=self.s3_session_token,
            memory_limit=self.duckdb_memory_limit,
            threads=self.duckdb_threads,
        )


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(name: str, raw: str) -> bool:
    """Parse a boolean environment value strictly.

    Args:
        name: Variable name, for the error message.
        raw: Raw value.

    Returns:
        The boolean.

    Raises:
        SettingsError: if the value is not one of 1/0, true/false, yes/no, on/off.
    """
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def parse_int(name: str, raw: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Parse an integer environment value strictly, with optional bounds.

    Raises:
        SettingsError: if the value is not an integer or is out of bounds.
    """
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}={value} is above the maximum {maximum}")
    return value


def parse_size(name: str, raw: str) -> str:
    """Validate a memory size such as ``512MB`` or ``2GiB`` and return it normalised.

    Raises:
        SettingsError: if the value is not a number followed by a unit.
    """
    match = _SIZE_RE.match(raw)
    if not match:
        raise SettingsError(f"{name}={raw!r} is not a size such as 512MB or 2GB")
    number, unit = match.groups()
    return f"{number}{unit.upper().replace('IB', 'iB')}"


def parse_cron(name: str, raw: str) -> str:
    """Validate a five-field cron expression.

    Raises:
        SettingsError: if the expression does not have five fields of cron characters.
    """
    fields = raw.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,\-A-Za-z?]+", f) for f in fields):
        raise SettingsError(f"{name}={raw!r} is not a five-field cron expression")
    return " ".join(fields)


def _parse_data_uri(name: str, raw: str) -> str:
    if "://" in raw:
        parsed = urlparse(raw)
        if parsed.scheme != "s3":
            raise SettingsError(f"{name}={raw!r}: only local folders and s3://bucket/prefix are supported")
        if not parsed.netloc:
            raise SettingsError(f"{name}={raw!r}: an s3 URI needs a bucket (s3://bucket/prefix)")
        return f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    return raw


def _parse_database_url(name: str, raw: str) -> str:
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
        raise SettingsError(f"{name}={raw!r}: use sqlite:///path or postgresql+psycopg://user@host/db")
    return raw


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise SettingsError(f"{name}={raw!r} is not a URL with scheme {'/'.join(schemes)}")
    return raw


def _load_or_create_secret(var_dir: Path) -> str:
    """Return the embedded secret key, generating it once under ``var_dir``."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Create exclusively with 0600 so two workers starting together cannot overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment.

    Args:
        environ: Mapping to read from; defaults to ``os.environ``.

    Returns:
        The frozen settings.

    Raises:
        SettingsError: naming the first variable that is malformed or missing.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}

    mode = _get(env, "MMS_ENV") or "development"
    if mode not in ENVIRONMENTS:
        raise SettingsError(f"MMS_ENV={mode!r} must be one of {', '.join(ENVIRONMENTS)}")
    values["env"] = mode

    var_dir = Path(_get(env, "MMS_VAR_DIR") or "var")
    values["var_dir"] = var_dir

    raw = _get(env, "MMS_DATA_URI")
    values["data_uri"] = _parse_data_uri("MMS_DATA_URI", raw) if raw else str(var_dir / "data")

    raw = (
        _get(env, "MMS_S3_ENDPOINT_URL") or _get(env, "AWS_ENDPOINT_URL_S3") or _get(env, "AWS_ENDPOINT_URL")
    )
    if raw:
        values["s3_endpoint_url"] = _parse_url("MMS_S3_ENDPOINT_URL", raw, ("http", "https"))
    values["s3_region"] = (
        _get(env, "MMS_S3_REGION")
        or _get(env, "AWS_REGION")
        or _get(env, "AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    values["s3_access_key_id"] = _get(env, "MMS_S3_ACCESS_KEY_ID") or _get(env, "AWS_ACCESS_KEY_ID")
    values["s3_secret_access_key"] = _get(env, "MMS_S3_SECRET_ACCESS_KEY") or _get(
        env, "AWS_SECRET_ACCESS_KEY"
    )
    values["s3_session_token"] = _get(env, "MMS_S3_SESSION_TOKEN") or _get(env, "AWS_SESSION_TOKEN")

    raw = _get(env, "MMS_DATABASE_URL")
    values["database_url"] = (
        _parse_database_url("MMS_DATABASE_URL", raw) if raw else f"sqlite:///{var_dir / 'studio.db'}"
    )
    raw = _get(env, "MMS_MLFLOW_TRACKING_URI")
    values["mlflow_tracking_uri"] = raw or f"sqlite:///{var_dir / 'mlflow.db'}"
    values["mlflow_registry_uri"] = _get(env, "MMS_MLFLOW_REGISTRY_URI")

    raw = _get(env, "MMS_SECRET_KEY")
    if raw is not None:
        if len(raw) < 32:
            raise SettingsError("MMS_SECRET_KEY must be at least 32 characters")
        values["secret_key"] = raw
    elif mode == "production":
        raise SettingsError("MMS_SECRET_KEY is required when MMS_ENV=production")
    else:
        values["secret_key"] = _load_or_create_secret(var_dir)

    raw = _get(env, "MMS_DUCKDB_MEMORY_LIMIT")
    if raw:
        values["duckdb_memory_limit"] = parse_size("MMS_DUCKDB_MEMORY_LIMIT", raw)
    raw = _get(env, "MMS_DUCKDB_THREADS")
    if raw:
        values["duckdb_threads"] = parse_int("MMS_DUCKDB_THREADS", raw, minimum=1, maximum=256)

    values["host"] = _get(env, "MMS_HOST") or "127.0.0.1"
    raw = _get(env, "MMS_PORT")
    if raw:
        values["port"] = parse_int("MMS_PORT", raw, minimum=1, maximum=65535)
    raw = _get(env, "MMS_DEBUG")
    if raw:
        debug = parse_bool("MMS_DEBUG", raw)
        if debug and mode == "production":
            raise SettingsError("MMS_DEBUG=true is refused when MMS_ENV=production")
        values["debug"] = debug

    raw = _get(env, "MMS_BACKGROUND_MANAGER")
    if raw:
        if raw not in ("diskcache", "celery"):
            raise SettingsError(f"MMS_BACKGROUND_MANAGER={raw!r} must be diskcache or celery")
        values["background_manager"] = raw
    raw = _get(env, "MMS_REDIS_URL")
    if raw:
        values["redis_url"] = _parse_url("MMS_REDIS_URL", raw, ("redis", "rediss"))
    raw = _get(env, "MMS_CELERY_BROKER_URL")
    if raw:
        values["celery_broker_url"] = _parse_url("MMS_CELERY_BROKER_URL", raw, ("redis", "rediss"))
    raw = _get(env, "MMS_SCHEDULER_MONITOR_CRON")
    if raw:
        values["scheduler_monitor_cron"] = parse_cron("MMS_SCHEDULER_MONITOR_CRON", raw)
    raw = _get(env, "MMS_SCHEDULER_ALERTS_CRON")
    if raw:
        values["scheduler_alerts_cron"] = parse_cron("MMS_SCHEDULER_ALERTS_CRON", raw)
    raw = _get(env, "MMS_SCHEDULER_EXPIRE_PENDING_CRON")
    if raw:
        values["scheduler_expire_pending_cron"] = parse_cron("MMS_SCHEDULER_EXPIRE_PENDING_CRON", raw)
    raw = _get(env, "MMS_SCHEDULER_AUDIT_CHECKPOINT_CRON")
    if raw:
        values["scheduler_audit_checkpoint_cron"] = parse_cron("MMS_SCHEDULER_AUDIT_CHECKPOINT_CRON", raw)

    return Settings(**values)  # type: ignore[arg-type]
