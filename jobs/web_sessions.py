"""Browser sessions kept server side: opened at sign-in, checked on every request, ended at sign-out.

The table is :class:`jobs.db.web_sessions.WebSession`; :mod:`app.auth` calls these. A session's token
travels in the signed session cookie and is stored only as its hash, as API tokens are
(:func:`jobs.tokens.hash_token`).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.db.models import utcnow
from jobs.db.web_sessions import WebSession
from jobs.tokens import hash_token


def open_web_session(
    session: Session, user_id: int, lifetime: timedelta, *, now: datetime | None = None
) -> str:
    """Record a new signed-in browser session of ``user_id`` and return its token.

    The token goes into the signed session cookie; only its SHA-256 is stored. The user's
    expired sessions are deleted on the way, so the table holds live sessions only.

    Args:
        session: Session of the transaction (the caller commits).
        user_id: The user who signed in.
        lifetime: How long the session lasts (the cookie's lifetime).
        now: The current time (tests).
    """
    now = now or utcnow()
    session.execute(delete(WebSession).where(WebSession.user_id == user_id, WebSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(token_hash=hash_token(token), user_id=user_id, created_at=now, expires_at=now + lifetime)
    )
    session.flush()
    return token


def web_session_user(session: Session, token: str, *, now: datetime | None = None) -> int | None:
    """The user id of the live browser session ``token``, or ``None`` (unknown, ended or expired)."""
    if not token:
        return None
    row = session.scalar(select(WebSession).where(WebSession.token_hash == hash_token(token)))
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    return row.user_id


def close_web_session(session: Session, token: str) -> bool:
    """End the browser session ``token`` (sign-out); ``False`` when there was none."""
    if not token:
        return False
    ended = session.execute(delete(WebSession).where(WebSession.token_hash == hash_token(token)))
    return bool(ended.rowcount)
