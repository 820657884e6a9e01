"""Gateway configuration from MMS_GATEWAY_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError
from jobs.gateway.config import GatewayConfig

pytestmark = pytest.mark.unit


def test_round_trip_through_the_environment() -> None:
    config = GatewayConfig(
        environment="prod",
        routes="json:/etc/mms/routes.json",
        refresh_interval_s=2.5,
        preload=("credit-risk/credit-default", "credit-risk/churn"),
        logging_enabled=False,
        flush_rows=10,
    )
    assert GatewayConfig.from_environ(config.to_environ()) == config


def test_defaults_and_state_dir() -> None:
    config = GatewayConfig.from_environ({"MMS_GATEWAY_ENVIRONMENT": "staging"})
    assert (config.routes, config.refresh_interval_s, config.logging_enabled) == ("mlflow", 5.0, True)
    assert config.resolved_state_dir(Settings(var_dir=Path("/srv/var"))) == Path("/srv/var/gateway/staging")
    assert config.preload_models == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "MMS_GATEWAY_ENVIRONMENT is required"),
        ({"MMS_GATEWAY_ENVIRONMENT": "pr/od"}, "MMS_GATEWAY_ENVIRONMENT"),
        ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_ROUTES": "redis"}, "MMS_GATEWAY_ROUTES"),
        ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_FLUSH_ROWS": "many"}, "MMS_GATEWAY_FLUSH_ROWS"),
        ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_REFRESH_INTERVAL_S": "0"}, "REFRESH_INTERVAL_S"),
        ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_LOGGING_ENABLED": "maybe"}, "LOGGING_ENABLED"),
        ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_PRELOAD": "only-a-project"}, "MMS_GATEWAY_PRELOAD"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        GatewayConfig.from_environ(environ)
