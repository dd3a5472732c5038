"""`qbench chaos --driver X`: the same fault cases for every driver, every job accounted for.

Each case runs on servers of its own: a producer agent enqueues jobs (`enqueue_tracked`:
each job carries a `sent_us` no other job has, its id, and the agent says which enqueue
calls returned), worker agents run the driver's workers with QBENCH_JOB_MS (each job
takes that long, and its handler writes a start and a finish line to the sink), and the
harness injects the fault meanwhile. Then it waits for the library's recovery window,
asks the driver for its census (where the library holds what did not complete), counts
the keys left, and classifies every job whose enqueue returned:

- completed once: its finish line appears once;
- duplicated: more than once;
- failed: never finished, and in the library's failed/dead structure (census);
- stuck: never finished, and still queued or held (census) past the recovery window;
- lost: never finished, and nowhere.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from qbench.agent import AgentError, ProducerAgent, agent_argv, agent_env, last_line
from qbench.driver import (
    ENV_CHAOS,
    ENV_JOB_MS,
    ENV_SENTINEL_ADDRESS,
    ENV_SENTINEL_MASTER,
    ENV_SINK,
    Capability,
)
from qbench.harness.chaos.cases import PERSISTENCE as PRESET_PERSISTENCE
from qbench.harness.infra.delay_proxy import DelayProxy, DelayProxyError
from qbench.harness.infra.processes import stop_all
from qbench.harness.infra.redis_server import RedisServerProcess, RedisUnavailableError
from qbench.harness.infra.sentinel import MASTER_NAME, SentinelError, SentinelSetup
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root, python_path
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.results.rows import Row, params
from qbench.loader import module_source

EXPERIMENT = "reliability"
DRIVER_CASES = ("worker_kill", "redis_restart", "proxy_faults", "failover")
PERSISTENCE: dict[str, tuple[str, ...]] = {
    name: PRESET_PERSISTENCE[name] for name in ("none", "aof_everysec")
}
"""Server settings of the restart case, as the presets' cases name them (the server is
restarted on its port and data dir): no persistence, and AOF fsynced every second."""
PROXY_DELAYS_MS = (2.0, 20.0, 0.0, 50.0)
"""Round-trip delays cycled between cuts."""
OUTCOMES = ("completed_once", "duplicated", "failed", "stuck", "lost")
"""Every job whose enqueue returned lands in exactly one of these."""
STATUS_OK, STATUS_UNSUPPORTED, STATUS_FAILED = "ok", "not supported", "failed"
PROMISED = {("worker_kill", ""), ("proxy_faults", "")}
"""Cases in which an `at-least-once` queue must lose nothing. A restart without persistence,
AOF `everysec` (up to a second of writes, as Redis documents) and an asynchronous replica's
failover lose what Redis itself drops: findings, not failures."""
DURABLE_FAILOVER_MARK = "durability=replica"
"""A driver whose variant waits for a replica (WAIT 1) promises failover too."""


class ChaosInputError(ValueError):
    """A driver that cannot be fault-tested, or a bad argument (one line, exit 2)."""


class CaseFailedError(RuntimeError):
    """A wait exceeded its window: the message says what was awaited and what was seen."""


WINDOW_MARGIN_S = 5.0
"""Added to a driver's declared recovery window before its unfinished jobs are judged."""
WAIT_CAP_S = 100.0
"""The longest recovery window a case awaits (quick and full alike). A declared window
above it (RQ's 690 s, arq's 310 s, taskiq's 600 s defaults) is not awaited at all: the
jobs it would recover count as stuck, and the report says the window was not awaited."""
SEND_GRACE_S = 20.0
"""How long past its planned span the producer of a restart or proxy case may take to send
every job (each library reconnects within seconds). A library that cannot send again, such
as Bee-Queue after a restart (NOSCRIPT), fails its case after this, not after a minute."""
SETTLE_S = 2.0
"""After the faults, how long no job must finish before the case looks at what is left."""


@dataclass(frozen=True, kw_only=True)
class FaultScale:
    """How big each case is (the same for every driver)."""

    concurrency: int
    """Jobs at once over all of a driver's worker processes."""
    kill_jobs: int
    kills: int
    kill_spacing_s: float
    kill_job_ms: int
    """A job's duration in the kill case: long enough that kills land mid-job."""
    job_ms: int
    """A job's duration in the other cases."""
    restart_jobs: int
    restart_settings: tuple[str, ...]
    proxy_jobs: int
    cuts: int
    failover_jobs: int
    failovers: int
    """Failovers of a driver that does not promise to survive one: enough to show its loss."""
    durable_failover_jobs: int
    durable_failovers: int
    """Failovers of a driver that promises to survive one (a replica wait): the issue's
    5 failovers x 1,000 jobs in full mode, so its zero is measured at that size."""
    fault_span_s: float
    """How long the producer keeps sending in the restart, proxy and failover cases (per fault)."""
    start_window_s: float = 60.0
    """A case fails when no job has started this long after the workers were started."""
    promote_window_s: float = 20.0
    """A failover case fails when the Sentinel has not promoted the replica by then."""


QUICK = FaultScale(
    concurrency=4,
    kill_jobs=100,
    kills=3,
    kill_spacing_s=0.8,
    kill_job_ms=200,
    job_ms=20,
    restart_jobs=60,
    restart_settings=tuple(PERSISTENCE),
    proxy_jobs=60,
    cuts=2,
    failover_jobs=60,
    failovers=1,
    durable_failover_jobs=60,
    durable_failovers=1,
    fault_span_s=2.5,
)
FULL = FaultScale(
    concurrency=4,
    kill_jobs=1000,
    kills=20,
    kill_spacing_s=0.8,
    kill_job_ms=80,
    job_ms=20,
    restart_jobs=300,
    restart_settings=tuple(PERSISTENCE),
    proxy_jobs=300,
    cuts=6,
    failover_jobs=300,
    failovers=2,
    durable_failover_jobs=1000,
    durable_failovers=5,
    fault_span_s=3.0,
)


# -- the sink: start and finish lines keyed by sent_us ----------------------------------------
@dataclass
class SinkEvents:
    """What the handlers wrote: starts and finishes per job (`sent_us`), finish times (us)."""

    starts: collections.Counter[int] = field(default_factory=collections.Counter)
    finishes: collections.Counter[int] = field(default_factory=collections.Counter)
    finish_times: list[int] = field(default_factory=list)
    start_times: list[int] = field(default_factory=list)


def read_sink(path: Path) -> SinkEvents:
    """Parse a chaos sink: `sent_us started_us [priority]` and `sent_us finished_us done`
    lines (a partial last line, being written, is skipped)."""
    events = SinkEvents()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return events
    for line in data.split(b"\n")[:-1]:
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        sent, at = int(fields[0]), int(fields[1])
        if len(fields) == 3 and fields[2] == b"done":
            events.finishes[sent] += 1
            events.finish_times.append(at)
        else:
            events.starts[sent] += 1
            events.start_times.append(at)
    return events


# -- one case's outcome --------------------------------------------------------------------------
@dataclass(kw_only=True)
class CaseOutcome:
    """Every job of one case under one driver, accounted for."""

    driver: str
    case: str
    setting: str = ""
    status: str = STATUS_OK
    reason: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    submitted: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    """Counters: faults, reruns, unacked enqueues, worker restarts, recovery_s, keys_left..."""
    census: bool = False
    """The driver took a census: `stuck` and `failed` are told from `lost`."""

    @property
    def label(self) -> str:
        return f"{self.case}/{self.setting}" if self.setting else self.case

    def rows(self) -> list[Row]:
        cell = params(case=self.case, setting=self.setting or "-")
        out = [
            Row(
                EXPERIMENT,
                self.driver,
                cell,
                "case_supported",
                float(self.status != STATUS_UNSUPPORTED),
                "bool",
            ),
            Row(EXPERIMENT, self.driver, cell, "case_failed", float(self.status == STATUS_FAILED), "bool"),
        ]
        if self.status == STATUS_UNSUPPORTED:
            return out
        out.append(Row(EXPERIMENT, self.driver, cell, "jobs_submitted", float(self.submitted), "jobs"))
        out += [
            Row(EXPERIMENT, self.driver, cell, f"jobs_{k}", float(v), "jobs") for k, v in self.counts.items()
        ]
        out.append(Row(EXPERIMENT, self.driver, cell, "census", float(self.census), "bool"))
        for name, value in sorted(self.extra.items()):
            unit = "s" if name.endswith("_s") else ("keys" if name.startswith("keys") else "count")
            out.append(Row(EXPERIMENT, self.driver, cell, name, float(value), unit))
        return out


def classify(
    sent: Sequence[int], events: SinkEvents, census: Mapping[str, Any] | None
) -> tuple[dict[str, int], int]:
    """Each sent job's outcome (counts per OUTCOMES) and how many started more than once."""
    counts = dict.fromkeys(OUTCOMES, 0)
    failed = {int(x) for x in (census or {}).get("failed", []) or []}
    pending_raw = (census or {}).get("pending", [])
    pending = {int(x) for x in pending_raw} if isinstance(pending_raw, list) else set()
    pending_count = int(pending_raw) if isinstance(pending_raw, (int, float)) else 0
    for job in sent:
        done = events.finishes[job]
        if done == 1:
            counts["completed_once"] += 1
        elif done > 1:
            counts["duplicated"] += 1
        elif job in failed:
            counts["failed"] += 1
        elif job in pending:
            counts["stuck"] += 1
        elif pending_count > 0:
            pending_count -= 1
            counts["stuck"] += 1
        else:
            counts["lost"] += 1
    reruns = sum(1 for job in sent if events.starts[job] > 1)
    return counts, reruns


def recovery_seconds(fault_ends_us: Sequence[int], events: SinkEvents) -> float:
    """The longest time, over the faults, from a fault's end to the first job finishing
    after it (the queue working again); NaN when none finished after some fault."""
    finishes = sorted(events.finish_times)
    worst = 0.0
    for end in fault_ends_us:
        after = next((t for t in finishes if t >= end), None)
        if after is None:
            return float("nan")
        worst = max(worst, (after - end) / 1e6)
    return worst


def promised(driver_delivery: str, spec_env: Mapping[str, str], case: str, setting: str) -> bool:
    """Whether an `at-least-once` driver's promise covers this case (see PROMISED)."""
    if driver_delivery != "at-least-once":
        return False
    if case == "failover":
        return any(DURABLE_FAILOVER_MARK in value for value in spec_env.values())
    return (case, setting) in PROMISED or (case, "") in PROMISED


# -- the driver's processes ----------------------------------------------------------------------
class ChaosDriver:
    """One driver's producer agent and supervised worker agents, for one case."""

    def __init__(
        self,
        *,
        spec: DriverSpec,
        python: str,
        root: Path,
        url: str,
        concurrency: int,
        job_ms: int,
        work_dir: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.python = python
        self.url = url
        self.concurrency = concurrency
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.sink = work_dir / "jobs.sink"
        common = {**dict(spec.env), ENV_CHAOS: "1", **(extra_env or {})}
        pythonpath = python_path(root, python)
        self.producer_env = agent_env(
            pythonpath=pythonpath,
            url=url,
            concurrency=concurrency,
            sink={ENV_SINK: str(work_dir / "producer.sink")},
            extra=common,
        )
        self.worker_env = agent_env(
            pythonpath=pythonpath,
            url=url,
            concurrency=concurrency,
            sink={ENV_SINK: str(self.sink)},
            extra={**common, ENV_JOB_MS: str(job_ms)},
        )
        self.agent: ProducerAgent | None = None
        self.ready: dict[str, Any] = {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        """Workers that exited on their own and were started again."""
        self._log: IO[bytes] | None = None

    def start(self) -> dict[str, Any]:
        self.agent = ProducerAgent(
            agent_argv(
                self.python, self.spec.ref, role="producer", url=self.url, concurrency=self.concurrency
            ),
            env=self.producer_env,
            log=self.work_dir / "producer.log",
        )
        self.ready = self.agent.start()
        self._log = (self.work_dir / "worker.log").open("ab")
        for index in range(int(self.ready.get("processes", 1))):
            self.workers.append(self._spawn(index))
        return self.ready

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            agent_argv(
                self.python,
                self.spec.ref,
                role="worker",
                url=self.url,
                concurrency=self.concurrency,
                index=index,
            ),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.worker_env,
            start_new_session=True,  # its children (forked horses, a Node worker) die with it
        )

    def kill_worker(self, rng: random.Random) -> int:
        """SIGKILL one worker at random, with every process below it, and start it again at
        once; its pid. The whole tree, as when a machine or container dies: RQ's work horse,
        for one, runs in a process group of its own (os.setpgrp) and would outlive a kill of
        the worker's group, finishing the very job the kill was meant to interrupt."""
        index = rng.randrange(len(self.workers))
        proc = self.workers[index]
        kill_tree(proc.pid)
        proc.wait()
        self.workers[index] = self._spawn(index)
        return proc.pid

    def supervise(self) -> None:
        """Start again any worker that exited on its own (as a supervisor would)."""
        for index, proc in enumerate(self.workers):
            if proc.poll() is not None:
                self.restarts += 1
                self.workers[index] = self._spawn(index)

    def census(self) -> dict[str, Any] | None:
        if self.agent is None or Capability.CENSUS not in self.agent.capabilities:
            return None
        return self.agent.census()

    def stop_workers(self) -> None:
        below = [pid for proc in self.workers for pid in descendants(proc.pid)]
        stop_all(self.workers, grace_s=3.0, group=True)
        self.workers.clear()
        for pid in below:  # a child in a group of its own that its worker left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        try:
            self.stop_workers()
        finally:
            agent, self.agent = self.agent, None
            if agent is not None:
                try:
                    agent.close(10.0)
                except AgentError:
                    agent.kill()
            if self._log is not None:
                self._log.close()
                self._log = None

    def worker_log_line(self) -> str:
        return last_line(self.work_dir / "worker.log")


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, their children...), read from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # The command name (in parentheses) may hold spaces; the parent pid follows the state.
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`'s process group and every process below it. The tree is stopped first
    (SIGSTOP) so that no process forks a new child between the listing and the kill."""
    tree = [pid, *descendants(pid)]
    for target in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGSTOP)
    tree += [p for p in descendants(pid) if p not in tree]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for target in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)


class ProducerThread(threading.Thread):
    """Runs one `enqueue_tracked` call beside the fault loop."""

    def __init__(self, agent: ProducerAgent, count: int, *, span_s: float, budget_s: float) -> None:
        super().__init__(daemon=True, name="chaos-producer")
        self.agent, self.count = agent, count
        self.pause_s = span_s / max(count, 1)
        self.budget_s = budget_s
        self.answer: dict[str, Any] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.answer = self.agent.enqueue_tracked(
                self.count, pause_s=self.pause_s, retry_s=0.1, budget_s=self.budget_s
            )
        except AgentError as exc:
            self.error = str(exc)

    def finish(self) -> tuple[list[int], list[int]]:
        """Wait for the answer: (sent, unacked); CaseFailedError when the producer failed or
        could not send every job within its budget."""
        self.join(self.budget_s + 120)
        if self.is_alive() or self.error is not None:
            raise CaseFailedError(f"producer: {self.error or 'no answer'}")
        sent = [int(x) for x in self.answer.get("sent", [])]
        unacked = [int(x) for x in self.answer.get("unacked", [])]
        if len(sent) < self.count:
            errors = "; ".join(f"{k} (x{v})" for k, v in self.answer.get("errors", {}).items())
            raise CaseFailedError(
                f"the producer sent {len(sent)}/{self.count} jobs within its {self.budget_s:g}s budget"
                + (f": {errors}" if errors else "")
            )
        return sent, unacked


# -- the cases ----------------------------------------------------------------------------------
@dataclass
class Context:
    spec: DriverSpec
    python: str
    root: Path
    scale: FaultScale
    rng: random.Random
    work_dir: Path
    progress: Callable[[str], None]
    window_s: float
    """How long after its last fault a case waits for unfinished jobs before it judges them
    (`case_window`)."""


def _now_us() -> int:
    return time.time_ns() // 1000


def wait_first_start(driver: ChaosDriver, window_s: float) -> None:
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        driver.supervise()
        if read_sink(driver.sink).starts:
            return
        time.sleep(0.05)
    raise CaseFailedError(
        f"no job started within {window_s:g}s of the workers' start ({driver.worker_log_line()})"
    )


def wait_in_flight(driver: ChaosDriver, patience_s: float) -> None:
    """Until some job has started and not finished (so a kill lands mid-job), or `patience_s`."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        events = read_sink(driver.sink)
        if any(events.finishes[job] < n for job, n in events.starts.items()):
            return
        time.sleep(0.01)


def drain(driver: ChaosDriver, sent: Sequence[int], *, last_fault_us: int, window_s: float) -> float:
    """Wait until every sent job finished; or, once no job has finished for SETTLE_S, until
    `window_s` has passed since the last fault's end, or until the census shows that nothing
    holds an unfinished job any more (no recovery can bring back what is nowhere); at most
    `window_s` + DRAIN_CAP_S. Seconds waited."""
    started = time.monotonic()
    cap_s = window_s + DRAIN_CAP_S
    judged_us = last_fault_us + int(window_s * 1e6)
    last_left, last_progress, next_census = -1, started, started
    wanted = set(sent)
    while True:
        driver.supervise()
        events = read_sink(driver.sink)
        unfinished = {job for job in wanted if not events.finishes[job]}
        now = time.monotonic()
        if not unfinished or now - started > cap_s:
            return now - started
        if len(unfinished) != last_left:
            last_left, last_progress = len(unfinished), now
        elif now - last_progress >= SETTLE_S:
            if _now_us() >= judged_us:
                return now - started
            if now >= next_census:
                if not still_held(driver, unfinished):
                    return now - started
                next_census = now + SETTLE_S
        time.sleep(0.1)


DRAIN_CAP_S = 120.0
"""How long jobs may go on finishing after the recovery window (a backlog) before a case
stops waiting and counts what is left."""


def still_held(driver: ChaosDriver, unfinished: set[int]) -> bool:
    """Whether the driver's census shows any unfinished job still queued or held (True when
    the driver takes no census or the census fails: only the window can tell then)."""
    try:
        found = driver.census()
    except AgentError:
        return True
    if found is None:
        return True
    pending = found.get("pending", [])
    if isinstance(pending, (int, float)):
        return pending > 0
    return any(int(job) in unfinished for job in pending)


def keys_left(url: str) -> tuple[int, int]:
    """(keys in the database, among them keys without a TTL)."""
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)
    try:
        total = no_ttl = 0
        for key in client.scan_iter(count=1000):
            total += 1
            no_ttl += client.ttl(key) == -1
        return total, no_ttl
    finally:
        client.close()


def finish_case(
    ctx: Context,
    driver: ChaosDriver,
    outcome: CaseOutcome,
    producer: ProducerThread,
    fault_ends_us: list[int],
    data_url: Callable[[], str],
) -> None:
    """After the faults: the producer's answer, the drain, the census, the tally, the keys."""
    sent, unacked = producer.finish()
    waited = drain(driver, sent, last_fault_us=max(fault_ends_us, default=_now_us()), window_s=ctx.window_s)
    census = driver.census()
    driver.stop_workers()
    events = read_sink(driver.sink)
    counts, reruns = classify(sent, events, census)
    outcome.submitted = len(sent)
    outcome.counts = counts
    outcome.census = census is not None
    total, no_ttl = keys_left(data_url())
    outcome.extra.update(
        {
            "faults": float(len(fault_ends_us)),
            "jobs_rerun": float(reruns),
            "enqueue_errors": float(len(unacked)),
            "unacked_enqueues_run": float(sum(1 for job in unacked if events.starts[job])),
            "worker_restarts": float(driver.restarts),
            "recovery_s": recovery_seconds(fault_ends_us, events),
            "drain_wait_s": round(waited, 2),
            "keys_left": float(total),
            "keys_left_no_ttl": float(no_ttl),
        }
    )


def run_worker_kill(ctx: Context, outcome: CaseOutcome) -> None:
    scale = ctx.scale
    server = RedisServerProcess()
    server.start()
    driver = ChaosDriver(
        spec=ctx.spec,
        python=ctx.python,
        root=ctx.root,
        url=server.url,
        concurrency=scale.concurrency,
        job_ms=scale.kill_job_ms,
        work_dir=ctx.work_dir / "worker_kill",
    )
    try:
        driver.start()
        assert driver.agent is not None
        span = scale.kills * scale.kill_spacing_s + 1.0
        producer = ProducerThread(driver.agent, scale.kill_jobs, span_s=span, budget_s=span * 3 + 30)
        producer.start()
        wait_first_start(driver, scale.start_window_s)
        fault_ends: list[int] = []
        for _ in range(scale.kills):
            time.sleep(ctx.rng.uniform(0.5, 1.5) * scale.kill_spacing_s)
            wait_in_flight(driver, patience_s=2.0)
            driver.kill_worker(ctx.rng)
            fault_ends.append(_now_us())
            driver.supervise()
        outcome.setting = f"sigkill_x{scale.kills}"
        finish_case(ctx, driver, outcome, producer, fault_ends, lambda: server.url)
    finally:
        driver.close()
        server.stop()


def run_redis_restart(ctx: Context, outcome: CaseOutcome, persistence: str) -> None:
    scale = ctx.scale
    server = RedisServerProcess(extra_args=PERSISTENCE[persistence])
    server.start()
    driver = ChaosDriver(
        spec=ctx.spec,
        python=ctx.python,
        root=ctx.root,
        url=server.url,
        concurrency=scale.concurrency,
        job_ms=scale.job_ms,
        work_dir=ctx.work_dir / f"redis_restart-{persistence}",
    )
    try:
        driver.start()
        assert driver.agent is not None
        span = scale.fault_span_s * 2
        producer = ProducerThread(driver.agent, scale.restart_jobs, span_s=span, budget_s=span + SEND_GRACE_S)
        producer.start()
        wait_first_start(driver, scale.start_window_s)
        time.sleep(scale.fault_span_s / 2)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown save, no last fsync
        server.proc.wait()
        time.sleep(0.3)
        try:
            server.restart()  # same port, same data dir: AOF (if any) is replayed
        except RedisUnavailableError as exc:
            raise CaseFailedError(f"the restarted server did not come back: {exc}") from None
        finish_case(ctx, driver, outcome, producer, [_now_us()], lambda: server.url)
    finally:
        driver.close()
        server.stop()


def run_proxy_faults(ctx: Context, outcome: CaseOutcome) -> None:
    scale = ctx.scale
    server = RedisServerProcess()
    server.start()
    proxy = DelayProxy.for_url(server.url).start()
    driver = ChaosDriver(
        spec=ctx.spec,
        python=ctx.python,
        root=ctx.root,
        url=proxy.proxied_url(server.url),
        concurrency=scale.concurrency,
        job_ms=scale.job_ms,
        work_dir=ctx.work_dir / "proxy_faults",
    )
    try:
        driver.start()
        assert driver.agent is not None
        span = scale.cuts * 0.8 + scale.fault_span_s
        producer = ProducerThread(driver.agent, scale.proxy_jobs, span_s=span, budget_s=span + SEND_GRACE_S)
        producer.start()
        wait_first_start(driver, scale.start_window_s)
        fault_ends: list[int] = []
        cut = 0
        for i in range(scale.cuts):
            proxy.set_delay(round_trip_ms=PROXY_DELAYS_MS[i % len(PROXY_DELAYS_MS)])
            time.sleep(ctx.rng.uniform(0.4, 0.8))
            cut += proxy.cut()
            fault_ends.append(_now_us())
        proxy.set_delay(round_trip_ms=0.0)
        outcome.setting = f"cut_x{scale.cuts}"
        outcome.extra["connections_cut"] = float(cut)
        finish_case(ctx, driver, outcome, producer, fault_ends, lambda: server.url)
    except DelayProxyError as exc:
        raise CaseFailedError(f"delay proxy: {exc}") from None
    finally:
        driver.close()
        proxy.stop()
        server.stop()


def failover_size(spec: DriverSpec, scale: FaultScale) -> tuple[int, int]:
    """(failovers, jobs) of the failover case: the issue's full size for a driver that
    promises to survive a failover (a replica wait), fewer for one that only shows its loss."""
    if any(DURABLE_FAILOVER_MARK in value for value in dict(spec.env).values()):
        return scale.durable_failovers, scale.durable_failover_jobs
    return scale.failovers, scale.failover_jobs


def run_failover(ctx: Context, outcome: CaseOutcome) -> None:
    scale = ctx.scale
    failovers, jobs = failover_size(ctx.spec, scale)
    outcome.setting = f"sigkill_primary_x{failovers}"
    if not ctx.spec.cls.sentinel_setup:
        outcome.status = STATUS_UNSUPPORTED
        outcome.reason = "declares no sentinel_setup: its library documents no Sentinel client"
        return
    setup = SentinelSetup()
    try:
        setup.start()
    except (SentinelError, RedisUnavailableError) as exc:
        setup.stop()
        raise CaseFailedError(f"sentinel setup: {exc}") from None
    driver = ChaosDriver(
        spec=ctx.spec,
        python=ctx.python,
        root=ctx.root,
        url=setup.url,
        concurrency=scale.concurrency,
        job_ms=scale.job_ms,
        work_dir=ctx.work_dir / "failover",
        extra_env={ENV_SENTINEL_ADDRESS: setup.address, ENV_SENTINEL_MASTER: MASTER_NAME},
    )
    try:
        driver.start()
        assert driver.agent is not None
        # Jobs flow for a fault span around each failover; the promotion itself (~2-3 s)
        # adds to that, during which the producer retries.
        span = failovers * (scale.fault_span_s + 3.0)
        producer = ProducerThread(driver.agent, jobs, span_s=span, budget_s=span + 90)
        producer.start()
        wait_first_start(driver, scale.start_window_s)
        fault_ends: list[int] = []
        promote_s: list[float] = []
        for _ in range(failovers):
            time.sleep(scale.fault_span_s / 2)
            old = setup.kill_primary()
            try:
                promote_s.append(setup.wait_promoted(old, scale.promote_window_s))
            except SentinelError as exc:
                raise CaseFailedError(str(exc)) from None
            fault_ends.append(_now_us())
            # The old primary rejoins as the new one's replica after every failover, the
            # last included: a queue that waits for a replica (WAIT 1) needs one to go on.
            try:
                setup.rejoin(old)
            except SentinelError as exc:
                raise CaseFailedError(str(exc)) from None
        outcome.extra["promotion_s"] = max(promote_s)
        finish_case(ctx, driver, outcome, producer, fault_ends, setup.master_url)
    finally:
        driver.close()
        setup.stop()


# -- one driver, every case ----------------------------------------------------------------------
def check_testable(spec: DriverSpec) -> None:
    """ChaosInputError (one line) for a driver that cannot be fault-tested."""
    ext = spec.external
    if ext is not None and ext.sink != "file":
        raise ChaosInputError(
            f"driver {spec.name} cannot be fault-tested: its workers report to a side Redis "
            '(sink = "redis"); a fault test reads a sink file'
        )


def case_window(spec: DriverSpec) -> tuple[float, bool]:
    """(seconds a case waits after its last fault before judging unfinished jobs, whether
    that awaits the driver's declared recovery window): the window plus WINDOW_MARGIN_S when
    that fits within WAIT_CAP_S, else no wait at all (the window is not awaited)."""
    declared = float(getattr(spec.cls, "recovery_window_s", 0.0) or 0.0)
    wait = declared + WINDOW_MARGIN_S
    return (wait, True) if wait <= WAIT_CAP_S else (0.0, False)


@contextlib.contextmanager
def driver_environment(spec: DriverSpec, logs_dir: Path | None) -> Iterator[tuple[str, Path]]:
    """The driver's interpreter (its environment built first) and an import root."""
    try:
        python = ensure_env(spec, log=(logs_dir / f"{spec.name}-install.log") if logs_dir else None)
    except PeerEnvError as exc:
        raise CaseFailedError(f"environment: {exc}") from None
    source = module_source(spec.cls)
    root = import_root([source] if source is not None else [])
    try:
        yield python, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def case_plan(cases: Sequence[str], scale: FaultScale) -> list[tuple[str, str]]:
    """(case, setting) pairs in run order; the restart case once per persistence setting."""
    plan: list[tuple[str, str]] = []
    for case in cases:
        if case == "redis_restart":
            plan += [(case, p) for p in scale.restart_settings]
        else:
            plan.append((case, ""))
    return plan


def run_driver(
    spec: DriverSpec,
    *,
    cases: Sequence[str],
    scale: FaultScale,
    seed: int,
    logs_dir: Path | None,
    progress: Callable[[str], None] = print,
) -> tuple[list[CaseOutcome], dict[str, Any]]:
    """Every case for one driver; (outcomes, what run.json says about the driver)."""
    check_testable(spec)
    rng = random.Random(seed)
    work_root = Path(tempfile.mkdtemp(prefix=f"qbench-chaos-{spec.name[:20]}-"))
    outcomes: list[CaseOutcome] = []
    meta: dict[str, Any] = {"ref": spec.ref, "origin": spec.origin}
    started = time.monotonic()
    try:
        with driver_environment(spec, logs_dir) as (python, root):
            window_s, awaited = case_window(spec)
            ctx = Context(spec, python, root, scale, rng, work_root, progress, window_s)
            meta["window_s"] = window_s
            meta["window_awaited"] = awaited
            meta["window_cap_s"] = WAIT_CAP_S
            for case, setting in case_plan(cases, scale):
                outcome = CaseOutcome(driver=spec.name, case=case, setting=setting)
                t0 = time.monotonic()
                try:
                    if case == "worker_kill":
                        run_worker_kill(ctx, outcome)
                    elif case == "redis_restart":
                        run_redis_restart(ctx, outcome, setting)
                    elif case == "proxy_faults":
                        run_proxy_faults(ctx, outcome)
                    else:
                        run_failover(ctx, outcome)
                except (CaseFailedError, AgentError, redis.RedisError, OSError, RedisUnavailableError) as exc:
                    outcome.status = STATUS_FAILED
                    outcome.reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
                    _keep_logs(work_root, logs_dir, spec.name)
                outcome.extra["case_s"] = round(time.monotonic() - t0, 1)
                progress(line_for(outcome))
                outcomes.append(outcome)
            meta.update(_ready_meta(spec, python, root))
    except CaseFailedError as exc:  # its environment could not be built
        outcomes = [
            CaseOutcome(driver=spec.name, case=c, setting=s, status=STATUS_FAILED, reason=str(exc))
            for c, s in case_plan(cases, scale)
        ]
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    return outcomes, meta


def _ready_meta(spec: DriverSpec, python: str, root: Path) -> dict[str, Any]:
    """What the driver declares (delivery, recovery window, Sentinel setup, setup, version)."""
    cls = spec.cls
    return {
        "delivery": getattr(cls, "delivery", ""),
        "recovery_window_s": float(getattr(cls, "recovery_window_s", 0.0) or 0.0),
        "sentinel_setup": getattr(cls, "sentinel_setup", ""),
        "census": Capability.CENSUS in getattr(cls, "capabilities", frozenset()),
        "version": spec.declared_version(),
        "environment": spec.environment_kind,
        "env": dict(spec.env),
    }


def _keep_logs(work_root: Path, logs_dir: Path | None, name: str) -> None:
    if logs_dir is None:
        return
    for log in work_root.glob("*/*.log"):
        logs_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, logs_dir / f"{name}-{log.parent.name}-{log.name}")


def line_for(o: CaseOutcome) -> str:
    """One console line per case."""
    head = f"{o.driver:<14} {o.label:<28}"
    if o.status != STATUS_OK:
        return f"{head} {o.status.upper()}: {o.reason}"
    c = o.counts
    return (
        f"{head} submitted {o.submitted:>5}  once {c['completed_once']:>5}  dup {c['duplicated']:>4}  "
        f"failed {c['failed']:>4}  stuck {c['stuck']:>4}  lost {c['lost']:>4}  "
        f"({o.extra.get('case_s', 0):.1f}s)"
    )


def verdicts(
    outcomes: Sequence[CaseOutcome], delivery: Mapping[str, str], envs: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """What fails the run (exit 1): a case that could not run to its end, and a loss where
    the driver promises at-least-once (`promised`)."""
    found = []
    for o in outcomes:
        where = f"{o.driver} {o.label}"
        if o.status == STATUS_FAILED:
            found.append(f"{where}: case failed: {o.reason}")
        elif (
            o.status == STATUS_OK
            and o.counts["lost"]
            and promised(
                delivery.get(o.driver, ""),
                envs.get(o.driver, {}),
                o.case,
                o.setting if o.case == "redis_restart" else "",
            )
        ):
            found.append(f"{where}: {o.counts['lost']} job(s) lost where the driver promises at-least-once")
    return found


def outcomes_as_dicts(outcomes: Sequence[CaseOutcome]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(o) for o in outcomes]
