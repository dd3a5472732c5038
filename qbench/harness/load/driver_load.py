"""`qbench load SCENARIO --driver X`: Locust users produce through a driver, and the driver's
own workers (started as `qbench peers` starts them) consume; pickup latency from the sink.

Locust runs as for the reference queue (`qbench.harness.load.runner.run_locust`): the run spec
carries the driver (`RunSpec.driver`), the master runs the clock and prints progress, and
the users' HDR histograms come back in the results file. The workers' pickups, read from
the sink after the run, are recorded into histograms of their own and merged with the
users' before the rows are made (`sample_rows`, as for the reference queue). Its Locust
workers run on this host (`--workers N`) or on others (`--master`; each worker host
builds the driver's environment itself, `qbench load --worker --driver X`).

The scenario's producing users (producer, burst, arrival) become users that call the
driver's producer agent; its consumer users become the driver's workers, with as many
concurrent jobs as there were consumers. A scenario that needs what the driver lacks
(bulk enqueue for bursts, priorities for a priority mix, Locust users that dequeue, the
HTTP API) is refused in one line before anything starts. Every job a user enqueued must be
picked up by the workers within the drain window after the run, or the run fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from qbench.driver import Op
from qbench.harness.infra.counting import stats_delta
from qbench.harness.infra.redis_server import ServerInfo, describe, provision
from qbench.harness.infra.telemetry import (
    DEFAULT_INTERVAL_S,
    TELEMETRY_FILE,
    telemetry_for_run,
    telemetry_meta,
)
from qbench.harness.load.report import write_load_report
from qbench.harness.load.runner import (
    EXPERIMENT,
    HISTOGRAM_META,
    PROGRESS_EVERY_S,
    REQUEST_UNIT,
    LoadError,
    MasterSpec,
    locust_env,
    read_locust_stats,
    read_results,
    render_charts,
    run_locust,
    sample_rows,
)
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root, python_path
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.peers.runner import (
    DriverFailedError,
    DriverProcess,
    PickupSink,
    ServerProbe,
    round_trips,
)
from qbench.harness.peers.suite import side_sink
from qbench.harness.results.rows import (
    METRICS_FILE,
    RUN_FILE,
    Row,
    params,
    run_metadata,
    write_metrics,
    write_run,
)
from qbench.loader import module_source
from qbench.queue_impl.connection import redact_url
from qbench.scenarios.recorder import HISTOGRAM_NOTE, OpSamples, Recorder, merge_ops
from qbench.scenarios.settings import DriverRun, RunSpec, without_credentials
from qbench.scenarios.workload import USER_KIND_TABLE, Workload, jobs_enqueued

DRAIN_S = 60.0
"""After Locust stops, how long the workers get to pick up what is still queued."""
PREFILL_BATCH = 1000
PRODUCERS_LOG = "driver-producers.log"
"""In the results dir: the stderr of every user's producer agent."""


class DriverLoadInputError(ValueError):
    """A scenario the driver cannot play, or a Redis it cannot use (one line; exit 2)."""


@dataclass(frozen=True, kw_only=True)
class DriverLoadPlan:
    """A load run through a driver: the scenario's producing users, the driver's workers."""

    workload: Workload
    """The scenario with its producing users only (what Locust runs)."""
    spec: DriverSpec
    label: str
    users: int
    """Locust users: the scenario's producing users."""
    consumers: int
    """Jobs the driver's workers run at once: the scenario's consumer users (0: no workers)."""
    spawn_rate: float
    duration_s: float
    workers: int = 0
    """Locust worker processes (0: one local process)."""
    priorities: bool = False
    """True when users send each job with a priority drawn from the workload's mix."""
    drain_s: float = DRAIN_S
    master: MasterSpec | None = None
    """Set: Locust workers started by hand (any host, each building the driver's environment
    itself) connect to this master; else qbench starts `workers` local ones."""

    def row_params(self, **extra: object) -> str:
        return params(
            scenario=self.workload.name,
            users=self.users,
            consumers=self.consumers,
            duration_s=f"{self.duration_s:g}",
            workers=self.workers,
            **extra,
        )


def plan_driver_load(
    workload: Workload,
    spec: DriverSpec,
    *,
    label: str | None = None,
    users: int,
    spawn_rate: float,
    duration_s: float,
    workers: int = 0,
    master: MasterSpec | None = None,
) -> DriverLoadPlan:
    """Split the scenario's `users` into producing users and driver workers, and check the
    driver can play it; DriverLoadInputError (one line) when it cannot."""
    name, mix = workload.name, workload.user_mix
    ops = set(spec.cls.operations)
    active = {kind: USER_KIND_TABLE[kind] for kind, weight in mix.items() if weight > 0}
    for kind in active.values():
        if kind.driver_role not in ("calls", "workers"):
            raise DriverLoadInputError(f"scenario {name} {kind.driver_role}; driver {spec.name} has none")
    if not any(kind.driver_role == "calls" for kind in active.values()):
        raise DriverLoadInputError(
            f"scenario {name} needs Locust users that dequeue; with --driver, driver {spec.name}'s own "
            "workers consume, so use a scenario with producing users ("
            + ", ".join(k for k, v in USER_KIND_TABLE.items() if v.driver_role == "calls")
            + ")"
        )
    for kind in active.values():
        if kind.driver_op is not None and kind.driver_op not in ops:
            raise DriverLoadInputError(
                f"scenario {name} {kind.driver_op_use}; driver {spec.name} has no {kind.driver_op}"
            )
    mixed = sorted(p for p, w in workload.priority_mix.items() if w > 0 and p != "normal")
    if mixed and Op.PRIORITIES not in ops:
        raise DriverLoadInputError(
            f"scenario {name} mixes priorities ({', '.join(mixed)}); driver {spec.name} has no priorities"
        )
    total = sum(mix.values())
    consumers = round(
        users * sum(w for k, w in mix.items() if USER_KIND_TABLE[k].driver_role == "workers") / total
    )
    producers = users - consumers
    if producers < 1:
        raise DriverLoadInputError(f"scenario {name}: {users} user(s) leave no producing user; raise --users")
    shaped = Workload(
        **{
            **workload.as_dict(),
            "users": producers,
            "duration_s": duration_s,
            "spawn_rate": spawn_rate,
            "user_mix": {k: w for k, w in mix.items() if USER_KIND_TABLE[k].driver_role == "calls" and w > 0},
        }
    )
    if workers > producers:
        raise DriverLoadInputError("--workers cannot exceed the producing users (a worker without users)")
    return DriverLoadPlan(
        workload=shaped,
        spec=spec,
        label=label or spec.name,
        users=producers,
        consumers=consumers,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        workers=workers,
        priorities=bool(mixed),
        master=master,
    )


@dataclass
class DriverLoadRun:
    """What a finished driver run left behind, before it becomes rows."""

    plan: DriverLoadPlan
    out_dir: Path
    locust_stats: list[dict[str, Any]]
    samples: dict[str, OpSamples]
    """The users' operations (from the results file) and the workers' pickups, merged."""
    jobs_expected: int
    jobs_picked_up: int
    commands: int
    round_trips: int
    locust_returncode: int
    meta: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per Locust worker, as the master saw it: reports received, final or not, ops per operation."""

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.samples.values())

    @property
    def jobs_not_picked_up(self) -> int:
        """Jobs enqueued that no worker reported (0 when the scenario has no consumers)."""
        if not self.plan.consumers:
            return 0
        return max(0, self.jobs_expected - self.jobs_picked_up)


@contextlib.contextmanager
def _server(url: str | None, name: str) -> Iterator[tuple[str, ServerInfo]]:
    """A fresh redis-server, or the given URL's DB if it is empty (a library's keys are not
    under qbench's prefix, so qbench can neither share nor clean a DB with others)."""
    if url is None:
        with provision(None, use_docker=False) as server:
            yield server.url, server.info
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        size = client.dbsize()
    finally:
        client.close()
    if size:
        raise DriverLoadInputError(
            f"{redact_url(url)} holds {size} keys: driver {name} needs an empty DB "
            "(qbench never flushes a server it did not start)"
        )
    yield url, describe(url, "url", owned=False)


def _prefill(driver: DriverProcess, jobs: int) -> None:
    if Op.ENQUEUE_MANY in driver.operations:
        done = 0
        while done < jobs:
            size = min(PREFILL_BATCH, jobs - done)
            driver.enqueue_many(size, size)
            done += size
    else:
        driver.enqueue(jobs)


def _drain(driver: DriverProcess, sink: PickupSink, expected: int, deadline_s: float) -> int:
    """Wait until the workers reported `expected` pickups or `deadline_s` passed; the count.
    A worker that exits, or a malformed pickup line, fails the run."""
    deadline = time.monotonic() + deadline_s
    try:
        while sink.count() < expected and time.monotonic() < deadline:
            if not driver.workers_alive():
                last = driver.last_log_line("worker.log")
                raise DriverFailedError(f"a worker exited at {sink.count()}/{expected} jobs ({last})")
            time.sleep(0.05)
        return sink.count()
    except (ValueError, redis.RedisError) as exc:  # a malformed pickup line (SinkLineError)
        raise DriverFailedError(f"pickups: {exc}") from None


def driver_run_spec(
    plan: DriverLoadPlan, *, url: str, python: str, path_root: Path, out_dir: Path
) -> RunSpec:
    """What every Locust process of a driver run must agree on: the workload's producing
    users, and how to start the driver's producer agents."""
    return RunSpec(
        workload=plan.workload,
        driver=DriverRun(
            name=plan.spec.name,
            ref=plan.spec.ref,
            python=python,
            pythonpath=python_path(path_root, python),
            log=str((out_dir / PRODUCERS_LOG).resolve()),
            priorities=plan.priorities,
        ),
        redis_url=without_credentials(url),
        namespace="",  # the driver's own keys, in a DB of its own
        started_at=time.time(),
        duration_s=plan.duration_s,
        progress_every_s=PROGRESS_EVERY_S,
    )


def pickup_samples(sink: PickupSink, started_at: float) -> dict[str, OpSamples]:
    """The workers' pickups as histograms like the users' (`pickup`, `pickup_<priority>`),
    per-second counts on the run's own origin, so they merge into the same rows."""
    recorder = Recorder(started_at)
    for (sent_us, started_us), priority in zip(sink.samples, sink.priorities, strict=True):
        latency_ms = (started_us - sent_us) / 1000
        recorder.record("pickup", latency_ms, done_at=started_us / 1e6)
        if priority is not None:
            recorder.record(f"pickup_{priority}", latency_ms, done_at=started_us / 1e6)
    return recorder.ops


def jobs_produced(ops: dict[str, OpSamples], workload: Workload) -> int:
    """Jobs the users enqueued: one per `enqueue`, a burst's worth per `enqueue_burst`."""
    return jobs_enqueued(workload, {op: samples.count for op, samples in ops.items()})


def run_driver_load(
    plan: DriverLoadPlan,
    out_dir: Path,
    *,
    redis_url: str | None = None,
    progress: Callable[[str], None] = print,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
) -> DriverLoadRun:
    """Run the scenario through the driver; LoadError (one line) for a run that failed."""
    spec = plan.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        python = ensure_env(spec, log=out_dir / "driver-install.log")
    except PeerEnvError as exc:
        raise LoadError(str(exc)) from None
    for stale in (out_dir / TELEMETRY_FILE, out_dir / PRODUCERS_LOG):
        stale.unlink(missing_ok=True)  # a previous run's are not this one's
    load_before = os.getloadavg()
    started = time.time()
    source = module_source(spec.cls)
    path_root = import_root([source] if source is not None else [])
    work_dir = Path(tempfile.mkdtemp(prefix="qbench-load-driver-"))
    pickups: dict[str, OpSamples] = {}
    try:
        with _server(redis_url, spec.name) as (url, info), side_sink(spec) as sink_url:
            driver = DriverProcess(
                spec=spec,
                python=python,
                url=url,
                concurrency=max(plan.consumers, 1),
                work_dir=work_dir,
                import_root=path_root,
                sink_url=sink_url,
            )
            sink: PickupSink | None = None
            try:
                ready = driver.start()
                prefilled = plan.workload.prefill_jobs
                if prefilled:
                    _prefill(driver, prefilled)
                    progress(f"prefilled {prefilled} jobs through {spec.name}")
                sink = driver.new_sink("load") if plan.consumers else None
                if sink is not None:
                    driver.start_workers(sink)
                run_spec = driver_run_spec(plan, url=url, python=python, path_root=path_root, out_dir=out_dir)
                # The users' Locust processes, their agents and the driver's workers are
                # children: sampled too.
                with (
                    telemetry_for_run(
                        url,
                        out_dir,
                        enabled=telemetry_interval_s > 0,
                        interval_s=telemetry_interval_s,
                        follow_children=True,
                    ) as telemetry,
                    contextlib.closing(ServerProbe(url, sampler=telemetry)) as probe,
                ):
                    before = probe.snapshot()
                    returncode = run_locust(
                        plan,
                        out_dir,
                        host="http://127.0.0.1",
                        env=locust_env(run_spec, url, out_dir),
                        master_spec=plan.master,
                        progress=progress,
                    )
                    results = read_results(out_dir, returncode)
                    expected = prefilled + jobs_produced(results.ops, plan.workload)
                    picked = 0
                    if sink is not None:
                        picked = _drain(driver, sink, expected, plan.drain_s)
                        driver.stop_workers()
                        pickups = pickup_samples(sink, run_spec.started_at)
                    after = probe.snapshot()
                # Counted at Redis, the probe's INFO and the sampler's requests left out.
                commands = sum(stats_delta(before.commands, after.commands).values())
                trips = round_trips(before, after)
            except DriverFailedError as exc:
                raise LoadError(f"driver {spec.name}: {exc}") from None
            finally:
                if sink is not None:
                    sink.close()
                driver.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.rmtree(path_root, ignore_errors=True)
    meta = run_metadata(
        server=info.as_dict(),
        mode="load",
        extra={
            "scenario": plan.workload.name,
            "workload": plan.workload.as_dict(),
            "variant": plan.label,
            "driver": {**ready, "ref": spec.ref, "origin": spec.origin},
            "users": plan.users,
            "consumers": plan.consumers,
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
            "latency_note": HISTOGRAM_NOTE
            + "; enqueue: time inside the driver's call, measured in its producer agent; "
            "pickup: from the job's send stamp to its handler's start, reported by the driver's workers",
            "latency_histogram": HISTOGRAM_META,
            "telemetry": telemetry_meta(telemetry, interval_s=telemetry_interval_s),
        },
    )
    return DriverLoadRun(
        plan=plan,
        out_dir=out_dir,
        locust_stats=read_locust_stats(out_dir, returncode),
        samples=merge_ops([results.ops, pickups]),
        jobs_expected=expected,
        jobs_picked_up=picked,
        commands=commands,
        round_trips=trips,
        locust_returncode=returncode,
        meta=meta,
        workers=results.workers,
    )


def driver_rows(run: DriverLoadRun) -> list[Row]:
    """The samples' rows plus the run's accounting: jobs expected and picked up, and the
    Redis commands and round trips per job (counted at the server)."""
    plan = run.plan
    rows = sample_rows(plan, run.samples)

    def add(metric: str, value: float, unit: str) -> None:
        rows.append(Row(EXPERIMENT, plan.label, plan.row_params(op="all"), metric, float(value), unit))

    add("jobs_expected", run.jobs_expected, REQUEST_UNIT)
    if plan.consumers:
        add("jobs_picked_up", run.jobs_picked_up, REQUEST_UNIT)
        # Must be 0: a job enqueued and never reported by a worker within the drain window.
        add("jobs_not_picked_up", run.jobs_not_picked_up, "jobs")
    if run.jobs_expected:
        # Counted at Redis over the whole run (users, workers, drain); round trips are its
        # read events (see qbench.harness.peers.runner.Snapshot).
        add("commands_per_job", run.commands / run.jobs_expected, "commands/job")
        add("round_trips_per_job", run.round_trips / run.jobs_expected, "round_trips/job")
    return rows


def write_driver_results(run: DriverLoadRun, *, charts: bool = True) -> list[Row]:
    """metrics.csv, run.json, the charts (from the rows) and REPORT.md of a driver run."""
    rows = driver_rows(run)
    write_metrics(run.out_dir / METRICS_FILE, rows)
    title = f"{run.plan.workload.name} · {run.plan.label}"
    run.meta["charts"] = render_charts(rows, run.out_dir, title) if charts else []
    run.meta["jobs"] = {
        "expected": run.jobs_expected,
        "picked_up": run.jobs_picked_up,
        "not_picked_up": run.jobs_not_picked_up,
        "drain_s": run.plan.drain_s,
    }
    write_run(run.out_dir / RUN_FILE, run.meta)
    write_load_report(run.out_dir, rows, run.meta, charts=charts)  # REPORT.md, telemetry charts
    return rows
