"""Benchmarks run for real under `make bench` (--benchmark-only); in `make test` each runs once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from qbench.harness.infra.measured import MeasuredQueue
from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from tests.conftest import fast

OVERRIDES_ENV = "QBENCH_BENCH_OVERRIDES"
"""`toggle=value,...` applied to every preset: benchmark a toggle change against saved runs."""


@pytest.fixture
def benchmark(benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> BenchmarkFixture:
    """The plugin's fixture, disabled (one plain call: a smoke pass) unless asked to measure."""
    config = request.config
    if not (config.getoption("benchmark_only") or config.getoption("benchmark_enable")):
        benchmark.disabled = True
    return benchmark


def bench_variant(preset: str) -> Variant:
    overrides = os.environ.get(OVERRIDES_ENV, "").strip()
    variant = parse_variant(f"{preset}+{overrides}") if overrides else PRESETS[preset]
    # Short waits: a benchmark never waits on an empty queue, they only bound a mistake.
    return fast(variant)


@pytest.fixture
def measured(redis_url: str, request: pytest.FixtureRequest) -> Iterator[MeasuredQueue]:
    """A counted queue for the test's `preset` param, warmed up (`MeasuredQueue.warm_up`)."""
    preset = request.node.callspec.params["preset"]
    with MeasuredQueue(redis_url, bench_variant(preset)) as mq:
        mq.warm_up()
        yield mq
