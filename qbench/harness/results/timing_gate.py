"""Judging a timing gate run from its rows: head/base CPU per operation, with intervals.

A case fails only when its whole interval lies above 1 + tolerance (head is slower by
more than the tolerance, at the interval's confidence); it passes when the whole interval
lies below 1 + tolerance; otherwise it is "inconclusive at this noise" and says so with
the interval. The default tolerance is the one `qbench gate calibrate` recommended on
this kind of machine (`CALIBRATED_TOLERANCE`, checked against the committed calibration
by the tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qbench.harness.results.paired import METRIC_OF, Measure, ratio_from_rows
from qbench.harness.results.render import INCONCLUSIVE, markdown_table
from qbench.harness.results.rows import Row, parse_params
from qbench.harness.results.stats import RatioInterval, median

CALIBRATED_TOLERANCE = 0.045
"""The timing gate's default tolerance: `recommended_tolerance` of the committed
calibration, results/calibration/calibration.json (`qbench gate calibrate`)."""
CALIBRATION_FILE = Path("results/calibration/calibration.json")

GATE_FILE = "gate.json"
GATE_MARKDOWN = "GATE.md"

TimingStatus = Literal["FAIL", "ok", "better", "inconclusive"]


@dataclass(frozen=True)
class TimingVerdict:
    case: str
    variant: str
    status: TimingStatus
    cpu: RatioInterval
    wall: RatioInterval | None
    server_cpu: RatioInterval | None
    base_cpu_ns: float
    head_cpu_ns: float

    def as_dict(self) -> dict[str, Any]:
        def interval(ci: RatioInterval | None) -> dict[str, float] | None:
            if ci is None:
                return None
            return {"ratio": ci.estimate, "lo": ci.lo, "hi": ci.hi, "rounds": ci.n}

        return {
            "case": self.case,
            "variant": self.variant,
            "status": self.status,
            "cpu": interval(self.cpu),
            "wall": interval(self.wall),
            "server_cpu": interval(self.server_cpu),
            "base_cpu_ns_per_op": self.base_cpu_ns,
            "head_cpu_ns_per_op": self.head_cpu_ns,
        }


def judge_interval(ci: RatioInterval, tolerance: float) -> TimingStatus:
    """FAIL / ok / better / inconclusive for a head/base cost ratio (higher is worse)."""
    limit = 1 + tolerance
    if ci.lo > limit:
        return "FAIL"
    if ci.hi < 1 - tolerance:
        return "better"
    if ci.hi < limit:
        return "ok"
    return "inconclusive"


def judge_rows(rows: Iterable[Row], *, tolerance: float, confidence: float = 0.95) -> list[TimingVerdict]:
    """One verdict per (case, variant) measured on both sides in `rows` (a gate's metrics.csv)."""
    rows = list(rows)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        cell = parse_params(row.params)
        if "case" in cell and cell.get("side") in ("base", "head"):
            cells.setdefault((cell["case"], row.variant), {})[cell["side"]] = row.params
    verdicts: list[TimingVerdict] = []
    for (case, variant), sides in cells.items():
        if set(sides) != {"base", "head"}:
            continue
        base, head = (variant, sides["base"]), (variant, sides["head"])

        def ratio(
            measure: Measure, base: tuple[str, str] = base, head: tuple[str, str] = head
        ) -> RatioInterval | None:
            return ratio_from_rows(rows, metric=METRIC_OF[measure], a=base, b=head, confidence=confidence)

        cpu = ratio("cpu")
        if cpu is None:
            continue
        base_cpu = [r.value for r in rows if (r.variant, r.params) == base and r.metric == METRIC_OF["cpu"]]
        head_cpu = [r.value for r in rows if (r.variant, r.params) == head and r.metric == METRIC_OF["cpu"]]
        verdicts.append(
            TimingVerdict(
                case,
                variant,
                judge_interval(cpu, tolerance),
                cpu,
                ratio("wall"),
                ratio("server_cpu"),
                median(base_cpu),
                median(head_cpu),
            )
        )
    return verdicts


def overall(verdicts: Sequence[TimingVerdict]) -> Literal["FAIL", "pass", "inconclusive"]:
    if any(v.status == "FAIL" for v in verdicts):
        return "FAIL"
    if any(v.status == "inconclusive" for v in verdicts):
        return "inconclusive"
    return "pass"


def gate_document(
    verdicts: Sequence[TimingVerdict], *, tolerance: float, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """gate.json: the verdict a CI job keeps as an artifact."""
    sides = meta.get("sides", {})
    return {
        "status": overall(verdicts),
        "tolerance": tolerance,
        "rule": (
            "head/base client CPU per operation: FAIL when the whole interval lies above "
            "1 + tolerance, ok when it lies below, else inconclusive"
        ),
        "base": {k: sides.get("base", {}).get(k) for k in ("commit", "subject", "root")},
        "head": {k: sides.get("head", {}).get(k) for k in ("commit", "subject", "root")},
        "gate_seconds": meta.get("gate_seconds"),
        "placement": meta.get("placement"),
        "cases": [v.as_dict() for v in verdicts],
    }


def no_baseline_document(reason: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": "no-baseline", "reason": reason, **{k: meta[k] for k in ("head",) if k in meta}}


def markdown(verdicts: Sequence[TimingVerdict], *, tolerance: float, meta: Mapping[str, Any]) -> str:
    """GATE.md (and the CI job summary): one row per case."""
    sides = meta.get("sides", {})

    def commit(side: str) -> str:
        facts = sides.get(side, {})
        sha = str(facts.get("commit") or "?")[:10]
        return f"`{sha}` {facts.get('subject', '')}".strip()

    status = overall(verdicts)
    icon = {"FAIL": "❌ FAILED", "pass": "✅ passed", "inconclusive": f"⚠️ passed, {INCONCLUSIVE}"}[status]
    body = []
    for v in verdicts:
        body.append(
            [
                f"{v.case} / {v.variant}",
                f"{v.base_cpu_ns / 1000:,.1f} µs",
                f"{v.head_cpu_ns / 1000:,.1f} µs",
                _ci(v.cpu),
                _ci(v.wall),
                _ci(v.server_cpu),
                f"**{v.status if v.status != 'inconclusive' else INCONCLUSIVE}**",
            ]
        )
    placement = meta.get("placement", {})
    lines = [
        f"## Timing gate: {icon}",
        "",
        f"- base: {commit('base')}",
        f"- head: {commit('head')}",
        f"- rule: head/base client CPU per job cycle; fail when the whole 95% interval lies above "
        f"{1 + tolerance:.3f} (tolerance {tolerance:.1%}, from the committed calibration unless overridden)",
        f"- rounds interleaved base/head in random order, pinned to CPU {placement.get('pinned_cpu', '?')}; "
        f"gate took {meta.get('gate_seconds', 0):.0f} s",
        "",
        markdown_table(
            [
                "case",
                "base CPU/cycle",
                "head CPU/cycle",
                "head/base CPU (95% CI)",
                "wall",
                "Redis CPU",
                "verdict",
            ],
            body,
        ),
        "",
    ]
    return "\n".join(lines)


def _ci(ci: RatioInterval | None) -> str:
    if ci is None:
        return "-"
    return f"{ci.estimate:.3f} ({ci.lo:.3f}..{ci.hi:.3f})"


def write_gate(out_dir: Path, document: Mapping[str, Any], markdown_text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / GATE_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    (out_dir / GATE_MARKDOWN).write_text(markdown_text)
