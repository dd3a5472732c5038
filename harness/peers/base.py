"""The peer driver interface: what every library's driver implements (stdlib only)."""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from typing import ClassVar, TypeVar

T = TypeVar("T")

SINK_ENV = "QBENCH_PEER_SINK"
"""Path of the file every handler appends one line to (set for producer and workers)."""
URL_ENV = "QBENCH_PEER_REDIS_URL"
QUEUE_NAME = "qbench_peers"
"""Queue (or namespace) name each driver uses, where the library lets one choose."""


def record_pickup(sent_at: float) -> None:
    """The no-op job's body: append `sent_at_us started_at_us` to the sink.

    One O_APPEND write of a short line per job is atomic on Linux, so handlers in
    many processes (including RQ's forked work horses) share one file safely.
    """
    started_us = time.time_ns() // 1000
    line = b"%d %d\n" % (round(sent_at * 1e6), started_us)
    fd = os.open(os.environ[SINK_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Driver(ABC):
    """One queue library, driven through its ordinary documented API and defaults.

    A driver object lives in a subprocess running the library's own virtualenv. The
    producer process calls `enqueue_serial`/`enqueue_many`; each worker process calls
    `run_worker`, which blocks until SIGTERM and then stops the library's worker the
    way its documentation says (a warm shutdown). Stopping, draining and measuring are
    the harness's job: it signals the worker processes and counts sink lines.
    """

    name: ClassVar[str]
    """Driver name (the `variant` column)."""
    distribution: ClassVar[str]
    """The PyPI distribution whose version the report shows."""
    has_enqueue_many: ClassVar[bool] = False
    """True when the library has a documented bulk enqueue."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency

    @abstractmethod
    def setup(self) -> str:
        """The worker setup, for the report: processes, threads, async concurrency."""

    def worker_processes(self) -> int:
        """How many worker processes the harness starts (each runs `run_worker`)."""
        return 1

    @abstractmethod
    def enqueue(self, sent_at: float) -> None:
        """Enqueue one no-op job carrying `sent_at` (Unix seconds) as its argument."""

    def enqueue_serial(self, count: int) -> None:
        """Enqueue `count` jobs one call at a time, each stamped when it is sent."""
        for _ in range(count):
            self.enqueue(time.time())

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        """Enqueue jobs with the library's bulk call (only if `has_enqueue_many`)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    @abstractmethod
    def run_worker(self, *, index: int) -> None:
        """Run this process's share of the workers until SIGTERM, then stop cleanly."""

    def close(self) -> None:  # noqa: B027 - optional hook, most drivers need nothing here
        """Release connections (producer side)."""


class AsyncDriver(Driver):
    """A driver for an asyncio library: one event loop per process runs every call."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self._runner = asyncio.Runner()

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await coroutine

        return self._runner.run(wrapper())

    @abstractmethod
    async def aenqueue(self, sent_at: float) -> None:
        """Enqueue one job (async)."""

    def enqueue(self, sent_at: float) -> None:
        self.run(self.aenqueue(sent_at))

    def enqueue_serial(self, count: int) -> None:
        async def serial() -> None:
            for _ in range(count):
                await self.aenqueue(time.time())

        self.run(serial())

    async def aclose(self) -> None:
        """Close the library's connections (async)."""

    def close(self) -> None:
        try:
            self.run(self.aclose())
        finally:
            self._runner.close()
