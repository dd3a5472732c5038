"""`qbench profile SCENARIO --variant V`: a worker service under scalene (or py-spy) during a load run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import ProvisionedRedis
from qbench.harness.load.runner import LoadPlan, LoadRun, measure, summary, variant_spec
from qbench.queue_impl.config import Variant
from qbench.queue_impl.keys import make_keys

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The folder holding the `qbench` package: profiles show paths relative to it."""
DEFAULT_OUT_ROOT = Path("results/profile")
TOOLS = ("scalene", "py-spy")
WORKER_START_TIMEOUT_S = 60.0
STOP_WAIT_S = 60.0
"""The worker finishes in-flight jobs and returns held ones; scalene then writes its profile."""
LAUNCHER = """\
import runpy
runpy.run_module("qbench.queue_impl.worker", run_name="__main__", alter_sys=True)
"""
"""Runs the worker service as a script: a path inside `queue_impl/` would shadow the stdlib `queue`."""


class ProfileError(RuntimeError):
    """The profiled worker did not start or wrote no profile (one line)."""


class ProfilerMissingError(ProfileError):
    """The profiler asked for is not installed."""


def worker_args(url: str, variant: Variant, namespace: str, concurrency: int) -> list[str]:
    return [
        "--redis-url",
        url,
        "--variant",
        variant_spec(variant),
        "--namespace",
        namespace,
        "--concurrency",
        str(concurrency),
    ]


@contextlib.contextmanager
def profiled_worker(
    tool: str, profile_dir: Path, url: str, variant: Variant, namespace: str, concurrency: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker service consuming the run's jobs under `tool`; stopped with SIGTERM at the end.

    The profiler launches the worker itself (py-spy cannot attach to this interpreter
    build by pid) in a session of its own; at the end the worker gets SIGTERM, stops
    gracefully, and the profiler writes its file when the worker exits.
    """
    profile_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("scalene.json", "py-spy.speedscope.json", "summary.md"):
        (profile_dir / stale).unlink(missing_ok=True)
    launcher = profile_dir / "run_worker.py"
    launcher.write_text(LAUNCHER)
    worker = [sys.executable, str(launcher), *worker_args(url, variant, namespace, concurrency)]
    if tool == "scalene":
        output = profile_dir / "scalene.json"
        profiler = [sys.executable, "-m", "scalene", "run", "-o", str(output), "--cpu-only"]
        cmd = [*profiler, "--program-path", str(REPO_ROOT), *worker[1:2], "---", *worker[2:]]
    else:
        output = profile_dir / "py-spy.speedscope.json"
        spy = [_py_spy(), "record", "--idle", "--rate", "100", "--format", "speedscope", "-o", str(output)]
        cmd = [*spy, "--", *worker]
    log = (profile_dir / "worker.log").open("wb")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_until_consuming(url, variant, namespace, proc, profile_dir / "worker.log")
        yield proc
    finally:
        # py-spy must outlive the worker to write its file: signal the worker only.
        # scalene handles SIGTERM itself and passes it on, whichever process runs the worker.
        if tool == "scalene":
            _signal_group(proc.pid, signal.SIGTERM)
        else:
            for child in _children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        stop(proc, grace_s=STOP_WAIT_S, ask=None)  # asked above; killed when the grace runs out
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(proc.pid, signal.SIGKILL)  # anything left in the session
        log.close()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError, ValueError):
        return [int(c) for c in path.read_text().split()]
    return []


def _signal_group(pgid: int, signum: int) -> None:
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                return True
    return False


def _wait_until_consuming(
    url: str, variant: Variant, namespace: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Block until the worker has registered as a consumer (scalene starts slowly)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    consumers = make_keys(variant.keys, namespace, 0, variant.partitions).consumers()  # registered in each
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while not client.scard(consumers):
            if proc.poll() is not None:
                lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
                raise ProfileError(f"the profiled worker exited: {lines[-1] if lines else proc.returncode}")
            if time.monotonic() > deadline:
                raise ProfileError(f"the profiled worker did not start within {WORKER_START_TIMEOUT_S:g} s")
            time.sleep(0.1)
    finally:
        client.close()


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise ProfilerMissingError("py-spy is not installed (pip install py-spy)")
    return found


def scalene_summary(path: Path, top: int = 15) -> list[dict[str, Any]]:
    """The source lines with the most CPU time in a scalene JSON profile."""
    doc = json.loads(path.read_text())
    lines: list[dict[str, Any]] = []
    for filename, data in (doc.get("files") or {}).items():
        for line in data.get("lines") or []:
            python = float(line.get("n_cpu_percent_python", 0) or 0)
            native = float(line.get("n_cpu_percent_c", 0) or 0)
            system = float(line.get("n_sys_percent", 0) or 0)
            if python + native + system <= 0:
                continue
            shown = os.path.relpath(filename, REPO_ROOT) if filename.startswith(str(REPO_ROOT)) else filename
            lines.append(
                {
                    "where": f"{shown}:{line.get('lineno')}",
                    "code": str(line.get("line", "")).strip()[:70],
                    "cpu_percent": python + native + system,
                    "python_percent": python,
                    "native_percent": native,
                    "system_percent": system,
                }
            )
    lines.sort(key=lambda item: item["cpu_percent"], reverse=True)
    return lines[:top]


def format_summary(lines: list[dict[str, Any]], elapsed_s: float | None) -> str:
    title = "# Worker CPU profile (scalene)"
    out = [
        f"{title}, {elapsed_s:.1f} s" if elapsed_s else title,
        "",
        "Share of the profiled worker's CPU time per source line (scalene --cpu-only).",
        "",
        "| CPU % | Python % | native % | system % | line | code |",
        "|---:|---:|---:|---:|---|---|",
    ]
    out += [
        f"| {f['cpu_percent']:.1f} | {f['python_percent']:.1f} | {f['native_percent']:.1f} | "
        f"{f['system_percent']:.1f} | {f['where']} | `{f['code']}` |"
        for f in lines
    ]
    return "\n".join(out) + "\n"


@dataclasses.dataclass(frozen=True)
class ProfileResult:
    """A load run with a profiled worker beside it: its summary table and the profile."""

    load_summary: str
    profile: Path
    profile_summary: str


def run_profile(
    plan: LoadPlan, out_dir: Path, *, tool: str, concurrency: int, redis_url: str | None, charts: bool = True
) -> ProfileResult:
    """Run `plan` with a worker service under `tool` consuming its jobs, into `out_dir` (the
    load run's folder, its profile in `profile/`); ProfileError (the run failed, or the
    profiler wrote nothing: run.json says which)."""
    profile_dir = out_dir / "profile"
    variant = plan.variant
    if variant is None:
        raise ValueError("qbench profile runs a variant of the reference queue")
    if tool == "py-spy":
        _py_spy()

    def during(server: ProvisionedRedis, namespace: str) -> contextlib.AbstractContextManager[object]:
        return profiled_worker(tool, profile_dir, server.url, variant, namespace, concurrency)

    profile = profile_dir / ("scalene.json" if tool == "scalene" else "py-spy.speedscope.json")

    def profile_written(_run: LoadRun) -> list[str]:
        return [] if profile.is_file() else [f"{tool} wrote no profile (see {profile_dir / 'worker.log'})"]

    outcome = measure(
        plan,
        out_dir,
        charts=charts,
        meta={"profile": {"tool": tool, "concurrency": concurrency, "dir": "profile"}},
        finish=profile_written,
        redis_url=redis_url,
        during=during,
    )
    if outcome.problems:
        raise ProfileError("; ".join(outcome.problems))
    if tool == "scalene":
        elapsed = json.loads(profile.read_text()).get("elapsed_time_sec")
        text = format_summary(scalene_summary(profile), elapsed)
        (profile_dir / "summary.md").write_text(text)
        return ProfileResult(summary(outcome.rows), profile, text)
    return ProfileResult(
        summary(outcome.rows), profile, f"py-spy profile: {profile} (open in https://www.speedscope.app)"
    )
