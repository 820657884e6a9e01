"""Where an environment's traffic goes: the routing-table contract and its two sources.

A *route* is ``(version, weight)`` with the weight in basis points (0-10,000) of
an environment's requests. :meth:`RoutingTable.current_routes` returns the routes
of one ``(project, model, environment)`` in *bucket order*: a request whose
bucket (:func:`request_bucket`, ``hash(request_id) mod 10000``) is below the first
route's weight goes to the first route, the next weight's worth of buckets to the
second, and so on. A canary is listed first, so ``bucket < canary_weight`` sends a
request to the canary and raising the weight never moves a request id that was
already on the canary back to the stable version (sticky routing).

Two sources implement the contract (``docs/GATEWAY.md`` describes both in full):

* :class:`MlflowAliasRoutes` (default) reads the registered model
  ``<project>.<model>``: alias ``<env>`` is the stable version, alias
  ``<env>-canary`` plus the registered-model tag ``mms.canary_weight.<env>``
  (integer basis points) is the canary.
* :class:`JsonFileRoutes` reads a JSON document written atomically by the
  deployment job (see :data:`ROUTES_FORMAT`).

The gateway asks the source every few seconds (never per request) and swaps its
routing snapshot only once every version it routes to is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jobs import registry
from jobs.contracts import key_segment_problem

TOTAL_WEIGHT = 10_000
"""Weights are basis points: the routes of one environment add up to this."""

CANARY_ALIAS_SUFFIX = "-canary"
CANARY_WEIGHT_TAG_PREFIX = "mms.canary_weight."
ROUTES_FORMAT = 1
"""Version of the JSON routes document understood by :class:`JsonFileRoutes`."""


class NoRoute(LookupError):
    """The model is not deployed in the environment (unknown model, or no version routed)."""


class RoutingError(RuntimeError):
    """The routing source is unreachable or holds an invalid table; the message says which."""


@dataclass(frozen=True)
class Route:
    """One version's share of an environment's traffic.

    Attributes:
        version: Registered model version (a key segment such as ``"3"``).
        weight: Share of the requests in basis points (0-10,000).
    """

    version: str
    weight: int


@runtime_checkable
class RoutingTable(Protocol):
    """A source of the current traffic split of a model in an environment."""

    def current_routes(self, project: str, model: str, environment: str) -> list[Route]:
        """The routes in bucket order; weights are basis points adding up to 10,000.

        Raises:
            NoRoute: if nothing of ``project/model`` is deployed in ``environment``.
            RoutingError: if the source cannot be read or is invalid.
        """
        ...


def request_bucket(request_id: str) -> int:
    """The routing bucket of a request id, 0-9,999, equal in every process and on every machine.

    Python's ``hash`` is salted per process, so an unkeyed BLAKE2b digest is used:
    the same id lands in the same bucket in both gateway workers and after a restart.
    """
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % TOTAL_WEIGHT


def choose_route(routes: Sequence[Route], bucket: int) -> Route:
    """The route that owns ``bucket`` (cumulative weights in list order).

    Raises:
        NoRoute: if ``routes`` is empty.
    """
    if not routes:
        raise NoRoute("no version is routed")
    cumulative = 0
    for route in routes:
        cumulative += route.weight
        if bucket < cumulative:
            return route
    return routes[-1]


def validate_routes(routes: Sequence[Route], where: str) -> list[Route]:
    """Check versions and weights of a routing table; drop zero-weight routes.

    Args:
        routes: Candidate routes in bucket order.
        where: What is being checked, for the error message.

    Returns:
        The routes with positive weight.

    Raises:
        RoutingError: for a bad version, a weight outside 0-10,000, a repeated version or a
            total other than 10,000.
    """
    seen: set[str] = set()
    for route in routes:
        problem = key_segment_problem(route.version)
        if problem:
            raise RoutingError(f"{where}: version {route.version!r}: {problem}")
        if isinstance(route.weight, bool) or not isinstance(route.weight, int):
            raise RoutingError(f"{where}: weight of version {route.version} must be an integer")
        if not 0 <= route.weight <= TOTAL_WEIGHT:
            raise RoutingError(
                f"{where}: weight {route.weight} of version {route.version} is outside 0-{TOTAL_WEIGHT}"
            )
        if route.version in seen:
            raise RoutingError(f"{where}: version {route.version} is listed twice")
        seen.add(route.version)
    total = sum(r.weight for r in routes)
    if routes and total != TOTAL_WEIGHT:
        raise RoutingError(f"{where}: weights add up to {total}, not {TOTAL_WEIGHT}")
    return [r for r in routes if r.weight > 0]


def canary_alias(environment: str) -> str:
    """The MLflow alias of an environment's canary version: ``<env>-canary``."""
    return f"{environment}{CANARY_ALIAS_SUFFIX}"


def canary_weight_tag(environment: str) -> str:
    """The registered-model tag holding the canary weight of an environment."""
    return f"{CANARY_WEIGHT_TAG_PREFIX}{environment}"


def parse_canary_weight(raw: str | None, where: str) -> int:
    """Canary weight from the tag's text: an integer 0-10,000; absent means 0.

    Raises:
        RoutingError: for anything else.
    """
    if raw is None or raw.strip() == "":
        return 0
    try:
        weight = int(raw.strip(), 10)
    except ValueError as error:
        raise RoutingError(f"{where}: canary weight {raw!r} is not an integer (basis points)") from error
    if not 0 <= weight <= TOTAL_WEIGHT:
        raise RoutingError(f"{where}: canary weight {weight} is outside 0-{TOTAL_WEIGHT}")
    return weight


def routes_from_aliases(
    aliases: Mapping[str, str], tags: Mapping[str, str], environment: str, where: str
) -> list[Route]:
    """Routes of ``environment`` from a registered model's aliases and tags.

    Alias ``<env>`` is the stable version. A canary needs alias ``<env>-canary`` on another
    version and a positive ``mms.canary_weight.<env>``; it then comes first in bucket order.

    Raises:
        NoRoute: if alias ``<env>`` is not set.
        RoutingError: for an invalid canary weight.
    """
    stable = aliases.get(environment)
    if stable is None:
        raise NoRoute(f"{where} has no alias {environment!r}: it is not deployed in {environment}")
    stable = str(stable)
    canary = aliases.get(canary_alias(environment))
    weight = parse_canary_weight(tags.get(canary_weight_tag(environment)), where)
    if canary is None or str(canary) == stable or weight == 0:
        return [Route(stable, TOTAL_WEIGHT)]
    return validate_routes([Route(str(canary), weight), Route(stable, TOTAL_WEIGHT - weight)], where)


class MlflowAliasRoutes:
    """Routes from MLflow aliases: ``<env>`` stable, ``<env>-canary`` + ``mms.canary_weight.<env>``.

    Args:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (defaults to the tracking URI).
    """

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri

    def __repr__(self) -> str:
        return f"MlflowAliasRoutes({self.tracking_uri!r})"

    def current_routes(self, project: str, model: str, environment: str) -> list[Route]:
        """One ``get_registered_model`` call: aliases and tags come together.

        Raises:
            NoRoute: if the model is not registered or alias ``<env>`` is not set.
            RoutingError: if MLflow fails or the canary weight is invalid.
        """
        try:
            name = registry.registered_model_name(project, model)
        except ValueError as error:
            raise NoRoute(str(error)) from error
        mlflow = registry.import_mlflow()
        try:
            registered = registry.client(self.tracking_uri, self.registry_uri).get_registered_model(name)
        except mlflow.exceptions.MlflowException as error:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", "")):
                raise NoRoute(f"model {name} is not registered") from error
            raise RoutingError(f"cannot read {name} from MLflow: {error.message}") from error
        aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
        return routes_from_aliases(aliases, dict(registered.tags or {}), environment, name)


class JsonFileRoutes:
    """Routes from a JSON document owned by the deployment job.

    The document (format 1)::

        {"format": 1,
         "routes": [
           {"project": "credit-risk", "model": "credit-default", "environment": "prod",
            "versions": [{"version": "4", "weight": 1000}, {"version": "3", "weight": 9000}]}
         ]}

    ``versions`` are in bucket order (canary first) with integer basis-point weights adding
    up to 10,000. The writer replaces the file atomically (write a temporary file in the same
    folder, then rename). The file is parsed again only when its modification time or size
    changes. A model missing from the document is not deployed (:class:`NoRoute`).

    Args:
        path: Local path of the document.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._table: dict[tuple[str, str, str], list[Route]] = {}

    def __repr__(self) -> str:
        return f"JsonFileRoutes({str(self.path)!r})"

    def current_routes(self, project: str, model: str, environment: str) -> list[Route]:
        """The routes listed for the model and environment.

        Raises:
            NoRoute: if the document does not list them.
            RoutingError: if the file cannot be read or is invalid.
        """
        table = self._load()
        routes = table.get((project, model, environment))
        if not routes:
            raise NoRoute(f"{project}.{model} is not deployed in {environment} according to {self.path}")
        return list(routes)

    def _load(self) -> dict[tuple[str, str, str], list[Route]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError as error:
            raise RoutingError(f"routes file {self.path} does not exist") from error
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._table = parse_routes_document(self.path.read_text(encoding="utf-8"), str(self.path))
                self._stamp = stamp
            return self._table


def parse_routes_document(text: str, where: str) -> dict[tuple[str, str, str], list[Route]]:
    """Parse and validate a routes document (see :class:`JsonFileRoutes`).

    Returns:
        ``(project, model, environment)`` to routes in bucket order.

    Raises:
        RoutingError: naming the first invalid entry.
    """
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise RoutingError(f"{where} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != ROUTES_FORMAT:
        raise RoutingError(f'{where}: expected an object with "format": {ROUTES_FORMAT}')
    entries = document.get("routes")
    if not isinstance(entries, list):
        raise RoutingError(f'{where}: "routes" must be a list')
    table: dict[tuple[str, str, str], list[Route]] = {}
    for index, entry in enumerate(entries):
        at = f"{where}: routes[{index}]"
        if not isinstance(entry, dict):
            raise RoutingError(f"{at} must be an object")
        key = []
        for field in ("project", "model", "environment"):
            value = entry.get(field)
            problem = key_segment_problem(value)
            if problem:
                raise RoutingError(f"{at}.{field}: {problem}")
            key.append(value)
        versions = entry.get("versions")
        if not isinstance(versions, list) or not versions:
            raise RoutingError(f"{at}.versions must be a non-empty list")
        routes = []
        for position, item in enumerate(versions):
            if not isinstance(item, dict) or set(item) != {"version", "weight"}:
                raise RoutingError(f'{at}.versions[{position}] must be {{"version": ..., "weight": ...}}')
            routes.append(Route(str(item["version"]), item["weight"]))
        triple = (key[0], key[1], key[2])
        if triple in table:
            raise RoutingError(f"{at} repeats {'.'.join(triple[:2])} in {triple[2]}")
        table[triple] = validate_routes(routes, at)
    return table


def write_routes_document(
    path: str | os.PathLike[str], routes: Mapping[tuple[str, str, str], Sequence[Route]]
) -> None:
    """Write a routes document atomically (temporary file, fsync, rename).

    The deployment job's way to publish a traffic split for :class:`JsonFileRoutes`.

    Args:
        path: Target file.
        routes: ``(project, model, environment)`` to routes in bucket order.

    Raises:
        RoutingError: if a routing table is invalid (nothing is written).
    """
    entries = []
    for (project, model, environment), items in sorted(routes.items()):
        validate_routes(list(items), f"{project}.{model} in {environment}")
        entries.append(
            {
                "project": project,
                "model": model,
                "environment": environment,
                "versions": [{"version": r.version, "weight": r.weight} for r in items],
            }
        )
    text = json.dumps({"format": ROUTES_FORMAT, "routes": entries}, indent=2)
    parse_routes_document(text, str(path))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def routing_table_from_spec(spec: str, *, tracking_uri: str, registry_uri: str | None = None) -> RoutingTable:
    """Build the routing source named by ``spec``: ``mlflow`` or ``json:<path>``.

    Raises:
        ValueError: for an unknown spec.
    """
    if spec == "mlflow":
        return MlflowAliasRoutes(tracking_uri, registry_uri)
    if spec.startswith("json:") and len(spec) > len("json:"):
        return JsonFileRoutes(spec[len("json:") :])
    raise ValueError(f"routes source {spec!r} must be 'mlflow' or 'json:<path>'")
