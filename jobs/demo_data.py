"""Deterministic demo workspace: training sets, inference traffic and late labels.

:func:`generate_demo_data` writes, through the Parquet store, what a real
workspace would hold after 90 days of serving three models:

* ``credit-risk/credit-default`` (binary classification, probability of default),
* ``credit-risk/churn`` (binary classification, probability of churn),
* ``demand-forecast/demand`` (regression, units sold).

Each model gets a training set (``training_data``) drawn from the stationary
distribution and, per environment (``prod`` heavy, ``staging`` light), one
``inference_logs`` partition per day plus the ``labels`` that arrived 1-7 days
after each request (so the newest days are only partly labelled).

On top of that stationary traffic a few incidents are injected on *known*
features and days, listed in the returned :class:`DemoScenario` so that tests
of the monitoring job can assert that alerts fire exactly there and nowhere
else: feature drift, a null burst and a latency regression. Everything is
drawn from numpy generators seeded by ``(seed, model, environment, purpose)``
(stable CRC32 hashes, never Python's salted ``hash``), so the same seed always
yields byte-identical tables, and each (model, environment) is generated in
one vectorised pass and then sliced per day.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from jobs.contracts import (
    INFERENCE_LOGS,
    LABEL_COLUMN,
    LABELS,
    TRAINING_DATA,
    UTC_MICROS,
    date_partition,
    require_valid,
    validate_inference_table,
    validate_labels_table,
    validate_training_table,
)

DEMO_VERSION = "1"
"""Model version that serves all demo traffic."""

PROD = "prod"
STAGING = "staging"
DEMO_ENVIRONMENTS = (PROD, STAGING)
SEGMENT_REGION = "segment_region"
REGIONS = ("north", "south", "east", "west")
REGION_SHARES = (0.3, 0.25, 0.25, 0.2)

LABEL_DELAY_DAYS = (1.0, 7.0)
LABEL_COVERAGE = 0.9
_MICROS_PER_DAY = 86_400_000_000


class PartitionWriter(Protocol):
    """What the generator needs from the store (``analytics.store.ParquetStore`` fits)."""

    def write_partition(
        self, dataset: str, partition: Mapping[str, object], table: pa.Table, *, replace_partition: bool
    ) -> object:
        """Atomically write ``table`` into a partition (``replace_partition``: drop its other files)."""
        ...


# --------------------------------------------------------------------------- feature specs


@dataclass(frozen=True)
class NumericFeature:
    """A numeric feature and the distribution it is drawn from.

    Attributes:
        name: Column name.
        draw: ``draw(rng, n) -> float64 array``.
        mean: Nominal mean (standardisation of the simulated model, drift sizes).
        std: Nominal standard deviation.
    """

    name: str
    draw: Callable[[np.random.Generator, int], np.ndarray]
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical feature: levels and their shares."""

    name: str
    levels: tuple[str, ...]
    shares: tuple[float, ...]


def _normal(mean: float, std: float, low: float = -np.inf, high: float = np.inf, decimals: int = 2):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(np.clip(rng.normal(mean, std, n), low, high), decimals)

    return draw


def _integer_normal(mean: float, std: float, low: float, high: float):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(np.rint(rng.normal(mean, std, n)), low, high).astype(np.float64)

    return draw


def _lognormal(median: float, sigma: float, decimals: int = 2):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(rng.lognormal(np.log(median), sigma, n), decimals)

    return draw


def _beta(a: float, b: float, scale: float = 1.0):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(rng.beta(a, b, n) * scale, 4)

    return draw


def _poisson(lam: float, offset: float = 0.0):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.poisson(lam, n).astype(np.float64) + offset

    return draw


def _gamma_int(shape: float, scale: float, low: float, high: float):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(np.rint(rng.gamma(shape, scale, n)), low, high).astype(np.float64)

    return draw


def _exponential(mean: float):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(rng.exponential(mean, n), 2)

    return draw


def _bernoulli(p: float):
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.random(n) < p).astype(np.float64)

    return draw


def _lognormal_std(median: float, sigma: float) -> tuple[float, float]:
    mean = median * np.exp(sigma**2 / 2)
    return float(mean), float(mean * np.sqrt(np.exp(sigma**2) - 1))


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class DemoModel:
    """One demo model: identity, task, features and traffic volume.

    Attributes:
        project: Project slug.
        model: Model name (unique across the demo workspace).
        task: ``classification`` (binary) or ``regression``.
        numeric: Numeric features.
        categorical: Categorical features.
        daily_rows: Mean requests per day per environment.
        label_coverage: Share of requests that ever receive a label.
    """

    project: str
    model: str
    task: str
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]
    daily_rows: Mapping[str, int]
    label_coverage: float = LABEL_COVERAGE

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Names of the numeric features."""
        return tuple(f.name for f in self.numeric)

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Names of the categorical features."""
        return tuple(f.name for f in self.categorical)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """All feature names, numeric first."""
        return self.numeric_features + self.categorical_features

    @property
    def segment_columns(self) -> tuple[str, ...]:
        """Segment columns written with every row."""
        return (SEGMENT_REGION,)

    def numeric_feature(self, name: str) -> NumericFeature:
        """The numeric feature called ``name``."""
        return next(f for f in self.numeric if f.name == name)

    def categorical_feature(self, name: str) -> CategoricalFeature:
        """The categorical feature called ``name``."""
        return next(f for f in self.categorical if f.name == name)


_CREDIT_INCOME = NumericFeature("income", _normal(52_000, 15_000, low=5_000, decimals=0), 52_000, 15_000)

CREDIT_DEFAULT = DemoModel(
    project="credit-risk",
    model="credit-default",
    task="classification",
    numeric=(
        _CREDIT_INCOME,
        NumericFeature("age", _integer_normal(42, 12, 21, 80), 42, 12),
        NumericFeature("debt_to_income", _beta(2, 5), 2 / 7, 0.16),
        NumericFeature("credit_utilization", _beta(2, 3), 0.4, 0.2),
        NumericFeature("num_open_accounts", _poisson(4), 4, 2),
        NumericFeature("months_employed", _gamma_int(2, 30, 0, 480), 60, 42),
        NumericFeature("loan_amount", _lognormal(15_000, 0.6), *_lognormal_std(15_000, 0.6)),
        NumericFeature("interest_rate", _normal(11.5, 3, low=3, high=30), 11.5, 3),
        NumericFeature("num_late_payments", _poisson(0.6), 0.6, 0.77),
    ),
    categorical=(
        CategoricalFeature("home_ownership", ("rent", "own", "mortgage"), (0.4, 0.25, 0.35)),
        CategoricalFeature(
            "loan_purpose",
            ("debt_consolidation", "home_improvement", "car", "education", "other"),
            (0.4, 0.15, 0.15, 0.1, 0.2),
        ),
        CategoricalFeature("employment_type", ("salaried", "self_employed", "contract"), (0.65, 0.2, 0.15)),
    ),
    daily_rows={PROD: 3000, STAGING: 200},
)


def credit_default_record() -> dict[str, object]:
    """One typical credit-default applicant, as a client sends it to the gateway (a fresh dict)."""
    return {
        "income": 52_000,
        "age": 40,
        "debt_to_income": 0.3,
        "credit_utilization": 0.4,
        "num_open_accounts": 4,
        "months_employed": 60,
        "loan_amount": 15_000,
        "interest_rate": 11.5,
        "num_late_payments": 0,
        "home_ownership": "rent",
        "loan_purpose": "car",
        "employment_type": "salaried",
    }


CHURN = DemoModel(
    project="credit-risk",
    model="churn",
    task="classification",
    numeric=(
        NumericFeature("tenure_months", _gamma_int(2, 12, 1, 72), 24, 17),
        NumericFeature("monthly_charges", _normal(65, 20, low=10, high=150), 65, 20),
        NumericFeature("support_calls", _poisson(1.5), 1.5, 1.22),
        NumericFeature("num_products", _poisson(1, offset=1), 2, 1),
        NumericFeature("days_since_last_login", _exponential(8), 8, 8),
        NumericFeature("satisfaction_score", _integer_normal(7, 2, 1, 10), 7, 2),
    ),
    categorical=(
        CategoricalFeature("contract_type", ("month_to_month", "one_year", "two_year"), (0.55, 0.25, 0.2)),
        CategoricalFeature(
            "payment_method", ("card", "bank_transfer", "paypal", "check"), (0.4, 0.3, 0.2, 0.1)
        ),
    ),
    daily_rows={PROD: 1500, STAGING: 150},
)

DEMAND = DemoModel(
    project="demand-forecast",
    model="demand",
    task="regression",
    numeric=(
        NumericFeature("price", _lognormal(12, 0.3), *_lognormal_std(12, 0.3)),
        NumericFeature("discount_pct", _beta(1.5, 10), 1.5 / 11.5, 0.094),
        NumericFeature("temperature", _normal(18, 8, decimals=1), 18, 8),
        NumericFeature("day_of_week", _integer_normal(3, 2, 0, 6), 3, 1.8),
        NumericFeature("store_size_sqm", _lognormal(1500, 0.4, decimals=0), *_lognormal_std(1500, 0.4)),
        NumericFeature("is_holiday", _bernoulli(0.05), 0.05, 0.22),
        NumericFeature("shelf_stock", _poisson(120), 120, 11),
    ),
    categorical=(
        CategoricalFeature("channel", ("store", "online", "wholesale"), (0.6, 0.3, 0.1)),
        CategoricalFeature(
            "product_family", ("grocery", "beverages", "household", "personal_care"), (0.4, 0.25, 0.2, 0.15)
        ),
    ),
    daily_rows={PROD: 2500, STAGING: 150},
)

DEMO_MODELS = (CREDIT_DEFAULT, CHURN, DEMAND)


# --------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class DriftInjection:
    """Feature drift injected from ``start_day`` to the end of the traffic.

    Attributes:
        project: Project slug.
        model: Model name.
        environment: Environment whose traffic drifts.
        feature: Drifted feature.
        kind: ``mean_shift`` (numeric: ``+shift_sigmas`` nominal standard deviations)
            or ``category_share`` (categorical: levels drawn with ``shares`` instead).
        start_day: First drifted day index (0 = ``start_date``).
        shift_sigmas: Size of a mean shift, in nominal standard deviations.
        shares: New level shares of a category-share change.
        output_column: Model output whose distribution shifts as a consequence
            (``score`` for classification, ``prediction`` for regression).
    """

    project: str
    model: str
    environment: str
    feature: str
    kind: str
    start_day: int
    shift_sigmas: float = 0.0
    shares: tuple[float, ...] = ()
    output_column: str | None = None


@dataclass(frozen=True)
class NullBurst:
    """A data-quality incident: ``null_fraction`` of one feature's values are null on one day."""

    project: str
    model: str
    environment: str
    feature: str
    day: int
    null_fraction: float


@dataclass(frozen=True)
class LatencyRegression:
    """Serving latency multiplied by ``factor`` on the given day indexes (so p95 is factor times higher)."""

    project: str
    model: str
    environment: str
    days: tuple[int, ...]
    factor: float


DRIFTS = (
    DriftInjection(
        "credit-risk",
        "credit-default",
        PROD,
        "income",
        "mean_shift",
        60,
        shift_sigmas=1.0,
        output_column="score",
    ),
    DriftInjection(
        "demand-forecast",
        "demand",
        PROD,
        "channel",
        "category_share",
        75,
        shares=(0.3, 0.6, 0.1),
        output_column="prediction",
    ),
    DriftInjection(
        "credit-risk",
        "churn",
        STAGING,
        "monthly_charges",
        "mean_shift",
        30,
        shift_sigmas=1.5,
        output_column="score",
    ),
)
NULL_BURST = NullBurst("credit-risk", "credit-default", PROD, "debt_to_income", 40, 0.6)
LATENCY_REGRESSIONS = (LatencyRegression("demand-forecast", "demand", PROD, (50, 51, 52), 3.0),)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class DemoScenario:
    """Manifest of a generated demo workspace: what was written and where the incidents are.

    Attributes:
        start_date: Day index 0.
        days: Number of days of traffic.
        seed: Seed the data was drawn with.
        volume: Multiplier applied to every model's daily request count.
        models: The demo models.
        environments: Environments with traffic.
        drifts: Feature drifts whose first day falls inside the traffic.
        null_burst: The null burst, ``None`` when its day is outside the traffic.
        latency_regressions: Latency regressions (days clipped to the traffic).
        generated_until: End of the traffic (midnight UTC after the last day); labels
            whose arrival time is later were not written.
        label_delay_days: Range of label delays, in days.
        training_rows: Rows of each model's training set.
        inference_rows: Requests written per (model, environment).
        label_rows: Labels written per (model, environment).
    """

    start_date: date
    days: int
    seed: int
    volume: float
    models: tuple[DemoModel, ...]
    environments: tuple[str, ...]
    drifts: tuple[DriftInjection, ...]
    null_burst: NullBurst | None
    latency_regressions: tuple[LatencyRegression, ...]
    generated_until: datetime
    label_delay_days: tuple[float, float] = LABEL_DELAY_DAYS
    training_rows: int = 0
    inference_rows: Mapping[tuple[str, str], int] = field(default_factory=dict)
    label_rows: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def day(self, index: int) -> date:
        """Calendar day of day ``index``."""
        return self.start_date + timedelta(days=index)

    @property
    def dates(self) -> tuple[date, ...]:
        """Every day with traffic, oldest first."""
        return tuple(self.day(i) for i in range(self.days))

    def model(self, name: str) -> DemoModel:
        """The demo model called ``name``."""
        return next(m for m in self.models if m.model == name)

    @property
    def drifted_cells(self) -> frozenset[tuple[str, str, str, date]]:
        """Every drifted ``(model, environment, feature, day)``: exactly where drift alerts belong."""
        return frozenset(
            (d.model, d.environment, d.feature, self.day(i))
            for d in self.drifts
            for i in range(d.start_day, self.days)
        )

    @property
    def output_drift_cells(self) -> frozenset[tuple[str, str, str, date]]:
        """``(model, environment, output column, day)`` whose output shifts because of a feature drift."""
        return frozenset(
            (d.model, d.environment, d.output_column, self.day(i))
            for d in self.drifts
            if d.output_column
            for i in range(d.start_day, self.days)
        )

    def is_drifted(self, model: str, environment: str, feature: str, day: date) -> bool:
        """Whether ``feature`` of ``model`` in ``environment`` was drifted on ``day``."""
        return (model, environment, feature, day) in self.drifted_cells

    @property
    def null_burst_date(self) -> date | None:
        """Day of the null burst."""
        return self.day(self.null_burst.day) if self.null_burst else None

    @property
    def latency_cells(self) -> frozenset[tuple[str, str, date]]:
        """Every ``(model, environment, day)`` with a latency regression."""
        return frozenset(
            (r.model, r.environment, self.day(i)) for r in self.latency_regressions for i in r.days
        )

    def labels_complete_until(self) -> date | None:
        """Last day whose requests have all received the labels they will ever get."""
        last = self.days - 1 - int(np.ceil(self.label_delay_days[1]))
        return self.day(last) if last >= 0 else None


def demo_scenario(
    start_date: date, days: int = 90, seed: int = 7, *, volume: float = 1.0, training_rows: int = 20_000
) -> DemoScenario:
    """The manifest of the demo workspace for these parameters, without generating any data.

    Incidents whose days fall outside ``[0, days)`` are left out, so the manifest is
    exact for short scenarios too.

    Raises:
        ValueError: on a non-positive ``days``, ``volume`` or ``training_rows``.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not volume > 0:
        raise ValueError(f"volume must be positive, got {volume}")
    if training_rows < 100:
        raise ValueError(f"training_rows must be at least 100, got {training_rows}")
    start = datetime(start_date.year, start_date.month, start_date.day, tzinfo=UTC)
    burst = NULL_BURST if NULL_BURST.day < days else None
    latency = tuple(
        LatencyRegression(r.project, r.model, r.environment, tuple(d for d in r.days if d < days), r.factor)
        for r in LATENCY_REGRESSIONS
        if any(d < days for d in r.days)
    )
    return DemoScenario(
        start_date=start_date,
        days=days,
        seed=seed,
        volume=volume,
        models=DEMO_MODELS,
        environments=DEMO_ENVIRONMENTS,
        drifts=tuple(d for d in DRIFTS if d.start_day < days),
        null_burst=burst,
        latency_regressions=latency,
        generated_until=start + timedelta(days=days),
        training_rows=training_rows,
    )


# --------------------------------------------------------------------------- generation


def _rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator keyed by the seed and stable hashes of ``parts``."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in parts)])


def _draw_categorical(
    rng: np.random.Generator, feature: CategoricalFeature, n: int, drift_mask: np.ndarray | None, shares
) -> np.ndarray:
    levels = np.array(feature.levels, dtype=object)
    codes = rng.choice(len(levels), size=n, p=np.array(feature.shares))
    if drift_mask is not None and drift_mask.any():
        codes[drift_mask] = rng.choice(len(levels), size=int(drift_mask.sum()), p=np.array(shares))
    return levels[codes]


def _standardised(model: DemoModel, values: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    feature = model.numeric_feature(name)
    return (values[name] - feature.mean) / feature.std


def _credit_default_logit(values: Mapping[str, np.ndarray]) -> np.ndarray:
    z = lambda name: _standardised(CREDIT_DEFAULT, values, name)  # noqa: E731
    return (
        -2.0
        - 0.8 * z("income")
        + 0.9 * z("debt_to_income")
        + 0.6 * z("credit_utilization")
        + 0.5 * z("num_late_payments")
        - 0.25 * z("age")
        + 0.35 * z("interest_rate")
        - 0.15 * z("months_employed")
        + 0.35 * (values["home_ownership"] == "rent")
        + 0.25 * (values["employment_type"] == "self_employed")
        + 0.2 * (values["loan_purpose"] == "education")
    )


def _churn_logit(values: Mapping[str, np.ndarray]) -> np.ndarray:
    z = lambda name: _standardised(CHURN, values, name)  # noqa: E731
    return (
        -1.6
        - 0.7 * z("tenure_months")
        + 0.6 * z("monthly_charges")
        + 0.5 * z("support_calls")
        - 0.5 * z("satisfaction_score")
        + 0.3 * z("days_since_last_login")
        - 0.2 * z("num_products")
        + 0.7 * (values["contract_type"] == "month_to_month")
        - 0.5 * (values["contract_type"] == "two_year")
        + 0.2 * (values["payment_method"] == "check")
    )


def _demand_log_mean(values: Mapping[str, np.ndarray]) -> np.ndarray:
    channel_effect = {"store": 0.0, "online": -0.45, "wholesale": 0.9}
    family_effect = {"grocery": 0.3, "beverages": 0.1, "household": -0.1, "personal_care": -0.3}
    channel = np.vectorize(channel_effect.__getitem__, otypes=[np.float64])(values["channel"])
    family = np.vectorize(family_effect.__getitem__, otypes=[np.float64])(values["product_family"])
    return (
        3.2
        - 1.1 * np.log(values["price"] / 12.0)
        + 2.0 * values["discount_pct"]
        + 0.015 * (values["temperature"] - 18.0)
        + 0.35 * values["is_holiday"]
        + 0.4 * np.log(values["store_size_sqm"] / 1500.0)
        + 0.05 * (values["day_of_week"] >= 5)
        + channel
        + family
    )


def _outcomes(
    model: DemoModel, values: Mapping[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(label, prediction, score) of each row: the truth and what a good-but-imperfect model says."""
    n = len(next(iter(values.values())))
    if model.task == "classification":
        logit = _credit_default_logit(values) if model is CREDIT_DEFAULT else _churn_logit(values)
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
        # The served model sees the same features but estimates the logit with error.
        score = 1.0 / (1.0 + np.exp(-(0.9 * logit - 0.15 + rng.normal(0.0, 0.35, n))))
        score = np.round(score, 6)
        prediction = (score >= 0.5).astype(np.float64)
        return label, prediction, score
    log_mean = _demand_log_mean(values)
    label = np.round(np.exp(log_mean + rng.normal(0.0, 0.25, n)), 1)
    prediction = np.round(np.exp(log_mean + rng.normal(0.0, 0.1, n)), 2)
    return label, prediction, None


def _draw_features(
    model: DemoModel,
    rng: np.random.Generator,
    n: int,
    *,
    day_index: np.ndarray | None = None,
    drifts: tuple[DriftInjection, ...] = (),
) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for feature in model.numeric:
        values[feature.name] = feature.draw(rng, n)
    for feature in model.categorical:
        drift = next((d for d in drifts if d.feature == feature.name), None)
        mask = day_index >= drift.start_day if drift is not None and day_index is not None else None
        values[feature.name] = _draw_categorical(rng, feature, n, mask, drift.shares if drift else ())
    for drift in drifts:
        if drift.kind == "mean_shift" and day_index is not None:
            feature = model.numeric_feature(drift.feature)
            mask = day_index >= drift.start_day
            values[drift.feature] = np.where(
                mask,
                np.round(values[drift.feature] + drift.shift_sigmas * feature.std, 2),
                values[drift.feature],
            )
    values[SEGMENT_REGION] = np.array(REGIONS, dtype=object)[
        rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    ]
    return values


def _feature_arrays(model: DemoModel, values: Mapping[str, np.ndarray], null_mask: Mapping[str, np.ndarray]):
    arrays: dict[str, pa.Array] = {}
    for name in model.feature_columns:
        data = values[name]
        mask = null_mask.get(name)
        if name in model.categorical_features:
            arrays[name] = pa.array(data, type=pa.string(), mask=mask)
        else:
            arrays[name] = pa.array(data, type=pa.float64(), mask=mask)
    arrays[SEGMENT_REGION] = pa.array(values[SEGMENT_REGION], type=pa.string())
    return arrays


def training_table(model: DemoModel, *, seed: int = 7, rows: int = 20_000) -> pa.Table:
    """The model's training set: stationary features, ``segment_region`` and the ``label`` target."""
    rng = _rng(seed, model.model, "training")
    values = _draw_features(model, rng, rows)
    label, _prediction, _score = _outcomes(model, values, rng)
    arrays = _feature_arrays(model, values, {})
    arrays[LABEL_COLUMN] = pa.array(label, type=pa.float64())
    return pa.table(arrays)


@dataclass(frozen=True)
class DemoPartition:
    """One partition of demo data, ready for ``store.write_partition``."""

    dataset: str
    partition: Mapping[str, str]
    table: pa.Table


@dataclass
class _Traffic:
    """One (model, environment)'s traffic over the whole period, sorted by timestamp."""

    table: pa.Table
    day_bounds: np.ndarray  # day i spans rows [day_bounds[i], day_bounds[i + 1])
    labels: pa.Table
    label_day_bounds: np.ndarray


def _daily_counts(model: DemoModel, environment: str, scenario: DemoScenario, rng: np.random.Generator):
    weekday = np.array([(scenario.start_date + timedelta(days=i)).weekday() for i in range(scenario.days)])
    seasonal = np.where(weekday >= 5, 0.75, 1.0) * (1.0 + 0.05 * np.sin(np.arange(scenario.days) / 7.0))
    mean = model.daily_rows[environment] * scenario.volume * seasonal
    return np.maximum(rng.poisson(mean), 20)


def _traffic(model: DemoModel, environment: str, scenario: DemoScenario) -> _Traffic:
    rng = _rng(scenario.seed, model.model, environment, "traffic")
    counts = _daily_counts(model, environment, scenario, rng)
    n = int(counts.sum())
    day_index = np.repeat(np.arange(scenario.days), counts)
    # Diurnal pattern: most requests during the (UTC) working day, a floor at night.
    seconds = np.where(
        rng.random(n) < 0.7, np.clip(rng.normal(14 * 3600, 4 * 3600, n), 0, 86_399), rng.uniform(0, 86_400, n)
    )
    in_day_micros = np.minimum((seconds * 1e6).astype(np.int64), _MICROS_PER_DAY - 1)
    start_micros = int(datetime.combine(scenario.start_date, datetime.min.time(), UTC).timestamp()) * 10**6
    micros = start_micros + day_index.astype(np.int64) * _MICROS_PER_DAY + in_day_micros
    day_bounds = np.concatenate([[0], np.cumsum(counts)])
    for i in range(scenario.days):  # sort within each day: rows stay grouped by day
        micros[day_bounds[i] : day_bounds[i + 1]].sort()

    drifts = tuple(d for d in scenario.drifts if d.model == model.model and d.environment == environment)
    values = _draw_features(model, rng, n, day_index=day_index, drifts=drifts)
    label, prediction, score = _outcomes(model, values, rng)

    null_mask: dict[str, np.ndarray] = {}
    burst = scenario.null_burst
    if burst and burst.model == model.model and burst.environment == environment:
        lo, hi = day_bounds[burst.day], day_bounds[burst.day + 1]
        mask = np.zeros(n, dtype=bool)
        picked = rng.choice(hi - lo, size=round(burst.null_fraction * (hi - lo)), replace=False)
        mask[lo + picked] = True
        null_mask[burst.feature] = mask

    latency = np.round(rng.lognormal(np.log(28.0), 0.35, n), 3)
    for regression in scenario.latency_regressions:
        if regression.model == model.model and regression.environment == environment:
            slow = np.isin(day_index, regression.days)
            latency = np.where(slow, np.round(latency * regression.factor, 3), latency)

    dates = [date_partition(scenario.day(i)).replace("-", "") for i in range(scenario.days)]
    prefix = f"{model.model}-{environment}-"
    request_ids = [f"{prefix}{dates[d]}-{k:06d}" for d, c in enumerate(counts.tolist()) for k in range(c)]

    constant = lambda value: pa.repeat(pa.scalar(value, pa.string()), n)  # noqa: E731
    # project/model/environment/date are partition keys: the store writes them in the path.
    columns = {
        "version": constant(DEMO_VERSION),
        "request_id": pa.array(request_ids, type=pa.string()),
        "timestamp": pa.array(micros, type=pa.int64()).cast(UTC_MICROS),
        **_feature_arrays(model, values, null_mask),
        "prediction": pa.array(prediction, type=pa.float64()),
        "score": pa.array(score, type=pa.float64()) if score is not None else pa.nulls(n, pa.float64()),
        "latency_ms": pa.array(latency, type=pa.float64()),
    }
    table = pa.table(columns)

    # Labels: a share of requests gets one, 1-7 days later; later than the end is not known yet.
    delay_micros = (rng.uniform(*scenario.label_delay_days, n) * _MICROS_PER_DAY).astype(np.int64)
    label_micros = micros + delay_micros
    end_micros = int(scenario.generated_until.timestamp()) * 10**6
    keep = (rng.random(n) < model.label_coverage) & (label_micros <= end_micros)
    kept = np.flatnonzero(keep)
    labels = pa.table(
        {
            "request_id": table.column("request_id").take(kept),
            LABEL_COLUMN: pa.array(label[kept], type=pa.float64()),
            "label_timestamp": pa.array(label_micros[kept], type=pa.int64()).cast(UTC_MICROS),
        }
    )
    label_bounds = np.searchsorted(kept, day_bounds)
    return _Traffic(table, day_bounds, labels, label_bounds)


def iter_demo_partitions(scenario: DemoScenario) -> Iterator[DemoPartition]:
    """Yield every partition of the demo workspace described by ``scenario``.

    Order: each model's training set, then per (model, environment) the daily
    ``inference_logs`` and ``labels`` partitions (labels under the request's day).
    Every table is validated against its contract before it is yielded.

    Raises:
        jobs.contracts.ContractError: if a generated table breaks its contract (a bug).
    """
    for model in scenario.models:
        partition = {"project": model.project, "model": model.model}
        table = training_table(model, seed=scenario.seed, rows=scenario.training_rows)
        require_valid(validate_training_table(table, model.feature_columns, partition=partition))
        yield DemoPartition(TRAINING_DATA, partition, table)
    for model in scenario.models:
        for environment in scenario.environments:
            traffic = _traffic(model, environment, scenario)
            for i in range(scenario.days):
                partition = {
                    "project": model.project,
                    "model": model.model,
                    "environment": environment,
                    "date": date_partition(scenario.day(i)),
                }
                lo, hi = traffic.day_bounds[i], traffic.day_bounds[i + 1]
                logs = traffic.table.slice(lo, hi - lo)
                require_valid(validate_inference_table(logs, model.feature_columns, partition=partition))
                yield DemoPartition(INFERENCE_LOGS, partition, logs)
                lo, hi = traffic.label_day_bounds[i], traffic.label_day_bounds[i + 1]
                if hi > lo:
                    labels = traffic.labels.slice(lo, hi - lo)
                    require_valid(validate_labels_table(labels, partition=partition))
                    yield DemoPartition(LABELS, partition, labels)


def generate_demo_data(
    store: PartitionWriter,
    start_date: date,
    days: int = 90,
    seed: int = 7,
    *,
    volume: float = 1.0,
    training_rows: int = 20_000,
    progress: Callable[[str, float], None] | None = None,
) -> DemoScenario:
    """Generate the demo workspace and write it through ``store``.

    Each partition is written with ``store.write_partition`` (atomic replace), so
    running the generator again with the same arguments rewrites identical data
    instead of duplicating it.

    Args:
        store: The Parquet store (``analytics.store.ParquetStore``).
        start_date: First day of traffic (day index 0).
        days: Days of traffic.
        seed: Seed of every random draw.
        volume: Multiplier of the daily request counts (e.g. 0.1 for quick tests).
        training_rows: Rows of each model's training set.
        progress: Optional ``progress(stage, fraction)`` callback.

    Returns:
        The manifest, with the row counts that were written.
    """
    scenario = demo_scenario(start_date, days, seed, volume=volume, training_rows=training_rows)
    inference_rows: dict[tuple[str, str], int] = {}
    label_rows: dict[tuple[str, str], int] = {}
    total = len(scenario.models) * (1 + len(scenario.environments) * scenario.days)
    done = 0
    for part in iter_demo_partitions(scenario):
        store.write_partition(part.dataset, part.partition, part.table, replace_partition=True)
        key = (part.partition["model"], part.partition.get("environment", ""))
        if part.dataset == INFERENCE_LOGS:
            inference_rows[key] = inference_rows.get(key, 0) + part.table.num_rows
            done += 1
        elif part.dataset == LABELS:
            label_rows[key] = label_rows.get(key, 0) + part.table.num_rows
        else:
            done += 1
        if progress is not None:
            progress(f"{part.dataset} {'/'.join(part.partition.values())}", done / total)
    return replace(scenario, inference_rows=inference_rows, label_rows=label_rows)


# --------------------------------------------------------------------------- command line


def _demo_data_command(args: Any, settings: Any) -> int:
    from analytics.store import ParquetStore
    from jobs.cli import EXIT_OK, UsageError

    try:
        start = date.fromisoformat(args.start)
        scenario_args = {
            "days": args.days,
            "seed": args.seed,
            "volume": args.volume,
            "training_rows": args.training_rows,
        }
        demo_scenario(start, **scenario_args)  # validates before anything is written
    except ValueError as error:
        raise UsageError(str(error)) from error
    store = ParquetStore(settings.store_config())
    try:
        scenario = generate_demo_data(store, start, **scenario_args)
    finally:
        store.close()
    rows = sum(scenario.inference_rows.values())
    labels = sum(scenario.label_rows.values())
    print(
        f"demo workspace written to {store.root}: "
        f"{rows} requests, {labels} labels, {len(scenario.models)} models"
    )
    for drift in scenario.drifts:
        print(
            f"  drift: {drift.model}/{drift.environment} {drift.feature} from {scenario.day(drift.start_day)}"
        )
    burst = scenario.null_burst
    if burst is not None:
        print(f"  null burst: {burst.model}/{burst.environment} {burst.feature} on {scenario.day(burst.day)}")
    for regression in scenario.latency_regressions:
        days = ", ".join(str(scenario.day(d)) for d in regression.days)
        print(f"  latency x{regression.factor:g}: {regression.model}/{regression.environment} on {days}")
    return EXIT_OK


def register_demo_data(subparsers: Any) -> None:
    """``demo-data``: write the deterministic demo workspace to the Parquet store."""
    parser = subparsers.add_parser("demo-data", help="write the demo training sets, traffic and labels")
    parser.add_argument("--start", default="2024-01-01", help="first day of traffic (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--volume", type=float, default=1.0, help="multiplier of the daily request counts")
    parser.add_argument("--training-rows", type=int, default=20_000, help="rows of each model's training set")
    parser.set_defaults(func=_demo_data_command)
