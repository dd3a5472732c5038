"""tinyqueue's qbench driver: how qbench enqueues and runs tinyqueue's jobs.

qbench provides `qbench.driver` when it runs this module (the queue does not depend on
qbench); the entry point in pyproject.toml registers it as the driver `tinyqueue`.
"""

from __future__ import annotations

import signal
import threading

from qbench.driver import QUEUE_NAME, Driver, record_pickup
from tinyqueue.queue import Queue


def handle(body: float) -> None:
    """The no-op job: report its pickup (qbench counts these lines)."""
    record_pickup(body)


class TinyQueueDriver(Driver):
    name = "tinyqueue"
    distribution = "tinyqueue"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.queue = Queue(url, QUEUE_NAME)

    def setup(self) -> str:
        return f"1 process, {self.concurrency} threads blocking on BRPOP"

    def enqueue(self, sent_at: float) -> None:
        self.queue.put(sent_at)

    def run_worker(self, *, index: int) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.queue.work(handle, threads=self.concurrency, stop=stop)

    def close(self) -> None:
        self.queue.close()
