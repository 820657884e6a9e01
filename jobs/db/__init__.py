"""Metadata database: engines, sessions, models and migrations.

Build what you need explicitly (no module-level engine)::

    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        ...
"""

from jobs.db.session import is_sqlite, make_engine, make_session_factory, serialize, session_scope

__all__ = ["is_sqlite", "make_engine", "make_session_factory", "serialize", "session_scope"]
