"""Subprocess side of a driver: a producer answering JSON-line commands, or a worker.

Runs under the driver's own virtualenv (`python -m harness.peers.agent ...`), so it
imports only the standard library, the driver module and the library it drives.
Protocol (producer): one JSON object per line each way. The agent first sends
`{"ready": true, ...}`; then for `{"op": "enqueue", "count": n}` it enqueues n jobs one
call at a time, for `{"op": "enqueue_many", "count": n, "batch": b}` it uses the bulk
call, and answers `{"seconds": s}` (time inside the calls) or `{"error": "..."}`;
`{"op": "quit"}` ends it.
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

from harness.peers.base import Driver
from harness.peers.registry import DRIVERS


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _enqueue_many(driver: Driver, count: int, batch: int) -> float:
    elapsed = 0.0
    for start in range(0, count, batch):
        size = min(batch, count - start)
        t0 = time.perf_counter()
        now = time.time()
        driver.enqueue_many([now] * size)
        elapsed += time.perf_counter() - t0
    return elapsed


def _serve(driver: Driver, commands: IO[str], out: IO[str]) -> None:
    for line in commands:
        command = json.loads(line)
        op = command.get("op")
        if op == "quit":
            return
        try:
            if op == "enqueue":
                t0 = time.perf_counter()
                driver.enqueue_serial(int(command["count"]))
                _send(out, {"seconds": time.perf_counter() - t0})
            elif op == "enqueue_many":
                seconds = _enqueue_many(driver, int(command["count"]), int(command["batch"]))
                _send(out, {"seconds": seconds})
            else:
                _send(out, {"error": f"unknown op {op!r}"})
        except Exception as exc:  # reported to the harness, which records the driver as failed
            _send(out, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.peers.agent")
    parser.add_argument("--driver", required=True, choices=sorted(DRIVERS))
    parser.add_argument("--role", required=True, choices=("producer", "worker"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    cls = DRIVERS[args.driver].load()
    if args.role == "worker":
        driver = cls(url=args.url, concurrency=args.concurrency)
        driver.run_worker(index=args.index)
        return 0
    # The protocol keeps the real stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    driver = cls(url=args.url, concurrency=args.concurrency)
    try:
        _send(
            out,
            {
                "ready": True,
                "setup": driver.setup(),
                "processes": driver.worker_processes(),
                "version": _version(cls.distribution),
                "distribution": cls.distribution,
                "has_enqueue_many": cls.has_enqueue_many,
                "python": sys.version.split()[0],
                "redis_py": _version("redis"),
            },
        )
        _serve(driver, sys.stdin, out)
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
