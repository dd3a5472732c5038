"""One side of an interleaved timing run, in a process of its own: runs rounds when asked.

    python harness/timing/worker.py --root CHECKOUT --redis-url URL [--cpu N]

It imports the reference queue from CHECKOUT: `qbench.queue_impl`, or `queue_impl` in a
checkout made before the package moved under `qbench` (any commit of this repository, also one that
predates this file: it uses only `parse_variant`, `make_client`, `RedisQueue` and `Job`)
and speaks one JSON object per line on stdin/stdout:

    {"cmd": "hello"}                                -> {"ok": true, "queue_impl": PATH, "pid": N, ...}
    {"cmd": "setup", "case": "cycle", "variant": "baseline", "handicap_us": 0}
                                                    -> {"ok": true, "case_id": "c1"}
    {"cmd": "round", "case_id": "c1", "ops": 200}  -> {"ok": true, "ops": 200, "wall_ns": N, "cpu_ns": N}
    {"cmd": "quit"}                                 -> {"ok": true}  (namespaces deleted, exit 0)

Any error is `{"ok": false, "error": "one line"}`. It imports nothing from `harness`
(the checkout it measures may have none), so the harness of the commit that runs the
comparison measures both sides with the same code. `timed_round` is also the timer the
in-process measurements use: the one definition of a timed round.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUEUE_PACKAGES = ("qbench.queue_impl", "queue_impl")
"""Where a checkout keeps the reference queue: today's layout first, then the older one."""
package = QUEUE_PACKAGES[0]
"""The reference queue's package in the measured checkout (set by `main`)."""

CASES = ("cycle",)
"""cycle: enqueue one job, dequeue it (no wait), complete it: what every job costs."""


def package_dir(root: Path, name: str) -> Path:
    return root.joinpath(*name.split("."))


def queue_package(root: Path) -> str | None:
    """The reference queue's package in checkout `root`, None if it has none."""
    for name in QUEUE_PACKAGES:
        if (package_dir(root, name) / "__init__.py").is_file():
            return name
    return None


def timed_round(action: Callable[[], object], ops: int) -> dict[str, int]:
    """Run `action` `ops` times with the garbage collector off; wall and CPU nanoseconds.

    A collection runs before the round (so garbage from the last round is not paid in
    this one) and the collector is off during it (so a collection's pause lands in no
    round); CPU time is this process's (`time.process_time_ns`: user + system, all threads).
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu0 = time.process_time_ns()
        wall0 = time.perf_counter_ns()
        for _ in range(ops):
            action()
        wall = time.perf_counter_ns() - wall0
        cpu = time.process_time_ns() - cpu0
    finally:
        if was_enabled:
            gc.enable()
    return {"ops": ops, "wall_ns": wall, "cpu_ns": cpu}


class _Cycle:
    """enqueue + dequeue(wait=False) + complete on one queue of its own namespace."""

    def __init__(self, url: str, variant_spec: str, handicap_us: float) -> None:
        config = importlib.import_module(f"{package}.config")
        connection = importlib.import_module(f"{package}.connection")
        queue_mod = importlib.import_module(f"{package}.queue")
        job_mod = importlib.import_module(f"{package}.job")
        spec = variant_spec if not handicap_us else _with_override(variant_spec, f"handicap_us={handicap_us}")
        self.variant = config.parse_variant(spec)
        self.client = connection.make_client(url, self.variant)
        self.queue = queue_mod.RedisQueue(
            self.client, self.variant, namespace=f"timing-{uuid.uuid4().hex[:10]}"
        )
        self._job = job_mod.Job
        # High priority: every dequeue mode finds the job on its first try (the seed's
        # blocking mode would otherwise look at the empty high queue first).
        self._high = job_mod.Priority.HIGH
        for _ in range(20):  # connection, scripts, caches: one-time costs before any round
            self.once()

    def once(self) -> None:
        self.queue.enqueue(self._job(type="noop", priority=self._high))
        job = self.queue.dequeue(wait=False)
        if job is None:
            raise RuntimeError("the job just enqueued could not be dequeued")
        self.queue.complete(job)

    def close(self) -> None:
        try:
            self.queue.cleanup()
        finally:
            self.client.close()


def _with_override(spec: str, override: str) -> str:
    return f"{spec},{override}" if "+" in spec else f"{spec}+{override}"


class Worker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.cases: dict[str, _Cycle] = {}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "hello":
            queue_impl = importlib.import_module(package)
            return {
                "ok": True,
                "pid": os.getpid(),
                "queue_impl": str(Path(queue_impl.__file__ or "?").parent),
                "python": sys.version.split()[0],
                "affinity": sorted(os.sched_getaffinity(0)),
            }
        if cmd == "setup":
            case = str(request.get("case"))
            if case not in CASES:
                raise ValueError(f"unknown case {case!r} (expected one of {', '.join(CASES)})")
            case_id = f"c{len(self.cases) + 1}"
            self.cases[case_id] = _Cycle(
                self.url, str(request["variant"]), float(request.get("handicap_us") or 0.0)
            )
            return {"ok": True, "case_id": case_id, "variant": self.cases[case_id].variant.label()}
        if cmd == "round":
            case_obj = self.cases[str(request["case_id"])]
            return {"ok": True, **timed_round(case_obj.once, int(request["ops"]))}
        if cmd == "quit":
            self.close()
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        for case in self.cases.values():
            case.close()
        self.cases.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", required=True, type=Path, help="checkout whose queue_impl is measured")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    global package
    found_package = queue_package(root)
    if found_package is None:
        print(json.dumps({"ok": False, "error": f"{root}: no queue_impl package"}), flush=True)
        return 2
    package = found_package
    sys.path.insert(0, str(root))
    queue_impl = importlib.import_module(package)
    found = Path(queue_impl.__file__ or "").resolve().parent
    if found != package_dir(root, package):  # an installed copy shadowed the checkout
        print(json.dumps({"ok": False, "error": f"queue_impl came from {found}, not {root}"}), flush=True)
        return 2
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    worker = Worker(args.redis_url)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                reply = worker.handle(request)
            except Exception as exc:  # every failure is one line to the coordinator
                reply = {"ok": False, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500]}
            print(json.dumps(reply), flush=True)
            if request.get("cmd") == "quit":
                return 0
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
