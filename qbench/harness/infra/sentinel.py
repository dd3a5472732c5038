"""A primary, one replica and one Sentinel on loopback, from the same `redis-server` binary:
the smallest setup in which a primary can fail over (`qbench chaos`'s failover case).

Sentinel runs as `redis-server FILE --sentinel`; it declares the primary down after
DOWN_AFTER_MS without an answer and promotes the replica (about 2 s after a SIGKILL on
these machines). Every process dies with this one, and `stop` removes their folders.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import (
    RedisServerProcess,
    RedisUnavailableError,
    die_with_parent,
    find_redis_server_binary,
    free_port,
)

MASTER_NAME = "qbench"
"""The master name the Sentinel monitors."""
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
READY_TIMEOUT_S = 15.0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelError(RuntimeError):
    """The setup did not come up, or a failover did not happen in time (one line: what was seen)."""


class SentinelSetup:
    """Primary + replica + Sentinel. `url` is the Sentinel URL drivers follow
    (`redis+sentinel://127.0.0.1:PORT/qbench`); `master_url()` asks the Sentinel where the
    primary is now."""

    def __init__(self, *, binary: str | None = None, extra_args: Sequence[str] = ()) -> None:
        self.binary = binary or find_redis_server_binary()
        self.extra_args = list(extra_args)
        self.servers: list[RedisServerProcess] = []
        self.sentinel_port = 0
        self.sentinel_proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="qbench-sentinel-"))
        self.failovers = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> SentinelSetup:
        primary = RedisServerProcess(self.binary, extra_args=self.extra_args)
        primary.start()
        self.servers.append(primary)
        replica = RedisServerProcess(
            self.binary, extra_args=[*self.extra_args, "--replicaof", "127.0.0.1", str(primary.port)]
        )
        replica.start()
        self.servers.append(replica)
        self._wait(lambda: self._link_up(replica), READY_TIMEOUT_S, "the replica to sync with its primary")
        self._start_sentinel(primary.port)
        return self

    def _start_sentinel(self, primary_port: int) -> None:
        last = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.sentinel_port = free_port()
            config = self.dir / "sentinel.conf"
            config.write_text(
                f"port {self.sentinel_port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.dir}\n"
                f"logfile {self.dir / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinel_proc = subprocess.Popen(
                [self.binary, str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            try:
                self._wait(self._sentinel_sees_replica, READY_TIMEOUT_S, "the Sentinel to find the replica")
                return
            except SentinelError as exc:
                last = str(exc)
                stop(self.sentinel_proc, grace_s=2)
                self.sentinel_proc = None
        raise SentinelError(last)

    def stop(self) -> None:
        """Stop the Sentinel and both servers; remove their folders. Safe to call twice."""
        if self.sentinel_proc is not None:
            stop(self.sentinel_proc, grace_s=2)
            self.sentinel_proc = None
        for server in self.servers:
            server.stop()
        self.servers.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The Sentinel URL a driver with `sentinel_setup` is given."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER_NAME}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sentinel_port}"

    def master_port(self) -> int:
        """The primary's port, as the Sentinel says now."""
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2, socket_connect_timeout=2)
        try:
            answer = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
            )
        finally:
            client.close()
        if not answer:
            raise SentinelError(f"the Sentinel knows no master {MASTER_NAME!r}")
        return int(answer[1])

    def master_url(self) -> str:
        return f"redis://127.0.0.1:{self.master_port()}/0"

    def server_on(self, port: int) -> RedisServerProcess:
        return next(s for s in self.servers if s.port == port)

    # -- the fault -------------------------------------------------------------------------
    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, no last replication); its port."""
        server = self.server_on(self.master_port())
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        return server.port

    def wait_promoted(self, old_port: int, timeout_s: float) -> float:
        """Seconds until the Sentinel names a new primary that answers as one; SentinelError
        (with what the Sentinel said last) after `timeout_s`."""
        started = time.monotonic()
        self._wait(
            lambda: (
                self.master_port() != old_port
                and self._role(self.master_port()) == "master"
                and self._failover_done()
            ),
            timeout_s,
            f"the Sentinel to promote the replica after the primary on port {old_port} died",
        )
        self.failovers += 1
        return time.monotonic() - started

    def rejoin(self, old_port: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the killed server again on its port (empty: no persistence), as a replica
        of the new primary. Returns once its link is up, so the next
        failover has a replica to promote."""
        server = self.server_on(old_port)
        # Started as a replica of the new primary: the Sentinel would convert it too, but
        # only after its next look at a down instance (about 10 s).
        server.extra_args = [*self.extra_args, "--replicaof", "127.0.0.1", str(self.master_port())]
        server.restart()
        self._wait(lambda: self._link_up(server), timeout_s, f"port {old_port} to rejoin as a replica")

    # -- probes ----------------------------------------------------------------------------
    @staticmethod
    def _info(port: int, section: str) -> dict[str, object]:
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def _role(self, port: int) -> str:
        return str(self._info(port, "replication").get("role"))

    def _failover_done(self) -> bool:
        """The Sentinel's own view is settled: its master is up and no failover is running
        (clients such as redis-py's refuse a master flagged down or in failover)."""
        client = redis.Redis(port=self.sentinel_port, socket_timeout=1, socket_connect_timeout=1)
        try:
            state = client.execute_command("SENTINEL", "MASTER", MASTER_NAME)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        fields = dict(zip(state[::2], state[1::2], strict=False)) if isinstance(state, list) else dict(state)
        flags = {f.strip() for f in _text(fields.get(b"flags", fields.get("flags", ""))).split(",")}
        return flags == {"master"}

    def _link_up(self, server: RedisServerProcess) -> bool:
        info = self._info(server.port, "replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinel_sees_replica(self) -> bool:
        client = redis.Redis(port=self.sentinel_port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME))  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _wait(self, condition: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if callable(condition) and condition():
                    return
                last = "not yet"
            except (redis.RedisError, OSError, StopIteration, RedisUnavailableError, SentinelError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            log = self.dir / "sentinel.log"
            if log.exists():
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                last += f"; sentinel log: {tail[0].strip()}" if tail else ""
        raise SentinelError(f"waited {timeout_s:g}s for {what}; last seen: {last}")
