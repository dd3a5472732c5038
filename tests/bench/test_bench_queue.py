"""Each queue operation per preset: timing, plus exact round trips and commands per call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from qbench.harness.infra.measured import MeasuredQueue, make_jobs
from qbench.queue_impl.config import PRESET_NAMES, Variant
from qbench.queue_impl.job import Job, Priority, Status, as_text

pytestmark = pytest.mark.parametrize("preset", PRESET_NAMES)

PAYLOAD = b"x" * 128
BATCH = 100
ROUNDS = 200
"""Rounds for operations that need a fresh job each call (setup is not timed)."""
RECORD_WRITE = {"keys": "set", "hash": "hset"}


def new_job() -> Job:
    # High priority: every dequeue mode finds it on its first try (the seed's blocking
    # mode would otherwise wait out the high-priority timeout first).
    return Job(type="bench", payload=PAYLOAD, priority=Priority.HIGH)


def record_cost(
    benchmark: BenchmarkFixture, mq: MeasuredQueue, action: Callable[[], object], *, jobs: int = 1
) -> None:
    """Count one call of `action` exactly and keep the counts in the saved run."""
    with mq.measure() as cost:
        action()
    benchmark.extra_info["round_trips_per_op"] = cost.round_trips
    benchmark.extra_info["commands_per_op"] = cost.commands
    benchmark.extra_info["batch_size"] = jobs
    benchmark.extra_info["bytes_per_job"] = len(mq.queue.codec.encode(new_job()))


def claimed(mq: MeasuredQueue) -> Job:
    mq.queue.enqueue(new_job())
    job = mq.queue.dequeue(wait=True)
    assert job is not None
    return job


def enqueue_costs(variant: Variant, jobs: int, *, queue_empty: bool = True) -> tuple[int, Counter[str]]:
    """Round trips and server commands of enqueuing `jobs` jobs in one call, by batch mode:
    loop sends SET and LPUSH per job (and a marker ZADD per job in notify mode), the
    pipeline sends them in one request (one ZADD), the script runs them in one EVALSHA,
    setting the marker only when a push found its queue empty (`queue_empty`).
    The record is written with SET (records=keys) or HSET (records=hash)."""
    notify = variant.dequeue == "notify"
    commands: Counter[str] = Counter({RECORD_WRITE[variant.records]: jobs, "lpush": jobs})
    if variant.batch == "loop":
        if notify:
            commands["zadd"] = jobs
        return jobs * (3 if notify else 2), commands
    if notify and (queue_empty or variant.batch != "script"):
        commands["zadd"] = 1
    if variant.batch == "script":
        commands["evalsha"] = 1
    return 1, commands


def assert_queued(mq: MeasuredQueue, priority: Priority, count: int) -> None:
    """Exactly `count` jobs wait on `priority`, each with its stored, queued record."""
    q = mq.queue
    stats = q.stats()
    assert stats.queued == {p.label: count if p is priority else 0 for p in Priority}
    assert stats.processing == 0 and stats.scheduled == 0 and stats.dead == 0
    ids = [as_text(i) for i in mq.stats_client.lrange(q.keys.queue(priority), 0, -1)]
    assert len(set(ids)) == count
    records = q.partitions[0].records.get_many(mq.stats_client, ids) if ids else []
    for job_id, record in zip(ids, records, strict=True):
        assert record is not None, job_id
        job = q.codec.decode(record)
        assert (job.id, job.status, job.payload) == (job_id, Status.QUEUED, PAYLOAD)


@pytest.mark.benchmark(group="enqueue")
def test_enqueue(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    round_trips, commands = enqueue_costs(measured.variant, 1)
    record_cost(benchmark, measured, lambda: q.enqueue(new_job()))
    assert benchmark.extra_info["round_trips_per_op"] == round_trips
    assert benchmark.extra_info["commands_per_op"] == commands.total()
    calls = 0

    def enqueue_one() -> None:
        nonlocal calls
        calls += 1
        q.enqueue(new_job())

    # The queue holds a job now: later calls push onto a non-empty queue.
    round_trips, commands = enqueue_costs(measured.variant, 1, queue_empty=False)
    with measured.measure() as cost:
        benchmark(enqueue_one)
    assert calls >= 1
    assert cost.round_trips == calls * round_trips
    assert cost.server_commands == Counter({name: n * calls for name, n in commands.items()})
    assert_queued(measured, Priority.HIGH, calls + 1)


@pytest.mark.benchmark(group="enqueue_many")
def test_enqueue_many(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    round_trips, commands = enqueue_costs(measured.variant, BATCH)
    record_cost(benchmark, measured, lambda: q.enqueue_many(make_jobs(BATCH, payload=PAYLOAD)), jobs=BATCH)
    assert benchmark.extra_info["round_trips_per_op"] == round_trips
    assert benchmark.extra_info["commands_per_op"] == commands.total()
    assert benchmark.extra_info["batch_size"] == BATCH
    calls = 0

    def enqueue_batch(jobs: Sequence[Job]) -> None:
        nonlocal calls
        calls += 1
        q.enqueue_many(jobs)

    round_trips, commands = enqueue_costs(measured.variant, BATCH, queue_empty=False)
    with measured.measure() as cost:
        benchmark.pedantic(
            enqueue_batch, setup=lambda: ((make_jobs(BATCH, payload=PAYLOAD),), {}), rounds=ROUNDS // 4
        )
    assert calls >= 1
    assert cost.round_trips == calls * round_trips
    assert cost.server_commands == Counter({name: n * calls for name, n in commands.items()})
    assert_queued(measured, Priority.NORMAL, (calls + 1) * BATCH)


@pytest.mark.benchmark(group="dequeue")
def test_dequeue(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    q.enqueue(new_job())
    record_cost(benchmark, measured, lambda: q.dequeue(wait=True))

    def one_ready() -> tuple[tuple[()], dict[str, object]]:
        q.enqueue(new_job())
        return (), {"wait": True}

    benchmark.pedantic(q.dequeue, setup=one_ready, rounds=ROUNDS)
    assert q.stats().queued["high"] == 0


@pytest.mark.benchmark(group="complete")
def test_complete(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    job = claimed(measured)
    record_cost(benchmark, measured, lambda: q.complete(job))
    benchmark.pedantic(q.complete, setup=lambda: ((claimed(measured),), {}), rounds=ROUNDS)
    assert q.stats().processing == 0


@pytest.mark.benchmark(group="fail")
def test_fail(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    job = claimed(measured)
    record_cost(benchmark, measured, lambda: q.fail(job, "bench"))
    benchmark.pedantic(q.fail, setup=lambda: ((claimed(measured), "bench"), {}), rounds=ROUNDS)
    assert q.stats().processing == 0


@pytest.mark.benchmark(group="move_scheduled_to_ready")
def test_move_scheduled_to_ready(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    measured.seed_due_jobs(BATCH, payload=PAYLOAD)
    record_cost(benchmark, measured, lambda: q.move_scheduled_to_ready(limit=BATCH), jobs=BATCH)

    def due_jobs() -> tuple[tuple[()], dict[str, object]]:
        measured.seed_due_jobs(BATCH, payload=PAYLOAD)
        return (), {"limit": BATCH}

    moved = benchmark.pedantic(q.move_scheduled_to_ready, setup=due_jobs, rounds=ROUNDS // 4)
    assert moved == BATCH


@pytest.mark.benchmark(group="get_job")
def test_get_job(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    job_id = q.enqueue(new_job())
    record_cost(benchmark, measured, lambda: q.get_job(job_id))
    found = benchmark(q.get_job, job_id)
    assert found is not None and found.id == job_id


@pytest.mark.benchmark(group="stats")
def test_stats(benchmark: BenchmarkFixture, measured: MeasuredQueue, preset: str) -> None:
    q = measured.queue
    q.enqueue(new_job())
    record_cost(benchmark, measured, q.stats)
    stats = benchmark(q.stats)
    assert stats.queued["high"] == 1
