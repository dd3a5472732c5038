"""The record a job gets when its stored one cannot be used, and why it cannot."""

from __future__ import annotations

from qbench.queue_impl.codec import Codec, CorruptJobError
from qbench.queue_impl.job import Job, Status, now_us

CORRUPT_JOB_TYPE = "qbench.corrupt"
"""Type given to a dead-lettered record that could not be decoded (raw bytes kept as payload)."""


def corrupt_record(codec: Codec, job_id: str, raw: bytes, reason: str) -> bytes:
    """The record a dead-lettered corrupt job gets: its raw bytes as payload, the reason."""
    wrapper = Job(
        id=job_id,
        type=CORRUPT_JOB_TYPE,
        payload=raw,
        status=Status.DEAD,
        last_error=reason,
        finished_at_us=now_us(),
        max_retries=0,
    )
    return codec.encode(wrapper)


def corrupt_reason(codec: Codec, job_id: str, raw: bytes | None) -> str:
    """Why a stored record cannot be used ('' when it can)."""
    if raw is None:
        return "job record is missing"
    try:
        job = codec.decode(raw)
    except CorruptJobError as exc:
        return str(exc)
    return "" if job.id == job_id else f"record holds id {job.id!r}"
