"""Key building: the keys one job's life touches, built per use or precomputed."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from qbench.queue_impl.config import KeyMode
from qbench.queue_impl.job import PRIORITY_ORDER
from qbench.queue_impl.keys import KeyBuilder, make_keys

KEY_MODES: tuple[KeyMode, ...] = ("format", "precomputed")
JOB_ID = "0123456789abcdef0123456789abcdef"
CONSUMER = "bench-host-1234-abcdef01"


def lifecycle_keys(keys: KeyBuilder) -> list[str]:
    """Enqueue, dequeue (every priority), complete: the keys each step names."""
    built = [keys.job(JOB_ID), keys.queue(PRIORITY_ORDER[1]), keys.marker()]
    built += [keys.queue(p) for p in PRIORITY_ORDER]
    built += [keys.processing(CONSUMER), keys.job(JOB_ID), keys.processing(CONSUMER)]
    return built


@pytest.mark.benchmark(group="key_building")
@pytest.mark.parametrize("keys_mode", KEY_MODES)
def test_key_building(benchmark: BenchmarkFixture, keys_mode: KeyMode) -> None:
    keys = make_keys(keys_mode, "bench")
    built = benchmark(lifecycle_keys, keys)
    assert built == lifecycle_keys(make_keys("format", "bench"))
    benchmark.extra_info["keys_per_op"] = len(built)
