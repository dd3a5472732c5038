"""Key families: what SCAN finds, grouped by key shape, with type, TTL coverage and memory.

`key_family(key)` replaces the ids in a key with `*`: UUIDs, ULIDs, hex ids (8+ hex
digits with a digit among them), numbers, and long mixed letter-and-digit tokens; runs of
such ids joined by `-`, `_` or `.` collapse into one `*`; other digits inside a word
become `*` too (`worker7` -> `worker*`). `qbench:{obs-4f1c2a9be0}:job:6a1f...` becomes
`qbench:{obs-*}:job:*`, `bull:emails:1234` becomes `bull:emails:*`. The result is a
glob pattern that matches every key of the family.

`KeyScanner` walks the keyspace with `SCAN cursor COUNT n` (n bounded, never KEYS), one
command per batch, and counts every key in its family (every family found keeps its own
count, however many there are). It then probes a uniform sample of each family's keys:
PTTL for up to `ttl_keys` keys (`TTL_KEYS`, 100: the TTL coverage figure is a share of
that many keys at most, and the report shows the sample size beside it), TYPE for up to
`type_keys`, MEMORY USAGE ... SAMPLES 5 for up to `memory_keys`, round robin so every
family gets its first probe before any gets a second. Every command goes through
the telemetry link, so the observer's token bucket paces it and the sampler subtracts
it. A pass that reaches cursor 0 saw every key that existed throughout the pass (SCAN's
guarantee), so its counts are exact for those; a pass cut short (deadline, key limit,
command cap) is a sample of the keyspace in hash-table order, and family counts are
extrapolated by the db's key count over the keys scanned (`KeyScan.extrapolated`).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from qbench.harness.infra.nodelink import NodeLink

SCAN_COUNT = 100
MAX_SCAN_COUNT = 1000
"""Above this a SCAN step may hold the server for too long on a big keyspace."""
MAX_SCAN_KEYS = 100_000
TTL_KEYS = 100
"""Keys per family probed with PTTL (the TTL coverage sample), budget and deadline allowing."""
TYPE_KEYS = 10
MEMORY_KEYS = 3
MEMORY_SAMPLES = 5
"""`MEMORY USAGE key SAMPLES 5`: bounded work on big lists, sets and hashes."""

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_WORD = re.compile(r"[A-Za-z0-9]+")
_RUNS = re.compile(r"\*(?:[-_.]?\*)+")
_DIGITS = re.compile(r"\d+")


def _token(match: re.Match[str]) -> str:
    token = match.group(0)
    has_digit = any(c.isdigit() for c in token)
    if not has_digit:
        return token
    if token.isdigit() or _ULID.fullmatch(token) or _HEX.fullmatch(token):
        return "*"
    if len(token) >= 16 and any(c.isalpha() for c in token):
        return "*"
    return _DIGITS.sub("*", token)


def key_family(key: str) -> str:
    """The glob pattern of `key` with its ids replaced by `*` (see the module docstring)."""
    text = _UUID.sub("*", key)
    text = _WORD.sub(_token, text)
    return _RUNS.sub("*", text)


@dataclass
class Family:
    """Keys of one shape: how many the scan saw, and what the probes found."""

    pattern: str
    scanned: int = 0
    sample: list[str] = field(default_factory=list)
    """Up to `ttl_keys` keys, a uniform sample of the scanned ones (reservoir)."""
    types: Counter[str] = field(default_factory=Counter)
    ttl_probed: int = 0
    no_ttl: int = 0
    ttl_s: list[float] = field(default_factory=list)
    memory_bytes: list[int] = field(default_factory=list)

    @property
    def no_ttl_share(self) -> float | None:
        """Share of the probed keys without a TTL (None when none was probed)."""
        return self.no_ttl / self.ttl_probed if self.ttl_probed else None

    @property
    def memory_mean(self) -> float | None:
        return sum(self.memory_bytes) / len(self.memory_bytes) if self.memory_bytes else None

    def as_dict(self, factor: float) -> dict[str, Any]:
        estimated = round(self.scanned * factor)
        mean = self.memory_mean
        return {
            "pattern": self.pattern,
            "keys_scanned": self.scanned,
            "keys_estimated": estimated,
            "types": dict(self.types),
            "ttl_probed": self.ttl_probed,
            "no_ttl_share": self.no_ttl_share,
            "ttl_s_median": sorted(self.ttl_s)[len(self.ttl_s) // 2] if self.ttl_s else None,
            "memory_usage_sampled": len(self.memory_bytes),
            "memory_usage_mean_bytes": mean,
            "memory_estimated_bytes": None if mean is None else mean * estimated,
            "sample_keys": self.sample[:3],
        }


@dataclass
class KeyScan:
    """One (possibly partial) SCAN pass over one logical db, and its probes."""

    db: int
    db_keys: int
    """Keys in the db when the scan started (INFO keyspace)."""
    families: dict[str, Family] = field(default_factory=dict)
    keys_scanned: int = 0
    scan_calls: int = 0
    probe_calls: int = 0
    complete: bool = False
    stopped: str = ""
    """Why the scan stopped early ('' when complete): deadline, key limit, command cap, refused."""
    refused: list[str] = field(default_factory=list)
    """Commands the server refused (e.g. MEMORY USAGE on a managed service)."""

    @property
    def extrapolated(self) -> bool:
        return not self.complete and self.keys_scanned > 0

    @property
    def factor(self) -> float:
        """Estimated keys per scanned key (1 for a complete pass)."""
        if self.complete or not self.keys_scanned:
            return 1.0
        return max(1.0, self.db_keys / self.keys_scanned)

    def coverage(self) -> str:
        """One line: whether the scan saw every key, and if not, how many of how many and what
        that can hide (empty for a complete pass)."""
        if self.complete:
            return ""
        why = "stopped at its key limit" if self.stopped == "key limit" else f"stopped: {self.stopped}"
        rare = round(self.db_keys / self.keys_scanned) if self.keys_scanned else 0
        return (
            f"the key scan {why}: it saw {self.keys_scanned:,} of the {self.db_keys:,} keys in db "
            f"{self.db} (INFO keyspace, as DBSIZE counts them)"
            + (
                f"; a family with fewer than ~{rare:,} keys may be missing from the families found"
                if rare > 1
                else ""
            )
        )

    def ranked(self) -> list[Family]:
        return sorted(self.families.values(), key=lambda f: (-f.scanned, f.pattern))

    def as_dict(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "db_keys": self.db_keys,
            "keys_scanned": self.keys_scanned,
            "scan_calls": self.scan_calls,
            "probe_calls": self.probe_calls,
            "complete": self.complete,
            "extrapolated": self.extrapolated,
            "extrapolation_factor": self.factor,
            "stopped": self.stopped,
            "coverage": self.coverage(),
            "refused": self.refused,
            "families": [family.as_dict(self.factor) for family in self.ranked()],
        }


class KeyScanner:
    """Scans one node's db through its telemetry link, within a deadline and a command cap."""

    def __init__(
        self,
        link: NodeLink,
        *,
        db: int = 0,
        db_keys: int = 0,
        count: int = SCAN_COUNT,
        max_keys: int = MAX_SCAN_KEYS,
        ttl_keys: int = TTL_KEYS,
        type_keys: int = TYPE_KEYS,
        memory_keys: int = MEMORY_KEYS,
        seed: int = 0,
    ) -> None:
        if not 1 <= count <= MAX_SCAN_COUNT:
            raise ValueError(f"SCAN COUNT must be 1..{MAX_SCAN_COUNT}, got {count}")
        self.link = link
        self.count = count
        self.max_keys = max_keys
        self.sample_keys = ttl_keys
        self.type_keys = type_keys
        self.memory_keys = memory_keys
        self._random = random.Random(seed)
        self.result = KeyScan(db=db, db_keys=db_keys)
        self._spent = 0

    def run(
        self,
        *,
        scan_until: float,
        probe_until: float,
        max_commands: int,
        stop: Callable[[], bool] = lambda: False,
    ) -> KeyScan:
        """SCAN until `scan_until` (a time.monotonic() value), then probe until `probe_until`.

        Sends at most `max_commands` commands in all; never raises for a refused command
        (it is recorded in `refused`) but lets connection errors through.
        """
        self._scan(scan_until, max_commands, stop)
        self._probe(probe_until, max_commands, stop)
        return self.result

    def _can_send(self, deadline: float, cap: int, stop: Callable[[], bool]) -> str:
        if stop():
            return "stopped"
        if time.monotonic() >= deadline:
            return "deadline"
        if self._spent >= cap:
            return "command cap"
        return ""

    def _execute(self, *args: Any) -> Any:
        self._spent += 1
        return self.link.execute(*args)

    def _scan(self, deadline: float, cap: int, stop: Callable[[], bool]) -> None:
        scan = self.result
        seen: set[bytes] = set()
        cursor = 0
        while True:
            reason = self._can_send(deadline, cap, stop)
            if not reason and len(seen) >= self.max_keys:
                reason = "key limit"
            if reason:
                scan.stopped = reason
                return
            try:
                cursor_raw, keys = self._execute("SCAN", cursor, "COUNT", self.count)
            except redis.ResponseError as exc:
                scan.refused.append(f"SCAN: {exc}")
                scan.stopped = "refused"
                return
            scan.scan_calls += 1
            cursor = int(cursor_raw)
            for key in keys:
                if key in seen:
                    continue  # SCAN may return a key twice (the table was rehashed)
                seen.add(key)
                self._add(key.decode(errors="backslashreplace") if isinstance(key, bytes) else str(key))
            scan.keys_scanned = len(seen)
            if cursor == 0:
                scan.complete = True
                return

    def _add(self, key: str) -> None:
        families = self.result.families
        pattern = key_family(key)
        family = families.setdefault(pattern, Family(pattern))
        family.scanned += 1
        if len(family.sample) < self.sample_keys:
            family.sample.append(key)
        else:  # reservoir sampling: every scanned key equally likely to be probed
            slot = self._random.randrange(family.scanned)
            if slot < self.sample_keys:
                family.sample[slot] = key

    def _probe(self, deadline: float, cap: int, stop: Callable[[], bool]) -> None:
        families = self.result.ranked()
        refused: set[str] = set()  # a command refused once is not sent again
        for index in range(self.sample_keys):
            for family in families:
                if index >= len(family.sample):
                    continue
                key = family.sample[index]
                limits = {"TYPE": self.type_keys, "PTTL": self.sample_keys, "MEMORY": self.memory_keys}
                plan = [
                    name
                    for name in ("TYPE", "PTTL", "MEMORY")
                    if name not in refused and index < limits[name]
                ]
                if not plan or self._can_send(deadline, cap - len(plan) + 1, stop):
                    return
                if "TYPE" in plan:
                    kind = self._probe_one(refused, "TYPE", key)
                    if kind == "none":
                        continue  # gone since the scan: not counted anywhere
                    if isinstance(kind, str):
                        family.types[kind] += 1
                if "PTTL" in plan:
                    pttl = self._probe_one(refused, "PTTL", key)
                    if isinstance(pttl, int) and pttl != -2:
                        family.ttl_probed += 1
                        if pttl == -1:
                            family.no_ttl += 1
                        else:
                            family.ttl_s.append(pttl / 1000)
                if "MEMORY" in plan:
                    used = self._probe_one(refused, "MEMORY", "USAGE", key, "SAMPLES", MEMORY_SAMPLES)
                    if isinstance(used, int):
                        family.memory_bytes.append(used)

    def _probe_one(self, refused: set[str], name: str, *args: Any) -> Any:
        """One probe; a refused command is recorded once and yields None."""
        self.result.probe_calls += 1
        try:
            reply = self._execute(name, *args)
        except redis.ResponseError as exc:
            refused.add(name)
            self.result.refused.append(f"{name}: {exc}")
            return None
        return reply.decode() if isinstance(reply, bytes) else reply
