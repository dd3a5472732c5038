"""CPU placement for timing runs: pin the timed processes (and the redis-server) to one CPU.

On these 2-vCPU machines a round trip costs ~25 µs when client and server share a vCPU
and ~95 µs when they do not, and an unpinned run flips between the two (NOTES.md).
Timing runs therefore pin every process they time, and the server they start, to the
same CPU, and record it; `--cpu none` leaves placement to the scheduler (and says so).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PIN_NONE = "none"


class PlacementError(ValueError):
    """A CPU that this process may not run on, or a malformed --cpu value."""


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def choose_cpu(choice: str | None = None) -> int | None:
    """The CPU to pin timed processes to: `choice` (a number or `none`), else the highest
    allowed CPU (CPU 0 tends to take more of the machine's interrupts)."""
    if choice is not None and choice.strip().lower() == PIN_NONE:
        return None
    allowed = allowed_cpus()
    if choice is None or not choice.strip():
        return allowed[-1]
    try:
        cpu = int(choice)
    except ValueError:
        raise PlacementError(f"--cpu: expected a CPU number or 'none', got {choice!r}") from None
    if cpu not in allowed:
        raise PlacementError(f"--cpu: CPU {cpu} is not one this process may use ({allowed})")
    return cpu


def pin_pid(pid: int, cpu: int | None) -> list[int]:
    """Pin process `pid` to `cpu` (None: leave it); returns its affinity afterwards."""
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})
    return sorted(os.sched_getaffinity(pid))


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[list[int]]:
    """This process pinned to `cpu` for the block (None: unchanged); affinity restored after."""
    before = os.sched_getaffinity(0)
    try:
        yield pin_pid(0, cpu)
    finally:
        os.sched_setaffinity(0, before)


def describe(cpu: int | None, **pids: int | None) -> dict[str, object]:
    """run.json's `placement`: the chosen CPU and each named process's affinity."""
    placement: dict[str, object] = {"pinned_cpu": cpu if cpu is not None else PIN_NONE}
    for name, pid in pids.items():
        if pid is None:
            placement[f"{name}_affinity"] = "unknown"
            continue
        with contextlib.suppress(OSError):
            placement[f"{name}_affinity"] = sorted(os.sched_getaffinity(pid))
    return placement
