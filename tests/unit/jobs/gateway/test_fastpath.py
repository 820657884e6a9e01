"""The compiled NumPy scorer gives the estimator's outputs, and is used only when it does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.demo_data import CREDIT_DEFAULT, training_table
from jobs.gateway.fastpath import compile_linear_pipeline
from jobs.gateway.models import LoadedModel
from jobs.training import CLASSIFICATION, HIST_GRADIENT_BOOSTING, REGRESSION, TrainConfig, build_pipeline
from tests.unit.jobs.gateway.support import CATEGORICAL, MODEL, NUMERIC, PROJECT, features, loaded_model

pytestmark = pytest.mark.unit


def _frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame({n: [r[n] for r in records] for n in NUMERIC + CATEGORICAL})
    for name in NUMERIC:
        frame[name] = frame[name].astype(np.float64)
    for name in CATEGORICAL:
        frame[name] = frame[name].astype(object)
    return frame


def _records(model: LoadedModel) -> list[dict]:
    raw = [
        features(),
        features(income=None, home_ownership=None),
        features(loan_purpose="never-seen-in-training", age=18),
        features(debt_to_income=None, credit_utilization=None, employment_type=None),
        features(income=1e7, num_late_payments=12),
    ]
    return [model.parse_features(record, "f")[0] for record in raw]


def _fitted(task: str, estimator: str) -> object:
    table = training_table(CREDIT_DEFAULT, seed=5, rows=400)
    config = TrainConfig(task=task, estimator=estimator, max_iter=50)
    pipeline = build_pipeline(NUMERIC, CATEGORICAL, task, config)
    frame = _frame(table.select(list(NUMERIC + CATEGORICAL)).to_pylist())
    target = table.column("label").to_numpy().astype("float64")
    pipeline.fit(frame, target.astype("int64") if task == CLASSIFICATION else target)
    return pipeline


def _loaded(estimator: object, task: str) -> LoadedModel:
    classes = tuple(estimator.classes_.tolist()) if task == CLASSIFICATION else None
    return LoadedModel(PROJECT, MODEL, "1", estimator, NUMERIC, CATEGORICAL, task=task, classes=classes)


def test_a_logistic_pipeline_is_compiled_and_scores_like_the_estimator() -> None:
    model = loaded_model()
    assert model.compiled
    records = _records(model)
    answers, predictions, scores = model.predict(records)
    expected = model.estimator.predict_proba(_frame(records))
    assert np.allclose(scores, expected[:, 1], rtol=1e-9, atol=1e-12)
    assert answers == model.estimator.predict(_frame(records)).tolist()
    assert predictions == [float(a) for a in answers]


def test_a_ridge_pipeline_is_compiled_and_predicts_like_the_estimator() -> None:
    model = _loaded(_fitted(REGRESSION, "linear"), REGRESSION)
    assert model.compiled
    records = _records(model)
    answers, predictions, scores = model.predict(records)
    assert np.allclose(answers, model.estimator.predict(_frame(records)), rtol=1e-9, atol=1e-12)
    assert predictions == answers and scores == [None] * len(records)


def test_other_estimators_keep_the_scikit_learn_path() -> None:
    model = _loaded(_fitted(CLASSIFICATION, HIST_GRADIENT_BOOSTING), CLASSIFICATION)
    assert not model.compiled
    assert compile_linear_pipeline(model.estimator, NUMERIC, CATEGORICAL, CLASSIFICATION) is None
    records = _records(model)
    _answers, _predictions, scores = model.predict(records)
    assert np.allclose(scores, model.estimator.predict_proba(_frame(records))[:, 1])


def test_features_in_another_order_than_the_pipeline_columns_are_not_compiled() -> None:
    estimator = _fitted(CLASSIFICATION, "linear")
    reordered = LoadedModel(
        PROJECT,
        MODEL,
        "1",
        estimator,
        tuple(reversed(NUMERIC)),
        CATEGORICAL,
        task=CLASSIFICATION,
        classes=(0, 1),
    )
    assert not reordered.compiled


def test_a_scorer_that_differs_from_the_estimator_on_the_probes_is_not_used(monkeypatch) -> None:
    from jobs.gateway import models

    def off_by_a_little(*args):
        scorer = compile_linear_pipeline(*args)
        return lambda matrix, categories: scorer(matrix, categories) * (1 + 1e-6)

    monkeypatch.setattr(models, "compile_linear_pipeline", off_by_a_little)
    model = _loaded(_fitted(CLASSIFICATION, "linear"), CLASSIFICATION)
    assert not model.compiled
    records = _records(model)
    assert np.allclose(model.predict(records)[2], model.estimator.predict_proba(_frame(records))[:, 1])
