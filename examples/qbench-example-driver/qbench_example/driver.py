"""The qbench driver for `listqueue`: all qbench needs to measure it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

from qbench.driver import QUEUE_NAME, Driver, Op, record_pickup
from qbench_example.listqueue import ListQueue


def handle(body: bytes) -> None:
    """The no-op job: report its pickup (qbench counts these lines)."""
    record_pickup(float(body))


class ListQueueDriver(Driver):
    name = "listqueue"  # the results' variant column
    distribution = "qbench-example-listqueue"  # its version goes in the report
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY})
    # requirements = "requirements.txt"  # to run in a virtualenv of its own instead

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.queue = ListQueue(url, QUEUE_NAME)

    def setup(self) -> str:
        return f"1 process, {self.concurrency} threads blocking on BRPOP (1 s timeout)"

    def enqueue(self, sent_at: float) -> None:
        self.queue.put(repr(sent_at).encode())

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        self.queue.put_many([repr(t).encode() for t in sent_at])

    def run_worker(self, *, index: int) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.queue.serve(handle, threads=self.concurrency, stop=stop)

    def close(self) -> None:
        self.queue.close()
