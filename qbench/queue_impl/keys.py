"""Redis key layout, and the seed's two ways of building keys (`format` vs `precomputed`).

Every key starts with `qbench:{<tag>}:`. The braces are a Redis Cluster hash tag, so
all of one queue partition's keys (and the Lua scripts touching them) live in one slot;
the prefix is also what cleanup matches, so the harness never touches anyone else's keys.
A queue of one partition uses its namespace as the tag; partition K of P > 1 uses
`<namespace>~pK~N` (see `partition_tag`), so partitions land in different slots.
"""

from __future__ import annotations

import re
from typing import Protocol

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from qbench.queue_impl.config import KeyMode
from qbench.queue_impl.job import PRIORITY_ORDER, Priority

KEY_ROOT = "qbench"
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PARTITION_SEPARATOR = "~"
"""Not allowed in a namespace, so no namespace's tag is another's partition tag."""


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"bad namespace {namespace!r}: 1-64 of letters, digits, '_', '.', '-'")
    return namespace


def partition_tag(namespace: str, index: int = 0, count: int = 1) -> str:
    """The hash tag of partition `index` of a queue with `count` partitions.

    One partition: the namespace itself (the seed's layout). More: `<ns>~p<index>~<n>`
    with the smallest n >= 0 whose slot lies in the middle half of the index-th of
    `count` equal bands of the 16384 slots. A cluster whose masters own equal slot
    ranges (what `qbench cluster up` and `redis-cli --cluster create` make) then holds
    P partitions on P different masters when P is their number; the tag depends on
    nothing but its arguments, so every producer and worker computes the same keys.
    """
    check_namespace(namespace)
    if not 0 <= index < count:
        raise ValueError(f"partition {index} out of range for {count} partition(s)")
    if count == 1:
        return namespace
    band = REDIS_CLUSTER_HASH_SLOTS / count
    low, high = index * band + band / 4, (index + 1) * band - band / 4
    n = 0
    while True:
        tag = f"{namespace}{PARTITION_SEPARATOR}p{index}{PARTITION_SEPARATOR}{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        n += 1


def key_prefix(namespace: str, partition: int = 0, partitions: int = 1) -> str:
    return f"{KEY_ROOT}:{{{partition_tag(namespace, partition, partitions)}}}:"


class KeyBuilder(Protocol):
    prefix: str

    def queue(self, priority: Priority) -> str: ...
    def processing(self, consumer: str) -> str: ...
    def job(self, job_id: str) -> str: ...
    def jobs(self) -> str: ...
    def scheduled(self) -> str: ...
    def dead(self) -> str: ...
    def marker(self) -> str: ...
    def consumers(self) -> str: ...
    def homes(self) -> str: ...
    def heartbeat(self, consumer: str) -> str: ...


class FormatKeys:
    """Builds every key with a format call per use, as the seed's code did before."""

    def __init__(self, namespace: str, partition: int = 0, partitions: int = 1) -> None:
        self.prefix = key_prefix(namespace, partition, partitions)

    def queue(self, priority: Priority) -> str:
        return f"{self.prefix}queue:{priority.label}"

    def processing(self, consumer: str) -> str:
        return f"{self.prefix}processing:{consumer}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    def scheduled(self) -> str:
        return f"{self.prefix}scheduled"

    def dead(self) -> str:
        return f"{self.prefix}dead"

    def marker(self) -> str:
        return f"{self.prefix}marker"

    def consumers(self) -> str:
        return f"{self.prefix}consumers"

    def homes(self) -> str:
        return f"{self.prefix}homes"

    def heartbeat(self, consumer: str) -> str:
        return f"{self.prefix}heartbeat:{consumer}"


class PrecomputedKeys:
    """Builds the static keys once; per-job keys are one concatenation (the seed's change)."""

    def __init__(self, namespace: str, partition: int = 0, partitions: int = 1) -> None:
        prefix = key_prefix(namespace, partition, partitions)
        self.prefix = prefix
        self._queues = {p: f"{prefix}queue:{p.label}" for p in PRIORITY_ORDER}
        self._job_prefix = prefix + "job:"
        self._processing_prefix = prefix + "processing:"
        self._heartbeat_prefix = prefix + "heartbeat:"
        self._processing: dict[str, str] = {}
        self._jobs = prefix + "jobs"
        self._scheduled = prefix + "scheduled"
        self._dead = prefix + "dead"
        self._marker = prefix + "marker"
        self._consumers = prefix + "consumers"
        self._homes = prefix + "homes"

    def queue(self, priority: Priority) -> str:
        return self._queues[priority]

    def processing(self, consumer: str) -> str:
        key = self._processing.get(consumer)
        if key is None:
            key = self._processing[consumer] = self._processing_prefix + consumer
        return key

    def job(self, job_id: str) -> str:
        return self._job_prefix + job_id

    def jobs(self) -> str:
        return self._jobs

    def scheduled(self) -> str:
        return self._scheduled

    def dead(self) -> str:
        return self._dead

    def marker(self) -> str:
        return self._marker

    def consumers(self) -> str:
        return self._consumers

    def homes(self) -> str:
        return self._homes

    def heartbeat(self, consumer: str) -> str:
        return self._heartbeat_prefix + consumer


def make_keys(mode: KeyMode, namespace: str, partition: int = 0, partitions: int = 1) -> KeyBuilder:
    builder = PrecomputedKeys if mode == "precomputed" else FormatKeys
    return builder(namespace, partition, partitions)
