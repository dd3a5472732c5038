"""The one definition of percentiles and of the spread of repeats (pure Python, no numpy).

Percentile: linear interpolation between the closest ranks, the "linear" method of
`numpy.percentile` (Hyndman & Fan's type 7, also R's default). For the sorted values
x[0] <= ... <= x[n-1] and q in 0..100, the rank is h = (n - 1) * q / 100 and

    percentile(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so p0 is the minimum, p100 the maximum, and p50 the median (the mean of the two middle
values when n is even). A percentile of nothing is an error, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Spread", "median", "median_or_none", "percentile", "percentiles"]


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
