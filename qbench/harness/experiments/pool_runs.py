"""A WorkerPool on a namespace of its own: timed queue operations, fast stop, rate windows."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from qbench.harness.infra.census import take_census
from qbench.harness.infra.counting import RoundTripCounter, counting_connection_class
from qbench.harness.infra.measured import unique_namespace
from qbench.harness.results.rows import Row
from qbench.harness.results.stats import percentile
from qbench.queue_impl.config import Variant
from qbench.queue_impl.connection import make_client
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.worker import BUILTIN_HANDLERS, Handler, WorkerPool

STOP_TIMEOUT_S = 30.0
PREFILL_CHUNK = 500
"""Jobs per prefill pipeline: big enough to be fast, small enough not to stall the server."""

POOL_EXHAUSTION_MARKERS = ("too many connections", "no connection available", "timeout waiting")
"""How redis-py words an exhausted pool (raise mode) and a timed-out wait for one (wait mode)."""
ACK_ABANDONED_MARKER = "giving up acknowledging job"
"""How the worker pool words an acknowledgement it stopped retrying (qbench.queue_impl.worker)."""


class TimedQueue(RedisQueue):
    """A RedisQueue that records how long each enqueue, delivering dequeue and complete takes.

    A dequeue that returns no job is not recorded: the figure is the time to get a job.
    """

    OPERATIONS = ("enqueue", "dequeue", "complete")

    def __init__(
        self, client: redis.Redis, variant: Variant, *, namespace: str, consumer: str | None = None
    ) -> None:
        super().__init__(client, variant, namespace=namespace, consumer=consumer)
        # list.append is atomic under the GIL, so worker threads append without a lock.
        self.timings_ms: dict[str, list[float]] = {op: [] for op in self.OPERATIONS}

    def enqueue(self, job: Job) -> str:
        started = time.perf_counter()
        job_id = super().enqueue(job)
        self.timings_ms["enqueue"].append((time.perf_counter() - started) * 1e3)
        return job_id

    def dequeue(self, *, wait: bool = True) -> Job | None:
        started = time.perf_counter()
        job = super().dequeue(wait=wait)
        if job is not None:
            self.timings_ms["dequeue"].append((time.perf_counter() - started) * 1e3)
        return job

    def complete(self, job: Job) -> bool:
        started = time.perf_counter()
        done = super().complete(job)
        self.timings_ms["complete"].append((time.perf_counter() - started) * 1e3)
        return done

    def marks(self) -> dict[str, int]:
        """Current lengths of the timing lists: slice with them to get one window's timings."""
        return {op: len(values) for op, values in self.timings_ms.items()}

    def since(self, marks: Mapping[str, int], op: str) -> list[float]:
        return self.timings_ms[op][marks[op] :]


class ErrorTally(logging.Handler):
    """Counts the worker pool's Redis-error warnings, split by pool exhaustion or other,
    and the acknowledgements it abandoned after its retries failed (`ack_abandoned`)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.kinds: Counter[str] = Counter()
        self._lock_kinds = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().lower()
        if message.startswith(ACK_ABANDONED_MARKER):
            kind = "ack_abandoned"
        elif "redis error" not in message:
            return
        else:
            kind = "pool_exhaustion" if any(m in message for m in POOL_EXHAUSTION_MARKERS) else "other"
        with self._lock_kinds:
            self.kinds[kind] += 1


@contextmanager
def quiet_worker_logs() -> Iterator[ErrorTally]:
    """Tally the worker pool's warnings instead of printing them (a pool starved on
    purpose logs one per failed call), restoring the logger afterwards."""
    logger = logging.getLogger("qbench.queue_impl.worker")
    tally = ErrorTally()
    saved = logger.propagate, logger.level
    logger.addHandler(tally)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield tally
    finally:
        logger.removeHandler(tally)
        logger.propagate, logger.level = saved


class PoolRun:
    """`workers` worker threads over a TimedQueue on a fresh namespace.

    The queue's connections are counted (`counter`) and named, so `stop()` can wake
    the workers blocked in BRPOPLPUSH/BZPOPMIN with CLIENT UNBLOCK instead of waiting
    out their timeouts. `admin` is a separate, uncounted client for setup and reads.
    Closing deletes the namespace's keys (only them).
    """

    def __init__(
        self,
        url: str,
        variant: Variant,
        *,
        workers: int,
        handlers: Mapping[str, Handler] = BUILTIN_HANDLERS,
        job_timeout_s: float | None = 30.0,
        on_job_start: Callable[[Job], None] | None = None,
        tag: str = "workers",
    ) -> None:
        self.variant = variant
        self.namespace = unique_namespace(tag)
        self.client_name = f"qbench-{self.namespace}"
        self.counter = RoundTripCounter()
        client = make_client(
            url,
            variant,
            workers=workers,
            wrap_connection_class=lambda base: counting_connection_class(base, self.counter),
        )
        if not isinstance(client, redis.Redis):
            client.close()
            raise ValueError("pool runs measure one connection pool on one server, not a Redis Cluster")
        self.client = client
        # Every connection the pool opens names itself (CLIENT SETNAME at connect).
        self.client.connection_pool.connection_kwargs["client_name"] = self.client_name
        self.admin: redis.Redis = redis.Redis.from_url(url, socket_timeout=variant.socket_timeout_s)
        self.queue = TimedQueue(self.client, variant, namespace=self.namespace)
        self.pool = WorkerPool(
            self.queue, handlers, concurrency=workers, job_timeout_s=job_timeout_s, on_job_start=on_job_start
        )
        self.started = False
        self.stopped = False

    def producer(self, *, fast: bool = True) -> RedisQueue:
        """An uncounted queue on the same namespace and its own connection, like a separate
        API process: `fast` writes jobs in pipelines (setup), else the variant's own way."""
        variant = self.variant.with_overrides(batch="pipeline") if fast else self.variant
        return RedisQueue(self.admin, variant, namespace=self.namespace)

    def prefill(self, count: int, *, job_type: str, payload: bytes = b"", priority: Priority) -> None:
        producer = self.producer()
        for start in range(0, count, PREFILL_CHUNK):
            size = min(PREFILL_CHUNK, count - start)
            producer.enqueue_many(
                [Job(type=job_type, payload=payload, priority=priority) for _ in range(size)]
            )

    def start(self) -> None:
        self.pool.start()
        self.started = True

    def stop(self) -> int:
        """Stop the workers now; returns how many held jobs went back to their queues."""
        if not self.started or self.stopped:
            return 0
        self.stopped = True
        returned: list[int] = []
        stopper = threading.Thread(
            target=lambda: returned.append(self.pool.stop(timeout_s=STOP_TIMEOUT_S)), daemon=True
        )
        stopper.start()
        while stopper.is_alive():
            # The block strategy moves on to the next priority's BRPOPLPUSH after each
            # unblock, so keep unblocking until every worker has seen `stopping`.
            self._unblock_workers()
            stopper.join(0.02)
        return returned[0] if returned else 0

    def _unblock_workers(self) -> None:
        try:
            for client in self.admin.client_list():
                if client.get("name") == self.client_name and "b" in str(client.get("flags", "")):
                    self.admin.client_unblock(int(client["id"]))
        except redis.RedisError:
            pass  # the stop still completes when the blocking calls time out on their own

    def backlog(self) -> dict[str, int]:
        """Jobs still waiting per priority, in processing lists, dead-lettered, scheduled."""
        stats = self.producer().stats()  # on the admin connection: the pool may be starved
        return {
            **stats.queued,
            "processing": stats.processing,
            "dead": stats.dead,
            "scheduled": stats.scheduled,
        }

    def stranded(self) -> list[str]:
        """Ids of this run's jobs that no queue, processing list or set holds any more (lost)."""
        return stranded_job_ids(self.producer())

    def close(self) -> None:
        try:
            self.stop()
            self.queue.cleanup()
        finally:
            self.client.close()
            self.client.connection_pool.disconnect()
            self.admin.close()

    def __enter__(self) -> PoolRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Window:
    """One measuring window of a processing run."""

    seconds: float
    completed: int
    redis_errors: int
    timings_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def window_rows(experiment: str, variant: str, params: str, windows: Sequence[Window]) -> list[Row]:
    """Per-window rows (one repeat each): jobs/s, Redis errors, dequeue/complete p99."""
    rows: list[Row] = []
    for repeat, window in enumerate(windows):
        rows += [
            Row(experiment, variant, params, "jobs_per_s", window.jobs_per_s, "jobs/s", repeat),
            Row(experiment, variant, params, "pool_errors", window.redis_errors, "errors", repeat),
        ]
        rows += [
            Row(
                experiment,
                variant,
                params,
                f"{op}_ms_p99",
                percentile(window.timings_ms[op], 99),
                "ms",
                repeat,
            )
            for op in ("dequeue", "complete")
            if window.timings_ms[op]  # a block-mode window can fall between two bursts
        ]
    return rows


def measure_windows(run: PoolRun, *, warmup_s: float, window_s: float, windows: int) -> list[Window]:
    """Completions, errors and operation timings in `windows` consecutive windows,
    after `warmup_s` (connections opened, scripts loaded, first waits over)."""
    time.sleep(warmup_s)
    counters = run.pool.counters
    result: list[Window] = []
    for _ in range(windows):
        marks = run.queue.marks()
        completed0, errors0 = counters.completed, counters.redis_errors
        started = time.perf_counter()
        time.sleep(window_s)
        seconds = time.perf_counter() - started
        result.append(
            Window(
                seconds=seconds,
                completed=counters.completed - completed0,
                redis_errors=counters.redis_errors - errors0,
                timings_ms={op: run.queue.since(marks, op) for op in TimedQueue.OPERATIONS},
            )
        )
    return result


class StartLog:
    """`on_job_start` callback: which jobs started, how many times, and when (µs)."""

    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()
        self.pickups_us: dict[str, int] = {}
        self.events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def expect(self, job: Job) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self.events[job.id] = event
        return event

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.starts[job.id] += 1
            self.pickups_us[job.id] = job.started_at_us - job.created_at_us
            event = self.events.pop(job.id, None)
        if event is not None:
            event.set()

    @property
    def duplicate_starts(self) -> int:
        return sum(n - 1 for n in self.starts.values() if n > 1)


def jobs_lost(prefilled: int, completed: int, left: Mapping[str, int]) -> int:
    """Jobs neither completed nor still somewhere in the queue's keys (should be 0)."""
    return prefilled - completed - sum(left.values())


def stranded_job_ids(queue: RedisQueue) -> list[str]:
    """Jobs of `queue`'s namespace that nothing will ever run, retry or recover (see `Census`)."""
    return take_census(queue).stranded_ids


def current_cpu() -> int | None:
    """The CPU the calling thread last ran on (Linux /proc), else None."""
    return _stat_cpu(Path("/proc/thread-self/stat"))


def process_cpu(pid: int) -> int | None:
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    # Field 39 ("processor"); the fields after the parenthesised command start at 3.
    fields = text[text.rindex(")") + 2 :].split()
    try:
        return int(fields[36])
    except (IndexError, ValueError):
        return None


def local_server_pid(admin: redis.Redis, source: str) -> int | None:
    """The redis-server pid when qbench started it as a local process, else None."""
    if source != "binary":
        return None
    try:
        info: dict[str, Any] = admin.info("server")
        pid = int(info.get("process_id", 0))
    except (redis.RedisError, ValueError):
        return None
    return pid if pid > 0 and process_cpu(pid) is not None else None


def wait_cycle_s(variant: Variant) -> float:
    """How long one idle dequeue call waits before the worker loop comes round again."""
    if variant.dequeue == "poll":
        return variant.poll_interval_s
    if variant.dequeue == "block":
        return sum(variant.block_timeouts_s)
    return variant.notify_timeout_s


IDLE_COMMANDS_PER_CYCLE = {"poll": 3, "block": 3, "notify": 4}
"""Server commands one idle worker sends per wait cycle: poll and block try the three
priority lists (RPOPLPUSH / BRPOPLPUSH); notify runs the claim script (EVALSHA plus its
EXISTS and DEL, which Redis counts too) and one BZPOPMIN."""


def option_number(options: Mapping[str, object], key: str, default: float) -> float:
    """A numeric `RunContext.options` entry (tests shrink experiments with these)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"option {key}: expected a number, got {value!r}")
    return float(value)


# -- job accounting, rendered from the rows -----------------------------------------
LOST, STRANDED, ABANDONED, DUPLICATES = (
    "jobs_lost",
    "jobs_stranded",
    "acknowledgements_abandoned",
    "duplicate_starts",
)


def accounting_rows(
    experiment: str,
    variant: str,
    params: str,
    *,
    lost: int,
    stranded: int,
    abandoned: int,
    duplicates: int,
) -> list[Row]:
    """The job accounting of one processing run (one repeat: the run is one census)."""
    return [
        Row(experiment, variant, params, LOST, lost, "jobs", 0),
        Row(experiment, variant, params, STRANDED, stranded, "jobs", 0),
        Row(experiment, variant, params, ABANDONED, abandoned, "errors", 0),
        Row(experiment, variant, params, DUPLICATES, duplicates, "jobs", 0),
    ]


def accounting_text(rows: Sequence[Row]) -> str:
    """What became of every job, from the accounting rows: a claim that every job is
    accounted for only when none was lost, else which runs lost how many, and where
    the rows say they went (stranded: a record not final whose id nothing holds)."""
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row.metric in (LOST, STRANDED, ABANDONED, DUPLICATES):
            found = runs.setdefault((row.variant, row.params), {})
            found[row.metric] = found.get(row.metric, 0.0) + row.value
    if not any(LOST in found for found in runs.values()):
        return "Job accounting: not recorded in these rows."
    lost = sum(int(found.get(LOST, 0)) for found in runs.values())
    duplicates = sum(int(found.get(DUPLICATES, 0)) for found in runs.values())
    twice = f"{duplicates} started twice"
    if lost == 0:
        return f"Every job is accounted for: 0 lost, {twice}."
    losing = [(key, found) for key, found in runs.items() if found.get(LOST, 0)]
    lines = [
        f"**Not every job is accounted for: {lost} lost** ({twice}), in {len(losing)} of {len(runs)} "
        "run(s). A lost job is one neither completed nor anywhere in the queue's keys after the run "
        "(queued, held in a processing list, scheduled or dead-lettered):",
        "",
    ]
    for (variant, p), found in losing:
        line = f"- `{variant}` ({p.replace(';', ', ')}): {int(found[LOST])} lost"
        if STRANDED in found:
            line += (
                f"; {int(found[STRANDED])} stranded (the record says queued, active or scheduled, "
                "but the id is in no queue, processing list or scheduled set: nothing will run, "
                "retry or recover it)"
            )
            if found.get(ABANDONED):
                line += (
                    f"; the workers abandoned {int(found[ABANDONED])} acknowledgement(s) after their "
                    "retries failed"
                )
        else:
            line += "; where it went was not recorded in this run (it has no `jobs_stranded` row)"
        lines.append(line + ".")
    return "\n".join(lines)
