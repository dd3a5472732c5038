"""An acknowledgement cut half way: what a pool error between its round trips leaves behind.

With `pool_mode=raise` every command of a multi-round-trip operation checks a
connection out of the pool on its own, and any of those checkouts can fail with
"Too many connections" while the other workers hold them all. This probe makes that
happen at each possible point, deterministically: the queue's client uses a
connection pool that, once armed, refuses every checkout after the first `k` with
the error an exhausted raise-mode pool gives (`MaxConnectionsError`). The server is
a real Redis; only the pool's refusal is staged. After each cut the probe looks for
the job: still held in the processing list (the worker can retry the call, and stale
recovery returns it if the worker dies), done, or stranded: its record not final and
its id in no queue, processing list or set, so nothing will ever run or recover it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import MaxConnectionsError

from qbench.harness.experiments.pool_runs import stranded_job_ids
from qbench.harness.infra.measured import unique_namespace
from qbench.harness.results.rows import Row, params
from qbench.queue_impl.config import Variant
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue

OPERATIONS = ("complete", "fail")
STRANDED = "jobs_stranded_by_cut"
ROUND_TRIPS = "round_trips_of_op"


class CuttingPool(redis.ConnectionPool):
    """A connection pool that, once `arm(k)` is called, lets `k` checkouts through and
    refuses every later one with `MaxConnectionsError("Too many connections")`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkouts = 0
        self.allowed: int | None = None

    def arm(self, allowed: int | None) -> None:
        """Count checkouts from now; refuse those past `allowed` (None: never refuse)."""
        self.checkouts, self.allowed = 0, allowed

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.allowed is not None and self.checkouts >= self.allowed:
            raise MaxConnectionsError("Too many connections")
        self.checkouts += 1
        return super().get_connection(*args, **kwargs)


@dataclass(frozen=True)
class Cut:
    op: str
    after: int
    """Round trips that went through before the refusals began."""
    stranded: bool


def _acknowledge(queue: RedisQueue, op: str, job: Job) -> None:
    if op == "complete":
        queue.complete(job)
    else:
        queue.fail(job, "RuntimeError: failed on purpose")  # a retry: record + scheduled set


def _held_job(queue: RedisQueue, op: str) -> Job:
    queue.enqueue(Job(type="noop", priority=Priority.NORMAL))
    job = queue.dequeue(wait=False)
    if job is None:
        raise RuntimeError(f"cut probe: the job queued for {op} could not be dequeued")
    return job


def probe(url: str, variant: Variant, ops: Iterable[str] = OPERATIONS) -> tuple[dict[str, int], list[Cut]]:
    """Round trips of each operation uncut, and every cut of it: stranded or not.

    The variant runs with conn=pool: under conn=pinned a thread checks its connection out
    once, for good, so no pool can refuse one in the middle of an operation."""
    pool = CuttingPool.from_url(url)
    client = redis.Redis(connection_pool=pool)
    cut_variant = variant.with_overrides(pool_mode="raise", conn="pool")
    queue = RedisQueue(client, cut_variant, namespace=unique_namespace("cut"))
    round_trips: dict[str, int] = {}
    cuts: list[Cut] = []
    try:
        for op in ops:
            # Uncut, twice: the first call loads any script (an extra round trip, once),
            # the second counts the checkouts the operation makes.
            for _ in range(2):
                job = _held_job(queue, op)
                pool.arm(None)
                _acknowledge(queue, op, job)
            round_trips[op] = pool.checkouts
            for after in range(1, round_trips[op]):
                job = _held_job(queue, op)
                pool.arm(after)
                try:
                    _acknowledge(queue, op, job)
                except MaxConnectionsError:
                    pass
                else:
                    raise RuntimeError(f"cut probe: {op} made fewer checkouts than when uncut")
                finally:
                    pool.arm(None)
                cuts.append(Cut(op, after, job.id in stranded_job_ids(queue)))
                # The job is now either stranded or still held: clear it for the next cut.
                queue.cleanup()
    finally:
        pool.arm(None)
        queue.cleanup()
        client.close()
        pool.disconnect()
    return round_trips, cuts


def rows(experiment: str, url: str, variants: Iterable[Variant], repeats: int) -> list[Row]:
    """Per variant and operation: its round trips, and per cut point 1 if it strands the job."""
    found: list[Row] = []
    for variant in variants:
        label = variant.label()
        for repeat in range(repeats):
            round_trips, cuts = probe(url, variant)
            for op, n in round_trips.items():
                found.append(Row(experiment, label, params(op=op), ROUND_TRIPS, n, "round_trips", repeat))
            for cut in cuts:
                p = params(cut_after=cut.after, op=cut.op)
                found.append(Row(experiment, label, p, STRANDED, int(cut.stranded), "jobs", repeat))
    return found
