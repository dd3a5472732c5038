"""Experiment 6: key building, `format` vs `precomputed`: allocations, time, share of a job's cost."""

from __future__ import annotations

import gc
import math
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qbench.queue_impl
from qbench.harness.experiments import RunContext, Section
from qbench.harness.infra.measured import MeasuredQueue, unique_namespace
from qbench.harness.results.render import (
    CLAIM_HEADER,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    PRESET_COLUMNS,
    Region,
    count_cell,
    figure,
    interval_verdict,
    markdown_table,
    median_of,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import Spread, difference_interval
from qbench.harness.timing.interleave import METRIC_OF, Plan, comparison_rows, interleave, paired_values
from qbench.harness.timing.placement import choose_cpu, pinned
from qbench.harness.timing.sides import in_process_arm
from qbench.queue_impl.config import PRESETS, KeyMode
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.keys import KeyBuilder, make_keys
from qbench.queue_impl.queue import RedisQueue

NAME = "key_building"
TITLE = "6. Key building: format vs precomputed"

MODES: tuple[KeyMode, ...] = ("format", "precomputed")
KINDS = ("queue", "processing", "job", "scheduled", "dead", "marker", "consumers", "heartbeat")
SEED_ALLOCATION_CUT = 0.90
SEED_CPU_CUT = (0.05, 0.10)
CPU_PARTLY = 0.01
"""Saving at least this share of a job cycle's CPU (but under the seed's 5%) is "partly"."""
BATCHES = 5
KEY_SET_PLAN = Plan(warmup_rounds=2, min_rounds=12, max_rounds=40, max_seconds=6.0, precision=0.02)
KEY_SETS_PER_ROUND = 1000
"""About 5 ms of key building per side per round."""
JOB_SET_METRIC = METRIC_OF["cpu"]
Call = tuple[str, tuple[Any, ...]]
"""One key-building call: the KeyBuilder method and its arguments."""


def _sample_args(kind: str) -> tuple[Any, ...]:
    if kind == "queue":
        return (Priority.NORMAL,)
    if kind in ("processing", "heartbeat"):
        return ("worker-1234-ab12cd34",)
    if kind == "job":
        return (uuid.uuid4().hex,)
    return ()


def run(ctx: RunContext) -> list[Row]:
    calls_per_op = 20_000 if ctx.quick else 200_000
    cycles = 200 if ctx.quick else 1000
    rows: list[Row] = []
    job_calls = {name: _record_job_calls(ctx.url, name) for name in PRESETS}
    for name, calls in job_calls.items():
        rows.append(Row(NAME, name, params(scope="job"), "key_calls_per_job", len(calls), "count", 0))
    for repeat in range(ctx.repeats):
        for mode in MODES:
            keys = make_keys(mode, unique_namespace("keys"))
            for kind in KINDS:
                call = (kind, _sample_args(kind))
                p = _mode_params(mode, kind)
                rows.append(
                    Row(
                        NAME,
                        "",
                        p,
                        "allocations_per_op",
                        _retained_blocks(keys, [call], 200),
                        "count",
                        repeat,
                    )
                )
                rows.append(
                    Row(NAME, "", p, "ns_per_op", _ns_per_call(keys, [call], calls_per_op), "ns", repeat)
                )
            # Both modes replay the same call list (the baseline's, the seed's "before" code path).
            calls = job_calls["baseline"]
            p = _mode_params(mode, "job_key_set")
            rows.append(
                Row(NAME, "", p, "allocations_per_op", _retained_blocks(keys, calls, 200), "count", repeat)
            )
        for name, variant in PRESETS.items():
            wall_us, cpu_us = _cycle_cost(ctx.url, name, cycles)
            keys = make_keys(variant.keys, unique_namespace("keys"))
            key_ns = _ns_per_call(keys, job_calls[name], calls_per_op // len(job_calls[name])) * len(
                job_calls[name]
            )
            p = params(scope="job")
            rows += [
                Row(NAME, name, p, "cycle_wall_us", wall_us, "us", repeat),
                Row(NAME, name, p, "cycle_cpu_us", cpu_us, "us", repeat),
                Row(NAME, name, p, "key_ns_per_job", key_ns, "ns", repeat),
            ]
        ctx.progress(
            f"repeat {repeat + 1}/{ctx.repeats}: {len(KINDS)} key kinds x 2 modes, "
            f"{cycles} job cycles per preset"
        )
    rows += _interleaved_key_sets(ctx, job_calls["baseline"])
    return rows


def _interleaved_key_sets(ctx: RunContext, calls: list[Call]) -> list[Row]:
    """The claim's measurement: `format` and `precomputed` building the same job key set,
    interleaved round by round (`qbench.harness.timing`), client CPU and wall ns per key set."""
    plan = KEY_SET_PLAN.scaled(0.5) if ctx.quick else KEY_SET_PLAN
    arms = [
        in_process_arm(
            mode, _key_set_action(make_keys(mode, unique_namespace("keys")), calls), KEY_SETS_PER_ROUND
        )
        for mode in MODES
    ]
    with pinned(choose_cpu()):
        result = interleave(arms[0], arms[1], plan=plan)
    rows = comparison_rows(
        result,
        experiment=NAME,
        variant_a="",
        variant_b="",
        params_a=_mode_params("format", "job_key_set"),
        params_b=_mode_params("precomputed", "job_key_set"),
        measures=("cpu", "wall"),
    )
    ratio = result.ratio("cpu")
    ctx.progress(
        f"job key set: {len(result.rounds)} interleaved rounds, stopped by {result.stopped_by}; "
        f"precomputed / format CPU {ratio.fmt(3) if ratio else '-'}"
    )
    return rows


def _key_set_action(keys: KeyBuilder, calls: list[Call]) -> Callable[[], None]:
    """One call = the whole key set of a job (every recorded call once), warmed up first."""
    bound = [(getattr(keys, name), args) for name, args in calls]

    def build_key_set() -> None:
        for method, args in bound:
            method(*args)

    for _ in range(200):  # let the interpreter specialize the calls first
        build_key_set()
    return build_key_set


def _mode_params(mode: KeyMode, kind: str) -> str:
    """A KeyBuilder measured on its own is a key mode, not a variant: `keys=` in params."""
    return params(keys=mode, kind=kind)


def _mode_values(rows: list[Row], mode: KeyMode, kind: str, metric: str) -> list[float]:
    return values_of(rows, variant="", metric=metric, params=_mode_params(mode, kind))


def _mode_median(rows: list[Row], mode: KeyMode, kind: str, metric: str) -> float | None:
    return median_of(rows, variant="", metric=metric, params=_mode_params(mode, kind))


class _RecordingKeys:
    """Forwards to a KeyBuilder and records every call (the queue's real key usage)."""

    def __init__(self, inner: KeyBuilder) -> None:
        self._inner = inner
        self.prefix = inner.prefix
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Callable[..., str]:
        method = getattr(self._inner, name)

        def recorded(*args: Any) -> str:
            self.calls.append((name, args))
            return str(method(*args))

        return recorded


def _record_job_calls(url: str, preset: str) -> list[Call]:
    """The key-building calls of one enqueue + dequeue + complete, on a real queue."""
    with MeasuredQueue(url, PRESETS[preset]) as mq:
        recorder = _RecordingKeys(mq.queue.keys)
        # Same namespace, client and consumer as mq.queue (which cleans up), recorded keys.
        q = RedisQueue(
            mq.client,
            mq.variant,
            namespace=mq.queue.namespace,
            consumer=mq.queue.consumer,
            keys=recorder,  # type: ignore[arg-type]
        )
        q.register_consumer()
        recorder.calls.clear()
        q.enqueue(Job(type="noop"))
        job = q.dequeue(wait=False)
        if job is None:
            raise RuntimeError(f"{preset}: the enqueued job could not be dequeued")
        q.complete(job)
        return recorder.calls


def _retained_blocks(keys: KeyBuilder, calls: list[Call], rounds: int) -> float:
    """Memory blocks still allocated per round of `calls` when every returned key is kept
    (tracemalloc sees live blocks only: temporaries freed within a call are not counted).

    Measured over `rounds` and `2 * rounds` rounds; the difference cancels every one-off
    block (the snapshot's own, a list growing), so a constant per-call cost comes out exact.
    Only blocks allocated by `queue_impl`'s code count, with the garbage collector off: a
    thread of the harness (the telemetry sampler) allocating or freeing meanwhile, or a
    collection freeing older garbage, would otherwise move the count.
    """
    bound = [(getattr(keys, name), args) for name, args in calls]
    for method, args in bound:  # caches fill on the first call (precomputed processing keys)
        method(*args)

    def live_blocks_after(n: int) -> int:
        kept: list[str | None] = [None] * (n * len(bound))
        gc_was_enabled = gc.isenabled()
        gc.disable()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            i = 0
            for _ in range(n):
                for method, args in bound:
                    kept[i] = method(*args)
                    i += 1
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
            if gc_was_enabled:
                gc.enable()
        ours = [tracemalloc.Filter(True, str(Path(qbench.queue_impl.__file__).parent / "*"))]
        stats = after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
        return sum(stat.count_diff for stat in stats)

    per_round = (live_blocks_after(2 * rounds) - live_blocks_after(rounds)) / rounds
    # A constant per-call cost is a whole number; a stray block or two (allocator
    # bookkeeping) moves it by 1/rounds, which is not a per-call allocation.
    return float(round(per_round)) if abs(per_round - round(per_round)) < 0.05 else per_round


def _ns_per_call(keys: KeyBuilder, calls: list[Call], rounds: int) -> float:
    """Nanoseconds per call: the fastest of `BATCHES` batches (a preempted batch only adds)."""
    bound = [(getattr(keys, name), args) for name, args in calls]
    for _ in range(max(rounds // 10, 10)):  # let the interpreter specialize the calls first
        for method, args in bound:
            method(*args)
    best = float("inf")
    per_batch = max(rounds // BATCHES, 1)
    for _ in range(BATCHES):
        t0 = time.perf_counter_ns()
        for _ in range(per_batch):
            for method, args in bound:
                method(*args)
        best = min(best, (time.perf_counter_ns() - t0) / (per_batch * len(bound)))
    return best


def _cycle_cost(url: str, preset: str, cycles: int) -> tuple[float, float]:
    """Wall and client CPU microseconds of one enqueue + dequeue + complete (mean of `cycles`)."""
    with MeasuredQueue(url, PRESETS[preset]) as mq:
        mq.warm_up()
        q = mq.queue
        jobs = [Job(type="noop") for _ in range(cycles)]
        wall0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
        for job in jobs:
            q.enqueue(job)
            taken = q.dequeue(wait=False)
            if taken is None:
                raise RuntimeError(f"{preset}: the enqueued job could not be dequeued")
            q.complete(taken)
        wall, cpu = time.perf_counter_ns() - wall0, time.process_time_ns() - cpu0
    return wall / cycles / 1000, cpu / cycles / 1000


# -- render --------------------------------------------------------------------------------
def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    kinds_body = []
    for kind in (*KINDS, "job_key_set"):
        cells = []
        for mode in MODES:
            cells += [
                count_cell(_mode_values(rows, mode, kind, "allocations_per_op")),
                spread_cell(_mode_values(rows, mode, kind, _ns_metric(rows, kind)), digits=0),
            ]
        kinds_body.append([kind.replace("_", " "), *cells])
    calls = {v: values_of(rows, variant=v, metric="key_calls_per_job") for v in PRESET_COLUMNS}
    parts = [
        'Each key kind built by `FormatKeys` (an f-string per call, the seed\'s "before") and '
        "`PrecomputedKeys` (static keys built once; per-job keys one concatenation). Allocations: "
        "tracemalloc blocks still alive per call with every returned key kept, so temporaries freed "
        'inside a call are not counted (a lower bound for `format`). "job key set" replays the key '
        "calls one enqueue + dequeue + complete of the baseline makes, recorded on a real queue "
        f"({' / '.join(count_cell(calls[v]) for v in PRESET_COLUMNS)} calls for baseline / optimized / "
        "scripted). Key kinds: the fastest of 5 batches per repeat; the job key set (which decides "
        "the CPU claim): client CPU per key set in rounds interleaved with the other mode "
        "(`qbench.harness.timing`), median (min..max) over the rounds.",
        "",
        markdown_table(
            ["key", "format: allocations", "format: ns", "precomputed: allocations", "precomputed: ns"],
            kinds_body,
        ),
        "",
    ]
    fmt_alloc = _mode_median(rows, "format", "job_key_set", "allocations_per_op")
    pre_alloc = _mode_median(rows, "precomputed", "job_key_set", "allocations_per_op")
    set_metric = _ns_metric(rows, "job_key_set")
    fmt_ns = _mode_median(rows, "format", "job_key_set", set_metric)
    pre_ns = _mode_median(rows, "precomputed", "job_key_set", set_metric)
    cpu = median_of(rows, variant="baseline", metric="cycle_cpu_us", params=params(scope="job"))
    saving = _saved_share(rows)
    if None in (fmt_alloc, pre_alloc, fmt_ns, pre_ns, cpu) or saving is None:
        verdicts.append(("~90% fewer allocations, 5-10% less CPU", NOT_MEASURED, "missing rows"))
        return Section(title=TITLE, markdown="\n".join(parts), verdicts=verdicts)
    assert (
        fmt_alloc is not None
        and pre_alloc is not None
        and fmt_ns is not None
        and pre_ns is not None
        and cpu is not None
        and saving is not None
    )
    cut = 1 - pre_alloc / fmt_alloc if fmt_alloc else 0.0
    alloc_verdict = HOLDS if cut >= SEED_ALLOCATION_CUT - 0.1 else PARTLY if cut >= 0.5 else DOES_NOT_HOLD
    saved, saved_lo, saved_hi, saved_ns, rounds = saving
    cpu_verdict = interval_verdict(saved_lo, saved_hi, CPU_REGIONS)
    saved_text = (
        f"{100 * saved:.2f}% (95% interval {100 * saved_lo:.2f}..{100 * saved_hi:.2f}%, "
        f"{rounds} interleaved rounds)"
    )
    share_body = []
    for metric, label, unit in (
        ("cycle_wall_us", "one job cycle, wall", "µs"),
        ("cycle_cpu_us", "one job cycle, client CPU", "µs"),
        ("key_ns_per_job", "key building per job", "ns"),
    ):
        share_body.append(
            [
                label,
                "-",
                *(
                    spread_cell(values_of(rows, variant=v, metric=metric), digits=1, unit=unit)
                    for v in PRESET_COLUMNS
                ),
                "",
            ]
        )
    shares = []
    for v in PRESET_COLUMNS:
        key_ns = median_of(rows, variant=v, metric="key_ns_per_job")
        cycle = median_of(rows, variant=v, metric="cycle_cpu_us")
        shares.append(f"{100 * key_ns / (cycle * 1000):.2f}%" if key_ns and cycle else "-")
    share_body.append(["key building, % of cycle CPU", "-", *shares, ""])
    share_body.append(
        [
            "CPU saved by precomputed keys",
            "5-10%",
            f"{saved_text} of the baseline cycle's CPU ({saved_ns:,.0f} ns of {cpu:,.0f} µs)",
            "-",
            "-",
            cpu_verdict,
        ]
    )
    alloc_cells = {
        mode: count_cell(_mode_values(rows, mode, "job_key_set", "allocations_per_op")) for mode in MODES
    }
    share_body.insert(
        0,
        [
            "allocations per job's key set",
            "~90% fewer",
            f"format: {alloc_cells['format']}",
            f"precomputed: {alloc_cells['precomputed']}",
            f"precomputed: {alloc_cells['precomputed']}",
            alloc_verdict,
        ],
    )
    parts += [
        "### In proportion: one enqueue + dequeue + complete on loopback (same run)",
        "",
        markdown_table(CLAIM_HEADER, share_body),
        "",
    ]
    verdicts.append(
        (
            "~90% fewer key allocations",
            alloc_verdict,
            f"{fmt_alloc:g} → {pre_alloc:g} retained blocks per job's key set ({100 * cut:.0f}% fewer)",
        )
    )
    verdicts.append(
        (
            "5-10% less CPU in queue operations",
            cpu_verdict,
            f"precomputed keys save {saved_ns:,.0f} ns per job = {saved_text} of the "
            f"{cpu:,.0f} µs of client CPU one job cycle costs; holds from "
            f"{SEED_CPU_CUT[0]:.0%}, partly from {CPU_PARTLY:.0%}",
        )
    )
    return Section(
        title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=_charts(rows, charts_dir)
    )


CPU_REGIONS: list[Region] = [
    (-math.inf, CPU_PARTLY, DOES_NOT_HOLD),
    (CPU_PARTLY, SEED_CPU_CUT[0], PARTLY),
    (SEED_CPU_CUT[0], math.inf, HOLDS),
]
"""The CPU claim's verdict by the share of a baseline job cycle's CPU that precomputed keys save."""


def _ns_metric(rows: list[Row], kind: str) -> str:
    """The job key set is timed in interleaved rounds (CPU); runs saved before: `ns_per_op`."""
    interleaved = kind == "job_key_set" and any(r.metric == JOB_SET_METRIC for r in rows)
    return JOB_SET_METRIC if interleaved else "ns_per_op"


def _saved_share(rows: list[Row]) -> tuple[float, float, float, float, int] | None:
    """(share, lo, hi, ns, rounds): the share of the baseline cycle's client CPU that
    precomputed keys save, from the paired rounds' saving (Hodges-Lehmann with its 95%
    interval) over the cycle's CPU (its min..max over repeats, so the interval is wide
    enough for both uncertainties)."""
    fmt, pre = paired_values(
        rows,
        metric=_ns_metric(rows, "job_key_set"),
        a=("", _mode_params("format", "job_key_set")),
        b=("", _mode_params("precomputed", "job_key_set")),
    )
    cycle = values_of(rows, variant="baseline", metric="cycle_cpu_us", params=params(scope="job"))
    if len(fmt) < 2 or not cycle or min(cycle) <= 0:
        return None
    saved_ns, lo_ns, hi_ns, _coverage = difference_interval(pre, fmt)
    spread = Spread.of([c * 1000 for c in cycle])
    lo = lo_ns / (spread.max if lo_ns >= 0 else spread.min)
    hi = hi_ns / (spread.min if hi_ns >= 0 else spread.max)
    return saved_ns / spread.median, lo, hi, saved_ns, len(fmt)


def _charts(rows: list[Row], charts_dir: Path) -> list[str]:
    fig, axes = figure(2)
    labels = [*KINDS, "job_key_set"]
    width = 0.4
    for ax, metric, ylabel in (
        (axes[0], "allocations_per_op", "blocks per call"),
        (axes[1], "ns_per_op", "ns per call; job key set: per job (median)"),
    ):
        for i, mode in enumerate(MODES):
            ys = [
                _mode_median(rows, mode, k, _ns_metric(rows, k) if metric == "ns_per_op" else metric) or 0.0
                for k in labels
            ]
            ax.bar([x + i * width for x in range(len(labels))], ys, width=width, label=mode)
        ax.set_xticks(
            [x + width / 2 for x in range(len(labels))], [k.replace("_", "\n") for k in labels], fontsize=8
        )
        ax.set(ylabel=ylabel, title=f"Key building: {metric}")
        ax.legend()
    return [save_chart(fig, charts_dir, "key_building")]
