"""Exact cost counting: client-side round trips and server-side commands.

A round trip is one request/response exchange: one command, one pipeline, one script
call. It is counted where redis-py writes a request to the socket, so connection
handshakes (HELLO, CLIENT SETINFO, AUTH) are not counted. Server commands come from
`INFO commandstats` deltas, read on a separate connection; the harness's own INFO
calls are left out, and commands run inside scripts are counted (Redis counts them).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.connection import Connection

HARNESS_COMMANDS = frozenset({"info"})


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


def command_stats(client: redis.Redis) -> Counter[str]:
    """Calls per command so far (`INFO commandstats`), keyed by lower-case name."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def stats_delta(before: Mapping[str, int], after: Mapping[str, int]) -> Counter[str]:
    delta: Counter[str] = Counter()
    for name, calls in after.items():
        if name in HARNESS_COMMANDS:
            continue
        diff = calls - before.get(name, 0)
        if diff > 0:
            delta[name] = diff
    return delta


@dataclass
class Cost:
    """What one measured block cost: client round trips and server commands."""

    round_trips: int = 0
    client_commands: int = 0
    server_commands: Counter[str] = field(default_factory=Counter)

    @property
    def commands(self) -> int:
        return sum(self.server_commands.values())


@contextmanager
def measure(counter: RoundTripCounter, stats_client: redis.Redis) -> Iterator[Cost]:
    """Count what the code inside the block costs.

    `counter` must be the one wired into the measured client's connections and
    `stats_client` a separate, uncounted client to the same server. Other clients of
    the same server add to the server-side count: measure on a server of your own.
    """
    cost = Cost()
    before_stats = command_stats(stats_client)
    rt0, cmd0 = counter.snapshot()
    try:
        yield cost
    finally:
        rt1, cmd1 = counter.snapshot()
        cost.round_trips = rt1 - rt0
        cost.client_commands = cmd1 - cmd0
        cost.server_commands = stats_delta(before_stats, command_stats(stats_client))
