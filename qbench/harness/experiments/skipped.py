"""Experiment 9: the seed's "intentionally skipped" suggestions, measured: MessagePack (and
orjson), binary job ids, payload compression, job-object pooling and result caching."""

from __future__ import annotations

import cProfile
import pstats
import random
from collections.abc import Callable
from pathlib import Path

import redis

from qbench.harness.experiments import RunContext, Section
from qbench.harness.experiments.codec import sample_job, speed_regions
from qbench.harness.results.render import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    interval_verdict,
    markdown_table,
    median_of,
    ratio_text,
)
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import RatioInterval
from qbench.harness.timing.interleave import METRIC_OF, Plan, comparison_rows, interleave, ratio_from_rows
from qbench.harness.timing.placement import choose_cpu, pinned
from qbench.harness.timing.sides import in_process_arm
from qbench.queue_impl.codec import CODECS, Codec, codec_for
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import RedisQueue, delete_namespace

NAME = "skipped"
TITLE = "9. The seed's skipped suggestions, measured"

CPU_METRIC = METRIC_OF["cpu"]
PLAN = Plan(warmup_rounds=2, min_rounds=10, max_rounds=24, max_seconds=4.0, precision=0.03)
"""Per pair: interleaved until the ratio is known to +-3% (or 24 rounds, or 4 s; quick halves)."""
ROUND_S = 0.01

CODEC_SIZES = ("small", "medium")
COMPRESS_SIZES = ("medium", "large")
COMPRESSIONS = ("off", "zstd", "lz4")
ID_JOBS = 2000
"""Jobs whose ids are stored for the id-size measurement (list entry + hash field + record)."""
ID_RECORD_BYTES = 60
"""Bytes of a job record besides its id (a no-op job's protobuf record is about this)."""
ID_FORMS = {"text": 32, "binary": 16}
"""The queue's ids are uuid4().hex (32 characters; the seed's Go UUIDs print 36); binary is
the 16 raw bytes."""
PROFILE_JOBS = 600
POOLING_THRESHOLD = 0.05
"""Job pooling could save at most the CPU share Job construction takes: below 5% of a job
cycle's client CPU, the seed's "marginal benefit" holds."""
ID_THRESHOLD = 0.10
"""Binary ids are "low reward" when they save less than 10% of a job's memory."""


def run(ctx: RunContext) -> list[Row]:
    rows: list[Row] = []
    plan = PLAN.scaled(0.5) if ctx.quick else PLAN
    for size in CODEC_SIZES:
        job = sample_job(size)
        for name, codec in CODECS.items():
            rows.append(
                Row(NAME, "", params(codec=name, size=size), "encoded_bytes", len(codec.encode(job)), "bytes")
            )
    for size in COMPRESS_SIZES:
        job = sample_job(size)
        for mode in COMPRESSIONS:
            codec = _compressing(mode)
            rows.append(
                Row(
                    NAME,
                    "",
                    params(compress=mode, size=size),
                    "encoded_bytes",
                    len(codec.encode(job)),
                    "bytes",
                )
            )
    rows += measure_id_memory(ctx.url)
    with pinned(choose_cpu()):
        small = sample_job("small")
        for name in ("msgpack", "orjson"):
            base, other = params(codec="protobuf", size="small"), params(codec=name, size="small")
            rows += _compare(NAME, CODECS["protobuf"], CODECS[name], small, plan, base, other)
        medium = sample_job("medium")
        for mode in ("zstd", "lz4"):
            base, other = params(compress="off", size="medium"), params(compress=mode, size="medium")
            rows += _compare(NAME, _compressing("off"), _compressing(mode), medium, plan, base, other)
        text, binary = _id_round_trip("text"), _id_round_trip("binary")
        result = interleave(
            in_process_arm("text", text, 2000), in_process_arm("binary", binary, 2000), plan=plan
        )
        rows += comparison_rows(
            result, experiment=NAME, variant_a="", variant_b="", params_a=params(ids="text"),
            params_b=params(ids="binary"), measures=("cpu",),
        )  # fmt: skip
    rows += profile_job_cycle(ctx.url, PROFILE_JOBS // (3 if ctx.quick else 1))
    ctx.progress("skipped suggestions: codecs, ids, compression and the job-cycle profile measured")
    return rows


def _compressing(mode: str) -> Codec:
    return codec_for(PRESETS["scripted"].with_overrides(compress=mode))


def _compare(
    experiment: str, a: Codec, b: Codec, job: Job, plan: Plan, params_a: str, params_b: str
) -> list[Row]:
    def cycle(codec: Codec) -> Callable[[], object]:
        return lambda: codec.decode(codec.encode(job))

    ops = _ops_for(cycle(a))
    result = interleave(in_process_arm("a", cycle(a), ops), in_process_arm("b", cycle(b), ops), plan=plan)
    return comparison_rows(
        result, experiment=experiment, variant_a="", variant_b="", params_a=params_a, params_b=params_b,
        measures=("cpu",),
    )  # fmt: skip


def _ops_for(action: Callable[[], object]) -> int:
    import time

    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < 0.02 or calls < 2:
        action()
        calls += 1
    return max(1, round(ROUND_S / ((time.perf_counter() - t0) / calls)))


def _id_round_trip(form: str) -> Callable[[], object]:
    """What an id costs at the Redis boundary: to the wire and back."""
    text = "5f0c6a0e9b7d4c1fa2e3b4c5d6e7f809"
    raw = bytes.fromhex(text)
    if form == "text":
        return lambda: text.encode().decode()
    return lambda: bytes.fromhex(text).hex() if raw else None


def sample_ids(form: str, n: int) -> list[bytes]:
    """`n` ids as the queue would store them, from a fixed seed (the same ids every run)."""
    rng = random.Random(20)
    raw = [rng.randbytes(16) for _ in range(n)]
    return [r.hex().encode() if form == "text" else r for r in raw]


def measure_id_memory(url: str, n: int = ID_JOBS) -> list[Row]:
    """Per job and id form: MEMORY USAGE (SAMPLES 0, exact per build) of the structures the
    scripted preset keeps an id in (a queue list and the records hash, record included), and
    the used_memory delta. Keys live under a qbench namespace of their own, deleted after."""
    client = redis.Redis.from_url(url)
    rows: list[Row] = []
    try:
        for form, length in ID_FORMS.items():
            prefix = f"qbench:{{skipped-ids-{form}}}:"
            delete_namespace(client, prefix)
            ids = sample_ids(form, n)
            before = int(client.info("memory")["used_memory"])
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hset(prefix + "jobs", job_id, job_id + b"r" * ID_RECORD_BYTES)
                pipe.lpush(prefix + "queue:normal", job_id)
            pipe.execute()
            after = int(client.info("memory")["used_memory"])
            usage = sum(
                int(client.memory_usage(prefix + k, samples=0) or 0) for k in ("jobs", "queue:normal")
            )
            p = params(id_bytes=length, ids=form)
            rows += [
                Row(NAME, "", p, "memory_usage_bytes_per_job", usage / n, "bytes"),
                Row(NAME, "", p, "used_memory_bytes_per_job", (after - before) / n, "bytes"),
            ]
            delete_namespace(client, prefix)
    finally:
        client.close()
    return rows


def profile_job_cycle(url: str, jobs: int) -> list[Row]:
    """cProfile of `jobs` enqueue + dequeue + complete cycles of the scripted preset (one
    thread, in this process): the share of client CPU in Job construction (what pooling
    could save) and the get_job calls (what a result cache would serve)."""
    variant = PRESETS["scripted"]
    client = make_client(url, variant)
    queue = RedisQueue(client, variant, namespace="skipped-profile", consumer="profiler")
    profiler = cProfile.Profile()
    try:
        queue.cleanup()
        profiler.enable()
        for _ in range(jobs):
            queue.enqueue(Job(type="noop"))
            job = queue.dequeue(wait=False)
            if job is not None:
                queue.complete(job)
        profiler.disable()
    finally:
        queue.cleanup()
        close_client(client)
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    construction = get_job_calls = 0.0
    for (filename, _line, function), (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.endswith("queue_impl/job.py") and function in (
            "__init__",
            "__post_init__",
            "<lambda>",
            "parse",
        ):
            construction += tottime
        if filename.endswith("queue_impl/queue.py") and function == "get_job":
            get_job_calls += calls
    return [
        Row(NAME, "scripted", params(jobs=jobs), "job_construction_cpu_share", construction / total, "ratio"),
        Row(NAME, "scripted", params(jobs=jobs), "get_job_calls", get_job_calls, "calls"),
    ]


# -- render --------------------------------------------------------------------------------
def _ratio(rows: list[Row], params_a: str, params_b: str) -> RatioInterval | None:
    """B's CPU over A's (below 1: B is faster)."""
    return ratio_from_rows(rows, metric=CPU_METRIC, a=("", params_a), b=("", params_b))


def _value(rows: list[Row], metric: str, p: str, variant: str = "") -> float | None:
    return median_of(rows, variant=variant, metric=metric, params=p)


def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    body: list[list[str]] = []

    def add(suggestion: str, reason: str, figure: str, verdict: str) -> None:
        body.append([suggestion, reason, figure, verdict])
        verdicts.append((f"skipped: {suggestion} ({reason})", verdict, figure))

    pb = {s: _value(rows, "encoded_bytes", params(codec="protobuf", size=s)) for s in CODEC_SIZES}
    for name in ("msgpack", "orjson"):
        ci = _ratio(rows, params(codec="protobuf", size="small"), params(codec=name, size="small"))
        record = _value(rows, "encoded_bytes", params(codec=name, size="small"))
        reason = (
            "conflicts with protobuf, which already provides 4.5x"
            if name == "msgpack"
            else "(JSON) protobuf is 4.5x faster"
        )
        if ci is None or record is None or pb["small"] is None:
            add(f"codec={name}", reason, "not measured", NOT_MEASURED)
            continue
        speed = 1 / ci.estimate
        if name == "msgpack":  # the reason holds only if MessagePack is the slower one
            regions = [(0.0, 1.0, HOLDS), (1.0, float("inf"), DOES_NOT_HOLD)]
            verdict = interval_verdict(1 / ci.hi, 1 / ci.lo, regions)
        else:  # protobuf 4.5x faster than JSON, within the codec experiment's tolerance
            verdict = interval_verdict(ci.lo, ci.hi, speed_regions(4.5))
        add(
            f"codec={name}",
            reason,
            f"{name} encode+decode is {speed:.2f}x protobuf's speed (CPU ratio {ratio_text(ci)}); "
            f"record {record:,.0f} B vs protobuf's {pb['small']:,.0f} B (small job)",
            verdict,
        )
    text = _value(rows, "memory_usage_bytes_per_job", params(id_bytes=32, ids="text"))
    binary = _value(rows, "memory_usage_bytes_per_job", params(id_bytes=16, ids="binary"))
    id_ci = _ratio(rows, params(ids="text"), params(ids="binary"))
    if text is None or binary is None:
        add("binary job ids", "high risk, low reward: UUIDs already compact", "not measured", NOT_MEASURED)
    else:
        saved = (text - binary) / text
        id_cpu = f"; id to wire and back costs {ratio_text(id_ci)} the text form's CPU" if id_ci else ""
        add(
            "binary job ids",
            "high risk, low reward: UUIDs already compact",
            f"{text:,.1f} -> {binary:,.1f} B per job in the queue list and records hash "
            f"(MEMORY USAGE, {saved:.1%} less){id_cpu}; redis-cli shows a binary id as "
            f"{redis_cli_repr(sample_ids('binary', 1)[0])}",
            HOLDS if saved < ID_THRESHOLD else PARTLY,
        )
    for size in COMPRESS_SIZES:
        off = _value(rows, "encoded_bytes", params(compress="off", size=size))
        packed = {m: _value(rows, "encoded_bytes", params(compress=m, size=size)) for m in ("zstd", "lz4")}
        if off is None or None in packed.values():
            continue
        cpu = []
        for mode in ("zstd", "lz4"):
            ci = _ratio(rows, params(compress="off", size="medium"), params(compress=mode, size="medium"))
            if ci is not None and size == "medium":
                cpu.append(f"{mode} {ratio_text(ci)} the CPU of an uncompressed encode+decode")
        figure = ", ".join(f"{m} {v:,.0f} B" for m, v in packed.items() if v is not None)
        best = min(v for v in packed.values() if v is not None)
        add(
            f"compress payloads ({size})",
            "(not in the seed's table: issue 20)",
            f"record {off:,.0f} B -> {figure} ({1 - best / off:.0%} less; the codec experiment's "
            "repetitive JSON-text payload, a best case)" + (f"; {'; '.join(cpu)}" if cpu else ""),
            HOLDS if best < off / 2 else PARTLY,
        )
    share = next((r.value for r in rows if r.metric == "job_construction_cpu_share"), None)
    calls = next((r.value for r in rows if r.metric == "get_job_calls"), None)
    if share is not None:
        add(
            "job-object pooling",
            "marginal benefit",
            f"the profile shows no place: Job construction is {share:.1%} of the client CPU of a "
            "scripted enqueue + dequeue + complete cycle (cProfile), the most pooling could save",
            HOLDS if share < POOLING_THRESHOLD else PARTLY,
        )
    if calls is not None:
        add(
            "result caching",
            "premature optimization: no GetJob() hotspot",
            f"the profile shows no place: the job cycle calls get_job {calls:.0f} times; "
            "a worker gets its job from the claim itself",
            HOLDS if calls == 0 else PARTLY,
        )
    parts = [
        "The seed's PR lists suggestions it skipped, with reasons. Each is measured here: codecs "
        "and compression on their own (CPU of encode+decode in interleaved rounds, pinned, the "
        "ratio with its 95% interval; sizes exact), binary ids as the Redis memory of the "
        f"structures the scripted preset keeps an id in ({ID_JOBS:,} ids in a list and a records "
        "hash; MEMORY USAGE is exact per server build), pooling and caching from a cProfile of "
        "the scripted job cycle. codec, compress and durability are queue toggles; binary ids "
        "are measured on the structures only (the queue keeps text ids: job ids are also user "
        "input, and every tool that shows them would show escapes).",
        "",
        markdown_table(["Suggestion", "Seed's reason", "Measured", "Verdict"], body),
        "",
    ]
    return Section(title=TITLE, markdown="\n".join(parts), verdicts=verdicts)


def redis_cli_repr(value: bytes) -> str:
    """How redis-cli prints a bulk string: quoted, non-printable bytes as \\xNN."""
    named = {b"\n": "\\n", b"\r": "\\r", b"\t": "\\t", b"\a": "\\a", b"\b": "\\b"}
    out = []
    for byte in value:
        ch = chr(byte)
        if bytes([byte]) in named:
            out.append(named[bytes([byte])])
        elif ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'
