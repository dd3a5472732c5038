"""Why partitions matter on Redis Cluster: commands per shard and jobs/s, one partition vs P.

Not one of `qbench reproduce`'s experiments (it needs a cluster): `qbench cluster measure`
runs it on a three-master cluster (its own, or `--redis-url`) and writes `metrics.csv`,
`run.json`, `REPORT.md` and `charts/` like any results directory.

Per variant (e.g. `scripted` and `scripted+partitions=3`) and repeat:
- cycle (exact counts): N jobs with fixed ids (`job-000000`...) enqueued in batches, then
  taken and completed one by one by one consumer, counted on every node: server commands
  per shard, client round trips, and jobs per shard. The ids fix each job's partition,
  so every repeat runs the same commands on the same shards.
- drain (timed): N jobs prefilled, then a `WorkerPool` of W threads on one queue takes and
  completes them all: jobs/s (median and min..max over the repeats in the report).
Shards are numbered by the slots they own (shard 1 holds slot 0).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from qbench.harness.experiments import Section
from qbench.harness.infra.counting import ServerNodes
from qbench.harness.infra.measured import MeasuredQueue, load_scripts
from qbench.harness.results.render import (
    chart_link,
    count_cell,
    figure,
    markdown_table,
    save_chart,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import Row, params, parse_params
from qbench.harness.results.stats import Spread
from qbench.queue_impl.config import Variant
from qbench.queue_impl.connection import close_client, make_client, node_url
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.worker import WorkerPool

NAME = "cluster_shards"
TITLE = "Redis Cluster: commands per shard and jobs/s, one partition vs several"
BALANCE_LIMIT = 0.15
"""With a partition per master, the busiest shard may run at most 15% more commands than
the least busy one."""
JOB_TYPE = "noop"
DRAIN_TIMEOUT_S = 600.0
OBSERVED = "bytes_observed"
CYCLE_NAMESPACE = "cluster-cycle"
DRAIN_NAMESPACE = "cluster-drain"
"""Fixed namespaces: a one-partition queue then lands on the same shard in every repeat
(repeats run one after the other, each cleaning up)."""


@dataclass(frozen=True, slots=True)
class Plan:
    variants: tuple[Variant, ...]
    jobs: int = 3000
    workers: int = 8
    repeats: int = 3
    batch: int = 100


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    node: str
    slots: tuple[tuple[int, int], ...]

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def shards_of(url: str) -> list[Shard]:
    """The masters of the cluster at `url` (a `redis+cluster://` URL), numbered by the
    lowest slot each owns (one CLUSTER SLOTS)."""
    client = redis.Redis.from_url(node_url(url), socket_timeout=10)
    try:
        reply = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    ranges: dict[str, list[tuple[int, int]]] = {}
    for entry in reply:
        host, port = entry[2][0], int(entry[2][1])
        node = f"{host.decode() if isinstance(host, bytes) else host}:{port}"
        ranges.setdefault(node, []).append((int(entry[0]), int(entry[1])))
    ordered = sorted(ranges.items(), key=lambda item: min(low for low, _ in item[1]))
    return [Shard(i + 1, node, tuple(sorted(slots))) for i, (node, slots) in enumerate(ordered)]


def run(url: str, plan: Plan, progress: Callable[[str], None] = print) -> list[Row]:
    """Measure every variant of `plan` on the cluster at `url`; rows only."""
    shards = shards_of(url)
    rows: list[Row] = []
    for variant in plan.variants:
        label = variant.label()
        for repeat in range(plan.repeats):
            rows += _cycle(url, variant, plan, shards, repeat)
            rate, drain_rows = _drain(url, variant, plan, shards, repeat)
            rows += drain_rows
            progress(f"{label}: repeat {repeat + 1}/{plan.repeats}: {rate:,.0f} jobs/s")
    return rows


def _job_ids(count: int) -> list[str]:
    return [f"job-{i:06d}" for i in range(count)]


def _shard_of(queue: RedisQueue, shards: Sequence[Shard], job_id: str) -> int:
    slot = redis.crc.key_slot(queue.partition_for(job_id).keys.jobs().encode())
    return next(shard.index for shard in shards if shard.owns(slot))


def _cycle(url: str, variant: Variant, plan: Plan, shards: Sequence[Shard], repeat: int) -> list[Row]:
    label = variant.label()
    index = {shard.node: shard.index for shard in shards}
    ids = _job_ids(plan.jobs)
    with MeasuredQueue(url, variant, namespace=CYCLE_NAMESPACE, consumer="cycle") as mq:
        mq.warm_up()
        q = mq.queue
        before_memory = mq.used_memory_by_node()
        with mq.measure() as cost:
            for start in range(0, plan.jobs, plan.batch):
                q.enqueue_many([Job(type=JOB_TYPE, id=job_id) for job_id in ids[start : start + plan.batch]])
            after_memory = mq.used_memory_by_node()
            for _ in ids:
                job = q.dequeue(wait=False)
                if job is None:
                    raise RuntimeError(f"{label}: a queued job could not be dequeued")
                q.complete(job)
        if q.dequeue(wait=False) is not None:
            raise RuntimeError(f"{label}: more jobs than were enqueued")
        jobs_on = Counter(_shard_of(q, shards, job_id) for job_id in ids)
    by_node = cost.commands_by_node()
    rows = [Row(NAME, label, params(phase="cycle"), "round_trips", cost.round_trips, "round_trips", repeat)]
    for shard in shards:
        p = params(phase="cycle", shard=shard.index)
        rows += [
            Row(NAME, label, p, "commands", by_node.get(shard.node, 0), "commands", repeat),
            Row(NAME, label, p, "jobs", jobs_on[shard.index], "jobs", repeat),
            Row(
                NAME,
                label,
                p,
                "used_memory_after_enqueue",
                after_memory[shard.node] - before_memory[shard.node],
                OBSERVED,
                repeat,
            ),
        ]
    unknown = set(by_node) - set(index)
    if unknown:
        raise RuntimeError(f"commands counted on nodes that own no slots: {sorted(unknown)}")
    return rows


def _drain(
    url: str, variant: Variant, plan: Plan, shards: Sequence[Shard], repeat: int
) -> tuple[float, list[Row]]:
    label = variant.label()
    namespace = DRAIN_NAMESPACE
    producer_client = make_client(url, variant)
    worker_client = make_client(url, variant, workers=plan.workers)
    nodes = ServerNodes.connect(url)
    try:
        producer = RedisQueue(producer_client, variant, namespace=namespace, consumer="producer")
        producer.check_server()
        load_scripts(producer_client)
        for start in range(0, plan.jobs, plan.batch):
            producer.enqueue_many([Job(type=JOB_TYPE) for _ in range(min(plan.batch, plan.jobs - start))])
        queue = RedisQueue(worker_client, variant, namespace=namespace, consumer=f"drain-{repeat}")
        pool = WorkerPool(queue, {JOB_TYPE: lambda job: None}, concurrency=plan.workers)
        before = nodes.command_stats()
        started = time.perf_counter()
        pool.start()
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while pool.counters.completed < plan.jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{label}: drained {pool.counters.completed} of {plan.jobs} jobs in time"
                    )
                time.sleep(0.002)
            elapsed = time.perf_counter() - started
            after = nodes.command_stats()
        finally:
            pool.stop()
        producer.cleanup()
    finally:
        close_client(producer_client)
        close_client(worker_client)
        nodes.close()
    rate = plan.jobs / elapsed
    p = params(phase="drain", workers=plan.workers)
    rows = [
        Row(NAME, label, p, "jobs_per_s", rate, "jobs/s", repeat),
        Row(NAME, label, p, "jobs", plan.jobs, "jobs", repeat),
    ]
    for shard in shards:
        calls = sum((after[shard.node] - before[shard.node]).values())
        rows.append(
            Row(
                NAME,
                label,
                params(phase="drain", shard=shard.index, workers=plan.workers),
                "commands",
                calls,
                "commands_observed",
                repeat,
            )
        )
    return rate, rows


# -- render ------------------------------------------------------------------------------------
def _labels(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(r.variant for r in rows if r.experiment == NAME))


def _shard_numbers(rows: Sequence[Row]) -> list[int]:
    found = {int(parse_params(r.params)["shard"]) for r in rows if "shard=" in r.params}
    return sorted(found)


def _per_shard(
    rows: Sequence[Row], label: str, metric: str, phase: str, shard: int, **extra: object
) -> list[float]:
    p = params(phase=phase, shard=shard, **extra)
    return values_of(rows, variant=label, metric=metric, params=p)


def spread_of(counts: Sequence[float]) -> float:
    """(busiest - least busy) / least busy: 0 means perfectly even."""
    low, high = min(counts), max(counts)
    return (high - low) / low if low else float("inf")


def balance(rows: Sequence[Row], label: str) -> float:
    """The cycle's per-shard spread of one variant (first repeat: the counts are exact)."""
    counts = [(_per_shard(rows, label, "commands", "cycle", s) or [0.0])[0] for s in _shard_numbers(rows)]
    return spread_of(counts)


def render(rows: list[Row], charts_dir: Path) -> Section:
    labels = _labels(rows)
    shards = _shard_numbers(rows)
    w = next((parse_params(r.params)["workers"] for r in rows if r.metric == "jobs_per_s"), "?")
    body = []
    for label in labels:
        cells = [count_cell(_per_shard(rows, label, "commands", "cycle", s)) for s in shards]
        spread = balance(rows, label)
        body.append(
            [
                label,
                *cells,
                "one shard does everything" if spread == float("inf") else f"{100 * spread:.1f}%",
                count_cell(
                    values_of(rows, variant=label, metric="round_trips", params=params(phase="cycle"))
                ),
                spread_cell(
                    values_of(
                        rows, variant=label, metric="jobs_per_s", params=params(phase="drain", workers=w)
                    ),
                    digits=0,
                ),
            ]
        )
    header = ["variant", *(f"shard {s}" for s in shards), "spread", "round trips", f"jobs/s ({w} workers)"]
    jobs_body = [
        [label, *(count_cell(_per_shard(rows, label, "jobs", "cycle", s)) for s in shards)]
        for label in labels
    ]
    memory_body = [
        [
            label,
            *(
                spread_cell(
                    _per_shard(rows, label, "used_memory_after_enqueue", "cycle", s), digits=0, unit="B"
                )
                for s in shards
            ),
        ]
        for label in labels
    ]
    partitioned = [label for label in labels if "partitions=" in label]
    verdicts = []
    for label in partitioned:
        spread = balance(rows, label)
        verdict = "holds" if spread <= BALANCE_LIMIT else "does not hold"
        verdicts.append(
            (
                f"{label}: shards within {100 * BALANCE_LIMIT:.0f}% of each other",
                verdict,
                f"spread {100 * spread:.1f}%",
            )
        )
    chart = _chart(rows, labels, shards, w, charts_dir)
    markdown = "\n\n".join(
        [
            "Server commands per shard (master) for the whole cycle: every job enqueued (batches), "
            "taken and completed by one consumer. Exact: the job ids are fixed, so every repeat runs "
            "the same commands on the same shards. Spread = (busiest - least busy) / least busy.",
            markdown_table(header, body),
            "Jobs per shard (a job lives in the shard of its partition):",
            markdown_table(["variant", *(f"shard {s}" for s in shards)], jobs_body),
            "used_memory growth per shard after the enqueue (INFO used_memory, observed):",
            markdown_table(["variant", *(f"shard {s}" for s in shards)], memory_body),
            chart_link(chart),
        ]
    )
    return Section(title=TITLE, markdown=markdown, verdicts=verdicts, charts=[chart])


def _chart(
    rows: Sequence[Row], labels: Sequence[str], shards: Sequence[int], workers: str, charts_dir: Path
) -> str:
    fig, (ax_commands, ax_rate) = figure(2, width=5.6, height=3.8)
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        counts = [(_per_shard(rows, label, "commands", "cycle", s) or [0.0])[0] for s in shards]
        positions = [s + (i - (len(labels) - 1) / 2) * width for s in shards]
        ax_commands.bar(positions, counts, width=width, label=label)
    ax_commands.set_xticks(list(shards), [f"shard {s}" for s in shards])
    ax_commands.set_ylabel("server commands (cycle)")
    ax_commands.set_title("Commands per shard")
    ax_commands.legend(fontsize=8)
    medians, lows, highs = [], [], []
    for label in labels:
        found = values_of(
            rows, variant=label, metric="jobs_per_s", params=params(phase="drain", workers=workers)
        )
        spread = Spread.of(found or [0.0])
        medians.append(spread.median)
        lows.append(spread.median - spread.min)
        highs.append(spread.max - spread.median)
    ax_rate.bar(range(len(labels)), medians, yerr=[lows, highs], capsize=4, color="#888")
    ax_rate.set_xticks(range(len(labels)), list(labels), fontsize=8)
    ax_rate.set_ylabel("jobs/s (median, min..max)")
    ax_rate.set_title(f"Drain with {workers} workers")
    return save_chart(fig, charts_dir, "cluster_shards")


REPORT_FILE = "REPORT.md"
CHARTS_DIR = "charts"
REGENERATE = "qbench cluster measure --out results/cluster"


def write_report(out_dir: Path, rows: list[Row], meta: Mapping[str, Any]) -> Path:
    """REPORT.md and charts/ of a `qbench cluster measure` run, from its rows and run.json."""
    section = render(rows, out_dir / CHARTS_DIR)
    server = meta.get("server", {})
    plan = meta.get("plan", {})
    git = meta.get("git", {})
    load = [meta.get("load_avg_before"), meta.get("load_avg_after")]
    facts = [
        f"- measured {meta.get('created_at', '?')} at commit `{git.get('commit') or '?'}`"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"- Redis {server.get('version', '?')} ({server.get('allocator', '?')}), "
        f"{len(server.get('nodes', []))} masters: {', '.join(server.get('nodes', []))}",
        f"- {plan.get('jobs', '?')} jobs per variant and repeat, batches of {plan.get('batch', '?')}, "
        f"{plan.get('repeats', '?')} repeat(s); drain by {plan.get('workers', '?')} worker threads",
        f"- {meta.get('cpu', {}).get('cpu_count', '?')} CPUs; load average (1/5/15 min) before "
        f"{_load(load[0])}, after {_load(load[1])}: jobs/s depend on what else ran, the counts do not",
        f"- regenerate: `{REGENERATE}` (re-render: `qbench cluster measure --render {out_dir}`)",
    ]
    verdicts = [f"- {claim}: **{verdict}** ({why})" for claim, verdict, why in section.verdicts]
    text = "\n\n".join(
        [
            f"# {section.title}",
            "\n".join(facts),
            *(["\n".join(verdicts)] if verdicts else []),
            section.markdown,
        ]
    )
    path = out_dir / REPORT_FILE
    path.write_text(text + "\n")
    return path


def _load(value: object) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return "/".join(f"{float(v):.2f}" for v in value)
    return "?"
