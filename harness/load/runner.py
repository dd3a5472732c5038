"""`qbench load SCENARIO --variant V`: a headless Locust run in its own processes, into tidy rows."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.infra.census import take_census
from harness.infra.measured import load_scripts, unique_namespace
from harness.infra.redis_server import ProvisionedRedis, free_port, redis_for_run
from harness.results.rows import (
    METRICS_FILE,
    RUN_FILE,
    Row,
    params,
    parse_params,
    run_metadata,
    write_metrics,
    write_run,
)
from harness.results.stats import percentiles
from queue_impl.config import PRESETS, Variant
from queue_impl.connection import make_client
from queue_impl.job import Job, Priority
from queue_impl.queue import RedisQueue
from scenarios import settings as run_settings
from scenarios.recorder import OpSamples, load_samples
from scenarios.workload import Workload

EXPERIMENT = "load"
LOCUSTFILE = Path(__file__).resolve().parents[2] / "scenarios" / "locustfile.py"
DEFAULT_OUT_ROOT = Path("results/load")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STOP_TIMEOUT_S = 10
"""Users finish their current task at the end (a consumer's longest blocking wait is 5 s),
so no job is left half-enqueued or held when the run stops."""
PREFILL_CHUNK = 1000
API_START_TIMEOUT_S = 20.0
OP_ORDER = (
    "enqueue",
    "enqueue_burst",
    "submit",
    "dequeue",
    "pickup",
    "pickup_high",
    "pickup_normal",
    "pickup_low",
    "complete",
    "dequeue_empty",
)
"""Chart order: a job's way through the queue (any other operation after these)."""
THROUGHPUT_METRIC = "ops_per_s"
"""Operations completed in one whole second (params `op=...;t_s=N`): the throughput chart's data."""
REQUEST_UNIT = "requests"
"""Tallies that depend on speed (requests done, jobs produced): reported, never held exact."""


class LoadError(RuntimeError):
    """A load run that did not produce results (one line)."""


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """One load run: a workload shape, a variant, and the run's own overrides."""

    workload: Workload
    variant: Variant
    label: str
    users: int
    spawn_rate: float
    duration_s: float
    workers: int = 0
    """Locust worker processes (0: one local process)."""

    def row_params(self, **extra: object) -> str:
        return params(
            scenario=self.workload.name,
            users=self.users,
            duration_s=f"{self.duration_s:g}",
            workers=self.workers,
            **extra,
        )


class LocustPlan(Protocol):
    """What starting Locust and naming rows need of a plan: a `LoadPlan`, or a driver's
    (`harness.load.driver_load.DriverLoadPlan`)."""

    @property
    def workload(self) -> Workload: ...
    @property
    def label(self) -> str: ...
    @property
    def users(self) -> int: ...
    @property
    def spawn_rate(self) -> float: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def workers(self) -> int: ...
    def row_params(self, **extra: object) -> str: ...


@dataclass
class LoadRun:
    """What a finished run left behind, before it becomes rows."""

    plan: LoadPlan
    out_dir: Path
    locust_stats: list[dict[str, Any]]
    samples: dict[str, OpSamples]
    census: dict[str, int]
    jobs_expected: int
    locust_returncode: int
    meta: dict[str, Any] = field(default_factory=dict)


DuringRun = Callable[[ProvisionedRedis, str], AbstractContextManager[object]]
"""Called with (server, namespace) to run something alongside the users (e.g. a profiled worker)."""


def run_load(
    plan: LoadPlan,
    out_dir: Path,
    *,
    redis_url: str | None = None,
    during: DuringRun | None = None,
    progress: Callable[[str], None] = print,
) -> LoadRun:
    load_before = os.getloadavg()
    started = time.time()
    with redis_for_run(redis_url) as server, tempfile.TemporaryDirectory(prefix="qbench-load-") as tmp:
        namespace = unique_namespace(f"load-{plan.workload.name}")
        samples_dir = Path(tmp)
        client = make_client(server.url, plan.variant)
        queue = RedisQueue(client, plan.variant, namespace=namespace, consumer="qbench-load")
        try:
            load_scripts(client)  # no user's first call pays a NOSCRIPT miss
            prefilled = prefill(server.url, plan, namespace)
            if prefilled:
                progress(f"prefilled {prefilled} jobs")
            with contextlib.ExitStack() as stack:
                host = "http://127.0.0.1"
                if "http_submit" in plan.workload.user_mix:
                    host = stack.enter_context(api_server(server.url, plan.variant, namespace))
                if during is not None:
                    stack.enter_context(during(server, namespace))
                returncode = run_locust(
                    plan, out_dir, host=host, env=_locust_env(plan, server.url, namespace, samples_dir)
                )
            samples = load_samples(samples_dir)
            census = take_census(queue).counts()
            produced = sum(len(s.latency_ms) for op, s in samples.items() if op in ("enqueue", "submit"))
            produced += (
                len(samples["enqueue_burst"].latency_ms) * plan.workload.burst_size
                if "enqueue_burst" in samples
                else 0
            )
            jobs_expected = prefilled + produced
        finally:
            queue.cleanup()
            client.close()
            client.connection_pool.disconnect()
        meta = run_metadata(
            server=server.info.as_dict(),
            mode="load",
            extra={
                "scenario": plan.workload.name,
                "workload": plan.workload.as_dict(),
                "variant": plan.label,
                "toggles": plan.variant.toggles(),
                "users": plan.users,
                "spawn_rate": plan.spawn_rate,
                "duration_s": plan.duration_s,
                "locust_workers": plan.workers,
                "locust_returncode": returncode,
                "load_avg_before": load_before,
                "load_avg_after": os.getloadavg(),
                "wall_s": round(time.time() - started, 1),
                "latency_note": "percentiles from every sample in float ms (Locust's own are rounded)",
            },
        )
    stats_path = out_dir / "locust.json"
    if not stats_path.is_file():
        raise LoadError(f"Locust wrote no stats (exit {returncode}): {_last_log_line(out_dir)}")
    return LoadRun(
        plan=plan,
        out_dir=out_dir,
        locust_stats=json.loads(stats_path.read_text()),
        samples=samples,
        census=census,
        jobs_expected=jobs_expected,
        locust_returncode=returncode,
        meta=meta,
    )


def prefill(url: str, plan: LoadPlan, namespace: str) -> int:
    """Queue the workload's backlog with pipelined batches (setup, not measured)."""
    total = plan.workload.prefill_jobs
    if not total:
        return 0
    # Any batch mode stores the same records; pipelining just makes setup fast.
    variant = plan.variant.with_overrides(batch="pipeline")
    client = make_client(url, variant)
    queue = RedisQueue(client, variant, namespace=namespace, consumer="qbench-prefill")
    mix = plan.workload.priority_mix
    priorities = [Priority.parse(p) for p in mix]
    weights = list(mix.values())
    payload = b"x" * plan.workload.job_size_bytes
    import numpy as np  # here, not at module top: every `qbench` start imports this module

    rng = np.random.default_rng(0)
    try:
        done = 0
        while done < total:
            size = min(PREFILL_CHUNK, total - done)
            picks = rng.choice(len(priorities), size=size, p=np.array(weights) / sum(weights))
            queue.enqueue_many([Job(type="noop", payload=payload, priority=priorities[i]) for i in picks])
            done += size
    finally:
        client.close()
        client.connection_pool.disconnect()
    return total


def _locust_env(plan: LoadPlan, url: str, namespace: str, samples_dir: Path) -> dict[str, str]:
    # The plan may override users or duration: Locust's processes read this exact shape.
    workload_file = samples_dir / "workload.toml"
    workload_file.write_text(_to_toml(plan.workload))
    env = dict(os.environ)
    env.update(
        {
            run_settings.ENV_WORKLOAD: str(workload_file),
            run_settings.ENV_VARIANT: variant_spec(plan.variant),
            run_settings.ENV_REDIS_URL: url,
            run_settings.ENV_NAMESPACE: namespace,
            run_settings.ENV_SAMPLES_DIR: str(samples_dir),
            run_settings.ENV_STARTED_AT: repr(time.time()),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(LOCUSTFILE.parent.parent), env.get("PYTHONPATH")])
            ),
        }
    )
    return env


def _to_toml(workload: Workload) -> str:
    def value(v: object) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    doc = workload.as_dict()
    doc.pop("name")
    return "".join(f"{k} = {value(v)}\n" for k, v in doc.items())


def variant_spec(variant: Variant) -> str:
    """A `preset+toggle=value,...` string that `parse_variant` turns back into `variant`."""
    if variant.name not in PRESETS:
        raise ValueError(f"variant {variant.name!r} is not based on a preset: build it with parse_variant")
    return variant.label()


def run_locust(plan: LocustPlan, out_dir: Path, *, host: str, env: dict[str, str]) -> int:
    """Locust headless in child processes (its gevent patching never touches this one)."""
    base = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--loglevel",
        os.environ.get("QBENCH_LOCUST_LOGLEVEL", "WARNING"),
    ]
    master = [
        *base,
        "--headless",
        "--users",
        str(plan.users),
        "--spawn-rate",
        f"{plan.spawn_rate:g}",
        "--run-time",
        f"{plan.duration_s:g}s",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--host",
        host,
        "--only-summary",
        "--json-file",
        str(out_dir / "locust"),  # Locust appends .json
        "--csv",
        str(out_dir / "locust"),
        "--csv-full-history",
    ]
    workers: list[subprocess.Popen[bytes]] = []
    if plan.workers:
        port = free_port()
        master += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(plan.workers),
            "--expect-workers-max-wait",
            "30",
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("locust*"):  # a failed rerun must not pass off old stats as its own
        stale.unlink()
    timeout_s = plan.duration_s + STOP_TIMEOUT_S + 60
    log_path = out_dir / "locust.log"
    with log_path.open("wb") as log:
        master_proc = subprocess.Popen(
            master, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        try:
            for _ in range(plan.workers):
                worker_cmd = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                workers.append(
                    subprocess.Popen(
                        worker_cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
                    )
                )
            try:
                returncode = master_proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise LoadError(f"Locust did not finish within {timeout_s:g} s (see {log_path})") from None
            for worker in workers:
                # Workers quit when the master does; give them time to dump their samples.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=STOP_TIMEOUT_S + 5)
        finally:
            for proc in (master_proc, *workers):
                _stop(proc)
    return returncode


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_log_line(out_dir: Path) -> str:
    log = out_dir / "locust.log"
    lines = (
        [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if log.exists()
        else []
    )
    return lines[-1].strip() if lines else "no log"


@contextlib.contextmanager
def api_server(url: str, variant: Variant, namespace: str) -> Iterator[str]:
    """`python -m queue_impl.api` on a free loopback port; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "queue_impl.api",
        "--port",
        str(port),
        "--variant",
        variant_spec(variant),
        "--redis-url",
        url,
        "--namespace",
        namespace,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise LoadError(
                    f"the API exited at start: {err.splitlines()[-1] if err else proc.returncode}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/healthz", timeout=1) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise LoadError(f"the API did not answer on {base} within {API_START_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield base
    finally:
        _stop(proc)
        if proc.stderr:
            proc.stderr.close()


# -- rows ----------------------------------------------------------------------------


def rows_of(run: LoadRun) -> list[Row]:
    rows = sample_rows(run.plan, run.samples)

    def add(op: str, metric: str, value: float, unit: str) -> None:
        rows.append(Row(EXPERIMENT, run.plan.label, run.plan.row_params(op=op), metric, float(value), unit))

    add("all", "jobs_expected", run.jobs_expected, REQUEST_UNIT)
    add("all", "jobs_recorded", run.census["records"], REQUEST_UNIT)
    add("all", "jobs_completed", run.census["completed"], REQUEST_UNIT)
    # Both must be 0 on every run: a job record missing or stranded is a lost job.
    add("all", "jobs_missing", run.jobs_expected - run.census["records"], "jobs")
    add("all", "jobs_stranded", run.census["stranded"], "jobs")
    return rows


def sample_rows(plan: LocustPlan, samples: dict[str, OpSamples]) -> list[Row]:
    """Per operation: requests, failures, rate, latency percentiles, round trips, and the
    operations completed in each second of the run."""
    rows: list[Row] = []

    def add(op: str, metric: str, value: float, unit: str) -> None:
        rows.append(Row(EXPERIMENT, plan.label, plan.row_params(op=op), metric, float(value), unit))

    for op in sorted(samples):
        op_samples = samples[op]
        latencies = op_samples.latency_ms
        add(op, "requests", len(latencies), REQUEST_UNIT)
        add(op, "failures", op_samples.failures, REQUEST_UNIT)
        add(op, "rate", len(latencies) / plan.duration_s, "ops/s")
        if latencies:
            for p, value in zip(PERCENTILES, percentiles(latencies, PERCENTILES), strict=True):
                add(op, f"latency_ms_p{p:g}", value, "ms")
            add(op, "latency_ms_mean", math.fsum(latencies) / len(latencies), "ms")
            add(op, "latency_ms_max", max(latencies), "ms")
        if op_samples.round_trips:
            calls = sum(op_samples.round_trips.values())
            mean = sum(k * v for k, v in op_samples.round_trips.items()) / calls
            # Only an operation whose every call cost the same is a deterministic count.
            exact = len(op_samples.round_trips) == 1
            add(op, "round_trips_per_op", mean, "round_trips" if exact else "round_trips_mean")
    # Completions in each whole second since Locust started, every second of the run (0 included).
    seconds = range(max((max(s.per_second) for s in samples.values() if s.per_second), default=-1) + 1)
    for op in sorted(samples):
        per_second = samples[op].per_second
        if per_second:
            for t in seconds:
                rows.append(
                    Row(
                        EXPERIMENT,
                        plan.label,
                        plan.row_params(op=op, t_s=t),
                        THROUGHPUT_METRIC,
                        float(per_second.get(t, 0)),
                        "ops/s",
                    )
                )
    return rows


# -- charts --------------------------------------------------------------------------


def render_charts(rows: Sequence[Row], out_dir: Path, title: str) -> list[str]:
    """Latency percentiles and throughput over time per operation, from the rows alone
    (Locust's own CSV and JSON files are kept for users, never read here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    latency = [r for r in rows if r.metric.startswith("latency_ms_p")]
    if latency:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ops = sorted({r.params for r in latency})
        for p in ops:
            points = sorted(
                (float(r.metric.removeprefix("latency_ms_p")), r.value) for r in latency if r.params == p
            )
            ax.plot([f"p{x:g}" for x, _ in points], [v for _, v in points], marker="o", label=_op_of(p))
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title(f"{title}: latency percentiles (float ms samples)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(charts_dir / f"latency_percentiles.{ext}")
        plt.close(fig)
        written.append("latency_percentiles.png")
    series = throughput_series(rows)
    if series:
        # One panel per operation: operations that run at the same rate (an arrival run's
        # enqueue, pickup and complete) would hide each other on one set of axes.
        fig, axes = plt.subplots(
            len(series), 1, figsize=(8, 1.2 + 1.5 * len(series)), sharex=True, squeeze=False
        )
        for ax, (op, counts) in zip(axes[:, 0], series.items(), strict=True):
            # Second t holds the operations completed in [t, t + 1): a step per second.
            xs = [t for t, _ in counts] + [counts[-1][0] + 1]
            ys = [v for _, v in counts] + [counts[-1][1]]
            ax.step(xs, ys, where="post", linewidth=1.2)
            ax.set_ylabel(op, rotation=0, ha="right", va="center", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        axes[0, 0].set_title(f"{title}: operations completed per second")
        axes[-1, 0].set_xlabel("seconds since qbench started Locust (whole seconds, every Locust process)")
        fig.supylabel("ops/s", fontsize=9)
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(charts_dir / f"throughput.{ext}")
        plt.close(fig)
        written.append("throughput.png")
    return written


def throughput_series(rows: Sequence[Row]) -> dict[str, list[tuple[int, float]]]:
    """Operation -> (second, ops completed in it), from the `ops_per_s` rows, in op order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.metric == THROUGHPUT_METRIC:
            p = parse_params(r.params)
            series.setdefault(p["op"], []).append((int(p["t_s"]), r.value))
    order = {op: i for i, op in enumerate(OP_ORDER)}
    return {op: sorted(series[op]) for op in sorted(series, key=lambda op: (order.get(op, len(order)), op))}


def _op_of(param_text: str) -> str:
    return parse_params(param_text).get("op", param_text)


def write_results(run: LoadRun, *, charts: bool = True) -> list[Row]:
    rows = rows_of(run)
    write_metrics(run.out_dir / METRICS_FILE, rows)
    title = f"{run.plan.workload.name} · {run.plan.label}"
    run.meta["charts"] = render_charts(rows, run.out_dir, title) if charts else []
    run.meta["job_census"] = run.census
    write_run(run.out_dir / RUN_FILE, run.meta)
    return rows


def summary(rows: Sequence[Row]) -> str:
    """A short table: per operation, rate and latency percentiles."""
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        table.setdefault(_op_of(r.params), {})[r.metric] = r.value
    header = (
        f"{'op':<16}{'requests':>10}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}{'rt/op':>8}"
    )
    lines = [header, "-" * len(header)]
    for op, m in table.items():
        if op == "all":
            continue
        nan = float("nan")
        lines.append(
            f"{op:<16}{m.get('requests', 0):>10.0f}{m.get('rate', 0):>10.0f}"
            f"{m.get('latency_ms_p50', nan):>10.3f}{m.get('latency_ms_p99', nan):>10.3f}"
            f"{m.get('latency_ms_p99.9', nan):>10.3f}{m.get('round_trips_per_op', nan):>8.2f}"
        )
    total = table.get("all", {})
    lines.append(
        f"jobs: {total.get('jobs_expected', 0):.0f} expected, {total.get('jobs_recorded', 0):.0f} in Redis, "
        f"{total.get('jobs_missing', 0):.0f} missing, {total.get('jobs_stranded', 0):.0f} stranded"
    )
    return "\n".join(lines)
