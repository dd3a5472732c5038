"""The timing gate's measurement: base and head checkouts, interleaved, case by case.

Each side is a timing worker process (`harness/timing/worker.py`) started with its own
checkout's `queue_impl` and Python; both talk to one redis-server this run starts. All
three processes are pinned to one CPU (`qbench.harness.timing.placement`). For every gated case
the two workers run rounds in random AB/BA order (`qbench.harness.timing.interleave`) until the
head/base ratio of client CPU per operation is known to about `Plan.precision`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbench.harness.infra.redis_server import ProvisionedRedis, redis_for_run
from qbench.harness.results.rows import Row, params
from qbench.harness.timing.interleave import Interleaved, Plan, ServerCpu, comparison_rows, interleave
from qbench.harness.timing.placement import describe, pin_pid
from qbench.harness.timing.sides import Checkout, WorkerProcess

EXPERIMENT = "timing"
GATE_CASES: tuple[tuple[str, str], ...] = (
    ("cycle", "baseline"),
    ("cycle", "optimized"),
    ("cycle", "scripted"),
)
"""(case, variant) pairs the timing gate judges: one job's enqueue + dequeue + complete per preset."""
OPS_PER_ROUND = 200
"""Job cycles per side per round: ~50 ms of CPU, long enough that the clock's and the
scheduler's granularity do not matter, short enough for dozens of rounds a minute."""
OPS_PER_CYCLE = 3
"""Queue operations in one cycle (enqueue, dequeue, complete): the handicap burns per operation."""
GATE_PLAN = Plan(warmup_rounds=2, min_rounds=12, max_rounds=40, max_seconds=60.0, precision=0.015)
"""Rounds per case: stop at +-1.5% (or 40 rounds, or a minute); three cases stay near a minute."""


@dataclass(frozen=True)
class CaseResult:
    case: str
    variant: str
    handicap_us: float
    result: Interleaved


@dataclass
class TimingGateRun:
    """What one timing gate measured: per case, the interleaved rounds of base and head."""

    base: Checkout
    head: Checkout
    cases: list[CaseResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for case in self.cases:
            rows += comparison_rows(
                case.result,
                experiment=EXPERIMENT,
                variant_a=case.variant,
                variant_b=case.variant,
                params_a=side_params(case.case, "base"),
                params_b=side_params(case.case, "head"),
            )
        return rows


def side_params(case: str, side: str) -> str:
    return params(case=case, side=side)


def git_facts(root: Path) -> dict[str, Any]:
    """Commit, subject and date of a checkout (empty when it is not a git work tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None}
    dirty = bool(
        git("status", "--porcelain", "--untracked-files=no", "--", "qbench/queue_impl", "queue_impl")
    )
    return {
        "commit": commit,
        "subject": git("log", "-1", "--format=%s"),
        "date": git("log", "-1", "--format=%cI"),
        "dirty": dirty,
    }


@contextlib.contextmanager
def timing_server(redis_url: str | None, cpu: int | None) -> Iterator[ProvisionedRedis]:
    """The Redis both sides use: `redis_url`, else a redis-server started (and pinned) here."""
    with redis_for_run(redis_url, use_docker=False) as server:
        if server.process is not None and server.process.proc is not None:
            pin_pid(server.process.proc.pid, cpu)
        yield server


def run_timing_gate(
    base: Checkout,
    head: Checkout,
    *,
    cpu: int | None,
    plan: Plan = GATE_PLAN,
    cases: Sequence[tuple[str, str]] = GATE_CASES,
    ops: int = OPS_PER_ROUND,
    head_handicap_us: Mapping[str, float] | None = None,
    redis_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> TimingGateRun:
    """Interleave base and head on every case; `head_handicap_us` (variant -> µs per
    operation) injects a known regression into the head side (calibration only)."""
    started = time.monotonic()
    handicaps = dict(head_handicap_us or {})
    with timing_server(redis_url, cpu) as server:
        server_pid = server.process.proc.pid if server.process and server.process.proc else None
        with (
            WorkerProcess(base, redis_url=server.url, cpu=cpu) as base_worker,
            WorkerProcess(head, redis_url=server.url, cpu=cpu) as head_worker,
        ):
            server_cpu = ServerCpu(server.url)
            results: list[CaseResult] = []
            try:
                for case, variant in cases:
                    handicap = float(handicaps.get(variant, 0.0))
                    a = base_worker.arm(case, variant, ops=ops, label=f"base:{variant}")
                    b = head_worker.arm(case, variant, ops=ops, handicap_us=handicap, label=f"head:{variant}")
                    result = interleave(a, b, plan=plan, server=server_cpu, progress=progress)
                    results.append(CaseResult(case, variant, handicap, result))
            finally:
                server_cpu.close()
            meta: dict[str, Any] = {
                "server": server.info.as_dict(),
                "placement": describe(
                    cpu,
                    base_worker=base_worker.proc.pid,
                    head_worker=head_worker.proc.pid,
                    server=server_pid,
                ),
                "sides": {
                    "base": {**_side_facts(base), "worker": base_worker.hello},
                    "head": {**_side_facts(head), "worker": head_worker.hello},
                },
                "plan": _plan_facts(plan, ops),
                "head_handicap_us": handicaps,
            }
    meta["gate_seconds"] = round(time.monotonic() - started, 3)
    return TimingGateRun(base, head, results, meta)


def _side_facts(checkout: Checkout) -> dict[str, Any]:
    return {
        "label": checkout.label,
        "root": str(checkout.root),
        "python": checkout.python,
        **git_facts(checkout.root),
    }


def _plan_facts(plan: Plan, ops: int) -> dict[str, Any]:
    return {
        "ops_per_round": ops,
        "warmup_rounds": plan.warmup_rounds,
        "min_rounds": plan.min_rounds,
        "max_rounds": plan.max_rounds,
        "max_seconds_per_case": plan.max_seconds,
        "precision": plan.precision,
        "confidence": plan.confidence,
        "judge": plan.judge,
        "order": "random AB/BA per round",
        "seed": plan.seed,
    }


def render_saved(out_dir: Path) -> Path:
    """Re-render a timing gate run's GATE.md and gate.json from its metrics.csv and run.json."""
    from qbench.harness.results.rows import METRICS_FILE, read_metrics, read_run
    from qbench.harness.results.timing_gate import (
        GATE_FILE,
        GATE_MARKDOWN,
        gate_document,
        judge_rows,
        markdown,
    )

    rows = read_metrics(out_dir / METRICS_FILE)
    meta = read_run(out_dir)
    tolerance = float(meta["tolerance"])
    verdicts = judge_rows(
        rows, tolerance=tolerance, confidence=float(meta.get("plan", {}).get("confidence", 0.95))
    )
    document = gate_document(verdicts, tolerance=tolerance, meta=meta)
    (out_dir / GATE_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    (out_dir / GATE_MARKDOWN).write_text(markdown(verdicts, tolerance=tolerance, meta=meta))
    return out_dir / GATE_MARKDOWN
