"""The Redis connection pool, sized and timed by the variant's `pool` toggles, for one
server (`redis://`, `rediss://`, `unix://`) or a Redis Cluster (`redis+cluster://`,
`rediss+cluster://`: any node's address; the client discovers the others)."""

from __future__ import annotations

from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool, parse_url
from redis.retry import Retry

from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import Variant

CONNECT_TIMEOUT_S = 2.0
"""An unreachable server fails within a few seconds instead of hanging."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""A cluster URL's scheme, and the scheme of its nodes' URLs."""

ConnectionClassWrapper = Callable[[type[Connection]], type[Connection]]


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """The URL of the node a cluster URL names (`redis+cluster://h:p` -> `redis://h:p`);
    any other URL unchanged."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}{sep}{rest}" if scheme in CLUSTER_SCHEMES else url


def cluster_url(url: str) -> str:
    """`url` as a cluster URL (`redis://h:p` -> `redis+cluster://h:p`); a cluster URL unchanged."""
    if is_cluster_url(url):
        return url
    scheme, sep, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES.values():
        raise ValueError(f"a Redis Cluster is reached over redis:// or rediss://, not {scheme}://")
    return f"{scheme}+cluster{sep}{rest}"


def make_pool(
    url: str,
    variant: Variant,
    *,
    workers: int = 1,
    wrap_connection_class: ConnectionClassWrapper | None = None,
) -> ConnectionPool:
    """A pool for `workers` concurrent users of one queue.

    `wait` mode blocks up to `pool_timeout_s` for a free connection (go-redis's
    behaviour); `raise` mode fails at once with "Too many connections".
    `wrap_connection_class` lets the harness count round trips on every connection.
    """
    base: type[Connection] = parse_url(url).get("connection_class", Connection)  # type: ignore[no-untyped-call]
    connection_class = wrap_connection_class(base) if wrap_connection_class else base
    common: dict[str, object] = {
        "max_connections": variant.pool_size_for(workers),
        "connection_class": connection_class,
        "socket_timeout": variant.socket_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        # One quick retry hides a dropped idle connection; longer outages are the
        # worker loop's job (it reconnects with backoff).
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
    }
    if variant.pool_mode == "wait":
        return BlockingConnectionPool.from_url(url, timeout=variant.pool_timeout_s, **common)
    return ConnectionPool.from_url(url, **common)


def make_client(
    url: str,
    variant: Variant,
    *,
    workers: int = 1,
    wrap_connection_class: ConnectionClassWrapper | None = None,
) -> RedisClient:
    """A client for `workers` concurrent users: `redis.Redis` on one pool, or for a cluster
    URL a `RedisCluster` with one such pool per node (same size, timeouts and wait mode;
    `wrap_connection_class` then wraps every node's connections, redirects included)."""
    if is_cluster_url(url):
        return _make_cluster_client(
            node_url(url), variant, workers=workers, wrap_connection_class=wrap_connection_class
        )
    pool = make_pool(url, variant, workers=workers, wrap_connection_class=wrap_connection_class)
    # from_pool: the client owns its pool, so close() also closes every pooled socket.
    return redis.Redis.from_pool(pool)


def _make_cluster_client(
    url: str, variant: Variant, *, workers: int, wrap_connection_class: ConnectionClassWrapper | None
) -> RedisCluster:
    base: type[Connection] = parse_url(url).get("connection_class", Connection)  # type: ignore[no-untyped-call]
    options: dict[str, object] = {
        "max_connections": variant.pool_size_for(workers),
        "connection_class": wrap_connection_class(base) if wrap_connection_class else base,
        "socket_timeout": variant.socket_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if variant.pool_mode == "wait":
        options.update(connection_pool_class=BlockingConnectionPool, timeout=variant.pool_timeout_s)
    # The cluster client retries itself (redirects, a moved slot, a lost node); node
    # connections never retry, so `retry` is the cluster's.
    return RedisCluster.from_url(url, retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1), **options)


def open_client(url: str, *, socket_timeout_s: float = 10.0) -> RedisClient:
    """A plain client (default pool, no variant) for `url`, a cluster URL included."""
    if is_cluster_url(url):
        return RedisCluster.from_url(
            node_url(url), socket_timeout=socket_timeout_s, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout_s, socket_connect_timeout=CONNECT_TIMEOUT_S
    )


def close_client(client: RedisClient) -> None:
    """Close the client and every connection of its pool(s) (one per node on a cluster)."""
    client.close()
    disconnect(client)


def disconnect(client: RedisClient) -> None:
    """Drop every open connection (they reopen on the next command)."""
    if isinstance(client, RedisCluster):
        client.disconnect_connection_pools()  # type: ignore[no-untyped-call]
    else:
        client.connection_pool.disconnect()


def redact_url(url: str) -> str:
    """`url` with its password (if any) shown as `***`, for logs, errors and results.

    `redis://user@host` names a user and no password (as redis-py reads it): unchanged.
    """
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
