"""Stale-job recovery: a dead worker's jobs come back after its lease, under every preset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from qbench.queue_impl.config import Variant
from qbench.queue_impl.job import Job, Priority, Status
from qbench.queue_impl.worker import WorkerPool
from tests.conftest import QueueFactory, put_raw_record

LEASE_S = 2


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll until `condition` holds; a hang guard, not a performance target."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkilled_worker_jobs_return_after_the_lease(
    make_queue: QueueFactory, preset: Variant, redis_url: str
) -> None:
    queue = make_queue(preset)
    held = queue.enqueue_many(
        [Job(type="sleep", payload=b"60000", priority=p) for p in (Priority.HIGH, Priority.LOW)]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qbench.queue_impl.worker",
            "--redis-url",
            redis_url,
            "--variant",
            preset.label(),
            "--namespace",
            queue.namespace,
            "--concurrency",
            "2",
            "--lease",
            f"{LEASE_S}s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: queue.stats().processing == 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The lease was renewed within the last LEASE_S/3: the dead worker still looks alive.
        assert queue.recover_stale() == 0
        assert queue.stats().processing == 2
        returned: list[int] = []

        def recovered() -> bool:
            returned.append(queue.recover_stale())
            return sum(returned) > 0

        wait_for(recovered)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sum(returned) == 2
    stats = queue.stats()
    assert stats.processing == 0 and stats.consumers == 0
    assert stats.queued == {"high": 1, "normal": 0, "low": 1}
    for job_id in held:
        job = queue.get_job(job_id)
        assert job is not None and job.status is Status.QUEUED and job.attempts == 0
    # Another consumer finishes them: nothing lost.
    rescuer = make_queue(preset, namespace=queue.namespace)
    done = []
    while (job := rescuer.dequeue(wait=False)) is not None:
        assert rescuer.complete(job) is not False
        done.append(job.id)
    assert sorted(done) == sorted(held)


def test_a_claim_whose_reply_was_lost_is_handed_back(make_queue: QueueFactory, preset: Variant) -> None:
    """A job moved into a live worker's processing list that no worker thread owns
    (the connection dropped before the reply) is requeued and then completed."""
    queue = make_queue(preset, workers=2)
    ran: list[str] = []
    lock = threading.Lock()

    def record(job: Job) -> None:
        with lock:
            ran.append(job.id)

    pool = WorkerPool(queue, {"record": record}, concurrency=1, job_timeout_s=5, heartbeat_interval_s=0.05)
    pool.start()
    try:
        orphan = Job(type="record")
        # What the server did before the reply was lost: record written, id moved to processing.
        put_raw_record(queue, orphan.id, queue.codec.encode(orphan))
        queue.client.lpush(queue.keys.processing(queue.consumer), orphan.id)
        wait_for(lambda: pool.counters.completed == 1)
    finally:
        pool.stop()
    assert ran == [orphan.id]
    assert pool.counters.orphans_requeued == 1
    stored = queue.get_job(orphan.id)
    assert stored is not None and stored.status is Status.COMPLETED


def test_jobs_being_worked_on_are_never_handed_back(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset, workers=2)
    release = threading.Event()
    started = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        release.wait(10)

    pool = WorkerPool(queue, {"slow": slow}, concurrency=1, job_timeout_s=20, heartbeat_interval_s=0.02)
    pool.start()
    try:
        queue.enqueue(Job(type="slow"))
        assert started.wait(10)
        time.sleep(0.3)  # many heartbeats, each one checking for orphans
        assert pool.counters.orphans_requeued == 0
        assert queue.stats().processing == 1
        release.set()
        wait_for(lambda: pool.counters.completed == 1)
    finally:
        release.set()
        pool.stop()
    assert pool.counters.orphans_requeued == 0


def test_requeue_held_skips_ids_not_held(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset)
    queue.register_consumer()
    job_id = queue.enqueue(Job(type="noop"))
    assert queue.requeue_held([job_id, "no-such-id"]) == 0
    assert queue.stats().queued["normal"] == 1


def test_heartbeat_registers_again_after_the_consumer_was_forgotten(
    make_queue: QueueFactory, preset: Variant
) -> None:
    """Redis restarted without its data (or the lease lapsed): the next heartbeat
    puts the consumer back in the set stale recovery watches."""
    queue = make_queue(preset)
    queue.register_consumer(lease_s=5)
    queue.client.delete(queue.keys.consumers(), queue.keys.heartbeat(queue.consumer))
    queue.heartbeat(lease_s=5)
    assert queue.stats().consumers == 1
    ttl_ms = int(queue.client.pttl(queue.keys.heartbeat(queue.consumer)))
    assert 0 < ttl_ms <= 5000


def test_lease_accepts_fractions_of_a_second(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset)
    queue.register_consumer(lease_s=0.5)
    assert 0 < int(queue.client.pttl(queue.keys.heartbeat(queue.consumer))) <= 500
    with pytest.raises(ValueError, match="lease must be positive"):
        queue.heartbeat(lease_s=0)


def test_worker_rejects_a_lease_too_short(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qbench.queue_impl.worker", "--redis-url", redis_url, "--lease", "10ms"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "lease must be at least 100ms" in proc.stderr
