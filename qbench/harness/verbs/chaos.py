"""`qbench chaos`: inject faults into live queues; count jobs submitted, completed, duplicated, lost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbench.harness.chaos.cases import CASES, FULL, QUICK, REPORT_FILE, run_chaos, violations
from qbench.harness.errors import add_redis_url_argument, add_telemetry_argument, comma_list
from qbench.harness.results.rows import METRICS_FILE, RUN_FILE
from qbench.queue_impl.config import PRESETS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="kill workers, race schedulers, restart Redis, cut links; count jobs",
        description="Inject faults into live queues under each preset and account for every job: "
        "submitted, completed, duplicated, lost. Exit 1 when a guarantee is violated.",
    )
    parser.add_argument("--quick", action="store_true", help="small runs (what `make test` runs)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results directory (default results/chaos[-quick])"
    )
    parser.add_argument(
        "--only", default=",".join(CASES), help=f"comma-separated cases among {', '.join(CASES)}"
    )
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for kill moments and job durations")
    add_redis_url_argument(parser)
    add_telemetry_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cases = comma_list(args.only, CASES, "--only")
    presets = comma_list(args.presets, list(PRESETS), "--presets")
    out: Path = args.out or Path("results") / ("chaos-quick" if args.quick else "chaos")
    outcomes = run_chaos(
        args.redis_url,
        cases=cases,
        presets=presets,
        scale=QUICK if args.quick else FULL,
        seed=args.seed,
        out=out,
        mode="quick" if args.quick else "full",
        telemetry_interval_s=args.telemetry_interval,
    )
    problems = violations(outcomes)
    for problem in problems:
        print(f"qbench chaos: violated: {problem}", file=sys.stderr)
    print(f"wrote {out / METRICS_FILE}, {out / RUN_FILE}, {out / REPORT_FILE}")
    return 1 if problems else 0
