"""analytics.performance against scikit-learn and numpy on the same rows."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from analytics.performance import (
    ClassificationWindow,
    LatencyWindow,
    RegressionWindow,
    classification_metrics,
    latency_metrics,
    regression_metrics,
)

pytestmark = pytest.mark.unit

T0 = datetime(2024, 3, 1, 0, 0, 0)
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def _relation(connection: duckdb.DuckDBPyConnection, columns: dict[str, Any]) -> duckdb.DuckDBPyRelation:
    return connection.from_arrow(pa.table(columns))


def _valid_score(s: float | None) -> bool:
    return s is not None and math.isfinite(s) and 0.0 <= s <= 1.0


def _valid_number(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _approx(expected: float | None, rel: float = 1e-9, abs_: float = 1e-12) -> Any:
    return None if expected is None else pytest.approx(expected, rel=rel, abs=abs_)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _reference_ece(y: np.ndarray, s: np.ndarray) -> float:
    bins = np.minimum(np.floor(s * 10), 9)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / len(y) * abs(y[mask].mean() - s[mask].mean())
    return total


# --------------------------------------------------------------------------- classification

score_values = st.one_of(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.95, 1.0]),  # few distinct values: many ties
    st.floats(0.0, 1.0),
    st.sampled_from([math.nan, math.inf, -math.inf, None, 1.5, -0.25, -0.0]),
)
label_values = st.sampled_from([0.0, 1.0, 1.0, 0.0, math.nan, None])
classification_rows = st.lists(
    st.tuples(
        score_values,
        st.booleans(),  # whether a label row exists for the request
        label_values,
        st.integers(0, 3 * 60 - 1),  # minute offset: three hourly windows
    ),
    max_size=60,
)


@HYPOTHESIS
@given(rows=classification_rows, threshold=st.sampled_from([0.5, 0.3, 0.0, 1.0]))
def test_classification_matches_sklearn_per_window(rows: list[tuple], threshold: float) -> None:
    connection = duckdb.connect()
    logs = _relation(
        connection,
        {
            "request_id": pa.array(range(len(rows)), pa.int64()),
            "timestamp": pa.array([T0 + timedelta(minutes=r[3]) for r in rows], pa.timestamp("us")),
            "score": pa.array([r[0] for r in rows], pa.float64()),
        },
    )
    labelled = [i for i, r in enumerate(rows) if r[1]]
    labels = _relation(
        connection,
        {
            "request_id": pa.array(labelled, pa.int64()),
            "label": pa.array([rows[i][2] for i in labelled], pa.float64()),
        },
    )
    report = classification_metrics(logs, labels, window="hour", threshold=threshold)

    groups: dict[Any, list[tuple]] = defaultdict(list)
    for r in rows:
        window_start = T0 + timedelta(hours=r[3] // 60)
        groups[window_start].append(r)
        groups[None].append(r)
    assert [w.window_start for w in report.windows] == sorted(k for k in groups if k is not None)
    for window in (*report.windows, report.overall):
        group = groups.get(window.window_start, [])
        _assert_classification_window(window, group, threshold)
    assert report.n_missing_timestamp == 0
    connection.close()


def _assert_classification_window(window: ClassificationWindow, group: list[tuple], threshold: float) -> None:
    assert window.n == len(group)
    has_valid_label = [r[1] and _valid_number(r[2]) for r in group]
    assert window.n_labelled == sum(has_valid_label)
    assert window.n_invalid_label == sum(r[1] and not _valid_number(r[2]) for r in group)
    assert window.n_invalid_score == sum(not _valid_score(r[0]) for r in group)
    assert window.label_coverage == (_approx(sum(has_valid_label) / len(group)) if group else None)
    evaluated = [r for r in group if r[1] and _valid_number(r[2]) and _valid_score(r[0])]
    assert window.n_evaluated == len(evaluated)
    if not evaluated:
        assert window.status == "insufficient_data"
        assert all(getattr(window, m) is None for m in ("accuracy", "roc_auc", "log_loss", "ece", "f1"))
        return
    y = np.array([int(r[2] == 1.0) for r in evaluated])
    s = np.array([r[0] for r in evaluated], dtype=float)
    y_hat = (s >= threshold).astype(int)
    assert (window.n_positive, window.n_negative) == (int(y.sum()), int(len(y) - y.sum()))
    tn, fp, fn, tp = skm.confusion_matrix(y, y_hat, labels=[0, 1]).ravel()
    assert (window.tp, window.fp, window.tn, window.fn) == (tp, fp, tn, fn)
    assert window.accuracy == _approx(skm.accuracy_score(y, y_hat))
    for name, fn_ in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        expected = _nan_to_none(fn_(y, y_hat, zero_division=np.nan))
        assert getattr(window, name) == _approx(expected), name
    assert window.log_loss == _approx(skm.log_loss(y, y_proba=s, labels=[0, 1]))
    assert window.ece == _approx(_reference_ece(y, s))
    if len(set(y.tolist())) < 2:
        assert window.roc_auc is None
        assert window.status == "insufficient_data"
        assert "one class" in (window.reason or "")
    else:
        assert window.roc_auc == _approx(skm.roc_auc_score(y, s), rel=1e-12)
        assert window.status == ("ok" if tp + fp else "insufficient_data")


def test_roc_auc_equals_sklearn_on_many_tied_scores(con: duckdb.DuckDBPyConnection) -> None:
    rng = np.random.default_rng(7)
    n = 5000
    scores = rng.integers(0, 21, n) / 20  # 21 distinct values: heavy ties
    y = (rng.random(n) < scores * 0.8 + 0.1).astype(int)
    logs = _relation(
        con,
        {"request_id": np.arange(n), "timestamp": [T0] * n, "score": scores},
    )
    labels = _relation(con, {"request_id": np.arange(n), "label": y})
    overall = classification_metrics(logs, labels).overall
    assert overall.roc_auc == pytest.approx(skm.roc_auc_score(y, scores), rel=1e-13)
    assert overall.log_loss == pytest.approx(skm.log_loss(y, y_proba=scores), rel=1e-9)


def test_log_loss_clips_certain_wrong_scores_like_sklearn(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(con, {"request_id": [1, 2, 3, 4], "timestamp": [T0] * 4, "score": [0.0, 1.0, 1.0, 0.0]})
    labels = _relation(con, {"request_id": [1, 2, 3, 4], "label": [1, 0, 1, 0]})
    window = classification_metrics(logs, labels).windows[0]
    expected = skm.log_loss([1, 0, 1, 0], y_proba=[0.0, 1.0, 1.0, 0.0])
    assert math.isfinite(window.log_loss)
    assert window.log_loss == pytest.approx(expected, rel=1e-12)


def test_ece_uses_ten_equal_width_bins_with_a_score_of_one_in_the_last(
    con: duckdb.DuckDBPyConnection,
) -> None:
    # Bins: [0.0, 0.1) holds 0.05 and 0.0; [0.9, 1.0] holds 0.95 and 1.0 together.
    scores = [0.05, 0.0, 0.95, 1.0]
    y = [1, 0, 1, 0]
    logs = _relation(con, {"request_id": [1, 2, 3, 4], "timestamp": [T0] * 4, "score": scores})
    labels = _relation(con, {"request_id": [1, 2, 3, 4], "label": y})
    window = classification_metrics(logs, labels).windows[0]
    expected = 0.5 * abs(0.5 - 0.025) + 0.5 * abs(0.5 - 0.975)
    assert window.ece == pytest.approx(expected, rel=1e-12)
    assert window.ece == pytest.approx(_reference_ece(np.array(y), np.array(scores)), rel=1e-12)


def test_string_labels_and_logged_prediction_column(con: duckdb.DuckDBPyConnection) -> None:
    y_true = ["fraud", "ok", "ok", "fraud", "ok", "fraud"]
    y_pred = ["fraud", "fraud", "ok", "ok", "ok", "fraud"]
    scores = [0.9, 0.2, 0.1, 0.4, 0.3, 0.8]  # threshold would disagree with the logged predictions
    logs = _relation(
        con,
        {"request_id": list(range(6)), "timestamp": [T0] * 6, "score": scores, "prediction": y_pred},
    )
    labels = _relation(con, {"request_id": list(range(6)), "label": y_true})
    report = classification_metrics(logs, labels, positive_label="fraud", threshold=None)
    window = report.windows[0]
    assert report.decision == "prediction column"
    assert window.precision == pytest.approx(skm.precision_score(y_true, y_pred, pos_label="fraud"))
    assert window.recall == pytest.approx(skm.recall_score(y_true, y_pred, pos_label="fraud"))
    assert window.f1 == pytest.approx(skm.f1_score(y_true, y_pred, pos_label="fraud"))
    y_binary = [int(v == "fraud") for v in y_true]
    assert window.roc_auc == pytest.approx(skm.roc_auc_score(y_binary, scores))


def test_boolean_labels_with_true_as_the_positive_class(con: duckdb.DuckDBPyConnection) -> None:
    scores = [0.9, 0.8, 0.3, 0.6, 0.1]
    y = [True, False, False, True, None]  # the NULL label is counted as invalid, not as negative
    logs = _relation(con, {"request_id": list(range(5)), "timestamp": [T0] * 5, "score": scores})
    labels = _relation(con, {"request_id": list(range(5)), "label": pa.array(y, pa.bool_())})
    window = classification_metrics(logs, labels, positive_label=True).windows[0]
    assert (window.n_labelled, window.n_invalid_label, window.n_evaluated) == (4, 1, 4)
    assert window.roc_auc == pytest.approx(skm.roc_auc_score(y[:4], scores[:4]))
    assert window.accuracy == pytest.approx(skm.accuracy_score(y[:4], [s >= 0.5 for s in scores[:4]]))


def test_positive_label_of_the_wrong_type_is_a_clear_error(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(con, {"request_id": [1], "timestamp": [T0], "score": [0.5]})
    labels = _relation(con, {"request_id": [1], "label": ["yes"]})
    with pytest.raises(ValueError, match="not a string"):
        classification_metrics(logs, labels, positive_label=1)


def test_missing_columns_unknown_window_and_foreign_connection_are_errors(
    con: duckdb.DuckDBPyConnection,
) -> None:
    logs = _relation(con, {"request_id": [1], "timestamp": [T0], "score": [0.5]})
    labels = _relation(con, {"request_id": [1], "label": [1]})
    with pytest.raises(ValueError, match="lacks column"):
        classification_metrics(logs.select("request_id, timestamp"), labels)
    with pytest.raises(ValueError, match="window must be one of"):
        classification_metrics(logs, labels, window="fortnight")
    with pytest.raises(ValueError, match="finite"):
        classification_metrics(logs, labels, threshold=math.nan)
    other = duckdb.connect()
    try:
        with pytest.raises(ValueError, match="same DuckDB connection"):
            classification_metrics(logs, _relation(other, {"request_id": [1], "label": [1]}))
    finally:
        other.close()


def test_late_labels_and_corrections_set_coverage_as_of_a_time(con: duckdb.DuckDBPyConnection) -> None:
    n = 10
    logs = _relation(
        con,
        {
            "request_id": list(range(n)),
            "timestamp": [T0 + timedelta(hours=i) for i in range(n)],
            "score": [0.9 if i % 2 else 0.1 for i in range(n)],
        },
    )
    # Labels arrive two days later for the first six requests; request 0 is corrected on day 3.
    label_time = T0 + timedelta(days=2)
    labels = _relation(
        con,
        {
            "request_id": [0, 1, 2, 3, 4, 5, 0],
            "label": [1, 1, 0, 1, 0, 1, 0],
            "label_timestamp": [label_time] * 6 + [T0 + timedelta(days=3)],
        },
    )
    before = classification_metrics(logs, labels, labels_as_of=T0 + timedelta(days=1))
    assert before.overall.n == n
    assert before.overall.n_labelled == 0
    assert before.overall.label_coverage == 0.0
    assert before.overall.status == "insufficient_data"
    assert before.overall.reason == "no labels joined yet (label coverage 0)"
    assert before.overall.accuracy is None

    first = classification_metrics(logs, labels, labels_as_of=label_time)
    assert first.overall.label_coverage == pytest.approx(0.6)
    assert first.overall.tp + first.overall.fn == 4  # request 0 still counts as positive

    latest = classification_metrics(logs, labels)
    assert latest.overall.n_labelled == 6
    assert latest.overall.n_positive == 3  # the correction replaced request 0's label
    assert latest.overall.accuracy == pytest.approx(skm.accuracy_score([0, 1, 0, 1, 0, 1], [0, 1] * 3))

    with pytest.raises(ValueError, match="label_timestamp"):
        classification_metrics(logs, labels.select("request_id, label"), labels_as_of=label_time)


def test_window_grouping_by_hour_day_and_week(con: duckdb.DuckDBPyConnection) -> None:
    stamps = [
        datetime(2024, 3, 3, 23, 59, 59),  # a Sunday
        datetime(2024, 3, 4, 0, 0, 0),  # Monday: new day and new ISO week
        datetime(2024, 3, 4, 0, 30, 0),
        datetime(2024, 3, 4, 1, 0, 0),
    ]
    logs = _relation(
        con,
        {
            "request_id": [1, 2, 3, 4],
            "timestamp": pa.array(stamps, pa.timestamp("us")),
            "score": [0.2, 0.7, 0.6, 0.1],
            "latency_ms": [1.0, 2.0, 3.0, 4.0],
        },
    )
    labels = _relation(con, {"request_id": [1, 2, 3, 4], "label": [0, 1, 1, 0]})
    hourly = classification_metrics(logs, labels, window="hour")
    assert [(w.window_start, w.n) for w in hourly.windows] == [
        (datetime(2024, 3, 3, 23), 1),
        (datetime(2024, 3, 4, 0), 2),
        (datetime(2024, 3, 4, 1), 1),
    ]
    assert [w.window_end - w.window_start for w in hourly.windows] == [timedelta(hours=1)] * 3
    daily = latency_metrics(logs, window="day")
    assert [(w.window_start, w.n) for w in daily.windows] == [
        (datetime(2024, 3, 3), 1),
        (datetime(2024, 3, 4), 3),
    ]
    assert daily.windows[1].throughput_rps == pytest.approx(3 / 86400)
    weekly = latency_metrics(logs, window="week")
    assert [(w.window_start, w.window_end, w.n) for w in weekly.windows] == [
        (datetime(2024, 2, 26), datetime(2024, 3, 4), 1),
        (datetime(2024, 3, 4), datetime(2024, 3, 11), 3),
    ]


def test_timestamptz_windows_are_utc_periods_whatever_the_session_zone(
    con: duckdb.DuckDBPyConnection,
) -> None:
    con.execute("SET TimeZone = 'America/New_York'")
    stamps = [datetime(2024, 3, 1, 23, 30, tzinfo=UTC), datetime(2024, 3, 2, 0, 30, tzinfo=UTC)]
    logs = _relation(con, {"timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")), "latency_ms": [5, 7]})
    report = latency_metrics(logs, window="day")
    # Naive UTC window starts, the convention of analytics.profile, so drift and performance align.
    assert [(w.window_start, w.n) for w in report.windows] == [
        (datetime(2024, 3, 1), 1),
        (datetime(2024, 3, 2), 1),
    ]
    assert report.to_polars()["window_start"].dtype == pl.Datetime("us")


def test_month_windows_use_the_calendar_month_length(con: duckdb.DuckDBPyConnection) -> None:
    stamps = [datetime(2024, 2, 10), datetime(2024, 2, 20), datetime(2024, 3, 5)]
    logs = _relation(con, {"timestamp": stamps, "latency_ms": [1.0, 2.0, 3.0]})
    report = latency_metrics(logs, window="month")
    february, march = report.windows
    assert (february.window_start, february.window_end) == (datetime(2024, 2, 1), datetime(2024, 3, 1))
    assert february.throughput_rps == pytest.approx(2 / (29 * 86400))
    assert march.throughput_rps == pytest.approx(1 / (31 * 86400))


def test_missing_timestamps_are_counted_and_excluded(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(
        con,
        {
            "request_id": [1, 2, 3],
            "timestamp": pa.array([T0, None, T0], pa.timestamp("us")),
            "score": [0.8, 0.9, 0.1],
            "latency_ms": [1.0, 2.0, 3.0],
        },
    )
    labels = _relation(con, {"request_id": [1, 2, 3], "label": [1, 1, 0]})
    report = classification_metrics(logs, labels)
    assert report.n_missing_timestamp == 1
    assert report.overall.n == 2
    assert latency_metrics(logs).n_missing_timestamp == 1


def test_empty_logs_give_an_insufficient_report_with_typed_frames(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(
        con,
        {
            "request_id": pa.array([], pa.int64()),
            "timestamp": pa.array([], pa.timestamp("us")),
            "score": pa.array([], pa.float64()),
            "prediction": pa.array([], pa.float64()),
            "latency_ms": pa.array([], pa.float64()),
        },
    )
    labels = _relation(con, {"request_id": pa.array([], pa.int64()), "label": pa.array([], pa.int64())})
    for report in (
        classification_metrics(logs, labels),
        regression_metrics(logs, labels),
        latency_metrics(logs),
    ):
        assert report.windows == ()
        assert report.rows() == []
        assert report.overall.n == 0
        assert report.overall.status == "insufficient_data"
        names = list(report.row_type.__dataclass_fields__)
        assert list(report.to_pandas().columns) == names
        frame = report.to_polars()
        assert frame.columns == names
        assert frame.schema["n"] == pl.Int64


def test_report_frames_hold_one_row_per_window(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(
        con,
        {
            "request_id": [1, 2, 3],
            "timestamp": [T0, T0 + timedelta(days=1), T0 + timedelta(days=1)],
            "score": [0.8, 0.9, 0.1],
        },
    )
    labels = _relation(con, {"request_id": [1, 2, 3], "label": [1, 1, 0]})
    report = classification_metrics(logs, labels)
    frame = report.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert frame["n"].tolist() == [1, 2]
    assert frame["window_start"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(days=1))]
    assert report.to_polars()["roc_auc"].to_list() == [None, 1.0]
    assert report.rows()[1]["roc_auc"] == 1.0
    assert report.metric_names[0] == "accuracy"


# --------------------------------------------------------------------------- regression

# Labels on a 1/8 grid keep sums exact, so the comparison tests the formulas, not rounding.
regression_labels = st.one_of(
    st.integers(-8000, 8000).map(lambda k: k / 8),
    st.just(0.0),
    st.sampled_from([math.nan, math.inf, None]),
)
regression_predictions = st.one_of(
    st.floats(-1000, 1000, allow_subnormal=False),
    st.sampled_from([math.nan, -math.inf, None]),
)
regression_rows = st.lists(
    st.tuples(regression_predictions, st.booleans(), regression_labels, st.integers(0, 2)),
    max_size=50,
)


@HYPOTHESIS
@given(rows=regression_rows)
def test_regression_matches_sklearn_per_window(rows: list[tuple]) -> None:
    connection = duckdb.connect()
    logs = _relation(
        connection,
        {
            "request_id": pa.array(range(len(rows)), pa.int64()),
            "timestamp": pa.array([T0 + timedelta(days=r[3]) for r in rows], pa.timestamp("us")),
            "prediction": pa.array([r[0] for r in rows], pa.float64()),
        },
    )
    labelled = [i for i, r in enumerate(rows) if r[1]]
    labels = _relation(
        connection,
        {
            "request_id": pa.array(labelled, pa.int64()),
            "label": pa.array([rows[i][2] for i in labelled], pa.float64()),
        },
    )
    report = regression_metrics(logs, labels, window="day")
    groups: dict[Any, list[tuple]] = defaultdict(list)
    for r in rows:
        groups[T0 + timedelta(days=r[3])].append(r)
        groups[None].append(r)
    assert [w.window_start for w in report.windows] == sorted(k for k in groups if k is not None)
    for window in (*report.windows, report.overall):
        _assert_regression_window(window, groups.get(window.window_start, []))
    connection.close()


def _assert_regression_window(window: RegressionWindow, group: list[tuple]) -> None:
    assert window.n == len(group)
    assert window.n_labelled == sum(r[1] and _valid_number(r[2]) for r in group)
    assert window.n_invalid_label == sum(r[1] and not _valid_number(r[2]) for r in group)
    assert window.n_invalid_prediction == sum(not _valid_number(r[0]) for r in group)
    evaluated = [r for r in group if r[1] and _valid_number(r[2]) and _valid_number(r[0])]
    assert window.n_evaluated == len(evaluated)
    if not evaluated:
        assert window.status == "insufficient_data"
        assert (window.mae, window.rmse, window.mape, window.r2) == (None, None, None, None)
        return
    y = np.array([r[2] for r in evaluated])
    p = np.array([r[0] for r in evaluated])
    assert window.mae == _approx(skm.mean_absolute_error(y, p), abs_=1e-9)
    assert window.rmse == _approx(skm.root_mean_squared_error(y, p), abs_=1e-9)
    nonzero = y != 0
    assert window.n_mape_skipped == int((~nonzero).sum())
    if nonzero.any():
        expected_mape = skm.mean_absolute_percentage_error(y[nonzero], p[nonzero])
        assert window.mape == _approx(expected_mape, abs_=1e-9)
    else:
        assert window.mape is None
        assert "mape undefined" in (window.reason or "")
    if len(y) >= 2 and len(set(y.tolist())) > 1:
        assert window.r2 == _approx(skm.r2_score(y, p), rel=1e-8, abs_=1e-9)
    else:
        assert window.r2 is None
        assert window.status == "insufficient_data"
        assert "r2 undefined" in (window.reason or "")


def test_regression_on_continuous_data_matches_sklearn(con: duckdb.DuckDBPyConnection) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    y = rng.normal(50, 20, n)
    y[::97] = 0.0  # some zero labels, skipped by MAPE
    p = y + rng.normal(0, 5, n)
    logs = _relation(con, {"request_id": np.arange(n), "timestamp": [T0] * n, "prediction": p})
    labels = _relation(con, {"request_id": np.arange(n), "label": y})
    overall = regression_metrics(logs, labels).overall
    nonzero = y != 0
    assert overall.mae == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-9)
    assert overall.rmse == pytest.approx(skm.root_mean_squared_error(y, p), rel=1e-9)
    assert overall.mape == pytest.approx(skm.mean_absolute_percentage_error(y[nonzero], p[nonzero]), rel=1e-9)
    assert overall.n_mape_skipped == int((~nonzero).sum())
    assert overall.r2 == pytest.approx(skm.r2_score(y, p), rel=1e-9)
    assert overall.status == "ok"


def test_regression_refuses_text_labels(con: duckdb.DuckDBPyConnection) -> None:
    logs = _relation(con, {"request_id": [1], "timestamp": [T0], "prediction": [1.0]})
    labels = _relation(con, {"request_id": [1], "label": ["high"]})
    with pytest.raises(ValueError, match="must be numeric"):
        regression_metrics(logs, labels)


# --------------------------------------------------------------------------- latency

latency_rows = st.lists(
    st.tuples(
        st.one_of(
            st.floats(0, 1e5, allow_subnormal=False),
            st.integers(0, 50).map(float),  # repeated values
            st.sampled_from([math.nan, math.inf, -1.0, None]),
        ),
        st.integers(0, 2 * 60 - 1),
    ),
    max_size=80,
)


@HYPOTHESIS
@given(rows=latency_rows)
def test_latency_quantiles_match_numpy_percentile(rows: list[tuple]) -> None:
    connection = duckdb.connect()
    logs = _relation(
        connection,
        {
            "timestamp": pa.array([T0 + timedelta(minutes=r[1]) for r in rows], pa.timestamp("us")),
            "latency_ms": pa.array([r[0] for r in rows], pa.float64()),
        },
    )
    report = latency_metrics(logs, window="hour")
    groups: dict[Any, list[float | None]] = defaultdict(list)
    for latency, minute in rows:
        groups[T0 + timedelta(hours=minute // 60)].append(latency)
        groups[None].append(latency)
    assert [w.window_start for w in report.windows] == sorted(k for k in groups if k is not None)
    for window in (*report.windows, report.overall):
        _assert_latency_window(window, groups.get(window.window_start, []))
    if report.windows:
        span = report.windows[-1].window_end - report.windows[0].window_start
        assert report.overall.throughput_rps == pytest.approx(len(rows) / span.total_seconds())
    connection.close()


def _assert_latency_window(window: LatencyWindow, group: list[float | None]) -> None:
    valid = np.array([x for x in group if x is not None and math.isfinite(x) and x >= 0])
    assert window.n == len(group)
    assert window.n_latency == len(valid)
    assert window.n_invalid_latency == len(group) - len(valid)
    if window.window_start is not None:
        assert window.throughput_rps == pytest.approx(len(group) / 3600)
    if len(valid) == 0:
        assert window.status == "insufficient_data"
        assert window.p50_ms is None and window.p99_ms is None
        return
    expected = np.percentile(valid, [50, 95, 99], method="linear")
    actual = [window.p50_ms, window.p95_ms, window.p99_ms]
    assert actual == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-9)
    assert window.mean_ms == pytest.approx(valid.mean(), rel=1e-12)
    assert window.max_ms == valid.max()
    assert window.status == "ok"


def test_integer_latency_column_is_interpolated_not_truncated(con: duckdb.DuckDBPyConnection) -> None:
    values = [1, 2, 10, 4]
    logs = _relation(con, {"timestamp": [T0] * 4, "latency_ms": pa.array(values, pa.int32())})
    window = latency_metrics(logs).windows[0]
    assert [window.p50_ms, window.p95_ms, window.p99_ms] == pytest.approx(
        np.percentile(values, [50, 95, 99]).tolist()
    )
