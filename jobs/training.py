"""Train a model from its ``training_data`` partition and register it in MLflow.

:func:`train_model` is the training job: it checks ``TRAIN_MODELS`` on the
project before it reads or writes anything, then

1. reads ``training_data/project=<p>/model=<m>`` through the Parquet store and
   validates it against the data contract;
2. fits a scikit-learn ``Pipeline`` (a ``ColumnTransformer`` with median
   imputation + ``StandardScaler`` for numeric features and constant imputation +
   ``OneHotEncoder(handle_unknown="ignore")`` for categorical ones, then a
   ``HistGradientBoosting`` or linear estimator chosen by the task);
3. evaluates it on a hold-out split (AUC/accuracy/log loss or RMSE/MAE/R²);
4. logs params, metrics and the model (skops format, explicit signature and pip
   requirements) to an MLflow run in the project's experiment;
5. registers a new version of ``<project>.<model>`` tagged with the creator, the
   project, the run id, the feature lists and the SHA-256 digest of the model files;
6. writes the training data's reference profile to ``reference_profiles``
   partition ``project/model/version``;
7. appends ``model.trained`` to the audit log (project, model, version, run id,
   artifact digest, commit, acting user), also when the profile write failed.

Commit: the version and its run carry the tag ``mms.git_sha``
(:data:`jobs.github.TAG_GIT_SHA`, which links GitHub workflow runs to versions)
when the commit is known: the ``git_sha`` argument (``--git-sha``), else the
``GITHUB_SHA`` environment variable, else ``git rev-parse HEAD`` of the checkout
holding this code. A missing commit never fails training; a malformed explicit one does.

Progress and cancellation: ``progress(stage, fraction)`` is called before each
step with ``fraction`` rising from 0 to 1 (the same shape as the monitor and demo
jobs; a progress bar shows ``fraction``). To cancel, raise from the callback: the
exception propagates unchanged and nothing is registered, written or audited, as
long as it is raised up to and including the ``registering`` report. From then on
the version exists, so the job finishes its writes and its audit entry; an
exception raised by the callback after that point is logged and ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import audit, registry
from jobs.contracts import (
    LABEL_COLUMN,
    PARTITION_KEYS,
    REFERENCE_PROFILES,
    TRAINING_DATA,
    key_segment_problem,
    require_valid,
    segment_columns,
    validate_training_table,
)
from jobs.db.session import session_scope
from jobs.github import TAG_GIT_SHA
from jobs.permissions import Actor, Permission, require

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)
HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
LINEAR = "linear"
ESTIMATORS = (HIST_GRADIENT_BOOSTING, LINEAR)
MODEL_ARTIFACT_NAME = "model"
PROFILE_FILE_NAME = "profile.parquet"

# Types skops may rebuild when loading the pipelines built here, beyond its default trusted set:
# numpy dtypes (stored by the imputers/encoders) and the fitted trees of HistGradientBoosting.
SKOPS_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
_MISSING_CATEGORY = "__missing__"

GIT_SHA_ENV = "GITHUB_SHA"
AUDIT_ACTION = "model.trained"
_GIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
_GIT_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)

LAST_CANCELLABLE_FRACTION = 0.85
"""Fraction of the ``registering`` report: the last one at which raising from the callback cancels."""

Progress = Callable[[str, float], None]
"""``progress(stage, fraction)``; raising from it cancels the job (see the module doc)."""


class TrainingError(RuntimeError):
    """Training could not run; the message says what to fix."""


class InsufficientData(TrainingError):
    """The training data is missing or too small to fit and evaluate a model."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model; every field has a sensible default.

    Attributes:
        task: ``classification`` or ``regression``; ``None`` infers it from the label
            (classification when the label only takes the values 0 and 1).
        estimator: ``hist_gradient_boosting`` or ``linear`` (LogisticRegression / Ridge).
        numeric_features: Numeric features; ``None`` takes every double column.
        categorical_features: Categorical features; ``None`` takes every string column.
            Columns named ``segment_*`` and the label are never inferred as features.
        test_size: Share of rows held out for evaluation.
        random_state: Seed of the split and of the estimator.
        max_iter: Boosting iterations (or solver iterations for the linear models).
        learning_rate: Boosting learning rate.
        max_leaf_nodes: Leaves per boosted tree.
        l2_regularization: Boosting L2 penalty.
        c: Inverse regularisation strength of LogisticRegression.
        alpha: Ridge penalty.
        max_rows: Train on a seeded sample of at most this many rows (``None``: all).
        min_rows: Fewer rows than this is :class:`InsufficientData`.
    """

    task: str | None = None
    estimator: str = HIST_GRADIENT_BOOSTING
    numeric_features: tuple[str, ...] | None = None
    categorical_features: tuple[str, ...] | None = None
    test_size: float = 0.2
    random_state: int = 42
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    l2_regularization: float = 0.0
    c: float = 1.0
    alpha: float = 1.0
    max_rows: int | None = None
    min_rows: int = 50

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if not 0.05 <= self.test_size <= 0.5:
            raise ValueError(f"test_size must be between 0.05 and 0.5, got {self.test_size}")
        for name in ("max_iter", "max_leaf_nodes", "min_rows"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}")
        for name in ("learning_rate", "c", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.l2_regularization < 0:
            raise ValueError(f"l2_regularization must be >= 0, got {self.l2_regularization}")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) must be at least min_rows ({self.min_rows})")
        for name in ("numeric_features", "categorical_features"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise ValueError(f"{name} must be a list of column names, not a string")
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> TrainConfig:
        """Build a config from a JSON-like mapping (CLI options, a pipeline node's config).

        Raises:
            ValueError: for an unknown key or an invalid value.
        """
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def estimator_params(self) -> dict[str, Any]:
        """The parameters that reach the estimator (logged to MLflow)."""
        if self.estimator == HIST_GRADIENT_BOOSTING:
            return {
                "max_iter": self.max_iter,
                "learning_rate": self.learning_rate,
                "max_leaf_nodes": self.max_leaf_nodes,
                "l2_regularization": self.l2_regularization,
                "random_state": self.random_state,
            }
        if self.task == CLASSIFICATION:
            return {"C": self.c, "max_iter": self.max_iter}
        return {"alpha": self.alpha}


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        registered_model: Registered model name (``<project>.<model>``).
        version: New version number, as text.
        model_uri: ``models:/<name>/<version>``.
        run_id: MLflow run id.
        experiment_id: MLflow experiment id.
        task: ``classification`` or ``regression``.
        estimator: Estimator family.
        numeric_features: Numeric features used.
        categorical_features: Categorical features used.
        metrics: Hold-out metrics.
        params: Logged parameters.
        artifact_digest: SHA-256 digest of the model files (also a version tag).
        n_train: Training rows.
        n_test: Hold-out rows.
        reference_profile_uri: Where the reference profile was written.
        git_sha: Commit the model was trained from (tag ``mms.git_sha``), ``None`` when unknown.
        audit_seq: Sequence number of the ``model.trained`` audit entry.
        duration_s: Wall time of the whole job.
    """

    registered_model: str
    version: str
    model_uri: str
    run_id: str
    experiment_id: str
    task: str
    estimator: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    metrics: dict[str, float]
    params: dict[str, Any]
    artifact_digest: str
    n_train: int
    n_test: int
    reference_profile_uri: str
    git_sha: str | None = None
    audit_seq: int | None = None
    duration_s: float = field(default=0.0)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """All features, numeric first (the model's input columns)."""
        return self.numeric_features + self.categorical_features


def _report(progress: Progress | None, stage: str, fraction: float) -> None:
    """Report a step; an exception raised by the callback cancels the job."""
    if progress is not None:
        progress(stage, fraction)


def _report_committed(progress: Progress | None, stage: str, fraction: float) -> None:
    """Report a step after the version exists: the job no longer stops, so a cancellation is ignored."""
    if progress is None:
        return
    try:
        progress(stage, fraction)
    except Exception:  # the version is registered: finishing its profile and audit beats stopping halfway
        log.warning(
            "progress callback raised at %r after registration; training continues", stage, exc_info=True
        )


# --------------------------------------------------------------------------- commit


def _git_head(directory: str | os.PathLike[str]) -> str | None:
    """``git rev-parse HEAD`` in ``directory``; ``None`` without git, a checkout or an answer in time."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip().lower() if completed.returncode == 0 else None


def resolve_git_sha(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    code_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """The commit training runs from: ``explicit``, else ``$GITHUB_SHA``, else the code's ``git HEAD``.

    Args:
        explicit: A commit given by the caller (``--git-sha``): a full 40-character hex SHA.
        environ: Environment to read ``GITHUB_SHA`` from (default ``os.environ``).
        code_dir: Checkout to ask ``git rev-parse HEAD`` (default: the folder of this module).

    Returns:
        The lowercase SHA, or ``None`` when no source knows it (never an error then).

    Raises:
        ValueError: if ``explicit`` is given but is not a full hex SHA.
    """
    if explicit is not None and explicit.strip():
        sha = explicit.strip().lower()
        if not _GIT_SHA_RE.fullmatch(sha):
            raise ValueError(f"git sha {explicit!r} must be a full 40-character hex commit SHA")
        return sha
    env = os.environ if environ is None else environ
    from_env = (env.get(GIT_SHA_ENV) or "").strip().lower()
    if _GIT_SHA_RE.fullmatch(from_env):
        return from_env
    if from_env:
        log.warning("ignoring %s=%r: not a full 40-character hex commit SHA", GIT_SHA_ENV, from_env)
    head = _git_head(code_dir if code_dir is not None else os.path.dirname(os.path.abspath(__file__)))
    return head if head is not None and _GIT_SHA_RE.fullmatch(head) else None


# --------------------------------------------------------------------------- data


def read_training_table(store: Any, project: str, model: str) -> pa.Table:
    """The model's training rows, without the partition-key columns.

    Raises:
        InsufficientData: if the partition holds no rows.
    """
    table = store.read(TRAINING_DATA, filters={"project": project, "model": model})
    keys = [k for k in PARTITION_KEYS[TRAINING_DATA] if k in table.column_names]
    table = table.drop_columns(keys)
    if table.num_rows == 0:
        raise InsufficientData(
            f"no training data for {project}/{model}: "
            f"write it to {TRAINING_DATA}/project={project}/model={model}"
        )
    return table


def resolve_features(table: pa.Table, config: TrainConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Numeric and categorical features: the configured ones, or inferred from column types.

    Raises:
        TrainingError: if no feature remains or a feature is listed as both kinds.
    """
    candidates = [c for c in table.column_names if c != LABEL_COLUMN and c not in segment_columns([c])]
    numeric = config.numeric_features
    if numeric is None:
        numeric = tuple(c for c in candidates if pa.types.is_floating(table.schema.field(c).type))
    categorical = config.categorical_features
    if categorical is None:
        categorical = tuple(
            c
            for c in candidates
            if pa.types.is_string(table.schema.field(c).type)
            or pa.types.is_large_string(table.schema.field(c).type)
        )
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise TrainingError(f"feature(s) {', '.join(both)} are listed as both numeric and categorical")
    if not numeric and not categorical:
        raise TrainingError(
            "the training data has no feature columns (double or string columns besides 'label')"
        )
    for name in categorical:
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            raise TrainingError(
                f"categorical feature {name!r} is stored as double; store categories as strings"
            )
    for name in numeric:
        if name in table.column_names and not pa.types.is_floating(table.schema.field(name).type):
            raise TrainingError(
                f"numeric feature {name!r} is stored as {table.schema.field(name).type}; "
                "store numbers as double"
            )
    return tuple(numeric), tuple(categorical)


def infer_task(labels: pa.ChunkedArray) -> str:
    """``classification`` when the label only takes the values 0 and 1, else ``regression``."""
    values = set(pc.unique(labels.drop_null()).to_pylist())
    return CLASSIFICATION if values <= {0.0, 1.0} else REGRESSION


# --------------------------------------------------------------------------- model


def build_pipeline(numeric: Sequence[str], categorical: Sequence[str], task: str, config: TrainConfig) -> Any:
    """The unfitted scikit-learn pipeline for these features and task.

    Returns:
        ``sklearn.pipeline.Pipeline`` with steps ``preprocess`` and ``model``.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                list(numeric),
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=_MISSING_CATEGORY)),
                        ("encode", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                list(categorical),
            )
        )
    preprocess = ColumnTransformer(transformers, remainder="drop")
    params = config.estimator_params()
    if config.estimator == HIST_GRADIENT_BOOSTING:
        estimator_class = (
            HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
        )
        estimator = estimator_class(**params)
    elif task == CLASSIFICATION:
        estimator = LogisticRegression(**params)
    else:
        estimator = Ridge(**params)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _frame(table: pa.Table, columns: Sequence[str]) -> Any:
    frame = table.select(list(columns)).to_pandas()
    # Plain object columns with None for missing: what the imputer and the signature expect.
    for name in columns:
        if not pa.types.is_floating(table.schema.field(name).type):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _evaluate(pipeline: Any, features: Any, target: np.ndarray, task: str) -> dict[str, float]:
    from sklearn import metrics

    if task == CLASSIFICATION:
        probabilities = pipeline.predict_proba(features)
        predicted = pipeline.classes_[np.argmax(probabilities, axis=1)]
        result = {
            "accuracy": float(metrics.accuracy_score(target, predicted)),
            "log_loss": float(metrics.log_loss(target, probabilities, labels=pipeline.classes_)),
        }
        if len(np.unique(target)) < 2:
            return result
        if len(pipeline.classes_) == 2:
            result["roc_auc"] = float(metrics.roc_auc_score(target, probabilities[:, 1]))
            result["f1"] = float(metrics.f1_score(target, predicted, pos_label=pipeline.classes_[1]))
        else:
            result["roc_auc"] = float(
                metrics.roc_auc_score(target, probabilities, multi_class="ovr", labels=pipeline.classes_)
            )
        return result
    predicted = pipeline.predict(features)
    return {
        "rmse": float(math.sqrt(metrics.mean_squared_error(target, predicted))),
        "mae": float(metrics.mean_absolute_error(target, predicted)),
        "r2": float(metrics.r2_score(target, predicted)),
    }


def _signature(numeric: Sequence[str], categorical: Sequence[str], task: str, classes: Any) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # Every input may be null at serving time (the pipeline imputes), hence required=False.
    inputs = Schema(
        [ColSpec("double", name, required=False) for name in numeric]
        + [ColSpec("string", name, required=False) for name in categorical]
    )
    if task == CLASSIFICATION:
        output_type = "long" if np.issubdtype(np.asarray(classes).dtype, np.integer) else "double"
    else:
        output_type = "double"
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(output_type)]))


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "skops", "numpy", "scipy", "pandas")]


def _experiment_id(client: Any, project: str, artifact_root: str | None) -> str:
    mlflow = registry.import_mlflow()
    existing = client.get_experiment_by_name(project)
    if existing is not None:
        return existing.experiment_id
    location = f"{artifact_root.rstrip('/')}/{project}" if artifact_root else None
    try:
        return client.create_experiment(
            project, artifact_location=location, tags={registry.TAG_PROJECT: project}
        )
    except mlflow.exceptions.MlflowException:
        # Another training created it meanwhile.
        existing = client.get_experiment_by_name(project)
        if existing is None:
            raise
        return existing.experiment_id


# --------------------------------------------------------------------------- reference profile


def reference_profile(store: Any, table: pa.Table, columns: Sequence[str], *, task: str) -> Any:
    """Profile of the training rows (features, segments and label), computed in DuckDB.

    Args:
        store: The Parquet store (its DuckDB cursor runs the profile).
        table: Training rows without partition keys.
        columns: Columns to profile.
        task: The label is profiled as categorical (class balance) for classification.

    Returns:
        ``analytics.profile.Profile`` of the whole table.
    """
    from analytics.profile import build_spec, profile

    relation = store.cursor().from_arrow(table.select(list(columns)))
    kinds = {LABEL_COLUMN: "categorical"} if task == CLASSIFICATION and LABEL_COLUMN in columns else {}
    spec = build_spec(relation, list(columns), kinds=kinds)
    return profile(relation, spec)


def read_reference_profile(store: Any, project: str, model: str, version: str | int) -> Any:
    """The reference profile written when ``version`` of the model was trained.

    The file is read with pyarrow, not DuckDB: the profile spec travels in the Arrow
    schema metadata (``mms.profile``), which a DuckDB read drops.

    Returns:
        ``analytics.profile.Profile``.

    Raises:
        ValueError: for names that are not key segments.
        InsufficientData: if no profile exists for that version.
    """
    import pyarrow.parquet as pq

    from analytics.profile import Profile

    partition = {"project": project, "model": model, "version": str(version)}
    for what, value in partition.items():
        problem = key_segment_problem(value)
        if problem:
            raise ValueError(f"invalid {what}: {problem}")
    files = [
        f
        for f in store.list_files(REFERENCE_PROFILES, filters=partition)
        if f.path.rsplit("/", 1)[-1] == PROFILE_FILE_NAME
    ]
    if not files:
        raise InsufficientData(f"no reference profile for {project}/{model} version {version}")
    with store.filesystem().open_input_file(files[0].path.removeprefix("s3://")) as handle:
        return Profile.from_arrow(pq.ParquetFile(handle).read())


# --------------------------------------------------------------------------- the job


def train_model(
    actor: Actor,
    *,
    project: str,
    model: str,
    store: Any,
    tracking_uri: str,
    session_factory: Any,
    config: TrainConfig | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    registry_uri: str | None = None,
    artifact_root: str | None = None,
    git_sha: str | None = None,
) -> TrainResult:
    """Train ``model`` of ``project`` on its training data, register a new version and audit it.

    No database transaction is held while training: the audit entry is appended in a
    short transaction of its own once the version exists.

    Args:
        actor: Who trains; needs ``TRAIN_MODELS`` on ``project``.
        project: Project slug.
        model: Model name within the project.
        store: The Parquet store (``analytics.store.ParquetStore``).
        tracking_uri: MLflow tracking URI.
        session_factory: Session factory of the metadata database (the audit log).
        config: :class:`TrainConfig` or a mapping of its fields; defaults apply when ``None``.
        progress: Optional ``progress(stage, fraction)`` callback; raise from it to cancel
            (honoured up to the ``registering`` report, see the module doc).
        registry_uri: MLflow registry URI (defaults to the tracking URI).
        artifact_root: Artifact root for a new experiment; defaults to ``mlartifacts``
            next to a SQLite tracking database (see :func:`jobs.registry.default_artifact_root`).
        git_sha: Commit the model is trained from; ``None`` looks it up (:func:`resolve_git_sha`).

    Returns:
        The registered version, its metrics and its audit entry's sequence number.

    Raises:
        Forbidden: if the actor may not train models on the project (nothing is read or written).
        ValueError: for an invalid project/model name, configuration or ``git_sha``.
        InsufficientData: if the training data is missing or too small.
        jobs.contracts.ContractError: if the training data breaks its contract.
        TrainingError: if MLflow or the profile write fails (the message says which step; a
            version registered before the failure is audited all the same).
        Exception: whatever the progress callback raised to cancel the job.
    """
    require(actor, Permission.TRAIN_MODELS, project)
    started = time.monotonic()
    commit = resolve_git_sha(git_sha)
    name = registry.registered_model_name(project, model)
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_mapping(config)

    _report(progress, "reading training data", 0.0)
    table = read_training_table(store, project, model)
    numeric, categorical = resolve_features(table, config)
    features = numeric + categorical
    require_valid(validate_training_table(table, features, partition={"project": project, "model": model}))
    # The contract forbids null labels; NaN or infinite ones cannot be learned from either.
    table = table.filter(pc.fill_null(pc.is_finite(table.column(LABEL_COLUMN)), False))
    if config.max_rows is not None and table.num_rows > config.max_rows:
        rng = np.random.default_rng(config.random_state)
        table = table.take(np.sort(rng.choice(table.num_rows, size=config.max_rows, replace=False)))
    if table.num_rows < config.min_rows:
        raise InsufficientData(
            f"{project}/{model} has {table.num_rows} training rows; at least {config.min_rows} are needed"
        )
    task = config.task or infer_task(table.column(LABEL_COLUMN))
    if task != config.task:
        config = TrainConfig(**{**asdict(config), "task": task})

    _report(progress, "splitting", 0.1)
    from sklearn.model_selection import train_test_split

    frame = _frame(table, features)
    target = table.column(LABEL_COLUMN).to_numpy()
    if task == CLASSIFICATION:
        if np.all(np.mod(target, 1) == 0):
            target = target.astype(np.int64)
        counts = np.unique(target, return_counts=True)[1]
        if len(counts) < 2:
            raise InsufficientData(f"{project}/{model}: the label has a single class; a classifier needs two")
        stratify = target if counts.min() >= 2 else None
    else:
        stratify = None
    x_train, x_test, y_train, y_test = train_test_split(
        frame, target, test_size=config.test_size, random_state=config.random_state, stratify=stratify
    )

    _report(progress, "fitting", 0.2)
    pipeline = build_pipeline(numeric, categorical, task, config)
    pipeline.fit(x_train, y_train)

    _report(progress, "evaluating", 0.55)
    metrics = _evaluate(pipeline, x_test, y_test, task)

    _report(progress, "profiling training data", 0.6)
    profiled = [*features, *segment_columns(table.column_names), LABEL_COLUMN]
    profile_table = reference_profile(store, table, profiled, task=task).to_arrow()

    params = {
        "task": task,
        "estimator": config.estimator,
        "test_size": config.test_size,
        "random_state": config.random_state,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "n_numeric_features": len(numeric),
        "n_categorical_features": len(categorical),
        **{f"model.{k}": v for k, v in config.estimator_params().items()},
    }
    mlflow = registry.import_mlflow()
    if artifact_root is None:
        artifact_root = registry.default_artifact_root(tracking_uri)
    commit_tags = {TAG_GIT_SHA: commit} if commit else {}
    version_tags = {
        **commit_tags,
        registry.TAG_CREATED_BY: actor.username,
        registry.TAG_PROJECT: project,
        registry.TAG_MODEL: model,
        registry.TAG_TASK: task,
        registry.TAG_TARGET: LABEL_COLUMN,
        registry.TAG_NUMERIC_FEATURES: json.dumps(list(numeric)),
        registry.TAG_CATEGORICAL_FEATURES: json.dumps(list(categorical)),
        registry.TAG_TRAINING_ROWS: str(table.num_rows),
    }
    try:
        with registry.mlflow_target(tracking_uri, registry_uri) as client:
            _report(progress, "logging to MLflow", 0.7)
            experiment_id = _experiment_id(client, project, artifact_root)
            run_tags = {
                **commit_tags,
                registry.TAG_CREATED_BY: actor.username,
                registry.TAG_PROJECT: project,
                registry.TAG_MODEL: model,
            }
            with mlflow.start_run(
                experiment_id=experiment_id, run_name=f"train-{model}", tags=run_tags
            ) as run:
                mlflow.log_params(params)
                mlflow.log_metrics(metrics)
                model_info = mlflow.sklearn.log_model(
                    pipeline,
                    name=MODEL_ARTIFACT_NAME,
                    signature=_signature(numeric, categorical, task, getattr(pipeline, "classes_", None)),
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                    pip_requirements=_pip_requirements(),
                )
                run_id = run.info.run_id

            _report(progress, "registering", LAST_CANCELLABLE_FRACTION)
            with tempfile.TemporaryDirectory(prefix="mms-digest-") as scratch:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=model_info.model_uri, dst_path=scratch
                )
                digest = registry.artifact_digest(local)
            try:
                client.create_registered_model(
                    name,
                    tags={registry.TAG_PROJECT: project, registry.TAG_MODEL: model},
                    description=f"Model {model!r} of project {project!r}.",
                )
            except mlflow.exceptions.MlflowException as error:
                if "ALREADY_EXISTS" not in str(error.error_code):
                    raise
            version = client.create_model_version(
                name,
                source=model_info.model_uri,
                run_id=run_id,
                model_id=model_info.model_id,
                tags={**version_tags, registry.TAG_RUN_ID: run_id, registry.TAG_ARTIFACT_DIGEST: digest},
                description=f"Trained by {actor.username}; hold-out "
                + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())),
            )
    except mlflow.exceptions.MlflowException as error:
        raise TrainingError(f"MLflow refused the training run of {name}: {error.message}") from error

    # The version exists from here on: cancelling now would leave it unaudited and without a profile.
    _report_committed(progress, "writing reference profile", 0.92)
    partition = {"project": project, "model": model, "version": str(version.version)}
    facts = {
        "project": project,
        "model": model,
        "registered_model": name,
        "version": str(version.version),
        "run_id": run_id,
        "artifact_digest": digest,
        "git_sha": commit,
        "task": task,
        "estimator": config.estimator,
        # NaN is not JSON (an R² of a constant hold-out label): leave such a metric out.
        "metrics": {key: value for key, value in metrics.items() if math.isfinite(value)},
        "n_train": len(y_train),
        "n_test": len(y_test),
    }
    try:
        store.write_partition(
            REFERENCE_PROFILES, partition, profile_table, file_name=PROFILE_FILE_NAME, replace_partition=True
        )
    except Exception as error:  # the version exists: record why its profile is missing, then fail
        client_after = registry.client(tracking_uri, registry_uri)
        client_after.set_model_version_tag(
            name, str(version.version), registry.TAG_REFERENCE_PROFILE, "missing"
        )
        _audit_training(session_factory, actor, {**facts, "reference_profile": None})
        raise TrainingError(
            f"{name} version {version.version} was registered but its reference profile could not be "
            f"written: {error}"
        ) from error
    profile_uri = store.partition_uri(REFERENCE_PROFILES, partition)
    registry.client(tracking_uri, registry_uri).set_model_version_tag(
        name, str(version.version), registry.TAG_REFERENCE_PROFILE, profile_uri
    )

    _report_committed(progress, "recording the audit entry", 0.97)
    audit_seq = _audit_training(session_factory, actor, {**facts, "reference_profile": profile_uri})

    _report_committed(progress, "done", 1.0)
    return TrainResult(
        registered_model=name,
        version=str(version.version),
        model_uri=f"models:/{name}/{version.version}",
        run_id=run_id,
        experiment_id=experiment_id,
        task=task,
        estimator=config.estimator,
        numeric_features=numeric,
        categorical_features=categorical,
        metrics=metrics,
        params=params,
        artifact_digest=digest,
        n_train=len(y_train),
        n_test=len(y_test),
        reference_profile_uri=profile_uri,
        git_sha=commit,
        audit_seq=audit_seq,
        duration_s=time.monotonic() - started,
    )


def _audit_training(session_factory: Any, actor: Actor, facts: Mapping[str, Any]) -> int:
    """Append ``model.trained`` in a transaction of its own; return the entry's sequence number."""
    target = f"model_version:{facts['registered_model']}/{facts['version']}"
    with session_scope(session_factory, write=True) as session:
        return audit.append(session, actor.username, AUDIT_ACTION, target, facts).seq


# --------------------------------------------------------------------------- command line


def _train_command(args: argparse.Namespace, settings: Any) -> int:
    from analytics.store import ParquetStore
    from jobs.cli import EXIT_FAILURE, EXIT_OK, UsageError
    from jobs.contracts import ContractError
    from jobs.db import make_engine, make_session_factory
    from jobs.users import actor_for, get_user

    options = json.loads(args.options) if args.options else {}
    if not isinstance(options, dict):
        raise UsageError("--options must be a JSON object")
    if args.estimator:
        options["estimator"] = args.estimator
    try:
        config = TrainConfig.from_mapping(options)
        git_sha = resolve_git_sha(args.git_sha)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error

    def show(stage: str, fraction: float) -> None:
        print(f"[{fraction:4.0%}] {stage}", flush=True)

    engine = make_engine(settings.database_url)
    store = ParquetStore(settings.store_config())
    try:
        session_factory = make_session_factory(engine)
        with session_scope(session_factory) as session:
            user = get_user(session, args.actor)
            actor = actor_for(session, user.id) if user else None
        if actor is None:
            raise UsageError(f"--actor {args.actor!r} is not an active user")
        result = train_model(
            actor,
            project=args.project,
            model=args.model,
            store=store,
            tracking_uri=settings.mlflow_tracking_uri,
            registry_uri=settings.mlflow_registry_uri,
            session_factory=session_factory,
            config=config,
            progress=show,
            git_sha=git_sha,
        )
    except (TrainingError, ContractError) as error:
        print(f"error: {error}")
        return EXIT_FAILURE
    finally:
        store.close()
        engine.dispose()
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    commit = f"; commit {result.git_sha[:12]}" if result.git_sha else ""
    print(f"registered {result.registered_model} version {result.version} ({result.task}; {metrics}{commit})")
    return EXIT_OK


def register_train(subparsers: Any) -> None:
    """``train``: train a model from its training data and register a new MLflow version."""
    parser = subparsers.add_parser("train", help="train a model and register a new version in MLflow")
    parser.add_argument(
        "--actor", "--as", dest="actor", required=True, help="username of who trains (needs train_models)"
    )
    parser.add_argument("--project", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--estimator", choices=ESTIMATORS)
    parser.add_argument("--options", help="TrainConfig fields as JSON, e.g. '{\"max_iter\": 100}'")
    parser.add_argument(
        "--git-sha",
        help=f"commit the model is trained from (tag {TAG_GIT_SHA}); default ${GIT_SHA_ENV}, else git HEAD",
    )
    parser.set_defaults(func=_train_command)
