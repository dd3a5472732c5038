"""The job as the queue sees it, independent of how a codec stores it."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    """Values match `qbench.Priority` in proto/job.proto."""

    NORMAL = 0
    HIGH = 1
    LOW = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown priority {value!r}: expected high, normal or low") from None


PRIORITY_ORDER: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
"""Dequeue order: a worker always takes the highest non-empty priority first."""


class Status(enum.IntEnum):
    """Values match `qbench.Status` in proto/job.proto."""

    QUEUED = 0
    ACTIVE = 1
    COMPLETED = 2
    SCHEDULED = 3
    DEAD = 4


_UINT32_MAX = 2**32 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def now_us() -> int:
    """Wall-clock Unix time in microseconds (comparable across processes on one host)."""
    return time.time_ns() // 1000


@dataclass(slots=True, kw_only=True)
class Job:
    """One unit of work. `created_at_us` is stamped at construction (enqueue time)."""

    type: str
    payload: bytes = b""
    priority: Priority = Priority.NORMAL
    max_retries: int = 3
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    created_at_us: int = field(default_factory=now_us)
    scheduled_at_us: int = 0
    started_at_us: int = 0
    finished_at_us: int = 0
    last_error: str = ""
    status: Status = Status.QUEUED

    def __post_init__(self) -> None:
        if not self.type or not isinstance(self.type, str):
            raise ValueError("job type must be a non-empty string")
        if not self.id or not isinstance(self.id, str):
            raise ValueError("job id must be a non-empty string")
        if not isinstance(self.payload, bytes):
            raise ValueError("job payload must be bytes")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        # The record's field widths (uint32 counters, int64 times): a value outside
        # them would only fail later, inside a codec, with a less useful message.
        for name in ("attempts", "max_retries"):
            if not 0 <= getattr(self, name) <= _UINT32_MAX:
                raise ValueError(f"{name} must be between 0 and {_UINT32_MAX}")
        for name in ("created_at_us", "scheduled_at_us", "started_at_us", "finished_at_us"):
            if not _INT64_MIN <= getattr(self, name) <= _INT64_MAX:
                raise ValueError(f"{name} must fit in a signed 64-bit integer")
        self.priority = Priority.parse(self.priority)
        self.status = Status(self.status)


def as_bytes(value: object) -> bytes:
    """A Redis reply as bytes (redis-py types replies as `bytes | str`)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected a bulk string reply, got {type(value).__name__}")


def as_text(value: object) -> str:
    return as_bytes(value).decode()
