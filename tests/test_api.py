"""The submission API over a real Redis: submit, read, stats, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from qbench.harness.infra.measured import unique_namespace
from qbench.harness.load.runner import api_server
from qbench.queue_impl.api import DEFAULT_HOST, SubmissionBatcher, parse_args
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.job import Job, Priority
from qbench.queue_impl.queue import RedisQueue
from tests.conftest import QueueFactory, fast

VARIANT = fast(PRESETS["optimized"])


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[tuple[str, str]]:
    """(base URL, namespace) of a running `python -m qbench.queue_impl.api`."""
    namespace = unique_namespace("api")
    with api_server(redis_url, VARIANT, namespace) as base:
        yield base, namespace


@pytest.fixture
def queue(api: tuple[str, str], make_queue: QueueFactory) -> RedisQueue:
    """The API's queue, read directly; emptied after each test."""
    return make_queue(VARIANT, namespace=api[1])


def call(base: str, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_submitted_job_is_queued_and_readable(api: tuple[str, str], queue: RedisQueue) -> None:
    base, _ = api
    status, created = call(base, "POST", "/jobs", {"type": "email", "payload": "héllo", "priority": "high"})
    assert status == 201

    status, doc = call(base, "GET", f"/jobs/{created['id']}")
    assert status == 200
    assert (doc["type"], doc["priority"], doc["status"]) == ("email", "high", "queued")
    assert base64.b64decode(doc["payload_base64"]) == "héllo".encode()

    job = queue.dequeue(wait=False)
    assert job is not None
    assert (job.id, job.payload, job.priority) == (created["id"], "héllo".encode(), Priority.HIGH)
    queue.complete(job)


def test_base64_payload_and_stats_count_every_submission(api: tuple[str, str], queue: RedisQueue) -> None:
    base, _ = api
    raw = bytes(range(256))
    for priority in ("high", "normal", "normal", "low"):
        body = {"type": "blob", "payload": base64.b64encode(raw).decode(), "payload_encoding": "base64"}
        status, _ = call(base, "POST", "/jobs", {**body, "priority": priority})
        assert status == 201

    status, stats = call(base, "GET", "/stats")
    assert status == 200
    assert stats["queued"] == {"high": 1, "normal": 2, "low": 1}
    job = queue.dequeue(wait=False)
    assert job is not None and job.payload == raw


@pytest.mark.parametrize(
    "body",
    [
        {"type": ""},
        {"payload": "no type"},
        {"type": "t", "priority": "urgent"},
        {"type": "t", "max_retries": -1},
        {"type": "t", "payload": "not base64!", "payload_encoding": "base64"},
    ],
)
def test_malformed_job_is_rejected_and_nothing_is_queued(
    api: tuple[str, str], queue: RedisQueue, body: dict[str, object]
) -> None:
    status, doc = call(api[0], "POST", "/jobs", body)
    assert status == 422 and "detail" in doc
    assert sum(queue.stats().queued.values()) == 0


def test_malformed_json_and_unknown_job(api: tuple[str, str]) -> None:
    assert call(api[0], "POST", "/jobs", raw=b"{not json")[0] == 422
    status, doc = call(api[0], "GET", "/jobs/does-not-exist")
    assert status == 404 and "does-not-exist" in doc["detail"]


def test_binds_loopback_by_default() -> None:
    assert parse_args([]).host == DEFAULT_HOST == "127.0.0.1"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--variant", "fastest"], 2, "unknown preset"),
        (["--redis-url", "redis://127.0.0.1:1/0"], 1, "cannot reach Redis"),
    ],
)
def test_bad_start_is_one_line(args: list[str], code: int, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qbench.queue_impl.api", *args], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == code
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


def test_oversized_payload_is_413_and_nothing_is_queued(api: tuple[str, str], queue: RedisQueue) -> None:
    body = {"type": "noop", "payload": "x" * (queue.max_payload_bytes + 1)}
    status, doc = call(api[0], "POST", "/jobs", body)
    assert status == 413 and "payload" in doc["detail"]
    assert sum(queue.stats().queued.values()) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "zero"], "--port"),
        (["--redis-url", "nota://url"], "--redis-url"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qbench.queue_impl.api", *args], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


class _GatedQueue:
    """Stands in for RedisQueue.enqueue_many: the first call waits until released."""

    def __init__(self, real: RedisQueue) -> None:
        self.real = real
        self.release = threading.Event()
        self.calls: list[int] = []

    def enqueue_many(self, jobs: list[Job]) -> list[str]:
        self.calls.append(len(jobs))
        if len(self.calls) == 1:
            assert self.release.wait(10)
        return self.real.enqueue_many(jobs)


def test_submissions_made_while_a_batch_is_in_flight_go_out_together(make_queue: QueueFactory) -> None:
    queue = make_queue(VARIANT)
    gated = _GatedQueue(queue)
    batcher = SubmissionBatcher(gated, max_batch=30)  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        first = asyncio.ensure_future(batcher.submit(Job(type="noop")))
        while not gated.calls:  # the first batch (one job) is on its way
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit(Job(type="noop"))) for _ in range(50)]
        await asyncio.sleep(0.01)
        gated.release.set()
        return await asyncio.gather(first, *rest)

    try:
        ids = asyncio.run(scenario())
    finally:
        batcher.close()
    # One job alone, then the 50 that queued meanwhile, in batches of at most 30.
    assert gated.calls == [1, 30, 20]
    assert (batcher.batches, batcher.jobs) == (3, 51)
    assert len(set(ids)) == 51
    assert sum(queue.stats().queued.values()) == 51


def test_a_failed_batch_fails_each_of_its_jobs_and_the_next_batch_still_goes(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(VARIANT)

    class Flaky:
        max_payload_bytes = queue.max_payload_bytes

        def __init__(self) -> None:
            self.calls = 0

        def enqueue_many(self, jobs: list[Job]) -> list[str]:
            self.calls += 1
            if self.calls == 1:
                raise redis.ConnectionError("Redis went away")
            return queue.enqueue_many(jobs)

    batcher = SubmissionBatcher(Flaky())  # type: ignore[arg-type]

    async def scenario() -> tuple[BaseException | str, str]:
        failed = await asyncio.gather(batcher.submit(Job(type="noop")), return_exceptions=True)
        return failed[0], await batcher.submit(Job(type="noop"))

    try:
        failed, written = asyncio.run(scenario())
    finally:
        batcher.close()
    assert isinstance(failed, redis.ConnectionError)
    assert sum(queue.stats().queued.values()) == 1 and queue.get_job(written) is not None


def test_several_processes_serve_one_port(redis_url: str, make_queue: QueueFactory) -> None:
    namespace = unique_namespace("api-procs")
    with api_server(redis_url, VARIANT, namespace, processes=2) as base:
        ids = {call(base, "POST", "/jobs", {"type": "noop"})[1]["id"] for _ in range(20)}
    queue = make_queue(VARIANT, namespace=namespace)
    assert len(ids) == 20 and sum(queue.stats().queued.values()) == 20
