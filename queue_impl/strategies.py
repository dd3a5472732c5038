"""One strategy class per value of the `dequeue` and `batch` toggles.

The queue calls its strategies and nothing else branches on the variant, so each
optimization is measured alone by swapping exactly one class. A strategy sees its
queue only through a `StrategyContext`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.client import Pipeline

from queue_impl.codec import Codec
from queue_impl.config import Variant
from queue_impl.job import PRIORITY_ORDER, Job, Status, as_bytes, as_text
from queue_impl.keys import KeyBuilder
from queue_impl.records import corrupt_reason, corrupt_record
from queue_impl.scripts import Scripts

log = logging.getLogger(__name__)

Claimed = tuple[str, bytes | None]
"""A job id now in the processing list, and its stored record (None when missing)."""


# -- wake-up -------------------------------------------------------------------------
class WakeStrategy(Protocol):
    """How a push tells waiting workers that jobs are ready; chosen by the `dequeue` toggle."""

    def signal(self, target: redis.Redis) -> None:
        """Add the wake-up to `target`: a pipeline, or the client (one round trip)."""
        ...

    def script_flag(self) -> int:
        """The Lua scripts' `notify` argument: 1 when they must set the wake-up marker.

        The scripts declare the marker key in every mode (Redis Cluster wants every key a
        script may touch declared); this flag decides whether they touch it."""
        ...


@dataclass(frozen=True, slots=True)
class NoWake:
    """poll, block: workers look at the queues themselves; there is nothing to signal."""

    keys: KeyBuilder  # unused; every wake strategy is built from the queue's keys

    def signal(self, target: redis.Redis) -> None:
        pass

    def script_flag(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class MarkerWake:
    """notify: set the wake-up marker, the ZSET that waiting workers BZPOPMIN on."""

    keys: KeyBuilder

    def signal(self, target: redis.Redis) -> None:
        target.zadd(self.keys.marker(), {"ready": 0})

    def script_flag(self) -> int:
        return 1


# -- what a strategy may use -----------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class StrategyContext:
    """The part of a queue its strategies use; the queue builds one and shares it."""

    client: redis.Redis
    keys: KeyBuilder
    codec: Codec
    scripts: Scripts
    variant: Variant
    consumer: str
    wake: WakeStrategy

    @property
    def completed_ttl(self) -> int | None:
        """Expiry of a completed record (seconds); None keeps it."""
        return self.variant.completed_ttl_s if self.variant.ttl == "on" else None

    @property
    def dead_ttl(self) -> int | None:
        """Expiry of a dead-lettered record (seconds); None keeps it."""
        return self.variant.dead_ttl_s if self.variant.ttl == "on" else None

    def describe_dead_corrupt(self, job_ids: Sequence[object], where: str) -> None:
        """Give jobs a server-side script dead-lettered as corrupt a wrapper record with
        the reason (the scripts cannot encode one), as the dequeue path does."""
        for value in job_ids:
            job_id = as_text(value)
            data = self.client.get(self.keys.job(job_id))
            raw = None if data is None else as_bytes(data)
            reason = f"{where}: {corrupt_reason(self.codec, job_id, raw) or 'undecodable record'}"
            log.error("dead-lettered job %s: %s", job_id, reason)
            self.client.set(
                self.keys.job(job_id),
                corrupt_record(self.codec, job_id, raw or b"", reason),
                ex=self.dead_ttl,
            )


class DequeueStrategy(Protocol):
    def claim(self, *, wait: bool) -> Claimed | None: ...


class BatchStrategy(Protocol):
    def enqueue_many(self, jobs: Sequence[Job]) -> None: ...
    def complete(self, job: Job) -> bool: ...
    def fail(self, job: Job) -> None: ...
    def move_scheduled(self, now_us: int, limit: int) -> int: ...


# -- dequeue -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PollDequeue:
    """RPOPLPUSH high -> normal -> low; when all are empty, sleep the poll interval."""

    ctx: StrategyContext

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        processing = ctx.keys.processing(ctx.consumer)
        for priority in PRIORITY_ORDER:
            job_id = ctx.client.rpoplpush(ctx.keys.queue(priority), processing)
            if job_id is not None:
                return _with_record(ctx, job_id)
        if wait:
            time.sleep(ctx.variant.poll_interval_s)
        return None


@dataclass(frozen=True, slots=True)
class BlockDequeue:
    """The seed's: BRPOPLPUSH on each priority in turn, with its own timeout each.

    A job that arrives on one priority while the worker blocks on another waits for
    that wait to time out: this is the priority-inversion the harness measures.
    """

    ctx: StrategyContext

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        processing = ctx.keys.processing(ctx.consumer)
        for priority, timeout in zip(PRIORITY_ORDER, ctx.variant.block_timeouts_s, strict=True):
            source = ctx.keys.queue(priority)
            if wait:
                job_id = ctx.client.brpoplpush(source, processing, timeout=timeout)  # type: ignore[arg-type]
            else:
                job_id = ctx.client.rpoplpush(source, processing)
            if job_id is not None:
                return _with_record(ctx, job_id)
        return None


@dataclass(frozen=True, slots=True)
class NotifyDequeue:
    """One atomic claim script; when nothing is ready, one BZPOPMIN on a wake-up marker.

    Producers (and the scheduler) set the marker with every push (`MarkerWake`); the
    claim script keeps it set while jobs remain, so each woken worker wakes the next.
    Wake-up is immediate whatever the priority, and the claim is in strict priority order.
    """

    ctx: StrategyContext

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        claimed = self._claim_now()
        if claimed is not None or not wait:
            return claimed
        deadline = time.monotonic() + ctx.variant.notify_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if ctx.client.bzpopmin(ctx.keys.marker(), timeout=remaining) is None:  # type: ignore[arg-type]
                return None
            claimed = self._claim_now()
            if claimed is not None:
                return claimed
        return None

    def _claim_now(self) -> Claimed | None:
        ctx = self.ctx
        keys = [ctx.keys.queue(p) for p in PRIORITY_ORDER]
        keys += [ctx.keys.processing(ctx.consumer), ctx.keys.marker()]
        result = ctx.scripts.claim(keys=keys, args=[ctx.keys.prefix])
        if not result:
            return None
        job_id, record = result
        return as_text(job_id), _optional_bytes(record or None)


def _with_record(ctx: StrategyContext, job_id: object) -> Claimed:
    job_id_text = as_text(job_id)
    return job_id_text, _optional_bytes(ctx.client.get(ctx.keys.job(job_id_text)))


def _optional_bytes(value: object) -> bytes | None:
    return None if value is None else as_bytes(value)


# -- batch ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoopOps:
    """One round trip per command, as the seed's code did before its PR.

    Not atomic: complete() and fail() write whether or not the job is still held, and
    two schedulers moving at once both queue every due job they read.
    """

    ctx: StrategyContext

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        for job in jobs:
            ctx.client.set(ctx.keys.job(job.id), ctx.codec.encode(job))
            ctx.client.lpush(ctx.keys.queue(job.priority), job.id)
            ctx.wake.signal(ctx.client)

    def complete(self, job: Job) -> bool:
        # LREM -> GET -> SET: 3 round trips.
        ctx = self.ctx
        ctx.client.lrem(ctx.keys.processing(ctx.consumer), 1, job.id)
        stored = _read_for_update(ctx, job)
        _mark_completed(stored, job)
        ctx.client.set(ctx.keys.job(job.id), ctx.codec.encode(stored), ex=ctx.completed_ttl)
        return True

    def fail(self, job: Job) -> None:
        # LREM -> GET -> SET -> ZADD|LPUSH: 4 round trips.
        ctx = self.ctx
        ctx.client.lrem(ctx.keys.processing(ctx.consumer), 1, job.id)
        stored = _read_for_update(ctx, job)
        _copy_failure(stored, job)
        if job.status is Status.SCHEDULED:
            ctx.client.set(ctx.keys.job(job.id), ctx.codec.encode(stored))
            ctx.client.zadd(ctx.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            ctx.client.set(ctx.keys.job(job.id), ctx.codec.encode(stored), ex=ctx.dead_ttl)
            ctx.client.lpush(ctx.keys.dead(), job.id)

    def move_scheduled(self, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + per job (GET + pipeline{SET, LPUSH, ZREM}): 2N+1 round trips.
        ctx = self.ctx
        ids = _due_ids(ctx, now_us, limit)
        for job_id in ids:
            record = _optional_bytes(ctx.client.get(ctx.keys.job(job_id)))
            pipe = ctx.client.pipeline(transaction=False)
            _queue_move(ctx, pipe, job_id, record)
            pipe.execute()
        return len(ids)


@dataclass(frozen=True, slots=True)
class PipelineOps:
    """The seed's PR: reads first (GET / MGET), then one pipeline of writes.

    Not atomic, as `LoopOps`: the reads and the writes are separate round trips.
    """

    ctx: StrategyContext

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        pipe = ctx.client.pipeline(transaction=False)
        for job in jobs:
            pipe.set(ctx.keys.job(job.id), ctx.codec.encode(job))
            pipe.lpush(ctx.keys.queue(job.priority), job.id)
        ctx.wake.signal(pipe)
        pipe.execute()

    def complete(self, job: Job) -> bool:
        # GET -> pipeline{LREM, SET}: 2 round trips.
        ctx = self.ctx
        stored = _read_for_update(ctx, job)
        _mark_completed(stored, job)
        pipe = ctx.client.pipeline(transaction=False)
        pipe.lrem(ctx.keys.processing(ctx.consumer), 1, job.id)
        pipe.set(ctx.keys.job(job.id), ctx.codec.encode(stored), ex=ctx.completed_ttl)
        pipe.execute()
        return True

    def fail(self, job: Job) -> None:
        # GET -> pipeline{LREM, SET, ZADD|LPUSH}: 2 round trips.
        ctx = self.ctx
        stored = _read_for_update(ctx, job)
        _copy_failure(stored, job)
        pipe = ctx.client.pipeline(transaction=False)
        pipe.lrem(ctx.keys.processing(ctx.consumer), 1, job.id)
        if job.status is Status.SCHEDULED:
            pipe.set(ctx.keys.job(job.id), ctx.codec.encode(stored))
            pipe.zadd(ctx.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            pipe.set(ctx.keys.job(job.id), ctx.codec.encode(stored), ex=ctx.dead_ttl)
            pipe.lpush(ctx.keys.dead(), job.id)
        pipe.execute()

    def move_scheduled(self, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + MGET + one pipeline: 3 round trips whatever N.
        ctx = self.ctx
        ids = _due_ids(ctx, now_us, limit)
        if not ids:
            return 0
        records = ctx.client.mget([ctx.keys.job(job_id) for job_id in ids])
        pipe = ctx.client.pipeline(transaction=False)
        for job_id, record in zip(ids, records, strict=True):
            _queue_move(ctx, pipe, job_id, _optional_bytes(record))
        pipe.execute()
        return len(ids)


@dataclass(frozen=True, slots=True)
class ScriptOps:
    """Server-side Lua: one round trip per operation, atomic.

    complete() and fail() act only on a job still in this consumer's processing list;
    the scheduler's ZREM decides which of two concurrent moves queues a job.
    """

    ctx: StrategyContext

    def enqueue_many(self, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        args: list[str | bytes | int] = [ctx.keys.prefix, ctx.wake.script_flag()]
        for job in jobs:
            args += [job.id, job.priority.label, ctx.codec.encode(job)]
        ctx.scripts.enqueue(keys=[ctx.keys.marker()], args=args)

    def complete(self, job: Job) -> bool:
        ctx = self.ctx
        stored = _copy(job)
        _mark_completed(stored, job)
        done = ctx.scripts.complete(
            keys=[ctx.keys.processing(ctx.consumer), ctx.keys.job(job.id)],
            args=[job.id, ctx.codec.encode(stored), ctx.completed_ttl or 0],
        )
        return bool(done)

    def fail(self, job: Job) -> None:
        ctx = self.ctx
        retry = job.status is Status.SCHEDULED
        ctx.scripts.fail(
            keys=[
                ctx.keys.processing(ctx.consumer),
                ctx.keys.job(job.id),
                ctx.keys.scheduled(),
                ctx.keys.dead(),
            ],
            args=[
                job.id,
                ctx.codec.encode(job),
                "retry" if retry else "dead",
                job.scheduled_at_us,
                ctx.dead_ttl or 0,
            ],
        )

    def move_scheduled(self, now_us: int, limit: int) -> int:
        ctx = self.ctx
        moved, dead, *corrupt = ctx.scripts.move_scheduled(
            keys=[ctx.keys.scheduled(), ctx.keys.dead(), ctx.keys.marker()],
            args=[ctx.keys.prefix, ctx.codec.name, now_us, limit, ctx.wake.script_flag()],
        )
        ctx.describe_dead_corrupt(corrupt, "scheduler move")
        return int(moved) + int(dead)


# -- shared record updates -----------------------------------------------------------
def _read_for_update(ctx: StrategyContext, job: Job) -> Job:
    """The stored record (what the seed re-reads before writing); the in-memory job
    if the record is missing or unreadable, so a completion is never lost."""
    data = ctx.client.get(ctx.keys.job(job.id))
    if data is None:
        return _copy(job)
    try:
        return ctx.codec.decode(as_bytes(data))
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


def _due_ids(ctx: StrategyContext, now_us: int, limit: int) -> list[str]:
    raw = ctx.client.zrangebyscore(ctx.keys.scheduled(), "-inf", now_us, start=0, num=limit)
    return [as_text(job_id) for job_id in raw]


def _queue_move(ctx: StrategyContext, pipe: Pipeline, job_id: str, record: bytes | None) -> None:
    """Queue the writes that move one due job: SET record, LPUSH queue, ZREM scheduled.

    A missing or undecodable record is dead-lettered instead (never dropped)."""
    job = None
    if record is not None:
        try:
            job = ctx.codec.decode(record)
        except ValueError:
            job = None
    if job is None:
        reason = f"scheduler move: {corrupt_reason(ctx.codec, job_id, record) or 'undecodable record'}"
        pipe.set(
            ctx.keys.job(job_id), corrupt_record(ctx.codec, job_id, record or b"", reason), ex=ctx.dead_ttl
        )
        pipe.lpush(ctx.keys.dead(), job_id)
    else:
        job.status = Status.QUEUED
        pipe.set(ctx.keys.job(job_id), ctx.codec.encode(job))
        pipe.lpush(ctx.keys.queue(job.priority), job_id)
        ctx.wake.signal(pipe)
    pipe.zrem(ctx.keys.scheduled(), job_id)


DEQUEUE_STRATEGIES: dict[str, type[PollDequeue] | type[BlockDequeue] | type[NotifyDequeue]] = {
    "poll": PollDequeue,
    "block": BlockDequeue,
    "notify": NotifyDequeue,
}
WAKE_STRATEGIES: dict[str, type[NoWake] | type[MarkerWake]] = {
    "poll": NoWake,
    "block": NoWake,
    "notify": MarkerWake,
}
"""Keyed by the `dequeue` toggle too: only notify-mode workers wait for a signal."""
BATCH_STRATEGIES: dict[str, type[LoopOps] | type[PipelineOps] | type[ScriptOps]] = {
    "loop": LoopOps,
    "pipeline": PipelineOps,
    "script": ScriptOps,
}
