"""A reference queue wired for exact counting, on a namespace of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, get_args

from qbench.harness.infra.counting import (
    Cost,
    RoundTripCounter,
    ServerNodes,
    counting_connection_class,
    measure,
)
from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import Variant
from qbench.queue_impl.connection import close_client, make_client, open_client
from qbench.queue_impl.job import Job, Priority, Status
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.scripts import RecordsLayout, script_sources


def unique_namespace(tag: str = "run") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


class MeasuredQueue(AbstractContextManager["MeasuredQueue"]):
    """`queue` counts every round trip; `measure()` gives the cost of a block.

    `url` may name a Redis Cluster (`redis+cluster://`): the queue then uses a cluster
    client, counted on every node's connections, and server commands and memory are read
    from every primary (`nodes`). `stats_client` is an uncounted client of the same kind,
    for setup and reading. Leaving the context deletes the namespace's keys (only them).
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
        self.stats_client: RedisClient = open_client(url)
        self.nodes = ServerNodes.connect(url)
        self.queue = RedisQueue(
            self.client, variant, namespace=namespace or unique_namespace(), consumer=consumer
        )
        self.queue.check_server()

    @contextmanager
    def measure(self) -> Iterator[Cost]:
        with measure(self.counter, self.nodes) as cost:
            yield cost

    def used_memory(self) -> int:
        """`used_memory` summed over every primary (bytes)."""
        return sum(self.used_memory_by_node().values())

    def used_memory_by_node(self) -> dict[str, int]:
        return self.nodes.used_memory()

    def warm_up(self) -> None:
        """Pay every one-time cost before anything is measured: open the connection, load
        every Lua script, and run each operation once (enqueue, enqueue_many, dequeue,
        complete, fail with a retry and to the dead-letter list, the scheduler move).

        Leaves the namespace empty and this consumer registered, so a measured call finds
        the state every measurement starts from.
        """
        q = self.queue
        load_scripts(self.client)
        q.register_consumer()
        # High priority: every dequeue mode finds the job on its first try (the seed's
        # blocking mode would otherwise wait out the high-priority timeout first).
        q.enqueue(Job(type="noop", priority=Priority.HIGH))
        q.enqueue_many(make_jobs(2, priority=Priority.HIGH))
        for outcome in ("complete", "retry", "dead"):
            job = self._take("warm-up")
            if outcome == "complete":
                q.complete(job)
            else:
                q.fail(job, "warm-up", retry=outcome == "retry")
        if q.move_scheduled_to_ready(now=2**62) != 1:  # the retry, due at any time before 2**62 µs
            raise RuntimeError("warm-up: the scheduled retry was not moved")
        q.complete(self._take("warm-up"))
        q.cleanup()
        q.register_consumer()

    def _take(self, what: str) -> Job:
        job = self.queue.dequeue(wait=True)
        if job is None:
            raise RuntimeError(f"{what}: a ready job could not be dequeued")
        return job

    def seed_due_jobs(
        self, count: int, *, priority: Priority = Priority.NORMAL, payload: bytes = b""
    ) -> list[str]:
        """Put `count` jobs in the scheduled set, all due, without counting the setup."""
        return seed_due_jobs(self.queue, count, client=self.stats_client, priority=priority, payload=payload)

    def close(self) -> None:
        try:
            self.queue.cleanup()
        finally:
            close_client(self.client)
            close_client(self.stats_client)
            self.nodes.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_scripts(client: RedisClient) -> None:
    """Load every Lua script of the queue (both record layouts) into the server (every
    primary of a cluster), so no later call pays a NOSCRIPT miss and its SCRIPT LOAD
    (round trips per call then stay exact)."""
    for layout in get_args(RecordsLayout):
        for source in script_sources(layout):
            client.script_load(source)


def seed_due_jobs(
    queue: RedisQueue,
    count: int,
    *,
    client: RedisClient | None = None,
    job_type: str = "noop",
    priority: Priority = Priority.NORMAL,
    payload: bytes = b"",
) -> list[str]:
    """`count` retries already due, written directly as a failed attempt leaves them (record
    with status scheduled, id in the scheduled set at score 0), in one pipeline.

    `client` writes them (default: the queue's own); pass an uncounted client to keep the
    setup out of a measurement. Returns the ids.
    """
    writer = queue.client if client is None else client
    pipe = writer.pipeline(transaction=False)
    ids = []
    for _ in range(count):
        job = Job(type=job_type, payload=payload, priority=priority, attempts=1, status=Status.SCHEDULED)
        part = queue.partition_for(job.id)
        part.records.put(pipe, job.id, queue.codec.encode(job), ttl=None)
        pipe.zadd(part.keys.scheduled(), {job.id: 0})
        ids.append(job.id)
    pipe.execute()
    return ids


def make_jobs(
    count: int, *, priority: Priority = Priority.NORMAL, payload: bytes = b"", job_type: str = "noop"
) -> Sequence[Job]:
    return [Job(type=job_type, payload=payload, priority=priority) for _ in range(count)]
