"""arq: asyncio jobs; one worker process running up to `max_jobs` (default 10) at once."""

from __future__ import annotations

from typing import Any

from qbench.driver import AsyncDriver, arecord_pickup

FUNCTION = "qbench_noop"


async def qbench_noop(ctx: dict[str, Any], sent_at: float) -> None:
    await arecord_pickup(sent_at)


class ArqDriver(AsyncDriver):
    name = "arq"
    distribution = "arq"
    requirements = "requirements/arq.txt"

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        from arq.connections import RedisSettings  # type: ignore[import-not-found,unused-ignore]

        self.settings: Any = RedisSettings.from_dsn(url)
        self.pool: Any = None

    def setup(self) -> str:
        return f"1 process, asyncio, Worker(max_jobs={self.concurrency}); defaults otherwise"

    async def aenqueue(self, sent_at: float) -> None:
        if self.pool is None:
            from arq import create_pool  # type: ignore[import-not-found,unused-ignore]

            self.pool = await create_pool(self.settings)
        await self.pool.enqueue_job(FUNCTION, sent_at)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    def run_worker(self, *, index: int) -> None:
        from arq.worker import Worker, func  # type: ignore[import-not-found,unused-ignore]

        # Worker.run() handles SIGINT/SIGTERM itself (finishes running jobs, then exits).
        worker = Worker(
            functions=[func(qbench_noop, name=FUNCTION)],
            redis_settings=self.settings,
            max_jobs=self.concurrency,
        )
        worker.run()
