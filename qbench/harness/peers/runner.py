"""Measures every driver the same way, each on a Redis of its own, into tidy rows."""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import redis

from qbench.agent import (
    QUIT_TIMEOUT_S,
    READY_TIMEOUT_S,
    AgentError,
    ProducerAgent,
    agent_argv,
    agent_env,
    last_line,
)
from qbench.driver import ENV_SINK, ENV_SINK_KEY, ENV_SINK_REDIS_URL, Op
from qbench.harness.infra.counting import command_stats, stats_delta
from qbench.harness.infra.nodelink import node_label
from qbench.harness.infra.processes import stop_all
from qbench.harness.infra.telemetry import Telemetry
from qbench.harness.peers.envs import python_path
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.results.rows import Row, params
from qbench.harness.results.stats import median, percentile

EXPERIMENT = "peers"
T = TypeVar("T")
STOP_GRACE_S = 10.0
"""How long workers get to exit after SIGTERM before they are killed. The libraries' warm
shutdown with no job running takes well under this; a worker that ignores SIGTERM costs
it at every stop (two stops per repeat), and is reported."""
STALL_S = 60.0
"""Default of `Sizes.stall_s`."""
PICKUP_WARMUP = 3
"""Pickup samples taken and dropped first: connections and imports settle in them."""
PICKUP_SEED = 0
"""Every driver gets the same random probe schedule."""
PING_COUNT = 200
"""Protocol round trips timed for an external driver (its pipe's share of each call)."""
PING_WARMUP = 20


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each driver is asked to do (full or quick mode)."""

    jobs: int = 10_000
    repeats: int = 3
    idle_s: float = 10.0
    pickup_samples: int = 100
    batch: int = 100
    concurrency: int = 10
    settle_s: float = 1.0
    """Pause after a drain before the idle window starts (late acks, prefetch refills)."""
    repeat_budget_s: float = 240.0
    """No further repeat starts once a driver's repeats took this long: a library (or
    preset) that drains at ~10 jobs/s gets one repeat, not an hour (the report shows n)."""
    pickup_gap_s: float = 3.0
    """Pickup probes are sent at random times: gaps drawn uniformly from [0, pickup_gap_s),
    never waiting for the previous probe. 3 s spans the slowest idle cycles among the peers
    (Dramatiq backs off to 0.5-1 s sleeps after about 1.3-2.6 s idle; arq polls every 0.5 s)."""
    stall_s: float = STALL_S
    """A drain or a call that makes no progress for this long fails the driver (never a hang)."""
    stop_grace_s: float = STOP_GRACE_S
    """Workers' time to exit after SIGTERM before they are killed (and the run says so)."""


FULL = Sizes()
QUICK = Sizes(jobs=1_000, repeats=1, idle_s=3.0, pickup_samples=20, pickup_gap_s=2.0)


class DriverFailedError(RuntimeError):
    """A driver could not finish a phase; the message says which and why."""


class PickupSink(Protocol):
    """Where a driver's handlers report pickups: `sent_us started_us [priority]` per job."""

    samples: list[tuple[int, int]]
    priorities: list[str | None]

    def count(self) -> int:
        """Read what arrived since the last call; the number of pickups so far."""

    def env(self) -> dict[str, str]:
        """The environment variables that tell the workers where to report."""

    def close(self) -> None:
        """Release what the sink holds."""


class SinkLineError(ValueError):
    """A pickup line that is not `sent_us started_us [priority]`."""


def _parse_sink_line(line: bytes, samples: list[tuple[int, int]], priorities: list[str | None]) -> None:
    fields = line.split()
    try:
        if len(fields) not in (2, 3):
            raise ValueError
        sent, started = int(fields[0]), int(fields[1])
    except ValueError:
        raise SinkLineError(f"a pickup line is not `sent_us started_us [priority]`: {line[:80]!r}") from None
    samples.append((sent, started))
    priorities.append(fields[2].decode(errors="replace") if len(fields) == 3 else None)


class Sink:
    """Reads the lines handlers append to a file: `sent_us started_us [priority]` per job."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[int, int]] = []
        self.priorities: list[str | None] = []
        self._offset = 0
        self._partial = b""

    def count(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
            self._offset += len(data)
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                _parse_sink_line(line, self.samples, self.priorities)
        return len(self.samples)

    def env(self) -> dict[str, str]:
        return {ENV_SINK: str(self.path)}

    def close(self) -> None:
        pass


class RedisSink:
    """Reads pickup lines that workers RPUSH to a list on a side Redis (workers elsewhere).

    The side server is never the measured one, so the RPUSHes cost the measured Redis
    nothing. Its key is unique per sink and deleted at close.
    """

    def __init__(self, url: str, label: str) -> None:
        self.url = url
        self.key = f"qbench:{{sink-{uuid.uuid4().hex[:12]}}}:{label}"
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.samples: list[tuple[int, int]] = []
        self.priorities: list[str | None] = []

    def count(self) -> int:
        for line in self.client.lrange(self.key, len(self.samples), -1):
            raw = line if isinstance(line, bytes) else str(line).encode()
            _parse_sink_line(raw.strip(), self.samples, self.priorities)
        return len(self.samples)

    def env(self) -> dict[str, str]:
        return {ENV_SINK_REDIS_URL: self.url, ENV_SINK_KEY: self.key}

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)
        self.client.close()


def processing_rate(samples: list[tuple[int, int]]) -> float:
    """Jobs/s from handler start times over the middle 90% of the jobs.

    Using start times leaves worker boot out; the trimmed ends leave out the ramp while
    worker processes come up one by one, and the tail where only a few jobs are left.
    """
    starts = sorted(started for _sent, started in samples)
    if len(starts) < 2:
        return float("nan")
    lo, hi = int(0.05 * len(starts)), max(int(0.95 * len(starts)) - 1, 1)
    if hi <= lo:
        lo, hi = 0, len(starts) - 1
    span_us = starts[hi] - starts[lo]
    return (hi - lo) / (span_us / 1e6) if span_us > 0 else float("nan")


class DriverProcess:
    """The harness's handle on one driver: enqueue, start workers, stop, wait for drain.

    The driver itself runs in subprocesses under its library's virtualenv: one producer
    agent, talked to through `qbench.agent.ProducerAgent` (the same client the Locust
    users use), and the worker processes it asks for.
    """

    def __init__(
        self,
        *,
        spec: DriverSpec,
        python: str,
        url: str,
        concurrency: int,
        work_dir: Path,
        import_root: Path,
        stall_s: float = STALL_S,
        sink_url: str | None = None,
        stop_grace_s: float = STOP_GRACE_S,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.python = python
        self.url = url
        self.concurrency = concurrency
        self.work_dir = work_dir
        self.import_root = import_root
        self.stall_s = stall_s
        self.sink_url = sink_url
        """The side Redis for drivers whose workers report by RPUSH (`sink = "redis"`)."""
        self.stop_grace_s = stop_grace_s
        """How long workers get after SIGTERM before their process groups are killed."""
        self.progress = progress
        self.ready: dict[str, Any] = {}
        self.notices: list[str] = []
        """What went wrong without failing the run (a worker killed after ignoring SIGTERM),
        one line each, for the console and the run's results."""
        self._agent: ProducerAgent | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        work_dir.mkdir(parents=True, exist_ok=True)

    # -- subprocesses ---------------------------------------------------------------
    def _env(self, sink: PickupSink | None) -> dict[str, str]:
        return agent_env(
            pythonpath=python_path(self.import_root, self.python),
            url=self.url,
            concurrency=self.concurrency,
            # A producer-side handler call (none expected) lands in a file nobody counts.
            sink=sink.env() if sink is not None else {ENV_SINK: str(self.work_dir / "producer.sink")},
            extra=dict(self.spec.env),
        )

    def _argv(self, role: str, index: int = 0) -> list[str]:
        return agent_argv(
            self.python, self.spec.ref, role=role, url=self.url, concurrency=self.concurrency, index=index
        )

    def _log(self, name: str) -> IO[bytes]:
        fh = (self.work_dir / name).open("ab")
        self._logs.append(fh)
        return fh

    def start(self) -> dict[str, Any]:
        """Start the producer agent; its ready message, plus `environment` (where the
        driver ran: see `DriverSpec.environment_kind`)."""
        self._agent = ProducerAgent(
            self._argv("producer"),
            env=self._env(None),
            log=self.work_dir / "producer.log",
            call_timeout_s=self.stall_s,
        )
        try:
            ready = self._agent.start(READY_TIMEOUT_S)
        except AgentError as exc:
            raise DriverFailedError(str(exc)) from None
        self.ready = {**ready, "environment": self.spec.environment_kind}
        return self.ready

    def _call(self, call: Callable[[ProducerAgent], T]) -> T:
        if self._agent is None:
            raise DriverFailedError("producer not started")
        try:
            return call(self._agent)
        except AgentError as exc:
            raise DriverFailedError(str(exc)) from None

    @property
    def operations(self) -> set[str]:
        """What the driver said it supports (its ready message)."""
        return set(self.ready.get("operations", []))

    @property
    def capabilities(self) -> set[str]:
        """What the driver said it can do beyond its operations (`qbench.driver.Capability`)."""
        return set(self.ready.get("capabilities", []))

    def last_log_line(self, name: str) -> str:
        return last_line(self.work_dir / name)

    # -- the driver interface, harness side ----------------------------------------------
    def enqueue(self, count: int) -> float:
        """Enqueue `count` jobs one call at a time; seconds spent inside the calls."""
        return self._call(lambda agent: agent.enqueue(count))

    def enqueue_many(self, count: int, batch: int) -> float:
        return self._call(lambda agent: agent.enqueue_many(count, batch))

    def ping(self, count: int) -> float:
        """Seconds for `count` protocol round trips of an external driver's producer."""
        return self._call(lambda agent: agent.ping(count))

    def counters(self) -> dict[str, int]:
        """The producer's own counters (a driver with the `round_trips` capability)."""
        return self._call(lambda agent: agent.counters())

    def new_sink(self, label: str) -> PickupSink:
        """A fresh sink of the kind the driver's workers report to."""
        if self.ready.get("sink") == "redis":
            if self.sink_url is None:
                raise DriverFailedError("the driver reports pickups to a side Redis, and none was given")
            return RedisSink(self.sink_url, label)
        return Sink(self.work_dir / f"{label}.sink")

    def start_workers(self, sink: PickupSink) -> None:
        processes = int(self.ready.get("processes", 1))
        for index in range(processes):
            self._workers.append(
                subprocess.Popen(
                    self._argv("worker", index),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log("worker.log"),
                    stderr=subprocess.STDOUT,
                    env=self._env(sink),
                    start_new_session=True,
                )
            )

    def workers_alive(self) -> bool:
        return all(proc.poll() is None for proc in self._workers)

    def stop_workers(self) -> None:
        """SIGTERM (the libraries' warm shutdown), `stop_grace_s` to exit, then SIGKILL of
        each worker's process group. A worker that had to be killed is a notice (console and
        `notices`): it ignored SIGTERM, and every stop cost the whole grace period."""
        killed = stop_process_groups(self._workers, grace_s=self.stop_grace_s)
        self._workers.clear()
        if killed:
            self.notice(
                f"{killed} worker process(es) ignored SIGTERM, killed after {self.stop_grace_s:g} s"
                if killed > 1
                else f"worker ignored SIGTERM, killed after {self.stop_grace_s:g} s"
            )

    def notice(self, text: str) -> None:
        """Record a notice once (repeated stops of one driver say it once) and print it."""
        if text in self.notices:
            return
        self.notices.append(text)
        if self.progress is not None:
            self.progress(f"  {self.spec.name}: {text}")

    def wait_for_drain(self, sink: PickupSink, expected: int) -> None:
        """Until the sink holds `expected` jobs; fails after `stall_s` without progress, or
        at once when a worker process exits or a pickup line is malformed."""
        try:
            seen, last_progress = sink.count(), time.monotonic()
            while seen < expected:
                time.sleep(0.02)
                now = sink.count()
                if now > seen:
                    seen, last_progress = now, time.monotonic()
                elif not self.workers_alive():
                    raise DriverFailedError(
                        f"a worker exited at {seen}/{expected} jobs ({self.last_log_line('worker.log')})"
                    )
                elif time.monotonic() - last_progress > self.stall_s:
                    if seen == 0:
                        where = ", ".join(f"${k}" for k in sink.env())
                        raise DriverFailedError(
                            f"no pickup reported in {self.stall_s:g}s: its handlers never reported "
                            f"`sent_us started_us` to {where} ({self.last_log_line('worker.log')})"
                        )
                    raise DriverFailedError(
                        f"drain stalled at {seen}/{expected} jobs for {self.stall_s:g}s "
                        f"({self.last_log_line('worker.log')})"
                    )
        except (SinkLineError, redis.RedisError) as exc:
            raise DriverFailedError(f"pickups: {exc}") from None

    def close(self) -> None:
        """Stop the workers and the producer. DriverFailedError when the driver's `close`
        failed in the producer (`close: ...`): the run must not pass with it."""
        try:
            self.stop_workers()
            agent, self._agent = self._agent, None
            if agent is not None:
                try:
                    agent.close(QUIT_TIMEOUT_S)
                except AgentError as exc:
                    raise DriverFailedError(str(exc)) from None
        finally:
            for fh in self._logs:
                fh.close()
            self._logs.clear()


def stop_process_groups(processes: Sequence[subprocess.Popen[bytes]], *, grace_s: float) -> int:
    """SIGTERM each process, wait up to `grace_s` (in all) for them to exit, then SIGKILL
    each one's process group (children such as Celery's pool or RQ's work horses go with
    it): how many processes were still running when the grace period ended.

    Every process is expected to lead its own group (`start_new_session=True`).
    """
    return sum(result.killed for result in stop_all(processes, grace_s=grace_s, group=True))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's counters at one moment: calls per command, and socket reads, without
    the requests of a telemetry sampler beside the probe."""

    commands: Counter[str]
    reads: int
    """`total_reads_processed`: read events the server handled, one per request that fits
    in one read (16 KB), so one per round trip for all but large pipelines."""
    sampler: int = 0
    """Requests the telemetry sampler had sent (already left out of the two above)."""
    cpu_s: float = 0.0
    """redis-server's own CPU time so far (`used_cpu_user` + `used_cpu_sys`), every
    client's work included (the probe's and a sampler's INFO too: a few per phase)."""


def server_cpu_us(before: Snapshot, after: Snapshot) -> float:
    """Microseconds of redis-server CPU between two snapshots."""
    return (after.cpu_s - before.cpu_s) * 1e6


def round_trips(before: Snapshot, after: Snapshot) -> int:
    """Round trips clients made between two snapshots, as Redis counts them (its read
    events), without the probe's own (the INFO request that took `after`) nor a telemetry
    sampler's (left out of each snapshot)."""
    return max(0, after.reads - before.reads - 1)


class ServerProbe:
    """Reads what the harness measures on the driver's Redis: commands, round trips,
    memory, keys. With `sampler` (telemetry sampling the same server), each snapshot is
    taken while the sampler's link is held, and leaves out what the sampler sent."""

    def __init__(self, url: str, *, sampler: Telemetry | None = None) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30)
        self.sampler = sampler.link(node_label(url)) if sampler is not None else None

    def commands(self) -> Counter[str]:
        return command_stats(self.client)

    def snapshot(self) -> Snapshot:
        """Calls per command and read events, from one INFO request (one read)."""
        with contextlib.ExitStack() as stack:
            own = stack.enter_context(self.sampler.held()) if self.sampler is not None else Counter()
            info = self.client.info("commandstats", "stats", "cpu")
        calls = Counter(
            {
                name.removeprefix("cmdstat_"): int(value["calls"]) - own.get(name.removeprefix("cmdstat_"), 0)
                for name, value in info.items()
                if name.startswith("cmdstat_")
            }
        )
        sent = sum(own.values())
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return Snapshot(calls, int(info["total_reads_processed"]) - sent, sent, cpu)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def keys(self) -> tuple[int, int]:
        """(keys in the database, keys among them without a TTL)."""
        total = no_ttl = 0
        batch: list[bytes] = []

        def flush() -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                pipe.ttl(key)
            found = sum(1 for ttl in pipe.execute() if ttl == -1)
            batch.clear()
            return found

        for key in self.client.scan_iter(count=1000):
            total += 1
            batch.append(key)
            if len(batch) >= 500:
                no_ttl += flush()
        if batch:
            no_ttl += flush()
        return total, no_ttl

    def close(self) -> None:
        self.client.close()


def _command_rows(
    name: str,
    metric: str,
    phase: str,
    delta: Mapping[str, int],
    divisor: float,
    repeat: int,
    **extra: object,
) -> list[Row]:
    """One row for all commands and one per command, each divided by `divisor` (jobs or seconds)."""
    unit = "commands/job" if metric == "commands_per_job" else "commands/s"
    counts = {"all": sum(delta.values()), **dict(sorted(delta.items()))}
    return [
        Row(
            EXPERIMENT,
            name,
            params(command=command, phase=phase, **extra),
            metric,
            calls / divisor,
            unit,
            repeat,
        )
        for command, calls in counts.items()
    ]


def measure_driver(
    driver: DriverProcess,
    probe: ServerProbe,
    sizes: Sizes,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    """Every metric for one driver, in a fixed order of phases (see PEERS.md)."""
    name, n = driver.spec.name, sizes.jobs
    rows: list[Row] = []

    def row(metric: str, value: float, unit: str, repeat: int = 0, **extra: object) -> None:
        rows.append(Row(EXPERIMENT, name, params(**extra), metric, value, unit, repeat))

    if driver.ready.get("external"):
        # The external producer's pipe: part of every call qbench times for this driver
        # (timed after a few untimed pings, as the enqueue phases come after the start).
        driver.ping(PING_WARMUP)
        row("protocol_round_trip_us", driver.ping(PING_COUNT) / PING_COUNT * 1e6, "us", calls=PING_COUNT)

    def round_trip_row(phase: str, before: Snapshot, after: Snapshot, repeat: int) -> None:
        row("round_trips_per_job", round_trips(before, after) / n, "round_trips/job", repeat, phase=phase)
        row("server_cpu_us_per_job", server_cpu_us(before, after) / n, "us/job", repeat, phase=phase)

    memory_before = probe.used_memory()
    memory_after_first = memory_before
    started = time.monotonic()
    for r in range(sizes.repeats):
        if r > 0 and time.monotonic() - started > sizes.repeat_budget_s:
            progress(f"  {name}: {r} repeat(s) took over {sizes.repeat_budget_s:g}s; no more")
            break
        snap0 = probe.snapshot()
        seconds = driver.enqueue(n)
        snap1 = probe.snapshot()
        row("enqueue_jobs_per_s", n / seconds, "jobs/s", r, calls="serial", jobs=n)
        rows += _command_rows(
            name, "commands_per_job", "enqueue", stats_delta(snap0.commands, snap1.commands), n, r
        )
        round_trip_row("enqueue", snap0, snap1, r)
        sink = driver.new_sink(f"process-{r}")
        try:
            driver.start_workers(sink)
            driver.wait_for_drain(sink, n)
            snap2 = probe.snapshot()
            rate = processing_rate(sink.samples)
            row("process_jobs_per_s", rate, "jobs/s", r, jobs=n, workers=sizes.concurrency)
            row("jobs_handled", sink.count(), "jobs", r, jobs=n)
        finally:
            sink.close()
        rows += _command_rows(
            name, "commands_per_job", "process", stats_delta(snap1.commands, snap2.commands), n, r
        )
        round_trip_row("process", snap1, snap2, r)
        progress(
            f"  {name}: repeat {r + 1}/{sizes.repeats}: "
            f"{n / seconds:,.0f} enqueued/s, {rate:,.0f} processed/s"
        )
        if r == 0:
            time.sleep(sizes.settle_s)
            idle0 = probe.commands()
            time.sleep(sizes.idle_s)
            idle = stats_delta(idle0, probe.commands())
            rows += _command_rows(
                name, "idle_commands_per_s", "idle", idle, sizes.idle_s, 0, seconds=f"{sizes.idle_s:g}"
            )
        driver.stop_workers()
        if r == 0:
            total, no_ttl = probe.keys()
            memory_after_first = probe.used_memory()
            row(
                "memory_bytes_per_job",
                (memory_after_first - memory_before) / n,
                "bytes/job",
                jobs=n,
                method="first",
            )
            row("keys_left", total, "keys", jobs=n)
            row("keys_left_no_ttl", no_ttl, "keys", jobs=n)
        elif r == 1:
            # The growth the second batch brought: one-time costs (scripts loaded, the
            # connections' buffers, the server's own tables) were all paid in the first.
            growth = (probe.used_memory() - memory_after_first) / n
            row("memory_bytes_per_job", growth, "bytes/job", 1, jobs=n, method="growth")
    progress(
        f"  {name}: {sizes.pickup_samples} pickup probes at random times "
        f"(gaps uniform in [0, {sizes.pickup_gap_s:g}) s)"
    )
    rows += [
        Row(EXPERIMENT, name, params(**p), metric, value, unit)
        for metric, value, unit, p in measure_pickup(driver, sizes)
    ]
    if Op.ENQUEUE_MANY in driver.operations:
        for r in range(sizes.repeats):
            snap0 = probe.snapshot()
            seconds = driver.enqueue_many(n, sizes.batch)
            snap1 = probe.snapshot()
            row("enqueue_jobs_per_s", n / seconds, "jobs/s", r, calls=f"many{sizes.batch}", jobs=n)
            phase = f"enqueue_many{sizes.batch}"
            rows += _command_rows(
                name, "commands_per_job", phase, stats_delta(snap0.commands, snap1.commands), n, r
            )
            round_trip_row(phase, snap0, snap1, r)
    return rows


def probe_schedule(samples: int, gap_s: float, seed: int = PICKUP_SEED) -> list[float]:
    """Send times (seconds from the first probe's start) of `samples` pickup probes: gaps
    drawn uniformly from [0, gap_s), so each probe meets the workers at a random phase of
    whatever idle cycle they run and after a random idle time up to `gap_s`."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(samples):
        t += rng.uniform(0.0, gap_s)
        times.append(t)
    return times


def measure_pickup(driver: DriverProcess, sizes: Sizes) -> list[tuple[str, float, str, dict[str, object]]]:
    """Pickup latency with running workers, probes at random arrival times (open loop).

    PICKUP_WARMUP jobs go first, one at a time, and are dropped. Then each probe is sent
    at its time in `probe_schedule`, whether or not earlier probes have started, so a
    library that sleeps while idle is caught at every phase of its sleep, not just after
    a job. Latency runs from the send stamp the job carries to its handler's start.
    Returns (metric, value, unit, params) for p50, p99 and max.
    """
    sink = driver.new_sink("pickup")
    try:
        driver.start_workers(sink)
        try:
            for i in range(PICKUP_WARMUP):
                driver.enqueue(1)
                driver.wait_for_drain(sink, i + 1)
            start = time.monotonic()
            for at in probe_schedule(sizes.pickup_samples, sizes.pickup_gap_s):
                delay = start + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                driver.enqueue(1)
            driver.wait_for_drain(sink, PICKUP_WARMUP + sizes.pickup_samples)
        finally:
            driver.stop_workers()
        sink.count()
        ordered = sorted(sink.samples)  # by send time: the warm-up jobs first
    finally:
        sink.close()
    latencies_ms = [(started - sent) / 1000 for sent, started in ordered[PICKUP_WARMUP:]]
    method = {"arrivals": "random", "gap_max_s": f"{sizes.pickup_gap_s:g}", "samples": len(latencies_ms)}
    return [
        ("pickup_ms_p50", median(latencies_ms), "ms", method),
        ("pickup_ms_p99", percentile(latencies_ms, 99), "ms", method),
        ("pickup_ms_max", max(latencies_ms), "ms", method),
    ]


@contextlib.contextmanager
def driver_process(
    *,
    spec: DriverSpec,
    python: str,
    url: str,
    concurrency: int,
    work_dir: Path,
    import_root: Path,
    stall_s: float = STALL_S,
    sink_url: str | None = None,
    stop_grace_s: float = STOP_GRACE_S,
    progress: Callable[[str], None] | None = None,
) -> Iterator[DriverProcess]:
    """A started driver (its producer answered `ready`), closed on exit. A failure to close
    (the driver's `close` raised) is a DriverFailedError, unless the block already failed:
    then the block's error stands."""
    process = DriverProcess(
        spec=spec,
        python=python,
        url=url,
        concurrency=concurrency,
        work_dir=work_dir,
        import_root=import_root,
        stall_s=stall_s,
        sink_url=sink_url,
        stop_grace_s=stop_grace_s,
        progress=progress,
    )
    try:
        process.start()
        yield process
    except BaseException:
        with contextlib.suppress(DriverFailedError):
            process.close()
        raise
    process.close()
