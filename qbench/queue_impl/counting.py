"""Client-side round trips: counted where redis-py writes a request to the socket.

A round trip is one request/response exchange: one command, one pipeline, one script
call. Connection handshakes (HELLO, CLIENT SETINFO, AUTH) are not counted. On a Redis
Cluster every node's connections are counted: a pipeline that spans nodes is one round
trip per node, and a MOVED or ASK redirect that redis-py resends (ASKING included) is a
round trip too.

It lives with the reference queue so that the presets' driver (`qbench.drivers.reference_driver`)
counts its own round trips without importing the harness; the harness re-exports it from
`qbench.harness.infra.counting`, beside the server-side command counts.
"""

from __future__ import annotations

import threading
from typing import Any

from redis.connection import Connection


class RoundTripCounter:
    """Thread-safe tally of round trips and of the commands they carried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.round_trips = 0
        self.commands = 0

    def add(self, commands: int) -> None:
        with self._lock:
            self.round_trips += 1
            self.commands += commands

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.round_trips, self.commands


def counting_connection_class(base: type[Connection], counter: RoundTripCounter) -> type[Connection]:
    """A subclass of `base` (plain, TLS or unix) that reports every request to `counter`."""

    class CountingConnection(base):  # type: ignore[valid-type,misc]
        _handshaking = False

        def on_connect_check_health(self, check_health: bool = True) -> None:
            self._handshaking = True
            try:
                super().on_connect_check_health(check_health=check_health)
            finally:
                self._handshaking = False

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if not self._handshaking:
                # A packed request is one buffer or a list of buffers; a pipeline
                # packs all its commands into one request.
                counter.add(_count_commands(command))
            super().send_packed_command(command, check_health=check_health)

    CountingConnection.__name__ = f"Counting{base.__name__}"
    return CountingConnection


def _count_commands(packed: Any) -> int:
    chunks = [packed] if isinstance(packed, (bytes, bytearray, memoryview, str)) else list(packed)
    data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
    return max(_resp_commands(data), 1)


def _resp_commands(data: bytes) -> int:
    """How many RESP arrays (commands) a request holds; bulk strings are skipped by length."""
    count, pos, size = 0, 0, len(data)
    while pos < size and data[pos : pos + 1] == b"*":
        end = data.index(b"\r\n", pos)
        argc = int(data[pos + 1 : end])
        pos = end + 2
        for _ in range(argc):
            end = data.index(b"\r\n", pos)
            pos = end + 2 + int(data[pos + 1 : end]) + 2
        count += 1
    return count
