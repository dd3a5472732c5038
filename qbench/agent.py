"""Subprocess side of a driver: a producer answering JSON-line commands, or a worker.

Runs under the driver's own environment (`python -m qbench.agent --driver REF ...`),
so it imports only the standard library, `qbench` and the driver (which imports its
library). REF is what `qbench.loader.load_driver` takes: entry points are resolved by the
harness, since a driver's own virtualenv does not have qbench installed.

Protocol (producer): one JSON object per line each way. The agent first sends
`{"ready": true, ...}` (version, operations, setup); then it answers each command with
`{"seconds": s, ...}` (time inside the driver's calls) or `{"error": "one line"}`:
- `{"op": "enqueue", "count": n}`: n jobs one call at a time, each stamped as it is sent;
- `{"op": "enqueue", "count": 1, "sent_at": t, "priority": p}`: one job stamped t (a load
  test's intended send time), of priority p when given; the answer adds `started_at`;
- `{"op": "enqueue_many", "count": n, "batch": b}`: the bulk call, b jobs per call;
- `{"op": "ping", "count": n}`: an external driver's protocol round trip, n times;
- `{"op": "quit"}` ends it.
A worker runs `run_worker` until SIGTERM; a driver error there is one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import IO, Any

from qbench.driver import API_VERSION, Driver, Op
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


def _serve(driver: Driver, commands: IO[str], out: IO[str]) -> None:
    for line in commands:
        command = json.loads(line)
        op = command.get("op")
        if op == "quit":
            return
        try:
            if op == "enqueue":
                _send(out, _enqueue(driver, command))
            elif op == "enqueue_many":
                seconds = _enqueue_many(driver, int(command["count"]), int(command["batch"]))
                _send(out, {"seconds": seconds})
            elif op == "ping":
                _send(out, _ping(driver, int(command["count"])))
            else:
                _send(out, {"error": f"unknown op {op!r}"})
        except Exception as exc:  # reported to the harness, which records the driver as failed
            _send(out, {"error": _one_line(exc)})


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
        "has_enqueue_many": Op.ENQUEUE_MANY in cls.operations,
        "sink": ext.sink if ext is not None else "file",
        "external": ext is not None,
        "python": sys.version.split()[0],
        "redis_py": _version("redis") if ext is None else "-",
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
        _serve(driver, sys.stdin, out)
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
