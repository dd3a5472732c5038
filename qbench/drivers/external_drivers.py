"""qbench's own external drivers: queues written in other languages (Node.js), each in a
folder of its own under `drivers/` at the root of the repository (`driver.toml`, the
producer and worker scripts, a committed lock file). The classes are made on first use,
so one missing folder does not hide the others.

Each library's class adds what a fault test (`qbench chaos --driver`) asks: its delivery
promise, recovery window and Sentinel setup, and a census of the library's own Redis
structures, read here (in qbench's environment, with redis-py) by their documented key
names. A labelled configuration (`bullmq+stalled_interval=5000`) is the same folder run
with its settings passed to the worker command in the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from qbench.driver import QUEUE_NAME, Capability
from qbench.drivers.faults import census, json_field, sync_client
from qbench.external import ExternalDriver, external_driver_class

DRIVERS_DIR = Path(__file__).resolve().parent


class _CensusMixin(ExternalDriver):
    """Census and settings shared by the Node drivers (see the module docstring)."""

    capabilities = frozenset({Capability.CENSUS})
    settings_env: ClassVar[dict[str, str]] = {}
    """Environment given to the producer and worker commands (a configuration's settings)."""
    prefix: ClassVar[str] = ""
    failed_keys: ClassVar[tuple[str, ...]] = ()
    pending_keys: ClassVar[tuple[str, ...]] = ()

    def _env(self, **extra: str) -> dict[str, str]:
        return super()._env(**self.settings_env, **extra)

    def _job_sent_us(self, client: Any, job: bytes) -> int | None:
        raise NotImplementedError

    def _members(self, client: Any, key: str) -> list[bytes]:
        kind = client.type(key)
        if kind == b"list":
            return list(client.lrange(key, 0, -1))
        if kind == b"set":
            return list(client.smembers(key))
        if kind == b"zset":
            return list(client.zrange(key, 0, -1))
        return []

    def census(self) -> dict[str, Any]:
        client = sync_client(self.url, socket_timeout=10)
        try:

            def ids(keys: tuple[str, ...]) -> list[int]:
                jobs = [job for key in keys for job in self._members(client, self.prefix + key)]
                return [sent for sent in (self._job_sent_us(client, job) for job in jobs) if sent is not None]

            return census(ids(self.failed_keys), ids(self.pending_keys))
        finally:
            client.close()


class _BullMQ(_CensusMixin):
    """BullMQ: a job's data is the `data` field of its hash `bull:QUEUE:ID`."""

    sentinel_setup = "ioredis `sentinels` + `name` connection option (BullMQ takes any ioredis connection)"
    delivery = "at-least-once"
    recovery_window_s = 90.0
    """A dead worker's job lock expires after lockDuration (30 s). The stalled-job check runs
    every stalledInterval (30 s) in two phases (moveStalledJobsToWait.lua): one check marks
    the active jobs, a later one moves those whose lock is gone back to wait, so up to
    lockDuration + 2 x stalledInterval (maxStalledCount 1: a second stall fails it)."""
    prefix = f"bull:{QUEUE_NAME}:"
    failed_keys = ("failed",)
    pending_keys = ("wait", "active", "paused", "delayed", "prioritized", "waiting-children")

    def _job_sent_us(self, client: Any, job: bytes) -> int | None:
        sent = json_field(client.hget(self.prefix + job.decode(), "data"), "sent_us")
        return int(sent) if sent is not None else None


class _BeeQueue(_CensusMixin):
    """Bee-Queue: every job's JSON (`{"data": ..., "status": ...}`) in the hash `bq:QUEUE:jobs`."""

    delivery = ""
    """Its README promises at-least-once only when a process runs checkStalledJobs, which the
    defaults do not."""
    recovery_window_s = 0.0
    prefix = f"bq:{QUEUE_NAME}:"
    failed_keys = ("failed",)
    pending_keys = ("waiting", "active", "delayed")

    def _job_sent_us(self, client: Any, job: bytes) -> int | None:
        sent = json_field(client.hget(self.prefix + "jobs", job), "data", "sent_us")
        return int(sent) if sent is not None else None


CLASSES: dict[str, tuple[str, type[_CensusMixin], dict[str, Any]]] = {
    "BullMQDriver": ("bullmq", _BullMQ, {}),
    "BullMQStalledDriver": (
        "bullmq",
        _BullMQ,
        {
            "name": "bullmq+stalled_interval=5000",
            "cluster_setup": "",  # a fault-test configuration: a single server or a Sentinel
            "recovery_window_s": 15.0,  # lockDuration + 2 x stalledInterval (see _BullMQ)
            "settings_env": {
                "QBENCH_BULLMQ_WORKER_OPTIONS": json.dumps(
                    {"lockDuration": 5000, "stalledInterval": 5000, "maxStalledCount": 3}
                )
            },
            "__doc__": "BullMQ's stalled-job checker, made prompt: lockDuration and stalledInterval "
            "5 s, and a job may stall 3 times before it fails (maxStalledCount=3).",
        },
    ),
    "BeeQueueDriver": ("bee-queue", _BeeQueue, {}),
    "BeeQueueStalledDriver": (
        "bee-queue",
        _BeeQueue,
        {
            "name": "bee-queue+check_stalled=5000",
            "delivery": "at-least-once",
            "recovery_window_s": 10.0,
            "settings_env": {"QBENCH_BEEQUEUE_STALL_CHECK_MS": "5000"},
            "__doc__": "Bee-Queue's at-least-once delivery as its README sets it up: the worker "
            "runs queue.checkStalledJobs(5000) with stallInterval 5000.",
        },
    ),
}
"""Entry-point attribute -> (folder under `drivers/`, the library's class, a configuration's overrides)."""
FOLDERS = {attr: folder for attr, (folder, _, _) in CLASSES.items()}
_MADE: dict[str, type[ExternalDriver]] = {}


def __getattr__(attr: str) -> type[ExternalDriver]:
    if attr not in CLASSES:
        raise AttributeError(attr)
    if attr not in _MADE:
        folder, library, overrides = CLASSES[attr]
        base = external_driver_class(DRIVERS_DIR / folder / "driver.toml")
        attrs = {"__module__": __name__, **overrides}
        _MADE[attr] = type(attr, (library, base), attrs)
    return _MADE[attr]
