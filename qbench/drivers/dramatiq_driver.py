"""Dramatiq with its Redis broker: one worker process with 10 worker threads."""

from __future__ import annotations

import signal
import threading
from typing import Any, ClassVar

from qbench.driver import QUEUE_NAME, Capability, Driver, record_pickup, sentinel_address
from qbench.drivers.faults import census, job_id, json_field, sync_client

ACTOR = "qbench_noop"
NAMESPACE = "dramatiq"


def qbench_noop(sent_at: float) -> None:
    record_pickup(sent_at)


class DramatiqDriver(Driver):
    name = "dramatiq"
    distribution = "dramatiq"
    requirements = "requirements/dramatiq.txt"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "RedisBroker(client=redis-py Sentinel.master_for(...))"
    delivery = "at-least-once"
    recovery_window_s = 60.0
    """A dead worker's unacked messages go back to the queue once its heartbeat is older
    than heartbeat_timeout (60 s) and some broker command runs maintenance (1 in 1,000)."""
    broker_options: ClassVar[dict[str, Any]] = {}
    """RedisBroker(...) keywords of this configuration (none: Dramatiq's defaults)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        import dramatiq  # type: ignore[import-not-found,unused-ignore]
        from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

        where: dict[str, Any] = (
            {"url": url} if sentinel_address(url) is None else {"client": sync_client(url)}
        )
        self.broker: Any = RedisBroker(namespace=NAMESPACE, **where, **self.broker_options)
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

    def census(self) -> dict[str, Any]:
        """Pending: the queue's and the delay queue's message hashes (`.msgs`, `.DQ.msgs`:
        queued and fetched-but-unacked). Failed: the dead-letter queue's (`.XQ.msgs`)."""
        client = self.broker.client

        def ids(key: str) -> list[int]:
            found = (json_field(raw, "args", 0) for raw in client.hvals(f"{NAMESPACE}:{key}"))
            return [job_id(sent) for sent in found if sent is not None]

        return census(ids(f"{QUEUE_NAME}.XQ.msgs"), ids(f"{QUEUE_NAME}.msgs") + ids(f"{QUEUE_NAME}.DQ.msgs"))

    def close(self) -> None:
        self.broker.close()


class DramatiqHeartbeatDriver(DramatiqDriver):
    """Dramatiq's requeue of a dead worker's messages, made prompt: heartbeat_timeout 5 s
    and maintenance on 1 in 10 broker commands (maintenance_chance=100000)."""

    name = "dramatiq+heartbeat_timeout=5000"
    recovery_window_s = 10.0
    broker_options: ClassVar[dict[str, Any]] = {"heartbeat_timeout": 5000, "maintenance_chance": 100_000}

    def setup(self) -> str:
        return super().setup() + "; heartbeat_timeout=5000 ms, maintenance_chance=100000"
