"""MLflow model registry helpers: names, aliases, versions, verified loading.

Every helper takes the tracking URI (and optionally a separate registry URI)
explicitly, so nothing depends on process-wide MLflow configuration. MLflow's
fluent API (``mlflow.start_run``, ``mlflow.sklearn.log_model``) only knows a
global tracking URI; :func:`mlflow_target` sets it for the duration of a block,
under a lock, and restores the previous value afterwards.

Conventions (see ``docs/DATA_CONTRACTS.md``):

* A model ``<model>`` of project ``<project>`` is registered as
  ``<project>.<model>``. Both parts are key segments (``[A-Za-z0-9_-]``), so the
  dot separates them unambiguously, and the name reads the same in the MLflow UI.
* Each version carries the tags named by the ``TAG_*`` constants, among them
  :data:`TAG_ARTIFACT_DIGEST`, the :func:`artifact_digest` of the model's
  artifact files. :func:`load_model_by_alias` recomputes it on the downloaded
  files and refuses a model whose files changed since registration.

These are low-level primitives without an acting user: jobs that change state
(training, promotion, deployment) check permissions before calling them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from jobs.contracts import key_segment_problem

TAG_PREFIX = "mms."
TAG_CREATED_BY = "mms.created_by"
TAG_PROJECT = "mms.project"
TAG_MODEL = "mms.model"
TAG_RUN_ID = "mms.run_id"
TAG_ARTIFACT_DIGEST = "mms.artifact_digest"
TAG_TASK = "mms.task"
TAG_NUMERIC_FEATURES = "mms.numeric_features"
TAG_CATEGORICAL_FEATURES = "mms.categorical_features"
TAG_TARGET = "mms.target"
TAG_TRAINING_ROWS = "mms.training_rows"
TAG_REFERENCE_PROFILE = "mms.reference_profile"

# Files MLflow itself adds to a downloaded registered model; they are not part of the digest.
DIGEST_IGNORED_FILES = frozenset({"registered_model_meta"})

_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,254}$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
# MLflow's fluent API reads one process-wide tracking URI; blocks that switch it run one at a time.
_TARGET_LOCK = threading.RLock()


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the model and what went wrong."""


class DigestMismatch(RegistryError):
    """A model's artifact files do not match the digest recorded when it was registered."""


def import_mlflow() -> ModuleType:
    """Import MLflow with telemetry disabled (it must be set before the first import).

    Returns:
        The ``mlflow`` module, with ``mlflow.sklearn`` loaded.
    """
    # No usage telemetry leaves the machine: the studio runs without internet access.
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    import mlflow.sklearn  # registers the flavour used by training and loading

    return mlflow


def registered_model_name(project: str, model: str) -> str:
    """The MLflow registered-model name of ``model`` in ``project``: ``<project>.<model>``.

    Raises:
        ValueError: if either part is not a key segment.
    """
    for what, value in (("project", project), ("model", model)):
        problem = key_segment_problem(value)
        if problem:
            raise ValueError(f"{what} {value!r} cannot name a registered model: {problem}")
    return f"{project}.{model}"


def validate_alias(alias: str) -> str:
    """Check an alias such as ``champion`` or ``staging``.

    Raises:
        ValueError: for an alias MLflow would refuse or misread (``latest``, ``v3``, punctuation).
    """
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or _RESERVED_ALIAS_RE.match(alias):
        raise ValueError(
            f"invalid alias {alias!r}: use a letter then letters, digits, '_' or '-' "
            "(not 'latest' nor 'v<number>', which MLflow reserves)"
        )
    return alias


def default_artifact_root(tracking_uri: str) -> str | None:
    """Where artifacts go for a tracking URI when no artifact root is configured.

    For a ``sqlite:///path/mlflow.db`` store it is ``path/mlartifacts`` next to the
    database (MLflow's own default, ``./mlruns``, would depend on the working
    directory). Servers and other databases decide themselves: ``None``.
    """
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and tracking_uri != prefix + ":memory:":
        database = Path(tracking_uri[len(prefix) :])
        return str(database.resolve().parent / "mlartifacts")
    return None


@contextlib.contextmanager
def mlflow_target(tracking_uri: str, registry_uri: str | None = None) -> Iterator[Any]:
    """Point MLflow's fluent API at a tracking/registry URI for the duration of the block.

    Args:
        tracking_uri: Tracking URI (``sqlite:///...``, ``postgresql://...``, ``http://...``).
        registry_uri: Registry URI; defaults to the tracking URI.

    Yields:
        An ``MlflowClient`` bound to the same URIs.
    """
    mlflow = import_mlflow()
    with _TARGET_LOCK:
        previous_tracking = mlflow.get_tracking_uri()
        previous_registry = mlflow.get_registry_uri()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri or tracking_uri)
        try:
            yield mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)


def client(tracking_uri: str, registry_uri: str | None = None) -> Any:
    """An ``MlflowClient`` for the given URIs (no global state involved).

    Returns:
        ``mlflow.MlflowClient``.
    """
    mlflow = import_mlflow()
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def artifact_digest(directory: str | os.PathLike[str]) -> str:
    """SHA-256 over a model's artifact files, independent of where they are stored.

    The digest covers every file below ``directory`` except :data:`DIGEST_IGNORED_FILES`,
    in sorted relative-path order, as ``<relative path> NUL <sha256 of content> LF``:
    renaming, adding, removing or editing any file changes it.

    Args:
        directory: Local folder holding the downloaded model.

    Returns:
        The hex digest.

    Raises:
        RegistryError: if the folder holds no file.
    """
    root = Path(directory)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in DIGEST_IGNORED_FILES
    )
    if not files:
        raise RegistryError(f"no model files under {root}")
    outer = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        outer.update(inner.hexdigest().encode("ascii") + b"\n")
    return outer.hexdigest()


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version, detached from MLflow's entity classes.

    Attributes:
        name: Registered model name.
        version: Version number as text (``"1"``, ``"2"``, ...).
        run_id: Run that produced the model.
        source: Artifact source URI.
        status: MLflow status (``READY`` once registered).
        aliases: Aliases pointing at this version.
        tags: Version tags.
        created_at: Registration time (UTC).
        description: Free-text description.
    """

    name: str
    version: str
    run_id: str | None
    source: str
    status: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_at: datetime
    description: str

    @property
    def created_by(self) -> str | None:
        """Username of whoever trained the version (``mms.created_by`` tag)."""
        return self.tags.get(TAG_CREATED_BY)

    @property
    def artifact_digest(self) -> str | None:
        """Digest of the artifact files recorded at registration."""
        return self.tags.get(TAG_ARTIFACT_DIGEST)


def _version_info(version: Any) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        source=version.source,
        status=str(version.status),
        aliases=tuple(version.aliases or ()),
        tags=dict(version.tags or {}),
        created_at=datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, UTC),
        description=version.description or "",
    )


def _not_found(error: Exception) -> bool:
    return (
        "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", ""))
        or "not found" in str(error).lower()
    )


def list_versions(name: str, *, tracking_uri: str, registry_uri: str | None = None) -> list[ModelVersionInfo]:
    """Every version of a registered model, oldest first.

    Returns:
        The versions; empty when the model is not registered.
    """
    registry = client(tracking_uri, registry_uri)
    mlflow = import_mlflow()
    try:
        registered = registry.get_registered_model(name)
    except mlflow.exceptions.MlflowException as error:
        if _not_found(error):
            return []
        raise
    # search_model_versions leaves aliases out; the registered model maps alias -> version.
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    quoted = name.replace("'", "\\'")
    versions = registry.search_model_versions(filter_string=f"name = '{quoted}'")
    infos = [
        replace(_version_info(v), aliases=tuple(sorted(aliases.get(str(v.version), ()))))
        for v in versions
        if v.name == name
    ]
    return sorted(infos, key=lambda v: int(v.version))


def get_version(
    name: str, version: str | int, *, tracking_uri: str, registry_uri: str | None = None
) -> ModelVersionInfo:
    """One version of a registered model.

    Raises:
        RegistryError: if the model or version does not exist.
    """
    registry = client(tracking_uri, registry_uri)
    mlflow = import_mlflow()
    try:
        return _version_info(registry.get_model_version(name, str(version)))
    except mlflow.exceptions.MlflowException as error:
        raise RegistryError(f"{name} version {version} does not exist: {error.message}") from error


def set_alias(
    name: str, alias: str, version: str | int, *, tracking_uri: str, registry_uri: str | None = None
) -> ModelVersionInfo:
    """Point ``alias`` at ``version`` of ``name`` (moving it if another version held it).

    Returns:
        The version the alias now points at.

    Raises:
        ValueError: for an invalid alias.
        RegistryError: if the model or version does not exist.
    """
    validate_alias(alias)
    target = get_version(name, version, tracking_uri=tracking_uri, registry_uri=registry_uri)
    client(tracking_uri, registry_uri).set_registered_model_alias(name, alias, target.version)
    return get_version(name, target.version, tracking_uri=tracking_uri, registry_uri=registry_uri)


def delete_alias(name: str, alias: str, *, tracking_uri: str, registry_uri: str | None = None) -> None:
    """Remove ``alias`` from ``name`` (no error when it was not set).

    Raises:
        ValueError: for an invalid alias.
    """
    validate_alias(alias)
    mlflow = import_mlflow()
    try:
        client(tracking_uri, registry_uri).delete_registered_model_alias(name, alias)
    except mlflow.exceptions.MlflowException as error:
        if not _not_found(error):
            raise


def version_by_alias(
    name: str, alias: str, *, tracking_uri: str, registry_uri: str | None = None
) -> ModelVersionInfo:
    """The version ``alias`` points at.

    Raises:
        RegistryError: if the model does not exist or the alias is not set.
    """
    validate_alias(alias)
    mlflow = import_mlflow()
    try:
        return _version_info(client(tracking_uri, registry_uri).get_model_version_by_alias(name, alias))
    except mlflow.exceptions.MlflowException as error:
        raise RegistryError(f"alias {alias!r} of {name} is not set: {error.message}") from error


def load_model_by_alias(
    name: str,
    alias: str,
    *,
    tracking_uri: str,
    registry_uri: str | None = None,
    verify_digest: bool = True,
) -> Any:
    """Load the scikit-learn model ``models:/<name>@<alias>``.

    The artifacts are downloaded to a temporary folder; with ``verify_digest`` their
    :func:`artifact_digest` must equal the version's ``mms.artifact_digest`` tag before
    anything is deserialised (skops reads its list of trusted types from the model
    folder itself, so a tampered folder must not reach the loader).

    Returns:
        The fitted scikit-learn estimator (a ``Pipeline`` for models trained here).

    Raises:
        RegistryError: if the alias is not set.
        DigestMismatch: if the files differ from the registered digest (or it is missing).
    """
    info = version_by_alias(name, alias, tracking_uri=tracking_uri, registry_uri=registry_uri)
    mlflow = import_mlflow()
    # models:/ URIs resolve through the process-wide registry URI, whatever download_artifacts is given.
    with (
        tempfile.TemporaryDirectory(prefix="mms-model-") as scratch,
        mlflow_target(tracking_uri, registry_uri),
    ):
        # The version resolved above, even if the alias moves meanwhile.
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{info.version}", dst_path=scratch
        )
        if verify_digest:
            expected = info.artifact_digest
            actual = artifact_digest(local)
            if not expected:
                raise DigestMismatch(f"{name} version {info.version} has no {TAG_ARTIFACT_DIGEST} tag")
            if actual != expected:
                raise DigestMismatch(
                    f"{name} version {info.version}: artifact digest {actual} differs from the "
                    f"registered {expected}; the model files changed after registration"
                )
        return mlflow.sklearn.load_model(local)
