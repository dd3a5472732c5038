"""`qbench peers`: RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq and the presets, measured alike."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument
from harness.peers import DEFAULT_OUT
from harness.peers.suite import (
    REPORT_FILE,
    PeersInputError,
    load_text,
    parse_only,
    render_saved,
    run_suite,
    sizes_for,
    write_suite,
)
from harness.results.telemetry_charts import SEGMENTS_DIR
from queue_impl.connection import is_cluster_url


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "peers",
        help="RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq and the presets on the same Redis, same run",
        description=(
            "Each driver gets a fresh redis-server (or its own empty logical DB of --redis-url), "
            "its library in a virtualenv of its own (built on first use), and the same phases: "
            "enqueue, drain with ~10 workers, idle, pickup latency, memory and keys left."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, one repeat, 3 s idle")
    parser.add_argument(
        "--only", metavar="NAMES", default=None, help="comma-separated drivers (default: all ten)"
    )
    parser.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT}[-quick])")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per phase (default 10,000; quick 1,000)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of the timed phases (default 3; quick 1)"
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
        names = parse_only(args.only)
        sizes = sizes_for(quick=args.quick, jobs=args.jobs, repeats=args.repeats)
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    out_dir = Path(args.out or (DEFAULT_OUT + ("-quick" if args.quick else "")))
    url = args.redis_url or os.environ.get("REDIS_URL") or None
    if url is not None and is_cluster_url(url):
        raise UsageError("peers: the peer libraries need one Redis server, not a Redis Cluster (REDIS_URL)")
    print(
        f"qbench peers: {', '.join(names)}; {sizes.jobs:,} jobs x {sizes.repeats} repeat(s); "
        f"load {load_text()}"
    )
    telemetry_dir = out_dir / SEGMENTS_DIR
    for stale in telemetry_dir.glob("*.csv"):  # a previous run's drivers are not this run's
        stale.unlink()
    try:
        result = run_suite(
            names,
            sizes,
            url=url,
            logs_dir=out_dir / "logs",
            telemetry_dir=telemetry_dir,
            telemetry_interval_s=args.telemetry_interval,
        )
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    write_suite(result, sizes, out_dir, mode="quick" if args.quick else "full")
    print(f"load {load_text()}; wrote {out_dir / REPORT_FILE}")
    for name, reason in result.failures.items():
        print(f"FAILED {name}: {reason}")
    return 1 if result.failures else 0
