"""`qbench peers`: the presets, the peer libraries and any driver you name, measured alike."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from qbench.harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument
from qbench.harness.peers import DEFAULT_OUT, cluster, cluster_report
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.peers.runner import FULL, QUICK
from qbench.harness.peers.suite import (
    REPORT_FILE,
    PeersInputError,
    load_text,
    run_suite,
    select_drivers,
    sizes_for,
    write_suite,
)
from qbench.harness.results.runs import new_run_dir, start_run
from qbench.harness.results.telemetry_charts import SEGMENTS_DIR
from qbench.harness.verbs.report import rerender
from qbench.queue_impl.connection import cluster_url, is_cluster_url, redact_url


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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 jobs, one repeat, 3 s idle (with --cluster: 200 jobs, 20 s stall timeout)",
    )
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
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: a new results/<UTC time>-peers[-quick], or "
        "-peers-cluster[-quick] with --cluster; the committed runs are written only when named, "
        f"as `make peers` names {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="jobs per phase (default 10,000; quick 1,000; with --cluster 500, quick 200)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of the timed phases (default 3; quick 1)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="S",
        help="a driver whose workers report no pickup, or whose call does not return, for S seconds "
        f"fails ({stall_timeout_defaults()})",
    )
    parser.add_argument(
        "--render", metavar="DIR", default=None, help="only re-render DIR's report and charts"
    )
    add_redis_url_argument(
        parser,
        cluster=True,
        cluster_help="instead of the battery, try each driver once on a Redis Cluster: a fresh local "
        "3-master cluster per driver, or --redis-url (REDIS_URL) as a node of your own cluster, which "
        "must be empty (one driver per run); a redis+cluster:// URL implies it. Writes PEERS-CLUSTER.md",
    )
    add_telemetry_argument(parser)
    parser.set_defaults(func=run)


def stall_timeout_defaults() -> str:
    """The stall timeouts the run takes when `--stall-timeout` is not given, from the very
    sizes the battery and the cluster attempt use."""
    battery = f"default {FULL.stall_s:g} s"
    battery += ", --quick too" if QUICK.stall_s == FULL.stall_s else f", with --quick {QUICK.stall_s:g} s"
    return (
        f"{battery}; with --cluster {cluster.FULL.stall_s:g} s, "
        f"with --cluster --quick {cluster.QUICK.stall_s:g} s"
    )


def run(args: argparse.Namespace) -> int:
    url = args.redis_url or os.environ.get("REDIS_URL") or None
    try:
        if args.render:
            # An alias of `qbench report DIR`: the same code, for users' scripts.
            return rerender(Path(args.render), expect=("peers", "peers-cluster"), prefix="rendered ")
        specs = select_drivers(args.only, args.driver)
        if args.cluster or (url is not None and is_cluster_url(url)):
            return run_cluster(args, specs, url)
        sizes = sizes_for(quick=args.quick, jobs=args.jobs, repeats=args.repeats, stall_s=args.stall_timeout)
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    out_dir = Path(args.out or new_run_dir("peers" + ("-quick" if args.quick else "")))
    mode = "quick" if args.quick else "full"
    # Started before measuring: an earlier run's files go now, and a battery that fails or is
    # interrupted before writing its rows leaves run.json saying so, never the old run.
    begun = {"experiment": "peers", "mode": mode, "command": command_line(args)}
    run_folder = start_run(out_dir, "peers", begun)
    print(
        f"qbench peers: {', '.join(spec.name for spec in specs)}; {sizes.jobs:,} jobs x "
        f"{sizes.repeats} repeat(s); load {load_text()}"
    )
    try:
        with run_folder:
            result = run_suite(
                specs,
                sizes,
                url=url,
                logs_dir=out_dir / "logs",
                telemetry_dir=out_dir / SEGMENTS_DIR,
                telemetry_interval_s=args.telemetry_interval,
            )
            write_suite(result, sizes, out_dir, mode=mode, command=command_line(args), run=run_folder)
    except PeersInputError as exc:
        raise UsageError(str(exc)) from None
    print(f"load {load_text()}; wrote {out_dir / REPORT_FILE}")
    # One line per failed driver; the report says the run is incomplete.
    for name, reason in result.failures.items():
        print(f"qbench: error: driver {name} failed: {reason} (logs in {out_dir / 'logs'})", file=sys.stderr)
    return 1 if result.failures else 0


def run_cluster(args: argparse.Namespace, specs: list[DriverSpec], url: str | None) -> int:
    """`qbench peers --cluster`: one attempt per driver on a cluster; exit 1 only when qbench
    could not attempt a driver (a library that fails is an outcome)."""
    if args.repeats is not None:
        raise PeersInputError("--repeats: the cluster attempt runs once per driver")
    sizes = cluster.sizes_for(quick=args.quick, jobs=args.jobs, stall_s=args.stall_timeout)
    if url is not None:
        try:
            url = cluster_url(url)
        except ValueError as exc:
            raise PeersInputError(f"--redis-url: {exc}") from None
        cluster.check_user_cluster(url, specs)
    out_dir = Path(args.out or new_run_dir("peers-cluster" + ("-quick" if args.quick else "")))
    mode = "quick" if args.quick else "full"
    where = f"the cluster at {redact_url(url)}" if url else "a fresh 3-master cluster each"
    load_before = load_text()
    # Started before the attempts, like the battery: an earlier run's files go first.
    begun = {"experiment": cluster.EXPERIMENT, "mode": mode, "command": command_line(args)}
    run_folder = start_run(out_dir, "peers-cluster", begun)
    print(
        f"qbench peers --cluster: {', '.join(spec.name for spec in specs)}; {where}; "
        f"{sizes.jobs:,} jobs, stall timeout {sizes.stall_s:g} s; load {load_before}"
    )
    with run_folder:
        result = cluster.run_cluster_suite(specs, sizes, url=url, logs_dir=out_dir / "logs")
        report = cluster_report.write_cluster_suite(
            result,
            sizes,
            out_dir,
            mode=mode,
            url=url,
            command=command_line(args),
            load=(load_before, load_text()),
            run=run_folder,
        )
    print(f"load {load_text()}; wrote {report}")
    for name, reason in result.failures.items():
        print(f"qbench: error: driver {name} was not attempted: {reason}", file=sys.stderr)
    return 1 if result.failures else 0


def command_line(args: argparse.Namespace) -> str:
    """The `qbench peers` command that repeats this run (for run.json and the report)."""
    parts = ["qbench", "peers"]
    if args.cluster:
        parts.append("--cluster")
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
