"""Optional timing of each hop of a pickup inside a worker pool (off unless `ENV_HOPS` is set).

With `QBENCH_HOPS=/path/file` in a worker process's environment, every job the pool
runs appends one line to that file when its handler is about to start:

    job_id woke_us claimed_us handed_us run_us

(Unix microseconds, the host clock a producer's timestamp uses too): `woke_us` when the
wait that brought the job returned (0 when the claim did not wait), `claimed_us` when the
claim's reply was in, `handed_us` when the thread that runs it had it (the same thread:
right after the claim's bookkeeping; another: when it took it from the backlog), `run_us`
just before the handler is called. One O_APPEND write per job, so many processes may
share the file. `qbench reproduce --only pickup_hops` reads these lines against the
producer's own timestamps.

Off (the default), each hook is one module attribute test: `TRACE is None`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

ENV_HOPS = "QBENCH_HOPS"
"""A file path: trace every job's hops there (see the module docstring)."""


def now_us() -> int:
    return time.time_ns() // 1000


class HopTrace:
    """Per-job hop timestamps of one process, written out when each job's handler starts."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._local = threading.local()
        self._jobs: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def woke(self) -> None:
        """This thread's blocking wait returned (with a wake-up or its timeout)."""
        self._local.woke = now_us()

    def claimed(self, job_ids: Iterable[str]) -> None:
        """This thread's claim brought these jobs (the wait before it, if any, is this thread's)."""
        woke = getattr(self._local, "woke", 0)
        self._local.woke = 0
        at = now_us()
        with self._lock:
            for job_id in job_ids:
                self._jobs[job_id] = [woke, at, 0]

    def handed(self, job_id: str) -> None:
        """The thread that will run the job has it."""
        with self._lock:
            hops = self._jobs.get(job_id)
            if hops is not None:
                hops[2] = now_us()

    def run(self, job_id: str) -> None:
        """The handler is about to be called: write the job's line."""
        at = now_us()
        with self._lock:
            woke, claimed, handed = self._jobs.pop(job_id, None) or (0, 0, 0)
        os.write(self._fd, f"{job_id} {woke} {claimed} {handed or claimed} {at}\n".encode())


def _from_env() -> HopTrace | None:
    path = os.environ.get(ENV_HOPS)
    return HopTrace(path) if path else None


TRACE: HopTrace | None = _from_env()
"""The process's trace, or None (the default: no hook costs more than this test)."""
