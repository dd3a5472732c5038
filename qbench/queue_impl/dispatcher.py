"""dispatch=process: the threads of a worker pool take turns waiting on Redis for all of them.

Leader/followers: per partition, one idle thread of the pool is the leader. It blocks
in one BZPOPMIN (the pool's only idle command, once per `notify_timeout_s`), claims as
many jobs per round trip as there are idle threads plus `prefetch`, keeps the first for
itself and leaves the rest in the pool's backlog, where the followers take them; an idle
follower becomes the next leader. So the job that woke the pool runs on the thread that
claimed it, with no hand-over between threads, and an idle pool costs one blocking call
per partition, not one per thread. Completions go back with ack=batch through an acker
thread that sends every completion that piled up while the previous round trip was on
its way. A handler that outlives the job timeout is caught by a watchdog, which fails
its job and starts a thread in its place (a Python thread cannot be killed; the
abandoned one exits when its handler returns, without acknowledging).

Every claimed job sits in the consumer's processing list from the claim on, whether a
thread runs it, it waits in the backlog or its completion waits for the acker: a crash
hands all of them back through stale recovery, a clean stop through
`unregister_consumer` (after the last completions are sent).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from qbench.queue_impl.hops import TRACE as _TRACE
from qbench.queue_impl.job import Job, now_us
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.service import Backoff

log = logging.getLogger(__name__)

WATCHDOG_MAX_PERIOD_S = 1.0
"""A timed-out handler is noticed within this (or a quarter of the job timeout, if shorter)."""


@dataclass(eq=False)
class Running:
    """A job a thread is running: its handler started at `started` (monotonic)."""

    job: Job
    started: float
    timed_out: bool = False


@dataclass
class DispatchState:
    """What the threads of one pool share (under `cv`)."""

    prefetch: int
    partitions: int
    lock: threading.RLock = field(default_factory=threading.RLock)
    cv: threading.Condition = field(init=False)
    """Serving threads wait on it (for a job, a turn to lead, or the stop)."""
    ack_cv: threading.Condition = field(init=False)
    """The acker waits on it (same lock): a completion wakes the acker, not the servers."""
    ready: collections.deque[Job] = field(default_factory=collections.deque)
    idle: int = 0
    """Threads waiting for a job or a turn to lead (leaders excluded)."""
    leaders: set[int] = field(default_factory=set)
    """Partitions that have a leader claiming or waiting for them."""
    reserved: int = 0
    """Jobs leaders are claiming right now (counted against the capacity)."""
    acks: list[Job] = field(default_factory=list)
    running: dict[int, Running] = field(default_factory=dict)
    """By thread: what it runs."""
    found: dict[int, bool] = field(default_factory=dict)
    """By partition: whether its last claim filled up (else the next leader waits first)."""
    open: bool = False
    """Set once every thread has started: the first claim then counts them all."""

    def __post_init__(self) -> None:
        self.cv = threading.Condition(self.lock)
        self.ack_cv = threading.Condition(self.lock)

    def wanted(self) -> int:
        """How many jobs a new leader may claim now, itself included (call under `cv`)."""
        return self.idle + 1 + self.prefetch - len(self.ready) - self.reserved

    def vacant(self) -> int | None:
        """A partition without a leader, if there is work room for one (under `cv`)."""
        if not self.open or self.wanted() <= 0:
            return None
        for index in range(self.partitions):
            if index not in self.leaders:
                return index
        return None


Outcome = tuple[str, bool] | None
"""What running a handler came to: None (done), or (error, whether to retry)."""


class ProcessDispatch:
    """The threads of dispatch=process around one `WorkerPool` (see the module docstring)."""

    def __init__(
        self,
        queue: RedisQueue,
        *,
        concurrency: int,
        job_timeout_s: float | None,
        stopping: threading.Event,
        run_job: Callable[[Job], Outcome],
        acknowledge: Callable[[Job, str | None, bool], None],
        on_timeout: Callable[[Job], None],
        claimed: Callable[[list[Job]], None],
        released: Callable[[Job], None],
        completed: Callable[[int], None],
        redis_trouble: Callable[[Backoff, str, Exception], None],
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.job_timeout_s = job_timeout_s
        self.stopping = stopping
        self.state = DispatchState(prefetch=queue.variant.prefetch, partitions=len(queue.partitions))
        self._run_job = run_job
        self._acknowledge = acknowledge
        self._on_timeout = on_timeout
        self._claimed = claimed
        self._released = released
        self._completed = completed
        self._redis_trouble = redis_trouble
        self._batch_acks = queue.variant.ack == "batch"
        self._targeted = queue.variant.handoff == "targeted"
        self._servers: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []
        self._serial = 0

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        for _ in range(self.concurrency):
            self._add_server()
        with self.state.cv:
            self.state.cv.wait_for(lambda: self.state.idle >= self.concurrency, timeout=10)
            self.state.open = True
            self.state.cv.notify_all()
        if self._batch_acks:
            self._helpers.append(threading.Thread(target=self._ack_loop, name="acker", daemon=True))
        if self.job_timeout_s is not None:
            self._helpers.append(threading.Thread(target=self._watchdog, name="watchdog", daemon=True))
        for thread in self._helpers:
            thread.start()

    def _add_server(self) -> None:
        self._serial += 1
        thread = threading.Thread(target=self._serve, name=f"worker-{self._serial}", daemon=True)
        self._servers.append(thread)
        thread.start()

    def wake(self) -> None:
        """Make every thread look at the stop flag: leaders in their wait too (one marker
        write per partition, only when a leader is waiting)."""
        with self.state.cv:
            leading = bool(self.state.leaders)
            self.state.cv.notify_all()
            self.state.ack_cv.notify_all()
        if leading:
            try:
                self.queue.wake_waiters()
            except redis.RedisError as exc:
                log.warning("could not wake the pool's leader (it stops at its wait's timeout): %s", exc)

    def join(self, deadline: float) -> None:
        """Wait for the serving threads, then send the last completions."""
        for thread in [*self._servers, *self._helpers]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._flush_acks()  # whatever the acker had not sent when it stopped

    def threads(self) -> list[threading.Thread]:
        return [*self._servers, *self._helpers]

    # -- the serving threads: followers, and leaders in turn ------------------------------
    def _serve(self) -> None:
        state, me = self.state, threading.get_ident()
        backoff = Backoff()
        while True:
            lead: int | None = None
            job: Job | None = None
            with state.cv:
                state.idle += 1
                while True:
                    if self.stopping.is_set():
                        state.idle -= 1
                        return  # what waits in the backlog goes back to the queue at stop
                    if state.ready:
                        job = state.ready.popleft()
                        break
                    lead = state.vacant()
                    if lead is not None:
                        break
                    state.cv.wait()
                state.idle -= 1
                if lead is not None:
                    state.leaders.add(lead)
                    want = state.wanted()
                    state.reserved += want
            if lead is not None:
                job = self._lead(lead, want, backoff)
                if job is None:
                    continue
            assert job is not None
            if _TRACE is not None:
                _TRACE.handed(job.id)
            # handoff=targeted: a leader's successor is woken just before its job's handler.
            if not self._run(me, job, successor=lead is not None and self._targeted):
                return  # the watchdog failed the job and started a thread in our place

    def _lead(self, partition: int, want: int, backoff: Backoff) -> Job | None:
        """Claim up to `want` jobs (waiting when none is ready); keep the first, leave the
        rest to the followers, and step down so an idle follower leads next."""
        state = self.state
        jobs: list[Job] = []
        try:
            jobs = self.queue.claim_many(
                want, wait=True, home=partition, look_first=state.found.get(partition, True)
            )
            backoff.reset()
        except redis.RedisError as exc:
            self._redis_trouble(backoff, "claim", exc)
        finally:
            if jobs:
                self._claimed(jobs)
            with state.cv:
                state.found[partition] = len(jobs) >= want  # fewer: the queues are empty now
                state.leaders.discard(partition)
                state.reserved -= want
                state.ready.extend(jobs[1:])
                if not self._targeted:
                    state.cv.notify_all()
                    state.ack_cv.notify_all()
                elif len(jobs) > 1:
                    state.cv.notify(len(jobs) - 1)  # one follower per job left in the backlog
                elif not jobs and state.partitions > 1:
                    # This thread leads again, perhaps another partition: wake one to lead this one.
                    state.cv.notify()
                # Nothing claimed, one partition: this thread leads again itself, waking nobody.
        return jobs[0] if jobs else None

    def _run(self, me: int, job: Job, *, successor: bool = False) -> bool:
        """Run and acknowledge `job`; False when the watchdog gave up on it meanwhile.
        `successor`: wake one idle thread to lead next, just before the handler starts."""
        state = self.state
        job.started_at_us = now_us()
        if _TRACE is not None:
            _TRACE.run(job.id)  # before the successor's wake-up: its write lets other threads run
        with state.cv:
            running = state.running[me] = Running(job, time.monotonic())
            if successor:
                state.cv.notify()
        outcome = self._run_job(job)
        with state.cv:
            state.running.pop(me, None)
            abandoned = running.timed_out
        if abandoned:
            return False
        if outcome is None and self._batch_acks and not self.stopping.is_set():
            with state.cv:
                state.acks.append(job)
                if self._targeted:
                    state.ack_cv.notify()
                else:
                    state.cv.notify_all()
                    state.ack_cv.notify_all()
        else:
            error, retry = outcome or (None, True)
            self._acknowledge(job, error, retry)
            self._released(job)
        return True

    # -- acker ----------------------------------------------------------------------
    def _ack_loop(self) -> None:
        state = self.state
        while True:
            with state.cv:
                while not state.acks and not self.stopping.is_set():
                    state.ack_cv.wait()
                if not state.acks and self.stopping.is_set():
                    return
            self._flush_acks()

    def _flush_acks(self) -> None:
        """Send every completion waiting (one call per partition), retrying Redis errors."""
        with self.state.cv:
            batch, self.state.acks = self.state.acks, []
        if not batch:
            return
        backoff = Backoff(cap_s=1.0)
        for _attempt in range(10):
            try:
                self.queue.complete_many(batch)
                self._completed(len(batch))
                break
            except redis.RedisError as exc:
                self._redis_trouble(backoff, "acknowledge", exc)
        else:
            log.error("giving up acknowledging %d job(s); they stay in processing for recovery", len(batch))
        for job in batch:
            self._released(job)

    # -- watchdog ---------------------------------------------------------------------
    def _watchdog(self) -> None:
        assert self.job_timeout_s is not None
        period = min(WATCHDOG_MAX_PERIOD_S, self.job_timeout_s / 4)
        while not self.stopping.wait(period):
            now = time.monotonic()
            with self.state.cv:
                late = [r for r in self.state.running.values() if now - r.started > self.job_timeout_s]
                for running in late:
                    running.timed_out = True
                for ident in [i for i, r in self.state.running.items() if r.timed_out]:
                    del self.state.running[ident]
            for running in late:
                self._on_timeout(running.job)
                self._add_server()
