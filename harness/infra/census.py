"""Where every job of a namespace is, read from Redis: the proof that no job was lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from queue_impl.codec import CorruptJobError
from queue_impl.job import PRIORITY_ORDER, Status, as_bytes, as_text
from queue_impl.queue import RedisQueue, glob_escape

SCAN_BATCH = 1000

STATUSES = ("completed", "queued", "active", "scheduled", "dead")


@dataclass
class Census:
    """Job records by status, and the stranded ones.

    A job is stranded (lost) when its record says queued, active or scheduled but its
    id is in no priority queue, processing list or the scheduled set; when its record
    says dead but its id is not in the dead-letter list; or when its record cannot be
    decoded. Nothing will ever run, retry or recover such a job.
    """

    by_status: Counter[str] = field(default_factory=Counter)
    stranded_ids: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(self.by_status.values())

    def counts(self) -> dict[str, int]:
        """`records`, each status, and `stranded`: the keys `qbench load` reports."""
        return {
            "records": self.records,
            **{status: self.by_status[status] for status in STATUSES},
            "stranded": len(self.stranded_ids),
        }


def take_census(queue: RedisQueue) -> Census:
    """SCAN every job record under `queue`'s namespace (never KEYS) and place it.

    Processing lists are those of every registered consumer and of `queue`'s own.
    """
    client, keys = queue.client, queue.keys
    placed: set[str] = set()
    for priority in PRIORITY_ORDER:
        placed.update(as_text(i) for i in client.lrange(keys.queue(priority), 0, -1))
    consumers = {as_text(c) for c in client.smembers(keys.consumers())} | {queue.consumer}
    for consumer in consumers:
        placed.update(as_text(i) for i in client.lrange(keys.processing(consumer), 0, -1))
    placed.update(as_text(i) for i in client.zrange(keys.scheduled(), 0, -1))
    dead = {as_text(i) for i in client.lrange(keys.dead(), 0, -1)}
    census = Census()
    job_prefix = keys.job("")
    names = sorted(
        as_bytes(k) for k in client.scan_iter(match=glob_escape(job_prefix) + "*", count=SCAN_BATCH)
    )
    for start in range(0, len(names), SCAN_BATCH):
        chunk = names[start : start + SCAN_BATCH]
        for name, data in zip(chunk, client.mget(chunk), strict=True):
            if data is None:
                continue  # expired between SCAN and MGET
            job_id = as_text(name).removeprefix(job_prefix)
            try:
                status = queue.codec.decode(as_bytes(data)).status
            except CorruptJobError:
                census.by_status["corrupt"] += 1
                census.stranded_ids.append(job_id)  # an unreadable record is a lost job too
                continue
            census.by_status[status.name.lower()] += 1
            holder = dead if status is Status.DEAD else None if status is Status.COMPLETED else placed
            if holder is not None and job_id not in holder:
                census.stranded_ids.append(job_id)
    return census
