"""The peers run: a Redis and a virtualenv per driver, measure, write, render."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from qbench.harness.infra.redis_server import ServerInfo, describe, provision
from qbench.harness.infra.telemetry import (
    DEFAULT_INTERVAL_S,
    TelemetryError,
    telemetry_for_run,
    telemetry_meta,
)
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root
from qbench.harness.peers.registry import FAULT_CONFIGURATIONS, DriverSpec, discover, order, resolve
from qbench.harness.peers.report import render_report
from qbench.harness.peers.runner import (
    FULL,
    QUICK,
    DriverFailedError,
    ServerProbe,
    Sizes,
    driver_process,
    measure_driver,
)
from qbench.harness.results.rows import (
    METRICS_FILE,
    RUN_FILE,
    Row,
    read_metrics,
    run_metadata,
    write_metrics,
)
from qbench.harness.results.runs import FAILED, RunFolder, start_run
from qbench.loader import DriverLoadError, module_source
from qbench.queue_impl.connection import redact_url

REPORT_FILE = "PEERS.md"


@dataclass
class SuiteResult:
    rows: list[Row] = field(default_factory=list)
    drivers: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    telemetry: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per driver: what its sampling was and cost (`telemetry_meta`)."""


class PeersInputError(ValueError):
    """A driver name, size or server the run cannot use (one line)."""


def parse_only(text: str | None) -> list[str]:
    """Driver names in report order (all available drivers when `text` is empty);
    PeersInputError for a name no driver has."""
    registry = discover()
    if not text:  # the fault-test configurations run only when named
        return [name for name in registry.specs if name not in FAULT_CONFIGURATIONS]
    wanted = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in registry.specs]
    if unknown or not wanted:
        broken = [registry.broken[name] for name in unknown if name in registry.broken]
        if broken:
            raise PeersInputError(broken[0])
        raise PeersInputError(
            f"--only: unknown driver(s) {', '.join(unknown) or '(none given)'}; "
            f"expected some of {', '.join(registry.specs)}"
        )
    return order(wanted)


def select_drivers(only: str | None, drivers: Sequence[str] = ()) -> list[DriverSpec]:
    """The drivers a run measures: `--only` names, then each `--driver` (a name or a
    reference); all available drivers when neither is given. PeersInputError (one line) for
    a driver that cannot be loaded or a name given twice."""
    registry = discover()
    try:
        chosen = [registry.specs[name] for name in parse_only(only)] if only or not drivers else []
        chosen += [resolve(text, registry) for text in drivers]
    except DriverLoadError as exc:
        raise PeersInputError(str(exc)) from None
    seen: dict[str, DriverSpec] = {}
    for spec in chosen:
        if spec.name in seen and seen[spec.name].ref != spec.ref:
            raise PeersInputError(
                f"two drivers are named {spec.name!r}: {seen[spec.name].ref} and {spec.ref}"
            )
        seen.setdefault(spec.name, spec)
    return [seen[name] for name in order(list(seen))]


def sizes_for(*, quick: bool, jobs: int | None, repeats: int | None, stall_s: float | None = None) -> Sizes:
    """FULL or QUICK sizes with the user's overrides; PeersInputError for a bad value."""
    sizes = QUICK if quick else FULL
    if stall_s is not None:
        if not stall_s > 0:
            raise PeersInputError("--stall-timeout must be > 0 seconds")
        sizes = dataclasses.replace(sizes, stall_s=stall_s)
    if jobs is not None:
        if jobs < 1:
            raise PeersInputError("--jobs must be >= 1")
        sizes = dataclasses.replace(sizes, jobs=jobs)
    if repeats is not None:
        if repeats < 1:
            raise PeersInputError("--repeats must be >= 1")
        sizes = dataclasses.replace(sizes, repeats=repeats)
    return sizes


MAX_DB = 15


@contextlib.contextmanager
def server_for(name: str, url: str | None, *, db: int = 1) -> Iterator[tuple[str, ServerInfo]]:
    """A fresh redis-server for `name`, or logical DB `db` of a server given by URL.

    A server qbench did not start is never flushed: its DB for this driver must be
    empty, and whatever the library leaves there stays (the run says where).
    """
    if url is None:
        with provision(None, use_docker=False) as server:
            yield server.url, server.info
        return
    if not 1 <= db <= MAX_DB:
        raise PeersInputError(f"--redis-url: {name} would need DB {db}; at most {MAX_DB} drivers per run")
    parts = urlsplit(url)
    driver_url = urlunsplit(parts._replace(path=f"/{db}"))
    info = describe(driver_url, "url", owned=False)
    client = redis.Redis.from_url(driver_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        size = client.dbsize()
    finally:
        client.close()
    if size:
        raise PeersInputError(
            f"{redact_url(driver_url)} holds {size} keys: {name} needs an empty DB "
            "(qbench never flushes a server it did not start)"
        )
    yield driver_url, info


@contextlib.contextmanager
def side_sink(spec: DriverSpec) -> Iterator[str | None]:
    """A side redis-server for a driver whose workers RPUSH their pickups (`sink = "redis"`),
    so those pushes never count against the measured server; None for the others."""
    ext = spec.external
    if ext is None or ext.sink != "redis":
        yield None
        return
    with provision(None, use_docker=False) as server:
        yield server.url


def run_suite(
    drivers: Sequence[DriverSpec | str],
    sizes: Sizes,
    *,
    url: str | None = None,
    progress: Callable[[str], None] = print,
    logs_dir: Path | None = None,
    telemetry_dir: Path | None = None,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
) -> SuiteResult:
    """Measure each driver in turn; a driver that fails is recorded, the others still run.

    `drivers` are specs or names of available drivers. With `url`, driver i (from 0) uses
    logical DB i + 1 of that server. With `telemetry_dir`, each driver's run is sampled
    into `telemetry_dir/<driver>.csv` (`telemetry_interval_s` 0: not sampled).
    """
    result = SuiteResult()
    specs = [d if isinstance(d, DriverSpec) else discover().specs[d] for d in drivers]
    work_root = Path(tempfile.mkdtemp(prefix="qbench-peers-"))
    try:
        for position, spec in enumerate(specs):
            name = spec.name
            progress(f"{name}: preparing its environment")
            try:
                python = ensure_env(spec, log=(logs_dir / f"{name}-install.log") if logs_dir else None)
            except PeerEnvError as exc:
                result.failures[name] = str(exc)
                progress(f"{name}: FAILED: {exc}")
                continue
            work_dir = work_root / name
            load_before = os.getloadavg()
            source = module_source(spec.cls)
            path_root = import_root([source] if source is not None else [])
            try:
                with (
                    server_for(name, url, db=position + 1) as (driver_url, info),
                    side_sink(spec) as sink_url,
                    telemetry_for_run(
                        driver_url,
                        telemetry_dir,
                        enabled=telemetry_dir is not None and telemetry_interval_s > 0,
                        interval_s=telemetry_interval_s,
                        follow_children=True,  # the driver's producer and worker processes
                        file_name=f"{name}.csv",
                    ) as telemetry,
                ):
                    result.servers[name] = info.as_dict()
                    # Each snapshot in step with the sampler, its requests left out.
                    probe = ServerProbe(driver_url, sampler=telemetry)
                    try:
                        with driver_process(
                            spec=spec,
                            python=python,
                            url=driver_url,
                            concurrency=sizes.concurrency,
                            work_dir=work_dir,
                            import_root=path_root,
                            stall_s=sizes.stall_s,
                            sink_url=sink_url,
                            stop_grace_s=sizes.stop_grace_s,
                            progress=progress,
                        ) as driver:
                            progress(f"{name}: {driver.ready.get('version')}, {driver.ready.get('setup')}")
                            started = time.monotonic()
                            rows = measure_driver(driver, probe, sizes, progress)
                            meta = {
                                **driver.ready,
                                "ref": spec.ref,
                                "origin": spec.origin,
                                "seconds": round(time.monotonic() - started, 1),
                                "loadavg_before": [round(x, 2) for x in load_before],
                                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                                "notices": driver.notices,
                            }
                        # Kept only once the driver closed cleanly: a close error fails it.
                        result.rows += rows
                        result.drivers[name] = meta
                    finally:
                        probe.close()
                if telemetry is not None:
                    result.telemetry[name] = telemetry_meta(telemetry, interval_s=telemetry_interval_s)
            except (
                DriverFailedError,
                TelemetryError,
                redis.RedisError,
                OSError,
                ValueError,
                KeyError,
            ) as exc:
                reason = str(exc) if isinstance(exc, DriverFailedError) else f"{type(exc).__name__}: {exc}"
                result.failures[name] = reason.strip().splitlines()[0] if reason.strip() else reason
                progress(f"{name}: FAILED: {result.failures[name]}")
                if logs_dir is not None and work_dir.exists():
                    for log in work_dir.glob("*.log"):
                        logs_dir.mkdir(parents=True, exist_ok=True)
                        shutil.copy(log, logs_dir / f"{name}-{log.name}")
            finally:
                shutil.rmtree(path_root, ignore_errors=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return result


def write_suite(
    result: SuiteResult,
    sizes: Sizes,
    out_dir: Path,
    *,
    mode: str,
    command: str | None = None,
    run: RunFolder | None = None,
) -> None:
    """metrics.csv, run.json and PEERS.md of a battery; run.json says failed when a driver did.

    `run`: the run the verb started before measuring (`start_run(out_dir, "peers", ...)`),
    which cleared an earlier run's files. Without it (a battery run by a test or a script),
    the run is started here and the files already measured into `out_dir` (logs, telemetry) stay.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir / METRICS_FILE, result.rows)
    first_server = next(iter(result.servers.values()), {})
    meta = run_metadata(
        server=first_server,
        mode=mode,
        extra={
            "experiment": "peers",
            "command": command,
            "sizes": dataclasses.asdict(sizes),
            "drivers": result.drivers,
            "failures": result.failures,
            "servers": result.servers,
            "telemetry": result.telemetry,
        },
    )
    with contextlib.ExitStack() as stack:
        if run is None:
            run = stack.enter_context(start_run(out_dir, "peers", meta, clear=False))
        else:
            run.meta.update(meta)
            run.checkpoint()
        render_report(result.rows, run.meta, out_dir)
        if result.failures:
            run.finish(FAILED, reason=failures_text(result.failures))


def failures_text(failures: Mapping[str, str]) -> str:
    """run.json's reason for a run in which drivers failed (each driver's own line is in the report)."""
    return f"driver(s) {', '.join(failures)} failed"


def render_saved(out_dir: Path) -> Path:
    """Re-render a saved peers run's report and charts from its rows; PeersInputError if unreadable."""
    try:
        rows = read_metrics(out_dir / METRICS_FILE)
        meta = json.loads((out_dir / RUN_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise PeersInputError(str(exc).splitlines()[0]) from None
    render_report(rows, meta, out_dir)
    return out_dir / REPORT_FILE  # the path `qbench.harness.results.runs.render` expects


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
