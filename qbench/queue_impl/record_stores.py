"""Where a queue partition keeps its job records: one class per value of the `records` toggle.

`KeyRecords` (records=keys): a string key per job, the seed's layout. `HashRecords`
(records=hash): one hash per partition, field = job id, a TTL per field (HEXPIRE, Redis
>= 7.4). The Lua scripts read and write records through the prelude of the same layout
(`scripts.PRELUDES`); these classes give the client side and what the scripts declare.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Protocol

from redis.exceptions import ResponseError

from qbench.queue_impl.clients import RedisClient
from qbench.queue_impl.config import VariantError
from qbench.queue_impl.job import as_bytes, as_text
from qbench.queue_impl.keys import KeyBuilder

SCAN_BATCH = 1000


class RecordStore(Protocol):
    """Where a partition keeps its job records; chosen by the `records` toggle.

    `target` arguments take the client or a pipeline (the write is queued there)."""

    def get(self, client: RedisClient, job_id: str) -> bytes | None: ...
    def get_many(self, client: RedisClient, job_ids: Sequence[str]) -> list[bytes | None]: ...
    def put(self, target: RedisClient, job_id: str, record: bytes, *, ttl: int | None) -> None:
        """Store `record`; `ttl` seconds of life, or None: no expiry (any earlier one cleared)."""
        ...

    def delete(self, client: RedisClient, job_id: str) -> None: ...
    def ttl(self, client: RedisClient, job_id: str) -> int:
        """Seconds left as the TTL command answers: -1 no expiry, -2 no record."""
        ...

    def scan(self, client: RedisClient) -> Iterator[tuple[str, bytes]]:
        """Every record of the partition, as (job id, record); SCAN-style, never KEYS."""
        ...

    # What the memory experiment reads and sets, per layout.
    def count(self, client: RedisClient) -> int: ...
    def expire(self, target: RedisClient, job_id: str, seconds: int) -> None: ...
    def stored_bytes(self, client: RedisClient, job_id: str) -> int: ...
    def memory_usage_per_record(self, client: RedisClient, job_ids: Sequence[str]) -> float:
        """Bytes per record as MEMORY USAGE reports them: the median over the given jobs'
        keys, or the records hash's usage divided by its length (overhead included)."""
        ...

    def script_keys(self, job_ids: Sequence[str]) -> list[str]:
        """The record keys a script given these ids declares (see `scripts.py`)."""
        ...

    def claim_keys(self) -> list[str]:
        """What the claim script declares to read the record of the id it pops ([]: it cannot)."""
        ...

    def claimed_record(self, client: RedisClient, job_id: str, from_script: object) -> bytes | None:
        """The record of a job the claim script took (read now when the script could not)."""
        ...

    def claimed_records(
        self, client: RedisClient, job_ids: Sequence[str], from_script: Sequence[object]
    ) -> list[bytes | None]:
        """The records of the jobs a batch claim took (one MGET when the script could not)."""
        ...

    def due_ids(self, client: RedisClient, scheduled: str, now_us: int, limit: int) -> list[str] | None:
        """Due ids read client-side for the move script, or None: the script reads them."""
        ...

    def held_ids(self, client: RedisClient, processing: str) -> list[str] | None:
        """A processing list's ids, oldest first, for the recovery script, or None: it pops them."""
        ...

    def check_server(self, client: RedisClient) -> None:
        """Raise `VariantError` when the server cannot keep records this way."""
        ...


@dataclass(frozen=True, slots=True)
class KeyRecords:
    """records=keys: one string key per job (`...:job:<id>`), the seed's layout.

    A script can declare a job's key only if the client knows the id, so the notify claim
    reads the record with a GET after the claim, and the scheduler's script move and stale
    recovery read the ids first (ZRANGEBYSCORE, LRANGE): one more round trip each."""

    keys: KeyBuilder

    def get(self, client: RedisClient, job_id: str) -> bytes | None:
        return _optional_bytes(client.get(self.keys.job(job_id)))

    def get_many(self, client: RedisClient, job_ids: Sequence[str]) -> list[bytes | None]:
        return [_optional_bytes(r) for r in client.mget([self.keys.job(i) for i in job_ids])]

    def put(self, target: RedisClient, job_id: str, record: bytes, *, ttl: int | None) -> None:
        target.set(self.keys.job(job_id), record, ex=ttl)

    def delete(self, client: RedisClient, job_id: str) -> None:
        client.delete(self.keys.job(job_id))

    def ttl(self, client: RedisClient, job_id: str) -> int:
        return int(client.ttl(self.keys.job(job_id)))

    def scan(self, client: RedisClient) -> Iterator[tuple[str, bytes]]:
        prefix = self.keys.job("")
        names = sorted(
            as_bytes(k) for k in client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_BATCH)
        )
        for start in range(0, len(names), SCAN_BATCH):
            chunk = names[start : start + SCAN_BATCH]
            for name, data in zip(chunk, client.mget(chunk), strict=True):
                if data is not None:  # None: expired between SCAN and MGET
                    yield as_text(name).removeprefix(prefix), as_bytes(data)

    def count(self, client: RedisClient) -> int:
        return sum(1 for _ in client.scan_iter(match=glob_escape(self.keys.job("")) + "*", count=SCAN_BATCH))

    def expire(self, target: RedisClient, job_id: str, seconds: int) -> None:
        target.expire(self.keys.job(job_id), seconds)

    def stored_bytes(self, client: RedisClient, job_id: str) -> int:
        return int(client.strlen(self.keys.job(job_id)))

    def memory_usage_per_record(self, client: RedisClient, job_ids: Sequence[str]) -> float:
        return float(median(int(client.memory_usage(self.keys.job(i)) or 0) for i in job_ids))

    def script_keys(self, job_ids: Sequence[str]) -> list[str]:
        return [self.keys.job(job_id) for job_id in job_ids]

    def claim_keys(self) -> list[str]:
        return []

    def claimed_record(self, client: RedisClient, job_id: str, from_script: object) -> bytes | None:
        return self.get(client, job_id)

    def claimed_records(
        self, client: RedisClient, job_ids: Sequence[str], from_script: Sequence[object]
    ) -> list[bytes | None]:
        return self.get_many(client, job_ids) if job_ids else []

    def due_ids(self, client: RedisClient, scheduled: str, now_us: int, limit: int) -> list[str] | None:
        return [as_text(i) for i in client.zrangebyscore(scheduled, "-inf", now_us, start=0, num=limit)]

    def held_ids(self, client: RedisClient, processing: str) -> list[str] | None:
        return [as_text(i) for i in reversed(client.lrange(processing, 0, -1))]

    def check_server(self, client: RedisClient) -> None:
        pass


@dataclass(frozen=True, slots=True)
class HashRecords:
    """records=hash: one hash per partition (`...:jobs`, field = job id, value = record),
    per-record expiry with HEXPIRE (Redis >= 7.4). Every script declares the same fixed
    keys whatever ids it meets, so claim, move and recovery stay one round trip."""

    keys: KeyBuilder

    def get(self, client: RedisClient, job_id: str) -> bytes | None:
        return _optional_bytes(client.hget(self.keys.jobs(), job_id))

    def get_many(self, client: RedisClient, job_ids: Sequence[str]) -> list[bytes | None]:
        return [_optional_bytes(r) for r in client.hmget(self.keys.jobs(), list(job_ids))]

    def put(self, target: RedisClient, job_id: str, record: bytes, *, ttl: int | None) -> None:
        # HSET clears the field's TTL, as SET clears a key's.
        target.hset(self.keys.jobs(), job_id, record)
        if ttl is not None:
            target.hexpire(self.keys.jobs(), ttl, job_id)

    def delete(self, client: RedisClient, job_id: str) -> None:
        client.hdel(self.keys.jobs(), job_id)

    def ttl(self, client: RedisClient, job_id: str) -> int:
        return int(client.httl(self.keys.jobs(), job_id)[0])

    def scan(self, client: RedisClient) -> Iterator[tuple[str, bytes]]:
        for job_id, data in client.hscan_iter(self.keys.jobs(), count=SCAN_BATCH):
            yield as_text(job_id), as_bytes(data)

    def count(self, client: RedisClient) -> int:
        return int(client.hlen(self.keys.jobs()))

    def expire(self, target: RedisClient, job_id: str, seconds: int) -> None:
        target.hexpire(self.keys.jobs(), seconds, job_id)

    def stored_bytes(self, client: RedisClient, job_id: str) -> int:
        return int(client.hstrlen(self.keys.jobs(), job_id))

    def memory_usage_per_record(self, client: RedisClient, job_ids: Sequence[str]) -> float:
        records = int(client.hlen(self.keys.jobs()))
        # SAMPLES 0 reads every field: the default samples 5 at random, which would vary.
        usage = int(client.memory_usage(self.keys.jobs(), samples=0) or 0)
        return usage / records if records else 0.0

    def script_keys(self, job_ids: Sequence[str]) -> list[str]:
        return [self.keys.jobs()]

    def claim_keys(self) -> list[str]:
        return [self.keys.jobs()]

    def claimed_record(self, client: RedisClient, job_id: str, from_script: object) -> bytes | None:
        return _optional_bytes(from_script or None)

    def claimed_records(
        self, client: RedisClient, job_ids: Sequence[str], from_script: Sequence[object]
    ) -> list[bytes | None]:
        return [_optional_bytes(record or None) for record in from_script]

    def due_ids(self, client: RedisClient, scheduled: str, now_us: int, limit: int) -> list[str] | None:
        return None

    def held_ids(self, client: RedisClient, processing: str) -> list[str] | None:
        return None

    def check_server(self, client: RedisClient) -> None:
        # A probe on the records hash itself reaches the node that will keep the records
        # (on a cluster, each partition's); it touches no field (-2: no such field).
        try:
            client.hexpire(self.keys.jobs(), 1, "qbench-probe")
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            raise VariantError(
                f"records=hash needs HEXPIRE (Redis >= 7.4); {_server_version(client)} lacks it: "
                "use records=keys"
            ) from None


def _server_version(client: RedisClient) -> str:
    """`Redis 7.2.4` for an error message, or `this server` when INFO is refused."""
    try:
        info: dict[str, object] = client.info("server")
    except ResponseError:
        return "this server"
    # A cluster client may answer per node: {node: {...}}.
    sections = [info, *(v for v in info.values() if isinstance(v, dict))]
    for section in sections:
        version = section.get("valkey_version") or section.get("redis_version")
        if version:
            return f"Redis {version}"
    return "this server"


def glob_escape(text: str) -> str:
    """`text` as a literal SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


RECORD_STORES: dict[str, type[KeyRecords] | type[HashRecords]] = {"keys": KeyRecords, "hash": HashRecords}


def _optional_bytes(value: object) -> bytes | None:
    return None if value is None else as_bytes(value)
