"""The one way qbench times A against B: interleaved rounds, paired ratios with intervals.

Rounds alternate the two sides, in a random order per round (AB or BA, from a seeded
generator, recorded): slow drift of a shared machine then hits both sides alike, and
periodic noise cannot line up with one side. Each round runs a batch of operations on
one side (`timed_round`: garbage collector off, client CPU and wall nanoseconds), and,
when a Redis is given, reads the server's `used_cpu_sys + used_cpu_user` before and after
each side's batch. Warm-up rounds are discarded. The ratio B/A of each measure comes
with its interval (`qbench.harness.results.stats.ratio_interval`: Hodges-Lehmann, exact
signed-rank), and rounds stop once the judged measure's interval is narrow enough
(`Plan.precision`), or at the round or time budget.

Judge on `cpu` (client CPU per operation): on a shared 2-core machine it is far steadier
than wall time, which also counts the time other processes held the CPU.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

import redis

# Reading paired rows back measures nothing: it lives in results (re-exported for the experiments).
from qbench.harness.results.paired import MEASURES as MEASURES
from qbench.harness.results.paired import METRIC_OF as METRIC_OF
from qbench.harness.results.paired import Measure as Measure
from qbench.harness.results.paired import paired_values as paired_values
from qbench.harness.results.paired import ratio_from_rows as ratio_from_rows
from qbench.harness.results.rows import Row
from qbench.harness.results.stats import RatioInterval, ratio_interval


@dataclass(frozen=True, slots=True)
class Sample:
    """One side's batch in one round."""

    ops: int
    wall_ns: int
    cpu_ns: int
    server_cpu_us: float | None = None
    """Redis's used_cpu_sys + used_cpu_user over the batch (INFO's resolution: 1 µs)."""

    def per_op(self, measure: Measure) -> float | None:
        if measure == "cpu":
            return self.cpu_ns / self.ops
        if measure == "wall":
            return self.wall_ns / self.ops
        return None if self.server_cpu_us is None else self.server_cpu_us * 1000 / self.ops


@dataclass(frozen=True)
class Arm:
    """One side: a label and a callable that runs one round and returns its Sample."""

    label: str
    run_round: Callable[[], Sample]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How many rounds, and when to stop."""

    warmup_rounds: int = 2
    min_rounds: int = 12
    max_rounds: int = 60
    max_seconds: float = 60.0
    precision: float = 0.01
    """Stop once the judged ratio's interval is within about +-precision (0.01: +-1%)."""
    confidence: float = 0.95
    judge: Measure = "cpu"
    seed: int = 20261201
    """Seed of the per-round AB/BA order (recorded, so a run's schedule can be replayed)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ValueError(f"rounds: need 1 <= min ({self.min_rounds}) <= max ({self.max_rounds})")
        if self.warmup_rounds < 0 or self.max_seconds <= 0 or self.precision <= 0:
            raise ValueError("warm-up rounds >= 0, a positive time budget and precision expected")

    def scaled(self, factor: float) -> Plan:
        """The same plan with its round and time budget scaled (quick modes)."""
        return replace(
            self,
            min_rounds=max(4, round(self.min_rounds * factor)),
            max_rounds=max(4, round(self.max_rounds * factor)),
            max_seconds=self.max_seconds * factor,
        )


@dataclass(frozen=True, slots=True)
class PairedRound:
    index: int
    order: str
    """"AB" or "BA": which side ran first in this round."""
    a: Sample
    b: Sample


@dataclass(frozen=True)
class Interleaved:
    """The rounds of one A/B comparison and how it stopped."""

    a_label: str
    b_label: str
    plan: Plan
    rounds: list[PairedRound]
    stopped_by: Literal["precision", "rounds", "time"]
    seconds: float
    warmup: int
    notes: list[str] = field(default_factory=list)

    def per_op(self, side: Literal["a", "b"], measure: Measure) -> list[float]:
        values = [(r.a if side == "a" else r.b).per_op(measure) for r in self.rounds]
        return [v for v in values if v is not None]

    def ratio(self, measure: Measure) -> RatioInterval | None:
        """B/A of `measure` with its interval; None when not measured (or zero somewhere)."""
        pairs = [(r.a.per_op(measure), r.b.per_op(measure)) for r in self.rounds]
        usable = [(a, b) for a, b in pairs if a is not None and b is not None and a > 0 and b > 0]
        if not usable or len(usable) < len(pairs):
            return None
        return ratio_interval([a for a, _ in usable], [b for _, b in usable], confidence=self.plan.confidence)


class ServerCpu:
    """Reads a Redis's used CPU (sys + user seconds, from INFO cpu) on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def used_us(self) -> float:
        info = self._client.info("cpu")
        return (float(info["used_cpu_sys"]) + float(info["used_cpu_user"])) * 1e6

    def close(self) -> None:
        self._client.close()


def interleave(
    a: Arm,
    b: Arm,
    *,
    plan: Plan,
    server: ServerCpu | None = None,
    progress: Callable[[str], None] | None = None,
) -> Interleaved:
    """Run rounds of A and B in random order per round until `plan` says stop.

    Each side's `run_round` must run the same number of operations every round.
    """
    rng = random.Random(plan.seed)
    started = time.monotonic()
    rounds: list[PairedRound] = []
    stopped_by: Literal["precision", "rounds", "time"] = "rounds"

    def one(arm: Arm) -> Sample:
        before = server.used_us() if server else None
        sample = arm.run_round()
        if server is not None and before is not None:
            sample = replace(sample, server_cpu_us=max(0.0, server.used_us() - before))
        return sample

    for index in range(plan.warmup_rounds + plan.max_rounds):
        order = "AB" if rng.random() < 0.5 else "BA"
        if order == "AB":
            sa = one(a)
            sb = one(b)
        else:
            sb = one(b)
            sa = one(a)
        if index < plan.warmup_rounds:
            continue
        rounds.append(PairedRound(index - plan.warmup_rounds, order, sa, sb))
        n = len(rounds)
        if n >= plan.min_rounds:
            partial = Interleaved(a.label, b.label, plan, rounds, "rounds", 0.0, plan.warmup_rounds)
            interval = partial.ratio(plan.judge)
            if interval is not None and interval.half_width <= plan.precision:
                stopped_by = "precision"
                break
        if time.monotonic() - started >= plan.max_seconds and n >= min(plan.min_rounds, 4):
            stopped_by = "time"
            break
    seconds = time.monotonic() - started
    result = Interleaved(a.label, b.label, plan, list(rounds), stopped_by, seconds, plan.warmup_rounds)
    if progress is not None:
        shown = result.ratio(plan.judge)
        progress(
            f"{b.label} / {a.label}: {len(rounds)} rounds in {seconds:.1f}s (stopped by {stopped_by}); "
            f"{plan.judge} {shown.fmt(3) if shown else '-'}"
        )
    return result


def comparison_rows(
    result: Interleaved,
    *,
    experiment: str,
    variant_a: str,
    variant_b: str,
    params_a: str,
    params_b: str,
    measures: Iterable[Measure] = MEASURES,
) -> list[Row]:
    """Per-round rows of both sides (`repeat` = round), the metric of each measure in ns/op.

    The ratio and its interval are not stored: render recomputes them from these rows
    (`ratio_from_rows`), so a saved run re-renders the same interval.
    """
    rows: list[Row] = []
    for r in result.rounds:
        for measure in measures:
            for variant, cell, sample in ((variant_a, params_a, r.a), (variant_b, params_b, r.b)):
                value = sample.per_op(measure)
                if value is not None:
                    rows.append(Row(experiment, variant, cell, METRIC_OF[measure], value, "ns", r.index))
    return rows
