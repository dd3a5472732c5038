"""arq: asyncio jobs; one worker process running up to `max_jobs` (default 10) at once."""

from __future__ import annotations

from typing import Any, ClassVar

from qbench.driver import AsyncDriver, Capability, arecord_pickup, sentinel_address
from qbench.drivers.faults import census, job_id

FUNCTION = "qbench_noop"


async def qbench_noop(ctx: dict[str, Any], sent_at: float) -> None:
    await arecord_pickup(sent_at)


def redis_settings(url: str) -> Any:
    """arq's RedisSettings for `url`; a Sentinel URL uses its documented `sentinel=True`
    (host: the list of Sentinels, `sentinel_master`)."""
    from arq.connections import RedisSettings  # type: ignore[import-not-found,unused-ignore]

    sentinel = sentinel_address(url)
    if sentinel is None:
        return RedisSettings.from_dsn(url)
    host, port, master = sentinel
    return RedisSettings(host=[(host, port)], sentinel=True, sentinel_master=master)


class ArqDriver(AsyncDriver):
    name = "arq"
    distribution = "arq"
    requirements = "requirements/arq.txt"
    capabilities = frozenset({Capability.CENSUS})
    sentinel_setup = "RedisSettings(host=[sentinel], sentinel=True, sentinel_master=...)"
    delivery = "at-least-once"
    recovery_window_s = 310.0
    """A job stays in the queue until it finishes; a dead worker's `arq:in-progress:` key
    expires after job_timeout (300 s) + 10 s, and then another worker runs it again."""
    worker_options: ClassVar[dict[str, Any]] = {}
    """Worker(...) keywords of this configuration (none: arq's defaults)."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self.settings: Any = redis_settings(url)
        self.pool: Any = None

    def setup(self) -> str:
        return f"1 process, asyncio, Worker(max_jobs={self.concurrency}); defaults otherwise"

    async def _pool(self) -> Any:
        if self.pool is None:
            from arq import create_pool  # type: ignore[import-not-found,unused-ignore]

            self.pool = await create_pool(self.settings)
        return self.pool

    async def aenqueue(self, sent_at: float) -> None:
        await (await self._pool()).enqueue_job(FUNCTION, sent_at)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    def census(self) -> dict[str, Any]:
        """Pending: the queue (a running job stays there until it ends). Failed: results
        stored with success False (arq keeps results for an hour)."""

        async def take() -> dict[str, Any]:
            pool = await self._pool()
            queued = await pool.queued_jobs()
            results = await pool.all_job_results()
            failed = [job_id(r.args[0]) for r in results if not r.success and r.args]
            return census(failed, [job_id(j.args[0]) for j in queued if j.args])

        return self.run(take())

    def run_worker(self, *, index: int) -> None:
        from arq.worker import Worker, func  # type: ignore[import-not-found,unused-ignore]

        # Worker.run() handles SIGINT/SIGTERM itself (finishes running jobs, then exits).
        worker = Worker(
            functions=[func(qbench_noop, name=FUNCTION)],
            redis_settings=self.settings,
            max_jobs=self.concurrency,
            **self.worker_options,
        )
        worker.run()


class ArqJobTimeoutDriver(ArqDriver):
    """arq's own recovery, made short: job_timeout=5 s, so a dead worker's in-progress key
    expires after 15 s and another worker runs the job again (retry_jobs stays on, its
    default; max_tries 5)."""

    name = "arq+job_timeout=5"
    recovery_window_s = 15.0
    worker_options: ClassVar[dict[str, Any]] = {"job_timeout": 5}

    def setup(self) -> str:
        return super().setup() + "; job_timeout=5"
