"""The idle pattern in a window of telemetry rows: blocking waits, polling loops, per-job work.

From `calls:<cmd>` rows (the sampler's own commands already left out), per command:
the rate over the window (exact calls / window seconds), the calls per sampling round
(nodes summed, rounds without a call count as 0), and how regular they are, judged
against random (Poisson) arrivals at the same mean rate:

- `regular`: the per-round counts vary significantly less than Poisson arrivals would
  (a clock drives them: timeouts, a sleep loop);
- `regular every N s`: the counts repeat with a period of N s, significantly more than
  Poisson arrivals would show at any period tried;
- `bursty`: significantly more variation than Poisson arrivals;
- `random (Poisson-like)`: none of these; `sporadic` when fewer than half the rounds
  saw a call; `too few rounds` below `MIN_TEST_ROUNDS`.

Significance: the observed statistic is compared with `RESAMPLES` series drawn from the
Poisson null conditioned on the total (each call lands in a round with probability
proportional to the round's length: a multinomial), seeded, so the same rows give the
same answer; `ALPHA` is the false-alarm rate. The period search tries every period of 2
to `MAX_PERIOD_ROUNDS` rounds (at least `MIN_CYCLES` cycles in the window) and controls the false
alarms over all of them at once (the maximum of the standardized fold statistics).

What each command is doing (`role`):
- Blocking commands (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP,
  XREAD and XREADGROUP, which block only with BLOCK, WAIT) return once per wait: with
  `blocked_clients` averaging W and R returns/s over all blocking commands, each wait
  lasts W / R seconds. With no producer command in the window (LPUSH, RPUSH, LPUSHX,
  RPUSHX, ZADD, XADD), the waits ended by their timeout: 6 workers with a 1 s timeout
  show as 6 returns/s, each wait ~1 s, regular.
- A polling loop runs at a steady rate with no job arriving: a polling command
  (non-blocking pops, moves and reads a queue loops on: RPOPLPUSH, LMOVE, LPOP, RPOP,
  ZPOPMIN, ZRANGEBYSCORE, LLEN, EXISTS, GET, EVALSHA ...) that is regular at >= 1 call/s
  in a window with no producer command, or, in a window where jobs arrived, that runs at
  >= 1 call/s through the rounds (at least `MIN_IDLE_ROUNDS`) where none arrived.
- Per-job work: in a window where jobs arrived, any other non-blocking command whose
  rate follows the arrivals (its per-round rate correlates with the producers' one, or
  it is nearly silent in the rounds without arrivals, or the arrivals were too steady to
  tell the two apart); shown with its calls per producer call.

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
"""Kept for the block sums' description (`period_cv`); regularity itself is a test."""
SPORADIC_SHARE = 0.5
POLLING_MIN_RATE = 1.0
ALPHA = 0.01
"""The false-alarm rate of each regularity verdict on Poisson traffic."""
RESAMPLES = 499
MAX_PERIOD_ROUNDS = 30
MIN_CYCLES = 4
REPEATING_SHARE = 0.75
"""A period is only claimed when at least this share of its cycles saw a call."""
"""A period is only claimed when the window holds at least this many whole cycles of it."""
MIN_TEST_ROUNDS = 5
MIN_IDLE_ROUNDS = 3
FOLLOWS_CORRELATION = 0.5
IDLE_SILENCE = 0.2
"""Per-job work runs in the rounds without arrivals at under this share of its busy rate."""
STEADY_ARRIVALS_CV = 0.15
SEED = 17

Kind = Literal["blocking", "polling", "other"]
Role = Literal["blocking wait", "polling loop", "per-job work", "producer", ""]


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
    """The shortest period (a whole number of rounds, in seconds) at which the per-round
    counts repeat significantly more than Poisson arrivals would (e.g. 1 s + 1 s + 3 s
    timeouts); None otherwise."""
    period_cv: float | None
    """CV of the sums over consecutive blocks of one period (a description, not the test)."""
    regularity: str
    pattern: str
    """One line saying what the cadence shows."""
    p_regular: float | None = None
    """P-value of `regular` (under-dispersion against Poisson arrivals); None when not tested."""
    p_period: float | None = None
    """P-value of the best period against Poisson arrivals, all periods tried counted."""
    role: Role = ""
    per_producer_call: float | None = None
    """Calls per producer command (LPUSH, RPUSH, ZADD, XADD...) in the window, when jobs arrived."""

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


@dataclass(frozen=True, slots=True)
class PoissonTests:
    """One command's per-round counts against Poisson arrivals at the same mean rate."""

    p_under: float
    """Lower tail of the dispersion statistic: small when the counts are too even for chance."""
    p_over: float
    """Upper tail: small when the counts are too uneven (bursts)."""
    period_rounds: int | None
    p_period: float | None


def poisson_tests(
    counts: Sequence[float], spans: Sequence[float], *, periods: bool = True, seed: int = SEED
) -> PoissonTests | None:
    """Test `counts` (calls per round, rounds `spans` seconds long) against Poisson arrivals.

    The null: the same total number of calls, each landing in a round with probability
    proportional to its length (Poisson arrivals conditioned on their total), drawn
    `RESAMPLES` times with a seeded generator. Dispersion: sum of (count - expected)^2 /
    expected over rounds. Period p: the same statistic over the counts folded by round
    index modulo p (their phase sums), standardized, and the largest over every p tried is
    compared with the largest the resampled series give. None when there are fewer than
    `MIN_TEST_ROUNDS` rounds or no call.
    """
    import numpy as np  # here: every `qbench` start imports this module

    observed = np.asarray(counts, dtype=float)
    lengths = np.asarray(spans, dtype=float)
    keep = lengths > 0
    observed, lengths = observed[keep], lengths[keep]
    n = len(observed)
    total = round(float(observed.sum()))
    if n < MIN_TEST_ROUNDS or total <= 0:
        return None
    weights = lengths / lengths.sum()
    rng = np.random.default_rng(seed)
    series = np.vstack([observed[None, :], rng.multinomial(total, weights, size=RESAMPLES).astype(float)])
    expected = total * weights
    dispersion = ((series - expected) ** 2 / expected).sum(axis=1)
    sims = dispersion[1:]
    p_under = (1 + int((sims <= dispersion[0] + 1e-9).sum())) / (RESAMPLES + 1)
    p_over = (1 + int((sims >= dispersion[0] - 1e-9).sum())) / (RESAMPLES + 1)
    tried = range(2, min(n // MIN_CYCLES, MAX_PERIOD_ROUNDS) + 1) if periods else range(0)
    if not tried:
        return PoissonTests(p_under, p_over, None, None)
    scores = []
    for p in tried:
        k = n // p
        folded = series[:, : k * p].reshape(len(series), k, p).sum(axis=1)
        share = lengths[: k * p].reshape(k, p).sum(axis=0)
        share = share / share.sum()
        sums = folded.sum(axis=1, keepdims=True)
        expect = sums * share
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = (folded - expect) ** 2 / np.where(expect > 0, expect, 1)
            stat = np.where(sums[:, 0] > 0, terms.sum(axis=1), 0)
        scores.append((stat - (p - 1)) / np.sqrt(2 * (p - 1)))
    z = np.vstack(scores)  # periods x series
    max_null = z[:, 1:].max(axis=0)
    for index, p in enumerate(tried):  # the shortest significant period: not one of its multiples
        p_value = (1 + int((max_null >= z[index, 0] - 1e-9).sum())) / (RESAMPLES + 1)
        k = n // p
        cycles = observed[: k * p].reshape(k, p).sum(axis=1)
        # A pattern that repeats: calls in nearly every cycle, not one burst (connections at start).
        if p_value < ALPHA and (cycles > 0).sum() >= REPEATING_SHARE * k:
            return PoissonTests(p_under, p_over, p, p_value)
    best = float(z[:, 0].max())
    return PoissonTests(p_under, p_over, None, (1 + int((max_null >= best - 1e-9).sum())) / (RESAMPLES + 1))


def repeat_period(counts: Sequence[float], spans: Sequence[float] | None = None) -> tuple[int, float] | None:
    """The shortest period (in rounds) at which `counts` repeat significantly more than Poisson
    arrivals would, with the CV of their sums over consecutive blocks of that many rounds."""
    tests = poisson_tests(counts, spans or [1.0] * len(counts))
    if tests is None or tests.period_rounds is None:
        return None
    p = tests.period_rounds
    blocks = [sum(counts[i : i + p]) for i in range(0, len(counts) - p + 1, p)]
    mean = statistics.fmean(blocks)
    return p, (statistics.pstdev(blocks) / mean if mean > 0 else 0.0)


def _regularity(tests: PoissonTests | None, active_share: float, period_s: float | None, rounds: int) -> str:
    if tests is not None and tests.p_under < ALPHA:
        return "regular"
    if period_s is not None:
        return f"regular every {period_s:g} s"
    if active_share < SPORADIC_SHARE:
        return "sporadic"
    if tests is None:
        return "one round only" if rounds <= 1 else "too few rounds to tell"
    if tests.p_over < ALPHA:
        return "bursty"
    return "random (Poisson-like)"


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return None
    return statistics.correlation(xs, ys)


def idle_pattern(rows: Sequence[TelemetryRow]) -> IdlePattern:
    """Cadence and role of every command in the rows, and what they say about idle waiting."""
    found = rounds(rows)
    window = sum(found.interval_s)
    commands = sum(r.value for r in rows if r.source == "redis" and r.metric == "commands")
    producers = [name for name in found.calls if name in PRODUCER_COMMANDS]
    arrivals = [sum(found.calls[name][i] for name in producers) for i in range(len(found.ts))]
    producer_calls = int(sum(arrivals))
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
    workload = _Arrivals(arrivals, found.interval_s)

    step = statistics.median(found.interval_s) if found.interval_s else 1.0
    cadences = []
    for name, per_round in found.calls.items():
        rates = found.rates(name)
        total = int(sum(per_round))
        rate = total / window if window else 0.0
        active = sum(1 for c in per_round if c > 0) / len(per_round) if per_round else 0.0
        mean = statistics.fmean(rates) if rates else 0.0
        cv = statistics.pstdev(rates) / mean if len(rates) > 1 and mean > 0 else None
        tests = poisson_tests(per_round, found.interval_s)
        period = None
        if tests is not None and tests.p_under >= ALPHA and tests.period_rounds is not None:
            p = tests.period_rounds
            blocks = [sum(per_round[i : i + p]) for i in range(0, len(per_round) - p + 1, p)]
            block_mean = statistics.fmean(blocks)
            period = (p, statistics.pstdev(blocks) / block_mean if block_mean > 0 else 0.0)
        period_s, period_cv = (round(period[0] * step, 1), period[1]) if period else (None, None)
        regularity = _regularity(tests, active, period_s, len(per_round))
        kind: Kind = (
            "blocking" if name in BLOCKING_COMMANDS else "polling" if name in POLLING_COMMANDS else "other"
        )
        role, detail = workload.role(name, kind, per_round, rate, regularity)
        per_call = total / producer_calls if producer_calls and name not in PRODUCER_COMMANDS else None
        pattern = _pattern(
            name,
            kind,
            role,
            detail,
            rate,
            regularity,
            cv if period_cv is None else period_cv,
            idle=idle,
            blocked=blocked,
            seconds_per_wait=seconds_per_wait if len(blocking_names) == 1 else None,
            per_call=per_call,
        )
        cadences.append(
            Cadence(
                name,
                kind,
                total,
                rate,
                len(per_round),
                active,
                cv,
                period_s,
                period_cv,
                regularity,
                pattern,
                p_regular=None if tests is None else tests.p_under,
                p_period=None if tests is None else tests.p_period,
                role=role,
                per_producer_call=per_call,
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


class _Arrivals:
    """The producer calls per round, and what a command's calls say against them."""

    def __init__(self, arrivals: Sequence[float], spans: Sequence[float]) -> None:
        self.arrivals = list(arrivals)
        self.spans = list(spans)
        self.total = sum(arrivals)
        self.quiet = [i for i, a in enumerate(arrivals) if a == 0]
        self.busy = [i for i, a in enumerate(arrivals) if a > 0]
        self.rates = [a / s if s > 0 else 0.0 for a, s in zip(arrivals, spans, strict=True)]
        mean = statistics.fmean(self.rates) if self.rates else 0.0
        self.steady = bool(self.rates) and (
            mean > 0 and len(self.rates) > 1 and statistics.pstdev(self.rates) / mean <= STEADY_ARRIVALS_CV
        )

    def _rate_in(self, per_round: Sequence[float], which: Sequence[int]) -> float:
        seconds = sum(self.spans[i] for i in which)
        return sum(per_round[i] for i in which) / seconds if seconds > 0 else 0.0

    def role(
        self, name: str, kind: Kind, per_round: Sequence[float], rate: float, regularity: str
    ) -> tuple[Role, str]:
        """The command's role and, for a polling loop in a busy window, the evidence."""
        if kind == "blocking":
            return "blocking wait", ""
        if name in PRODUCER_COMMANDS:
            return "producer", ""
        if self.total == 0:
            steady = regularity.startswith("regular")
            if kind == "polling" and steady and rate >= POLLING_MIN_RATE:
                return "polling loop", ""
            return "", ""
        quiet_rate = self._rate_in(per_round, self.quiet)
        busy_rate = self._rate_in(per_round, self.busy)
        if len(self.quiet) >= MIN_IDLE_ROUNDS:
            quiet_active = sum(1 for i in self.quiet if per_round[i] > 0) / len(self.quiet)
            polls = quiet_rate >= POLLING_MIN_RATE and quiet_active >= 1 - SPORADIC_SHARE / 2
            if kind == "polling" and polls:
                return "polling loop", (
                    f"{quiet_rate:,.1f} calls/s in the {len(self.quiet)} rounds with no job arriving"
                )
            if quiet_rate <= IDLE_SILENCE * busy_rate:
                return "per-job work", "nearly silent in the rounds with no job arriving"
        rates = [c / s if s > 0 else 0.0 for c, s in zip(per_round, self.spans, strict=True)]
        correlation = _correlation(self.rates, rates)
        if self.steady or correlation is None:
            return "per-job work", "the arrivals were steady, so a fixed-rate loop would look the same"
        if correlation >= FOLLOWS_CORRELATION:
            return "per-job work", f"its rate follows the arrivals' (r = {correlation:.2f})"
        return "", ""


def _pattern(
    name: str,
    kind: Kind,
    role: Role,
    detail: str,
    rate: float,
    regularity: str,
    cv: float | None,
    *,
    idle: bool,
    blocked: float,
    seconds_per_wait: float | None,
    per_call: float | None,
) -> str:
    shown = name.upper()
    cv_text = f" (CV {cv:.2f})" if cv is not None else ""
    steady = regularity.startswith("regular")
    if kind == "blocking":
        text = f"{shown}: {rate:,.1f} returns/s, {regularity}{cv_text}"
        if seconds_per_wait is not None:
            text += (
                f"; {blocked:,.1f} clients blocked on average, so each wait lasts ~{seconds_per_wait:,.2f} s"
            )
        if idle and steady:
            text += "; nothing was queued, so these are timeouts: the fixed cadence of idle workers"
        return text
    base = f"{shown}: {rate:,.1f} calls/s, {regularity}{cv_text}"
    if role == "polling loop":
        if detail:
            return f"{base}; {detail}: a polling loop"
        return (
            base
            + ": a polling loop"
            + (" with nothing to do (nothing queued, key count unchanged)" if idle else "")
        )
    if role == "per-job work" and per_call is not None:
        return f"{base}; {per_call:,.2f} per producer call: per-job work ({detail})"
    return base
