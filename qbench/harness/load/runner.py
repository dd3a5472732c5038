"""`qbench load SCENARIO --variant V`: a headless Locust run in its own processes, into tidy rows."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from qbench.harness.infra.census import take_census
from qbench.harness.infra.measured import load_scripts, unique_namespace
from qbench.harness.infra.redis_server import ProvisionedRedis, die_with_parent, free_port, redis_for_run
from qbench.harness.infra.telemetry import (
    DEFAULT_INTERVAL_S,
    TELEMETRY_FILE,
    telemetry_for_run,
    telemetry_meta,
)
from qbench.harness.load.report import write_load_report
from qbench.harness.results.rows import (
    METRICS_FILE,
    RUN_FILE,
    Row,
    params,
    parse_params,
    run_metadata,
    write_metrics,
    write_run,
)
from qbench.queue_impl.config import PRESETS, Variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from qbench.scenarios import settings as run_settings
from qbench.scenarios.progress import PREFIX as PROGRESS_PREFIX
from qbench.scenarios.recorder import (
    HIGHEST_US,
    HISTOGRAM_NOTE,
    SIGNIFICANT_DIGITS,
    OpSamples,
    RunSamples,
    read_results_file,
)
from qbench.scenarios.settings import RunSpec, without_credentials
from qbench.scenarios.workload import Workload

EXPERIMENT = "load"
LOCUSTFILE = Path(__file__).resolve().parents[2] / "scenarios" / "locustfile.py"
PACKAGE_PARENT = LOCUSTFILE.parents[2]
"""The folder holding the `qbench` package this process runs: first on the Locust child's path."""
DEFAULT_OUT_ROOT = Path("results")
"""Where a run without `--out` goes: a new `<UTC time>-load-<scenario>` folder, never the
committed runs under results/load/ (`make load-runs` names those with --out)."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STOP_TIMEOUT_S = 10
"""Users finish their current task at the end (a consumer's longest blocking wait is 5 s),
so no job is left half-enqueued or held when the run stops."""
FINAL_REPORT_GRACE_S = 15
"""How long the master waits, after the stop timeout, for every worker's final report."""
LOCAL_WORKER_WAIT_S = 30
"""How long the master waits for the workers it started itself to connect."""
REMOTE_WORKER_WAIT_S = 300
"""How long a `--master` waits for `--expect-workers` workers started by hand, elsewhere."""
DEFAULT_MASTER_PORT = 5557
"""Locust's own default."""
RESULTS_FILE = "latency_histograms.json"
"""The master's merged histograms and counters (and per worker: reports, final, ops)."""
HISTOGRAM_META = {
    "unit": "us",
    "significant_digits": SIGNIFICANT_DIGITS,
    "highest_us": HIGHEST_US,
    "file": RESULTS_FILE,
}
"""run.json's `latency_histogram`: what the merged histograms hold and where."""
PROGRESS_EVERY_S = 5.0
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


def default_out_dir(scenario: str, *, now: float | None = None) -> Path:
    """`results/<UTC time>-load-<scenario>`: a new folder per run (git-ignored), so a scratch
    run never lands among, or overwrites, the committed runs."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return DEFAULT_OUT_ROOT / f"{stamp}-load-{Path(scenario).stem}"


class LoadError(RuntimeError):
    """A load run that did not produce results (one line)."""


@dataclass(frozen=True, kw_only=True)
class MasterSpec:
    """A master that waits for workers started elsewhere (`qbench load --master`)."""

    bind: str = "127.0.0.1"
    port: int = DEFAULT_MASTER_PORT


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
    master: MasterSpec | None = None
    """Set: the workers are started by hand (any host) and connect to this master; else
    qbench starts `workers` local ones on loopback."""

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
    (`qbench.harness.load.driver_load.DriverLoadPlan`)."""

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
    jobs_cut_short: int = 0
    """Jobs whose enqueue (or submit) was cut short when the users stopped: each may exist or not."""
    meta: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per Locust worker, as the master saw it: reports received, final or not, ops per operation."""

    @property
    def lost(self) -> int:
        """Missing, unexplained and stranded jobs together (see `job_gaps`): 0 on a sound run."""
        return sum(job_gaps(self)) + self.census["stranded"]


DuringRun = Callable[[ProvisionedRedis, str], AbstractContextManager[object]]
"""Called with (server, namespace) to run something alongside the users (e.g. a profiled worker)."""


def run_load(
    plan: LoadPlan,
    out_dir: Path,
    *,
    redis_url: str | None = None,
    during: DuringRun | None = None,
    progress: Callable[[str], None] = print,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
    cluster: bool = False,
    allow_cluster: bool = False,
) -> LoadRun:
    """Run `plan` (Locust in child processes) against `redis_url` (else REDIS_URL, else a
    Redis qbench starts; `cluster`: a Redis Cluster, qbench's own when no URL is given) and
    take the census. A cluster URL is accepted only with `allow_cluster` (the caller can
    measure one). LoadError when Locust left no results or the master reports an error (a
    worker's final report missing, a worker started for another scenario or variant)."""
    load_before = os.getloadavg()
    (out_dir / TELEMETRY_FILE).unlink(missing_ok=True)  # a previous run's is not this one's
    started = time.time()
    with redis_for_run(redis_url, cluster=cluster, allow_cluster=allow_cluster) as server:
        namespace = unique_namespace(f"load-{plan.workload.name}")
        client = make_client(server.url, plan.variant)
        queue = RedisQueue(client, plan.variant, namespace=namespace, consumer="qbench-load")
        try:
            queue.check_server()
            load_scripts(client)  # no user's first call pays a NOSCRIPT miss
            prefilled = prefill(server.url, plan, namespace)
            if prefilled:
                progress(f"prefilled {prefilled} jobs")
            with contextlib.ExitStack() as stack:
                # Locust's processes, the API and a profiled worker are children: sampled too.
                telemetry = stack.enter_context(
                    telemetry_for_run(
                        server.info.node_urls(),  # a cluster: every primary
                        out_dir,
                        enabled=telemetry_interval_s > 0,
                        interval_s=telemetry_interval_s,
                        follow_children=True,
                    )
                )
                host = "http://127.0.0.1"
                if "http_submit" in plan.workload.user_mix:
                    host = stack.enter_context(api_server(server.url, plan.variant, namespace))
                if during is not None:
                    stack.enter_context(during(server, namespace))
                returncode = run_locust(
                    plan,
                    out_dir,
                    host=host,
                    env=locust_env(run_spec(plan, server.url, namespace), server.url, out_dir),
                    master_spec=plan.master,
                    progress=progress,
                )
            results = read_results(out_dir, returncode)
            samples = results.ops
            census = take_census(queue).counts()
            produced, jobs_cut_short = produced_jobs(samples, burst_size=plan.workload.burst_size)
            jobs_expected = prefilled + produced
        finally:
            queue.cleanup()
            close_client(client)
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
                "locust_master": None
                if plan.master is None
                else {"bind": plan.master.bind, "port": plan.master.port},
                "locust_worker_reports": results.workers,
                "locust_returncode": returncode,
                "load_avg_before": load_before,
                "load_avg_after": os.getloadavg(),
                "wall_s": round(time.time() - started, 1),
                "latency_note": HISTOGRAM_NOTE + " (Locust's own percentiles are rounded to whole ms)",
                "latency_histogram": HISTOGRAM_META,
                "telemetry": telemetry_meta(telemetry, interval_s=telemetry_interval_s),
            },
        )
    return LoadRun(
        plan=plan,
        out_dir=out_dir,
        locust_stats=read_locust_stats(out_dir, returncode),
        samples=samples,
        census=census,
        jobs_expected=jobs_expected,
        locust_returncode=returncode,
        jobs_cut_short=jobs_cut_short,
        meta=meta,
        workers=results.workers,
    )


def read_locust_stats(out_dir: Path, returncode: int) -> list[dict[str, Any]]:
    """Locust's own stats (`locust.json`); LoadError when Locust wrote none."""
    stats_path = out_dir / "locust.json"
    if not stats_path.is_file():
        raise LoadError(f"Locust wrote no stats (exit {returncode}): {_last_log_line(out_dir)}")
    stats: list[dict[str, Any]] = json.loads(stats_path.read_text())
    return stats


def read_results(out_dir: Path, returncode: int) -> RunSamples:
    """The merged results the master (or the local process) wrote; LoadError when there
    are none, they are unreadable, or they record an error."""
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        raise LoadError(f"Locust wrote no results (exit {returncode}): {_last_log_line(out_dir)}")
    try:
        results = read_results_file(path)
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{path}: unreadable results ({exc})") from None
    if results.errors:
        more = f" (and {len(results.errors) - 1} more, see locust.log)" if len(results.errors) > 1 else ""
        raise LoadError(results.errors[0] + more)
    return results


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
        close_client(client)
    return total


def run_spec(plan: LoadPlan, url: str, namespace: str) -> RunSpec:
    """What every Locust process of the run must agree on (the master forwards it to its
    workers; the Redis URL goes without its credentials)."""
    return RunSpec(
        workload=plan.workload,
        variant=variant_spec(plan.variant),
        redis_url=without_credentials(url),
        namespace=namespace,
        started_at=time.time(),
        duration_s=plan.duration_s,
        progress_every_s=PROGRESS_EVERY_S,
    )


def locust_env(spec: RunSpec, url: str, out_dir: Path) -> dict[str, str]:
    """The environment of the run's Locust processes: the run spec (the plan may override
    users or duration: Locust's processes read this exact shape), this host's Redis URL
    (credentials included) and where the merged results go."""
    env = _with_pythonpath(dict(os.environ))
    for name in (run_settings.ENV_WORKLOAD, run_settings.ENV_VARIANT, run_settings.ENV_MASTER_HOST):
        env.pop(name, None)
    env.update(
        {
            run_settings.ENV_RUN: spec.to_json(),
            run_settings.ENV_REDIS_URL: url,
            run_settings.ENV_RESULTS_FILE: str((out_dir / RESULTS_FILE).resolve()),
        }
    )
    return env


def _with_pythonpath(env: dict[str, str]) -> dict[str, str]:
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    return env


def variant_spec(variant: Variant) -> str:
    """A `preset+toggle=value,...` string that `parse_variant` turns back into `variant`."""
    if variant.name not in PRESETS:
        raise ValueError(f"variant {variant.name!r} is not based on a preset: build it with parse_variant")
    return variant.label()


def locust_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--loglevel",
        os.environ.get("QBENCH_LOCUST_LOGLEVEL", "WARNING"),
    ]


def run_locust(
    plan: LocustPlan,
    out_dir: Path,
    *,
    host: str,
    env: dict[str, str],
    master_spec: MasterSpec | None = None,
    progress: Callable[[str], None] = print,
) -> int:
    """Locust headless in child processes (its gevent patching never touches this one).

    The master (or the one local process) runs the clock and prints a progress line
    every few seconds, relayed to `progress`; everything else it says goes to
    `locust.log`. With `plan.workers` and no `master_spec`, the workers are local
    processes dialling a master on a free loopback port; with `master_spec`, the
    master listens where it says and waits for `plan.workers` workers started elsewhere.
    Returns the master's exit code.
    """
    master = [
        *locust_command(),
        "--headless",
        "--users",
        str(plan.users),
        "--spawn-rate",
        f"{plan.spawn_rate:g}",
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
    # No --run-time: the locustfile's clock ends the run and waits for every worker's final report.
    workers: list[subprocess.Popen[bytes]] = []
    wait_workers_s, port = 0, 0
    if plan.workers:
        if master_spec is None:
            bind, port, wait_workers_s = "127.0.0.1", free_port(), LOCAL_WORKER_WAIT_S
        else:
            bind, port, wait_workers_s = master_spec.bind, master_spec.port, REMOTE_WORKER_WAIT_S
        master += [
            "--master",
            "--master-bind-host",
            bind,
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(plan.workers),
            "--expect-workers-max-wait",
            str(wait_workers_s),
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("locust*"), out_dir / RESULTS_FILE]:
        stale.unlink(missing_ok=True)  # a failed rerun must not pass off old results as its own
    timeout_s = wait_workers_s + plan.duration_s + STOP_TIMEOUT_S + FINAL_REPORT_GRACE_S + 60
    log_path = out_dir / "locust.log"
    log_path.write_bytes(b"")
    # Append mode: the master's stderr and the relayed stdout lines share the log.
    with log_path.open("ab", buffering=0) as log:
        # Locust's processes die with this one (SIGTERM, on which Locust shuts down), even on SIGKILL.
        master_proc = subprocess.Popen(
            master,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        relay = threading.Thread(target=_relay, args=(master_proc.stdout, log, progress), daemon=True)
        try:
            if master_spec is None:
                worker_env = {**env, run_settings.ENV_MASTER_HOST: "127.0.0.1"}
                worker_env.pop(run_settings.ENV_RESULTS_FILE, None)
                for _ in range(plan.workers):
                    worker_cmd = [*locust_command(), "--worker", "--master-host", "127.0.0.1"]
                    worker_cmd += ["--master-port", str(port)]
                    workers.append(
                        subprocess.Popen(
                            worker_cmd,
                            stdout=log,
                            stderr=log,
                            env=worker_env,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent,
                        )
                    )
            # Started after the last fork: a preexec_fn is not safe beside other threads.
            relay.start()
            try:
                returncode = master_proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise LoadError(f"Locust did not finish within {timeout_s:g} s (see {log_path})") from None
            for worker in workers:
                # The master waited for each worker's final report; they are on their way out.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=STOP_TIMEOUT_S + 5)
        finally:
            for proc in (master_proc, *workers):
                _stop(proc)
            if relay.is_alive():
                relay.join(timeout=5)
            if master_proc.stdout:
                master_proc.stdout.close()
    return returncode


def _relay(stream: IO[bytes] | None, log: IO[bytes], progress: Callable[[str], None]) -> None:
    """Copy the master's stdout into the log, and hand its progress lines to `progress`."""
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        log.write(raw)
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith(PROGRESS_PREFIX):
            progress(line.removeprefix(PROGRESS_PREFIX))


def run_worker(
    *,
    scenario: str,
    variant: Variant | None,
    master_host: str,
    master_port: int,
    redis_url: str | None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """A Locust worker only (`qbench load --worker`): it dials the master, takes the run
    spec from it and runs its share of the users, with no results of its own. Its output
    goes to this process's stdout and stderr. Returns Locust's exit code.

    It needs no disk in common with the master. Locust bounds every wait: without a
    master it gives up after 60 connection attempts 5 s apart; a master that stops
    answering is given up after 60 s without heartbeats.
    """
    env = _with_pythonpath(dict(os.environ))
    for name in (run_settings.ENV_RUN, run_settings.ENV_RESULTS_FILE, run_settings.ENV_REDIS_URL):
        env.pop(name, None)
    env.update({run_settings.ENV_WORKLOAD: scenario, run_settings.ENV_MASTER_HOST: master_host})
    if variant is not None:
        env[run_settings.ENV_VARIANT] = variant_spec(variant)
    env.update(extra_env or {})
    if redis_url:
        env[run_settings.ENV_REDIS_URL] = redis_url
    cmd = [*locust_command(), "--worker", "--master-host", master_host, "--master-port", str(master_port)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        return proc.wait()
    finally:
        _stop(proc)


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
def api_server(url: str, variant: Variant, namespace: str, *, processes: int = 1) -> Iterator[str]:
    """`python -m qbench.queue_impl.api` (`processes` uvicorn workers) on a free loopback port;
    yields its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "qbench.queue_impl.api",
        "--port",
        str(port),
        "--variant",
        variant_spec(variant),
        "--redis-url",
        url,
        "--namespace",
        namespace,
        "--processes",
        str(processes),
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
    add("all", "jobs_cut_short", run.jobs_cut_short, REQUEST_UNIT)  # varies run to run: not held exact
    # All three must be 0 on every run: each is a lost job (see `LoadRun.lost`).
    missing, unexplained = job_gaps(run)
    add("all", "jobs_missing", missing, "jobs")
    add("all", "jobs_unexplained", unexplained, "jobs")
    add("all", "jobs_stranded", run.census["stranded"], "jobs")
    return rows


def produced_jobs(samples: Mapping[str, OpSamples], *, burst_size: int) -> tuple[int, int]:
    """(jobs whose enqueue was acknowledged, jobs whose enqueue was cut short at stop)."""
    sizes = {"enqueue": 1, "submit": 1, "enqueue_burst": burst_size}
    done = sum(samples[op].count * size for op, size in sizes.items() if op in samples)
    cut = sum(samples[op].cut_short * size for op, size in sizes.items() if op in samples)
    return done, cut


def job_gaps(run: LoadRun) -> tuple[int, int]:
    """(missing, unexplained): acknowledged jobs without a record, and records that neither
    an acknowledged enqueue nor one cut short at stop accounts for. A cut-short enqueue
    may have reached Redis or not, so its job is expected at most, never required."""
    records = run.census["records"]
    missing = max(0, run.jobs_expected - records)
    unexplained = max(0, records - run.jobs_expected - run.jobs_cut_short)
    return missing, unexplained


def sample_rows(plan: LocustPlan, samples: dict[str, OpSamples]) -> list[Row]:
    """Per operation: requests, failures, rate, latency percentiles, round trips, and the
    operations completed in each second of the run."""
    rows: list[Row] = []

    def add(op: str, metric: str, value: float, unit: str) -> None:
        rows.append(Row(EXPERIMENT, plan.label, plan.row_params(op=op), metric, float(value), unit))

    for op in sorted(samples):
        op_samples = samples[op]
        add(op, "requests", op_samples.count, REQUEST_UNIT)
        add(op, "failures", op_samples.failures, REQUEST_UNIT)
        add(op, "rate", op_samples.count / plan.duration_s, "ops/s")
        if op_samples.count:
            # The histogram's value at each percentile (3 significant digits), not the raw
            # samples' interpolated one: qbench.harness.results.stats is for raw samples.
            for p, value in zip(PERCENTILES, op_samples.percentiles_ms(PERCENTILES), strict=True):
                add(op, f"latency_ms_p{p:g}", value, "ms")
            add(op, "latency_ms_mean", op_samples.mean_ms(), "ms")
            add(op, "latency_ms_max", op_samples.max_ms(), "ms")
        if op_samples.out_of_range:
            add(op, "latency_out_of_range", op_samples.out_of_range, REQUEST_UNIT)
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
        ax.set_title(f"{title}: latency percentiles (HDR histogram, 1 µs resolution)")
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
    write_load_report(run.out_dir, rows, run.meta, charts=charts)  # REPORT.md, telemetry charts
    return rows


def _cell(value: float | None, width: int, decimals: int) -> str:
    """A figure, or "-" where the run has none (no samples; round trips a target cannot count)."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{decimals}f}"


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
        lines.append(
            f"{op:<16}{m.get('requests', 0):>10.0f}{m.get('rate', 0):>10.0f}"
            f"{_cell(m.get('latency_ms_p50'), 10, 3)}{_cell(m.get('latency_ms_p99'), 10, 3)}"
            f"{_cell(m.get('latency_ms_p99.9'), 10, 3)}{_cell(m.get('round_trips_per_op'), 8, 2)}"
        )
    total = table.get("all", {})
    lines.append(
        f"jobs: {total.get('jobs_expected', 0):.0f} expected, {total.get('jobs_recorded', 0):.0f} in Redis, "
        f"{total.get('jobs_missing', 0):.0f} missing, {total.get('jobs_unexplained', 0):.0f} unexplained, "
        f"{total.get('jobs_stranded', 0):.0f} stranded, {total.get('jobs_cut_short', 0):.0f} cut short"
    )
    return "\n".join(lines)
