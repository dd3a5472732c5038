"""Experiment 3: enqueue→start latency with idle workers (seed: 0-100 ms → < 1 ms)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from qbench.harness.experiments import RunContext, Section
from qbench.harness.experiments.pool_runs import (
    PoolRun,
    StartLog,
    current_cpu,
    local_server_pid,
    option_number,
    process_cpu,
    wait_cycle_s,
)
from qbench.harness.results.render import (
    CLAIM_HEADER,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    PRESET_COLUMNS,
    figure,
    markdown_table,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import median, median_or_none, percentile
from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Priority

NAME = "pickup_latency"
TITLE = "Pickup latency: enqueue → start with idle workers"

TOGGLES_ALONE = ("baseline+dequeue=block", "baseline+dequeue=notify")
"""The dequeue toggle without the preset's other changes."""
LANES_PER_REPEAT = {True: 1, False: 6}
SAMPLES_PER_LANE = {True: 1, False: 2}
"""Per priority; keyed by quick. A lane is one idle worker on a namespace of its own."""
PROBE_WORKERS = 10
PICKUP_TIMEOUT_S = 15.0
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0))
SEED_BEFORE_MAX_MS, SEED_AFTER_MS = 100.0, 1.0
SEED_INVERSION_S = 3.0
MAX_GAP_S = {True: 3.0, False: 10.0}
"""Longest random gap between two probes (keyed by quick): a wait cycle longer than this
(scripted waits 30 s) has the worker in the same state all along, woken at once."""
BEFORE_CLAIM = "Job start latency before: 0-100 ms (polling)"
AFTER_CLAIM = "Job start latency after: < 1 ms (blocking dequeue)"
INVERSION_CLAIM = "Trade-off: a high job during the low-priority wait may wait up to 3 s"


def run(ctx: RunContext) -> list[Row]:
    variants = _variants(ctx)
    lanes = int(option_number(ctx.options, "lanes_per_repeat", LANES_PER_REPEAT[ctx.quick])) * ctx.repeats
    samples = int(option_number(ctx.options, "samples_per_lane", SAMPLES_PER_LANE[ctx.quick]))
    rows: list[Row] = []
    for variant in variants:
        ctx.progress(
            f"{variant.label()}: {lanes} lanes x {samples} job(s) per priority at random phases "
            f"of the {min(wait_cycle_s(variant), MAX_GAP_S[ctx.quick]):g} s wait cycle"
        )
        rows += _random_phase(ctx, variant, lanes=lanes, samples=samples)
    rounds = 1 if ctx.quick else ctx.repeats
    ctx.progress(f"priority-inversion probe: {PROBE_WORKERS} fresh workers per variant, {rounds} round(s)")
    rows += _inversion_probe(ctx, variants, rounds)
    return rows


def _variants(ctx: RunContext) -> list[Variant]:
    given = ctx.options.get("variants")
    if isinstance(given, Sequence):
        return [v for v in given if isinstance(v, Variant)]
    chosen = list(PRESETS.values())
    if not ctx.quick:
        chosen += [parse_variant(spec) for spec in TOGGLES_ALONE]
    return chosen


# -- random phases: one idle worker per lane --------------------------------------------
@dataclass
class Lane:
    run: PoolRun
    log: StartLog
    repeat: int
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    missed: int = 0
    same_cpu: list[bool] = field(default_factory=list)


def _random_phase(ctx: RunContext, variant: Variant, *, lanes: int, samples: int) -> list[Row]:
    cycle = min(wait_cycle_s(variant), MAX_GAP_S[ctx.quick])
    server_pid = _server_pid(ctx)
    built: list[Lane] = []
    try:
        for index in range(lanes):
            log = StartLog()
            same_cpu: list[bool] = []
            run = PoolRun(
                ctx.url, variant, workers=1, on_job_start=_recorder(log, same_cpu, server_pid), tag="pickup"
            )
            built.append(Lane(run=run, log=log, repeat=index % ctx.repeats, same_cpu=same_cpu))
        for lane in built:
            lane.run.start()
        threads = [
            threading.Thread(target=_produce, args=(lane, samples, cycle, random.Random(i)), daemon=True)
            for i, lane in enumerate(built)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for lane in built:
            lane.run.close()
    return _random_phase_rows(variant.label(), built, ctx.repeats)


def _server_pid(ctx: RunContext) -> int | None:
    admin = redis.Redis.from_url(ctx.url, socket_timeout=5)
    try:
        return local_server_pid(admin, ctx.server.source)
    finally:
        admin.close()


def _recorder(log: StartLog, same_cpu: list[bool], server_pid: int | None) -> Callable[[Job], None]:
    """Logs the pickup, then notes whether the worker thread shares the server's CPU."""

    def on_start(job: Job) -> None:
        log(job)
        if server_pid is not None:
            same_cpu.append(current_cpu() == process_cpu(server_pid))

    return on_start


def _produce(lane: Lane, samples: int, cycle: float, rng: random.Random) -> None:
    """Jobs one at a time: each after a random gap in [0, `cycle`) from the last pickup
    (one wait cycle, up to `MAX_GAP_S`), so it reaches the idle worker at a uniformly
    random phase of its wait."""
    producer = lane.run.producer(fast=False)
    order = [p for p in PRIORITY_ORDER for _ in range(samples)]
    rng.shuffle(order)
    for priority in order:
        time.sleep(rng.uniform(0.0, cycle))
        job = Job(type="noop", priority=priority)
        picked = lane.log.expect(job)
        producer.enqueue(job)
        if not picked.wait(PICKUP_TIMEOUT_S + cycle):
            lane.missed += 1
            continue
        lane.latencies_ms.setdefault(priority.label, []).append(lane.log.pickups_us[job.id] / 1e3)


def _random_phase_rows(label: str, lanes: list[Lane], repeats: int) -> list[Row]:
    rows = []
    for repeat in range(repeats):
        group = [lane for lane in lanes if lane.repeat == repeat]
        for priority in PRIORITY_ORDER:
            found = [ms for lane in group for ms in lane.latencies_ms.get(priority.label, [])]
            p = params(phase="random", priority=priority.label, workers=1)
            rows.append(Row(NAME, label, p, "pickup_samples", len(found), "jobs", repeat))
            if not found:
                continue
            for name, q in PERCENTILES:
                rows.append(Row(NAME, label, p, f"pickup_ms_{name}", percentile(found, q), "ms", repeat))
            rows.append(Row(NAME, label, p, "pickup_ms_mean", sum(found) / len(found), "ms", repeat))
        p = params(phase="random", workers=1)
        rows.append(Row(NAME, label, p, "pickups_missed", sum(lane.missed for lane in group), "jobs", repeat))
        placements = [same for lane in group for same in lane.same_cpu]
        if placements:
            share = sum(placements) / len(placements)
            rows.append(Row(NAME, label, p, "same_cpu_as_redis_fraction", share, "fraction", repeat))
    return rows


# -- priority-inversion probe ---------------------------------------------------------
def probe_offset_s(variant: Variant) -> float:
    """When the probe's high-priority job is sent, from the workers' start: just after a
    freshly started block-mode pool has moved on to its long low-priority wait."""
    high, normal, low = variant.block_timeouts_s
    return high + normal + 0.1 * low


def _inversion_probe(ctx: RunContext, variants: list[Variant], rounds: int) -> list[Row]:
    rows: list[Row] = []
    for repeat in range(rounds):
        runs: list[tuple[Variant, PoolRun, StartLog]] = []
        try:
            for variant in variants:
                log = StartLog()
                runs.append(
                    (
                        variant,
                        PoolRun(ctx.url, variant, workers=PROBE_WORKERS, on_job_start=log, tag="probe"),
                        log,
                    )
                )
            # All pools start together and the workers of each start in step, as after a deploy.
            started = time.monotonic()
            for _, run, _ in runs:
                run.start()
            jobs: list[tuple[Variant, Job, threading.Event, float]] = []
            for variant, run, log in sorted(runs, key=lambda r: probe_offset_s(r[0])):
                offset = probe_offset_s(variant)
                time.sleep(max(0.0, started + offset - time.monotonic()))
                job = Job(type="noop", priority=Priority.HIGH)
                picked = log.expect(job)
                run.producer(fast=False).enqueue(job)
                jobs.append((variant, job, picked, offset))
            for variant, job, picked, offset in jobs:
                log = next(entry[2] for entry in runs if entry[0] is variant)
                p = params(
                    enqueued_after_s=round(offset, 3),
                    priority="high",
                    probe="inversion",
                    workers=PROBE_WORKERS,
                )
                if picked.wait(PICKUP_TIMEOUT_S):
                    value = log.pickups_us[job.id] / 1e3
                    rows.append(Row(NAME, variant.label(), p, "pickup_ms", value, "ms", repeat))
                else:
                    rows.append(Row(NAME, variant.label(), p, "pickups_missed", 1, "jobs", repeat))
        finally:
            for _, run, _ in runs:
                run.close()
    return rows


# -- render ---------------------------------------------------------------------------
def _random(rows: list[Row], variant: str, priority: str, stat: str) -> list[float]:
    return values_of(
        rows,
        variant=variant,
        metric=f"pickup_ms_{stat}",
        params=params(phase="random", priority=priority, workers=1),
    )


def _probe(rows: list[Row], variant: str) -> list[float]:
    return [
        r.value
        for r in sorted(rows, key=lambda r: r.repeat)
        if r.variant == variant and r.metric == "pickup_ms" and "probe=inversion" in r.params
    ]


def render(rows: list[Row], charts_dir: Path) -> Section:
    mine = [r for r in rows if r.experiment == NAME]
    variants = list(dict.fromkeys(r.variant for r in mine))
    priorities = [p.label for p in PRIORITY_ORDER]
    samples = {r.value for r in mine if r.metric == "pickup_samples"}
    sample_text = ", ".join(str(int(s)) for s in sorted(samples)) or "-"
    probe_params = next((r.params for r in mine if "probe=inversion" in r.params), "")
    offset = probe_params.split("enqueued_after_s=", 1)[1].split(";", 1)[0] if probe_params else "?"

    def cells(priority: str, stat: str) -> list[str]:
        return [spread_cell(_random(mine, v, priority, stat), digits=2) for v in PRESET_COLUMNS]

    body = []
    for priority in priorities:
        for stat in ("p50", "p99", "max"):
            body.append([f"{priority}: {stat} (ms)", "0-100 ms → < 1 ms", *cells(priority, stat), ""])
    body.append(
        [
            f"high job sent {offset} s after {PROBE_WORKERS} workers start (ms)",
            f"'may delay up to {SEED_INVERSION_S:g} s' (seed's trade-off)",
            *(spread_cell(_probe(mine, v), digits=1) for v in PRESET_COLUMNS),
            "",
        ]
    )
    verdicts = _verdicts(mine)
    by_claim = {claim: verdict for claim, verdict, _ in verdicts}
    for line in body:
        if line[0].startswith("normal: p50"):
            line[-1] = f"before: {by_claim.get(BEFORE_CLAIM, '-')}; after: {by_claim.get(AFTER_CLAIM, '-')}"
        elif line[0].startswith("high job sent"):
            line[-1] = by_claim.get(INVERSION_CLAIM, "")
    parts = [
        "Random phases: each lane is one idle worker on its own namespace; its producer (a "
        "separate connection, the variant's own enqueue) sends one job at a time, each after a "
        "random gap in [0, one wait cycle) since the previous pickup, so jobs reach the worker at "
        "uniformly random phases of its wait (poll: 0.1 s; block: 1 + 1 + 3 s; notify: its "
        "notify_timeout_s, scripted 30 s: gaps up to 10 s, 3 s in quick mode, as a notify worker "
        "waits the same way all along). "
        "Latency = `started_at_us - created_at_us` (the job is created right before enqueue, "
        "so the enqueue round trips are included). Lanes run side by side and are split into "
        f"repeats; samples per priority per repeat: {sample_text}. "
        "Cells: median (min..max) over the repeats. Nothing is pinned.",
        "",
        markdown_table(CLAIM_HEADER, body),
        "",
        "### The dequeue toggle alone (every other toggle at baseline)",
        "",
        _toggle_table(mine, variants),
        "",
        _placement_text(mine, variants),
    ]
    charts = [_chart(mine, variants, charts_dir)] if variants else []
    return Section(title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=charts)


def _verdicts(rows: list[Row]) -> list[tuple[str, str, str]]:
    verdicts: list[tuple[str, str, str]] = []
    base_max = [median_or_none(_random(rows, "baseline", p.label, "max")) for p in PRIORITY_ORDER]
    base_p50 = [median_or_none(_random(rows, "baseline", p.label, "p50")) for p in PRIORITY_ORDER]
    if None in base_max or None in base_p50:
        verdicts.append((BEFORE_CLAIM, NOT_MEASURED, "baseline not measured"))
    else:
        worst = max(v for v in base_max if v is not None)
        mid = ", ".join(f"{v:.0f}" for v in base_p50 if v is not None)
        ok = worst <= SEED_BEFORE_MAX_MS * 1.2
        verdicts.append(
            (
                BEFORE_CLAIM,
                HOLDS if ok else PARTLY,
                f"baseline p50 {mid} ms (high/normal/low), max {worst:.0f} ms",
            )
        )
    opt = {
        p.label: (
            median_or_none(_random(rows, "optimized", p.label, "p50")),
            median_or_none(_random(rows, "optimized", p.label, "p99")),
        )
        for p in PRIORITY_ORDER
    }
    scr = {p.label: median_or_none(_random(rows, "scripted", p.label, "p99")) for p in PRIORITY_ORDER}
    if any(v[0] is None or v[1] is None for v in opt.values()):
        verdicts.append((AFTER_CLAIM, NOT_MEASURED, "optimized not measured"))
    else:
        all_fast = all((v[1] or 0.0) < SEED_AFTER_MS for v in opt.values())
        detail = "; ".join(f"{k} p50 {v[0]:.0f} / p99 {v[1]:.0f} ms" for k, v in opt.items())
        scripted = (
            "; scripted (notify) p99 " + " / ".join(f"{v:.2f}" for v in scr.values() if v is not None) + " ms"
            if all(v is not None for v in scr.values())
            else ""
        )
        why = (
            f"optimized (block) {detail}: a job waits until the worker's BRPOPLPUSH on another "
            f"priority times out (1 s / 1 s / 3 s in turn){scripted}"
        )
        verdicts.append((AFTER_CLAIM, HOLDS if all_fast else DOES_NOT_HOLD, why))
    probe = {v: median_or_none(_probe(rows, v)) for v in PRESET_COLUMNS}
    if probe["optimized"] is not None:
        delayed = probe["optimized"] / 1e3
        others = ", ".join(f"{v} {probe[v]:.1f} ms" for v in ("baseline", "scripted") if probe[v] is not None)
        verdicts.append(
            (
                INVERSION_CLAIM,
                HOLDS if delayed <= SEED_INVERSION_S * 1.05 else DOES_NOT_HOLD,
                f"optimized probe {delayed:.2f} s (all {PROBE_WORKERS} workers sat in the 3 s wait); "
                f"{others}",
            )
        )
    return verdicts


def _toggle_table(rows: list[Row], variants: list[str]) -> str:
    shown = [v for v in variants if v not in PRESET_COLUMNS or v == "baseline"]
    body = []
    for priority in (p.label for p in PRIORITY_ORDER):
        for stat in ("p50", "p99"):
            body.append(
                [
                    f"{priority}: {stat} (ms)",
                    *(spread_cell(_random(rows, v, priority, stat), digits=2) for v in shown),
                ]
            )
    body.append(["inversion probe (ms)", *(spread_cell(_probe(rows, v), digits=1) for v in shown)])
    return markdown_table(["Pickup", *shown], body)


def _placement_text(rows: list[Row], variants: list[str]) -> str:
    shares = [
        f"{v} {median(found):.0%}"
        for v in variants
        if (found := values_of(rows, variant=v, metric="same_cpu_as_redis_fraction"))
    ]
    if not shares:
        return "CPU placement: not recorded (the server is not a local process qbench started)."
    return (
        "CPU placement (recorded, not pinned): share of pickups where the worker thread ran on the "
        f"same CPU as redis-server: {', '.join(shares)}."
    )


def _chart(rows: list[Row], variants: list[str], charts_dir: Path) -> str:
    fig, axes = figure(ncols=2, width=6.0, height=4.2)
    priorities = [p.label for p in PRIORITY_ORDER]
    width = 0.8 / max(1, len(variants))
    for ax, stat in zip(axes, ("p50", "p99"), strict=True):
        for i, variant in enumerate(variants):
            heights = [median_or_none(_random(rows, variant, p, stat)) or 0.0 for p in priorities]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(priorities))]
            ax.bar(xs, [max(h, 1e-3) for h in heights], width=width, label=variant)
        ax.axhline(SEED_AFTER_MS, color="green", linestyle="--", linewidth=1, label="seed after: 1 ms")
        ax.axhline(SEED_BEFORE_MAX_MS, color="grey", linestyle=":", linewidth=1, label="seed before: 100 ms")
        ax.set_yscale("log")
        ax.set_xticks(range(len(priorities)), priorities)
        ax.set_ylabel(f"enqueue → start, {stat} (ms, log)")
        ax.set_title(f"Pickup latency {stat}, one idle worker, random phase")
    axes[0].legend(fontsize=7)
    return save_chart(fig, charts_dir, "pickup_latency")
