"""Experiment 2: what 10 idle workers cost Redis, per dequeue mode (seed: 300 → 0 commands/s)."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from qbench.harness.experiments import RunContext, Section
from qbench.harness.experiments.pool_runs import (
    IDLE_COMMANDS_PER_CYCLE,
    PoolRun,
    option_number,
    wait_cycle_s,
)
from qbench.harness.infra.counting import command_stats, stats_delta
from qbench.harness.results.render import (
    CLAIM_HEADER,
    DOES_NOT_HOLD,
    HOLDS,
    PARTLY,
    PRESET_COLUMNS,
    figure,
    markdown_table,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params, parse_params
from qbench.harness.results.stats import median
from qbench.queue_impl.config import PRESETS, Variant, VariantError, parse_variant
from qbench.queue_impl.worker import HEARTBEAT_INTERVAL_S, ORPHAN_SCAN_EVERY

NAME = "idle_cost"
TITLE = "Idle cost: Redis commands per second with 10 idle workers"

WORKERS = 10
WINDOW_S = 10.0
"""Two 5 s wait cycles (block, notify) and one 10 s heartbeat interval: a window of
whole cycles counts the same however the workers' cycles are phased against it."""
QUICK_MIN_WINDOW_S = 3.0
QUICK_MAX_WINDOW_S = 5.0
"""Quick mode counts one window of at most this (a 30 s notify wait is not sat out whole)."""
SETTLE_S = 0.5
"""Lets every worker open its connection and send its first wait before counting."""
SEED_BEFORE, SEED_AFTER = 300.0, 0.0

DEQUEUE_COMMANDS = {
    "poll": ("rpoplpush",),
    "block": ("brpoplpush",),
    "notify": ("evalsha", "exists", "del", "bzpopmin"),
}
HEARTBEAT_COMMANDS = ("set", "lrange")
"""The pool's heartbeat thread, once per interval: SET renews the lease, LRANGE reads the
processing list to hand back orphaned claims."""
HANDSHAKE_COMMANDS = frozenset({"hello", "auth", "select"})
SERIES_METRIC = "idle_calls"
"""Calls of one command in each second of a window (params `command=...;t_s=N`, N = 1, 2, ...)."""


def run(ctx: RunContext) -> list[Row]:
    variants = _variants(ctx)
    rows: list[Row] = []
    if not ctx.server.owned:
        ctx.progress("the server is not qbench's own: other clients' commands count too")
        rows.append(Row(NAME, "-", params(), "shared_server", 1, "count", 0))
    for variant in variants:
        cycle = wait_cycle_s(variant)
        if ctx.quick:
            quick_window = max(QUICK_MIN_WINDOW_S, min(cycle, QUICK_MAX_WINDOW_S))
            window_s, windows = option_number(ctx.options, "window_s", quick_window), 1
        else:
            # Whole wait cycles: a window that cuts one counts a phase-dependent share of it.
            window_s = option_number(ctx.options, "window_s", max(WINDOW_S, cycle))
            windows = max(3, ctx.repeats)
        ctx.progress(f"{variant.label()}: {WORKERS} idle workers, {windows} x {window_s:g} s")
        rows += _measure(ctx.url, variant, window_s=window_s, windows=windows)
    return rows


def _variants(ctx: RunContext) -> list[Variant]:
    given = ctx.options.get("variants")
    if isinstance(given, Sequence):
        return [v for v in given if isinstance(v, Variant)]
    return list(PRESETS.values())


def _measure(url: str, variant: Variant, *, window_s: float, windows: int) -> list[Row]:
    label = variant.label()
    samples: list[tuple[float, Counter[str], int, list[Counter[str]]]] = []
    with PoolRun(url, variant, workers=WORKERS, tag="idle") as run:
        run.start()
        time.sleep(SETTLE_S)
        for _ in range(windows):
            before = command_stats(run.admin)
            rt0, _ = run.counter.snapshot()
            started = time.perf_counter()
            # Read every second too (INFO on the admin connection, left out of the counts):
            # the per-second series shows the waits' cadence, and the last read is the total.
            ticks: list[Counter[str]] = []
            last = before
            for k in range(1, math.ceil(window_s - 1e-9) + 1):
                time.sleep(max(0.0, started + min(k, window_s) - time.perf_counter()))
                now = command_stats(run.admin)
                ticks.append(_queue_commands(stats_delta(last, now)))
                last = now
            seconds = time.perf_counter() - started
            rt1, _ = run.counter.snapshot()
            commands = _queue_commands(stats_delta(before, last))
            samples.append((seconds, commands, rt1 - rt0, ticks))
    names = sorted(set().union(*(c for _, c, _, _ in samples)))
    rows = []
    for repeat, (seconds, commands, round_trips, ticks) in enumerate(samples):

        def row(metric: str, value: float, unit: str, **extra: object) -> Row:
            return Row(NAME, label, params(workers=WORKERS, **extra), metric, value, unit, repeat)  # noqa: B023

        for command in names:
            rows.append(
                row("idle_commands_per_s", commands[command] / seconds, "commands/s", command=command)
            )
            for t_s, tick in enumerate(ticks, start=1):
                # Calls in the second ending at t_s (the last one may be shorter: window_s).
                rows.append(row(SERIES_METRIC, tick[command], "calls", command=command, t_s=t_s))
        rows.append(row("idle_commands_per_s", sum(commands.values()) / seconds, "commands/s", command="all"))
        rows.append(row("idle_round_trips_per_s", round_trips / seconds, "round_trips/s"))
        rows.append(row("idle_window_s", seconds, "s"))
    return rows


def _queue_commands(delta: Counter[str]) -> Counter[str]:
    """Connection handshakes and the harness's own CLIENT calls are not the queue's."""
    return Counter({n: c for n, c in delta.items() if not _handshake_or_harness(n)})


def _handshake_or_harness(command: str) -> bool:
    """HELLO/AUTH/SELECT and CLIENT SETINFO/SETNAME open a connection (the pool opens one
    lazily when more workers overlap); CLIENT LIST/UNBLOCK are the harness stopping workers."""
    return command in HANDSHAKE_COMMANDS or command.startswith("client")


# -- render ---------------------------------------------------------------------------
def expected_per_s(variant: Variant, workers: int = WORKERS) -> dict[str, float]:
    """Idle commands/s the configuration implies: dequeue waits (one per thread, or one
    per pool and partition under dispatch=process) and heartbeats."""
    per_cycle = IDLE_COMMANDS_PER_CYCLE[variant.dequeue]
    waiters = workers if variant.dispatch == "thread" else variant.partitions
    # orphan_scan=after_reconnect (under conn=pinned): the LRANGE only on every
    # ORPHAN_SCAN_EVERY-th beat of an undisturbed pool.
    rare = variant.orphan_scan == "after_reconnect" and variant.conn == "pinned"
    scans = 1.0 / ORPHAN_SCAN_EVERY if rare else 1.0
    return {
        "dequeue": per_cycle * waiters / wait_cycle_s(variant),
        "heartbeat": (1.0 + scans) / HEARTBEAT_INTERVAL_S,
    }


def _variant_of(label: str) -> Variant | None:
    try:
        return parse_variant(label)
    except VariantError:
        return None


def _rate(rows: list[Row], variant: str, command: str) -> list[float]:
    return values_of(
        rows, variant=variant, metric="idle_commands_per_s", params=params(command=command, workers=WORKERS)
    )


def _group_rate(rows: list[Row], variant: str, commands: Sequence[str]) -> list[float]:
    """Per-window sums of the given commands' rates."""
    windows = _rate(rows, variant, "all")
    per_command = [found for c in commands if (found := _rate(rows, variant, c))]
    if not windows:
        return []
    # A command never seen in this variant's windows ran 0 times there.
    return [sum(values) for values in zip(*per_command, strict=True)] if per_command else [0.0] * len(windows)


def render(rows: list[Row], charts_dir: Path) -> Section:
    mine = [r for r in rows if r.experiment == NAME]
    presets = [p for p in PRESET_COLUMNS if _rate(mine, p, "all")]
    windows = values_of(mine, variant=presets[0], metric="idle_window_s") if presets else []
    total = {p: _rate(mine, p, "all") for p in PRESET_COLUMNS}
    dequeue = {p: _group_rate(mine, p, DEQUEUE_COMMANDS[PRESETS[p].dequeue]) for p in PRESET_COLUMNS}
    heartbeat = {p: _group_rate(mine, p, HEARTBEAT_COMMANDS) for p in PRESET_COLUMNS}
    round_trips = {
        p: values_of(mine, variant=p, metric="idle_round_trips_per_s", params=params(workers=WORKERS))
        for p in PRESET_COLUMNS
    }
    verdict, why = _verdict(total, dequeue, heartbeat)
    shared = any(r.metric == "shared_server" and r.value for r in mine)
    window_text = (
        f"{len(windows)} window(s) of {median(windows):.1f} s per dequeue mode"
        if windows
        else "no windows measured"
    )
    parts = [
        f"{WORKERS} idle workers (one `WorkerPool`, concurrency {WORKERS}, its heartbeat thread "
        f"included) per preset; {window_text}. Server commands are `INFO commandstats` deltas "
        "read on a separate connection, minus the harness's own INFO and CLIENT calls and "
        "connection handshakes; commands run inside the claim script count (Redis counts them). "
        "Cells: median (min..max) over the windows."
        + (" **The server was not qbench's own: other clients' commands are included.**" if shared else ""),
        "",
        markdown_table(
            CLAIM_HEADER,
            [
                [
                    "Idle Redis commands/s (10 workers)",
                    f"{SEED_BEFORE:g} → {SEED_AFTER:g}",
                    *(spread_cell(total[p], digits=1) for p in PRESET_COLUMNS),
                    verdict,
                ],
                [
                    "… of which dequeue waits",
                    "300 RPOPLPUSH/s → 0",
                    *(spread_cell(dequeue[p], digits=1) for p in PRESET_COLUMNS),
                    "",
                ],
                [
                    "… of which the heartbeat thread (SET, LRANGE)",
                    "not mentioned",
                    *(spread_cell(heartbeat[p], digits=2) for p in PRESET_COLUMNS),
                    "",
                ],
                [
                    "Client round trips/s",
                    "100 polls/s → 0",
                    *(spread_cell(round_trips[p], digits=1) for p in PRESET_COLUMNS),
                    "",
                ],
            ],
        ),
        "",
        "### By command, beside what the configuration implies",
        "",
        _breakdown_table(mine),
        "",
        "The second chart is the same count second by second (each preset's first window, "
        f"`{SERIES_METRIC}` rows): a blocking wait shows as ticks when its timeouts expire "
        "(the seed's BRPOPLPUSH waits 1 s, 1 s, then 3 s per cycle), a polling loop as a flat, "
        "high line, and the heartbeat as one SET and one LRANGE per worker pool every "
        f"{HEARTBEAT_INTERVAL_S:g} s.",
        "",
    ]
    charts = [_chart(mine, charts_dir)] if presets else []
    series_chart = _series_chart(mine, charts_dir)
    if series_chart:
        charts.append(series_chart)
    return Section(
        title=TITLE,
        markdown="\n".join(parts),
        verdicts=[("Idle Redis calls/s: 300 → 0 (10 workers)", verdict, why)],
        charts=charts,
    )


def _verdict(
    total: dict[str, list[float]], dequeue: dict[str, list[float]], heartbeat: dict[str, list[float]]
) -> tuple[str, str]:
    if not total["baseline"] or not total["optimized"]:
        return "not measured", "the baseline or optimized preset was not measured"
    before = median(total["baseline"])
    after = median(total["optimized"])
    before_ok = abs(before - SEED_BEFORE) <= 0.1 * SEED_BEFORE
    waits = median(dequeue["optimized"]) if dequeue["optimized"] else 0.0
    beats = median(heartbeat["optimized"]) if heartbeat["optimized"] else 0.0
    scripted = f"; scripted (notify) {median(total['scripted']):.1f}/s" if total["scripted"] else ""
    cut = 100.0 * (1 - after / before) if before else 0.0
    beats_text = (
        f"the heartbeat thread adds {beats:.2f}/s"
        if beats
        else f"no heartbeat fell in the windows (one per {HEARTBEAT_INTERVAL_S:g} s)"
    )
    why = (
        f"baseline {before:.1f}/s, optimized {after:.1f}/s ({cut:.1f}% fewer, not 0): "
        f"BRPOPLPUSH returns at every timeout ({waits:.1f}/s = 3 per 5 s cycle per worker) "
        f"and {beats_text}{scripted}"
    )
    if after <= 0.5 and before_ok:
        return HOLDS, why
    if before_ok and cut >= 90.0:
        return PARTLY, why
    return DOES_NOT_HOLD, why


def _breakdown_table(rows: list[Row]) -> str:
    commands = sorted(
        {r.params for r in rows if r.metric == "idle_commands_per_s" and "command=all" not in r.params}
    )
    body = []
    for p in commands:
        command = p.split("command=", 1)[1].split(";", 1)[0]
        cells = [
            spread_cell(values_of(rows, variant=v, metric="idle_commands_per_s", params=p), digits=2)
            for v in PRESET_COLUMNS
        ]
        body.append([command.upper(), *cells])
    expected_cells = []
    for preset in PRESET_COLUMNS:
        variant = _variant_of(preset)
        if variant is None:
            expected_cells.append("-")
            continue
        expected = expected_per_s(variant)
        expected_cells.append(f"{expected['dequeue']:.1f} + {expected['heartbeat']:.1f} heartbeat")
    body.append(["expected from the configuration", *expected_cells])
    return markdown_table(["Command (commands/s)", *PRESET_COLUMNS], body)


def _chart(rows: list[Row], charts_dir: Path) -> str:
    fig, (ax,) = figure(width=7.0, height=4.0)
    names = sorted(
        {r.params.split("command=", 1)[1].split(";", 1)[0] for r in rows if r.metric == "idle_commands_per_s"}
        - {"all"}
    )
    width = 0.8 / max(1, len(names))
    for i, command in enumerate(names):
        heights = []
        for preset in PRESET_COLUMNS:
            found = _rate(rows, preset, command)
            heights.append(median(found) if found else 0.0)
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(PRESET_COLUMNS))]
        ax.bar(xs, [max(h, 1e-3) for h in heights], width=width, label=command.upper())
    totals = [median(_rate(rows, p, "all")) if _rate(rows, p, "all") else 0.0 for p in PRESET_COLUMNS]
    for j, value in enumerate(totals):
        ax.annotate(f"total {value:.1f}/s", (j, max(value, 1e-3)), ha="center", va="bottom", fontsize=8)
    ax.axhline(SEED_BEFORE, color="grey", linestyle="--", linewidth=1, label="seed: 300/s before")
    ax.set_yscale("log")
    ax.set_ylim(0.01, 1000)
    ax.set_xticks(range(len(PRESET_COLUMNS)), list(PRESET_COLUMNS))
    ax.set_ylabel("commands/s seen by Redis (log)")
    ax.set_title(f"Idle cost: {WORKERS} idle workers (seed: 300 → 0)")
    ax.legend(fontsize=7, ncol=2)
    return save_chart(fig, charts_dir, "idle_cost")


def per_second_series(
    rows: Sequence[Row], variant: str, repeat: int = 0
) -> dict[str, list[tuple[int, float]]]:
    """Command -> (second, calls in it) of one window, from the `idle_calls` rows."""
    found: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.metric == SERIES_METRIC and r.variant == variant and r.repeat == repeat:
            p = parse_params(r.params)
            found.setdefault(p["command"], []).append((int(p["t_s"]), r.value))
    return {command: sorted(points) for command, points in sorted(found.items())}


def _series_chart(rows: list[Row], charts_dir: Path) -> str | None:
    """Calls per second in each preset's first window: the blocking waits' timeout ticks."""
    variants = [v for v in dict.fromkeys(r.variant for r in rows if r.metric == SERIES_METRIC)]
    ordered = [p for p in PRESET_COLUMNS if p in variants] + [v for v in variants if v not in PRESET_COLUMNS]
    if not ordered:
        return None
    fig, _ = figure(height=1.9 * len(ordered) + 0.7)
    fig.clf()
    axes = fig.subplots(len(ordered), 1, sharex=True, squeeze=False)[:, 0]
    for ax, variant in zip(axes, ordered, strict=True):
        top = 0.0
        for command, points in per_second_series(rows, variant).items():
            xs = [0, *(t for t, _ in points)]
            ys = [points[0][1], *(v for _, v in points)]
            ax.step(xs, ys, where="pre", marker=".", markersize=4, label=command.upper())
            top = max(top, *ys)
        ax.set_title(f"{variant}: calls in each second, {WORKERS} idle workers", fontsize=9, loc="left")
        ax.set_ylabel("calls", fontsize=8)
        ax.set_ylim(0, max(1.0, top) * 1.3)  # headroom for the legend
        ax.legend(fontsize=7, ncol=3, loc="upper right")
    axes[-1].set_xlabel("seconds into the first window (a value covers the second ending there)")
    return save_chart(fig, charts_dir, "idle_cost_series")
