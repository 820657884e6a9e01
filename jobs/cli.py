"""Command line of the studio's jobs: ``python -m jobs <command> ...``.

Each command is a ``(name, register)`` pair in :data:`COMMANDS`. ``register``
receives the subparsers object, adds its parser and sets ``func`` to a
handler ``func(args, settings) -> int``. It may be given as a callable or as
a ``"module:function"`` string, imported only when the parser is built, so a
job module adds a command with one line here and without import cycles.

Exit codes: 0 success, 1 the command ran and found a failure (such as a
broken audit chain), 2 usage or configuration error (message on stderr).
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, Settings], int]
Register = Callable[[Any], None]


class UsageError(Exception):
    """The command cannot run as asked; the message tells the user what to change."""


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.db.migrate import current_revision, upgrade

    upgrade(settings.database_url)
    print(f"database migrated to revision {current_revision(settings.database_url)}")
    return EXIT_OK


def register_migrate(subparsers: Any) -> None:
    """``migrate``: upgrade the metadata database to the newest revision."""
    parser = subparsers.add_parser("migrate", help="upgrade the metadata database to the newest schema")
    parser.set_defaults(func=_migrate)


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.db import make_engine, make_session_factory, session_scope
    from jobs.db.migrate import upgrade
    from jobs.seed import seed_demo_accounts

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            accounts = seed_demo_accounts(session)
    finally:
        engine.dispose()
    if not accounts:
        print("users already exist: demo accounts not created (seeding only runs on an empty database)")
        return EXIT_OK
    print("demo accounts (change or deactivate them before real use):")
    width = max(len(account.username) for account in accounts)
    for account in accounts:
        roles = "admin" if account.is_admin else ", ".join(role.value for role in account.roles)
        print(f"  {account.username:<{width}}  password: {account.password:<24}  {roles}")
    return EXIT_OK


def register_seed(subparsers: Any) -> None:
    """``seed``: migrate, then create the demo projects and accounts on an empty database."""
    parser = subparsers.add_parser("seed", help="migrate and create demo accounts (empty database only)")
    parser.set_defaults(func=_seed)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to prompt for the password: use --password-stdin")
    password = getpass.getpass("password: ")
    if password != getpass.getpass("repeat password: "):
        raise UsageError("the passwords differ")
    return password


def _create_user(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.db import make_engine, make_session_factory, session_scope
    from jobs.users import actor_for, count_users, create_user, get_user

    password = _read_password(args)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine), write=True) as session:
            actor = None
            if count_users(session) > 0:
                if not args.actor:
                    raise UsageError("users exist already: name the acting admin with --actor USERNAME")
                acting_user = get_user(session, args.actor)
                actor = actor_for(session, acting_user.id) if acting_user else None
                if actor is None:
                    raise UsageError(f"--actor {args.actor!r} is not an active user")
            user = create_user(
                session,
                actor,
                args.username,
                password,
                display_name=args.display_name,
                is_admin=args.admin,
            )
            print(f"created user {user.username!r}{' (admin)' if user.is_admin else ''}")
    finally:
        engine.dispose()
    return EXIT_OK


def register_create_user(subparsers: Any) -> None:
    """``create-user``: create an account (the first one needs no ``--actor``)."""
    parser = subparsers.add_parser("create-user", help="create a user account")
    parser.add_argument("username")
    parser.add_argument("--display-name", default="")
    parser.add_argument("--admin", action="store_true", help="make the user a global administrator")
    parser.add_argument(
        "--actor", help="username of the admin creating the account (not needed for the first)"
    )
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.set_defaults(func=_create_user)


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.audit import verify
    from jobs.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            result = verify(session, args.chain)
    finally:
        engine.dispose()
    if result.ok:
        print(f"audit chain {args.chain!r}: OK ({result.checked} entries checked)")
        return EXIT_OK
    print(
        f"audit chain {args.chain!r}: BROKEN at seq {result.first_broken_seq}: {result.reason} "
        f"({result.checked} entries checked)"
    )
    return EXIT_FAILURE


def register_audit(subparsers: Any) -> None:
    """``audit verify``: check the hash chain of the audit log."""
    parser = subparsers.add_parser("audit", help="audit log tools")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify_parser = actions.add_parser("verify", help="verify the audit hash chain (exit 1 when broken)")
    verify_parser.add_argument("--chain", default="main")
    verify_parser.set_defaults(func=_audit_verify)


COMMANDS: list[tuple[str, Register | str]] = [
    ("migrate", register_migrate),
    ("seed", register_seed),
    ("create-user", register_create_user),
    ("audit", register_audit),
    ("train", "jobs.training:register_train"),
    ("demo-data", "jobs.demo_data:register_demo_data"),
    ("alerts", "jobs.alerts:register_cli"),
    ("scheduler", "jobs.scheduler:register_cli"),
    ("monitor", "jobs.monitor:register_monitor"),
    ("demo", "jobs.demo:register_demo"),
    ("serve", "jobs.gateway.cli:register_serve"),
    ("batch-predict", "jobs.batch_predict:register_batch_predict"),
    ("profile-unit", "jobs.scaleout.profile_unit:register_profile_unit"),
    ("merge", "jobs.scaleout.merge:register_merge"),
    ("pipeline", "jobs.pipelines:register_cli"),
    ("integrations", "jobs.integrations:register_cli"),
    ("tokens", "jobs.tokens:register_cli"),
    ("github", "jobs.github:register_cli"),
    ("deploy", "jobs.deploy:register_cli"),
]


def _resolve(register: Register | str) -> Register:
    if callable(register):
        return register
    module_name, _, attribute = register.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def build_parser(
    commands: Sequence[tuple[str, Register | str]] | None = None, *, only: str | None = None
) -> argparse.ArgumentParser:
    """The argument parser with every command of ``commands`` (default :data:`COMMANDS`).

    Args:
        commands: ``(name, register)`` pairs.
        only: Register just this command (when it is one of ``commands``), importing no other
            command's module.
    """
    parser = argparse.ArgumentParser(prog="python -m jobs", description="Model Monitoring Studio jobs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    registry = list(commands if commands is not None else COMMANDS)
    if only is not None and any(name == only for name, _ in registry):
        registry = [(name, register) for name, register in registry if name == only]
    for _name, register in registry:
        _resolve(register)(subparsers)
    return parser


def _command_name(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the first argument; the top-level parser has no other option)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def _exit_code_of(error: Exception) -> int | None:
    """``EXIT_USAGE`` for an error the user can fix (settings, usage, input, permission, database)."""
    if isinstance(error, SettingsError | UsageError):
        return EXIT_USAGE
    user_errors = [
        getattr(sys.modules[module], name)
        for module, name in (
            ("jobs.users", "InvalidInput"),
            ("jobs.users", "Conflict"),
            ("jobs.permissions", "Forbidden"),
        )
        if module in sys.modules
    ]
    if user_errors and isinstance(error, tuple(user_errors)):
        return EXIT_USAGE
    return None


def _database_error(error: Exception) -> bool:
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.OperationalError | exc.ProgrammingError)


def main(
    argv: Sequence[str] | None = None,
    environ: dict[str, str] | None = None,
    *,
    whole_process: bool = False,
) -> int:
    """Run one command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).
        environ: Environment to read settings from (default ``os.environ``).
        whole_process: The command is all this process runs (``python -m jobs``): it may then set
            process-wide state that makes it cheaper (the handler sees ``args.whole_process``).

    Returns:
        The exit code (0 ok, 1 failure found, 2 usage or configuration error).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_name(arguments))
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_request:  # argparse already printed the usage message
        return int(exit_request.code or 0)
    args.whole_process = whole_process
    try:
        settings = load_settings(environ)
        return args.func(args, settings)
    except Exception as error:
        if _database_error(error):
            print(
                f"error: cannot use the database ({error.orig}); check MMS_DATABASE_URL, "  # type: ignore[attr-defined]
                "and run `python -m jobs migrate` if the schema is missing",
                file=sys.stderr,
            )
            return EXIT_USAGE
        code = _exit_code_of(error)
        if code is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return code
