"""A side of a driver gate (`experiments/driver_sides.py`) on a real redis-server it starts."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from qbench.harness.experiments.driver_sides import PICKUP_WARMUP, DriverSide, Sizes
from qbench.harness.infra.redis_server import redis_for_run
from qbench.harness.peers.envs import import_root
from qbench.harness.peers.registry import resolve

SIZES = Sizes(jobs=20, concurrency=1, pickup_probes=2, pickup_gap_s=0.005, stall_s=30.0)


def _gate_once(work_dir: Path, root: Path) -> tuple[int, int, int]:
    """One side started, one round, closed: (pickup lines its sink counted, jobs the side
    sent, samples its sink holds of jobs sent before this side started)."""
    spec = resolve("baseline")
    started_us = time.time() * 1e6
    with redis_for_run(None, use_docker=False) as server:
        side = DriverSide(
            label="base",
            name="baseline",
            ref=spec.ref,
            python=sys.executable,
            server=server,
            import_root=root,
            work_dir=work_dir,
            sizes=SIZES,
            cpu=None,
            env=dict(spec.env),
        )
        try:
            side.start()
            assert side.sink is not None
            side.run_round()
            count = side.sink.count()
            samples = list(side.sink.samples)
            handled = side.handled
        finally:
            side.close()
    return count, handled, sum(1 for sent_us, _ in samples if sent_us < started_us)


def test_a_second_gate_in_the_same_work_dir_counts_only_its_own_pickups(tmp_path: Path) -> None:
    # A calibration runs many gates in one work folder. The sink file of the first gate was
    # read again from its start by the second gate's sink: its drains "finished" at once on
    # the first gate's lines, and its rates and pickups repeated the first gate's.
    root = import_root()
    try:
        first = _gate_once(tmp_path, root)
        second = _gate_once(tmp_path, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_gate = PICKUP_WARMUP + SIZES.jobs + SIZES.pickup_probes
    assert first == (per_gate, per_gate, 0)
    assert second == (per_gate, per_gate, 0)
