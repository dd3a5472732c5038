"""The public driver interface: implement `Driver` and qbench measures your queue.

A driver drives one queue library through its ordinary API. qbench runs it in
subprocesses: one *producer* process calls `enqueue...`, and the worker processes each
call `run_worker`, which runs the library's workers until SIGTERM. Every job's handler
calls `record_pickup(sent_at)` first thing; qbench counts those lines, so it measures
processing rate and pickup latency the same way for every library, and measures
commands, round trips, memory and keys left at Redis itself.

Minimal driver (the library imported inside the methods, so qbench can read the class
in its own environment without the library installed there):

    from qbench.driver import Driver, record_pickup

    def noop(sent_at: float) -> None:
        record_pickup(sent_at)

    class MyQueueDriver(Driver):
        name = "myqueue"                # the `variant` column of the results
        distribution = "myqueue"        # the package whose version is reported
        requirements = "requirements.txt"   # beside this module: its own virtualenv

        def enqueue(self, sent_at: float) -> None:
            self.queue.put(noop, sent_at)

        def run_worker(self, *, index: int) -> None:
            ...  # run the library's worker until SIGTERM, then stop it cleanly

Register it with an entry point in the group `qbench.drivers` (`myqueue =
"mypackage.driver:MyQueueDriver"`) or name it on the command line (`--driver
mypackage.driver:MyQueueDriver`, `--driver path/to/driver.py:MyQueueDriver`).

This module imports the standard library only: it is imported inside each driver's own
virtualenv. It is versioned by `API_VERSION`; names here change only with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from enum import StrEnum
from importlib import metadata
from typing import Any, ClassVar, TypeVar

__all__ = [
    "API_VERSION",
    "CLUSTER_SCHEMES",
    "DELIVERY",
    "ENV_CHAOS",
    "ENV_CONCURRENCY",
    "ENV_COUNTERS",
    "ENV_JOB_MS",
    "ENV_QUEUE",
    "ENV_REDIS_URL",
    "ENV_SENTINEL_ADDRESS",
    "ENV_SENTINEL_MASTER",
    "ENV_SINK",
    "ENV_SINK_KEY",
    "ENV_SINK_REDIS_URL",
    "ENV_WORKER_INDEX",
    "PRIORITIES",
    "QUEUE_NAME",
    "SENTINEL_SCHEMES",
    "AsyncDriver",
    "Capability",
    "Driver",
    "Op",
    "arecord_pickup",
    "cluster_node_url",
    "driver_problems",
    "job_duration_s",
    "record_pickup",
    "sentinel_address",
]

API_VERSION = 1
"""Version of this interface (and of the external-process contract in `qbench.external`)."""

T = TypeVar("T")

ENV_REDIS_URL = "QBENCH_REDIS_URL"
"""The Redis the driver must use (a fresh server, or an empty logical DB; on a Redis
Cluster, a `redis+cluster://` URL for a driver that declares `cluster_setup`)."""
ENV_QUEUE = "QBENCH_QUEUE"
"""Queue (or namespace) name to use, where the library lets one choose."""
ENV_CONCURRENCY = "QBENCH_CONCURRENCY"
"""How many jobs the workers should run at once, over all worker processes."""
ENV_WORKER_INDEX = "QBENCH_WORKER_INDEX"
"""Index of this worker process, 0..worker_processes()-1."""
ENV_SINK = "QBENCH_SINK"
"""File each handler appends its `sent_us started_us` line to."""
ENV_SINK_REDIS_URL = "QBENCH_SINK_REDIS_URL"
"""Set instead of ENV_SINK for workers that report to a side Redis: RPUSH each line to the
list named by ENV_SINK_KEY on this server (external drivers with `sink = "redis"`)."""
ENV_SINK_KEY = "QBENCH_SINK_KEY"
ENV_COUNTERS = "QBENCH_COUNTERS"
"""Set to `1` in a producer's environment when qbench will ask it for `Driver.counters`:
a driver with `Capability.ROUND_TRIPS` counts only then (counting costs time in every
call, which a run that does not read the counts should not pay)."""

ENV_JOB_MS = "QBENCH_JOB_MS"
"""Set in a fault-test run (`qbench chaos`) in the workers' environment: each job takes
this many milliseconds. `record_pickup` (or `arecord_pickup` in an async handler) then
writes its start line, sleeps that long, and writes a finish line (`sent_us finished_us
done`), so a worker killed mid-job leaves a start without a finish. Unset: no sleep, one
line, exactly as before."""
ENV_CHAOS = "QBENCH_CHAOS"
"""Set to `1` in every process of a fault-test run: a driver runs what its library
documents for recovering a dead worker's jobs (a scheduler, a reaper) beside its workers,
as a deployment that expects workers to die would."""
ENV_SENTINEL_MASTER = "QBENCH_SENTINEL_MASTER"
"""Given with a `redis+sentinel://` URL (drivers that declare `sentinel_setup`): the master
name the Sentinel monitors."""
ENV_SENTINEL_ADDRESS = "QBENCH_SENTINEL_ADDRESS"
"""Given with a `redis+sentinel://` URL: the Sentinel's `HOST:PORT`."""

DELIVERY = ("at-least-once", "at-most-once", "best-effort")
"""What a driver may declare as its queue's promise (`Driver.delivery`); "" declares none."""

QUEUE_NAME = "qbench_peers"
"""The queue name qbench passes in ENV_QUEUE."""
PRIORITIES = ("high", "normal", "low")
"""Priorities `enqueue_priority` receives."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Schemes of a Redis Cluster URL, and of its nodes' URLs."""
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
"""Schemes of a Sentinel URL (`redis+sentinel://HOST:PORT/MASTER`), and of the servers'."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+=-]*$")
"""Driver names: what the `variant` column and `--only a,b` can hold."""


class Op(StrEnum):
    """Operations a driver can support; `Driver.operations` lists its own."""

    ENQUEUE = "enqueue"
    """One job per call (every driver)."""
    ENQUEUE_MANY = "enqueue_many"
    """The library's documented bulk call: `enqueue_many`."""
    PRIORITIES = "priorities"
    """Jobs of priority high, normal or low: `enqueue_priority`."""


class Capability(StrEnum):
    """What a driver can do for qbench beyond its operations; `Driver.capabilities` lists
    its own. A driver that declares none runs as every driver always has."""

    ROUND_TRIPS = "round_trips"
    """The driver's client counts its own round trips to Redis and the commands they
    carried (`Driver.counters`), so qbench can report round trips per job as the client
    sees them, beside the server's count. It counts when `ENV_COUNTERS` is `1`."""
    CENSUS = "census"
    """The driver says where its library holds jobs that did not complete
    (`Driver.census`): failed or dead, and still pending, each by the `sent_us` the job
    carries. A fault test then tells a visibly failed or stuck job from a lost one."""


def _append_sink(line: bytes) -> None:
    fd = os.open(os.environ[ENV_SINK], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)


def job_duration_s() -> float:
    """How long each job should take, in seconds: ENV_JOB_MS (a fault-test run), else 0."""
    text = os.environ.get(ENV_JOB_MS, "")
    return float(text) / 1000.0 if text else 0.0


def _record_start(sent_at: float, priority: str | None) -> None:
    line = b"%d %d" % (round(sent_at * 1e6), time.time_ns() // 1000)
    if priority is not None:
        line += b" " + priority.encode()
    _append_sink(line)


def _record_finish(sent_at: float) -> None:
    _append_sink(b"%d %d done" % (round(sent_at * 1e6), time.time_ns() // 1000))


def record_pickup(sent_at: float, *, priority: str | None = None) -> None:
    """The no-op job's body: append `sent_us started_us [priority]` to the sink file.

    `sent_at` is the Unix time (seconds) the job carried from `enqueue`. One O_APPEND
    write of a short line is atomic on Linux, so handlers in many processes (including
    forked children) share one file safely.

    In a fault-test run (ENV_JOB_MS set) the job then takes that long (a blocking sleep;
    an async handler calls `arecord_pickup` instead) and appends `sent_us finished_us done`.
    """
    _record_start(sent_at, priority)
    duration = job_duration_s()
    if duration > 0:
        time.sleep(duration)
        _record_finish(sent_at)


async def arecord_pickup(sent_at: float, *, priority: str | None = None) -> None:
    """`record_pickup` for an async handler: the job's duration (ENV_JOB_MS) is an
    `asyncio.sleep`, so the event loop runs other jobs meanwhile."""
    _record_start(sent_at, priority)
    duration = job_duration_s()
    if duration > 0:
        await asyncio.sleep(duration)
        _record_finish(sent_at)


def cluster_node_url(url: str) -> str | None:
    """For a Redis Cluster URL (`redis+cluster://HOST:PORT`, `rediss+cluster://...`), the
    `redis://` (`rediss://`) URL of the node it names, for the library's cluster client to
    start from; None for any other URL.

    qbench gives a driver a cluster URL only when the driver declares `cluster_setup`.
    """
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}{sep}{rest}" if sep and scheme in CLUSTER_SCHEMES else None


def sentinel_address(url: str) -> tuple[str, int, str] | None:
    """For a Sentinel URL (`redis+sentinel://HOST:PORT/MASTER`), the Sentinel's host and
    port and the master name it monitors; None for any other URL.

    qbench gives a driver a Sentinel URL only when the driver declares `sentinel_setup`
    (the same facts are in ENV_SENTINEL_ADDRESS and ENV_SENTINEL_MASTER).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        return None
    hostport, _, master = rest.partition("/")
    host, _, port = hostport.rpartition("@")[2].rpartition(":")
    if not host or not port.isdigit() or not master:
        return None
    return host.strip("[]"), int(port), master


class Driver(ABC):
    """One queue library, driven through its ordinary documented API and defaults.

    A driver object lives in a subprocess, under its own virtualenv when `requirements`
    names one. The producer process calls `connect` once, then `enqueue_serial`,
    `enqueue_many` and `enqueue_priority`; each worker process calls `run_worker`, which
    blocks until SIGTERM and then stops the library's worker the way its documentation
    says (a warm shutdown: running jobs finish). Stopping, draining and measuring are
    qbench's job: it signals the worker processes and counts the sink's lines.
    """

    name: ClassVar[str]
    """Driver name: the `variant` column of the results (lower case, no spaces or commas)."""
    distribution: ClassVar[str]
    """The distribution (PyPI package) whose version the report shows."""
    operations: ClassVar[frozenset[Op]] = frozenset({Op.ENQUEUE})
    """What the driver supports beyond one-call enqueue; each needs its method."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    """What the driver can do beyond its operations (`Capability`); each needs its method."""
    requirements: ClassVar[str | None] = None
    """A pip requirements file, relative to the driver's module file, from which qbench
    builds the driver's own virtualenv; None: the driver runs in qbench's own environment."""
    cluster_setup: ClassVar[str] = ""
    """How the driver runs on a Redis Cluster through its library's documented cluster
    option, in a few words (the report shows it). Non-empty: on a cluster (`qbench peers
    --cluster`) the driver is given a `redis+cluster://HOST:PORT` URL, which
    `cluster_node_url` turns into the node its cluster client starts from. Empty: the
    library documents no cluster option, and the driver is given the `redis://` URL of one
    node, as a user who points the library at a cluster node would. Either way the driver
    runs exactly as before on a single server."""

    sentinel_setup: ClassVar[str] = ""
    """How the driver follows a Redis Sentinel through its library's documented Sentinel
    option, in a few words (the report shows it). Non-empty: in a failover test the driver
    is given a `redis+sentinel://HOST:PORT/MASTER` URL (`sentinel_address` reads it) and
    ENV_SENTINEL_ADDRESS / ENV_SENTINEL_MASTER. Empty: the library documents no Sentinel
    support, and the failover case reports the driver as not supported."""
    delivery: ClassVar[str] = ""
    """The promise the queue makes, at the settings the driver runs, as its documentation
    states it: one of DELIVERY, or "" (none declared). A fault test fails (exit 1) when a
    driver that promises `at-least-once` loses a job in a case where its documentation
    says jobs survive; any other loss is reported as a finding."""
    recovery_window_s: ClassVar[float] = 0.0
    """How long the library takes, at the settings the driver runs, to give a dead
    worker's jobs back (a lease, a visibility timeout, a stalled-job check) or to mark them
    failed; 0: none declared. A fault test waits this long (within its own bounds) before
    it calls an unfinished job stuck."""

    def __init__(self, *, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency

    @classmethod
    def version(cls) -> str:
        """The version the report shows: the installed `distribution`'s, else '?'."""
        try:
            return metadata.version(cls.distribution)
        except (metadata.PackageNotFoundError, ValueError):
            return "?"

    def setup(self) -> str:
        """The worker setup, for the report: processes, threads, async concurrency."""
        return f"{self.worker_processes()} worker process(es), concurrency {self.concurrency}"

    def worker_processes(self) -> int:
        """How many worker processes qbench starts (each runs `run_worker`)."""
        return 1

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Called once in the producer process before any enqueue (open connections here)."""

    @abstractmethod
    def enqueue(self, sent_at: float) -> None:
        """Enqueue one no-op job carrying `sent_at` (Unix seconds) as its argument."""

    def enqueue_serial(self, count: int) -> None:
        """Enqueue `count` jobs one call at a time, each stamped when it is sent."""
        for _ in range(count):
            self.enqueue(time.time())

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        """Enqueue jobs with the library's bulk call (declare `Op.ENQUEUE_MANY`)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    def enqueue_priority(self, sent_at: float, priority: str) -> None:
        """Enqueue one job of priority high, normal or low (declare `Op.PRIORITIES`)."""
        raise NotImplementedError(f"{self.name} has no priorities")

    @abstractmethod
    def run_worker(self, *, index: int) -> None:
        """Run this process's share of the workers until SIGTERM, then stop cleanly."""

    def counters(self) -> dict[str, int]:
        """The producer's own counters since `connect` (declare `Capability.ROUND_TRIPS`):
        `{"round_trips": n, "commands": m}`, round trips to Redis and the commands they
        carried, as its client counted them (handshakes left out). qbench asks only a
        producer started with `ENV_COUNTERS=1`; without it, zeros are a fine answer."""
        raise NotImplementedError(f"{self.name} counts nothing of its own")

    def census(self) -> dict[str, Any]:
        """Where the library holds jobs that did not complete (declare `Capability.CENSUS`),
        asked in the producer after a fault test: `{"failed": [sent_us, ...], "pending":
        [sent_us, ...]}`, the `sent_us` (round(sent_at * 1e6)) each job carries. `failed`:
        the library's own failed, dead or abandoned structure; `pending`: still queued,
        scheduled or held by a worker. `pending` may be a count instead of a list."""
        raise NotImplementedError(f"{self.name} takes no census")

    def close(self) -> None:  # noqa: B027 - optional hook, most drivers need nothing here
        """Release connections (producer side). An exception here fails the driver's run:
        qbench reports it and keeps the driver's logs."""


class AsyncDriver(Driver):
    """A driver for an asyncio library: one event loop, and one task on it, for the life
    of the process.

    Implement `aenqueue` (and `aenqueue_many`, `aenqueue_priority` for the operations
    declared) instead of their synchronous twins. Every call qbench makes, from `connect`
    to `close`, runs on one event loop, awaited inside one long-lived task (the *host
    task*): `aopen` first (from `connect`), then each call, then `aclose` (from `close`).

    A client that must stay open across calls, such as one that holds an anyio task group
    or cancel scope (coredis under streaq), is entered in `aopen` and exited in `aclose`.
    anyio requires a task group or cancel scope to be exited by the task that entered it;
    the host task is that task, so the client's background tasks run between the driver's
    calls and its exit sees the same task:

        class StreaqDriver(AsyncDriver):
            async def aopen(self) -> None:
                self.worker = Worker(redis_url=self.url, queue_name=QUEUE_NAME)
                self.client = await self.worker.__aenter__()   # enters its task group

            async def aenqueue(self, sent_at: float) -> None:
                await noop.enqueue(sent_at)

            async def aclose(self) -> None:
                await self.worker.__aexit__(None, None, None)  # the same task exits it

    A client opened lazily in the first `aenqueue` works the same way (that call runs in
    the host task too). An exception from `aclose` is the driver's failure: `close` raises
    it, and qbench reports it with the driver's logs. `run_worker` may use `run` as well.
    """

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self._runner = asyncio.Runner()
        self._calls: asyncio.Queue[tuple[Awaitable[Any], asyncio.Future[Any]] | None] | None = None
        self._host: asyncio.Task[None] | None = None

    async def aopen(self) -> None:
        """Open the library's client (async), in the task that will close it; see the class."""

    def connect(self) -> None:
        """Start the host task and run `aopen` in it."""
        self._start_host(open_client=True)

    def run(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` to its end inside the host task (started on first use)."""
        if self._host is None:
            self._start_host(open_client=False)
        assert self._calls is not None and self._host is not None
        loop = self._runner.get_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._calls.put_nowait((coroutine, done))
        host = self._host

        async def until_answered() -> None:
            waited: list[asyncio.Future[Any]] = [done, host]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)

        loop.run_until_complete(until_answered())
        if done.done():
            return done.result()
        host.result()  # the host task ended: its exception, if it has one
        raise RuntimeError(f"{self.name}: the driver's event loop task ended before the call ran")

    def _start_host(self, *, open_client: bool) -> None:
        if self._host is not None:
            return
        loop = self._runner.get_loop()
        self._calls = asyncio.Queue()
        opened: asyncio.Future[None] = loop.create_future()
        self._host = loop.create_task(self._lifetime(opened, open_client=open_client))
        loop.run_until_complete(asyncio.wait([opened, self._host], return_when=asyncio.FIRST_COMPLETED))
        if opened.done():
            opened.result()
        else:
            self._host.result()

    async def _lifetime(self, opened: asyncio.Future[None], *, open_client: bool) -> None:
        """The host task: `aopen`, every call in turn, then `aclose`, all in this one task."""
        assert self._calls is not None
        if open_client:
            try:
                await self.aopen()
            except Exception as exc:
                opened.set_exception(exc)
                return
        opened.set_result(None)
        try:
            while (call := await self._calls.get()) is not None:
                coroutine, done = call
                try:
                    result = await coroutine
                except Exception as exc:
                    done.set_exception(exc)
                else:
                    done.set_result(result)
        finally:
            await self.aclose()

    @abstractmethod
    async def aenqueue(self, sent_at: float) -> None:
        """Enqueue one job (async)."""

    async def aenqueue_many(self, sent_at: Sequence[float]) -> None:
        """The library's bulk call (async; declare `Op.ENQUEUE_MANY`)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    async def aenqueue_priority(self, sent_at: float, priority: str) -> None:
        """Enqueue one job of a priority (async; declare `Op.PRIORITIES`)."""
        raise NotImplementedError(f"{self.name} has no priorities")

    def enqueue(self, sent_at: float) -> None:
        self.run(self.aenqueue(sent_at))

    def enqueue_serial(self, count: int) -> None:
        async def serial() -> None:
            for _ in range(count):
                await self.aenqueue(time.time())

        self.run(serial())

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        self.run(self.aenqueue_many(sent_at))

    def enqueue_priority(self, sent_at: float, priority: str) -> None:
        self.run(self.aenqueue_priority(sent_at, priority))

    async def aclose(self) -> None:
        """Close the library's connections (async), in the host task that ran `aopen`."""

    def close(self) -> None:
        """End the host task (which awaits `aclose`), then the event loop; raises what
        `aclose` raised."""
        try:
            if self._host is None:
                self._start_host(open_client=False)
            assert self._host is not None and self._calls is not None
            if not self._host.done():
                self._calls.put_nowait(None)
                self._runner.get_loop().run_until_complete(self._host)
            else:
                self._host.result()
        finally:
            self._runner.close()


_OPERATION_METHODS: dict[Op, tuple[str, str]] = {
    Op.ENQUEUE_MANY: ("enqueue_many", "aenqueue_many"),
    Op.PRIORITIES: ("enqueue_priority", "aenqueue_priority"),
}


def _overrides(cls: type[Driver], sync_name: str, async_name: str) -> bool:
    if issubclass(cls, AsyncDriver):
        return getattr(cls, async_name) is not getattr(AsyncDriver, async_name)
    return getattr(cls, sync_name) is not getattr(Driver, sync_name)


def driver_problems(cls: object) -> list[str]:
    """What keeps `cls` from being a usable driver class (empty when nothing does)."""
    if not isinstance(cls, type) or not issubclass(cls, Driver):
        return [f"{cls!r} is not a subclass of qbench.driver.Driver"]
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"name {name!r} must be lower case: letters, digits and _.+=- only (it is the variant column)"
        )
    if not isinstance(getattr(cls, "distribution", None), str):
        problems.append("lacks a `distribution` (the package whose version is reported)")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"lacks method(s) {', '.join(missing)}")
    operations: frozenset[Op] = getattr(cls, "operations", frozenset())
    unknown = sorted(str(op) for op in operations if op not in set(Op))
    if unknown:
        problems.append(f"declares unknown operation(s) {', '.join(unknown)}; known: {', '.join(Op)}")
    for op, (sync_name, async_name) in _OPERATION_METHODS.items():
        if op in operations and not _overrides(cls, sync_name, async_name):
            method = async_name if issubclass(cls, AsyncDriver) else sync_name
            problems.append(f"declares {op} but lacks method {method}")
    if Op.ENQUEUE not in operations:
        problems.append("operations must include enqueue")
    capabilities: object = getattr(cls, "capabilities", frozenset())
    if not isinstance(capabilities, (frozenset, set)):
        problems.append("capabilities must be a frozenset of qbench.driver.Capability")
    else:
        unknown = sorted(str(c) for c in capabilities if c not in set(Capability))
        if unknown:
            problems.append(
                f"declares unknown capability(ies) {', '.join(unknown)}; known: {', '.join(Capability)}"
            )
        if Capability.ROUND_TRIPS in capabilities and cls.counters is Driver.counters:
            problems.append(f"declares {Capability.ROUND_TRIPS} but lacks method counters")
        if Capability.CENSUS in capabilities and cls.census is Driver.census:
            problems.append(f"declares {Capability.CENSUS} but lacks method census")
    requirements = getattr(cls, "requirements", None)
    if requirements is not None and not isinstance(requirements, str):
        problems.append("requirements must be a file name (str) or None")
    if not isinstance(getattr(cls, "cluster_setup", ""), str):
        problems.append("cluster_setup must be a str (empty: no cluster option)")
    if not isinstance(getattr(cls, "sentinel_setup", ""), str):
        problems.append("sentinel_setup must be a str (empty: no Sentinel option)")
    delivery = getattr(cls, "delivery", "")
    if delivery not in ("", *DELIVERY):
        problems.append(f"delivery {delivery!r}: expected one of {', '.join(DELIVERY)} (or empty)")
    window = getattr(cls, "recovery_window_s", 0.0)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not window >= 0:
        problems.append("recovery_window_s must be a number of seconds >= 0")
    return problems
