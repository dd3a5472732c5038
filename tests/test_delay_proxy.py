"""The delay proxy forwards, holds every chunk at least its delay, cuts and refuses connections."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from qbench.harness.infra.delay_proxy import DelayProxy, calibrate


def no_retry_client(url: str) -> redis.Redis:
    """A client that surfaces a dropped connection instead of retrying it."""
    return redis.Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0), retry_on_error=[])


@pytest.fixture
def proxy(redis_url: str) -> Iterator[DelayProxy]:
    with DelayProxy.for_url(redis_url) as started:
        yield started


def test_forwards_and_counts_bytes(proxy: DelayProxy, redis_url: str) -> None:
    client = no_retry_client(proxy.proxied_url(redis_url))
    try:
        assert client.ping() is True
        client.set("qbench:{proxytest}:k", b"v" * 1000)
        assert client.get("qbench:{proxytest}:k") == b"v" * 1000
        client.delete("qbench:{proxytest}:k")
    finally:
        client.close()
    stats = proxy.stats()
    assert stats.connections_total == 1
    assert stats.bytes_to_server > 1000  # the SET carried the value
    assert stats.bytes_to_client > 1000  # the GET returned it


def test_every_round_trip_waits_at_least_the_delay(proxy: DelayProxy, redis_url: str) -> None:
    # Lower bounds only: a chunk is never released before its deadline (an upper bound
    # would depend on the machine's load).
    client = no_retry_client(proxy.proxied_url(redis_url))
    try:
        client.ping()
        proxy.set_delay(round_trip_ms=30)
        for _ in range(3):
            t0 = time.perf_counter()
            client.ping()
            assert time.perf_counter() - t0 >= 0.030
        proxy.set_one_way(to_server_ms=0, to_client_ms=20)
        t0 = time.perf_counter()
        client.ping()
        assert time.perf_counter() - t0 >= 0.020
    finally:
        client.close()
    stats = proxy.stats()
    assert (stats.to_server_ms, stats.to_client_ms) == (0, 20)


def test_calibration_reports_both_paths(proxy: DelayProxy, redis_url: str) -> None:
    cal = calibrate(proxy, redis_url, round_trip_ms=2, samples=5)
    assert cal.samples == 5 and cal.set_round_trip_ms == 2
    assert cal.direct_ms > 0
    assert cal.proxied_ms >= 2.0


def test_cut_resets_open_connections(proxy: DelayProxy, redis_url: str) -> None:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    client = no_retry_client(proxy.proxied_url(redis_url))
    try:
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert raw.recv(100) == b"+PONG\r\n"
        client.ping()
        assert proxy.cut() == 2
        with contextlib.suppress(ConnectionResetError):  # reset or closed: the link is gone
            assert raw.recv(100) == b""
        # redis-py notices the dead connection when it checks it out and opens a new one:
        # a cut is not a refusal.
        assert client.ping() is True
    finally:
        raw.close()
        client.close()
    stats = proxy.stats()
    assert stats.connections_cut == 2
    assert stats.connections_total == 3


def test_refuse_new_makes_the_server_unreachable(proxy: DelayProxy, redis_url: str) -> None:
    url = proxy.proxied_url(redis_url)
    proxy.refuse_new(True)
    client = no_retry_client(url)
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
        proxy.refuse_new(False)
        assert client.ping() is True
    finally:
        client.close()
    assert proxy.stats().connections_refused == 1


def test_proxied_url_keeps_credentials_and_database() -> None:
    proxy = DelayProxy(upstream_host="127.0.0.1", upstream_port=6379)
    proxy.port = 40000
    assert proxy.proxied_url("redis://user:secret@10.0.0.5:6380/3") == "redis://user:secret@127.0.0.1:40000/3"
    assert proxy.proxied_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:40000"


def test_rejects_a_url_it_cannot_proxy() -> None:
    with pytest.raises(ValueError, match="redis://HOST:PORT"):
        DelayProxy.for_url("unix:///tmp/redis.sock")
    with pytest.raises(ValueError, match=">= 0"):
        DelayProxy(upstream_host="127.0.0.1", upstream_port=1).set_one_way(to_server_ms=-1, to_client_ms=0)


def test_stop_is_idempotent_and_the_port_closes(redis_url: str) -> None:
    proxy = DelayProxy.for_url(redis_url).start()
    url = proxy.proxied_url(redis_url)
    proxy.stop()
    proxy.stop()
    with pytest.raises(redis.ConnectionError):
        no_retry_client(url).ping()
