"""durability=replica against a real primary and replica: WAIT in the same round trip, exact
operation costs, and what enqueue and acknowledgements do when no replica answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from qbench.harness.experiments.ops import measure_operations, op_costs
from qbench.harness.infra.redis_server import RedisServerProcess
from qbench.queue_impl.config import VariantError, parse_variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import NotReplicatedError, RedisQueue
from tests.conftest import fast

pytestmark = pytest.mark.slow


def _wait_linked(primary: redis.Redis, replicas: int = 1) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = primary.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"]
        if len(online) >= replicas:
            return
        time.sleep(0.05)
    raise AssertionError("the replica did not connect")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[RedisServerProcess, RedisServerProcess]]:
    """A primary and a replica of it (`--replicaof`), both started for this module."""
    primary = RedisServerProcess()
    primary.start()
    replica = RedisServerProcess(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    client = redis.Redis.from_url(primary.url)
    _wait_linked(client)
    client.close()
    yield primary, replica
    replica.stop()
    primary.stop()


def _queue(url: str, spec: str, namespace: str) -> RedisQueue:
    variant = fast(parse_variant(spec))
    return RedisQueue(make_client(url, variant), variant, namespace=namespace, consumer="c1")


@pytest.mark.parametrize("spec", ["scripted+durability=replica", "optimized+durability=replica"])
def test_a_completed_job_is_on_the_replica_when_complete_returns(
    pair: tuple[RedisServerProcess, RedisServerProcess], spec: str
) -> None:
    primary, replica = pair
    queue = _queue(primary.url, spec, "durable")
    queue.check_server()
    reader = _queue(replica.url, spec.split("+")[0], "durable")
    try:
        job = Job(type="t", payload=b"kept")
        queue.enqueue(job)
        # No sleep: WAIT returned only after the replica acknowledged the write.
        assert reader.get_job(job.id) is not None
        taken = queue.dequeue(wait=False)
        assert taken is not None and taken.id == job.id
        assert queue.complete(taken)
        stored = reader.get_job(job.id)
        assert stored is not None and stored.status.name == "COMPLETED"
        assert queue.unreplicated_acks == 0
    finally:
        queue.cleanup()
        close_client(queue.client)
        close_client(reader.client)


def test_operation_costs_with_a_replica_are_exact(
    pair: tuple[RedisServerProcess, RedisServerProcess],
) -> None:
    primary, _ = pair
    specs = ("scripted", "scripted+durability=replica", "optimized+durability=replica")
    variants = [parse_variant(s).with_overrides(block_timeouts_s=(0.2, 0.2, 0.6)) for s in specs]
    costs = {
        (c.preset.split(",")[0].removesuffix("+block_timeouts_s=0.2/0.2/0.6"), c.operation, c.batch): c
        for c in op_costs(measure_operations(primary.url, variants, batches=(10,)))
    }
    durable = "scripted+durability=replica"
    for op, batch in [("enqueue", 1), ("enqueue_many", 10), ("complete", 1), ("fail", 1)]:
        plain, waited = costs[("scripted", op, batch)], costs[(durable, op, batch)]
        # The WAIT travels with the script: the same round trips, one more command. The
        # replica's REPLCONF ACK (the primary asks for one per WAIT, and the replica sends
        # one every second anyway) runs on the primary too, so it is left out here.
        by_name = {k: v for k, v in waited.commands_by_name.items() if k != "replconf"}
        assert waited.round_trips == plain.round_trips, op
        assert by_name == {**plain.commands_by_name, "wait": 1}, op
    for op, batch in [("dequeue", 1), ("move_scheduled_to_ready", 10)]:
        assert costs[(durable, op, batch)].round_trips == costs[("scripted", op, batch)].round_trips
        assert "wait" not in costs[(durable, op, batch)].commands_by_name
    optimized = {
        op: costs[("optimized+durability=replica", op, b)]
        for op, b in [("enqueue", 1), ("complete", 1), ("fail", 1)]
    }
    # pipeline: WAIT joins the write pipeline (enqueue 1, complete and fail GET + pipeline: 2).
    assert [optimized[op].round_trips for op in ("enqueue", "complete", "fail")] == [1, 2, 2]
    assert all(optimized[op].commands_by_name.get("wait") == 1 for op in optimized)


def test_without_a_connected_replica_enqueue_raises_and_acks_are_counted(redis_url: str) -> None:
    variant = fast(parse_variant("scripted+durability=replica,durability_timeout_s=0.05"))
    queue = RedisQueue(make_client(redis_url, variant), variant, namespace="no-replica", consumer="c1")
    try:
        with pytest.raises(VariantError, match="no connected replica"):
            queue.check_server()
        job = Job(type="t")
        with pytest.raises(NotReplicatedError, match="0 of 1 replica"):
            queue.enqueue(job)
        assert queue.get_job(job.id) is not None  # on the primary all the same
        taken = queue.dequeue(wait=False)
        assert taken is not None
        assert queue.complete(taken)  # no raise: a lost ack only means one more run
        assert queue.unreplicated_acks == 1
    finally:
        queue.cleanup()
        close_client(queue.client)


def test_durability_needs_an_atomic_write_path() -> None:
    with pytest.raises(VariantError, match="needs batch=pipeline or script"):
        parse_variant("baseline+durability=replica")
    with pytest.raises(VariantError, match="durability_timeout_s"):
        parse_variant("scripted+durability=replica,durability_timeout_s=0")
