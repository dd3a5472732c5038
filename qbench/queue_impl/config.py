"""The variant: one frozen config of independent toggles, and the named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

DequeueMode = Literal["poll", "block", "notify"]
BatchMode = Literal["loop", "pipeline", "script"]
TtlMode = Literal["off", "on"]
KeyMode = Literal["format", "precomputed"]
PoolMode = Literal["wait", "raise"]
CodecName = Literal["protobuf", "json", "msgpack", "orjson"]
CompressMode = Literal["off", "zstd", "lz4"]
DurabilityMode = Literal["off", "replica"]
RecordsMode = Literal["keys", "hash"]
DispatchMode = Literal["thread", "process"]
AckMode = Literal["each", "batch"]
ConnMode = Literal["pool", "pinned"]
RetentionMode = Literal["keep", "delete"]
HandoffMode = Literal["broadcast", "targeted"]
WaitClaimMode = Literal["apart", "pipelined"]
BeatMode = Literal["pool", "kept"]
OrphanScanMode = Literal["always", "after_reconnect"]

MAX_PARTITIONS = 64
"""More partitions than a cluster has masters only adds cost; 64 is far beyond any test."""

MAX_PREFETCH = 1000
"""A claim carries at most idle threads + prefetch jobs; far beyond this, a crash would
hand back a large backlog late (after the lease)."""

POOL_SIZED = 0
"""`pool_size` value meaning: one connection per worker plus headroom (see `pool_size_for`)."""

HOUR_S = 3600
DAY_S = 24 * HOUR_S


class VariantError(ValueError):
    """A variant string or override that does not name a valid configuration."""


@dataclass(frozen=True, kw_only=True)
class Variant:
    """Which implementation of each seed optimization the queue uses.

    Every field is independent. `keys` changes only cost (key-building CPU); `ttl`,
    `codec`, `pool_size`/`pool_mode` and the `*_s` timings do what they say (expiry,
    record format, connection limit and what a caller does at it, waits and backoffs).
    `batch` and `dequeue` change cost (round trips, commands) and, under concurrency or
    a crash, behaviour too, as pinned per value in tests/test_queue_behaviour.py:

    - batch: only `script` is atomic. Under `loop` and `pipeline`, two schedulers moving
      at once queue each due job twice, and complete()/fail() of a job this consumer no
      longer holds still write it (COMPLETED, or a second copy scheduled or
      dead-lettered), where `script` writes nothing and complete() returns False.
      `loop` pushes a batch job by job, and a worker killed inside its fail() after the
      LREM loses the job.
    - dequeue: `notify` claims the highest ready priority in one script; `poll` and
      `block` check one priority per command, so a job arriving on a higher priority
      after its check waits for the next claim (`block`: until this claim's lower waits end).

    Presets are in `PRESETS`; `parse_variant` applies overrides.
    """

    name: str = "custom"
    dequeue: DequeueMode = "poll"
    """poll: RPOPLPUSH per priority + 100 ms sleep; block: the seed's BRPOPLPUSH per
    priority (1 s / 1 s / 3 s); notify: one blocking wait on a wake-up marker, then an
    atomic claiming script in strict priority order."""
    batch: BatchMode = "loop"
    """loop: one round trip per command; pipeline: the seed's GET/MGET + one pipeline;
    script: one server-side Lua call per operation, atomic."""
    ttl: TtlMode = "off"
    completed_ttl_s: int = DAY_S
    dead_ttl_s: int = 7 * DAY_S
    keys: KeyMode = "format"
    pool_size: int = 10
    """Max connections; `POOL_SIZED` (0) sizes the pool to the worker count."""
    pool_mode: PoolMode = "wait"
    """wait: a worker waits up to `pool_timeout_s` for a free connection; raise: fail at once."""
    pool_timeout_s: float = 5.0
    codec: CodecName = "protobuf"
    """protobuf (the seed's), json (the proto3 JSON mapping, stdlib json), orjson (the same
    JSON document written and read by orjson), msgpack (a 12-item MessagePack array in the
    protobuf field order, status last). The Lua scripts read all four."""
    compress: CompressMode = "off"
    """Compress a job's payload (never the rest of the record, which the scripts read) when
    it is at least `compress_min_bytes` long: zstd or lz4 (frame format). Under any value
    but off every payload carries a one-byte header saying how it is stored, and a reader
    decompresses either algorithm."""
    compress_min_bytes: int = 1024
    durability: DurabilityMode = "off"
    """off: a write is done when the primary has it. replica: enqueue, complete and fail
    also wait (WAIT 1 `durability_timeout_s`) until a replica has acknowledged everything
    the connection wrote, so a failover to that replica loses none of them. See
    `RedisQueue.enqueue` for what happens when no replica acknowledges in time."""
    durability_timeout_s: float = 1.0
    records: RecordsMode = "keys"
    """keys: one string key per job record (the seed's layout); hash: one hash per queue
    partition (`...:jobs`, field = job id) with per-field TTLs (HEXPIRE, Redis >= 7.4), so
    every Lua script declares every key it touches and claim, scheduler move and stale
    recovery stay one round trip on Redis Cluster. Under `keys`, a script cannot declare
    the record of a job whose id it pops, so those take the ids client-side first: one
    more round trip for a notify claim, a script move and a recovery."""
    partitions: int = 1
    """How many hash-tagged partitions one queue spreads over (each a full queue in one
    slot, so on Redis Cluster they land on different shards). A job's partition is a
    hash of its id. Priority order and FIFO hold within a partition; workers rotate the
    partition they try first. 1 keeps the single-partition key layout."""
    poll_interval_s: float = 0.1
    block_timeouts_s: tuple[float, float, float] = (1.0, 1.0, 3.0)
    """BRPOPLPUSH timeouts for high, normal, low (the seed's values)."""
    notify_timeout_s: float = 5.0
    """How long one notify-mode wait blocks before the worker loop regains control."""
    retry_base_s: float = 1.0
    """Backoff before retry n is retry_base_s * 2**(n-1)."""
    retry_max_s: float = 3600.0
    dispatch: DispatchMode = "thread"
    """Who waits on Redis in a worker pool. thread: every worker thread dequeues for
    itself (one wait per thread). process: one dispatcher per pool (and partition) waits
    and claims as many jobs per call as there are idle threads plus `prefetch`, and hands
    them to the threads in-process; with notify that is one BZPOPMIN per process,
    `notify_timeout_s` long, and one claim script per batch (poll and block claim one job
    per command, as always)."""
    prefetch: int = 0
    """Under dispatch=process: jobs a pool may claim beyond its idle threads (a bounded
    local backlog, handed back to the queue on shutdown). Claimed jobs sit in the
    processing list like any other: a crash returns them through stale recovery.
    Ignored under dispatch=thread."""
    ack: AckMode = "each"
    """each: every completion is its own call. batch (under dispatch=process; ignored
    otherwise): one acker thread sends every completion that piled up while the previous
    call was on its way (script: one round trip for many jobs under load, at once when
    idle; loop and pipeline still complete job by job)."""
    conn: ConnMode = "pool"
    """pool: every call checks a connection out of the pool (redis-py's client). pinned:
    each thread keeps one connection for the queue's Lua scripts and notify waits, and
    sends them without redis-py's per-call checkout, retry wrapper and reply callbacks;
    other commands (and a Redis Cluster client's everything) keep the pool path."""
    retention: RetentionMode = "keep"
    """What completion does to a job's record. keep: it stays, marked completed (with the
    completed TTL when ttl=on), for `get_job` and the API. delete: it goes at once, as
    most job libraries do; dead-lettered records are kept either way."""
    handoff: HandoffMode = "broadcast"
    """Under dispatch=process, whom a change in the pool's state wakes. broadcast: every idle
    thread (and the acker) at each leader's step-down and each completion; the first to get
    the lock acts, the rest go back to sleep. targeted: only the threads that have something
    to do: one per claimed job left in the backlog, the acker (alone, on a condition of its
    own) per completion, and the next leader only once the old one is about to call its
    job's handler, so the woken threads never compete with that job for the interpreter.
    Ignored under dispatch=thread."""
    wait_claim: WaitClaimMode = "apart"
    """Under dequeue=notify, when the claim is sent after a blocking wait. apart: once the
    wait's reply is in (two round trips from wake-up to job). pipelined: in the same write
    as the wait (BZPOPMIN, then the claim script of the waited partition), so Redis runs the
    claim the moment the wait returns and both replies come back together: one round trip.
    The claim runs after a timed-out wait too, which is the sweep `apart` makes then, so
    the commands are the same."""
    beat: BeatMode = "pool"
    """The heartbeat's connection. pool: it checks one out of the pool for each beat (under
    conn=pinned the worker threads keep theirs, so a beat may find none free and open one).
    kept: the heartbeat thread keeps one connection open for good (conn=pinned's path)."""
    orphan_scan: OrphanScanMode = "always"
    """When a worker pool looks for claims whose reply was lost (an LRANGE of its
    processing list on each heartbeat). always: every heartbeat. after_reconnect (only
    under conn=pinned, where every claim goes through the pinned path, which sees every
    broken connection; `always` elsewhere): on the heartbeats after a pinned connection
    broke, until no unowned job is left to confirm, and on every 30th heartbeat anyway."""
    handicap_us: float = 0.0
    """Calibration only, never a setting: burn this many microseconds of client CPU in
    each queue operation (enqueue, enqueue_many, dequeue, complete, fail, the scheduler
    move). It exists so `qbench gate calibrate` can inject a known regression and count
    how often the timing gate sees it; 0 (the default) costs one attribute check."""

    def __post_init__(self) -> None:
        for field, literal in (
            ("dequeue", DequeueMode),
            ("batch", BatchMode),
            ("ttl", TtlMode),
            ("keys", KeyMode),
            ("pool_mode", PoolMode),
            ("codec", CodecName),
            ("compress", CompressMode),
            ("durability", DurabilityMode),
            ("records", RecordsMode),
            ("dispatch", DispatchMode),
            ("ack", AckMode),
            ("conn", ConnMode),
            ("retention", RetentionMode),
            ("handoff", HandoffMode),
            ("wait_claim", WaitClaimMode),
            ("beat", BeatMode),
            ("orphan_scan", OrphanScanMode),
        ):
            value = getattr(self, field)
            allowed = get_args(literal)
            if value not in allowed:
                raise VariantError(f"{field}={value!r}: expected one of {', '.join(allowed)}")
        if not 0 <= self.prefetch <= MAX_PREFETCH:
            raise VariantError(f"prefetch={self.prefetch}: must be 0 to {MAX_PREFETCH}")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise VariantError(f"partitions={self.partitions}: must be 1 to {MAX_PARTITIONS}")
        if self.compress_min_bytes < 0:
            raise VariantError(f"compress_min_bytes={self.compress_min_bytes}: must be >= 0")
        if self.pool_size < 0:
            raise VariantError(f"pool_size={self.pool_size}: must be >= 0 (0 = sized to workers)")
        if min(self.completed_ttl_s, self.dead_ttl_s) <= 0:
            raise VariantError("TTLs must be positive seconds")
        waits = {
            "poll_interval_s": self.poll_interval_s,
            "notify_timeout_s": self.notify_timeout_s,
            "pool_timeout_s": self.pool_timeout_s,
            "retry_base_s": self.retry_base_s,
            "retry_max_s": self.retry_max_s,
            "handicap_us": self.handicap_us,
            "durability_timeout_s": self.durability_timeout_s,
        }
        if len(self.block_timeouts_s) != 3:
            raise VariantError("block_timeouts_s: three timeouts expected (high/normal/low)")
        for field, seconds in [*waits.items(), *(("block_timeouts_s", t) for t in self.block_timeouts_s)]:
            if not math.isfinite(seconds) or seconds < 0:
                raise VariantError(f"{field}={seconds}: must be a finite number of seconds >= 0")
        # Redis reads a blocking timeout of 0 as "block forever": a hang, not a short wait.
        if min(*self.block_timeouts_s, self.notify_timeout_s) <= 0:
            raise VariantError("block_timeouts_s and notify_timeout_s must be > 0 seconds")
        # WAIT's timeout 0 also means "forever"; it is given in whole milliseconds.
        if self.durability_timeout_s < 0.001:
            raise VariantError("durability_timeout_s must be at least 0.001 seconds")
        if self.durability == "replica" and self.batch == "loop":
            # The loop sends one operation's commands on whichever pooled connection is free,
            # and WAIT covers only the writes of the connection it is sent on.
            raise VariantError("durability=replica needs batch=pipeline or script (loop spreads a write)")
        if self.socket_timeout_s <= self.longest_block_s:
            raise VariantError("socket timeout must exceed the longest blocking wait")

    @property
    def longest_block_s(self) -> float:
        return max(max(self.block_timeouts_s), self.notify_timeout_s, self.poll_interval_s)

    @property
    def socket_timeout_s(self) -> float:
        # redis-py raises TimeoutError when a blocking command outlives the socket
        # timeout, so it always sits above the longest wait (the seed set 10 s).
        return max(10.0, self.longest_block_s + 5.0, self.durability_timeout_s + 5.0)

    def pool_size_for(self, workers: int) -> int:
        """Max connections for `workers` concurrent workers.

        Sized = one per worker (each may pin one in a blocking wait) + 2 for the
        scheduler, heartbeat and stats callers; dispatch=process adds one per
        dispatcher (a partition each) and 3 for the acker, watchdog and heartbeat, which
        may each keep one under conn=pinned.
        """
        if self.pool_size != POOL_SIZED:
            return self.pool_size
        extra = self.partitions + 3 if self.dispatch == "process" else 0
        return workers + 2 + extra

    def with_overrides(self, **overrides: object) -> Variant:
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def label(self) -> str:
        """Preset name, or preset name plus the toggles that differ from it."""
        base = PRESETS.get(self.name)
        if base is None:
            return self.name
        diffs = [
            f"{f.name}={_format_value(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) != getattr(base, f.name)
        ]
        return self.name if not diffs else f"{self.name}+{','.join(diffs)}"

    def toggles(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _format_value(value: object) -> str:
    # repr keeps every digit, so `parse_variant(variant.label()) == variant`.
    if isinstance(value, tuple):
        return "/".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    return str(value)


PRESETS: dict[str, Variant] = {
    "baseline": Variant(name="baseline"),
    "optimized": Variant(
        name="optimized",
        dequeue="block",
        batch="pipeline",
        ttl="on",
        keys="precomputed",
        pool_size=50,
    ),
    "scripted": Variant(
        name="scripted",
        dequeue="notify",
        batch="script",
        ttl="on",
        keys="precomputed",
        pool_size=POOL_SIZED,
        records="hash",
        notify_timeout_s=30.0,
        dispatch="process",
        prefetch=10,
        ack="batch",
        conn="pinned",
        # The pickup path of issue 20 (handoff=targeted, wait_claim=pipelined, beat=kept,
        # orphan_scan=after_reconnect, notify_timeout_s=60: `PICKUP_FLOOR`) is not yet a
        # default: it was measured only on a busy machine, and every committed run of
        # `scripted` would have to be measured again with it.
    ),
}
PRESET_NAMES = tuple(PRESETS)
PICKUP_FLOOR = (
    "handoff=targeted,wait_claim=pipelined,beat=kept,orphan_scan=after_reconnect,notify_timeout_s=60"
)
"""Issue 20's pickup path as overrides of `scripted` (`scripted+` this): each toggle alone is
a row of the Makefile's ablation."""

_INT_FIELDS = {"completed_ttl_s", "dead_ttl_s", "pool_size", "partitions", "prefetch", "compress_min_bytes"}
_FLOAT_FIELDS = {
    "pool_timeout_s",
    "poll_interval_s",
    "notify_timeout_s",
    "retry_base_s",
    "retry_max_s",
    "handicap_us",
    "durability_timeout_s",
}


def parse_variant(spec: str) -> Variant:
    """Parse `preset[+toggle=value,...]`, e.g. `baseline+dequeue=block,pool_size=50`.

    `pool_size=sized` means `POOL_SIZED`; `block_timeouts_s=1/1/3` sets all three.
    """
    name, _, rest = spec.strip().partition("+")
    if name not in PRESETS:
        raise VariantError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    variant = PRESETS[name]
    if not rest:
        return variant
    fields = {f.name for f in dataclasses.fields(Variant)} - {"name"}
    overrides: dict[str, object] = {}
    for item in rest.split(","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        raw = raw.strip()
        if not sep or key not in fields:
            raise VariantError(
                f"bad override {item!r}: expected TOGGLE=VALUE with TOGGLE in {', '.join(sorted(fields))}"
            )
        overrides[key] = _parse_value(key, raw)
    return variant.with_overrides(**overrides)


def _parse_value(key: str, raw: str) -> object:
    try:
        if key == "pool_size":
            return POOL_SIZED if raw == "sized" else int(raw)
        if key in _INT_FIELDS:
            return int(raw)
        if key in _FLOAT_FIELDS:
            return float(raw)
        if key == "block_timeouts_s":
            parts = tuple(float(p) for p in raw.split("/"))
            if len(parts) != 3:
                raise ValueError("three timeouts expected")
            return parts
    except ValueError as exc:
        raise VariantError(f"bad value for {key}: {raw!r} ({exc})") from None
    return raw


TOGGLE_VALUES: dict[str, str] = {
    "dequeue": "poll | block | notify",
    "batch": "loop | pipeline | script",
    "ttl": "off | on",
    "keys": "format | precomputed",
    "pool_size": "N | sized (one connection per worker + 2)",
    "pool_mode": "wait | raise",
    "codec": "protobuf | json | orjson | msgpack",
    "compress": "off | zstd | lz4 (payloads of at least compress_min_bytes)",
    "compress_min_bytes": "bytes (default 1024)",
    "durability": "off | replica (enqueue, complete, fail wait for one replica: WAIT 1)",
    "durability_timeout_s": "seconds WAIT waits for the replica (default 1)",
    "records": "keys | hash (hash needs Redis >= 7.4)",
    "partitions": "N (1 = one partition)",
    "dispatch": "thread | process (one dispatcher per worker pool; needs notify + script)",
    "prefetch": "N jobs claimed beyond idle threads (dispatch=process)",
    "ack": "each | batch (completions coalesced per round trip; dispatch=process)",
    "conn": "pool | pinned (one kept connection per thread for scripts and waits; needs script)",
    "retention": "keep | delete (a completed record stays, or goes at once)",
    "handoff": "broadcast | targeted (wake every idle thread, or only who has work; dispatch=process)",
    "wait_claim": "apart | pipelined (the claim sent with the notify wait, one round trip)",
    "beat": "pool | kept (the heartbeat checks out a pooled connection, or keeps one)",
    "orphan_scan": "always | after_reconnect (look for lost claims each heartbeat, or after a broken pin)",
    "completed_ttl_s": "seconds",
    "dead_ttl_s": "seconds",
    "pool_timeout_s": "seconds",
    "poll_interval_s": "seconds",
    "block_timeouts_s": "high/normal/low seconds, e.g. 1/1/3",
    "notify_timeout_s": "seconds",
    "retry_base_s": "seconds",
    "retry_max_s": "seconds",
    "handicap_us": "microseconds of CPU burnt per operation (calibrating gates only; default 0)",
}
"""What each toggle accepts, for `--help` (the docstrings of `Variant` say what each does)."""


def toggle_help() -> str:
    """The presets and every toggle with the values it accepts, one per line."""
    lines = ["presets:"]
    for name, preset in PRESETS.items():
        shown = ", ".join(
            f"{k}={_format_value(preset.toggles()[k])}"
            for k in ("dequeue", "batch", "ttl", "keys", "pool_size", "codec", "records")
        )
        lines.append(f"  {name:<10} {shown}")
    lines.append("toggles:")
    lines += [f"  {name:<17} {values}" for name, values in TOGGLE_VALUES.items()]
    return "\n".join(lines)
