"""`qbench chaos`: inject faults into live queues; count jobs submitted, completed, duplicated, lost.

`--presets` (the default) runs the reference presets in-process cases; `--driver X` runs
the same driver cases (worker kill, Redis restart, connection faults, failover) for any
driver, the presets included (`--driver scripted`)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from qbench.harness.chaos.cases import CASES, FULL, QUICK, REPORT_FILE, run_chaos, violations
from qbench.harness.chaos.drivers import (
    DRIVER_CASES,
    ChaosInputError,
    check_testable,
)
from qbench.harness.chaos.drivers import FULL as DRIVER_FULL
from qbench.harness.chaos.drivers import QUICK as DRIVER_QUICK
from qbench.harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument, comma_list
from qbench.harness.results.rows import METRICS_FILE, RUN_FILE
from qbench.harness.results.runs import new_run_dir
from qbench.queue_impl.config import PRESETS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="kill workers, race schedulers, restart Redis, cut links, fail over; count jobs",
        description="Inject faults into live queues and account for every job: submitted, completed, "
        "duplicated, lost. --presets: the reference presets' in-process cases; --driver X: the same "
        "driver cases for any driver. Exit 1 when a guarantee is violated or a case cannot finish.",
    )
    parser.add_argument("--quick", action="store_true", help="small runs (what `make test` runs)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default: a new results/<UTC time>-chaos[-quick], with --driver "
        "results/<UTC time>-reliability[-quick]; the committed runs are written only when named)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated cases: among {', '.join(CASES)} (presets, the default) or "
        f"{', '.join(DRIVER_CASES)} (--driver; default all)",
    )
    parser.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    parser.add_argument(
        "--driver",
        action="append",
        default=[],
        metavar="X",
        help="fault-test a driver: a name (`scripted`, `rq`, `bullmq`...), `module:Class`, "
        "`path/file.py:Class` or a driver.toml; repeat it or give a comma list",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for kill moments and job durations")
    add_redis_url_argument(parser)
    add_telemetry_argument(parser)
    parser.set_defaults(func=run)


def default_out(args: argparse.Namespace) -> Path:
    """--out, or a new `results/<UTC time>-chaos[-quick]` (`-reliability[-quick]` with
    --driver): a scratch run never overwrites the committed results/chaos or results/reliability."""
    if args.out is not None:
        return Path(args.out)
    return new_run_dir(("reliability" if args.driver else "chaos") + ("-quick" if args.quick else ""))


def run(args: argparse.Namespace) -> int:
    if args.driver:
        return run_drivers(args)
    # An empty --only/--presets is an error (comma_list says so), not "all".
    cases = comma_list(",".join(CASES) if args.only is None else args.only, CASES, "--only")
    presets_text = ",".join(PRESETS) if args.presets is None else args.presets
    presets = comma_list(presets_text, list(PRESETS), "--presets")
    out = default_out(args)
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


def run_drivers(args: argparse.Namespace) -> int:
    # Imported here: the driver registry loads every entry point, which the presets' run needs not.
    from qbench.harness.chaos.report import REPORT_FILE as RELIABILITY_FILE
    from qbench.harness.chaos.report import run_reliability
    from qbench.harness.peers.suite import PeersInputError, select_drivers

    if args.presets is not None:
        raise UsageError("--presets and --driver: choose one (a preset is a driver too: --driver scripted)")
    if args.redis_url:
        raise UsageError(
            "--driver runs every case on servers it starts (it restarts and fails them over); "
            "drop --redis-url"
        )
    cases = comma_list(",".join(DRIVER_CASES) if args.only is None else args.only, DRIVER_CASES, "--only")
    names = [name.strip() for text in args.driver for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--driver: no driver named")
    try:
        specs = select_drivers(None, names)
        for spec in specs:
            check_testable(spec)
    except (PeersInputError, ChaosInputError) as exc:
        raise UsageError(str(exc)) from None
    out = default_out(args)
    command = "qbench chaos " + " ".join(
        [
            *(f"--driver {shlex.quote(n)}" for n in names),
            *(["--quick"] if args.quick else []),
            *([f"--only {','.join(cases)}"] if args.only else []),
            f"--seed {args.seed}",
        ]
    )
    started = time.monotonic()
    problems = run_reliability(
        specs,
        cases=cases,
        scale=DRIVER_QUICK if args.quick else DRIVER_FULL,
        seed=args.seed,
        out=out,
        mode="quick" if args.quick else "full",
        command=command,
    )
    for problem in problems:
        print(f"qbench chaos: {problem}", file=sys.stderr)
    print(
        f"wrote {out / METRICS_FILE}, {out / RUN_FILE}, {out / RELIABILITY_FILE} "
        f"({time.monotonic() - started:.0f}s)"
    )
    return 1 if problems else 0
