"""The demo workspace: deterministic, stationary except exactly where the manifest says."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs.contracts import INFERENCE_LOGS, LABELS, TRAINING_DATA
from jobs.demo_data import (
    CREDIT_DEFAULT,
    DEMO_MODELS,
    PROD,
    STAGING,
    DemoScenario,
    demo_scenario,
    generate_demo_data,
    iter_demo_partitions,
)

pytestmark = pytest.mark.unit

START = date(2024, 1, 1)
VOLUME = 0.1


@pytest.fixture(scope="module")
def scenario() -> DemoScenario:
    return demo_scenario(START, 90, seed=7, volume=VOLUME, training_rows=2_000)


@pytest.fixture(scope="module")
def partitions(scenario: DemoScenario) -> dict[tuple[str, str, str, str], pa.Table]:
    """Every generated table keyed by (dataset, model, environment, date)."""
    tables = {}
    for part in iter_demo_partitions(scenario):
        key = (
            part.dataset,
            part.partition["model"],
            part.partition.get("environment", ""),
            part.partition.get("date", ""),
        )
        assert key not in tables
        tables[key] = part.table
    return tables


def daily(partitions, model: str, environment: str, dataset: str = INFERENCE_LOGS) -> list[pa.Table]:
    """The model's tables of one environment, one per day in day order (empty tables where none)."""
    days = sorted({k[3] for k in partitions if k[0] == INFERENCE_LOGS})
    return [partitions.get((dataset, model, environment, d), pa.table({})) for d in days]


def mean(table: pa.Table, column: str) -> float:
    return pc.mean(table.column(column)).as_py()


def days_mean(tables: list[pa.Table], column: str, days: range) -> float:
    return mean(pa.concat_tables([tables[i] for i in days]), column)


# --------------------------------------------------------------------------- manifest


def test_manifest_names_the_incidents_exactly(scenario: DemoScenario) -> None:
    income_days = sorted(
        d for (m, e, f, d) in scenario.drifted_cells if (m, e, f) == ("credit-default", PROD, "income")
    )
    assert income_days == [START + timedelta(days=i) for i in range(60, 90)]
    channel_days = {d for (m, e, f, d) in scenario.drifted_cells if f == "channel"}
    assert min(channel_days) == START + timedelta(days=75) and len(channel_days) == 15
    assert scenario.is_drifted("churn", STAGING, "monthly_charges", START + timedelta(days=30))
    assert not scenario.is_drifted("churn", PROD, "monthly_charges", START + timedelta(days=30))
    assert not scenario.is_drifted("credit-default", PROD, "income", START + timedelta(days=59))
    assert ("credit-default", PROD, "score", START + timedelta(days=60)) in scenario.output_drift_cells
    assert scenario.null_burst_date == START + timedelta(days=40)
    assert scenario.latency_cells == {("demand", PROD, START + timedelta(days=i)) for i in (50, 51, 52)}
    assert scenario.labels_complete_until() == START + timedelta(days=82)


def test_short_scenarios_list_only_incidents_inside_their_days() -> None:
    short = demo_scenario(START, 45)
    assert {d.model for d in short.drifts} == {"churn"}
    assert short.null_burst_date == START + timedelta(days=40)
    assert short.latency_cells == frozenset()
    assert max(d for (*_, d) in short.drifted_cells) == START + timedelta(days=44)


@pytest.mark.parametrize("kwargs", [{"days": 0}, {"volume": 0.0}, {"training_rows": 10}])
def test_bad_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        demo_scenario(START, **{"days": 90, **kwargs})


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_tables_other_seed_other_tables(partitions, scenario: DemoScenario) -> None:
    again = {
        (
            p.dataset,
            p.partition["model"],
            p.partition.get("environment", ""),
            p.partition.get("date", ""),
        ): p.table
        for p in iter_demo_partitions(scenario)
    }
    assert again.keys() == partitions.keys()
    assert all(again[key].equals(partitions[key]) for key in partitions)
    other = demo_scenario(START, 90, seed=8, volume=VOLUME, training_rows=2_000)
    first_other = next(iter_demo_partitions(other))
    assert not first_other.table.equals(partitions[(TRAINING_DATA, CREDIT_DEFAULT.model, "", "")])


# --------------------------------------------------------------------------- drift


def test_income_mean_rises_by_one_sigma_from_day_60_in_prod_only(partitions) -> None:
    sigma = CREDIT_DEFAULT.numeric_feature("income").std
    prod = daily(partitions, "credit-default", PROD)
    shift = (days_mean(prod, "income", range(60, 90)) - days_mean(prod, "income", range(0, 60))) / sigma
    assert shift == pytest.approx(1.0, abs=0.08)
    assert min(mean(prod[i], "income") for i in range(60, 90)) > max(
        mean(prod[i], "income") for i in range(60)
    )
    staging = daily(partitions, "credit-default", STAGING)
    assert (
        abs(days_mean(staging, "income", range(60, 90)) - days_mean(staging, "income", range(60)))
        < 0.15 * sigma
    )
    # The served scores follow: more income, lower probability of default.
    assert days_mean(prod, "score", range(60, 90)) < days_mean(prod, "score", range(60)) - 0.03


def test_channel_share_changes_from_day_75_in_prod(partitions) -> None:
    def online_share(tables: list[pa.Table], days: range) -> float:
        channel = pa.concat_tables([tables[i] for i in days]).column("channel")
        return pc.mean(pc.equal(channel, "online").cast(pa.float64())).as_py()

    prod = daily(partitions, "demand", PROD)
    assert online_share(prod, range(75)) == pytest.approx(0.3, abs=0.02)
    assert online_share(prod, range(75, 90)) == pytest.approx(0.6, abs=0.03)
    staging = daily(partitions, "demand", STAGING)
    assert online_share(staging, range(75, 90)) == pytest.approx(0.3, abs=0.08)


def test_churn_monthly_charges_shift_in_staging_from_day_30(partitions) -> None:
    staging = daily(partitions, "churn", STAGING)
    shift = (
        days_mean(staging, "monthly_charges", range(30, 90))
        - days_mean(staging, "monthly_charges", range(30))
    ) / 20
    assert shift == pytest.approx(1.5, abs=0.15)


def test_every_feature_not_in_the_manifest_is_stationary(partitions, scenario: DemoScenario) -> None:
    """First and last 30 days agree wherever no drift was injected: alerts must not fire there."""
    for model in DEMO_MODELS:
        for environment in (PROD, STAGING):
            tables = daily(partitions, model.model, environment)
            early, late = pa.concat_tables(tables[:30]), pa.concat_tables(tables[60:])
            drifted = {f for (m, e, f, _d) in scenario.drifted_cells if (m, e) == (model.model, environment)}
            for feature in model.numeric:
                if feature.name in drifted:
                    continue
                difference = abs(mean(early, feature.name) - mean(late, feature.name)) / feature.std
                assert difference < (0.06 if environment == PROD else 0.2), (
                    model.model,
                    environment,
                    feature.name,
                )
            for feature in model.categorical:
                if feature.name in drifted:
                    continue
                for level in feature.levels:
                    shares = [
                        pc.mean(pc.equal(t.column(feature.name), level).cast(pa.float64())).as_py()
                        for t in (early, late)
                    ]
                    assert abs(shares[0] - shares[1]) < (0.03 if environment == PROD else 0.08), (
                        model.model,
                        feature.name,
                        level,
                    )


# --------------------------------------------------------------------------- null burst and latency


def test_null_burst_hits_one_feature_on_one_day(partitions, scenario: DemoScenario) -> None:
    burst_day = scenario.null_burst_date.isoformat()
    for (dataset, model, environment, day), table in partitions.items():
        if dataset != INFERENCE_LOGS:
            continue
        features = next(m for m in DEMO_MODELS if m.model == model).feature_columns
        nulls = {f: table.column(f).null_count for f in features if table.column(f).null_count}
        if (model, environment, day) == ("credit-default", PROD, burst_day):
            assert nulls.keys() == {"debt_to_income"}
            assert nulls["debt_to_income"] == round(0.6 * table.num_rows)
        else:
            assert nulls == {}, (model, environment, day)


def test_latency_p95_triples_exactly_on_the_manifest_days(partitions, scenario: DemoScenario) -> None:
    for model in DEMO_MODELS:
        for environment in (PROD, STAGING):
            tables = daily(partitions, model.model, environment)
            p95 = np.array([np.percentile(t.column("latency_ms").to_numpy(), 95) for t in tables])
            slow = np.array([(model.model, environment, d) in scenario.latency_cells for d in scenario.dates])
            baseline = np.median(p95[~slow])
            if slow.any():
                assert np.all((p95[slow] / baseline > 2.5) & (p95[slow] / baseline < 3.6))
            assert np.all(p95[~slow] / baseline < 1.6), (model.model, environment)


# --------------------------------------------------------------------------- labels, through the store


def test_written_workspace_has_late_labels_and_matches_the_manifest(tmp_path) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    try:
        seen: list[float] = []
        written = generate_demo_data(
            store,
            START,
            days=10,
            seed=3,
            volume=0.05,
            training_rows=500,
            progress=lambda _s, f: seen.append(f),
        )
        assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
        logs = store.read(INFERENCE_LOGS, columns=["model", "environment", "date", "request_id", "timestamp"])
        labels = store.read(LABELS, columns=["model", "environment", "date", "request_id", "label_timestamp"])
        for (model, environment), count in written.inference_rows.items():
            selected = pc.and_(pc.equal(logs["model"], model), pc.equal(logs["environment"], environment))
            assert pc.sum(selected.cast(pa.int64())).as_py() == count
        assert labels.num_rows == sum(written.label_rows.values())
        assert store.read(TRAINING_DATA).num_rows == 500 * len(DEMO_MODELS)

        joined = labels.join(logs, "request_id", join_type="inner", left_suffix="_label")
        assert joined.num_rows == labels.num_rows  # every label belongs to a logged request
        assert joined["date"].equals(joined["date_label"])  # filed under the request's day
        delay_days = pc.divide(
            pc.subtract(
                joined["label_timestamp"].cast(pa.int64()), joined["timestamp"].cast(pa.int64())
            ).cast(pa.float64()),
            86_400e6,
        )
        assert pc.min(delay_days).as_py() >= 1.0 and pc.max(delay_days).as_py() <= 7.0
        end = int(written.generated_until.timestamp() * 1e6)
        assert pc.max(labels["label_timestamp"].cast(pa.int64())).as_py() <= end
        per_day = defaultdict(int)
        for day in labels["date"].to_pylist():
            per_day[day] += 1
        last_day = written.dates[-1].isoformat()
        assert per_day[last_day] == 0
        first_day = written.dates[0].isoformat()
        first_requests = pc.sum(pc.equal(logs["date"], first_day).cast(pa.int64())).as_py()
        assert 0.8 < per_day[first_day] / first_requests < 0.97  # ~90% coverage, all arrived

        # Running again rewrites the same partitions instead of adding rows.
        again = generate_demo_data(store, START, days=10, seed=3, volume=0.05, training_rows=500)
        assert again.inference_rows == written.inference_rows
        assert store.read(INFERENCE_LOGS, columns=["request_id"]).num_rows == sum(
            written.inference_rows.values()
        )
    finally:
        store.close()
