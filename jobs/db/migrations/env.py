"""Alembic environment of the metadata database.

Run through :mod:`jobs.db.migrate`, which passes an open connection in
``config.attributes["connection"]``. Running the ``alembic`` command line
directly works too: set ``sqlalchemy.url`` (``-x url=...``) or ``MMS_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context

from jobs.db.models import Base

target_metadata = Base.metadata


def _run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url_from_cli() -> str:
    from app.settings import load_settings

    return context.get_x_argument(as_dictionary=True).get("url") or load_settings().database_url


def run_migrations_online() -> None:
    """Migrate over the given connection, or over a fresh engine when run from the alembic CLI."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from jobs.db.session import make_engine

    engine = make_engine(_url_from_cli())
    try:
        with engine.connect() as fresh_connection:
            _run_on(fresh_connection)
            fresh_connection.commit()
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    """Emit the migration as SQL (``alembic upgrade head --sql``)."""
    context.configure(url=_url_from_cli(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
