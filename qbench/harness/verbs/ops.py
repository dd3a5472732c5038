"""`qbench ops`: exact round trips and server commands of every queue operation, per preset."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from qbench.harness.errors import UsageError, add_redis_url_argument, variant_arg
from qbench.harness.experiments.ops import BATCH_SIZES, format_table, measure_operations, op_costs
from qbench.harness.infra.redis_server import redis_for_run
from qbench.harness.results.rows import METRICS_FILE, run_metadata, write_metrics
from qbench.harness.results.runs import RunFolder, start_run
from qbench.queue_impl.config import PRESETS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ops",
        help="round trips and server commands of every operation, per preset",
        description="Count the round trips (client side) and server commands (INFO commandstats) "
        "of every queue operation, per preset or variant. Counts are exact on any machine.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.add_argument(
        "--variant",
        action="append",
        dest="variants",
        type=variant_arg,
        metavar="SPEC",
        help="preset[+toggle=value,...]; repeatable (default: every preset)",
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, BATCH_SIZES)),
        help="batch sizes for enqueue_many and the scheduler move",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="also write metrics.csv and run.json to DIR"
    )
    add_redis_url_argument(parser, cluster=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    variants = args.variants or list(PRESETS.values())
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batches: expected comma-separated integers, got {args.batches!r}") from None
    if not batches or min(batches) < 1:
        raise UsageError("--batches: every batch size must be >= 1")
    # With --out, the folder is this run's from the start: an earlier run's files go first.
    run = start_run(args.out, "ops", {"mode": "ops"}) if args.out is not None else contextlib.nullcontext()
    with run, redis_for_run(args.redis_url, cluster=args.cluster, allow_cluster=True) as server:
        rows = measure_operations(server.url, variants, batches)
        if isinstance(run, RunFolder):
            run.meta.update(run_metadata(server=server.info.as_dict(), mode="ops"))
            write_metrics(run.out_dir / METRICS_FILE, rows)
    costs = op_costs(rows)
    if args.json:
        json.dump([cost.as_dict() for cost in costs], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        info = server.info
        where = f", a cluster of {len(info.nodes)} masters" if info.nodes else ""
        print(f"Redis {info.version} ({info.allocator}, {info.source}{where})\n")
        print(format_table(costs))
    return 0
