"""Celery with the Redis broker: one worker, prefork pool of 10 child processes."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from qbench.driver import QUEUE_NAME, Capability, Driver, record_pickup, sentinel_address
from qbench.drivers.faults import census, job_id, json_field, sync_client

TASK = "qbench_noop"
DEFAULT_QUEUE = "celery"
"""Celery's default queue (task_default_queue), a Redis list of that name."""
UNACKED = "unacked"
"""kombu's Redis transport: delivery tag -> [message, exchange, routing key] of every
message a worker fetched and has not acknowledged (unacked_key)."""


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


def _message_sent_us(message: Any) -> int | None:
    """The job id a kombu message (a dict) carries: its body is [args, kwargs, embed]."""
    if not isinstance(message, dict):
        return None
    body = message.get("body")
    if not isinstance(body, str):
        return None
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    sent = json_field(body, 0, 0)
    return None if sent is None else job_id(sent)


class CeleryDriver(Driver):
    name = "celery"
    distribution = "celery"
    requirements = "requirements/celery.txt"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "broker URL sentinel://HOST:PORT with broker_transport_options master_name"
    delivery = "at-most-once"
    """By default a task message is acknowledged just before the task runs (acks_late off)."""
    recovery_window_s = 3600.0
    """Messages a killed worker had prefetched but not started are still unacknowledged:
    the transport restores them after its visibility timeout (1 h by default)."""
    conf: ClassVar[dict[str, Any]] = {}
    """Settings of this configuration (none: Celery's defaults)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from celery import Celery  # type: ignore[import-not-found,unused-ignore]

        self.url = url
        sentinel = sentinel_address(url)
        broker = url
        transport: dict[str, Any] = dict(self.conf.get("broker_transport_options", {}))
        if sentinel is not None:
            host, port, master = sentinel
            broker = f"sentinel://{host}:{port}"
            transport["master_name"] = master
        # No result backend: Celery's default (results are not stored).
        self.app: Any = Celery(QUEUE_NAME, broker=broker)
        self.app.conf.update({k: v for k, v in self.conf.items() if k != "broker_transport_options"})
        if transport:
            self.app.conf.broker_transport_options = transport
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

    def census(self) -> dict[str, Any]:
        """Pending: the queue's list and the transport's `unacked` hash (fetched, not yet
        acknowledged: restored to the queue after the visibility timeout). Failed: none
        (without a result backend Celery keeps no record of a failed task)."""
        client = sync_client(self.url)
        try:
            found = [json_field(raw) for raw in client.lrange(DEFAULT_QUEUE, 0, -1)]
            found += [json_field(raw, 0) for raw in client.hvals(UNACKED)]
        finally:
            client.close()
        pending = [sent for sent in map(_message_sent_us, found) if sent is not None]
        return census([], pending)

    def close(self) -> None:
        self.app.close()


class CeleryAcksLateDriver(CeleryDriver):
    """Celery's documented at-least-once settings: task_acks_late and
    task_reject_on_worker_lost, with a 10 s visibility timeout so that a message a dead
    worker held is delivered again within seconds (the default is an hour). kombu's Redis
    transport sweeps for such messages every unacked_restore_interval (10 s) x
    unacked_restore_throttle (10) seconds in a prefork worker, so about every 100 s by
    default: its documented options make that every 2 s here."""

    name = "celery+acks_late"
    delivery = "at-least-once"
    recovery_window_s = 15.0
    """visibility_timeout 10 s, then the next restore sweep (every 2 s) of a live worker."""
    conf: ClassVar[dict[str, Any]] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": {
            "visibility_timeout": 10,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
    }

    def setup(self) -> str:
        return super().setup() + (
            "; task_acks_late, task_reject_on_worker_lost, visibility_timeout=10, "
            "unacked_restore_interval=2, unacked_restore_throttle=1"
        )
