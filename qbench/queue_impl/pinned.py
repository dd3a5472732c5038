"""The `conn` toggle: how the queue's hot calls (its Lua scripts and blocking waits) reach Redis.

`PoolCalls` (conn=pool) goes through redis-py's client: each call checks a connection
out of the pool (a lock, a queue and a poll(2) that checks the socket is clean), wraps
the command in the client's retry policy and runs its reply callback. `PinnedCalls`
(conn=pinned) gives each thread one connection of the same pool for good and sends the
packed command on it directly: about a third of the client CPU per call, the same bytes
on the wire. The connection class is the pool's, so the harness's round-trip counting
sees every request either way. A Redis Cluster client always takes the pool path (a
script's node depends on its keys).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.connection import Connection, ConnectionPool
from redis.exceptions import NoScriptError

from qbench.queue_impl.clients import RedisClient

RETRY_DELAY_S = 0.01
"""Pause before the one retry of a call whose connection broke (the pool path's policy)."""

ScriptArg = str | bytes | int | float


class Calls(Protocol):
    """The queue's hot calls, one implementation per value of the `conn` toggle."""

    def script(self, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        """EVALSHA the script (loading it once when the server does not know it)."""
        ...

    def bzpopmin(self, key: str, timeout: float) -> Any:
        """BZPOPMIN on one key; None when the wait timed out."""
        ...

    def bzpopmin_then_script(
        self, key: str, timeout: float, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> tuple[Any, Any]:
        """BZPOPMIN on `key`, and the script in the same write: Redis runs the script when the
        wait returns (woken or timed out). Returns (the BZPOPMIN reply, None on a timeout;
        the script's reply). A script the server does not know is loaded and run again."""
        ...

    def command(self, *args: ScriptArg) -> Any:
        """One plain command; its raw reply (conn=pinned: on this thread's kept connection)."""
        ...

    def script_and_wait(
        self,
        source: str,
        sha: str,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """EVALSHA the script and `WAIT replicas timeout_ms` on the same connection in one
        round trip (WAIT covers only the writes of the connection it is sent on); returns
        the script's reply and how many replicas acknowledged."""
        ...


def script_sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PoolCalls:
    """conn=pool: redis-py's client for every call."""

    client: RedisClient
    _scripts: dict[str, Any] = field(default_factory=dict)

    def script(self, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        registered = self._scripts.get(sha)
        if registered is None:
            registered = self._scripts[sha] = self.client.register_script(source)
        return registered(keys=list(keys), args=list(args))

    def bzpopmin(self, key: str, timeout: float) -> Any:
        return self.client.bzpopmin(key, timeout=timeout)  # type: ignore[arg-type]

    def bzpopmin_then_script(
        self, key: str, timeout: float, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> tuple[Any, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.bzpopmin(key, timeout=timeout)  # type: ignore[arg-type]
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        woke, result = pipe.execute(raise_on_error=False)
        if isinstance(woke, Exception):
            raise woke
        if isinstance(result, NoScriptError):
            return woke, self.script(source, sha, keys, args)
        if isinstance(result, Exception):
            raise result
        return woke, result

    def command(self, *args: ScriptArg) -> Any:
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    def script_and_wait(
        self,
        source: str,
        sha: str,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        # A pipeline keeps both commands on one connection; a script it does not know is
        # loaded and both are sent again (EVALSHA failed, so nothing was written).
        for _attempt in (0, 1):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            result, acked = pipe.execute(raise_on_error=False)
            if isinstance(result, NoScriptError):
                self.client.script_load(source)
                continue
            if isinstance(result, Exception):
                raise result
            return result, int(acked)
        raise NoScriptError(f"script {sha} not loaded")


class _Pin:
    """One thread's connection; handed back to the pool when the thread's locals go."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.connection: Connection = pool.get_connection()
        self._release = weakref.finalize(self, _release, weakref.ref(pool), self.connection)


def _release(pool_ref: weakref.ref[ConnectionPool], connection: Connection) -> None:
    """Hand the connection back when its thread is gone; a pool that was closed or reset
    meanwhile (it no longer counts the connection as its own) gets nothing: the
    connection is just closed."""
    if getattr(connection, "pid", None) != os.getpid():
        return  # a forked child dropping its copy of a parent thread's locals: not ours
    pool = pool_ref()
    owned = pool is not None and pool.owns_connection(connection) and connection in _known(pool)
    if owned:
        assert pool is not None
        pool.release(connection)
    else:
        connection.disconnect()  # type: ignore[no-untyped-call]


def _known(pool: ConnectionPool) -> list[Connection]:
    """The connections a pool created and still tracks (each pool class keeps its own list)."""
    found = getattr(pool, "_connections", None)  # BlockingConnectionPool
    if found is None:
        found = [*getattr(pool, "_in_use_connections", ()), *getattr(pool, "_available_connections", ())]
    return list(found)


class PinnedCalls:
    """conn=pinned: each thread sends on a connection of its own, kept for good."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool: ConnectionPool = client.connection_pool
        self._local = threading.local()
        self.broken = 0
        """Calls whose connection broke (or was closed mid-call): a reply may have been lost
        (orphan_scan=after_reconnect looks for lost claims only after one). A plain counter:
        readers only compare it with an earlier reading."""

    def _pin(self) -> _Pin:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is None:
            pin = self._local.pin = _Pin(self.pool)
        return pin

    def _call(self, *args: ScriptArg) -> Any:
        """Send one command on this thread's connection and read its reply; a broken
        connection is reopened and the command sent once more (the pool path's policy:
        a reply lost with the connection can run a command twice). A call cut short by
        anything else (a signal, a greenlet killed at a load run's end) closes the
        connection too: its reply may still be on the way, and the next call must not
        read it as its own."""
        connection = self._pin().connection
        for attempt in (0, 1):
            try:
                connection.send_packed_command(connection.pack_command(*args), check_health=False)  # type: ignore[no-untyped-call]
                return connection.read_response()
            except redis.ResponseError:
                raise  # the server's answer: the connection is in step
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.broken += 1
                connection.disconnect()  # type: ignore[no-untyped-call]
                if attempt:
                    raise
                time.sleep(RETRY_DELAY_S)
            except BaseException:
                self.broken += 1
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
        raise AssertionError("unreachable")

    def _call_pair(self, first: Sequence[ScriptArg], second: Sequence[ScriptArg]) -> tuple[Any, Any]:
        """Two commands in one write on this thread's connection, and both replies (an error
        reply is returned, not raised, so the second reply is always read). Broken
        connections: as `_call`."""
        connection = self._pin().connection
        for attempt in (0, 1):
            try:
                packed = connection.pack_commands([first, second])  # type: ignore[no-untyped-call]
                connection.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]
                replies = []
                for _ in range(2):
                    try:
                        replies.append(connection.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
                return replies[0], replies[1]
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.broken += 1
                connection.disconnect()  # type: ignore[no-untyped-call]
                if attempt:
                    raise
                time.sleep(RETRY_DELAY_S)
            except BaseException:
                self.broken += 1
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
        raise AssertionError("unreachable")

    def script_and_wait(
        self,
        source: str,
        sha: str,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        for _attempt in (0, 1):
            result, acked = self._call_pair(
                ("EVALSHA", sha, len(keys), *keys, *args), ("WAIT", replicas, timeout_ms)
            )
            if isinstance(result, NoScriptError):
                self._call("SCRIPT", "LOAD", source)
                continue
            if isinstance(result, Exception):
                raise result
            if isinstance(acked, Exception):
                raise acked
            return result, int(acked)
        raise NoScriptError(f"script {sha} not loaded")

    def script(self, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        try:
            return self._call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            self._call("SCRIPT", "LOAD", source)
            return self._call("EVALSHA", sha, len(keys), *keys, *args)

    def bzpopmin(self, key: str, timeout: float) -> Any:
        return self._call("BZPOPMIN", key, timeout)

    def bzpopmin_then_script(
        self, key: str, timeout: float, source: str, sha: str, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> tuple[Any, Any]:
        woke, result = self._call_pair(("BZPOPMIN", key, timeout), ("EVALSHA", sha, len(keys), *keys, *args))
        if isinstance(woke, Exception):
            raise woke
        if isinstance(result, NoScriptError):
            return woke, self.script(source, sha, keys, args)
        if isinstance(result, Exception):
            raise result
        return woke, result

    def command(self, *args: ScriptArg) -> Any:
        return self._call(*args)


def make_calls(client: RedisClient, pinned: bool) -> Calls:
    """The hot-call path for `client`: pinned only for a single-node client."""
    if pinned and isinstance(client, redis.Redis):
        return PinnedCalls(client)
    return PoolCalls(client)
