"""Experiment 5: bytes per job in Redis, and a time-compressed retention run, TTL on vs off."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from qbench.harness.experiments import RunContext, Section
from qbench.harness.infra.measured import MeasuredQueue, make_jobs
from qbench.harness.results.render import (
    CLAIM_HEADER,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    PRESET_COLUMNS,
    count_cell,
    figure,
    fmt_bytes,
    markdown_table,
    median_of,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params, parse_params
from qbench.harness.results.stats import median
from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import PRESETS, Variant
from qbench.queue_impl.connection import disconnect
from qbench.queue_impl.job import as_text
from qbench.queue_impl.queue import RedisQueue

NAME = "memory"
TITLE = "5. Memory: bytes per job and retention (TTL on vs off)"

PAYLOADS = {"small": 64, "1KB": 1024}
"""Payload bytes: "1KB" is the seed's assumption; "small" a typical id-plus-arguments job."""
OUTCOMES = ("completed", "dead")
FAILURE_EVERY = 20
"""Every 20th job is dead-lettered: the seed's 5% failure rate."""
FAILURE_RATE = 1 / FAILURE_EVERY
SEED_DEAD_TTL_DAYS = 7
SEED_RATES = {"100K/day": 100_000, "1M/day": 1_000_000}
SEED_HORIZONS = (1, 7, 30, 365)
SEED_1M_TABLE = {1: (1e9, 1e9), 7: (7e9, 1.35e9), 30: (30e9, 1.35e9), 365: (365e9, 1.35e9)}
"""The seed's "1M jobs/day" table: day -> (bytes before, bytes after), 1 KB per job, 5% failures."""
SEED_100K_30D = (3e9, 150e6)
"""The seed's summary: 100K jobs/day, 30 days: ~3 GB -> ~150 MB."""
TOLERANCE = 0.25
"""A projection within 25% of the seed's figure matches it."""
TTL_PROBE_S = 86_400
"""A TTL far beyond the measurement, set on no-TTL records to weigh the TTL alone."""
WARM_JOBS = 40
"""Unmeasured jobs run before each bytes-per-job pass."""
CLOSE_SETTLE_S = 0.02
"""Time for the server to free a closed connection before used_memory is read."""
RESIZE_SETTLE_S = 0.15
"""After a cleanup, the server shrinks its key tables in its cron (10 Hz): wait for it."""
MIN_GROWTH_SAMPLES = 5
"""Days after the dead TTL needed to fit the TTL-on curve's remaining growth."""
OBSERVED = "bytes_observed"
"""Unit of figures read from INFO used_memory: allocator and dict growth make them vary a little,
so (unlike `bytes`, from MEMORY USAGE or STRLEN) they are not required to repeat exactly."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    jobs_per_config: int
    """Jobs per (payload, outcome) case of the bytes-per-job measurement."""
    day_s: int
    """Seconds per simulated day (whole seconds: Redis TTLs set with EX)."""
    days: int
    jobs_per_day: int


QUICK = Sizes(jobs_per_config=150, day_s=1, days=10, jobs_per_day=100)
FULL = Sizes(jobs_per_config=1000, day_s=2, days=32, jobs_per_day=400)


def run(ctx: RunContext) -> list[Row]:
    sizes = QUICK if ctx.quick else FULL
    rows = _server_rows(ctx.url)
    for name, variant in PRESETS.items():
        with MeasuredQueue(ctx.url, variant) as mq:
            mq.warm_up()
            for repeat in range(ctx.repeats):
                rows += _bytes_per_job(mq, name, sizes.jobs_per_config, repeat)
            ctx.progress(
                f"{name}: bytes per job over {sizes.jobs_per_config} jobs per case x {ctx.repeats} repeats"
            )
    base = PRESETS["optimized"].with_overrides(
        completed_ttl_s=sizes.day_s, dead_ttl_s=SEED_DEAD_TTL_DAYS * sizes.day_s
    )
    for ttl in ("off", "on"):
        ctx.progress(
            f"retention run, TTL {ttl}: {sizes.days} days of {sizes.day_s} s, {sizes.jobs_per_day} jobs/day"
        )
        rows += _retention_run(ctx, base.with_overrides(ttl=ttl), sizes)
    return rows


def _server_rows(url: str) -> list[Row]:
    client = redis.Redis.from_url(url, socket_timeout=10, decode_responses=True)
    try:
        memory = client.info("memory")
        server = client.info("server")
    finally:
        client.close()
    p = params(
        subject="server", allocator=memory.get("mem_allocator", "?"), version=server.get("redis_version", "?")
    )
    return [Row(NAME, "", p, "server_hz", float(server.get("hz", 0)), "hz", 0)]


def _used_memory(mq: MeasuredQueue) -> int:
    """used_memory with the queue's connections closed: a client's query and reply buffers
    come and go with traffic (tens of KB), so they would blur a per-job figure."""
    disconnect(mq.client)
    time.sleep(CLOSE_SETTLE_S)
    return mq.used_memory()


def _process(q: RedisQueue, count: int, payload: bytes, *, dead_every: int) -> list[str]:
    """Enqueue `count` jobs, then take each one: dead-letter every `dead_every`-th, complete
    the rest. Returns the ids (all `count` were handled, or it raises)."""
    ids: list[str] = []
    for start in range(0, count, 100):
        ids += q.enqueue_many(make_jobs(min(100, count - start), payload=payload))
    handled = 0
    while (job := q.dequeue(wait=False)) is not None:
        handled += 1
        if handled % dead_every == 0:
            q.fail(job, "measured failure", retry=False)
        else:
            q.complete(job)
    if handled != count:
        raise RuntimeError(f"handled {handled} of {count} jobs")
    return ids


def _bytes_per_job(mq: MeasuredQueue, preset: str, count: int, repeat: int) -> list[Row]:
    """One pass over every (payload, outcome) case, each measured as a used_memory delta
    from the previous case (keys accumulate; the namespace is emptied once per pass)."""
    q, client = mq.queue, mq.stats_client
    q.cleanup()
    q.register_consumer()
    # A few unmeasured jobs first: the pass's one-time costs and frees (key tables
    # regrowing after the cleanup, the script engine's garbage) land outside every case.
    _process(q, WARM_JOBS, b"x" * PAYLOADS["small"], dead_every=2)
    time.sleep(RESIZE_SETTLE_S)
    rows: list[Row] = []
    before = _used_memory(mq)
    for payload_name, payload_size in PAYLOADS.items():
        for outcome in OUTCOMES:
            dead_every = 1 if outcome == "dead" else count + 1
            ids = _process(q, count, b"x" * payload_size, dead_every=dead_every)
            after = _used_memory(mq)
            records = q.partitions[0].records
            usage = records.memory_usage_per_record(client, ids[:25])
            record = median([records.stored_bytes(client, job_id) for job_id in ids[:25]])
            p = params(payload=payload_name, outcome=outcome)
            rows += [
                Row(NAME, preset, p, "bytes_per_job", (after - before) / count, OBSERVED, repeat),
                Row(NAME, preset, p, "memory_usage_bytes", usage, "bytes", repeat),
                Row(NAME, preset, p, "record_bytes", record, "bytes", repeat),
                Row(NAME, preset, p, "jobs", count, "jobs", repeat),
            ]
            if outcome == "dead":
                per_id = int(client.memory_usage(q.keys.dead()) or 0) / int(client.llen(q.keys.dead()))
                rows.append(Row(NAME, preset, p, "dead_list_bytes_per_id", per_id, "bytes", repeat))
            if outcome == "completed" and mq.variant.ttl == "off":
                # The same records, before and after a TTL: what a TTL itself costs per key.
                pipe = client.pipeline(transaction=False)
                for job_id in ids:
                    q.partitions[0].records.expire(pipe, job_id, TTL_PROBE_S)
                pipe.execute()
                with_ttl = _used_memory(mq)
                rows.append(
                    Row(NAME, preset, p, "ttl_bytes_per_key", (with_ttl - after) / count, OBSERVED, repeat)
                )
                after = with_ttl
            before = after
    q.cleanup()
    return rows


def _retention_run(ctx: RunContext, variant: Variant, sizes: Sizes) -> list[Row]:
    """Rows of the variant measured (its label, TTLs scaled to the simulated day), with
    `ttl=on|off` in params: the render reads the two runs by that, whatever the day length."""
    rows: list[Row] = []
    label = variant.label()
    ttl = variant.ttl
    with MeasuredQueue(ctx.url, variant) as mq:
        q, client = mq.queue, mq.stats_client
        mq.warm_up()
        time.sleep(RESIZE_SETTLE_S)
        baseline = _used_memory(mq)
        payload = b"x" * PAYLOADS["1KB"]
        start = time.monotonic()
        for day in range(1, sizes.days + 1):
            day_start = start + (day - 1) * sizes.day_s
            _process(q, sizes.jobs_per_day, payload, dead_every=FAILURE_EVERY)
            # Sampled at mid-day: today's completed records are alive (younger than half a
            # day), yesterday's are past their 1-day TTL, so no record sits on its expiry edge.
            late = _sleep_until(day_start + sizes.day_s / 2)
            p = params(day=day, ttl=ttl)
            rows += [
                Row(NAME, label, p, "used_memory_bytes", _used_memory(mq) - baseline, OBSERVED, 0),
                Row(NAME, label, p, "job_records", _count_records(client, q), "records", 0),
                Row(NAME, label, p, "dead_list_length", int(client.llen(q.keys.dead())), "jobs", 0),
                Row(NAME, label, p, "day_overrun_s", late, "s", 0),
            ]
            _sleep_until(day_start + sizes.day_s)
        dead_ids = [as_text(i) for i in client.lrange(q.keys.dead(), 0, -1)]
        stored = q.partitions[0].records.get_many(client, dead_ids) if dead_ids else []
        alive = sum(record is not None for record in stored)
        end = params(day=sizes.days, ttl=ttl)
        rows += [
            Row(NAME, label, end, "dead_ids_without_record", len(dead_ids) - alive, "records", 0),
            Row(
                NAME,
                label,
                end,
                "dead_list_memory_usage_bytes",
                int(client.memory_usage(q.keys.dead()) or 0),
                "bytes",
                0,
            ),
            Row(NAME, label, params(ttl=ttl), "jobs_per_day", sizes.jobs_per_day, "jobs", 0),
            Row(NAME, label, params(ttl=ttl), "day_s", sizes.day_s, "s", 0),
        ]
    return rows


def _sleep_until(deadline: float) -> float:
    """Sleep until `deadline` (monotonic); returns how late we already were (0 if not)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    return max(-remaining, 0.0)


def _count_records(client: RedisClient, q: RedisQueue) -> int:
    return q.partitions[0].records.count(client)


# -- render --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetentionModel:
    """What the retention run measured, scaled to a real job rate."""

    jobs_per_day: int
    days_run: int
    off_curve: dict[int, float]
    on_curve: dict[int, float]
    off_slope: float
    """bytes per simulated day without TTL (least squares)."""
    plateau: float
    """mean TTL-on used_memory growth once dead records expire (after day 7)."""
    plateau_day: float
    """the mean day of the plateau's samples."""
    fitted_growth: float | None
    """bytes per simulated day the TTL-on curve still grows after day 7 (least squares), or
    None when too few days were run after the dead TTL to fit it."""
    entry_bytes: float
    """dead-letter list bytes per id (stays after its record expired)."""

    @property
    def id_growth(self) -> float:
        """bytes per simulated day the never-trimmed dead-letter ids add."""
        return FAILURE_RATE * self.jobs_per_day * self.entry_bytes

    def project(self, rate: int, day: int, *, ttl: bool, fitted: bool = False) -> float:
        """Bytes at `rate` jobs/day on `day`. Past the run, TTL on grows by the dead-letter
        ids (explained, exact), or with `fitted` by the fitted growth (measured, noisier)."""
        scale = rate / self.jobs_per_day
        curve = self.on_curve if ttl else self.off_curve
        if day in curve:
            return curve[day] * scale
        if not ttl:
            return self.off_slope * day * scale
        growth = self.fitted_growth if fitted and self.fitted_growth is not None else self.id_growth
        return (self.plateau + growth * (day - self.plateau_day)) * scale


def _slope(curve: dict[int, float]) -> float:
    """Least-squares bytes per day of a sampled curve."""
    days = sorted(curve)
    mean_d = statistics.fmean(days)
    return sum((d - mean_d) * curve[d] for d in days) / sum((d - mean_d) ** 2 for d in days)


def _retention(rows: list[Row], ttl: str, metric: str) -> list[Row]:
    """The retention run's rows of one metric, TTL on or off (`ttl=` in params)."""
    return [r for r in rows if r.metric == metric and parse_params(r.params).get("ttl") == ttl]


def _by_day(rows: list[Row], ttl: str, metric: str) -> dict[int, float]:
    return {int(parse_params(r.params)["day"]): r.value for r in _retention(rows, ttl, metric)}


def _model(rows: list[Row]) -> RetentionModel | None:
    off, on = _by_day(rows, "off", "used_memory_bytes"), _by_day(rows, "on", "used_memory_bytes")
    jobs = [r.value for r in _retention(rows, "on", "jobs_per_day")]
    if not off or not on or not jobs:
        return None
    settled = {d: v for d, v in on.items() if d > SEED_DEAD_TTL_DAYS} or {max(on): on[max(on)]}
    entry = median_of(
        rows,
        variant="optimized",
        metric="dead_list_bytes_per_id",
        params=params(payload="1KB", outcome="dead"),
    )
    return RetentionModel(
        jobs_per_day=int(jobs[0]),
        days_run=max(off),
        off_curve=off,
        on_curve=on,
        off_slope=_slope(off),
        plateau=statistics.fmean(settled.values()),
        plateau_day=statistics.fmean(settled),
        fitted_growth=_slope(settled) if len(settled) >= MIN_GROWTH_SAMPLES else None,
        entry_bytes=entry or 0.0,
    )


def _verdict(before: float, after: float, claimed: tuple[float, float]) -> str:
    near = all(abs(m / c - 1) <= TOLERANCE for m, c in zip((before, after), claimed, strict=True))
    if near:
        return HOLDS
    saving, claimed_saving = 1 - after / before, 1 - claimed[1] / claimed[0]
    return PARTLY if abs(saving - claimed_saving) <= 0.05 or saving >= claimed_saving else DOES_NOT_HOLD


def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    server = [r for r in rows if r.metric == "server_hz"]
    facts = (
        ", ".join(f"{k}={v}" for k, v in parse_params(server[0].params).items() if k != "subject")
        + f", hz={server[0].value:g}"
        if server
        else "server unknown"
    )
    parts = [
        f"Memory figures depend on the server build ({facts}). `used_memory` deltas (unit "
        f"`{OBSERVED}`) include the key's dict entry, the TTL's entry and allocator rounding; "
        "`MEMORY USAGE` shows the value and key only (no TTL). Sizes: payload "
        + ", ".join(f"{k} = {v} B" for k, v in PAYLOADS.items())
        + "; each figure is over many jobs (see `jobs`).",
        "",
        "### Bytes per job",
        "",
    ]
    body = []
    for payload in PAYLOADS:
        for outcome in OUTCOMES:
            p = params(payload=payload, outcome=outcome)
            cells = []
            for v in PRESET_COLUMNS:
                observed = spread_cell(values_of(rows, variant=v, metric="bytes_per_job", params=p), digits=0)
                usage = count_cell(values_of(rows, variant=v, metric="memory_usage_bytes", params=p))
                cells.append(f"{observed} (MEMORY USAGE {usage})")
            claimed = "1 KB per job" if payload == "1KB" else "-"
            body.append([f"{payload} payload, {outcome}", claimed, *cells, ""])
    one_kb = median_of(
        rows, variant="baseline", metric="bytes_per_job", params=params(payload="1KB", outcome="completed")
    )
    if one_kb is not None:
        verdict = HOLDS if abs(one_kb / 1000 - 1) <= TOLERANCE else DOES_NOT_HOLD
        body[2][-1] = verdict
        verdicts.append(
            (
                "A 1 KB job costs 1 KB of Redis memory (the seed's assumption)",
                verdict,
                f"a completed 1 KB job costs {one_kb:,.0f} B in used_memory (no TTL)",
            )
        )
    parts += [markdown_table(CLAIM_HEADER, body), ""]
    ttl_cost = _ttl_overhead(rows)
    entry = median_of(
        rows,
        variant="optimized",
        metric="dead_list_bytes_per_id",
        params=params(payload="1KB", outcome="dead"),
    )
    if ttl_cost:
        parts += [
            f"A TTL costs {spread_cell(ttl_cost, digits=1, unit='B')} per key in used_memory "
            "(the baseline's completed 1 KB records weighed before and after an EXPIRE; MEMORY "
            "USAGE does not show it).",
            "",
        ]
    model = _model(rows)
    if model is None:
        verdicts.append(("Redis memory at 30 days: ~3 GB → ~150 MB", NOT_MEASURED, "no retention run"))
        return Section(
            title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=_charts(rows, None, charts_dir)
        )
    parts += _retention_text(rows, model, entry)
    body = []
    for day in SEED_HORIZONS:
        before, after = (
            model.project(SEED_RATES["1M/day"], day, ttl=False),
            model.project(SEED_RATES["1M/day"], day, ttl=True),
        )
        seed_before, seed_after = SEED_1M_TABLE[day]
        extrapolated = " (extrapolated)" if day > model.days_run else ""
        after_cell = fmt_bytes(after)
        if extrapolated and model.fitted_growth is not None:
            fitted = model.project(SEED_RATES["1M/day"], day, ttl=True, fitted=True)
            after_cell += f" ({fmt_bytes(fitted)} at the fitted growth)"
        body.append(
            [
                f"{day} day{'s' if day > 1 else ''}{extrapolated}",
                f"{fmt_bytes(seed_before)} → {fmt_bytes(seed_after)}",
                fmt_bytes(before),
                after_cell,
                f"{fmt_bytes(after)} (same TTLs)",
                _verdict(before, after, (seed_before, seed_after)),
            ]
        )
    parts += [
        "### The seed's 1M jobs/day table (1 KB per job, 5% failures)",
        "",
        "baseline = no TTL, optimized and scripted = 24 h / 7 d TTLs; projected from the retention "
        "run (its measured used_memory curve scaled by 1M / jobs-per-simulated-day; past the run's "
        "last day: the no-TTL slope, and the TTL plateau plus the dead-letter ids' growth).",
        "",
        markdown_table(CLAIM_HEADER, body),
        "",
    ]
    before30, after30 = (
        model.project(SEED_RATES["1M/day"], 30, ttl=False),
        model.project(SEED_RATES["1M/day"], 30, ttl=True),
    )
    verdicts.append(
        (
            "1M/day at 30 days: 30 GB → 1.35 GB",
            _verdict(before30, after30, SEED_1M_TABLE[30]),
            f"projected {fmt_bytes(before30)} → {fmt_bytes(after30)} "
            f"({100 * (1 - after30 / before30):.1f}% saved)",
        )
    )
    b100, a100 = (
        model.project(SEED_RATES["100K/day"], 30, ttl=False),
        model.project(SEED_RATES["100K/day"], 30, ttl=True),
    )
    verdict100 = _verdict(b100, a100, SEED_100K_30D)
    parts += [
        "### The seed's summary row (100K jobs/day, 30 days)",
        "",
        markdown_table(
            CLAIM_HEADER,
            [
                [
                    "Redis memory, 30 days",
                    "~3 GB → ~150 MB",
                    fmt_bytes(b100),
                    fmt_bytes(a100),
                    f"{fmt_bytes(a100)} (same TTLs)",
                    verdict100,
                ]
            ],
        ),
        "",
    ]
    verdicts.append(
        (
            "Redis memory (100K/day, 30 days): ~3 GB → ~150 MB",
            verdict100,
            f"projected {fmt_bytes(b100)} → {fmt_bytes(a100)} "
            f"({100 * (1 - a100 / b100):.1f}% saved vs the claimed 95%)",
        )
    )
    leak = _leak_verdict(rows, model)
    verdicts.append(leak)
    parts += [f"**Dead-letter index:** {leak[2]}.", ""]
    return Section(
        title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=_charts(rows, model, charts_dir)
    )


def _ttl_overhead(rows: list[Row]) -> list[float]:
    """used_memory per key that setting a TTL on existing records added (baseline's pass)."""
    return values_of(
        rows,
        variant="baseline",
        metric="ttl_bytes_per_key",
        params=params(payload="1KB", outcome="completed"),
    )


def _retention_text(rows: list[Row], model: RetentionModel, entry: float | None) -> list[str]:
    day_s = [r.value for r in _retention(rows, "on", "day_s")]
    overrun = max([r.value for ttl in ("on", "off") for r in _retention(rows, ttl, "day_overrun_s")] or [0.0])
    records_on = _by_day(rows, "on", "job_records")
    last = max(records_on) if records_on else 0
    day_jobs = model.jobs_per_day
    return [
        "### Time-compressed retention run",
        "",
        f"{model.days_run} simulated days of {day_s[0]:g} s each"
        + (" (quick mode: fewer than the 30 a full run uses)" if model.days_run < 30 else "")
        + f", {day_jobs} jobs of 1 KB per day, every {FAILURE_EVERY}th dead-lettered; TTLs scaled to "
        f"1 day = {day_s[0]:g} s for completed jobs and 7 days for dead ones; the optimized preset with "
        "TTL on vs off, used_memory sampled at mid-day (after the day's jobs). Expiry is Redis's own (active "
        "cycle + lazy), never a DEL; with TTLs of seconds its lag is a larger share of a day than in "
        f"production. Longest day overrun: {overrun:.2f} s.",
        "",
        f"- No TTL: grows {fmt_bytes(model.off_slope)} per simulated day "
        f"({model.off_slope / day_jobs:,.0f} B per job, linear).",
        f"- TTL on: plateau {fmt_bytes(model.plateau)} after day {SEED_DEAD_TTL_DAYS} "
        f"= {model.plateau / model.off_slope:.2f} days of jobs (the model of 1 day of completed + 7 days "
        f"of 5% dead gives {1 - FAILURE_RATE + FAILURE_RATE * SEED_DEAD_TTL_DAYS:.2f}); "
        f"job records alive at day {last}: {records_on.get(last, 0):,.0f}.",
        f"- TTL on, after day {SEED_DEAD_TTL_DAYS}: the never-trimmed dead-letter ids add "
        f"{fmt_bytes(model.id_growth)} per simulated day; "
        + (
            f"a least-squares fit of the samples gives {fmt_bytes(model.fitted_growth)} per day "
            "(used_memory noise included)."
            if model.fitted_growth is not None
            else "too few days after the dead TTL to fit the curve's own growth."
        ),
        "",
    ]


def _leak_verdict(rows: list[Row], model: RetentionModel) -> tuple[str, str, str]:
    dangling = [r.value for r in _retention(rows, "on", "dead_ids_without_record")]
    length = [v for day, v in _by_day(rows, "on", "dead_list_length").items() if day == model.days_run]
    if not dangling or not length:
        return ("Retention is bounded (no unbounded growth)", NOT_MEASURED, "no dead-letter measurement")
    per_year = SEED_RATES["1M/day"] * FAILURE_RATE * 365 * model.entry_bytes
    leaks = dangling[0] > 0
    why = (
        f"after {model.days_run} days the dead-letter list holds {length[0]:,.0f} ids, "
        f"{dangling[0]:,.0f} of them "
        f"for records that already expired ({model.entry_bytes:,.0f} B per id): the list is never trimmed, "
        f"so at 1M jobs/day and 5% failures it grows {fmt_bytes(per_year)} per year"
        if leaks
        else f"after {model.days_run} days every id in the dead-letter list still has its record"
    )
    return ('TTL bounds memory ("predictable steady state")', PARTLY if leaks else HOLDS, why)


def _charts(rows: list[Row], model: RetentionModel | None, charts_dir: Path) -> list[str]:
    names = []
    if model is not None:
        fig, (ax,) = figure()
        for label, curve in (("TTL off", model.off_curve), ("TTL on", model.on_curve)):
            days = sorted(curve)
            ax.plot(days, [curve[d] / 1e6 for d in days], marker=".", label=label)
        ax.axvline(SEED_DEAD_TTL_DAYS, color="grey", linestyle=":", label="dead TTL (7 days)")
        ax.set(
            xlabel="simulated day",
            ylabel="used_memory growth, MB",
            title=f"Retention run: {model.jobs_per_day} jobs/day, 1 KB, 5% dead",
        )
        ax.legend()
        names.append(save_chart(fig, charts_dir, "memory_retention_curve"))
        fig, (ax,) = figure()
        xs = list(SEED_HORIZONS)
        ax.plot(
            xs,
            [model.project(SEED_RATES["1M/day"], d, ttl=False) / 1e9 for d in xs],
            marker="o",
            label="no TTL (measured)",
        )
        ax.plot(
            xs,
            [model.project(SEED_RATES["1M/day"], d, ttl=True) / 1e9 for d in xs],
            marker="o",
            label="TTL (measured)",
        )
        ax.plot(xs, [SEED_1M_TABLE[d][0] / 1e9 for d in xs], "k:", marker="x", label="seed: before")
        ax.plot(xs, [SEED_1M_TABLE[d][1] / 1e9 for d in xs], "k--", marker="x", label="seed: after")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="days",
            ylabel="Redis memory, GB",
            title="1M jobs/day, 1 KB, 5% failures",
        )
        ax.legend()
        names.append(save_chart(fig, charts_dir, "memory_projection_1m_per_day"))
    fig, (ax,) = figure()
    labels: list[str] = []
    width = 0.25
    for i, v in enumerate(PRESET_COLUMNS):
        ys = []
        labels = []
        for payload in PAYLOADS:
            for outcome in OUTCOMES:
                ys.append(
                    median_of(
                        rows,
                        variant=v,
                        metric="bytes_per_job",
                        params=params(payload=payload, outcome=outcome),
                    )
                    or 0.0
                )
                labels.append(f"{payload}\n{outcome}")
        ax.bar([x + i * width for x in range(len(ys))], ys, width=width, label=v)
    ax.set_xticks([x + width for x in range(len(labels))], labels)
    ax.set(ylabel="used_memory per job, bytes (median)", title="Bytes per job in Redis")
    ax.legend()
    names.append(save_chart(fig, charts_dir, "memory_bytes_per_job"))
    return names
