"""`qbench reproduce`: run every experiment against a real Redis, write rows, render the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbench.harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument
from qbench.harness.experiments.runner import (
    DEFAULT_REPEATS,
    EXPERIMENT_NAMES,
    REFERENCE_DIR,
    Progress,
    UnknownExperimentError,
    default_out_dir,
    exit_code,
    reproduce,
    select_experiments,
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run every experiment: metrics.csv, run.json, charts and REPORT.md",
        description="Measure each of the seed's claims on a real Redis and write a results dir: "
        "metrics.csv, run.json, charts/ and REPORT.md with a verdict per claim.",
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes: every experiment in < 3 minutes")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="results dir (default: a new results/<UTC time>-quick|full)",
    )
    where.add_argument(
        "--update-reference",
        action="store_true",
        help=f"write the committed reference run, {REFERENCE_DIR}/ (what `make reproduce-reference` does)",
    )
    parser.add_argument(
        "--only", default=None, metavar="NAME,...", help=f"run only these ({', '.join(EXPERIMENT_NAMES)})"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        metavar="N",
        help=f"repeats of every measurement (default {DEFAULT_REPEATS}; timings need >= 3)",
    )
    add_redis_url_argument(parser)
    add_telemetry_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UsageError(f"--repeats: must be >= 1, got {args.repeats}")
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    if args.only is not None and not only:
        raise UsageError("--only: expected comma-separated experiment names")
    try:
        experiments = select_experiments(only)
    except UnknownExperimentError as exc:
        raise UsageError(f"--only: {exc}") from None
    out_dir: Path = REFERENCE_DIR if args.update_reference else args.out or default_out_dir(args.quick)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: {out_dir} exists and is not a directory")
    progress = Progress()
    progress(f"writing {out_dir}")
    if args.repeats < 3:
        progress(f"--repeats {args.repeats}: timings need 3 repeats for a spread; the report says so")
    meta = reproduce(
        out_dir=out_dir,
        quick=args.quick,
        repeats=args.repeats,
        experiments=experiments,
        redis_url=args.redis_url,
        progress=progress,
        telemetry_interval_s=args.telemetry_interval,
    )
    if exit_code(meta):
        failed = [name for name, info in meta["experiments"].items() if info.get("status") != "ok"]
        failed += list(meta.get("render_errors", {}))
        print(
            f"qbench: error: failed: {', '.join(dict.fromkeys(failed))} (see {out_dir / 'REPORT.md'})",
            file=sys.stderr,
        )
        return 1
    print(out_dir / "REPORT.md")
    return 0
