"""Experiment 1: round trips, server commands and wall time of the scheduler move and complete()."""

from __future__ import annotations

import time
from pathlib import Path

from qbench.harness.experiments import RunContext, Section
from qbench.harness.infra.delay_proxy import DelayProxy, calibrate
from qbench.harness.infra.measured import MeasuredQueue, make_jobs
from qbench.harness.results.render import (
    CLAIM_HEADER,
    DOES_NOT_HOLD,
    HOLDS,
    PARTLY,
    PRESET_COLUMNS,
    count_cell,
    figure,
    markdown_table,
    median_of,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import median
from qbench.queue_impl.config import PRESETS, Variant

NAME = "round_trips"
TITLE = "1. Round trips and wall time (scheduler move, complete)"

BATCHES = (10, 50, 100, 500)
DELAY_MS = 1.0
"""The seed's "1 ms network latency", added per round trip by the delay proxy."""
NETWORKS = ("loopback", "delay_1ms")
SEED_BATCH_RT = {10: (21, 3), 50: (101, 3), 100: (201, 3), 500: (1001, 3)}
SEED_COMPLETE_RT = (3, 2)
SEED_WALL_MS = (201.0, 3.0)
"""The seed: 100 jobs at 1 ms latency, 201 ms before, 3 ms after."""
WALL_TOLERANCE = 0.25
"""A measured wall time within 25% of the seed's figure counts as matching it."""
MOVE = "move_scheduled_to_ready"


def run(ctx: RunContext) -> list[Row]:
    completes = 10 if ctx.quick else 40
    ping_samples = 100 if ctx.quick else 400
    rows: list[Row] = []
    with DelayProxy.for_url(ctx.url) as proxy:
        for repeat in range(ctx.repeats):
            for set_ms in (0.0, DELAY_MS):
                cal = calibrate(proxy, ctx.url, round_trip_ms=set_ms, samples=ping_samples)
                for path, value in (("direct", cal.direct_ms), ("proxy", cal.proxied_ms)):
                    rows.append(_row("", _calibration_params(path, set_ms), "ping_ms", value, "ms", repeat))
            ctx.progress(
                f"proxy calibration {repeat + 1}/{ctx.repeats}: adds {cal.added_ms:.3f} ms per PING at 1 ms"
            )
        proxy.set_delay(round_trip_ms=DELAY_MS)
        for network in NETWORKS:
            url = proxy.proxied_url(ctx.url) if network != "loopback" else ctx.url
            for name, variant in PRESETS.items():
                ctx.progress(
                    f"{name} over {network}: move N={','.join(map(str, BATCHES))}, complete x{completes}"
                )
                rows += _measure_preset(url, variant, network, ctx.repeats, completes)
    return rows


def _measure_preset(url: str, variant: Variant, network: str, repeats: int, completes: int) -> list[Row]:
    rows: list[Row] = []
    with MeasuredQueue(url, variant) as mq:
        mq.warm_up()
        q = mq.queue
        for repeat in range(repeats):
            for batch in BATCHES:
                mq.seed_due_jobs(batch)
                with mq.measure() as cost:
                    t0 = time.perf_counter()
                    moved = q.move_scheduled_to_ready(limit=batch)
                    wall_ms = (time.perf_counter() - t0) * 1000
                if moved != batch:
                    raise RuntimeError(f"{variant.name}: moved {moved} of {batch} due jobs")
                p = params(op=MOVE, batch=batch, network=network)
                rows += [
                    _row(variant.name, p, "round_trips", cost.round_trips, "round_trips", repeat),
                    _row(variant.name, p, "commands", cost.commands, "commands", repeat),
                    _row(variant.name, p, "wall_ms", wall_ms, "ms", repeat),
                ]
                q.cleanup()
            rows += _measure_complete(mq, variant.name, network, repeat, completes)
    return rows


def _measure_complete(mq: MeasuredQueue, preset: str, network: str, repeat: int, count: int) -> list[Row]:
    q = mq.queue
    q.enqueue_many(make_jobs(count))
    jobs = [q.dequeue(wait=False) for _ in range(count)]
    walls, round_trips, commands = [], 0, 0
    for job in jobs:
        if job is None:
            raise RuntimeError(f"{preset}: a ready job could not be dequeued")
        with mq.measure() as cost:
            t0 = time.perf_counter()
            q.complete(job)
            walls.append((time.perf_counter() - t0) * 1000)
        round_trips += cost.round_trips
        commands += cost.commands
    q.cleanup()
    p = params(op="complete", batch=1, network=network)
    # Per complete(): counts are the same for every job, so the mean is exact; the
    # wall time is the median of `count` calls (one call is too short to time alone).
    return [
        _row(preset, p, "round_trips", round_trips / count, "round_trips", repeat),
        _row(preset, p, "commands", commands / count, "commands", repeat),
        _row(preset, p, "wall_ms", median(walls), "ms", repeat),
    ]


def _calibration_params(path: str, set_ms: float) -> str:
    """The delay proxy's calibration rows measure the proxy, not a variant (empty variant)."""
    return params(subject="proxy", path=path, set_ms=set_ms)


def _row(variant: str, p: str, metric: str, value: float, unit: str, repeat: int) -> Row:
    return Row(NAME, variant, p, metric, float(value), unit, repeat)


# -- render --------------------------------------------------------------------------------
def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    parts = [
        "Scheduler move of N due jobs (`move_scheduled_to_ready`) and `complete()`, per preset. "
        "Round trips are counted where redis-py writes a request; server commands come from "
        "`INFO commandstats` (commands inside scripts included). "
        f"The delay proxy (a child process on 127.0.0.1) adds {DELAY_MS:g} ms per round trip, "
        f"{DELAY_MS / 2:g} ms each way (microsecond-resolution waits, see `harness/infra/delay_proxy.py`).",
        "",
        _calibration_text(rows),
        "",
        "### Scheduler round trips (the seed's table)",
        "",
    ]
    body = []
    rt_holds = True
    for batch, (before, after) in SEED_BATCH_RT.items():
        p = params(op=MOVE, batch=batch, network="loopback")
        cells = {v: values_of(rows, variant=v, metric="round_trips", params=p) for v in PRESET_COLUMNS}
        ok = set(cells["baseline"]) == {before} and set(cells["optimized"]) == {after}
        rt_holds &= ok
        verdict = HOLDS if ok else DOES_NOT_HOLD
        body.append(
            [
                f"{batch} jobs",
                f"{before:,} → {after}",
                *(count_cell(cells[v]) for v in PRESET_COLUMNS),
                verdict,
            ]
        )
    parts += [markdown_table(CLAIM_HEADER, body), ""]
    scripted_rt = sorted(
        {
            v
            for b in BATCHES
            for v in values_of(
                rows,
                variant="scripted",
                metric="round_trips",
                params=params(op=MOVE, batch=b, network="loopback"),
            )
        }
    )
    verdicts.append(
        (
            "Scheduler round trips 2N+1 → 3 (10/50/100/500 jobs)",
            HOLDS if rt_holds else DOES_NOT_HOLD,
            "baseline measured 2N+1 and optimized 3 at every N"
            if rt_holds
            else "measured counts differ from 2N+1 → 3 (see table)",
        )
    )
    if scripted_rt:
        parts += [
            f"The scripted preset moves any N in {', '.join(map(str, map(int, scripted_rt)))} "
            "round trip(s): one Lua call.",
            "",
        ]

    complete_p = params(op="complete", batch=1, network="loopback")
    cells = {v: values_of(rows, variant=v, metric="round_trips", params=complete_p) for v in PRESET_COLUMNS}
    ok = set(cells["baseline"]) == {SEED_COMPLETE_RT[0]} and set(cells["optimized"]) == {SEED_COMPLETE_RT[1]}
    parts += [
        "### complete()",
        "",
        markdown_table(
            CLAIM_HEADER,
            [
                [
                    "complete() round trips",
                    f"{SEED_COMPLETE_RT[0]} → {SEED_COMPLETE_RT[1]}",
                    *(count_cell(cells[v]) for v in PRESET_COLUMNS),
                    HOLDS if ok else DOES_NOT_HOLD,
                ],
                [
                    "complete() server commands",
                    "-",
                    *(
                        count_cell(values_of(rows, variant=v, metric="commands", params=complete_p))
                        for v in PRESET_COLUMNS
                    ),
                    "-",
                ],
            ],
        ),
        "",
    ]
    verdicts.append(
        (
            "complete() round trips 3 → 2",
            HOLDS if ok else DOES_NOT_HOLD,
            f"measured {' / '.join(count_cell(cells[v]) for v in PRESET_COLUMNS)} "
            "(baseline / optimized / scripted)",
        )
    )

    wall_verdict, wall_why, wall_row = _wall_claim(rows)
    verdicts.append(("100 jobs at 1 ms latency: 201 ms → 3 ms", wall_verdict, wall_why))
    parts += [
        "### Wall time through the 1 ms delay (the seed's 201 ms → 3 ms)",
        "",
        markdown_table(CLAIM_HEADER, [wall_row]),
        "",
    ]
    parts += ["### Every N: round trips, server commands, wall time", "", _detail_table(rows), ""]
    charts = _charts(rows, charts_dir)
    return Section(title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=charts)


def _calibration_text(rows: list[Row]) -> str:
    def ping(path: str, set_ms: float) -> list[float]:
        return values_of(rows, variant="", metric="ping_ms", params=_calibration_params(path, set_ms))

    lines = []
    for set_ms in (0.0, DELAY_MS):
        direct, proxied = ping("direct", set_ms), ping("proxy", set_ms)
        if not direct or not proxied:
            continue
        added = [p - d for p, d in zip(proxied, direct, strict=False)]
        lines.append(
            f"| {set_ms:g} ms | {spread_cell(direct, digits=3)} | {spread_cell(proxied, digits=3)} | "
            f"{spread_cell(added, digits=3)} |"
        )
    if not lines:
        return "Proxy calibration: not measured."
    return "\n".join(
        [
            "Proxy calibration (median PING, ms; the 0 ms line is the proxy's own cost per round trip, "
            'the 1 ms line what a "1 ms" round trip really costs here):',
            "",
            "| proxy setting | direct | through proxy | added per round trip |",
            "|---|---|---|---|",
            *lines,
        ]
    )


def _wall_claim(rows: list[Row]) -> tuple[str, str, list[str]]:
    p = params(op=MOVE, batch=100, network="delay_1ms")
    walls = {v: values_of(rows, variant=v, metric="wall_ms", params=p) for v in PRESET_COLUMNS}
    cells = [spread_cell(walls[v], digits=1, unit="ms") for v in PRESET_COLUMNS]
    base, opt = (
        median_of(rows, variant="baseline", metric="wall_ms", params=p),
        median_of(rows, variant="optimized", metric="wall_ms", params=p),
    )
    if base is None or opt is None:
        return (
            "not measured",
            "no wall time at 1 ms",
            ["100 jobs at 1 ms", "201 ms → 3 ms", *cells, "not measured"],
        )
    claimed_speedup = SEED_WALL_MS[0] / SEED_WALL_MS[1]
    speedup = base / opt
    near = all(abs(m / c - 1) <= WALL_TOLERANCE for m, c in ((base, SEED_WALL_MS[0]), (opt, SEED_WALL_MS[1])))
    if near:
        verdict = HOLDS
    elif speedup >= 10:
        verdict = PARTLY
    else:
        verdict = DOES_NOT_HOLD
    rt_ms = median_of(rows, variant="", metric="ping_ms", params=_calibration_params("proxy", DELAY_MS))
    model = (
        f"; the seed's model (round trips x one round trip) with this run's round trip through the "
        f"proxy ({rt_ms:.2f} ms) gives {201 * rt_ms:.0f} ms → {3 * rt_ms:.1f} ms; the rest is "
        "the client's own work per job (the loopback times below) and any other load on the machine"
        if rt_ms
        else ""
    )
    why = (
        f"measured {base:.0f} ms → {opt:.1f} ms ({speedup:.0f}x vs the claimed {claimed_speedup:.0f}x){model}"
    )
    row = ["100 jobs at 1 ms", "201 ms → 3 ms", *cells, verdict]
    return verdict, why, row


def _detail_table(rows: list[Row]) -> str:
    header = ["op", "N", "network", *(f"{v} RT / cmds / wall" for v in PRESET_COLUMNS)]
    body = []
    for op, batches in ((MOVE, BATCHES), ("complete", (1,))):
        for network in NETWORKS:
            for batch in batches:
                p = params(op=op, batch=batch, network=network)
                cells = []
                for v in PRESET_COLUMNS:
                    rt = count_cell(values_of(rows, variant=v, metric="round_trips", params=p))
                    cmds = count_cell(values_of(rows, variant=v, metric="commands", params=p))
                    wall = spread_cell(
                        values_of(rows, variant=v, metric="wall_ms", params=p), digits=2, unit="ms"
                    )
                    cells.append(f"{rt} / {cmds} / {wall}")
                body.append([op, str(batch), network, *cells])
    return markdown_table(header, body)


def _charts(rows: list[Row], charts_dir: Path) -> list[str]:
    fig, (ax_rt,) = figure()
    for v in PRESET_COLUMNS:
        ys = [
            median_of(
                rows, variant=v, metric="round_trips", params=params(op=MOVE, batch=b, network="loopback")
            )
            for b in BATCHES
        ]
        ax_rt.plot(
            BATCHES, [y if y is not None else float("nan") for y in ys], marker="o", label=f"{v} (measured)"
        )
    ax_rt.plot(BATCHES, [SEED_BATCH_RT[b][0] for b in BATCHES], "k:", marker="x", label="seed: before")
    ax_rt.plot(BATCHES, [SEED_BATCH_RT[b][1] for b in BATCHES], "k--", marker="x", label="seed: after")
    ax_rt.set(
        xscale="log",
        yscale="log",
        xlabel="due jobs moved (N)",
        ylabel="round trips",
        title="Scheduler move: round trips",
    )
    ax_rt.legend()
    names = [save_chart(fig, charts_dir, "round_trips_scheduler")]

    fig, (ax_c,) = figure(width=4.8)
    complete_p = params(op="complete", batch=1, network="loopback")
    measured = [
        median_of(rows, variant=v, metric="round_trips", params=complete_p) or 0.0 for v in PRESET_COLUMNS
    ]
    ax_c.bar(PRESET_COLUMNS, measured, color="tab:blue", label="measured")
    ax_c.plot(PRESET_COLUMNS[:2], SEED_COMPLETE_RT, "kx", markersize=12, label="seed: 3 → 2")
    ax_c.set(ylabel="round trips", title="complete(): round trips per call")
    ax_c.legend()
    names.append(save_chart(fig, charts_dir, "round_trips_complete"))

    fig, axes = figure(2)
    for ax, network in zip(axes, NETWORKS, strict=True):
        for v in PRESET_COLUMNS:
            ys = [
                median_of(rows, variant=v, metric="wall_ms", params=params(op=MOVE, batch=b, network=network))
                for b in BATCHES
            ]
            ax.plot(BATCHES, [y if y is not None else float("nan") for y in ys], marker="o", label=v)
        if network == "delay_1ms":
            ax.plot([100], [SEED_WALL_MS[0]], "kx", label="seed: 201 ms")
            ax.plot([100], [SEED_WALL_MS[1]], "k+", label="seed: 3 ms")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="due jobs moved (N)",
            ylabel="wall time, ms (median)",
            title=f"Scheduler move: wall time, {network}",
        )
        ax.legend()
    names.append(save_chart(fig, charts_dir, "round_trips_wall_time"))
    return names
