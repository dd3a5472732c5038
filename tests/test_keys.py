"""Key layout: both key builders agree, every key is prefixed, cleanup stays in its namespace."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from qbench.queue_impl.job import PRIORITY_ORDER, Priority
from qbench.queue_impl.keys import FormatKeys, KeyBuilder, PrecomputedKeys, key_prefix, make_keys
from qbench.queue_impl.queue import delete_namespace


def _all_keys(keys: KeyBuilder) -> list[str]:
    return [
        *(keys.queue(p) for p in PRIORITY_ORDER),
        keys.processing("worker-1"),
        keys.processing("worker-1"),  # the precomputed builder caches this one
        keys.job("0f3a"),
        keys.scheduled(),
        keys.dead(),
        keys.marker(),
        keys.consumers(),
        keys.heartbeat("worker-1"),
    ]


def test_both_builders_give_the_same_keys() -> None:
    expected = [
        "qbench:{ns-1}:queue:high",
        "qbench:{ns-1}:queue:normal",
        "qbench:{ns-1}:queue:low",
        "qbench:{ns-1}:processing:worker-1",
        "qbench:{ns-1}:processing:worker-1",
        "qbench:{ns-1}:job:0f3a",
        "qbench:{ns-1}:scheduled",
        "qbench:{ns-1}:dead",
        "qbench:{ns-1}:marker",
        "qbench:{ns-1}:consumers",
        "qbench:{ns-1}:heartbeat:worker-1",
    ]
    assert _all_keys(FormatKeys("ns-1")) == expected
    assert _all_keys(PrecomputedKeys("ns-1")) == expected
    assert isinstance(make_keys("format", "a"), FormatKeys)
    assert isinstance(make_keys("precomputed", "a"), PrecomputedKeys)


def test_every_key_of_a_queue_hashes_to_one_cluster_slot() -> None:
    # Lua scripts touch several keys at once, which Redis Cluster allows within one slot.
    slots = {key_slot(key.encode()) for key in _all_keys(PrecomputedKeys("slot-test"))}
    assert slots == {key_slot(b"slot-test")}


@pytest.mark.parametrize("namespace", ["", "a b", "a:b", "a*", "{a}", "x" * 65, "ns\n"])
def test_bad_namespaces_are_rejected(namespace: str) -> None:
    with pytest.raises(ValueError, match="bad namespace"):
        key_prefix(namespace)


def test_namespace_limits_are_accepted() -> None:
    assert key_prefix("A-z_0.9") == "qbench:{A-z_0.9}:"
    assert key_prefix("x" * 64) == "qbench:{" + "x" * 64 + "}:"


def test_cleanup_deletes_its_own_keys_and_nothing_else(raw_client: redis.Redis) -> None:
    own = [k for k in _all_keys(FormatKeys("clean-a")) if k != "qbench:{clean-a}:processing:worker-1"]
    neighbours = [
        "qbench:{clean-ab}:queue:high",  # a namespace that merely starts the same
        "qbench:{clean-b}:job:x",
        "other:{clean-a}:job:x",
        "clean-a",
    ]
    pipe = raw_client.pipeline(transaction=False)
    for key in [*own, "qbench:{clean-a}:processing:worker-1", *neighbours]:
        pipe.set(key, b"1")
    pipe.execute()
    try:
        assert delete_namespace(raw_client, key_prefix("clean-a")) == len(own) + 1
        assert raw_client.exists(*own) == 0
        assert raw_client.exists(*neighbours) == len(neighbours)
    finally:
        raw_client.delete(*neighbours)


def test_cleanup_deletes_in_batches(raw_client: redis.Redis) -> None:
    prefix = key_prefix("clean-many")
    pipe = raw_client.pipeline(transaction=False)
    for i in range(1_203):
        pipe.set(f"{prefix}job:{i}", b"")
    pipe.execute()
    assert delete_namespace(raw_client, prefix) == 1_203
    assert delete_namespace(raw_client, prefix) == 0


@pytest.mark.parametrize("prefix", ["", "*", "qbench:*", "other:{ns}:"])
def test_cleanup_refuses_a_prefix_outside_qbench(raw_client: redis.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="refusing to delete keys outside a qbench namespace"):
        delete_namespace(raw_client, prefix)


def test_priority_labels_name_the_queue_keys() -> None:
    assert [p.label for p in PRIORITY_ORDER] == ["high", "normal", "low"]
    assert FormatKeys("n").queue(Priority.LOW).endswith(":queue:low")
