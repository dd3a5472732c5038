"""One strategy class per value of the `dequeue` and `batch` toggles.

The queue calls its strategies and nothing else branches on the variant, so each
optimization is measured alone by swapping exactly one class.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from redis.client import Pipeline

from queue_impl.job import PRIORITY_ORDER, Job, Status, as_bytes, as_text

if TYPE_CHECKING:
    from queue_impl.queue import RedisQueue

Claimed = tuple[str, bytes | None]
"""A job id now in the processing list, and its stored record (None when missing)."""


class DequeueStrategy(Protocol):
    def claim(self, *, wait: bool) -> Claimed | None: ...


class BatchStrategy(Protocol):
    def enqueue_many(self, jobs: Sequence[Job]) -> None: ...
    def complete(self, job: Job) -> bool: ...
    def fail(self, job: Job) -> None: ...
    def move_scheduled(self, now_us: int, limit: int) -> int: ...


# -- dequeue -------------------------------------------------------------------------
class PollDequeue:
    """RPOPLPUSH high -> normal -> low; when all are empty, sleep the poll interval."""

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def claim(self, *, wait: bool) -> Claimed | None:
        q = self.q
        processing = q.keys.processing(q.consumer)
        for priority in PRIORITY_ORDER:
            job_id = q.client.rpoplpush(q.keys.queue(priority), processing)
            if job_id is not None:
                return _with_record(q, job_id)
        if wait:
            time.sleep(q.variant.poll_interval_s)
        return None


class BlockDequeue:
    """The seed's: BRPOPLPUSH on each priority in turn, with its own timeout each.

    A job that arrives on one priority while the worker blocks on another waits for
    that wait to time out: this is the priority-inversion the harness measures.
    """

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def claim(self, *, wait: bool) -> Claimed | None:
        q = self.q
        processing = q.keys.processing(q.consumer)
        for priority, timeout in zip(PRIORITY_ORDER, q.variant.block_timeouts_s, strict=True):
            source = q.keys.queue(priority)
            if wait:
                job_id = q.client.brpoplpush(source, processing, timeout=timeout)  # type: ignore[arg-type]
            else:
                job_id = q.client.rpoplpush(source, processing)
            if job_id is not None:
                return _with_record(q, job_id)
        return None


class NotifyDequeue:
    """One atomic claim script; when nothing is ready, one BZPOPMIN on a wake-up marker.

    Producers (and the scheduler) set the marker with every push; the claim script
    keeps it set while jobs remain, so each woken worker wakes the next. Wake-up is
    immediate whatever the priority, and the claim is in strict priority order.
    """

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def claim(self, *, wait: bool) -> Claimed | None:
        q = self.q
        claimed = self._claim_now()
        if claimed is not None or not wait:
            return claimed
        deadline = time.monotonic() + q.variant.notify_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if q.client.bzpopmin(q.keys.marker(), timeout=remaining) is None:  # type: ignore[arg-type]
                return None
            claimed = self._claim_now()
            if claimed is not None:
                return claimed
        return None

    def _claim_now(self) -> Claimed | None:
        q = self.q
        keys = [q.keys.queue(p) for p in PRIORITY_ORDER]
        keys += [q.keys.processing(q.consumer), q.keys.marker()]
        result = q.scripts.claim(keys=keys, args=[q.keys.prefix])
        if not result:
            return None
        job_id, record = result
        return as_text(job_id), _optional_bytes(record or None)


def _with_record(q: RedisQueue, job_id: object) -> Claimed:
    job_id_text = as_text(job_id)
    return job_id_text, _optional_bytes(q.client.get(q.keys.job(job_id_text)))


def _optional_bytes(value: object) -> bytes | None:
    return None if value is None else as_bytes(value)


# -- batch ---------------------------------------------------------------------------
class LoopOps:
    """One round trip per command, as the seed's code did before its PR."""

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        q = self.q
        for job in jobs:
            q.client.set(q.keys.job(job.id), q.codec.encode(job))
            q.client.lpush(q.keys.queue(job.priority), job.id)
            if q.notify:
                q.client.zadd(q.keys.marker(), {"ready": 0})

    def complete(self, job: Job) -> bool:
        # LREM -> GET -> SET: 3 round trips.
        q = self.q
        q.client.lrem(q.keys.processing(q.consumer), 1, job.id)
        stored = _read_for_update(q, job)
        _mark_completed(stored, job)
        q.client.set(q.keys.job(job.id), q.codec.encode(stored), ex=q.completed_ttl())
        return True

    def fail(self, job: Job) -> None:
        # LREM -> GET -> SET -> ZADD|LPUSH: 4 round trips.
        q = self.q
        q.client.lrem(q.keys.processing(q.consumer), 1, job.id)
        stored = _read_for_update(q, job)
        _copy_failure(stored, job)
        if job.status is Status.SCHEDULED:
            q.client.set(q.keys.job(job.id), q.codec.encode(stored))
            q.client.zadd(q.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            q.client.set(q.keys.job(job.id), q.codec.encode(stored), ex=q.dead_ttl())
            q.client.lpush(q.keys.dead(), job.id)

    def move_scheduled(self, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + per job (GET + pipeline{SET, LPUSH, ZREM}): 2N+1 round trips.
        q = self.q
        ids = _due_ids(q, now_us, limit)
        for job_id in ids:
            record = _optional_bytes(q.client.get(q.keys.job(job_id)))
            pipe = q.client.pipeline(transaction=False)
            _queue_move(q, pipe, job_id, record)
            pipe.execute()
        return len(ids)


class PipelineOps:
    """The seed's PR: reads first (GET / MGET), then one pipeline of writes."""

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        q = self.q
        pipe = q.client.pipeline(transaction=False)
        for job in jobs:
            pipe.set(q.keys.job(job.id), q.codec.encode(job))
            pipe.lpush(q.keys.queue(job.priority), job.id)
        if q.notify:
            pipe.zadd(q.keys.marker(), {"ready": 0})
        pipe.execute()

    def complete(self, job: Job) -> bool:
        # GET -> pipeline{LREM, SET}: 2 round trips.
        q = self.q
        stored = _read_for_update(q, job)
        _mark_completed(stored, job)
        pipe = q.client.pipeline(transaction=False)
        pipe.lrem(q.keys.processing(q.consumer), 1, job.id)
        pipe.set(q.keys.job(job.id), q.codec.encode(stored), ex=q.completed_ttl())
        pipe.execute()
        return True

    def fail(self, job: Job) -> None:
        # GET -> pipeline{LREM, SET, ZADD|LPUSH}: 2 round trips.
        q = self.q
        stored = _read_for_update(q, job)
        _copy_failure(stored, job)
        pipe = q.client.pipeline(transaction=False)
        pipe.lrem(q.keys.processing(q.consumer), 1, job.id)
        if job.status is Status.SCHEDULED:
            pipe.set(q.keys.job(job.id), q.codec.encode(stored))
            pipe.zadd(q.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            pipe.set(q.keys.job(job.id), q.codec.encode(stored), ex=q.dead_ttl())
            pipe.lpush(q.keys.dead(), job.id)
        pipe.execute()

    def move_scheduled(self, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + MGET + one pipeline: 3 round trips whatever N.
        q = self.q
        ids = _due_ids(q, now_us, limit)
        if not ids:
            return 0
        records = q.client.mget([q.keys.job(job_id) for job_id in ids])
        pipe = q.client.pipeline(transaction=False)
        for job_id, record in zip(ids, records, strict=True):
            _queue_move(q, pipe, job_id, _optional_bytes(record))
        pipe.execute()
        return len(ids)


class ScriptOps:
    """Server-side Lua: one round trip per operation, atomic."""

    def __init__(self, queue: RedisQueue) -> None:
        self.q = queue

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        q = self.q
        args: list[str | bytes | int] = [q.keys.prefix, int(q.notify)]
        for job in jobs:
            args += [job.id, job.priority.label, q.codec.encode(job)]
        q.scripts.enqueue(keys=[q.keys.marker()], args=args)

    def complete(self, job: Job) -> bool:
        q = self.q
        stored = _copy(job)
        _mark_completed(stored, job)
        done = q.scripts.complete(
            keys=[q.keys.processing(q.consumer), q.keys.job(job.id)],
            args=[job.id, q.codec.encode(stored), q.completed_ttl() or 0],
        )
        return bool(done)

    def fail(self, job: Job) -> None:
        q = self.q
        retry = job.status is Status.SCHEDULED
        q.scripts.fail(
            keys=[q.keys.processing(q.consumer), q.keys.job(job.id), q.keys.scheduled(), q.keys.dead()],
            args=[
                job.id,
                q.codec.encode(job),
                "retry" if retry else "dead",
                job.scheduled_at_us,
                q.dead_ttl() or 0,
            ],
        )

    def move_scheduled(self, now_us: int, limit: int) -> int:
        q = self.q
        moved, dead, *corrupt = q.scripts.move_scheduled(
            keys=[q.keys.scheduled(), q.keys.dead(), q.keys.marker()],
            args=[q.keys.prefix, q.codec.name, now_us, limit, int(q.notify)],
        )
        q.describe_dead_corrupt(corrupt, "scheduler move")
        return int(moved) + int(dead)


# -- shared record updates -----------------------------------------------------------
def _read_for_update(q: RedisQueue, job: Job) -> Job:
    """The stored record (what the seed re-reads before writing); the in-memory job
    if the record is missing or unreadable, so a completion is never lost."""
    data = q.client.get(q.keys.job(job.id))
    if data is None:
        return _copy(job)
    try:
        return q.codec.decode(as_bytes(data))
    except ValueError:
        return _copy(job)


def _copy(job: Job) -> Job:
    return Job(
        id=job.id,
        type=job.type,
        payload=job.payload,
        priority=job.priority,
        max_retries=job.max_retries,
        attempts=job.attempts,
        created_at_us=job.created_at_us,
        scheduled_at_us=job.scheduled_at_us,
        started_at_us=job.started_at_us,
        finished_at_us=job.finished_at_us,
        last_error=job.last_error,
        status=job.status,
    )


def _mark_completed(stored: Job, job: Job) -> None:
    stored.status = Status.COMPLETED
    stored.started_at_us = job.started_at_us
    stored.finished_at_us = time.time_ns() // 1000


def _copy_failure(stored: Job, job: Job) -> None:
    stored.status = job.status
    stored.attempts = job.attempts
    stored.last_error = job.last_error
    stored.started_at_us = job.started_at_us
    stored.finished_at_us = job.finished_at_us
    stored.scheduled_at_us = job.scheduled_at_us


def _due_ids(q: RedisQueue, now_us: int, limit: int) -> list[str]:
    raw = q.client.zrangebyscore(q.keys.scheduled(), "-inf", now_us, start=0, num=limit)
    return [as_text(job_id) for job_id in raw]


def _queue_move(q: RedisQueue, pipe: Pipeline, job_id: str, record: bytes | None) -> None:
    """Queue the writes that move one due job: SET record, LPUSH queue, ZREM scheduled.

    A missing or undecodable record is dead-lettered instead (never dropped)."""
    job = None
    if record is not None:
        try:
            job = q.codec.decode(record)
        except ValueError:
            job = None
    if job is None:
        reason = f"scheduler move: {q.corrupt_reason(job_id, record) or 'undecodable record'}"
        pipe.set(q.keys.job(job_id), q.corrupt_wrapper(job_id, record or b"", reason), ex=q.dead_ttl())
        pipe.lpush(q.keys.dead(), job_id)
    else:
        job.status = Status.QUEUED
        pipe.set(q.keys.job(job_id), q.codec.encode(job))
        pipe.lpush(q.keys.queue(job.priority), job_id)
        if q.notify:
            pipe.zadd(q.keys.marker(), {"ready": 0})
    pipe.zrem(q.keys.scheduled(), job_id)


DEQUEUE_STRATEGIES: dict[str, type[PollDequeue] | type[BlockDequeue] | type[NotifyDequeue]] = {
    "poll": PollDequeue,
    "block": BlockDequeue,
    "notify": NotifyDequeue,
}
BATCH_STRATEGIES: dict[str, type[LoopOps] | type[PipelineOps] | type[ScriptOps]] = {
    "loop": LoopOps,
    "pipeline": PipelineOps,
    "script": ScriptOps,
}
