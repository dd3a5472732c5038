"""Celery with the Redis broker: one worker, prefork pool of 10 child processes."""

from __future__ import annotations

from typing import Any

from qbench.driver import QUEUE_NAME, Driver, record_pickup

TASK = "qbench_noop"


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class CeleryDriver(Driver):
    name = "celery"
    distribution = "celery"
    requirements = "requirements/celery.txt"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from celery import Celery  # type: ignore[import-not-found,unused-ignore]

        # No result backend: Celery's default (results are not stored).
        self.app: Any = Celery(QUEUE_NAME, broker=url)
        self.task: Any = self.app.task(name=TASK)(qbench_noop)

    def setup(self) -> str:
        return (
            f"1 worker, prefork pool of {self.concurrency} processes; defaults otherwise, no result backend"
        )

    def enqueue(self, sent_at: float) -> None:
        self.task.delay(sent_at)

    def run_worker(self, *, index: int) -> None:
        # The same as `celery worker --concurrency N`; SIGTERM is a warm shutdown.
        self.app.worker_main(["worker", f"--concurrency={self.concurrency}", "--loglevel=WARNING"])

    def close(self) -> None:
        self.app.close()
