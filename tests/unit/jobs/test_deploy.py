"""Units of the deployment job: configuration parsing, canary analysis, allowed manual actions."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest

from jobs.deploy import (
    ABORT,
    CANARY,
    DIRECT,
    PAUSE,
    PAUSED,
    PROMOTE,
    QUEUED,
    RESUME,
    ROLLBACK,
    RUNNING,
    SUCCEEDED,
    AnalysisOutcome,
    AnalysisResult,
    DeployConfig,
    Thresholds,
    allowed_actions,
    analyse,
    format_steps,
    parse_steps,
)
from jobs.users import InvalidInput

pytestmark = pytest.mark.unit


def rows(n: int, latency_ms: float, prediction: float | None = 1.0) -> pa.Table:
    return pa.table(
        {
            "prediction": pa.array([prediction] * n, pa.float64()),
            "latency_ms": pa.array([latency_ms] * n, pa.float64()),
        }
    )


def result(analysis, metric: str) -> AnalysisResult:
    return next(r for r in analysis.results if r.metric == metric)


def test_steps_parse_strictly() -> None:
    assert parse_steps("10,25,50,100") == (10, 25, 50, 100)
    assert parse_steps(" 5 , 100") == (5, 100)
    assert parse_steps([100]) == (100,)
    assert format_steps((10, 100)) == "10,100"
    for bad in ("", "10,,100", "10,50", "50,25,100", "0,100", "10,100,150", "ten,100", "10.5,100", "-5,100"):
        with pytest.raises(InvalidInput):
            parse_steps(bad)
    with pytest.raises(InvalidInput):
        parse_steps([True, 100])


def test_config_refuses_out_of_range_values() -> None:
    DeployConfig(tracking_uri="sqlite:///x.db", bake_seconds=1, lease_seconds=4, poll_seconds=0.5)
    with pytest.raises(InvalidInput, match="bake_seconds"):
        DeployConfig(tracking_uri="x", bake_seconds=0)
    with pytest.raises(InvalidInput, match="on_restart"):
        DeployConfig(tracking_uri="x", on_restart="ignore")
    with pytest.raises(InvalidInput, match="poll_seconds"):
        DeployConfig(tracking_uri="x", lease_seconds=4, poll_seconds=3)
    with pytest.raises(InvalidInput, match="min_success_rate"):
        Thresholds(min_success_rate=1.5)
    with pytest.raises(InvalidInput, match="max_p99_ratio"):
        Thresholds(max_p99_ratio=0.5)
    with pytest.raises(InvalidInput, match="min_requests"):
        Thresholds(min_requests=0)


def test_healthy_canary_passes_every_check() -> None:
    analysis = analyse(rows(200, 4.0), rows(800, 3.9), Thresholds(min_requests=100))
    assert analysis.outcome == AnalysisOutcome.PASSED, analysis.reason
    assert {r.metric for r in analysis.results} == {
        "requests",
        "success_rate",
        "latency_p99_ms",
        "latency_p99_vs_stable",
        "prediction_drift",
    }
    assert result(analysis, "success_rate").canary == 1.0
    assert result(analysis, "latency_p99_ms").threshold == 500.0


def test_too_little_traffic_is_inconclusive_not_a_failure() -> None:
    analysis = analyse(rows(20, 900.0), rows(800, 3.0), Thresholds(min_requests=50))
    assert analysis.outcome == AnalysisOutcome.INCONCLUSIVE
    assert "canary 20" in analysis.reason and "50 needed" in analysis.reason
    assert analyse(rows(80, 3.0), rows(10, 3.0), Thresholds(min_requests=50)).outcome == "inconclusive"


def test_slow_canary_fails_on_the_absolute_limit_and_the_ratio() -> None:
    analysis = analyse(rows(200, 700.0), rows(800, 10.0), Thresholds(min_requests=100, check_drift=False))
    assert analysis.outcome == AnalysisOutcome.FAILED
    assert result(analysis, "latency_p99_ms").passed is False
    assert result(analysis, "latency_p99_vs_stable").passed is False
    assert "p99 latency" in analysis.reason


def test_ratio_uses_the_slack_for_fast_models_and_fails_without_it() -> None:
    thresholds = Thresholds(min_requests=10, check_drift=False, latency_slack_ms=5.0)
    assert analyse(rows(50, 1.5), rows(50, 1.0), thresholds).outcome == AnalysisOutcome.PASSED
    strict = Thresholds(min_requests=10, check_drift=False, latency_slack_ms=0.0)
    failed = analyse(rows(50, 1.5), rows(50, 1.0), strict)
    assert failed.outcome == AnalysisOutcome.FAILED
    assert result(failed, "latency_p99_vs_stable").threshold == pytest.approx(1.2)
    slower = analyse(rows(50, 130.0), rows(50, 100.0), thresholds)
    assert slower.outcome == AnalysisOutcome.FAILED  # 130 > max(120, 105)


def test_missing_predictions_lower_the_success_rate() -> None:
    canary = pa.concat_tables([rows(97, 3.0), rows(3, 3.0, prediction=None)])
    analysis = analyse(canary, rows(100, 3.0), Thresholds(min_requests=50, check_drift=False))
    assert analysis.outcome == AnalysisOutcome.FAILED
    assert result(analysis, "success_rate").canary == pytest.approx(0.97)
    nan = pa.concat_tables([rows(99, 3.0), rows(1, 3.0, prediction=float("nan"))])
    assert result(analyse(nan, None, Thresholds(min_requests=50)), "success_rate").canary == pytest.approx(
        0.99
    )


def test_server_errors_count_against_the_success_rate_and_as_requests() -> None:
    thresholds = Thresholds(min_requests=100, check_drift=False)
    # 70 predictions and 30 server errors: 100 requests, 70 % success -> rollback, not "too little traffic".
    analysis = analyse(rows(70, 3.0), rows(300, 3.0), thresholds, canary_errors=30)
    assert analysis.outcome == AnalysisOutcome.FAILED
    assert result(analysis, "requests").canary == 100.0
    success = result(analysis, "success_rate")
    assert success.canary == pytest.approx(0.7) and success.stable == 1.0 and success.passed is False
    assert "success rate 0.7000" in analysis.reason and "30 server errors" in analysis.reason
    # The stable version's own errors lower its rate, not the canary's.
    healthy = analyse(rows(200, 3.0), rows(300, 3.0), thresholds, stable_errors=3)
    assert healthy.outcome == AnalysisOutcome.PASSED
    assert result(healthy, "success_rate").stable == pytest.approx(300 / 303)


def test_a_canary_that_fails_every_request_is_rolled_back() -> None:
    empty = rows(0, 3.0)
    analysis = analyse(empty, rows(300, 3.0), Thresholds(min_requests=50), canary_errors=120)
    assert analysis.outcome == AnalysisOutcome.FAILED
    assert result(analysis, "success_rate").canary == 0.0
    assert result(analysis, "latency_p99_ms").passed is None
    assert analysis.reason.startswith("success rate 0.0000")
    # Errors alone below min_requests stay inconclusive.
    assert analyse(empty, rows(300, 3.0), Thresholds(min_requests=50), canary_errors=10).outcome == (
        AnalysisOutcome.INCONCLUSIVE
    )


def test_drifting_predictions_fail_the_canary() -> None:
    stable = rows(500, 3.0, prediction=0.0)
    canary = pa.concat_tables([rows(250, 3.0, prediction=0.0), rows(250, 3.0, prediction=1.0)])
    stable = pa.concat_tables([stable, rows(20, 3.0, prediction=1.0)])
    analysis = analyse(canary, stable, Thresholds(min_requests=100))
    assert analysis.outcome == AnalysisOutcome.FAILED
    assert result(analysis, "prediction_drift").passed is False


def test_without_a_stable_version_only_absolute_checks_apply() -> None:
    analysis = analyse(rows(100, 3.0), None, Thresholds(min_requests=50))
    assert analysis.outcome == AnalysisOutcome.PASSED
    assert {r.metric for r in analysis.results} == {"requests", "success_rate", "latency_p99_ms"}


def fake(status: str, strategy: str = CANARY, requested: str | None = None, previous: str | None = "1"):
    return SimpleNamespace(
        status=status, strategy=strategy, requested_action=requested, previous_version=previous, version="2"
    )


def test_allowed_actions_follow_the_state() -> None:
    assert allowed_actions(fake(QUEUED)) == (PAUSE, ABORT)
    assert allowed_actions(fake(RUNNING)) == (PROMOTE, PAUSE, ABORT, ROLLBACK)
    assert allowed_actions(fake(RUNNING, strategy=DIRECT)) == (ABORT, ROLLBACK)
    assert allowed_actions(fake(PAUSED)) == (PROMOTE, RESUME, ABORT, ROLLBACK)
    assert allowed_actions(fake(SUCCEEDED)) == (ROLLBACK,)
    assert allowed_actions(fake(SUCCEEDED, previous=None)) == ()
    assert allowed_actions(fake(RUNNING, requested=PAUSE)) == ()
    assert allowed_actions(fake("rolled_back")) == ()


def test_cli_parses_the_deploy_commands_strictly() -> None:
    from jobs.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["deploy", "run", "--once", "--steps", "10,100", "--bake-seconds", "2"])
    assert (args.deploy_command, args.once, args.steps, args.bake_seconds) == ("run", True, "10,100", 2)
    assert args.on_restart == "resume" and args.min_requests == 100
    args = parser.parse_args(["deploy", "abort", "--deployment", "7", "--as", "otto", "--reason", "bad"])
    assert (args.deploy_command, args.deployment, args.actor, args.reason) == ("abort", 7, "otto", "bad")
    for bad in (
        ["deploy", "run", "--bake-seconds", "0"],
        ["deploy", "run", "--on-restart", "ignore"],
        ["deploy", "promote", "--deployment", "x", "--as", "otto"],
        ["deploy", "pause", "--as", "otto"],
        ["deploy", "configure", "--deployment", "1", "--as", "otto", "--strategy", "rainbow"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
