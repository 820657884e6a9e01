"""Every `python -m jobs ...` that a workflow, container, Terraform file or the Makefile runs parses.

These commands run far from the tests (in GitHub Actions, ECS tasks, EventBridge schedules), so a
renamed flag would only fail in production. Each one found is parsed with the real CLI parser;
shell variables and Terraform expressions stand for any value.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from jobs.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    ROOT / "Makefile",
    *sorted((ROOT / ".github" / "workflows").glob("*.yml")),
    *sorted((ROOT / "examples").rglob("*.yml")),
    ROOT / "infra" / "Dockerfile",
    ROOT / "infra" / "docker-compose.yml",
    *sorted((ROOT / "infra" / "terraform").rglob("*.tf")),
    *sorted((ROOT / "infra" / "terraform").rglob("*.json")),
]
PLACEHOLDER = "x"
SHELL_COMMAND = re.compile(r"python -m jobs ((?:[^\n;&|`)\\]|\\\n)*)")
LIST_COMMAND = re.compile(r'\[\s*"python"\s*,\s*"-m"\s*,\s*"jobs"\s*,(.*?)\]', re.DOTALL)


def _code_lines(text: str) -> str:
    """The text without comment lines (documentation may abbreviate a command)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _shell_argv(arguments: str) -> list[str]:
    tokens = shlex.split(arguments.replace("\\\n", " "), comments=False)
    return [PLACEHOLDER if "$" in token else token for token in tokens]


def _list_argv(items: str) -> list[str]:
    argv = []
    for item in (part.strip() for part in items.split(",")):
        if not item:
            continue
        quoted = item.startswith('"') and item.endswith('"')
        value = item[1:-1] if quoted else PLACEHOLDER
        argv.append(PLACEHOLDER if "$" in value else value)
    return argv


def job_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` for every jobs command in the executable files of the repository."""
    found = []
    for path in SOURCES:
        text = _code_lines(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(ROOT))
        found += [(where, _shell_argv(match.group(1))) for match in SHELL_COMMAND.finditer(text)]
        found += [(where, _list_argv(match.group(1))) for match in LIST_COMMAND.finditer(text)]
    return found


def test_commands_are_found() -> None:
    places = {where for where, _argv in job_commands()}
    assert {"Makefile", "infra/terraform/scheduler.tf", "examples/github-actions/deploy-dev.yml"} <= places


@pytest.mark.parametrize(
    ("where", "argv"),
    [pytest.param(where, argv, id=f"{where}: {' '.join(argv)}"[:90]) for where, argv in job_commands()],
)
def test_command_parses(where: str, argv: list[str]) -> None:
    parser = build_parser(only=argv[0] if argv else None)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            # A variable where the parser wants one of its choices stands for a valid one.
            variable_choice = f"invalid choice: '{PLACEHOLDER}'" in output.getvalue()
            assert exit_.code == 0 or variable_choice, (
                f"{where}: `python -m jobs {' '.join(argv)}` does not parse:\n{output.getvalue()}"
            )
