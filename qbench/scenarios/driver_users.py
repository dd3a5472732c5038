"""Locust users that produce through a driver (`qbench load SCENARIO --driver X`).

Each user owns one producer agent of the driver (`python -m qbench.agent`, in the
driver's own environment, the same process `qbench peers` talks to) and sends it one
JSON command per job or burst; the driver's own workers, started by `qbench load`, consume
and report pickups to the sink. Latency is the time inside the driver's call, measured by
the agent (the pipe to it is left out); for fixed-arrival users, from the intended send
time to the end of the call, so a late send counts. Round trips cannot be counted from
here (the library's connection lives in the agent): the harness counts commands at Redis.

Every user records into this process's `RECORDER` (HDR histograms, shipped to the master
like the reference users'); the run's settings, the driver's included, are installed
when the test starts (`qbench.scenarios.reporting`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from typing import IO, Any

# Locust first: it monkey-patches subprocess and sockets with gevent, so a user waiting
# on its agent's pipe yields to the other users.
import gevent
import locust
from locust import User, constant, task
from locust.exception import StopUser

from qbench.driver import ENV_CONCURRENCY, ENV_QUEUE, ENV_REDIS_URL, ENV_SINK, QUEUE_NAME
from qbench.scenarios.driver_settings import DriverRunSettings, driver_installed, driver_settings
from qbench.scenarios.recorder import RECORDER
from qbench.scenarios.workload import Workload

READY_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 60.0
SECONDS_PER_JOB = 0.05
QUIT_TIMEOUT_S = 10.0


class AgentError(RuntimeError):
    """The driver's agent answered an error, died, or did not answer in time (one line)."""


def settings_or_idle() -> DriverRunSettings:
    """This process's driver-run settings. A worker that refused the master's run has none
    (`qbench.scenarios.reporting` logged why, once): its users idle until the master ends the run."""
    while not driver_installed():
        time.sleep(1.0)  # gevent-patched: the other greenlets go on
    return driver_settings()


def fire(user: User, op: str, latency_ms: float, *, exc: Exception | None = None) -> None:
    user.environment.events.request.fire(
        request_type="driver",
        name=op,
        response_time=latency_ms,
        response_length=0,
        exception=exc,
        context={},
    )


class DriverUser(User):  # type: ignore[misc]
    """A user with a producer agent of its own."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        cfg = settings_or_idle()
        self.cfg = cfg
        mix = cfg.workload.priority_mix
        self.priority_names = list(mix)
        self.priority_weights = list(mix.values())
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(
            {
                "PYTHONPATH": cfg.driver.pythonpath,
                "PYTHONUNBUFFERED": "1",
                ENV_REDIS_URL: cfg.redis_url,
                ENV_QUEUE: QUEUE_NAME,
                ENV_CONCURRENCY: "1",
                ENV_SINK: os.devnull,  # producers run no handlers
            }
        )
        self.log: IO[bytes] = cfg.log.open("ab")
        self.pending: tuple[str, float | None, float] | None = None
        argv = [cfg.driver.python, "-m", "qbench.agent", "--driver", cfg.driver.ref]
        argv += ["--role", "producer"]
        argv += ["--url", cfg.redis_url, "--concurrency", "1"]
        self.agent = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
            start_new_session=True,
        )
        try:
            self.reply(READY_TIMEOUT_S)
        except AgentError as exc:
            RECORDER.failure("start")
            fire(self, "start", 0.0, exc=exc)
            self.close_agent()
            raise StopUser() from None

    def reply(self, timeout_s: float) -> dict[str, Any]:
        assert self.agent.stdout is not None
        try:
            with gevent.Timeout(timeout_s):
                line = self.agent.stdout.readline()
        except gevent.Timeout:
            raise AgentError(f"the driver's agent did not answer within {timeout_s:g}s") from None
        if not line:
            raise AgentError(f"the driver's agent exited ({self.agent.poll()}); see {self.cfg.log}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AgentError(str(answer["error"]))
        return answer

    def command(self, jobs: int, command: dict[str, object]) -> dict[str, Any]:
        assert self.agent.stdin is not None
        try:
            self.agent.stdin.write(json.dumps(command) + "\n")
            self.agent.stdin.flush()
        except (BrokenPipeError, OSError):
            raise AgentError(f"the driver's agent exited ({self.agent.poll()}); see {self.cfg.log}") from None
        return self.reply(CALL_TIMEOUT_S + SECONDS_PER_JOB * jobs)

    def draw_priority(self) -> str | None:
        if not self.cfg.driver.priorities:
            return None
        return random.choices(self.priority_names, weights=self.priority_weights)[0]

    def timed(self, op: str, jobs: int, command: dict[str, object], *, since: float | None = None) -> None:
        """Send one command; record its latency under `op` (the driver's call, or from
        `since`, a wall-clock intended start, to the call's end), or a failure."""
        # Kept until the answer is recorded: a user killed while waiting (Locust stops a
        # user it just woke from wait() by killing it mid-task) still records the job its
        # agent enqueued, in on_stop, so the run counts every job the workers will see.
        self.pending = (op, since, time.perf_counter())
        try:
            answer = self.command(jobs, command)
        except AgentError as exc:
            self.fail(exc)
            return
        self.record(answer)

    def record(self, answer: dict[str, Any]) -> None:
        assert self.pending is not None
        op, since, _start = self.pending
        self.pending = None
        seconds = float(answer["seconds"])
        if since is None:
            latency_ms = seconds * 1000
        else:
            latency_ms = (float(answer["started_at"]) + seconds - since) * 1000
        RECORDER.record(op, latency_ms)
        fire(self, op, latency_ms)

    def fail(self, exc: AgentError) -> None:
        assert self.pending is not None
        op, _since, start = self.pending
        self.pending = None
        RECORDER.failure(op)
        fire(self, op, (time.perf_counter() - start) * 1000, exc=exc)

    def close_agent(self) -> None:
        agent = getattr(self, "agent", None)
        if agent is None:
            return
        if getattr(self, "pending", None) is not None:
            try:
                self.record(self.reply(CALL_TIMEOUT_S))
            except AgentError as exc:
                self.fail(exc)
        try:
            if agent.poll() is None and agent.stdin is not None:
                agent.stdin.write(json.dumps({"op": "quit"}) + "\n")
                agent.stdin.close()
            agent.wait(timeout=QUIT_TIMEOUT_S)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            agent.kill()
            agent.wait()
        self.log.close()

    def on_stop(self) -> None:
        self.close_agent()


class DriverProducerUser(DriverUser):
    """One job per task, as fast as the driver takes them (closed loop)."""

    abstract = True

    @task
    def enqueue(self) -> None:
        command: dict[str, object] = {"op": "enqueue", "count": 1}
        priority = self.draw_priority()
        if priority is not None:
            command["priority"] = priority
        self.timed("enqueue", 1, command)


class DriverBurstUser(DriverUser):
    """`burst_size` jobs in one bulk call, then a pause of `burst_pause_s`."""

    abstract = True

    def wait_time(self) -> float:
        return float(self.cfg.workload.burst_pause_s)

    @task
    def burst(self) -> None:
        size = self.cfg.workload.burst_size
        self.timed("enqueue_burst", size, {"op": "enqueue_many", "count": size, "batch": size})


class DriverArrivalUser(DriverUser):
    """Sends on a fixed schedule; each job carries its intended send time, so the pickup
    latency the workers report counts any lag (no coordinated omission)."""

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
        command: dict[str, object] = {"op": "enqueue", "count": 1, "sent_at": intended}
        priority = self.draw_priority()
        if priority is not None:
            command["priority"] = priority
        self.timed("enqueue", 1, command, since=intended)


USER_CLASSES: dict[str, type[Any]] = {
    "producer": DriverProducerUser,
    "burst": DriverBurstUser,
    "arrival": DriverArrivalUser,
}
"""The user kinds a driver can play; consumers are the driver's own workers."""


def concrete_driver_users(workload: Workload) -> dict[str, type[Any]]:
    """Concrete Locust user classes for the producing kinds of `workload`."""
    classes: dict[str, type[Any]] = {}
    for kind, weight in workload.user_mix.items():
        if weight <= 0 or kind not in USER_CLASSES:
            continue
        attrs: dict[str, Any] = {"abstract": False, "weight": weight, "__module__": __name__}
        if kind == "arrival":
            attrs["fixed_count"] = workload.arrival_users()
        name = USER_CLASSES[kind].__name__.removesuffix("User") + "Load"
        classes[name] = type(name, (USER_CLASSES[kind],), attrs)
    return classes


_ = locust  # imported for its side effect (gevent patching) before anything else
