"""The driver protocol, both ends: the agent that runs a driver in a subprocess, and the
client (`ProducerAgent`) through which the battery (`qbench peers`) and the Locust users
(`qbench load --driver`) talk to it.

The agent runs under the driver's own environment (`python -m qbench.agent --driver REF
...`), so this module imports only the standard library and `qbench`'s public driver API
(the driver imports its library). REF is what `qbench.loader.load_driver` takes: entry
points are resolved by the harness, since a driver's own virtualenv does not have qbench
installed.

Protocol (producer): one JSON object per line each way, one command at a time. The agent
first sends `{"ready": true, ...}` (version, operations, capabilities, setup); then it
answers each command with `{"seconds": s, ...}` (time inside the driver's calls) or
`{"error": "one line"}`:
- `{"op": "enqueue", "count": n}`: n jobs one call at a time, each stamped as it is sent;
- `{"op": "enqueue", "count": 1, "sent_at": t, "priority": p}`: one job stamped t (a load
  test's intended send time; null: now), of priority p when given; the answer adds
  `started_at`;
- `{"op": "enqueue_many", "count": n, "batch": b}`: the bulk call, b jobs per call;
- `{"op": "ping", "count": n}`: an external driver's protocol round trip, n times;
- `{"op": "counters"}`: `{"counters": {"round_trips": n, "commands": m}}`, the driver's own
  counts since it connected (drivers that declare `Capability.ROUND_TRIPS`);
- `{"op": "enqueue_tracked", "count": n, "pause_s": p, "retry_s": r, "budget_s": b}` (a
  fault test): n jobs one call at a time, each stamped with a `sent_us` no other job of
  the agent carries (its job id), p seconds apart; a call that raises is retried with a new
  stamp after r seconds, until n calls returned or b seconds passed. The answer adds
  `sent` (the stamps whose call returned), `unacked` (those whose call raised) and
  `errors` (up to 5 distinct error lines);
- `{"op": "enqueue_timed", "count": n}` (the timing gate): n serial enqueues, answered with
  `cpu_ns` (the producer process's CPU time over them) and `wall_ns`;
- `{"op": "census"}`: `{"census": {...}}`, `Driver.census()` (`Capability.CENSUS`);
- `{"op": "quit"}`: the agent closes the driver, answers `{"closed": true}` or
  `{"error": "..."}` (the driver's `close` failed; the agent then exits 1), and exits.
  End of input does the same without the answer.
A worker runs `run_worker` until SIGTERM; a driver error there is one line on stderr, exit 1.
Both ends are standard library only and use no threads, so the client also runs under
gevent's monkey-patching (a waiting Locust user yields to the others).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from qbench.driver import (
    API_VERSION,
    DELIVERY,
    ENV_CONCURRENCY,
    ENV_COUNTERS,
    ENV_QUEUE,
    ENV_REDIS_URL,
    ENV_SINK,
    QUEUE_NAME,
    Capability,
    Driver,
    Op,
)
from qbench.external import ExternalDriver
from qbench.loader import DriverLoadError, load_driver


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _enqueue_many(driver: Driver, count: int, batch: int) -> float:
    elapsed = 0.0
    for start in range(0, count, batch):
        size = min(batch, count - start)
        t0 = time.perf_counter()
        now = time.time()
        driver.enqueue_many([now] * size)
        elapsed += time.perf_counter() - t0
    return elapsed


def _enqueue(driver: Driver, command: dict[str, Any]) -> dict[str, Any]:
    count = int(command["count"])
    if "sent_at" not in command and "priority" not in command:
        t0 = time.perf_counter()
        driver.enqueue_serial(count)
        return {"seconds": time.perf_counter() - t0}
    started_at = time.time()
    sent_at = float(command.get("sent_at") or started_at)
    priority = command.get("priority")
    t0 = time.perf_counter()
    if priority is None:
        driver.enqueue(sent_at)
    else:
        driver.enqueue_priority(sent_at, str(priority))
    return {"seconds": time.perf_counter() - t0, "started_at": started_at}


def _ping(driver: Driver, count: int) -> dict[str, Any]:
    if not isinstance(driver, ExternalDriver):
        return {"error": "ping: only external drivers answer it"}
    t0 = time.perf_counter()
    for _ in range(count):
        driver.ping()
    return {"seconds": time.perf_counter() - t0}


def _counters(driver: Driver) -> dict[str, Any]:
    if Capability.ROUND_TRIPS not in type(driver).capabilities:
        return {"error": f"driver {driver.name} declares no {Capability.ROUND_TRIPS} capability"}
    return {"counters": {str(k): int(v) for k, v in driver.counters().items()}}


def _enqueue_tracked(driver: Driver, command: dict[str, Any]) -> dict[str, Any]:
    count = int(command["count"])
    pause_s = float(command.get("pause_s", 0.0))
    retry_s = float(command.get("retry_s", 0.1))
    deadline = time.monotonic() + float(command.get("budget_s", 60.0))
    sent: list[int] = []
    unacked: list[int] = []
    errors: dict[str, int] = {}
    last_us = 0
    t0 = time.perf_counter()
    while len(sent) < count and time.monotonic() < deadline:
        sent_us = max(time.time_ns() // 1000, last_us + 1)  # unique: the job's id
        last_us = sent_us
        try:
            driver.enqueue(sent_us / 1e6)
        except Exception as exc:  # the call did not return: the job is not counted as sent
            unacked.append(sent_us)
            line = _one_line(exc)[:200]
            if line in errors or len(errors) < 5:
                errors[line] = errors.get(line, 0) + 1
            time.sleep(retry_s)
            continue
        sent.append(sent_us)
        if pause_s > 0:
            time.sleep(pause_s)
    return {"seconds": time.perf_counter() - t0, "sent": sent, "unacked": unacked, "errors": errors}


def _census(driver: Driver) -> dict[str, Any]:
    if Capability.CENSUS not in type(driver).capabilities:
        return {"error": f"driver {driver.name} declares no {Capability.CENSUS} capability"}
    return {"census": driver.census()}


def _serve(driver: Driver, commands: IO[str], out: IO[str]) -> bool:
    """Answer commands until `quit` (True) or the end of input (False)."""
    for line in commands:
        command = json.loads(line)
        op = command.get("op")
        if op == "quit":
            return True
        try:
            if op in GATE_OPS:  # the timing gate's ops (see the block at the end)
                _send(out, GATE_OPS[op](driver, command))
            elif op == "enqueue":
                _send(out, _enqueue(driver, command))
            elif op == "enqueue_many":
                seconds = _enqueue_many(driver, int(command["count"]), int(command["batch"]))
                _send(out, {"seconds": seconds})
            elif op == "ping":
                _send(out, _ping(driver, int(command["count"])))
            elif op == "counters":
                _send(out, _counters(driver))
            elif op == "enqueue_tracked":
                _send(out, _enqueue_tracked(driver, command))
            elif op == "census":
                _send(out, _census(driver))
            else:
                _send(out, {"error": f"unknown op {op!r}"})
        except Exception as exc:  # reported to the harness, which records the driver as failed
            _send(out, {"error": _one_line(exc)})
    return False


def ready_message(driver: Driver) -> dict[str, Any]:
    """What the harness learns about the driver before measuring it."""
    cls = type(driver)
    ext = driver.spec if isinstance(driver, ExternalDriver) else None
    return {
        "ready": True,
        "api": API_VERSION,
        "name": cls.name,
        "setup": driver.setup(),
        "processes": driver.worker_processes(),
        "version": cls.version(),
        "distribution": cls.distribution,
        "operations": [str(op) for op in Op if op in cls.operations],
        "capabilities": [str(c) for c in Capability if c in cls.capabilities],
        "has_enqueue_many": Op.ENQUEUE_MANY in cls.operations,
        "sink": ext.sink if ext is not None else "file",
        "external": ext is not None,
        "python": sys.version.split()[0],
        "redis_py": _version("redis") if ext is None else "-",
        "delivery": cls.delivery if cls.delivery in DELIVERY else "",
        "recovery_window_s": float(cls.recovery_window_s),
        "sentinel_setup": cls.sentinel_setup,
        "cluster_setup": cls.cluster_setup,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qbench.agent")
    parser.add_argument("--driver", required=True, help="module:Class, /path/file.py:Class or driver.toml")
    parser.add_argument("--role", required=True, choices=("producer", "worker"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        install_handicaps(args.role)  # before the driver module binds record_pickup
        cls = load_driver(args.driver, search_cwd=False)
    except DriverLoadError as exc:
        print(f"qbench agent: {exc}", file=sys.stderr)
        return 2
    if args.role == "worker":
        try:
            driver = cls(url=args.url, concurrency=args.concurrency)
            driver.run_worker(index=args.index)
        except Exception as exc:
            print(f"qbench agent: driver {cls.name}: worker failed: {_one_line(exc)}", file=sys.stderr)
            return 1
        return 0
    # The protocol keeps the real stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        driver = cls(url=args.url, concurrency=args.concurrency)
        driver.connect()
    except Exception as exc:
        print(f"qbench agent: driver {cls.name}: start failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    try:
        _send(out, ready_message(driver))
        asked = _serve(driver, sys.stdin, out)
    except BaseException:
        with contextlib.suppress(Exception):
            driver.close()
        raise
    try:
        driver.close()
    except Exception as exc:  # the harness fails the driver and keeps its logs
        message = f"driver {cls.name}: close failed: {_one_line(exc)}"
        print(f"qbench agent: {message}", file=sys.stderr)
        if asked:
            with contextlib.suppress(OSError):
                _send(out, {"error": message})
        return 1
    if asked:
        with contextlib.suppress(OSError):
            _send(out, {"closed": True})
    return 0


# ---------------------------------------------------------------------------------------
# The protocol's client: the harness side of the conversation with a producer agent.
# ---------------------------------------------------------------------------------------
AGENT_MODULE = "qbench.agent"
"""What `python -m` runs in a driver's environment."""
READY_TIMEOUT_S = 120.0
"""A producer that has not said it is ready by then fails (peer venvs import slowly)."""
CALL_TIMEOUT_S = 60.0
"""How long one command may take before the driver fails, plus REPLY_SECONDS_PER_JOB a job."""
REPLY_SECONDS_PER_JOB = 0.05
"""An enqueue command may take its base timeout plus this per job (20 jobs/s) before it fails."""
QUIT_TIMEOUT_S = 30.0
"""How long a producer may take to close its connections after `quit`; then it is killed."""
ROLES = ("producer", "worker")


class AgentError(RuntimeError):
    """The agent answered an error, died, or did not answer in time: one line that starts
    with what was asked (`start: `, `enqueue: `, `close: `...)."""


class _NoAnswer(Exception):
    """No line from the agent within the time allowed."""


def agent_argv(python: str, ref: str, *, role: str, url: str, concurrency: int, index: int = 0) -> list[str]:
    """The command line that runs a driver's agent under `python` (its environment's)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return [
        python,
        "-m",
        AGENT_MODULE,
        "--driver",
        ref,
        "--role",
        role,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--index",
        str(index),
    ]


def agent_env(
    *,
    pythonpath: str,
    url: str,
    concurrency: int,
    sink: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    counters: bool = False,
) -> dict[str, str]:
    """The environment of an agent: this process's, without its PYTHONPATH/PYTHONHOME (the
    driver's own virtualenv must not see ours), plus PYTHONPATH `pythonpath` (a view that
    holds qbench), the driver's Redis, queue name, concurrency, where pickups go (`sink`;
    by default the null device: a producer runs no handlers) and `extra` (a driver's own).
    `counters`: the producer will be asked for `counters()` (ENV_COUNTERS=1), so a driver
    with `Capability.ROUND_TRIPS` counts its round trips."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    env[ENV_REDIS_URL] = url
    env[ENV_QUEUE] = QUEUE_NAME
    env[ENV_CONCURRENCY] = str(concurrency)
    env.update(sink if sink is not None else {ENV_SINK: os.devnull})
    if counters:
        env[ENV_COUNTERS] = "1"
    env.update(extra or {})
    return env


def last_line(path: Path) -> str:
    """The last non-empty line of a log file (300 characters at most), or `no output`."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


class ProducerAgent:
    """A producer agent subprocess (`python -m qbench.agent --role producer`) and the
    JSON-line conversation with it, one command at a time.

    Standard library only, and no threads: a reply is awaited with `select` on the pipe,
    so the same client serves a thread of the battery and, under gevent's monkey-patching
    (Locust: import locust before this module's users run), a greenlet that yields to the
    others while it waits. One client must not be used by two threads or greenlets at once.

        agent = ProducerAgent(
            agent_argv(python, "qbench.drivers.rq_driver:RqDriver", role="producer", url=url,
                       concurrency=1),
            env=agent_env(pythonpath=path, url=url, concurrency=1, counters=True),
            log=Path("producer.log"),
        )
        ready = agent.start()                      # the driver's ready message
        seconds = agent.enqueue(1000)              # 1000 jobs, one call each
        answer = agent.enqueue_one(sent_at=time.time(), priority="high")
        seconds = agent.enqueue_many(1000, 100)    # bulk calls of 100 (Op.ENQUEUE_MANY)
        if "round_trips" in agent.capabilities:
            counters = agent.counters()            # {"round_trips": n, "commands": m}
        agent.close()                              # AgentError if the driver failed to close

    Every failure is an `AgentError` whose message is one line.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.call_timeout_s = call_timeout_s
        self.ready: dict[str, Any] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._buffer = b""

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Start the agent and wait for its ready message (returned, and kept in `ready`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise AgentError(f"start: cannot run {self.argv[0]}: {exc}") from None
        self.ready = self._reply("start", timeout_s)
        return self.ready

    def close(self, timeout_s: float = QUIT_TIMEOUT_S) -> None:
        """Ask the agent to close the driver and exit; the process is gone on return.

        AgentError when the driver's `close` failed (the agent's answer to `quit`), or
        when the agent did not exit within `timeout_s` (it is killed). An agent that
        already exited, or that answers nothing to `quit` (an older agent), is not an error.
        """
        process = self.process
        if process is None:
            return
        self.process = None
        error: str | None = None
        try:
            if process.poll() is None:
                try:
                    self._write(process, {"op": "quit"})
                    answer = self._read_line(process, timeout_s)
                    if answer is not None:
                        error = _decode(answer).get("error")
                except (_NoAnswer, OSError, ValueError):
                    pass  # it died meanwhile: its exit status and log say why
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                error = error or f"the producer did not exit within {timeout_s:g}s of quit; killed"
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self._close_log()
        if error is not None:
            raise AgentError(f"close: {error}")

    def kill(self) -> None:
        """End the agent at once (its process group), without asking the driver to close."""
        process, self.process = self.process, None
        if process is not None:
            _kill_group(process)
            for pipe in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- what the ready message said ------------------------------------------------------
    @property
    def operations(self) -> frozenset[str]:
        """The operations the driver supports (`Op` values)."""
        return frozenset(self.ready.get("operations", ()))

    @property
    def capabilities(self) -> frozenset[str]:
        """What the driver can do beyond the operations (`Capability` values; an older agent: none)."""
        return frozenset(self.ready.get("capabilities", ()))

    # -- commands ---------------------------------------------------------------------------
    def call(self, what: str, command: Mapping[str, object], *, jobs: int = 1) -> dict[str, Any]:
        """Send one command and return its answer; AgentError (`what: reason`) otherwise.
        The answer may take `call_timeout_s` plus REPLY_SECONDS_PER_JOB per job."""
        process = self.process
        if process is None:
            raise AgentError(f"{what}: the producer is not running")
        try:
            self._write(process, command)
        except OSError:
            raise AgentError(f"{what}: {self._exited(process)}") from None
        return self._reply(what, self.call_timeout_s + REPLY_SECONDS_PER_JOB * max(jobs, 1))

    def pending_answer(self, what: str, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """The answer to a command whose wait was cut short (a Locust user stopped while it
        waited): the agent still answers, and the answer is read here, as `call` would."""
        return self._reply(what, timeout_s)

    def enqueue(self, count: int) -> float:
        """`count` jobs one call at a time, each stamped as it is sent: seconds in the calls."""
        return float(self.call("enqueue", {"op": "enqueue", "count": count}, jobs=count)["seconds"])

    def enqueue_one(self, *, sent_at: float | None = None, priority: str | None = None) -> dict[str, Any]:
        """One job stamped `sent_at` (default: when the agent sends it), of `priority` when
        given: the answer, `{"seconds": time in the call, "started_at": Unix time it began}`."""
        command: dict[str, object] = {"op": "enqueue", "count": 1, "sent_at": sent_at}
        if priority is not None:
            command["priority"] = priority
        return self.call("enqueue", command)

    def enqueue_many(self, count: int, batch: int) -> float:
        """`count` jobs in bulk calls of `batch` (`Op.ENQUEUE_MANY`): seconds in the calls."""
        command = {"op": "enqueue_many", "count": count, "batch": batch}
        return float(self.call("enqueue_many", command, jobs=count)["seconds"])

    def ping(self, count: int) -> float:
        """Seconds for `count` protocol round trips of an external driver's producer."""
        return float(self.call("ping", {"op": "ping", "count": count})["seconds"])

    def enqueue_timed(self, count: int) -> dict[str, Any]:
        """`count` jobs one call at a time (`enqueue_serial`), timed inside the agent: the
        answer's `cpu_ns` (the producer process's CPU time over the calls) and `wall_ns`.
        The timing gate's enqueue measure; an agent older than the op answers an error."""
        command = {"op": "enqueue_timed", "count": count}
        return self.call("enqueue_timed", command, jobs=count)

    def counters(self) -> dict[str, int]:
        """The driver's own counters since it connected (`Capability.ROUND_TRIPS`):
        `{"round_trips": n, "commands": m}`, counted by its client."""
        answer = self.call("counters", {"op": "counters"})
        return {str(k): int(v) for k, v in answer["counters"].items()}

    def enqueue_tracked(
        self, count: int, *, pause_s: float = 0.0, retry_s: float = 0.1, budget_s: float = 60.0
    ) -> dict[str, Any]:
        """`count` jobs, each with a `sent_us` of its own (its id), `pause_s` apart, calls
        that raise retried after `retry_s` within `budget_s`: the answer's `sent` (stamps
        whose enqueue returned), `unacked` (whose enqueue raised) and `errors`."""
        command = {
            "op": "enqueue_tracked",
            "count": count,
            "pause_s": pause_s,
            "retry_s": retry_s,
            "budget_s": budget_s,
        }
        base = self.call_timeout_s
        # The agent answers by its budget's end; a call in flight then still gets its time.
        self.call_timeout_s = max(base, budget_s + base)
        try:
            return self.call("enqueue_tracked", command, jobs=count)
        finally:
            self.call_timeout_s = base

    def census(self) -> dict[str, Any]:
        """The driver's census (`Capability.CENSUS`): `{"failed": [...], "pending": [...] or n}`."""
        census = self.call("census", {"op": "census"}).get("census")
        return census if isinstance(census, dict) else {}

    # -- the pipe -------------------------------------------------------------------------------
    @staticmethod
    def _write(process: subprocess.Popen[bytes], command: Mapping[str, object]) -> None:
        assert process.stdin is not None
        process.stdin.write(json.dumps(command).encode() + b"\n")
        process.stdin.flush()

    def _exited(self, process: subprocess.Popen[bytes]) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)  # its last words reach the log before it is read
        if self._log is not None:
            self._log.flush()
        return f"producer exited ({last_line(self.log)})"

    def _reply(self, what: str, timeout_s: float) -> dict[str, Any]:
        process = self.process
        assert process is not None
        try:
            line = self._read_line(process, timeout_s)
        except _NoAnswer:
            raise AgentError(f"{what}: no answer in {timeout_s:g}s") from None
        if line is None:
            raise AgentError(f"{what}: {self._exited(process)}")
        try:
            reply = _decode(line)
        except ValueError:
            raise AgentError(f"{what}: the agent answered {line[:80]!r}") from None
        if "error" in reply:
            raise AgentError(f"{what}: {reply['error']}")
        return reply

    def _read_line(self, process: subprocess.Popen[bytes], timeout_s: float) -> bytes | None:
        """The next line from the agent; None at end of output; _NoAnswer after `timeout_s`."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _NoAnswer
            # select: cooperative under gevent's monkey-patching, a plain wait otherwise.
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:  # gevent may have made the pipe non-blocking
                continue
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def _decode(line: bytes) -> dict[str, Any]:
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError("not an object")
    return reply


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


# ---------------------------------------------------------------------------------------
# The timing gate's additions (`qbench gate run --driver`, `qbench gate calibrate --driver`).
# Backward compatible: one new op, and environment variables that change nothing unless set.
# ---------------------------------------------------------------------------------------
ENV_HANDICAP_ENQUEUE_US = "QBENCH_HANDICAP_ENQUEUE_US"
"""Calibration only: microseconds of CPU the producer burns per enqueue in `enqueue_timed`."""
ENV_HANDICAP_JOB_US = "QBENCH_HANDICAP_JOB_US"
"""Calibration only: microseconds of CPU a worker burns per handled job, before the handler
records its pickup (installed around `record_pickup` / `arecord_pickup`)."""
ENV_HANDICAP_PICKUP_MS = "QBENCH_HANDICAP_PICKUP_MS"
"""Calibration only: milliseconds a worker waits before each handler starts (a sleep; an
async handler's is an `asyncio.sleep`), so pickup latency grows by that much."""


def _handicap(name: str) -> float:
    try:
        value = float(os.environ.get(name) or 0.0)
    except ValueError:
        return 0.0
    return value if value > 0 else 0.0


def burn_cpu_us(us: float) -> None:
    """Busy-loop until this thread used `us` more microseconds of CPU (not a sleep)."""
    end = time.thread_time_ns() + int(us * 1000)
    while time.thread_time_ns() < end:
        pass


def compensated_burn_us(us: float, trials: int = 500) -> float:
    """The argument for `burn_cpu_us` that makes each call cost `us` of CPU in all: a call
    costs its argument plus about 1 µs of its own (the clock reads that end the loop are
    system calls), which is 40% of a +10% handicap on a 25 µs enqueue. Measured here, in
    the process that burns; 0 when `us` is below that overhead (the call alone exceeds it)."""
    if us <= 0:
        return 0.0
    start = time.thread_time_ns()
    for _ in range(trials):
        burn_cpu_us(us)
    overhead_us = (time.thread_time_ns() - start) / trials / 1000 - us
    return max(0.0, us - max(0.0, overhead_us))


def install_handicaps(role: str) -> None:
    """Inject the calibration handicaps of this process's environment: a worker's wrap
    `qbench.driver.record_pickup` and `arecord_pickup` (before the driver's module imports
    them), so the library itself is never changed. Nothing happens when none is set.
    Handlers in processes the library spawns afresh (not forked) do not inherit it."""
    if role != "worker":
        return
    job_us, pickup_s = _handicap(ENV_HANDICAP_JOB_US), _handicap(ENV_HANDICAP_PICKUP_MS) / 1000
    if job_us <= 0 and pickup_s <= 0:
        return
    burn_us = compensated_burn_us(job_us)
    import asyncio
    import functools

    import qbench.driver as api

    plain, awaited = api.record_pickup, api.arecord_pickup

    @functools.wraps(plain)
    def record_pickup(sent_at: float, *, priority: str | None = None) -> None:
        if pickup_s > 0:
            time.sleep(pickup_s)
        if job_us > 0:
            burn_cpu_us(burn_us)
        plain(sent_at, priority=priority)

    @functools.wraps(awaited)
    async def arecord_pickup(sent_at: float, *, priority: str | None = None) -> None:
        if pickup_s > 0:
            await asyncio.sleep(pickup_s)
        if job_us > 0:
            burn_cpu_us(burn_us)
        await awaited(sent_at, priority=priority)

    api.record_pickup = record_pickup  # type: ignore[assignment]
    api.arecord_pickup = arecord_pickup  # type: ignore[assignment]


def _enqueue_timed(driver: Driver, command: dict[str, Any]) -> dict[str, Any]:
    """`count` serial enqueues with the garbage collector off, timed in CPU and wall
    nanoseconds; with ENV_HANDICAP_ENQUEUE_US, each call first burns that much CPU."""
    import gc

    count = int(command["count"])
    burn_us = _handicap(ENV_HANDICAP_ENQUEUE_US)
    if burn_us > 0 and "enqueue" not in vars(driver):
        _handicap_enqueue(driver, compensated_burn_us(burn_us))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
        driver.enqueue_serial(count)
        cpu_ns, wall_ns = time.process_time_ns() - cpu0, time.perf_counter_ns() - wall0
    finally:
        if was_enabled:
            gc.enable()
    return {"seconds": wall_ns / 1e9, "cpu_ns": cpu_ns, "wall_ns": wall_ns, "count": count}


def _handicap_enqueue(driver: Driver, burn_us: float) -> None:
    """Wrap this driver object's enqueue (or aenqueue: what `enqueue_serial` calls)."""
    from qbench.driver import AsyncDriver

    if isinstance(driver, AsyncDriver):
        inner_async = driver.aenqueue

        async def aenqueue(sent_at: float) -> None:
            burn_cpu_us(burn_us)
            await inner_async(sent_at)

        driver.aenqueue = aenqueue  # type: ignore[method-assign]
    inner = driver.enqueue

    def enqueue(sent_at: float) -> None:
        if not isinstance(driver, AsyncDriver):
            burn_cpu_us(burn_us)
        inner(sent_at)

    driver.enqueue = enqueue  # type: ignore[method-assign]


GATE_OPS = {"enqueue_timed": _enqueue_timed}
"""Ops the timing gate adds to the protocol: `{"op": "enqueue_timed", "count": n}` answers
`{"seconds", "cpu_ns", "wall_ns", "count"}`."""


if __name__ == "__main__":
    sys.exit(main())
