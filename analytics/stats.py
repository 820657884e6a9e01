"""Distribution-distance statistics on counts and on raw samples.

Everything here is a pure function of NumPy arrays; nothing reads data. Two families:

* **Binned** statistics compare two count vectors over the same bins (numeric histograms from a
  :class:`~analytics.profile.Profile`, or category counts): PSI, Jensen-Shannon distance, Hellinger
  distance, total variation, the Kolmogorov-Smirnov statistic of the binned CDFs (with its error
  bound) and a piecewise-uniform Wasserstein-1 distance; Pearson's chi-square test of homogeneity.
* **Exact** statistics on raw samples (``ks_exact``, ``wasserstein_exact``) delegate to SciPy and are
  only used on request (they need the raw values).

Each binned statistic also has a ``*_rows`` form comparing one reference with every row of a matrix of
current counts (the windows or slices of a monitoring run) in one NumPy pass; the one-pair function is
its first row, so the two cannot disagree.

p-values of the default path come from :func:`kolmogorov_sf` and :func:`chi2_sf`, plain-Python series
equal to SciPy's ``scipy.special.kolmogorov`` and ``chdtrc`` to about 1e-13 relative: importing
``scipy.special`` costs about 0.3 s of CPU, as much as profiling a million rows, on every run of the
drift command and of the monitoring job (:mod:`scipy.stats` costs about a second).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Floor applied to empty bin proportions in PSI (zero bins would make it infinite). Both
#: proportions are floored, so a bin empty on both sides contributes exactly zero.
PSI_EPSILON = 1e-4

FloatArray = np.ndarray


Counts = Sequence[float] | np.ndarray
"""Counts per bin: one vector, or a matrix with one row of counts per current distribution."""


def _proportion_rows(counts: Counts) -> np.ndarray:
    """Each row of counts divided by its total, as a 2-D array (a vector becomes one row)."""
    values = np.asarray(counts, dtype=float)
    if values.ndim == 1:
        values = values[None, :]
    totals = values.sum(axis=1, keepdims=True)
    if not (totals > 0).all():
        raise ValueError("cannot compare an empty distribution (all counts are zero)")
    return values / totals


def _aligned_rows(reference: Counts, currents: Counts) -> tuple[np.ndarray, np.ndarray]:
    """Reference proportions (one row) and current proportions (one row per current), same bins."""
    p = _proportion_rows(reference)
    q = _proportion_rows(currents)
    if p.shape[0] != 1:
        raise ValueError(f"one reference count vector expected, got {p.shape[0]} rows")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"count vectors differ in length: {p.shape[1]} vs {q.shape[1]}")
    return p, q


def _cdf_rows(proportions: np.ndarray) -> np.ndarray:
    """Cumulative proportions at every bin edge, 0 first, one row per distribution."""
    return np.concatenate([np.zeros((proportions.shape[0], 1)), np.cumsum(proportions, axis=1)], axis=1)


def distances_rows(reference: Counts, currents: Counts) -> dict[str, np.ndarray]:
    """PSI, Jensen-Shannon, Hellinger and total variation of one reference against every row of
    ``currents`` (keys ``psi``, ``jensenshannon``, ``hellinger``, ``total_variation``)."""
    p, q = _aligned_rows(reference, currents)
    return {
        "psi": _psi(p, q),
        "jensenshannon": _jensen_shannon(p, q),
        "hellinger": _hellinger(p, q),
        "total_variation": _total_variation(p, q),
    }


def psi_rows(reference: Counts, currents: Counts) -> np.ndarray:
    """:func:`psi` of one reference against every row of ``currents``."""
    return _psi(*_aligned_rows(reference, currents))


def _psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.maximum(p, PSI_EPSILON)
    q = np.maximum(q, PSI_EPSILON)
    return np.sum((q - p) * np.log(q / p), axis=1)


def psi(reference: Counts, current: Counts) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` over the bins.

    Proportions below :data:`PSI_EPSILON` are raised to it (on both sides) so empty bins stay finite.

    Args:
        reference: Reference counts per bin.
        current: Current counts per bin (same bins).

    Returns:
        The PSI (natural log), ``>= 0``.
    """
    return float(psi_rows(reference, current)[0])


def jensen_shannon_rows(reference: Counts, currents: Counts) -> np.ndarray:
    """:func:`jensen_shannon` of one reference against every row of ``currents``."""
    return _jensen_shannon(*_aligned_rows(reference, currents))


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)
    divergence = np.zeros(q.shape[0])
    # Empty bins add nothing (0 log 0 = 0); where() keeps their NaN/inf terms out of the sums.
    with np.errstate(divide="ignore", invalid="ignore"):
        for side in (p, q):
            terms = np.where(side > 0, side * np.log2(side / m), 0.0)
            divergence = divergence + 0.5 * np.sum(terms, axis=1)
    return np.sqrt(np.maximum(divergence, 0.0))


def jensen_shannon(reference: Counts, current: Counts) -> float:
    """Jensen-Shannon *distance* (square root of the divergence), base 2, in ``[0, 1]``.

    Equals ``scipy.spatial.distance.jensenshannon(reference, current, base=2)``.
    """
    return float(jensen_shannon_rows(reference, current)[0])


def hellinger_rows(reference: Counts, currents: Counts) -> np.ndarray:
    """:func:`hellinger` of one reference against every row of ``currents``."""
    return _hellinger(*_aligned_rows(reference, currents))


def _hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1))


def hellinger(reference: Counts, current: Counts) -> float:
    """Hellinger distance ``sqrt(1/2 * sum((sqrt(p) - sqrt(q))^2))`` in ``[0, 1]``."""
    return float(hellinger_rows(reference, current)[0])


def total_variation_rows(reference: Counts, currents: Counts) -> np.ndarray:
    """:func:`total_variation` of one reference against every row of ``currents``."""
    return _total_variation(*_aligned_rows(reference, currents))


def _total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.sum(np.abs(p - q), axis=1)


def total_variation(reference: Counts, current: Counts) -> float:
    """Total variation distance ``1/2 * sum(|p - q|)`` in ``[0, 1]``."""
    return float(total_variation_rows(reference, current)[0])


@dataclass(frozen=True)
class BinnedKS:
    """Kolmogorov-Smirnov statistic of two binned CDFs.

    Attributes:
        statistic: ``max |F_ref - F_cur|`` over the bin edges. The CDFs are exact at the edges, so this
            is a lower bound of the exact two-sample statistic of the underlying values.
        upper_bound: Upper bound of the exact statistic: inside bin ``i`` both CDFs stay between their
            values at the bin's edges, so ``|F_ref - F_cur| <= max(|P_i - Q_{i-1}|, |P_{i-1} - Q_i|)``.
        error_bound: ``upper_bound - statistic``: how far the exact statistic can lie above the binned
            one (at most the largest single-bin mass of either side).
    """

    statistic: float
    upper_bound: float
    error_bound: float


def ks_binned_rows(reference: Counts, currents: Counts) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ks_binned` of one reference against every row of ``currents``.

    Returns:
        ``(statistics, upper_bounds)``, one value per row of ``currents``.
    """
    p, q = _aligned_rows(reference, currents)
    cdf_p, cdf_q = _cdf_rows(p), _cdf_rows(q)
    cdf_p[:, -1] = cdf_q[:, -1] = 1.0
    statistic = np.max(np.abs(cdf_p - cdf_q), axis=1)
    upper = np.maximum(
        np.maximum(
            np.max(np.abs(cdf_p[:, 1:] - cdf_q[:, :-1]), axis=1),
            np.max(np.abs(cdf_p[:, :-1] - cdf_q[:, 1:]), axis=1),
        ),
        statistic,
    )
    return statistic, np.minimum(upper, 1.0)


def ks_binned(reference: Counts, current: Counts) -> BinnedKS:
    """Kolmogorov-Smirnov statistic from two histograms on the same (ordered) bins.

    Args:
        reference: Reference counts per bin, bins in increasing order.
        current: Current counts per bin.

    Returns:
        The binned statistic with its bound on the exact statistic.
    """
    statistics, uppers = ks_binned_rows(reference, current)
    statistic, upper = float(statistics[0]), float(uppers[0])
    return BinnedKS(statistic, upper, upper - statistic)


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic.

    Uses the Kolmogorov distribution at ``D * (sqrt(en) + 0.12 + 0.11 / sqrt(en))`` with
    ``en = n*m/(n+m)`` (Stephens' small-sample correction). For a binned statistic, which can only
    under-estimate the exact one, the p-value is conservative.
    """
    if n_reference <= 0 or n_current <= 0:
        raise ValueError("KS p-value needs two non-empty samples")
    en = n_reference * n_current / (n_reference + n_current)
    root = math.sqrt(en)
    return float(min(1.0, max(0.0, kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic))))


def kolmogorov_sf(y: float) -> float:
    """Survival function of the Kolmogorov distribution, ``P(K > y)`` (SciPy's ``special.kolmogorov``).

    ``2 * sum((-1)**(k-1) * exp(-2 k**2 y**2))`` for ``y >= 1``, where it converges in a few terms;
    below, one minus the Jacobi-theta form of the CDF, ``sqrt(2 pi) / y * sum(exp(-(2k-1)**2 pi**2 /
    (8 y**2)))``, which converges as fast there.
    """
    if math.isnan(y):
        return math.nan
    if y <= 0:
        return 1.0
    if y < 1.0:
        exponent = math.pi * math.pi / (8.0 * y * y)
        total = 0.0
        for k in range(1, 100):
            term = math.exp(-((2 * k - 1) ** 2) * exponent)
            total += term
            if term <= 1e-17 * total:
                break
        return 1.0 - math.sqrt(2.0 * math.pi) / y * total
    total = 0.0
    for k in range(1, 100):
        term = math.exp(-2.0 * k * k * y * y)
        total += term if k % 2 else -term
        if term <= 1e-17 * abs(total):
            break
    return min(1.0, max(0.0, 2.0 * total))


def chi2_sf(dof: float, statistic: float) -> float:
    """Upper tail of the chi-square distribution (SciPy's ``special.chdtrc``).

    The regularized upper incomplete gamma function ``Q(dof / 2, statistic / 2)``: the power series of
    its complement below ``a + 1``, Lentz's continued fraction above (Numerical Recipes 6.2), both to
    double precision.
    """
    if math.isnan(statistic) or math.isnan(dof) or dof <= 0:
        return math.nan
    a, x = dof / 2.0, statistic / 2.0
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(100_000):
            denominator += 1.0
            term *= x / denominator
            total += term
            if term < total * 1e-17:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_prefix)))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    fraction = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        fraction *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, max(0.0, math.exp(log_prefix) * fraction))


@dataclass(frozen=True)
class ChiSquare:
    """Pearson's chi-square test of homogeneity of two count vectors.

    Attributes:
        statistic: Chi-square statistic (no continuity correction).
        p_value: Upper-tail probability of the chi-square distribution with ``dof`` degrees of freedom.
        dof: Degrees of freedom (cells used minus one).
        cells: Number of cells (categories) the test used after pooling sparse ones.
    """

    statistic: float
    p_value: float
    dof: int
    cells: int


def chi_square(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    min_expected: float = 0.0,
) -> ChiSquare:
    """Chi-square test that two count vectors come from the same categorical distribution.

    Cells empty on both sides are dropped. With ``min_expected > 0``, cells whose smallest expected
    count is below it are pooled into one cell first (Cochran's rule; the pooling depends only on the
    pooled counts, so it does not look at the difference being tested). With ``min_expected=0`` the
    result equals ``scipy.stats.chi2_contingency([reference, current], correction=False)`` on the
    non-empty cells.

    Args:
        reference: Reference counts per category.
        current: Current counts per category (same categories).
        min_expected: Pool cells whose expected count is below this.

    Returns:
        The test result.

    Raises:
        ValueError: if either side is empty.
    """
    table = np.vstack([np.asarray(reference, dtype=float), np.asarray(current, dtype=float)])
    rows = table.sum(axis=1)
    if not (rows[0] > 0 and rows[1] > 0):
        raise ValueError("chi-square needs two non-empty samples")
    table = table[:, table.sum(axis=0) > 0]
    if min_expected > 0 and table.shape[1] > 1:
        expected_min = table.sum(axis=0) * rows.min() / rows.sum()
        sparse = expected_min < min_expected
        if sparse.any():
            pooled = table[:, sparse].sum(axis=1, keepdims=True)
            table = np.hstack([table[:, ~sparse], pooled])
    cells = table.shape[1]
    if cells < 2:
        return ChiSquare(0.0, 1.0, 0, cells)
    expected = np.outer(rows, table.sum(axis=0)) / rows.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = cells - 1
    return ChiSquare(statistic, chi2_sf(dof, statistic), dof, cells)


def wasserstein_binned(
    edges: Sequence[float] | np.ndarray, reference: Counts, current: Counts, *, low: float, high: float
) -> float:
    """Wasserstein-1 distance between two histograms, each bin's mass spread uniformly over it.

    The histogram has ``len(edges) + 1`` bins: ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``. The two
    open outer bins are closed at ``low`` and ``high`` (the smallest and largest finite value of either
    sample), so their mass is spread over ``[low, e0]`` and ``[e_last, high]``. Between consecutive
    knots both CDFs are linear, so ``integral |F_ref - F_cur|`` is computed exactly (sign changes
    included).

    Args:
        edges: Increasing finite bin edges.
        reference: Reference counts (finite values only), ``len(edges) + 1`` of them.
        current: Current counts on the same bins.
        low: Smallest finite value of the two samples.
        high: Largest finite value of the two samples.

    Returns:
        The distance, in the unit of the values.
    """
    return float(wasserstein_binned_rows(edges, reference, current, low=low, high=high)[0])


def wasserstein_binned_rows(
    edges: Sequence[float] | np.ndarray,
    reference: Counts,
    currents: Counts,
    *,
    low: Sequence[float] | np.ndarray | float,
    high: Sequence[float] | np.ndarray | float,
) -> np.ndarray:
    """:func:`wasserstein_binned` of one reference against every row of ``currents``.

    ``low`` and ``high`` close the outer bins of each row (one value per row, or one for all).
    """
    p, q = _aligned_rows(reference, currents)
    edges = np.asarray(edges, dtype=float)
    if p.shape[1] != edges.shape[0] + 1:
        raise ValueError(f"{p.shape[1]} counts do not fit {edges.shape[0]} edges (need len(edges) + 1)")
    lows, highs = _per_row(low, q.shape[0]), _per_row(high, q.shape[0])
    knots = np.empty((q.shape[0], edges.size + 2))
    if edges.size == 0:
        knots[:, 0], knots[:, 1] = lows, np.maximum(highs, lows)
    else:
        knots[:, 1:-1] = edges
        knots[:, 0], knots[:, -1] = np.minimum(lows, edges[0]), np.maximum(highs, edges[-1])
    # CDF values at the knots; an outer bin whose value range is empty (low == e0) puts its mass at
    # the edge, which the zero-width segment represents as a jump.
    diff = _cdf_rows(p) - _cdf_rows(q)
    with np.errstate(over="ignore"):
        widths = np.diff(knots, axis=1)
    left, right = diff[:, :-1], diff[:, 1:]
    same_sign = left * right >= 0
    with np.errstate(invalid="ignore", over="ignore"):
        area = np.where(
            same_sign,
            0.5 * widths * np.abs(left + right),
            # Linear crossing zero inside the segment: two triangles.
            0.5 * widths * (left**2 + right**2) / np.where(same_sign, 1.0, np.abs(left) + np.abs(right)),
        )
    # A zero CDF gap over an unbounded-looking span (edges at +-1e308 overflow to an infinite width)
    # contributes nothing, not NaN.
    area = np.where((left == 0) & (right == 0), 0.0, area)
    return np.sum(area, axis=1)


def tail_extents(
    edges: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray, *, low: float, high: float
) -> tuple[float, float]:
    """Where to close the two open outer bins of one histogram for :func:`wasserstein_binned`.

    A histogram knows how much mass lies beyond its outer edges, not how far: spreading it uniformly up
    to the most extreme value lets one outlier decide the distance. Instead the tail beyond the last
    edge is taken as exponential, its mean excess ``beta`` read off the decay between the last two
    bins (``beta = width / ln(S_prev / S_last)`` with ``S`` the mass beyond each edge), and the bin
    closed at ``edge + 2 * beta`` so that the uniform spread has the exponential tail's mean; never
    beyond the observed extreme. A tail that does not decay (all of it beyond the edge, e.g. a large
    shift) keeps the observed extreme. An empty outer bin does not constrain anything and returns its
    edge.

    Args:
        edges: Increasing finite bin edges.
        counts: Finite-value counts per bin, ``len(edges) + 1``.
        low: Smallest finite value.
        high: Largest finite value.

    Returns:
        ``(lower extent, upper extent)``.
    """
    if np.asarray(edges).size < 2:
        return low, high
    lower, upper = tail_extents_rows(edges, counts, low=low, high=high)
    return float(lower[0]), float(upper[0])


def _per_row(value: Sequence[float] | np.ndarray | float, rows: int) -> np.ndarray:
    """One float per row: ``value`` itself when it has one per row, else repeated."""
    values = np.asarray(value, dtype=float)
    return values if values.shape == (rows,) else np.full(rows, values)


def tail_extents_rows(
    edges: Sequence[float] | np.ndarray,
    counts: Counts,
    *,
    low: Sequence[float] | np.ndarray | float,
    high: Sequence[float] | np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tail_extents` of every row of ``counts`` (``low``/``high``: one value per row).

    Returns:
        ``(lower extents, upper extents)``, one value per row.
    """
    values = np.atleast_2d(np.asarray(counts, dtype=float))
    edges = np.asarray(edges, dtype=float)
    lows, highs = _per_row(low, values.shape[0]), _per_row(high, values.shape[0])
    if edges.size < 2:
        return lows, highs

    def extent(
        beyond: np.ndarray, beyond_previous: np.ndarray, width: float, edge: float, extreme: np.ndarray
    ) -> np.ndarray:
        # Rows whose tail is empty or does not decay take another branch; their beta is unused.
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = width / np.log(beyond_previous / beyond)
            fitted = edge + np.copysign(np.minimum(2 * beta, np.abs(extreme - edge)), extreme - edge)
        decays = (beyond_previous > beyond) & (width > 0)
        return np.where(beyond <= 0, edge, np.where(decays, fitted, extreme))

    upper = extent(values[:, -1], values[:, -1] + values[:, -2], edges[-1] - edges[-2], edges[-1], highs)
    lower = extent(values[:, 0], values[:, 0] + values[:, 1], edges[1] - edges[0], edges[0], lows)
    return lower, upper


def wasserstein_exact(reference: np.ndarray, current: np.ndarray) -> float:
    """Exact Wasserstein-1 distance of two samples (``scipy.stats.wasserstein_distance``)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(reference, current))


@dataclass(frozen=True)
class ExactKS:
    """Exact two-sample KS result from ``scipy.stats.ks_2samp``."""

    statistic: float
    p_value: float


def ks_exact(reference: np.ndarray, current: np.ndarray) -> ExactKS:
    """Two-sample Kolmogorov-Smirnov test on raw values (``scipy.stats.ks_2samp``, method ``auto``)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, current)
    return ExactKS(float(result.statistic), float(result.pvalue))


def adjust_pvalues(p_values: Sequence[float], method: str) -> list[float]:
    """Multiple-testing adjustment across columns.

    Args:
        p_values: Raw p-values.
        method: ``"bh"`` (Benjamini-Hochberg step-up, controls the false discovery rate),
            ``"bonferroni"`` (family-wise error rate) or ``"none"``.

    Returns:
        Adjusted p-values in the input order, capped at 1.

    Raises:
        ValueError: on an unknown method or a p-value outside ``[0, 1]`` or NaN.
    """
    values = np.asarray(p_values, dtype=float)
    if values.size and not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"p-values must lie in [0, 1]: {values.tolist()}")
    n = values.size
    if method == "none" or n == 0:
        return values.tolist()
    if method == "bonferroni":
        return np.minimum(values * n, 1.0).tolist()
    if method == "bh":
        order = np.argsort(values, kind="stable")
        ranked = values[order] * n / np.arange(1, n + 1)
        # Step-up: the adjusted value of rank i is the minimum over ranks >= i.
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        adjusted = np.empty(n)
        adjusted[order] = np.minimum(ranked, 1.0)
        return adjusted.tolist()
    raise ValueError(f"unknown multiple-testing correction {method!r} (use bh, bonferroni or none)")
