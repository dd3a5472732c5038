"""Experiment 7: protobuf vs JSON job codec: encode + decode time and encoded size."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.experiments import RunContext, Section
from harness.results.render import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    count_cell,
    figure,
    markdown_table,
    median_of,
    save_chart,
    spread_cell,
    values_of,
)
from harness.results.rows import Row, params
from queue_impl.codec import CODECS, Codec
from queue_impl.config import CodecName
from queue_impl.job import Job, Priority, Status

NAME = "codec"
TITLE = "7. Codec: protobuf vs JSON"

CODEC_NAMES: tuple[CodecName, ...] = ("json", "protobuf")
SIZES = {"small": 100, "medium": 10_000, "large": 1_000_000}
"""Payload bytes per job size. The seed does not define its sizes; its large figure (3.45 ms
for protobuf in Go) suggests a payload near 1 MB, so large is 1 MB here."""
SEED_SPEEDUP = {"small": 4.5, "large": 2.2}
"""protobuf vs JSON encode+decode: 832 ns vs 3,730 ns small, 3.45 ms vs 7.76 ms large."""
SEED_SPEED_NS = {"small": (3730.0, 832.0), "large": (7.76e6, 3.45e6)}
SEED_SMALLER = {"small": 0.31, "medium": 0.29, "large": 0.62}
SPEED_TOLERANCE = 0.25
"""A measured speed-up within 25% of the seed's counts as matching."""
SIZE_TOLERANCE = 0.10
"""A size reduction within 10 percentage points of the seed's counts as matching."""
BATCHES = 5


def sample_job(size: str) -> Job:
    """A completed job with fixed id and timestamps (so its encoded size repeats exactly) and a
    JSON-text payload of SIZES[size] bytes, as job arguments usually are."""
    target = SIZES[size]
    item = json.dumps(
        {"user_id": 100042, "action": "resize", "width": 640, "height": 480}, separators=(",", ":")
    )
    body = ",".join([item] * (target // (len(item) + 1) + 1))
    payload = f"[{body}]".encode()[: target - 1] + b"]"
    return Job(
        id="5f0c6a0e9b7d4c1fa2e3b4c5d6e7f809",
        type="image.resize",
        payload=payload[:target],
        priority=Priority.HIGH,
        attempts=1,
        max_retries=3,
        created_at_us=1_700_000_000_000_000,
        started_at_us=1_700_000_000_100_000,
        finished_at_us=1_700_000_000_200_000,
        status=Status.COMPLETED,
    )


def run(ctx: RunContext) -> list[Row]:
    budget_s = 0.05 if ctx.quick else 0.3
    rows: list[Row] = []
    for repeat in range(ctx.repeats):
        for size in SIZES:
            job = sample_job(size)
            for name in CODEC_NAMES:
                codec = CODECS[name]
                encoded = codec.encode(job)
                if codec.decode(encoded) != job:
                    raise RuntimeError(f"{name} codec does not round-trip the {size} job")
                encode_ns, decode_ns = _time_codec(codec, job, encoded, budget_s)
                p = params(size=size)
                rows += [
                    Row(NAME, name, p, "encoded_bytes", len(encoded), "bytes", repeat),
                    Row(NAME, name, p, "payload_bytes", len(job.payload), "bytes", repeat),
                    Row(NAME, name, p, "encode_ns", encode_ns, "ns", repeat),
                    Row(NAME, name, p, "decode_ns", decode_ns, "ns", repeat),
                    Row(NAME, name, p, "ns_per_op", encode_ns + decode_ns, "ns", repeat),
                ]
        ctx.progress(f"repeat {repeat + 1}/{ctx.repeats}: {', '.join(SIZES)} x {', '.join(CODEC_NAMES)}")
    return rows


def _time_codec(codec: Codec, job: Job, encoded: bytes, budget_s: float) -> tuple[float, float]:
    """Nanoseconds per encode and per decode: the fastest of BATCHES batches each."""
    t0 = time.perf_counter()
    codec.decode(codec.encode(job))
    single = max(time.perf_counter() - t0, 1e-7)
    per_batch = max(int(budget_s / BATCHES / single), 1)

    def best(action: object) -> float:
        assert callable(action)
        fastest = float("inf")
        for _ in range(BATCHES):
            start = time.perf_counter_ns()
            for _ in range(per_batch):
                action()
            fastest = min(fastest, (time.perf_counter_ns() - start) / per_batch)
        return fastest

    return best(lambda: codec.encode(job)), best(lambda: codec.decode(encoded))


# -- render --------------------------------------------------------------------------------
def _speed_verdict(measured: float, claimed: float) -> str:
    if abs(measured / claimed - 1) <= SPEED_TOLERANCE:
        return HOLDS
    return PARTLY if measured > 1 else DOES_NOT_HOLD


def _size_verdict(measured: float, claimed: float) -> str:
    if abs(measured - claimed) <= SIZE_TOLERANCE:
        return HOLDS
    return PARTLY if measured > 0 else DOES_NOT_HOLD


def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    header = ["Claim", "Claimed", "json", "protobuf", "measured", "Verdict"]
    body = []
    for size in SIZES:
        p = params(size=size)
        json_ns = median_of(rows, variant="json", metric="ns_per_op", params=p)
        pb_ns = median_of(rows, variant="protobuf", metric="ns_per_op", params=p)
        if json_ns is None or pb_ns is None:
            continue
        speedup = json_ns / pb_ns
        claimed = SEED_SPEEDUP.get(size)
        verdict = _speed_verdict(speedup, claimed) if claimed else "-"
        claimed_text = (
            f"{claimed}x ({_ns_text(SEED_SPEED_NS[size][1])} vs {_ns_text(SEED_SPEED_NS[size][0])})"
            if claimed
            else "-"
        )
        body.append(
            [
                f"{size}: encode+decode",
                claimed_text,
                spread_cell(
                    values_of(rows, variant="json", metric="ns_per_op", params=p), digits=0, unit="ns"
                ),
                spread_cell(
                    values_of(rows, variant="protobuf", metric="ns_per_op", params=p), digits=0, unit="ns"
                ),
                f"{speedup:.2f}x faster",
                verdict,
            ]
        )
        if claimed:
            verdicts.append(
                (
                    f"protobuf {claimed}x faster than JSON ({size})",
                    verdict,
                    f"measured {speedup:.2f}x ({_ns_text(pb_ns)} vs {_ns_text(json_ns)} "
                    "encode+decode, Python)",
                )
            )
    for size in SIZES:
        p = params(size=size)
        json_b = median_of(rows, variant="json", metric="encoded_bytes", params=p)
        pb_b = median_of(rows, variant="protobuf", metric="encoded_bytes", params=p)
        if json_b is None or pb_b is None:
            continue
        smaller = 1 - pb_b / json_b
        verdict = _size_verdict(smaller, SEED_SMALLER[size])
        body.append(
            [
                f"{size}: encoded size",
                f"{SEED_SMALLER[size]:.0%} smaller",
                count_cell(values_of(rows, variant="json", metric="encoded_bytes", params=p), unit="B"),
                count_cell(values_of(rows, variant="protobuf", metric="encoded_bytes", params=p), unit="B"),
                f"{smaller:.1%} smaller",
                verdict,
            ]
        )
        verdicts.append(
            (
                f"protobuf {SEED_SMALLER[size]:.0%} smaller ({size})",
                verdict,
                f"measured {smaller:.1%} smaller ({pb_b:,.0f} vs {json_b:,.0f} B)",
            )
        )
    if not body:
        verdicts.append(("protobuf faster and smaller than JSON", NOT_MEASURED, "no rows"))
    sizes_text = ", ".join(f"{k} = {v:,} B" for k, v in SIZES.items())
    parts = [
        "Every preset stores jobs as protobuf (the `codec` toggle), so the columns here are the two "
        "codecs, not the presets. A job is a completed record with a JSON-text payload of "
        f"{sizes_text}; the JSON codec is the proto3 JSON mapping (bytes as base64, 64-bit integers "
        "as strings). Times are this Python process's (protobuf's C++ extension vs the stdlib json), "
        "the fastest of 5 batches per repeat, median (min..max) over repeats; sizes are exact.",
        "",
        markdown_table(header, body),
        "",
    ]
    return Section(
        title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=_charts(rows, charts_dir)
    )


def _ns_text(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def _charts(rows: list[Row], charts_dir: Path) -> list[str]:
    fig, axes = figure(2)
    sizes = list(SIZES)
    width = 0.4
    for ax, metric, ylabel in (
        (axes[0], "ns_per_op", "encode+decode, ns (median, log)"),
        (axes[1], "encoded_bytes", "encoded bytes (log)"),
    ):
        for i, name in enumerate(CODEC_NAMES):
            ys = [median_of(rows, variant=name, metric=metric, params=params(size=s)) or 0.0 for s in sizes]
            ax.bar([x + i * width for x in range(len(sizes))], ys, width=width, label=name)
        ax.set_xticks([x + width / 2 for x in range(len(sizes))], sizes)
        ax.set(yscale="log", ylabel=ylabel, title=f"Codec: {metric}")
        ax.legend()
    return [save_chart(fig, charts_dir, "codec")]
