"""A registered model version that fails on chosen inputs: the erroring candidate of the gateway tests.

:func:`register_failing_version` wraps the estimator of an existing version in
:class:`FailingOnSentinels` and registers it as a new version of the same model (same
feature tags, its own artifact digest), so the gateway loads it through MLflow like any
other version. The wrapper raises when a record's ``age`` is :data:`FAIL_AGE` and returns a
NaN probability when it is :data:`NAN_AGE`; every other record is scored by the wrapped
pipeline. The gateway process unpickles it by reference, so this module must be importable
there (the tests put the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from jobs import registry

FAIL_AGE = 77
"""A record with this age makes the failing version raise (``model_error``)."""

NAN_AGE = 78
"""A record with this age gets a NaN probability from the failing version (``bad_output``)."""


class FailingOnSentinels:
    """A classifier that delegates to ``inner`` but fails on the sentinel ages.

    Args:
        inner: A fitted scikit-learn classifier (the pipeline ``jobs.training`` registers).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

    def _ages(self, frame: Any) -> np.ndarray:
        return np.asarray(frame["age"], dtype=np.float64)

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Probabilities of ``inner``; raises on :data:`FAIL_AGE`, NaN rows on :data:`NAN_AGE`."""
        ages = self._ages(frame)
        if np.any(ages == FAIL_AGE):
            raise ValueError(f"deliberate failure: age {FAIL_AGE} is not supported by this candidate")
        probabilities = np.array(self.inner.predict_proba(frame), dtype=np.float64)
        probabilities[ages == NAN_AGE] = np.nan
        return probabilities

    def predict(self, frame: Any) -> np.ndarray:
        """Class labels (the most probable class)."""
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(frame), axis=1)]


def register_failing_version(tracking_uri: str, project: str, model: str, base_version: str) -> str:
    """Register a :class:`FailingOnSentinels` wrapper of ``base_version`` as a new version.

    Returns:
        The new version number.
    """
    mlflow = registry.import_mlflow()
    name = registry.registered_model_name(project, model)
    base = registry.get_version(name, base_version, tracking_uri=tracking_uri)
    with registry.mlflow_target(tracking_uri) as client:
        inner = mlflow.sklearn.load_model(f"models:/{name}/{base_version}")
        experiment_id = client.get_run(base.run_id).info.experiment_id
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"failing-{model}") as run:
            logged = mlflow.sklearn.log_model(
                FailingOnSentinels(inner),
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                pip_requirements=["scikit-learn"],
            )
        with tempfile.TemporaryDirectory(prefix="mms-failing-") as scratch:
            local = mlflow.artifacts.download_artifacts(artifact_uri=logged.model_uri, dst_path=scratch)
            digest = registry.artifact_digest(local)
        tags = {
            **base.tags,
            registry.TAG_RUN_ID: run.info.run_id,
            registry.TAG_ARTIFACT_DIGEST: digest,
        }
        version = client.create_model_version(
            name,
            source=logged.model_uri,
            run_id=run.info.run_id,
            model_id=logged.model_id,
            tags=tags,
            description=f"version {base_version} made to fail on age {FAIL_AGE} (tests)",
        )
    return str(version.version)
