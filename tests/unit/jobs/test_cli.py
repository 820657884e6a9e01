"""Argument parsing and exit codes of ``python -m jobs`` (no database)."""

from __future__ import annotations

import pytest

from jobs.cli import COMMANDS, EXIT_USAGE, build_parser, main

pytestmark = pytest.mark.unit


def register_echo(subparsers) -> None:
    parser = subparsers.add_parser("echo")
    parser.add_argument("word")
    parser.set_defaults(func=lambda args, settings: len(args.word))


def test_every_command_is_registered() -> None:
    parser = build_parser()
    names = [name for name, _register in COMMANDS]
    assert len(names) == len(set(names))
    assert {"migrate", "seed", "create-user", "audit"} <= set(names)
    for name in names:
        assert parser._subparsers is not None
        assert name in parser._subparsers._group_actions[0].choices
    assert parser.parse_args(["audit", "verify", "--chain", "ops"]).chain == "ops"
    assert parser.parse_args(["create-user", "bob", "--admin"]).admin is True


def test_commands_can_be_registered_by_callable_or_by_dotted_name() -> None:
    parser = build_parser([("echo", register_echo), ("migrate", "jobs.cli:register_migrate")])
    args = parser.parse_args(["echo", "hello"])
    assert args.func(args, None) == 5
    assert parser.parse_args(["migrate"]).command == "migrate"
    with pytest.raises(SystemExit):
        parser.parse_args(["seed"])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {}) == EXIT_USAGE
    assert "required" in capsys.readouterr().err
    assert main(["no-such-command"], {}) == EXIT_USAGE
    assert main(["audit"], {}) == EXIT_USAGE


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    assert "create-user" in capsys.readouterr().out


def test_bad_settings_exit_2_with_the_variable_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"], {"MMS_DATABASE_URL": "mysql://x/y"}) == EXIT_USAGE
    assert "MMS_DATABASE_URL" in capsys.readouterr().err


def test_unreachable_database_exits_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    environ = {
        "MMS_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "MMS_VAR_DIR": str(tmp_path),
    }
    assert main(["migrate"], environ) == EXIT_USAGE
    assert "cannot use the database" in capsys.readouterr().err
