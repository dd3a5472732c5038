"""A reference queue wired for exact counting, on a namespace of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import redis

from harness.infra.counting import Cost, RoundTripCounter, counting_connection_class, measure
from queue_impl.config import Variant
from queue_impl.connection import make_client
from queue_impl.job import Job, Priority, Status
from queue_impl.queue import RedisQueue


def unique_namespace(tag: str = "run") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


class MeasuredQueue(AbstractContextManager["MeasuredQueue"]):
    """`queue` counts every round trip; `measure()` gives the cost of a block.

    Leaving the context deletes the namespace's keys (only them).
    """

    def __init__(
        self,
        url: str,
        variant: Variant,
        *,
        namespace: str | None = None,
        workers: int = 1,
        consumer: str | None = None,
    ) -> None:
        self.url = url
        self.variant = variant
        self.counter = RoundTripCounter()
        self.client = make_client(
            url,
            variant,
            workers=workers,
            wrap_connection_class=lambda base: counting_connection_class(base, self.counter),
        )
        self.stats_client: redis.Redis = redis.Redis.from_url(url, socket_timeout=10)
        self.queue = RedisQueue(
            self.client, variant, namespace=namespace or unique_namespace(), consumer=consumer
        )

    @contextmanager
    def measure(self) -> Iterator[Cost]:
        with measure(self.counter, self.stats_client) as cost:
            yield cost

    def seed_due_jobs(
        self, count: int, *, priority: Priority = Priority.NORMAL, payload: bytes = b""
    ) -> list[str]:
        """Put `count` jobs in the scheduled set, all due, without counting the setup."""
        q = self.queue
        pipe = self.stats_client.pipeline(transaction=False)
        ids = []
        for _ in range(count):
            job = Job(type="noop", payload=payload, priority=priority, attempts=1)
            job.status = Status.SCHEDULED
            pipe.set(q.keys.job(job.id), q.codec.encode(job))
            pipe.zadd(q.keys.scheduled(), {job.id: 0})
            ids.append(job.id)
        pipe.execute()
        return ids

    def close(self) -> None:
        try:
            self.queue.cleanup()
        finally:
            self.client.close()
            self.client.connection_pool.disconnect()
            self.stats_client.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_jobs(
    count: int, *, priority: Priority = Priority.NORMAL, payload: bytes = b"", job_type: str = "noop"
) -> Sequence[Job]:
    return [Job(type=job_type, payload=payload, priority=priority) for _ in range(count)]
