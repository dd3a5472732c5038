"""Bad input: a one-line error or a dead-lettered job with its reason, never a crash or a silent drop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qbench.harness.cli import main as qbench_main
from qbench.harness.infra.redis_server import RedisServerProcess, free_port
from qbench.queue_impl import scheduler as scheduler_service
from qbench.queue_impl import worker as worker_service
from qbench.queue_impl.config import Variant
from qbench.queue_impl.job import Job, Priority, Status, as_text
from qbench.queue_impl.queue import MAX_PAYLOAD_BYTES, PayloadTooLargeError, RedisQueue
from qbench.queue_impl.records import CORRUPT_JOB_TYPE
from qbench.queue_impl.worker import WorkerPool
from tests.conftest import QueueFactory, put_raw_record

PASSWORD = "bad-input-secret"


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll until `condition` holds; a hang guard, not a performance target."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def dead_ids(queue: RedisQueue) -> list[str]:
    return [as_text(i) for i in queue.client.lrange(queue.keys.dead(), 0, -1)]


def records(queue: RedisQueue) -> list[str]:
    """Ids of every stored job record, whatever the record layout."""
    return [job_id for part in queue.partitions for job_id, _ in part.records.scan(queue.client)]


# -- payloads ---------------------------------------------------------------------------------
def test_oversized_payload_is_refused_before_anything_is_written(
    make_queue: QueueFactory, preset: Variant
) -> None:
    queue = make_queue(preset)
    too_big = Job(type="noop", payload=b"x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(PayloadTooLargeError, match=f"exceeds the limit of {MAX_PAYLOAD_BYTES} bytes"):
        queue.enqueue(too_big)
    batch = [Job(type="noop") for _ in range(3)] + [too_big]
    with pytest.raises(PayloadTooLargeError):
        queue.enqueue_many(batch)  # all or nothing: the three small jobs are not queued either
    assert records(queue) == [] and sum(queue.stats().queued.values()) == 0
    at_limit = queue.enqueue(Job(type="noop", payload=b"x" * MAX_PAYLOAD_BYTES))
    job = queue.dequeue(wait=False)
    assert job is not None and job.id == at_limit and len(job.payload) == MAX_PAYLOAD_BYTES


def test_payload_limit_is_configurable(redis_url: str, make_queue: QueueFactory, preset: Variant) -> None:
    small = RedisQueue(make_queue(preset).client, preset, namespace="test-limit", max_payload_bytes=10)
    with pytest.raises(PayloadTooLargeError, match="11 bytes exceeds the limit of 10 bytes"):
        small.enqueue(Job(type="noop", payload=b"x" * 11))
    assert records(small) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "noop", "payload": "text, not bytes"}, "payload must be bytes"),
        ({"type": ""}, "job type must be a non-empty string"),
        ({"type": "noop", "priority": "urgent"}, "unknown priority 'urgent'"),
        ({"type": "noop", "max_retries": -1}, "max_retries must be >= 0"),
    ],
)
def test_malformed_jobs_are_rejected_at_construction(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Job(**kwargs)  # type: ignore[arg-type]


# -- handlers -----------------------------------------------------------------------------------
def run_pool(queue: RedisQueue, handlers: dict[str, Callable[[Job], object]], **kwargs: float) -> WorkerPool:
    pool = WorkerPool(queue, handlers, concurrency=2, **kwargs)  # type: ignore[arg-type]
    pool.start()
    return pool


def test_unknown_job_type_is_dead_lettered_at_once(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset, workers=2)
    pool = run_pool(queue, {}, job_timeout_s=5)
    try:
        job_id = queue.enqueue(Job(type="no-such-type", max_retries=5))
        wait_for(lambda: pool.counters.dead == 1)
    finally:
        pool.stop()
    job = queue.get_job(job_id)
    assert job is not None and job.status is Status.DEAD and job.attempts == 1
    assert job.last_error == "no handler for job type 'no-such-type'"
    assert dead_ids(queue) == [job_id] and pool.counters.retried == 0
    assert queue.stats().scheduled == 0


def test_a_raising_handler_is_retried_then_dead_lettered(make_queue: QueueFactory, preset: Variant) -> None:
    queue = make_queue(preset, workers=2)
    scheduler = scheduler_service.Scheduler(make_queue(preset, namespace=queue.namespace), interval_s=0.02)

    def explode(job: Job) -> None:
        raise KeyError(job.payload.decode())

    pool = run_pool(queue, {"explode": explode}, job_timeout_s=5)
    scheduler.start()
    try:
        job_id = queue.enqueue(Job(type="explode", payload=b"missing-field", max_retries=1))
        wait_for(lambda: pool.counters.dead == 1)
    finally:
        scheduler.stop()
        pool.stop()
    job = queue.get_job(job_id)
    assert job is not None and job.status is Status.DEAD and job.attempts == 2
    assert job.last_error == "KeyError: 'missing-field'"
    assert pool.counters.retried == 1 and dead_ids(queue) == [job_id]


def test_a_hanging_handler_is_failed_and_the_worker_carries_on(
    make_queue: QueueFactory, preset: Variant
) -> None:
    queue = make_queue(preset, workers=1)
    release = threading.Event()

    def hang(job: Job) -> None:
        release.wait(30)

    pool = WorkerPool(queue, {"hang": hang}, concurrency=1, job_timeout_s=0.2)
    pool.start()
    try:
        hung = queue.enqueue(Job(type="hang", max_retries=0))
        after = queue.enqueue(Job(type="noop"))
        pool.handlers["noop"] = lambda job: None
        wait_for(lambda: pool.counters.dead == 1 and pool.counters.completed == 1)
    finally:
        release.set()
        pool.stop()
    job = queue.get_job(hung)
    assert job is not None and job.status is Status.DEAD
    assert job.last_error == "JobTimeoutError: job timed out after 0.2s"
    assert queue.get_job(after).status is Status.COMPLETED  # type: ignore[union-attr]


# -- corrupt stored records -------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "missing", "wrong_id"])
def test_corrupt_record_in_a_queue_is_dead_lettered_with_its_reason(
    make_queue: QueueFactory, preset: Variant, damage: str
) -> None:
    queue = make_queue(preset)
    bad, good = queue.enqueue_many([Job(type="noop", priority=Priority.HIGH), Job(type="noop")])
    if damage == "garbage":
        put_raw_record(queue, bad, b"\xff\xfe not a record")
    elif damage == "missing":
        put_raw_record(queue, bad, None)
    else:
        put_raw_record(queue, bad, queue.codec.encode(Job(type="noop", id="someone-else")))
    job = queue.dequeue(wait=False)
    assert job is not None and job.id == good  # the corrupt one was set aside, the next one served
    assert dead_ids(queue) == [bad]
    wrapper = queue.get_job(bad)
    assert wrapper is not None and wrapper.type == CORRUPT_JOB_TYPE and wrapper.status is Status.DEAD
    reason = {"garbage": "undecodable", "missing": "job record is missing", "wrong_id": "record holds id"}
    assert reason[damage] in wrapper.last_error
    assert queue.stats().processing == 1  # only the good job is held


def test_corrupt_records_in_the_scheduler_and_recovery_paths_are_dead_lettered(
    make_queue: QueueFactory, preset: Variant
) -> None:
    queue = make_queue(preset)
    scheduled, held = "corrupt-scheduled", "corrupt-held"
    put_raw_record(queue, scheduled, b"\x08\x96")  # truncated varint
    queue.client.zadd(queue.keys.scheduled(), {scheduled: 0})
    assert queue.move_scheduled_to_ready() == 1
    # A dead consumer holding a corrupt record.
    put_raw_record(queue, held, b"\xff" * 8)
    queue.client.lpush(queue.keys.processing("dead-consumer"), held)
    queue.client.sadd(queue.keys.consumers(), "dead-consumer")
    assert queue.recover_stale() == 1
    assert sorted(dead_ids(queue)) == sorted([scheduled, held])
    stats = queue.stats()
    assert stats.scheduled == 0 and stats.processing == 0 and sum(stats.queued.values()) == 0
    for job_id, raw, where in (
        (scheduled, b"\x08\x96", "scheduler move: "),
        (held, b"\xff" * 8, "stale recovery from consumer dead-consumer: "),
    ):
        wrapper = queue.get_job(job_id)  # the reason is kept with the raw bytes
        assert wrapper is not None and wrapper.type == CORRUPT_JOB_TYPE and wrapper.status is Status.DEAD
        assert wrapper.payload == raw and wrapper.last_error.startswith(where), wrapper.last_error


def test_a_missing_record_met_by_the_scheduler_is_dead_lettered_with_its_reason(
    make_queue: QueueFactory, preset: Variant
) -> None:
    queue = make_queue(preset)
    queue.client.zadd(queue.keys.scheduled(), {"no-record": 0})
    assert queue.move_scheduled_to_ready() == 1
    wrapper = queue.get_job("no-record")
    assert wrapper is not None and wrapper.last_error == "scheduler move: job record is missing"
    assert dead_ids(queue) == ["no-record"]


# -- service flags ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "argv", "message"),
    [
        ("worker", ["--concurrency", "0"], "expected a positive integer, got 0"),
        ("worker", ["--job-timeout", "soon"], "bad duration 'soon'"),
        ("worker", ["--lease", "forever"], "bad duration 'forever'"),
        ("worker", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ("worker", ["--variant", "fastest"], "--variant: unknown preset 'fastest'"),
        ("worker", ["--variant", "baseline+dequeue=psychic"], "dequeue='psychic'"),
        ("worker", ["--handlers", "no_such_module:HANDLERS"], "--handlers no_such_module:HANDLERS"),
        ("worker", ["--handlers", "qbench.queue_impl.worker:noop"], "not a mapping of job type to callable"),
        ("scheduler", ["--interval=-1s"], "bad duration '-1s'"),
        ("scheduler", ["--variant", "optimized+pool_size=many"], "bad value for pool_size"),
        ("scheduler", ["--namespace"], "expected one argument"),
        ("worker", ["--partitions", "0"], "expected a positive integer, got 0"),
        ("scheduler", ["--partitions", "65"], "--partitions: partitions=65: must be 1 to 64"),
    ],
)
def test_bad_service_flags_are_one_line_usage_errors(
    service: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    main = worker_service.main if service == "worker" else scheduler_service.main
    with pytest.raises(SystemExit) as exit_info:
        main(["--redis-url", redis_url, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


def test_bad_flags_exit_2_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qbench.queue_impl.worker", "--concurrency", "many"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--concurrency" in proc.stderr


# -- unreachable and password-protected Redis ----------------------------------------------------
@pytest.fixture(scope="module")
def protected_url() -> Iterator[str]:
    server = RedisServerProcess(password=PASSWORD)
    server.start()
    yield server.url
    server.stop()


def service_error(module: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard: a connect attempt gives up after a few seconds
    )


@pytest.mark.slow
@pytest.mark.parametrize("module", ["qbench.queue_impl.worker", "qbench.queue_impl.scheduler"])
def test_unreachable_redis_is_one_line_and_exit_1(module: str) -> None:
    proc = service_error(module, f"redis://127.0.0.1:{free_port()}/0")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "cannot reach Redis at redis://127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["none", "wrong"])
def test_password_protected_redis_without_the_password_is_one_line(protected_url: str, auth: str) -> None:
    port = protected_url.rsplit(":", 1)[1]
    url = f"redis://127.0.0.1:{port}" if auth == "none" else f"redis://:wrong-secret@127.0.0.1:{port}"
    proc = service_error("qbench.queue_impl.worker", url)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr
    assert "wrong-secret" not in proc.stderr  # the password is never echoed
    assert "authentication failed" in proc.stderr and "give the password" in proc.stderr


@pytest.mark.parametrize("auth", ["unreachable", "no-password"])
def test_qbench_against_a_bad_redis_is_one_line(
    protected_url: str, auth: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = protected_url.rsplit(":", 1)[1] if auth == "no-password" else str(free_port())
    assert qbench_main(["ops", "--redis-url", f"redis://127.0.0.1:{port}/0"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("qbench: error: cannot reach Redis")
        and "Traceback" not in err
    )
    if auth == "no-password":
        assert "authentication failed" in err


# -- workload files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"users = [\n", "not a readable TOML workload"),
        (b"\xff\xfe\x00 binary", "not a readable TOML workload"),
        (b"users = 2\nbogus_key = 1\n", "unknown key(s) bogus_key"),
        (None, "workload file not found"),
    ],
    ids=["bad-toml", "binary", "unknown-key", "missing"],
)
def test_bad_workload_files_are_one_line_usage_errors(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "workload.toml"
    if content is not None:
        path.write_bytes(content)
    assert qbench_main(["load", str(path), "--variant", "optimized"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
