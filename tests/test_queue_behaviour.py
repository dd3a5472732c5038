"""One behaviour suite, run against every preset and single-toggle variants.

Every test in `BehaviourSuite` runs on each variant (SAQ's one-suite-many-backends
style) and most expect one outcome on all. Where a toggle changes behaviour, the test
gives the exact outcome per toggle value (`ttl`: the TTL tests; `batch`, `dequeue`,
`records`, `partitions`: below):

- batch: only `script` is atomic. Under `loop` and `pipeline`, two schedulers moving at
  once queue each due job twice (`SCHEDULER_RACE`); complete() and fail() of a job this
  consumer no longer holds still write it, where `script` writes nothing and complete()
  returns False (`UNHELD_COMPLETE`, `UNHELD_FAIL_WRITES`); `loop` pushes a batch job by
  job (`BATCH_SPLIT`) and loses a job killed inside fail() after its LREM (`KILLED_IN_FAIL`).
- dequeue: `poll` and `block` check the priorities one command at a time, `notify` in
  one script (`test_poll_and_block_check_the_priorities_one_at_a_time` and the notify
  and block tests at the end).
- records: the same outcomes, except where a script move must read the due ids first
  (`records=keys` with `batch=script`: `scheduler_race`) and which commands a killed
  fail() had sent (`KILLED_IN_FAIL`: GET/SET or HGET/HSET).
- partitions: priority order and FIFO hold within each partition (`_per_partition`);
  races are staged inside one partition. The waking of notify workers across
  partitions is tested in tests/test_partitions.py.

Waits are shortened by `fast()`; no test asserts a duration, only states and order.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster

from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Priority, Status
from qbench.queue_impl.keys import KeyBuilder
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.records import CORRUPT_JOB_TYPE
from tests.conftest import QueueFactory, fast

TOGGLE_VARIANTS = (
    "baseline+dequeue=notify",
    "baseline+keys=precomputed",
    "baseline+codec=json",  # poll + json
    "optimized+codec=json",  # block + json
    "optimized+batch=script",
    "scripted+codec=json",  # notify + Lua + json
    "scripted+batch=loop",  # notify with a wake-up marker per job
    "scripted+ttl=off",
    "baseline+records=hash",  # loop + hash
    "optimized+records=hash",  # pipeline + hash
    "scripted+records=keys",  # script + keys: ids read client-side first
    "baseline+codec=msgpack",  # poll + loop: Python reads every record
    "scripted+codec=msgpack",  # Lua reads and requeues MessagePack (cmsgpack)
    "optimized+codec=orjson",
    "scripted+codec=orjson",  # Lua reads orjson's document with cjson
    "scripted+compress=zstd,compress_min_bytes=0",  # every payload compressed or headed
    "optimized+compress=lz4,compress_min_bytes=0",
    "scripted+handoff=targeted",  # issue 20's pickup path (config.PICKUP_FLOOR), one toggle at a time
    "scripted+wait_claim=pipelined",
    "scripted+beat=kept",
    "scripted+orphan_scan=after_reconnect",
)
"""Each differs from its preset in one toggle (compress: with its threshold); with the
presets they cover every dequeue mode with the protobuf and JSON codecs, the Lua scripts
with every codec and both compressions, every batch mode with notify, and every batch mode with
both record layouts."""

PARTITIONED_VARIANTS = (
    "scripted+partitions=3",
    "scripted+partitions=3,wait_claim=pipelined",  # claims the home partition in the wait's write
    "baseline+records=hash,partitions=3",
    "optimized+partitions=2",
    "optimized+batch=script,partitions=3",  # script + keys, partitioned
)
"""Every batch and dequeue mode and both record layouts over several partitions."""

DAY_S = 86_400

SCHEDULER_RACE = {"loop": (3, 3, 2), "pipeline": (3, 3, 2), "script": (3, 0, 1)}
"""Per batch mode, two schedulers moving the same 3 due jobs at once: jobs moved by
the first, by the second, and how many times each job is then queued."""
SCHEDULER_RACE_SCRIPT_KEYS = (0, 3, 1)
"""batch=script with records=keys: the move reads the due ids client-side, so the second
scheduler runs after that read and moves them all; the first's script, re-checking each
id, then moves none. Never twice."""

BATCH_SPLIT = {"loop": "low", "pipeline": "high", "script": "high"}
"""Per batch mode, what a worker claims right after the producer's first push of an
`enqueue_many([low, high])`: loop pushes job by job."""

UNHELD_COMPLETE = {
    "loop": (True, Status.COMPLETED, True),
    "pipeline": (True, Status.COMPLETED, True),
    "script": (False, Status.QUEUED, False),
}
"""Per batch mode, complete() of a job stale recovery already returned to its queue:
what it returns, the record's status after, and whether the completed TTL was set."""

UNHELD_FAIL_WRITES = {"loop": True, "pipeline": True, "script": False}
"""Per batch mode, whether fail() of a job no longer held still writes its retry or
dead letter (script checks the processing list first and writes nothing)."""

KILLED_IN_FAIL = {
    "loop": (["LREM", "GET", "SET"], "ZADD", False),
    "pipeline": (["GET"], "pipeline", True),
    "script": ([], "EVALSHA", True),
}
"""Per batch mode, a retrying fail()'s round trips before its last one, the last one,
and whether a worker killed right before that last one leaves the job recoverable.
(records=hash reads and writes the record with HGET and HSET.)"""
RECORD_COMMANDS = {"keys": {"GET": "GET", "SET": "SET"}, "hash": {"GET": "HGET", "SET": "HSET"}}


def _pool_path(queue: RedisQueue, variant: Variant, make_queue: QueueFactory) -> RedisQueue:
    """`queue`, or its twin with conn=pool (same namespace and consumer): the tests that
    hook the client's `execute_command` to act between round trips need every call to go
    through it. `conn` changes only how a call reaches Redis, not what it sends."""
    if variant.conn == "pool":
        return queue
    return make_queue(variant.with_overrides(conn="pool"), namespace=queue.namespace, consumer=queue.consumer)


class Killed(BaseException):
    """Stands for SIGKILL inside a queue call: nothing in the queue catches it."""


def _ids(client: RedisClient, key: str) -> list[str]:
    return [i.decode() for i in client.lrange(key, 0, -1)]


def _listed(queue: RedisQueue, key_of: Callable[[KeyBuilder], str]) -> list[str]:
    """A list's ids in every partition, partition after partition."""
    return [job_id for part in queue.partitions for job_id in _ids(queue.client, key_of(part.keys))]


def _held(queue: RedisQueue) -> list[str]:
    return _listed(queue, lambda keys: keys.processing(queue.consumer))


def _queued(queue: RedisQueue, priority: Priority) -> list[str]:
    return _listed(queue, lambda keys: keys.queue(priority))


def _dead(queue: RedisQueue) -> list[str]:
    return _listed(queue, lambda keys: keys.dead())


def _scheduled(queue: RedisQueue) -> dict[str, int]:
    """Scheduled ids (every partition) and their scores, in score order within a partition."""
    return {
        member.decode(): int(score)
        for part in queue.partitions
        for member, score in queue.client.zrange(part.keys.scheduled(), 0, -1, withscores=True)
    }


def _expire_lease(queue: RedisQueue) -> None:
    """What lease expiry does: the consumer's heartbeat is gone in every partition."""
    for part in queue.partitions:
        queue.client.delete(part.keys.heartbeat(queue.consumer))


def _per_partition(queue: RedisQueue, ids: list[str]) -> list[list[str]]:
    """`ids` split by partition, each keeping the given order: order holds per partition."""
    return [[i for i in ids if queue.partition_for(i) is part] for part in queue.partitions]


def _as_held(queue: RedisQueue, claimed: list[str]) -> list[str]:
    """The processing lists after claiming `claimed` in that order (newest first per partition)."""
    return [job_id for ids in _per_partition(queue, claimed) for job_id in reversed(ids)]


def _id_in(queue: RedisQueue, partition: int, tag: str) -> str:
    """A job id (`tag-N`) that lands in `partition`: staged races stay inside one."""
    return next(
        f"{tag}-{n}" for n in itertools.count() if queue.partition_for(f"{tag}-{n}").index == partition
    )


def _put_raw(queue: RedisQueue, job_id: str, raw: bytes) -> None:
    """Store `raw` as the job's record, as the variant's record layout keeps it."""
    queue.partition_for(job_id).records.put(queue.client, job_id, raw, ttl=None)


def _stored(queue: RedisQueue, job_id: str) -> Job:
    job = queue.get_job(job_id)
    assert job is not None, f"job {job_id} has no record"
    return job


def _take(queue: RedisQueue) -> Job:
    """Dequeue a job known to be ready.

    Without `wait`: block mode would otherwise sit out the high (and normal) timeouts
    before reaching a ready low job. `test_a_ready_job_is_dequeued_with_wait` covers
    the waiting path of every mode.
    """
    job = queue.dequeue(wait=False)
    assert job is not None, "a ready job was not dequeued"
    return job


def _ttl_range(seconds: int | None) -> tuple[int, int]:
    """What the TTL command may answer right after a SET with `seconds` (None: no TTL)."""
    return (-1, -1) if seconds is None else (seconds - 1, seconds)


class BehaviourSuite:
    """The queue's semantics; subclasses choose the variants via the `variant` fixture."""

    @pytest.fixture
    def queue(self, variant: Variant, make_queue: QueueFactory) -> RedisQueue:
        return make_queue(variant, consumer="consumer-1")

    # -- order ----------------------------------------------------------------------
    def test_high_before_normal_before_low_and_fifo_within_a_priority(self, queue: RedisQueue) -> None:
        order = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.LOW, Priority.NORMAL, Priority.HIGH]
        jobs = [Job(type=f"t{i}", priority=p) for i, p in enumerate(order)]
        for job in jobs:
            queue.enqueue(job)
        taken = [_take(queue).id for _ in jobs]
        expected = [jobs[i].id for i in (2, 5, 1, 4, 0, 3)]
        assert _per_partition(queue, taken) == _per_partition(queue, expected)
        assert queue.dequeue(wait=False) is None

    def test_enqueue_many_keeps_order_and_stores_every_record(self, queue: RedisQueue) -> None:
        jobs = [Job(type="batch", payload=bytes([i]) * i, priority=Priority.LOW) for i in range(5)]
        jobs.append(Job(type="urgent", priority=Priority.HIGH, max_retries=0))
        assert queue.enqueue_many(jobs) == [job.id for job in jobs]
        assert queue.enqueue_many([]) == []
        assert [_stored(queue, job.id) for job in jobs] == jobs
        taken = [_take(queue).id for _ in jobs]
        expected = [jobs[-1].id] + [job.id for job in jobs[:-1]]
        assert _per_partition(queue, taken) == _per_partition(queue, expected)

    def test_a_ready_job_is_dequeued_with_wait(self, queue: RedisQueue) -> None:
        # High priority: the first wait of every mode finds it at once.
        job = Job(type="email", payload=b"\x00to: a@b\xff", priority=Priority.HIGH, max_retries=7)
        queue.enqueue(job)
        taken = queue.dequeue(wait=True)
        assert taken is not None
        assert (taken.id, taken.type, taken.payload, taken.priority, taken.max_retries) == (
            job.id,
            "email",
            b"\x00to: a@b\xff",
            Priority.HIGH,
            7,
        )
        assert taken.created_at_us == job.created_at_us
        assert taken.status is Status.ACTIVE
        assert taken.started_at_us >= job.created_at_us
        assert queue.get_job("no-such-job") is None

    # -- reliable processing -----------------------------------------------------------
    def test_a_dequeued_job_sits_in_the_processing_list_until_completed(self, queue: RedisQueue) -> None:
        first, second = Job(type="a"), Job(type="b")
        queue.enqueue_many([first, second])
        job = _take(queue)
        # FIFO: the first of its partition (the first of all with one partition).
        assert job.id == _per_partition(queue, [first.id, second.id])[queue.partition_for(job.id).index][0]
        other = second if job.id == first.id else first
        assert _held(queue) == [job.id]
        assert _queued(queue, Priority.NORMAL) == [other.id]
        assert queue.complete(job) is True
        assert _held(queue) == []
        stored = _stored(queue, job.id)
        assert stored.status is Status.COMPLETED
        assert stored.started_at_us == job.started_at_us
        assert stored.finished_at_us >= job.started_at_us

    def test_consumers_sharing_a_queue_never_hold_the_same_job(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory
    ) -> None:
        other = make_queue(variant, namespace=queue.namespace, consumer="consumer-2")
        jobs = [Job(type="shared") for _ in range(4)]
        queue.enqueue_many(jobs)
        mine = [_take(queue).id, _take(queue).id]
        theirs = [_take(other).id, _take(other).id]
        assert _held(queue) == _as_held(queue, mine) and _held(other) == _as_held(other, theirs)
        assert sorted(mine + theirs) == sorted(job.id for job in jobs)
        assert other.dequeue(wait=False) is None

    def test_stats_count_every_state(self, queue: RedisQueue) -> None:
        queue.enqueue_many([Job(type="h", priority=Priority.HIGH) for _ in range(2)])
        queue.enqueue_many([Job(type="n"), *(Job(type="l", priority=Priority.LOW) for _ in range(3))])
        retried, dead, held = _take(queue), _take(queue), _take(queue)
        queue.fail(retried, "try again")
        queue.fail(dead, "fatal", retry=False)
        stats = queue.stats()
        # One partition: the two high and the normal job were taken, in that order.
        left = Counter({"high": 2, "normal": 1, "low": 3})
        left.subtract(job.priority.label for job in (retried, dead, held))
        if len(queue.partitions) == 1:
            assert [job.type for job in (retried, dead, held)] == ["h", "h", "n"]
        assert stats.queued == dict(left)
        assert (stats.processing, stats.scheduled, stats.dead, stats.consumers) == (1, 1, 1, 1)
        assert stats.by_consumer == {"consumer-1": 1}
        assert stats.as_dict()["queued"] == dict(left)

    def test_a_stopping_consumer_returns_its_jobs_to_the_front(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory
    ) -> None:
        jobs = [Job(type=f"t{i}") for i in range(3)]
        queue.enqueue_many(jobs)
        taken = _take(queue)
        assert queue.unregister_consumer() == 1
        assert _held(queue) == []
        assert _stored(queue, taken.id).status is Status.QUEUED
        other = make_queue(variant, namespace=queue.namespace, consumer="consumer-2")
        taken_again = [_take(other).id for _ in jobs]
        assert _per_partition(queue, taken_again) == _per_partition(queue, [job.id for job in jobs])

    def test_jobs_of_a_consumer_whose_lease_expired_are_recovered(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory
    ) -> None:
        job = Job(type="orphan", priority=Priority.LOW)
        queue.enqueue(job)
        _take(queue)
        rescuer = make_queue(variant, namespace=queue.namespace, consumer="consumer-2")
        assert rescuer.recover_stale() == 0  # the holder's lease is still alive
        _expire_lease(queue)
        assert rescuer.recover_stale() == 1
        assert _held(queue) == []
        assert _take(rescuer).id == job.id
        assert rescuer.stats().consumers == 1

    # -- retries, backoff, dead letters ------------------------------------------------
    def test_retries_back_off_exponentially_then_dead_letter(self, queue: RedisQueue) -> None:
        assert queue.variant.retry_base_s == 0.05
        job = Job(type="flaky", priority=Priority.LOW, max_retries=2)
        queue.enqueue(job)
        for attempt, backoff_us in ((1, 50_000), (2, 100_000)):
            taken = _take(queue)
            assert taken.attempts == attempt - 1
            assert queue.fail(taken, f"boom {attempt}") is Status.SCHEDULED
            stored = _stored(queue, job.id)
            assert stored == taken
            assert (stored.attempts, stored.last_error, stored.status) == (
                attempt,
                f"boom {attempt}",
                Status.SCHEDULED,
            )
            # scheduled_at = finished + retry_base * 2**(attempt - 1)
            assert stored.scheduled_at_us - stored.finished_at_us == backoff_us
            assert _scheduled(queue) == {job.id: stored.scheduled_at_us}
            assert _held(queue) == []
            assert queue.move_scheduled_to_ready(now=stored.scheduled_at_us - 1) == 0
            assert queue.dequeue(wait=False) is None
            assert queue.move_scheduled_to_ready(now=stored.scheduled_at_us) == 1
            assert _stored(queue, job.id).status is Status.QUEUED
            assert _queued(queue, Priority.LOW) == [job.id]
        last = _take(queue)
        assert queue.fail(last, "boom 3") is Status.DEAD
        stored = _stored(queue, job.id)
        assert (stored.attempts, stored.last_error, stored.status) == (3, "boom 3", Status.DEAD)
        assert _dead(queue) == [job.id]
        assert _scheduled(queue) == {}
        assert _held(queue) == []

    def test_scheduler_returns_only_due_jobs_each_to_its_own_priority(self, queue: RedisQueue) -> None:
        low, high, normal = (
            Job(type=p.label, priority=p) for p in (Priority.LOW, Priority.HIGH, Priority.NORMAL)
        )
        later = Job(type="later", priority=Priority.HIGH)
        queue.enqueue_many([low, high, normal, later])
        taken = {job.id: job for job in (_take(queue) for _ in range(4))}
        for job in (low, high, normal, later):  # fail order = retry order
            queue.fail(taken[job.id], "retry")
        scores = _scheduled(queue)
        due_at = scores[normal.id]
        assert sorted(scores, key=scores.__getitem__) == [low.id, high.id, normal.id, later.id]
        assert queue.move_scheduled_to_ready(now=due_at) == 3
        assert [_queued(queue, p) for p in PRIORITY_ORDER] == [[high.id], [normal.id], [low.id]]
        assert [_stored(queue, j.id).status for j in (low, high, normal, later)] == [
            Status.QUEUED,
            Status.QUEUED,
            Status.QUEUED,
            Status.SCHEDULED,
        ]
        assert list(_scheduled(queue)) == [later.id]
        retried = [_take(queue) for _ in range(3)]
        assert _per_partition(queue, [job.id for job in retried]) == _per_partition(
            queue, [high.id, normal.id, low.id]
        )
        assert all(job.attempts == 1 and job.last_error == "retry" for job in retried)
        assert queue.move_scheduled_to_ready(now=due_at) == 0
        assert queue.move_scheduled_to_ready(now=scores[later.id]) == 1

    def test_fail_without_retry_dead_letters_at_once(self, queue: RedisQueue) -> None:
        job = Job(type="fatal", max_retries=5)
        queue.enqueue(job)
        assert queue.fail(_take(queue), "invalid input", retry=False) is Status.DEAD
        stored = _stored(queue, job.id)
        assert (stored.attempts, stored.last_error, stored.status) == (1, "invalid input", Status.DEAD)
        assert _dead(queue) == [job.id]
        assert _scheduled(queue) == {} and _held(queue) == []

    def test_zero_max_retries_dead_letters_on_the_first_failure(self, queue: RedisQueue) -> None:
        job = Job(type="once", max_retries=0)
        queue.enqueue(job)
        assert queue.fail(_take(queue), "no") is Status.DEAD
        assert _dead(queue) == [job.id]

    # -- TTLs --------------------------------------------------------------------------
    def test_ttls_as_configured(self, queue: RedisQueue) -> None:
        on = queue.variant.ttl == "on"
        done, dead, retried = Job(type="ok"), Job(type="bad"), Job(type="retry")
        queue.enqueue_many([done, dead, retried])
        assert queue.record_ttl(done.id) == -1  # a queued job never expires
        assert queue.record_ttl("no-such-job") == -2
        taken = {job.id: job for job in (_take(queue) for _ in range(3))}
        queue.complete(taken[done.id])
        queue.fail(taken[dead.id], "fatal", retry=False)
        queue.fail(taken[retried.id], "again")
        ttl = {job.type: queue.record_ttl(job.id) for job in (done, dead, retried)}
        completed_range = _ttl_range(DAY_S if on else None)
        dead_range = _ttl_range(7 * DAY_S if on else None)
        assert completed_range[0] <= ttl["ok"] <= completed_range[1]
        assert dead_range[0] <= ttl["bad"] <= dead_range[1]
        assert ttl["retry"] == -1  # a job waiting for its retry never expires

    def test_custom_ttls_override_the_defaults(self, variant: Variant, make_queue: QueueFactory) -> None:
        queue = make_queue(variant.with_overrides(ttl="on", completed_ttl_s=120, dead_ttl_s=300))
        done, dead = Job(type="ok"), Job(type="bad")
        queue.enqueue_many([done, dead])
        taken = {job.id: job for job in (_take(queue) for _ in range(2))}
        queue.complete(taken[done.id])
        queue.fail(taken[dead.id], "fatal", retry=False)
        assert 119 <= queue.record_ttl(done.id) <= 120
        assert 299 <= queue.record_ttl(dead.id) <= 300

    # -- bad input ---------------------------------------------------------------------
    @pytest.mark.parametrize("damage", ["garbage", "missing", "foreign id"])
    def test_a_corrupt_record_is_dead_lettered_and_the_next_job_served(
        self, queue: RedisQueue, damage: str
    ) -> None:
        bad_id = "bad-record"
        raw = {
            "garbage": b"\xffgarbage{",
            "missing": None,
            "foreign id": queue.codec.encode(Job(type="t", id="someone-else")),
        }[damage]
        if raw is not None:
            _put_raw(queue, bad_id, raw)
        queue.client.lpush(queue.partition_for(bad_id).keys.queue(Priority.NORMAL), bad_id)
        good = Job(type="good", id=_id_in(queue, queue.partition_for(bad_id).index, "good"))
        queue.enqueue(good)
        assert _take(queue).id == good.id
        assert _held(queue) == [good.id]
        assert _dead(queue) == [bad_id]
        dead = _stored(queue, bad_id)
        assert (dead.id, dead.type, dead.status, dead.payload) == (
            bad_id,
            CORRUPT_JOB_TYPE,
            Status.DEAD,
            raw or b"",
        )
        reason = {
            "garbage": "undecodable",
            "missing": "job record is missing",
            "foreign id": "record holds id 'someone-else'",
        }[damage]
        assert reason in dead.last_error
        assert dead.finished_at_us > 0
        low, high = _ttl_range(7 * DAY_S if queue.variant.ttl == "on" else None)
        assert low <= queue.record_ttl(bad_id) <= high

    @pytest.mark.parametrize("damage", ["garbage", "missing"])
    def test_the_scheduler_dead_letters_a_corrupt_record_instead_of_dropping_it(
        self, queue: RedisQueue, damage: str
    ) -> None:
        good = Job(type="good", priority=Priority.HIGH)
        queue.enqueue(good)
        queue.fail(_take(queue), "retry")
        if damage == "garbage":
            _put_raw(queue, "bad-record", b"\xffgarbage{")
        queue.client.zadd(queue.partition_for("bad-record").keys.scheduled(), {"bad-record": 0})
        assert queue.move_scheduled_to_ready(now=2**62) == 2
        assert _dead(queue) == ["bad-record"]
        assert _queued(queue, Priority.HIGH) == [good.id]
        assert _scheduled(queue) == {}
        assert _take(queue).id == good.id

    # -- where the batch toggle changes behaviour: concurrency and crashes ------------
    def test_two_schedulers_moving_at_once(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Scheduler B's whole move runs in the middle of scheduler A's.

        loop and pipeline read the due ids client-side (ZRANGEBYSCORE), then write
        without checking them: B runs right after A's read, and both queue every job.
        script reads and moves in one atomic script, so there is no middle: B runs
        right after it, and ZREM leaves B nothing.
        """
        queue = _pool_path(queue, variant, make_queue)
        script_keys = variant.batch == "script" and variant.records == "keys"
        a_moved, b_moved, copies = (
            SCHEDULER_RACE_SCRIPT_KEYS if script_keys else SCHEDULER_RACE[variant.batch]
        )
        scheduler_b = make_queue(variant, namespace=queue.namespace, consumer="scheduler-b")
        # In the partition A moves first, so B runs in the middle of A's move of them.
        jobs = [Job(type=p.label, priority=p, id=_id_in(queue, 0, p.label)) for p in PRIORITY_ORDER]
        queue.enqueue_many(jobs)
        for _ in jobs:
            queue.fail(_take(queue), "retry")
        moved_by_b: list[int] = []
        send = queue.client.execute_command

        def a_sends(*args: Any, **options: Any) -> Any:
            reply = send(*args, **options)
            if args[0] in ("ZRANGEBYSCORE", "EVALSHA") and not moved_by_b:
                moved_by_b.append(scheduler_b.move_scheduled_to_ready(now=2**62))
            return reply

        monkeypatch.setattr(queue.client, "execute_command", a_sends)
        assert queue.move_scheduled_to_ready(now=2**62) == a_moved
        monkeypatch.undo()
        assert moved_by_b == [b_moved]
        assert [_queued(queue, p) for p in PRIORITY_ORDER] == [[job.id] * copies for job in jobs]
        assert _scheduled(queue) == {}
        assert [_stored(queue, job.id).status for job in jobs] == [Status.QUEUED] * 3
        taken = [_take(queue).id for _ in range(3 * copies)]
        assert taken == [job.id for job in jobs for _ in range(copies)]
        assert queue.dequeue(wait=False) is None

    def test_a_claim_in_the_middle_of_enqueue_many(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker claims right after the producer's first push of a [low, high] batch.

        loop pushes job by job, so the worker gets the low job; pipeline and script
        push the batch in one round trip, so the first push is the whole batch.
        """
        queue = _pool_path(queue, variant, make_queue)
        first_claimed = BATCH_SPLIT[variant.batch]
        worker = make_queue(variant, namespace=queue.namespace, consumer="worker")
        worker.register_consumer()
        batch = [
            Job(type=p.label, priority=p, id=_id_in(queue, 0, p.label)) for p in (Priority.LOW, Priority.HIGH)
        ]
        claimed: list[str] = []
        pipeline = type(queue.client.pipeline())  # a cluster client's is a ClusterPipeline
        send, execute = queue.client.execute_command, pipeline.execute

        def after_first_push() -> None:
            if not claimed:
                job = worker.dequeue(wait=False)
                claimed.append(job.type if job else "nothing")

        def producer_sends(*args: Any, **options: Any) -> Any:
            reply = send(*args, **options)
            if args[0] in ("LPUSH", "EVALSHA"):
                after_first_push()
            return reply

        def producer_pipeline_executes(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
            replies = execute(pipe, raise_on_error)
            after_first_push()
            return replies

        monkeypatch.setattr(queue.client, "execute_command", producer_sends)
        monkeypatch.setattr(pipeline, "execute", producer_pipeline_executes)
        queue.enqueue_many(batch)
        monkeypatch.undo()
        assert claimed == [first_claimed]
        assert _take(worker).type == {"low": "high", "high": "low"}[first_claimed]
        assert worker.dequeue(wait=False) is None

    def _taken_then_handed_back(self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory) -> Job:
        """A job this consumer took, then lost: its lease lapsed and stale recovery
        returned the job to its (normal) queue."""
        queue.enqueue(Job(type="slow"))
        taken = _take(queue)
        rescuer = make_queue(variant, namespace=queue.namespace, consumer="rescuer")
        _expire_lease(queue)
        assert rescuer.recover_stale() == 1
        assert _held(queue) == []
        return taken

    def test_complete_of_a_job_no_longer_held(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory
    ) -> None:
        returns, status, ttl = UNHELD_COMPLETE[variant.batch]
        job = self._taken_then_handed_back(queue, variant, make_queue)
        assert queue.complete(job) is returns
        assert _stored(queue, job.id).status is status
        # The completed TTL lands on a record that is queued again (ttl=on only).
        low, high = _ttl_range(DAY_S if ttl and variant.ttl == "on" else None)
        assert low <= queue.record_ttl(job.id) <= high
        # Still queued once in every mode: it runs again (at-least-once).
        assert _queued(queue, Priority.NORMAL) == [job.id]
        assert _held(queue) == []
        assert _take(queue).id == job.id

    @pytest.mark.parametrize("retry", [True, False], ids=["retry", "dead"])
    def test_fail_of_a_job_no_longer_held(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory, retry: bool
    ) -> None:
        writes = UNHELD_FAIL_WRITES[variant.batch]
        job = self._taken_then_handed_back(queue, variant, make_queue)
        expected = Status.SCHEDULED if retry else Status.DEAD
        assert queue.fail(job, "boom", retry=retry) is expected  # in every mode
        stored = _stored(queue, job.id)
        if writes:
            assert (stored.status, stored.attempts, stored.last_error) == (expected, 1, "boom")
        else:
            assert (stored.status, stored.attempts, stored.last_error) == (Status.QUEUED, 0, "")
        scheduled = list(_scheduled(queue))
        assert scheduled == ([job.id] if writes and retry else [])
        assert _dead(queue) == ([job.id] if writes and not retry else [])
        assert _queued(queue, Priority.NORMAL) == [job.id]
        # A written retry is a second copy: once due, the job is queued twice.
        assert queue.move_scheduled_to_ready(now=2**62) == len(scheduled)
        copies = 2 if writes and retry else 1
        assert _queued(queue, Priority.NORMAL) == [job.id] * copies

    def test_a_worker_killed_inside_fail(
        self, queue: RedisQueue, variant: Variant, make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The process dies right before fail()'s last round trip (nothing of it sent).

        loop has already run LREM: the job is in no list, and no recovery finds it.
        pipeline has only read; script has sent nothing: the job is still held, and
        stale recovery returns it.
        """
        queue = _pool_path(queue, variant, make_queue)
        sent_before, last, recovered = KILLED_IN_FAIL[variant.batch]
        sent_before = [RECORD_COMMANDS[variant.records].get(name, name) for name in sent_before]
        job = Job(type="doomed")
        queue.enqueue(job)
        taken = _take(queue)
        sent: list[str] = []
        pipeline = type(queue.client.pipeline())  # a cluster client's is a ClusterPipeline
        send, execute = queue.client.execute_command, pipeline.execute

        def round_trip(name: str) -> None:
            if name == last:
                raise Killed
            sent.append(name)

        def a_sends(*args: Any, **options: Any) -> Any:
            round_trip(str(args[0]))
            return send(*args, **options)

        def a_pipeline_executes(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
            round_trip("pipeline")
            return execute(pipe, raise_on_error)

        monkeypatch.setattr(queue.client, "execute_command", a_sends)
        monkeypatch.setattr(pipeline, "execute", a_pipeline_executes)
        with pytest.raises(Killed):
            queue.fail(taken, "boom")
        monkeypatch.undo()
        assert sent == sent_before
        assert _held(queue) == ([job.id] if recovered else [])
        rescuer = make_queue(variant, namespace=queue.namespace, consumer="rescuer")
        _expire_lease(queue)
        assert rescuer.recover_stale() == (1 if recovered else 0)
        places = sum(len(_queued(queue, p)) for p in PRIORITY_ORDER)
        places += len(_scheduled(queue)) + len(_dead(queue))
        assert places == (1 if recovered else 0)  # 0: the job is lost


class TestPresets(BehaviourSuite):
    @pytest.fixture
    def variant(self, preset: Variant) -> Variant:
        return preset


class TestSingleToggles(BehaviourSuite):
    @pytest.fixture(params=TOGGLE_VARIANTS)
    def variant(self, request: pytest.FixtureRequest) -> Variant:
        variant = parse_variant(request.param)
        assert variant.label() == request.param
        return fast(variant)


class TestPartitions(BehaviourSuite):
    @pytest.fixture(params=PARTITIONED_VARIANTS)
    def variant(self, request: pytest.FixtureRequest) -> Variant:
        variant = parse_variant(request.param)
        assert variant.label() == request.param
        return fast(variant)


CLUSTER_VARIANTS = (*PRESETS, "scripted+partitions=3", "optimized+partitions=3")
"""On a three-master Redis Cluster: every preset (one partition) and partitioned ones."""


class TestOnCluster(BehaviourSuite):
    """The same suite through `RedisCluster` on a local three-master cluster: every key a
    script touches is declared, so nothing is CROSSSLOT; with 3 partitions the queue's
    keys live on all three masters."""

    @pytest.fixture
    def redis_url(self, cluster_url: str) -> str:
        return cluster_url

    @pytest.fixture(params=CLUSTER_VARIANTS)
    def variant(self, request: pytest.FixtureRequest) -> Variant:
        return fast(parse_variant(request.param))

    def test_the_queue_runs_on_the_cluster_with_a_partition_per_master(self, queue: RedisQueue) -> None:
        assert isinstance(queue.client, RedisCluster)
        masters = {node.name for node in queue.client.get_primaries()}
        homes = [queue.client.get_node_from_key(part.keys.marker()).name for part in queue.partitions]
        assert len(masters) == 3
        assert set(homes) == (masters if len(queue.partitions) == 3 else set(homes[:1]))


# -- dequeue modes: what differs is when a waiting worker sees a job, never which job ----
NOTIFY_VARIANTS = ("scripted", "baseline+dequeue=notify", "optimized+dequeue=notify")


def _notify(spec: str) -> Variant:
    # A long wait: every assertion below holds long before it would end, so it only
    # makes the tests robust on a loaded machine, never slower.
    return fast(parse_variant(spec)).with_overrides(notify_timeout_s=10.0)


def _named(queue: RedisQueue) -> RedisQueue:
    """Name the queue's connections (`<namespace>-<consumer>`), so `_wait_until_blocked` can
    tell its clients from any other on a shared server (connections already open, such as
    the one that checked the server, are closed and reopen named)."""
    queue.client.connection_pool.connection_kwargs["client_name"] = f"{queue.namespace}-{queue.consumer}"
    queue.client.connection_pool.disconnect()
    queue.client.connection_pool.reset()  # forget the unnamed connection objects too
    return queue


def _wait_until_blocked(client: redis.Redis, *queues: RedisQueue) -> None:
    """Until each queue's consumer is blocked on the server (inside its wait)."""
    names = {f"{q.namespace}-{q.consumer}" for q in queues}
    deadline = time.monotonic() + 10
    while True:
        blocked = {c["name"] for c in client.client_list() if c["name"] in names and "b" in c["flags"]}
        if blocked == names:
            return
        assert time.monotonic() < deadline, f"never blocked: {sorted(names - blocked)}"
        time.sleep(0.005)


@pytest.mark.parametrize("spec", NOTIFY_VARIANTS)
def test_notify_wakes_every_waiting_consumer_for_a_batch(
    spec: str, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    variant = _notify(spec)
    producer = make_queue(variant, consumer="producer")
    consumers = [
        _named(make_queue(variant, namespace=producer.namespace, consumer=f"c{i}")) for i in range(5)
    ]
    with ThreadPoolExecutor(len(consumers)) as pool:
        calls = [pool.submit(c.dequeue, wait=True) for c in consumers]
        _wait_until_blocked(raw_client, *consumers)
        jobs = [Job(type="fan-out") for _ in range(5)]
        producer.enqueue_many(jobs)
        claimed = [call.result(timeout=30) for call in calls]
    # One enqueue set the marker once; each claim re-arms it while jobs remain.
    assert all(job is not None for job in claimed)
    assert sorted(job.id for job in claimed if job) == sorted(job.id for job in jobs)
    assert [len(_held(c)) for c in consumers] == [1] * 5
    assert producer.client.exists(producer.keys.marker()) == 0  # nothing left to wake for


@pytest.mark.parametrize("spec", NOTIFY_VARIANTS)
def test_notify_gives_a_job_enqueued_during_the_wait_to_that_same_call(
    spec: str, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    variant = _notify(spec)
    consumer = _named(make_queue(variant, consumer="c1"))
    producer = make_queue(variant, namespace=consumer.namespace, consumer="producer")
    consumer.register_consumer()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(consumer.dequeue, wait=True)
        _wait_until_blocked(raw_client, consumer)
        urgent = Job(type="urgent", priority=Priority.HIGH)
        producer.enqueue(urgent)
        job = call.result(timeout=30)
    assert job is not None and job.id == urgent.id


@pytest.mark.parametrize("spec", NOTIFY_VARIANTS)
@pytest.mark.parametrize("source", ["scheduler", "stopping consumer"])
def test_notify_wakes_a_waiting_consumer_for_retries_and_returned_jobs(
    spec: str, source: str, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    variant = _notify(spec)
    waiting = _named(make_queue(variant, consumer="c1"))
    other = make_queue(variant, namespace=waiting.namespace, consumer="c2")
    job = Job(type="comes back")
    other.enqueue(job)
    taken = _take(other)
    if source == "scheduler":
        other.fail(taken, "retry")
    waiting.register_consumer()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(waiting.dequeue, wait=True)
        _wait_until_blocked(raw_client, waiting)
        if source == "scheduler":
            assert other.move_scheduled_to_ready(now=2**62) == 1
        else:
            assert other.unregister_consumer() == 1
        claimed = call.result(timeout=30)
    assert claimed is not None and claimed.id == job.id


@pytest.mark.parametrize("spec", ["scripted", "optimized+dequeue=notify"])
def test_notify_claims_in_priority_order_what_arrives_during_a_wait(
    spec: str, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    # Only for batch modes that push a whole batch before waking anyone (one script
    # or one pipeline); `loop` wakes a waiter after each job, by design.
    variant = _notify(spec)
    consumer = _named(make_queue(variant, consumer="c1"))
    producer = make_queue(variant, namespace=consumer.namespace, consumer="producer")
    consumer.register_consumer()
    batch = [Job(type=p.label, priority=p) for p in (Priority.LOW, Priority.NORMAL, Priority.HIGH)]
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(consumer.dequeue, wait=True)
        _wait_until_blocked(raw_client, consumer)
        producer.enqueue_many(batch)
        job = call.result(timeout=30)
    assert job is not None and job.type == "high"
    assert [_take(consumer).type for _ in range(2)] == ["normal", "low"]


def test_block_mode_serves_a_high_job_only_after_its_low_wait_times_out(
    make_queue: QueueFactory, raw_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's priority inversion, by order of events: a high job that arrives
    while the worker blocks on the low queue waits out that low timeout; the call
    returns nothing and the next call takes it."""
    variant = fast(PRESETS["optimized"]).with_overrides(block_timeouts_s=(0.2, 0.2, 1.0))
    consumer = _named(make_queue(variant, consumer="c1"))
    producer = make_queue(variant, namespace=consumer.namespace, consumer="producer")
    consumer.register_consumer()
    labels = {consumer.keys.queue(p): p.label for p in PRIORITY_ORDER}
    events: list[str] = []
    low_wait_sent = threading.Event()
    real_wait = consumer.client.brpoplpush

    def traced_wait(source: str, destination: str, timeout: float) -> object:
        # Records each real BRPOPLPUSH on the real server, and what it returned.
        events.append(f"wait {labels[source]}")
        if labels[source] == "low":
            low_wait_sent.set()
        job_id = real_wait(source, destination, timeout=timeout)  # type: ignore[arg-type]
        events.append(f"{labels[source]} wait ended: {'job' if job_id else 'timeout'}")
        return job_id

    monkeypatch.setattr(consumer.client, "brpoplpush", traced_wait)
    urgent = Job(type="urgent", priority=Priority.HIGH)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(consumer.dequeue, wait=True)
        assert low_wait_sent.wait(30)
        _wait_until_blocked(raw_client, consumer)
        producer.enqueue(urgent)
        events.append("high job enqueued")
        returned = call.result(timeout=30)
    events.append(f"call returned {returned}")
    assert events == [
        "wait high",
        "high wait ended: timeout",
        "wait normal",
        "normal wait ended: timeout",
        "wait low",
        "high job enqueued",
        "low wait ended: timeout",
        "call returned None",
    ]
    assert _ids(raw_client, consumer.keys.queue(Priority.HIGH)) == [urgent.id]
    events.clear()
    taken = consumer.dequeue(wait=True)
    assert taken is not None and taken.id == urgent.id
    assert events == ["wait high", "high wait ended: job"]


@pytest.mark.parametrize("spec", ["baseline", "optimized"], ids=["poll", "block"])
def test_poll_and_block_check_the_priorities_one_at_a_time(
    spec: str, make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll or block claim checks high, normal and low with one command each: a high
    job that arrives after the high check is not seen by that claim, which takes a
    ready low job. (notify claims with one script: `test_notify_claims_in_priority_order_...`.)"""
    variant = fast(PRESETS[spec])
    consumer = make_queue(variant, consumer="c1")
    producer = make_queue(variant, namespace=consumer.namespace, consumer="producer")
    low, urgent = Job(type="low", priority=Priority.LOW), Job(type="urgent", priority=Priority.HIGH)
    producer.enqueue(low)
    normal_queue = consumer.keys.queue(Priority.NORMAL)
    arrived: list[str] = []
    send = consumer.client.execute_command

    def consumer_sends(*args: Any, **options: Any) -> Any:
        if args[0] in ("RPOPLPUSH", "BRPOPLPUSH") and args[1] == normal_queue and not arrived:
            arrived.append(producer.enqueue(urgent))  # between the high and the normal check
        return send(*args, **options)

    monkeypatch.setattr(consumer.client, "execute_command", consumer_sends)
    taken = consumer.dequeue(wait=True)
    assert arrived == [urgent.id]
    assert taken is not None and taken.id == low.id
    assert _ids(consumer.client, consumer.keys.queue(Priority.HIGH)) == [urgent.id]
    again = consumer.dequeue(wait=True)
    assert again is not None and again.id == urgent.id
