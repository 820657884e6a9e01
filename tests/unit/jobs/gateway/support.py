"""Real, small scikit-learn models and stores for the gateway unit tests (no MLflow, no server)."""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa

from analytics.store import ParquetStore, StoreConfig
from jobs.demo_data import CREDIT_DEFAULT, training_table
from jobs.gateway.models import LoadedModel
from jobs.training import CLASSIFICATION, TrainConfig, build_pipeline

PROJECT = CREDIT_DEFAULT.project
MODEL = CREDIT_DEFAULT.model
NUMERIC = CREDIT_DEFAULT.numeric_features
CATEGORICAL = CREDIT_DEFAULT.categorical_features


@functools.cache
def _fitted(max_iter: int) -> object:
    table = training_table(CREDIT_DEFAULT, seed=3, rows=600)
    config = TrainConfig(task=CLASSIFICATION, estimator="linear", max_iter=max_iter)
    pipeline = build_pipeline(NUMERIC, CATEGORICAL, CLASSIFICATION, config)
    frame = table.select(list(NUMERIC + CATEGORICAL)).to_pandas()
    for name in CATEGORICAL:
        frame[name] = frame[name].astype(object)
    pipeline.fit(frame, table.column("label").to_numpy().astype("int64"))
    return pipeline


def loaded_model(
    version: str = "1", *, max_iter: int = 100, required: frozenset[str] = frozenset()
) -> LoadedModel:
    """A fitted logistic-regression pipeline on the demo credit features, as the gateway holds it."""
    pipeline = _fitted(max_iter)
    return LoadedModel(
        project=PROJECT,
        model=MODEL,
        version=version,
        estimator=pipeline,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        required=required,
        task=CLASSIFICATION,
        classes=tuple(pipeline.classes_.tolist()),
    )


def features(**overrides: object) -> dict[str, object]:
    """One valid feature record (overrides replace values)."""
    values: dict[str, object] = {
        "income": 52_000.0,
        "age": 40,
        "debt_to_income": 0.3,
        "credit_utilization": 0.4,
        "num_open_accounts": 4,
        "months_employed": 60,
        "loan_amount": 15_000.0,
        "interest_rate": 11.5,
        "num_late_payments": 0,
        "home_ownership": "rent",
        "loan_purpose": "car",
        "employment_type": "salaried",
    }
    values.update(overrides)
    return values


def local_store(root: Path) -> ParquetStore:
    """A Parquet store on a local folder."""
    return ParquetStore(StoreConfig(data_uri=str(root)))


def column_types() -> tuple[tuple[str, pa.DataType], ...]:
    """The inference-log feature columns of :func:`loaded_model`."""
    return loaded_model().column_types
