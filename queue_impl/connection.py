"""The Redis connection pool, sized and timed by the variant's `pool` toggles."""

from __future__ import annotations

from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool, parse_url
from redis.retry import Retry

from queue_impl.config import Variant

CONNECT_TIMEOUT_S = 2.0
"""An unreachable server fails within a few seconds instead of hanging."""

ConnectionClassWrapper = Callable[[type[Connection]], type[Connection]]


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
) -> redis.Redis:
    pool = make_pool(url, variant, workers=workers, wrap_connection_class=wrap_connection_class)
    # from_pool: the client owns its pool, so close() also closes every pooled socket.
    return redis.Redis.from_pool(pool)


def redact_url(url: str) -> str:
    """`url` with its password (if any) shown as `***`, for logs, errors and results.

    `redis://user@host` names a user and no password (as redis-py reads it): unchanged.
    """
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
