"""Huey on Redis (`RedisHuey`): one consumer process with 10 worker threads."""

from __future__ import annotations

from typing import Any

from qbench.driver import QUEUE_NAME, Capability, Driver, record_pickup
from qbench.drivers.faults import census, job_id, sentinel_pool


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class HueyDriver(Driver):
    name = "huey"
    distribution = "huey"
    requirements = "requirements/huey.txt"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "RedisHuey(connection_pool=redis-py SentinelConnectionPool)"
    delivery = "at-most-once"
    """The consumer pops a task (BRPOP) before it runs it; nothing holds it meanwhile."""
    recovery_window_s = 0.0

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from huey import RedisHuey  # type: ignore[import-not-found,unused-ignore]

        pool = sentinel_pool(url)
        where: dict[str, Any] = {"url": url} if pool is None else {"connection_pool": pool}
        self.huey: Any = RedisHuey(QUEUE_NAME, **where)
        self.task: Any = self.huey.task(name="qbench_noop")(qbench_noop)

    def setup(self) -> str:
        return f"1 consumer process, workers={self.concurrency}, worker_type=thread"

    def enqueue(self, sent_at: float) -> None:
        self.task(sent_at)

    def run_worker(self, *, index: int) -> None:
        # The consumer handles SIGTERM/SIGINT itself, like huey_consumer.
        self.huey.create_consumer(workers=self.concurrency, worker_type="thread").run()

    def census(self) -> dict[str, Any]:
        """Pending: the queue and the schedule. Failed: none (Huey keeps no failed-task
        structure; an error result carries no arguments)."""
        tasks = [*self.huey.pending(), *self.huey.scheduled()]
        return census([], [job_id(t.args[0]) for t in tasks if t.args])
