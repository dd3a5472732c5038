"""conn=pinned: each thread keeps one connection; a call cut short never leaves a reply behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from redis.connection import Connection

from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.pinned import PinnedCalls, PoolCalls, make_calls, script_sha

ECHO = "return ARGV[1]"


class Interrupted(BaseException):
    """Stands for a signal or a greenlet killed in the middle of a call."""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()
    made.connection_pool.disconnect()


def echo(calls: PinnedCalls | PoolCalls, text: str) -> bytes:
    return bytes(calls.script(ECHO, script_sha(ECHO), [], [text]))


def test_a_call_cut_short_does_not_hand_its_reply_to_the_next(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = PinnedCalls(client)
    assert echo(calls, "warm") == b"warm"  # loads the script, pins the connection
    real = Connection.read_response

    def cut(self: Connection, *args: object, **kwargs: object) -> object:
        raise Interrupted  # the request went out; its reply is left unread

    monkeypatch.setattr(Connection, "read_response", cut)
    with pytest.raises(Interrupted):
        echo(calls, "first")
    monkeypatch.setattr(Connection, "read_response", real)
    assert echo(calls, "second") == b"second"


def test_each_thread_keeps_its_own_connection(client: redis.Redis) -> None:
    """A thread blocked in a wait does not hold up another thread's call (one shared
    connection would make the second read the first one's reply, or wait behind it)."""
    calls = PinnedCalls(client)
    key = "qbench:{pinned-test}:marker"
    waiting, woken = threading.Event(), []

    def wait() -> None:
        waiting.set()
        woken.append(calls.bzpopmin(key, 10))

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(5)
    assert echo(calls, "while another thread waits") == b"while another thread waits"
    assert not woken  # still blocked: the echo went on a connection of its own
    client.zadd(key, {"ready": 0})
    waiter.join(10)
    assert [list(map(bytes, w[:2])) for w in woken] == [[key.encode(), b"ready"]]


def test_a_cluster_client_keeps_the_pool_path(cluster_url: str) -> None:
    cluster = make_client(cluster_url, PRESETS["scripted"])
    try:
        assert isinstance(make_calls(cluster, pinned=True), PoolCalls)
    finally:
        close_client(cluster)
