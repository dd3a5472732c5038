"""Redis key layout, and the seed's two ways of building keys (`format` vs `precomputed`).

Every key starts with `qbench:{<namespace>}:`. The braces are a Redis Cluster hash tag,
so all of one queue's keys (and the Lua scripts touching them) live in one slot; the
prefix is also what cleanup matches, so the harness never touches anyone else's keys.
"""

from __future__ import annotations

import re
from typing import Protocol

from queue_impl.config import KeyMode
from queue_impl.job import PRIORITY_ORDER, Priority

KEY_ROOT = "qbench"
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def key_prefix(namespace: str) -> str:
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"bad namespace {namespace!r}: 1-64 of letters, digits, '_', '.', '-'")
    return f"{KEY_ROOT}:{{{namespace}}}:"


class KeyBuilder(Protocol):
    prefix: str

    def queue(self, priority: Priority) -> str: ...
    def processing(self, consumer: str) -> str: ...
    def job(self, job_id: str) -> str: ...
    def scheduled(self) -> str: ...
    def dead(self) -> str: ...
    def marker(self) -> str: ...
    def consumers(self) -> str: ...
    def heartbeat(self, consumer: str) -> str: ...


class FormatKeys:
    """Builds every key with a format call per use, as the seed's code did before."""

    def __init__(self, namespace: str) -> None:
        self.prefix = key_prefix(namespace)

    def queue(self, priority: Priority) -> str:
        return f"{self.prefix}queue:{priority.label}"

    def processing(self, consumer: str) -> str:
        return f"{self.prefix}processing:{consumer}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def scheduled(self) -> str:
        return f"{self.prefix}scheduled"

    def dead(self) -> str:
        return f"{self.prefix}dead"

    def marker(self) -> str:
        return f"{self.prefix}marker"

    def consumers(self) -> str:
        return f"{self.prefix}consumers"

    def heartbeat(self, consumer: str) -> str:
        return f"{self.prefix}heartbeat:{consumer}"


class PrecomputedKeys:
    """Builds the static keys once; per-job keys are one concatenation (the seed's change)."""

    def __init__(self, namespace: str) -> None:
        prefix = key_prefix(namespace)
        self.prefix = prefix
        self._queues = {p: f"{prefix}queue:{p.label}" for p in PRIORITY_ORDER}
        self._job_prefix = prefix + "job:"
        self._processing_prefix = prefix + "processing:"
        self._heartbeat_prefix = prefix + "heartbeat:"
        self._processing: dict[str, str] = {}
        self._scheduled = prefix + "scheduled"
        self._dead = prefix + "dead"
        self._marker = prefix + "marker"
        self._consumers = prefix + "consumers"

    def queue(self, priority: Priority) -> str:
        return self._queues[priority]

    def processing(self, consumer: str) -> str:
        key = self._processing.get(consumer)
        if key is None:
            key = self._processing[consumer] = self._processing_prefix + consumer
        return key

    def job(self, job_id: str) -> str:
        return self._job_prefix + job_id

    def scheduled(self) -> str:
        return self._scheduled

    def dead(self) -> str:
        return self._dead

    def marker(self) -> str:
        return self._marker

    def consumers(self) -> str:
        return self._consumers

    def heartbeat(self, consumer: str) -> str:
        return self._heartbeat_prefix + consumer


def make_keys(mode: KeyMode, namespace: str) -> KeyBuilder:
    return PrecomputedKeys(namespace) if mode == "precomputed" else FormatKeys(namespace)
