"""Alert rule specifications: what a coherent rule is, and the evaluation's argument checks."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs.alerts import MAX_CONSECUTIVE_WINDOWS, RuleSpec, evaluate_alerts
from jobs.users import InvalidInput

pytestmark = pytest.mark.unit


def _threshold(**changes: object) -> RuleSpec:
    fields = {
        "name": "income drift",
        "model": "credit-default",
        "metric": "psi",
        "operator": ">",
        "threshold": 0.2,
    }
    fields.update(changes)
    return RuleSpec(**fields)  # type: ignore[arg-type]


def _freshness(**changes: object) -> RuleSpec:
    fields = {"name": "fresh", "model": "credit-default", "kind": "freshness", "max_age_hours": 6}
    fields.update(changes)
    return RuleSpec(**fields)  # type: ignore[arg-type]


def test_a_threshold_rule_is_normalised() -> None:
    spec = _threshold(
        name="  income drift  ", threshold=1, consecutive_windows=3, environment="prod"
    ).validated()
    assert (spec.name, spec.threshold, spec.consecutive_windows, spec.environment) == (
        "income drift",
        1.0,
        3,
        "prod",
    )
    assert isinstance(spec.threshold, float)
    assert spec.column is None  # every column
    assert _threshold(operator="drifted", threshold=None).validated().threshold is None
    for operator in (">", ">=", "<", "<=", "=="):
        assert _threshold(operator=operator).validated().operator == operator


def test_a_freshness_rule_is_normalised() -> None:
    spec = _freshness(max_age_hours=1).validated()
    assert (spec.kind, spec.max_age_hours, spec.metric, spec.operator) == ("freshness", 1.0, None, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_threshold(name="  "), "rule name must be 1 to 128"),
        (_threshold(name="a\nb"), "rule name must be 1 to 128"),
        (_threshold(name="x" * 129), "rule name must be 1 to 128"),
        (_threshold(model="../etc"), "not a valid model name"),
        (_threshold(model=""), "not a valid model name"),
        (_threshold(environment="qa"), "environment must be one of dev, staging, prod"),
        (_threshold(severity="urgent"), "severity must be one of info, warning, critical"),
        (_threshold(kind="anomaly"), "rule kind must be one of threshold, freshness"),
        (_threshold(enabled="yes"), "enabled must be true or false"),
        (_threshold(metric=None), "needs a metric name"),
        (_threshold(metric="psi; drop table"), "needs a metric name"),
        (_threshold(column=""), "column must be 1 to 128"),
        (_threshold(operator="!="), "operator must be one of"),
        (_threshold(operator=None), "operator must be one of"),
        (_threshold(threshold=None), "operator '>' needs a threshold"),
        (_threshold(threshold=float("nan")), "threshold must be a finite number"),
        (_threshold(threshold=float("inf")), "threshold must be a finite number"),
        (_threshold(threshold="0.2"), "threshold must be a finite number"),
        (_threshold(threshold=True), "threshold must be a finite number"),
        (_threshold(operator="drifted", threshold=0.2), "leave threshold empty"),
        (_threshold(consecutive_windows=0), "consecutive_windows must be an integer from 1"),
        (
            _threshold(consecutive_windows=MAX_CONSECUTIVE_WINDOWS + 1),
            "consecutive_windows must be an integer",
        ),
        (_threshold(consecutive_windows=2.0), "consecutive_windows must be an integer"),
        (_threshold(max_age_hours=3), "max_age_hours belongs to freshness rules"),
        (_freshness(max_age_hours=None), "needs max_age_hours between 0 and"),
        (_freshness(max_age_hours=0), "needs max_age_hours between 0 and"),
        (_freshness(max_age_hours=-1), "needs max_age_hours between 0 and"),
        (_freshness(max_age_hours=24 * 400), "needs max_age_hours between 0 and"),
        (_freshness(metric="psi"), "takes max_age_hours only"),
        (_freshness(threshold=1.0), "takes max_age_hours only"),
        (_freshness(consecutive_windows=2), "consecutive_windows must be 1"),
    ],
)
def test_incoherent_rules_are_refused_with_a_clear_message(spec: RuleSpec, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        spec.validated()


def test_rule_spec_round_trips_as_audit_details() -> None:
    spec = _threshold(column="income", consecutive_windows=2).validated()
    assert spec.as_dict() == {
        "name": "income drift",
        "model": "credit-default",
        "kind": "threshold",
        "metric": "psi",
        "column": "income",
        "operator": ">",
        "threshold": 0.2,
        "consecutive_windows": 2,
        "max_age_hours": None,
        "severity": "warning",
        "environment": None,
        "enabled": True,
    }


def test_evaluation_refuses_a_naive_time_or_a_short_lookback(tmp_path) -> None:
    store = ParquetStore(StoreConfig(data_uri=str(tmp_path)))
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_alerts(None, store, now=datetime(2026, 3, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one day"):
        evaluate_alerts(None, store, lookback=timedelta(hours=2))  # type: ignore[arg-type]
