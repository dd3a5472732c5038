"""Huey on Redis (`RedisHuey`): one consumer process with 10 worker threads."""

from __future__ import annotations

from typing import Any

from qbench.driver import QUEUE_NAME, Driver, record_pickup


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class HueyDriver(Driver):
    name = "huey"
    distribution = "huey"
    requirements = "requirements/huey.txt"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from huey import RedisHuey  # type: ignore[import-not-found,unused-ignore]

        self.huey: Any = RedisHuey(QUEUE_NAME, url=url)
        self.task: Any = self.huey.task(name="qbench_noop")(qbench_noop)

    def setup(self) -> str:
        return f"1 consumer process, workers={self.concurrency}, worker_type=thread"

    def enqueue(self, sent_at: float) -> None:
        self.task(sent_at)

    def run_worker(self, *, index: int) -> None:
        # The consumer handles SIGTERM/SIGINT itself, like huey_consumer.
        self.huey.create_consumer(workers=self.concurrency, worker_type="thread").run()
