"""The drift policy: method choice by sample size, multiple-testing correction, overrides, errors."""

from __future__ import annotations

import math

import pytest
import scipy.stats

from analytics.policy import DEFAULT_POLICY, Evidence, Policy, PolicyError, Rule, decide

pytestmark = pytest.mark.unit


def numeric(column: str, n: int, *, ks_p: float, normed: float | None, ks: float = 0.1) -> Evidence:
    return Evidence(
        column,
        "numeric",
        n,
        n,
        {"ks": ks, "ks_p_value": ks_p, "wasserstein_normed": normed, "psi": 0.01},
        undefined={} if normed is not None else {"wasserstein_normed": "no finite values"},
    )


def categorical(column: str, n: int, *, chi2_p: float, js: float) -> Evidence:
    return Evidence(column, "categorical", n, n, {"chi2": 12.0, "chi2_p_value": chi2_p, "jensenshannon": js})


def test_small_samples_are_decided_by_tests_with_benjamini_hochberg() -> None:
    evidence = [
        numeric("a", 1_000, ks_p=0.001, normed=0.01),
        numeric("b", 1_000, ks_p=0.009, normed=0.9),
        categorical("c", 1_000, chi2_p=0.5, js=0.5),
    ]
    verdicts = decide(DEFAULT_POLICY, evidence)
    adjusted = scipy.stats.false_discovery_control([0.001, 0.009, 0.5], method="bh")
    assert [v.method for v in verdicts] == ["ks", "ks", "chi2"]
    assert [v.p_value_adjusted for v in verdicts] == pytest.approx(adjusted.tolist())
    # 0.009 alone is below alpha=0.01 but its adjusted value (0.0135) is not: no drift.
    assert [v.drifted for v in verdicts] == [True, False, False]
    assert all(v.threshold == DEFAULT_POLICY.alpha for v in verdicts)
    assert verdicts[0].statistic == 0.1  # the KS statistic


def test_large_samples_are_decided_by_effect_sizes_guarded_by_significance() -> None:
    evidence = [
        numeric("tiny_shift", 1_000_000, ks_p=1e-30, normed=0.02),
        numeric("real_shift", 1_000_000, ks_p=1e-30, normed=0.5),
        numeric("noise", 20_000, ks_p=0.4, normed=0.15),
        categorical("c", 1_000_000, chi2_p=1e-50, js=0.2),
    ]
    verdicts = decide(DEFAULT_POLICY, evidence)
    assert [v.method for v in verdicts] == ["wasserstein_normed"] * 3 + ["jensenshannon"]
    assert [v.drifted for v in verdicts] == [False, True, False, True]
    assert verdicts[1].statistic == 0.5 and verdicts[1].threshold == 0.1
    unguarded = decide(Policy(require_significance=False), evidence)
    assert unguarded[2].drifted  # without the guard a noisy effect size alarms


def test_switch_over_uses_the_smaller_side() -> None:
    uneven = Evidence(
        "x", "numeric", 1_000_000, 9_999, {"ks": 0.1, "ks_p_value": 0.5, "wasserstein_normed": 0.0}
    )
    assert decide(DEFAULT_POLICY, [uneven])[0].method == "ks"


def test_per_column_override_applies_at_every_size() -> None:
    policy = Policy().with_columns({"a": Rule("psi", 0.005), "b": Rule("ks", 0.2)})
    evidence = [numeric("a", 500, ks_p=0.9, normed=0.0), numeric("b", 5_000_000, ks_p=0.05, normed=0.0)]
    verdicts = decide(policy, evidence)
    # An effect-size override still needs significance: 0.01 > 0.005 but the test does not reject.
    assert (verdicts[0].method, verdicts[0].statistic, verdicts[0].drifted) == ("psi", 0.01, False)
    # A test override at five million rows: BH-adjusted 0.1 is below its own threshold 0.2.
    assert (verdicts[1].method, verdicts[1].drifted, verdicts[1].threshold) == ("ks", True, 0.2)
    assert verdicts[1].p_value_adjusted == pytest.approx(0.1)


def test_undefined_statistics_and_inapplicable_methods_are_errors_not_silent_passes() -> None:
    policy = Policy().with_columns({"c": Rule("wasserstein_normed", 0.1)})
    evidence = [
        numeric("x", 1_000_000, ks_p=1e-9, normed=None),
        Evidence(
            "y",
            "numeric",
            1_000_000,
            1_000_000,
            {"ks": 0.3, "ks_p_value": math.nan, "wasserstein_normed": 0.5},
        ),
        categorical("c", 100_000, chi2_p=0.001, js=0.3),
        Evidence("d", "numeric", 3, 3, status="insufficient_data", reason="too few"),
    ]
    verdicts = decide(policy, evidence)
    assert (verdicts[0].status, verdicts[0].reason, verdicts[0].drifted) == (
        "error",
        "no finite values",
        False,
    )
    assert verdicts[1].status == "error" and "p-value" in verdicts[1].reason
    assert verdicts[2].status == "error" and "does not apply to categorical" in verdicts[2].reason
    assert (verdicts[3].status, verdicts[3].reason, verdicts[3].method) == (
        "insufficient_data",
        "too few",
        None,
    )


def test_non_ok_columns_are_left_out_of_the_correction_family() -> None:
    evidence = [
        numeric("a", 1_000, ks_p=0.004, normed=0.0),
        Evidence("b", "numeric", 2, 2, status="insufficient_data", reason="tiny"),
    ]
    assert decide(Policy(correction="bonferroni"), evidence)[0].p_value_adjusted == pytest.approx(0.004)


def test_policy_round_trips_through_a_dict_and_validates() -> None:
    policy = Policy(alpha=0.05, correction="bonferroni", columns={"x": Rule("hellinger", 0.2)})
    assert Policy.from_dict(policy.to_dict()) == policy
    assert Policy.from_dict({}) == DEFAULT_POLICY
    with pytest.raises(PolicyError, match="unknown policy field"):
        Policy.from_dict({"alfa": 0.1})
    with pytest.raises(PolicyError, match="unknown drift method"):
        Rule("energy", 0.1)
    with pytest.raises(PolicyError, match="p-value threshold"):
        Rule("ks", 1.5)
    with pytest.raises(PolicyError, match="finite"):
        Rule("psi", math.nan)
    with pytest.raises(PolicyError, match="correction"):
        Policy(correction="holm")
    with pytest.raises(PolicyError, match="does not apply to categorical"):
        Policy(categorical_effect=Rule("wasserstein_normed", 0.1))
    with pytest.raises(PolicyError, match=r"columns\.x"):
        Policy.from_dict({"columns": {"x": {"method": "psi"}}})
