"""The worker experiments in a tiny mode: their deterministic parts (commands, job counts, errors)."""

from __future__ import annotations

import dataclasses
import re
import struct
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import pytest

from qbench.harness.experiments import (
    RunContext,
    Section,
    idle_cost,
    pickup_latency,
    pool_scaling,
    throughput,
)
from qbench.harness.experiments.pool_runs import IDLE_COMMANDS_PER_CYCLE, wait_cycle_s
from qbench.harness.infra.redis_server import ProvisionedRedis
from qbench.harness.infra.telemetry import Telemetry
from qbench.harness.results.render import CLAIM_HEADER, NOT_MEASURED, PRESET_COLUMNS, VERDICTS
from qbench.harness.results.rows import Row, parse_params
from qbench.queue_impl.config import PRESETS, Variant
from tests.conftest import FAST, fast

pytestmark = pytest.mark.slow

FAST_PRESETS = [fast(v) for v in PRESETS.values()]


def context(server: ProvisionedRedis, tmp_path: Path, **options: object) -> RunContext:
    return RunContext(
        url=server.url,
        server=server.info,
        quick=True,
        repeats=1,
        out_dir=tmp_path,
        progress=lambda message: None,
        options=dict(options),
    )


def by_variant(rows: list[Row], metric: str) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.metric == metric:
            grouped[row.variant].append(row)
    return grouped


def as_presets(rows: list[Row]) -> list[Row]:
    """The rows labelled with their preset alone, as a reproduce run labels them: the tests
    measure presets with short waits (`fast`), whose labels the report's columns would not
    match, and a section of empty columns must not pass for a rendered one."""
    return [dataclasses.replace(r, variant=r.variant.split("+", 1)[0]) for r in rows]


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"


def claim_table(markdown: str) -> list[dict[str, str]]:
    """The body rows of the section's seed table (`Claim | Claimed | presets... | Verdict`)."""
    header = "| " + " | ".join(CLAIM_HEADER) + " |"
    assert header in markdown, "no seed claim table"
    lines = markdown.split(header, 1)[1].strip().splitlines()
    assert lines[0].startswith("|---"), "the claim table has no separator row"
    body = []
    for line in lines[1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == len(CLAIM_HEADER), line
        body.append(dict(zip(CLAIM_HEADER, cells, strict=True)))
    return body


def assert_chart_files(charts: Path, names: list[str]) -> None:
    """Each chart is a real, non-trivial PNG with its SVG twin."""
    for name in names:
        png = (charts / name).read_bytes()
        assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR", name
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 300 and height >= 200, (name, width, height)
        assert len(png) > 10_000, f"{name}: {len(png)} bytes is too small for a chart"
        svg = ElementTree.parse(charts / name.replace(".png", ".svg")).getroot()
        assert svg.tag == SVG_ROOT, name
        assert len(svg.findall(".//{http://www.w3.org/2000/svg}path")) >= 10, f"{name}: an empty SVG"


def assert_rendered(
    module: object,
    rows: list[Row],
    charts: Path,
    *,
    expect: tuple[str, ...] = (),
    measured: tuple[str, ...] = PRESET_COLUMNS,
    verdicts_measured: bool = True,
) -> Section:
    """The section rendered from `rows`: its title, a seed table whose verdicts are verdicts
    and whose `measured` preset columns hold figures, one verdict per claim with its reason,
    no NaN or None, every `expect`ed text, and real chart files."""
    section: Section = module.render(rows, charts)  # type: ignore[attr-defined]
    assert section.title == module.TITLE  # type: ignore[attr-defined]
    text = section.markdown
    for bad in ("nan", "None", "inf "):
        assert not re.search(rf"\b{bad}\b", text), f"{bad!r} rendered in:\n{text}"
    table = claim_table(text)
    assert table, "the claim table is empty"
    for row in table:  # a verdict, or `before: <verdict>; after: <verdict>`, or nothing
        parts = [p.split(": ", 1)[-1].strip("*") for p in row["Verdict"].split("; ") if row["Verdict"]]
        assert set(parts) <= set(VERDICTS), row
    assert any(row["Verdict"] for row in table), "no claim row carries a verdict"
    for preset in measured:
        assert any(row[preset] not in ("-", "") for row in table), f"no figure for {preset}"
    assert section.verdicts
    for claim, verdict, why in section.verdicts:
        assert claim and why and verdict in VERDICTS, (claim, verdict, why)
        assert verdict != NOT_MEASURED or not verdicts_measured, (claim, why)
    for wanted in expect:
        assert wanted in text, f"{wanted!r} not in:\n{text}"
    assert section.charts, "no chart rendered"
    assert_chart_files(charts, section.charts)
    return section


# -- idle cost ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_rows(redis_server: ProvisionedRedis, tmp_path_factory: pytest.TempPathFactory) -> list[Row]:
    ctx = context(redis_server, tmp_path_factory.mktemp("idle"), variants=FAST_PRESETS, window_s=2.0)
    # A sampler at 20 INFO/s beside it: the counts below must not see one of them.
    with Telemetry(redis_server.url, None, interval_s=0.05) as sampler:
        rows = idle_cost.run(ctx)
    assert sampler.summary.own_commands[sampler.link().name] >= 20
    return rows


def test_idle_per_second_series_add_up_to_each_window_exactly(idle_rows: list[Row]) -> None:
    for variant in FAST_PRESETS:
        label = variant.label()
        totals = {
            name: round(n) for name, n in commands_in_window(idle_rows, variant).items() if name != "all"
        }
        series = idle_cost.per_second_series(idle_rows, label)
        assert {name: round(sum(v for _, v in points)) for name, points in series.items()} == totals
        assert all([t for t, _ in points] == [1, 2] for points in series.values())  # a 2 s window


def commands_in_window(rows: list[Row], variant: Variant) -> dict[str, float]:
    """Commands counted per command name in the (single) window: rate x window length."""
    label = variant.label()
    window = next(r.value for r in rows if r.variant == label and r.metric == "idle_window_s")
    return {
        parse_params(r.params)["command"]: r.value * window
        for r in rows
        if r.variant == label and r.metric == "idle_commands_per_s"
    }


def test_idle_poll_commands_are_rpoplpush(idle_rows: list[Row]) -> None:
    commands = commands_in_window(idle_rows, FAST_PRESETS[0])
    assert commands["rpoplpush"] > 0
    # Only the three-list poll and, at most, the heartbeat thread's calls.
    assert set(commands) - {"all"} <= {"rpoplpush", *idle_cost.HEARTBEAT_COMMANDS}
    # Three RPOPLPUSH per pass, one pass per poll interval at most.
    variant = FAST_PRESETS[0]
    assert commands["rpoplpush"] <= 3 * idle_cost.WORKERS * (2.0 / variant.poll_interval_s + 1)


@pytest.mark.parametrize("index", [1, 2], ids=["block", "notify"])
def test_idle_wait_commands_bounded_by_config(idle_rows: list[Row], index: int) -> None:
    variant = FAST_PRESETS[index]
    commands = commands_in_window(idle_rows, variant)
    per_cycle = IDLE_COMMANDS_PER_CYCLE[variant.dequeue]
    cycles = 2.0 / wait_cycle_s(variant) + 1  # a window may catch one extra partial cycle
    others = {"all", *idle_cost.HEARTBEAT_COMMANDS}
    waits = sum(n for name, n in commands.items() if name not in others)
    assert 0 < waits <= per_cycle * idle_cost.WORKERS * cycles
    expected = {"brpoplpush"} if variant.dequeue == "block" else {"evalsha", "exists", "del", "bzpopmin"}
    assert set(commands) - others == expected


def test_idle_renders(idle_rows: list[Row], tmp_path: Path) -> None:
    section = assert_rendered(
        idle_cost,
        as_presets(idle_rows),
        tmp_path,
        expect=("| Idle Redis commands/s (10 workers) | 300 → 0 | ", "| RPOPLPUSH | ", "| BZPOPMIN | "),
    )
    assert section.charts == ["idle_cost.png", "idle_cost_series.png"]  # the per-second ticks


# -- pickup latency -------------------------------------------------------------------
def test_pickup_every_job_picked_up(redis_server: ProvisionedRedis, tmp_path: Path) -> None:
    ctx = context(redis_server, tmp_path, variants=FAST_PRESETS, lanes_per_repeat=2, samples_per_lane=1)
    rows = pickup_latency.run(ctx)
    samples = by_variant(rows, "pickup_samples")
    for variant in FAST_PRESETS:
        # 2 lanes x 1 job per priority, all in the one repeat.
        assert sorted(r.value for r in samples[variant.label()]) == [2, 2, 2]
        assert all(r.value >= 0 for r in rows if r.variant == variant.label() and r.unit == "ms")
    assert not any(r.value for r in rows if r.metric == "pickups_missed")
    probes = by_variant(rows, "pickup_ms")
    assert {v.label() for v in FAST_PRESETS} == set(probes)
    assert_rendered(
        pickup_latency,
        as_presets(rows),
        tmp_path / "charts",
        expect=("| high: p50 (ms) | 0-100 ms → < 1 ms | ", "| low: max (ms) | 0-100 ms → < 1 ms | "),
    )


# -- pool scaling ---------------------------------------------------------------------
def test_pool_scaling_accounts_for_every_job(redis_server: ProvisionedRedis, tmp_path: Path) -> None:
    cells = [
        pool_scaling.Cell("baseline", 4, "sized", "wait"),
        pool_scaling.Cell("optimized", 4, "10", "wait"),
        pool_scaling.Cell("optimized", 4, "50", "wait"),
        pool_scaling.Cell("scripted", 4, "sized", "wait"),
        # Block-mode workers pin a connection each while they wait: 6 workers on 2
        # connections in raise mode must fail to get one.
        pool_scaling.Cell("optimized", 6, "2", "raise"),
    ]
    ctx = context(
        redis_server, tmp_path, cells=cells, overrides=FAST, window_s=0.3, block_window_s=0.3, warmup_s=0.3
    )
    rows = pool_scaling.run(ctx)
    for metric in ("jobs_lost", "jobs_stranded", "duplicate_starts"):
        assert [r.value for r in rows if r.metric == metric] == [0] * len(cells)
    # The cut probe ran for every preset: the loop's five cut points strand the job.
    cuts = [r for r in rows if r.metric == "jobs_stranded_by_cut"]
    assert sum(r.value for r in cuts if r.variant == "baseline") == 5
    assert not any(r.value for r in cuts if r.variant != "baseline")
    waited = [r for r in rows if "pool_mode=wait" in r.params]
    assert not any(r.value for r in waited if r.metric in {"pool_errors", "pool_exhaustion_errors"})
    starved = [r for r in rows if "pool=2" in r.params and r.metric == "pool_exhaustion_errors"]
    assert starved and starved[0].value > 0
    assert_rendered(
        pool_scaling,
        rows,
        tmp_path / "charts",
        expect=(
            "| Capacity, pool 10 | 10 workers | - | ",
            "| Capacity, pool 50 | 40 workers | - | ",
            "| Capacity, pool sized | - | 4 workers | - | 4 workers |",
            "Pool 2 in raise mode (fail at once when exhausted):",
            "| optimized | 6 | ",
            "Every job is accounted for: 0 lost, 0 started twice.",
            "| baseline | complete() | 3 | 2 of 2 (after round trip 1, 2) |",
        ),
        # Capacity at one worker count of 4 is one noisy 0.3 s window of block-mode
        # bursts against another: the optimized verdict may come out "not measured".
        verdicts_measured=False,
    )


# -- throughput -----------------------------------------------------------------------
def test_throughput_processes_each_job_once(redis_server: ProvisionedRedis, tmp_path: Path) -> None:
    ctx = context(
        redis_server, tmp_path, variants=FAST_PRESETS, submissions=50, batches=2, window_s=0.3, warmup_s=0.3
    )
    rows = throughput.run(ctx)
    for variant in FAST_PRESETS:
        mine = {r.metric: r.value for r in rows if r.variant == variant.label() and r.repeat == 0}
        assert mine["jobs_lost"] == 0 and mine["jobs_stranded"] == 0 and mine["duplicate_starts"] == 0
        assert mine["submissions_per_s"] > 0 and mine["pool_errors"] == 0
        # The windows measured a pool with work to do: a drained backlog measures nothing.
        assert mine["backlog_ran_dry"] == 0, variant.label()
    assert_rendered(
        throughput,
        as_presets(rows),
        tmp_path / "charts",
        expect=(
            "| Processing, 20 workers, noop jobs (jobs/s) | 1,654 (before); +10-20% expected after | ",
            "Ratios to baseline (same run): single submissions: optimized ",
            "Every job is accounted for: 0 lost, 0 started twice.",
        ),
    )
    # Had scripted's backlog run dry, its jobs/s would be a lower bound, and said to be one.
    dry = [
        dataclasses.replace(r, value=1.0) if r.metric == "backlog_ran_dry" and r.variant == "scripted" else r
        for r in as_presets(rows)
    ]
    section = throughput.render(dry, tmp_path / "charts-dry")
    assert (
        "The backlog ran dry during the windows for scripted: those jobs/s are lower bounds"
        in section.markdown
    )
    [why] = [why for claim, _, why in section.verdicts if claim == throughput.PROCESS_CLAIM]
    assert "scripted at least " in why
