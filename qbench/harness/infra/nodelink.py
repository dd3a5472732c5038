"""One counted connection to one Redis node: what telemetry and observe send, by name.

`NodeLink(url)` owns a single connection (RESP2, no CLIENT SETINFO) and counts every
command written on it (its handshake too) under the name INFO commandstats uses
(`get`, `memory|usage`), so a sampler can subtract exactly what it sent. `allowed`
refuses any other command before it reaches the socket (`ForbiddenCommandError`);
`budget` (a `TokenBucket`) makes every command take a token first.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, parse_url
from redis.retry import Retry

from qbench.harness.infra.budget import TokenBucket

SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0
CONTAINER_COMMANDS = frozenset(
    {
        "acl",
        "client",
        "cluster",
        "command",
        "config",
        "function",
        "latency",
        "memory",
        "module",
        "object",
        "pubsub",
        "script",
        "slowlog",
        "xgroup",
        "xinfo",
    }
)
"""Commands that INFO commandstats reports per subcommand (`cmdstat_memory|usage`)."""


class ForbiddenCommandError(RuntimeError):
    """A command outside a link's allowlist was about to be sent; it was not sent."""


# -- ---------------------------------------------------------------
def packed_command_names(packed: Any) -> list[str]:
    """The commandstats names (`get`, `memory|usage`) of the commands in a packed request."""
    chunks = [packed] if isinstance(packed, (bytes, bytearray, memoryview, str)) else list(packed)
    data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
    names, pos, size = [], 0, len(data)
    while pos < size and data[pos : pos + 1] == b"*":
        end = data.index(b"\r\n", pos)
        argc = int(data[pos + 1 : end])
        pos = end + 2
        args: list[bytes] = []
        for _ in range(argc):
            end = data.index(b"\r\n", pos)
            length = int(data[pos + 1 : end])
            if len(args) < 2:
                args.append(data[end + 2 : end + 2 + length])
            pos = end + 2 + length + 2
        name = args[0].decode(errors="replace").lower() if args else "?"
        if name in CONTAINER_COMMANDS and len(args) > 1:
            name = f"{name}|{args[1].decode(errors='replace').lower()}"
        names.append(name)
    return names


def _link_connection_class(
    base: type[Connection],
    before_send: Callable[[list[str]], None],
    after_send: Callable[[list[str]], None],
) -> type[Connection]:
    class LinkConnection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # No CLIENT SETINFO on connect: a quieter footprint, and one an ACL user
            # without CLIENT rights does not see rejected (redis-py 5-8 attribute names).
            for attr in ("driver_info", "lib_name", "lib_version"):
                if hasattr(self, attr):
                    setattr(self, attr, None)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            names = packed_command_names(command)
            before_send(names)
            super().send_packed_command(command, check_health=check_health)
            after_send(names)  # counted once written: a failed write reached no server

    LinkConnection.__name__ = f"Link{base.__name__}"
    return LinkConnection


def node_label(url: str) -> str:
    """`host:port` of a Redis URL (`unix:/path` for a socket)."""
    options = parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in options:
        return f"unix:{options['path']}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


class NodeLink:
    """One connection to one node; every command sent on it is counted by name.

    `allowed` (commandstats names) makes any other command raise `ForbiddenCommandError`
    before it reaches the socket; `budget` makes every command take a token first. Calls
    are serialized (one connection, one lock), so the counts line up with INFO exactly.
    """

    def __init__(
        self,
        url: str,
        *,
        budget: TokenBucket | None = None,
        allowed: frozenset[str] | None = None,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.name = node_label(url)
        self.budget = budget
        self.allowed = allowed
        self.sent: Counter[str] = Counter()
        self._capture: Counter[str] | None = None
        self._prepaid = 0
        self._lock = threading.RLock()
        base: type[Connection] = parse_url(url).get("connection_class", Connection)  # type: ignore[no-untyped-call]
        pool = ConnectionPool.from_url(
            url,
            connection_class=_link_connection_class(base, self._before_send, self._after_send),
            protocol=2,  # RESP2: no HELLO nor CLIENT MAINT_NOTIFICATIONS on connect, only AUTH/SELECT
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # type: ignore[no-untyped-call]
        )
        self.client = redis.Redis(connection_pool=pool)

    def _before_send(self, names: list[str]) -> None:
        if self.allowed is not None:
            forbidden = [n for n in names if n not in self.allowed]
            if forbidden:
                raise ForbiddenCommandError(
                    f"refusing to send {', '.join(forbidden).upper()} to {self.name}: "
                    f"only {', '.join(sorted(self.allowed)).upper()} are allowed"
                )
        if self.budget is not None:
            # Commands beyond the one paid for (a reconnect's AUTH/SELECT) pay here.
            unpaid = max(0, len(names) - self._prepaid)
            self._prepaid = max(0, self._prepaid - len(names))
            if unpaid:
                self.budget.acquire(unpaid)
        if self._capture is not None and names[:1] == ["info"]:
            # What was sent before this INFO, a reconnect's AUTH/SELECT just now included.
            self._capture.update(self.sent)

    def _after_send(self, names: list[str]) -> None:
        self.sent.update(names)

    def _prepay(self) -> None:
        # The token is taken before the lock, so a caller waiting on the budget never
        # holds the link: the sampler's INFO and the scanner's commands take turns.
        if self.budget is not None:
            self.budget.acquire(1)

    def execute(self, *args: Any) -> Any:
        """Run one command on this link (counted, checked against `allowed`, budgeted)."""
        self._prepay()
        with self._lock:
            self._prepaid = 1 if self.budget is not None else 0
            try:
                return self.client.execute_command(*args)  # type: ignore[no-untyped-call]
            finally:
                self._prepaid = 0

    def sent_snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.sent)

    @contextlib.contextmanager
    def held(self) -> Iterator[Counter[str]]:
        """Hold the link: inside, every command it sent has been answered and none starts
        (a sampler waits), so counters read from the server meanwhile hold exactly the
        commands yielded: what it has sent so far, one request each."""
        with self._lock:
            yield Counter(self.sent)

    def info(self, sections: Sequence[str]) -> tuple[dict[str, Any], Counter[str]]:
        """INFO `sections`, and what this link had sent before the INFO itself."""
        self._prepay()
        with self._lock:
            before: Counter[str] = Counter()
            self._capture = before
            self._prepaid = 1 if self.budget is not None else 0
            try:
                reply = self.client.execute_command("INFO", *sections)  # type: ignore[no-untyped-call]
            finally:
                self._capture = None
                self._prepaid = 0
            return reply, before

    def close(self) -> None:
        with self._lock:
            self.client.close()
            self.client.connection_pool.disconnect()
