"""What the built-in drivers share for fault tests (`qbench chaos --driver`): a redis-py
client that follows a Sentinel when the driver is given a `redis+sentinel://` URL, and the
census format (`Driver.census`).

Imported inside each driver's own virtualenv: the standard library at import time, redis-py
(which every peer library brings) only inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from qbench.driver import sentinel_address

SOCKET_TIMEOUT_S = 10.0
"""Census reads finish quickly; a longer stall is a fault, not a slow answer."""


def job_id(sent_at: Any) -> int:
    """The `sent_us` a job's `sent_at` argument stands for (the id a fault test keys it by)."""
    return round(float(sent_at) * 1e6)


def sync_client(url: str, **options: Any) -> Any:
    """A `redis.Redis` for `url`; for a `redis+sentinel://HOST:PORT/MASTER` URL, redis-py's
    `Sentinel(...).master_for(MASTER)`, which asks the Sentinel for the primary again after
    a failover."""
    import redis
    from redis.sentinel import Sentinel

    sentinel = sentinel_address(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **options)
    host, port, master = sentinel
    return Sentinel([(host, port)], socket_timeout=SOCKET_TIMEOUT_S).master_for(master, **options)


def async_client(url: str, **options: Any) -> Any:
    """`sync_client` for redis-py's asyncio client."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel

    sentinel = sentinel_address(url)
    if sentinel is None:
        return aioredis.from_url(url, **options)
    host, port, master = sentinel
    return Sentinel([(host, port)], socket_timeout=SOCKET_TIMEOUT_S).master_for(master, **options)


def sentinel_pool(url: str) -> Any:
    """For a Sentinel URL, redis-py's `SentinelConnectionPool` (for a library that takes a
    `connection_pool`); None for any other URL."""
    from redis.sentinel import Sentinel, SentinelConnectionPool

    sentinel = sentinel_address(url)
    if sentinel is None:
        return None
    host, port, master = sentinel
    return SentinelConnectionPool(master, Sentinel([(host, port)], socket_timeout=SOCKET_TIMEOUT_S))  # type: ignore[no-untyped-call,unused-ignore]


def census(failed: Iterable[int], pending: Iterable[int]) -> dict[str, Any]:
    """The census as `Driver.census` returns it (sorted, duplicates kept out)."""
    return {"failed": sorted(set(failed)), "pending": sorted(set(pending))}


def json_field(raw: bytes | str | None, *path: str | int) -> Any:
    """A value inside a JSON document (None when it is missing or the text is no JSON)."""
    if raw is None:
        return None
    try:
        value: Any = json.loads(raw)
        for step in path:
            value = value[step]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return value
