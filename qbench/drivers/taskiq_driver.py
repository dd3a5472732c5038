"""taskiq-redis: the README's setup (RedisStreamBroker + RedisAsyncResultBackend)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, ClassVar

from qbench.driver import AsyncDriver, Capability, arecord_pickup, cluster_node_url, sentinel_address
from qbench.drivers.faults import async_client, census, job_id, json_field

TASK = "qbench_noop"
STREAM = GROUP = "taskiq"
"""RedisStreamBroker's defaults: the stream's key and its consumer group."""


async def qbench_noop(sent_at: float) -> None:
    await arecord_pickup(sent_at)


class TaskiqDriver(AsyncDriver):
    name = "taskiq"
    distribution = "taskiq-redis"
    requirements = "requirements/taskiq.txt"
    cluster_setup = "its cluster classes: RedisStreamClusterBroker + RedisAsyncClusterResultBackend"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "its Sentinel classes: RedisStreamSentinelBroker + RedisAsyncSentinelResultBackend"
    delivery = "at-least-once"
    """A stream message is acknowledged (XACK) once its result is saved; until then it stays
    in the consumer group's pending entries, which another worker claims (XAUTOCLAIM) once
    idle for idle_timeout."""
    recovery_window_s = 600.0
    """idle_timeout: 600,000 ms by default."""
    broker_options: ClassVar[dict[str, Any]] = {}
    """RedisStreamBroker(...) keywords of this configuration (none: the defaults)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        node = cluster_node_url(url)
        sentinel = sentinel_address(url)
        if sentinel is not None:
            self.broker: Any = self._sentinel_broker(sentinel)
        else:
            self.broker = self._single_broker(url) if node is None else self._cluster_broker(node)
        self.task: Any = self.broker.task(task_name=TASK)(qbench_noop)
        self.started = False

    def _single_broker(self, url: str) -> Any:
        from taskiq_redis import (  # type: ignore[import-not-found,unused-ignore]
            RedisAsyncResultBackend,
            RedisStreamBroker,
        )

        return RedisStreamBroker(url=url, **self.broker_options).with_result_backend(
            RedisAsyncResultBackend(redis_url=url, **self.backend_options())
        )

    def _sentinel_broker(self, sentinel: tuple[str, int, str]) -> Any:
        """The same setup with the package's Sentinel classes (they take no idle_timeout:
        the Sentinel stream broker claims no other consumer's pending messages)."""
        from taskiq_redis import (  # type: ignore[import-not-found,unused-ignore]
            RedisAsyncSentinelResultBackend,
            RedisStreamSentinelBroker,
        )

        host, port, master = sentinel
        return RedisStreamSentinelBroker(sentinels=[(host, port)], master_name=master).with_result_backend(
            RedisAsyncSentinelResultBackend(
                sentinels=[(host, port)], master_name=master, **self.backend_options()
            )
        )

    def _cluster_broker(self, node_url: str) -> Any:
        """The same setup with the package's Redis Cluster classes (its README lists a
        broker of each type and a result backend for a cluster)."""
        from taskiq_redis import (  # type: ignore[import-not-found,unused-ignore]
            RedisAsyncClusterResultBackend,
            RedisStreamClusterBroker,
        )

        return RedisStreamClusterBroker(url=node_url).with_result_backend(
            RedisAsyncClusterResultBackend(redis_url=node_url, **self.backend_options())
        )

    def backend_options(self) -> dict[str, Any]:
        """Result backend options: none, the README's setup (results never expire)."""
        return {}

    def setup(self) -> str:
        return (
            f"1 process, asyncio, receiver with max_async_tasks={self.concurrency} "
            "(the CLI's default is 2 processes x 100)"
        )

    async def aenqueue(self, sent_at: float) -> None:
        if not self.started:
            await self.broker.startup()
            self.started = True
        await self.task.kiq(sent_at)

    async def aclose(self) -> None:
        if self.started:
            await self.broker.shutdown()

    def census(self) -> dict[str, Any]:
        """`stream_census` on the broker's stream."""

        async def take() -> dict[str, Any]:
            client = async_client(self.url)
            try:
                return await stream_census(client)
            finally:
                await client.aclose()

        return self.run(take())

    def run_worker(self, *, index: int) -> None:
        from taskiq.api import run_receiver_task  # type: ignore[import-not-found,unused-ignore]

        async def work() -> None:
            self.broker.is_worker_process = True
            await self.broker.startup()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            receiver = asyncio.create_task(run_receiver_task(self.broker, max_async_tasks=self.concurrency))
            await stop.wait()
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await self.broker.shutdown()

        self.run(work())


async def stream_census(client: Any, stream: str = STREAM, group: str = GROUP) -> dict[str, Any]:
    """Pending: stream entries the consumer group has not acknowledged (delivered and
    pending, or not yet delivered); taskiq-redis never deletes an entry, so the rest were
    acknowledged. Without the group (a Redis restarted without persistence lost it, and the
    producer's XADD made the stream again) every entry is undelivered. Failed: none (an
    error result is saved, and acknowledged)."""
    entries = await client.xrange(stream, "-", "+")
    if not entries:
        return census([], [])
    groups = {_text(g["name"]): g for g in await client.xinfo_groups(stream)}
    if group in groups:
        last = _stream_id(groups[group].get("last-delivered-id", b"0-0"))
        pending_ids = {
            _text(e["message_id"]) for e in await client.xpending_range(stream, group, "-", "+", 10**9)
        }
    else:
        last, pending_ids = (0, 0), set()
    pending = []
    for entry_id, fields in entries:
        if _text(entry_id) in pending_ids or _stream_id(entry_id) > last:
            sent = json_field(fields.get(b"data", fields.get("data")), "args", 0)
            if sent is not None:
                pending.append(job_id(sent))
    return census([], pending)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class TaskiqIdleTimeoutDriver(TaskiqDriver):
    """The stream broker's own recovery, made short: a pending message idle for 5 s is
    claimed by another worker (idle_timeout=5000), and the claim lock expires after 5 s
    (unacknowledged_lock_timeout=5) so a worker killed while holding it cannot block the
    others for good."""

    name = "taskiq+idle_timeout=5000"
    cluster_setup = ""  # a fault-test configuration: a single server or a Sentinel, never a cluster
    recovery_window_s = 10.0
    broker_options: ClassVar[dict[str, Any]] = {"idle_timeout": 5000, "unacknowledged_lock_timeout": 5}

    def setup(self) -> str:
        return super().setup() + "; idle_timeout=5000 ms, unacknowledged_lock_timeout=5 s"


class TaskiqResultExpiryDriver(TaskiqDriver):
    """A labelled configuration: results expire after an hour (`result_ex_time`)."""

    name = "taskiq+result_ex_time=3600"

    def backend_options(self) -> dict[str, Any]:
        return {"result_ex_time": 3600}

    def setup(self) -> str:
        return super().setup() + "; results expire after 3600 s"
