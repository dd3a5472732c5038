"""Dramatiq with its Redis broker: one worker process with 10 worker threads."""

from __future__ import annotations

import signal
import threading
from typing import Any

from qbench.driver import QUEUE_NAME, Driver, record_pickup

ACTOR = "qbench_noop"


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class DramatiqDriver(Driver):
    name = "dramatiq"
    distribution = "dramatiq"
    requirements = "requirements/dramatiq.txt"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        import dramatiq  # type: ignore[import-not-found,unused-ignore]
        from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

        self.broker: Any = RedisBroker(url=url)
        dramatiq.set_broker(self.broker)
        self.actor: Any = dramatiq.actor(qbench_noop, actor_name=ACTOR, queue_name=QUEUE_NAME)

    def setup(self) -> str:
        return (
            f"1 process, dramatiq.Worker with {self.concurrency} threads "
            "(the CLI's default is one process per CPU x 8 threads)"
        )

    def enqueue(self, sent_at: float) -> None:
        self.actor.send(sent_at)

    def run_worker(self, *, index: int) -> None:
        import dramatiq

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        worker = dramatiq.Worker(self.broker, worker_threads=self.concurrency)
        worker.start()
        stop.wait()
        worker.stop()

    def close(self) -> None:
        self.broker.close()
