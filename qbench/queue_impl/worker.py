"""The worker pool: N threads sharing one queue and its connection pool.

`python -m qbench.queue_impl.worker` runs it as a service (flags or the seed's environment:
REDIS_URL, WORKER_CONCURRENCY, JOB_TIMEOUT). SIGTERM/SIGINT stop it gracefully:
in-flight jobs finish (up to the job timeout); anything still held after that is
returned to its queue.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

from qbench.queue_impl.dispatcher import Outcome, ProcessDispatch
from qbench.queue_impl.hops import TRACE as _TRACE
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import DEFAULT_LEASE_S, RedisQueue
from qbench.queue_impl.service import (
    Backoff,
    ServiceArgumentParser,
    add_queue_arguments,
    duration_arg,
    fail,
    install_stop_handlers,
    open_queue,
    positive_int_arg,
)

log = logging.getLogger(__name__)

Handler = Callable[[Job], object]

HEARTBEAT_INTERVAL_S = DEFAULT_LEASE_S / 3
"""Three heartbeats per lease: one lost heartbeat never makes a live worker look dead."""


ORPHAN_SCAN_EVERY = 30
"""orphan_scan=after_reconnect: one scan for lost claims every this many heartbeats anyway
(with the default lease: every 5 minutes)."""


class JobTimeoutError(Exception):
    pass


class UnknownJobTypeError(Exception):
    pass


@dataclass
class PoolCounters:
    """Outcomes since start (read them after `stop()` for exact totals)."""

    completed: int = 0
    retried: int = 0
    dead: int = 0
    timed_out: int = 0
    redis_errors: int = 0
    orphans_requeued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


class WorkerPool:
    """Runs `concurrency` worker threads over one `RedisQueue`.

    dispatch=thread: each worker dequeues (per the variant's dequeue mode) → handler by
    job type → complete, or fail (retry with backoff / dead-letter). dispatch=process:
    dispatchers claim for the threads and hand jobs over in-process (see
    `qbench.queue_impl.dispatcher`). A handler running past `job_timeout_s` is abandoned (Python
    threads cannot be killed) and its job failed with a timeout error. Lost connections
    are retried with exponential backoff.
    The pool owns its queue's consumer id: a job in that consumer's processing list
    that none of its threads holds is handed back (see `_requeue_orphans`).
    """

    def __init__(
        self,
        queue: RedisQueue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 10,
        job_timeout_s: float | None = 30.0,
        heartbeat_interval_s: float | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        on_job_start: Callable[[Job], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queue = queue
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.job_timeout_s = job_timeout_s
        self.lease_s = lease_s
        # Three heartbeats per lease unless told otherwise (HEARTBEAT_INTERVAL_S by default).
        self.heartbeat_interval_s = heartbeat_interval_s or lease_s / 3
        self.on_job_start = on_job_start
        self.counters = PoolCounters()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: collections.Counter[str] = collections.Counter()
        """Jobs a worker thread holds, by id (a duplicated id can be held twice)."""
        self._in_flight_lock = threading.Lock()
        self._orphan_candidates: collections.Counter[str] = collections.Counter()
        self._dispatch: ProcessDispatch | None = None
        if queue.variant.dispatch == "process":
            self._dispatch = ProcessDispatch(
                queue,
                concurrency=concurrency,
                job_timeout_s=job_timeout_s,
                stopping=self.stopping,
                run_job=self._run_inline,
                acknowledge=self._acknowledge,
                on_timeout=self._timed_out,
                claimed=self._hold,
                released=self._release,
                completed=lambda n: self.counters.add("completed", n),
                redis_trouble=self._redis_trouble,
            )

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self.queue.register_consumer(self.lease_s)
        if self._dispatch is not None:
            self._dispatch.start()
            self._threads = []
        else:
            self._threads = [
                threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
                for i in range(self.concurrency)
            ]
        self._threads.append(threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, *, timeout_s: float | None = None) -> int:
        """Stop taking jobs, let in-flight ones finish, return what is still held.

        Waits up to `timeout_s` (default: the longest dequeue wait plus the job timeout)
        and returns how many jobs were handed back to their queues.
        """
        self.stopping.set()
        if timeout_s is None:
            timeout_s = self.queue.variant.longest_block_s * 3 + (self.job_timeout_s or 30.0) + 1.0
        deadline = time.monotonic() + timeout_s
        if self._dispatch is not None:
            self._dispatch.wake()
            self._dispatch.join(deadline)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        returned = 0
        try:
            returned = self.queue.unregister_consumer()
        except redis.RedisError as exc:
            log.error("could not return held jobs (stale recovery will): %s", exc)
        return returned

    def join(self, timeout_s: float) -> bool:
        """Wait for worker threads still finishing after `stop()`; True when all ended."""
        deadline = time.monotonic() + timeout_s
        threads = self._threads + (self._dispatch.threads() if self._dispatch is not None else [])
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def run_until_stopped(self) -> int:
        """Start, then block until SIGTERM/SIGINT (or `stopping` is set), then stop."""
        install_stop_handlers(self.stopping)
        self.start()
        while not self.stopping.wait(0.5):
            pass
        return self.stop()

    # -- threads ------------------------------------------------------------------
    def _work(self) -> None:
        backoff = Backoff()
        executor = self._new_executor()
        try:
            while not self.stopping.is_set():
                try:
                    job = self.queue.dequeue(wait=True)
                except redis.RedisError as exc:
                    self._redis_trouble(backoff, "dequeue", exc)
                    continue
                backoff.reset()
                if job is not None:
                    with self._in_flight_lock:
                        self._in_flight[job.id] += 1
                    try:
                        executor = self._process(job, executor)
                    finally:
                        with self._in_flight_lock:
                            self._in_flight[job.id] -= 1
                            if self._in_flight[job.id] <= 0:
                                del self._in_flight[job.id]
        finally:
            if executor is not None:
                executor.shutdown(wait=False)

    # -- dispatch=process: what the dispatcher's threads call back ------------------------
    def _hold(self, jobs: list[Job]) -> None:
        """Jobs the pool now holds (claimed: in the backlog, running or being acknowledged)."""
        with self._in_flight_lock:
            for job in jobs:
                self._in_flight[job.id] += 1

    def _release(self, job: Job) -> None:
        with self._in_flight_lock:
            self._in_flight[job.id] -= 1
            if self._in_flight[job.id] <= 0:
                del self._in_flight[job.id]

    def _run_inline(self, job: Job) -> Outcome:
        """Run the job's handler on this thread (the watchdog enforces the timeout)."""
        if self.on_job_start is not None:
            self.on_job_start(job)
        handler = self.handlers.get(job.type)
        if handler is None:
            return f"no handler for job type {job.type!r}", False  # retrying cannot make one appear
        try:
            handler(job)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}", True
        return None

    def _timed_out(self, job: Job) -> None:
        self.counters.add("timed_out")
        self._acknowledge(job, f"JobTimeoutError: job timed out after {self.job_timeout_s:g}s", True)
        self._release(job)

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor | None:
        if self.job_timeout_s is None:
            return None
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="handler")

    def _process(
        self, job: Job, executor: concurrent.futures.ThreadPoolExecutor | None
    ) -> concurrent.futures.ThreadPoolExecutor | None:
        if _TRACE is not None:
            _TRACE.run(job.id)
        if self.on_job_start is not None:
            self.on_job_start(job)
        handler = self.handlers.get(job.type)
        error: str | None = None
        retry = True
        try:
            if handler is None:
                raise UnknownJobTypeError(f"no handler for job type {job.type!r}")
            if executor is None:
                handler(job)
            else:
                future = executor.submit(handler, job)
                try:
                    future.result(timeout=self.job_timeout_s)
                except concurrent.futures.TimeoutError:
                    # The handler thread cannot be stopped; abandon it and its executor.
                    executor.shutdown(wait=False)
                    executor = self._new_executor()
                    self.counters.add("timed_out")
                    raise JobTimeoutError(f"job timed out after {self.job_timeout_s:g}s") from None
        except UnknownJobTypeError as exc:
            error, retry = str(exc), False  # retrying cannot make a handler appear
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._acknowledge(job, error, retry)
        return executor

    def _acknowledge(self, job: Job, error: str | None, retry: bool) -> None:
        backoff = Backoff(cap_s=1.0)
        for _attempt in range(10):
            try:
                if error is None:
                    self.queue.complete(job)
                    self.counters.add("completed")
                else:
                    status = self.queue.fail(job, error, retry=retry)
                    self.counters.add("retried" if status.name == "SCHEDULED" else "dead")
                return
            except redis.RedisError as exc:
                if error is not None:
                    job.attempts -= 1  # fail() counted this attempt before the write failed
                self._redis_trouble(backoff, "acknowledge", exc)
        if self.queue.variant.batch == "loop":
            # The seed's loop removes the job from processing first (LREM, GET, SET: three
            # round trips); when a later one failed, no list holds the job any more.
            log.error(
                "giving up acknowledging job %s: batch=loop may already have removed it from "
                "processing, and then nothing will recover it (pipeline and script cannot)",
                job.id,
            )
        else:
            # Still held in the processing list: stale recovery returns it (at-least-once).
            log.error("giving up acknowledging job %s; it stays in processing for recovery", job.id)

    def _heartbeat(self) -> None:
        if self.queue.variant.beat == "kept":
            # Open the kept connection now (one extra SET), not inside a later idle window.
            try:
                self.queue.heartbeat(self.lease_s)
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
        broken_seen = self.queue.broken_connections
        beats = 0
        while not self.stopping.wait(self.heartbeat_interval_s):
            beats += 1
            try:
                self.queue.heartbeat(self.lease_s)
                broken = self.queue.broken_connections
                if self._orphan_scan_due(broken_seen, broken, beats):
                    broken_seen = broken
                    self._requeue_orphans()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _orphan_scan_due(self, seen: int | None, now: int | None, beats: int) -> bool:
        """orphan_scan=always (or conn=pool, whose lost replies this pool cannot see): every
        heartbeat. after_reconnect: when a pinned connection broke since the last scan (a
        claim's reply may have been lost with it), while a job seen unowned awaits
        confirmation, and every `ORPHAN_SCAN_EVERY`-th heartbeat whatever happened (a reply
        lost some way the pinned path cannot see is still handed back, later)."""
        if self.queue.variant.orphan_scan == "always" or now is None:
            return True
        return now != seen or bool(self._orphan_candidates) or beats % ORPHAN_SCAN_EVERY == 0

    def _requeue_orphans(self) -> None:
        """Hand back held jobs that no worker thread owns, seen so on two heartbeats.

        A claim is one server-side move; when the connection drops before the reply
        arrives (redis-py then retries the command on a new connection), the job sits
        in this live consumer's processing list with no thread working on it, and stale
        recovery never returns it because the heartbeat is alive. A job between its
        claim and its thread's bookkeeping looks the same for microseconds, so a job is
        only handed back when it was unowned one heartbeat ago too.
        """
        held = collections.Counter(self.queue.held_job_ids())
        with self._in_flight_lock:
            unowned = held - self._in_flight
        confirmed = unowned & self._orphan_candidates
        self._orphan_candidates = unowned - confirmed
        if confirmed:
            self.counters.add("orphans_requeued", self.queue.requeue_held(list(confirmed.elements())))

    def _redis_trouble(self, backoff: Backoff, what: str, exc: Exception) -> None:
        self.counters.add("redis_errors")
        delay = backoff.next_delay()
        log.warning("%s: Redis error (%s); retrying in %.2fs", what, exc, delay)
        self.stopping.wait(delay)


# -- built-in handlers (demo, benchmarks, tests) ------------------------------------------
def noop(job: Job) -> None:
    """Does nothing: measures the queue, not the work."""


def sleep_ms(job: Job) -> None:
    """Sleeps for the payload's decimal milliseconds (bad payload: raises ValueError)."""
    time.sleep(float(job.payload.decode() or "0") / 1000.0)


def always_fail(job: Job) -> None:
    raise RuntimeError("handler failed on purpose")


BUILTIN_HANDLERS: dict[str, Handler] = {"noop": noop, "sleep": sleep_ms, "fail": always_fail}


def load_handlers(spec: str | None) -> dict[str, Handler]:
    """`module:ATTR` naming a mapping of job type → callable, merged over the built-ins."""
    handlers = dict(BUILTIN_HANDLERS)
    if not spec:
        return handlers
    module_name, _, attr = spec.partition(":")
    try:
        extra = getattr(importlib.import_module(module_name), attr or "HANDLERS")
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--handlers {spec}: {exc}") from None
    if not isinstance(extra, Mapping) or not all(callable(h) for h in extra.values()):
        raise ValueError(f"--handlers {spec}: not a mapping of job type to callable")
    handlers.update(extra)
    return handlers


def lease_arg(text: str) -> float:
    lease = duration_arg(text)
    if lease < 0.1:
        raise argparse.ArgumentTypeError(f"lease must be at least 100ms, got {text!r}")
    return lease


def build_parser() -> argparse.ArgumentParser:
    parser = ServiceArgumentParser(prog="python -m qbench.queue_impl.worker", description=__doc__)
    add_queue_arguments(parser)
    parser.add_argument(
        "--concurrency",
        type=positive_int_arg,
        default=os.environ.get("WORKER_CONCURRENCY", "10"),
        help="worker threads (env WORKER_CONCURRENCY; default %(default)s)",
    )
    parser.add_argument(
        "--job-timeout",
        type=duration_arg,
        default=os.environ.get("JOB_TIMEOUT", "30s"),
        help="per-job timeout, e.g. 30s or 500ms (env JOB_TIMEOUT; default %(default)s)",
    )
    parser.add_argument(
        "--handlers", help="module:ATTR mapping job type to handler (added to noop/sleep/fail)"
    )
    parser.add_argument(
        "--lease",
        type=lease_arg,
        default=os.environ.get("QBENCH_LEASE", f"{DEFAULT_LEASE_S}s"),
        help="heartbeat lease: a worker silent this long is dead and its jobs are recovered "
        "(env QBENCH_LEASE; default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handlers = load_handlers(args.handlers)
    except ValueError as exc:
        fail(2, str(exc))
    queue = open_queue(args, workers=args.concurrency)
    pool = WorkerPool(
        queue, handlers, concurrency=args.concurrency, job_timeout_s=args.job_timeout, lease_s=args.lease
    )
    log.info("worker %s: %d threads, variant %s", queue.consumer, args.concurrency, queue.variant.label())
    returned = pool.run_until_stopped()
    log.info("stopped: %s; %d held job(s) returned", pool.counters, returned)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
