"""The one definition of percentiles and of the spread of repeats (pure Python, no numpy).

Percentile: linear interpolation between the closest ranks, the "linear" method of
`numpy.percentile` (Hyndman & Fan's type 7, also R's default). For the sorted values
x[0] <= ... <= x[n-1] and q in 0..100, the rank is h = (n - 1) * q / 100 and

    percentile(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so p0 is the minimum, p100 the maximum, and p50 the median (the mean of the two middle
values when n is even). A percentile of nothing is an error, never a made-up number.

Ratio intervals (`ratio_interval`): the one confidence interval for "how many times
slower is B than A", from paired rounds. Each round i gives a_i and b_i measured
back to back; d_i = ln(b_i / a_i). The estimate is the Hodges-Lehmann pseudo-median of
the d_i (the median of the n(n+1)/2 Walsh averages (d_i + d_j) / 2, i <= j) and the
interval is the distribution-free one that inverts the Wilcoxon signed-rank test: the
k-th smallest and k-th largest Walsh averages, k from the exact null distribution of
the signed-rank statistic (normal approximation above `EXACT_SIGNED_RANK_MAX_N`
rounds). Both are exponentiated back to a ratio. It assumes only that the d_i are
independent and symmetric about their centre: no normality, robust to the odd
preempted round, deterministic (the same rounds give the same interval, no resampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "RatioInterval",
    "Spread",
    "difference_interval",
    "location_interval",
    "median",
    "median_or_none",
    "percentile",
    "percentiles",
    "ratio_interval",
    "signed_rank_cutoff",
]


def percentiles(values: Iterable[float], qs: Iterable[float]) -> list[float]:
    """The q-th percentile (q in 0..100) of `values` for each q in `qs`; sorts once.

    Raises ValueError when `values` is empty or a q is outside 0..100.
    """
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("percentile of no values")
    return [_interpolate(ordered, q) for q in qs]


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (q in 0..100), linear between the closest ranks."""
    return percentiles(values, (q,))[0]


def median(values: Iterable[float]) -> float:
    """The 50th percentile: the middle value, or the mean of the two middle ones."""
    return percentile(values, 50.0)


def median_or_none(values: Sequence[float]) -> float | None:
    """The median, or None when nothing was measured (a chart's or cell's missing value)."""
    return median(values) if values else None


def _interpolate(ordered: Sequence[float], q: float) -> float:
    if not 0.0 <= q <= 100.0:  # also rejects NaN
        raise ValueError(f"percentile {q!r}: expected 0..100")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """min / median / max of repeated measurements (the report's `median (min..max)`)."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(min(values), median(values), max(values), len(values))

    def fmt(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}..{self.max:.{digits}f})"


# -- ratio intervals from paired rounds ---------------------------------------------------

EXACT_SIGNED_RANK_MAX_N = 80
"""Up to this many rounds the signed-rank null distribution is counted exactly (a few
ms); above it the normal approximation with continuity correction is within one rank."""

RATIO_METHOD = "Hodges-Lehmann, Wilcoxon signed-rank interval on paired log ratios"


@dataclass(frozen=True, slots=True)
class RatioInterval:
    """B/A with its confidence interval: `lo <= estimate <= hi`, all ratios (1.0 = no change)."""

    estimate: float
    lo: float
    hi: float
    confidence: float
    """The interval's coverage: at least the confidence asked for (the exact method steps
    in whole ranks), less only when there were too few rounds to reach it (< 6 for 95%)."""
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width on the log scale, as a fraction (0.01: about +-1%)."""
        return math.expm1((math.log(self.hi) - math.log(self.lo)) / 2)

    @property
    def level(self) -> str:
        """The coverage as a whole percentage, rounded down: `95%` (or `75%` for 3 rounds)."""
        return f"{math.floor(self.confidence * 100 + 1e-9)}%"

    def fmt(self, digits: int = 2, suffix: str = "x") -> str:
        bounds = f"{self.lo:.{digits}f}..{self.hi:.{digits}f}"
        return f"{self.estimate:.{digits}f}{suffix} ({self.level} CI {bounds}, n={self.n})"


def signed_rank_cutoff(n: int, confidence: float) -> tuple[int, float]:
    """(k, coverage): the interval runs from the k-th smallest to the k-th largest Walsh
    average (1-based), and covers the centre with probability `coverage`.

    k is the largest with P(T <= k - 1) <= (1 - confidence) / 2, T the Wilcoxon
    signed-rank statistic of n paired differences under the null (each rank's sign a
    fair coin); coverage = 1 - 2 P(T <= k - 1) >= confidence, exactly. Below 6 rounds no
    95% interval exists: k is then 1 (the whole range) and coverage says what it is.
    """
    if n < 1:
        raise ValueError("no rounds")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r}: expected 0 < c < 1")
    alpha_half = (1 - confidence) / 2
    total = n * (n + 1) // 2
    if n > EXACT_SIGNED_RANK_MAX_N:
        mean = total / 2
        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        z = NormalDist().inv_cdf(alpha_half)
        k = max(1, math.floor(mean + z * sd + 0.5))
        below = NormalDist(mean, sd).cdf(k - 0.5)
        return k, 1 - 2 * below
    # counts[t]: subsets of the ranks 1..n whose sum is t (the generating function
    # prod (1 + x^r)); P(T = t) = counts[t] / 2^n.
    counts = [1] + [0] * total
    for rank in range(1, n + 1):
        for t in range(total, rank - 1, -1):
            counts[t] += counts[t - rank]
    limit = alpha_half * 2**n
    cumulative = 0
    k = 0
    while k <= total and cumulative + counts[k] <= limit:
        cumulative += counts[k]
        k += 1
    if k == 0:  # too few rounds for this confidence: the whole range, and its true coverage
        return 1, 1 - 2 * counts[0] / 2**n
    # P(T <= k - 1) <= alpha/2 < P(T <= k).
    return k, 1 - 2 * cumulative / 2**n


def ratio_interval(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> RatioInterval:
    """B/A from paired rounds (a[i] and b[i] measured back to back), with its interval.

    Values must be positive costs (ns per operation, say). See the module docstring for
    the method. Raises ValueError for unpaired or non-positive input.
    """
    _check_paired(a, b)
    if min(a) <= 0 or min(b) <= 0:
        raise ValueError("ratios need positive values")
    d = [math.log(y) - math.log(x) for x, y in zip(a, b, strict=True)]
    estimate, lo, hi, coverage = location_interval(d, confidence)
    return RatioInterval(math.exp(estimate), math.exp(lo), math.exp(hi), coverage, len(d))


def difference_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """B - A from paired rounds: (estimate, lo, hi, coverage), the same method on plain
    differences (for a saving in ns, where a ratio is not the question)."""
    _check_paired(a, b)
    return location_interval([y - x for x, y in zip(a, b, strict=True)], confidence)


def _check_paired(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"unpaired rounds: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no rounds")


def location_interval(d: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(estimate, lo, hi, coverage): the Hodges-Lehmann estimate of the centre of `d` (its
    pseudo-median) and the signed-rank interval around it (see the module docstring)."""
    if not d:
        raise ValueError("no values")
    n = len(d)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    k, coverage = signed_rank_cutoff(n, confidence)
    return median(walsh), walsh[k - 1], walsh[len(walsh) - k], coverage
