"""The reproduce run: every experiment against a real Redis, into rows, then the report."""

from __future__ import annotations

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

from qbench.harness.experiments import EXPERIMENTS, RunContext, load_experiments
from qbench.harness.experiments.report import render_results
from qbench.harness.infra.redis_server import ProvisionedRedis, redis_for_run
from qbench.harness.infra.telemetry import (
    DEFAULT_INTERVAL_S,
    telemetry_for_run,
    telemetry_meta,
)
from qbench.harness.results.rows import METRICS_FILE, Row, run_metadata, write_metrics
from qbench.harness.results.runs import RunFolder, new_run_dir, start_run

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


class UnknownExperimentError(ValueError):
    """A name that is not one of `EXPERIMENT_NAMES`."""


def select_experiments(only: Sequence[str] | None) -> list[ModuleType]:
    """The experiment modules to run, in report order (all of them when `only` is empty)."""
    available = {module.NAME: module for module in load_experiments()}
    if not only:
        return list(available.values())
    unknown = [name for name in only if name not in available]
    if unknown:
        raise UnknownExperimentError(
            f"unknown experiment {', '.join(map(repr, unknown))} (expected some of {', '.join(available)})"
        )
    return [available[name] for name in only]


def reproduce(
    *,
    out_dir: Path,
    quick: bool,
    repeats: int,
    experiments: Sequence[ModuleType],
    redis_url: str | None,
    progress: Progress,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
) -> dict[str, Any]:
    """Run `experiments` in order; returns run.json's content. A failing experiment is
    recorded (run.json, report) and the next one runs; rows already measured are kept.
    With `telemetry_interval_s` > 0 a sampler writes `telemetry.csv` beside the rows
    (run.json's `telemetry` says what it cost Redis); 0 switches it off."""
    # The folder is this run's alone: an earlier run's rows, report and errors go first.
    run = start_run(out_dir, "reproduce", {"mode": "quick" if quick else "full"})
    with run:
        return _reproduce(
            run,
            out_dir=out_dir,
            quick=quick,
            repeats=repeats,
            experiments=experiments,
            redis_url=redis_url,
            progress=progress,
            telemetry_interval_s=telemetry_interval_s,
        )


def _reproduce(
    run: RunFolder,
    *,
    out_dir: Path,
    quick: bool,
    repeats: int,
    experiments: Sequence[ModuleType],
    redis_url: str | None,
    progress: Progress,
    telemetry_interval_s: float,
) -> dict[str, Any]:
    started = time.monotonic()
    rows: list[Row] = []
    results: dict[str, Any] = {}
    meta = run.meta
    with redis_for_run(redis_url) as server:
        progress(
            f"Redis {server.info.version} ({server.info.allocator}, {server.info.source}) at {server.url}"
        )
        meta.update(
            run_metadata(
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
        )
        sampling = telemetry_for_run(
            server.url,
            out_dir,
            enabled=telemetry_interval_s > 0,
            interval_s=telemetry_interval_s,
            follow_children=True,
        )
        with sampling as telemetry:
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
                telemetry_t0 = telemetry.elapsed_s() if telemetry is not None else None
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
                if telemetry is not None and telemetry_t0 is not None:
                    # Where the experiment lies on telemetry.csv's time axis (its charts mark it).
                    results[module.NAME]["telemetry_t_s"] = [
                        round(telemetry_t0, 2),
                        round(telemetry.elapsed_s(), 2),
                    ]
                # Written after every experiment, so an interrupted run keeps what it measured.
                write_metrics(out_dir / METRICS_FILE, rows)
                meta["total_wall_s"] = round(time.monotonic() - started, 3)
                run.checkpoint()
        meta["telemetry"] = telemetry_meta(telemetry, interval_s=telemetry_interval_s)
        if telemetry is not None:
            progress.experiment = "telemetry"
            progress(
                f"{telemetry.summary.samples} samples; sampling cost Redis "
                f"{telemetry.summary.cost_commands_per_s:.2f} commands/s (left out of every figure)"
            )
    progress.experiment = "report"
    meta["total_wall_s"] = round(time.monotonic() - started, 3)
    rendering = time.monotonic()
    report = render_results(out_dir, rows=rows, meta=meta)
    # Rendering time is kept apart, so `qbench report` re-renders the same REPORT.md.
    meta["report_wall_s"] = round(time.monotonic() - rendering, 3)
    failed = [name for name, info in results.items() if info.get("status") != "ok"]
    failed += list(meta.get("render_errors", {}))
    if failed:
        run.finish("failed", reason=f"failed: {', '.join(dict.fromkeys(failed))}")
    else:
        run.finish("ok")
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


REFERENCE_DIR = Path("results/reference")
"""The committed reference run; only `--update-reference` (`make reproduce-reference`) writes it."""


def default_out_dir(quick: bool) -> Path:
    """`results/<UTC time>-quick|full` (`runs.new_run_dir`): a run never overwrites a committed one."""
    return new_run_dir("quick" if quick else "full")
