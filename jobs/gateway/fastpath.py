"""A NumPy scorer equivalent to the pipelines ``jobs.training`` builds, for the request path.

Scoring a handful of records through a scikit-learn ``Pipeline`` costs milliseconds of CPU
whatever the number of rows: a pandas frame is built, and every step re-validates it
(``check_array``, column look-ups, dtype checks). For the shapes ``jobs.training.build_pipeline``
produces with a linear model — a ``ColumnTransformer`` of *impute + scale* for the numeric
features and *impute + one-hot* for the categorical ones, then ``LogisticRegression`` or
``Ridge`` — the fitted arithmetic is a few array operations, which :func:`compile_linear_pipeline`
extracts.

It is strictly an optimisation: :func:`compile_linear_pipeline` returns ``None`` for any other
estimator (or any option it does not reproduce), and :class:`~jobs.gateway.models.LoadedModel`
checks the compiled scorer against the estimator on probe records when the version is loaded,
keeping the estimator when they differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

# (numeric matrix float64 rows x n_numeric with NaN for missing, categorical values per row)
# -> raw output: probabilities (rows x classes) of a classifier, values (rows,) of a regressor.
CompiledScorer = Callable[[np.ndarray, Sequence[Sequence[Any]]], np.ndarray]


def _exact_type(value: object, module: str, name: str) -> bool:
    cls = type(value)
    return cls.__name__ == name and cls.__module__.startswith(module)


def _numeric_steps(step: Any, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(fill, mean, scale)`` of a fitted ``Pipeline(SimpleImputer, StandardScaler)``."""
    if not _exact_type(step, "sklearn.pipeline", "Pipeline") or len(step.steps) != 2:
        return None
    imputer, scaler = step.steps[0][1], step.steps[1][1]
    if not _exact_type(imputer, "sklearn.impute", "SimpleImputer") or not _exact_type(
        scaler, "sklearn.preprocessing", "StandardScaler"
    ):
        return None
    missing = imputer.missing_values
    if imputer.add_indicator or not (isinstance(missing, float) and math.isnan(missing)):
        return None
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    if fill.shape != (count,) or np.isnan(fill).any() or getattr(imputer, "keep_empty_features", False):
        return None
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(count)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(count)
    if mean.shape != (count,) or scale.shape != (count,):
        return None
    return fill, mean, scale


def _categorical_steps(step: Any, count: int) -> tuple[Any, list[dict[Any, int]], int] | None:
    """``(fill value, {category: output column} per feature, output width)`` of a fitted
    ``Pipeline(SimpleImputer(strategy="constant"), OneHotEncoder(handle_unknown="ignore"))``."""
    if not _exact_type(step, "sklearn.pipeline", "Pipeline") or len(step.steps) != 2:
        return None
    imputer, encoder = step.steps[0][1], step.steps[1][1]
    if not _exact_type(imputer, "sklearn.impute", "SimpleImputer") or not _exact_type(
        encoder, "sklearn.preprocessing", "OneHotEncoder"
    ):
        return None
    if imputer.strategy != "constant" or imputer.add_indicator or not isinstance(imputer.fill_value, str):
        return None
    if (
        encoder.handle_unknown != "ignore"
        or encoder.drop is not None
        or getattr(encoder, "_infrequent_enabled", False)
        or len(encoder.categories_) != count
    ):
        return None
    positions: list[dict[Any, int]] = []
    width = 0
    for categories in encoder.categories_:
        values = list(categories.tolist())
        if not all(isinstance(v, str) for v in values):
            return None
        positions.append({value: width + i for i, value in enumerate(values)})
        width += len(values)
    return imputer.fill_value, positions, width


def compile_linear_pipeline(
    estimator: Any, numeric: Sequence[str], categorical: Sequence[str], task: str
) -> CompiledScorer | None:
    """A NumPy scorer for a fitted ``jobs.training`` linear pipeline, ``None`` for anything else.

    Args:
        estimator: The fitted estimator of a version.
        numeric: Its numeric features, in the order the scorer receives them.
        categorical: Its categorical features, in that order.
        task: ``classification`` or ``regression``.

    Returns:
        ``scorer(numeric_matrix, categorical_rows)``: the class probabilities of a binary
        ``LogisticRegression`` (rows x 2) or the values of a ``Ridge`` (rows,).
    """
    if not _exact_type(estimator, "sklearn.pipeline", "Pipeline") or len(estimator.steps) != 2:
        return None
    preprocess, model = estimator.steps[0][1], estimator.steps[1][1]
    if not _exact_type(preprocess, "sklearn.compose", "ColumnTransformer"):
        return None
    if preprocess.remainder != "drop":
        return None
    if getattr(preprocess, "transformer_weights", None):
        return None
    fitted = [t for t in preprocess.transformers_ if t[0] != "remainder"]
    numeric_part = categorical_part = None
    expected = [("numeric", list(numeric))] if numeric else []
    expected += [("categorical", list(categorical))] if categorical else []
    if [(name, list(columns)) for name, _step, columns in fitted] != expected:
        return None
    for name, step, _columns in fitted:
        if name == "numeric":
            numeric_part = _numeric_steps(step, len(numeric))
            if numeric_part is None:
                return None
        else:
            categorical_part = _categorical_steps(step, len(categorical))
            if categorical_part is None:
                return None
    width = (len(numeric) if numeric else 0) + (categorical_part[2] if categorical_part else 0)
    coef = np.asarray(getattr(model, "coef_", None), dtype=np.float64)
    intercept = np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64)
    if task == "classification":
        if not _exact_type(model, "sklearn.linear_model", "LogisticRegression"):
            return None
        if coef.shape != (1, width) or intercept.shape != (1,) or len(model.classes_) != 2:
            return None
        weights, bias = coef[0], float(intercept[0])
    else:
        if not _exact_type(model, "sklearn.linear_model", "Ridge") or coef.shape != (width,):
            return None
        weights, bias = coef, float(intercept)
    numeric_count = len(numeric)

    def transform(matrix: np.ndarray, categories: Sequence[Sequence[Any]]) -> np.ndarray:
        rows = matrix.shape[0]
        out = np.zeros((rows, width), dtype=np.float64)
        if numeric_part is not None:
            fill, mean, scale = numeric_part
            values = np.where(np.isnan(matrix), fill, matrix)
            out[:, :numeric_count] = (values - mean) / scale
        if categorical_part is not None:
            fill_value, positions, _width = categorical_part
            for row, record in enumerate(categories):
                for feature, value in enumerate(record):
                    column = positions[feature].get(fill_value if value is None else value)
                    if column is not None:
                        out[row, numeric_count + column] = 1.0
        return out

    if task == "classification":

        def score(matrix: np.ndarray, categories: Sequence[Sequence[Any]]) -> np.ndarray:
            positive = expit(transform(matrix, categories) @ weights + bias)
            return np.column_stack((1.0 - positive, positive))

        return score

    def predict(matrix: np.ndarray, categories: Sequence[Sequence[Any]]) -> np.ndarray:
        return transform(matrix, categories) @ weights + bias

    return predict


def probe_records(
    numeric: Sequence[str], categorical: Sequence[str], estimator: Any
) -> list[Mapping[str, Any]]:
    """Records that exercise every input: missing values, every known category, an unknown one."""
    categories: list[list[Any]] = [[] for _ in categorical]
    with_categories = getattr(estimator, "steps", None)
    try:
        encoder = with_categories[0][1].named_transformers_["categorical"].steps[1][1]  # type: ignore[index]
        categories = [list(c.tolist()) for c in encoder.categories_]
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    center, spread = np.zeros(len(numeric)), np.ones(len(numeric))
    try:
        scaler = with_categories[0][1].named_transformers_["numeric"].steps[1][1]  # type: ignore[index]
        center = np.asarray(scaler.mean_, dtype=np.float64)
        spread = np.asarray(scaler.scale_, dtype=np.float64)
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    rows = max([8, *(len(c) + 2 for c in categories)])
    generator = np.random.default_rng(7)
    records: list[dict[str, Any]] = []
    for row in range(rows):
        record: dict[str, Any] = {}
        for index, name in enumerate(numeric):
            value = center[index] + spread[index] * generator.normal(0, 1) if index < len(center) else 0.0
            record[name] = None if (row + index) % 5 == 0 else float(value)
        for index, name in enumerate(categorical):
            known = categories[index]
            position = row + index
            if position % 7 == 0:
                record[name] = None
            elif known and position % len(known) != len(known) - 1:
                record[name] = known[position % len(known)]
            else:
                record[name] = "mms-unknown-category"
        records.append(record)
    return records
