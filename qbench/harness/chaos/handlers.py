"""Job handlers for chaos runs: every execution is logged to a file that outlives the worker."""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from qbench.queue_impl.job import Job

LOG_DIR_ENV = "QBENCH_CHAOS_LOG_DIR"
"""Worker processes started by `qbench chaos` write their execution log here."""
JOB_TYPE = "chaos"
_STARTED, _DONE = b"S", b"D"


class ExecutionLog:
    """Handler that sleeps the payload's milliseconds, logging `S <id>` before and `D <id>` after.

    Lines go through one O_APPEND descriptor with one write() each, so they reach the
    kernel before the handler goes on: a SIGKILL or a Redis restart cannot lose them,
    and threads never interleave within a line.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, job: Job) -> None:
        os.write(self._fd, _STARTED + b" " + job.id.encode() + b"\n")
        time.sleep(float(job.payload.decode() or "0") / 1000.0)
        os.write(self._fd, _DONE + b" " + job.id.encode() + b"\n")

    def close(self) -> None:
        os.close(self._fd)


class _ProcessLog:
    """The log of this process, opened on first use from QBENCH_CHAOS_LOG_DIR."""

    def __init__(self) -> None:
        self._log: ExecutionLog | None = None

    def __call__(self, job: Job) -> None:
        if self._log is None:
            log_dir = os.environ.get(LOG_DIR_ENV)
            if not log_dir:
                raise RuntimeError(f"{LOG_DIR_ENV} is not set")
            self._log = ExecutionLog(Path(log_dir) / f"worker-{os.getpid()}.log")
        self._log(job)


HANDLERS = {JOB_TYPE: _ProcessLog()}
"""For `python -m qbench.queue_impl.worker --handlers qbench.harness.chaos.handlers:HANDLERS`."""


@dataclass
class Executions:
    """What the logs say: how often each job's handler started, and which finished."""

    started: collections.Counter[str] = field(default_factory=collections.Counter)
    done: set[str] = field(default_factory=set)


def read_executions(log_dir: Path) -> Executions:
    executions = Executions()
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_bytes().splitlines():
            kind, _, job_id = line.partition(b" ")
            if kind == _STARTED:
                executions.started[job_id.decode()] += 1
            elif kind == _DONE:
                executions.done.add(job_id.decode())
    return executions
