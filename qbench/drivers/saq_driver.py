"""SAQ: asyncio jobs; one worker process with `concurrency` (default 10) job tasks."""

from __future__ import annotations

from typing import Any, ClassVar

from qbench.driver import QUEUE_NAME, AsyncDriver, Capability, arecord_pickup
from qbench.drivers.faults import async_client, census, job_id

FUNCTION = "qbench_noop"


async def qbench_noop(ctx: dict[str, Any], *, sent_at: float) -> None:
    await arecord_pickup(sent_at)


class SaqDriver(AsyncDriver):
    name = "saq"
    distribution = "saq"
    requirements = "requirements/saq.txt"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "RedisQueue(redis=redis-py asyncio Sentinel.master_for(...)): it takes any client"
    recovery_window_s = 75.0
    """A dead worker's job stays active until it is past its timeout (10 s) and a sweep
    (every 60 s) aborts it; with retries=1 (the default) it ends ABORTED, not run again."""
    job_options: ClassVar[dict[str, Any]] = {}
    """Job fields given with each enqueue (none: SAQ's defaults)."""
    timers: ClassVar[dict[str, int]] = {}
    """Worker(timers=...) of this configuration (none: SAQ's defaults)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from saq.queue.redis import RedisQueue  # type: ignore[import-not-found,unused-ignore]

        self.queue: Any = RedisQueue(async_client(url), name=QUEUE_NAME)
        self.connected = False

    def setup(self) -> str:
        return f"1 process, asyncio, Worker(concurrency={self.concurrency}); defaults otherwise"

    async def _connect(self) -> None:
        if not self.connected:
            await self.queue.connect()
            self.connected = True

    async def aenqueue(self, sent_at: float) -> None:
        await self._connect()
        await self.queue.enqueue(FUNCTION, sent_at=sent_at, **self.job_options)

    async def aclose(self) -> None:
        await self.queue.disconnect()

    def census(self) -> dict[str, Any]:
        """Failed: jobs FAILED or ABORTED (a swept job that may not retry). Pending: NEW,
        QUEUED, ACTIVE or ABORTING."""
        from saq.job import Status  # type: ignore[import-not-found,unused-ignore]

        async def take() -> dict[str, Any]:
            await self._connect()
            failed: list[int] = []
            pending: list[int] = []
            async for job in self.queue.iter_jobs():
                sent = (job.kwargs or {}).get("sent_at")
                if sent is None or job.status == Status.COMPLETE:
                    continue
                (failed if job.status in (Status.FAILED, Status.ABORTED) else pending).append(job_id(sent))
            return census(failed, pending)

        return self.run(take())

    def run_worker(self, *, index: int) -> None:
        from saq import Worker  # type: ignore[import-not-found,unused-ignore]

        # The same steps as `saq` on the command line: connect, start (which stops
        # gracefully on SIGINT/SIGTERM), disconnect.
        options: dict[str, Any] = {"timers": dict(self.timers)} if self.timers else {}
        worker = Worker(
            self.queue, functions=[(FUNCTION, qbench_noop)], concurrency=self.concurrency, **options
        )

        async def work() -> None:
            try:
                await self.queue.connect()
                await worker.start()
            finally:
                await self.queue.disconnect()

        self.run(work())


class SaqRetriesDriver(SaqDriver):
    """SAQ's sweep, made to retry: each job may run 3 times (`retries=3`) with a 5 s
    `timeout`, and workers sweep stuck jobs every 2 s (`timers={"sweep": 2}`)."""

    name = "saq+retries=3"
    delivery = "at-least-once"
    recovery_window_s = 15.0
    """timeout 5 s + sweep 2 s + the sweep's own 5 s wait for an abort nobody answers."""
    job_options: ClassVar[dict[str, Any]] = {"retries": 3, "timeout": 5}
    timers: ClassVar[dict[str, int]] = {"sweep": 2}

    def setup(self) -> str:
        return super().setup() + "; jobs retries=3 timeout=5, sweep every 2 s"
