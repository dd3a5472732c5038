"""`qbench peers`: the presets, the peer libraries and any driver you name, measured alike."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument
from harness.peers import DEFAULT_OUT
from harness.peers.suite import (
    REPORT_FILE,
    PeersInputError,
    load_text,
    render_saved,
    run_suite,
    select_drivers,
    sizes_for,
    write_suite,
)
from harness.results.telemetry_charts import SEGMENTS_DIR
from queue_impl.connection import is_cluster_url


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "peers",
        help="the presets, the peer libraries (RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq, BullMQ) "
        "and your own driver, measured alike",
        description=(
            "Each driver gets a fresh redis-server (or its own empty logical DB of --redis-url), "
            "its library in an environment of its own (built on first use), and the same phases: "
            "enqueue, drain with ~10 workers, idle, pickup latency at random arrival times, "
            "memory and keys left. `qbench drivers` lists the drivers."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, one repeat, 3 s idle")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        default=None,
        help="comma-separated driver names (default: every available driver, see `qbench drivers`)",
    )
    parser.add_argument(
        "--driver",
        metavar="DRIVER",
        action="append",
        default=[],
        help="a driver to measure (repeatable): a name, module:Class, path/to/file.py:Class or "
        "path/to/driver.toml; alone, only the drivers named this way run",
    )
    parser.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT}[-quick])")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per phase (default 10,000; quick 1,000)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of the timed phases (default 3; quick 1)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="S",
        help="a driver whose workers report no pickup, or whose call does not return, for S seconds "
        "fails (default 60)",
    )
    parser.add_argument(
        "--render", metavar="DIR", default=None, help="only re-render DIR's report and charts"
    )
    add_redis_url_argument(parser)
    add_telemetry_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.render:
            print(f"rendered {render_saved(Path(args.render))}")
            return 0
        specs = select_drivers(args.only, args.driver)
        sizes = sizes_for(quick=args.quick, jobs=args.jobs, repeats=args.repeats, stall_s=args.stall_timeout)
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    out_dir = Path(args.out or (DEFAULT_OUT + ("-quick" if args.quick else "")))
    url = args.redis_url or os.environ.get("REDIS_URL") or None
    if url is not None and is_cluster_url(url):
        raise UsageError("peers: the peer libraries need one Redis server, not a Redis Cluster (REDIS_URL)")
    print(
        f"qbench peers: {', '.join(spec.name for spec in specs)}; {sizes.jobs:,} jobs x "
        f"{sizes.repeats} repeat(s); load {load_text()}"
    )
    telemetry_dir = out_dir / SEGMENTS_DIR
    for stale in telemetry_dir.glob("*.csv"):  # a previous run's drivers are not this run's
        stale.unlink()
    try:
        result = run_suite(
            specs,
            sizes,
            url=url,
            logs_dir=out_dir / "logs",
            telemetry_dir=telemetry_dir,
            telemetry_interval_s=args.telemetry_interval,
        )
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    write_suite(result, sizes, out_dir, mode="quick" if args.quick else "full", command=command_line(args))
    print(f"load {load_text()}; wrote {out_dir / REPORT_FILE}")
    # One line per failed driver; the report says the run is incomplete.
    for name, reason in result.failures.items():
        print(f"qbench: error: driver {name} failed: {reason} (logs in {out_dir / 'logs'})", file=sys.stderr)
    return 1 if result.failures else 0


def command_line(args: argparse.Namespace) -> str:
    """The `qbench peers` command that repeats this run (for run.json and the report)."""
    parts = ["qbench", "peers"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts += ["--only", args.only]
    for driver in args.driver:
        parts += ["--driver", driver]
    for flag, value in (
        ("--jobs", args.jobs),
        ("--repeats", args.repeats),
        ("--stall-timeout", args.stall_timeout),
    ):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(part) for part in parts)
