"""``python -m jobs`` against SQLite and PostgreSQL."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from jobs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from jobs.db import make_engine, make_session_factory, session_scope
from jobs.db.models import User
from tests.integration.jobs.conftest import drop_audit_triggers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def environ(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"MMS_DATABASE_URL": database_url, "MMS_VAR_DIR": str(tmp_path / "var")}


def _usernames(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return list(session.scalars(select(User.username).order_by(User.id)))
    finally:
        engine.dispose()


def test_seed_then_verify_then_tamper(environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed"], environ) == EXIT_OK
    out = capsys.readouterr().out
    assert "sponsor2" in out and "sponsor2-demo-pass" in out and "admin-demo-pass" in out

    assert main(["seed"], environ) == EXIT_OK
    assert "demo accounts not created" in capsys.readouterr().out

    assert main(["audit", "verify"], environ) == EXIT_OK
    assert "OK (21 entries checked)" in capsys.readouterr().out

    engine = make_engine(environ["MMS_DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            drop_audit_triggers(session)
            session.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5"))
            session.commit()
    finally:
        engine.dispose()
    assert main(["audit", "verify"], environ) == EXIT_FAILURE
    assert "BROKEN at seq 5" in capsys.readouterr().out


def test_create_user_bootstraps_then_needs_an_admin_actor(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["migrate"], environ) == EXIT_OK
    assert "migrated to revision" in capsys.readouterr().out

    monkeypatch.setattr(sys, "stdin", io.StringIO("first-admin-pass\n"))
    assert main(["create-user", "boss", "--admin", "--password-stdin"], environ) == EXIT_OK
    assert "created user 'boss' (admin)" in capsys.readouterr().out

    monkeypatch.setattr(sys, "stdin", io.StringIO("second-user-pass\n"))
    assert main(["create-user", "worker", "--password-stdin"], environ) == EXIT_USAGE
    assert "--actor" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO("second-user-pass\n"))
    assert main(["create-user", "worker", "--password-stdin", "--actor", "ghost"], environ) == EXIT_USAGE
    assert "not an active user" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["create-user", "worker", "--password-stdin", "--actor", "boss"], environ) == EXIT_USAGE
    assert "at least 10 characters" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO("second-user-pass\n"))
    assert main(["create-user", "worker", "--password-stdin", "--actor", "boss"], environ) == EXIT_OK

    monkeypatch.setattr(sys, "stdin", io.StringIO("third-user-pass\n"))
    assert main(["create-user", "third", "--password-stdin", "--actor", "worker"], environ) == EXIT_USAGE
    assert "worker may not admin_users" in capsys.readouterr().err

    assert _usernames(environ["MMS_DATABASE_URL"]) == ["boss", "worker"]


def test_verify_on_an_unmigrated_database_is_a_usage_error(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify"], environ) == EXIT_USAGE
    assert "python -m jobs migrate" in capsys.readouterr().err


def test_module_entry_point_runs_as_a_process(environ: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs", "seed"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mlengineer-demo-pass" in result.stdout
    assert _usernames(environ["MMS_DATABASE_URL"])[:2] == ["admin", "mlengineer"]
