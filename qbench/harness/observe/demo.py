"""Something for `qbench observe` to watch: a queue running on a fresh Redis, then the real CLI.

    python -m qbench.harness.observe.demo dramatiq --out results/observe/dramatiq
    python -m qbench.harness.observe.demo optimized-idle --out results/observe/optimized-idle

Each scenario starts its own redis-server (never a server it did not start), sets a queue
running on it, and then runs `qbench observe --redis-url URL --duration 60s --out DIR` in a
child process, exactly as a user would against their own Redis: observe is told nothing
about what runs there. The command line and the setup are written to `DIR/demo.json`.

- `<peer>` (a library of `qbench peers`, e.g. `dramatiq`, `rq`): the library's workers as
  the peers suite runs them (~10 concurrent) in its own virtualenv, and its producer
  enqueueing no-op jobs at a steady `--rate` per second the whole time.
- `optimized-idle`: the seed's preset with nothing to do: 10 worker threads
  (`python -m qbench.queue_impl.worker --variant optimized --concurrency 10`) after its producer
  left completed jobs (records with a TTL) and dead-lettered ones (the dead-letter list has
  no TTL), beside a `baseline` namespace whose completed records have no TTL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from qbench.harness.errors import EXIT_USAGE
from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import RedisServerProcess
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root
from qbench.harness.peers.registry import PEER_NAMES, resolve
from qbench.harness.peers.runner import DriverFailedError, Sink, driver_process
from qbench.harness.results.rows import git_commit
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import RedisQueue

IDLE = "optimized-idle"
WORKERS = 10
IDLE_JOBS = 200
"""Jobs the idle scenario's producer leaves completed (optimized and baseline each)."""
DEAD_JOBS = 20
"""Jobs that fail with no retry left: ids in the dead-letter list."""
START_TIMEOUT_S = 60.0


class DemoError(RuntimeError):
    """The demo could not set its queue running (one line)."""


def observe_command(url: str, out_dir: Path, duration_s: float) -> list[str]:
    """The `qbench observe` command line the demo runs (the console script's module)."""
    return [
        sys.executable,
        "-m",
        "qbench.harness.cli",
        "observe",
        "--redis-url",
        url,
        "--duration",
        f"{duration_s:g}s",
        "--out",
        str(out_dir),
    ]


def run_observe(url: str, out_dir: Path, duration_s: float) -> subprocess.CompletedProcess[str]:
    command = observe_command(url, out_dir, duration_s)
    print("running: qbench " + " ".join(command[3:]), file=sys.stderr, flush=True)
    return subprocess.run(command, text=True, capture_output=True, timeout=duration_s + 120, check=False)


# -- a peer library, busy ------------------------------------------------------------------------
@contextmanager
def peer_running(name: str, url: str, rate: float, work_dir: Path) -> Iterator[dict[str, Any]]:
    """The library's workers running and its producer sending `rate` jobs/s until the end."""
    spec = resolve(name)  # a built-in peer: PEER_NAMES only
    python = ensure_env(spec)
    root = import_root()
    stop = threading.Event()
    sent = [0]
    try:
        with driver_process(
            spec=spec, python=python, url=url, concurrency=WORKERS, work_dir=work_dir, import_root=root
        ) as driver:
            sink = Sink(work_dir / "demo.sink")
            driver.start_workers(sink)

            def produce() -> None:
                started = time.monotonic()
                while not stop.is_set():
                    driver.enqueue(1)
                    sent[0] += 1
                    # A steady schedule: late sends are not bunched up to catch up.
                    stop.wait(max(0.0, started + sent[0] / rate - time.monotonic()))

            producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
            producer.start()
            setup = {
                "library": driver.ready.get("distribution", name),
                "version": driver.ready.get("version"),
                "workers": driver.ready.get("setup"),
                "producer": f"one no-op job every {1 / rate:g} s ({rate:g} jobs/s), one call each",
            }
            try:
                yield setup
            finally:
                stop.set()
                producer.join(timeout=30)
                setup["jobs_sent"] = sent[0]
                setup["jobs_handled"] = sink.count()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the seed's preset, idle ------------------------------------------------------------------------
def leave_jobs(url: str) -> dict[str, int]:
    """Completed and dead-lettered jobs in `demo` (optimized) and completed ones in
    `demo-baseline`, processed here, before the idle workers start."""
    left: dict[str, int] = {}
    for preset, namespace in (("optimized", "demo"), ("baseline", "demo-baseline")):
        variant = PRESETS[preset]
        queue = RedisQueue(make_client(url, variant), variant, namespace=namespace, consumer="demo-producer")
        try:
            jobs = [Job(type="noop") for _ in range(IDLE_JOBS)]
            if preset == "optimized":
                jobs += [Job(type="fail", max_retries=0) for _ in range(DEAD_JOBS)]
            queue.enqueue_many(jobs)
            done = dead = 0
            while (job := queue.dequeue(wait=False)) is not None:
                if job.type == "fail":
                    queue.fail(job, "demo: a job that fails with no retry left", retry=False)
                    dead += 1
                else:
                    queue.complete(job)
                    done += 1
            left[f"{namespace}:completed"] = done
            left[f"{namespace}:dead_lettered"] = dead
        finally:
            close_client(queue.client)
    return left


def wait_blocked(url: str, clients: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until `clients` clients are blocked (every worker thread in its first wait)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while int(client.info("clients")["blocked_clients"]) < clients:
            if proc.poll() is not None:
                raise DemoError(f"the worker exited at start (see {log})")
            if time.monotonic() > deadline:
                raise DemoError(f"the worker's threads were not all waiting after {START_TIMEOUT_S:g} s")
            time.sleep(0.1)
    finally:
        client.close()


@contextmanager
def idle_workers(url: str, work_dir: Path) -> Iterator[dict[str, Any]]:
    """10 worker threads of the seed's preset on an empty queue."""
    left = leave_jobs(url)
    command = [
        sys.executable,
        "-m",
        "qbench.queue_impl.worker",
        "--redis-url",
        url,
        "--variant",
        "optimized",
        "--namespace",
        "demo",
        "--concurrency",
        str(WORKERS),
    ]
    log = (work_dir / "worker.log").open("wb")
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_blocked(url, WORKERS, proc, work_dir / "worker.log")
        yield {
            "workers": (
                "python -m qbench.queue_impl.worker --variant optimized --concurrency 10 --namespace demo"
            ),
            "jobs_left_before": left,
            "queued_while_observed": 0,
        }
    finally:
        stop(proc, grace_s=30)
        log.close()


# -- the command ------------------------------------------------------------------------------------
def run_demo(scenario: str, out_dir: Path, *, duration_s: float, rate: float) -> int:
    """Start the scenario on a fresh Redis, observe it, write `demo.json`; observe's exit code."""
    server = RedisServerProcess()
    server.start()
    try:
        return _observe_scenario(scenario, server, out_dir, duration_s=duration_s, rate=rate)
    finally:
        server.stop()


def _observe_scenario(
    scenario: str, server: RedisServerProcess, out_dir: Path, *, duration_s: float, rate: float
) -> int:
    with tempfile.TemporaryDirectory(prefix="qbench-demo-") as tmp:
        work_dir = Path(tmp)
        running = (
            idle_workers(server.url, work_dir)
            if scenario == IDLE
            else peer_running(scenario, server.url, rate, work_dir)
        )
        with running as setup:
            done = run_observe(server.url, out_dir, duration_s)
        sys.stderr.write(done.stderr)
        sys.stdout.write(done.stdout)
        record = {
            "scenario": scenario,
            "setup": setup,
            "git": git_commit(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "observe_command": "qbench " + " ".join(observe_command(server.url, out_dir, duration_s)[3:]),
            "observe_exit": done.returncode,
            "observe_stdout": done.stdout.splitlines(),
            "redis": f"a redis-server this demo started ({server.url}), stopped afterwards",
            "demo_command": f"python -m qbench.harness.observe.demo {scenario} --out {out_dir}"
            + (f" --duration {duration_s:g}" if duration_s != 60 else "")
            + (f" --rate {rate:g}" if scenario != IDLE and rate != 10 else ""),
        }
        if done.returncode == 0:
            (out_dir / "demo.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qbench.harness.observe.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", help=f"{IDLE}, or a peer library: {', '.join(PEER_NAMES)}")
    parser.add_argument("--out", type=Path, required=True, help="observe's results dir")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to observe (default 60)")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="jobs/s the peer's producer sends (default 10)"
    )
    args = parser.parse_args(argv)
    if args.scenario != IDLE and args.scenario not in PEER_NAMES:
        print(
            f"demo: error: unknown scenario {args.scenario!r}; "
            f"expected {IDLE} or one of {', '.join(PEER_NAMES)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.duration < 2 or args.rate <= 0:
        print("demo: error: --duration must be >= 2 and --rate > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_demo(args.scenario, args.out, duration_s=args.duration, rate=args.rate)
    except (DemoError, DriverFailedError, PeerEnvError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
