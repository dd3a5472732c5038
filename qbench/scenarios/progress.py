"""The live progress line of a load run (pure functions: no Locust, no I/O).

The master (or the local process) prints one every few seconds, prefixed with
`PREFIX` so `qbench load` can pick them out of Locust's output and relay them:

    [  10/20 s] users 10  ops/s 2,431  enqueue p50 0.41 ms p99 1.9 ms  failures 0

ops/s is the main operation's completions per second over the last few whole seconds
that every process has reported (a worker reports every 3 s); p50/p99 are over the run
so far; failures count every operation's.
"""

from __future__ import annotations

from collections.abc import Mapping

from qbench.scenarios.recorder import OpSamples, rate_window
from qbench.scenarios.workload import USER_KIND_TABLE, Workload

PREFIX = "qbench-progress "
MAIN_OPS = {name: kind.main_op for name, kind in USER_KIND_TABLE.items()}
"""The operation a user kind exists to do: the one the progress line follows."""
RATE_WINDOW_S = 5


def main_op(workload: Workload) -> str | None:
    """The main operation of the workload's first user kind (None: a kind without one)."""
    for kind, weight in workload.user_mix.items():
        if weight > 0:
            return MAIN_OPS.get(kind)
    return None


def fmt_ms(value: float) -> str:
    """Two significant digits below 10 ms, whole ms with thousands separators above 100."""
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def progress_line(
    *,
    elapsed_s: float,
    total_s: float,
    users: int,
    ops: Mapping[str, OpSamples],
    op: str | None,
    reported_s: float | None,
) -> str:
    """One progress line; `reported_s`: seconds since the run's origin up to which every
    process's samples are in (None: not all have reported yet)."""
    width = len(f"{total_s:.0f}")
    parts = [f"[{elapsed_s:>{width + 1}.0f}/{total_s:.0f} s]", f"users {users}"]
    if op is None:  # no main operation: follow the busiest one
        op = max(ops, key=lambda name: ops[name].count, default=None)
    samples = ops.get(op) if op else None
    rate = (
        rate_window(samples.per_second, until_s=reported_s, window_s=RATE_WINDOW_S)
        if samples is not None and reported_s is not None
        else None
    )
    parts.append(f"ops/s {rate[0]:,.0f}" if rate else "ops/s -")
    if op and samples is not None and samples.count:
        p50, p99 = samples.percentiles_ms((50.0, 99.0))
        parts.append(f"{op} p50 {fmt_ms(p50)} ms p99 {fmt_ms(p99)} ms")
    elif op:
        parts.append(f"{op} -")
    parts.append(f"failures {sum(s.failures for s in ops.values()):,}")
    return "  ".join(parts)
