"""The Locust users of every load run: one hierarchy, whatever executes the operations.

A user kind (producer, consumer, burst, arrival, http_submit) is one class here and
nothing else: `kind = NAME` and the facts the harness needs (`main_op`, and where they
differ from `workload.UserKind`'s defaults `jobs_per_call`, `driver_role`, `driver_op`,
`driver_op_use`) as literal class attributes in its body. The harness reads them from this
file's source (`workload.USER_KIND_TABLE`, built with `ast`, so it never imports Locust).
What executes an operation is the user's *target*, chosen from the run settings when the
user starts:

- `ReferenceTarget`: `--variant P`, the preset driver's reference queue in this process
  over sync redis-py, which can count each call's round trips;
- `AgentTarget`: `--driver X`, one producer agent of the driver per user (`python -m
  qbench.agent` in the driver's environment, spoken to through `qbench.agent.ProducerAgent`);
  latency is the time inside the driver's call as the agent measured it (the pipe is left
  out); a driver that declares the `round_trips` capability (the presets) reports each
  call's round trips, which land in the same rows as a `--variant` run's.

Every user records into this process's `RECORDER` (HDR histograms, shipped to the master)
and fires Locust's request events; an operation's error is both a Locust failure and a
recorded one. For fixed-arrival users, latency counts from the intended send time.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from itertools import count
from typing import Any, ClassVar, NamedTuple

# Locust sorts before redis and the first-party modules: importing it first monkey-patches
# sockets and subprocess with gevent, so redis-py's blocking calls and a user waiting on its
# agent's pipe yield to other users.
import locust
from locust import FastHttpUser, User, constant, task
from locust.exception import StopUser

from qbench.agent import AgentError, ProducerAgent, agent_argv, agent_env
from qbench.driver import Capability
from qbench.harness.infra.counting import RoundTripCounter, counting_connection_class
from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.scenarios.recorder import RECORDER
from qbench.scenarios.settings import RunSettings, installed, settings
from qbench.scenarios.workload import Workload

JOB_TYPE = "noop"
"""The worker service's built-in no-op handler takes these (`qbench profile` runs one)."""

_user_ids = count()


class Call(NamedTuple):
    """One operation as its target timed it."""

    seconds: float
    started_at: float
    """Wall-clock start, for latencies counted from an intended send time."""
    round_trips: int | None
    """None: the target cannot count them."""


def settings_or_idle() -> RunSettings:
    """This process's run settings. A worker that refused the master's run has none
    (`qbench.scenarios.reporting` logged why, once): its users idle until the master ends the
    run, rather than each failing with a traceback."""
    while not installed():
        time.sleep(1.0)  # gevent-patched: the other greenlets go on
    return settings()


def fire(user: User, op: str, latency_ms: float, *, length: int = 0, exc: Exception | None = None) -> None:
    user.environment.events.request.fire(
        request_type=getattr(user, "request_type", "redis"),
        name=op,
        response_time=latency_ms,
        response_length=length,
        exception=exc,
        context={},
    )


class ReferenceTarget:
    """The reference queue of the run's variant, in this process, with a counted pool."""

    def __init__(self, cfg: RunSettings) -> None:
        assert cfg.variant is not None
        self.round_trips = RoundTripCounter()
        self.redis: RedisClient = make_client(
            cfg.redis_url,
            cfg.variant,
            wrap_connection_class=lambda base: counting_connection_class(base, self.round_trips),
        )
        self.queue = RedisQueue(
            self.redis,
            cfg.variant,
            namespace=cfg.namespace,
            consumer=f"locust-{os.getpid()}-{next(_user_ids)}",
        )
        self.payload = b"x" * cfg.workload.job_size_bytes

    def trips(self) -> int:
        return self.round_trips.snapshot()[0]

    def _timed(self, action: Callable[[], object]) -> Call:
        started_at, start, before = time.time(), time.perf_counter(), self.trips()
        action()
        return Call(time.perf_counter() - start, started_at, self.trips() - before)

    def _job(self, priority: str | None, sent_at: float | None) -> Job:
        job = Job(type=JOB_TYPE, payload=self.payload, priority=Priority.parse(priority or "normal"))
        if sent_at is not None:
            job.created_at_us = int(sent_at * 1e6)
        return job

    def enqueue(self, priority: str | None, sent_at: float | None) -> Call:
        job = self._job(priority, sent_at)
        return self._timed(lambda: self.queue.enqueue(job))

    def enqueue_many(self, priorities: list[str | None]) -> Call:
        jobs = [self._job(p, None) for p in priorities]
        return self._timed(lambda: self.queue.enqueue_many(jobs))

    def interrupted(self) -> Call | None:
        """A call cut short when the user stopped: it may or may not have reached Redis."""
        return None

    def close(self) -> None:
        close_client(self.redis)


class AgentTarget:
    """One producer agent of the run's driver (`qbench.agent.ProducerAgent`, the protocol's
    one client; it waits on the pipe with `select`, so a waiting user yields to the others).
    A driver that declares the `round_trips` capability counts its client's round trips,
    and each call's are read back from it, as the reference queue's are counted in-process."""

    def __init__(self, cfg: RunSettings) -> None:
        driver = cfg.driver
        assert driver is not None
        url = cfg.redis_url
        self.agent = ProducerAgent(
            agent_argv(driver.python, driver.ref, role="producer", url=url, concurrency=1),
            env=agent_env(pythonpath=driver.pythonpath, url=url, concurrency=1, counters=True),
            log=cfg.log,
        )
        try:
            self.agent.start()
        except AgentError:
            self.agent.kill()
            raise
        self.counts_round_trips = str(Capability.ROUND_TRIPS) in self.agent.capabilities
        self.trips_so_far = self.trips() if self.counts_round_trips else 0
        self.waiting: str | None = None
        """The command sent whose answer is still to be read."""

    def trips(self) -> int:
        return self.agent.counters()["round_trips"]

    def _counted(self, seconds: float, started_at: float | None) -> Call:
        """A call as the agent timed it; it sends its wall-clock start only for a timed send."""
        trips: int | None = None
        if self.counts_round_trips:
            now = self.trips()
            trips, self.trips_so_far = now - self.trips_so_far, now
        return Call(seconds, time.time() - seconds if started_at is None else started_at, trips)

    def _answered(self, answer: dict[str, Any]) -> Call:
        self.waiting = None
        started_at = answer.get("started_at")
        return self._counted(float(answer["seconds"]), None if started_at is None else float(started_at))

    def enqueue(self, priority: str | None, sent_at: float | None) -> Call:
        self.waiting = "enqueue"
        return self._answered(self.agent.enqueue_one(sent_at=sent_at, priority=priority))

    def enqueue_many(self, priorities: list[str | None]) -> Call:
        size = len(priorities)
        self.waiting = "enqueue_many"
        seconds = self.agent.enqueue_many(size, size)
        return self._answered({"seconds": seconds})

    def interrupted(self) -> Call | None:
        """A user stopped while its agent worked (Locust kills a user it just woke): the
        agent's answer still comes, so the job it enqueued is counted like any other."""
        if self.waiting is None:
            return None
        return self._answered(self.agent.pending_answer(self.waiting))

    def close(self) -> None:
        """AgentError when the driver's `close` failed."""
        self.agent.close()


Target = ReferenceTarget | AgentTarget


class QueueUser(User):  # type: ignore[misc]
    """A user with a target of its own; subclasses say which `kind` they play."""

    abstract = True
    wait_time = constant(0)
    kind: ClassVar[str] = ""
    by_kind: ClassVar[dict[str, type[Any]]] = {}
    """Every concrete kind's class, filled as the classes are defined."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            QueueUser.by_kind[cls.kind] = cls

    def on_start(self) -> None:
        cfg = settings_or_idle()
        self.cfg = cfg
        self.pending: tuple[str, float | None] | None = None
        mix = cfg.workload.priority_mix
        self.priority_names, self.priority_weights = list(mix), list(mix.values())
        # A driver gets priorities only when the scenario mixes them and the driver has them.
        self.draws_priorities = cfg.driver is None or cfg.driver.priorities
        self.request_type = "redis" if cfg.driver is None else "driver"
        try:
            self.target: Target = ReferenceTarget(cfg) if cfg.driver is None else AgentTarget(cfg)
        except AgentError as exc:
            RECORDER.failure("start")
            fire(self, "start", 0.0, exc=exc)
            raise StopUser() from None

    def draw_priority(self) -> str | None:
        if not self.draws_priorities:
            return None
        return random.choices(self.priority_names, weights=self.priority_weights)[0]

    def timed(self, op: str, action: Callable[[], Call], *, since: float | None = None) -> None:
        """Run `action` and record its latency (from `since`, a wall-clock intended start,
        when given) and round trips; a failure is recorded, never raised."""
        self.pending = (op, since)
        start = time.perf_counter()
        try:
            call = action()
        except Exception as exc:  # a failed request is a data point, not a crash
            self.pending = None
            RECORDER.failure(op)
            fire(self, op, (time.perf_counter() - start) * 1000, exc=exc)
            return
        self.record(call)

    def record(self, call: Call) -> None:
        assert self.pending is not None
        op, since = self.pending
        self.pending = None
        end = call.started_at + call.seconds
        latency_ms = (call.seconds if since is None else end - since) * 1000
        RECORDER.record(op, latency_ms, round_trips=call.round_trips)
        fire(self, op, latency_ms)

    def on_stop(self) -> None:
        target = getattr(self, "target", None)
        if target is None:  # stopped while idle (see settings_or_idle), or its agent never started
            return
        if self.pending is not None:
            op = self.pending[0]
            try:
                call = target.interrupted()
            except AgentError:
                call, self.pending = None, None
                RECORDER.failure(op)
            if call is not None:
                self.record(call)
            elif self.pending is not None:  # it may or may not have reached the queue
                self.pending = None
                RECORDER.cut_short(op)
        try:
            target.close()
        except AgentError as exc:  # the driver's close failed: the run must not pass
            RECORDER.failure("close")
            fire(self, "close", 0.0, exc=exc)


class ProducerUser(QueueUser):
    """Enqueues one job per task, as fast as the target takes them (closed loop)."""

    abstract = True
    kind = "producer"
    main_op = "enqueue"
    jobs_per_call = "1"

    @task
    def enqueue(self) -> None:
        priority = self.draw_priority()
        self.timed("enqueue", lambda: self.target.enqueue(priority, None))


class ConsumerUser(QueueUser):
    """Dequeues and completes jobs; records pickup latency from each job's creation stamp.
    The reference queue only: under `--driver`, the driver's own workers consume."""

    abstract = True
    kind = "consumer"
    main_op = "dequeue"
    driver_role = "workers"

    @task
    def consume(self) -> None:
        target = self.target
        assert isinstance(target, ReferenceTarget)
        trips_before = target.trips()
        start = time.perf_counter()
        try:
            job = target.queue.dequeue(wait=True)
        except Exception as exc:  # a failed dequeue is a failure like any other operation's
            RECORDER.failure("dequeue")
            fire(self, "dequeue", (time.perf_counter() - start) * 1000, exc=exc)
            return
        if job is None:
            # An empty wait is the queue's idle cost, not a dequeue latency.
            RECORDER.record(
                "dequeue_empty",
                (time.perf_counter() - start) * 1000,
                round_trips=target.trips() - trips_before,
            )
            return
        dequeue_ms = (time.perf_counter() - start) * 1000
        RECORDER.record("dequeue", dequeue_ms, round_trips=target.trips() - trips_before)
        fire(self, "dequeue", dequeue_ms)
        pickup_ms = (job.started_at_us - job.created_at_us) / 1000
        RECORDER.record("pickup", pickup_ms)
        RECORDER.record(f"pickup_{job.priority.label}", pickup_ms)
        self.timed("complete", lambda: target._timed(lambda: target.queue.complete(job)))

    def on_stop(self) -> None:
        # Jobs this user still holds go back to their queues: none is lost at shutdown.
        target = getattr(self, "target", None)
        try:
            if isinstance(target, ReferenceTarget):
                target.queue.unregister_consumer()
        finally:
            super().on_stop()


class BurstUser(QueueUser):
    """Enqueues `burst_size` jobs in one call, then pauses `burst_pause_s`."""

    abstract = True
    kind = "burst"
    main_op = "enqueue_burst"
    jobs_per_call = "burst_size"
    driver_op = "enqueue_many"
    driver_op_use = "sends bursts with a bulk enqueue"

    def wait_time(self) -> float:
        return float(settings().workload.burst_pause_s)

    @task
    def burst(self) -> None:
        priorities = [self.draw_priority() for _ in range(self.cfg.workload.burst_size)]
        self.timed("enqueue_burst", lambda: self.target.enqueue_many(priorities))


class ArrivalUser(QueueUser):
    """Sends at a fixed rate on a schedule; latency counts from the intended send time.

    A slow system cannot hide its queueing (coordinated omission): when a send is late,
    the next one is not pushed back, and each job carries its intended send time, so the
    pickup latency counts the lag too.
    """

    abstract = True
    kind = "arrival"
    main_op = "enqueue"
    jobs_per_call = "1"

    def on_start(self) -> None:
        super().on_start()
        workload = self.cfg.workload
        self.interval_s = workload.arrival_users() / workload.target_rate
        self.next_send = time.time() + random.uniform(0, self.interval_s)

    def wait_time(self) -> float:
        return max(0.0, self.next_send - time.time())

    @task
    def send(self) -> None:
        intended = self.next_send
        self.next_send += self.interval_s
        priority = self.draw_priority()
        self.timed("enqueue", lambda: self.target.enqueue(priority, intended), since=intended)


class HttpSubmitUser(FastHttpUser):  # type: ignore[misc]
    """Submits jobs through the HTTP API (`python -m qbench.queue_impl.api`), closed loop."""

    abstract = True
    wait_time = constant(0)
    kind = "http_submit"
    main_op = "submit"
    jobs_per_call = "1"
    driver_role = "submits through the reference queue's HTTP API"

    def on_start(self) -> None:
        workload = settings_or_idle().workload
        mix = workload.priority_mix
        self.priority_names, self.priority_weights = list(mix), list(mix.values())
        self.payload_text = "x" * workload.job_size_bytes

    @task
    def submit(self) -> None:
        priority = random.choices(self.priority_names, weights=self.priority_weights)[0]
        body = {"type": JOB_TYPE, "payload": self.payload_text, "priority": priority}
        start = time.perf_counter()
        try:
            with self.client.post("/jobs", json=body, name="submit", catch_response=True) as response:
                latency_ms = (time.perf_counter() - start) * 1000
                if response.status_code == 201:
                    RECORDER.record("submit", latency_ms)
                    response.success()
                else:
                    RECORDER.failure("submit")
                    response.failure(f"HTTP {response.status_code}")
        except BaseException:  # stopped mid-request: the API may have enqueued the job
            RECORDER.cut_short("submit")
            raise


QueueUser.by_kind[HttpSubmitUser.kind] = HttpSubmitUser


def concrete_users(workload: Workload) -> dict[str, type[Any]]:
    """Concrete Locust user classes for `workload`, weighted by its user mix."""
    classes: dict[str, type[Any]] = {}
    for kind, weight in workload.user_mix.items():
        if weight <= 0:
            continue
        base = QueueUser.by_kind[kind]
        attrs: dict[str, Any] = {"abstract": False, "weight": weight, "__module__": __name__}
        if kind == "arrival":
            # Exactly this many senders, so each one's interval gives the target rate.
            attrs["fixed_count"] = workload.arrival_users()
        name = base.__name__.removesuffix("User") + "Load"
        classes[name] = type(name, (base,), attrs)
    return classes


_ = locust  # imported for its side effect (gevent patching) before redis
