"""RedisQueue: the reference queue. Each toggle of its Variant selects one strategy."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.codec import Codec, CorruptJobError, codec_for
from qbench.queue_impl.config import Variant, VariantError
from qbench.queue_impl.hops import TRACE as _TRACE
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Status, as_text, now_us
from qbench.queue_impl.keys import KeyBuilder, make_keys
from qbench.queue_impl.pinned import make_calls
from qbench.queue_impl.record_stores import RECORD_STORES, glob_escape
from qbench.queue_impl.records import corrupt_record
from qbench.queue_impl.scripts import Scripts
from qbench.queue_impl.strategies import (
    BATCH_STRATEGIES,
    DEQUEUE_STRATEGIES,
    WAKE_STRATEGIES,
    Claimed,
    Durability,
    NotReplicatedError,
    Partition,
    StrategyContext,
)

__all__ = ["NotReplicatedError", "Partition", "RedisQueue", "delete_namespace", "glob_escape"]

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30
"""A consumer whose heartbeat is older than this is dead; its jobs are recovered."""

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload `enqueue` accepts (1 MiB): a queue carries references to big data,
not the data; an oversized job fails at once, before anything is written."""


class PayloadTooLargeError(ValueError):
    """A job whose payload exceeds the queue's `max_payload_bytes`; nothing was enqueued."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued: dict[str, int]
    processing: int
    scheduled: int
    dead: int
    consumers: int
    by_consumer: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "queued": dict(self.queued),
            "processing": self.processing,
            "scheduled": self.scheduled,
            "dead": self.dead,
            "consumers": self.consumers,
        }


def default_consumer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisQueue:
    """A priority job queue on Redis with reliable (processing-list) dequeue.

    Thread-safe: one instance may be shared by many worker threads, which then share
    its connection pool and its processing lists (one per consumer id and partition).
    `client` is a `redis.Redis` or a `redis.cluster.RedisCluster`.
    """

    def __init__(
        self,
        client: RedisClient,
        variant: Variant,
        *,
        namespace: str = "default",
        consumer: str | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        keys: KeyBuilder | None = None,
    ) -> None:
        """`keys` replaces the variant's key builder of a one-partition queue (the harness
        records key calls with it). No command is sent here: `check_server()` at startup."""
        self.max_payload_bytes = max_payload_bytes
        self.namespace = namespace
        count = variant.partitions
        if keys is not None and count != 1:
            raise ValueError("a key builder can replace the keys of a one-partition queue only")
        if variant.durability != "off" and not isinstance(client, redis.Redis):
            # WAIT has no key: a cluster client would send it to any node, not the one written.
            raise VariantError("durability=replica: not supported on Redis Cluster clients")
        builders = (
            [keys]
            if keys is not None
            else [make_keys(variant.keys, namespace, i, count) for i in range(count)]
        )
        store = RECORD_STORES[variant.records]
        partitions = tuple(Partition(i, b, store(b)) for i, b in enumerate(builders))
        calls = make_calls(client, pinned=variant.conn == "pinned")
        self._ctx = StrategyContext(
            client=client,
            partitions=partitions,
            codec=codec_for(variant),
            scripts=Scripts(calls, variant.records),
            calls=calls,
            variant=variant,
            consumer=consumer or default_consumer_id(),
            wake=WAKE_STRATEGIES[variant.dequeue](),
            durability=Durability.of(variant),
        )
        self._dequeue = DEQUEUE_STRATEGIES[variant.dequeue](self._ctx)
        self._batch = BATCH_STRATEGIES[variant.batch](self._ctx)
        self._registered = False
        # Calibration only (Variant.handicap_us): 0 leaves one falsy check per operation.
        self._handicap_ns = round(variant.handicap_us * 1000)

    def check_server(self) -> None:
        """Raise `VariantError` (one line, naming the server's version) when the server
        cannot run this variant: records=hash needs HEXPIRE (Redis >= 7.4), and
        durability=replica a connected replica. One command per partition (and one INFO
        under durability=replica), sent to the node that holds it. Services call it at startup."""
        for part in self.partitions:
            part.records.check_server(self.client)
        if self.variant.durability == "replica":
            replicas = int(self.client.info("replication").get("connected_slaves", 0))  # type: ignore[union-attr]
            if replicas < 1:
                raise VariantError(
                    "durability=replica: the server has no connected replica, so every enqueue "
                    "would wait durability_timeout_s and fail"
                )

    # Read-only: the strategies share these through the context.
    @property
    def client(self) -> RedisClient:
        return self._ctx.client

    @property
    def variant(self) -> Variant:
        return self._ctx.variant

    @property
    def partitions(self) -> tuple[Partition, ...]:
        """Every partition, in index order (one unless the variant sets `partitions`)."""
        return self._ctx.partitions

    def partition_for(self, job_id: str) -> Partition:
        """The partition that holds (or will hold) the job with this id."""
        return self._ctx.partition_for(job_id)

    @property
    def keys(self) -> KeyBuilder:
        """The keys of a one-partition queue; with partitions, each has its own
        (`partitions`, `partition_for`)."""
        if len(self.partitions) != 1:
            raise ValueError(f"this queue has {len(self.partitions)} partitions: use partitions[i].keys")
        return self.partitions[0].keys

    @property
    def codec(self) -> Codec:
        return self._ctx.codec

    @property
    def consumer(self) -> str:
        return self._ctx.consumer

    @property
    def unreplicated_acks(self) -> int:
        """durability=replica: completions and failures no replica acknowledged in time."""
        return self._ctx.durability.unreplicated_acks

    # -- producing --------------------------------------------------------------
    def enqueue(self, job: Job) -> str:
        """Store and queue `job`; returns its id. Under durability=replica the call returns
        once a replica acknowledged the write too, and raises `NotReplicatedError` when none
        did within `durability_timeout_s` (the job is queued on the primary all the same:
        see `Durability` for why enqueue raises and acknowledgements do not)."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        self.check_payloads([job])
        self._batch.enqueue_many(self.partition_for(job.id), [job])
        return job.id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Enqueue every job, or none when one is rejected (`PayloadTooLargeError`).

        One call per partition the batch touches: with partitions, a batch is atomic
        (under `script`) per partition, not as a whole."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        self.check_payloads(jobs)
        for part, members in self._by_partition(jobs).items():
            self._batch.enqueue_many(part, members)
        return [job.id for job in jobs]

    def _by_partition(self, jobs: Sequence[Job]) -> dict[Partition, list[Job]]:
        groups: defaultdict[Partition, list[Job]] = defaultdict(list)
        for job in jobs:
            groups[self.partition_for(job.id)].append(job)
        return groups

    def check_payloads(self, jobs: Sequence[Job]) -> None:
        """PayloadTooLargeError naming the first job over `max_payload_bytes`."""
        for job in jobs:
            if len(job.payload) > self.max_payload_bytes:
                raise PayloadTooLargeError(
                    f"job {job.id} ({job.type}): payload of {len(job.payload)} bytes exceeds "
                    f"the limit of {self.max_payload_bytes} bytes"
                )

    # -- consuming --------------------------------------------------------------
    def dequeue(self, *, wait: bool = True) -> Job | None:
        """The next job in priority order (within a partition; partitions are tried in
        turn), now held in this consumer's processing list.

        With `wait`, blocks for one wait cycle of the dequeue mode (poll: one pass and
        a sleep; block: the three BRPOPLPUSH timeouts; notify: up to `notify_timeout_s`)
        and returns None if nothing came. A record that cannot be decoded is
        dead-lettered with the reason, and the next job is tried.
        """
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        if not self._registered:
            self.register_consumer()
        while True:
            claimed = self._dequeue.claim(wait=wait)
            if claimed is None:
                return None
            job = self._decode_claimed(claimed)
            if job is not None:
                job.status = Status.ACTIVE
                job.started_at_us = now_us()
                if _TRACE is not None:
                    _TRACE.claimed([job.id])
                return job

    def claim_many(
        self, n: int, *, wait: bool = True, home: int | None = None, look_first: bool = True
    ) -> list[Job]:
        """Up to `n` jobs in priority order (per partition), now held in this consumer's
        processing lists: the jobs ready now, else (with `wait`) what one wait cycle
        brings. notify claims them in one script per partition tried, partition `home`
        first (and waits on its marker); the other modes one at a time. Corrupt records
        are dead-lettered, as `dequeue` does. `look_first=False`: the caller's last claim
        found nothing, so wait at once."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        if not self._registered:
            self.register_consumer()
        jobs = []
        started = now_us()
        for claimed in self._dequeue.claim_many(n, wait=wait, home=home, look_first=look_first):
            job = self._decode_claimed(claimed)
            if job is not None:
                job.status = Status.ACTIVE
                job.started_at_us = started
                jobs.append(job)
        if _TRACE is not None:
            _TRACE.claimed([job.id for job in jobs])
        return jobs

    def complete_many(self, jobs: Sequence[Job]) -> int:
        """Mark `jobs` completed, one call per partition they belong to (`script`: one
        round trip each); returns how many were still held (see `complete`)."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        return sum(
            self._batch.complete_many(part, members) for part, members in self._by_partition(jobs).items()
        )

    def wake_waiters(self) -> None:
        """Set every partition's wake-up marker (notify): a worker blocked in its wait
        returns now, claims whatever is ready and looks at its stop flag. One command per
        partition; waiters of other processes wake too and find nothing new."""
        for part in self.partitions:
            self._ctx.wake.signal(self.client, part.keys)

    def complete(self, job: Job) -> bool:
        """Mark `job` completed (with the completed TTL when TTLs are on).

        Returns False if the job was no longer in this consumer's processing list
        (stale recovery handed it back); only the `script` batch mode can tell, and then
        leaves the record alone. `loop` and `pipeline` write it anyway and return True.
        """
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        return self._batch.complete(self.partition_for(job.id), job)

    def fail(self, job: Job, error: str, *, retry: bool = True) -> Status:
        """Record a failed attempt: schedule a retry with exponential backoff, or
        dead-letter after `max_retries` retries (at once when `retry` is False).
        Returns the job's new status: SCHEDULED or DEAD.

        For a job no longer in this consumer's processing list, `script` writes nothing
        (the status is still returned); `loop` and `pipeline` schedule or dead-letter it
        all the same, a second copy beside the one stale recovery returned."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        job.attempts += 1
        job.last_error = error
        job.finished_at_us = now_us()
        if retry and job.attempts <= job.max_retries:
            job.status = Status.SCHEDULED
            job.scheduled_at_us = job.finished_at_us + int(self.backoff_s(job.attempts) * 1e6)
        else:
            job.status = Status.DEAD
        self._batch.fail(self.partition_for(job.id), job)
        return job.status

    def backoff_s(self, attempt: int) -> float:
        return float(min(self.variant.retry_base_s * 2 ** (attempt - 1), self.variant.retry_max_s))

    # -- scheduling -------------------------------------------------------------
    def move_scheduled_to_ready(self, *, now: int | None = None, limit: int = 1000) -> int:
        """Move up to `limit` due retries (per partition) back to their priority queue;
        returns how many."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        at = now_us() if now is None else now
        return sum(self._batch.move_scheduled(part, at, limit) for part in self.partitions)

    # -- reading ----------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        data = self.partition_for(job_id).records.get(self.client, job_id)
        return None if data is None else self.codec.decode(data)

    def record_ttl(self, job_id: str) -> int:
        """Seconds until the job's record expires, as TTL answers: -1 never, -2 no record."""
        return self.partition_for(job_id).records.ttl(self.client, job_id)

    def consumers(self) -> list[str]:
        """Registered consumer ids (of any partition), sorted."""
        pipe = self.client.pipeline(transaction=False)
        for part in self.partitions:
            pipe.smembers(part.keys.consumers())
        return sorted({as_text(m) for members in pipe.execute() for m in members})

    def stats(self) -> QueueStats:
        consumers = self.consumers()
        pipe = self.client.pipeline(transaction=False)
        for part in self.partitions:
            for priority in PRIORITY_ORDER:
                pipe.llen(part.keys.queue(priority))
            for consumer in consumers:
                pipe.llen(part.keys.processing(consumer))
            pipe.zcard(part.keys.scheduled())
            pipe.llen(part.keys.dead())
        counts = iter(pipe.execute())
        queued = dict.fromkeys((p.label for p in PRIORITY_ORDER), 0)
        by_consumer = dict.fromkeys(consumers, 0)
        scheduled = dead = 0
        for _part in self.partitions:
            for priority in PRIORITY_ORDER:
                queued[priority.label] += next(counts)
            for consumer in consumers:
                by_consumer[consumer] += next(counts)
            scheduled += next(counts)
            dead += next(counts)
        return QueueStats(
            queued=queued,
            processing=sum(by_consumer.values()),
            scheduled=scheduled,
            dead=dead,
            consumers=len(consumers),
            by_consumer=by_consumer,
        )

    # -- consumers, heartbeats, recovery -------------------------------------------
    def register_consumer(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Register this consumer and start its lease, in every partition (one pipeline)."""
        pipe = self.client.pipeline(transaction=False)
        for part in self.partitions:
            pipe.sadd(part.keys.consumers(), self.consumer)
            pipe.set(part.keys.heartbeat(self.consumer), b"1", px=_lease_ms(lease_s))
        pipe.execute()
        self._registered = True

    def heartbeat(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Renew this consumer's lease (one SET ... GET per partition).

        When an old heartbeat was gone (the lease lapsed and recovery forgot this
        consumer, or Redis restarted without its data) the consumer registers again,
        so stale recovery keeps watching its processing lists.
        """
        ms = _lease_ms(lease_s)
        if self.variant.beat == "kept":
            # One SET ... GET per partition on the calling thread's kept connection.
            previous = [
                self._ctx.calls.command("SET", part.keys.heartbeat(self.consumer), b"1", "PX", ms, "GET")
                for part in self.partitions
            ]
        elif len(self.partitions) == 1:
            previous = [self.client.set(self.keys.heartbeat(self.consumer), b"1", px=ms, get=True)]
        else:
            pipe = self.client.pipeline(transaction=False)
            for part in self.partitions:
                pipe.set(part.keys.heartbeat(self.consumer), b"1", px=ms, get=True)
            previous = pipe.execute()
        if any(p is None for p in previous):
            self.register_consumer(lease_s)

    @property
    def broken_connections(self) -> int | None:
        """conn=pinned: how many calls so far found their connection broken (a reply may have
        been lost with it); None under conn=pool, whose retries happen out of sight."""
        return getattr(self._ctx.calls, "broken", None)

    def held_job_ids(self) -> list[str]:
        """Ids in this consumer's processing lists (a job held twice appears twice)."""
        if self.variant.beat == "kept":
            processing = [part.keys.processing(self.consumer) for part in self.partitions]
            return [as_text(i) for key in processing for i in self._ctx.calls.command("LRANGE", key, 0, -1)]
        if len(self.partitions) == 1:
            return [as_text(i) for i in self.client.lrange(self.keys.processing(self.consumer), 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for part in self.partitions:
            pipe.lrange(part.keys.processing(self.consumer), 0, -1)
        return [as_text(i) for ids in pipe.execute() for i in ids]

    def requeue_held(self, job_ids: Sequence[str]) -> int:
        """Return jobs from this (live) consumer's processing lists to their queues.

        For claims no worker thread knows about: the server moved the job but the
        reply was lost with the connection. Each id is moved only if still held (one
        occurrence per listed id); a corrupt record is dead-lettered. Returns how many.
        """
        ctx = self._ctx
        total = 0
        groups: defaultdict[Partition, list[str]] = defaultdict(list)
        for job_id in job_ids:
            groups[self.partition_for(job_id)].append(job_id)
        for part, ids in groups.items():
            keys = [part.keys.processing(ctx.consumer), part.keys.dead(), part.keys.marker()]
            keys += [part.keys.queue(p) for p in PRIORITY_ORDER]
            returned, *corrupt = ctx.scripts.requeue(
                keys=keys + part.records.script_keys(ids),
                args=[ctx.codec.record_format, ctx.wake.script_flag(), *ids],
            )
            ctx.describe_dead_corrupt(part, corrupt, "requeue of an orphaned claim")
            total += int(returned)
        if total:
            log.warning("requeued %d orphaned job(s) held by %s", total, self.consumer)
        return total

    def unregister_consumer(self) -> int:
        """Return this consumer's held jobs to their queues and forget it (clean stop)."""
        for part in self.partitions:
            self.client.delete(part.keys.heartbeat(self.consumer))
        return sum(self._recover(part, self.consumer) for part in self.partitions)

    def recover_stale(self) -> int:
        """Return jobs held by consumers whose heartbeat lease expired; returns how many."""
        returned = 0
        for part in self.partitions:
            for member in self.client.smembers(part.keys.consumers()):
                consumer = as_text(member)
                if consumer != self.consumer and not self.client.exists(part.keys.heartbeat(consumer)):
                    returned += self._recover(part, consumer)
        return returned

    def _recover(self, part: Partition, consumer: str) -> int:
        ctx = self._ctx
        keys = [
            part.keys.processing(consumer),
            part.keys.dead(),
            part.keys.marker(),
            part.keys.consumers(),
            part.keys.heartbeat(consumer),
            *(part.keys.queue(p) for p in PRIORITY_ORDER),
        ]
        total = 0
        # records=keys: the script can return only the ids read here (each only while it is
        # still the oldest held), so a list that grew meanwhile is read again.
        for _attempt in range(_RECOVER_ATTEMPTS):
            ids = part.records.held_ids(ctx.client, keys[0])
            given = ["0"] if ids is None else ["1", *ids]
            returned = ctx.scripts.recover(
                keys=keys + part.records.script_keys(ids or []),
                args=[ctx.codec.record_format, consumer, ctx.wake.script_flag(), *given],
            )
            if not isinstance(returned, list):
                break  # -1: the consumer's heartbeat is alive again
            count, left, *corrupt = returned
            ctx.describe_dead_corrupt(part, corrupt, f"stale recovery from consumer {consumer}")
            total += int(count)
            if int(left) == 0 or ids is None:
                break
        if total > 0:
            log.warning("recovered %d job(s) from consumer %s", total, consumer)
        return total

    # -- internals ---------------------------------------------------------------
    def _decode_claimed(self, claimed: Claimed) -> Job | None:
        part, job_id, record = claimed
        try:
            if record is None:
                raise CorruptJobError("job record is missing")
            job = self.codec.decode(record)
            if job.id != job_id:
                raise CorruptJobError(f"record holds id {job.id!r}")
            return job
        except CorruptJobError as exc:
            self._dead_letter_corrupt(part, job_id, record or b"", str(exc))
            return None

    def _dead_letter_corrupt(self, part: Partition, job_id: str, raw: bytes, reason: str) -> None:
        log.error("dead-lettering job %s: %s", job_id, reason)
        pipe = self.client.pipeline(transaction=True)
        pipe.lrem(part.keys.processing(self.consumer), 1, job_id)
        part.records.put(
            pipe, job_id, corrupt_record(self.codec, job_id, raw, reason), ttl=self._ctx.dead_ttl
        )
        pipe.lpush(part.keys.dead(), job_id)
        pipe.execute()

    def cleanup(self) -> int:
        """Delete this namespace's keys (and only them), in every partition; returns how many."""
        return sum(delete_namespace(self.client, part.keys.prefix) for part in self.partitions)


_RECOVER_ATTEMPTS = 10
"""Reads of a dead consumer's list before recovery leaves the rest to its next round."""


def burn_cpu(ns: int) -> None:
    """Spin until this process has used `ns` more nanoseconds of CPU (not wall time: a
    sleep would cost no CPU, and a preempted spin must still burn its full amount)."""
    deadline = time.process_time_ns() + ns
    while time.process_time_ns() < deadline:
        pass


def _lease_ms(lease_s: float) -> int:
    if lease_s <= 0:
        raise ValueError(f"lease must be positive, got {lease_s}")
    return max(1, round(lease_s * 1000))


def delete_namespace(client: RedisClient, prefix: str) -> int:
    """UNLINK every key under `prefix` (SCAN, never FLUSH*)."""
    if not prefix.startswith("qbench:{"):
        raise ValueError(f"refusing to delete keys outside a qbench namespace: {prefix!r}")
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted
