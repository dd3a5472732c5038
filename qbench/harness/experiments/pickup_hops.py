"""Where each millisecond of a pickup goes: the hops of one job, from the producer's call to
its handler, for idle worker pools at random arrival times.

A worker process (`python -m qbench.queue_impl.worker`, 10 threads, the variant's own
dispatch) runs with `QBENCH_HOPS` set, so it writes each job's hop timestamps
(`qbench.queue_impl.hops`); its handler writes the handler's start. The producer, in this
process, enqueues one job at a time at random gaps (uniform in [0, `gap_max_s`)),
priorities in turn, and notes when its call began (`sent`) and returned. Every stamp is
the host's Unix clock, so hops are differences of two stamps taken in two processes:

- `producer_call`: sent → the enqueue call returned (the producer's own round trip);
- `to_wake`: sent → the worker's blocking wait returned (the push reaching Redis, the
  marker, the wake-up of the waiting thread; jobs claimed without a wait have none);
- `claim`: wait returned → the claim's reply was in and decoded (sent → claim when no wait);
- `hand_off`: claim → the thread that runs the job has it;
- `to_run`: hand-off → the pool calls the job's handler;
- `handler_start`: that call → the handler's first line;
- `total`: sent → the handler's first line (what the battery calls pickup latency).

The floor (`variant=floor`): 10 threads of a bare BRPOP loop (what a hand-written worker
does) in a process of its own, timed the same way (its wait's return is its claim).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from qbench.harness.experiments import RunContext, Section
from qbench.harness.experiments.pool_runs import option_number
from qbench.harness.infra.measured import unique_namespace
from qbench.harness.results.render import DOES_NOT_HOLD, HOLDS, NOT_MEASURED, markdown_table
from qbench.harness.results.rows import Row, params, parse_params
from qbench.harness.results.stats import median, percentiles
from qbench.queue_impl.config import PICKUP_FLOOR, Variant, parse_variant
from qbench.queue_impl.connection import make_client
from qbench.queue_impl.hops import ENV_HOPS
from qbench.queue_impl.job import PRIORITY_ORDER, Job, as_text
from qbench.queue_impl.queue import RedisQueue

NAME = "pickup_hops"
TITLE = "Pickup hops: where each millisecond of an idle pickup goes"

FLOOR = "floor"
"""The bare BRPOP loop: its rows have no variant and `subject=floor` in their params."""
FLOOR_RATIO_TARGET = 1.5
"""Issue 20: the reference's pickup p99 at most this many times the floor's, in one run."""
HOPS = ("producer_call", "to_wake", "claim", "hand_off", "to_run", "handler_start", "total")
STATS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0))
SAMPLES = {True: 60, False: 200}
GAP_MAX_S = {True: 0.5, False: 2.0}
WORKERS = 10
JOB_TYPE = "hop"
START_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 15.0


# -- the worker side (runs in the worker process) -------------------------------------------
def _handler_line(job_id: str) -> None:
    at = time.time_ns() // 1000
    os.write(_handler_fd(), f"H {job_id} {at}\n".encode())


_FD: list[int] = []


def _handler_fd() -> int:
    if not _FD:
        _FD.append(os.open(os.environ[ENV_HOPS], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    return _FD[0]


def _hop_handler(job: Job) -> None:
    _handler_line(job.id)


HANDLERS = {JOB_TYPE: _hop_handler}
"""`--handlers qbench.harness.experiments.pickup_hops:HANDLERS` for the traced worker."""


def floor_main(url: str, key: str, threads: int) -> None:
    """The floor: `threads` threads BRPOP `key` (1 s timeout) and run the handler; the
    payload is the job id. Stops on SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = redis.Redis.from_url(url, socket_timeout=10)
    trace = os.open(os.environ[ENV_HOPS], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def loop() -> None:
        while not stop.is_set():
            item = client.brpop([key], timeout=1)
            if item is None:
                continue
            woke = time.time_ns() // 1000
            job_id = as_text(item[1])
            os.write(trace, f"{job_id} {woke} {woke} {woke} {woke}\n".encode())
            _handler_line(job_id)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    while not stop.wait(0.2):
        pass


# -- the producer side ---------------------------------------------------------------------
def run(ctx: RunContext) -> list[Row]:
    samples = int(option_number(ctx.options, "samples", SAMPLES[ctx.quick]))
    gap_max_s = option_number(ctx.options, "gap_max_s", GAP_MAX_S[ctx.quick])
    rows: list[Row] = []
    for label in _labels(ctx):
        for repeat in range(ctx.repeats):
            ctx.progress(f"{label}: {samples} probes, gaps in [0, {gap_max_s:g}) s, repeat {repeat + 1}")
            hops = _probe(ctx, label, samples, gap_max_s, random.Random(repeat))
            rows += _rows(label, hops, repeat, gap_max_s)
    return rows


CANDIDATE = parse_variant(f"scripted+{PICKUP_FLOOR}").label()
"""scripted with issue 20's whole pickup path (not yet its default)."""


def _labels(ctx: RunContext) -> list[str]:
    given = ctx.options.get("variants")
    if isinstance(given, Sequence) and not isinstance(given, str):
        return [v.label() if isinstance(v, Variant) else str(v) for v in given]
    return [FLOOR, "scripted", CANDIDATE]


def _probe(
    ctx: RunContext, label: str, samples: int, gap_max_s: float, rng: random.Random
) -> list[dict[str, float]]:
    namespace = unique_namespace("hops")
    trace = Path(ctx.out_dir) / "hops" / f"{namespace}.txt"
    trace.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV_HOPS: str(trace)}
    if label == FLOOR:
        variant = None
        key = f"qbench:{{{namespace}}}:floor"
        cmd = [sys.executable, "-m", __name__, ctx.url, key, str(WORKERS)]
    else:
        variant = parse_variant(label)
        cmd = [
            sys.executable, "-m", "qbench.queue_impl.worker", "--variant", label, "--namespace", namespace,
            "--redis-url", ctx.url, "--concurrency", str(WORKERS),
            "--handlers", f"{__name__}:HANDLERS",
        ]  # fmt: skip
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sent: dict[str, tuple[int, int]] = {}
    client = redis.Redis.from_url(ctx.url, socket_timeout=10)
    queue = None
    try:
        if variant is not None:
            queue = RedisQueue(make_client(ctx.url, variant, workers=1), variant, namespace=namespace)

        def send(job_id: str, priority_index: int) -> None:
            if queue is None:
                client.lpush(key, job_id)
            else:
                queue.enqueue(Job(id=job_id, type=JOB_TYPE, priority=PRIORITY_ORDER[priority_index]))

        # Warm-up: three jobs, waited for, left out.
        for i in range(3):
            job_id = f"warm{i}"
            send(job_id, i % 3)
            _wait_lines(trace, {job_id}, START_TIMEOUT_S, worker)
        for i in range(samples):
            time.sleep(rng.uniform(0.0, gap_max_s))
            job_id = f"probe{i}"
            began = time.time_ns() // 1000
            send(job_id, i % 3)
            sent[job_id] = (began, time.time_ns() // 1000)
        _wait_lines(trace, set(sent), DRAIN_TIMEOUT_S, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=40)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if queue is not None:
            queue.cleanup()
            queue.client.close()
        elif variant is None:
            client.delete(key)
        client.close()
    return _hops(trace, sent)


def _wait_lines(trace: Path, job_ids: set[str], timeout_s: float, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            err = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
            raise RuntimeError(f"pickup_hops: the worker exited ({worker.returncode}): {err.strip()[-400:]}")
        if trace.exists():
            started = {line.split()[1] for line in trace.read_text().splitlines() if line.startswith("H ")}
            if job_ids <= started:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pickup_hops: jobs not started within {timeout_s:g} s")


def _hops(trace: Path, sent: dict[str, tuple[int, int]]) -> list[dict[str, float]]:
    pool: dict[str, list[int]] = {}
    handler: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        parts = line.split()
        if parts[0] == "H":
            handler[parts[1]] = int(parts[2])
        else:
            pool[parts[0]] = [int(p) for p in parts[1:]]
    found = []
    for job_id, (began, returned) in sent.items():
        woke, claimed, handed, run_at = pool[job_id]
        start = handler[job_id]
        hops = {
            "producer_call": returned - began,
            "claim": claimed - (woke or began),
            "hand_off": handed - claimed,
            "to_run": run_at - handed,
            "handler_start": start - run_at,
            "total": start - began,
        }
        if woke:
            hops["to_wake"] = woke - began
        found.append({k: v / 1000.0 for k, v in hops.items()})
    return found


def _rows(label: str, hops: list[dict[str, float]], repeat: int, gap_max_s: float) -> list[Row]:
    found: list[Row] = []
    variant, extra = ("", {"subject": FLOOR}) if label == FLOOR else (label, {})
    for hop in HOPS:
        values = [h[hop] for h in hops if hop in h]
        p = params(hop=hop, gap_max_s=f"{gap_max_s:g}", workers=WORKERS, **extra)
        found.append(Row(NAME, variant, p, "samples", len(values), "jobs", repeat))
        if not values:
            continue
        for (name, _q), value in zip(STATS, percentiles(values, [q for _, q in STATS]), strict=True):
            found.append(Row(NAME, variant, p, name, round(value, 4), "ms", repeat))
        found.append(Row(NAME, variant, p, "mean", round(sum(values) / len(values), 4), "ms", repeat))
    return found


def _label(row: Row) -> str:
    return row.variant or parse_params(row.params).get("subject", "-")


def _values(mine: list[Row], label: str, hop: str, stat: str) -> list[float]:
    return sorted(
        r.value
        for r in mine
        if _label(r) == label and r.metric == stat and parse_params(r.params).get("hop") == hop
    )


def _verdict(mine: list[Row]) -> tuple[str, str, str]:
    claim = f"Pickup p99 at most {FLOOR_RATIO_TARGET:g}x a bare BRPOP loop's, same run (issue 20)"
    floor = _values(mine, FLOOR, "total", "p99")
    judged = [label for label in (CANDIDATE, "scripted") if _values(mine, label, "total", "p99")]
    if not floor or not judged:
        return claim, NOT_MEASURED, "the floor and scripted did not both run"
    ratios = {label: median(_values(mine, label, "total", "p99")) / median(floor) for label in judged}
    why = f"the floor's p99 {median(floor):.2f} ms (medians over {len(floor)} repeat(s)); " + ", ".join(
        f"{label} {ratio:.2f}x" for label, ratio in ratios.items()
    )
    return claim, HOLDS if ratios[judged[0]] <= FLOOR_RATIO_TARGET else DOES_NOT_HOLD, why


def render(rows: list[Row], charts_dir: Path) -> Section:
    mine = [r for r in rows if r.experiment == NAME]
    labels = list(dict.fromkeys(_label(r) for r in mine))
    table = []
    for label in labels:
        for hop in HOPS:
            cells = [label, hop]
            for stat in ("samples", "p50", "p99", "mean"):
                values = _values(mine, label, hop, stat)
                if not values:
                    cells.append("-")
                elif stat == "samples":
                    cells.append(f"{int(sum(values))}")
                else:
                    mid = values[len(values) // 2]
                    spread = f" ({values[0]:.3f}..{values[-1]:.3f})" if len(values) > 1 else ""
                    cells.append(f"{mid:.3f}{spread}")
            table.append(cells)
    markdown = (
        "Each hop of an idle pickup (see `qbench/harness/experiments/pickup_hops.py`), in ms: "
        "the median over repeats (min..max).\n\n"
        + markdown_table(["variant", "hop", "samples", "p50", "p99", "mean"], table)
    )
    return Section(title=TITLE, markdown=markdown, verdicts=[_verdict(mine)])


if __name__ == "__main__":
    floor_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
