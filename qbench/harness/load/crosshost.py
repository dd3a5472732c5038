"""A Locust master and its workers as separate `qbench load` processes, as on separate hosts.

Each role runs in its own working directory with its own temporary folder, and nothing
on disk is shared: the workers learn the run from the master and send their histograms
back over Locust's messages. With `netns`, every role also gets a network namespace of
its own with its own address (`qbench.harness.infra.netns`): Redis and the master listen on the
master's address, and the workers reach both over a bridge, as remote hosts would. Without
it, everything listens on loopback.

    scripts/netns-locust.sh --workers 2 --duration 10       # as root: namespaces
    .venv/bin/python -m qbench.harness.load.crosshost --loopback   # anywhere: loopback only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qbench.harness.infra.netns import netns_lab, stop_process
from qbench.harness.infra.redis_server import RedisServerProcess, die_with_parent, free_port
from qbench.harness.load.runner import DEFAULT_MASTER_PORT
from qbench.scenarios import settings as run_settings

NETNS_REDIS_PORT = 6379
"""Any port will do inside the master's own namespace."""
EXTRA_WAIT_S = 180.0
"""Start-up, waiting for workers, stop timeout and census, on top of the run's duration."""
WORKER_AFTER_MASTER_S = 30.0
Popen = subprocess.Popen[bytes]


@dataclass(frozen=True, kw_only=True)
class CrossHostPlan:
    scenario: str = "arrival"
    variant: str = "scripted"
    users: int = 4
    duration_s: float = 4.0
    workers: int = 2
    netns: bool = True
    raw_samples: bool = False
    """Each worker also writes its raw latency samples into its own directory (a test aid)."""


@dataclass(frozen=True, kw_only=True)
class RoleRun:
    role: str
    address: str
    cwd: Path
    returncode: int
    output: str


@dataclass(frozen=True, kw_only=True)
class CrossHostRun:
    master: RoleRun
    workers: list[RoleRun]
    results_dir: Path
    """The master's `qbench load --out`."""


def role_env(cwd: Path, **extra: str) -> dict[str, str]:
    """The environment of one role: nothing of this run's own settings leaks in, and its
    temporary files stay in its own directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QBENCH_") and k not in ("REDIS_URL", "TMPDIR", "PWD")
    }
    tmp = cwd / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    env.update(extra)
    return env


def run_crosshost(plan: CrossHostPlan, work_dir: Path) -> CrossHostRun:
    """Run Redis and a master in one role, `plan.workers` workers in others; wait for all."""
    roles = ["master", *(f"w{i}" for i in range(1, plan.workers + 1))]
    dirs = {role: work_dir / role for role in roles}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    qbench = [sys.executable, "-m", "qbench.harness.cli", "load", plan.scenario, "--variant", plan.variant]
    with contextlib.ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []
        if plan.netns:
            lab = stack.enter_context(netns_lab(roles))
            addresses = {role: lab[role].address for role in roles}
            # Reachable beyond loopback, so it wants a password (else protected mode refuses).
            server = RedisServerProcess(
                bind=addresses["master"],
                port=NETNS_REDIS_PORT,
                launcher=lab["master"].command([]),
                password=secrets.token_hex(12),
            )
            master_port = DEFAULT_MASTER_PORT
            bind = ["--bind", addresses["master"], "--allow-remote"]

            def spawn(role: str, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Popen:
                return lab.spawn(role, argv, cwd=cwd, env=env, log=log)
        else:
            addresses = dict.fromkeys(roles, "127.0.0.1")
            server = RedisServerProcess()
            master_port = free_port()
            bind = ["--bind", "127.0.0.1"]

            def spawn(role: str, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Popen:
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        list(argv),
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent,
                    )
                procs.append(proc)
                return proc

            stack.callback(_stop_all, procs)
        server.start()
        stack.callback(server.stop)
        results_dir = dirs["master"] / "out"
        started = {
            "master": spawn(
                "master",
                [
                    *qbench,
                    "--master",
                    "--expect-workers",
                    str(plan.workers),
                    *bind,
                    "--master-port",
                    str(master_port),
                    "--users",
                    str(plan.users),
                    "--duration",
                    f"{plan.duration_s:g}",
                    "--redis-url",
                    server.url,
                    "--out",
                    str(results_dir),
                    "--no-charts",
                ],
                dirs["master"],
                role_env(dirs["master"]),
                dirs["master"] / "output.txt",
            )
        }
        for role in roles[1:]:
            raw = {run_settings.ENV_RAW_SAMPLES_DIR: str(dirs[role])} if plan.raw_samples else {}
            argv = [*qbench, "--worker", "--master-host", addresses["master"]]
            argv += ["--master-port", str(master_port)]
            if server.password:  # the master announces its Redis URL without the password
                argv += ["--redis-url", server.url]
            started[role] = spawn(
                role, argv, dirs[role], role_env(dirs[role], **raw), dirs[role] / "output.txt"
            )
        deadline = time.monotonic() + plan.duration_s + EXTRA_WAIT_S
        codes = {}
        for role, proc in started.items():
            # The master tells its workers to quit before it does; after it, they get a short while.
            timeout = deadline - time.monotonic() if role == "master" else WORKER_AFTER_MASTER_S
            try:
                codes[role] = proc.wait(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                stop_process(proc)
                codes[role] = -1
    runs = {
        role: RoleRun(
            role=role,
            address=addresses[role],
            cwd=dirs[role],
            returncode=codes[role],
            output=(dirs[role] / "output.txt").read_text(errors="replace"),
        )
        for role in roles
    }
    return CrossHostRun(master=runs["master"], workers=[runs[r] for r in roles[1:]], results_dir=results_dir)


def _stop_all(procs: Sequence[Popen]) -> None:
    for proc in procs:
        stop_process(proc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns-locust", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="arrival")
    parser.add_argument("--variant", default="scripted")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loopback", action="store_true", help="no namespaces: every role on loopback")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    plan = CrossHostPlan(
        scenario=args.scenario,
        variant=args.variant,
        users=args.users,
        duration_s=args.duration,
        workers=args.workers,
        netns=not args.loopback,
    )
    with contextlib.ExitStack() as stack:
        work_dir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qbench-xhost-")))
        try:
            run = run_crosshost(plan, work_dir)
        except (OSError, RuntimeError) as exc:
            print(f"netns-locust: error: {exc}", file=sys.stderr)
            return 1
        for role in (run.master, *run.workers):
            print(f"== {role.role} ({role.address}, cwd {role.cwd}): exit {role.returncode}")
            print(role.output.rstrip())
        failed = [r.role for r in (run.master, *run.workers) if r.returncode != 0]
        if failed:
            print(f"netns-locust: error: {', '.join(failed)} failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
