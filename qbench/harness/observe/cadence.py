"""The idle pattern in a window of telemetry rows: blocking waits and polling loops.

From `calls:<cmd>` rows (the sampler's own commands already left out), per command:
the rate over the window (exact calls / window seconds), the calls per sampling round
(nodes summed, rounds without a call count as 0), and how regular they are: the
coefficient of variation (stdev / mean) of the per-round rates, `regular` when <= 0.15,
`fairly regular` when <= 0.35, else `irregular`; `sporadic` when fewer than half the
rounds saw a call.

- Blocking commands (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP,
  XREAD and XREADGROUP, which block only with BLOCK, WAIT) return once per wait: with
  `blocked_clients` averaging W and R returns/s over all blocking commands, each wait
  lasts W / R seconds. With no producer command in the window (LPUSH, RPUSH, LPUSHX,
  RPUSHX, ZADD, XADD), the waits ended by their timeout: 6 workers with a 1 s timeout
  show as 6 returns/s, each wait ~1 s, regular.
- Polling commands (non-blocking pops, moves and reads a queue loops on: RPOPLPUSH,
  LMOVE, LPOP, RPOP, ZPOPMIN, ZRANGEBYSCORE, LLEN, EXISTS, GET, EVALSHA ...) called at a
  regular rate of at least 1/s are a polling loop; with no producer command and an
  unchanged key count (keys that expired aside), one with nothing to do.

Everything here is computed from the rows, so a saved telemetry.csv gives the same answer.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from qbench.harness.infra.telemetry import TelemetryRow
from qbench.harness.results.telemetry_charts import by_round, rounds

BLOCKING_COMMANDS = frozenset(
    {
        "blpop",
        "brpop",
        "brpoplpush",
        "blmove",
        "blmpop",
        "bzpopmin",
        "bzpopmax",
        "bzmpop",
        "xread",
        "xreadgroup",
        "wait",
        "waitaof",
    }
)
POLLING_COMMANDS = frozenset(
    {
        "rpoplpush",
        "lmove",
        "lpop",
        "rpop",
        "lmpop",
        "zpopmin",
        "zpopmax",
        "zmpop",
        "zrangebyscore",
        "zrange",
        "zcard",
        "llen",
        "lrange",
        "lindex",
        "exists",
        "get",
        "mget",
        "hget",
        "hgetall",
        "xpending",
        "xautoclaim",
        "xlen",
        "xrange",
        "evalsha",
        "eval",
        "evalsha_ro",
        "eval_ro",
        "fcall",
        "fcall_ro",
    }
)
PRODUCER_COMMANDS = frozenset({"lpush", "rpush", "lpushx", "rpushx", "zadd", "xadd"})
"""Commands that hand a queue new work; their absence is the evidence of an idle window."""

REGULAR_CV = 0.15
FAIRLY_REGULAR_CV = 0.35
SPORADIC_SHARE = 0.5
POLLING_MIN_RATE = 1.0

Kind = Literal["blocking", "polling", "other"]


@dataclass(frozen=True, slots=True)
class Cadence:
    """How one command was called over the window."""

    command: str
    kind: Kind
    calls: int
    rate_per_s: float
    rounds: int
    active_share: float
    """Share of sampling rounds with at least one call."""
    cv: float | None
    """Coefficient of variation of the per-round rates (None for a single round)."""
    period_s: float | None
    """When the per-round counts are not regular but their sums over blocks of a few
    rounds are (a cycle longer than one round, e.g. 1 s + 1 s + 3 s timeouts), the
    shortest such block, in seconds; None otherwise."""
    period_cv: float | None
    regularity: str
    pattern: str
    """One line saying what the cadence shows."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IdlePattern:
    """The window as a whole: its cadences, blocking waits and whether it was idle."""

    window_s: float
    rounds: int
    commands_per_s: float
    producer_calls: int
    keys_changed: int
    keys_expired: int
    """Keys the server removed itself in the window (expired or evicted)."""
    idle: bool
    """No producer command, and no change in the key count beyond keys that expired: nothing
    was queued."""
    blocked_clients_mean: float
    blocking_returns_per_s: float
    seconds_per_wait: float | None
    """blocked_clients_mean / blocking_returns_per_s: how long each blocking call lasted."""
    cadences: list[Cadence]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cadences"] = [c.as_dict() for c in self.cadences]
        return data


def repeat_period(counts: Sequence[float]) -> tuple[int, float] | None:
    """The shortest block of p rounds (2 <= p <= len/3) whose sums are regular, and their CV.

    A command on a cycle of p rounds sums to the same count over any p consecutive
    rounds, whatever its phase, so non-overlapping blocks show it.
    """
    for p in range(2, len(counts) // 3 + 1):
        blocks = [sum(counts[i : i + p]) for i in range(0, len(counts) - p + 1, p)]
        mean = statistics.fmean(blocks)
        if mean > 0 and (cv := statistics.pstdev(blocks) / mean) <= REGULAR_CV:
            return p, cv
    return None


def _regularity(cv: float | None, active_share: float, period_s: float | None) -> str:
    if cv is not None and cv <= REGULAR_CV:
        return "regular"
    if period_s is not None:
        return f"regular every {period_s:g} s"
    if active_share < SPORADIC_SHARE:
        return "sporadic"
    if cv is None:
        return "one round only"
    if cv <= FAIRLY_REGULAR_CV:
        return "fairly regular"
    return "irregular"


def idle_pattern(rows: Sequence[TelemetryRow]) -> IdlePattern:
    """Cadence of every command in the rows, and what they say about idle waiting."""
    found = rounds(rows)
    window = sum(found.interval_s)
    commands = sum(r.value for r in rows if r.source == "redis" and r.metric == "commands")
    producer_calls = int(sum(sum(found.calls[name]) for name in PRODUCER_COMMANDS if name in found.calls))
    key_counts = by_round(rows, "keys:")
    keys_changed = int(key_counts[-1][1] - key_counts[0][1]) if key_counts else 0
    # Keys the server itself removed (a TTL ran out, eviction) are not work arriving: a
    # heartbeat key expiring in an idle window leaves it idle.
    keys_expired = int(
        sum(v for _, v in by_round(rows, "expired_keys")) + sum(v for _, v in by_round(rows, "evicted_keys"))
    )
    idle = producer_calls == 0 and keys_changed + keys_expired == 0
    blocked_rounds = by_round(rows, "blocked_clients")
    blocked = statistics.fmean(v for _, v in blocked_rounds) if blocked_rounds else 0.0
    blocking_names = [name for name in found.calls if name in BLOCKING_COMMANDS]
    blocking_calls = sum(sum(found.calls[name]) for name in blocking_names)
    blocking_rate = blocking_calls / window if window else 0.0
    seconds_per_wait = blocked / blocking_rate if blocking_rate > 0 and blocked > 0 else None

    step = statistics.median(found.interval_s) if found.interval_s else 1.0
    cadences = []
    for name, per_round in found.calls.items():
        rates = found.rates(name)
        total = int(sum(per_round))
        rate = total / window if window else 0.0
        active = sum(1 for c in per_round if c > 0) / len(per_round) if per_round else 0.0
        mean = statistics.fmean(rates) if rates else 0.0
        cv = statistics.pstdev(rates) / mean if len(rates) > 1 and mean > 0 else None
        period = None if cv is not None and cv <= REGULAR_CV else repeat_period(per_round)
        period_s, period_cv = (round(period[0] * step, 1), period[1]) if period else (None, None)
        regularity = _regularity(cv, active, period_s)
        kind: Kind = (
            "blocking" if name in BLOCKING_COMMANDS else "polling" if name in POLLING_COMMANDS else "other"
        )
        pattern = _pattern(
            name,
            kind,
            rate,
            regularity,
            cv if period_cv is None else period_cv,
            idle=idle,
            blocked=blocked,
            seconds_per_wait=seconds_per_wait if len(blocking_names) == 1 else None,
        )
        cadences.append(
            Cadence(
                name, kind, total, rate, len(per_round), active, cv, period_s, period_cv, regularity, pattern
            )
        )
    cadences.sort(key=lambda c: (-c.calls, c.command))
    return IdlePattern(
        window_s=window,
        rounds=len(found.ts),
        commands_per_s=commands / window if window else 0.0,
        producer_calls=producer_calls,
        keys_changed=keys_changed,
        keys_expired=keys_expired,
        idle=idle,
        blocked_clients_mean=blocked,
        blocking_returns_per_s=blocking_rate,
        seconds_per_wait=seconds_per_wait,
        cadences=cadences,
    )


def _pattern(
    name: str,
    kind: Kind,
    rate: float,
    regularity: str,
    cv: float | None,
    *,
    idle: bool,
    blocked: float,
    seconds_per_wait: float | None,
) -> str:
    shown = name.upper()
    cv_text = f" (CV {cv:.2f})" if cv is not None else ""
    steady = regularity.startswith("regular") or regularity == "fairly regular"
    if kind == "blocking":
        text = f"{shown}: {rate:,.1f} returns/s, {regularity}{cv_text}"
        if seconds_per_wait is not None:
            text += (
                f"; {blocked:,.1f} clients blocked on average, so each wait lasts ~{seconds_per_wait:,.2f} s"
            )
        if idle and steady:
            text += "; nothing was queued, so these are timeouts: the fixed cadence of idle workers"
        return text
    if kind == "polling" and steady and rate >= POLLING_MIN_RATE:
        text = f"{shown}: {rate:,.1f} calls/s, {regularity}{cv_text}: a polling loop"
        return text + (" with nothing to do (nothing queued, key count unchanged)" if idle else "")
    return f"{shown}: {rate:,.1f} calls/s, {regularity}{cv_text}"
