"""RQ: one `Worker` per process (it forks a work horse per job), 10 processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qbench.driver import QUEUE_NAME, Driver, Op, record_pickup


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class RQDriver(Driver):
    name = "rq"
    distribution = "rq"
    requirements = "requirements/rq.txt"
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY})

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from redis import Redis
        from rq import Queue  # type: ignore[import-not-found,unused-ignore]

        self.connection: Any = Redis.from_url(url)
        self.queue: Any = Queue(QUEUE_NAME, connection=self.connection)

    def setup(self) -> str:
        return f"{self.concurrency} processes, one rq Worker each (default class: forks a horse per job)"

    def worker_processes(self) -> int:
        return self.concurrency

    def enqueue(self, sent_at: float) -> None:
        self.queue.enqueue(qbench_noop, sent_at)

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(qbench_noop, (t,)) for t in sent_at])

    def run_worker(self, *, index: int) -> None:
        from rq import Worker

        # work() installs RQ's own SIGTERM/SIGINT handlers: a warm shutdown.
        Worker([self.queue], connection=self.connection).work()

    def close(self) -> None:
        self.connection.close()
