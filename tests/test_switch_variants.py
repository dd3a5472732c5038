"""Switching variants on a live queue: jobs queued and in flight under one are finished under another.

The seed's toggles (dequeue, batch, ttl, keys, pool, codec) change no data layout, so any
switch among them needs no migration. `records` and `partitions` move the data (a job's
record lives in a string key or in a hash; a job's keys in one partition or another): a
queue switched across them must be drained first, so the pairs below keep them equal.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Priority, Status
from qbench.queue_impl.queue import RedisQueue
from tests.conftest import QueueFactory, fast

LAYOUTS = {
    "keys": ("baseline", "optimized", "scripted+records=keys"),
    "hash": ("baseline+records=hash", "optimized+records=hash", "scripted"),
}
"""The presets per record layout (each preset with the other layout among them)."""
PAIRS = [pair for variants in LAYOUTS.values() for pair in itertools.permutations(variants, 2)]
"""Every ordered pair of presets sharing a record layout: both directions of every switch."""
FAR_FUTURE_US = 2**62


def drain(queue: RedisQueue) -> list[str]:
    """Complete everything the queue can hand out now; the ids, in order."""
    done = []
    while (job := queue.dequeue(wait=False)) is not None:
        queue.complete(job)
        done.append(job.id)
    return done


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_jobs_survive_a_switch_of_preset(make_queue: QueueFactory, before: str, after: str) -> None:
    old = make_queue(fast(parse_variant(before)), consumer="old-deploy")
    ns = old.namespace
    queued = old.enqueue_many([Job(type="noop", priority=PRIORITY_ORDER[i % 3]) for i in range(6)])
    queued.append(old.enqueue(Job(type="noop", priority=Priority.LOW)))
    # Three in flight under the old preset: one to finish late, one to fail, one abandoned.
    finishing, failing, abandoned = (old.dequeue(wait=False) for _ in range(3))
    assert finishing and failing and abandoned
    old.fail(failing, "transient", retry=True)  # now a retry in the scheduled set

    new = make_queue(fast(parse_variant(after)), namespace=ns, consumer="new-deploy")
    done = drain(new)
    assert old.complete(finishing) is not False  # the old deployment finishes its job after the switch
    assert new.move_scheduled_to_ready(now=FAR_FUTURE_US) == 1
    old.client.delete(old.keys.heartbeat(old.consumer))  # the old deployment dies holding a job
    assert new.recover_stale() == 1
    done += drain(new)

    expected = set(queued) - {finishing.id}
    assert sorted(done) == sorted(expected)  # each remaining job exactly once
    for job_id in queued:
        job = new.get_job(job_id)
        assert job is not None and job.status is Status.COMPLETED, job_id
    stats = new.stats()
    assert sum(stats.queued.values()) == 0 and stats.processing == 0 and stats.scheduled == 0
    assert stats.dead == 0
    retried = new.get_job(failing.id)
    assert retried is not None and retried.attempts == 1 and retried.last_error == "transient"


@pytest.mark.parametrize("producer", [p for p in PRESETS if PRESETS[p].dequeue != "notify"])
def test_a_notify_worker_finds_jobs_from_producers_that_set_no_marker(
    make_queue: QueueFactory, producer: str
) -> None:
    """A blocked notify-mode worker is not woken by a block/poll producer (no marker),
    but its next dequeue call runs the claim script first and takes the job."""
    notify: Variant = fast(PRESETS["scripted"])
    worker = make_queue(notify)
    plain = make_queue(fast(PRESETS[producer]).with_overrides(records="hash"), namespace=worker.namespace)
    calls: list[Job | None] = []
    waiting = threading.Event()

    def work() -> None:
        for _ in range(3):  # a worker loop; the first wait may time out unwoken
            waiting.set()
            job = worker.dequeue(wait=True)
            calls.append(job)
            if job is not None:
                return

    thread = threading.Thread(target=work)
    thread.start()
    assert waiting.wait(10)
    job_id = plain.enqueue(Job(type="noop"))
    thread.join(3 * notify.notify_timeout_s + 10)
    assert not thread.is_alive()
    got = [job for job in calls if job is not None]
    assert [job.id for job in got] == [job_id]
    assert len(calls) <= 2  # found within one notify timeout of the enqueue
    assert not worker.client.exists(worker.keys.marker())
