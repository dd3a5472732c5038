"""The driver protocol, both ends (`qbench.agent`): the client the battery and the Locust
users share, an async driver's lifecycle on one task, close errors, workers that ignore
SIGTERM, the capabilities a driver declares, and the `--stall-timeout` help."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qbench.agent import AgentError, ProducerAgent, agent_argv, agent_env
from qbench.driver import AsyncDriver, Capability, Driver, driver_problems
from qbench.harness.cli import main
from qbench.harness.peers import cluster
from qbench.harness.peers.envs import import_root, python_path
from qbench.harness.peers.registry import discover, resolve
from qbench.harness.peers.runner import FULL, QUICK, Sizes
from qbench.harness.peers.suite import run_suite
from qbench.harness.results.rows import Row

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "drivers"
LIFECYCLE = FIXTURES / "lifecycle_drivers.py"
JOBS = 30
SMALL = Sizes(
    jobs=JOBS,
    repeats=1,
    idle_s=0.2,
    pickup_samples=3,
    settle_s=0.1,
    pickup_gap_s=0.1,
    stall_s=20,
    stop_grace_s=1,
)
"""Every phase runs; counts are exact, timings mean nothing here."""

sys.path.insert(0, str(FIXTURES))
import lifecycle_drivers  # noqa: E402


def value(rows: list[Row], driver: str, metric: str) -> float:
    found = [r.value for r in rows if r.variant == driver and r.metric == metric]
    assert len(found) == 1, f"{driver} {metric}: {found}"
    return found[0]


@contextlib.contextmanager
def producer(spec_text: str, url: str, tmp_path: Path, *, counters: bool = False) -> Iterator[ProducerAgent]:
    spec = resolve(spec_text)
    root = import_root()
    agent = ProducerAgent(
        agent_argv(sys.executable, spec.ref, role="producer", url=url, concurrency=1),
        env=agent_env(
            pythonpath=python_path(root, sys.executable),
            url=url,
            concurrency=1,
            extra=dict(spec.env),
            counters=counters,
        ),
        log=tmp_path / "producer.log",
    )
    try:
        agent.start()
        yield agent
    finally:
        agent.kill()


# -- an async driver's client lives in one task, from open to close -----------------------------
@pytest.mark.parametrize("cls", ["TaskGroupDriver", "LazyTaskGroupDriver"])
def test_an_async_client_holding_an_anyio_task_group_opens_and_closes_in_one_task(
    redis_url: str, cls: str
) -> None:
    driver_cls: type[AsyncDriver] = getattr(lifecycle_drivers, cls)
    driver = driver_cls(url=redis_url, concurrency=1)
    client = redis.Redis.from_url(redis_url)
    try:
        driver.connect()
        for t in (1.0, 2.0, 3.0):
            driver.enqueue(t)
        driver.enqueue_serial(2)
        driver.enqueue(4.0)
        assert driver.client.beats >= 1  # its background task ran while the driver awaited Redis
        driver.close()  # exits the task group in the task that entered it: no RuntimeError
        assert client.llen(lifecycle_drivers.KEY) == 6
    finally:
        client.delete(lifecycle_drivers.KEY)
        client.close()


def test_an_async_driver_whose_close_fails_raises_it(redis_url: str) -> None:
    driver = lifecycle_drivers.FailingCloseDriver(url=redis_url, concurrency=1)
    driver.connect()
    driver.enqueue(1.0)
    with pytest.raises(RuntimeError, match="the client would not close"):
        driver.close()
    redis.Redis.from_url(redis_url).delete(lifecycle_drivers.KEY)


def test_the_agent_reports_a_close_error_to_its_client(redis_url: str, tmp_path: Path) -> None:
    with producer(f"{LIFECYCLE}:FailingCloseDriver", redis_url, tmp_path) as agent:
        assert agent.enqueue(3) >= 0
        with pytest.raises(AgentError, match=r"^close: driver failing-close: close failed: RuntimeError"):
            agent.close()
    assert "close failed: RuntimeError: the client would not close" in (tmp_path / "producer.log").read_text()
    redis.Redis.from_url(redis_url).delete(lifecycle_drivers.KEY)


@pytest.mark.slow
def test_a_driver_whose_close_fails_fails_the_run_and_keeps_its_log(tmp_path: Path) -> None:
    specs = [resolve(f"{LIFECYCLE}:FailingCloseDriver"), resolve(f"{LIFECYCLE}:LazyTaskGroupDriver")]
    result = run_suite(specs, SMALL, progress=lambda _line: None, logs_dir=tmp_path / "logs")
    assert result.failures == {
        "failing-close": "close: driver failing-close: close failed: RuntimeError: the client would not close"
    }
    assert "the client would not close" in (tmp_path / "logs" / "failing-close-producer.log").read_text()
    assert {r.variant for r in result.rows} == {"lazy-task-group"}  # no rows passed off as results
    assert value(result.rows, "lazy-task-group", "jobs_handled") == JOBS


# -- workers that ignore SIGTERM -----------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period_and_reported(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_suite([resolve(f"{LIFECYCLE}:StubbornWorker")], SMALL, progress=lines.append)
    assert result.failures == {}
    assert value(result.rows, "stubborn-worker", "jobs_handled") == JOBS
    notice = "worker ignored SIGTERM, killed after 1 s"
    assert result.drivers["stubborn-worker"]["notices"] == [notice]  # run.json's drivers
    assert f"  stubborn-worker: {notice}" in lines  # the console, once
    # A file driver without requirements runs in qbench's own environment, and says so.
    assert result.drivers["stubborn-worker"]["environment"] == "qbench"


# -- capabilities ---------------------------------------------------------------------------------
def test_the_presets_count_their_own_round_trips_when_asked(redis_url: str, tmp_path: Path) -> None:
    db_url = redis_url.rsplit("/", 1)[0] + "/9"
    client = redis.Redis.from_url(db_url)
    try:
        with producer("baseline", db_url, tmp_path, counters=True) as agent:
            assert agent.capabilities == {"round_trips", "census"}
            assert agent.counters() == {"round_trips": 0, "commands": 0}
            agent.enqueue(10)
            # baseline's enqueue: SET then LPUSH, one round trip each.
            assert agent.counters() == {"round_trips": 20, "commands": 20}
            agent.enqueue_many(10, 10)  # baseline does not batch: the same two per job
            assert agent.counters() == {"round_trips": 40, "commands": 40}
            agent.close()
        with producer("baseline", db_url, tmp_path) as agent:  # not asked: it pays nothing
            agent.enqueue(5)
            assert agent.counters() == {"round_trips": 0, "commands": 0}
            agent.close()
    finally:
        client.flushdb()  # DB 9 of the session's server, which the tests started
        client.close()


def test_a_driver_without_the_capability_says_so_in_one_line(redis_url: str, tmp_path: Path) -> None:
    with producer(f"{LIFECYCLE}:StubbornWorker", redis_url, tmp_path, counters=True) as agent:
        assert agent.capabilities == frozenset()
        with pytest.raises(AgentError, match=r"^counters: driver stubborn-worker declares no round_trips"):
            agent.counters()
        agent.close()


def test_capabilities_are_checked_and_optional() -> None:
    class Counts(Driver):
        name = "counts"
        distribution = "qbench"
        capabilities = frozenset({Capability.ROUND_TRIPS})

        def enqueue(self, sent_at: float) -> None:
            pass

        def run_worker(self, *, index: int) -> None:
            pass

    assert driver_problems(Counts) == [f"declares {Capability.ROUND_TRIPS} but lacks method counters"]
    Counts.capabilities = frozenset({"telepathy"})  # type: ignore[assignment]
    assert "declares unknown capability(ies) telepathy" in driver_problems(Counts)[0]
    del Counts.capabilities  # an older driver declares none: still a driver
    assert driver_problems(Counts) == []
    assert Capability.ROUND_TRIPS in discover().specs["scripted"].cls.capabilities


# -- the client under gevent (Locust's users) --------------------------------------------------------
def test_the_client_yields_to_other_greenlets_under_gevent(redis_url: str, tmp_path: Path) -> None:
    """In a subprocess (Locust's monkey-patching must stay out of pytest): three users start
    and drive an agent each while a ticker greenlet keeps running; a silent agent's
    timeout is cooperative too."""
    code = f"""
import locust, sys, time
import gevent
from pathlib import Path
from qbench.agent import AgentError, ProducerAgent, agent_argv, agent_env
from qbench.harness.peers.envs import import_root, python_path
url, tmp = {redis_url!r}.rsplit("/", 1)[0] + "/10", Path({str(tmp_path)!r})
pp = python_path(import_root(), sys.executable)
ticks = []
def ticker():
    while True:
        ticks.append(1); gevent.sleep(0.005)
def user(i):
    agent = ProducerAgent(
        agent_argv(sys.executable, "qbench.drivers.reference_driver:ScriptedDriver", role="producer",
                   url=url, concurrency=1),
        env=agent_env(pythonpath=pp, url=url, concurrency=1), log=tmp / f"p{{i}}.log")
    before = len(ticks)
    agent.start()
    waited = len(ticks) - before
    agent.enqueue(20); agent.enqueue_one(priority="high"); agent.enqueue_many(20, 5)
    agent.close()
    return waited
gevent.spawn(ticker)
users = [gevent.spawn(user, i) for i in range(3)]
gevent.joinall(users, raise_error=True)
silent = ProducerAgent([sys.executable, "-c", "import time; time.sleep(30)"],
                       env=agent_env(pythonpath=pp, url=url, concurrency=1), log=tmp / "silent.log")
before = len(ticks)
try:
    silent.start(timeout_s=0.5)
except AgentError as exc:
    print("timeout", exc)
silent.kill()
print("ticks", min(u.value for u in users), len(ticks) - before)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "timeout start: no answer in 0.5s" in lines
    ticks_while_starting, ticks_while_silent = (int(x) for x in lines[-1].split()[1:])
    assert ticks_while_starting > 0 and ticks_while_silent > 0
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/10")
    try:
        assert client.llen("qbench_peers:queue") >= 0
        client.flushdb()
    finally:
        client.close()


# -- the help tells the truth -------------------------------------------------------------------------
def test_the_stall_timeout_help_gives_the_defaults_the_run_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["peers", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert QUICK.stall_s == FULL.stall_s == 60.0  # quick mode waits as long as a full run
    assert f"(default {FULL.stall_s:g} s, --quick too; with --cluster {cluster.FULL.stall_s:g} s" in text
    assert f"with --cluster --quick {cluster.QUICK.stall_s:g} s)" in text
