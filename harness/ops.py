"""`qbench ops`: exact round trips and server commands of every queue operation, per preset."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from harness.counting import Cost
from harness.measured import MeasuredQueue, make_jobs
from harness.redis_server import redis_for_run
from queue_impl.config import PRESETS, Variant, parse_variant
from queue_impl.job import Job, Priority

BATCH_SIZES = (10, 50, 100, 500)
OPERATIONS = ("enqueue", "enqueue_many", "dequeue", "complete", "fail", "move_scheduled_to_ready")


@dataclass(frozen=True)
class OpCost:
    """One row of `qbench ops --json` (keys are a stable interface)."""

    preset: str
    operation: str
    batch: int
    round_trips: int
    commands: int
    client_commands: int
    commands_by_name: dict[str, int] = field(default_factory=dict)


def measure_operations(
    url: str, variants: Iterable[Variant], batches: Sequence[int] = BATCH_SIZES
) -> list[OpCost]:
    rows: list[OpCost] = []
    for variant in variants:
        with MeasuredQueue(url, variant) as mq:
            _warm_up(mq)
            rows += _measure_variant(mq, variant.label(), batches)
    return rows


def _warm_up(mq: MeasuredQueue) -> None:
    """Open the connection and load every script once, so no row pays for setup."""
    q = mq.queue
    q.enqueue_many(make_jobs(2))
    for action in ("complete", "fail"):
        job = q.dequeue(wait=True)
        assert job is not None, "warm-up dequeue found no job"
        q.complete(job) if action == "complete" else q.fail(job, "warm-up")
    q.move_scheduled_to_ready(now=2**62)
    job = q.dequeue(wait=True)
    if job is not None:
        q.complete(job)
    q.cleanup()
    q.register_consumer()


def _measure_variant(mq: MeasuredQueue, label: str, batches: Sequence[int]) -> list[OpCost]:
    q = mq.queue
    rows: list[OpCost] = []

    def row(operation: str, batch: int, action: Callable[[], object]) -> None:
        with mq.measure() as cost:
            action()
        rows.append(_row(label, operation, batch, cost))

    row("enqueue", 1, lambda: q.enqueue(Job(type="noop")))
    # A normal-priority job is ready (the default priority): what dequeue costs then.
    claimed: list[Job] = []
    row("dequeue", 1, lambda: claimed.append(_dequeue_one(mq)))
    row("complete", 1, lambda: q.complete(claimed[0]))
    q.enqueue(Job(type="noop"))
    failing = _dequeue_one(mq)
    row("fail", 1, lambda: q.fail(failing, "measured failure"))
    q.cleanup()
    q.register_consumer()
    for batch in batches:
        jobs = make_jobs(batch, priority=Priority.NORMAL)
        row("enqueue_many", batch, lambda jobs=jobs: q.enqueue_many(jobs))  # type: ignore[misc]
        q.cleanup()
        q.register_consumer()
        mq.seed_due_jobs(batch)
        moved: list[int] = []
        row(
            "move_scheduled_to_ready",
            batch,
            lambda moved=moved, batch=batch: moved.append(q.move_scheduled_to_ready(limit=batch)),  # type: ignore[misc]
        )
        if moved != [batch]:
            raise RuntimeError(f"{label}: moved {moved} of {batch} due jobs")
        q.cleanup()
        q.register_consumer()
    return rows


def _dequeue_one(mq: MeasuredQueue) -> Job:
    job = mq.queue.dequeue(wait=True)
    if job is None:
        raise RuntimeError("dequeue found no job although one was ready")
    return job


def _row(label: str, operation: str, batch: int, cost: Cost) -> OpCost:
    return OpCost(
        preset=label,
        operation=operation,
        batch=batch,
        round_trips=cost.round_trips,
        commands=cost.commands,
        client_commands=cost.client_commands,
        commands_by_name=dict(sorted(cost.server_commands.items())),
    )


def format_table(rows: Sequence[OpCost]) -> str:
    presets = list(dict.fromkeys(r.preset for r in rows))
    keys = list(dict.fromkeys((r.operation, r.batch) for r in rows))
    cell = {(r.preset, r.operation, r.batch): f"{r.round_trips} / {r.commands}" for r in rows}
    header = ["operation", "batch", *presets]
    lines = [header] + [[op, str(b), *(cell.get((p, op, b), "-") for p in presets)] for op, b in keys]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n\ncells: round trips / server commands (commands inside scripts included)"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.cli import add_redis_url_argument

    parser = subparsers.add_parser(
        "ops", help="round trips and server commands of every operation, per preset"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.add_argument(
        "--variant",
        action="append",
        dest="variants",
        metavar="SPEC",
        help="preset[+toggle=value,...]; repeatable (default: every preset)",
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, BATCH_SIZES)),
        help="batch sizes for enqueue_many and the scheduler move",
    )
    add_redis_url_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError

    variants = [parse_variant(s) for s in args.variants] if args.variants else list(PRESETS.values())
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batches: expected comma-separated integers, got {args.batches!r}") from None
    if not batches or min(batches) < 1:
        raise UsageError("--batches: every batch size must be >= 1")
    with redis_for_run(args.redis_url) as server:
        rows = measure_operations(server.url, variants, batches)
    if args.json:
        json.dump([asdict(r) for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        info = server.info
        print(f"Redis {info.version} ({info.allocator}, {info.source})\n")
        print(format_table(rows))
    return 0
