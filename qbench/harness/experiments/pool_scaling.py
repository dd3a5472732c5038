"""Experiment 4: workers 5…60 against pool 10 / 50 / sized (seed: capacity 10 → 40 workers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.harness.experiments import RunContext, Section, ack_cuts
from qbench.harness.experiments.pool_runs import (
    PoolRun,
    StartLog,
    accounting_rows,
    accounting_text,
    jobs_lost,
    measure_windows,
    option_number,
    quiet_worker_logs,
    window_rows,
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
)
from qbench.harness.results.rows import Row, params, parse_params
from qbench.harness.results.stats import Spread
from qbench.queue_impl.config import POOL_SIZED, PRESETS, PoolMode, Variant, parse_variant
from qbench.queue_impl.job import Priority

NAME = "pool_scaling"
TITLE = "Pool and worker scaling: jobs/s and pool errors, workers 5-60 x pool 10 / 50 / sized"

WORKERS = (5, 10, 20, 40, 60)
POOLS = ("10", "50", "sized")
RAISE_CELLS = (("baseline", 20), ("baseline", 40), ("optimized", 20), ("optimized", 40))
"""(preset, workers) also run with pool 10 in raise mode (fail at once when exhausted)."""
QUICK_WORKERS = (5, 40)
SLEEP_MS = 2
"""Handler time per job: long enough that concurrency matters, short enough to keep a backlog busy."""
WARMUP_S = 0.3
BLOCK_WARMUP_S = 1.2
"""Past the first 1 s BRPOPLPUSH on the empty high queue that every block-mode worker starts with."""
WINDOW_S = 0.5
BLOCK_WINDOW_S = {False: 2.0, True: 1.0}
"""Block mode completes in bursts once per 1 s high-priority wait, so its windows are whole seconds;
in full mode a cell (warm-up + windows) outlasts the 5 s pool wait timeout, so starved waits show."""
SEED_POOL_BEFORE, SEED_POOL_AFTER = 10, 50
SEED_CAPACITY_BEFORE, SEED_CAPACITY_AFTER = 10, 40
EFFICIENCY = 0.8
"""A worker count is within capacity while jobs/s per worker stays >= 80% of what it is at
the smallest worker count: more workers still mean proportionally more work done."""


@dataclass(frozen=True)
class Cell:
    preset: str
    workers: int
    pool: str
    pool_mode: PoolMode

    def variant(self, **overrides: object) -> Variant:
        size = POOL_SIZED if self.pool == "sized" else int(self.pool)
        return PRESETS[self.preset].with_overrides(pool_size=size, pool_mode=self.pool_mode, **overrides)

    def params(self) -> str:
        return params(pool=self.pool, pool_mode=self.pool_mode, workers=self.workers)


def cells(quick: bool) -> list[Cell]:
    """Full: every preset x pool x worker count in wait mode, plus a few raise-mode cells.
    Quick: pool 10 at 5 and 40 workers per preset, plus optimized with pool 50 at 40."""
    if quick:
        grid = [Cell(preset, workers, "10", "wait") for preset in PRESETS for workers in QUICK_WORKERS]
        return [*grid, Cell("optimized", SEED_CAPACITY_AFTER, "50", "wait")]
    grid = [
        Cell(preset, workers, pool, "wait") for preset in PRESETS for pool in POOLS for workers in WORKERS
    ]
    return grid + [Cell(preset, workers, "10", "raise") for preset, workers in RAISE_CELLS]


def run(ctx: RunContext) -> list[Row]:
    given = ctx.options.get("cells")
    grid = [c for c in given if isinstance(c, Cell)] if isinstance(given, Sequence) else cells(ctx.quick)
    window_s = option_number(ctx.options, "window_s", WINDOW_S)
    block_window_s = option_number(ctx.options, "block_window_s", BLOCK_WINDOW_S[ctx.quick])
    given_overrides = ctx.options.get("overrides", {})
    overrides = dict(given_overrides) if isinstance(given_overrides, dict) else {}
    peak: dict[str, float] = {}
    rows: list[Row] = []
    for index, cell in enumerate(grid, start=1):
        variant = cell.variant(**overrides)
        block = variant.dequeue == "block"
        window = block_window_s if block else window_s
        warmup_s = option_number(ctx.options, "warmup_s", BLOCK_WARMUP_S if block else WARMUP_S)
        ctx.progress(
            f"[{index}/{len(grid)}] {cell.preset}: {cell.workers} workers, pool {cell.pool} "
            f"({cell.pool_mode}), {ctx.repeats} x {window:g} s"
        )
        cell_rows, rate = _measure(
            ctx.url,
            cell,
            variant,
            warmup_s=warmup_s,
            window_s=window,
            windows=ctx.repeats,
            expected_rate=_expected_rate(cell, variant, peak.get(cell.preset, 0.0)),
        )
        peak[cell.preset] = max(peak.get(cell.preset, 0.0), rate)
        rows += cell_rows
    ctx.progress(f"acknowledgements cut by a pool error at each round trip, {ctx.repeats} x per preset")
    rows += ack_cuts.rows(NAME, ctx.url, PRESETS.values(), ctx.repeats)
    return rows


def _expected_rate(cell: Cell, variant: Variant, peak: float) -> float:
    """Jobs/s to prefill for: block mode takes one job per worker per high-priority wait;
    otherwise the handler bounds each worker, and the best rate seen so far the pool."""
    if variant.dequeue == "block":
        return cell.workers / variant.block_timeouts_s[0]
    return min(cell.workers * 1000.0 / SLEEP_MS, max(1.5 * peak, 1500.0))


def _measure(
    url: str,
    cell: Cell,
    variant: Variant,
    *,
    warmup_s: float,
    window_s: float,
    windows: int,
    expected_rate: float,
) -> tuple[list[Row], float]:
    label = variant.label()
    log = StartLog()
    # Beyond the rate: a job per worker, and what a prefetching pool holds in its backlog.
    held = cell.workers + (variant.prefetch if variant.dispatch == "process" else 0)
    prefill = math.ceil(expected_rate * (warmup_s + window_s * windows) * 1.25) + held
    with (
        quiet_worker_logs() as tally,
        PoolRun(url, variant, workers=cell.workers, on_job_start=log, tag="scaling") as run,
    ):
        run.prefill(prefill, job_type="sleep", payload=str(SLEEP_MS).encode(), priority=Priority.NORMAL)
        run.start()
        measured = measure_windows(run, warmup_s=warmup_s, window_s=window_s, windows=windows)
        ran_dry = sum(run.backlog()[p.label] for p in Priority) == 0
        run.stop()
        left = run.backlog()
        completed = run.pool.counters.completed
        stranded = len(run.stranded())
    p = cell.params()
    rows = window_rows(NAME, label, p, measured)
    rows += [
        Row(NAME, label, p, "pool_exhaustion_errors", tally.kinds["pool_exhaustion"], "errors", 0),
        Row(NAME, label, p, "other_redis_errors", tally.kinds["other"], "errors", 0),
        Row(NAME, label, p, "backlog_ran_dry", int(ran_dry), "count", 0),
    ]
    rows += accounting_rows(
        NAME,
        label,
        p,
        lost=jobs_lost(prefill, completed, left),
        stranded=stranded,
        abandoned=tally.kinds["ack_abandoned"],
        duplicates=log.duplicate_starts,
    )
    best = max((w.jobs_per_s for w in measured), default=0.0)
    return rows, best


# -- render ---------------------------------------------------------------------------
def _cell_values(rows: list[Row], preset: str, metric: str, p: str) -> list[float]:
    return [
        r.value
        for r in sorted(rows, key=lambda r: r.repeat)
        if r.variant.split("+")[0] == preset and r.params == p and r.metric == metric
    ]


def _rate(rows: list[Row], preset: str, pool: str, workers: int, mode: str = "wait") -> float | None:
    found = _cell_values(rows, preset, "jobs_per_s", params(pool=pool, pool_mode=mode, workers=workers))
    return Spread.of(found).median if found else None


def _errors(rows: list[Row], preset: str, pool: str, workers: int, mode: str = "wait") -> int:
    p = params(pool=pool, pool_mode=mode, workers=workers)
    return int(sum(_cell_values(rows, preset, "pool_errors", p)))


def _worker_counts(rows: list[Row], preset: str, pool: str | None = None, mode: str = "wait") -> list[int]:
    prefix = f"pool={pool};pool_mode={mode};" if pool is not None else f"pool_mode={mode};"
    return sorted(
        {
            int(r.params.split("workers=", 1)[1])
            for r in rows
            if r.variant.split("+")[0] == preset and r.metric == "jobs_per_s" and prefix in r.params
        }
    )


def per_worker_reference(rows: list[Row], preset: str) -> float | None:
    """Jobs/s per worker at the preset's smallest worker count (the best pool there)."""
    counts = _worker_counts(rows, preset)
    if not counts:
        return None
    smallest = counts[0]
    rates = [
        rate for pool in ("10", "50", "sized") if (rate := _rate(rows, preset, pool, smallest)) is not None
    ]
    return max(rates) / smallest if rates else None


def capacity(rows: list[Row], preset: str, pool: str, mode: str = "wait") -> int | None:
    """The largest worker count, going up, at which every worker is still at least
    EFFICIENCY as productive as at the smallest count and no pool error occurred;
    None when the series was not measured."""
    reference = per_worker_reference(rows, preset)
    if reference is None or reference <= 0:
        return None
    best: int | None = None
    for workers in _worker_counts(rows, preset, pool, mode):
        rate = _rate(rows, preset, pool, workers, mode)
        if rate is None:
            continue
        if _errors(rows, preset, pool, workers, mode) or rate < EFFICIENCY * reference * workers:
            break
        best = workers
    return best


def render(rows: list[Row], charts_dir: Path) -> Section:
    mine = [r for r in rows if r.experiment == NAME and "workers=" in r.params]
    cut_rows = [
        r for r in rows if r.experiment == NAME and r.metric in (ack_cuts.STRANDED, ack_cuts.ROUND_TRIPS)
    ]
    workers = sorted({int(r.params.split("workers=", 1)[1]) for r in mine})
    pools = [p for p in ("10", "50", "sized") if any(f"pool={p};" in r.params for r in mine)]
    caps = {(preset, pool): capacity(mine, preset, pool) for preset in PRESET_COLUMNS for pool in pools}

    def cap_cell(preset: str, pool: str) -> str:
        value = caps.get((preset, pool))
        return "-" if value is None else f"{value} workers"

    before, after = caps.get(("optimized", "10")), caps.get(("optimized", "50"))
    verdict, why = _verdict(mine, before, after)
    claim_rows = [
        [
            f"Capacity, pool {pool}",
            _claimed(pool),
            *(cap_cell(p, pool) for p in PRESET_COLUMNS),
            verdict if pool == "50" else "",
        ]
        for pool in pools
    ]
    parts = [
        f"Each cell: a backlog of normal-priority `sleep` jobs ({SLEEP_MS} ms each) prefilled on a fresh "
        "namespace, then W worker threads sharing the preset's connection pool (pool size overridden); "
        "jobs/s over consecutive windows after a warm-up (the windows are the repeats). "
        "'Capacity' = the largest worker count (going up) at which jobs/s per worker is still at "
        "least 80% of the per-worker rate at the smallest count, with no pool error. Pool errors "
        "are Redis errors the workers hit (exhausted pool in raise mode, a wait for a connection "
        "longer than 5 s in wait mode). Cells: median (min..max).",
        "",
        markdown_table(CLAIM_HEADER, claim_rows),
        "",
        "### jobs/s (pool errors), wait mode",
        "",
        _grid_table(mine, workers, pools),
        "",
        "### complete() p99 (ms), wait mode: includes any wait for a free connection",
        "",
        _grid_table(mine, workers, pools, "complete_ms_p99"),
        "",
        _raise_text(mine),
        "",
        _integrity_text(mine),
        "",
        _cuts_text(cut_rows),
    ]
    charts = [_chart(mine, workers, pools, charts_dir)] if mine else []
    if charts:
        parts += ["", _chart_caption(mine, workers, pools)]
    return Section(
        title=TITLE,
        markdown="\n".join(parts),
        verdicts=[("Max worker capacity: 10 → 40 (pool 10 → 50)", verdict, why)],
        charts=charts,
    )


def _claimed(pool: str) -> str:
    if pool == "10":
        return f"{SEED_CAPACITY_BEFORE} workers"
    if pool == "50":
        return f"{SEED_CAPACITY_AFTER} workers"
    return "-"


def _verdict(rows: list[Row], before: int | None, after: int | None) -> tuple[str, str]:
    if before is None or after is None:
        return NOT_MEASURED, "optimized with pool 10 and pool 50 not both measured"
    opt = _rate(rows, "optimized", "50", SEED_CAPACITY_AFTER)
    base = _rate(rows, "baseline", "10", SEED_CAPACITY_AFTER)
    rate_text = ""
    if opt is not None and base is not None:
        rate_text = (
            f"; at {SEED_CAPACITY_AFTER} workers optimized+pool 50 does {opt:.0f} jobs/s vs "
            f"baseline+pool 10 {base:.0f} jobs/s (block mode takes one normal job per worker "
            "per 1 s wait on the empty high queue)"
        )
    others = ", ".join(
        f"{preset} {value} with pool 10"
        for preset in ("baseline", "scripted")
        if (value := capacity(rows, preset, "10")) is not None
    )
    cpu_text = (
        f"; {others}: poll and notify workers hold a connection only per call, and the one Python "
        "process (GIL, 2 cores) stops scaling before the pool does"
        if others
        else ""
    )
    why = f"optimized capacity {before} workers with pool 10, {after} with pool 50{rate_text}{cpu_text}"
    if before <= SEED_CAPACITY_BEFORE * 1.5 and after >= SEED_CAPACITY_AFTER:
        return HOLDS, why
    if after > before:
        return PARTLY, why
    return DOES_NOT_HOLD, why


def _grid_table(rows: list[Row], workers: list[int], pools: list[str], metric: str = "jobs_per_s") -> str:
    """One row per preset and pool, one column per worker count (wait mode); jobs/s cells
    also show the pool errors of the cell."""
    digits = 0 if metric == "jobs_per_s" else 1
    body = []
    for preset in PRESET_COLUMNS:
        for pool in pools:
            cells = []
            for w in workers:
                found = _cell_values(rows, preset, metric, params(pool=pool, pool_mode="wait", workers=w))
                if not found:
                    cells.append("-")
                    continue
                errors = _errors(rows, preset, pool, w) if metric == "jobs_per_s" else 0
                cells.append(spread_cell(found, digits=digits) + (f" ({errors} err)" if errors else ""))
            if any(cell != "-" for cell in cells):
                body.append([preset, pool, *cells])
    return markdown_table(["preset", "pool", *(f"{w} workers" for w in workers)], body)


def _raise_text(rows: list[Row]) -> str:
    raised = sorted({(r.variant.split("+")[0], r.params) for r in rows if "pool_mode=raise" in r.params})
    if not raised:
        return "Raise mode (fail at once when the pool is exhausted): not measured in this run."
    body = []
    for preset, p in raised:
        workers = p.split("workers=", 1)[1]
        body.append(
            [
                preset,
                workers,
                spread_cell(_cell_values(rows, preset, "jobs_per_s", p), digits=0),
                str(int(sum(_cell_values(rows, preset, "pool_errors", p)))),
                str(int(sum(_cell_values(rows, preset, "pool_exhaustion_errors", p)))),
            ]
        )
    pools = " / ".join(sorted({parse_params(p)["pool"] for _, p in raised}, key=lambda x: (len(x), x)))
    return f"Pool {pools} in raise mode (fail at once when exhausted):\n\n" + markdown_table(
        ["preset", "workers", "jobs/s", "Redis errors in windows", "'Too many connections' (whole cell)"],
        body,
    )


def _integrity_text(rows: list[Row]) -> str:
    text = accounting_text(rows)
    dry = [f"{r.variant} {r.params}" for r in rows if r.metric == "backlog_ran_dry" and r.value]
    if dry:
        text += (
            f"\n\nThe backlog ran dry in {len(dry)} cell(s) (their jobs/s is a lower bound): "
            + "; ".join(dry)
            + "."
        )
    return text


def _cuts_text(rows: list[Row]) -> str:
    """The cut probe (`ack_cuts`): which acknowledgements a pool error can stop half way
    with the job in no list, per preset and operation."""
    title = "### A pool error in the middle of an acknowledgement"
    if not rows:
        return f"{title}\n\nNot measured in this run."
    body = []
    stranding: dict[str, set[str]] = {}
    for preset in dict.fromkeys(r.variant for r in rows):
        for op in ack_cuts.OPERATIONS:
            trips = {
                r.value
                for r in rows
                if r.variant == preset and r.metric == ack_cuts.ROUND_TRIPS and r.params == params(op=op)
            }
            cuts = sorted(
                {
                    (int(r.params.split("cut_after=", 1)[1].split(";", 1)[0]), r.value)
                    for r in rows
                    if r.variant == preset and r.metric == ack_cuts.STRANDED and f"op={op}" in r.params
                }
            )
            if not trips and not cuts:
                continue
            after = [str(k) for k, value in cuts if value]
            varies = len({k for k, _ in cuts}) != len(cuts)
            if not cuts:
                cell = "- (one round trip: nothing to cut)"
            else:
                cell = f"{len(after)} of {len({k for k, _ in cuts})}"
                cell += f" (after round trip {', '.join(after)})" if after else ""
                cell += " ⚠ varies between repeats" if varies else ""
            if after:
                stranding.setdefault(parse_variant(preset).batch, set()).add(f"{op}()")
            body.append([preset, f"{op}()", count_text(trips), cell])
    parts = [
        title,
        "",
        "Each acknowledgement of each preset is run on a held job with a connection pool that refuses every "
        "checkout after the first k with redis-py's own 'Too many connections' error, for each k "
        "between 1 and its round trips - 1 (the server is real; only the pool's refusal is staged). "
        "'Stranded': afterwards the job's record is not final and its id is in no queue, processing "
        "list or set, so if the worker does not manage to retry the call, nothing will ever run, "
        "retry or recover the job.",
        "",
        markdown_table(["preset", "operation", "round trips", "cuts that strand the job"], body),
    ]
    if "loop" in stranding:
        parts += [
            "",
            f"In `batch=loop` (the seed's code before its PR) {' and '.join(sorted(stranding['loop']))} "
            "remove the job from the processing list first (LREM), then read the record (GET) and "
            "write it (SET; fail() then ZADDs the retry or LPUSHes the dead id), each a round trip with "
            "its own connection checkout. With `pool_mode=raise` (or a wait longer than the pool "
            "timeout in wait mode) "
            "any later command can fail after the LREM: the job has left the processing list, its "
            "record is not final (still queued, or scheduled with no entry in the scheduled set), "
            "and stale recovery, which only looks at processing lists, will never "
            "see it. The worker pool retries the acknowledgement up to 10 times and then gives up, "
            "logging that the job 'stays in processing for recovery', which after the LREM is not "
            "true. Its backoff between retries stops waiting once the pool is stopping, so at the end "
            "of a run the remaining retries go back to back against a pool the other workers still "
            "use. A job lost this way did run its handler; the queue lost track of it.",
        ]
    others = sorted(batch for batch in stranding if batch != "loop")
    if others:
        parts += ["", f"Other batch modes that strand a job when cut: {', '.join(others)}."]
    safe = sorted({parse_variant(p).batch for p in dict.fromkeys(r.variant for r in rows)} - set(stranding))
    if safe:
        parts += [
            "",
            f"No cut strands a job in `batch={'` or `batch='.join(safe)}`: the pipeline sends LREM and "
            "the record write in one request, the script does both in one atomic call."
            if safe == ["pipeline", "script"]
            else f"No cut strands a job in `batch={'` or `batch='.join(safe)}`.",
        ]
    return "\n".join(parts)


def count_text(values: set[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return str(int(next(iter(values))))
    return "⚠ varies: " + " / ".join(str(int(v)) for v in sorted(values))


ZOOM_BELOW = 0.2
"""A preset whose best jobs/s stays under this share of the shared axis gets a zoomed panel."""
ZOOMED = "optimized"


def _series(rows: list[Row], preset: str, pool: str, workers: list[int]) -> list[list[float]]:
    return [
        _cell_values(rows, preset, "jobs_per_s", params(pool=pool, pool_mode="wait", workers=w))
        for w in workers
    ]


def _zoom(rows: list[Row], workers: list[int], pools: list[str]) -> tuple[bool, float, float]:
    """(zoom the ZOOMED preset?, the shared axis's top, the zoomed preset's best median)."""
    top = max(
        (max(v) for p in PRESET_COLUMNS for pool in pools for v in _series(rows, p, pool, workers) if v),
        default=0.0,
    )
    best = max(
        (Spread.of(v).median for pool in pools for v in _series(rows, ZOOMED, pool, workers) if v),
        default=0.0,
    )
    return 0 < best < ZOOM_BELOW * top, top, best


def _chart_caption(rows: list[Row], workers: list[int], pools: list[str]) -> str:
    zoom, _top, best = _zoom(rows, workers, pools)
    text = (
        "Chart: jobs/s against the number of workers, wait mode (raise mode is in the table above), "
        "one line per pool size; a dot is the median over the windows, its bar their min..max, and a "
        "red cross marks a cell where the workers hit pool errors. The preset panels share one linear "
        "y axis from 0, so heights compare across presets."
    )
    if zoom:
        text += (
            f" The last panel repeats {ZOOMED} on its own linear axis: at the shared scale its best "
            f"{best:.0f} jobs/s lie on the floor and the pool 10 vs pool 50 difference the seed claims "
            "would not show."
        )
    return text


def _chart(rows: list[Row], workers: list[int], pools: list[str], charts_dir: Path) -> str:
    return save_chart(chart_figure(rows, workers, pools), charts_dir, "pool_scaling")


def chart_figure(rows: list[Row], workers: list[int], pools: list[str]) -> Any:
    """The pool-scaling figure: a panel per preset on one shared linear axis, and a zoomed
    panel of ZOOMED on its own axis when it would lie on the floor of the shared one."""
    from matplotlib.lines import Line2D

    zoom, top, _best = _zoom(rows, workers, pools)
    panels = [*PRESET_COLUMNS, *([ZOOMED] if zoom else [])]
    fig, axes = figure(ncols=len(panels), width=4.0, height=4.0)
    colors = {pool: f"C{i}" for i, pool in enumerate(("10", "50", "sized"))}
    for index, (ax, preset) in enumerate(zip(axes, panels, strict=True)):
        zoomed = index >= len(PRESET_COLUMNS)
        for pool in pools:
            found = _series(rows, preset, pool, workers)
            xs = [w for w, v in zip(workers, found, strict=True) if v]
            if not xs:
                continue
            spreads = [Spread.of(v) for v in found if v]
            medians = [sp.median for sp in spreads]
            ax.errorbar(
                xs,
                medians,
                yerr=[[sp.median - sp.min for sp in spreads], [sp.max - sp.median for sp in spreads]],
                marker="o",
                markersize=4,
                capsize=2,
                color=colors[pool],
            )
            errs = [(w, m) for w, m in zip(xs, medians, strict=True) if _errors(rows, preset, pool, w)]
            if errs:
                ax.scatter(
                    [w for w, _ in errs], [m for _, m in errs], marker="x", s=60, color="red", zorder=3
                )
        ax.set_ylim(bottom=0)
        if zoomed:
            ax.set_facecolor("#f2f2f2")  # set apart: a different axis from the others
        else:
            ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.set_xticks(workers)
        ax.set_xlabel("workers")
        ax.set_ylabel("jobs/s" + (" (own axis)" if zoomed else " (shared axis)"))
        title = f"{preset} ({PRESETS[preset].dequeue})"
        ax.set_title(f"{title}, zoomed" if zoomed else title)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Line2D([], [], color=colors[pool], marker="o", label=f"pool {pool}") for pool in pools]
    handles += [
        Line2D(
            [], [], color="red", marker="x", linestyle="none", markersize=8, label="pool errors in the cell"
        ),
        Line2D(
            [], [], color="grey", marker="o", linestyle="none", label="median of the windows; bar: min..max"
        ),
    ]
    axes[0].legend(handles=handles, fontsize=7, title="wait mode", title_fontsize=7, loc="best")
    return fig
