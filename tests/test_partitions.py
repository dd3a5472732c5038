"""Partitions on one server: where keys land, how jobs spread, how workers claim and wake.

(The behaviour suite runs on partitioned variants too: tests/test_queue_behaviour.py.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from qbench.harness.infra.census import take_census
from qbench.harness.infra.measured import MeasuredQueue
from qbench.queue_impl.config import parse_variant
from qbench.queue_impl.job import PRIORITY_ORDER, Job, Priority
from qbench.queue_impl.keys import PARTITION_SEPARATOR, key_prefix, partition_tag
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.strategies import partition_index
from tests.conftest import QueueFactory, fast

IDS = [f"job-{i:04d}" for i in range(300)]
"""Fixed ids: their partitions are fixed too, so every count below is exact."""


def _part(queue: RedisQueue, job_id: str) -> int:
    return queue.partition_for(job_id).index


# -- keys --------------------------------------------------------------------------------------
def test_one_partition_keeps_the_seed_layout() -> None:
    assert partition_tag("orders") == "orders"
    assert key_prefix("orders") == "qbench:{orders}:"


@pytest.mark.parametrize("count", [2, 3, 4, 6])
def test_partition_k_lands_in_the_middle_of_the_kth_slot_band(count: int) -> None:
    band = REDIS_CLUSTER_HASH_SLOTS / count
    tags = [partition_tag("orders", k, count) for k in range(count)]
    assert tags == [partition_tag("orders", k, count) for k in range(count)]  # no state
    for k, tag in enumerate(tags):
        assert tag.startswith(f"orders{PARTITION_SEPARATOR}p{k}{PARTITION_SEPARATOR}")
        assert k * band + band / 4 <= key_slot(tag.encode()) < (k + 1) * band - band / 4
    # A cluster whose masters split the slots equally holds each partition on its own master.
    masters = [key_slot(tag.encode()) * count // REDIS_CLUSTER_HASH_SLOTS for tag in tags]
    assert masters == list(range(count))


def test_no_namespace_can_take_a_partition_tag() -> None:
    with pytest.raises(ValueError, match="bad namespace"):
        key_prefix(partition_tag("orders", 1, 3))
    with pytest.raises(ValueError, match="partition 3 out of range"):
        partition_tag("orders", 3, 3)


def test_every_key_of_a_partition_shares_its_slot(make_queue: QueueFactory) -> None:
    queue = make_queue(parse_variant("scripted+partitions=3"))
    for part in queue.partitions:
        keys = part.keys
        names = [keys.queue(p) for p in PRIORITY_ORDER]
        names += [keys.processing("w"), keys.jobs(), keys.job("x"), keys.scheduled(), keys.dead()]
        names += [keys.marker(), keys.consumers(), keys.heartbeat("w"), keys.homes()]
        assert len({key_slot(name.encode()) for name in names}) == 1
    assert len({key_slot(p.keys.jobs().encode()) for p in queue.partitions}) == 3
    with pytest.raises(ValueError, match="3 partitions"):
        _ = queue.keys


# -- producing -----------------------------------------------------------------------------------
def test_jobs_spread_over_the_partitions_by_id(make_queue: QueueFactory) -> None:
    queue = make_queue(fast(parse_variant("scripted+partitions=3")))
    expected = Counter(partition_index(job_id, 3) for job_id in IDS)
    assert sorted(expected.values()) == [97, 101, 102]  # CRC-32 of these ids, mod 3
    queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS])
    queued = [queue.client.llen(part.keys.queue(Priority.NORMAL)) for part in queue.partitions]
    assert queued == [expected[k] for k in range(3)]
    assert all(_part(queue, job_id) == partition_index(job_id, 3) for job_id in IDS)
    census = take_census(queue)
    assert census.counts()["queued"] == len(IDS) and census.stranded_ids == []
    assert queue.stats().queued == {"high": 0, "normal": len(IDS), "low": 0}


MeasuredFactory = Callable[[str], MeasuredQueue]


@pytest.fixture
def measured(redis_url: str) -> MeasuredFactory:
    """`measured(spec)`: a counted queue of that variant (short waits), as a context manager."""
    return lambda spec: MeasuredQueue(redis_url, fast(parse_variant(spec)))


def test_a_batch_costs_one_round_trip_per_partition_it_touches(measured: MeasuredFactory) -> None:
    with measured("scripted+partitions=3") as mq:
        mq.warm_up()
        with mq.measure() as cost:
            mq.queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS[:30]])
        touched = {_part(mq.queue, job_id) for job_id in IDS[:30]}
        assert cost.round_trips == len(touched) == 3
        with mq.measure() as cost:
            mq.queue.heartbeat()
        assert cost.round_trips == 1  # one pipeline of a SET per partition
        assert cost.server_commands == Counter({"set": 3})
        with mq.measure() as cost:
            moved = mq.queue.move_scheduled_to_ready(now=2**62)
        assert moved == 0 and cost.round_trips == 3  # the scheduler visits every partition


# -- consuming -----------------------------------------------------------------------------------
def test_claims_rotate_the_partition_tried_first(make_queue: QueueFactory) -> None:
    """While every partition has jobs, any three successive claims take one from each."""
    queue = make_queue(fast(parse_variant("scripted+partitions=3")))
    queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS[:60]])
    taken = [_part(queue, job.id) for job in iter(lambda: queue.dequeue(wait=False), None)]
    assert len(taken) == 60
    full = min(Counter(partition_index(i, 3) for i in IDS[:60]).values()) * 3
    assert all(sorted(taken[i : i + 3]) == [0, 1, 2] for i in range(0, full, 3))


def test_an_idle_notify_wait_is_one_blocking_call_whatever_the_partitions(measured: MeasuredFactory) -> None:
    """Per wait cycle: a claim script per partition, then one BZPOPMIN on the home marker
    (the first wait of a thread also takes its home: one INCR)."""
    with measured("scripted+partitions=3,notify_timeout_s=0.2") as mq:
        mq.warm_up()
        with mq.measure() as cost:
            assert mq.queue.dequeue(wait=True) is None
        assert cost.round_trips == 3 + 1 + 1
        assert (cost.server_commands["evalsha"], cost.server_commands["incrby"]) == (
            3,
            1,
        )  # redis-py INCR sends INCRBY
        assert cost.server_commands["bzpopmin"] == 1
        with mq.measure() as cost:
            assert mq.queue.dequeue(wait=True) is None
        assert cost.round_trips == 3 + 1
        assert "incrby" not in cost.server_commands


def _blocked_on(queue: RedisQueue, count: int) -> None:
    """Until `count` clients of the server are blocked (a hang guard, not a timing)."""
    deadline = time.monotonic() + 10
    while sum(1 for c in queue.client.client_list() if "b" in c["flags"]) < count:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the waiters never blocked"
        time.sleep(0.005)


def test_waiting_workers_take_homes_in_turn_so_every_partition_wakes_one(make_queue: QueueFactory) -> None:
    variant = fast(parse_variant("scripted+partitions=3")).with_overrides(notify_timeout_s=20.0)
    producer = make_queue(variant, consumer="producer")
    workers = [make_queue(variant, namespace=producer.namespace, consumer=f"w{i}") for i in range(3)]
    for worker in workers:
        worker.register_consumer()
    jobs = [Job(type="noop", id=next(i for i in IDS if partition_index(i, 3) == k)) for k in range(3)]
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(worker.dequeue, wait=True) for worker in workers]
        _blocked_on(producer, 3)
        for job in jobs:  # one job per partition: each wakes that partition's one waiter
            producer.enqueue(job)
        got = [call.result(timeout=60) for call in calls]
    # Within the wait (20 s): a worker whose wait timed out would have returned None.
    assert sorted(job.id for job in got if job) == sorted(job.id for job in jobs)
    assert int(producer.client.get(producer.partitions[0].keys.homes()) or 0) == 3


def test_a_job_where_nobody_waits_is_taken_by_the_next_claim(make_queue: QueueFactory) -> None:
    """Fewer waiting threads than partitions: the worker waits on its home marker only,
    so a job pushed to another partition does not wake it; its next claim takes it."""
    variant = fast(parse_variant("scripted+partitions=2")).with_overrides(notify_timeout_s=1.0)
    worker = make_queue(variant, consumer="w")
    producer = make_queue(variant, namespace=worker.namespace, consumer="producer")
    worker.register_consumer()
    elsewhere = Job(type="noop", id=next(i for i in IDS if partition_index(i, 2) == 1))
    started = threading.Event()

    def wait_once() -> Job | None:
        started.set()
        return worker.dequeue(wait=True)

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(wait_once)
        assert started.wait(10)
        _blocked_on(producer, 1)  # the first wait's home is partition 0 (the first INCR)
        producer.enqueue(elsewhere)
        assert call.result(timeout=30) is None  # not woken: its wait timed out
    taken = worker.dequeue(wait=False)
    assert taken is not None and taken.id == elsewhere.id
