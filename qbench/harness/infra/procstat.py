"""CPU time and resident memory of processes, read from /proc (Linux).

`read_proc(pid)` returns the cumulative user+system CPU seconds and the RSS of one
process, or None when it is gone (or /proc cannot be read). `children_of(pids)` lists
the live descendants of some processes, by walking every /proc/<pid>/stat once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of one process."""

    pid: int
    name: str
    ppid: int
    cpu_s: float
    """user + system CPU seconds since the process started (its threads included)."""
    rss_bytes: int


def _parse_stat(text: str) -> tuple[str, list[str]]:
    # The command name is in parentheses and may itself contain spaces or parentheses.
    open_at, close_at = text.index("("), text.rindex(")")
    return text[open_at + 1 : close_at], text[close_at + 2 :].split()


def read_proc(pid: int) -> ProcSample | None:
    """CPU seconds and RSS of `pid`, or None when the process is gone or unreadable."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        status = (PROC / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return None
    try:
        name, fields = _parse_stat(stat)
        # Fields after the name start at field 3 (state): ppid is 4, utime 14, stime 15.
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
    except (ValueError, IndexError):
        return None
    rss_kb = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
            break
    return ProcSample(pid, name, ppid, (utime + stime) / CLOCK_TICKS, rss_kb * 1024)


def children_of(pids: Iterable[int]) -> set[int]:
    """Live descendants (children, grandchildren...) of `pids`, not the pids themselves."""
    parents: dict[int, int] = {}
    try:
        entries = [e for e in os.listdir(PROC) if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            _, fields = _parse_stat((PROC / entry / "stat").read_text())
            parents[int(entry)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    roots = set(pids)
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found | roots}
        found |= frontier
    return found
