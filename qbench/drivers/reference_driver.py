"""The reference presets as peers: `RedisQueue` producers and a `WorkerPool` of threads.

Any variant can run the battery too (`qbench peers --driver 'scripted+retention=delete'`):
`VariantDriver` takes its variant from `VARIANT_ENV`, which the harness sets for it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection

from qbench.driver import (
    ENV_CHAOS,
    ENV_COUNTERS,
    QUEUE_NAME,
    Capability,
    Driver,
    Op,
    record_pickup,
    sentinel_address,
)
from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.connection import CONNECT_TIMEOUT_S, close_client, make_client
from qbench.queue_impl.counting import RoundTripCounter, counting_connection_class
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Priority, as_text
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.scheduler import Scheduler
from qbench.queue_impl.worker import WorkerPool

JOB_TYPE = "noop"
VARIANT_ENV = "QBENCH_REFERENCE_VARIANT"
"""The `preset+toggle=value,...` a `VariantDriver` runs (set by the harness)."""


CHAOS_LEASE_S = 2.0
"""A worker's heartbeat lease in a fault test (ENV_CHAOS): silent this long, it is dead."""
CHAOS_RECOVER_INTERVAL_S = 0.5
"""How often the scheduler beside each worker looks for a dead worker's jobs in a fault test."""


def _handle(job: Job) -> None:
    record_pickup(float(job.payload.decode()), priority=job.priority.label)


class _SentinelFollowingConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that asks the Sentinel for the primary whenever it
    reconnects. redis-py 8 reconnects a broken connection through `connect_check_health`,
    which keeps the address it had: a connection a thread keeps for good (conn=pinned)
    would dial the dead primary forever after a failover."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def _client(url: str, variant: Variant, *, workers: int, wrap: Any) -> RedisClient:
    """`make_client`, or for a Sentinel URL a client of the primary the Sentinel names
    (redis-py's Sentinel support: it asks again after a failover)."""
    found = sentinel_address(url)
    if found is None:
        return make_client(url, variant, workers=workers, wrap_connection_class=wrap)
    host, port, master = found
    sentinel = Sentinel(
        [(host, port)], socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
    )
    client: redis.Redis = sentinel.master_for(
        master,
        socket_timeout=variant.socket_timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        max_connections=variant.pool_size_for(workers),
        connection_class=_SentinelFollowingConnection,
    )
    return client


class ReferenceDriver(Driver):
    """One preset of the reference queue, with the same defaults `qbench` uses elsewhere.

    It runs in qbench's own environment (no `requirements`). A producer started with
    `ENV_COUNTERS=1` counts its client's round trips (`Capability.ROUND_TRIPS`), the way
    `qbench ops` and the load users count them; otherwise it counts nothing and pays nothing.
    """

    distribution = "qbench"
    operations = frozenset({Op.ENQUEUE, Op.ENQUEUE_MANY, Op.PRIORITIES})
    capabilities = frozenset({Capability.ROUND_TRIPS, Capability.CENSUS})
    cluster_setup = "RedisCluster client; every key of the queue under the hash tag {namespace}"
    sentinel_setup = "redis-py Sentinel.master_for (asks the Sentinel for the primary after a failover)"
    delivery = "at-least-once"
    recovery_window_s = CHAOS_LEASE_S + CHAOS_RECOVER_INTERVAL_S
    preset: ClassVar[str]

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.variant: Variant = self.chosen_variant()
        self.round_trips = RoundTripCounter()
        counting = os.environ.get(ENV_COUNTERS) == "1"
        client = _client(
            url,
            self.variant,
            # A fault test adds a scheduler beside the pool's workers.
            workers=concurrency + (1 if os.environ.get(ENV_CHAOS) == "1" else 0),
            wrap=((lambda base: counting_connection_class(base, self.round_trips)) if counting else None),
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
        if os.environ.get(ENV_CHAOS) != "1":
            WorkerPool(self.queue, {JOB_TYPE: _handle}, concurrency=self.concurrency).run_until_stopped()
            return
        # A fault test: a scheduler beside the pool returns a dead worker's jobs once its
        # lease runs out, as `python -m qbench.queue_impl.scheduler` does in a deployment.
        handlers = {JOB_TYPE: _handle}
        pool = WorkerPool(self.queue, handlers, concurrency=self.concurrency, lease_s=CHAOS_LEASE_S)
        scheduler = Scheduler(self.queue, interval_s=0.2, recover_interval_s=CHAOS_RECOVER_INTERVAL_S)
        scheduler.start()
        try:
            pool.run_until_stopped()
        finally:
            scheduler.stop()

    def census(self) -> dict[str, Any]:
        """Dead-lettered jobs (failed), and jobs queued, scheduled or in a processing list
        (pending), by the `sent_us` their payload carries."""
        queue = self.queue
        consumers = queue.consumers()
        pending_ids: list[str] = []
        dead_ids: list[str] = []
        for part in queue.partitions:
            keys = part.keys
            for priority in PRIORITY_ORDER:
                pending_ids += [as_text(i) for i in queue.client.lrange(keys.queue(priority), 0, -1)]
            for consumer in consumers:
                pending_ids += [as_text(i) for i in queue.client.lrange(keys.processing(consumer), 0, -1)]
            pending_ids += [as_text(i) for i in queue.client.zrange(keys.scheduled(), 0, -1)]
            dead_ids += [as_text(i) for i in queue.client.lrange(keys.dead(), 0, -1)]
        return {"failed": self._stamps(dead_ids), "pending": self._stamps(pending_ids)}

    def _stamps(self, job_ids: Sequence[str]) -> list[int]:
        stamps = []
        for job_id in job_ids:
            job = self.queue.get_job(job_id)
            if job is not None:
                stamps.append(round(float(job.payload.decode()) * 1e6))
        return stamps

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
