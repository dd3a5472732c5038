"""`qbench gate --baseline A --candidate B`: fail CI when a result set gets worse."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UsageError
from harness.results.gate import (
    GateInputError,
    compare,
    format_report,
    incomplete_run,
    load_result_set,
    parse_tolerance,
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="fail (exit 1) when a candidate result set regresses",
        description="Compare two result sets: deterministic counters are held exact, timings are "
        "judged as ratios to a reference variant measured in the same run. Exit 0 pass, "
        "1 regression, 2 bad input.",
    )
    parser.add_argument(
        "--baseline", required=True, type=Path, help="results dir, metrics.csv or pytest-benchmark JSON"
    )
    parser.add_argument("--candidate", required=True, type=Path, help="same kinds as --baseline")
    parser.add_argument("--tolerance", default="10%", help="allowed timing-ratio change (default 10%%)")
    parser.add_argument(
        "--timings",
        choices=("auto", "ratio", "absolute", "off"),
        default="auto",
        help="ratio: each variant against --reference inside each set (auto when possible); "
        "absolute: medians compared directly (same job only); off: counters only",
    )
    parser.add_argument("--reference", default="baseline", help="reference variant for timing ratios")
    parser.add_argument("--all", action="store_true", help="list unchanged rows too")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        reason = incomplete_run(path)
        if reason is not None:
            print(f"qbench: error: {reason}; compare complete runs only", file=sys.stderr)
            return 1
    if report.compared == 0:
        raise UsageError("nothing to compare: the two sets share no experiment, variant, params and metric")
    print(f"baseline:  {baseline.source}\ncandidate: {candidate.source}\n")
    print(format_report(report, show_all=args.all))
    return 1 if report.failed else 0
