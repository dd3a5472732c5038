"""`qbench cluster`: a local Redis Cluster (up, down) and the per-shard measurement."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from qbench.harness.errors import UsageError, add_redis_url_argument, variant_arg
from qbench.harness.experiments import cluster_shards
from qbench.harness.infra.cluster_state import (
    DEFAULT_STATE_FILE,
    ClusterStateError,
    read_state,
    record,
    running_nodes,
    stop_detached,
    write_state,
)
from qbench.harness.infra.redis_server import ClusterProcess, ProvisionedRedis, redis_for_run
from qbench.harness.results.rows import METRICS_FILE, run_metadata, write_metrics
from qbench.harness.results.runs import new_run_dir, start_run
from qbench.harness.verbs.report import rerender
from qbench.queue_impl.config import PRESETS, Variant
from qbench.queue_impl.connection import redact_url

DEFAULT_PARTITIONS = "1,3"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="a local Redis Cluster (up/down) and commands per shard (measure)",
        description="Start or stop a local Redis Cluster from the pip-installed redis-server, or "
        "measure how a queue's commands spread over a cluster's shards.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    actions.required = True

    up = actions.add_parser(
        "up",
        help="start a cluster on free loopback ports; print its URL",
        description="Start MASTERS cluster-enabled redis-servers (and REPLICAS replicas each) on "
        "free 127.0.0.1 ports, join them, and print the redis+cluster:// URL. In the foreground "
        "the cluster lives until Ctrl-C or SIGTERM; with --detach it keeps running and "
        "`qbench cluster down` stops it.",
    )
    up.add_argument("--masters", type=_count(1, 16), default=3, help="default: %(default)s")
    up.add_argument("--replicas", type=_count(0, 4), default=0, help="replicas per master (default 0)")
    up.add_argument("--detach", action="store_true", help="return at once; the state file records the nodes")
    up.add_argument(
        "--state-file", type=Path, default=DEFAULT_STATE_FILE, help="with --detach (default: %(default)s)"
    )
    up.set_defaults(func=run_up)

    down = actions.add_parser(
        "down",
        help="stop a cluster started with --detach",
        description="Stop the nodes a state file records, and only while each pid is still the "
        "redis-server qbench started (same start time, binary and port); remove their data.",
    )
    down.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help="default: %(default)s")
    down.set_defaults(func=run_down)

    measure = actions.add_parser(
        "measure",
        help="commands per shard and jobs/s for 1 and P partitions",
        description="Run JOBS jobs through each variant on a 3-master cluster (its own, or "
        "--redis-url) with each partition count: exact server commands per shard for an "
        "enqueue+take+complete cycle, and jobs/s of a worker pool draining them. Writes "
        "metrics.csv, run.json, REPORT.md and charts/.",
    )
    measure.add_argument("--out", type=Path, default=None, help="default: a new results/<UTC time>-cluster")
    measure.add_argument(
        "--variant",
        action="append",
        dest="variants",
        type=variant_arg,
        metavar="SPEC",
        help="preset[+toggle=value,...]; repeatable (default: scripted)",
    )
    measure.add_argument(
        "--partitions", default=DEFAULT_PARTITIONS, help="partition counts, comma-separated (default 1,3)"
    )
    measure.add_argument("--jobs", type=_count(1, 1_000_000), default=3000, help="default: %(default)s")
    measure.add_argument("--workers", type=_count(1, 256), default=8, help="drain threads (default 8)")
    measure.add_argument("--repeats", type=_count(1, 100), default=3, help="default: %(default)s")
    measure.add_argument("--render", type=Path, metavar="DIR", help="only re-render DIR's report and chart")
    add_redis_url_argument(measure, cluster=True)
    measure.set_defaults(func=run_measure)


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return parse


# -- up / down -----------------------------------------------------------------------------------
def run_up(args: argparse.Namespace) -> int:
    if args.detach:
        _refuse_if_running(args.state_file)
    cluster = ClusterProcess(masters=args.masters, replicas=args.replicas, detached=args.detach)
    cluster.start()
    if args.detach:
        try:
            write_state(args.state_file, record(cluster))
        except BaseException:
            cluster.stop()
            raise
        print(cluster.url)
        return 0
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(cluster.url, flush=True)
        print(f"{len(cluster.nodes)} nodes up (pid {os.getpid()}); Ctrl-C stops them", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _refuse_if_running(path: Path) -> None:
    if not path.exists():
        return
    try:
        state = read_state(path)
    except ClusterStateError as exc:
        raise UsageError(f"{exc}: remove it or give another --state-file") from None
    if running_nodes(state):
        raise UsageError(f"a cluster from {path} is running ({state.url}): `qbench cluster down` first")


def run_down(args: argparse.Namespace) -> int:
    try:
        state = read_state(args.state_file)
    except ClusterStateError as exc:
        raise UsageError(str(exc)) from None
    report = stop_detached(state)
    args.state_file.unlink(missing_ok=True)
    print(
        f"stopped {len(report.stopped)} node(s) of {state.url}"
        + (f"; {len(report.gone)} had already exited" if report.gone else "")
    )
    if report.not_ours:
        pids = ", ".join(map(str, report.not_ours))
        print(f"left alone: pid {pids} (no longer the redis-server qbench started)")
    return 0


# -- measure -------------------------------------------------------------------------------------
def run_measure(args: argparse.Namespace) -> int:
    if args.render is not None:
        return _render(args.render)
    variants = _variants(args.variants or [PRESETS["scripted"]], args.partitions)
    plan = cluster_shards.Plan(
        variants=tuple(variants), jobs=args.jobs, workers=args.workers, repeats=args.repeats
    )
    load_before = os.getloadavg()
    args.out = args.out or new_run_dir("cluster")
    run = start_run(args.out, "cluster", {"mode": "cluster", "experiment": cluster_shards.NAME})
    with run, redis_for_run(args.redis_url, cluster=True) as server:
        print(
            f"cluster {redact_url(server.url)}: {len(server.info.nodes)} masters, Redis {server.info.version}"
        )
        if len(server.info.nodes) < 2:
            raise UsageError(
                f"{redact_url(server.url)} has {len(server.info.nodes)} master(s): a cluster needs several"
            )
        rows = cluster_shards.run(server.url, plan, progress=print)
        run.meta.update(_cluster_meta(server, variants, plan, load_before))
        write_metrics(args.out / METRICS_FILE, rows)
        run.checkpoint()
        path = cluster_shards.write_report(args.out, rows, run.meta)
    print(f"wrote {path}")
    return 0


def _cluster_meta(
    server: ProvisionedRedis,
    variants: list[Variant],
    plan: cluster_shards.Plan,
    load_before: tuple[float, ...],
) -> dict[str, Any]:
    return run_metadata(
        server=server.info.as_dict(),
        mode="cluster",
        extra={
            "experiment": cluster_shards.NAME,
            "plan": {
                "variants": [v.label() for v in variants],
                "jobs": plan.jobs,
                "workers": plan.workers,
                "repeats": plan.repeats,
                "batch": plan.batch,
            },
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
    )


def _variants(bases: list[Variant], partitions: str) -> list[Variant]:
    try:
        counts = [int(p) for p in partitions.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--partitions: expected comma-separated integers, got {partitions!r}") from None
    if not counts:
        raise UsageError("--partitions: give at least one partition count")
    try:
        return [base.with_overrides(partitions=count) for base in bases for count in counts]
    except ValueError as exc:
        raise UsageError(f"--partitions: {exc}") from None


def _render(out_dir: Path) -> int:
    """`cluster measure --render DIR`: an alias of `qbench report DIR` (the same code)."""
    if not (out_dir / METRICS_FILE).is_file():
        raise UsageError(f"{out_dir}: no {METRICS_FILE} (not a `qbench cluster measure` run)")
    return rerender(out_dir, expect=("cluster",), prefix="rendered ")
