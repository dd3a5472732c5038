"""Job codecs: encode and decode time per codec and payload size; record bytes per job."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from qbench.queue_impl.codec import CODECS
from qbench.queue_impl.config import CodecName
from qbench.queue_impl.job import Job, Priority

CODEC_NAMES: tuple[CodecName, ...] = ("protobuf", "json", "orjson", "msgpack")
PAYLOAD_SIZES = (128, 4096)


def sample_job(payload_size: int) -> Job:
    return Job(type="bench", payload=b"x" * payload_size, priority=Priority.HIGH, attempts=1, last_error="e")


@pytest.mark.benchmark(group="codec_encode")
@pytest.mark.parametrize("payload_size", PAYLOAD_SIZES)
@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_encode(benchmark: BenchmarkFixture, codec: CodecName, payload_size: int) -> None:
    job = sample_job(payload_size)
    encoded = benchmark(CODECS[codec].encode, job)
    benchmark.extra_info["bytes_per_job"] = len(encoded)


@pytest.mark.benchmark(group="codec_decode")
@pytest.mark.parametrize("payload_size", PAYLOAD_SIZES)
@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_decode(benchmark: BenchmarkFixture, codec: CodecName, payload_size: int) -> None:
    job = sample_job(payload_size)
    encoded = CODECS[codec].encode(job)
    decoded = benchmark(CODECS[codec].decode, encoded)
    assert decoded == job
    benchmark.extra_info["bytes_per_job"] = len(encoded)
