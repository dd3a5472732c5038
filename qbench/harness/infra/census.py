"""Where every job of a namespace is, read from Redis: the proof that no job was lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from qbench.queue_impl.codec import CorruptJobError
from qbench.queue_impl.job import PRIORITY_ORDER, Status, as_text
from qbench.queue_impl.queue import Partition, RedisQueue

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
    """Read every job record of `queue`'s namespace (SCAN or HSCAN, never KEYS), in every
    partition, and place it.

    Processing lists are those of every registered consumer and of `queue`'s own. A job
    is placed only by the lists of its own partition.
    """
    census = Census()
    consumers = set(queue.consumers()) | {queue.consumer}
    for part in queue.partitions:
        _count_partition(queue, part, consumers, census)
    return census


def _count_partition(queue: RedisQueue, part: Partition, consumers: set[str], census: Census) -> None:
    client, keys = queue.client, part.keys
    placed: set[str] = set()
    for priority in PRIORITY_ORDER:
        placed.update(as_text(i) for i in client.lrange(keys.queue(priority), 0, -1))
    for consumer in consumers:
        placed.update(as_text(i) for i in client.lrange(keys.processing(consumer), 0, -1))
    placed.update(as_text(i) for i in client.zrange(keys.scheduled(), 0, -1))
    dead = {as_text(i) for i in client.lrange(keys.dead(), 0, -1)}
    for job_id, data in sorted(part.records.scan(client)):
        try:
            status = queue.codec.decode(data).status
        except CorruptJobError:
            census.by_status["corrupt"] += 1
            census.stranded_ids.append(job_id)  # an unreadable record is a lost job too
            continue
        census.by_status[status.name.lower()] += 1
        holder = dead if status is Status.DEAD else None if status is Status.COMPLETED else placed
        if holder is not None and job_id not in holder:
            census.stranded_ids.append(job_id)
