"""Loaded model versions, payload validation against their inputs, and the per-process cache.

:class:`LoadedModel` wraps one registered version: the fitted scikit-learn
estimator, its feature lists (version tags ``mms.numeric_features`` /
``mms.categorical_features``, else the signature) and which inputs the signature
requires. It validates a request's ``features`` object (naming the offending
field) and scores many records in one call.

:class:`DeploymentCache` holds, per process, the routing snapshot of every model
the gateway has served: the routes of the environment and the loaded versions
they point at. A background thread asks the :class:`~jobs.gateway.routing.RoutingTable`
every ``refresh_interval_s`` and swaps a model's snapshot only once every version
it routes to is loaded, so no request ever waits for a download after the first.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from jobs import registry
from jobs.contracts import SEGMENT_PREFIX, feature_name_problem, key_segment_problem
from jobs.gateway.fastpath import CompiledScorer, compile_linear_pipeline, probe_records
from jobs.gateway.routing import NoRoute, Route, RoutingError, RoutingTable, choose_route, request_bucket

log = logging.getLogger(__name__)

CLASSIFICATION = "classification"
_MAX_UNKNOWN = 10_000
REGRESSION = "regression"


@dataclass(frozen=True)
class FieldError:
    """One problem with a request payload.

    Attributes:
        field: Path of the offending field, e.g. ``instances[2].features.age``.
        message: What is wrong and what is expected.
    """

    field: str
    message: str


class PayloadError(ValueError):
    """A request payload is invalid; ``errors`` names every offending field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0] if self.errors else FieldError("body", "invalid payload")
        super().__init__(f"{first.field}: {first.message}")

    @property
    def field(self) -> str:
        """The first offending field."""
        return self.errors[0].field if self.errors else "body"


@dataclass
class LoadedModel:
    """One registered model version ready to score.

    Attributes:
        project: Project slug.
        model: Model name.
        version: Version number as text.
        estimator: The fitted scikit-learn estimator (a ``Pipeline`` for models trained here).
        numeric: Numeric input features, in the model's order.
        categorical: Categorical input features.
        required: Inputs the signature marks as required (no null or NaN allowed).
        task: ``classification`` or ``regression``.
        classes: Class labels of a classifier, ``None`` for a regressor.
    """

    project: str
    model: str
    version: str
    estimator: Any
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    required: frozenset[str] = frozenset()
    task: str = REGRESSION
    classes: tuple[Any, ...] | None = None
    _numeric_set: frozenset[str] = field(init=False, repr=False)
    _categorical_set: frozenset[str] = field(init=False, repr=False)
    _scorer: CompiledScorer | None = field(init=False, repr=False, default=None)
    _column_types: tuple[tuple[str, pa.DataType], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        self._numeric_set = frozenset(self.numeric)
        self._categorical_set = frozenset(self.categorical)
        for name in (*self.numeric, *self.categorical):
            problem = feature_name_problem(name)
            if problem:
                raise registry.RegistryError(f"{self.project}.{self.model} v{self.version}: {problem}")
        # Built once: every logged request uses it as part of its buffer key.
        self._column_types = tuple((n, pa.float64()) for n in self.numeric) + tuple(
            (n, pa.string()) for n in self.categorical
        )
        self._scorer = self._compiled_scorer()

    def _compiled_scorer(self) -> CompiledScorer | None:
        """The NumPy scorer of a ``jobs.training`` linear pipeline, if it scores the probes exactly.

        The estimator stays the reference: the compiled scorer is used only when it returns the
        estimator's own outputs on records with missing values and every known (and an unknown)
        category; otherwise, or if anything fails, every call goes through the estimator.
        """
        try:
            scorer = compile_linear_pipeline(self.estimator, self.numeric, self.categorical, self.task)
            if scorer is None:
                return None
            probes = probe_records(self.numeric, self.categorical, self.estimator)
            expected = self._estimator_output(self._frame(probes))
            actual = scorer(*self._arrays(probes))
            if expected.shape == actual.shape and np.allclose(actual, expected, rtol=1e-9, atol=1e-12):
                return scorer
            log.info("%s.%s v%s: compiled scorer differs from the estimator; not used", *self._name())
        except Exception as error:  # noqa: BLE001 - an optimisation only: the estimator always works
            log.info("%s.%s v%s: no compiled scorer (%s)", *self._name(), error)
        return None

    def _name(self) -> tuple[str, str, str]:
        return self.project, self.model, self.version

    @property
    def compiled(self) -> bool:
        """Whether single requests are scored by the compiled NumPy scorer (same outputs, less CPU)."""
        return self._scorer is not None

    @property
    def features(self) -> tuple[str, ...]:
        """Every input feature, numeric first."""
        return self.numeric + self.categorical

    @property
    def column_types(self) -> tuple[tuple[str, pa.DataType], ...]:
        """The feature columns of this version's inference-log rows and their Arrow types."""
        return self._column_types

    def parse_features(self, features: object, where: str) -> tuple[dict[str, Any], list[FieldError]]:
        """Validate one record's ``features`` object against this version's inputs.

        Every feature must be present (``null`` is allowed unless the signature requires the
        input); numbers must be finite numbers (``NaN`` counts as missing), categories strings.
        Unknown keys are refused: the inference log could not store them and they usually
        are misspellings.

        Args:
            features: The decoded ``features`` value.
            where: Path of the ``features`` field for error messages.

        Returns:
            The normalised features (``None`` for missing) and the problems found.
        """
        if not isinstance(features, dict):
            return {}, [FieldError(where, "must be an object mapping feature names to values")]
        errors: list[FieldError] = []
        values: dict[str, Any] = {}
        for name in self.numeric:
            value = features.get(name, _ABSENT)
            if value is _ABSENT:
                errors.append(
                    FieldError(f"{where}.{name}", "missing feature (send null for an unknown value)")
                )
                continue
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if name in self.required:
                    errors.append(
                        FieldError(f"{where}.{name}", "required by the model signature: null/NaN refused")
                    )
                values[name] = None
            elif isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(FieldError(f"{where}.{name}", f"must be a number, got {_json_type(value)}"))
            elif not math.isfinite(value):
                errors.append(FieldError(f"{where}.{name}", "must be finite, got Infinity"))
            else:
                values[name] = float(value)
        for name in self.categorical:
            value = features.get(name, _ABSENT)
            if value is _ABSENT:
                errors.append(
                    FieldError(f"{where}.{name}", "missing feature (send null for an unknown value)")
                )
            elif value is None:
                if name in self.required:
                    errors.append(
                        FieldError(f"{where}.{name}", "required by the model signature: null refused")
                    )
                values[name] = None
            elif not isinstance(value, str):
                errors.append(FieldError(f"{where}.{name}", f"must be a string, got {_json_type(value)}"))
            else:
                values[name] = value
        for name in features:
            if name not in self._numeric_set and name not in self._categorical_set:
                errors.append(
                    FieldError(
                        f"{where}.{name}",
                        f"unknown feature of {self.project}.{self.model} version {self.version}; "
                        f"expected {', '.join(self.features)}",
                    )
                )
        return values, errors

    def predict(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[list[Any], list[float | None], list[float | None]]:
        """Score validated records (from :meth:`parse_features`) in one estimator call.

        Returns:
            ``(answers, predictions, scores)``: the prediction as returned to the client
            (the class label or the value), the same as a double for the inference log
            (``None`` when a class label is not numeric) and the positive-class probability
            of a binary classifier (``None`` otherwise).
        """
        if self._scorer is not None:
            labels, predictions, scores = self._outputs(self._scorer(*self._arrays(records)))
        else:
            labels, predictions, scores = self.predict_frame(self._frame(records))
        size = len(records)
        return (
            labels.tolist(),
            predictions.tolist() if predictions is not None else [None] * size,
            scores.tolist() if scores is not None else [None] * size,
        )

    def _arrays(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[list[Any]]]:
        """The compiled scorer's inputs: numeric matrix (``None`` as NaN) and categorical rows."""
        numeric, categorical = self.numeric, self.categorical
        matrix = np.array([[r[n] for n in numeric] for r in records], dtype=np.float64).reshape(
            len(records), len(numeric)
        )
        return matrix, [[r[n] for n in categorical] for r in records]

    def _frame(self, records: Sequence[Mapping[str, Any]]) -> Any:
        import pandas as pd

        columns: dict[str, Any] = {}
        for name in self.numeric:
            columns[name] = pd.Series(np.array([r[name] for r in records], dtype=np.float64), copy=False)
        for name in self.categorical:
            # Plain object columns with None, as in training: pandas would otherwise infer its
            # Arrow-backed string dtype, which costs a conversion inside every transformer.
            columns[name] = pd.Series([r[name] for r in records], dtype=object)
        return pd.DataFrame(columns, columns=list(self.features))

    def predict_frame(self, frame: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Score a pandas frame holding the features (categories as ``object`` with ``None``).

        Returns:
            ``(labels, predictions, scores)``: labels as the estimator returns them, the
            predictions as float64 (``None`` when labels are not numeric), the positive-class
            probabilities of a binary classifier (``None`` otherwise).
        """
        return self._outputs(self._estimator_output(frame))

    def _estimator_output(self, frame: Any) -> np.ndarray:
        """Class probabilities of a classifier (``predict_proba``), else the predicted values."""
        if self.task == CLASSIFICATION and hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(frame))
        return np.asarray(self.estimator.predict(frame))

    def _outputs(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        scores = None
        if self.task == CLASSIFICATION and hasattr(self.estimator, "predict_proba"):
            classes = np.asarray(self.classes if self.classes is not None else self.estimator.classes_)
            labels = classes[np.argmax(raw, axis=1)]
            if classes.shape[0] == 2:
                scores = raw[:, 1].astype(np.float64)
        else:
            labels = raw
        numeric = np.issubdtype(labels.dtype, np.number) or labels.dtype == np.bool_
        predictions = labels.astype(np.float64) if numeric else None
        return labels, predictions, scores


_ABSENT = object()

MODEL_ERROR = "model_error"
"""``request_errors`` kind of a record whose version raised while scoring it."""
BAD_OUTPUT = "bad_output"
"""``request_errors`` kind of a record scored to a non-finite prediction or a score outside [0, 1]."""
TIMEOUT = "timeout"
"""``request_errors`` kind of a record not scored within the gateway's scoring deadline."""


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_segments(segments: object, where: str) -> tuple[dict[str, str | None], list[FieldError]]:
    """Validate an optional ``segments`` object (``{"region": "north"}`` -> ``segment_region``).

    Returns:
        ``segment_<name>`` to value, and the problems found.
    """
    if segments is None:
        return {}, []
    if not isinstance(segments, dict):
        return {}, [FieldError(where, "must be an object mapping segment names to strings")]
    values: dict[str, str | None] = {}
    errors: list[FieldError] = []
    for name, value in segments.items():
        column = f"{SEGMENT_PREFIX}{name}"
        if not isinstance(name, str) or not name.replace("_", "a").isalnum() or not name.isascii():
            errors.append(FieldError(f"{where}.{name}", "segment names use letters, digits and '_' only"))
        elif value is not None and not isinstance(value, str):
            errors.append(FieldError(f"{where}.{name}", f"must be a string, got {_json_type(value)}"))
        else:
            values[column] = value
    return values, errors


# --------------------------------------------------------------------------- loading


def _feature_lists(
    tags: Mapping[str, str], signature: Any, where: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    numeric_tag = tags.get(registry.TAG_NUMERIC_FEATURES)
    categorical_tag = tags.get(registry.TAG_CATEGORICAL_FEATURES)
    if numeric_tag is not None or categorical_tag is not None:
        try:
            numeric = json.loads(numeric_tag or "[]")
            categorical = json.loads(categorical_tag or "[]")
        except json.JSONDecodeError as error:
            raise registry.RegistryError(f"{where}: feature tags are not JSON lists: {error}") from error
        if not (isinstance(numeric, list) and isinstance(categorical, list)):
            raise registry.RegistryError(f"{where}: feature tags must be JSON lists")
        return tuple(map(str, numeric)), tuple(map(str, categorical))
    if signature is None or signature.inputs is None:
        raise registry.RegistryError(
            f"{where} has neither feature tags nor a signature: its inputs are unknown"
        )
    numeric, categorical = [], []
    for spec in signature.inputs.inputs:
        kind = str(getattr(spec.type, "name", spec.type)).lower()
        (categorical if kind == "string" else numeric).append(spec.name)
    return tuple(numeric), tuple(categorical)


def _required_inputs(signature: Any) -> frozenset[str]:
    if signature is None or signature.inputs is None:
        return frozenset()
    return frozenset(
        spec.name for spec in signature.inputs.inputs if getattr(spec, "required", True) and spec.name
    )


class MlflowModelLoader:
    """Loads a registered version by number, verifying its artifact digest first.

    Args:
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (defaults to the tracking URI).
        verify_digest: Refuse a version whose files differ from its ``mms.artifact_digest``.
    """

    def __init__(
        self, tracking_uri: str, registry_uri: str | None = None, *, verify_digest: bool = True
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.verify_digest = verify_digest

    def __call__(self, project: str, model: str, version: str) -> LoadedModel:
        """Download, verify and deserialise one version.

        Raises:
            jobs.registry.RegistryError: if the version does not exist or lacks its inputs.
            jobs.registry.DigestMismatch: if its files changed after registration.
        """
        name = registry.registered_model_name(project, model)
        info = registry.get_version(
            name, version, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
        )
        mlflow = registry.import_mlflow()
        from mlflow.models import Model

        with (
            tempfile.TemporaryDirectory(prefix="mms-gateway-") as scratch,
            registry.mlflow_target(self.tracking_uri, self.registry_uri),
        ):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{info.version}", dst_path=scratch
            )
            if self.verify_digest:
                expected = info.artifact_digest
                actual = registry.artifact_digest(local)
                if not expected or actual != expected:
                    raise registry.DigestMismatch(
                        f"{name} version {info.version}: artifact digest {actual} differs from the "
                        f"registered {expected or '(none)'}; refusing to load it"
                    )
            signature = Model.load(local).signature
            estimator = mlflow.sklearn.load_model(local)
        where = f"{name} version {info.version}"
        numeric, categorical = _feature_lists(info.tags, signature, where)
        task = info.tags.get(registry.TAG_TASK) or (
            CLASSIFICATION if hasattr(estimator, "predict_proba") else REGRESSION
        )
        classes = tuple(np.asarray(estimator.classes_).tolist()) if hasattr(estimator, "classes_") else None
        return LoadedModel(
            project=project,
            model=model,
            version=str(info.version),
            estimator=estimator,
            numeric=numeric,
            categorical=categorical,
            required=_required_inputs(signature),
            task=task,
            classes=classes,
        )


ModelLoader = Callable[[str, str, str], LoadedModel]


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Deployment:
    """The routing snapshot of one model in the gateway's environment.

    Attributes:
        project: Project slug.
        model: Model name.
        routes: Routes in bucket order.
        versions: The loaded versions the routes point at.
        refreshed_at: ``time.monotonic()`` of the last successful check of the routes.
    """

    project: str
    model: str
    routes: tuple[Route, ...]
    versions: Mapping[str, LoadedModel]
    refreshed_at: float = 0.0

    def pick(self, request_id: str) -> LoadedModel:
        """The version that serves ``request_id`` (sticky: the same id, the same version)."""
        if len(self.routes) == 1:
            return self.versions[self.routes[0].version]
        return self.versions[choose_route(self.routes, request_bucket(request_id)).version]


class DeploymentCache:
    """Per-process routing snapshots and loaded versions, refreshed in the background.

    Args:
        routing: Where the traffic split comes from.
        loader: Loads one ``(project, model, version)``.
        environment: The gateway's environment.
        refresh_interval_s: How often the routes are checked.
        on_refresh_error: Called with ``(project, model, error)`` when a refresh fails (metrics).
    """

    def __init__(
        self,
        routing: RoutingTable,
        loader: ModelLoader,
        environment: str,
        *,
        refresh_interval_s: float = 5.0,
        on_refresh_error: Callable[[str, str, Exception], None] | None = None,
    ) -> None:
        self.routing = routing
        self.loader = loader
        self.environment = environment
        self.refresh_interval_s = refresh_interval_s
        self.on_refresh_error = on_refresh_error
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._unknown: dict[tuple[str, str], tuple[float, str]] = {}
        self._loaded: dict[tuple[str, str, str], LoadedModel] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- request path

    def get(self, project: str, model: str) -> Deployment | None:
        """The current snapshot, or ``None`` if the model was never loaded here (no I/O)."""
        return self._deployments.get((project, model))

    def ensure(self, project: str, model: str) -> Deployment:
        """The snapshot, resolving the routes and loading the versions if needed (blocking).

        An unknown model is remembered for one refresh interval, so a client asking for it
        repeatedly does not reach MLflow on every request.

        Raises:
            NoRoute: if the model is not deployed in the environment.
            RoutingError: if the routing source fails.
            jobs.registry.RegistryError: if a version cannot be loaded.
        """
        key = (project, model)
        found = self._deployments.get(key)
        if found is not None:
            return found
        for what, value in (("project", project), ("model", model)):
            problem = key_segment_problem(value)
            if problem:
                raise NoRoute(f"{what} {value!r} is not valid: {problem}")
        remembered = self._unknown.get(key)
        if remembered is not None and time.monotonic() - remembered[0] < self.refresh_interval_s:
            raise NoRoute(remembered[1])
        with self._key_lock(key):
            found = self._deployments.get(key)
            if found is not None:
                return found
            try:
                return self._refresh_one(key)
            except NoRoute as error:
                self._remember_unknown(key, str(error))
                raise

    def _remember_unknown(self, key: tuple[str, str], reason: str) -> None:
        # Clients choose the names: keep the memory of unknown models (and their locks) bounded.
        if len(self._unknown) >= _MAX_UNKNOWN:
            self._unknown.clear()
        self._unknown[key] = (time.monotonic(), reason)
        with self._lock:
            if key not in self._deployments:
                self._key_locks.pop(key, None)

    def snapshot(self) -> dict[tuple[str, str], Deployment]:
        """Every model currently served, for ``/readyz``."""
        return dict(self._deployments)

    # ----------------------------------------------------------------- refreshing

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _refresh_one(self, key: tuple[str, str]) -> Deployment:
        project, model = key
        routes = tuple(self.routing.current_routes(project, model, self.environment))
        if not routes:
            raise NoRoute(f"{project}.{model} has no version routed in {self.environment}")
        current = self._deployments.get(key)
        if current is not None and current.routes == routes:
            refreshed = Deployment(project, model, routes, current.versions, time.monotonic())
        else:
            versions = {}
            for route in routes:
                cache_key = (project, model, route.version)
                loaded = self._loaded.get(cache_key)
                if loaded is None:
                    started = time.monotonic()
                    loaded = self.loader(project, model, route.version)
                    warm_up(loaded)
                    self._loaded[cache_key] = loaded
                    log.info(
                        "loaded %s.%s version %s in %.2f s",
                        project,
                        model,
                        route.version,
                        time.monotonic() - started,
                    )
                versions[route.version] = loaded
            refreshed = Deployment(project, model, routes, versions, time.monotonic())
            if current is not None:
                log.info(
                    "routes of %s.%s in %s changed: %s -> %s",
                    project,
                    model,
                    self.environment,
                    _describe(current.routes),
                    _describe(routes),
                )
        self._deployments[key] = refreshed
        self._unknown.pop(key, None)
        self._evict_unused()
        return refreshed

    def _evict_unused(self) -> None:
        used = {(d.project, d.model, r.version) for d in list(self._deployments.values()) for r in d.routes}
        for cache_key in [k for k in self._loaded if k not in used]:
            del self._loaded[cache_key]

    def refresh_all(self) -> None:
        """Check the routes of every served model once; keep the old snapshot when a check fails.

        A model that is no longer deployed (:class:`NoRoute`) stops being served.
        """
        for key in list(self._deployments):
            with self._key_lock(key):
                try:
                    self._refresh_one(key)
                except NoRoute as error:
                    log.warning("%s.%s is no longer served in %s: %s", *key, self.environment, error)
                    self._deployments.pop(key, None)
                    self._remember_unknown(key, str(error))
                    self._evict_unused()
                except (RoutingError, registry.RegistryError, OSError) as error:
                    self._refresh_failed(key, error)
                except Exception as error:  # noqa: BLE001 - MLflow raises many types; keep serving the old routes
                    self._refresh_failed(key, error)

    def _refresh_failed(self, key: tuple[str, str], error: Exception) -> None:
        log.error("cannot refresh the routes of %s.%s (keeping the current ones): %s", *key, error)
        if self.on_refresh_error is not None:
            self.on_refresh_error(key[0], key[1], error)

    def start(self) -> None:
        """Start the background refresh thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mms-gateway-routes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_interval_s):
            self.refresh_all()

    def stop(self) -> None:
        """Stop the refresh thread (waits for a refresh in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def preload(self, models: Iterable[tuple[str, str]]) -> list[str]:
        """Load the given models now.

        Returns:
            One message per model that could not be loaded (empty when all are served).
        """
        problems = []
        for project, model in models:
            try:
                self.ensure(project, model)
            except Exception as error:  # noqa: BLE001 - reported by /readyz, retried on the next request
                problems.append(f"{project}.{model}: {error}")
                log.error("cannot preload %s.%s: %s", project, model, error)
        return problems


def warm_up(loaded: LoadedModel) -> None:
    """Score one all-missing record so the first request does not pay for lazy initialisation."""
    try:
        loaded.predict([dict.fromkeys(loaded.features)])
    except Exception as error:  # noqa: BLE001 - a model that refuses nulls still serves complete records
        log.info("warm-up of %s.%s v%s skipped: %s", loaded.project, loaded.model, loaded.version, error)


def _describe(routes: Iterable[Route]) -> str:
    return ", ".join(f"v{r.version}={r.weight / 100:g}%" for r in routes)
