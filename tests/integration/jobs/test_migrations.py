"""Alembic migrations on SQLite and PostgreSQL: up, down, and agreement with the models."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from jobs.db import make_engine
from jobs.db.migrate import current_revision, downgrade, head_revision, upgrade
from jobs.db.models import Base

pytestmark = pytest.mark.integration

# Tables the foundation needs whatever else later migrations add.
CORE_TABLES = {
    "users",
    "projects",
    "environments",
    "memberships",
    "pipelines",
    "pipeline_nodes",
    "audit_log",
}


def _schema_differences(url: str, metadata: sa.MetaData) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_model_table_and_matches_the_models(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()
    model_tables = set(Base.metadata.tables)
    assert model_tables >= CORE_TABLES
    assert _tables(database_url) == model_tables | {"alembic_version"}
    assert _schema_differences(database_url, Base.metadata) == []


def test_schema_comparison_does_notice_a_difference(database_url: str) -> None:
    upgrade(database_url)
    changed = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("users", changed, sa.Column("nickname", sa.String(32)), extend_existing=True)
    differences = _schema_differences(database_url, changed)
    assert [(kind, column.name) for kind, _schema, _table, column in differences] == [
        ("add_column", "nickname")
    ]


def test_downgrade_removes_everything_and_upgrade_restores_it(database_url: str) -> None:
    upgrade(database_url)
    downgrade(database_url, "base")
    assert current_revision(database_url) is None
    assert _tables(database_url) == {"alembic_version"}
    upgrade(database_url)
    model_tables = set(Base.metadata.tables)
    assert model_tables >= CORE_TABLES
    assert _tables(database_url) == model_tables | {"alembic_version"}
    assert _schema_differences(database_url, Base.metadata) == []


def test_upgrade_is_idempotent_and_safe_to_run_concurrently(database_url: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(database_url)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()
