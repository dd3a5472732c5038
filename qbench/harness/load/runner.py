"""`qbench load SCENARIO --variant V | --driver X`: the one load runner.

A headless Locust run in its own processes, into tidy rows. A `--variant` run and a
`--driver` run take the same path (`run_load`, one `LoadPlan`, one `LoadRun`): they differ
only in the target that executes the users' operations, set up on the harness side by
`qbench.harness.load.targets` (`ReferenceSide`, `DriverSide`) and mirrored in the Locust
users (`qbench.scenarios.users`). The Locust processes run on this host (`--workers N`) or
on others (`--master` / `--worker`). `measure` writes the results folder through
`qbench.harness.results.runs.start_run`, the one run.json writer: ok, or failed with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from qbench.harness.infra.processes import stop, stop_all
from qbench.harness.infra.redis_server import die_with_parent, free_port
from qbench.harness.infra.telemetry import (
    DEFAULT_INTERVAL_S,
    TELEMETRY_FILE,
    telemetry_for_run,
    telemetry_meta,
)
from qbench.harness.load.report import write_load_report
from qbench.harness.load.targets import (
    Accounting,
    DriverPlan,
    DriverSide,
    DuringRun,
    LoadError,
    LoadInputError,
    ReferenceSide,
    api_server,
    produced_jobs,
    variant_spec,
)
from qbench.harness.results.rows import METRICS_FILE, Row, params, parse_params, run_metadata, write_metrics
from qbench.harness.results.runs import FAILED, RunFolder, new_run_dir, start_run
from qbench.queue_impl.config import Variant
from qbench.scenarios import settings as run_settings
from qbench.scenarios.progress import PREFIX as PROGRESS_PREFIX
from qbench.scenarios.recorder import (
    HIGHEST_US,
    SIGNIFICANT_DIGITS,
    OpSamples,
    RunSamples,
    merge_ops,
    read_results_file,
)
from qbench.scenarios.settings import RunSpec, without_credentials
from qbench.scenarios.workload import Workload

__all__ = ["DriverPlan", "LoadError", "LoadInputError", "api_server", "produced_jobs", "variant_spec"]

EXPERIMENT = "load"
LOCUSTFILE = Path(__file__).resolve().parents[2] / "scenarios" / "locustfile.py"
PACKAGE_PARENT = LOCUSTFILE.parents[2]
"""The folder holding the `qbench` package this process runs: first on the Locust child's path."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STOP_TIMEOUT_S = 10
"""Users finish their current task at the end (a consumer's longest blocking wait is 5 s),
so no job is left half-enqueued or held when the run stops."""
FINAL_REPORT_GRACE_S = 15
"""How long the master waits, after the stop timeout, for every worker's final report."""
LOCAL_WORKER_WAIT_S = 30
"""How long the master waits for the workers it started itself to connect."""
REMOTE_WORKER_WAIT_S = 300
"""How long a `--master` waits, by default, for `--expect-workers` workers started by hand
elsewhere (`--worker-wait`)."""
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
    """`results/<UTC time>-load-<scenario>` (`runs.new_run_dir`)."""
    return new_run_dir(f"load-{Path(scenario).stem}", now=now)


@dataclass(frozen=True, kw_only=True)
class MasterSpec:
    """A master that waits for workers started elsewhere (`qbench load --master`)."""

    bind: str = "127.0.0.1"
    port: int = DEFAULT_MASTER_PORT
    wait_s: float = REMOTE_WORKER_WAIT_S
    """How long it waits for every expected worker to connect before it gives up."""


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """One load run: a workload shape, its target (a variant of the reference queue, or a
    driver), and the run's own overrides. Exactly one of `variant` and `driver` is set."""

    workload: Workload
    """What Locust runs (with a driver: the scenario's producing users only)."""
    label: str
    users: int
    spawn_rate: float
    duration_s: float
    variant: Variant | None = None
    driver: DriverPlan | None = None
    workers: int = 0
    """Locust worker processes (0: one local process)."""
    master: MasterSpec | None = None
    """Set: the workers are started by hand (any host) and connect to this master; else
    qbench starts `workers` local ones on loopback."""

    def __post_init__(self) -> None:
        if (self.variant is None) == (self.driver is None):
            raise ValueError("a load plan names exactly one of a variant and a driver")

    def row_params(self, **extra: object) -> str:
        consumers = {} if self.driver is None else {"consumers": self.driver.consumers}
        return params(
            scenario=self.workload.name,
            users=self.users,
            **consumers,
            duration_s=f"{self.duration_s:g}",
            workers=self.workers,
            **extra,
        )


@dataclass
class LoadRun:
    """What a finished run left behind, before it becomes rows."""

    plan: LoadPlan
    out_dir: Path
    locust_stats: list[dict[str, Any]]
    samples: dict[str, OpSamples]
    """The users' operations, merged with those the target measured (a driver's pickups)."""
    jobs: Accounting
    locust_returncode: int
    meta: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per Locust worker, as the master saw it: reports received, final or not, ops per operation."""

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.samples.values())

    @property
    def jobs_not_picked_up(self) -> int:
        """Jobs enqueued that no driver worker reported (0 without workers)."""
        if self.jobs.jobs_picked_up is None:
            return 0
        return max(0, self.jobs.jobs_expected - self.jobs.jobs_picked_up)

    @property
    def lost(self) -> int:
        """Jobs lost: missing, unexplained and stranded in the reference queue (see
        `job_gaps`), or not picked up by a driver's workers. 0 on a sound run."""
        if self.jobs.node_loss is not None:
            return self.jobs.node_loss.lost
        census = self.jobs.census
        if census is None:
            return self.jobs_not_picked_up
        return sum(job_gaps(self)) + census["stranded"]

    def problems(self) -> list[str]:
        """Why the run failed, one line each ([] for a sound run)."""
        problems: list[str] = []
        if self.jobs.node_loss is not None:
            # One line: the dead master and its count (Locust's exit 1 is these failures).
            return [self.jobs.node_loss.line(self.failures)]
        if self.failures or self.lost:
            if self.plan.driver is None:
                problems.append(f"{self.failures} failed request(s), {self.lost} job(s) missing or stranded")
            else:
                problems.append(
                    f"driver {self.plan.driver.spec.name}: {self.failures} failed request(s), "
                    f"{self.lost} job(s) not picked up within {self.plan.driver.drain_s:g} s after the run"
                )
        if self.locust_returncode != 0:
            problems.append(
                f"Locust exited with {self.locust_returncode} (see {self.out_dir / 'locust.log'})"
            )
        return problems


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
    account for its jobs. A cluster URL is accepted only with `allow_cluster` (the caller
    can measure one); a driver takes one server. LoadError when Locust left no results or
    the master reports an error (a worker lost or never connected, a worker started for
    another scenario or target); LoadInputError for a Redis the target cannot use."""
    load_before = os.getloadavg()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TELEMETRY_FILE).unlink(missing_ok=True)  # a previous run's is not this one's
    started = time.time()
    side: ReferenceSide | DriverSide
    if plan.driver is not None:
        side = DriverSide(plan.driver, plan.workload, redis_url=redis_url)
    else:
        assert plan.variant is not None
        side = ReferenceSide(
            plan.variant,
            plan.workload,
            redis_url=redis_url,
            cluster=cluster,
            allow_cluster=allow_cluster,
            during=during,
        )
    with side.server(out_dir) as (url, info):
        prefilled = side.prefill()
        if prefilled:
            progress(f"prefilled {prefilled} jobs{side.through}")
        spec = RunSpec(
            workload=plan.workload,
            **side.spec_target(),
            redis_url=without_credentials(url),
            started_at=time.time(),
            duration_s=plan.duration_s,
            progress_every_s=PROGRESS_EVERY_S,
        )
        # Locust's processes, the agents, the API and any worker are children: sampled too.
        with (
            telemetry_for_run(
                info.node_urls(),  # a cluster: every primary
                out_dir,
                enabled=telemetry_interval_s > 0,
                interval_s=telemetry_interval_s,
                follow_children=True,
            ) as telemetry,
            side.running(telemetry),
        ):
            returncode = run_locust(
                plan,
                out_dir,
                host=side.host,
                env=locust_env(spec, url, out_dir),
                master_spec=plan.master,
                progress=progress,
            )
            results = read_results(out_dir, returncode)
            side.after_users(results.ops, prefilled, spec.started_at)
        jobs = side.account(results.ops, prefilled)
    meta = run_metadata(
        server=info.as_dict(),
        mode="load",
        extra={
            "scenario": plan.workload.name,
            "workload": plan.workload.as_dict(),
            "variant": plan.label,
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
            "latency_histogram": HISTOGRAM_META,
            "telemetry": telemetry_meta(telemetry, interval_s=telemetry_interval_s),
            **side.meta(),
        },
    )
    return LoadRun(
        plan=plan,
        out_dir=out_dir,
        locust_stats=read_locust_stats(out_dir, returncode),
        samples=merge_ops([results.ops, jobs.samples]),
        jobs=jobs,
        locust_returncode=returncode,
        meta=meta,
        workers=results.workers,
    )


@dataclass
class Outcome:
    """A load run written into its folder: the run (None when it left no results), its
    rows, and why it failed ([] when it did not)."""

    run: LoadRun | None
    rows: list[Row]
    problems: list[str]


def measure(
    plan: LoadPlan,
    out_dir: Path,
    *,
    charts: bool = True,
    meta: Mapping[str, Any] | None = None,
    finish: Callable[[LoadRun], list[str]] | None = None,
    **options: Any,
) -> Outcome:
    """Run `plan` into `out_dir` and write the folder (metrics.csv, run.json, charts,
    REPORT.md): an earlier run's files go first, run.json ends ok, or failed with the
    reason (Locust's error, failed requests, lost jobs; `finish`'s own problems, e.g. a
    profiler that wrote nothing). `options` go to `run_load`; `meta` joins run.json."""
    with start_run(out_dir, "load", {"mode": "load"}) as folder:
        try:
            run = run_load(plan, out_dir, **options)
        except LoadError as exc:
            folder.finish(FAILED, reason=str(exc))
            return Outcome(None, [], [str(exc)])
        run.meta.update(meta or {})
        rows = write_results(run, folder, charts=charts)
        problems = run.problems() + (finish(run) if finish is not None else [])
        if problems:
            folder.finish(FAILED, reason="; ".join(problems))
        return Outcome(run, rows, problems)


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
    plan: LoadPlan,
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
    wait_workers_s, port = 0.0, 0
    if plan.workers:
        if master_spec is None:
            bind, port, wait_workers_s = "127.0.0.1", free_port(), LOCAL_WORKER_WAIT_S
        else:
            bind, port, wait_workers_s = master_spec.bind, master_spec.port, master_spec.wait_s
        # qbench's master waits itself (progress lines, then one error naming how many came):
        # Locust's own bound ends the process without its `quitting` event, and in silence.
        env = {**env, run_settings.ENV_WORKER_WAIT_S: f"{wait_workers_s:g}"}
        master += [
            "--master",
            "--master-bind-host",
            bind,
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(plan.workers),
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
            # The master waited for each worker's final report; they are on their way out.
            stop_all(workers, grace_s=STOP_TIMEOUT_S + 5, ask=None)
        finally:
            stop_all([master_proc, *workers])
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
        stop(proc)


def _last_log_line(out_dir: Path) -> str:
    log = out_dir / "locust.log"
    lines = (
        [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if log.exists()
        else []
    )
    return lines[-1].strip() if lines else "no log"


# -- rows ----------------------------------------------------------------------------


def rows_of(run: LoadRun) -> list[Row]:
    """The samples' rows plus the run's accounting of its jobs: the reference queue's census
    (expected, recorded, completed, cut short, and the three that must be 0: missing,
    unexplained, stranded), or a driver's (expected, picked up, not picked up, and the
    Redis commands and round trips per job counted at the server)."""
    rows = sample_rows(run.plan, run.samples)
    jobs = run.jobs

    def add(metric: str, value: float, unit: str) -> None:
        plan = run.plan
        rows.append(Row(EXPERIMENT, plan.label, plan.row_params(op="all"), metric, float(value), unit))

    add("jobs_expected", jobs.jobs_expected, REQUEST_UNIT)
    if jobs.node_loss is not None:  # a cluster master died: no census, the loss counted instead
        add("jobs_accounted", jobs.node_loss.accounted, REQUEST_UNIT)
        add("jobs_cut_short", jobs.jobs_cut_short, REQUEST_UNIT)
        add("jobs_lost_with_node", jobs.node_loss.lost, "jobs")
        return rows
    if jobs.census is not None:
        add("jobs_recorded", jobs.census["records"], REQUEST_UNIT)
        add("jobs_completed", jobs.census["completed"], REQUEST_UNIT)
        add("jobs_cut_short", jobs.jobs_cut_short, REQUEST_UNIT)  # varies run to run: not held exact
        # All three must be 0 on every run: each is a lost job (see `LoadRun.lost`).
        missing, unexplained = job_gaps(run)
        add("jobs_missing", missing, "jobs")
        add("jobs_unexplained", unexplained, "jobs")
        add("jobs_stranded", jobs.census["stranded"], "jobs")
        return rows
    if jobs.jobs_picked_up is not None:
        add("jobs_picked_up", jobs.jobs_picked_up, REQUEST_UNIT)
        # Must be 0: a job enqueued and never reported by a worker within the drain window.
        add("jobs_not_picked_up", run.jobs_not_picked_up, "jobs")
    if jobs.jobs_expected and jobs.commands is not None and jobs.round_trips is not None:
        # Counted at Redis over the whole run (users, workers, drain); round trips are its
        # read events (see qbench.harness.peers.runner.Snapshot).
        add("commands_per_job", jobs.commands / jobs.jobs_expected, "commands/job")
        add("round_trips_per_job", jobs.round_trips / jobs.jobs_expected, "round_trips/job")
    return rows


def job_gaps(run: LoadRun) -> tuple[int, int]:
    """(missing, unexplained): acknowledged jobs without a record, and records that neither
    an acknowledged enqueue nor one cut short at stop accounts for. A cut-short enqueue
    may have reached Redis or not, so its job is expected at most, never required."""
    census = run.jobs.census or {"records": 0}
    records = census["records"]
    missing = max(0, run.jobs.jobs_expected - records)
    unexplained = max(0, records - run.jobs.jobs_expected - run.jobs.jobs_cut_short)
    return missing, unexplained


def sample_rows(plan: LoadPlan, samples: dict[str, OpSamples]) -> list[Row]:
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


def write_results(run: LoadRun, folder: RunFolder, *, charts: bool = True) -> list[Row]:
    """metrics.csv, the charts (from the rows), run.json (through the run's `folder`, still
    running: the caller finishes it) and REPORT.md."""
    rows = rows_of(run)
    write_metrics(run.out_dir / METRICS_FILE, rows)
    title = f"{run.plan.workload.name} · {run.plan.label}"
    run.meta["charts"] = render_charts(rows, run.out_dir, title) if charts else []
    jobs = run.jobs
    if jobs.census is not None:
        run.meta["job_census"] = jobs.census
    elif jobs.node_loss is not None:
        run.meta["node_loss"] = jobs.node_loss.as_dict()
    else:
        assert run.plan.driver is not None
        run.meta["jobs"] = {
            "expected": jobs.jobs_expected,
            "picked_up": jobs.jobs_picked_up or 0,
            "not_picked_up": run.jobs_not_picked_up,
            "drain_s": run.plan.driver.drain_s,
        }
    folder.meta.update(run.meta)
    folder.checkpoint()
    write_load_report(run.out_dir, rows, folder.meta, charts=charts)  # REPORT.md, telemetry charts
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
    count = {
        metric: f"{total.get(metric, 0):.0f}"
        for metric in ("expected", "recorded", "missing", "unexplained", "stranded", "cut_short")
        for metric in (f"jobs_{metric}",)
    }
    if "jobs_lost_with_node" in total:  # a cluster master died mid-run
        lines.append(
            f"jobs: {count['jobs_expected']} acknowledged, {total.get('jobs_accounted', 0):.0f} found on the "
            f"surviving shards, {total['jobs_lost_with_node']:.0f} lost with the dead master"
        )
    elif "jobs_recorded" in total:  # the reference queue's census
        lines.append(
            f"jobs: {count['jobs_expected']} expected, {count['jobs_recorded']} in Redis, "
            f"{count['jobs_missing']} missing, {count['jobs_unexplained']} unexplained, "
            f"{count['jobs_stranded']} stranded, {count['jobs_cut_short']} cut short"
        )
    else:  # a driver's workers' pickups
        lines.append(
            f"jobs: {total.get('jobs_expected', 0):.0f} enqueued, "
            f"{total.get('jobs_picked_up', 0):.0f} picked up by the workers"
            + (
                f", {total['jobs_not_picked_up']:.0f} not picked up"
                if "jobs_not_picked_up" in total
                else " (no consumers)"
            )
        )
    return "\n".join(lines)
