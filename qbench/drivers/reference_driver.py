"""The reference presets as peers: `RedisQueue` producers and a `WorkerPool` of threads.

Any variant can run the battery too (`qbench peers --driver 'scripted+retention=delete'`):
`VariantDriver` takes its variant from `VARIANT_ENV`, which the harness sets for it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from qbench.driver import ENV_COUNTERS, QUEUE_NAME, Capability, Driver, Op, record_pickup
from qbench.harness.infra.counting import RoundTripCounter, counting_connection_class
from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.worker import WorkerPool

JOB_TYPE = "noop"
VARIANT_ENV = "QBENCH_REFERENCE_VARIANT"
"""The `preset+toggle=value,...` a `VariantDriver` runs (set by the harness)."""


def _handle(job: Job) -> None:
    record_pickup(float(job.payload.decode()), priority=job.priority.label)


class ReferenceDriver(Driver):
    """One preset of the reference queue, with the same defaults `qbench` uses elsewhere.

    It runs in qbench's own environment (no `requirements`). A producer started with
    `ENV_COUNTERS=1` counts its client's round trips (`Capability.ROUND_TRIPS`), the way
    `qbench ops` and the load users count them; otherwise it counts nothing and pays nothing.
    """

    distribution = "qbench"
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY, Op.PRIORITIES})
    capabilities = frozenset({Capability.ROUND_TRIPS})
    cluster_setup = "RedisCluster client; every key of the queue under the hash tag {namespace}"
    preset: ClassVar[str]

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.variant: Variant = self.chosen_variant()
        self.round_trips = RoundTripCounter()
        counting = os.environ.get(ENV_COUNTERS) == "1"
        client = make_client(
            url,
            self.variant,
            workers=concurrency,
            wrap_connection_class=(
                (lambda base: counting_connection_class(base, self.round_trips)) if counting else None
            ),
        )
        self.queue = RedisQueue(client, self.variant, namespace=QUEUE_NAME)

    @classmethod
    def chosen_variant(cls) -> Variant:
        return PRESETS[cls.preset]

    def setup(self) -> str:
        v = self.variant
        return (
            f"1 process, WorkerPool of {self.concurrency} threads (dequeue={v.dequeue}, batch={v.batch}, "
            f"ttl={v.ttl}, dispatch={v.dispatch}, prefetch={v.prefetch}, ack={v.ack}, conn={v.conn}, "
            f"retention={v.retention})"
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

    def counters(self) -> dict[str, int]:
        round_trips, commands = self.round_trips.snapshot()
        return {"round_trips": round_trips, "commands": commands}

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


class ScriptedDeleteDriver(ReferenceDriver):
    """scripted at the retention most peers have: a completed job's record goes at once."""

    name = "scripted+retention=delete"
    preset = "scripted"

    @classmethod
    def chosen_variant(cls) -> Variant:
        return PRESETS["scripted"].with_overrides(retention="delete")


class VariantDriver(ReferenceDriver):
    """Whatever variant `VARIANT_ENV` names (set by the harness for `--driver SPEC`)."""

    name = "variant"

    @classmethod
    def chosen_variant(cls) -> Variant:
        return parse_variant(os.environ[VARIANT_ENV])
