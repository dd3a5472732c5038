"""RQ: one `Worker` per process (it forks a work horse per job), 10 processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from qbench.driver import QUEUE_NAME, Capability, Driver, Op, record_pickup
from qbench.drivers.faults import census, job_id, sync_client


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class RQDriver(Driver):
    name = "rq"
    distribution = "rq"
    requirements = "requirements/rq.txt"
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY})
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "redis-py Sentinel.master_for() as the connection (RQ's SENTINEL setting does the same)"
    delivery = "at-most-once"
    recovery_window_s = 690.0
    """A dead horse's job stays in the StartedJobRegistry until its heartbeat TTL (job
    monitoring interval 30 s + 60 s) has passed and a worker's maintenance (every 600 s)
    moves it to the FailedJobRegistry (AbandonedJobError)."""
    worker_options: ClassVar[dict[str, Any]] = {}
    """Worker(...) keywords of this configuration (none: RQ's defaults)."""
    retries: ClassVar[int] = 0
    """Retry(max=N) given with each job (0: none, RQ's default)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from rq import Queue  # type: ignore[import-not-found,unused-ignore]

        self.connection: Any = sync_client(url)
        self.queue: Any = Queue(QUEUE_NAME, connection=self.connection)

    def setup(self) -> str:
        return f"{self.concurrency} processes, one rq Worker each (default class: forks a horse per job)"

    def worker_processes(self) -> int:
        return self.concurrency

    def _job_options(self) -> dict[str, Any]:
        if not self.retries:
            return {}
        from rq import Retry  # type: ignore[import-not-found,unused-ignore]

        return {"retry": Retry(max=self.retries)}

    def enqueue(self, sent_at: float) -> None:
        self.queue.enqueue(qbench_noop, sent_at, **self._job_options())

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        from rq import Queue

        self.queue.enqueue_many(
            [Queue.prepare_data(qbench_noop, (t,), **self._job_options()) for t in sent_at]
        )

    def run_worker(self, *, index: int) -> None:
        from rq import Worker

        # work() installs RQ's own SIGTERM/SIGINT handlers: a warm shutdown.
        Worker([self.queue], connection=self.connection, **self.worker_options).work()

    def census(self) -> dict[str, Any]:
        """Failed: the FailedJobRegistry (abandoned jobs land there). Pending: the queue and
        the started, scheduled and deferred registries."""
        from rq.job import Job  # type: ignore[import-not-found,unused-ignore]

        q = self.queue
        failed_ids = q.failed_job_registry.get_job_ids(cleanup=False)
        pending_ids = list(q.get_job_ids())
        for registry in (q.started_job_registry, q.scheduled_job_registry, q.deferred_job_registry):
            pending_ids += registry.get_job_ids(cleanup=False)

        def ids(found: list[str]) -> list[int]:
            jobs = Job.fetch_many([i.split(":")[0] for i in found], connection=self.connection)
            return [job_id(job.args[0]) for job in jobs if job is not None and job.args]

        return census(ids(failed_ids), ids(pending_ids))

    def close(self) -> None:
        self.connection.close()


class RQRetryDriver(RQDriver):
    """RQ's documented handling of abandoned jobs, made to retry: each job carries
    Retry(max=3), so the StartedJobRegistry cleanup re-enqueues a dead horse's job instead
    of failing it; workers monitor jobs every 5 s and run maintenance every 5 s."""

    name = "rq+retry=3"
    delivery = "at-least-once"
    recovery_window_s = 70.0
    """Heartbeat TTL min(timeout, 5 s) + 60 s (fixed in RQ), then the next maintenance (5 s)."""
    worker_options: ClassVar[dict[str, Any]] = {
        "job_monitoring_interval": 5,
        "maintenance_interval": 5,
        "worker_ttl": 20,
    }
    """An idle worker runs maintenance only between dequeue waits, which last worker_ttl -
    15 s (405 s by default): without worker_ttl=20 no cleanup ran within 75 s of the last
    kill and the dead horses' jobs stayed in the StartedJobRegistry (rq/worker/base.py
    dequeue_timeout, dequeue_job_and_maintain_ttl)."""
    retries = 3

    def setup(self) -> str:
        return super().setup() + (
            "; Retry(max=3) per job, job_monitoring_interval=5, maintenance_interval=5, worker_ttl=20"
        )
