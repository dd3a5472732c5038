"""The timing gate's additions to the driver protocol (`qbench.agent`): the `enqueue_timed`
op and the calibration handicaps, injected at the agent without touching a library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qbench.agent import ENV_HANDICAP_ENQUEUE_US, ProducerAgent, agent_argv, agent_env
from qbench.harness.peers.envs import import_root, python_path
from qbench.harness.peers.registry import resolve


def _producer(url: str, tmp_path: Path, extra: dict[str, str]) -> ProducerAgent:
    spec = resolve("baseline")
    agent = ProducerAgent(
        agent_argv(sys.executable, spec.ref, role="producer", url=url, concurrency=1),
        env=agent_env(
            pythonpath=python_path(import_root(), sys.executable),
            url=url,
            concurrency=1,
            extra={**dict(spec.env), **extra},
        ),
        log=tmp_path / "producer.log",
    )
    agent.start()
    return agent


def test_enqueue_timed_answers_the_producers_cpu_and_wall_time(redis_url: str, tmp_path: Path) -> None:
    agent = _producer(redis_url, tmp_path, {})
    try:
        answer = agent.enqueue_timed(40)
    finally:
        agent.kill()
    assert answer["count"] == 40
    assert answer["cpu_ns"] > 0 and answer["wall_ns"] > 0
    assert answer["seconds"] == answer["wall_ns"] / 1e9


def test_the_enqueue_handicap_burns_at_least_its_cpu_per_call(redis_url: str, tmp_path: Path) -> None:
    agent = _producer(redis_url, tmp_path, {ENV_HANDICAP_ENQUEUE_US: "2000"})
    try:
        answer = agent.enqueue_timed(20)
        again = agent.enqueue_timed(20)  # wrapped once, not twice
    finally:
        agent.kill()
    assert answer["cpu_ns"] >= 20 * 2000 * 1000
    assert again["cpu_ns"] < 2 * 20 * 2000 * 1000


JOB_HANDICAP = """
import os, sys, time
from qbench.agent import install_handicaps
install_handicaps(sys.argv[1])
from qbench.driver import record_pickup
t0 = time.thread_time_ns(); w0 = time.monotonic()
record_pickup(time.time())
print(time.thread_time_ns() - t0, time.monotonic() - w0)
"""


def test_a_workers_job_and_pickup_handicaps_wrap_record_pickup(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    env = {
        **os.environ,
        "QBENCH_SINK": str(sink),
        "QBENCH_HANDICAP_JOB_US": "30000",
        "QBENCH_HANDICAP_PICKUP_MS": "50",
    }
    for role, burned in (("worker", True), ("producer", False)):
        done = subprocess.run(
            [sys.executable, "-c", JOB_HANDICAP, role], env=env, capture_output=True, text=True, check=True
        )
        cpu_ns, wall_s = done.stdout.split()
        assert (int(cpu_ns) >= 29_000_000) is burned
        assert (float(wall_s) >= 0.05 + 0.03) is burned
    assert len(sink.read_text().splitlines()) == 2
