"""`qbench gate calibrate`: the timing gate's error rates, measured on the machine it runs on.

1. Measure the gated workload's client CPU per job cycle, per case, on this checkout.
2. Size the handicap (`Variant.handicap_us`, CPU burnt per queue operation) so that the
   head side costs `regression` (10%) more CPU per cycle.
3. Run `runs` A/A gates (the same checkout on both sides: any failure is a false alarm)
   and `runs` A/A+handicap gates (any failure is a detection), alternating, each a full
   gate (fresh Redis, fresh worker processes, the same plan as `qbench gate run`).
4. For every tolerance on a grid, count false alarms and detections from the recorded
   intervals, and recommend the middle of the tolerances that meet both targets (at most
   1 false alarm in 20, at least 19 detections in 20). The rates are in-sample: the runs
   that chose the tolerance also score it, which flatters it a little; more runs shrink that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qbench.harness.infra.redis_server import redis_for_run
from qbench.harness.results.render import markdown_table
from qbench.harness.results.rows import Row, params, read_run, run_metadata, source_text, write_metrics
from qbench.harness.results.runs import start_run
from qbench.harness.results.stats import RatioInterval, median
from qbench.harness.results.timing_gate import TimingStatus, judge_interval, judge_rows
from qbench.harness.timing.gate_run import (
    GATE_CASES,
    GATE_PLAN,
    OPS_PER_CYCLE,
    OPS_PER_ROUND,
    run_timing_gate,
)
from qbench.harness.timing.interleave import Plan
from qbench.harness.timing.placement import pin_pid
from qbench.harness.timing.sides import Checkout, WorkerProcess

EXPERIMENT = "calibration"
CALIBRATION_JSON = "calibration.json"
CALIBRATION_MD = "CALIBRATION.md"
TOLERANCE_GRID = tuple(round(0.005 * i, 3) for i in range(1, 21))
"""Tolerances scored: 0.5% to 10% in steps of 0.5%."""
TARGET_FALSE_ALARMS = 1 / 20
TARGET_DETECTION = 19 / 20
TARGET_GATE_SECONDS = 300.0
BASE_COST_ROUNDS = 12
HANDICAP_PLAN = Plan(warmup_rounds=2, min_rounds=16, max_rounds=40, max_seconds=40.0, precision=0.01)
"""Rounds that size the handicap: its ratio to +-1%."""

Kind = Literal["aa", "regression"]


@dataclass(frozen=True)
class GateOutcome:
    kind: Kind
    run: int
    seconds: float
    cases: dict[str, RatioInterval]
    """variant -> head/base CPU interval."""

    def status(self, tolerance: float) -> TimingStatus:
        statuses = [judge_interval(ci, tolerance) for ci in self.cases.values()]
        if "FAIL" in statuses:
            return "FAIL"
        return "inconclusive" if "inconclusive" in statuses else "ok"


@dataclass(frozen=True)
class Score:
    tolerance: float
    false_alarms: int
    aa_inconclusive: int
    detections: int
    regression_inconclusive: int
    runs: int

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.runs

    @property
    def detection_rate(self) -> float:
        return self.detections / self.runs

    def meets_targets(self) -> bool:
        return (
            self.false_alarm_rate <= TARGET_FALSE_ALARMS + 1e-9
            and self.detection_rate >= TARGET_DETECTION - 1e-9
        )


@dataclass
class Calibration:
    regression: float
    base_cost_ns: dict[str, float]
    handicap_us: dict[str, float]
    outcomes: list[GateOutcome] = field(default_factory=list)

    def score(self, tolerance: float) -> Score:
        def count(kind: Kind, status: TimingStatus) -> int:
            return sum(o.kind == kind and o.status(tolerance) == status for o in self.outcomes)

        runs = min(
            sum(o.kind == "aa" for o in self.outcomes), sum(o.kind == "regression" for o in self.outcomes)
        )
        return Score(
            tolerance,
            count("aa", "FAIL"),
            count("aa", "inconclusive"),
            count("regression", "FAIL"),
            count("regression", "inconclusive"),
            max(runs, 1),
        )

    def recommend(self) -> tuple[float, bool]:
        """(tolerance, targets met): the middle of the grid's tolerances that meet both
        targets; when none does, the one with the best detection minus false-alarm rate."""
        scores = [self.score(t) for t in TOLERANCE_GRID]
        good = [s.tolerance for s in scores if s.meets_targets()]
        if good:
            return good[len(good) // 2], True
        best = max(scores, key=lambda s: (s.detection_rate - s.false_alarm_rate, s.tolerance))
        return best.tolerance, False

    def gate_seconds(self) -> list[float]:
        return [o.seconds for o in self.outcomes]


def measure_base_costs(
    checkout: Checkout,
    *,
    cpu: int | None,
    cases: Sequence[tuple[str, str]] = GATE_CASES,
    ops: int = OPS_PER_ROUND,
    rounds: int = BASE_COST_ROUNDS,
) -> dict[str, float]:
    """Median client CPU ns per job cycle of each case on `checkout` (no handicap)."""
    with redis_for_run(None, use_docker=False) as server:
        if server.process is not None and server.process.proc is not None:
            pin_pid(server.process.proc.pid, cpu)
        with WorkerProcess(checkout, redis_url=server.url, cpu=cpu) as worker:
            costs: dict[str, float] = {}
            for case, variant in cases:
                arm = worker.arm(case, variant, ops=ops)
                arm.run_round()  # warm-up
                costs[variant] = median([arm.run_round().per_op("cpu") or 0.0 for _ in range(rounds)])
    return costs


def handicaps_for(base_cost_ns: dict[str, float], regression: float) -> dict[str, float]:
    """µs of CPU per queue operation that add `regression` to each case's cost per cycle."""
    return {v: round(regression * ns / OPS_PER_CYCLE / 1000, 3) for v, ns in base_cost_ns.items()}


def corrected_handicaps(
    checkout: Checkout,
    first: dict[str, float],
    *,
    regression: float,
    cpu: int | None,
    cases: Sequence[tuple[str, str]] = GATE_CASES,
    ops: int = OPS_PER_ROUND,
) -> tuple[dict[str, float], dict[str, float]]:
    """(handicaps, ratio the first guess achieved): one interleaved run per case of A
    against A + `first`, and each handicap scaled so the slowdown comes out at `regression`.

    The burn costs more than its own microseconds (each `process_time_ns` is a system call
    whose kernel entries slow the queue code around it: +13% measured for a +10% guess
    here), so the first guess, from the cost per cycle alone, overshoots.
    """
    gate = run_timing_gate(
        checkout, checkout, cpu=cpu, plan=HANDICAP_PLAN, cases=cases, ops=ops, head_handicap_us=first
    )
    achieved = {v.variant: v.cpu.estimate for v in judge_rows(gate.rows(), tolerance=0.0)}
    scaled = {
        variant: round(us * regression / max(achieved.get(variant, 1 + regression) - 1, regression / 4), 3)
        for variant, us in first.items()
    }
    return scaled, achieved


def calibrate(
    checkout: Checkout,
    *,
    runs: int,
    regression: float,
    cpu: int | None,
    plan: Plan = GATE_PLAN,
    ops: int = OPS_PER_ROUND,
    cases: Sequence[tuple[str, str]] = GATE_CASES,
    progress: Callable[[str], None] = print,
) -> Calibration:
    base = measure_base_costs(checkout, cpu=cpu, cases=cases, ops=ops)
    first = handicaps_for(base, regression)
    progress(
        "base CPU per job cycle: "
        + ", ".join(f"{v} {ns / 1000:.1f} µs -> handicap {first[v]:.2f} µs/op" for v, ns in base.items())
    )
    handicap, achieved = corrected_handicaps(
        checkout, first, regression=regression, cpu=cpu, cases=cases, ops=ops
    )
    progress(
        "handicap corrected: "
        + ", ".join(f"{v} x{achieved[v]:.3f} with {first[v]:.2f} -> {handicap[v]:.2f} µs/op" for v in first)
    )
    calibration = Calibration(regression, base, handicap)
    for run in range(runs):
        # Alternate which kind goes first, so slow drift of the machine favours neither.
        kinds: tuple[Kind, Kind] = ("aa", "regression") if run % 2 == 0 else ("regression", "aa")
        for kind in kinds:
            started = time.monotonic()
            gate = run_timing_gate(
                checkout,
                checkout,
                cpu=cpu,
                plan=plan,
                cases=cases,
                ops=ops,
                head_handicap_us=handicap if kind == "regression" else None,
            )
            seconds = time.monotonic() - started
            verdicts = judge_rows(gate.rows(), tolerance=0.0, confidence=plan.confidence)
            outcome = GateOutcome(kind, run, seconds, {v.variant: v.cpu for v in verdicts})
            calibration.outcomes.append(outcome)
            shown = ", ".join(
                f"{v} {ci.estimate:.3f} ({ci.lo:.3f}..{ci.hi:.3f})" for v, ci in outcome.cases.items()
            )
            progress(f"run {run + 1}/{runs} {kind:<10} {seconds:5.1f}s  {shown}")
    return calibration


# -- writing -------------------------------------------------------------------------------------


def calibration_rows(calibration: Calibration) -> list[Row]:
    rows: list[Row] = []
    for o in calibration.outcomes:
        cell = params(kind=o.kind, run=o.run)
        rows.append(Row(EXPERIMENT, "", cell, "gate_seconds", round(o.seconds, 3), "s", o.run))
        for variant, ci in o.cases.items():
            rows += [
                Row(EXPERIMENT, variant, cell, "cpu_ratio", ci.estimate, "ratio", o.run),
                Row(EXPERIMENT, variant, cell, "cpu_ratio_lo", ci.lo, "ratio", o.run),
                Row(EXPERIMENT, variant, cell, "cpu_ratio_hi", ci.hi, "ratio", o.run),
                Row(EXPERIMENT, variant, cell, "rounds", ci.n, "rounds", o.run),
            ]
    for variant, ns in calibration.base_cost_ns.items():
        rows.append(Row(EXPERIMENT, variant, params(kind="base"), "cpu_ns_per_cycle", ns, "ns", 0))
        rows.append(
            Row(
                EXPERIMENT,
                variant,
                params(kind="base"),
                "handicap_us",
                calibration.handicap_us[variant],
                "us",
                0,
            )
        )
    return rows


def summary(calibration: Calibration, *, command: Sequence[str], plan: Plan, ops: int) -> dict[str, Any]:
    tolerance, met = calibration.recommend()
    chosen = calibration.score(tolerance)
    seconds = calibration.gate_seconds()
    achieved = [
        ci.estimate for o in calibration.outcomes if o.kind == "regression" for ci in o.cases.values()
    ]
    return {
        "recommended_tolerance": tolerance,
        "targets_met": met and max(seconds) <= TARGET_GATE_SECONDS,
        "targets": {
            "false_alarm_rate_at_most": TARGET_FALSE_ALARMS,
            "detection_rate_at_least": TARGET_DETECTION,
            "gate_seconds_at_most": TARGET_GATE_SECONDS,
        },
        "runs": chosen.runs,
        "regression": calibration.regression,
        "regression_achieved_median": median(achieved) if achieved else None,
        "at_recommended": {
            "false_alarms": chosen.false_alarms,
            "false_alarm_rate": chosen.false_alarm_rate,
            "aa_inconclusive": chosen.aa_inconclusive,
            "detections": chosen.detections,
            "detection_rate": chosen.detection_rate,
            "regression_inconclusive": chosen.regression_inconclusive,
        },
        "gate_seconds": {"median": median(seconds), "max": max(seconds), "min": min(seconds)},
        "base_cpu_ns_per_cycle": calibration.base_cost_ns,
        "handicap_us_per_op": calibration.handicap_us,
        "grid": [
            {
                "tolerance": s.tolerance,
                "false_alarms": s.false_alarms,
                "detections": s.detections,
                "aa_inconclusive": s.aa_inconclusive,
                "regression_inconclusive": s.regression_inconclusive,
            }
            for s in (calibration.score(t) for t in TOLERANCE_GRID)
        ],
        "plan": {
            "ops_per_round": ops,
            "min_rounds": plan.min_rounds,
            "max_rounds": plan.max_rounds,
            "max_seconds_per_case": plan.max_seconds,
            "precision": plan.precision,
            "confidence": plan.confidence,
        },
        "command": list(command),
    }


def markdown(doc: dict[str, Any], meta: dict[str, Any]) -> str:
    at = doc["at_recommended"]
    runs = doc["runs"]
    seconds = doc["gate_seconds"]
    tol = doc["recommended_tolerance"]
    placement = meta.get("placement", {})
    lines = [
        "# Timing gate calibration",
        "",
        f"- Command: `{' '.join(doc['command'])}`; {source_text(meta)}; "
        f"created {meta.get('created_at', '?')}; {meta.get('cpu', {}).get('cpu_count', '?')} CPUs, "
        f"timed processes pinned to CPU {placement.get('pinned_cpu', '?')}",
        f"- Gated workload: one job's enqueue + dequeue + complete per preset, "
        f"{doc['plan']['ops_per_round']} per round, rounds of base and head interleaved in random "
        f"order until the head/base CPU ratio is known to +-{doc['plan']['precision']:.1%} "
        f"({doc['plan']['min_rounds']}-{doc['plan']['max_rounds']} rounds per case).",
        f"- Injected regression: +{doc['regression']:.0%} client CPU per job cycle "
        f"(`handicap_us` per operation: "
        + ", ".join(f"{v} {us:.2f} µs" for v, us in doc["handicap_us_per_op"].items())
        + f"); measured: x{doc['regression_achieved_median']:.3f} (median over cases and runs).",
        "",
        "## Result",
        "",
        markdown_table(
            ["figure", "measured", "target"],
            [
                ["recommended tolerance (default of `qbench gate run`)", f"{tol:.1%}", "-"],
                [
                    "false alarms, unchanged code (A/A)",
                    f"{at['false_alarms']} of {runs} ({at['false_alarm_rate']:.0%}); "
                    f"{at['aa_inconclusive']} inconclusive",
                    "at most 1 in 20",
                ],
                [
                    f"detections, +{doc['regression']:.0%} CPU (A/A+handicap)",
                    f"{at['detections']} of {runs} ({at['detection_rate']:.0%}); "
                    f"{at['regression_inconclusive']} inconclusive",
                    "at least 19 in 20",
                ],
                [
                    "time per gate",
                    f"median {seconds['median']:.0f} s, max {seconds['max']:.0f} s",
                    "at most 300 s",
                ],
            ],
        ),
        "",
        f"Targets met: **{'yes' if doc['targets_met'] else 'no'}**.",
        "",
        "## Every tolerance scored",
        "",
        "A gate fails when any case's whole 95% interval of head/base CPU lies above 1 + tolerance; "
        "a case whose interval straddles it is inconclusive (the gate passes, and says so).",
        "",
        markdown_table(
            ["tolerance", "false alarms (A/A)", "A/A inconclusive", "detections", "regression inconclusive"],
            [
                [
                    f"{g['tolerance']:.1%}" + (" ←" if g["tolerance"] == tol else ""),
                    f"{g['false_alarms']}/{runs}",
                    str(g["aa_inconclusive"]),
                    f"{g['detections']}/{runs}",
                    str(g["regression_inconclusive"]),
                ]
                for g in doc["grid"]
            ],
        ),
        "",
        "The rates are in-sample (the same runs choose and score the tolerance). Rows: "
        "`metrics.csv` (per run and case: the ratio and its interval, rounds, gate seconds).",
        "",
    ]
    return "\n".join(lines)


def write_calibration(
    out_dir: Path,
    calibration: Calibration,
    *,
    command: Sequence[str],
    plan: Plan,
    ops: int,
    placement: dict[str, Any],
) -> dict[str, Any]:
    doc = summary(calibration, command=command, plan=plan, ops=ops)
    meta = run_metadata(server={}, mode="calibration", extra={"placement": placement, "calibration": doc})
    with start_run(out_dir, "calibration", meta) as run:
        write_metrics(out_dir / "metrics.csv", calibration_rows(calibration))
        (out_dir / CALIBRATION_JSON).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (out_dir / CALIBRATION_MD).write_text(markdown(doc, run.meta))
    return doc


def render_saved(out_dir: Path) -> Path:
    """Re-render CALIBRATION.md from the folder's calibration.json and run.json alone."""
    doc = json.loads((out_dir / CALIBRATION_JSON).read_text())
    meta = read_run(out_dir)
    (out_dir / CALIBRATION_MD).write_text(markdown(doc, meta))
    return out_dir / CALIBRATION_MD
