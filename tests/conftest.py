"""One real Redis for the whole suite (REDIS_URL if set, else a redis-server qbench starts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest
import redis

from qbench.harness.infra.measured import unique_namespace
from qbench.harness.infra.redis_server import ProvisionedRedis, provision, provision_cluster
from qbench.harness.peers.registry import discover
from qbench.harness.results.rows import Row
from qbench.queue_impl.config import PRESETS, Variant, VariantError, parse_variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.queue import RedisQueue

FAST = {
    "poll_interval_s": 0.02,
    "block_timeouts_s": (0.2, 0.2, 0.6),
    "notify_timeout_s": 1.0,
    "retry_base_s": 0.05,
}
"""Short waits for behaviour tests: counts and semantics do not depend on them."""


def fast(variant: Variant) -> Variant:
    return variant.with_overrides(**FAST)


def bad_variants(rows: Iterable[Row]) -> list[str]:
    """`experiment: variant` of every row whose variant cell is not empty, not a variant
    `parse_variant` accepts and (experiment `peers`) not a driver name: the `variant` column
    holds variants or drivers only, anything else goes in `params`."""
    bad = set()
    for row in rows:
        if not row.variant or (row.experiment == "peers" and row.variant in discover().specs):
            continue
        try:
            parse_variant(row.variant)
        except VariantError:
            bad.add(f"{row.experiment}: {row.variant}")
    return sorted(bad)


def put_raw_record(queue: RedisQueue, job_id: str, raw: bytes | None) -> None:
    """Store `raw` as a job's record where the queue's record layout keeps it (None deletes
    it): how tests plant corrupt or missing records."""
    records = queue.partition_for(job_id).records
    if raw is None:
        records.delete(queue.client, job_id)
    else:
        records.put(queue.client, job_id, raw, ttl=None)


def raw_record(queue: RedisQueue, job_id: str) -> bytes | None:
    """A job's stored record, undecoded."""
    return queue.partition_for(job_id).records.get(queue.client, job_id)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ProvisionedRedis]:
    with provision() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: ProvisionedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ProvisionedRedis]:
    """A local three-master Redis Cluster qbench starts once per session (about 2 s)."""
    with provision_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_url(redis_cluster: ProvisionedRedis) -> str:
    """`redis+cluster://127.0.0.1:PORT` of the session's cluster."""
    return redis_cluster.url


@pytest.fixture
def raw_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


QueueFactory = Callable[..., RedisQueue]


@pytest.fixture
def make_queue(redis_url: str) -> Iterator[QueueFactory]:
    """Factory: `make_queue(variant, namespace=None, consumer=None, workers=1)`.

    Every queue made gets its own namespace unless one is given; all are cleaned up.
    """
    made: list[RedisQueue] = []

    def create(
        variant: Variant, *, namespace: str | None = None, consumer: str | None = None, workers: int = 1
    ) -> RedisQueue:
        client = make_client(redis_url, variant, workers=workers)
        queue = RedisQueue(
            client, variant, namespace=namespace or unique_namespace("test"), consumer=consumer
        )
        made.append(queue)
        return queue

    yield create
    for queue in made:
        queue.cleanup()
        close_client(queue.client)


@pytest.fixture(params=list(PRESETS), ids=list(PRESETS))
def preset(request: pytest.FixtureRequest) -> Variant:
    """Each preset with short waits: the behaviour suite runs once per preset."""
    return fast(PRESETS[request.param])
