"""Reference Redis job queue whose every optimization from the seed PR is a toggle."""

from qbench.queue_impl.config import PRESETS, Variant, parse_variant
from qbench.queue_impl.job import Job, Priority, Status
from qbench.queue_impl.queue import QueueStats, RedisQueue

__all__ = [
    "PRESETS",
    "Job",
    "Priority",
    "QueueStats",
    "RedisQueue",
    "Status",
    "Variant",
    "parse_variant",
]
