"""The pickup path's toggles: wait_claim (one round trip from wake-up to job), beat and
orphan_scan (what an idle pool sends per heartbeat), and the hop trace's line format."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from qbench.harness.infra.counting import (
    RoundTripCounter,
    command_stats,
    counting_connection_class,
    stats_delta,
)
from qbench.harness.infra.measured import unique_namespace
from qbench.queue_impl import worker as worker_module
from qbench.queue_impl.config import Variant, parse_variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.hops import HopTrace
from qbench.queue_impl.job import Job, Status
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.worker import WorkerPool
from tests.conftest import QueueFactory, fast

pytestmark = pytest.mark.slow

WAIT_CLAIM = ("apart", "pipelined")


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _counted_queue(url: str, variant: Variant, namespace: str) -> tuple[RedisQueue, RoundTripCounter]:
    counter = RoundTripCounter()
    client = make_client(
        url, variant, workers=2, wrap_connection_class=lambda b: counting_connection_class(b, counter)
    )
    return RedisQueue(client, variant, namespace=namespace, consumer="waiter"), counter


def _blocked(raw: redis.Redis) -> int:
    return int(raw.info("clients")["blocked_clients"])


@pytest.mark.parametrize("mode", WAIT_CLAIM)
def test_a_woken_claim_takes_one_round_trip_when_pipelined_and_the_same_commands(
    mode: str, redis_url: str, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    variant = fast(parse_variant(f"scripted+wait_claim={mode}")).with_overrides(notify_timeout_s=10.0)
    producer = make_queue(variant, consumer="producer")
    waiter, counter = _counted_queue(redis_url, variant, producer.namespace)
    try:
        with ThreadPoolExecutor(1) as waiting:  # one thread: its pinned connection opens once
            waiter.register_consumer()
            producer.enqueue(Job(type="noop"))  # scripts loaded, connections open: not counted below
            assert len(waiting.submit(waiter.claim_many, 1, wait=False).result()) == 1
            blocked_before = _blocked(raw_client)
            before_trips, _ = counter.snapshot()
            before = command_stats(raw_client)
            claim = waiting.submit(waiter.claim_many, 5, wait=True, look_first=False)
            wait_for(lambda: _blocked(raw_client) > blocked_before)
            job = Job(type="noop")
            producer.enqueue(job)
            found = claim.result(15)
            after = command_stats(raw_client)
            trips = counter.snapshot()[0] - before_trips
    finally:
        close_client(waiter.client)
    assert [j.id for j in found] == [job.id] and found[0].status is Status.ACTIVE
    assert trips == {"apart": 2, "pipelined": 1}[mode]
    delta = stats_delta(before, after)
    # The same commands in both modes: the producer's enqueue script (EVALSHA, HSET, LPUSH,
    # ZADD of the marker), the waiter's BZPOPMIN and claim script (EVALSHA, EXISTS twice,
    # RPOPLPUSH per try of up to 5 jobs, HMGET of the record, DEL of the marker: no job left).
    assert delta == {
        "bzpopmin": 1, "del": 1, "evalsha": 2, "exists": 2, "hmget": 1, "hset": 1, "lpush": 1,
        "rpoplpush": 4, "zadd": 1,
    }  # fmt: skip


@pytest.mark.parametrize("mode", WAIT_CLAIM)
def test_a_timed_out_wait_sweeps_once_in_either_mode(
    mode: str, redis_url: str, raw_client: redis.Redis
) -> None:
    variant = fast(parse_variant(f"scripted+wait_claim={mode}")).with_overrides(notify_timeout_s=0.2)
    waiter, counter = _counted_queue(redis_url, variant, unique_namespace("test"))
    try:
        waiter.register_consumer()
        waiter.claim_many(1, wait=False)
        before_trips, _ = counter.snapshot()
        before = command_stats(raw_client)
        assert waiter.claim_many(5, wait=True, look_first=False) == []
        delta = stats_delta(before, command_stats(raw_client))
        trips = counter.snapshot()[0] - before_trips
    finally:
        waiter.cleanup()
        close_client(waiter.client)
    assert trips == {"apart": 2, "pipelined": 1}[mode]
    # BZPOPMIN, then the claim script (EXISTS finds no queue, DEL clears the marker).
    assert delta == {"bzpopmin": 1, "evalsha": 1, "exists": 1, "del": 1}


@pytest.mark.parametrize(
    ("overrides", "per_beat"),
    [
        ("beat=pool,orphan_scan=always", {"set": 1, "lrange": 1}),
        ("beat=kept,orphan_scan=after_reconnect", {"set": 1}),
    ],
)
def test_an_idle_pool_sends_per_heartbeat_exactly(
    overrides: str,
    per_beat: dict[str, int],
    make_queue: QueueFactory,
    raw_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variant = fast(parse_variant(f"scripted+{overrides}")).with_overrides(notify_timeout_s=30.0)
    queue = make_queue(variant, workers=10)
    beats = threading.Semaphore(0)
    renew = queue.heartbeat

    def counted_heartbeat(lease_s: float) -> None:
        beats.release()  # a beat begins: renew, then perhaps the scan (a few ms)
        renew(lease_s)

    monkeypatch.setattr(queue, "heartbeat", counted_heartbeat)
    handlers = {"noop": lambda job: None}
    pool = WorkerPool(queue, handlers, concurrency=10, heartbeat_interval_s=0.2, lease_s=180)
    pool.start()

    def between_beats() -> None:
        assert beats.acquire(timeout=10)
        time.sleep(0.08)  # that beat is over; the next begins 0.2 s after it

    try:
        queue.enqueue(Job(type="noop"))
        wait_for(lambda: pool.counters.completed == 1)
        between_beats()
        while beats.acquire(blocking=False):
            pass  # beats of the start-up, already over
        between_beats()
        before = command_stats(raw_client)
        for _ in range(5):
            between_beats()
        idle = stats_delta(before, command_stats(raw_client))
    finally:
        pool.stop()
    # Five whole beats and nothing else: no connection opened (HELLO, CLIENT SETINFO), no wait.
    assert idle == {name: n * 5 for name, n in per_beat.items()}


def test_after_reconnect_looks_for_lost_claims_after_a_broken_connection(
    make_queue: QueueFactory, raw_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "ORPHAN_SCAN_EVERY", 10**6)  # no scan but the one a break brings
    variant = fast(parse_variant("scripted+beat=kept,orphan_scan=after_reconnect")).with_overrides(
        notify_timeout_s=30.0
    )
    queue = make_queue(variant, workers=2)
    ran: list[str] = []
    pool = WorkerPool(
        queue, {"record": lambda job: ran.append(job.id)}, concurrency=1, heartbeat_interval_s=0.05
    )
    pool.start()
    try:
        orphan = Job(type="record")
        # What the server did before a claim's reply was lost: recorded, moved to processing.
        part = queue.partitions[0]
        part.records.put(queue.client, orphan.id, queue.codec.encode(orphan), ttl=None)
        queue.client.lpush(part.keys.processing(queue.consumer), orphan.id)
        time.sleep(0.5)  # ten heartbeats: no connection broke, so no scan
        assert pool.counters.orphans_requeued == 0 and ran == []
        blocked = [c["id"] for c in raw_client.client_list() if c["cmd"] == "bzpopmin"]
        assert blocked
        for client_id in blocked:
            raw_client.client_kill_filter(_id=client_id)  # the leader's wait breaks, and is sent again
        wait_for(lambda: pool.counters.completed == 1)
    finally:
        pool.stop()
    assert ran == [orphan.id] and pool.counters.orphans_requeued == 1


def test_the_hop_trace_writes_one_line_per_job(tmp_path: object) -> None:
    path = f"{tmp_path}/hops.txt"
    trace = HopTrace(path)
    trace.woke()
    trace.claimed(["a", "b"])
    trace.handed("b")
    trace.run("b")
    trace.run("a")
    trace.run("never-claimed")
    with open(path) as fh:
        lines = [line.split() for line in fh.read().splitlines()]
    assert [line[0] for line in lines] == ["b", "a", "never-claimed"]
    woke, claimed, handed, run = (int(v) for v in lines[0][1:])
    assert 0 < woke <= claimed <= handed <= run
    assert lines[1][1] == lines[0][1] and lines[1][3] == lines[1][2]  # same wait; handed = claimed
    assert lines[2][1:4] == ["0", "0", "0"]


@pytest.mark.parametrize(("beat", "sets"), [("pool", 1), ("kept", 2)])
def test_a_kept_heartbeat_opens_its_connection_at_start(
    beat: str, sets: int, make_queue: QueueFactory, raw_client: redis.Redis
) -> None:
    """beat=kept beats once as the pool starts (its connection opens then, not in a later
    idle window): the registration's SET and that beat's. beat=pool: the registration's only."""
    queue = make_queue(fast(parse_variant(f"scripted+beat={beat}")), workers=10)
    pool = WorkerPool(queue, {"noop": lambda job: None}, concurrency=10, heartbeat_interval_s=60, lease_s=180)
    before = command_stats(raw_client)
    pool.start()
    try:
        time.sleep(0.5)  # far inside the first 60 s interval
        started = stats_delta(before, command_stats(raw_client))
    finally:
        pool.stop()
    assert started["set"] == sets
