"""The one percentile definition: linear between the closest ranks (numpy's default)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qbench.harness.results.stats import Spread, median, median_or_none, percentile, percentiles


def test_percentile_is_linear_between_closest_ranks() -> None:
    # Sorted 1, 2, 3, 4: rank h = 3q/100, value 1 + h.
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentiles(values, (0, 25, 50, 90, 100)) == pytest.approx([1.0, 1.75, 2.5, 3.7, 4.0])
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([7.0], 99.9) == 7.0
    # 1..100: p50 falls between 50 and 51, p99 just above 99 (nearest rank would say 50 and 99).
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 50) == pytest.approx(50.5)
    assert percentile(hundred, 99) == pytest.approx(99.01)
    assert percentile(hundred, 100) == 100.0


def test_median_is_the_middle_or_the_mean_of_the_two_middle_values() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median_or_none([]) is None
    assert median_or_none([5.0, 1.0]) == 3.0


def test_matches_numpy_default_method() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.expovariate(1.0) for _ in range(n)]
        qs = (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0)
        assert percentiles(values, qs) == pytest.approx([float(np.percentile(values, q)) for q in qs])


@pytest.mark.parametrize("q", [-1.0, 100.5, float("nan")])
def test_bad_input_raises(q: float) -> None:
    with pytest.raises(ValueError, match=r"expected 0\.\.100"):
        percentile([1.0, 2.0], q)


def test_nothing_measured_is_an_error_not_a_number() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="no values"):
        Spread.of([])


def test_spread() -> None:
    spread = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert spread == Spread(1.0, 2.5, 10.0, 4)
    assert spread.fmt(1) == "2.5 (1.0..10.0)"
