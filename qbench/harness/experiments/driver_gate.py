"""The timing gate for any queue with a driver: `qbench gate run --driver X --base SPEC --head SPEC`.

Base and head (`specs.py`: a requirement line, a checkout, a git ref) each get a virtualenv,
a redis-server of their own and a warm driver (`driver_sides.py`). Rounds alternate between
them in random order (`interleave`, its plan and stopping rule: rounds stop once head/base
client CPU per job, producer's enqueue plus workers' drain, is known to `Plan.precision`).
Each measure then gets its own head/base interval and verdict (its own tolerance), and the
exact counters (commands and round trips per job, per phase and per command) are compared
on their own: a change there is reported whatever the timings say.

`measure` runs a gate and returns its rows; `judge` reads verdicts from rows alone, so a
saved run re-renders the same verdicts (`render_saved`).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qbench.harness.experiments.driver_sides import DriverSide, Sizes
from qbench.harness.infra.redis_server import ProvisionedRedis, redis_for_run
from qbench.harness.peers.envs import import_root
from qbench.harness.results.render import INCONCLUSIVE, markdown_table
from qbench.harness.results.rows import Row, parse_params
from qbench.harness.results.stats import RatioInterval, median, ratio_interval
from qbench.harness.timing.interleave import Interleaved, Plan, interleave
from qbench.harness.timing.placement import describe, pin_pid

EXPERIMENT = "gate_driver"
MODE, QUICK_MODE = "gate-driver", "gate-driver-quick"
GATE_FILE, GATE_MARKDOWN = "gate.json", "GATE.md"

DRIVER_PLAN = Plan(warmup_rounds=2, min_rounds=12, max_rounds=40, max_seconds=420.0, precision=0.02)
"""Full gate: stop when head/base client CPU per job is known to +-2% (12-40 rounds, 7 min)."""
QUICK_PLAN = Plan(warmup_rounds=1, min_rounds=6, max_rounds=16, max_seconds=75.0, precision=0.03)
FULL_SIZES = Sizes(jobs=1000, concurrency=4, pickup_probes=20, pickup_gap_s=0.03)
QUICK_SIZES = Sizes(jobs=400, concurrency=4, pickup_probes=12, pickup_gap_s=0.02)

PHASE_TOTALS = ("commands_per_job", "round_trips_per_job")
COUNTER_SLACK = 0.05
"""Commands or round trips per job that count as a change. The counts are exact; what moves
them between two runs of the same code is idle polling (a worker's blocking pop timing out
inside a round), well under this. One extra command per job is 20 times it."""


@dataclass(frozen=True)
class GateMeasure:
    name: str
    metric: str
    label: str
    tolerance: float
    """Default tolerance: head/base may be worse by this much before the measure fails."""
    show: Callable[[float], str]


def _us(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs"


MEASURES: tuple[GateMeasure, ...] = (
    GateMeasure("enqueue_cpu", "enqueue_cpu_ns_per_job", "enqueue CPU/call (producer)", 0.05, _us),
    GateMeasure("worker_cpu", "worker_cpu_ns_per_job", "worker CPU/job", 0.05, _us),
    GateMeasure(
        "process_rate", "process_ns_per_job", "processing rate", 0.10, lambda ns: f"{1e9 / ns:,.0f} jobs/s"
    ),
    GateMeasure("pickup_p50", "pickup_p50_ns", "pickup p50", 0.25, lambda ns: f"{ns / 1e6:,.2f} ms"),
    GateMeasure("pickup_p99", "pickup_p99_ns", "pickup p99", 1.00, lambda ns: f"{ns / 1e6:,.2f} ms"),
)
"""What the gate judges, each a cost per job (the rate as ns per job: higher is worse). The
default tolerances are placeholders until `qbench gate calibrate --driver` recommends them;
pickup p99 tracks machine load more than code (NOTES.md), hence its wide default."""
MEASURE_BY_NAME = {m.name: m for m in MEASURES}
CLIENT_CPU = "client_cpu_ns_per_job"
"""The stopping rule's measure: enqueue + worker CPU per job (also reported)."""
SERVER_CPU = "server_cpu_ns_per_job"

Status = Literal["FAIL", "ok", "better", "inconclusive"]


class GateCannotRun(RuntimeError):
    """The gate could not measure (a side's environment, driver or server failed): exit 2."""


def parse_tolerances(text: str | None) -> dict[str, float]:
    """`5%` (the two CPU measures) or `enqueue_cpu=5%,pickup_p50=30%,...` over the defaults."""
    found = {m.name: m.tolerance for m in MEASURES}
    if text is None or not text.strip():
        return found

    def pct(value: str) -> float:
        value = value.strip()
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError
        return number

    try:
        if "=" not in text:
            found["enqueue_cpu"] = found["worker_cpu"] = pct(text)
            return found
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in found:
                raise KeyError(name.strip())
            found[name.strip()] = pct(value)
    except KeyError as exc:
        raise ValueError(f"--tolerance: unknown measure {exc.args[0]!r}; known: {', '.join(found)}") from None
    except ValueError:
        raise ValueError(f"--tolerance: expected 5% or measure=5%,..., got {text!r}") from None
    return found


# -- measuring ---------------------------------------------------------------------------------
@dataclass
class SideSetup:
    label: str
    name: str
    ref: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _servers(cpu: int | None) -> Iterator[tuple[ProvisionedRedis, ProvisionedRedis]]:
    with redis_for_run(None, use_docker=False) as base, redis_for_run(None, use_docker=False) as head:
        for server in (base, head):
            if server.process is not None and server.process.proc is not None:
                pin_pid(server.process.proc.pid, cpu)
        yield base, head


def measure(
    base: SideSetup,
    head: SideSetup,
    *,
    work_dir: Path,
    plan: Plan,
    sizes: Sizes,
    cpu: int | None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Interleave base and head until the plan stops; every round's rows, and run facts."""
    started = time.monotonic()
    root = import_root()
    try:
        with _servers(cpu) as (base_server, head_server), contextlib.ExitStack() as stack:
            sides = []
            for setup, server in ((base, base_server), (head, head_server)):
                side = DriverSide(
                    label=setup.label,
                    name=setup.name,
                    ref=setup.ref,
                    python=setup.python,
                    server=server,
                    import_root=root,
                    work_dir=work_dir / setup.label,
                    sizes=sizes,
                    cpu=cpu,
                    env=setup.env,
                )
                stack.callback(side.close)
                side.start()
                sides.append(side)
            a, b = sides
            result = interleave(a.arm(), b.arm(), plan=plan, progress=progress)
            rows = rows_of(result, a, b, driver=base.name, jobs=sizes.jobs)
            meta: dict[str, Any] = {
                "server": base_server.info.as_dict(),
                "servers": {"base": base_server.info.as_dict(), "head": head_server.info.as_dict()},
                "placement": describe(
                    cpu,
                    base_producer=a.driver.producer_pid(),
                    head_producer=b.driver.producer_pid(),
                    base_worker=next(iter(a.driver.worker_pids()), None),
                    head_worker=next(iter(b.driver.worker_pids()), None),
                ),
                "sides": {
                    "base": {**base.facts, "driver": _ready(a.ready), "env": base.env},
                    "head": {**head.facts, "driver": _ready(b.ready), "env": head.env},
                },
                "plan": {
                    "jobs_per_round": sizes.jobs,
                    "concurrency": sizes.concurrency,
                    "pickup_probes": sizes.pickup_probes,
                    "pickup_gap_max_s": sizes.pickup_gap_s,
                    "warmup_rounds": plan.warmup_rounds,
                    "min_rounds": plan.min_rounds,
                    "max_rounds": plan.max_rounds,
                    "max_seconds": plan.max_seconds,
                    "precision": plan.precision,
                    "confidence": plan.confidence,
                    "judge": "client CPU per job (producer enqueue + workers' drain)",
                    "order": "random AB/BA per round",
                    "seed": plan.seed,
                },
                "rounds": len(result.rounds),
                "stopped_by": result.stopped_by,
                "notices": [*a.driver.notices, *b.driver.notices],
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta["gate_seconds"] = round(time.monotonic() - started, 3)
    return rows, meta


def _ready(ready: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("name", "version", "distribution", "setup", "processes", "redis_py", "python", "capabilities")
    return {k: ready.get(k) for k in keys}


def rows_of(result: Interleaved, a: DriverSide, b: DriverSide, *, driver: str, jobs: int) -> list[Row]:
    """Per-round rows of both sides (`repeat` = round; warm-up rounds left out)."""
    rows: list[Row] = []
    skip = result.warmup
    for index in range(len(result.rounds)):
        for side, label in ((a, "base"), (b, "head")):
            r = side.records[skip + index]

            def row(
                metric: str, value: float, unit: str, label: str = label, at: int = index, **extra: object
            ) -> None:
                cell = ";".join(f"{k}={v}" for k, v in sorted({"side": label, **extra}.items()))
                rows.append(Row(EXPERIMENT, driver, cell, metric, value, unit, at))

            row("enqueue_cpu_ns_per_job", r.enqueue_cpu_ns / jobs, "ns")
            row("worker_cpu_ns_per_job", r.worker_cpu_ns / jobs, "ns")
            row(CLIENT_CPU, (r.enqueue_cpu_ns + r.worker_cpu_ns) / jobs, "ns")
            row("enqueue_wall_ns_per_job", r.enqueue_wall_ns / jobs, "ns")
            if r.process_rate > 0 and math.isfinite(r.process_rate):
                row("process_ns_per_job", 1e9 / r.process_rate, "ns")
            row("pickup_p50_ns", r.pickup_p50_us * 1000, "ns")
            row("pickup_p99_ns", r.pickup_p99_us * 1000, "ns")
            row(SERVER_CPU, r.server_cpu_us * 1000 / jobs, "ns")
            for phase in ("enqueue", "process"):
                row("round_trips_per_job", r.reads[phase] / jobs, "round_trips", phase=phase)
                counts = r.commands[phase]
                row("commands_per_job", sum(counts.values()) / jobs, "commands", phase=phase, command="all")
                for command, calls in sorted(counts.items()):
                    row("commands_per_job", calls / jobs, "commands", phase=phase, command=command)
    return rows


# -- judging ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasureVerdict:
    measure: str
    status: Status
    ratio: RatioInterval | None
    base: float
    head: float
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        ci = self.ratio
        return {
            "measure": self.measure,
            "status": self.status,
            "ratio": None if ci is None else {"ratio": ci.estimate, "lo": ci.lo, "hi": ci.hi, "rounds": ci.n},
            "base_median": self.base,
            "head_median": self.head,
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True)
class CounterVerdict:
    phase: str
    metric: str
    command: str
    base: float
    head: float
    status: Literal["FAIL", "better", "same", "swapped"]
    """FAIL: more per job; better: fewer; swapped: more of this command, but its phase's
    commands and round trips per job both fell (a command that replaced others)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "metric": self.metric,
            "command": self.command,
            "base_per_job": self.base,
            "head_per_job": self.head,
            "status": self.status,
        }


def _judge_ratio(ci: RatioInterval, tolerance: float) -> Status:
    if ci.lo > 1 + tolerance:
        return "FAIL"
    if ci.hi < 1 - tolerance:
        return "better"
    if ci.hi < 1 + tolerance:
        return "ok"
    return "inconclusive"


def _paired(rows: Sequence[Row], metric: str, extra: Mapping[str, str]) -> tuple[list[float], list[float]]:
    by: dict[str, dict[int, float]] = {"base": {}, "head": {}}
    for row in rows:
        if row.metric != metric:
            continue
        cell = parse_params(row.params)
        if any(cell.get(k) != v for k, v in extra.items()) or cell.get("side") not in by:
            continue
        by[cell["side"]][row.repeat] = row.value
    common = sorted(by["base"].keys() & by["head"].keys())
    return [by["base"][k] for k in common], [by["head"][k] for k in common]


def judge(
    rows: Sequence[Row], *, tolerances: Mapping[str, float], confidence: float = 0.95
) -> tuple[list[MeasureVerdict], list[CounterVerdict]]:
    """Timing verdicts (one per measure) and counter verdicts (every phase and command seen)."""
    timings: list[MeasureVerdict] = []
    for m in MEASURES:
        a, b = _paired(rows, m.metric, {})
        tolerance = tolerances.get(m.name, m.tolerance)
        if len(a) < 2 or min(a + b) <= 0:
            timings.append(MeasureVerdict(m.name, "inconclusive", None, math.nan, math.nan, tolerance))
            continue
        ci = ratio_interval(a, b, confidence=confidence)
        timings.append(
            MeasureVerdict(m.name, _judge_ratio(ci, tolerance), ci, median(a), median(b), tolerance)
        )
    keys: set[tuple[str, str, str]] = set()
    for row in rows:
        if row.metric in ("commands_per_job", "round_trips_per_job"):
            cell = parse_params(row.params)
            keys.add((cell.get("phase", ""), row.metric, cell.get("command", "")))
    counters: list[CounterVerdict] = []
    totals: dict[tuple[str, str], float] = {}  # (phase, metric): head - base of the phase's total
    for phase, metric, command in sorted(keys):
        if (metric == "commands_per_job" and command == "all") or metric == "round_trips_per_job":
            extra = {"phase": phase, **({"command": command} if command else {})}
            base_total = _side_values(rows, metric, extra, "base")
            head_total = _side_values(rows, metric, extra, "head")
            totals[(phase, metric)] = (median(head_total) if head_total else 0.0) - (
                median(base_total) if base_total else 0.0
            )
    for phase, metric, command in sorted(keys):
        extra = {"phase": phase, **({"command": command} if command else {})}
        base_values = [v for v in _side_values(rows, metric, extra, "base")]
        head_values = [v for v in _side_values(rows, metric, extra, "head")]
        base = median(base_values) if base_values else 0.0
        head = median(head_values) if head_values else 0.0
        change = head - base
        status: Literal["FAIL", "better", "same", "swapped"] = (
            "same" if abs(change) < COUNTER_SLACK else ("FAIL" if change > 0 else "better")
        )
        fell = all(totals.get((phase, m), 0.0) <= -COUNTER_SLACK for m in PHASE_TOTALS)
        if status == "FAIL" and metric == "commands_per_job" and command != "all" and fell:
            status = "swapped"  # it replaced others: fewer commands and round trips in all
        counters.append(CounterVerdict(phase, metric, command, base, head, status))
    return timings, counters


def _side_values(rows: Sequence[Row], metric: str, extra: Mapping[str, str], side: str) -> list[float]:
    """A side's per-round values; a round where a command was not called counts as 0."""
    values: dict[int, float] = {}
    rounds: set[int] = set()
    for row in rows:
        cell = parse_params(row.params)
        if cell.get("side") != side:
            continue
        rounds.add(row.repeat)
        if row.metric == metric and all(cell.get(k) == v for k, v in extra.items()):
            values[row.repeat] = row.value
    return [values.get(r, 0.0) for r in sorted(rounds)]


def overall(timings: Sequence[MeasureVerdict], counters: Sequence[CounterVerdict]) -> str:
    if any(v.status == "FAIL" for v in timings) or any(c.status == "FAIL" for c in counters):
        return "FAIL"
    if any(v.status == "inconclusive" for v in timings):
        return "inconclusive"
    return "pass"


def document(
    timings: Sequence[MeasureVerdict], counters: Sequence[CounterVerdict], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """gate.json."""
    sides = meta.get("sides", {})
    return {
        "status": overall(timings, counters),
        "kind": "driver",
        "driver": meta.get("driver"),
        "rule": (
            "timings: head/base per measure, FAIL when the whole 95% interval lies above 1 + its "
            "tolerance, ok when below, else inconclusive; counters: commands and round trips per job, "
            f"per phase and command, FAIL when head exceeds base by {COUNTER_SLACK} or more, except "
            "a command that grew while its phase's commands and round trips per job both fell (swapped)"
        ),
        "base": {k: sides.get("base", {}).get(k) for k in ("spec", "kind", "commit", "env_key")},
        "head": {k: sides.get("head", {}).get(k) for k in ("spec", "kind", "commit", "env_key")},
        "tolerances": meta.get("tolerances"),
        "gate_seconds": meta.get("gate_seconds"),
        "rounds": meta.get("rounds"),
        "measures": [v.as_dict() for v in timings],
        "counters": [c.as_dict() for c in counters if c.status != "same"],
        "counters_compared": len(counters),
    }


def _ci(ci: RatioInterval | None) -> str:
    return "-" if ci is None else f"{ci.estimate:.3f} ({ci.lo:.3f}..{ci.hi:.3f})"


def markdown(
    timings: Sequence[MeasureVerdict], counters: Sequence[CounterVerdict], meta: Mapping[str, Any]
) -> str:
    """GATE.md, the CI job summary."""
    status = overall(timings, counters)
    icon = {"FAIL": "❌ FAILED", "pass": "✅ passed", "inconclusive": f"⚠️ passed, {INCONCLUSIVE}"}[status]
    sides = meta.get("sides", {})
    body = []
    for v in timings:
        m = MEASURE_BY_NAME[v.measure]
        shown = "-" if math.isnan(v.base) else m.show(v.base)
        shown_head = "-" if math.isnan(v.head) else m.show(v.head)
        verdict = INCONCLUSIVE if v.status == "inconclusive" else v.status
        body.append([m.label, shown, shown_head, _ci(v.ratio), f"{v.tolerance:.0%}", f"**{verdict}**"])
    changed = [c for c in counters if c.status != "same"]
    placement = meta.get("placement", {})
    lines = [
        f"## qbench gate, driver `{meta.get('driver', '?')}`: {icon}",
        "",
        f"- base: {sides.get('base', {}).get('describe', '?')}",
        f"- head: {sides.get('head', {}).get('describe', '?')}",
        f"- {meta.get('rounds', '?')} rounds of {meta.get('plan', {}).get('jobs_per_round', '?')} jobs "
        "per side, "
        f"interleaved base/head in random order, each on a fresh Redis database; pinned to CPU "
        f"{placement.get('pinned_cpu', '?')}; gate took {float(meta.get('gate_seconds') or 0):.0f} s",
        "- timings fail when the whole 95% interval of head/base lies above 1 + tolerance "
        "(rate: as time per job)",
        "",
        markdown_table(["measure", "base", "head", "head/base (95% CI)", "tolerance", "verdict"], body),
        "",
    ]
    if changed:
        rows = [
            [
                c.phase,
                "round trips" if c.metric == "round_trips_per_job" else f"`{c.command}`",
                f"{c.base:.2f}",
                f"{c.head:.2f}",
                f"{c.head - c.base:+.2f}",
                f"**{c.status}**",
            ]
            for c in changed
        ]
        lines += [
            "Exact counters that changed (per job; more of a command fails whatever the timings say, "
            "unless it is *swapped* in: its phase's commands and round trips per job both fell):",
            "",
            markdown_table(["phase", "command", "base", "head", "change", "verdict"], rows),
            "",
        ]
    else:
        lines += [
            f"Exact counters: all {len(counters)} unchanged (commands and round trips per job, per phase).",
            "",
        ]
    return "\n".join(lines)


def write_outputs(out_dir: Path, rows: Sequence[Row], meta: Mapping[str, Any]) -> tuple[str, str]:
    """Judge `rows`, write gate.json and GATE.md; (overall status, markdown)."""
    tolerances = {k: float(v) for k, v in (meta.get("tolerances") or {}).items()}
    confidence = float(meta.get("plan", {}).get("confidence", 0.95))
    timings, counters = judge(rows, tolerances=tolerances, confidence=confidence)
    text = markdown(timings, counters, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = document(timings, counters, meta)
    (out_dir / GATE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    (out_dir / GATE_MARKDOWN).write_text(text)
    return overall(timings, counters), text


def render_saved(out_dir: Path) -> Path:
    """Re-render a driver gate's GATE.md and gate.json from its metrics.csv and run.json."""
    from qbench.harness.results.rows import METRICS_FILE, read_metrics, read_run

    write_outputs(out_dir, read_metrics(out_dir / METRICS_FILE), read_run(out_dir))
    return out_dir / GATE_MARKDOWN
