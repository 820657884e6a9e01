"""The layering rules of DEVELOPERS.md, checked on the real import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_analytics_and_jobs_load_neither_dash_nor_flask() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "import analytics, jobs\n"
        "for pkg in (analytics, jobs):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if '.migrations' in info.name or info.name.endswith('__main__'):\n"
        "            continue\n"
        "        importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'dash', 'flask', 'flask_login'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"web modules loaded: {result.stdout.strip()}"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


# Entry points may read the studio settings (a stdlib-only module) to build their configuration.
SETTINGS_MODULE = "app.settings"
ENTRY_POINTS = {"analytics/cli.py", "analytics/__main__.py"}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("analytics", {"dash", "flask", "flask_login", "app", "callbacks", "pages", "jobs"}),
        ("jobs", {"dash", "flask", "flask_login", "app", "callbacks", "pages"}),
        ("pages", {"callbacks", "jobs", "analytics"}),
    ],
)
def test_packages_import_only_downwards(package: str, forbidden: set[str]) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        modules = _imported_modules(path)
        if package == "jobs" or relative in ENTRY_POINTS:
            modules.discard(SETTINGS_MODULE)
        hits = {m for m in modules if m.split(".")[0] in forbidden}
        if hits:
            offenders[relative] = sorted(hits)
    assert offenders == {}
