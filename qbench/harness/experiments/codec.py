"""Experiment 7: protobuf vs JSON job codec: encode + decode time and encoded size."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qbench.harness.experiments import RunContext, Section
from qbench.harness.results.render import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTLY,
    Region,
    count_cell,
    figure,
    interval_verdict,
    markdown_table,
    median_of,
    ratio_text,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import RatioInterval, Spread
from qbench.harness.timing.interleave import METRIC_OF, Plan, comparison_rows, interleave, ratio_from_rows
from qbench.harness.timing.placement import choose_cpu, pinned
from qbench.harness.timing.sides import in_process_arm
from qbench.queue_impl.codec import CODECS, Codec
from qbench.queue_impl.config import CodecName
from qbench.queue_impl.job import Job, Priority, Status

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
CPU_METRIC = METRIC_OF["cpu"]
LEGACY_METRIC = "ns_per_op"


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


CODEC_PLAN = Plan(warmup_rounds=2, min_rounds=12, max_rounds=40, max_seconds=8.0, precision=0.02)
"""Per payload size: json and protobuf interleaved until the speed-up is known to +-2%
(or 40 rounds, or 8 s; quick mode halves the budget)."""
ROUND_S = {"small": 0.01, "medium": 0.01, "large": 0.04}
"""Target seconds of one side's round (JSON's): many operations for the small payloads,
one or two for the 1 MB one."""


def run(ctx: RunContext) -> list[Row]:
    rows: list[Row] = []
    jobs = {size: sample_job(size) for size in SIZES}
    for repeat in range(ctx.repeats):  # the sizes are exact: every repeat must agree
        for size, job in jobs.items():
            for name in CODEC_NAMES:
                codec = CODECS[name]
                encoded = codec.encode(job)
                if codec.decode(encoded) != job:
                    raise RuntimeError(f"{name} codec does not round-trip the {size} job")
                p = _codec_params(name, size)
                rows += [
                    Row(NAME, "", p, "encoded_bytes", len(encoded), "bytes", repeat),
                    Row(NAME, "", p, "payload_bytes", len(job.payload), "bytes", repeat),
                ]
    plan = CODEC_PLAN.scaled(0.5) if ctx.quick else CODEC_PLAN
    with pinned(choose_cpu()):
        for size, job in jobs.items():
            ops = _ops_per_round(CODECS["json"], job, ROUND_S[size])
            arms = [in_process_arm(name, _cycle(CODECS[name], job), ops) for name in CODEC_NAMES]
            result = interleave(arms[0], arms[1], plan=plan)
            rows += comparison_rows(
                result,
                experiment=NAME,
                variant_a="",
                variant_b="",
                params_a=_codec_params("json", size),
                params_b=_codec_params("protobuf", size),
                measures=("cpu", "wall"),
            )
            speedup = _speedup(rows, size)
            ctx.progress(
                f"{size}: {len(result.rounds)} interleaved rounds of {ops} encode+decode, "
                f"stopped by {result.stopped_by}: {ratio_text(speedup) if speedup else '-'}"
            )
    return rows


def _cycle(codec: Codec, job: Job) -> Callable[[], object]:
    def encode_decode() -> object:
        return codec.decode(codec.encode(job))

    return encode_decode


def _ops_per_round(codec: Codec, job: Job, seconds: float) -> int:
    """Operations that take about `seconds` (measured on a few calls of `codec`)."""
    for _ in range(3):
        codec.decode(codec.encode(job))
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < min(seconds, 0.05) or calls < 2:
        codec.decode(codec.encode(job))
        calls += 1
    single = (time.perf_counter() - t0) / calls
    return max(1, round(seconds / single))


def _codec_params(codec: CodecName, size: str) -> str:
    """A codec measured on its own is no queue variant: the codec goes in params, variant ''."""
    return params(codec=codec, size=size)


def _values(rows: list[Row], codec: CodecName, size: str, metric: str) -> list[float]:
    """Values by repeat of one codec's metric at one job size."""
    return values_of(rows, variant="", metric=metric, params=_codec_params(codec, size))


def _median(rows: list[Row], codec: CodecName, size: str, metric: str) -> float | None:
    return median_of(rows, variant="", metric=metric, params=_codec_params(codec, size))


def _time_metric(rows: list[Row]) -> str:
    """CPU per operation from interleaved rounds; runs saved before them had `ns_per_op`."""
    return CPU_METRIC if any(r.metric == CPU_METRIC for r in rows) else LEGACY_METRIC


def _speedup(rows: list[Row], size: str) -> RatioInterval | None:
    """JSON time / protobuf time with its interval, from rounds paired by repeat."""
    return ratio_from_rows(
        rows,
        metric=_time_metric(rows),
        a=("", _codec_params("protobuf", size)),
        b=("", _codec_params("json", size)),
    )


# -- render --------------------------------------------------------------------------------
def speed_regions(claimed: float) -> list[Region]:
    """Holds within SPEED_TOLERANCE of the claim; partly when faster but not by the claim
    (or by far more); does not hold at 1x or below."""
    low, high = claimed * (1 - SPEED_TOLERANCE), claimed * (1 + SPEED_TOLERANCE)
    return [
        (0.0, 1.0, DOES_NOT_HOLD),
        (1.0, low, PARTLY),
        (low, high, HOLDS),
        (high, math.inf, PARTLY),
    ]


def _speed_verdict(speedup: RatioInterval, claimed: float) -> str:
    return interval_verdict(speedup.lo, speedup.hi, speed_regions(claimed))


def _size_verdict(measured: float, claimed: float) -> str:
    if abs(measured - claimed) <= SIZE_TOLERANCE:
        return HOLDS
    return PARTLY if measured > 0 else DOES_NOT_HOLD


def render(rows: list[Row], charts_dir: Path) -> Section:
    verdicts: list[tuple[str, str, str]] = []
    header = ["Claim", "Claimed", "json", "protobuf", "measured", "Verdict"]
    body = []
    metric = _time_metric(rows)
    for size in SIZES:
        json_ns = _median(rows, "json", size, metric)
        pb_ns = _median(rows, "protobuf", size, metric)
        speedup = _speedup(rows, size)
        if json_ns is None or pb_ns is None or speedup is None:
            continue
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
                spread_cell(_values(rows, "json", size, metric), digits=0, unit="ns"),
                spread_cell(_values(rows, "protobuf", size, metric), digits=0, unit="ns"),
                f"{ratio_text(speedup)} faster",
                verdict,
            ]
        )
        if claimed:
            verdicts.append(
                (
                    f"protobuf {claimed}x faster than JSON ({size})",
                    verdict,
                    f"measured {ratio_text(speedup)} ({_ns_text(pb_ns)} vs {_ns_text(json_ns)} "
                    f"encode+decode CPU, Python); holds within {SPEED_TOLERANCE:.0%} of the claim "
                    f"({claimed * (1 - SPEED_TOLERANCE):.2f}..{claimed * (1 + SPEED_TOLERANCE):.2f}x), "
                    "partly when faster but outside it",
                )
            )
    for size in SIZES:
        json_b = _median(rows, "json", size, "encoded_bytes")
        pb_b = _median(rows, "protobuf", size, "encoded_bytes")
        if json_b is None or pb_b is None:
            continue
        smaller = 1 - pb_b / json_b
        verdict = _size_verdict(smaller, SEED_SMALLER[size])
        body.append(
            [
                f"{size}: encoded size",
                f"{SEED_SMALLER[size]:.0%} smaller",
                count_cell(_values(rows, "json", size, "encoded_bytes"), unit="B"),
                count_cell(_values(rows, "protobuf", size, "encoded_bytes"), unit="B"),
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
        "Every preset stores jobs as protobuf (the `codec` toggle); here the two codecs are measured "
        "on their own, outside any queue (rows: empty variant, `codec=` in params). A job is a "
        f"completed record with a JSON-text payload of {sizes_text}; the JSON codec is the proto3 "
        "JSON mapping (bytes as base64, 64-bit integers as strings). Times are this Python "
        "process's client CPU per encode+decode (protobuf's C++ extension vs the stdlib json), "
        "measured in interleaved rounds (json and protobuf alternate in random order, garbage "
        "collector off, pinned to one CPU) until the speed-up is known to about +-2%; cells are "
        "median (min..max) over the rounds, and the speed-up is the Hodges-Lehmann estimate of "
        "the paired rounds with its 95% interval. A verdict is given only when the whole interval "
        f"lies inside one verdict's range, else it reads *{INCONCLUSIVE}*. Sizes are exact. The "
        "chart shows the measured speed-up (estimate and interval) beside the seed's claim.",
        "",
        markdown_table(header, body),
        "",
    ]
    charts = _charts(rows, charts_dir) if body else []
    return Section(title=TITLE, markdown="\n".join(parts), verdicts=verdicts, charts=charts)


def _ratios(rows: list[Row], size: str, metric: str) -> list[float]:
    """Per repeat (round): JSON's figure over protobuf's (speed-up for time, size ratio for bytes)."""
    p_json, p_pb = _codec_params("json", size), _codec_params("protobuf", size)
    json_by = {r.repeat: r.value for r in rows if r.metric == metric and r.params == p_json and not r.variant}
    pb_by = {r.repeat: r.value for r in rows if r.metric == metric and r.params == p_pb and not r.variant}
    return [json_by[k] / pb_by[k] for k in sorted(json_by.keys() & pb_by.keys()) if pb_by[k]]


def _ns_text(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def _charts(rows: list[Row], charts_dir: Path) -> list[str]:
    """Measured ratios against the seed's claimed ones, payload size on the x axis."""
    metric = _time_metric(rows)
    sizes = [s for s in SIZES if _speedup(rows, s) is not None and _ratios(rows, s, "encoded_bytes")]
    if not sizes:
        return []
    xs = [_median(rows, "protobuf", s, "payload_bytes") or float(SIZES[s]) for s in sizes]
    x_of = dict(zip(sizes, xs, strict=True))
    fig, (ax_speed, ax_size) = figure(2)

    def measured(ax: Any, spreads: list[Spread], scale: float, fmt: str, label: str) -> None:
        mid = [scale * s.median for s in spreads]
        err = [
            [scale * (s.median - s.min) for s in spreads],
            [scale * (s.max - s.median) for s in spreads],
        ]
        ax.errorbar(xs, mid, yerr=err, marker="o", capsize=4, label=label)
        for x, y in zip(xs, mid, strict=True):
            ax.annotate(
                fmt.format(y),
                (x, y),
                textcoords="offset points",
                xytext=(-8, 0),
                ha="right",
                va="center",
                fontsize=8,
            )

    def claimed(ax: Any, claims: dict[str, float], scale: float, fmt: str) -> None:
        shown = [(x_of[s], scale * c) for s, c in claims.items() if s in x_of]
        ax.plot(
            [x for x, _ in shown],
            [y for _, y in shown],
            "kx",
            markersize=10,
            markeredgewidth=2,
            linestyle="none",
            label="seed's claim",
        )
        for x, y in shown:
            ax.annotate(
                fmt.format(y),
                (x, y),
                textcoords="offset points",
                xytext=(8, 0),
                ha="left",
                va="center",
                fontsize=8,
            )

    speedups = [_speedup(rows, s) for s in sizes]
    measured(
        ax_speed,
        [Spread(ci.lo, ci.estimate, ci.hi, ci.n) for ci in speedups if ci is not None],
        1.0,
        "{:.2f}x",
        f"measured (95% interval, {metric})",
    )
    claimed(ax_speed, SEED_SPEEDUP, 1.0, "{:.1f}x")
    ax_speed.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax_speed.set(
        yscale="log",
        ylabel="JSON time / protobuf time (encode+decode, log)",
        title="protobuf speed-up vs JSON",
    )
    top = max([*ax_speed.get_ylim(), 5.0])
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= top]
    ax_speed.set_yticks(ticks, [f"{t}x" for t in ticks])
    ax_speed.minorticks_off()
    smaller = [Spread.of([1 - 1 / r for r in _ratios(rows, s, "encoded_bytes")]) for s in sizes]
    measured(ax_size, smaller, 100.0, "{:.0f}%", "measured (exact)")
    claimed(ax_size, SEED_SMALLER, 100.0, "{:.0f}%")
    ax_size.set(ylabel="protobuf size saving vs JSON, %", title="protobuf size saving vs JSON", ylim=(0, 100))
    for ax in (ax_speed, ax_size):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{_bytes_text(x)}\n{s}" for s, x in zip(sizes, xs, strict=True)])
        ax.minorticks_off()
        ax.set_xlabel("payload size")
        ax.set_xlim(min(xs) / 3, max(xs) * 3)
        ax.legend(fontsize=8)
    return [save_chart(fig, charts_dir, "codec")]


def _bytes_text(n: float) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"
