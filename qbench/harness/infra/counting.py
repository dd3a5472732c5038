"""Exact cost counting: client-side round trips and server-side commands.

A round trip is one request/response exchange: one command, one pipeline, one script
call. It is counted where redis-py writes a request to the socket, so connection
handshakes (HELLO, CLIENT SETINFO, AUTH) are not counted. On a Redis Cluster every
node's connections are counted: a pipeline that spans nodes is one round trip per node,
and a MOVED or ASK redirect that redis-py resends (ASKING included) is a round trip too.

Server commands come from `INFO commandstats` deltas, read on separate connections, one
per primary (`ServerNodes`): summed, and per node. The harness's own INFO calls are left
out, and commands run inside scripts are counted (Redis counts them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster
from redis.connection import ConnectionPool

from qbench.harness.infra.nodelink import node_label
from qbench.queue_impl.connection import CONNECT_TIMEOUT_S, is_cluster_url, node_url

# Client-side counting lives with the reference queue, so its driver (qbench.drivers) can count
# its round trips without importing the harness; re-exported here for the harness.
from qbench.queue_impl.counting import RoundTripCounter as RoundTripCounter
from qbench.queue_impl.counting import counting_connection_class as counting_connection_class

HARNESS_COMMANDS = frozenset({"info"})


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


class ServerNodes:
    """The primaries of the Redis under test, each with an uncounted client of its own:
    the one server of a plain URL, every master of a cluster URL (replicas only copy
    their master's writes, so a shard's work is its master's)."""

    def __init__(self, clients: Mapping[str, redis.Redis]) -> None:
        self.clients = dict(sorted(clients.items()))

    @classmethod
    def connect(cls, url: str, *, socket_timeout_s: float = 10.0) -> ServerNodes:
        """Discover the primaries behind `url` (one CLUSTER SLOTS for a cluster) and open
        one client to each, with the URL's credentials and TLS settings."""
        seed = ConnectionPool.from_url(
            node_url(url), socket_timeout=socket_timeout_s, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
        if not is_cluster_url(url):
            return cls({node_label(url): redis.Redis(connection_pool=seed)})
        seed.disconnect()
        probe = RedisCluster.from_url(node_url(url), socket_timeout=socket_timeout_s)
        try:
            addresses = sorted((node.host, int(node.port)) for node in probe.get_primaries())  # type: ignore[no-untyped-call]
        finally:
            probe.close()
        clients = {}
        for host, port in addresses:
            options = {**seed.connection_kwargs, "host": host, "port": port}
            pool = ConnectionPool(connection_class=seed.connection_class, **options)
            clients[f"{host}:{port}"] = redis.Redis(connection_pool=pool)
        return cls(clients)

    @classmethod
    def of(cls, client: redis.Redis) -> ServerNodes:
        """The one server `client` talks to."""
        kwargs = client.connection_pool.connection_kwargs
        return cls({f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}": client})

    @property
    def names(self) -> list[str]:
        return list(self.clients)

    def command_stats(self) -> dict[str, Counter[str]]:
        """Calls per command so far, per node (`INFO commandstats`)."""
        return {name: command_stats(client) for name, client in self.clients.items()}

    def used_memory(self) -> dict[str, int]:
        """`used_memory` per node (bytes)."""
        return {name: int(client.info("memory")["used_memory"]) for name, client in self.clients.items()}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
            client.connection_pool.disconnect()


@dataclass
class Cost:
    """What one measured block cost: client round trips and server commands (summed over
    the nodes, and per node: `host:port` -> calls per command)."""

    round_trips: int = 0
    client_commands: int = 0
    server_commands: Counter[str] = field(default_factory=Counter)
    server_commands_by_node: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def commands(self) -> int:
        return sum(self.server_commands.values())

    def commands_by_node(self) -> dict[str, int]:
        """Server commands per node, every node listed (0 for one that ran none)."""
        return {node: sum(calls.values()) for node, calls in self.server_commands_by_node.items()}


@contextmanager
def measure(counter: RoundTripCounter, stats: ServerNodes | redis.Redis) -> Iterator[Cost]:
    """Count what the code inside the block costs.

    `counter` must be the one wired into the measured client's connections, and `stats`
    the server's nodes (or one uncounted client of a single server). Other clients of
    the same server add to the server-side count: measure on a server of your own.
    """
    nodes = stats if isinstance(stats, ServerNodes) else ServerNodes.of(stats)
    cost = Cost()
    before_stats = nodes.command_stats()
    rt0, cmd0 = counter.snapshot()
    try:
        yield cost
    finally:
        rt1, cmd1 = counter.snapshot()
        cost.round_trips = rt1 - rt0
        cost.client_commands = cmd1 - cmd0
        after_stats = nodes.command_stats()
        cost.server_commands_by_node = {
            node: stats_delta(before_stats[node], after_stats[node]) for node in nodes.names
        }
        cost.server_commands = sum(cost.server_commands_by_node.values(), Counter())
