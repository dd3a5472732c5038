"""`qbench peers --cluster`: each driver tried once on a Redis Cluster, one outcome each.

Per driver: a fresh 3-master cluster that qbench starts and stops (or the user's cluster,
which must hold no keys and takes one driver per run: qbench deletes nothing there), the
driver given what its library documents for a cluster (`Driver.cluster_setup`: it gets a
`redis+cluster://` URL) or else the `redis://` URL of one master, as a user who points the
library at a cluster node would; then `jobs` jobs enqueued one call at a time and the
driver's workers started. Every wait is bounded by the stall timeout. The outcome:
`works` (every job enqueued and processed), `fails at <phase>` with the first line of the
error the library raised, or `not attempted` when qbench could not run the attempt (its
environment, or the cluster, did not come up): only that makes the run incomplete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from qbench.harness.infra.nodelink import node_label
from qbench.harness.infra.redis_server import (
    RedisUnavailableError,
    ServerInfo,
    describe,
    one_line,
    provision_cluster,
)
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.peers.runner import DriverFailedError, DriverProcess, Sizes, driver_process
from qbench.harness.peers.suite import PeersInputError, side_sink
from qbench.harness.results.rows import Row, params
from qbench.loader import module_source
from qbench.queue_impl.connection import node_url, redact_url

EXPERIMENT = "peers_cluster"
FULL = Sizes(jobs=500, stall_s=30.0)
QUICK = Sizes(jobs=200, stall_s=20.0)
"""Only `jobs`, `concurrency` and `stall_s` matter here: one short attempt, no timings."""

WORKS, FAILS, NOT_ATTEMPTED = "works", "fails", "not attempted"
PHASES = ("start", "enqueue", "process")
NODE_HOW = "no cluster option in its documentation"
ERROR_CHARS = 200
EXTERNAL_ERROR_PREFIX = "ExternalDriverError: the producer: "
LOG_HEAD, LOG_TAIL = 120, 40
"""Lines of a failing driver's logs kept in the results' logs/ (the rest is repetition)."""

_ERROR_LINE = re.compile(r"(?:^|[\s.:(\[])([A-Z][A-Za-z0-9_]*(?:Error|Exception|Fault))(?::\s+(\S.*))?$")
"""A line naming an exception: `...ResponseError: MOVED 866 127.0.0.1:7001`, `ReplyError: ...`."""


@dataclass(frozen=True, slots=True)
class Given:
    """What a driver was handed for the cluster."""

    kind: str
    """`cluster` (a `redis+cluster://` URL for its library's cluster option) or `node`."""
    url: str
    how: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "url": redact_url(self.url), "how": self.how}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    """`works`, `fails` or `not attempted`."""
    phase: str = ""
    """Where it failed: start, enqueue or process."""
    error: str = ""
    """The first line of the library's error, or why qbench did not attempt it."""

    def text(self) -> str:
        if self.status == WORKS:
            return WORKS
        if self.status == FAILS:
            return f"fails at {self.phase}: {self.error}"
        return f"{NOT_ATTEMPTED}: {self.error}"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "phase": self.phase, "error": self.error, "text": self.text()}


@dataclass
class Attempt:
    """One driver's try: what it was given, what happened, and the counts."""

    name: str
    jobs: int
    outcome: Outcome
    given: Given | None = None
    enqueued: int | None = None
    processed: int | None = None
    """None: the phase did not run."""
    keys: dict[str, int] = field(default_factory=dict)
    """Keys left on each master (`host:port`) after the attempt."""
    ready: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> list[Row]:
        """Tidy rows: jobs enqueued and processed (the outcome in params), keys per master."""
        if self.given is None:
            return []
        cell = params(
            given=self.given.kind,
            jobs=self.jobs,
            outcome=self.outcome.status.replace(" ", "_"),
            phase=self.outcome.phase or "-",
        )
        rows = []
        if self.enqueued is not None:
            rows.append(Row(EXPERIMENT, self.name, cell, "jobs_enqueued", self.enqueued, "jobs"))
        if self.processed is not None:
            rows.append(Row(EXPERIMENT, self.name, cell, "jobs_processed", self.processed, "jobs"))
        rows += [
            Row(EXPERIMENT, self.name, params(node=node), "keys_left", count, "keys")
            for node, count in sorted(self.keys.items())
        ]
        return rows

    def meta(self, spec: DriverSpec) -> dict[str, Any]:
        """What run.json keeps about the attempt (the report reads the outcome text here)."""
        return {
            "version": self.ready.get("version") or spec.declared_version(),
            "setup": self.ready.get("setup", ""),
            "ref": spec.ref,
            "origin": spec.origin,
            "given": self.given.as_dict() if self.given is not None else None,
            "outcome": self.outcome.as_dict(),
            "jobs": self.jobs,
            "seconds": round(self.seconds, 1),
            "server": self.server,
        }


@dataclass
class ClusterSuiteResult:
    attempts: list[Attempt] = field(default_factory=list)
    drivers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rows(self) -> list[Row]:
        return [row for attempt in self.attempts for row in attempt.rows()]

    @property
    def failures(self) -> dict[str, str]:
        """Drivers qbench could not attempt, and why (a library's failure is not one)."""
        return {a.name: a.outcome.error for a in self.attempts if a.outcome.status == NOT_ATTEMPTED}


def sizes_for(*, quick: bool, jobs: int | None, stall_s: float | None) -> Sizes:
    """QUICK or FULL with the user's overrides; PeersInputError for a bad value."""
    sizes = QUICK if quick else FULL
    if jobs is not None:
        if jobs < 1:
            raise PeersInputError("--jobs must be >= 1")
        sizes = dataclasses.replace(sizes, jobs=jobs)
    if stall_s is not None:
        if not stall_s > 0:
            raise PeersInputError("--stall-timeout must be > 0 seconds")
        sizes = dataclasses.replace(sizes, stall_s=stall_s)
    return sizes


def given_for(spec: DriverSpec, cluster_url: str) -> Given:
    """The cluster URL for a driver that declares its library's cluster option, else the
    `redis://` URL of the node the cluster URL names."""
    how = str(getattr(spec.cls, "cluster_setup", "") or "")
    if how:
        return Given("cluster", cluster_url, how)
    return Given("node", node_url(cluster_url), NODE_HOW)


def first_error(text: str) -> str | None:
    """The first line of `text` that names an exception, as `Type: message` (module path
    dropped, at most ERROR_CHARS characters); None when no line does."""
    for line in text.splitlines():
        match = _ERROR_LINE.search(line.strip())
        if match:
            found = f"{match[1]}: {match[2].strip()}" if match[2] else match[1]
            return found if len(found) <= ERROR_CHARS else found[: ERROR_CHARS - 3] + "..."
    return None


def _log_error(work_dir: Path, log: str) -> str | None:
    path = work_dir / log
    return first_error(path.read_text(errors="replace")) if path.exists() else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def copy_log(source: Path, target: Path, *, head: int = LOG_HEAD, tail: int = LOG_TAIL) -> None:
    """Copy a log's first `head` and last `tail` lines (a library that fails repeats its
    traceback for as long as it runs: the first one and the last lines say it all)."""
    lines = source.read_text(errors="replace").splitlines(keepends=True)
    if len(lines) > head + tail:
        cut = len(lines) - head - tail
        lines = [*lines[:head], f"[... {cut} lines left out by qbench ...]\n", *lines[-tail:]]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines))


def keys_by_node(info: ServerInfo) -> dict[str, int]:
    """DBSIZE of every master (read only)."""
    counts = {}
    for url in info.node_urls():
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            counts[node_label(url)] = int(client.dbsize())
        finally:
            client.close()
    return counts


def check_user_cluster(url: str, drivers: Sequence[DriverSpec]) -> ServerInfo:
    """The user's cluster at `url`, if qbench may use it: one driver, and no key on any
    master (qbench never deletes keys on a cluster it did not start). PeersInputError
    otherwise; RedisUnavailableError when it cannot be reached or is not a cluster."""
    if len(drivers) != 1:
        raise PeersInputError(
            f"a cluster qbench did not start takes one driver per run (--only NAME), not {len(drivers)}: "
            "qbench deletes nothing there, so each driver needs it empty"
        )
    info = describe(url, "url", owned=False)
    held = {node: n for node, n in keys_by_node(info).items() if n}
    if held:
        where = ", ".join(f"{node} holds {n}" for node, n in sorted(held.items()))
        raise PeersInputError(
            f"{redact_url(url)}: {where} key(s); the cluster attempt needs an empty cluster "
            "(qbench never deletes keys on a cluster it did not start)"
        )
    return info


@contextlib.contextmanager
def cluster_for(url: str | None) -> Iterator[ServerInfo]:
    """A fresh local 3-master cluster qbench starts, then stops (`url` None), or the
    user's cluster at `url` (see `check_user_cluster`; nothing is deleted from it)."""
    if url is not None:
        yield describe(url, "url", owned=False)
        return
    with provision_cluster() as cluster:
        yield cluster.info


def _start_error(exc: DriverFailedError, work_dir: Path) -> str:
    return _log_error(work_dir, "producer.log") or _clip(str(exc).removeprefix("start: "))


def enqueue_phase(driver: DriverProcess, jobs: int, stall_s: float) -> tuple[int, str | None]:
    """Enqueue `jobs` jobs one call at a time: (how many calls succeeded, the first error).

    A call the library answers with an error is counted and the next one sent (a client
    of one node may get some keys through and not others); the phase stops at a call that
    does not answer within the stall timeout, or once no call has succeeded for that long.
    """
    done, error = 0, None
    last_success = time.monotonic()
    for _ in range(jobs):
        sent = time.monotonic()
        try:
            driver.enqueue(1)
        except DriverFailedError as exc:
            # An external driver's producer answers `error MESSAGE`: the message is the library's.
            text = str(exc).removeprefix("enqueue: ").removeprefix(EXTERNAL_ERROR_PREFIX)
            if time.monotonic() - sent >= stall_s:  # no answer: the producer's state is unknown
                return done, error or _clip(text)
            error = error or _clip(text)
            if time.monotonic() - last_success > stall_s:
                break
            continue
        done += 1
        last_success = time.monotonic()
    return done, error


def process_phase(driver: DriverProcess, expected: int, work_dir: Path) -> tuple[int, str | None]:
    """Start the workers, wait until `expected` jobs have run (bounded by the stall
    timeout), stop them: (jobs processed, the first error if they did not all run)."""
    sink = driver.new_sink("cluster")
    error = None
    try:
        driver.start_workers(sink)
        try:
            driver.wait_for_drain(sink, expected)
        except DriverFailedError as exc:
            error = _log_error(work_dir, "worker.log") or _clip(str(exc))
        finally:
            driver.stop_workers()
        processed = sink.count()
    finally:
        sink.close()
    if error is None and processed != expected:
        error = f"{processed} jobs processed for {expected} enqueued"
    return processed, error


def attempt_driver(
    spec: DriverSpec,
    *,
    python: str,
    given: Given,
    sizes: Sizes,
    work_dir: Path,
    path_root: Path,
    sink_url: str | None,
) -> Attempt:
    """Start the driver with `given`, enqueue, process: the outcome and the counts."""
    n = sizes.jobs
    attempt = Attempt(spec.name, n, Outcome(WORKS), given=given)
    try:
        with driver_process(
            spec=spec,
            python=python,
            url=given.url,
            concurrency=sizes.concurrency,
            work_dir=work_dir,
            import_root=path_root,
            stall_s=sizes.stall_s,
            sink_url=sink_url,
        ) as driver:
            attempt.ready = dict(driver.ready)
            attempt.enqueued, enqueue_error = enqueue_phase(driver, n, sizes.stall_s)
            if enqueue_error is not None:
                attempt.outcome = Outcome(FAILS, "enqueue", enqueue_error)
            if attempt.enqueued:
                attempt.processed, process_error = process_phase(driver, attempt.enqueued, work_dir)
                if process_error is not None and attempt.outcome.status == WORKS:
                    attempt.outcome = Outcome(FAILS, "process", process_error)
    except DriverFailedError as exc:  # the producer did not start
        attempt.outcome = Outcome(FAILS, "start", _start_error(exc, work_dir))
    return attempt


def run_cluster_suite(
    drivers: Sequence[DriverSpec],
    sizes: Sizes,
    *,
    url: str | None = None,
    progress: Callable[[str], None] = print,
    logs_dir: Path | None = None,
) -> ClusterSuiteResult:
    """Try each driver on a cluster; every driver gets an outcome, the others still run.

    Without `url`, each driver gets a fresh 3-master cluster that qbench starts and stops
    (about 2 s: nothing to clean up, and no library meets another's keys or scripts).
    With `url` (a node of the user's cluster, as `redis+cluster://`), the caller has
    checked it with `check_user_cluster`.
    """
    result = ClusterSuiteResult()
    work_root = Path(tempfile.mkdtemp(prefix="qbench-peers-cluster-"))
    try:
        for spec in drivers:
            attempt = _attempt_one(spec, sizes, url=url, work_root=work_root, progress=progress)
            result.attempts.append(attempt)
            result.drivers[spec.name] = attempt.meta(spec)
            progress(f"{spec.name}: {attempt.outcome.text()}")
            work_dir = work_root / spec.name
            if logs_dir is not None and attempt.outcome.status != WORKS and work_dir.exists():
                for log in sorted(work_dir.glob("*.log")):
                    if log.stat().st_size:
                        copy_log(log, logs_dir / f"{spec.name}-{log.name}")
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return result


def _attempt_one(
    spec: DriverSpec, sizes: Sizes, *, url: str | None, work_root: Path, progress: Callable[[str], None]
) -> Attempt:
    name = spec.name
    started = time.monotonic()
    progress(f"{name}: preparing its environment")
    try:
        python = ensure_env(spec)
    except PeerEnvError as exc:
        return Attempt(name, sizes.jobs, Outcome(NOT_ATTEMPTED, error=f"its environment: {exc}"))
    source = module_source(spec.cls)
    path_root = import_root([source] if source is not None else [])
    try:
        with cluster_for(url) as info, side_sink(spec) as sink_url:
            given = given_for(spec, info.url)
            progress(f"{name}: given {given.kind} {redact_url(given.url)} ({given.how})")
            attempt = attempt_driver(
                spec,
                python=python,
                given=given,
                sizes=sizes,
                work_dir=work_root / name,
                path_root=path_root,
                sink_url=sink_url,
            )
            attempt.server = info.as_dict()
            with contextlib.suppress(redis.RedisError):  # the counts are extra: the outcome stands
                attempt.keys = keys_by_node(info)
    except RedisUnavailableError as exc:
        attempt = Attempt(name, sizes.jobs, Outcome(NOT_ATTEMPTED, error=f"the cluster: {exc}"))
    except (redis.RedisError, OSError) as exc:
        attempt = Attempt(name, sizes.jobs, Outcome(NOT_ATTEMPTED, error=one_line(exc)))
    finally:
        shutil.rmtree(path_root, ignore_errors=True)
    attempt.seconds = time.monotonic() - started
    return attempt
