"""Job codecs: protobuf (the seed's), JSON (the proto3 JSON mapping, by the stdlib or by
orjson) and MessagePack; and the `compress` toggle's payload compression around any of them."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal, Protocol

import lz4.frame  # type: ignore[import-untyped]
import msgpack  # type: ignore[import-untyped]
import orjson
import zstandard
from google.protobuf.message import DecodeError

from qbench.queue_impl import job_pb2
from qbench.queue_impl.config import CodecName, CompressMode, Variant
from qbench.queue_impl.job import Job, Priority, Status

RecordFormat = Literal["protobuf", "json", "msgpack"]
"""What the Lua scripts must parse (they are given this, not the codec's name): orjson
writes the same JSON document as json."""


class CorruptJobError(ValueError):
    """A stored job record that its codec cannot decode."""


class Codec(Protocol):
    name: CodecName
    record_format: RecordFormat

    def encode(self, job: Job) -> bytes: ...

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        """`job` encoded with `payload` in place of its own."""
        ...

    def decode(self, data: bytes) -> Job: ...


class ProtobufCodec:
    name: CodecName = "protobuf"
    record_format: RecordFormat = "protobuf"

    def encode(self, job: Job) -> bytes:
        return self.encode_with_payload(job, job.payload)

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        return job_pb2.Job(
            id=job.id,
            type=job.type,
            payload=payload,
            priority=int(job.priority),  # type: ignore[arg-type]
            attempts=job.attempts,
            max_retries=job.max_retries,
            created_at_us=job.created_at_us,
            scheduled_at_us=job.scheduled_at_us,
            started_at_us=job.started_at_us,
            finished_at_us=job.finished_at_us,
            last_error=job.last_error,
            status=int(job.status),  # type: ignore[arg-type]
        ).SerializeToString()

    def decode(self, data: bytes) -> Job:
        message = job_pb2.Job()
        try:
            message.ParseFromString(data)
            return Job(
                id=message.id,
                type=message.type,
                payload=message.payload,
                priority=Priority(message.priority),
                attempts=message.attempts,
                max_retries=message.max_retries,
                created_at_us=message.created_at_us,
                scheduled_at_us=message.scheduled_at_us,
                started_at_us=message.started_at_us,
                finished_at_us=message.finished_at_us,
                last_error=message.last_error,
                status=Status(message.status),
            )
        except (DecodeError, ValueError) as exc:
            raise CorruptJobError(f"undecodable protobuf job record: {exc}") from None


class JsonCodec:
    """The proto3 JSON mapping: int64 as strings and bytes as base64.

    Strings keep 64-bit microsecond timestamps exact through Redis's Lua cjson,
    which prints numbers with at most 14 significant digits.
    """

    name: CodecName = "json"
    record_format: RecordFormat = "json"

    def encode(self, job: Job) -> bytes:
        return self.encode_with_payload(job, job.payload)

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        return json.dumps(_json_document(job, payload), separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Job:
        try:
            return _from_json_document(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptJobError(f"undecodable JSON job record: {exc!r}") from None


class OrjsonCodec:
    """The JSON codec's document, written and read by orjson (Rust): the same record
    format, so the scripts read it as JSON. Non-ASCII text is written as UTF-8 where the
    stdlib escapes it; each codec reads the other's records."""

    name: CodecName = "orjson"
    record_format: RecordFormat = "json"

    def encode(self, job: Job) -> bytes:
        return self.encode_with_payload(job, job.payload)

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        return orjson.dumps(_json_document(job, payload))

    def decode(self, data: bytes) -> Job:
        try:
            return _from_json_document(orjson.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptJobError(f"undecodable JSON job record: {exc!r}") from None


def _json_document(job: Job, payload: bytes) -> dict[str, object]:
    return {
        "id": job.id,
        "type": job.type,
        "payload": base64.b64encode(payload).decode(),
        "priority": job.priority.name,
        "attempts": job.attempts,
        "maxRetries": job.max_retries,
        "createdAtUs": str(job.created_at_us),
        "scheduledAtUs": str(job.scheduled_at_us),
        "startedAtUs": str(job.started_at_us),
        "finishedAtUs": str(job.finished_at_us),
        "lastError": job.last_error,
        "status": job.status.name,
    }


def _from_json_document(doc: Any) -> Job:
    """KeyError, TypeError or ValueError when `doc` is not a job document."""
    return Job(
        id=doc["id"],
        type=doc["type"],
        payload=base64.b64decode(doc["payload"], validate=True),
        priority=Priority[doc["priority"]],
        attempts=int(doc["attempts"]),
        max_retries=int(doc["maxRetries"]),
        created_at_us=int(doc["createdAtUs"]),
        scheduled_at_us=int(doc["scheduledAtUs"]),
        started_at_us=int(doc["startedAtUs"]),
        finished_at_us=int(doc["finishedAtUs"]),
        last_error=doc["lastError"],
        status=Status[doc["status"]],
    )


MSGPACK_FIELDS = 12
"""The record is an array of the protobuf fields 1..12 in their order; status (0..4, one
positive-fixint byte) is last, so the scripts requeue a record by replacing its last byte,
never by re-encoding (Lua's cmsgpack would write the payload back as str, not bin)."""


class MsgpackCodec:
    """MessagePack (the `msgpack` C extension), integers as integers, text and bytes both as
    raw strings of the original spec (`use_bin_type=False`): Redis's Lua cmsgpack (Redis
    8.2, checked) answers "Bad data format" to the bin and str8 types, so a record with
    them would be dead-lettered by every script that reads it."""

    name: CodecName = "msgpack"
    record_format: RecordFormat = "msgpack"

    def encode(self, job: Job) -> bytes:
        return self.encode_with_payload(job, job.payload)

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        packed: bytes = msgpack.packb(
            [
                job.id,
                job.type,
                payload,
                int(job.priority),
                job.attempts,
                job.max_retries,
                job.created_at_us,
                job.scheduled_at_us,
                job.started_at_us,
                job.finished_at_us,
                job.last_error,
                int(job.status),
            ],
            use_bin_type=False,
        )
        return packed

    def decode(self, data: bytes) -> Job:
        try:
            fields = msgpack.unpackb(data, raw=True, use_list=True)
            if not isinstance(fields, list) or len(fields) != MSGPACK_FIELDS:
                raise ValueError(f"expected an array of {MSGPACK_FIELDS} fields")
            (job_id, job_type, payload, priority, attempts, max_retries, created, scheduled, started,
             finished, last_error, status) = fields  # fmt: skip
            if not all(isinstance(f, bytes) for f in (job_id, job_type, payload, last_error)):
                raise ValueError("id, type, payload and last error must be raw strings")
            return Job(
                id=job_id.decode(),
                type=job_type.decode(),
                payload=payload,
                priority=Priority(priority),
                attempts=attempts,
                max_retries=max_retries,
                created_at_us=created,
                scheduled_at_us=scheduled,
                started_at_us=started,
                finished_at_us=finished,
                last_error=last_error.decode(),
                status=Status(status),
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptJobError(f"undecodable MessagePack job record: {exc!r}") from None


PAYLOAD_STORED = {b"\x00": "off", b"\x01": "zstd", b"\x02": "lz4"}
"""The first byte of a stored payload under compress != off: how the rest is stored."""
_HEADER: dict[CompressMode, bytes] = {mode: header for header, mode in PAYLOAD_STORED.items()}  # type: ignore[misc]


class CompressingCodec:
    """The `compress` toggle: payloads of at least `min_bytes` are compressed before the
    inner codec stores them, behind a one-byte header (`PAYLOAD_STORED`); smaller ones get
    the header and stay as they are. Everything but the payload is the inner codec's, so
    the scripts read the record as before. A payload that compresses to no fewer bytes is
    stored as it is."""

    def __init__(self, inner: Codec, mode: CompressMode, min_bytes: int) -> None:
        if mode == "off":
            raise ValueError("CompressingCodec needs zstd or lz4")
        self.inner = inner
        self.name = inner.name
        self.record_format = inner.record_format
        self.mode = mode
        self.min_bytes = min_bytes
        self._zstd = zstandard.ZstdCompressor(level=3)
        self._unzstd = zstandard.ZstdDecompressor()

    def encode(self, job: Job) -> bytes:
        return self.inner.encode_with_payload(job, self.stored_payload(job.payload))

    def encode_with_payload(self, job: Job, payload: bytes) -> bytes:
        return self.inner.encode_with_payload(job, self.stored_payload(payload))

    def stored_payload(self, payload: bytes) -> bytes:
        """The payload as this codec stores it: header + compressed or plain bytes."""
        if len(payload) >= self.min_bytes:
            packed = self._zstd.compress(payload) if self.mode == "zstd" else lz4.frame.compress(payload)
            if len(packed) < len(payload):
                return _HEADER[self.mode] + packed
        return b"\x00" + payload

    def decode(self, data: bytes) -> Job:
        job = self.inner.decode(data)
        stored, body = job.payload[:1], job.payload[1:]
        how = PAYLOAD_STORED.get(stored)
        try:
            if how == "off":
                job.payload = body
            elif how == "zstd":
                job.payload = self._unzstd.decompress(body)
            elif how == "lz4":
                job.payload = lz4.frame.decompress(body)
            else:
                raise ValueError(f"unknown payload header {stored!r}")
        except (ValueError, RuntimeError, zstandard.ZstdError) as exc:
            raise CorruptJobError(f"undecodable compressed payload: {exc}") from None
        return job


CODECS: dict[CodecName, Codec] = {
    "protobuf": ProtobufCodec(),
    "json": JsonCodec(),
    "orjson": OrjsonCodec(),
    "msgpack": MsgpackCodec(),
}


def codec_for(variant: Variant) -> Codec:
    """The codec of `variant`: its `codec`, wrapped by its `compress` (when not off)."""
    inner = CODECS[variant.codec]
    if variant.compress == "off":
        return inner
    return CompressingCodec(inner, variant.compress, variant.compress_min_bytes)
