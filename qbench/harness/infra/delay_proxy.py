"""A TCP delay proxy on loopback: adds network delay to Redis traffic, and can cut it.

`tc netem` is not available on these kernels, so the harness injects delay itself.
The proxy runs in a child process (`python -m qbench.harness.infra.delay_proxy`) so that its
waiting never competes for the measured client's GIL. One thread, one selector:
every chunk read from one side is held until `arrival + one-way delay`, then written
to the other side, in order (a chunk never overtakes an earlier one). Sub-millisecond
waits need care: epoll and poll timeouts round up to whole milliseconds (why an asyncio
proxy cannot add 0.5 ms), so the loop waits in select(2), whose timeout has microsecond
resolution, with the process's timer slack cut to 1 µs, and busy-waits only the last
`SPIN_WINDOW_S` before a deadline.

A round-trip delay of D ms is applied as D/2 on the way to the server and D/2 on
the way back, like a symmetric link with RTT D. Calibrate at 0 ms (`calibrate`) to
know the proxy's own cost. The parent controls the child with JSON lines on its
stdin/stdout: set delay, cut every connection, refuse new ones, read stats, stop.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import select
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from qbench.harness.infra.processes import stop
from qbench.harness.infra.redis_server import die_with_parent

SPIN_WINDOW_S = 0.0002
"""Closer than this to a deadline, poll without sleeping: a select() wake-up can be late by
tens of microseconds, more on a busy machine."""
_PR_SET_TIMERSLACK = 29
SELECT_FD_LIMIT = 1024
"""select(2) watches descriptors below FD_SETSIZE only: about 500 proxied connections."""
RECV_BYTES = 256 * 1024
CONTROL_TIMEOUT_S = 10.0


class DelayProxyError(RuntimeError):
    """The proxy child did not start or stopped answering."""


@dataclass(frozen=True, slots=True)
class ProxyStats:
    connections_open: int
    connections_total: int
    connections_cut: int
    connections_refused: int
    bytes_to_server: int
    bytes_to_client: int
    to_server_ms: float
    to_client_ms: float
    late_ms_median: float
    late_ms_max: float
    """How late chunks were released after their deadline (recent chunks)."""


# -- the child: one selector loop ------------------------------------------------------
class _Link:
    """One direction of one proxied connection: a delay line from `src` to `dst`."""

    __slots__ = ("dst", "eof", "out", "pending", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.out = bytearray()
        self.eof = False


class _Connection:
    __slots__ = ("client", "closed", "to_client", "to_server", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.to_server = _Link(client, upstream)
        self.to_client = _Link(upstream, client)
        self.closed = False


class _ProxyLoop:
    def __init__(self, listener: socket.socket, upstream: tuple[str, int]) -> None:
        self.listener = listener
        self.upstream = upstream
        # select(2): microsecond timeouts (see the module docstring); fine for the few
        # hundred connections a benchmark opens (file descriptors must stay below 1024).
        self.sel = selectors.SelectSelector()
        self.connections: set[_Connection] = set()
        self.to_server_s = 0.0
        self.to_client_s = 0.0
        self.refusing = False
        self.counts = collections.Counter[str]()
        self.control = bytearray()
        self.running = True
        self.late_s: collections.deque[float] = collections.deque(maxlen=10_000)
        """How late each chunk was released (the proxy's own error), recent chunks."""

    def run(self) -> None:
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, "control")
        while self.running:
            deadline = self._release_due()
            if deadline is None:
                timeout = None
            else:
                remaining = deadline - time.perf_counter()
                timeout = 0.0 if remaining <= SPIN_WINDOW_S else remaining - SPIN_WINDOW_S
            for key, mask in self.sel.select(timeout):
                self._dispatch(key.data, mask)
        for conn in list(self.connections):
            self._close(conn, reset=True)

    def _dispatch(self, data: Any, mask: int) -> None:
        if data == "accept":
            self._accept()
        elif data == "control":
            self._read_control()
        else:
            conn, side = data
            if conn.closed:
                return
            link_in = conn.to_server if side == "client" else conn.to_client
            link_out = conn.to_client if side == "client" else conn.to_server
            if mask & selectors.EVENT_WRITE:
                self._flush(conn, link_out)
            if mask & selectors.EVENT_READ and not conn.closed:
                self._receive(conn, link_in)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.refusing:
            self.counts["refused"] += 1
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2.0)
        except OSError:
            self.counts["refused"] += 1
            _reset(client)
            return
        if upstream.fileno() >= SELECT_FD_LIMIT:  # select(2) cannot watch it: refuse, visibly
            self.counts["refused"] += 1
            _reset(client)
            _reset(upstream)
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(client, upstream)
        self.connections.add(conn)
        self.counts["total"] += 1
        self.sel.register(client, selectors.EVENT_READ, (conn, "client"))
        self.sel.register(upstream, selectors.EVENT_READ, (conn, "upstream"))

    def _receive(self, conn: _Connection, link: _Link) -> None:
        try:
            data = link.src.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn, reset=True)
            return
        if not data:
            link.eof = True
            self._set_events(conn, link.src)
            self._close_if_drained(conn)
            return
        delay = self.to_server_s if link is conn.to_server else self.to_client_s
        link.pending.append((time.perf_counter() + delay, data))
        self.counts["bytes_to_server" if link is conn.to_server else "bytes_to_client"] += len(data)

    def _release_due(self) -> float | None:
        """Move every due chunk to its socket; the earliest deadline still pending."""
        earliest: float | None = None
        now = time.perf_counter()
        for conn in list(self.connections):
            for link in (conn.to_server, conn.to_client):
                released = False
                while link.pending and link.pending[0][0] <= now:
                    deadline, data = link.pending.popleft()
                    link.out += data
                    released = True
                    self.late_s.append(now - deadline)
                if released:
                    self._flush(conn, link)
                if conn.closed:
                    break
                if link.pending and (earliest is None or link.pending[0][0] < earliest):
                    earliest = link.pending[0][0]
        return earliest

    def _flush(self, conn: _Connection, link: _Link) -> None:
        if link.out:
            try:
                sent = link.dst.send(link.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(conn, reset=True)
                return
            del link.out[:sent]
        self._set_events(conn, link.dst)
        self._close_if_drained(conn)

    def _set_events(self, conn: _Connection, sock: socket.socket) -> None:
        if conn.closed:
            return
        reading = conn.to_server if sock is conn.client else conn.to_client
        writing = conn.to_client if sock is conn.client else conn.to_server
        events = (0 if reading.eof else selectors.EVENT_READ) | (selectors.EVENT_WRITE if writing.out else 0)
        side = "client" if sock is conn.client else "upstream"
        if events:
            try:
                self.sel.modify(sock, events, (conn, side))
            except KeyError:
                self.sel.register(sock, events, (conn, side))
        else:
            # A socket with nothing to read or write stays registered for nothing: unregister.
            with contextlib.suppress(KeyError):
                self.sel.unregister(sock)

    def _close_if_drained(self, conn: _Connection) -> None:
        for link in (conn.to_server, conn.to_client):
            if link.eof and not link.pending and not link.out:
                self._close(conn, reset=False)
                return

    def _close(self, conn: _Connection, *, reset: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.connections.discard(conn)
        for sock in (conn.client, conn.upstream):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()

    def cut(self) -> int:
        cut = len(self.connections)
        for conn in list(self.connections):
            self._close(conn, reset=True)
        self.counts["cut"] += cut
        return cut

    def _read_control(self) -> None:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        if not chunk:  # the parent is gone
            self.running = False
            return
        self.control += chunk
        while b"\n" in self.control:
            line, _, rest = bytes(self.control).partition(b"\n")
            self.control = bytearray(rest)
            reply = self._command(json.loads(line))
            os.write(1, json.dumps(reply).encode() + b"\n")

    def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "delay":
            self.to_server_s = float(request["to_server_ms"]) / 1000
            self.to_client_s = float(request["to_client_ms"]) / 1000
            return {"ok": True}
        if op == "cut":
            return {"ok": True, "cut": self.cut()}
        if op == "refuse":
            self.refusing = bool(request["on"])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": self._stats()}
        if op == "stop":
            self.running = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _stats(self) -> dict[str, Any]:
        return {
            "connections_open": len(self.connections),
            "connections_total": self.counts["total"],
            "connections_cut": self.counts["cut"],
            "connections_refused": self.counts["refused"],
            "bytes_to_server": self.counts["bytes_to_server"],
            "bytes_to_client": self.counts["bytes_to_client"],
            "to_server_ms": self.to_server_s * 1000,
            "to_client_ms": self.to_client_s * 1000,
            "late_ms_median": statistics.median(self.late_s) * 1000 if self.late_s else 0.0,
            "late_ms_max": max(self.late_s) * 1000 if self.late_s else 0.0,
        }


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0): the peer sees a reset, as when a link drops."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qbench.harness.infra.delay_proxy")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    args = parser.parse_args(argv)
    up_host, _, up_port = args.upstream.rpartition(":")
    host, _, port = args.listen.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    with contextlib.suppress(OSError, AttributeError):  # default slack (50 µs) blurs short waits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000)
    os.write(1, json.dumps({"port": listener.getsockname()[1]}).encode() + b"\n")
    _ProxyLoop(listener, (up_host, int(up_port))).run()
    listener.close()
    return 0


# -- the parent's handle -----------------------------------------------------------------
class DelayProxy:
    """Handle on a proxy child process forwarding `127.0.0.1:<port>` to the upstream.

    Use as a context manager, or `start()` / `stop()`. Thread-safe.
    """

    def __init__(self, *, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = listen_host
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str) -> DelayProxy:
        """A proxy in front of the Redis at `url` (redis:// or rediss://, TCP only)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"delay proxy needs a redis://HOST:PORT URL, got {parts.scheme}://")
        return cls(upstream_host=parts.hostname, upstream_port=parts.port or 6379)

    def start(self) -> DelayProxy:
        if self._proc is not None:
            return self
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qbench.harness.infra.delay_proxy",
                "--upstream",
                f"{self.upstream_host}:{self.upstream_port}",
                "--listen",
                f"{self.host}:0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        try:
            self.port = int(self._read_reply()["port"])
        except BaseException:
            self._kill()
            raise
        return self

    def proxied_url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's (credentials, db kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}"))

    def set_delay(self, *, round_trip_ms: float) -> None:
        """Add `round_trip_ms` per request/response: half on each direction."""
        self.set_one_way(to_server_ms=round_trip_ms / 2, to_client_ms=round_trip_ms / 2)

    def set_one_way(self, *, to_server_ms: float, to_client_ms: float) -> None:
        if min(to_server_ms, to_client_ms) < 0:
            raise ValueError("delays must be >= 0 ms")
        self._request({"op": "delay", "to_server_ms": to_server_ms, "to_client_ms": to_client_ms})

    def cut(self) -> int:
        """Reset every open connection (both sides see RST); returns how many were cut."""
        return int(self._request({"op": "cut"})["cut"])

    def refuse_new(self, refuse: bool = True) -> None:
        """While on, new connections are reset at once (the server looks unreachable)."""
        self._request({"op": "refuse", "on": refuse})

    def stats(self) -> ProxyStats:
        return ProxyStats(**self._request({"op": "stats"})["stats"])

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(DelayProxyError, OSError, ValueError):
            self._request({"op": "stop"})
        self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        stop(proc, grace_s=5, ask=None)  # asked already: `stop` and the closed stdin end it

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise DelayProxyError("delay proxy is not running")
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise DelayProxyError("delay proxy exited") from None
            reply = self._read_reply()
        if not reply.get("ok", True):
            raise DelayProxyError(str(reply.get("error")))
        return reply

    def _read_reply(self) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise DelayProxyError("delay proxy is not running")
        ready, _, _ = select.select([proc.stdout], [], [], CONTROL_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise DelayProxyError(f"delay proxy did not answer (exit code {proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- calibration -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calibration:
    """Median PING round trip direct and through the proxy, at the proxy's current delay."""

    set_round_trip_ms: float
    direct_ms: float
    proxied_ms: float
    samples: int

    @property
    def added_ms(self) -> float:
        """What the proxy adds per round trip: at 0 ms setting, its own cost."""
        return self.proxied_ms - self.direct_ms


def median_ping_ms(url: str, samples: int) -> float:
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.ping()  # connect outside the timed loop
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            client.ping()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    finally:
        client.close()


def calibrate(proxy: DelayProxy, url: str, *, round_trip_ms: float, samples: int = 200) -> Calibration:
    """Set `round_trip_ms`, then compare PING direct to `url` and through the proxy."""
    proxy.set_delay(round_trip_ms=round_trip_ms)
    direct = median_ping_ms(url, samples)
    proxied = median_ping_ms(proxy.proxied_url(url), samples)
    return Calibration(round_trip_ms, direct, proxied, samples)


if __name__ == "__main__":
    sys.exit(_child_main())
