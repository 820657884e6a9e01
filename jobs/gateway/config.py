"""Configuration of the inference gateway, read from ``MMS_GATEWAY_*`` variables.

The gateway runs in worker processes started by uvicorn or gunicorn, which
import the app factory by name; the configuration therefore travels through the
environment. ``python -m jobs serve`` turns its options into these variables;
under gunicorn, set them yourself (``docs/GATEWAY.md`` lists them). Parsing is
strict: a bad value raises :class:`~app.settings.SettingsError` naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from app.settings import Settings, SettingsError, parse_bool, parse_int
from jobs.contracts import key_segment_problem

PREFIX = "MMS_GATEWAY_"


@dataclass(frozen=True)
class GatewayConfig:
    """Every knob of the gateway.

    Attributes:
        environment: The environment served (``dev``, ``staging``, ``prod``); routes and
            inference-log partitions use it.
        routes: Routing source: ``mlflow`` (aliases, the default) or ``json:<path>``.
        refresh_interval_s: How often the routes of served models are checked.
        preload: Models (``project/model``) loaded at start-up; ``/readyz`` waits for them.
        state_dir: Local folder for spill files, metrics snapshots and the request-date map;
            empty means ``<MMS_VAR_DIR>/gateway/<environment>``.
        logging_enabled: Whether predictions are written to ``inference_logs``.
        flush_rows: Flush the log buffer once this many rows wait.
        flush_interval_s: Flush the log buffer at least this often.
        max_buffer_rows: Rows in memory beyond which a request spills them to disk itself.
        retry_interval_s: How often an unavailable store is tried again.
        max_batch_rows: Most records scored in one estimator call when requests are batched.
        score_timeout_s: Scoring deadline of one request (queueing for the model included);
            a request that misses it is answered 504 and logged as a ``timeout`` error.
        max_instances: Most instances accepted in one batch request.
        max_body_bytes: Largest request body accepted.
        request_date_slots: Capacity of the shared request-id -> day map.
        feedback_lookup_days: Days of ``inference_logs`` searched for a request id the map
            forgot (0 disables the search).
        shutdown_timeout_s: Time given to the store to take the last rows at shutdown.
    """

    environment: str
    routes: str = "mlflow"
    refresh_interval_s: float = 5.0
    preload: tuple[str, ...] = ()
    state_dir: str = ""
    logging_enabled: bool = True
    flush_rows: int = 20_000
    flush_interval_s: float = 10.0
    max_buffer_rows: int = 100_000
    retry_interval_s: float = 5.0
    max_batch_rows: int = 256
    score_timeout_s: float = 5.0
    max_instances: int = 10_000
    max_body_bytes: int = 32 * 1024 * 1024
    request_date_slots: int = 1 << 20
    feedback_lookup_days: int = 3
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        problem = key_segment_problem(self.environment)
        if problem:
            raise SettingsError(f"{PREFIX}ENVIRONMENT: {problem}")
        for item in self.preload:
            project, _, model = item.partition("/")
            if key_segment_problem(project) or key_segment_problem(model):
                raise SettingsError(f"{PREFIX}PRELOAD: {item!r} is not project/model")
        if not (self.routes == "mlflow" or (self.routes.startswith("json:") and len(self.routes) > 5)):
            raise SettingsError(f"{PREFIX}ROUTES={self.routes!r} must be 'mlflow' or 'json:<path>'")
        for name in (
            "refresh_interval_s",
            "flush_interval_s",
            "retry_interval_s",
            "shutdown_timeout_s",
            "score_timeout_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{PREFIX}{name.upper()}={value!r} must be a positive, finite number")
        if not 1 <= self.flush_rows <= self.max_buffer_rows:
            raise SettingsError(f"{PREFIX}FLUSH_ROWS must be between 1 and {PREFIX}MAX_BUFFER_ROWS")

    def resolved_state_dir(self, settings: Settings) -> Path:
        """The state folder: the configured one or ``<var_dir>/gateway/<environment>``."""
        return (
            Path(self.state_dir) if self.state_dir else Path(settings.var_dir) / "gateway" / self.environment
        )

    @property
    def preload_models(self) -> list[tuple[str, str]]:
        """``preload`` as ``(project, model)`` pairs."""
        return [tuple(item.split("/", 1)) for item in self.preload]  # type: ignore[misc]

    def to_environ(self) -> dict[str, str]:
        """The ``MMS_GATEWAY_*`` variables that rebuild this configuration."""
        values: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            values[PREFIX + item.name.upper()] = text
        return values

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read the configuration from ``MMS_GATEWAY_*`` variables.

        Raises:
            SettingsError: naming the first missing or malformed variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            name = PREFIX + item.name.upper()
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and item.name != "preload"):
                continue
            raw = raw.strip()
            if item.type in ("int", int):
                values[item.name] = parse_int(name, raw, minimum=0)
            elif item.type in ("float", float):
                try:
                    values[item.name] = float(raw)
                except ValueError as error:
                    raise SettingsError(f"{name}={raw!r} is not a number") from error
            elif item.type in ("bool", bool):
                values[item.name] = parse_bool(name, raw)
            elif item.name == "preload":
                values[item.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[item.name] = raw
        if "environment" not in values:
            raise SettingsError(f"{PREFIX}ENVIRONMENT is required (the environment the gateway serves)")
        return cls(**values)  # type: ignore[arg-type]
