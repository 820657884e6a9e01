"""Which drift method and threshold decide each column, and how columns combine.

The default policy (:data:`DEFAULT_POLICY`) follows sample size, so that small windows are judged by
a hypothesis test and large ones by how large the shift is:

* **Small samples** (``min(n_reference, n_current) < large_sample``, default 10,000): a hypothesis test
  per column — Kolmogorov-Smirnov for numeric, Pearson's chi-square for categorical — with the
  p-values of all checked columns adjusted for multiple testing (Benjamini-Hochberg by default). A
  column drifts when its adjusted p-value is below ``alpha`` (default 0.01).
* **Large samples**: an effect size — the Wasserstein-1 distance divided by the reference standard
  deviation for numeric columns (threshold 0.1), the Jensen-Shannon distance (base 2) for categorical
  ones (threshold 0.1). On millions of rows every test rejects, so a p-value alone would alarm on
  practically irrelevant shifts (0.02 sigma); the effect size does not. With ``require_significance``
  (default) the adjusted test must also reject, which stops sampling noise in the effect size of a
  high-cardinality column from raising an alarm near the switch-over.

Why the Wasserstein distance is divided by the reference **standard deviation** rather than its IQR:
the standard deviation comes exactly from the mergeable profile moments while an IQR would be read off
the binned histogram, and W1 and the standard deviation are both sensitive to the same tails, so the
ratio stays comparable across normal, skewed and heavy-tailed features (a shift of ``d`` sigmas of the
mean gives a ratio of ``d`` for any location family). A constant reference has no spread: the ratio is
0 when the current data has the same constant and ``inf`` (drift) otherwise.

What the thresholds mean: 0.1 normed W1 is a tenth of a standard deviation of mass moved (a 0.5 sigma
mean shift gives 0.5); a Jensen-Shannon distance of 0.1 corresponds to moving roughly 12 points of
share between two categories (a 20-point move gives at least 0.17, half a point about 0.005).

Per-column overrides (:class:`Rule`) pick any method and threshold for a column at every sample size.
For the test methods (``ks``, ``chi2``) the threshold applies to the adjusted p-value (drift when below
it); for effect sizes to the statistic (drift when above it). The dataset drifts when the share of
checked columns that drift reaches ``drift_share`` (default 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from analytics.stats import adjust_pvalues

#: p-value methods: drift when the adjusted p-value is below the threshold.
TEST_METHODS: dict[str, str] = {"ks": "numeric", "chi2": "categorical"}
#: Effect sizes: drift when the statistic exceeds the threshold. Value: the kinds they apply to.
EFFECT_METHODS: dict[str, tuple[str, ...]] = {
    "wasserstein_normed": ("numeric",),
    "ks_statistic": ("numeric",),
    "psi": ("numeric", "categorical"),
    "jensenshannon": ("numeric", "categorical"),
    "hellinger": ("numeric", "categorical"),
    "total_variation": ("numeric", "categorical"),
}
CORRECTIONS = ("bh", "bonferroni", "none")


class PolicyError(ValueError):
    """A policy is malformed; the message names the field."""


@dataclass(frozen=True)
class Rule:
    """A method and its threshold.

    Attributes:
        method: One of :data:`TEST_METHODS` or :data:`EFFECT_METHODS`.
        threshold: For a test, the adjusted p-value below which the column drifts; for an effect size,
            the value above which it drifts.
    """

    method: str
    threshold: float

    def __post_init__(self) -> None:
        if self.method not in TEST_METHODS and self.method not in EFFECT_METHODS:
            known = ", ".join([*TEST_METHODS, *EFFECT_METHODS])
            raise PolicyError(f"unknown drift method {self.method!r} (known: {known})")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)):
            raise PolicyError(f"{self.method}: threshold must be a finite number, got {self.threshold!r}")
        if self.is_test and not 0 < self.threshold < 1:
            raise PolicyError(f"{self.method}: a p-value threshold must lie in (0, 1), got {self.threshold}")
        if not self.is_test and self.threshold < 0:
            raise PolicyError(f"{self.method}: an effect-size threshold must be >= 0, got {self.threshold}")

    @property
    def is_test(self) -> bool:
        """Whether the rule thresholds a p-value."""
        return self.method in TEST_METHODS

    def applies_to(self, kind: str) -> bool:
        """Whether the method is defined for a column kind."""
        if self.is_test:
            return TEST_METHODS[self.method] == kind
        return kind in EFFECT_METHODS[self.method]


@dataclass(frozen=True)
class Policy:
    """How drift is decided. The defaults are :data:`DEFAULT_POLICY` (see the module doc).

    Attributes:
        alpha: Significance level of the tests (after correction).
        correction: ``bh`` (Benjamini-Hochberg), ``bonferroni`` or ``none`` across the checked columns.
        large_sample: From this many values on both sides, effect sizes decide.
        min_samples: Fewer values than this on either side gives ``insufficient_data``.
        numeric_effect: Large-sample rule for numeric columns.
        categorical_effect: Large-sample rule for categorical columns.
        require_significance: Effect-size decisions also need the adjusted test to reject.
        drift_share: Share of checked columns that must drift for the dataset to drift.
        columns: Per-column rules overriding the above at every sample size.
    """

    alpha: float = 0.01
    correction: str = "bh"
    large_sample: int = 10_000
    min_samples: int = 30
    numeric_effect: Rule = Rule("wasserstein_normed", 0.1)
    categorical_effect: Rule = Rule("jensenshannon", 0.1)
    require_significance: bool = True
    drift_share: float = 0.5
    columns: Mapping[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise PolicyError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise PolicyError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if self.min_samples < 1 or self.large_sample < self.min_samples:
            raise PolicyError("need 1 <= min_samples <= large_sample")
        if not 0 < self.drift_share <= 1:
            raise PolicyError(f"drift_share must lie in (0, 1], got {self.drift_share}")
        if not self.numeric_effect.applies_to("numeric"):
            raise PolicyError(
                f"numeric_effect: {self.numeric_effect.method} does not apply to numeric columns"
            )
        if not self.categorical_effect.applies_to("categorical"):
            raise PolicyError(
                f"categorical_effect: {self.categorical_effect.method} does not apply to categorical columns"
            )

    def rule_for(self, column: str, kind: str, n_reference: int, n_current: int) -> Rule:
        """The rule deciding one column."""
        if column in self.columns:
            return self.columns[column]
        if min(n_reference, n_current) < self.large_sample:
            return Rule("ks" if kind == "numeric" else "chi2", self.alpha)
        return self.numeric_effect if kind == "numeric" else self.categorical_effect

    def with_columns(self, overrides: Mapping[str, Rule]) -> Policy:
        """A copy with more per-column overrides."""
        return replace(self, columns={**self.columns, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see :meth:`from_dict`)."""
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "large_sample": self.large_sample,
            "min_samples": self.min_samples,
            "numeric_effect": {
                "method": self.numeric_effect.method,
                "threshold": self.numeric_effect.threshold,
            },
            "categorical_effect": {
                "method": self.categorical_effect.method,
                "threshold": self.categorical_effect.threshold,
            },
            "require_significance": self.require_significance,
            "drift_share": self.drift_share,
            "columns": {
                name: {"method": r.method, "threshold": r.threshold} for name, r in self.columns.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Build a policy from a (partial) dict; missing keys keep their defaults.

        Raises:
            PolicyError: on unknown keys or bad values.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(data)

        def rule(raw: Any, where: str) -> Rule:
            if isinstance(raw, Rule):
                return raw
            if not isinstance(raw, Mapping) or set(raw) != {"method", "threshold"}:
                raise PolicyError(f"{where}: expected {{'method': ..., 'threshold': ...}}, got {raw!r}")
            return Rule(str(raw["method"]), float(raw["threshold"]))

        for key in ("numeric_effect", "categorical_effect"):
            if key in values:
                values[key] = rule(values[key], key)
        if "columns" in values:
            values["columns"] = {
                name: rule(raw, f"columns.{name}") for name, raw in values["columns"].items()
            }
        return cls(**values)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Evidence:
    """Everything computed for one column before a decision.

    Attributes:
        column: Column name.
        kind: ``numeric`` or ``categorical``.
        n_reference: Values compared on the reference side (non-null, non-NaN).
        n_current: Values compared on the current side.
        statistics: Every statistic computed, by method name (``ks``, ``ks_p_value``, ``chi2``,
            ``chi2_p_value``, ``wasserstein_normed``, ``psi``, ...); ``None`` where undefined.
        status: ``ok``, ``insufficient_data`` or ``error``.
        reason: Why the status is not ``ok``.
        undefined: Reasons some statistics are ``None``, by statistic name.
    """

    column: str
    kind: str
    n_reference: int
    n_current: int
    statistics: Mapping[str, float | None] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None
    undefined: Mapping[str, str] = field(default_factory=dict)

    @property
    def test_p_value(self) -> float | None:
        """p-value of the kind's hypothesis test (KS or chi-square)."""
        return self.statistics.get("ks_p_value" if self.kind == "numeric" else "chi2_p_value")


@dataclass(frozen=True)
class Verdict:
    """The policy's decision for one column.

    Attributes:
        method: Method that decided (``None`` when the column could not be checked).
        statistic: Value of that method's statistic.
        p_value: Raw p-value of the column's hypothesis test.
        p_value_adjusted: The p-value after the multiple-testing correction.
        threshold: Threshold the method compared against.
        drifted: Whether the column drifts (``False`` with a non-``ok`` status says why).
        status: ``ok``, ``insufficient_data`` or ``error``.
        reason: Why the status is not ``ok``.
    """

    method: str | None
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    threshold: float | None
    drifted: bool
    status: str
    reason: str | None


def _is_number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def decide(policy: Policy, evidence: Sequence[Evidence]) -> list[Verdict]:
    """Apply a policy to the evidence of every column of one comparison.

    The multiple-testing family is every column whose status is ``ok``. A statistic that is NaN or
    undefined never passes silently: the column gets status ``error`` naming the statistic.

    Args:
        policy: The policy.
        evidence: One entry per column.

    Returns:
        One verdict per column, in the same order.
    """
    family = [i for i, e in enumerate(evidence) if e.status == "ok" and _is_number(e.test_p_value)]
    adjusted = dict(
        zip(
            family, adjust_pvalues([evidence[i].test_p_value for i in family], policy.correction), strict=True
        )
    )
    verdicts = []
    for index, item in enumerate(evidence):
        p_value = item.test_p_value if item.status == "ok" else None
        if item.status != "ok":
            verdicts.append(Verdict(None, None, None, None, None, False, item.status, item.reason))
            continue
        rule = policy.rule_for(item.column, item.kind, item.n_reference, item.n_current)
        if not rule.applies_to(item.kind):
            reason = f"method {rule.method} does not apply to {item.kind} columns"
            verdicts.append(Verdict(rule.method, None, p_value, None, rule.threshold, False, "error", reason))
            continue
        p_adjusted = adjusted.get(index)
        statistic_key = rule.method if rule.method != "ks_statistic" else "ks"
        statistic = item.statistics.get(statistic_key)
        needs_p = rule.is_test or policy.require_significance
        problem = None
        if not _is_number(statistic):
            problem = item.undefined.get(statistic_key, f"statistic {statistic_key} is undefined (NaN)")
        elif needs_p and not _is_number(p_adjusted):
            problem = item.undefined.get("p_value", "the test p-value is undefined (NaN)")
        if problem is not None:
            verdicts.append(
                Verdict(rule.method, statistic, p_value, p_adjusted, rule.threshold, False, "error", problem)
            )
            continue
        if rule.is_test:
            drifted = p_adjusted < rule.threshold
        else:
            drifted = statistic > rule.threshold and (
                not policy.require_significance or p_adjusted < policy.alpha
            )
        verdicts.append(
            Verdict(rule.method, statistic, p_value, p_adjusted, rule.threshold, bool(drifted), "ok", None)
        )
    return verdicts
