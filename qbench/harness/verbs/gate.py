"""`qbench gate`: fail CI when a result set gets worse.

qbench gate --baseline A --candidate B     compare two saved result sets (counters exact)
qbench gate run --base DIR --head DIR      time two checkouts interleaved (the timing gate)
qbench gate calibrate [--runs 20]          measure the timing gate's error rates here
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qbench.harness.errors import OneLineParser, UsageError, add_redis_url_argument
from qbench.harness.results.gate import (
    DEFAULT_TOLERANCE,
    GateInputError,
    compare,
    format_report,
    incomplete_run,
    load_result_set,
    parse_tolerance,
    report_document,
)
from qbench.harness.results.rows import METRICS_FILE, run_metadata, write_metrics
from qbench.harness.results.runs import NotARunError, RunFolder, new_run_dir, refusal, start_run
from qbench.harness.results.timing_gate import (
    CALIBRATED_TOLERANCE,
    GATE_FILE,
    GATE_MARKDOWN,
    gate_document,
    judge_rows,
    markdown,
    no_baseline_document,
    overall,
    write_gate,
)
from qbench.harness.timing.calibrate import calibrate, write_calibration
from qbench.harness.timing.gate_run import GATE_PLAN, OPS_PER_ROUND, run_timing_gate
from qbench.harness.timing.interleave import Plan
from qbench.harness.timing.placement import PlacementError, choose_cpu, describe
from qbench.harness.timing.sides import Checkout, WorkerError
from qbench.harness.timing.worker import queue_package
from qbench.harness.verbs import gate_driver

QUICK_PLAN = GATE_PLAN.__class__(
    warmup_rounds=1, min_rounds=4, max_rounds=6, max_seconds=10.0, precision=0.015
)
QUICK_OPS = 50
"""`--quick`: a smoke run (seconds), for tests and trying the plumbing; its verdicts mean little."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="fail (exit 1) when a candidate regresses; time two checkouts; calibrate",
        description="Compare two saved result sets (--baseline/--candidate: deterministic counters are "
        "held exact, timings judged as ratios to a reference variant measured in the same run), or "
        "`gate run`: time two checkouts interleaved, or `gate calibrate`: measure the timing gate's "
        "false-alarm and detection rates. Exit 0 pass; 1 regression, or a set from a run that failed, was "
        "interrupted or is still running (its run.json says so: compare finished runs only); 2 bad input "
        "(no metrics, unreadable files, mixed kinds).",
    )
    parser.add_argument("--baseline", type=Path, help="results dir, metrics.csv or pytest-benchmark JSON")
    parser.add_argument("--candidate", type=Path, help="same kinds as --baseline")
    parser.add_argument(
        "--tolerance",
        default=f"{DEFAULT_TOLERANCE:.0%}",
        help=f"allowed timing-ratio change of saved sets (default {DEFAULT_TOLERANCE:.0%}%; not calibrated: "
        "saved sets come from different jobs)",
    )
    parser.add_argument(
        "--timings",
        choices=("auto", "ratio", "absolute", "off"),
        default="auto",
        help="ratio: each variant against --reference inside each set (auto when possible); "
        "absolute: medians compared directly (same job only); off: counters only",
    )
    parser.add_argument("--reference", default="baseline", help="reference variant for timing ratios")
    parser.add_argument("--all", action="store_true", help="list unchanged rows too")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the verdicts as JSON"
    )
    parser.set_defaults(func=run)

    modes = parser.add_subparsers(dest="gate_mode", metavar="MODE", parser_class=OneLineParser)
    live = modes.add_parser(
        "run",
        help="time two checkouts interleaved and judge head against base",
        description="The timing gate: base and head checkouts each run a timing worker (its own "
        "queue_impl, its own Python: DIR/.venv/bin/python if present); job cycles of every preset "
        "alternate between them in random order per round, pinned to one CPU, until head/base client "
        "CPU per cycle is known to +-1.5%. A case fails when its whole 95% interval lies above "
        "1 + tolerance. A base without queue_impl means no baseline yet: exit 0, said so.",
    )
    _driver_argument(
        live, "--base/--head are then SPECs: a requirement line (rq==2.6.1), a checkout or a git ref"
    )
    live.add_argument("--base", required=True, type=Path, metavar="DIR", help="the base checkout")
    live.add_argument("--head", required=True, type=Path, metavar="DIR", help="the head checkout")
    live.add_argument("--base-python", default=None, metavar="PATH", help="Python for the base worker")
    live.add_argument("--head-python", default=None, metavar="PATH", help="Python for the head worker")
    live.add_argument(
        "--tolerance",
        default=None,
        help=f"allowed slowdown (default {CALIBRATED_TOLERANCE:.1%}%, from the committed calibration)",
    )
    _timing_arguments(live)
    live.add_argument("--out", type=Path, default=Path("results/gate"), metavar="DIR", help="results dir")
    live.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE",
        help="append GATE.md to FILE ($GITHUB_STEP_SUMMARY)",
    )
    add_redis_url_argument(live)
    live.set_defaults(func=run_live)

    cal = modes.add_parser(
        "calibrate",
        help="measure the timing gate's false-alarm and detection rates on this machine",
        description="Run N A/A gates (unchanged code: a failure is a false alarm) and N gates against "
        "the same code with a known CPU regression injected (Variant.handicap_us, sized to +10%% CPU "
        "per job cycle: a failure is a detection); score every tolerance and recommend one. Writes "
        "metrics.csv, run.json, calibration.json and CALIBRATION.md.",
    )
    cal.add_argument("--runs", type=int, default=20, help="A/A gates and regression gates each (default 20)")
    cal.add_argument(
        "--regression", default="10%", help="injected CPU regression per job cycle (default 10%%)"
    )
    cal.add_argument(
        "--root", type=Path, default=Path("."), metavar="DIR", help="checkout to measure (default .)"
    )
    _driver_argument(
        cal, "--root is then the SPEC calibrated on (a requirement line, a checkout or a git ref)"
    )
    _timing_arguments(cal)
    cal.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="results dir (default: a new results/<UTC time>-calibration; `make calibrate` names "
        "the committed results/calibration)",
    )
    cal.set_defaults(func=run_calibrate)


def _driver_argument(parser: argparse.ArgumentParser, spec_help: str) -> None:
    parser.add_argument(
        "--driver",
        default=None,
        metavar="NAME|REF",
        help=f"gate a queue through its qbench driver (docs/gate.md, 'Gate your own queue'); {spec_help}",
    )


def _timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu",
        default=None,
        metavar="N|none",
        help="pin the workers and redis-server to this CPU (default: the highest allowed; none: unpinned)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few rounds (plumbing, not verdicts)"
    )


def run(args: argparse.Namespace) -> int:
    if args.baseline is None or args.candidate is None:
        raise UsageError(
            "gate: give --baseline and --candidate, or a mode: run, calibrate (see qbench gate --help)"
        )
    try:
        tolerance = parse_tolerance(args.tolerance)
        baseline = load_result_set(args.baseline)
        candidate = load_result_set(args.candidate)
        if baseline.kind != candidate.kind:
            raise GateInputError(f"cannot compare {baseline.kind} results with {candidate.kind} results")
        report = compare(
            baseline, candidate, tolerance=tolerance, timings=args.timings, reference=args.reference
        )
    except GateInputError as exc:
        raise UsageError(str(exc)) from None
    for path in (args.baseline, args.candidate):
        reason = unfinished_run(path) or incomplete_run(path)
        if reason is not None:
            print(f"qbench: error: {reason}; compare complete runs only", file=sys.stderr)
            return 1
    if report.compared == 0:
        raise UsageError("nothing to compare: the two sets share no experiment, variant, params and metric")
    print(f"baseline:  {baseline.source}\ncandidate: {candidate.source}\n")
    print(format_report(report, show_all=args.all))
    if args.json is not None:
        document = report_document(report, baseline=baseline.source, candidate=candidate.source)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if report.failed else 0


def unfinished_run(path: Path) -> str | None:
    """Why the run holding `path` (a results dir or its metrics.csv) is no result: it failed,
    was interrupted or never finished (run.json's status); None for a finished run, a
    pytest-benchmark file, or rows with no run.json. An unreadable run.json is bad input."""
    if not path.is_dir() and path.name != METRICS_FILE:
        return None
    folder = path if path.is_dir() else path.parent
    try:
        return refusal(folder)
    except NotARunError as exc:
        raise UsageError(str(exc)) from None


def _cpu(choice: str | None) -> int | None:
    try:
        return choose_cpu(choice)
    except PlacementError as exc:
        raise UsageError(str(exc)) from None


def run_live(args: argparse.Namespace) -> int:
    if args.driver is not None:
        return gate_driver.run_live(args)
    try:
        tolerance = CALIBRATED_TOLERANCE if args.tolerance is None else parse_tolerance(args.tolerance)
    except GateInputError as exc:
        raise UsageError(str(exc)) from None
    cpu = _cpu(args.cpu)
    for flag, path in (("--base", args.base), ("--head", args.head)):
        if not path.is_dir():
            raise UsageError(f"{flag}: {path} is not a directory")
    try:
        head = Checkout.at("head", args.head, args.head_python)
    except WorkerError as exc:
        raise UsageError(f"--head: {exc}") from None
    if queue_package(args.base) is None:
        return _no_baseline(args, head)
    try:
        base = Checkout.at("base", args.base, args.base_python)
    except WorkerError as exc:
        raise UsageError(f"--base: {exc}") from None
    plan, ops = (QUICK_PLAN, QUICK_OPS) if args.quick else (GATE_PLAN, OPS_PER_ROUND)
    mode = "gate-quick" if args.quick else "gate"
    with start_run(args.out, "gate", {"mode": mode}) as run:  # an earlier gate's files go first
        return _gate(args, run, base, head, cpu=cpu, plan=plan, ops=ops, tolerance=tolerance, mode=mode)


def _gate(
    args: argparse.Namespace,
    run: RunFolder,
    base: Checkout,
    head: Checkout,
    *,
    cpu: int | None,
    plan: Plan,
    ops: int,
    tolerance: float,
    mode: str,
) -> int:
    try:
        gate = run_timing_gate(
            base,
            head,
            cpu=cpu,
            plan=plan,
            ops=ops,
            redis_url=args.redis_url,
            progress=lambda line: print(f"gate: {line}", file=sys.stderr, flush=True),
        )
    except WorkerError as exc:
        raise RuntimeError(f"timing gate failed: {exc}") from None
    rows = gate.rows()
    meta = run.meta
    meta.update(
        run_metadata(
            server=gate.meta["server"],
            mode=mode,
            extra={**gate.meta, "tolerance": tolerance, "command": ["qbench", *sys.argv[1:]]},
        )
    )
    write_metrics(args.out / METRICS_FILE, rows)
    run.checkpoint()
    verdicts = judge_rows(rows, tolerance=tolerance, confidence=plan.confidence)
    text = markdown(verdicts, tolerance=tolerance, meta=meta)
    write_gate(args.out, gate_document(verdicts, tolerance=tolerance, meta=meta), text)
    _summary(args.summary, text)
    print(text)
    status = overall(verdicts)
    print(f"gate: {status}; {args.out / GATE_FILE}, {args.out / GATE_MARKDOWN}")
    return 1 if status == "FAIL" else 0


def _no_baseline(args: argparse.Namespace, head: Checkout) -> int:
    reason = f"{args.base} has no queue_impl: the base predates qbench, so there is no baseline yet"
    text = (
        "## Timing gate: no baseline yet\n\n"
        f"{reason}. Nothing was timed; the head's counters are checked on their own by `make test`.\n"
    )
    write_gate(args.out, no_baseline_document(reason, {"head": str(head.root)}), text)
    _summary(args.summary, text)
    print(text)
    return 0


def _summary(path: Path | None, text: str) -> None:
    if path is not None:
        with path.open("a") as fh:
            fh.write(text + "\n")


def run_calibrate(args: argparse.Namespace) -> int:
    args.out = args.out or new_run_dir("calibration")
    if args.driver is not None:
        return gate_driver.run_calibrate(args)
    if args.runs < 1:
        raise UsageError(f"--runs: must be >= 1, got {args.runs}")
    try:
        regression = parse_tolerance(args.regression)
    except GateInputError:
        raise UsageError(f"--regression: expected a percentage like 10%, got {args.regression!r}") from None
    if not 0 < regression <= 1:
        raise UsageError(f"--regression: {args.regression!r} is out of range (0..100%)")
    cpu = _cpu(args.cpu)
    try:
        checkout = Checkout.at("calibration", args.root)
    except WorkerError as exc:
        raise UsageError(f"--root: {exc}") from None
    plan, ops = (QUICK_PLAN, QUICK_OPS) if args.quick else (GATE_PLAN, OPS_PER_ROUND)
    try:
        calibration = calibrate(
            checkout,
            runs=args.runs,
            regression=regression,
            cpu=cpu,
            plan=plan,
            ops=ops,
            progress=lambda line: print(f"calibrate: {line}", file=sys.stderr, flush=True),
        )
    except WorkerError as exc:
        raise RuntimeError(f"calibration failed: {exc}") from None
    doc = write_calibration(
        args.out,
        calibration,
        command=["qbench", *sys.argv[1:]],
        plan=plan,
        ops=ops,
        placement=describe(cpu),
    )
    at = doc["at_recommended"]
    runs, seconds = doc["runs"], doc["gate_seconds"]
    print(
        f"recommended tolerance {doc['recommended_tolerance']:.1%}: "
        f"false alarms {at['false_alarms']}/{runs}, detections {at['detections']}/{runs}, "
        f"gate time median {seconds['median']:.0f} s (max {seconds['max']:.0f} s); "
        f"targets met: {doc['targets_met']}; {args.out / 'CALIBRATION.md'}"
    )
    return 0
