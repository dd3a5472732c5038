"""taskiq-redis: the README's setup (RedisStreamBroker + RedisAsyncResultBackend)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from qbench.driver import AsyncDriver, arecord_pickup, cluster_node_url

TASK = "qbench_noop"


async def qbench_noop(sent_at: float) -> None:
    await arecord_pickup(sent_at)


class TaskiqDriver(AsyncDriver):
    name = "taskiq"
    distribution = "taskiq-redis"
    requirements = "requirements/taskiq.txt"
    cluster_setup = "its cluster classes: RedisStreamClusterBroker + RedisAsyncClusterResultBackend"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        node = cluster_node_url(url)
        self.broker: Any = self._single_broker(url) if node is None else self._cluster_broker(node)
        self.task: Any = self.broker.task(task_name=TASK)(qbench_noop)
        self.started = False

    def _single_broker(self, url: str) -> Any:
        from taskiq_redis import (  # type: ignore[import-not-found,unused-ignore]
            RedisAsyncResultBackend,
            RedisStreamBroker,
        )

        return RedisStreamBroker(url=url).with_result_backend(
            RedisAsyncResultBackend(redis_url=url, **self.backend_options())
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


class TaskiqResultExpiryDriver(TaskiqDriver):
    """A labelled configuration: results expire after an hour (`result_ex_time`)."""

    name = "taskiq+result_ex_time=3600"

    def backend_options(self) -> dict[str, Any]:
        return {"result_ex_time": 3600}

    def setup(self) -> str:
        return super().setup() + "; results expire after 3600 s"
