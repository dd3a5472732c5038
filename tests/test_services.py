"""The worker pool and scheduler services against a real Redis, under every preset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.job import Job, Priority, Status
from qbench.queue_impl.scheduler import MOVE_LIMIT, Scheduler
from qbench.queue_impl.worker import BUILTIN_HANDLERS, WorkerPool
from tests.conftest import QueueFactory, fast

pytestmark = pytest.mark.slow

POOL_VARIANTS = (
    *PRESETS,
    "scripted+dispatch=thread,prefetch=0,ack=each,conn=pool,notify_timeout_s=5",
    "baseline+dispatch=process,prefetch=3,ack=batch",
    "scripted+partitions=3",
)
"""The presets (scripted: dispatch=process, batched acks, pinned connections), scripted as
it was before those toggles (a wait per thread), and dispatch=process over poll/loop
(one job per claim) and over partitions (a leader per partition)."""


@pytest.fixture(params=POOL_VARIANTS)
def pool_variant(request: pytest.FixtureRequest) -> Variant:
    return fast(parse_variant(request.param))


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll until `condition` holds; a hang guard, not a performance target."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_pool_completes_every_job_exactly_once(make_queue: QueueFactory, pool_variant: Variant) -> None:
    queue = make_queue(pool_variant, workers=8)
    seen: list[str] = []
    lock = threading.Lock()

    def record(job: Job) -> None:
        with lock:
            seen.append(job.id)

    pool = WorkerPool(queue, {"record": record}, concurrency=8, job_timeout_s=5)
    pool.start()
    ids = queue.enqueue_many([Job(type="record", priority=Priority(i % 3)) for i in range(300)])
    wait_for(lambda: pool.counters.completed == 300)
    assert pool.stop() == 0
    assert sorted(seen) == sorted(ids)
    assert {queue.get_job(i).status for i in ids[:20]} == {Status.COMPLETED}  # type: ignore[union-attr]
    stats = queue.stats()
    assert stats.processing == 0 and sum(stats.queued.values()) == 0 and stats.consumers == 0


def test_failures_retry_then_dead_letter(make_queue: QueueFactory, pool_variant: Variant) -> None:
    queue = make_queue(pool_variant, workers=4)
    pool = WorkerPool(queue, BUILTIN_HANDLERS, concurrency=4, job_timeout_s=5)
    scheduler = Scheduler(make_queue(pool_variant, namespace=queue.namespace), interval_s=0.02)
    pool.start()
    scheduler.start()
    failing = queue.enqueue_many([Job(type="fail", max_retries=2) for _ in range(5)])
    malformed = queue.enqueue(Job(type="sleep", payload=b"not-a-number", max_retries=1))
    unknown = queue.enqueue(Job(type="no-such-type", max_retries=5))
    wait_for(lambda: pool.counters.dead == 7)
    scheduler.stop()
    pool.stop()
    # 5 jobs x 2 retries + 1 malformed x 1 retry; the unknown type is never retried.
    assert pool.counters.retried == 11
    for job_id in failing:
        job = queue.get_job(job_id)
        assert job is not None and job.status is Status.DEAD and job.attempts == 3
        assert job.last_error == "RuntimeError: handler failed on purpose"
    bad = queue.get_job(malformed)
    assert bad is not None and bad.status is Status.DEAD and bad.last_error.startswith("ValueError")
    lost = queue.get_job(unknown)
    assert lost is not None and lost.attempts == 1 and "no handler for job type" in lost.last_error
    assert queue.stats().dead == 7


def test_job_timeout_fails_the_job(make_queue: QueueFactory, pool_variant: Variant) -> None:
    queue = make_queue(pool_variant, workers=2)
    pool = WorkerPool(queue, BUILTIN_HANDLERS, concurrency=2, job_timeout_s=0.2)
    pool.start()
    hung = queue.enqueue(Job(type="sleep", payload=b"1200", max_retries=0))
    quick = queue.enqueue(Job(type="noop"))
    wait_for(lambda: pool.counters.dead == 1 and pool.counters.completed == 1)
    pool.stop()
    job = queue.get_job(hung)
    assert job is not None and job.status is Status.DEAD and "timed out after 0.2s" in job.last_error
    assert queue.get_job(quick).status is Status.COMPLETED  # type: ignore[union-attr]
    assert pool.counters.timed_out == 1


def test_scheduler_tick_drains_more_than_one_move_limit(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset)
    pipe = queue.client.pipeline(transaction=False)
    count = MOVE_LIMIT + 7
    for _ in range(count):
        job = Job(type="noop", status=Status.SCHEDULED, attempts=1)
        part = queue.partition_for(job.id)
        part.records.put(pipe, job.id, queue.codec.encode(job), ttl=None)
        pipe.zadd(part.keys.scheduled(), {job.id: 0})
    pipe.execute()
    assert Scheduler(queue).tick() == count
    assert queue.stats().queued["normal"] == count


def test_sigterm_finishes_the_in_flight_job(make_queue: QueueFactory, redis_url: str) -> None:
    variant = fast(PRESETS["optimized"])
    queue = make_queue(variant)
    job_id = queue.enqueue(Job(type="sleep", payload=b"1500"))
    env = {**os.environ, "REDIS_URL": redis_url, "WORKER_CONCURRENCY": "2", "JOB_TIMEOUT": "10s"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qbench.queue_impl.worker",
            "--variant",
            "optimized+block_timeouts_s=0.2/0.2/0.6",
            "--namespace",
            queue.namespace,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: queue.stats().processing == 1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()
    job = queue.get_job(job_id)
    assert job is not None and job.status is Status.COMPLETED
    assert queue.stats().processing == 0


def test_stop_returns_jobs_still_held(make_queue: QueueFactory, pool_variant: Variant) -> None:
    queue = make_queue(pool_variant)
    started = threading.Event()

    def hang(job: Job) -> None:
        started.set()
        time.sleep(1)

    pool = WorkerPool(queue, {"hang": hang}, concurrency=1, job_timeout_s=None)
    pool.start()
    job_id = queue.enqueue(Job(type="hang"))
    assert started.wait(10)
    returned = pool.stop(timeout_s=0.1)
    assert returned == 1
    job = queue.get_job(job_id)
    assert job is not None and job.status is Status.QUEUED
    assert queue.stats().queued["normal"] == 1
    # The abandoned handler still finishes (and acknowledges) on its own thread.
    assert pool.join(timeout_s=10)
