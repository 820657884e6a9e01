"""Audit log page callbacks: server-side filters and paging, per-role visibility, chain verification."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dash
import pytest
from dash.exceptions import PreventUpdate
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import func, select, text

import callbacks.audit as cb
from jobs import audit
from jobs.db.models import AuditEntry
from jobs.projects import create_project
from tests.unit.app.studio import Studio, as_sent, build_studio, signed_in, texts

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"
EXTRA_ENTRIES = 60


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A seeded studio, a project nobody but the admin sees, and 60 extra entries by ``robot``."""
    built = build_studio(tmp_path_factory.mktemp("audit-callbacks"))
    with built.db(write=True) as session:
        create_project(session, built.actor("admin"), "hidden-project", XSS_NAME)
        for index in range(EXTRA_ENTRIES):
            audit.append(session, "robot", "robot.tick", f"robot:{index}", {"index": index})
        audit.append(session, "robot", "model.train", "model:credit-risk/x", {"project": "credit-risk"})
        audit.append(session, "robot", "model.train", "model:hidden-project/x", {"project": "hidden-project"})
    with built:
        yield built


def rows(table: Any) -> list[list[str]]:
    """The cell texts of each body row of the entries table."""
    tree = as_sent(table)
    body = tree["props"]["children"][1]["props"]["children"]
    return [texts(row) for row in body]


def listing(
    studio: Studio, username: str, page: int = 1, **filters: str | None
) -> tuple[Any, str, Any, bool, bool]:
    with signed_in(studio, username):
        return cb.show_entries(
            page,
            None,
            filters.get("actor"),
            filters.get("action"),
            filters.get("date_from"),
            filters.get("date_to"),
        )


def total_entries(studio: Studio) -> int:
    with studio.db() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry))


def test_admin_pages_through_everything_fifty_at_a_time(studio: Studio) -> None:
    total = total_entries(studio)
    pages = -(-total // cb.PAGE_SIZE)
    first, info, message, previous_disabled, next_disabled = listing(studio, "admin")
    assert info == f"Page 1 of {pages} · {total} entries"
    assert message is None and previous_disabled and not next_disabled
    first_rows = rows(first)
    assert len(first_rows) == cb.PAGE_SIZE
    assert first_rows[0][3] == "model.train"  # newest first
    last, info, _m, previous_disabled, next_disabled = listing(studio, "admin", page=pages + 5)
    assert info.startswith(f"Page {pages} of {pages}") and not previous_disabled and next_disabled
    assert len(rows(last)) == total - (pages - 1) * cb.PAGE_SIZE
    seqs = [
        int(row[0]) for page in range(1, pages + 1) for row in rows(listing(studio, "admin", page=page)[0])
    ]
    assert sorted(seqs) == list(range(1, total + 1))


def test_filters_by_actor_action_prefix_and_date(studio: Studio) -> None:
    table, info, *_ = listing(studio, "admin", actor="robot", action="robot.")
    assert info == f"Page 1 of 2 · {EXTRA_ENTRIES} entries"
    assert {row[2] for row in rows(table)} == {"robot"}
    table, info, *_ = listing(studio, "admin", action="user.role_")
    assert {row[3] for row in rows(table)} == {"user.role_grant"}
    today = datetime.now(UTC).date()
    _t, info, *_ = listing(studio, "admin", date_from=today.isoformat(), date_to=today.isoformat())
    assert info.endswith(f"· {total_entries(studio)} entries")
    empty, info, *_ = listing(studio, "admin", date_to=(today - timedelta(days=2)).isoformat())
    assert info == "Page 1 of 1 · 0 entries"
    assert "No audit entry matches these filters." in texts(as_sent(empty))
    # LIKE wildcards in the prefix are literal characters.
    _t, info, *_ = listing(studio, "admin", action="%")
    assert info.endswith("· 0 entries")


def test_bad_dates_say_what_is_wrong(studio: Studio) -> None:
    body, info, message, *_ = listing(studio, "admin", date_from="27/11/2026")
    assert body is dash.no_update and info is dash.no_update
    assert message.color == "danger" and "YYYY-MM-DD" in message.children
    _b, _i, message, *_ = listing(studio, "admin", date_from="2026-02-02", date_to="2026-02-01")
    assert "ends before it starts" in message.children


@pytest.mark.parametrize("username", ["monitoring", "sponsor1"])
def test_project_roles_see_only_their_projects_entries(studio: Studio, username: str) -> None:
    table, info, *_ = listing(studio, username, action="model.train")
    assert info.endswith("· 1 entry")
    assert rows(table)[0][4] == "model:credit-risk/x"
    _t, info, *_ = listing(studio, username, action="auth.")
    assert info.endswith("· 0 entries")  # sign-ins stay with administrators
    _t, info, *_ = listing(studio, username, actor="robot", action="robot.")
    assert info.endswith("· 0 entries")
    table, _info, *_ = listing(studio, username, action="project.create")
    targets = {row[4] for row in rows(table)}
    assert targets == {"project:credit-risk", "project:demand-forecast"}


@pytest.mark.parametrize("username", ["mlengineer", "datateam", "production"])
def test_roles_without_view_audit_get_nothing(studio: Studio, username: str) -> None:
    with signed_in(studio, username):
        with pytest.raises(PreventUpdate):
            cb.show_entries(1, None, None, None, None, None)
        with pytest.raises(PreventUpdate):
            cb.next_page(1, 1)


def test_paging_buttons(studio: Studio) -> None:
    with signed_in(studio, "monitoring"):
        assert cb.next_page(1, 2) == 3
        assert cb.previous_page(1, 1) == 1
        assert cb.previous_page(1, 4) == 3
        assert cb.first_page_on_filter(1) == 1


def test_verify_is_for_administrators_and_reports_an_intact_chain(studio: Studio) -> None:
    with signed_in(studio, "monitoring"):
        assert cb.verification_hidden("audit-verify-section") is True
        with pytest.raises(PreventUpdate):
            cb.verify_clicked(1)
    with signed_in(studio, "admin"):
        assert cb.verification_hidden("audit-verify-section") is False
        (result,) = cb.verify_clicked(1)
    assert result.color == "success"
    assert result.children == f"Chain 'main' is intact: {total_entries(studio)} entries checked."


def test_verify_names_the_first_broken_sequence_number(tmp_path) -> None:
    tampered = build_studio(tmp_path)
    try:
        with tampered.db(write=True) as session:
            session.execute(text("DROP TRIGGER audit_log_refuse_update"))
            session.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
        with signed_in(tampered, "admin"):
            (result,) = cb.verify_clicked(1)
    finally:
        tampered.close()
    assert result.color == "danger"
    assert "broken at seq 3: hash does not match the entry's content (entry edited)" in result.children


def test_names_with_markup_are_plain_text(studio: Studio) -> None:
    table, *_ = listing(studio, "admin", action="project.create")
    serialized = json.dumps(table, cls=PlotlyJSONEncoder)
    assert any(XSS_NAME in cell for row in rows(table) for cell in row)
    assert "dangerously_allow_html" not in serialized
