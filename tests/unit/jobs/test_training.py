"""Where the training job takes the commit it records as ``mms.git_sha`` from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.training import resolve_git_sha

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with one commit, and that commit's SHA."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path)}
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *command], cwd=repo, env=env, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    return repo, head


def test_an_explicit_commit_wins_and_is_normalised(checkout: tuple[Path, str]) -> None:
    repo, _head = checkout
    assert resolve_git_sha(f" {SHA.upper()} ", environ={"GITHUB_SHA": "f" * 40}, code_dir=repo) == SHA


@pytest.mark.parametrize("bad", ["abc123", SHA + "0", "g" * 40, "HEAD"])
def test_a_malformed_explicit_commit_is_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="40-character"):
        resolve_git_sha(bad, environ={}, code_dir=tmp_path)


def test_github_sha_comes_before_the_checkout(checkout: tuple[Path, str]) -> None:
    repo, _head = checkout
    assert resolve_git_sha(environ={"GITHUB_SHA": SHA}, code_dir=repo) == SHA
    assert resolve_git_sha("", environ={"GITHUB_SHA": SHA}, code_dir=repo) == SHA


def test_the_checkout_head_when_nothing_else_names_the_commit(checkout: tuple[Path, str]) -> None:
    repo, head = checkout
    assert resolve_git_sha(environ={}, code_dir=repo) == head
    # A malformed GITHUB_SHA is ignored (with a warning), not an error: training must not fail on it.
    assert resolve_git_sha(environ={"GITHUB_SHA": "abc"}, code_dir=repo) == head


def test_no_commit_anywhere_is_none_not_an_error(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    assert resolve_git_sha(environ={}, code_dir=outside) is None
    assert resolve_git_sha(environ={}, code_dir=tmp_path / "missing-folder") is None
