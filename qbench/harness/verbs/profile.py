"""`qbench profile SCENARIO --variant V`: a worker service under scalene (or py-spy) during a load run."""

from __future__ import annotations

import argparse
import sys

from qbench.harness.errors import UsageError
from qbench.harness.load.profile import (
    DEFAULT_OUT_ROOT,
    TOOLS,
    ProfileError,
    ProfilerMissingError,
    run_profile,
)
from qbench.harness.verbs.load import add_common_arguments, plan_from_args


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="profile a worker service (scalene/py-spy) during a load run",
        description="Run a load scenario and, beside it, a worker service under a profiler.",
    )
    add_common_arguments(parser)
    parser.add_argument("--tool", choices=TOOLS, default="scalene", help="profiler (default scalene)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads of the profiled worker")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    plan = plan_from_args(args)
    out_dir = args.out or DEFAULT_OUT_ROOT / plan.workload.name / plan.label
    print(f"profile {plan.workload.name} · {plan.label} with {args.tool}: {plan.duration_s:g} s", flush=True)
    try:
        result = run_profile(
            plan,
            out_dir,
            tool=args.tool,
            concurrency=args.concurrency,
            redis_url=args.redis_url,
            charts=not args.no_charts,
        )
    except ProfilerMissingError as exc:
        raise UsageError(str(exc)) from None
    except ProfileError as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return 1
    print(result.load_summary)
    print(result.profile_summary)
    print(f"results and profile in {out_dir}")
    return 0
