"""Fault cases: inject faults into live queues; count jobs submitted, completed, duplicated, lost."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from qbench.harness.chaos.handlers import JOB_TYPE, LOG_DIR_ENV, ExecutionLog, Executions, read_executions
from qbench.harness.infra.delay_proxy import DelayProxy
from qbench.harness.infra.measured import seed_due_jobs, unique_namespace
from qbench.harness.infra.processes import stop_all
from qbench.harness.infra.redis_server import RedisServerProcess, die_with_parent, redis_for_run
from qbench.harness.infra.telemetry import DEFAULT_INTERVAL_S, SegmentTelemetry
from qbench.harness.results.rows import (
    METRICS_FILE,
    Row,
    params,
    parse_params,
    read_metrics,
    run_metadata,
    write_metrics,
)
from qbench.harness.results.runs import RunFolder, start_run
from qbench.harness.results.telemetry_charts import SEGMENTS_DIR, segments_section
from qbench.queue_impl.config import PRESETS, Variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import PRIORITY_ORDER, Job, as_text
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.scheduler import Scheduler
from qbench.queue_impl.worker import WorkerPool

EXPERIMENT = "chaos"
CASES = ("worker_kill", "scheduler_race", "redis_restart", "proxy_faults")
PERSISTENCE: dict[str, tuple[str, ...]] = {
    "none": (),
    "aof_everysec": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "aof_always": ("--appendonly", "yes", "--appendfsync", "always"),
}
"""Server settings of the restart case: no persistence, AOF fsynced every second, AOF fsynced per write."""
REPORT_FILE = "RELIABILITY.md"
CHAOS_WAITS: dict[str, object] = {
    "poll_interval_s": 0.02,
    "block_timeouts_s": (0.1, 0.1, 0.3),
    "notify_timeout_s": 0.5,
}
"""Short dequeue waits so a run takes seconds; losses and duplicates do not depend on them."""
DRAIN_DEADLINE_S = 60.0
"""After the faults, how long to wait for every job to finish before counting the rest as lost."""
WORKER_STOP_TIMEOUT_S = 20.0
KILL_SPACING_S = 0.3
"""Mean time between two worker kills."""


@dataclass(frozen=True, kw_only=True)
class ChaosScale:
    """How big each case is. Full mode meets the issue's floor: >= 1,000 jobs, >= 20 kills."""

    kill_jobs: int
    kills: int
    kill_workers: int
    worker_threads: int
    lease_s: float
    job_ms: tuple[int, int]
    """Handler duration range (ms): jobs must be in flight when a worker dies."""
    race_rounds: int
    race_batch: int
    restart_jobs: int
    restart_settings: tuple[str, ...]
    """Keys of PERSISTENCE to run the restart case under."""
    proxy_jobs: int
    cuts: int


QUICK = ChaosScale(
    kill_jobs=200,
    kills=4,
    kill_workers=2,
    worker_threads=4,
    lease_s=1.0,
    job_ms=(10, 40),
    race_rounds=4,
    race_batch=50,
    restart_jobs=100,
    restart_settings=("none", "aof_always"),
    proxy_jobs=120,
    cuts=3,
)
FULL = ChaosScale(
    kill_jobs=1200,
    kills=24,
    kill_workers=3,
    worker_threads=4,
    lease_s=2.0,
    job_ms=(10, 60),
    race_rounds=20,
    race_batch=100,
    restart_jobs=600,
    restart_settings=tuple(PERSISTENCE),
    proxy_jobs=600,
    cuts=10,
)


@dataclass(kw_only=True)
class Outcome:
    """Every job of one case under one preset, accounted for."""

    case: str
    preset: str
    setting: str
    """What varies within the case: the persistence setting, the batch mode, the fault."""
    submitted: int
    completed: int
    duplicated: int
    lost: int
    dead: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    """Case-specific counts (kills, connections cut, jobs recovered ...), unit `count`."""

    def rows(self) -> list[Row]:
        cell = params(case=self.case, setting=self.setting)
        counts = {
            "jobs_submitted": self.submitted,
            "jobs_completed": self.completed,
            "jobs_duplicated": self.duplicated,
            "jobs_lost": self.lost,
            "jobs_dead": self.dead,
        }
        rows = [Row(EXPERIMENT, self.preset, cell, name, float(v), "jobs") for name, v in counts.items()]
        rows += [
            Row(EXPERIMENT, self.preset, cell, name, float(v), "count") for name, v in self.extra.items()
        ]
        return rows


def tally(
    *,
    case: str,
    preset: str,
    setting: str,
    submitted: Sequence[str],
    executions: Executions,
    dead_ids: set[str],
) -> Outcome:
    """Completed: its handler finished at least once. Duplicated: its handler started
    more than once. Dead: dead-lettered with a reason and never completed. Lost: none of these."""
    ids = set(submitted)
    completed = ids & executions.done
    dead = (ids & dead_ids) - completed
    return Outcome(
        case=case,
        preset=preset,
        setting=setting,
        submitted=len(ids),
        completed=len(completed),
        duplicated=sum(1 for i in ids if executions.started[i] > 1),
        lost=len(ids - completed - dead),
        dead=len(dead),
    )


def chaos_variant(preset: str) -> Variant:
    return PRESETS[preset].with_overrides(**CHAOS_WAITS)


def chaos_jobs(count: int, rng: random.Random, scale: ChaosScale) -> list[Job]:
    """Mostly high priority: the `block` dequeue waits out its high-priority timeout
    before it looks at normal, which would make the run slow, not the result different."""
    low, high = scale.job_ms
    return [
        Job(
            type=JOB_TYPE,
            payload=str(rng.randint(low, high)).encode(),
            priority=rng.choices(PRIORITY_ORDER, weights=(8, 1, 1))[0],
        )
        for _ in range(count)
    ]


def open_queue(url: str, variant: Variant, namespace: str, *, workers: int = 1) -> RedisQueue:
    return RedisQueue(make_client(url, variant, workers=workers), variant, namespace=namespace)


def close_queue(queue: RedisQueue, *, cleanup: bool = False) -> None:
    with contextlib.suppress(redis.RedisError):
        if cleanup:
            queue.cleanup()
    close_client(queue.client)


def dead_ids(queue: RedisQueue) -> set[str]:
    return {as_text(i) for i in queue.client.lrange(queue.keys.dead(), 0, -1)}


def wait_drained(
    queue: RedisQueue,
    finished: Callable[[], int],
    expected: int,
    *,
    quiet_s: float,
    deadline_s: float = DRAIN_DEADLINE_S,
) -> None:
    """Wait until `finished()` reaches `expected`, or the queue has been empty with no
    progress for `quiet_s` (whatever is missing then is lost), or the deadline."""
    deadline = time.monotonic() + deadline_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = finished()
        if done >= expected:
            return
        if done != last:
            last, last_change = done, time.monotonic()
        with contextlib.suppress(redis.RedisError):
            stats = queue.stats()
            idle = sum(stats.queued.values()) == 0 and stats.processing == 0 and stats.scheduled == 0
            if idle and time.monotonic() - last_change > quiet_s:
                return
        time.sleep(0.05)


# -- case 1: workers killed with SIGKILL ---------------------------------------------------------
class WorkerProcesses:
    """`python -m qbench.queue_impl.worker` processes logging executions to `log_dir`."""

    def __init__(
        self, *, url: str, variant: Variant, namespace: str, scale: ChaosScale, log_dir: Path
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "qbench.queue_impl.worker",
            "--redis-url",
            url,
            "--variant",
            variant.label(),
            "--namespace",
            namespace,
            "--concurrency",
            str(scale.worker_threads),
            "--job-timeout",
            "30s",
            "--lease",
            f"{scale.lease_s:g}s",
            "--handlers",
            "qbench.harness.chaos.handlers:HANDLERS",
        ]
        self.env = {**os.environ, LOG_DIR_ENV: str(log_dir)}
        self.log_dir = log_dir
        self.running: list[tuple[subprocess.Popen[bytes], float]] = []

    def spawn(self) -> None:
        stderr = (self.log_dir / "workers.stderr").open("ab")
        with stderr:
            proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        self.running.append((proc, time.monotonic()))

    def kill_busy(self, queue: RedisQueue, rng: random.Random, *, patience_s: float = 2.0) -> tuple[int, int]:
        """SIGKILL a random worker that holds jobs right now (any worker after
        `patience_s` without one); returns its pid and how many jobs it held."""
        deadline = time.monotonic() + patience_s
        while True:
            alive = [entry for entry in self.running if entry[0].poll() is None]
            busy = [(entry, held) for entry in alive if (held := held_by_pid(queue, entry[0].pid)) > 0]
            if busy or (alive and time.monotonic() > deadline):
                break
            time.sleep(0.01)
        (proc, started), _ = rng.choice(busy) if busy else (rng.choice(alive), 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.running.remove((proc, started))
        # Counted after the kill: what the dead worker left in its processing list.
        return proc.pid, held_by_pid(queue, proc.pid)

    def kill_all(self) -> None:
        """SIGKILL the rest: the run is over (every job finished, or the drain deadline
        passed and what is missing is counted as lost either way)."""
        stop_all([proc for proc, _ in self.running], grace_s=0, ask=None)
        self.running.clear()


def held_by_pid(queue: RedisQueue, pid: int) -> int:
    """Jobs in the processing list of the consumer run by `pid` (ids are host-pid-random)."""
    held = 0
    for key in queue.client.scan_iter(match=f"{queue.keys.prefix}processing:*-{pid}-*", count=1000):
        held += int(queue.client.llen(key))
    return held


def run_worker_kill(url: str, preset: str, scale: ChaosScale, rng: random.Random, work_dir: Path) -> Outcome:
    variant = chaos_variant(preset)
    namespace = unique_namespace("chaos-kill")
    log_dir = work_dir / f"kill-{preset}"
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = open_queue(url, variant, namespace)
    scheduler = Scheduler(open_queue(url, variant, namespace), interval_s=0.05, recover_interval_s=0.2)
    workers = WorkerProcesses(url=url, variant=variant, namespace=namespace, scale=scale, log_dir=log_dir)
    # A steady trickle spread over the kill period keeps every worker busy at each kill.
    period_s = scale.kills * KILL_SPACING_S + 1.0
    bursts = max(1, scale.kill_jobs // 10)
    producer = Producer(queue, chaos_jobs(scale.kill_jobs, rng, scale), burst=10, pause_s=period_s / bursts)
    held_at_kill = 0
    try:
        scheduler.start()
        for _ in range(scale.kill_workers):
            workers.spawn()
        wait_registered(queue, scale.kill_workers)
        producer.start()
        for _ in range(scale.kills):
            time.sleep(rng.uniform(0.5, 1.5) * KILL_SPACING_S)
            _pid, held = workers.kill_busy(queue, rng)
            held_at_kill += held
            workers.spawn()
        producer.join()
        submitted = producer.submitted
        wait_drained(
            queue,
            lambda: len(read_executions(log_dir).done & set(submitted)),
            len(submitted),
            quiet_s=scale.lease_s * 3,
        )
    finally:
        workers.kill_all()
        scheduler.stop()
        close_queue(scheduler.queue)
    outcome = tally(
        case="worker_kill",
        preset=preset,
        setting=f"sigkill_x{scale.kills}",
        submitted=producer.submitted,
        executions=read_executions(log_dir),
        dead_ids=dead_ids(queue),
    )
    outcome.extra = {
        "kills": scale.kills,
        "jobs_held_at_kill": held_at_kill,
        "jobs_recovered": scheduler.counters.recovered,
    }
    close_queue(queue, cleanup=True)
    return outcome


def wait_registered(queue: RedisQueue, consumers: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while queue.client.scard(queue.keys.consumers()) < consumers and time.monotonic() < deadline:
        time.sleep(0.02)


# -- case 2: two schedulers moving the same due jobs ---------------------------------------------
def run_scheduler_race(url: str, preset: str, scale: ChaosScale) -> Outcome:
    variant = chaos_variant(preset)
    namespace = unique_namespace("chaos-race")
    schedulers = [open_queue(url, variant, namespace) for _ in range(2)]
    drain = open_queue(url, variant, namespace)
    submitted: list[str] = []
    moved: list[int] = []
    dequeued: collections.Counter[str] = collections.Counter()
    try:
        for _ in range(scale.race_rounds):
            submitted += seed_due_jobs(drain, scale.race_batch, job_type=JOB_TYPE)
            barrier = threading.Barrier(len(schedulers))

            def tick(queue: RedisQueue, barrier: threading.Barrier) -> None:
                barrier.wait()
                moved.append(queue.move_scheduled_to_ready(limit=10 * scale.race_batch))

            threads = [threading.Thread(target=tick, args=(q, barrier)) for q in schedulers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        # Drain what the two schedulers queued: a job queued twice runs twice.
        while (job := drain.dequeue(wait=False)) is not None:
            dequeued[job.id] += 1
            drain.complete(job)
        leftover = int(drain.client.zcard(drain.keys.scheduled()))
        executions = Executions(started=dequeued, done=set(dequeued))
        outcome = tally(
            case="scheduler_race",
            preset=preset,
            setting=f"batch={variant.batch}",
            submitted=submitted,
            executions=executions,
            dead_ids=dead_ids(drain),
        )
        outcome.extra = {
            "moves_reported": sum(moved),
            "extra_executions": sum(dequeued.values()) - len(dequeued),
            "left_scheduled": leftover,
        }
        return outcome
    finally:
        for queue in schedulers:
            close_queue(queue)
        close_queue(drain, cleanup=True)


# -- shared by cases 3 and 4: an in-process pool + scheduler + producer -------------------------
@dataclass
class Producer:
    """Enqueues jobs one at a time in bursts, retrying through outages; a job counts as
    submitted once an enqueue call for it returned."""

    queue: RedisQueue
    jobs: list[Job]
    burst: int
    pause_s: float
    submitted: list[str] = field(default_factory=list)
    retries: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i, job in enumerate(self.jobs):
            delay = 0.02
            while True:
                try:
                    self.queue.enqueue(job)
                    break
                except redis.RedisError:
                    self.retries += 1
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            self.submitted.append(job.id)
            if (i + 1) % self.burst == 0:
                time.sleep(self.pause_s)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


@contextlib.contextmanager
def running_services(
    url: str, variant: Variant, namespace: str, scale: ChaosScale, log: ExecutionLog
) -> Iterator[tuple[WorkerPool, Scheduler]]:
    threads = scale.worker_threads
    pool = WorkerPool(
        open_queue(url, variant, namespace, workers=threads),
        {JOB_TYPE: log},
        concurrency=threads,
        job_timeout_s=30.0,
        lease_s=scale.lease_s,
    )
    scheduler = Scheduler(open_queue(url, variant, namespace), interval_s=0.05, recover_interval_s=0.25)
    pool.start()
    scheduler.start()
    try:
        yield pool, scheduler
    finally:
        pool.stop(timeout_s=WORKER_STOP_TIMEOUT_S)
        scheduler.stop()
        close_queue(pool.queue)
        close_queue(scheduler.queue)


def done_count(log: ExecutionLog, submitted: list[str]) -> Callable[[], int]:
    return lambda: len(read_executions(log.path.parent).done & set(submitted))


# -- case 3: Redis restarted mid-run -------------------------------------------------------------
def run_redis_restart(
    preset: str,
    persistence: str,
    scale: ChaosScale,
    rng: random.Random,
    work_dir: Path,
    sampling: SegmentTelemetry | None = None,
) -> Outcome:
    """Crash (SIGKILL) a Redis this run started, mid-run, and start it again on the same port."""
    variant = chaos_variant(preset)
    namespace = unique_namespace("chaos-restart")
    log = ExecutionLog(work_dir / f"restart-{preset}-{persistence}" / "pool.log")
    server = RedisServerProcess(extra_args=PERSISTENCE[persistence])
    server.start()
    segment = (sampling or SegmentTelemetry(None)).segment(
        server.url, f"redis_restart-{persistence}-{preset}"
    )
    try:
        # Sampled on the server it crashes: its rows show failed samples, then a restart.
        with segment:
            producer_queue = open_queue(server.url, variant, namespace)
            producer = Producer(
                producer_queue, chaos_jobs(scale.restart_jobs, rng, scale), burst=20, pause_s=0.08
            )
            with running_services(server.url, variant, namespace, scale, log) as (pool, scheduler):
                producer.start()
                while len(producer.submitted) < scale.restart_jobs // 2:
                    time.sleep(0.01)
                assert server.proc is not None
                server.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown save, no final fsync
                server.proc.wait()
                time.sleep(0.3)
                server.restart()
                producer.join()
                wait_drained(
                    producer_queue, done_count(log, producer.submitted), len(producer.submitted), quiet_s=1.0
                )
            outcome = tally(
                case="redis_restart",
                preset=preset,
                setting=persistence,
                submitted=producer.submitted,
                executions=read_executions(log.path.parent),
                dead_ids=dead_ids(producer_queue),
            )
            outcome.extra = {
                "producer_retries": producer.retries,
                "worker_redis_errors": pool.counters.redis_errors,
                "scheduler_redis_errors": scheduler.counters.redis_errors,
            }
            close_queue(producer_queue)
            return outcome
    finally:
        log.close()
        server.stop()


# -- case 4: connections cut and delayed ---------------------------------------------------------
PROXY_DELAYS_MS = (2.0, 20.0, 0.0, 50.0)
"""Round-trip delays cycled between cuts."""


def run_proxy_faults(url: str, preset: str, scale: ChaosScale, rng: random.Random, work_dir: Path) -> Outcome:
    """Workers and scheduler reach Redis through the delay proxy, which cuts every
    connection `cuts` times and changes the delay in between."""
    variant = chaos_variant(preset)
    namespace = unique_namespace("chaos-proxy")
    log = ExecutionLog(work_dir / f"proxy-{preset}" / "pool.log")
    producer = open_queue(url, variant, namespace)
    submitted: list[str] = []
    cut = 0
    try:
        with DelayProxy.for_url(url) as proxy:
            proxied = proxy.proxied_url(url)
            with running_services(proxied, variant, namespace, scale, log) as (pool, scheduler):
                jobs = chaos_jobs(scale.proxy_jobs, rng, scale)
                chunks = [jobs[i :: scale.cuts + 1] for i in range(scale.cuts + 1)]
                for i, chunk in enumerate(chunks[:-1]):
                    proxy.set_delay(round_trip_ms=PROXY_DELAYS_MS[i % len(PROXY_DELAYS_MS)])
                    submitted += producer.enqueue_many(chunk)
                    time.sleep(rng.uniform(0.1, 0.3))
                    cut += proxy.cut()
                submitted += producer.enqueue_many(chunks[-1])
                wait_drained(producer, done_count(log, submitted), len(submitted), quiet_s=scale.lease_s * 3)
        outcome = tally(
            case="proxy_faults",
            preset=preset,
            setting=f"cut_x{scale.cuts}",
            submitted=submitted,
            executions=read_executions(log.path.parent),
            dead_ids=dead_ids(producer),
        )
        outcome.extra = {
            "connections_cut": cut,
            "orphans_requeued": pool.counters.orphans_requeued,
            "worker_redis_errors": pool.counters.redis_errors,
            "scheduler_redis_errors": scheduler.counters.redis_errors,
        }
        return outcome
    finally:
        log.close()
        close_queue(producer, cleanup=True)


# -- the verb ----------------------------------------------------------------------------------
MUST_HOLD = "lost must be 0 except after a restart without persistence; `script` must not duplicate"


def violations(outcomes: Sequence[Outcome]) -> list[str]:
    """The guarantees this run must show (the exit status of `qbench chaos`)."""
    found = []
    for o in outcomes:
        where = f"{o.case}/{o.setting}/{o.preset}"
        if o.lost and not (o.case == "redis_restart" and o.setting != "aof_always"):
            found.append(f"{where}: {o.lost} job(s) lost")
        if o.case == "scheduler_race" and o.setting == "batch=script" and o.duplicated:
            found.append(f"{where}: {o.duplicated} job(s) duplicated")
    return found


def run_cases(
    url: str,
    *,
    cases: Sequence[str],
    presets: Sequence[str],
    scale: ChaosScale,
    seed: int,
    work_dir: Path,
    progress: Callable[[str], None] = print,
    sampling: SegmentTelemetry | None = None,
) -> list[Outcome]:
    """Every case under every preset; with `sampling`, each one sampled into a file of its own."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    sampling = sampling or SegmentTelemetry(None)
    for case in cases:
        for preset in presets:
            started = time.monotonic()
            if case == "redis_restart":  # each on a server of its own, sampled there
                found = [
                    run_redis_restart(preset, p, scale, rng, work_dir, sampling)
                    for p in scale.restart_settings
                ]
            else:
                with sampling.segment(url, f"{case}-{preset}"):  # segment_name's form
                    if case == "worker_kill":
                        found = [run_worker_kill(url, preset, scale, rng, work_dir)]
                    elif case == "scheduler_race":
                        found = [run_scheduler_race(url, preset, scale)]
                    else:
                        found = [run_proxy_faults(url, preset, scale, rng, work_dir)]
            for o in found:
                progress(
                    f"{case:<15} {o.setting:<14} {preset:<10} submitted {o.submitted:>5}  "
                    f"completed {o.completed:>5}  duplicated {o.duplicated:>4}  lost {o.lost:>4}"
                    f"  ({time.monotonic() - started:.1f}s)"
                )
            outcomes += found
    return outcomes


def outcomes_from_rows(rows: Sequence[Row]) -> list[Outcome]:
    """Rebuild outcomes from tidy rows (the report reads rows only)."""
    cells: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
    for row in rows:
        if row.experiment == EXPERIMENT:
            cells[(row.params, row.variant)][row.metric] = row.value
    outcomes = []
    for (cell, preset), metrics in cells.items():
        p = parse_params(cell)
        base = {"jobs_submitted", "jobs_completed", "jobs_duplicated", "jobs_lost", "jobs_dead"}
        outcomes.append(
            Outcome(
                case=p["case"],
                preset=preset,
                setting=p.get("setting", ""),
                submitted=int(metrics.get("jobs_submitted", 0)),
                completed=int(metrics.get("jobs_completed", 0)),
                duplicated=int(metrics.get("jobs_duplicated", 0)),
                lost=int(metrics.get("jobs_lost", 0)),
                dead=int(metrics.get("jobs_dead", 0)),
                extra={k: v for k, v in metrics.items() if k not in base},
            )
        )
    return outcomes


CASE_TEXT = {
    "worker_kill": "worker processes (`python -m qbench.queue_impl.worker`) SIGKILLed at random moments "
    "while jobs were in flight, each replaced at once; the scheduler returns a dead worker's jobs "
    "once its heartbeat lease expires",
    "scheduler_race": "two schedulers move the same due retries at the same moment (a barrier "
    "releases both), then one consumer drains the queue: a job queued twice runs twice",
    "redis_restart": "the Redis this run started is crashed (SIGKILL) mid-run and started again on "
    "the same port; producer, workers and scheduler reconnect with backoff",
    "proxy_faults": "workers and scheduler reach Redis through the delay proxy, which resets every "
    "connection several times while the round-trip delay cycles through 2, 20, 0 and 50 ms",
}


def sorted_outcomes(rows: Sequence[Row]) -> list[Outcome]:
    """The outcomes in report order: case, persistence setting, preset."""
    return sorted(
        outcomes_from_rows(rows),
        key=lambda o: (
            CASES.index(o.case) if o.case in CASES else len(CASES),
            list(PERSISTENCE).index(o.setting) if o.setting in PERSISTENCE else 0,
            o.setting,
            list(PRESETS).index(o.preset) if o.preset in PRESETS else 99,
        ),
    )


def render_markdown(rows: Sequence[Row], *, heading: str = "##") -> str:
    """The "Reliability" report section, from tidy rows only."""
    outcomes = sorted_outcomes(rows)
    lines = [
        f"{heading} Reliability",
        "",
        "Every job is accounted for from an execution log each handler appends to before and",
        "after its work (a file, so it survives a SIGKILL and a Redis restart). *Completed*:",
        "the handler finished at least once. *Duplicated*: the handler started more than once",
        "(at-least-once delivery re-runs a job whose worker died after starting it). *Lost*:",
        "submitted (the enqueue call returned) and never completed nor dead-lettered.",
        "",
        "| case | setting | preset | submitted | completed | duplicated | lost |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lost = f"**{o.lost}**" if o.lost else "0"
        cells = [o.case, o.setting, o.preset, o.submitted, o.completed, o.duplicated, lost]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Cases:", ""]
    for case in CASES:
        if any(o.case == case for o in outcomes):
            lines.append(f"- `{case}`: {CASE_TEXT[case]}.")
    extras = [o for o in outcomes if o.extra]
    if extras:
        lines += ["", "Case counters (per row above):", ""]
        for o in extras:
            detail = ", ".join(f"{k} {v:g}" for k, v in sorted(o.extra.items()))
            lines.append(f"- {o.case} / {o.setting} / {o.preset}: {detail}")
    problems = violations(outcomes)
    lines += ["", f"Guarantees checked ({MUST_HOLD}): " + ("; ".join(problems) if problems else "all hold.")]
    return "\n".join(lines) + "\n"


def run_chaos(
    redis_url: str | None,
    *,
    cases: Sequence[str],
    presets: Sequence[str],
    scale: ChaosScale,
    seed: int,
    out: Path,
    mode: str,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
) -> list[Outcome]:
    """Run the cases and write `metrics.csv`, `run.json` and `RELIABILITY.md` to `out`
    (and, sampled, `telemetry/<case>-<preset>.csv` per case; `telemetry_interval_s` 0: off)."""
    started = time.monotonic()
    run = start_run(out, "chaos", {"mode": mode, "experiment": EXPERIMENT})  # clears an earlier run
    with run:
        return _run_chaos(
            run, redis_url, cases, presets, scale, seed, out, mode, telemetry_interval_s, started
        )


def _run_chaos(
    run: RunFolder,
    redis_url: str | None,
    cases: Sequence[str],
    presets: Sequence[str],
    scale: ChaosScale,
    seed: int,
    out: Path,
    mode: str,
    telemetry_interval_s: float,
    started: float,
) -> list[Outcome]:
    sampling = SegmentTelemetry(out / SEGMENTS_DIR, interval_s=telemetry_interval_s)
    sampling.clear()
    with redis_for_run(redis_url) as server, tempfile.TemporaryDirectory(prefix="qbench-chaos-") as tmp:
        outcomes = run_cases(
            server.url,
            cases=cases,
            presets=presets,
            scale=scale,
            seed=seed,
            work_dir=Path(tmp),
            sampling=sampling,
        )
        server_info = server.info.as_dict()
    rows = [row for o in outcomes for row in o.rows()]
    write_metrics(out / METRICS_FILE, rows)
    run.meta.update(
        run_metadata(
            server=server_info,
            mode=mode,
            extra={
                "experiment": EXPERIMENT,
                "cases": list(cases),
                "presets": list(presets),
                "scale": dataclasses.asdict(scale),
                "seed": seed,
                "elapsed_s": round(time.monotonic() - started, 1),
                "restart_server": "a redis-server started by this run (same binary), crashed with SIGKILL",
                "telemetry": {"interval_s": telemetry_interval_s, "segments": sampling.meta},
            },
        )
    )
    run.checkpoint()
    (out / REPORT_FILE).write_text(render_markdown(rows) + chaos_telemetry(out, rows))
    return outcomes


def render_saved(out: Path) -> Path:
    """Re-render a chaos run's RELIABILITY.md (and its telemetry charts) from its saved files."""
    rows = read_metrics(out / METRICS_FILE)
    (out / REPORT_FILE).write_text(render_markdown(rows) + chaos_telemetry(out, rows))
    return out / REPORT_FILE


def segment_name(outcome: Outcome) -> str:
    """The telemetry file stem of one case run (`telemetry/<name>.csv`)."""
    if outcome.case == "redis_restart":
        return f"{outcome.case}-{outcome.setting}-{outcome.preset}"
    return f"{outcome.case}-{outcome.preset}"


def chaos_telemetry(out: Path, rows: Sequence[Row]) -> str:
    """RELIABILITY.md's "What Redis did": each case's telemetry file, side by side, in the
    report's order (from the rows, so a re-rendering gives the same section)."""
    section = segments_section(
        out / SEGMENTS_DIR,
        out / "charts",
        order=[segment_name(o) for o in sorted_outcomes(rows)],
        label="case",
        stem="chaos_telemetry",
        intro="Redis and the harness during each case (a restarted server shows as failed samples "
        "and a restart; killed workers come and go in the harness's processes).",
    )
    return "\n" + section if section else ""
