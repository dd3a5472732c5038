"""`qbench load SCENARIO --variant V`: a headless Locust run in its own processes, into tidy rows."""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
import tempfile
from pathlib import Path

import redis

from qbench.harness.errors import UsageError, add_redis_url_argument, add_telemetry_argument
from qbench.harness.load.runner import (
    DEFAULT_MASTER_PORT,
    REMOTE_WORKER_WAIT_S,
    LoadInputError,
    LoadPlan,
    MasterSpec,
    default_out_dir,
    measure,
    run_worker,
    summary,
)
from qbench.harness.load.targets import shape_for_driver
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root, python_path
from qbench.harness.peers.registry import resolve
from qbench.loader import DriverLoadError, module_source
from qbench.queue_impl.config import VariantError, parse_variant, toggle_help
from qbench.queue_impl.connection import is_cluster_url, redact_url
from qbench.scenarios.settings import (
    ENV_DRIVER,
    ENV_DRIVER_LOG,
    ENV_DRIVER_PYTHON,
    ENV_DRIVER_PYTHONPATH,
    is_loopback,
)
from qbench.scenarios.workload import (
    Workload,
    WorkloadError,
    describe_workloads,
    load_workload,
    resolve_workload_path,
)

MAX_WORKERS = 64
DRIVER_HELP = """
through a driver (any queue qbench has a driver for, instead of --variant):
  qbench load SCENARIO --driver NAME|module:Class|path/file.py:Class|driver.toml [--workers N]
The scenario's producing users call the driver; its consumers become the driver's own
workers, whose pickups join the users' histograms. --workers N starts local Locust workers;
--master/--worker work as for --variant, each worker host building the driver's environment.
"""
DISTRIBUTED_HELP = """
distributed across hosts (no shared disk: workers send their histograms):
  qbench load SCENARIO --variant V|--driver X --master --expect-workers N [--bind ADDR --allow-remote]
  qbench load SCENARIO --variant V|--driver X --worker --master-host ADDR [--master-port P] [--redis-url URL]
The master binds 127.0.0.1 unless --bind says otherwise; any other address needs
--allow-remote (whoever reaches it can join as a worker). A worker uses the master's
Redis URL unless given --redis-url; a Redis on the master's loopback is out of reach of
other hosts, so give the master a --redis-url that every host can reach.
"""


def load_epilog() -> str:
    """The scenarios and the toggles, for `load --help` and `profile --help`."""
    return (
        "scenarios (scenarios/workloads/NAME.toml, or any .toml path):\n"
        + describe_workloads()
        + "\n\nvariant: PRESET[+TOGGLE=VALUE,...], e.g. 'optimized+dequeue=notify,pool_size=sized'\n"
        + toggle_help()
    )


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed across hosts")
    role = group.add_mutually_exclusive_group()
    role.add_argument(
        "--master", action="store_true", help="run the master only; workers started elsewhere connect to it"
    )
    role.add_argument("--worker", action="store_true", help="run a worker only (it dials --master-host)")
    group.add_argument(
        "--expect-workers", type=int, default=None, metavar="N", help="--master: workers to wait for"
    )
    group.add_argument(
        "--bind", default=None, metavar="ADDR", help="--master: address to listen on (default 127.0.0.1)"
    )
    group.add_argument(
        "--allow-remote", action="store_true", help="--master: allow a --bind address other than loopback"
    )
    group.add_argument(
        "--worker-wait",
        type=float,
        default=None,
        metavar="S",
        help="--master: seconds to wait for every expected worker to connect "
        f"(default {REMOTE_WORKER_WAIT_S:g})",
    )
    group.add_argument("--master-host", default=None, metavar="ADDR", help="--worker: the master's address")
    group.add_argument(
        "--master-port",
        type=int,
        default=None,
        metavar="P",
        help=f"--master: port to listen on; --worker: port to dial (default {DEFAULT_MASTER_PORT})",
    )


def add_common_arguments(
    parser: argparse.ArgumentParser, *, cluster: bool = False, variant_required: bool = True
) -> None:
    """The flags `load` and `profile` share; `cluster` adds `--cluster` (a Redis Cluster target)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = load_epilog()
    parser.add_argument("scenario", help="workload name (scenarios/workloads/NAME.toml) or a .toml path")
    parser.add_argument(
        "--variant",
        required=variant_required,
        metavar="SPEC",
        help="preset[+toggle=value,...]" + ("" if variant_required else " (or --driver)"),
    )
    parser.add_argument("--users", type=int, default=None, help="override the workload's user count")
    parser.add_argument("--spawn-rate", type=float, default=None, help="override users started per second")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="override run time (s)")
    parser.add_argument(
        "--workers", type=int, default=0, help="Locust worker processes on this host (distributed mode)"
    )
    parser.add_argument(
        "--label", default=None, help="variant column in the rows (default: the variant's label)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results dir (default: a new results/<UTC time>-load-SCENARIO)"
    )
    parser.add_argument("--no-charts", action="store_true", help="write metrics and Locust files only")
    add_redis_url_argument(parser, cluster=cluster)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "load",
        help="run a Locust scenario headless against one variant",
        description="Run a Locust scenario headless against one variant of the reference queue, or "
        "through a driver (--driver: the users call the driver's enqueue, its own workers consume); "
        "writes metrics.csv, run.json, Locust's own stats and charts, and checks that no job was lost.",
    )
    add_common_arguments(parser, cluster=True, variant_required=False)
    parser.add_argument(
        "--driver",
        metavar="DRIVER",
        default=None,
        help="instead of --variant: a driver (a name from `qbench drivers`, module:Class, "
        "path/to/file.py:Class or driver.toml); the scenario's consumers become its workers "
        "(label: the driver's name)",
    )
    add_telemetry_argument(parser)
    add_distributed_arguments(parser)
    parser.epilog = (parser.epilog or "") + "\n" + DRIVER_HELP + DISTRIBUTED_HELP
    parser.set_defaults(func=run)


def run_shape(args: argparse.Namespace) -> tuple[Workload, int, float, float]:
    """(the scenario, users, duration s, spawn rate): the flags where given, else the
    scenario's; checked, with --workers, for every kind of run."""
    try:
        workload = load_workload(args.scenario)
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None
    users = workload.users if args.users is None else args.users
    duration = workload.duration_s if args.duration is None else args.duration
    spawn_rate = workload.spawn_rate if args.spawn_rate is None else args.spawn_rate
    if users < 1:
        raise UsageError("--users must be >= 1")
    if duration <= 0:
        raise UsageError("--duration must be > 0")
    if spawn_rate <= 0:
        raise UsageError("--spawn-rate must be > 0")
    if not 0 <= args.workers <= 16:
        raise UsageError("--workers must be between 0 and 16")
    return workload, users, duration, spawn_rate


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    """The run the flags ask for, through a variant or a driver (`--driver`); one-line
    usage errors for flags that do not fit, or a scenario the driver cannot play."""
    master = master_from_args(args) if hasattr(args, "master") else None  # `profile` has no --master
    driver_ref = getattr(args, "driver", None)
    variant, spec = None, None
    if driver_ref is None:
        try:
            variant = parse_variant(args.variant)
        except VariantError as exc:
            raise UsageError(f"--variant: {exc}") from None
    else:
        try:
            spec = resolve(driver_ref)
        except DriverLoadError as exc:
            raise UsageError(str(exc)) from None
    workload, users, duration, spawn_rate = run_shape(args)
    workload = Workload(
        **{**workload.as_dict(), "users": users, "duration_s": duration, "spawn_rate": spawn_rate}
    )
    driver = None
    if spec is not None:
        try:
            workload, driver = shape_for_driver(workload, spec, users)
        except LoadInputError as exc:
            raise UsageError(str(exc)) from None
        users = workload.users  # the producing users: Locust runs these
    who = "the producing users" if driver is not None else "--users"
    workers = args.workers if master is None else args.expect_workers
    if workers > users:
        flag = "--workers" if master is None else "--expect-workers"
        raise UsageError(f"{flag} cannot exceed {who} (a worker without users does nothing)")
    if master is not None and "http_submit" in workload.user_mix and not is_loopback(master.bind):
        raise UsageError(
            "the http scenario's API listens on the master's loopback: run its workers on the "
            "master's host (--bind 127.0.0.1)"
        )
    label = args.label or (variant.label() if variant is not None else spec.name if spec is not None else "")
    return LoadPlan(
        workload=workload,
        variant=variant,
        driver=driver,
        label=label,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration,
        workers=workers,
        master=master,
    )


def master_from_args(args: argparse.Namespace) -> MasterSpec | None:
    """`--master` settings (None without it); one-line errors for flags that do not fit."""
    if not args.master:
        for flag, value in (
            ("--expect-workers", args.expect_workers),
            ("--bind", args.bind),
            ("--allow-remote", args.allow_remote or None),
            ("--worker-wait", args.worker_wait),
        ):
            if value is not None:
                raise UsageError(f"{flag} needs --master")
        if args.master_port is not None:
            raise UsageError("--master-port needs --master or --worker")
        if args.master_host is not None:
            raise UsageError("--master-host needs --worker")
        return None
    if args.workers:
        raise UsageError("--workers starts local workers; with --master, give --expect-workers instead")
    if args.master_host is not None:
        raise UsageError("--master-host is for --worker (a master listens on --bind)")
    if args.expect_workers is None:
        raise UsageError("--master needs --expect-workers N")
    if not 1 <= args.expect_workers <= MAX_WORKERS:
        raise UsageError(f"--expect-workers must be between 1 and {MAX_WORKERS}")
    bind = args.bind or "127.0.0.1"
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise UsageError(f"--bind {bind!r}: expected an IP address of this host") from None
    if not address.is_loopback and not args.allow_remote:
        raise UsageError(
            f"--bind {bind} listens beyond this host, where anyone who reaches it can join as a worker: "
            "add --allow-remote to mean it"
        )
    wait_s = REMOTE_WORKER_WAIT_S if args.worker_wait is None else args.worker_wait
    if not 0 < wait_s <= 24 * 3600:
        raise UsageError(f"--worker-wait {wait_s:g}: expected seconds above 0, at most a day")
    return MasterSpec(bind=bind, port=_port(args.master_port), wait_s=wait_s)


def _port(value: int | None) -> int:
    port = DEFAULT_MASTER_PORT if value is None else value
    if not 1 <= port <= 65535:
        raise UsageError(f"--master-port {port}: expected 1..65535")
    return port


def run_as_worker(args: argparse.Namespace) -> int:
    """`--worker`: a Locust worker only; the master decides the rest of the run."""
    for flag, value in (
        ("--users", args.users),
        ("--spawn-rate", args.spawn_rate),
        ("--duration", args.duration),
        ("--label", args.label),
        ("--out", args.out),
        ("--expect-workers", args.expect_workers),
        ("--bind", args.bind),
        ("--allow-remote", args.allow_remote or None),
        ("--worker-wait", args.worker_wait),
        ("--no-charts", args.no_charts or None),
        ("--workers", args.workers or None),
    ):
        if value is not None:
            raise UsageError(f"{flag} is for the master: a --worker takes its run from the master")
    if not args.master_host:
        raise UsageError("--worker needs --master-host ADDR")
    try:
        scenario = str(resolve_workload_path(args.scenario).resolve())
        load_workload(scenario)
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None
    port = _port(args.master_port)
    if args.redis_url:
        # Checked before the worker reports ready: a Redis it cannot use would fail every request.
        problem = redis_problem(args.redis_url)
        if problem:
            raise UsageError(f"--redis-url {redact_url(args.redis_url)}: {problem}")
    if args.driver is not None:
        return run_driver_worker(args, scenario, port)
    try:
        variant = parse_variant(args.variant)
    except VariantError as exc:
        raise UsageError(f"--variant: {exc}") from None
    print(f"worker: dialling the Locust master at {args.master_host}:{port}", flush=True)
    returncode = run_worker(
        scenario=scenario,
        variant=variant,
        master_host=args.master_host,
        master_port=port,
        redis_url=args.redis_url,
    )
    return _worker_exit(returncode)


def _worker_exit(returncode: int) -> int:
    if returncode != 0:
        print(f"qbench: error: the Locust worker exited with {returncode}", file=sys.stderr)
        return 1
    return 0


def redis_problem(url: str) -> str | None:
    """Why this host cannot use the Redis at `url` (one line), or None after a PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:
        return str(exc)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def run_driver_worker(args: argparse.Namespace, scenario: str, port: int) -> int:
    """`--worker --driver X`: this host builds the driver's environment, then runs a Locust
    worker whose users start their agents in it."""
    try:
        spec = resolve(args.driver)
    except DriverLoadError as exc:
        raise UsageError(str(exc)) from None
    log_dir = Path(tempfile.mkdtemp(prefix="qbench-worker-"))
    print(f"worker: building driver {spec.name}'s environment on this host", flush=True)
    try:
        python = ensure_env(spec, log=log_dir / "driver-install.log")
    except PeerEnvError as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return 1
    source = module_source(spec.cls)
    path_root = import_root([source] if source is not None else [])
    try:
        print(f"worker: dialling the Locust master at {args.master_host}:{port}", flush=True)
        returncode = run_worker(
            scenario=scenario,
            variant=None,
            master_host=args.master_host,
            master_port=port,
            redis_url=args.redis_url,
            extra_env={
                ENV_DRIVER: spec.name,
                ENV_DRIVER_PYTHON: python,
                ENV_DRIVER_PYTHONPATH: python_path(path_root, python),
                ENV_DRIVER_LOG: str(log_dir / "driver-producers.log"),
            },
        )
    finally:
        shutil.rmtree(path_root, ignore_errors=True)
    if returncode != 0:
        print(f"worker: the driver's agents' log is in {log_dir}", flush=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return _worker_exit(returncode)


def run(args: argparse.Namespace) -> int:
    if args.driver is not None and args.variant is not None:
        raise UsageError("--variant and --driver: give one (a reference-queue variant, or a driver)")
    if args.driver is None and args.variant is None:
        raise UsageError("one of --variant or --driver is required")
    if args.worker:
        return run_as_worker(args)
    if args.driver is not None and (args.cluster or (args.redis_url and is_cluster_url(args.redis_url))):
        raise UsageError("--driver runs against one Redis server; a Redis Cluster takes --variant")
    plan = plan_from_args(args)
    out_dir = args.out or default_out_dir(plan.workload.name)
    if plan.driver is None:
        shape = f"{plan.users} users for {plan.duration_s:g} s"
        print(f"load {plan.workload.name} · {plan.label}: {shape}", flush=True)
    else:
        print(
            f"load {plan.workload.name} · driver {plan.driver.spec.name}: {plan.users} producing users for "
            f"{plan.duration_s:g} s, workers running {plan.driver.consumers} jobs at once",
            flush=True,
        )
    try:
        outcome = measure(
            plan,
            out_dir,
            charts=not args.no_charts,
            redis_url=args.redis_url,
            telemetry_interval_s=args.telemetry_interval,
            cluster=args.cluster,
            allow_cluster=True,
        )
    except LoadInputError as exc:
        raise UsageError(str(exc)) from None
    if outcome.run is not None:
        print(summary(outcome.rows))
        print(f"results in {out_dir}")
    if outcome.problems:
        print(f"qbench: error: {'; '.join(outcome.problems)}", file=sys.stderr)
        return 1
    return 0
