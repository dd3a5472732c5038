"""Stopping a child process: ask, wait a grace period, then kill. Written once, here.

Every place that ends a child (a redis-server, a worker, the delay proxy, a Locust
process) uses `stop` or `stop_all`, so each reports the same thing: whether the child
left on its own within the grace or had to be killed, and how long it took. A caller
that has already asked in its own way (closed stdin, sent a `quit` message) passes
`ask=None`: the grace is then only a wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_GRACE_S = 10.0


@dataclass(frozen=True)
class StopResult:
    """How a child ended: `killed` when the grace ran out (SIGKILL), `returncode` as
    `Popen.returncode` has it (negative: the signal that ended it), `seconds` spent here."""

    killed: bool
    seconds: float
    returncode: int | None

    @property
    def already_exited(self) -> bool:
        """The child had exited before `stop` was called (nothing was sent)."""
        return not self.killed and self.seconds == 0.0


def stop(
    proc: subprocess.Popen[Any],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    ask: signal.Signals | None = signal.SIGTERM,
    group: bool = False,
) -> StopResult:
    """Send `ask` (unless None), wait up to `grace_s` seconds for `proc` to exit, then
    SIGKILL it and reap it. With `group`, the SIGKILL goes to the process group `proc`
    leads (started with `start_new_session=True`), so its children go too. Returns once
    the child is reaped; never raises for a child that is already gone."""
    return stop_all([proc], grace_s=grace_s, ask=ask, group=group)[0]


def stop_all(
    procs: Sequence[subprocess.Popen[Any]],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    ask: signal.Signals | None = signal.SIGTERM,
    group: bool = False,
) -> list[StopResult]:
    """`stop` for several children at once: all are asked first, then they share one grace
    period (stopping N workers takes one grace, not N). Results are in the order given."""
    started = time.monotonic()
    running = [proc.poll() is None for proc in procs]
    if ask is not None:
        for proc, alive in zip(procs, running, strict=True):
            if alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(ask)
    deadline = started + grace_s
    results: list[StopResult] = []
    for proc, alive in zip(procs, running, strict=True):
        if not alive:
            results.append(StopResult(killed=False, seconds=0.0, returncode=proc.returncode))
            continue
        killed = False
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
            _kill(proc, group=group)
            proc.wait()
        else:
            if group:  # the leader left; children it did not take along go now
                _kill(proc, group=True)
        seconds = time.monotonic() - started
        results.append(StopResult(killed=killed, seconds=seconds, returncode=proc.returncode))
    return results


def _kill(proc: subprocess.Popen[Any], *, group: bool) -> None:
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
            return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
