"""Sides of an interleaved run: a timing worker process per checkout (or in this process)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.harness.infra.processes import stop
from qbench.harness.timing import worker as worker_module
from qbench.harness.timing.interleave import Arm, Sample

WORKER_SCRIPT = Path(worker_module.__file__).resolve()
"""Run by file path with the side's own Python: the comparing commit's worker measures
both sides, whatever the measured checkout contains besides `queue_impl`."""

REPLY_TIMEOUT_S = 120.0
"""Longest wait for one reply (a round is well under a second; setup warms up a queue)."""


class WorkerError(RuntimeError):
    """A timing worker that failed, answered with an error, or did not answer in time."""


@dataclass(frozen=True)
class Checkout:
    """A tree whose `queue_impl` is measured, and the Python that runs its worker."""

    label: str
    root: Path
    python: str

    @classmethod
    def at(cls, label: str, root: Path, python: str | None = None) -> Checkout:
        """`python` defaults to the checkout's own `.venv/bin/python`, else this interpreter."""
        root = root.resolve()
        if worker_module.queue_package(root) is None:
            raise WorkerError(f"{root}: no queue_impl package (not a qbench checkout)")
        own = root / ".venv" / "bin" / "python"
        chosen = python or (str(own) if own.is_file() else sys.executable)
        if not os.access(chosen, os.X_OK):
            raise WorkerError(f"{chosen}: no Python to run the {label} worker with")
        return cls(label, root, chosen)


class WorkerProcess:
    """A running `harness/timing/worker.py`, one JSON line per request and per reply."""

    def __init__(self, checkout: Checkout, *, redis_url: str, cpu: int | None) -> None:
        self.checkout = checkout
        args = [checkout.python, str(WORKER_SCRIPT), "--root", str(checkout.root), "--redis-url", redis_url]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONHASHSEED"] = "0"  # the same string hashing on both sides
        # stderr to a file, not a pipe: a chatty worker must never block on a full pipe.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=checkout.root,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.hello = self.request({"cmd": "hello"})
        except BaseException:
            self.close()  # a worker that never answered still leaves no process or file open
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def request(self, message: dict[str, Any], timeout_s: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the process is gone: the reply below says why
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.proc.kill()  # a hung worker: no polite quit, it would hang too
            raise WorkerError(
                f"{self.checkout.label}: no reply to {message.get('cmd')} in {timeout_s:.0f}s"
            ) from None
        if line is None:
            raise WorkerError(f"{self.checkout.label}: worker exited: {self._stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"{self.checkout.label}: {reply.get('error', 'failed')}")
        return reply

    def _stderr_tail(self) -> str:
        stop(self.proc, grace_s=5, ask=None)  # it is exiting: give it time to say why
        self._stderr.seek(0)
        err = self._stderr.read()
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit code {self.proc.returncode}"

    def arm(self, case: str, variant: str, *, ops: int, handicap_us: float = 0.0, label: str = "") -> Arm:
        """A side of an interleaved run: rounds of `ops` operations of `case` under `variant`."""
        setup = self.request({"cmd": "setup", "case": case, "variant": variant, "handicap_us": handicap_us})
        case_id = setup["case_id"]

        def run_round() -> Sample:
            reply = self.request({"cmd": "round", "case_id": case_id, "ops": ops})
            return Sample(ops=int(reply["ops"]), wall_ns=int(reply["wall_ns"]), cpu_ns=int(reply["cpu_ns"]))

        return Arm(label or f"{self.checkout.label}:{setup.get('variant', variant)}", run_round)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError):
                self.request({"cmd": "quit"}, timeout_s=30)
            stop(self.proc, grace_s=10, ask=None)  # asked by `quit` already
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_process_arm(label: str, action: Any, ops: int) -> Arm:
    """A side run in this process: `ops` calls of `action` per round (`timed_round`)."""

    def run_round() -> Sample:
        timed = worker_module.timed_round(action, ops)
        return Sample(ops=timed["ops"], wall_ns=timed["wall_ns"], cpu_ns=timed["cpu_ns"])

    return Arm(label, run_round)
