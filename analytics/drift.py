"""Per-column drift between a reference and a current profile, decided by a :class:`Policy`.

For every column both profiles share, :func:`drift` computes all statistics of its kind from the two
profiles (no data is read):

* numeric: Kolmogorov-Smirnov on the binned CDFs (statistic, asymptotic p-value and the bound on how
  far the exact statistic can lie above it), Wasserstein-1 (each bin's mass spread uniformly over it,
  the open outer bins closed where an exponential tail fitted to the last bins puts their mean, see
  :func:`analytics.stats.tail_extents`) raw and divided by the reference standard deviation, PSI,
  Jensen-Shannon distance (base 2), Hellinger, total variation, and the mean shift in reference
  standard deviations;
* categorical: chi-square test of homogeneity (over every category when both profiles list them all,
  see :func:`_chi_square_cells`; sparse cells pooled to an expected count of 5), PSI, Jensen-Shannon,
  Hellinger and total variation over the spec categories plus one "other" cell, and the categories
  that are new in the current data or vanished from it.

``-inf``/``+inf`` lie in the outer bins of the numeric distribution (they are outside any finite
reference range); Wasserstein and the moments use the finite values only. NaN and NULL are not part of
any distribution: data quality (:mod:`analytics.quality`) reports them.

:func:`drift_many` compares many current profiles (the windows or slices of a monitoring run) with one
reference at once: the same reports as :func:`drift` per profile (to about 1e-12 relative), with the
numeric statistics and the categorical distances of a column computed for every profile in one NumPy
pass over a (profiles x bins) matrix instead of one call per profile and column.

With ``exact=True`` (:func:`drift_relations`, or ``exact=(reference_rel, current_rel)`` here) the
numeric KS test and Wasserstein distance are computed by SciPy on the raw values instead, one column
at a time; the binned values stay in ``statistics`` as ``ks_binned`` / ``wasserstein_binned``.
Categorical statistics are computed from exact counts already.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from analytics import stats
from analytics._tabular import TabularMixin, json_safe
from analytics.policy import DEFAULT_POLICY, Evidence, Policy, Verdict, decide
from analytics.profile import (
    DEFAULT_BINS,
    DEFAULT_TOP_K,
    ColumnProfile,
    ColumnSpec,
    Kind,
    Profile,
    ProfileError,
    profile,
    profile_reference,
    quote,
)

#: Cells whose expected count is below this are pooled before the chi-square test (Cochran's rule).
CHI2_MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column.

    Attributes:
        column: Column name.
        kind: ``numeric`` or ``categorical``.
        method: Method that decided (``ks``, ``chi2``, ``wasserstein_normed``, ``jensenshannon``, ...);
            ``None`` when the column could not be checked.
        statistic: Value of that method's statistic.
        p_value: Raw p-value of the column's test (KS or chi-square); ``None`` where undefined.
        p_value_adjusted: p-value after the multiple-testing correction across columns.
        threshold: What ``statistic`` (effect sizes) or ``p_value_adjusted`` (tests) was compared to.
        drifted: Whether the column drifted. ``False`` with a non-``ok`` status means "not checked".
        n_reference: Values compared on the reference side (non-null, non-NaN).
        n_current: Values compared on the current side.
        status: ``ok``, ``insufficient_data`` or ``error``.
        reason: Why the status is not ``ok``.
        exact: Whether KS / Wasserstein come from the raw values (SciPy) rather than the profiles.
        statistics: Every statistic computed (``None`` where undefined).
        new_categories: Categorical: current values the reference did not have, most frequent first.
        vanished_categories: Categorical: reference values absent from the current data.
    """

    column: str
    kind: str
    method: str | None
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    threshold: float | None
    drifted: bool
    n_reference: int
    n_current: int
    status: str
    reason: str | None = None
    exact: bool = False
    statistics: Mapping[str, float | None] = field(default_factory=dict)
    new_categories: tuple[str, ...] = ()
    vanished_categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form; ``statistics`` stays a nested dict."""
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_value_adjusted": self.p_value_adjusted,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "status": self.status,
            "reason": self.reason,
            "exact": self.exact,
            "statistics": dict(self.statistics),
            "new_categories": list(self.new_categories),
            "vanished_categories": list(self.vanished_categories),
        }


@dataclass(frozen=True)
class DriftSummary:
    """Dataset-level result of one comparison.

    Attributes:
        n_columns: Columns compared.
        n_checked: Columns with status ``ok``.
        n_drifted: Checked columns that drifted.
        n_insufficient: Columns with status ``insufficient_data``.
        n_error: Columns with status ``error``.
        drift_share: ``n_drifted / n_checked`` (``None`` when nothing could be checked).
        dataset_drifted: Whether ``drift_share`` reached the policy's ``drift_share``.
        drift_share_threshold: The policy's ``drift_share``.
        n_reference_rows: Rows of the reference.
        n_current_rows: Rows of the current data.
        correction: Multiple-testing correction used.
        alpha: Significance level used.
    """

    n_columns: int
    n_checked: int
    n_drifted: int
    n_insufficient: int
    n_error: int
    drift_share: float | None
    dataset_drifted: bool
    drift_share_threshold: float
    n_reference_rows: int
    n_current_rows: int
    correction: str
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class DriftReport(TabularMixin):
    """Drift of every column of one comparison plus the dataset-level summary.

    Attributes:
        columns: One :class:`ColumnDrift` per column.
        summary: The dataset-level :class:`DriftSummary`.
        window: Window start of the current profile, if it was a window.
    """

    columns: tuple[ColumnDrift, ...]
    summary: DriftSummary
    window: datetime | None = None

    def __getitem__(self, name: str) -> ColumnDrift:
        for column in self.columns:
            if column.column == name:
                return column
        raise KeyError(f"column {name!r} is not in the drift report")

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Names of the columns that drifted."""
        return tuple(c.column for c in self.columns if c.drifted)

    def to_dict(self) -> dict[str, Any]:
        """``{"window", "summary", "columns": [...]}`` in plain Python."""
        return {
            "window": self.window,
            "summary": self.summary.to_dict(),
            "columns": [column.to_dict() for column in self.columns],
        }

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` made JSON-safe (window as ISO text, non-finite floats as strings)."""
        data = self.to_dict()
        data["window"] = self.window.isoformat() if self.window else None
        return json_safe(data)

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for column in self.columns:
            record = column.to_dict()
            statistics = record.pop("statistics")
            record = {"window": self.window, **record}
            record.update({f"stat_{key}": value for key, value in statistics.items()})
            records.append(record)
        return records


@dataclass(frozen=True)
class DriftTimeline(TabularMixin):
    """Drift reports of successive windows against one reference (e.g. for a feature x day heatmap).

    Attributes:
        reports: Report per window start, in time order.
    """

    reports: Mapping[datetime, DriftReport]

    def to_dict(self) -> dict[str, Any]:
        """``{window_iso: report_dict}``."""
        return {window.isoformat(): report.to_dict() for window, report in self.reports.items()}

    def summary_records(self) -> list[dict[str, Any]]:
        """One row per window with the dataset-level summary."""
        return [{"window": window, **report.summary.to_dict()} for window, report in self.reports.items()]

    def _records(self) -> list[dict[str, Any]]:
        return [record for report in self.reports.values() for record in report._records()]


# --------------------------------------------------------------------------------------------------
# Evidence per column


def _insufficient(reference: ColumnProfile, current: ColumnProfile, policy: Policy) -> str | None:
    for side, column in (("reference", reference), ("current", current)):
        if column.valid == 0:
            what = "rows" if column.rows == 0 else "non-null values"
            return f"the {side} has no {what} in column {column.name!r}"
        if column.valid < policy.min_samples:
            return f"the {side} has {column.valid} values, fewer than min_samples={policy.min_samples}"
    return None


def _shared_statistics_rows(
    reference: ColumnProfile, currents: Sequence[ColumnProfile]
) -> dict[str, list[float]]:
    """PSI, Jensen-Shannon, Hellinger and total variation of the distribution of each current side."""
    current_counts = np.array([current.distribution() for current in currents], dtype=float)
    distances = stats.distances_rows(reference.distribution(), current_counts)
    return {name: values.tolist() for name, values in distances.items()}


def _failed(reference: ColumnProfile, current: ColumnProfile, kind: str, error: Exception) -> Evidence:
    """A column whose statistics could not be computed: one bad column must not hide the others."""
    return Evidence(reference.name, kind, reference.valid, current.valid, status="error", reason=str(error))


def _evidence_many(
    reference: ColumnProfile, currents: Sequence[ColumnProfile], kind: Kind, policy: Policy
) -> list[Evidence]:
    """The evidence of one column against each current side; never raises.

    The statistics of every current side with enough values are computed together; if that fails,
    each side is computed alone, so only the side at fault gets an ``error`` evidence.
    """
    found: list[Evidence | None] = []
    ready: list[ColumnProfile] = []
    for current in currents:
        reason = _insufficient(reference, current, policy)
        if reason:
            n_ref, n_cur = reference.valid, current.valid
            found.append(
                Evidence(reference.name, kind, n_ref, n_cur, status="insufficient_data", reason=reason)
            )
        else:
            found.append(None)
            ready.append(current)
    computed: list[Evidence] = []
    if ready:
        statistics = _numeric_statistics if kind == "numeric" else _categorical_statistics
        try:
            computed = statistics(reference, ready)
        except (ValueError, ArithmeticError) as error:
            if len(ready) == 1:
                computed = [_failed(reference, ready[0], kind, error)]
            else:
                computed = [_evidence_many(reference, [side], kind, policy)[0] for side in ready]
    filled = iter(computed)
    return [item if item is not None else next(filled) for item in found]


def _numeric_statistics(reference: ColumnProfile, currents: Sequence[ColumnProfile]) -> list[Evidence]:
    """Every numeric statistic of one column against each current side, as (sides x bins) arrays."""
    n_ref = reference.valid
    cur_counts = np.array([current.distribution() for current in currents], dtype=float)
    ks, ks_upper = stats.ks_binned_rows(reference.distribution(), cur_counts)
    ks_values, bounds = ks.tolist(), (ks_upper - ks).tolist()
    shared = _shared_statistics_rows(reference, currents)
    distances = _wasserstein_many(reference, currents)
    evidence = []
    for index, current in enumerate(currents):
        values: dict[str, float | None] = {
            "ks": ks_values[index],
            "ks_p_value": stats.ks_pvalue(ks_values[index], n_ref, current.valid),
            "ks_error_bound": bounds[index],
            **{name: column[index] for name, column in shared.items()},
        }
        undefined: dict[str, str] = {}
        values.update(_moment_statistics(reference, current, undefined))
        if index in distances:
            values["wasserstein"] = distances[index]
            values["wasserstein_normed"] = _normed(distances[index], reference.std)
        else:
            side = "reference" if not reference.finite else "current"
            undefined["wasserstein"] = undefined["wasserstein_normed"] = (
                f"Wasserstein distance undefined: the {side} has no finite values"
            )
            values["wasserstein"] = values["wasserstein_normed"] = None
        evidence.append(
            Evidence(reference.name, "numeric", n_ref, current.valid, values, undefined=undefined)
        )
    return evidence


def _wasserstein_many(reference: ColumnProfile, currents: Sequence[ColumnProfile]) -> dict[int, float]:
    """Binned Wasserstein-1 distance of each current side with finite values (by index)."""
    finite = [index for index, current in enumerate(currents) if reference.finite and current.finite]
    if not finite:
        return {}
    edges = reference.spec.edges
    # Row 0: the reference; then every current side with finite values.
    sides = [reference, *(currents[index] for index in finite)]
    bins = np.array([side.bin_counts for side in sides], dtype=float)
    lows, highs = stats.tail_extents_rows(
        edges, bins, low=[side.min for side in sides], high=[side.max for side in sides]
    )
    distances = stats.wasserstein_binned_rows(
        edges,
        bins[0],
        bins[1:],
        low=np.minimum(lows[0], lows[1:]),
        high=np.maximum(highs[0], highs[1:]),
    )
    return dict(zip(finite, distances.tolist(), strict=True))


def _normed(distance: float, spread: float | None) -> float | None:
    if spread is None:
        return None
    if spread > 0:
        return distance / spread
    # Constant reference: any movement at all is infinitely many (zero) standard deviations.
    return 0.0 if distance == 0 else math.inf


def _moment_statistics(
    reference: ColumnProfile, current: ColumnProfile, undefined: dict[str, str]
) -> dict[str, float | None]:
    values = {
        "mean_reference": reference.mean,
        "mean_current": current.mean,
        "std_reference": reference.std,
        "std_current": current.std,
        "mean_shift_normed": None,
    }
    if reference.mean is not None and current.mean is not None:
        values["mean_shift_normed"] = _normed(abs(current.mean - reference.mean), reference.std)
    else:
        undefined["mean_shift_normed"] = "no finite values on one side"
    return values


def _categorical_statistics(reference: ColumnProfile, currents: Sequence[ColumnProfile]) -> list[Evidence]:
    """Every categorical statistic of one column against each current side (the chi-square cells
    depend on each side; the distances are computed for all sides at once)."""
    n_ref = reference.valid
    shared = _shared_statistics_rows(reference, currents)
    reference_counts = reference.category_table()
    evidence = []
    for index, current in enumerate(currents):
        chi2 = stats.chi_square(*_chi_square_cells(reference, current), min_expected=CHI2_MIN_EXPECTED)
        values: dict[str, float | None] = {
            "chi2": chi2.statistic,
            "chi2_p_value": chi2.p_value,
            "chi2_dof": float(chi2.dof),
            **{name: column[index] for name, column in shared.items()},
        }
        new, _ = new_categories(reference, current)
        vanished = vanished_categories(reference, current)
        values["new_category_share"] = sum(dict(current.unseen)[v] for v in new) / current.valid
        values["vanished_category_share"] = sum(reference_counts[v] for v in vanished) / n_ref
        evidence.append(Evidence(reference.name, "categorical", n_ref, current.valid, values))
    return evidence


def _chi_square_cells(reference: ColumnProfile, current: ColumnProfile) -> tuple[list[int], list[int]]:
    """Reference and current counts per cell for the chi-square test.

    The spec categories are the reference's most frequent values, chosen on the reference sample
    itself: a rare category makes the cut when its reference count happens to be high, so on small
    samples its reference count is biased up and the "other" cell's down, and a test on those cells
    rejects far more often than its level (about 95% of the time at 1,000 rows of a 300-category Zipf
    column). Two remedies, in order:

    * when both profiles list every value, the cells are all categories seen on either side: the
      choice of cells then depends only on the data pooled, and the test is valid;
    * otherwise tracked categories are pooled with "other" unless they are both frequent enough for the
      chi-square approximation (expected count ``CHI2_MIN_EXPECTED``) and far from the selection
      boundary (pooled count at least four times the smallest tracked reference count, where noise
      can no longer decide whether a category was tracked): the opposite biases of the categories near
      the cut and of "other" land in the same cell and cancel.
    """
    if reference.listed_all and current.listed_all:
        ref, cur = reference.category_table(), current.category_table()
        keys = list(dict.fromkeys([*ref, *cur]))
        return [ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]
    ref_counts, cur_counts = list(reference.distribution()), list(current.distribution())
    share = min(sum(ref_counts), sum(cur_counts)) / (sum(ref_counts) + sum(cur_counts))
    cut = min(reference.category_counts, default=0)
    keep = [
        i
        for i in range(len(ref_counts) - 1)
        if (ref_counts[i] + cur_counts[i]) * share >= CHI2_MIN_EXPECTED
        and ref_counts[i] + cur_counts[i] >= 4 * cut
    ]
    pooled = set(range(len(ref_counts))) - set(keep)
    return (
        [ref_counts[i] for i in keep] + [sum(ref_counts[i] for i in pooled)],
        [cur_counts[i] for i in keep] + [sum(cur_counts[i] for i in pooled)],
    )


def new_categories(reference: ColumnProfile, current: ColumnProfile) -> tuple[tuple[str, ...], bool]:
    """Current values the reference did not have, most frequent first.

    Returns:
        ``(values, exact)``. ``exact`` is ``False`` when the reference had values beyond those it lists
        (more distinct values than ``max_unseen`` outside the spec categories), so a listed "new" value
        may be a rare reference value, or when the current side did not list all of its other values.
    """
    known = reference.category_table()
    values = tuple(value for value, _ in current.unseen if value not in known)
    return values, reference.listed_all and current.listed_all


def vanished_categories(reference: ColumnProfile, current: ColumnProfile) -> tuple[str, ...]:
    """Reference values (spec categories and listed others) with no occurrence in the current data."""
    current_seen = {value for value, count in current.category_table().items() if count > 0}
    candidates = (
        reference.category_table()
        if current.listed_all
        else dict(zip(reference.spec.categories, reference.category_counts, strict=True))
    )
    return tuple(v for v, count in candidates.items() if count > 0 and v not in current_seen)


def _exact_numeric(
    evidence: Evidence,
    reference_rel: duckdb.DuckDBPyRelation,
    current_rel: duckdb.DuckDBPyRelation,
    reference: ColumnProfile,
) -> Evidence:
    """Replace the binned KS / Wasserstein values with SciPy's on the raw values of one column."""
    ref_values = _raw_values(reference_rel, evidence.column)
    cur_values = _raw_values(current_rel, evidence.column)
    values = dict(evidence.statistics)
    undefined = dict(evidence.undefined)
    values["ks_binned"] = values.pop("ks")
    values["wasserstein_binned"] = values.get("wasserstein")
    ks = stats.ks_exact(ref_values, cur_values)
    values["ks"], values["ks_p_value"], values["ks_error_bound"] = ks.statistic, ks.p_value, 0.0
    if math.isnan(ks.p_value):
        undefined["p_value"] = "SciPy's KS p-value is NaN"
    ref_finite, cur_finite = ref_values[np.isfinite(ref_values)], cur_values[np.isfinite(cur_values)]
    if ref_finite.size and cur_finite.size:
        distance = stats.wasserstein_exact(ref_finite, cur_finite)
        values["wasserstein"] = distance
        values["wasserstein_normed"] = _normed(distance, reference.std)
    return Evidence(
        evidence.column,
        evidence.kind,
        evidence.n_reference,
        evidence.n_current,
        values,
        evidence.status,
        evidence.reason,
        undefined,
    )


def _raw_values(rel: duckdb.DuckDBPyRelation, column: str) -> np.ndarray:
    """Non-null, non-NaN values of one column as float64 (infinities kept)."""
    value = f"CAST({quote(column)} AS DOUBLE)"
    sql = f"SELECT {value} AS v FROM __mms_source WHERE {value} IS NOT NULL AND NOT isnan({value})"
    result = rel.query("__mms_source", sql).fetchnumpy()["v"]
    return np.asarray(result, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Reports


def _error(column: str, kind: str, reason: str) -> Evidence:
    return Evidence(column, kind, 0, 0, status="error", reason=reason)


def drift(
    reference: Profile,
    current: Profile,
    policy: Policy | None = None,
    *,
    exact: tuple[duckdb.DuckDBPyRelation, duckdb.DuckDBPyRelation] | None = None,
) -> DriftReport:
    """Compare a current profile with a reference profile, column by column.

    Args:
        reference: Profile of the reference data.
        current: Profile of the current data, built from the same spec (``profile(rel, reference.spec)``).
        policy: Decision policy; :data:`~analytics.policy.DEFAULT_POLICY` by default.
        exact: ``(reference_rel, current_rel)`` to compute the numeric KS test and Wasserstein
            distance on the raw values with SciPy.

    Returns:
        The report. Columns missing from or retyped in the current data get status ``error``.

    Raises:
        ProfileError: if the two profiles were built from different specs.
    """
    policy = policy or DEFAULT_POLICY
    _check_same_spec(reference, current)
    retyped_current = dict(current.retyped)
    evidence: list[Evidence] = []
    for column_spec in reference.spec.columns:
        name, kind = column_spec.name, column_spec.kind
        problem = _unchecked(reference, current, column_spec, retyped_current)
        if problem is not None:
            evidence.append(problem)
        else:
            evidence.append(_column_evidence(reference[name], current[name], kind, policy, exact))
    return _report(reference, current, evidence, policy, exact is not None)


def drift_many(
    reference: Profile, currents: Sequence[Profile], policy: Policy | None = None
) -> list[DriftReport]:
    """Compare many current profiles (windows, slices) with one reference, all at once.

    The result is ``[drift(reference, current, policy) for current in currents]`` (equal to about
    1e-12 relative: sums run over rows of a matrix instead of one vector at a time), but the numeric
    statistics of a column are computed for every current profile in one NumPy pass over a
    (profiles x bins) matrix, so a batch of windows pays the per-call Python overhead of the
    statistics once per column instead of once per column and window. Categorical columns (whose
    chi-square cells depend on each profile) and the decisions stay per profile.

    Args:
        reference: Profile of the reference data.
        currents: Current profiles, each built from the reference's spec.
        policy: Decision policy; :data:`~analytics.policy.DEFAULT_POLICY` by default.

    Returns:
        One report per current profile, in the order given.

    Raises:
        ProfileError: if a current profile was built from another spec.
    """
    policy = policy or DEFAULT_POLICY
    for current in currents:
        _check_same_spec(reference, current)
    retyped = [dict(current.retyped) for current in currents]
    evidence: list[list[Evidence]] = [[] for _ in currents]
    for column_spec in reference.spec.columns:
        name, kind = column_spec.name, column_spec.kind
        problems = [
            _unchecked(reference, current, column_spec, retyped[index])
            for index, current in enumerate(currents)
        ]
        pending = [index for index, problem in enumerate(problems) if problem is None]
        sides = [currents[index][name] for index in pending]
        found = dict(zip(pending, _evidence_many(reference[name], sides, kind, policy), strict=True))
        for index, problem in enumerate(problems):
            evidence[index].append(problem if problem is not None else found[index])
    return [
        _report(reference, current, items, policy, False)
        for current, items in zip(currents, evidence, strict=True)
    ]


def _check_same_spec(reference: Profile, current: Profile) -> None:
    # Identity first: window profiles share their reference's spec object, and comparing two
    # specs field by field (every edge and category) costs more than a column's statistics.
    if current.spec is not reference.spec and reference.spec != current.spec:
        raise ProfileError("the current profile was not built from the reference profile's spec")


def _unchecked(
    reference: Profile, current: Profile, column_spec: ColumnSpec, retyped_current: Mapping[str, str]
) -> Evidence | None:
    """The error evidence of a column that cannot be compared, ``None`` when it can."""
    name, kind = column_spec.name, column_spec.kind
    if name not in reference:
        return _error(name, kind, f"column {name!r} was not profiled in the reference")
    if name in retyped_current:
        return _error(
            name, kind, f"column {name!r} changed type from {column_spec.dtype} to {retyped_current[name]}"
        )
    if name not in current:
        return _error(name, kind, f"column {name!r} is missing from the current data")
    return None


def _report(
    reference: Profile, current: Profile, evidence: Sequence[Evidence], policy: Policy, exact: bool
) -> DriftReport:
    verdicts = decide(policy, evidence)
    columns = tuple(
        _column_drift(e, v, reference, current, exact) for e, v in zip(evidence, verdicts, strict=True)
    )
    return DriftReport(columns, _summary(columns, policy, reference, current), current.window)


def _column_evidence(
    reference: ColumnProfile,
    current: ColumnProfile,
    kind: Kind,
    policy: Policy,
    exact: tuple[duckdb.DuckDBPyRelation, duckdb.DuckDBPyRelation] | None,
) -> Evidence:
    evidence = _evidence_many(reference, [current], kind, policy)[0]
    if kind != "numeric" or exact is None or evidence.status != "ok":
        return evidence
    try:
        return _exact_numeric(evidence, exact[0], exact[1], reference)
    except (ValueError, ArithmeticError, duckdb.Error) as exc:
        return _failed(reference, current, kind, exc)


def _column_drift(
    evidence: Evidence, verdict: Verdict, reference: Profile, current: Profile, exact: bool
) -> ColumnDrift:
    new: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()
    if evidence.kind == "categorical" and evidence.column in reference and evidence.column in current:
        new, _ = new_categories(reference[evidence.column], current[evidence.column])
        vanished = vanished_categories(reference[evidence.column], current[evidence.column])
    return ColumnDrift(
        column=evidence.column,
        kind=evidence.kind,
        method=verdict.method,
        statistic=verdict.statistic,
        p_value=verdict.p_value,
        p_value_adjusted=verdict.p_value_adjusted,
        threshold=verdict.threshold,
        drifted=verdict.drifted,
        n_reference=evidence.n_reference,
        n_current=evidence.n_current,
        status=verdict.status,
        reason=verdict.reason,
        exact=exact and evidence.kind == "numeric" and evidence.status == "ok",
        statistics=dict(evidence.statistics),
        new_categories=new,
        vanished_categories=vanished,
    )


def _summary(
    columns: Sequence[ColumnDrift], policy: Policy, reference: Profile, current: Profile
) -> DriftSummary:
    checked = [c for c in columns if c.status == "ok"]
    drifted = [c for c in checked if c.drifted]
    share = len(drifted) / len(checked) if checked else None
    return DriftSummary(
        n_columns=len(columns),
        n_checked=len(checked),
        n_drifted=len(drifted),
        n_insufficient=sum(c.status == "insufficient_data" for c in columns),
        n_error=sum(c.status == "error" for c in columns),
        drift_share=share,
        dataset_drifted=share is not None and share >= policy.drift_share,
        drift_share_threshold=policy.drift_share,
        n_reference_rows=reference.rows,
        n_current_rows=current.rows,
        correction=policy.correction,
        alpha=policy.alpha,
    )


def drift_windows(
    reference: Profile, windows: Mapping[datetime, Profile], policy: Policy | None = None
) -> DriftTimeline:
    """Drift of each window profile (from ``profile(rel, spec, window=...)``) against one reference."""
    starts = sorted(windows)
    reports = drift_many(reference, [windows[start] for start in starts], policy)
    return DriftTimeline(dict(zip(starts, reports, strict=True)))


def drift_relations(
    reference: duckdb.DuckDBPyRelation,
    current: duckdb.DuckDBPyRelation,
    *,
    columns: Sequence[str] | None = None,
    policy: Policy | None = None,
    exact: bool = False,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    kinds: Mapping[str, Kind] | None = None,
    exclude: Sequence[str] = (),
) -> DriftReport:
    """Profile two relations on a spec built from the reference and compare them.

    Args:
        reference: Reference relation.
        current: Current relation.
        columns: Columns to compare (default: every numeric and categorical reference column).
        policy: Decision policy.
        exact: Compute the numeric KS test and Wasserstein distance on the raw values (SciPy).
        bins: Quantile bins per numeric column.
        top_k: Categories tracked per categorical column.
        kinds: Forced kinds per column (see :func:`analytics.profile.build_spec`).
        exclude: Columns left out of the default selection.

    Returns:
        The drift report.
    """
    reference_profile = profile_reference(
        reference, columns, bins=bins, top_k=top_k, kinds=kinds, exclude=exclude, distinct=False
    )
    current_profile = profile(current, reference_profile.spec)
    return drift(reference_profile, current_profile, policy, exact=(reference, current) if exact else None)
