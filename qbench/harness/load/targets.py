"""What executes a load run's operations, on the harness side: the run's *target*.

`qbench.harness.load.runner.run_load` is the one load runner; a `--variant` run and a
`--driver` run differ only in their target, which the Locust users mirror
(`qbench.scenarios.users`: `ReferenceTarget`, `AgentTarget`):

- `ReferenceSide` (`--variant P`): a Redis qbench starts (or the one given, Cluster
  included), the reference queue's namespace, its prefill, the HTTP API when the scenario
  submits through it, and at the end the census of the namespace's jobs;
- `DriverSide` (`--driver X`): the driver's environment (built here, or on each worker host
  by `qbench load --worker --driver X`), an empty Redis DB, the driver's prefill through its
  producer, its own workers as the scenario's consumers, and at the end their pickups
  (drained), merged into the users' histograms, and the server's commands and round trips.

A scenario a driver cannot play (bulk enqueue for bursts, priorities for a priority mix,
Locust users that dequeue, the HTTP API) is refused in one line before anything starts.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster

from qbench.driver import Op
from qbench.harness.infra.census import take_census
from qbench.harness.infra.counting import stats_delta
from qbench.harness.infra.measured import load_scripts, unique_namespace
from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import (
    ProvisionedRedis,
    ServerInfo,
    describe,
    free_port,
    provision,
    redis_for_run,
)
from qbench.harness.infra.telemetry import Telemetry
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root, python_path
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.peers.runner import DriverFailedError, DriverProcess, PickupSink, ServerProbe, round_trips
from qbench.harness.peers.suite import side_sink
from qbench.loader import module_source
from qbench.queue_impl.config import PRESETS, Variant
from qbench.queue_impl.connection import close_client, make_client, redact_url
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.scenarios.recorder import HISTOGRAM_NOTE, OpSamples, Recorder
from qbench.scenarios.settings import DriverRun
from qbench.scenarios.workload import USER_KIND_TABLE, Workload, jobs_enqueued

DRAIN_S = 60.0
"""After Locust stops, how long a driver's workers get to pick up what is still queued."""
PREFILL_CHUNK = 1000
API_START_TIMEOUT_S = 20.0
PRODUCERS_LOG = "driver-producers.log"
"""In the results dir: the stderr of every user's producer agent."""
REFERENCE_LATENCY_NOTE = HISTOGRAM_NOTE + " (Locust's own percentiles are rounded to whole ms)"
DRIVER_LATENCY_NOTE = (
    HISTOGRAM_NOTE + "; enqueue: time inside the driver's call, measured in its producer agent; "
    "pickup: from the job's send stamp to its handler's start, reported by the driver's workers"
)


class LoadError(RuntimeError):
    """A load run that did not produce results (one line)."""


class LoadInputError(ValueError):
    """A scenario the target cannot play, or a Redis it cannot use (one line; exit 2)."""


@dataclass(frozen=True, kw_only=True)
class DriverPlan:
    """A run's driver: who produces is the Locust users; who consumes is its own workers."""

    spec: DriverSpec
    consumers: int
    """Jobs the driver's workers run at once: the scenario's consumer users (0: no workers)."""
    priorities: bool = False
    """True when users send each job with a priority drawn from the workload's mix."""
    drain_s: float = DRAIN_S


def shape_for_driver(workload: Workload, spec: DriverSpec, users: int) -> tuple[Workload, DriverPlan]:
    """Split the scenario's `users` into producing users (the workload Locust runs) and the
    driver's workers; LoadInputError (one line) when the driver cannot play the scenario."""
    name, mix = workload.name, workload.user_mix
    ops = set(spec.cls.operations)
    active = {kind: USER_KIND_TABLE[kind] for kind, weight in mix.items() if weight > 0}
    for kind in active.values():
        if kind.driver_role not in ("calls", "workers"):
            raise LoadInputError(f"scenario {name} {kind.driver_role}; driver {spec.name} has none")
    if not any(kind.driver_role == "calls" for kind in active.values()):
        raise LoadInputError(
            f"scenario {name} needs Locust users that dequeue; with --driver, driver {spec.name}'s own "
            "workers consume, so use a scenario with producing users ("
            + ", ".join(k for k, v in USER_KIND_TABLE.items() if v.driver_role == "calls")
            + ")"
        )
    for kind in active.values():
        if kind.driver_op is not None and kind.driver_op not in ops:
            raise LoadInputError(
                f"scenario {name} {kind.driver_op_use}; driver {spec.name} has no {kind.driver_op}"
            )
    mixed = sorted(p for p, w in workload.priority_mix.items() if w > 0 and p != "normal")
    if mixed and Op.PRIORITIES not in ops:
        raise LoadInputError(
            f"scenario {name} mixes priorities ({', '.join(mixed)}); driver {spec.name} has no priorities"
        )
    total = sum(mix.values())
    consumers = round(
        users * sum(w for k, w in mix.items() if USER_KIND_TABLE[k].driver_role == "workers") / total
    )
    producers = users - consumers
    if producers < 1:
        raise LoadInputError(f"scenario {name}: {users} user(s) leave no producing user; raise --users")
    shaped = Workload(
        **{
            **workload.as_dict(),
            "users": producers,
            "user_mix": {k: w for k, w in mix.items() if USER_KIND_TABLE[k].driver_role == "calls" and w > 0},
        }
    )
    return shaped, DriverPlan(spec=spec, consumers=consumers, priorities=bool(mixed))


@dataclass
class Accounting:
    """What a target counted of the run's jobs, beyond the users' own samples."""

    jobs_expected: int
    jobs_cut_short: int = 0
    """Jobs whose enqueue (or submit) was cut short when the users stopped: each may exist or not."""
    census: dict[str, int] | None = None
    """The reference queue's namespace at the end (records, completed, stranded)."""
    jobs_picked_up: int | None = None
    """A driver's workers' pickups (None: no workers)."""
    commands: int | None = None
    round_trips: int | None = None
    """A driver run: counted at the server over the whole run (users, workers, drain)."""
    samples: dict[str, OpSamples] = field(default_factory=dict)
    """Operations the target measured itself (a driver's workers' pickups)."""
    node_loss: NodeLoss | None = None
    """Set when a cluster master died mid-run: the census could not be taken; this counts
    the acknowledged jobs that went with it instead."""


@dataclass(frozen=True, kw_only=True)
class ShardCount:
    """One cluster master at the end of a run: the namespace's partitions it owned when the
    run started, and the job records found on it (None: it died, or refused reads)."""

    node: str
    """host:port"""
    alive: bool
    partitions: tuple[int, ...]
    records: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "alive": self.alive, "partitions": list(self.partitions),
                "records": self.records}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class NodeLoss:
    """A run on a Redis Cluster during which a master holding the namespace's keys died (no
    replica took over): its acknowledged jobs went with it. Counted as the enqueues the
    users saw acknowledged minus the job records still found on the surviving shards."""

    dead: tuple[str, ...]
    """host:port of every master that stopped answering."""
    acknowledged: int
    """Jobs whose enqueue was acknowledged (prefill included)."""
    cut_short: int
    shards: tuple[ShardCount, ...]

    @property
    def accounted(self) -> int:
        """Job records found on the surviving shards."""
        return sum(s.records or 0 for s in self.shards if s.alive)

    @property
    def exact(self) -> bool:
        """True when every surviving shard holding a partition was read (a cluster that went
        down refuses reads: the count is then an upper bound)."""
        return all(s.records is not None for s in self.shards if s.alive and s.partitions)

    @property
    def lost(self) -> int:
        """Acknowledged jobs lost with the dead master(s); a job whose enqueue was cut short
        may have landed on a surviving shard, so at most `cut_short` fewer."""
        return max(0, self.acknowledged - self.accounted)

    def line(self, failures: int) -> str:
        """The run's one-line reason: the count and the dead node(s)."""
        nodes = ", ".join(self.dead)
        who = f"cluster master {nodes}" if len(self.dead) == 1 else f"cluster masters {nodes}"
        survivors = [s for s in self.shards if s.alive]
        count = f"{self.lost:,}" if self.exact else f"up to {self.lost:,}"
        text = (
            f"{who} died mid-run (no replica took over): {count} acknowledged job(s) lost with it "
            f"({self.acknowledged:,} enqueues acknowledged, {self.accounted:,} job records found on the "
            f"{len(survivors)} surviving shard(s)"
        )
        if not self.exact:
            text += "; some refused reads (cluster down), so the count is an upper bound"
        return text + f"); {failures:,} request(s) failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "dead_nodes": list(self.dead),
            "acknowledged": self.acknowledged,
            "accounted": self.accounted,
            "lost": self.lost,
            "exact": self.exact,
            "cut_short": self.cut_short,
            "shards": [s.as_dict() for s in self.shards],
        }


DuringRun = Callable[[ProvisionedRedis, str], AbstractContextManager[object]]
"""Called with (server, namespace) to run something alongside the users (e.g. a profiled worker)."""


class ReferenceSide:
    """`--variant P`: the reference queue, in a namespace of its own on the run's Redis."""

    host = "http://127.0.0.1"
    through = ""

    def __init__(
        self,
        variant: Variant,
        workload: Workload,
        *,
        redis_url: str | None,
        cluster: bool,
        allow_cluster: bool,
        during: DuringRun | None,
    ) -> None:
        self.variant, self.workload, self.during = variant, workload, during
        self.redis_url, self.cluster, self.allow_cluster = redis_url, cluster, allow_cluster
        self.namespace = unique_namespace(f"load-{workload.name}")

    @contextlib.contextmanager
    def server(self, out_dir: Path) -> Iterator[tuple[str, ServerInfo]]:
        with redis_for_run(self.redis_url, cluster=self.cluster, allow_cluster=self.allow_cluster) as server:
            self._server = server
            client = make_client(server.url, self.variant)
            self.queue = RedisQueue(client, self.variant, namespace=self.namespace, consumer="qbench-load")
            self.owners = partition_owners(self.queue) if isinstance(client, RedisCluster) else {}
            self.node_urls = {_address(u): u for u in server.info.node_urls()} if self.owners else {}
            self.node_loss: NodeLoss | None = None
            try:
                self.queue.check_server()
                load_scripts(client)  # no user's first call pays a NOSCRIPT miss
                yield server.url, server.info
            finally:
                try:
                    self.queue.cleanup()
                except redis.RedisError:
                    if self.node_loss is None:  # else the dead master's keys are gone anyway
                        raise
                close_client(client)

    def prefill(self) -> int:
        """Queue the workload's backlog with pipelined batches (setup, not measured)."""
        return prefill(self._server.url, self.variant, self.workload, self.namespace)

    def spec_target(self) -> dict[str, Any]:
        """The run spec's target fields."""
        return {"variant": variant_spec(self.variant), "namespace": self.namespace}

    @contextlib.contextmanager
    def running(self, telemetry: Telemetry | None) -> Iterator[None]:
        """The HTTP API (a scenario that submits through it) and `during`, around the users."""
        with contextlib.ExitStack() as stack:
            if "http_submit" in self.workload.user_mix:
                self.host = stack.enter_context(api_server(self._server.url, self.variant, self.namespace))
            if self.during is not None:
                stack.enter_context(self.during(self._server, self.namespace))
            yield

    def after_users(self, ops: dict[str, OpSamples], prefilled: int, started_at: float) -> None:
        """Nothing waits for the reference queue: the census is taken once `running` ends."""

    def account(self, ops: dict[str, OpSamples], prefilled: int) -> Accounting:
        """The census of the namespace; on a cluster that lost a master mid-run (the census
        cannot be taken), the count of acknowledged jobs lost with it instead."""
        produced, cut_short = produced_jobs(ops, burst_size=self.workload.burst_size)
        expected = prefilled + produced
        try:
            census = take_census(self.queue).counts()
        except redis.RedisError:
            loss = self.count_node_loss(expected, cut_short)
            if loss is None:
                raise
            self.node_loss = loss
            return Accounting(jobs_expected=expected, jobs_cut_short=cut_short, node_loss=loss)
        return Accounting(jobs_expected=expected, jobs_cut_short=cut_short, census=census)

    def count_node_loss(self, acknowledged: int, cut_short: int) -> NodeLoss | None:
        """Per master of the cluster (each asked directly, not through the cluster client):
        alive or not, and the namespace's job records on the partitions it owned at the
        start. None when every master still answers (the census failed for another reason)."""
        if not self.owners:
            return None
        shards = []
        for address, url in self.node_urls.items():
            owned = tuple(sorted(i for i, node in self.owners.items() if node == address))
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
            try:
                try:
                    client.ping()
                except (redis.ConnectionError, redis.TimeoutError):
                    shards.append(ShardCount(node=address, alive=False, partitions=owned, records=None))
                    continue
                try:
                    parts = [p for p in self.queue.partitions if p.index in owned]
                    records: int | None = sum(p.records.count(client) for p in parts)
                except redis.RedisError:  # CLUSTERDOWN: a cluster without full coverage refuses reads
                    records = None
                shards.append(ShardCount(node=address, alive=True, partitions=owned, records=records))
            finally:
                client.close()
        dead = tuple(s.node for s in shards if not s.alive)
        if not dead:
            return None
        return NodeLoss(dead=dead, acknowledged=acknowledged, cut_short=cut_short, shards=tuple(shards))

    def meta(self) -> dict[str, Any]:
        extra = {} if self.node_loss is None else {"node_loss": self.node_loss.as_dict()}
        return {"toggles": self.variant.toggles(), "latency_note": REFERENCE_LATENCY_NOTE, **extra}


def partition_owners(queue: RedisQueue) -> dict[int, str]:
    """Partition index -> host:port of the cluster master owning its hash tag's slot, as the
    cluster client sees it now (every key of a partition shares that slot)."""
    client = queue.client
    assert isinstance(client, RedisCluster)
    owners = {}
    for part in queue.partitions:
        node = client.get_node_from_key(part.keys.prefix)  # type: ignore[no-untyped-call]
        owners[part.index] = f"{node.host}:{node.port}"
    return owners


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


class DriverSide:
    """`--driver X`: the driver's producer agents in the users, its own workers consuming."""

    host = "http://127.0.0.1"

    def __init__(self, driver: DriverPlan, workload: Workload, *, redis_url: str | None) -> None:
        self.driver, self.workload, self.redis_url = driver, workload, redis_url
        self.through = f" through {driver.spec.name}"
        self.ready: dict[str, Any] = {}
        self.sink: PickupSink | None = None
        self.picked_up = 0
        self.pickups: dict[str, OpSamples] = {}

    @contextlib.contextmanager
    def server(self, out_dir: Path) -> Iterator[tuple[str, ServerInfo]]:
        """The driver's environment, an empty Redis DB and the driver's producer."""
        spec = self.driver.spec
        try:
            self.python = ensure_env(spec, log=out_dir / "driver-install.log")
        except PeerEnvError as exc:
            raise LoadError(str(exc)) from None
        (out_dir / PRODUCERS_LOG).unlink(missing_ok=True)  # a previous run's is not this one's
        self.log = (out_dir / PRODUCERS_LOG).resolve()
        source = module_source(spec.cls)
        self.path_root = import_root([source] if source is not None else [])
        work_dir = Path(tempfile.mkdtemp(prefix="qbench-load-driver-"))
        try:
            with _empty_db(self.redis_url, spec.name) as (url, info), side_sink(spec) as sink_url:
                self.url = url
                self.process = DriverProcess(
                    spec=spec,
                    python=self.python,
                    url=url,
                    concurrency=max(self.driver.consumers, 1),
                    work_dir=work_dir,
                    import_root=self.path_root,
                    sink_url=sink_url,
                )
                failed = True
                try:
                    self.ready = self.process.start()
                    yield url, info
                    failed = False
                except DriverFailedError as exc:
                    raise LoadError(f"driver {spec.name}: {exc}") from None
                finally:
                    if self.sink is not None:
                        self.sink.close()
                    try:
                        self.process.close()
                    except DriverFailedError as exc:
                        if not failed:  # else the run's own failure is the one to tell
                            raise LoadError(f"driver {spec.name}: {exc}") from None
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
            shutil.rmtree(self.path_root, ignore_errors=True)

    def prefill(self) -> int:
        jobs = self.workload.prefill_jobs
        if Op.ENQUEUE_MANY in self.process.operations:
            done = 0
            while done < jobs:
                size = min(PREFILL_CHUNK, jobs - done)
                self.process.enqueue_many(size, size)
                done += size
        elif jobs:
            self.process.enqueue(jobs)
        return jobs

    def spec_target(self) -> dict[str, Any]:
        spec = self.driver.spec
        driver = DriverRun(
            name=spec.name,
            ref=spec.ref,
            python=self.python,
            pythonpath=python_path(self.path_root, self.python),
            log=str(self.log),
            priorities=self.driver.priorities,
        )
        return {"driver": driver, "namespace": ""}  # the driver's own keys, in a DB of its own

    @contextlib.contextmanager
    def running(self, telemetry: Telemetry | None) -> Iterator[None]:
        """The driver's workers (the scenario's consumers) and the server's counters."""
        if self.driver.consumers:
            self.sink = self.process.new_sink("load")
            self.process.start_workers(self.sink)
        with contextlib.closing(ServerProbe(self.url, sampler=telemetry)) as probe:
            before = probe.snapshot()
            yield
            after = probe.snapshot()
        # Counted at Redis, the probe's INFO and the sampler's requests left out.
        self.commands = sum(stats_delta(before.commands, after.commands).values())
        self.round_trips = round_trips(before, after)

    def after_users(self, ops: dict[str, OpSamples], prefilled: int, started_at: float) -> None:
        """Wait for the workers to pick up every job the users enqueued (or the drain window)."""
        if self.sink is None:
            return
        expected = prefilled + jobs_enqueued(self.workload, {op: s.count for op, s in ops.items()})
        try:
            self.picked_up = _drain(self.process, self.sink, expected, self.driver.drain_s)
            self.process.stop_workers()
        except DriverFailedError as exc:
            raise LoadError(f"driver {self.driver.spec.name}: {exc}") from None
        self.pickups = pickup_samples(self.sink, started_at)

    def account(self, ops: dict[str, OpSamples], prefilled: int) -> Accounting:
        return Accounting(
            jobs_expected=prefilled + jobs_enqueued(self.workload, {op: s.count for op, s in ops.items()}),
            jobs_picked_up=self.picked_up if self.driver.consumers else None,
            commands=self.commands,
            round_trips=self.round_trips,
            samples=self.pickups,
        )

    def meta(self) -> dict[str, Any]:
        spec = self.driver.spec
        return {
            "driver": {**self.ready, "ref": spec.ref, "origin": spec.origin},
            "consumers": self.driver.consumers,
            "latency_note": DRIVER_LATENCY_NOTE,
        }


@contextlib.contextmanager
def _empty_db(url: str | None, name: str) -> Iterator[tuple[str, ServerInfo]]:
    """A fresh redis-server, or the given URL's DB if it is empty (a library's keys are not
    under qbench's prefix, so qbench can neither share nor clean a DB with others)."""
    if url is None:
        with provision(None, use_docker=False) as server:
            yield server.url, server.info
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        size = client.dbsize()
    finally:
        client.close()
    if size:
        raise LoadInputError(
            f"{redact_url(url)} holds {size} keys: driver {name} needs an empty DB "
            "(qbench never flushes a server it did not start)"
        )
    yield url, describe(url, "url", owned=False)


def _drain(driver: DriverProcess, sink: PickupSink, expected: int, deadline_s: float) -> int:
    """Wait until the workers reported `expected` pickups or `deadline_s` passed; the count.
    A worker that exits, or a malformed pickup line, fails the run."""
    deadline = time.monotonic() + deadline_s
    try:
        while sink.count() < expected and time.monotonic() < deadline:
            if not driver.workers_alive():
                last = driver.last_log_line("worker.log")
                raise DriverFailedError(f"a worker exited at {sink.count()}/{expected} jobs ({last})")
            time.sleep(0.05)
        return sink.count()
    except (ValueError, redis.RedisError) as exc:  # a malformed pickup line (SinkLineError)
        raise DriverFailedError(f"pickups: {exc}") from None


def pickup_samples(sink: PickupSink, started_at: float) -> dict[str, OpSamples]:
    """The workers' pickups as histograms like the users' (`pickup`, `pickup_<priority>`),
    per-second counts on the run's own origin, so they merge into the same rows."""
    recorder = Recorder(started_at)
    for (sent_us, started_us), priority in zip(sink.samples, sink.priorities, strict=True):
        latency_ms = (started_us - sent_us) / 1000
        recorder.record("pickup", latency_ms, done_at=started_us / 1e6)
        if priority is not None:
            recorder.record(f"pickup_{priority}", latency_ms, done_at=started_us / 1e6)
    return recorder.ops


def produced_jobs(samples: dict[str, OpSamples], *, burst_size: int) -> tuple[int, int]:
    """(jobs whose enqueue was acknowledged, jobs whose enqueue was cut short at stop)."""
    sizes = {"enqueue": 1, "submit": 1, "enqueue_burst": burst_size}
    done = sum(samples[op].count * size for op, size in sizes.items() if op in samples)
    cut = sum(samples[op].cut_short * size for op, size in sizes.items() if op in samples)
    return done, cut


def variant_spec(variant: Variant) -> str:
    """A `preset+toggle=value,...` string that `parse_variant` turns back into `variant`."""
    if variant.name not in PRESETS:
        raise ValueError(f"variant {variant.name!r} is not based on a preset: build it with parse_variant")
    return variant.label()


def prefill(url: str, variant: Variant, workload: Workload, namespace: str) -> int:
    """Queue the workload's backlog into the reference queue with pipelined batches."""
    total = workload.prefill_jobs
    if not total:
        return 0
    # Any batch mode stores the same records; pipelining just makes setup fast.
    variant = variant.with_overrides(batch="pipeline")
    client = make_client(url, variant)
    queue = RedisQueue(client, variant, namespace=namespace, consumer="qbench-prefill")
    mix = workload.priority_mix
    priorities = [Priority.parse(p) for p in mix]
    weights = list(mix.values())
    payload = b"x" * workload.job_size_bytes
    import numpy as np  # here, not at module top: every `qbench` start imports this module

    rng = np.random.default_rng(0)
    try:
        done = 0
        while done < total:
            size = min(PREFILL_CHUNK, total - done)
            picks = rng.choice(len(priorities), size=size, p=np.array(weights) / sum(weights))
            queue.enqueue_many([Job(type="noop", payload=payload, priority=priorities[i]) for i in picks])
            done += size
    finally:
        close_client(client)
    return total


@contextlib.contextmanager
def api_server(url: str, variant: Variant, namespace: str, *, processes: int = 1) -> Iterator[str]:
    """`python -m qbench.queue_impl.api` (`processes` uvicorn workers) on a free loopback port;
    yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "qbench.queue_impl.api", "--port", str(port)]
    cmd += ["--variant", variant_spec(variant), "--redis-url", url, "--namespace", namespace]
    cmd += ["--processes", str(processes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                last = err.splitlines()[-1] if err else proc.returncode
                raise LoadError(f"the API exited at start: {last}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/healthz", timeout=1) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise LoadError(f"the API did not answer on {base} within {API_START_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield base
    finally:
        stop(proc)
        if proc.stderr:
            proc.stderr.close()
