"""SAQ: asyncio jobs; one worker process with `concurrency` (default 10) job tasks."""

from __future__ import annotations

from typing import Any

from qbench.driver import QUEUE_NAME, AsyncDriver, arecord_pickup

FUNCTION = "qbench_noop"


async def qbench_noop(ctx: dict[str, Any], *, sent_at: float) -> None:
    await arecord_pickup(sent_at)


class SaqDriver(AsyncDriver):
    name = "saq"
    distribution = "saq"
    requirements = "requirements/saq.txt"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from saq import Queue  # type: ignore[import-not-found,unused-ignore]

        self.queue: Any = Queue.from_url(url, name=QUEUE_NAME)
        self.connected = False

    def setup(self) -> str:
        return f"1 process, asyncio, Worker(concurrency={self.concurrency}); defaults otherwise"

    async def aenqueue(self, sent_at: float) -> None:
        if not self.connected:
            await self.queue.connect()
            self.connected = True
        await self.queue.enqueue(FUNCTION, sent_at=sent_at)

    async def aclose(self) -> None:
        await self.queue.disconnect()

    def run_worker(self, *, index: int) -> None:
        from saq import Worker  # type: ignore[import-not-found,unused-ignore]

        # The same steps as `saq` on the command line: connect, start (which stops
        # gracefully on SIGINT/SIGTERM), disconnect.
        worker = Worker(self.queue, functions=[(FUNCTION, qbench_noop)], concurrency=self.concurrency)

        async def work() -> None:
            try:
                await self.queue.connect()
                await worker.start()
            finally:
                await self.queue.disconnect()

        self.run(work())
