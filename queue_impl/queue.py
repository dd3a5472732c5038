"""RedisQueue: the reference queue. Each toggle of its Variant selects one strategy."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from queue_impl.codec import CODECS, Codec, CorruptJobError
from queue_impl.config import Variant
from queue_impl.job import PRIORITY_ORDER, Job, Status, as_bytes, as_text, now_us
from queue_impl.keys import KeyBuilder, make_keys
from queue_impl.records import corrupt_record
from queue_impl.scripts import Scripts
from queue_impl.strategies import (
    BATCH_STRATEGIES,
    DEQUEUE_STRATEGIES,
    WAKE_STRATEGIES,
    Claimed,
    StrategyContext,
)

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
    its connection pool and its processing list (one per consumer id).
    """

    def __init__(
        self,
        client: redis.Redis,
        variant: Variant,
        *,
        namespace: str = "default",
        consumer: str | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        keys: KeyBuilder | None = None,
    ) -> None:
        """`keys` replaces the variant's key builder (the harness records key calls with it)."""
        self.max_payload_bytes = max_payload_bytes
        self.namespace = namespace
        if keys is None:
            keys = make_keys(variant.keys, namespace)
        self._ctx = StrategyContext(
            client=client,
            keys=keys,
            codec=CODECS[variant.codec],
            scripts=Scripts(client),
            variant=variant,
            consumer=consumer or default_consumer_id(),
            wake=WAKE_STRATEGIES[variant.dequeue](keys),
        )
        self._dequeue = DEQUEUE_STRATEGIES[variant.dequeue](self._ctx)
        self._batch = BATCH_STRATEGIES[variant.batch](self._ctx)
        self._registered = False
        # Calibration only (Variant.handicap_us): 0 leaves one falsy check per operation.
        self._handicap_ns = round(variant.handicap_us * 1000)

    # Read-only: the strategies share these through the context.
    @property
    def client(self) -> redis.Redis:
        return self._ctx.client

    @property
    def variant(self) -> Variant:
        return self._ctx.variant

    @property
    def keys(self) -> KeyBuilder:
        return self._ctx.keys

    @property
    def codec(self) -> Codec:
        return self._ctx.codec

    @property
    def consumer(self) -> str:
        return self._ctx.consumer

    # -- producing --------------------------------------------------------------
    def enqueue(self, job: Job) -> str:
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        self.check_payloads([job])
        self._batch.enqueue_many([job])
        return job.id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Enqueue every job, or none when one is rejected (`PayloadTooLargeError`)."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        self.check_payloads(jobs)
        if jobs:
            self._batch.enqueue_many(jobs)
        return [job.id for job in jobs]

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
        """The next job in priority order, now held in this consumer's processing list.

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
                return job

    def complete(self, job: Job) -> bool:
        """Mark `job` completed (with the completed TTL when TTLs are on).

        Returns False if the job was no longer in this consumer's processing list
        (stale recovery handed it back); only the `script` batch mode can tell, and then
        leaves the record alone. `loop` and `pipeline` write it anyway and return True.
        """
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        return self._batch.complete(job)

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
        self._batch.fail(job)
        return job.status

    def backoff_s(self, attempt: int) -> float:
        return float(min(self.variant.retry_base_s * 2 ** (attempt - 1), self.variant.retry_max_s))

    # -- scheduling -------------------------------------------------------------
    def move_scheduled_to_ready(self, *, now: int | None = None, limit: int = 1000) -> int:
        """Move up to `limit` due retries back to their priority queue; returns how many."""
        if self._handicap_ns:
            burn_cpu(self._handicap_ns)
        return self._batch.move_scheduled(now_us() if now is None else now, limit)

    # -- reading ----------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        data = self.client.get(self.keys.job(job_id))
        return None if data is None else self.codec.decode(as_bytes(data))

    def stats(self) -> QueueStats:
        consumers = sorted(as_text(m) for m in self.client.smembers(self.keys.consumers()))
        pipe = self.client.pipeline(transaction=False)
        for priority in PRIORITY_ORDER:
            pipe.llen(self.keys.queue(priority))
        for consumer in consumers:
            pipe.llen(self.keys.processing(consumer))
        pipe.zcard(self.keys.scheduled())
        pipe.llen(self.keys.dead())
        counts = pipe.execute()
        by_consumer = dict(zip(consumers, counts[3 : 3 + len(consumers)], strict=True))
        return QueueStats(
            queued={p.label: counts[i] for i, p in enumerate(PRIORITY_ORDER)},
            processing=sum(by_consumer.values()),
            scheduled=counts[-2],
            dead=counts[-1],
            consumers=len(consumers),
            by_consumer=by_consumer,
        )

    # -- consumers, heartbeats, recovery -------------------------------------------
    def register_consumer(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.keys.consumers(), self.consumer)
        pipe.set(self.keys.heartbeat(self.consumer), b"1", px=_lease_ms(lease_s))
        pipe.execute()
        self._registered = True

    def heartbeat(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Renew this consumer's lease (one SET ... GET).

        When the old heartbeat was gone (the lease lapsed and recovery forgot this
        consumer, or Redis restarted without its data) the consumer registers again,
        so stale recovery keeps watching its processing list.
        """
        previous = self.client.set(self.keys.heartbeat(self.consumer), b"1", px=_lease_ms(lease_s), get=True)
        if previous is None:
            self.register_consumer(lease_s)

    def held_job_ids(self) -> list[str]:
        """Ids in this consumer's processing list (a job held twice appears twice)."""
        return [as_text(i) for i in self.client.lrange(self.keys.processing(self.consumer), 0, -1)]

    def requeue_held(self, job_ids: Sequence[str]) -> int:
        """Return jobs from this (live) consumer's processing list to their queues.

        For claims no worker thread knows about: the server moved the job but the
        reply was lost with the connection. Each id is moved only if still held (one
        occurrence per listed id); a corrupt record is dead-lettered. Returns how many.
        """
        if not job_ids:
            return 0
        ctx = self._ctx
        returned, *corrupt = ctx.scripts.requeue(
            keys=[ctx.keys.processing(ctx.consumer), ctx.keys.dead(), ctx.keys.marker()],
            args=[ctx.keys.prefix, ctx.codec.name, ctx.wake.script_flag(), *job_ids],
        )
        ctx.describe_dead_corrupt(corrupt, "requeue of an orphaned claim")
        if returned:
            log.warning("requeued %d orphaned job(s) held by %s", returned, self.consumer)
        return int(returned)

    def unregister_consumer(self) -> int:
        """Return this consumer's held jobs to their queues and forget it (clean stop)."""
        self.client.delete(self.keys.heartbeat(self.consumer))
        return self._recover(self.consumer)

    def recover_stale(self) -> int:
        """Return jobs held by consumers whose heartbeat lease expired; returns how many."""
        returned = 0
        for member in self.client.smembers(self.keys.consumers()):
            consumer = as_text(member)
            if consumer != self.consumer and not self.client.exists(self.keys.heartbeat(consumer)):
                returned += self._recover(consumer)
        return returned

    def _recover(self, consumer: str) -> int:
        ctx = self._ctx
        returned = ctx.scripts.recover(
            keys=[
                ctx.keys.processing(consumer),
                ctx.keys.dead(),
                ctx.keys.marker(),
                ctx.keys.consumers(),
                ctx.keys.heartbeat(consumer),
            ],
            args=[ctx.keys.prefix, ctx.codec.name, consumer, ctx.wake.script_flag()],
        )
        if not isinstance(returned, list):
            return 0  # -1: the consumer's heartbeat is alive again
        count, *corrupt = returned
        ctx.describe_dead_corrupt(corrupt, f"stale recovery from consumer {consumer}")
        if count > 0:
            log.warning("recovered %d job(s) from consumer %s", count, consumer)
        return int(count)

    # -- internals ---------------------------------------------------------------
    def _decode_claimed(self, claimed: Claimed) -> Job | None:
        job_id, record = claimed
        try:
            if record is None:
                raise CorruptJobError("job record is missing")
            job = self.codec.decode(record)
            if job.id != job_id:
                raise CorruptJobError(f"record holds id {job.id!r}")
            return job
        except CorruptJobError as exc:
            self._dead_letter_corrupt(job_id, record or b"", str(exc))
            return None

    def _dead_letter_corrupt(self, job_id: str, raw: bytes, reason: str) -> None:
        log.error("dead-lettering job %s: %s", job_id, reason)
        pipe = self.client.pipeline(transaction=True)
        pipe.lrem(self.keys.processing(self.consumer), 1, job_id)
        pipe.set(
            self.keys.job(job_id), corrupt_record(self.codec, job_id, raw, reason), ex=self._ctx.dead_ttl
        )
        pipe.lpush(self.keys.dead(), job_id)
        pipe.execute()

    def cleanup(self) -> int:
        """Delete this namespace's keys (and only them); returns how many."""
        return delete_namespace(self.client, self.keys.prefix)


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


def delete_namespace(client: redis.Redis, prefix: str) -> int:
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


def glob_escape(text: str) -> str:
    """`text` as a literal SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
