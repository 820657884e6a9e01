"""Schemathesis against ``/api/v1/openapi.json``, once per role: no 5xx, nothing beyond the role's rights,
every answer documented (status, content type, headers, body schema), invalid input refused, auth enforced.

Runs in-process against the real WSGI app (studio + API) on a seeded SQLite studio with a
real MLflow store and Parquet metrics. Bounded: :data:`POSITIVE_EXAMPLES` valid-looking cases
per operation for each role, :data:`NEGATIVE_EXAMPLES` invalid ones per operation (as the
admin); the fuzzing stays under 90 s of CPU (about 30 s on an idle two-core machine).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from app.api import API_EXTENSION_KEY
from app.api.auth import STATE_KEY, ApiState, RateLimiter
from app.api.views import rule_paths
from jobs.permissions import Actor, Permission, Role, has_permission
from tests.unit.app.api.world import USERS, ApiWorld, build_world

pytestmark = pytest.mark.integration

POSITIVE_EXAMPLES = 8
NEGATIVE_EXAMPLES = 20
REPOSITORY = "example-org/credit-models"
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.negative_data_rejection,
    st_checks.ignored_auth,
    st_checks.missing_required_header,
    st_checks.unsupported_method,
]
FUZZ_BUDGET_S = 90


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    """A seeded studio; its API limits raised so thousands of generated requests stay unthrottled."""
    world = build_world(tmp_path_factory.mktemp("fuzz"))
    api_app = world.studio.app.server.extensions[API_EXTENSION_KEY]
    api_app.extensions[STATE_KEY] = ApiState(
        token_limiter=RateLimiter(1_000_000), failure_limiter=RateLimiter(1_000_000)
    )
    world.configure_github(REPOSITORY, "fuzzing webhook secret")
    try:
        yield world
    finally:
        world.studio.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_world: ApiWorld) -> Any:
    """The document as the running API serves it."""
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_world.studio.app.server)


def _actors(world: ApiWorld) -> dict[str, Actor]:
    return {f"Bearer {world.tokens[user]}": world.actor(user) for user in USERS}


def within_permissions(actors: dict[str, Actor]) -> Any:
    """A check: 2xx only for a token holding the operation's ``x-permission``, on the projects shown."""

    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        permission = case.operation.definition.raw.get("x-permission")
        if permission is None or not 200 <= response.status_code < 300:
            return None
        actor = actors.get(response.request.headers.get("Authorization", ""))
        needed = Permission(permission)
        if actor is None or not has_permission(actor, needed):
            who = actor.username if actor else "no known token"
            raise AssertionError(f"{who} lacks {needed.value} but got {response.status_code}")
        body = response.json()
        # Resources name their project in "project"; projects themselves in "slug".
        records = body.get("items", [body]) if isinstance(body, dict) else []
        shown = []
        for record in (r for r in records if isinstance(r, dict)):
            shown.append(record.get("project", record.get("slug")))
            shown.extend(v.get("project") for v in record.values() if isinstance(v, dict))  # nested resources
        for project in shown:
            if project is not None and not has_permission(actor, needed, project):
                raise AssertionError(f"{actor.username} was shown {project} without {needed.value} there")
        return True

    return check


def _fuzz_operation(
    operation: Any, mode: GenerationMode, examples: int, world: ApiWorld, user: str
) -> tuple[int, list[str]]:
    """Run up to ``examples`` generated cases of one operation; the distinct failures found."""
    checks = [within_permissions(_actors(world))]
    failures: dict[str, str] = {}
    calls = [0]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        headers = {}
        if operation.definition.raw.get("security"):
            headers["Authorization"] = f"Bearer {world.tokens[user]}"
        response = case.call(headers=headers)
        calls[0] += 1
        try:
            case.validate_response(response, checks=CHECKS, additional_checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as error:  # every failed check is collected, reported together
            key = f"{operation.label} [{mode.value}] {type(error).__name__}"
            failures.setdefault(key, f"{key}: {str(error)[:1500]}")

    run()
    return calls[0], list(failures.values())


def test_the_permission_check_catches_an_answer_beyond_the_role() -> None:
    only_forecast = Actor(1, "analyst", roles={"demand-forecast": frozenset({Role.DATA_TEAM})})
    check = within_permissions({"Bearer t": only_forecast})

    def answer(status: int, body: dict) -> SimpleNamespace:
        request = SimpleNamespace(headers={"Authorization": "Bearer t"})
        return SimpleNamespace(status_code=status, request=request, json=lambda: body)

    def case(permission: str) -> SimpleNamespace:
        return SimpleNamespace(
            operation=SimpleNamespace(definition=SimpleNamespace(raw={"x-permission": permission}))
        )

    assert check(None, answer(200, {"items": [{"slug": "demand-forecast"}]}), case("view_projects")) is True
    assert check(None, answer(403, {}), case("deploy")) is None
    with pytest.raises(AssertionError, match="shown credit-risk"):
        check(None, answer(200, {"items": [{"slug": "credit-risk"}]}), case("view_projects"))
    with pytest.raises(AssertionError, match="shown credit-risk"):
        check(None, answer(202, {"deployment": {"project": "credit-risk"}}), case("view_projects"))
    with pytest.raises(AssertionError, match="lacks deploy"):
        check(None, answer(200, {}), case("deploy"))


# Valid-looking requests as every role (where permissions matter: nothing beyond the role's rights),
# invalid ones as the admin, who passes every permission gate so each value reaches validation.
RUNS = [(user, GenerationMode.POSITIVE, POSITIVE_EXAMPLES) for user in USERS] + [
    ("admin", GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)
]


def test_the_api_honours_its_document_for_every_role(api_schema: Any, fuzz_world: ApiWorld) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # Every declared operation but the document itself (schemathesis leaves out the schema's own URL).
    declared = {f"{method} {path}" for method, path in rule_paths()} - {"GET /api/v1/openapi.json"}
    assert {op.label for op in operations} == declared
    started, cpu_started = time.monotonic(), time.process_time()
    calls: dict[str, int] = {}
    failures: list[str] = []
    for user, mode, examples in RUNS:
        run = f"{user}-{mode.value}"
        for operation in operations:
            made, found = _fuzz_operation(operation, mode, examples, fuzz_world, user)
            calls[run] = calls.get(run, 0) + made
            failures.extend(f"[{run}] {failure}" for failure in found)
        assert calls[run] >= len(operations) * min(examples, 5), run
    fuzzing, cpu = time.monotonic() - started, time.process_time() - cpu_started
    print(f"schemathesis: {sum(calls.values())} calls {calls} in {fuzzing:.1f} s ({cpu:.1f} s CPU)")
    assert not failures, "\n\n".join(failures)
    # CPU time: the wall clock also counts whatever else shares the machine's two cores.
    assert cpu < FUZZ_BUDGET_S
