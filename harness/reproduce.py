"""`qbench reproduce`: run every experiment against a real Redis, write rows, render the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from harness.experiments import EXPERIMENTS, RunContext, load_experiments
from harness.redis_server import ProvisionedRedis, redis_for_run
from harness.report import render_results
from harness.results import METRICS_FILE, RUN_FILE, Row, run_metadata, write_metrics, write_run

DEFAULT_REPEATS = 3
SERVER_CONFIG_KEYS = ("hz", "maxmemory", "maxmemory-policy", "active-expire-effort", "io-threads")
"""Server settings that move the results (expiry speed, eviction); recorded in run.json."""

EXPERIMENT_NAMES = tuple(module.rsplit(".", 1)[1] for module in EXPERIMENTS)


class Progress:
    """One line per step on stderr, stamped with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.experiment = "reproduce"

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {self.experiment}: {message}", file=sys.stderr, flush=True)


def select_experiments(only: Sequence[str] | None) -> list[ModuleType]:
    """The experiment modules to run; UsageError for a name that is unknown or not written yet."""
    from harness.cli import UsageError

    available = {module.NAME: module for module in load_experiments()}
    if not only:
        return list(available.values())
    chosen = []
    for name in only:
        if name not in EXPERIMENT_NAMES:
            raise UsageError(
                f"--only: unknown experiment {name!r} (expected some of {', '.join(EXPERIMENT_NAMES)})"
            )
        if name not in available:
            raise UsageError(f"--only: experiment {name!r} is not available in this version of qbench")
        chosen.append(available[name])
    return chosen


def reproduce(
    *,
    out_dir: Path,
    quick: bool,
    repeats: int,
    experiments: Sequence[ModuleType],
    redis_url: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """Run `experiments` in order; returns run.json's content. A failing experiment is
    recorded (run.json, report) and the next one runs; rows already measured are kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("error-*.txt"):  # a previous run's failures are not this run's
        stale.unlink()
    started = time.monotonic()
    rows: list[Row] = []
    results: dict[str, Any] = {}
    with redis_for_run(redis_url) as server:
        progress(
            f"Redis {server.info.version} ({server.info.allocator}, {server.info.source}) at {server.url}"
        )
        meta = run_metadata(
            server=server.info.as_dict(),
            mode="quick" if quick else "full",
            extra={
                "repeats": repeats,
                "experiments": results,
                "placement": _placement(server),
                "server_config": _server_config(server.url),
                "command": ["qbench", *sys.argv[1:]],
            },
        )
        for index, module in enumerate(experiments, start=1):
            progress.experiment = module.NAME
            progress(f"start ({index}/{len(experiments)}): {module.TITLE}")
            ctx = RunContext(
                url=server.url,
                server=server.info,
                quick=quick,
                repeats=repeats,
                out_dir=out_dir,
                progress=progress,
            )
            t0 = time.monotonic()
            try:
                new_rows = list(module.run(ctx))
            except Exception as exc:  # one failing experiment must not lose the others' rows
                wall = time.monotonic() - t0
                detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                results[module.NAME] = {
                    "status": "error",
                    "error": detail,
                    "wall_s": round(wall, 3),
                    "rows": 0,
                }
                (out_dir / f"error-{module.NAME}.txt").write_text(traceback.format_exc())
                progress(f"FAILED after {wall:.1f}s: {detail}")
            else:
                wall = time.monotonic() - t0
                rows += new_rows
                results[module.NAME] = {"status": "ok", "wall_s": round(wall, 3), "rows": len(new_rows)}
                progress(f"done in {wall:.1f}s ({len(new_rows)} rows)")
            # Written after every experiment, so an interrupted run keeps what it measured.
            write_metrics(out_dir / METRICS_FILE, rows)
            meta["total_wall_s"] = round(time.monotonic() - started, 3)
            write_run(out_dir / RUN_FILE, meta)
    progress.experiment = "report"
    meta["total_wall_s"] = round(time.monotonic() - started, 3)
    rendering = time.monotonic()
    report = render_results(out_dir, rows=rows, meta=meta)
    # Rendering time is kept apart, so `qbench report` re-renders the same REPORT.md.
    meta["report_wall_s"] = round(time.monotonic() - rendering, 3)
    write_run(out_dir / RUN_FILE, meta)
    progress(
        f"{report} written; measuring took {meta['total_wall_s']:.1f}s, "
        f"the report {meta['report_wall_s']:.1f}s"
    )
    return meta


def exit_code(meta: dict[str, Any]) -> int:
    """1 when an experiment failed to run or to render, else 0."""
    experiments: dict[str, Any] = meta.get("experiments", {})
    failed = [name for name, info in experiments.items() if info.get("status") != "ok"]
    return 1 if failed or meta.get("render_errors") else 0


def _placement(server: ProvisionedRedis) -> dict[str, Any]:
    """Which CPUs the harness and the server may run on (round-trip time depends on it)."""
    placement: dict[str, Any] = {"harness_affinity": sorted(os.sched_getaffinity(0))}
    proc = server.process.proc if server.process is not None else None
    if proc is not None:
        with contextlib.suppress(OSError):
            placement["server_affinity"] = sorted(os.sched_getaffinity(proc.pid))
            placement["server_pid"] = proc.pid
    else:
        placement["server_affinity"] = "unknown (not started by qbench as a process)"
    return placement


def _server_config(url: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    config: dict[str, str] = {}
    try:
        for key in SERVER_CONFIG_KEYS:
            with contextlib.suppress(redis.ResponseError):  # managed servers may forbid CONFIG
                config.update({str(k): str(v) for k, v in client.config_get(key).items()})
    finally:
        client.close()
    return config


def _default_out_dir(quick: bool) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path("results") / f"{stamp}-{'quick' if quick else 'full'}"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.cli import add_redis_url_argument

    parser = subparsers.add_parser(
        "reproduce", help="run every experiment: metrics.csv, run.json, charts and REPORT.md"
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes: every experiment in < 3 minutes")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="results dir (default: results/<run-id>)"
    )
    parser.add_argument(
        "--only", default=None, metavar="NAME,...", help=f"run only these ({', '.join(EXPERIMENT_NAMES)})"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        metavar="N",
        help=f"repeats of every measurement (default {DEFAULT_REPEATS}; timings need >= 3)",
    )
    add_redis_url_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError

    if args.repeats < 1:
        raise UsageError(f"--repeats: must be >= 1, got {args.repeats}")
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    if args.only is not None and not only:
        raise UsageError("--only: expected comma-separated experiment names")
    experiments = select_experiments(only)
    if not experiments:
        raise UsageError("no experiment is available in this version of qbench")
    out_dir: Path = args.out or _default_out_dir(args.quick)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: {out_dir} exists and is not a directory")
    progress = Progress()
    if args.repeats < 3:
        progress(f"--repeats {args.repeats}: timings need 3 repeats for a spread; the report says so")
    meta = reproduce(
        out_dir=out_dir,
        quick=args.quick,
        repeats=args.repeats,
        experiments=experiments,
        redis_url=args.redis_url,
        progress=progress,
    )
    if exit_code(meta):
        failed = [name for name, info in meta["experiments"].items() if info.get("status") != "ok"]
        failed += list(meta.get("render_errors", {}))
        print(
            f"qbench: error: failed: {', '.join(dict.fromkeys(failed))} (see {out_dir / 'REPORT.md'})",
            file=sys.stderr,
        )
        return 1
    print(out_dir / "REPORT.md")
    return 0
