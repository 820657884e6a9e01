"""The suite's xdist scheduling (``tests/fixtures/scheduling.py``) reaches pytest-xdist's scheduler.

pytest 9 stopped reading the attribute through which pytest-xdist 3.8 groups tests, and nothing
failed: the groups were simply ignored. This runs a small suite under the same options as
``tests/tools/run_suite.sh`` and checks which worker ran what.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

FILE_A = """
import pytest

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    marker = tmp_path_factory.getbasetemp().parent / "builds"
    marker.mkdir(exist_ok=True)
    (marker / "a").touch(exist_ok=False)  # a second build of this module fixture fails here

@pytest.mark.parametrize("i", range(6))
def test_a(built, i):
    pass

@pytest.mark.xdist_group("shared")
def test_a_shared():
    pass
"""

FILE_B = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_b(i):
    pass

@pytest.mark.xdist_group("shared")
@pytest.mark.parametrize("i", range(3))
def test_b_shared(i):
    pass
"""


def _run(tmp_path: Path, *options: str) -> list[tuple[str, str]]:
    """Run the two files above on three workers; (worker, node id) of each passed test."""
    (tmp_path / "test_a.py").write_text(FILE_A)
    (tmp_path / "test_b.py").write_text(FILE_B)
    # Only xdist and the plugin under test: the installed plugins that pytest loads by default
    # (playwright, hypothesis, schemathesis, ...) cost each of the four processes about 3 s of CPU.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-p", "tests.fixtures.scheduling",
         "-p", "no:cacheprovider", "-v", "-n", "3", *options, "--rootdir", str(tmp_path), "-c", "/dev/null",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"^\[(gw\d+)\] \[[ \d]+%\] PASSED (\S+)\s*$", result.stdout, re.MULTILINE)
    assert len(ran) == 16, result.stdout[-3000:]
    return ran


def test_a_file_and_a_group_each_run_on_one_worker(tmp_path: Path) -> None:
    # Had test_a.py been spread over workers, its module fixture would have been built twice and
    # refused: the run would have failed.
    ran = _run(tmp_path, "--dist", "loadgroup", "--no-loadscope-reorder")
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, nodeid in ran:
        workers[nodeid.split("::", 1)[1].split("[", 1)[0]].add(worker)
    assert len(workers["test_a"]) == 1 and len(workers["test_b"]) == 1, workers
    assert len(workers["test_a_shared"] | workers["test_b_shared"]) == 1, workers
    # The terminal shows ``test_a[0]@test_a.py]``: it re-parses the id, whose ``[`` opens parameters.
    scopes = {re.sub(r".*@([^\]]+)\]?$", r"\1", nodeid) for _, nodeid in ran}
    assert scopes == {"test_a.py", "test_b.py", "shared"}, ran
