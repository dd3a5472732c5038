"""Paired per-round rows read back: B/A ratios with intervals from a saved run's metrics.csv.

An interleaved comparison (`qbench.harness.timing.interleave`) stores one row per side,
round and measure (`repeat` = round), never the ratio: whoever reads the run (a report,
the timing gate's verdicts, the history) recomputes the ratio and its interval from
these rows, so a saved run re-renders the same interval. Reading rows measures nothing,
so it lives here, below the packages that measure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from qbench.harness.results.rows import Row
from qbench.harness.results.stats import RatioInterval, ratio_interval

Measure = Literal["cpu", "wall", "server_cpu"]
MEASURES: tuple[Measure, ...] = ("cpu", "wall", "server_cpu")
METRIC_OF: dict[Measure, str] = {
    "cpu": "cpu_ns_per_op",
    "wall": "wall_ns_per_op",
    "server_cpu": "server_cpu_ns_per_op",
}
"""Row metric of each measure (all in ns per operation)."""


def paired_values(
    rows: Iterable[Row], *, metric: str, a: tuple[str, str], b: tuple[str, str]
) -> tuple[list[float], list[float]]:
    """Values of `metric` for (variant, params) `a` and `b`, paired by repeat (round)."""
    by_a: dict[int, float] = {}
    by_b: dict[int, float] = {}
    for row in rows:
        if row.metric != metric:
            continue
        if (row.variant, row.params) == a:
            by_a[row.repeat] = row.value
        elif (row.variant, row.params) == b:
            by_b[row.repeat] = row.value
    common = sorted(by_a.keys() & by_b.keys())
    return [by_a[k] for k in common], [by_b[k] for k in common]


def ratio_from_rows(
    rows: Iterable[Row],
    *,
    metric: str,
    a: tuple[str, str],
    b: tuple[str, str],
    confidence: float = 0.95,
) -> RatioInterval | None:
    """B/A with its interval from saved per-round rows; None when fewer than 2 paired rounds."""
    va, vb = paired_values(rows, metric=metric, a=a, b=b)
    if len(va) < 2 or min(va + vb) <= 0:
        return None
    return ratio_interval(va, vb, confidence=confidence)
