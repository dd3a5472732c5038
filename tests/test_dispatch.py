"""dispatch=process: a bounded prefetch, batched acknowledgements, a quiet idle pool, a clean stop."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from qbench.harness.infra.counting import command_stats, stats_delta
from qbench.queue_impl.config import Variant, parse_variant
from qbench.queue_impl.job import Job, Status
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.worker import WorkerPool
from tests.conftest import QueueFactory, fast

pytestmark = pytest.mark.slow

PROCESS = "scripted"
"""scripted: dispatch=process, prefetch, ack=batch, conn=pinned (each test runs with every
value of the pickup path's toggles too: `pickup_path`)."""

PICKUP_PATHS = (
    "handoff=broadcast,wait_claim=apart,beat=pool,orphan_scan=always",
    "handoff=targeted,wait_claim=pipelined,beat=kept,orphan_scan=after_reconnect",
)


@pytest.fixture(autouse=True, params=PICKUP_PATHS, ids=["broadcast", "targeted"])
def pickup_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test of this module under both pickup paths (whom a pool wakes, when it claims)."""
    monkeypatch.setattr(sys.modules[__name__], "PROCESS", f"scripted+{request.param}")
    return str(request.param)


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def variant(overrides: str = "") -> Variant:
    return fast(parse_variant(f"{PROCESS},{overrides}" if overrides else PROCESS))


class Gate:
    """A handler that blocks until released, counting the jobs it started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.started.append(job.id)
        assert self.release.wait(20)


def held(queue: RedisQueue) -> int:
    return queue.stats().processing


def test_a_pool_holds_its_busy_threads_plus_the_prefetch_and_no_more(make_queue: QueueFactory) -> None:
    queue = make_queue(variant("prefetch=3"), workers=2)
    gate = Gate()
    queue.enqueue_many([Job(type="gate") for _ in range(20)])
    pool = WorkerPool(queue, {"gate": gate}, concurrency=2, job_timeout_s=None)
    pool.start()
    try:
        wait_for(lambda: len(gate.started) == 2 and held(queue) == 5)
        time.sleep(0.3)  # nothing more is claimed while the threads are busy
        assert (len(gate.started), held(queue), queue.stats().queued["normal"]) == (2, 5, 15)
    finally:
        gate.release.set()
        wait_for(lambda: pool.counters.completed == 20)
        pool.stop()
    assert sorted(gate.started) == sorted(set(gate.started)) and len(gate.started) == 20


def test_a_stop_hands_the_unstarted_prefetch_back_and_runs_nothing_more(make_queue: QueueFactory) -> None:
    queue = make_queue(variant("prefetch=4"), workers=1)
    gate = Gate()
    ids = queue.enqueue_many([Job(type="gate") for _ in range(10)])
    pool = WorkerPool(queue, {"gate": gate}, concurrency=1, job_timeout_s=None)
    pool.start()
    wait_for(lambda: len(gate.started) == 1 and held(queue) == 5)
    stopper = threading.Thread(target=lambda: returned.append(pool.stop(timeout_s=20)))
    returned: list[int] = []
    stopper.start()
    time.sleep(0.2)
    gate.release.set()  # the running job finishes and is acknowledged; the 4 others go back
    stopper.join(30)
    assert returned == [4]
    assert gate.started == [ids[0]]
    stats = queue.stats()
    assert (stats.processing, stats.queued["normal"], stats.consumers) == (0, 9, 0)
    assert queue.get_job(ids[0]).status is Status.COMPLETED  # type: ignore[union-attr]
    assert {queue.get_job(i).status for i in ids[1:]} == {Status.QUEUED}  # type: ignore[union-attr]


def test_completions_that_pile_up_go_back_in_one_round_trip(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(variant("prefetch=0"), workers=8)
    first_ack = threading.Event()
    release = threading.Event()
    batches: list[int] = []
    real = queue.complete_many

    def complete_many(jobs: Sequence[Job]) -> int:
        batches.append(len(jobs))
        first_ack.set()
        if len(batches) == 1:
            assert release.wait(20)  # completions pile up meanwhile
        return real(jobs)

    monkeypatch.setattr(queue, "complete_many", complete_many)
    pool = WorkerPool(queue, {"noop": lambda job: None}, concurrency=8, job_timeout_s=None)
    pool.start()
    try:
        queue.enqueue(Job(type="noop"))
        assert first_ack.wait(20)
        queue.enqueue_many([Job(type="noop") for _ in range(30)])
        wait_for(lambda: pool.counters.completed == 0 and held(queue) == 31)
        release.set()
        wait_for(lambda: pool.counters.completed == 31)
    finally:
        release.set()
        pool.stop()
    # One alone, then the 30 that finished while it was on its way, together.
    assert batches == [1, 30]
    assert held(queue) == 0


def test_an_idle_pool_sends_nothing_between_its_waits(make_queue: QueueFactory, raw_client: object) -> None:
    queue = make_queue(variant().with_overrides(notify_timeout_s=30), workers=10)
    pool = WorkerPool(queue, {"noop": lambda job: None}, concurrency=10, heartbeat_interval_s=60, lease_s=180)
    pool.start()
    try:
        queue.enqueue(Job(type="noop"))
        wait_for(lambda: pool.counters.completed == 1)
        time.sleep(0.2)  # the dispatcher is back in its one wait
        before = command_stats(raw_client)  # type: ignore[arg-type]
        time.sleep(2.0)
        idle = stats_delta(before, command_stats(raw_client))  # type: ignore[arg-type]
    finally:
        pool.stop()
    # Ten threads, one BZPOPMIN of 30 s in flight: not one command in 2 s.
    assert sum(idle.values()) == 0, idle


def test_backlog_jobs_are_never_taken_for_orphans(make_queue: QueueFactory) -> None:
    queue = make_queue(variant("prefetch=5"), workers=1)
    gate = Gate()
    queue.enqueue_many([Job(type="gate") for _ in range(6)])
    pool = WorkerPool(queue, {"gate": gate}, concurrency=1, job_timeout_s=None, heartbeat_interval_s=0.05)
    pool.start()
    try:
        wait_for(lambda: len(gate.started) == 1 and held(queue) == 6)
        time.sleep(0.5)  # ten heartbeats, each listing the processing list
        assert pool.counters.orphans_requeued == 0 and held(queue) == 6
    finally:
        gate.release.set()
        wait_for(lambda: pool.counters.completed == 6)
        pool.stop()
    assert len(gate.started) == 6 == len(set(gate.started))
