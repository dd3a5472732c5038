"""The job and its codecs: exact round trips, strict decoding, and the Lua record edits."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qbench.queue_impl import job_pb2
from qbench.queue_impl.codec import CODECS, CompressingCodec, CorruptJobError, codec_for
from qbench.queue_impl.config import CodecName, parse_variant
from qbench.queue_impl.connection import make_client
from qbench.queue_impl.job import Job, Priority, Status
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.records import CORRUPT_JOB_TYPE
from tests.conftest import put_raw_record, raw_record

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT32 = st.integers(0, 2**32 - 1)
jobs = st.builds(
    Job,
    id=st.text(min_size=1, max_size=40),
    type=st.text(min_size=1, max_size=40),
    payload=st.binary(max_size=300),
    priority=st.sampled_from(Priority),
    max_retries=UINT32,
    attempts=UINT32,
    created_at_us=INT64,
    scheduled_at_us=INT64,
    started_at_us=INT64,
    finished_at_us=INT64,
    last_error=st.text(max_size=80),
    status=st.sampled_from(Status),
)
CODEC_NAMES: tuple[CodecName, ...] = ("protobuf", "json", "orjson", "msgpack")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the job ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": ""}, "job type must be a non-empty string"),
        ({"id": ""}, "job id must be a non-empty string"),
        ({"payload": "text"}, "job payload must be bytes"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"attempts": -1}, "attempts must be between 0 and 4294967295"),
        ({"max_retries": 2**32}, "max_retries must be between 0 and 4294967295"),
        ({"created_at_us": 2**63}, "created_at_us must fit in a signed 64-bit integer"),
        ({"finished_at_us": -(2**63) - 1}, "finished_at_us must fit in a signed 64-bit integer"),
        ({"priority": "urgent"}, "unknown priority 'urgent': expected high, normal or low"),
        ({"priority": 7}, "7 is not a valid Priority"),
        ({"status": 9}, "9 is not a valid Status"),
    ],
)
def test_job_rejects_bad_fields(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"type": "email", **fields}
    with pytest.raises(ValueError, match=message):
        Job(**arguments)  # type: ignore[arg-type]


def test_priorities_parse_from_names_numbers_and_members() -> None:
    assert [Priority.parse(v) for v in ("high", " LOW ", "Normal", 1, Priority.LOW)] == [
        Priority.HIGH,
        Priority.LOW,
        Priority.NORMAL,
        Priority.HIGH,
        Priority.LOW,
    ]
    assert Job(type="email", priority="high").priority is Priority.HIGH  # type: ignore[arg-type]


# -- codecs ----------------------------------------------------------------------------
@PROPERTY
@given(job=jobs)
def test_every_codec_round_trips_every_field(job: Job) -> None:
    for codec in CODECS.values():
        assert codec.decode(codec.encode(job)) == job


def test_json_keeps_the_extreme_64_bit_values_exact() -> None:
    job = Job(type="t", created_at_us=2**63 - 1, scheduled_at_us=-(2**63), finished_at_us=2**53 + 1)
    encoded = CODECS["json"].encode(job)
    assert b'"createdAtUs":"9223372036854775807"' in encoded
    assert CODECS["json"].decode(encoded) == job


def _protobuf_with(**fields: object) -> bytes:
    return job_pb2.Job(**fields).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "record", "reason"),
    [
        ("protobuf", b"garbage", "Wire format was corrupt"),
        ("protobuf", b"\xff\xff\xff", "Wire format was corrupt"),
        ("protobuf", b"", "job type must be a non-empty string"),
        ("protobuf", _protobuf_with(id="a", type="t", priority=7), "7 is not a valid Priority"),
        ("protobuf", _protobuf_with(id="a", type="t", status=9), "9 is not a valid Status"),
        ("json", b"garbage", "JSONDecodeError"),
        ("json", b"\xc3\x28", "UnicodeDecodeError"),
        ("json", b"[1, 2]", "TypeError"),
        ("json", b'{"id": "a"}', "KeyError"),
        ("json", CODECS["json"].encode(Job(type="t")).replace(b'"NORMAL"', b'"URGENT"'), "KeyError"),
        ("json", CODECS["json"].encode(Job(type="t")).replace(b'"payload":""', b'"payload":"!"'), "Error"),
        ("json", CODECS["json"].encode(Job(type="t")).replace(b'"attempts":0', b'"attempts":-1'), "attempts"),
        ("orjson", b"garbage", "JSONDecodeError"),
        ("orjson", b'{"id": "a"}', "KeyError"),
        ("msgpack", b"garbage", "MessagePack"),
        ("msgpack", msgpack.packb([1, 2]), "expected an array of 12 fields"),
        ("msgpack", msgpack.packb([b"a", b"t", b"", 7, 0, 0, 0, 0, 0, 0, b"", 0]), "7 is not a valid"),
        ("msgpack", msgpack.packb([1, b"t", b"", 0, 0, 0, 0, 0, 0, 0, b"", 0]), "raw strings"),
        ("msgpack", msgpack.packb([b"\xc3\x28", b"t", b"", 0, 0, 0, 0, 0, 0, 0, b"", 0]), "UnicodeDecode"),
    ],
)
def test_undecodable_records_raise_corrupt_job_error(codec: CodecName, record: bytes, reason: str) -> None:
    with pytest.raises(CorruptJobError, match=reason) as caught:
        CODECS[codec].decode(record)
    assert "\n" not in str(caught.value)


# -- Lua record edits, against the real server -------------------------------------------
@pytest.fixture(scope="module")
def script_queues(redis_url: str) -> Iterator[dict[CodecName, RedisQueue]]:
    """One `script`-batch queue per codec, shared by the property tests of this module."""
    queues: dict[CodecName, RedisQueue] = {}
    for codec in CODEC_NAMES:
        variant = parse_variant(f"scripted+codec={codec}")
        queues[codec] = RedisQueue(
            make_client(redis_url, variant), variant, namespace=f"test-codec-{codec}", consumer="c1"
        )
    yield queues
    for queue in queues.values():
        queue.cleanup()
        queue.client.close()


def _schedule_raw(queue: RedisQueue, job_id: str, record: bytes | None) -> None:
    if record is not None:
        put_raw_record(queue, job_id, record)
    queue.client.zadd(queue.keys.scheduled(), {job_id: 0})


@PROPERTY
@given(job=jobs)
def test_lua_requeue_of_a_protobuf_record_sets_queued_and_keeps_every_other_field(
    script_queues: dict[CodecName, RedisQueue], job: Job
) -> None:
    queue = script_queues["protobuf"]
    queue.cleanup()
    record = queue.codec.encode(job)
    _schedule_raw(queue, job.id, record)
    assert queue.move_scheduled_to_ready(now=1) == 1
    # The script appends field 12 (status) = 0; protobuf parsers keep the last value.
    assert raw_record(queue, job.id) == record + b"\x60\x00"
    assert queue.get_job(job.id) == dataclasses.replace(job, status=Status.QUEUED)
    assert queue.client.lrange(queue.keys.queue(job.priority), 0, -1) == [job.id.encode()]


@PROPERTY
@given(job=jobs)
@example(
    job=Job(
        type="t",
        status=Status.SCHEDULED,
        created_at_us=2**63 - 1,
        scheduled_at_us=-(2**63),
        started_at_us=1_764_300_000_123_457,  # more digits than cjson prints for a number
        finished_at_us=2**53 + 1,  # the first integer a double cannot hold
    )
)
def test_lua_requeue_of_a_json_record_keeps_64_bit_times_exact(
    script_queues: dict[CodecName, RedisQueue], job: Job
) -> None:
    queue = script_queues["json"]
    queue.cleanup()
    _schedule_raw(queue, job.id, queue.codec.encode(job))
    assert queue.move_scheduled_to_ready(now=1) == 1
    assert queue.get_job(job.id) == dataclasses.replace(job, status=Status.QUEUED)
    assert queue.client.lrange(queue.keys.queue(job.priority), 0, -1) == [job.id.encode()]


@PROPERTY
@given(job=jobs)
def test_lua_requeue_of_a_msgpack_record_rewrites_only_its_last_byte(
    script_queues: dict[CodecName, RedisQueue], job: Job
) -> None:
    queue = script_queues["msgpack"]
    queue.cleanup()
    record = queue.codec.encode(job)
    _schedule_raw(queue, job.id, record)
    assert queue.move_scheduled_to_ready(now=1) == 1
    # Status (0..4) is the array's last item, one byte: the script writes 0 there and never
    # re-encodes, so 64-bit times and raw payload bytes stay exact.
    assert raw_record(queue, job.id) == record[:-1] + b"\x00"
    assert queue.get_job(job.id) == dataclasses.replace(job, status=Status.QUEUED)
    assert queue.client.lrange(queue.keys.queue(job.priority), 0, -1) == [job.id.encode()]


@PROPERTY
@given(job=jobs)
def test_lua_requeue_of_an_orjson_record_reads_it_as_json(
    script_queues: dict[CodecName, RedisQueue], job: Job
) -> None:
    queue = script_queues["orjson"]
    queue.cleanup()
    _schedule_raw(queue, job.id, queue.codec.encode(job))
    assert queue.move_scheduled_to_ready(now=1) == 1
    assert queue.get_job(job.id) == dataclasses.replace(job, status=Status.QUEUED)


def test_json_and_orjson_read_each_others_records() -> None:
    job = Job(type="tâche", payload=b"\x00\xff", last_error="échec", created_at_us=2**63 - 1)
    assert CODECS["json"].decode(CODECS["orjson"].encode(job)) == job
    assert CODECS["orjson"].decode(CODECS["json"].encode(job)) == job
    assert CODECS["orjson"].record_format == CODECS["json"].record_format == "json"


# -- payload compression (the `compress` toggle) ---------------------------------------------
def _text_payload(size: int) -> bytes:
    item = b'{"user_id":100042,"action":"resize","width":640,"height":480},'
    return (item * (size // len(item) + 1))[:size]


@pytest.mark.parametrize(
    ("spec", "payload_bytes", "stored_bytes"),
    [
        ("scripted+compress=zstd", 10_000, 83),  # header + zstd frame of a repetitive text
        ("scripted+compress=lz4", 10_000, 135),
        ("scripted+compress=zstd", 1_023, 1_024),  # under compress_min_bytes: header + payload
        ("scripted+compress=lz4,compress_min_bytes=0", 0, 1),
    ],
)
def test_compression_stores_the_payload_behind_a_header(
    spec: str, payload_bytes: int, stored_bytes: int
) -> None:
    codec = codec_for(parse_variant(spec))
    assert isinstance(codec, CompressingCodec)
    job = Job(type="t", payload=_text_payload(payload_bytes))
    stored = codec.stored_payload(job.payload)
    assert len(stored) == stored_bytes
    assert CODECS["protobuf"].decode(codec.encode(job)).payload == stored  # only the payload changes
    assert codec.decode(codec.encode(job)) == job


def test_a_payload_that_does_not_shrink_is_stored_plain_and_either_algorithm_reads_both() -> None:
    noise = random.Random(7).randbytes(2_048)  # zstd and lz4 both grow random bytes
    zstd = codec_for(parse_variant("scripted+compress=zstd"))
    lz4 = codec_for(parse_variant("scripted+compress=lz4"))
    assert isinstance(zstd, CompressingCodec)
    assert zstd.stored_payload(noise)[:1] == b"\x00"
    text = Job(type="t", payload=_text_payload(5_000))
    assert zstd.decode(lz4.encode(text)) == text == lz4.decode(zstd.encode(text))


def test_a_compressed_payload_with_a_bad_header_or_body_is_corrupt() -> None:
    codec = codec_for(parse_variant("scripted+compress=zstd"))
    for payload in (b"\x07abc", b"\x01not zstd", b"\x02not lz4"):
        with pytest.raises(CorruptJobError, match="compressed payload"):
            codec.decode(CODECS["protobuf"].encode(Job(type="t", payload=payload)))


CORRUPT_FOR_LUA: list[tuple[CodecName, bytes | None]] = [
    ("protobuf", None),
    ("protobuf", b"garbage"),
    ("protobuf", b"\x0a\x05ab"),  # a length-delimited field that runs past the end
    ("protobuf", b"\x08\xff"),  # a truncated varint
    ("protobuf", _protobuf_with(id="x", type="t", priority=7)),
    ("json", None),
    ("json", b"garbage"),
    ("json", b"[1, 2]"),
    ("json", b'"just a string"'),
    ("json", CODECS["json"].encode(Job(type="t")).replace(b'"NORMAL"', b'"URGENT"')),
    ("msgpack", None),
    ("msgpack", b"garbage"),
    ("msgpack", msgpack.packb([1, 2, 3])),  # an array, but not of 12 items
    ("msgpack", msgpack.packb([b"x", b"t", b"", 7, 0, 0, 0, 0, 0, 0, b"", 0])),  # priority 7
    ("msgpack", CODECS["msgpack"].encode(Job(type="t"))[:-1] + b"\x09"),  # status byte not 0..4
]


CORRUPT_IDS = [f"{codec}-{i}" for i, (codec, _) in enumerate(CORRUPT_FOR_LUA)]
"""Stable ids: some records hold a random job id, and every pytest-xdist worker must collect
the same test names."""


@pytest.mark.parametrize(("codec", "record"), CORRUPT_FOR_LUA, ids=CORRUPT_IDS)
def test_lua_move_dead_letters_a_corrupt_or_missing_record(
    script_queues: dict[CodecName, RedisQueue], codec: CodecName, record: bytes | None
) -> None:
    queue = script_queues[codec]
    queue.cleanup()
    good = Job(type="good", priority=Priority.LOW)
    queue.enqueue(good)
    queue.dequeue(wait=False)
    queue.fail(good, "retry me")
    _schedule_raw(queue, "bad", record)
    assert queue.move_scheduled_to_ready(now=2**62) == 2
    assert queue.client.lrange(queue.keys.dead(), 0, -1) == [b"bad"]
    assert queue.client.zcard(queue.keys.scheduled()) == 0
    assert queue.client.lrange(queue.keys.queue(Priority.LOW), 0, -1) == [good.id.encode()]
    assert queue.client.llen(queue.keys.queue(Priority.NORMAL)) == 0
    # The dead letter says why, and keeps the raw bytes as its payload for inspection.
    dead = queue.get_job("bad")
    assert dead is not None and dead.type == CORRUPT_JOB_TYPE and dead.status is Status.DEAD
    assert dead.last_error.startswith("scheduler move:") and dead.payload == (record or b"")


@pytest.mark.parametrize(("codec", "record"), [(c, r) for c, r in CORRUPT_FOR_LUA if r in (None, b"garbage")])
def test_lua_recovery_dead_letters_a_corrupt_record_of_a_stale_consumer(
    script_queues: dict[CodecName, RedisQueue], codec: CodecName, record: bytes | None
) -> None:
    queue = script_queues[codec]
    queue.cleanup()
    queue.register_consumer()
    good = Job(type="good", priority=Priority.HIGH)
    queue.enqueue(good)
    # A consumer that died holding a good job and a corrupt one (its heartbeat is gone).
    stale = "stale-consumer"
    queue.client.sadd(queue.keys.consumers(), stale)
    queue.client.lmove(queue.keys.queue(Priority.HIGH), queue.keys.processing(stale), "RIGHT", "LEFT")
    queue.client.lpush(queue.keys.processing(stale), "bad")
    if record is not None:
        put_raw_record(queue, "bad", record)
    assert queue.recover_stale() == 2
    assert queue.client.lrange(queue.keys.dead(), 0, -1) == [b"bad"]
    assert queue.client.lrange(queue.keys.queue(Priority.HIGH), 0, -1) == [good.id.encode()]
    assert queue.client.exists(queue.keys.processing(stale)) == 0
    assert queue.client.smembers(queue.keys.consumers()) == {b"c1"}
    recovered = queue.get_job(good.id)
    assert recovered is not None and recovered.status is Status.QUEUED


def test_script_queues_really_use_their_codec(script_queues: dict[CodecName, RedisQueue]) -> None:
    for codec, queue in script_queues.items():
        queue.cleanup()
        job = Job(type="t")
        queue.enqueue(job)
        raw = raw_record(queue, job.id)
        assert raw is not None
        assert raw.startswith(b"{") == (codec in ("json", "orjson"))
        assert raw.startswith(b"\x9c") == (codec == "msgpack")  # a fixarray of 12
