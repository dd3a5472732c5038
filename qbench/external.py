"""A driver for a queue in any language: a producer command and a worker command.

A small TOML file names the two commands (they run in the TOML file's folder):

    name = "bullmq"                                   # the `variant` column
    distribution = "bullmq"                           # the library, as the report names it
    version_command = ["node", "-p", "require('bullmq/package.json').version"]
    setup = "1 Node.js process, Worker with concurrency {concurrency}"
    producer = ["node", "producer.mjs"]
    worker = ["node", "worker.mjs"]
    worker_processes = 1                              # worker commands qbench starts
    operations = ["enqueue", "enqueue_many", "priorities"]
    sink = "file"                                     # or "redis" (workers on other hosts)
    install = ["npm", "ci"]                           # run when `installed` is missing (npm ci
                                                      # needs a committed package-lock.json)
    installed = "node_modules/.package-lock.json"
    cluster_setup = "ioredis Cluster, prefix {bull}"  # optional: see Driver.cluster_setup

The contract (version `qbench.driver.API_VERSION`):

- Environment of both commands: QBENCH_REDIS_URL (the Redis to use: with `cluster_setup`,
  a `redis+cluster://HOST:PORT` URL on a Redis Cluster), QBENCH_QUEUE (the
  queue name), QBENCH_CONCURRENCY (jobs at once, over all worker processes),
  QBENCH_WORKER_INDEX (workers); the worker also gets QBENCH_SINK, a file, or with
  `sink = "redis"` QBENCH_SINK_REDIS_URL and QBENCH_SINK_KEY.
- Producer: prints `ready` on stdout once connected, then reads one request per line on
  stdin and answers each with one line, `ok` or `error MESSAGE`, in order, one request at
  a time (qbench sends the next only after the answer):
    `enqueue SENT_US` one job carrying SENT_US (integer microseconds since the Unix epoch);
    `enqueue SENT_US PRIORITY` the same with priority high, normal or low;
    `enqueue_many SENT_US COUNT` COUNT jobs in one bulk call, each carrying SENT_US;
    `ping` answer `ok` without touching Redis (qbench times the pipe with it).
  At end of input it closes its connections and exits. Anything else goes to stderr.
- Worker: runs the queue's workers; each job's handler, first thing, appends one line
  `SENT_US STARTED_US` (optionally ` PRIORITY`) to the QBENCH_SINK file in one write
  (O_APPEND), or RPUSHes that line to QBENCH_SINK_KEY on QBENCH_SINK_REDIS_URL.
- Stop: qbench sends SIGTERM; the worker stops taking jobs, lets running ones finish,
  closes its connections and exits 0 (after a grace period, 10 s, qbench kills its
  process group and reports that the worker ignored SIGTERM).

Commands, round trips, memory and keys left are measured at Redis, so they need nothing
more from the commands. Standard library only, like the rest of this package.

Where the commands run: the TOML file's folder when it is writable and not inside an
installed package (a checkout: `node_modules/` lands beside the scripts, git-ignored);
else, as for the drivers shipped in qbench's wheel, a copy of the folder in a per-user
cache (QBENCH_DRIVER_CACHE, else $XDG_CACHE_HOME/qbench/drivers, else
~/.cache/qbench/drivers), one copy per content, so the install step never writes into
site-packages.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, ClassVar

from qbench.driver import (
    ENV_CONCURRENCY,
    ENV_QUEUE,
    ENV_REDIS_URL,
    ENV_WORKER_INDEX,
    PRIORITIES,
    QUEUE_NAME,
    Driver,
    Op,
)

__all__ = ["ExternalDriver", "ExternalDriverError", "ExternalSpec", "external_driver_class"]

READY_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 60.0
VERSION_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 10.0
SINKS = ("file", "redis")
ENV_DRIVER_CACHE = "QBENCH_DRIVER_CACHE"
_NOT_COPIED = ("node_modules", ".qbench-install.lock", "__pycache__")


class ExternalDriverError(RuntimeError):
    """A TOML file that does not describe an external driver, or a command that broke the
    contract (one line)."""


@dataclass(frozen=True, kw_only=True)
class ExternalSpec:
    """An external driver's TOML file, checked."""

    path: Path
    name: str
    distribution: str
    producer: tuple[str, ...]
    worker: tuple[str, ...]
    operations: frozenset[Op]
    worker_processes: int = 1
    setup: str = ""
    version: str = "?"
    version_command: tuple[str, ...] = ()
    sink: str = "file"
    install: tuple[str, ...] = ()
    installed: str = ""
    cluster_setup: str = ""

    @property
    def source_folder(self) -> Path:
        """The TOML file's folder."""
        return self.path.parent

    @functools.cached_property
    def folder(self) -> Path:
        """Where the commands run: the TOML file's folder, or its copy in the per-user
        cache when that folder is read-only or inside an installed package (see the module
        docstring; `materialize` makes the copy)."""
        source = self.source_folder
        if os.access(source, os.W_OK) and not _inside_installed_package(source):
            return source
        return driver_cache_root() / f"{_safe(self.name)}-{_content_digest(source)}"

    def materialize(self) -> Path:
        """Make sure `folder` exists (copying the driver's files into the cache when it
        is a copy); returns it. Safe when several processes do it at once."""
        folder = self.folder
        if folder == self.source_folder or folder.is_dir():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.source_folder, staging, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        try:
            staging.rename(folder)
        except OSError:  # another process made it first: theirs is the same content
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def needs_install(self) -> bool:
        """True when an `install` command is given and what it installs is missing."""
        return bool(self.install) and not (self.installed and (self.folder / self.installed).exists())


def driver_cache_root() -> Path:
    """Where copies of read-only driver folders go (QBENCH_DRIVER_CACHE, else the XDG cache)."""
    explicit = os.environ.get(ENV_DRIVER_CACHE)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qbench" / "drivers"


def _inside_installed_package(folder: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in folder.parts)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _content_digest(folder: Path) -> str:
    """A digest of the folder's files (node_modules aside): a new qbench version with
    changed driver files gets a fresh copy, an unchanged one reuses the installed copy."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in _NOT_COPIED or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "distribution": str,
    "producer": list,
    "worker": list,
    "operations": list,
    "worker_processes": int,
    "setup": str,
    "version": str,
    "version_command": list,
    "sink": str,
    "install": list,
    "installed": str,
    "cluster_setup": str,
}


def _argv(source: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ExternalDriverError(f"{source}: {key} must be a list of strings (a command and its arguments)")
    return tuple(value)


def load_spec(path: Path) -> ExternalSpec:
    """Read and check an external driver's TOML file (ExternalDriverError: one line)."""
    path = path.resolve()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ExternalDriverError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ExternalDriverError(f"{path}: not a readable TOML file ({exc})") from None
    source = str(path)
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise ExternalDriverError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}")
    for key in ("name", "producer", "worker"):
        if key not in doc:
            raise ExternalDriverError(f"{source}: missing key {key!r}")
    for key, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, _KEYS[key]):
            raise ExternalDriverError(f"{source}: {key} = {value!r} has the wrong type")
    known_ops = {str(op) for op in Op}
    operations = [str(op) for op in doc.get("operations", [Op.ENQUEUE])]
    bad_ops = [op for op in operations if op not in known_ops]
    if bad_ops:
        raise ExternalDriverError(
            f"{source}: unknown operation(s) {', '.join(bad_ops)}; known: {', '.join(sorted(known_ops))}"
        )
    sink = doc.get("sink", "file")
    if sink not in SINKS:
        raise ExternalDriverError(f"{source}: sink = {sink!r}; expected one of {', '.join(SINKS)}")
    processes = doc.get("worker_processes", 1)
    if processes < 1:
        raise ExternalDriverError(f"{source}: worker_processes must be >= 1")
    return ExternalSpec(
        path=path,
        name=doc["name"],
        distribution=doc.get("distribution", doc["name"]),
        producer=_argv(source, "producer", doc["producer"]),
        worker=_argv(source, "worker", doc["worker"]),
        operations=frozenset(Op(op) for op in {Op.ENQUEUE, *operations}),
        worker_processes=processes,
        setup=doc.get("setup", ""),
        version=doc.get("version", "?"),
        version_command=_argv(source, "version_command", doc["version_command"])
        if "version_command" in doc
        else (),
        sink=sink,
        install=_argv(source, "install", doc["install"]) if "install" in doc else (),
        installed=doc.get("installed", ""),
        cluster_setup=doc.get("cluster_setup", ""),
    )


class _Lines:
    """Lines a child process writes, read by a thread so every wait can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout_s: float) -> str | None:
        """The next line; None at end of output; TimeoutError after `timeout_s`."""
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError from None


class ExternalDriver(Driver):
    """Drives an external producer and worker command (see the module docstring)."""

    spec: ClassVar[ExternalSpec]

    def __init__(self, *, url: str, concurrency: int) -> None:
        super().__init__(url=url, concurrency=concurrency)
        self._producer: subprocess.Popen[str] | None = None
        self._replies: _Lines | None = None

    @classmethod
    def version(cls) -> str:
        """`version_command`'s first line of output, else the TOML's `version`, else '?'."""
        if not cls.spec.version_command:
            return cls.spec.version
        try:
            done = subprocess.run(
                cls.spec.version_command,
                cwd=cls.spec.folder,
                capture_output=True,
                text=True,
                timeout=VERSION_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        lines = done.stdout.strip().splitlines()
        return lines[0].strip() if done.returncode == 0 and lines else "?"

    def setup(self) -> str:
        if self.spec.setup:
            return self.spec.setup.replace("{concurrency}", str(self.concurrency))
        return (
            f"{self.spec.worker_processes} `{' '.join(self.spec.worker)}` process(es), "
            f"concurrency {self.concurrency}"
        )

    def worker_processes(self) -> int:
        return self.spec.worker_processes

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                ENV_REDIS_URL: self.url,
                ENV_QUEUE: QUEUE_NAME,
                ENV_CONCURRENCY: str(self.concurrency),
                **extra,
            }
        )
        return env

    # -- producer -----------------------------------------------------------------------
    def connect(self) -> None:
        """Start the producer command and wait for its `ready` line."""
        try:
            self._producer = subprocess.Popen(
                self.spec.producer,
                cwd=self.spec.folder,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env(),
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            raise ExternalDriverError(f"cannot start the producer {self.spec.producer[0]!r}: {exc}") from None
        assert self._producer.stdout is not None
        self._replies = _Lines(self._producer.stdout)
        line = self._next_line("ready", READY_TIMEOUT_S)
        if line.split()[:1] != ["ready"]:
            raise ExternalDriverError(f"the producer's first line must be `ready`, not {line[:80]!r}")

    def _next_line(self, what: str, timeout_s: float) -> str:
        assert self._replies is not None and self._producer is not None
        try:
            line = self._replies.next(timeout_s)
        except TimeoutError:
            raise ExternalDriverError(f"the producer did not answer {what} within {timeout_s:g}s") from None
        if line is None:
            code = self._producer.wait(timeout=CLOSE_TIMEOUT_S)
            raise ExternalDriverError(f"the producer exited with {code} before answering {what}")
        return line

    def request(self, line: str) -> None:
        """Send one request line and wait for its `ok` (ExternalDriverError otherwise)."""
        if self._producer is None:
            self.connect()
        assert self._producer is not None and self._producer.stdin is not None
        try:
            self._producer.stdin.write(line + "\n")
            self._producer.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self._producer.poll()
            raise ExternalDriverError(f"the producer exited ({code}) before {line.split()[0]}") from None
        reply = self._next_line(line.split()[0], REPLY_TIMEOUT_S)
        if reply == "ok":
            return
        if reply.startswith("error"):
            raise ExternalDriverError(f"the producer: {reply[5:].strip() or 'error'}")
        raise ExternalDriverError(f"the producer answered {reply[:80]!r} (expected `ok` or `error ...`)")

    def ping(self) -> None:
        """One protocol round trip without Redis."""
        self.request("ping")

    def enqueue(self, sent_at: float) -> None:
        self.request(f"enqueue {round(sent_at * 1e6)}")

    def enqueue_priority(self, sent_at: float, priority: str) -> None:
        if priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
        self.request(f"enqueue {round(sent_at * 1e6)} {priority}")

    def enqueue_many(self, sent_at: Sequence[float]) -> None:
        if sent_at:
            self.request(f"enqueue_many {round(sent_at[0] * 1e6)} {len(sent_at)}")

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            assert producer.stdin is not None
            producer.stdin.close()
        try:
            producer.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()

    # -- worker -------------------------------------------------------------------------
    def run_worker(self, *, index: int) -> None:
        """Run the worker command; SIGTERM/SIGINT are passed on to it. Raises
        ExternalDriverError when it exits non-zero without being asked to stop."""
        try:
            child = subprocess.Popen(
                self.spec.worker,
                cwd=self.spec.folder,
                stdin=subprocess.DEVNULL,
                env=self._env(**{ENV_WORKER_INDEX: str(index)}),
            )
        except OSError as exc:
            raise ExternalDriverError(f"cannot start the worker {self.spec.worker[0]!r}: {exc}") from None
        stopping = threading.Event()

        def forward(signum: int, _frame: FrameType | None) -> None:
            stopping.set()
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        code = child.wait()  # a signal handler runs, then the wait resumes (PEP 475)
        if code != 0 and not stopping.is_set():
            raise ExternalDriverError(f"the worker command exited with {code}")


_CLASSES: dict[Path, type[ExternalDriver]] = {}


def external_driver_class(path: str | Path) -> type[ExternalDriver]:
    """The driver class an external driver's TOML file describes (one class per file)."""
    resolved = Path(path).resolve()
    if resolved not in _CLASSES:
        spec = load_spec(resolved)
        attrs: dict[str, Any] = {
            "spec": spec,
            "name": spec.name,
            "distribution": spec.distribution,
            "operations": spec.operations,
            "requirements": None,
            "cluster_setup": spec.cluster_setup,
            "__module__": __name__,
            "__doc__": f"External driver {spec.name} ({resolved}).",
        }
        class_name = "External_" + "".join(c if c.isalnum() else "_" for c in spec.name)
        _CLASSES[resolved] = type(class_name, (ExternalDriver,), attrs)
    return _CLASSES[resolved]
