"""Strict parsing of the MMS_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_embedded_defaults_live_under_var_dir(tmp_path: Path) -> None:
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path)})
    assert settings.env == "development"
    assert settings.data_uri == str(tmp_path / "data")
    assert settings.database_url == f"sqlite:///{tmp_path / 'studio.db'}"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not settings.data_is_s3
    assert settings.port == 8050


def test_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings({"MMS_VAR_DIR": str(tmp_path)}).secret_key
    second = load_settings({"MMS_VAR_DIR": str(tmp_path)}).secret_key
    assert len(first) >= 32
    assert first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_requires_a_secret_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="MMS_SECRET_KEY"):
        load_settings({"MMS_ENV": "production", "MMS_VAR_DIR": str(tmp_path)})
    assert not (tmp_path / "secret_key").exists()


def test_production_refuses_debug() -> None:
    with pytest.raises(SettingsError, match="MMS_DEBUG"):
        load_settings({"MMS_ENV": "production", "MMS_SECRET_KEY": "k" * 40, "MMS_DEBUG": "true"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MMS_ENV", "staging"),
        ("MMS_PORT", "80a"),
        ("MMS_PORT", "70000"),
        ("MMS_DUCKDB_THREADS", "0"),
        ("MMS_DUCKDB_MEMORY_LIMIT", "lots"),
        ("MMS_DEBUG", "maybe"),
        ("MMS_DATA_URI", "gs://bucket/x"),
        ("MMS_DATA_URI", "s3:///no-bucket"),
        ("MMS_DATABASE_URL", "mysql://x/y"),
        ("MMS_S3_ENDPOINT_URL", "localhost:9000"),
        ("MMS_SECRET_KEY", "short"),
        ("MMS_BACKGROUND_MANAGER", "threads"),
        ("MMS_SCHEDULER_MONITOR_CRON", "every hour"),
        ("MMS_SCHEDULER_EXPIRE_PENDING_CRON", "7 * * *"),
        ("MMS_SCHEDULER_AUDIT_CHECKPOINT_CRON", "30 * * * * *"),
        ("MMS_REDIS_URL", "http://127.0.0.1:6379"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({"MMS_VAR_DIR": str(tmp_path), name: value})


def test_s3_and_postgres_by_settings_alone(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MMS_VAR_DIR": str(tmp_path),
            "MMS_DATA_URI": "s3://bucket/prefix/",
            "MMS_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "AWS_ACCESS_KEY_ID": "ak",
            "AWS_SECRET_ACCESS_KEY": "secret-value-42",
            "MMS_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/test",
            "MMS_DUCKDB_MEMORY_LIMIT": "512mb",
            "MMS_DUCKDB_THREADS": "4",
        }
    )
    assert settings.data_uri == "s3://bucket/prefix"
    assert settings.data_is_s3
    assert settings.s3_access_key_id == "ak"
    assert settings.duckdb_memory_limit == "512MB"
    assert settings.duckdb_threads == 4
    assert "secret-value-42" not in repr(settings)
    config = settings.store_config()
    assert config.data_uri == "s3://bucket/prefix"
    assert config.s3_endpoint_url == "http://127.0.0.1:8333"
    assert config.threads == 4


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings({"MMS_VAR_DIR": str(tmp_path)})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
