"""Signed-in browser sessions, kept server side: sign-out ends a session wherever its cookie went.

The session cookie is signed, not secret-bound: a copy of it (from a shared machine, a proxy
log, a stolen backup) used to stay valid for the cookie's whole lifetime after the user had
signed out. Each sign-in now creates a ``web_sessions`` row; the cookie carries a random
token whose SHA-256 is the row's ``token_hash`` (the token itself is never stored), and every
request's user loader (:mod:`app.auth`) requires the row to exist and be unexpired. Sign-out
deletes the row. The behaviour is in :mod:`jobs.web_sessions`; the
module is imported at the end of :mod:`jobs.db.models`, so Alembic and every session see the
table, which migration ``0006_web_sessions`` creates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from jobs.db.models import Base, UTCDateTime, utcnow


class WebSession(Base):
    """One signed-in browser session of a user, valid until ``expires_at`` or sign-out."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
