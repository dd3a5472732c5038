"""The reference presets as peers: `RedisQueue` producers and a `WorkerPool` of threads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from qbench.driver import QUEUE_NAME, Driver, Op, record_pickup
from queue_impl.config import PRESETS, Variant
from queue_impl.connection import close_client, make_client
from queue_impl.job import Job, Priority
from queue_impl.queue import RedisQueue
from queue_impl.worker import WorkerPool

JOB_TYPE = "noop"


def _handle(job: Job) -> None:
    record_pickup(float(job.payload.decode()), priority=job.priority.label)


class ReferenceDriver(Driver):
    """One preset of the reference queue, with the same defaults `qbench` uses elsewhere.

    It runs in qbench's own environment (no `requirements`).
    """

    distribution = "qbench"
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY, Op.PRIORITIES})
    cluster_setup = "RedisCluster client; every key of the queue under the hash tag {namespace}"
    preset: ClassVar[str]

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.variant: Variant = PRESETS[self.preset]
        self.queue = RedisQueue(
            make_client(url, self.variant, workers=concurrency), self.variant, namespace=QUEUE_NAME
        )

    def setup(self) -> str:
        return (
            f"1 process, WorkerPool of {self.concurrency} threads "
            f"(dequeue={self.variant.dequeue}, batch={self.variant.batch}, ttl={self.variant.ttl})"
        )

    @staticmethod
    def _job(sent_at: float, priority: Priority = Priority.NORMAL) -> Job:
        return Job(type=JOB_TYPE, payload=repr(sent_at).encode(), priority=priority)

    def enqueue(self, sent_at: float) -> None:
        self.queue.enqueue(self._job(sent_at))

    def enqueue_priority(self, sent_at: float, priority: str) -> None:
        self.queue.enqueue(self._job(sent_at, Priority.parse(priority)))

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        self.queue.enqueue_many([self._job(t) for t in sent_at])

    def run_worker(self, *, index: int) -> None:
        pool = WorkerPool(self.queue, {JOB_TYPE: _handle}, concurrency=self.concurrency)
        pool.run_until_stopped()

    def close(self) -> None:
        close_client(self.queue.client)


class BaselineDriver(ReferenceDriver):
    name = "baseline"
    preset = "baseline"


class OptimizedDriver(ReferenceDriver):
    name = "optimized"
    preset = "optimized"


class ScriptedDriver(ReferenceDriver):
    name = "scripted"
    preset = "scripted"
