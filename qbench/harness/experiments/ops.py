"""Exact round trips and server commands of every queue operation (the `ops` verb), as rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from qbench.harness.infra.counting import Cost
from qbench.harness.infra.measured import MeasuredQueue, make_jobs
from qbench.harness.results.rows import Row, params, parse_params
from qbench.queue_impl.config import Variant
from qbench.queue_impl.job import Job, Priority

BATCH_SIZES = (10, 50, 100, 500)
OPERATIONS = ("enqueue", "enqueue_many", "dequeue", "complete", "fail", "move_scheduled_to_ready")


EXPERIMENT = "ops"


@dataclass(frozen=True)
class OpCost:
    """One object of `qbench ops --json` (keys are a stable interface), rebuilt from rows."""

    preset: str
    operation: str
    batch: int
    round_trips: int
    commands: int
    client_commands: int
    commands_by_name: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_operations(
    url: str, variants: Iterable[Variant], batches: Sequence[int] = BATCH_SIZES
) -> list[Row]:
    """Rows per (variant, op, batch): `round_trips`, `client_commands`, and `commands` for
    `command=all` and for each command the server ran."""
    rows: list[Row] = []
    for variant in variants:
        with MeasuredQueue(url, variant) as mq:
            mq.warm_up()
            rows += _measure_variant(mq, variant.label(), batches)
    return rows


def _measure_variant(mq: MeasuredQueue, label: str, batches: Sequence[int]) -> list[Row]:
    q = mq.queue
    rows: list[Row] = []

    def row(operation: str, batch: int, action: Callable[[], object]) -> None:
        with mq.measure() as cost:
            action()
        rows.extend(_rows(label, operation, batch, cost))

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


def _rows(label: str, operation: str, batch: int, cost: Cost) -> list[Row]:
    cell = params(batch=batch, op=operation)
    rows = [
        Row(EXPERIMENT, label, cell, "round_trips", cost.round_trips, "round_trips"),
        Row(EXPERIMENT, label, cell, "client_commands", cost.client_commands, "commands"),
        Row(
            EXPERIMENT,
            label,
            params(batch=batch, command="all", op=operation),
            "commands",
            cost.commands,
            "commands",
        ),
    ]
    rows += [
        Row(EXPERIMENT, label, params(batch=batch, command=name, op=operation), "commands", calls, "commands")
        for name, calls in sorted(cost.server_commands.items())
    ]
    return rows


def op_costs(rows: Iterable[Row]) -> list[OpCost]:
    """The `--json` objects, in measuring order, from the rows alone."""
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    by_name: defaultdict[tuple[str, str, int], dict[str, int]] = defaultdict(dict)
    for row in rows:
        if row.experiment != EXPERIMENT:
            continue
        p = parse_params(row.params)
        key = (row.variant, p["op"], int(p["batch"]))
        cost = found.setdefault(key, {})
        command = p.get("command")
        if command is None:
            cost[row.metric] = int(row.value)
        elif command == "all":
            cost["commands"] = int(row.value)
        else:
            by_name[key][command] = int(row.value)
    return [
        OpCost(
            preset=variant,
            operation=op,
            batch=batch,
            round_trips=cost["round_trips"],
            commands=cost["commands"],
            client_commands=cost["client_commands"],
            commands_by_name=by_name[(variant, op, batch)],
        )
        for (variant, op, batch), cost in found.items()
    ]


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
