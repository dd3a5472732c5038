"""Locust users driving the reference queue over sync redis-py (and one over HTTP).

Every user fires Locust's request events with float milliseconds and records the same
samples in this process's `RECORDER` (an HDR histogram per operation, microsecond
resolution); every operation error is both a Locust failure and a recorded failure.
Run-time settings (variant, Redis, namespace, workload) are installed when the test
starts (`qbench.scenarios.reporting`); the workload holds the traffic shape only.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from itertools import count
from typing import Any, TypeVar

# Locust sorts before redis and the first-party modules: importing it first
# monkey-patches sockets with gevent, so redis-py's blocking calls yield to other users.
import locust
from locust import FastHttpUser, User, constant, task

from qbench.harness.infra.counting import RoundTripCounter, counting_connection_class
from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.scenarios.recorder import RECORDER
from qbench.scenarios.settings import RunSettings, installed, settings
from qbench.scenarios.workload import Workload

T = TypeVar("T")

JOB_TYPE = "noop"
"""The worker service's built-in no-op handler takes these (`qbench profile` runs one)."""

_user_ids = count()


class PriorityMix:
    """Draws priorities in the workload's proportions."""

    def __init__(self, mix: dict[str, float]) -> None:
        self.priorities = [Priority.parse(name) for name in mix]
        self.weights = list(mix.values())

    def draw(self) -> Priority:
        return random.choices(self.priorities, weights=self.weights)[0]


def settings_or_idle() -> RunSettings:
    """This process's run settings. A worker that refused the master's run has none
    (`qbench.scenarios.reporting` logged why, once): its users idle until the master ends the
    run, rather than each failing with a traceback."""
    while not installed():
        time.sleep(1.0)  # gevent-patched: the other greenlets go on
    return settings()


def fire(user: User, op: str, latency_ms: float, *, length: int = 0, exc: Exception | None = None) -> None:
    user.environment.events.request.fire(
        request_type="redis",
        name=op,
        response_time=latency_ms,
        response_length=length,
        exception=exc,
        context={},
    )


class QueueUser(User):  # type: ignore[misc]
    """A user with its own counted connection pool and queue handle."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        cfg = settings_or_idle()
        self.cfg = cfg
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
        self.priorities = PriorityMix(cfg.workload.priority_mix)
        self.payload = b"x" * cfg.workload.job_size_bytes

    def on_stop(self) -> None:
        if not hasattr(self, "redis"):  # stopped while idle (see settings_or_idle)
            return
        close_client(self.redis)

    def new_job(self, *, created_at_us: int | None = None) -> Job:
        job = Job(type=JOB_TYPE, payload=self.payload, priority=self.priorities.draw())
        if created_at_us is not None:
            job.created_at_us = created_at_us
        return job

    def timed(self, op: str, action: Callable[[], T], *, since: float | None = None) -> T | None:
        """Run `action`, record its latency (from `since`, a wall-clock intended start,
        when given) and round trips; a failure is recorded and returns None."""
        start = time.perf_counter()
        trips_before = self.round_trips.snapshot()[0]
        try:
            result = action()
        except Exception as exc:  # a failed request is a data point, not a crash
            RECORDER.failure(op)
            fire(self, op, (time.perf_counter() - start) * 1000, exc=exc)
            return None
        except BaseException:  # stopped mid-call (GreenletExit): the call may have reached Redis
            RECORDER.cut_short(op)
            raise
        done = time.perf_counter()
        latency_ms = (done - start) * 1000 if since is None else (time.time() - since) * 1000
        RECORDER.record(op, latency_ms, round_trips=self.round_trips.snapshot()[0] - trips_before)
        fire(self, op, latency_ms, length=len(self.payload))
        return result


class ProducerUser(QueueUser):
    """Enqueues one job per task, as fast as it can (closed loop)."""

    abstract = True

    @task
    def enqueue(self) -> None:
        job = self.new_job()
        self.timed("enqueue", lambda: self.queue.enqueue(job))


class ConsumerUser(QueueUser):
    """Dequeues and completes jobs; records pickup latency from each job's creation stamp."""

    abstract = True

    @task
    def consume(self) -> None:
        trips_before = self.round_trips.snapshot()[0]
        start = time.perf_counter()
        try:
            job = self.queue.dequeue(wait=True)
        except Exception as exc:  # a failed dequeue is a failure like any other operation's
            RECORDER.failure("dequeue")
            fire(self, "dequeue", (time.perf_counter() - start) * 1000, exc=exc)
            return
        if job is None:
            # An empty wait is the queue's idle cost, not a dequeue latency.
            RECORDER.record(
                "dequeue_empty",
                (time.perf_counter() - start) * 1000,
                round_trips=self.round_trips.snapshot()[0] - trips_before,
            )
            return
        dequeue_ms = (time.perf_counter() - start) * 1000
        RECORDER.record("dequeue", dequeue_ms, round_trips=self.round_trips.snapshot()[0] - trips_before)
        fire(self, "dequeue", dequeue_ms)
        pickup_ms = (job.started_at_us - job.created_at_us) / 1000
        RECORDER.record("pickup", pickup_ms)
        RECORDER.record(f"pickup_{job.priority.label}", pickup_ms)
        self.timed("complete", lambda: self.queue.complete(job))

    def on_stop(self) -> None:
        # Jobs this user still holds go back to their queues: none is lost at shutdown.
        if not hasattr(self, "queue"):  # stopped while idle (see settings_or_idle)
            return
        try:
            self.queue.unregister_consumer()
        finally:
            super().on_stop()


class BurstUser(QueueUser):
    """Enqueues `burst_size` jobs in one call, then pauses `burst_pause_s`."""

    abstract = True

    def wait_time(self) -> float:
        return float(settings().workload.burst_pause_s)

    @task
    def burst(self) -> None:
        jobs = [self.new_job() for _ in range(self.cfg.workload.burst_size)]
        self.timed("enqueue_burst", lambda: self.queue.enqueue_many(jobs))


class ArrivalUser(QueueUser):
    """Sends at a fixed rate on a schedule; latency counts from the intended send time.

    A slow system cannot hide its queueing (coordinated omission): when a send is late,
    the next one is not pushed back, and each job's creation stamp is its intended send
    time, so consumers' pickup latency includes the lag too.
    """

    abstract = True

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
        job = self.new_job(created_at_us=int(intended * 1e6))
        self.timed("enqueue", lambda: self.queue.enqueue(job), since=intended)


class HttpSubmitUser(FastHttpUser):  # type: ignore[misc]
    """Submits jobs through the HTTP API (`python -m qbench.queue_impl.api`), closed loop."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        workload = settings_or_idle().workload
        self.priorities = PriorityMix(workload.priority_mix)
        self.payload_text = "x" * workload.job_size_bytes

    @task
    def submit(self) -> None:
        body = {"type": JOB_TYPE, "payload": self.payload_text, "priority": self.priorities.draw().label}
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


USER_CLASSES: dict[str, type[Any]] = {
    "producer": ProducerUser,
    "consumer": ConsumerUser,
    "burst": BurstUser,
    "arrival": ArrivalUser,
    "http_submit": HttpSubmitUser,
}


def concrete_users(workload: Workload) -> dict[str, type[Any]]:
    """Concrete Locust user classes for `workload`, weighted by its user mix."""
    classes: dict[str, type[Any]] = {}
    for kind, weight in workload.user_mix.items():
        if weight <= 0:
            continue
        base = USER_CLASSES[kind]
        attrs: dict[str, Any] = {"abstract": False, "weight": weight, "__module__": __name__}
        if kind == "arrival":
            # Exactly this many senders, so each one's interval gives the target rate.
            attrs["fixed_count"] = workload.arrival_users()
        name = base.__name__.removesuffix("User") + "Load"
        classes[name] = type(name, (base,), attrs)
    return classes


_ = locust  # imported for its side effect (gevent patching) before redis
