"""Job codecs: protobuf (the seed's) and JSON (the proto3 JSON mapping)."""

from __future__ import annotations

import base64
import json
from typing import Protocol

from google.protobuf.message import DecodeError

from qbench.queue_impl import job_pb2
from qbench.queue_impl.config import CodecName
from qbench.queue_impl.job import Job, Priority, Status


class CorruptJobError(ValueError):
    """A stored job record that its codec cannot decode."""


class Codec(Protocol):
    name: CodecName

    def encode(self, job: Job) -> bytes: ...

    def decode(self, data: bytes) -> Job: ...


class ProtobufCodec:
    name: CodecName = "protobuf"

    def encode(self, job: Job) -> bytes:
        return job_pb2.Job(
            id=job.id,
            type=job.type,
            payload=job.payload,
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

    def encode(self, job: Job) -> bytes:
        return json.dumps(
            {
                "id": job.id,
                "type": job.type,
                "payload": base64.b64encode(job.payload).decode(),
                "priority": job.priority.name,
                "attempts": job.attempts,
                "maxRetries": job.max_retries,
                "createdAtUs": str(job.created_at_us),
                "scheduledAtUs": str(job.scheduled_at_us),
                "startedAtUs": str(job.started_at_us),
                "finishedAtUs": str(job.finished_at_us),
                "lastError": job.last_error,
                "status": job.status.name,
            },
            separators=(",", ":"),
        ).encode()

    def decode(self, data: bytes) -> Job:
        try:
            doc = json.loads(data)
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
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptJobError(f"undecodable JSON job record: {exc!r}") from None


CODECS: dict[CodecName, Codec] = {"protobuf": ProtobufCodec(), "json": JsonCodec()}
