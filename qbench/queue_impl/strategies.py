"""One strategy class per value of the `dequeue` and `batch` toggles (`records`: record_stores.py).

The queue calls its strategies and nothing else branches on the variant, so each
optimization is measured alone by swapping exactly one class. A strategy sees its
queue only through a `StrategyContext`, and works on one `Partition` at a time (a
queue of P partitions is P queues in P hash-tagged slots, sharing one client).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.codec import Codec
from qbench.queue_impl.config import Variant
from qbench.queue_impl.hops import TRACE as _TRACE
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Status, as_bytes, as_text
from qbench.queue_impl.keys import KeyBuilder
from qbench.queue_impl.pinned import Calls
from qbench.queue_impl.record_stores import RECORD_STORES, RecordStore
from qbench.queue_impl.records import corrupt_reason, corrupt_record
from qbench.queue_impl.scripts import LuaScript, Scripts

__all__ = ["RECORD_STORES", "RecordStore"]  # the `records` toggle's classes live in record_stores

log = logging.getLogger(__name__)

QUEUE_OFFSET = {priority: i for i, priority in enumerate(PRIORITY_ORDER)}
"""Where a priority's queue key sits among the three the scripts are given."""


# -- partitions ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Partition:
    """One hash-tagged slice of a queue: a full queue in one slot (queues, processing
    lists, scheduled set, dead list, marker, consumers, heartbeats, records)."""

    index: int
    keys: KeyBuilder
    records: RecordStore


def partition_index(job_id: str, partitions: int) -> int:
    """The partition a job id belongs to: the same in every process (CRC-32 of the id)."""
    return 0 if partitions == 1 else zlib.crc32(job_id.encode()) % partitions


# -- wake-up -------------------------------------------------------------------------
class WakeStrategy(Protocol):
    """How a push tells waiting workers that jobs are ready; chosen by the `dequeue` toggle."""

    def signal(self, target: RedisClient, keys: KeyBuilder) -> None:
        """Add the wake-up of `keys`' partition to `target`: a pipeline, or the client."""
        ...

    def script_flag(self) -> int:
        """The Lua scripts' `notify` argument: 1 when they must set the wake-up marker.

        The scripts declare the marker key in every mode (Redis Cluster wants every key a
        script may touch declared); this flag decides whether they touch it."""
        ...


@dataclass(frozen=True, slots=True)
class NoWake:
    """poll, block: workers look at the queues themselves; there is nothing to signal."""

    def signal(self, target: RedisClient, keys: KeyBuilder) -> None:
        pass

    def script_flag(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class MarkerWake:
    """notify: set the partition's wake-up marker, the ZSET that waiting workers BZPOPMIN on."""

    def signal(self, target: RedisClient, keys: KeyBuilder) -> None:
        target.zadd(keys.marker(), {"ready": 0})

    def script_flag(self) -> int:
        return 1


# -- durability ----------------------------------------------------------------------
class NotReplicatedError(redis.RedisError):
    """durability=replica: the primary has the enqueue, but no replica acknowledged it within
    `durability_timeout_s`. The jobs are queued (nothing is undone); a failover now could
    lose them. A producer that enqueues again gets at-least-once, with a duplicate when
    the first copy survives."""


@dataclass(slots=True)
class Durability:
    """The `durability` toggle: how many replicas a write waits for (0: none), and what a
    write that none acknowledged in time does.

    enqueue raises `NotReplicatedError`: a lost enqueue is a lost job, and only the
    producer can send it again. complete and fail do not raise: their write is on the
    primary, and losing it in a failover means the job runs once more (it is still held
    there, and stale recovery returns it), which at-least-once delivery already allows;
    raising would make the worker repeat an acknowledgement the primary already has.
    They are counted (`unreplicated_acks`) and logged instead.
    """

    replicas: int
    timeout_ms: int
    unreplicated_acks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, variant: Variant) -> Durability:
        replicas = 1 if variant.durability == "replica" else 0
        return cls(replicas=replicas, timeout_ms=max(1, round(variant.durability_timeout_s * 1000)))

    @property
    def on(self) -> bool:
        return self.replicas > 0

    def add_wait(self, pipe: Any) -> None:
        """Append the WAIT to a pipeline of writes (same connection, same round trip)."""
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)

    def enqueued(self, acked: object, job_ids: Sequence[str]) -> None:
        if int(acked) < self.replicas:  # type: ignore[call-overload]
            shown = ", ".join(job_ids[:3]) + (f" and {len(job_ids) - 3} more" if len(job_ids) > 3 else "")
            raise NotReplicatedError(
                f"enqueue of {len(job_ids)} job(s) ({shown}) is on the primary but {int(acked)} of "  # type: ignore[call-overload]
                f"{self.replicas} replica(s) acknowledged it within {self.timeout_ms} ms"
            )

    def acknowledged(self, acked: object, job_ids: Sequence[str], what: str) -> None:
        if int(acked) < self.replicas:  # type: ignore[call-overload]
            with self._lock:
                self.unreplicated_acks += len(job_ids)
            log.warning(
                "%s of %d job(s) not acknowledged by a replica within %d ms (a failover now runs them again)",
                what,
                len(job_ids),
                self.timeout_ms,
            )


# -- what a strategy may use -----------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class StrategyContext:
    """The part of a queue its strategies use; the queue builds one and shares it."""

    client: RedisClient
    partitions: tuple[Partition, ...]
    codec: Codec
    scripts: Scripts
    variant: Variant
    consumer: str
    wake: WakeStrategy
    calls: Calls
    """The scripts' and blocking waits' path to Redis (the `conn` toggle)."""
    durability: Durability
    _turns: Iterator[int] = field(default_factory=itertools.count)

    @property
    def completed_ttl(self) -> int | None:
        """Expiry of a completed record (seconds); None keeps it."""
        return self.variant.completed_ttl_s if self.variant.ttl == "on" else None

    @property
    def dead_ttl(self) -> int | None:
        """Expiry of a dead-lettered record (seconds); None keeps it."""
        return self.variant.dead_ttl_s if self.variant.ttl == "on" else None

    def partition_for(self, job_id: str) -> Partition:
        return self.partitions[partition_index(job_id, len(self.partitions))]

    def rotation(self, first: int | None = None) -> tuple[Partition, ...]:
        """Every partition once, starting at `first`, else at the next in turn: successive
        claims start one partition further on, so every partition is served alike."""
        count = len(self.partitions)
        if count == 1:
            return self.partitions
        start = next(self._turns) % count if first is None else first
        return self.partitions[start:] + self.partitions[:start]

    def describe_dead_corrupt(self, part: Partition, job_ids: Sequence[object], where: str) -> None:
        """Give jobs a server-side script dead-lettered as corrupt a wrapper record with
        the reason (the scripts cannot encode one), as the dequeue path does."""
        for value in job_ids:
            job_id = as_text(value)
            raw = part.records.get(self.client, job_id)
            reason = f"{where}: {corrupt_reason(self.codec, job_id, raw) or 'undecodable record'}"
            log.error("dead-lettered job %s: %s", job_id, reason)
            part.records.put(
                self.client, job_id, corrupt_record(self.codec, job_id, raw or b"", reason), ttl=self.dead_ttl
            )


Claimed = tuple[Partition, str, bytes | None]
"""The partition, a job id now in its processing list, and its stored record (None when missing)."""


class DequeueStrategy(Protocol):
    def claim(self, *, wait: bool) -> Claimed | None: ...
    def claim_many(
        self, n: int, *, wait: bool, home: int | None = None, look_first: bool = True
    ) -> list[Claimed]: ...


class BatchStrategy(Protocol):
    def enqueue_many(self, part: Partition, jobs: Sequence[Job]) -> None: ...
    def complete(self, part: Partition, job: Job) -> bool: ...
    def complete_many(self, part: Partition, jobs: Sequence[Job]) -> int: ...
    def fail(self, part: Partition, job: Job) -> None: ...
    def move_scheduled(self, part: Partition, now_us: int, limit: int) -> int: ...


# -- dequeue -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PollDequeue:
    """RPOPLPUSH high -> normal -> low (per partition, in rotation); when all are empty,
    sleep the poll interval. An empty pass costs 3 round trips per partition."""

    ctx: StrategyContext

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        for part in ctx.rotation():
            processing = part.keys.processing(ctx.consumer)
            for priority in PRIORITY_ORDER:
                job_id = ctx.client.rpoplpush(part.keys.queue(priority), processing)
                if job_id is not None:
                    return _with_record(ctx, part, job_id)
        if wait:
            time.sleep(ctx.variant.poll_interval_s)
        return None

    def claim_many(
        self, n: int, *, wait: bool, home: int | None = None, look_first: bool = True
    ) -> list[Claimed]:
        return _one_at_a_time(self, n, wait=wait)


@dataclass(frozen=True, slots=True)
class BlockDequeue:
    """The seed's: BRPOPLPUSH on each priority in turn, with its own timeout each (per
    partition, in rotation: one wait cycle is P times the seed's 1 s + 1 s + 3 s).

    A job that arrives on one priority while the worker blocks on another waits for
    that wait to time out: this is the priority-inversion the harness measures.
    """

    ctx: StrategyContext

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        for part in ctx.rotation():
            processing = part.keys.processing(ctx.consumer)
            for priority, timeout in zip(PRIORITY_ORDER, ctx.variant.block_timeouts_s, strict=True):
                source = part.keys.queue(priority)
                if wait:
                    job_id = ctx.client.brpoplpush(source, processing, timeout=timeout)  # type: ignore[arg-type]
                else:
                    job_id = ctx.client.rpoplpush(source, processing)
                if job_id is not None:
                    return _with_record(ctx, part, job_id)
        return None

    def claim_many(
        self, n: int, *, wait: bool, home: int | None = None, look_first: bool = True
    ) -> list[Claimed]:
        return _one_at_a_time(self, n, wait=wait)


def _one_at_a_time(strategy: DequeueStrategy, n: int, *, wait: bool) -> list[Claimed]:
    """Up to `n` claims of one job each; only the first may wait."""
    claimed: list[Claimed] = []
    while len(claimed) < n:
        one = strategy.claim(wait=wait and not claimed)
        if one is None:
            break
        claimed.append(one)
    return claimed


@dataclass(frozen=True, slots=True)
class NotifyDequeue:
    """One atomic claim script per partition; when nothing is ready, one BZPOPMIN on a
    wake-up marker.

    Producers (and the scheduler) set their partition's marker with every push
    (`MarkerWake`); the claim script keeps it set while jobs remain, so each woken worker
    wakes the next. Wake-up is immediate whatever the priority, and the claim is in
    strict priority order within a partition. With P partitions each worker thread
    waits on one home partition's marker (threads of all processes take homes in one
    round robin, `_home`, so every partition has waiters once there are P of them), and a
    claim tries every partition, the woken one first: one blocking call, never a poll of
    P keys. Only a partition's waiters wake for its jobs: a job pushed to a partition whose
    waiters are all busy (or that has none: fewer worker threads than partitions) waits
    for the next claim, at the latest when a wait times out (`notify_timeout_s`); that
    sweep costs P claim scripts per idle worker per timeout.
    """

    ctx: StrategyContext
    _homes: threading.local = field(default_factory=threading.local)

    def claim(self, *, wait: bool) -> Claimed | None:
        ctx = self.ctx
        claimed = self._claim_now(ctx.rotation())
        if claimed is not None or not wait:
            return claimed
        home = self._home()
        deadline = time.monotonic() + ctx.variant.notify_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            woke = ctx.calls.bzpopmin(home.keys.marker(), remaining)
            if _TRACE is not None:
                _TRACE.woke()
            if woke is None:
                return None
            claimed = self._claim_now(ctx.rotation(home.index))
            if claimed is not None:
                return claimed
        return None

    def claim_many(
        self, n: int, *, wait: bool, home: int | None = None, look_first: bool = True
    ) -> list[Claimed]:
        """Up to `n` jobs in one claim script per partition tried (`home` first, when
        given); when none is ready and `wait`, one BZPOPMIN of up to `notify_timeout_s`
        on the home partition's marker (`home`, else this thread's). `look_first=False`
        goes straight to the wait (the caller's last claim found nothing): an idle
        waiter then costs one BZPOPMIN and one sweep per timeout."""
        ctx = self.ctx
        claimed = self._claim_batch(ctx.rotation(home), n) if look_first or not wait else []
        if claimed or not wait:
            return claimed
        part = self._home() if home is None else ctx.partitions[home]
        if ctx.variant.wait_claim == "pipelined":
            return self._wait_and_claim(part, n)
        woke = ctx.calls.bzpopmin(part.keys.marker(), ctx.variant.notify_timeout_s)
        if _TRACE is not None:
            _TRACE.woke()
        if woke is None:
            # A timeout: sweep once (jobs a producer without a marker pushed, or a
            # partition without waiters).
            return self._claim_batch(ctx.rotation(), n)
        return self._claim_batch(ctx.rotation(part.index), n)

    def _wait_and_claim(self, part: Partition, n: int) -> list[Claimed]:
        """wait_claim=pipelined: the BZPOPMIN on `part`'s marker and `part`'s claim script in
        one write (Redis runs the claim as soon as the wait returns, woken or timed out),
        then, with partitions, the others in turn until `n` (what `apart` claims after a
        wake-up or a timeout, `part` first)."""
        ctx = self.ctx
        script = ctx.scripts.claim_many
        woke, flat = ctx.calls.bzpopmin_then_script(
            part.keys.marker(),
            ctx.variant.notify_timeout_s,
            script.source,
            script.sha,
            self._claim_keys(part),
            [n],
        )
        if _TRACE is not None:
            _TRACE.woke()
        claimed = self._claimed_from(part, flat)
        if len(claimed) < n and len(ctx.partitions) > 1:
            order = ctx.rotation() if woke is None else ctx.rotation(part.index)
            claimed += self._claim_batch([p for p in order if p is not part], n - len(claimed))
        return claimed

    def _claim_keys(self, part: Partition) -> list[str]:
        queues = [part.keys.queue(p) for p in PRIORITY_ORDER]
        processing = part.keys.processing(self.ctx.consumer)
        return [*queues, processing, part.keys.marker(), *part.records.claim_keys()]

    def _claimed_from(self, part: Partition, flat: Sequence[Any]) -> list[Claimed]:
        """The claims of one claim_many reply (id, record, id, record...)."""
        pairs = list(zip(flat[::2], flat[1::2], strict=True))
        records = part.records.claimed_records(
            self.ctx.client, [as_text(i) for i, _ in pairs], [r for _, r in pairs]
        )
        return [(part, as_text(job_id), record) for (job_id, _), record in zip(pairs, records, strict=True)]

    def _claim_batch(self, order: Sequence[Partition], n: int) -> list[Claimed]:
        ctx = self.ctx
        claimed: list[Claimed] = []
        for part in order:
            flat = ctx.scripts.claim_many(keys=self._claim_keys(part), args=[n - len(claimed)])
            claimed += self._claimed_from(part, flat)
            if len(claimed) >= n:
                break
        return claimed

    def _home(self) -> Partition:
        """This thread's home partition, taken once per thread in one round robin over
        every waiting thread of every process (an INCR on the first partition)."""
        parts = self.ctx.partitions
        if len(parts) == 1:
            return parts[0]
        index: int | None = getattr(self._homes, "index", None)
        if index is None:
            taken = int(self.ctx.client.incr(parts[0].keys.homes()))
            index = self._homes.index = (taken - 1) % len(parts)
        return parts[index]

    def _claim_now(self, order: Sequence[Partition]) -> Claimed | None:
        ctx = self.ctx
        for part in order:
            keys = [part.keys.queue(p) for p in PRIORITY_ORDER]
            keys += [part.keys.processing(ctx.consumer), part.keys.marker(), *part.records.claim_keys()]
            result = ctx.scripts.claim(keys=keys, args=[])
            if result:
                job_id = as_text(result[0])
                return part, job_id, part.records.claimed_record(ctx.client, job_id, result[1])
        return None


def _with_record(ctx: StrategyContext, part: Partition, job_id: object) -> Claimed:
    job_id_text = as_text(job_id)
    return part, job_id_text, part.records.get(ctx.client, job_id_text)


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

    def enqueue_many(self, part: Partition, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        for job in jobs:
            part.records.put(ctx.client, job.id, ctx.codec.encode(job), ttl=None)
            ctx.client.lpush(part.keys.queue(job.priority), job.id)
            ctx.wake.signal(ctx.client, part.keys)

    def complete(self, part: Partition, job: Job) -> bool:
        # LREM -> GET -> SET: 3 round trips (retention=delete: LREM -> DEL, 2).
        ctx = self.ctx
        ctx.client.lrem(part.keys.processing(ctx.consumer), 1, job.id)
        if ctx.variant.retention == "delete":
            part.records.delete(ctx.client, job.id)
            return True
        stored = _read_for_update(ctx, part, job)
        _mark_completed(stored, job)
        part.records.put(ctx.client, job.id, ctx.codec.encode(stored), ttl=ctx.completed_ttl)
        return True

    def complete_many(self, part: Partition, jobs: Sequence[Job]) -> int:
        return sum(self.complete(part, job) for job in jobs)

    def fail(self, part: Partition, job: Job) -> None:
        # LREM -> GET -> SET -> ZADD|LPUSH: 4 round trips.
        ctx = self.ctx
        ctx.client.lrem(part.keys.processing(ctx.consumer), 1, job.id)
        stored = _read_for_update(ctx, part, job)
        _copy_failure(stored, job)
        if job.status is Status.SCHEDULED:
            part.records.put(ctx.client, job.id, ctx.codec.encode(stored), ttl=None)
            ctx.client.zadd(part.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            part.records.put(ctx.client, job.id, ctx.codec.encode(stored), ttl=ctx.dead_ttl)
            ctx.client.lpush(part.keys.dead(), job.id)

    def move_scheduled(self, part: Partition, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + per job (GET + pipeline{SET, LPUSH, ZREM}): 2N+1 round trips.
        ctx = self.ctx
        ids = _due_ids(ctx, part, now_us, limit)
        for job_id in ids:
            record = part.records.get(ctx.client, job_id)
            pipe = ctx.client.pipeline(transaction=False)
            _queue_move(ctx, part, pipe, job_id, record)
            pipe.execute()
        return len(ids)


@dataclass(frozen=True, slots=True)
class PipelineOps:
    """The seed's PR: reads first (GET / MGET), then one pipeline of writes.

    Not atomic, as `LoopOps`: the reads and the writes are separate round trips.
    """

    ctx: StrategyContext

    def enqueue_many(self, part: Partition, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        pipe = ctx.client.pipeline(transaction=False)
        for job in jobs:
            part.records.put(pipe, job.id, ctx.codec.encode(job), ttl=None)
            pipe.lpush(part.keys.queue(job.priority), job.id)
        ctx.wake.signal(pipe, part.keys)
        if ctx.durability.on:
            ctx.durability.add_wait(pipe)
            ctx.durability.enqueued(pipe.execute()[-1], [job.id for job in jobs])
        else:
            pipe.execute()

    def complete(self, part: Partition, job: Job) -> bool:
        # GET -> pipeline{LREM, SET}: 2 round trips (retention=delete: pipeline{LREM, DEL}, 1).
        ctx = self.ctx
        pipe = ctx.client.pipeline(transaction=False)
        pipe.lrem(part.keys.processing(ctx.consumer), 1, job.id)
        if ctx.variant.retention == "delete":
            part.records.delete(pipe, job.id)
        else:
            stored = _read_for_update(ctx, part, job)
            _mark_completed(stored, job)
            part.records.put(pipe, job.id, ctx.codec.encode(stored), ttl=ctx.completed_ttl)
        _execute_ack(ctx, pipe, [job.id], "complete")
        return True

    def complete_many(self, part: Partition, jobs: Sequence[Job]) -> int:
        return sum(self.complete(part, job) for job in jobs)

    def fail(self, part: Partition, job: Job) -> None:
        # GET -> pipeline{LREM, SET, ZADD|LPUSH}: 2 round trips.
        ctx = self.ctx
        stored = _read_for_update(ctx, part, job)
        _copy_failure(stored, job)
        pipe = ctx.client.pipeline(transaction=False)
        pipe.lrem(part.keys.processing(ctx.consumer), 1, job.id)
        if job.status is Status.SCHEDULED:
            part.records.put(pipe, job.id, ctx.codec.encode(stored), ttl=None)
            pipe.zadd(part.keys.scheduled(), {job.id: job.scheduled_at_us})
        else:
            part.records.put(pipe, job.id, ctx.codec.encode(stored), ttl=ctx.dead_ttl)
            pipe.lpush(part.keys.dead(), job.id)
        _execute_ack(ctx, pipe, [job.id], "fail")

    def move_scheduled(self, part: Partition, now_us: int, limit: int) -> int:
        # ZRANGEBYSCORE + MGET + one pipeline: 3 round trips whatever N.
        ctx = self.ctx
        ids = _due_ids(ctx, part, now_us, limit)
        if not ids:
            return 0
        records = part.records.get_many(ctx.client, ids)
        pipe = ctx.client.pipeline(transaction=False)
        for job_id, record in zip(ids, records, strict=True):
            _queue_move(ctx, part, pipe, job_id, record)
        pipe.execute()
        return len(ids)


def _execute_ack(ctx: StrategyContext, pipe: Any, job_ids: Sequence[str], what: str) -> None:
    """Run an acknowledgement's pipeline, with the WAIT of durability=replica at its end."""
    if not ctx.durability.on:
        pipe.execute()
        return
    ctx.durability.add_wait(pipe)
    ctx.durability.acknowledged(pipe.execute()[-1], job_ids, what)


def _run_script(
    ctx: StrategyContext, script: LuaScript, keys: Sequence[str], args: Sequence[str | bytes | int]
) -> tuple[Any, int]:
    """The script's reply, and how many replicas acknowledged its writes (durability=replica:
    WAIT in the same round trip; off: the replicas asked for, 0)."""
    if not ctx.durability.on:
        return script(keys=keys, args=args), 0
    return script.and_wait(
        keys=keys, args=args, replicas=ctx.durability.replicas, timeout_ms=ctx.durability.timeout_ms
    )


@dataclass(frozen=True, slots=True)
class ScriptOps:
    """Server-side Lua: one round trip per operation, atomic (records=keys: the scheduler's
    move reads the due ids first, one more).

    complete() and fail() act only on a job still in this consumer's processing list;
    the scheduler's ZREM decides which of two concurrent moves queues a job.
    """

    ctx: StrategyContext

    def enqueue_many(self, part: Partition, jobs: Sequence[Job]) -> None:
        ctx = self.ctx
        args: list[str | bytes | int] = [ctx.wake.script_flag()]
        for job in jobs:
            args += [job.id, QUEUE_OFFSET[job.priority], ctx.codec.encode(job)]
        ids = [job.id for job in jobs]
        keys = [part.keys.marker(), *_queue_keys(part), *part.records.script_keys(ids)]
        _, acked = _run_script(ctx, ctx.scripts.enqueue, keys, args)
        if ctx.durability.on:
            ctx.durability.enqueued(acked, ids)

    def complete(self, part: Partition, job: Job) -> bool:
        return self.complete_many(part, [job]) == 1

    def complete_many(self, part: Partition, jobs: Sequence[Job]) -> int:
        ctx = self.ctx
        keep = ctx.variant.retention == "keep"
        args: list[str | bytes | int] = ["keep" if keep else "delete", ctx.completed_ttl or 0]
        for job in jobs:
            args.append(job.id)
            if keep:
                stored = _copy(job)
                _mark_completed(stored, job)
                args.append(ctx.codec.encode(stored))
        ids = [job.id for job in jobs]
        keys = [part.keys.processing(ctx.consumer), *part.records.script_keys(ids)]
        done, acked = _run_script(ctx, ctx.scripts.complete_many, keys, args)
        if ctx.durability.on:
            ctx.durability.acknowledged(acked, ids, "complete")
        return int(done)

    def fail(self, part: Partition, job: Job) -> None:
        ctx = self.ctx
        retry = job.status is Status.SCHEDULED
        keys = [
            part.keys.processing(ctx.consumer),
            part.keys.scheduled(),
            part.keys.dead(),
            *part.records.script_keys([job.id]),
        ]
        args: list[str | bytes | int] = [
            job.id,
            ctx.codec.encode(job),
            "retry" if retry else "dead",
            job.scheduled_at_us,
            ctx.dead_ttl or 0,
        ]
        _, acked = _run_script(ctx, ctx.scripts.fail, keys, args)
        if ctx.durability.on:
            ctx.durability.acknowledged(acked, [job.id], "fail")

    def move_scheduled(self, part: Partition, now_us: int, limit: int) -> int:
        ctx = self.ctx
        ids = part.records.due_ids(ctx.client, part.keys.scheduled(), now_us, limit)
        if ids is not None and not ids:
            return 0  # read client-side, and nothing is due
        keys = [part.keys.scheduled(), part.keys.dead(), part.keys.marker(), *_queue_keys(part)]
        given = [] if ids is None else ["1", *ids]
        moved, dead, *corrupt = ctx.scripts.move_scheduled(
            keys=keys + part.records.script_keys(ids or []),
            args=[ctx.codec.record_format, ctx.wake.script_flag(), now_us, limit, *(given or ["0"])],
        )
        ctx.describe_dead_corrupt(part, corrupt, "scheduler move")
        return int(moved) + int(dead)


def _queue_keys(part: Partition) -> list[str]:
    return [part.keys.queue(p) for p in PRIORITY_ORDER]


# -- shared record updates -----------------------------------------------------------
def _read_for_update(ctx: StrategyContext, part: Partition, job: Job) -> Job:
    """The stored record (what the seed re-reads before writing); the in-memory job
    if the record is missing or unreadable, so a completion is never lost."""
    data = part.records.get(ctx.client, job.id)
    if data is None:
        return _copy(job)
    try:
        return ctx.codec.decode(data)
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


def _due_ids(ctx: StrategyContext, part: Partition, now_us: int, limit: int) -> list[str]:
    raw = ctx.client.zrangebyscore(part.keys.scheduled(), "-inf", now_us, start=0, num=limit)
    return [as_text(job_id) for job_id in raw]


def _queue_move(
    ctx: StrategyContext, part: Partition, pipe: RedisClient, job_id: str, record: bytes | None
) -> None:
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
        part.records.put(
            pipe, job_id, corrupt_record(ctx.codec, job_id, record or b"", reason), ttl=ctx.dead_ttl
        )
        pipe.lpush(part.keys.dead(), job_id)
    else:
        job.status = Status.QUEUED
        part.records.put(pipe, job_id, ctx.codec.encode(job), ttl=None)
        pipe.lpush(part.keys.queue(job.priority), job_id)
        ctx.wake.signal(pipe, part.keys)
    pipe.zrem(part.keys.scheduled(), job_id)


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
