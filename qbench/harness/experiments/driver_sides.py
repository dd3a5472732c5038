"""A side of a driver gate: a driver's producer agent and warm workers on a Redis of its own.

Every round of a side (`DriverSide.run_round`) runs on a fresh database (FLUSHDB of the
redis-server this gate started for that side alone, never of any other) and measures:
- **enqueue**: the workers paused (SIGSTOP of their process groups, so the backlog builds
  with the workers warm: connected, imported, their pools up), N serial enqueues timed
  inside the producer agent (`enqueue_timed`: its process CPU and wall time);
- **drain**: the workers resumed (SIGCONT) until the N jobs are handled: the processing rate
  from the handlers' start times (middle 90%, as the battery does) and the CPU the worker
  processes and their children used (from /proc: each thread's scheduler runtime in ns,
  plus the CPU of children already reaped);
- **pickup**: probes sent one at a time at random arrival times (uniform gaps), latency from
  the send stamp to the handler's start: p50 and p99 of the round;
- **counters**: the side's INFO commandstats and read events (one per round trip) around the
  enqueue and the drain, exact, per command.
The side's server is its own, so the other side's idle polling never lands in its counts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from qbench.driver import Driver
from qbench.harness.infra.counting import stats_delta
from qbench.harness.infra.procstat import CLOCK_TICKS, PROC, children_of
from qbench.harness.infra.redis_server import ProvisionedRedis
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.peers.runner import (
    DriverFailedError,
    DriverProcess,
    PickupSink,
    ServerProbe,
    probe_schedule,
    processing_rate,
)
from qbench.harness.results.stats import median, percentile
from qbench.harness.timing.interleave import Arm, Sample
from qbench.harness.timing.placement import pin_pid

PICKUP_WARMUP = 3
"""Jobs sent one at a time and drained before the first round: the workers' first jobs."""


@dataclass(frozen=True)
class Sizes:
    """How much one round of one side does."""

    jobs: int = 1000
    concurrency: int = 4
    pickup_probes: int = 20
    pickup_gap_s: float = 0.03
    """Probe gaps are uniform in [0, gap): the workers are caught at a random phase."""
    stall_s: float = 60.0


@dataclass
class RoundRecord:
    """What one round of one side measured (besides the interleave's Sample)."""

    enqueue_cpu_ns: int
    enqueue_wall_ns: int
    worker_cpu_ns: int
    drain_wall_ns: int
    process_rate: float
    pickup_p50_us: float
    pickup_p99_us: float
    server_cpu_us: float
    commands: dict[str, Counter[str]] = field(default_factory=dict)
    """Per phase (enqueue, process): calls per command in the round."""
    reads: dict[str, int] = field(default_factory=dict)
    """Per phase: the server's read events (round trips)."""


def tree_cpu_ns(roots: list[int]) -> int:
    """CPU nanoseconds used so far by `roots` and their live descendants: each thread's
    scheduler runtime (/proc/PID/task/TID/schedstat, ns), plus the CPU of children each
    has already reaped (cutime + cstime, clock ticks). A thread that exits between two
    readings takes its time with it (warm workers keep their threads)."""
    total = 0
    for pid in [*roots, *sorted(children_of(roots))]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for task in (PROC / str(pid) / "task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[0])
            stat = (PROC / str(pid) / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += round((int(fields[13]) + int(fields[14])) * 1e9 / CLOCK_TICKS)
    return total


class GateDriverProcess(DriverProcess):
    """The battery's driver handle, plus what a gate needs: pause and resume the workers,
    their pids, the producer's pid, and `enqueue_timed`."""

    def worker_pids(self) -> list[int]:
        return [proc.pid for proc in self._workers]

    def producer_pid(self) -> int | None:
        agent = self._agent
        return agent.process.pid if agent is not None and agent.process is not None else None

    def signal_workers(self, signum: signal.Signals) -> None:
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)

    def enqueue_timed(self, count: int) -> dict[str, Any]:
        return self._call(lambda agent: agent.enqueue_timed(count))


class DriverSide:
    """One side (base or head) of a driver gate, started and warm; `arm()` for interleave."""

    def __init__(
        self,
        *,
        label: str,
        name: str,
        ref: str,
        python: str,
        server: ProvisionedRedis,
        import_root: Path,
        work_dir: Path,
        sizes: Sizes,
        cpu: int | None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.label = label
        self.sizes = sizes
        self.cpu = cpu
        self.server = server
        # The class lives in the side's own environment; the handle needs only its ref and env.
        # PYTHONSAFEPATH: `python -m qbench.agent` must not import the user's queue from the
        # current directory (the repository at HEAD) instead of the side's own install.
        side_env = {**(env or {}), "PYTHONSAFEPATH": "1"}
        spec = DriverSpec(name, ref, Driver, "gate", tuple(sorted(side_env.items())))  # type: ignore[type-abstract]
        self.driver = GateDriverProcess(
            spec=spec,
            python=python,
            url=server.url,
            concurrency=sizes.concurrency,
            work_dir=work_dir,
            import_root=import_root,
            stall_s=sizes.stall_s,
        )
        self.probe = ServerProbe(server.url)
        self.client = redis.Redis.from_url(server.url, socket_timeout=30)
        self.records: list[RoundRecord] = []
        self.handled = 0
        self.sink: PickupSink | None = None
        self.ready: dict[str, Any] = {}
        self.rounds = 0

    def start(self) -> None:
        """Start the producer and the workers (all pinned), and run a few jobs through."""
        if not self.server.info.owned:
            raise DriverFailedError(
                "a driver gate flushes its side's Redis each round: it must start its own"
            )
        self.ready = self.driver.start()
        if self.ready.get("external") or self.ready.get("sink") == "redis":
            # An entry point or Class that turned out to be an external driver (choose_driver
            # refuses the ones it can see before anything is built): see EXTERNAL_REFUSAL.
            raise DriverFailedError(
                f"{self.ready.get('name', 'the driver')} is an external (non-Python) driver: not gated "
                "(both sides would run one driver folder, and its enqueue CPU is in an untimed child)"
            )
        pid = self.driver.producer_pid()
        if pid is not None:
            pin_pid(pid, self.cpu)
        self.client.flushdb()
        # A fresh file: a sink reads its file from the start, and a calibration runs many gates.
        (self.driver.work_dir / f"{self.label}-rounds.sink").unlink(missing_ok=True)
        self.sink = self.driver.new_sink(f"{self.label}-rounds")
        self.driver.start_workers(self.sink)
        for worker in self.driver.worker_pids():
            pin_pid(worker, self.cpu)
        for _ in range(PICKUP_WARMUP):
            self.driver.enqueue(1)
            self.handled += 1
            self.driver.wait_for_drain(self.sink, self.handled)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.signal_workers(signal.SIGCONT)
        try:
            self.driver.close()
        finally:
            if self.sink is not None:
                self.sink.close()
            self.probe.close()
            self.client.close()

    def run_round(self) -> Sample:
        """One round (see the module docstring); the Sample's `cpu_ns` is the client CPU of
        the N jobs (producer's enqueue + workers' drain), its wall the drain's."""
        assert self.sink is not None
        n, sink, driver = self.sizes.jobs, self.sink, self.driver
        self.client.flushdb()  # a fresh database: this side's own server, started by the gate
        driver.signal_workers(signal.SIGSTOP)
        try:
            snap0 = self.probe.snapshot()
            timed = driver.enqueue_timed(n)
            snap1 = self.probe.snapshot()
            cpu0 = tree_cpu_ns(driver.worker_pids())
            t0 = time.perf_counter_ns()
        finally:
            driver.signal_workers(signal.SIGCONT)
        driver.wait_for_drain(sink, self.handled + n)
        drain_wall = time.perf_counter_ns() - t0
        worker_cpu = tree_cpu_ns(driver.worker_pids()) - cpu0
        snap2 = self.probe.snapshot()
        rate = processing_rate(sink.samples[self.handled : self.handled + n])
        self.handled += n
        p50, p99 = self._pickup()
        record = RoundRecord(
            enqueue_cpu_ns=int(timed["cpu_ns"]),
            enqueue_wall_ns=int(timed["wall_ns"]),
            worker_cpu_ns=max(0, worker_cpu),
            drain_wall_ns=drain_wall,
            process_rate=rate,
            pickup_p50_us=p50,
            pickup_p99_us=p99,
            server_cpu_us=(snap2.cpu_s - snap0.cpu_s) * 1e6,
            commands={
                "enqueue": stats_delta(snap0.commands, snap1.commands),
                "process": stats_delta(snap1.commands, snap2.commands),
            },
            reads={
                "enqueue": max(0, snap1.reads - snap0.reads - 1),
                "process": max(0, snap2.reads - snap1.reads - 1),
            },
        )
        self.records.append(record)
        self.rounds += 1
        return Sample(
            ops=n,
            wall_ns=drain_wall,
            cpu_ns=record.enqueue_cpu_ns + record.worker_cpu_ns,
            server_cpu_us=record.server_cpu_us,
        )

    def _pickup(self) -> tuple[float, float]:
        assert self.sink is not None
        probes = self.sizes.pickup_probes
        if probes <= 0:
            return float("nan"), float("nan")
        start = time.monotonic()
        for at in probe_schedule(probes, self.sizes.pickup_gap_s, seed=self.rounds):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.driver.enqueue(1)
        self.driver.wait_for_drain(self.sink, self.handled + probes)
        got = self.sink.samples[self.handled : self.handled + probes]
        self.handled += probes
        latencies = [float(started - sent) for sent, started in got]
        return median(latencies), percentile(latencies, 99)

    def arm(self) -> Arm:
        return Arm(self.label, self.run_round)
