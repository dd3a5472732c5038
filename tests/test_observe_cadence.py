"""`qbench observe`'s reading of command cadences, on simulated telemetry rows (no server needed:
the analysis is a function of the rows alone).

- Poisson traffic is not called regular: the regularity verdicts are tests against the
  Poisson null, with a false-alarm rate of ALPHA (1%), checked here over many seeds.
- A strictly periodic series is still found, with its period.
- While jobs arrive, per-job commands (RQ's HGETALL, EXISTS) are per-job work, not polling;
  a command that keeps its rate in the rounds without arrivals is a polling loop.
"""

from __future__ import annotations

import random

import pytest

from qbench.harness.infra.telemetry import TelemetryRow
from qbench.harness.observe.cadence import idle_pattern, poisson_tests

ROUNDS = 60
SEEDS = 100
MAX_FALSE_REGULAR = 0.05


def poisson_counts(rng: random.Random, rate: float, rounds: int, spans: list[float]) -> list[int]:
    """Calls per round of Poisson arrivals at `rate` per second (exponential gaps)."""
    end = sum(spans)
    edges = [sum(spans[: i + 1]) for i in range(rounds)]
    counts = [0] * rounds
    t = rng.expovariate(rate)
    r = 0
    while t < end:
        while edges[r] < t:
            r += 1
        counts[r] += 1
        t += rng.expovariate(rate)
    return counts


def rows_of(rounds: list[dict[str, float]], spans: list[float] | None = None) -> list[TelemetryRow]:
    rows = []
    t = 0.0
    for i, metrics in enumerate(rounds):
        dt = spans[i] if spans else 1.0
        t += dt
        rows.append(TelemetryRow(t, "redis", "n:1", "interval_s", dt, "s"))
        for metric, value in metrics.items():
            rows.append(TelemetryRow(t, "redis", "n:1", metric, value, "x"))
    return rows


@pytest.mark.parametrize(
    ("rate", "jittered"), [(2.0, False), (10.0, False), (50.0, False), (200.0, False), (10.0, True)]
)
def test_poisson_traffic_is_rarely_called_regular(rate: float, jittered: bool) -> None:
    """At most 5% of seeded Poisson series get a `regular` or `regular every N s` verdict
    (the search used to report a period in 81-100% of them)."""
    false_regular = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        spans = [rng.uniform(0.5, 1.5) if jittered else 1.0 for _ in range(ROUNDS)]
        counts = poisson_counts(rng, rate, ROUNDS, spans)
        pattern = idle_pattern(
            rows_of([{"calls:lpop": c, "keys:db0": 1} for c in counts], spans if jittered else None)
        )
        (cadence,) = pattern.cadences
        false_regular += cadence.regularity.startswith("regular")
    assert false_regular / SEEDS <= MAX_FALSE_REGULAR, false_regular


def test_a_strictly_periodic_series_is_still_found() -> None:
    """The seed's blocking dequeue: 6 workers wait 1 s (high), 1 s (normal), 3 s (low) in turn."""
    counts = [6.0, 6.0, 0.0, 0.0, 6.0] * 12
    rounds: list[dict[str, float]] = [
        {"calls:brpoplpush": n, "blocked_clients": 6, "keys:db0": 3} for n in counts
    ]
    (cadence,) = idle_pattern(rows_of(rounds)).cadences
    assert cadence.regularity == "regular every 5 s" and cadence.period_s == 5
    assert cadence.p_period is not None and cadence.p_period < 0.01
    # A batch every 3 s, with Poisson-sized batches: periodic, not regular round by round.
    rng = random.Random(3)
    batches = [
        float(sum(1 for _ in range(40) if rng.random() < 0.5)) if i % 3 == 0 else 0.0 for i in range(60)
    ]
    (batch,) = idle_pattern(rows_of([{"calls:lpop": n, "keys:db0": 1} for n in batches])).cadences
    assert batch.regularity == "regular every 3 s"


def test_clockwork_counts_are_regular_and_bursts_are_not() -> None:
    even = poisson_tests([10.0] * 30, [1.0] * 30)
    assert even is not None and even.p_under < 0.01 and even.period_rounds is None
    bursts = poisson_tests([0.0] * 9 + [50.0] + [0.0] * 9 + [50.0] + [1.0] * 10, [1.0] * 30)
    assert bursts is not None and bursts.p_over < 0.01
    assert poisson_tests([3.0, 4.0], [1.0, 1.0]) is None  # too few rounds to test


def rq_like(arrivals: list[float]) -> list[dict[str, float]]:
    """RQ: the producer's RPUSH per job; its workers block in BLPOP and read each job (HGETALL,
    EXISTS) as it comes."""
    return [
        {
            "calls:rpush": a,
            "calls:hset": a,
            "calls:blpop": a + 1,
            "calls:hgetall": a,
            "calls:exists": 2 * a,
            "blocked_clients": 9,
            "keys:db0": 100 + i,
        }
        for i, a in enumerate(arrivals)
    ]


@pytest.mark.parametrize(
    "arrivals",
    [
        [10.0] * 30,  # a strictly periodic producer: a job every 0.1 s
        [float(c) for c in poisson_counts(random.Random(1), 10.0, 30, [1.0] * 30)],  # random arrivals
        [10.0 if i % 4 else 0.0 for i in range(30)],  # arrivals with pauses
    ],
    ids=["steady", "poisson", "pauses"],
)
def test_per_job_commands_are_per_job_work_not_polling(arrivals: list[float]) -> None:
    pattern = idle_pattern(rows_of(rq_like(arrivals)))
    found = {c.command: c for c in pattern.cadences}
    for name, per_job in (("hgetall", 1.0), ("exists", 2.0)):
        assert found[name].role == "per-job work", found[name].pattern
        assert "polling loop" not in found[name].pattern
        assert found[name].per_producer_call == pytest.approx(per_job)
    assert found["blpop"].role == "blocking wait" and found["rpush"].role == "producer"


def test_a_loop_that_keeps_polling_without_jobs_is_a_polling_loop() -> None:
    arrivals = [5.0 if i % 2 else 0.0 for i in range(30)]
    rounds = [
        {"calls:rpush": a, "calls:lpop": 10.0 + (i % 3 == 0), "keys:db0": 5} for i, a in enumerate(arrivals)
    ]
    found = {c.command: c for c in idle_pattern(rows_of(rounds)).cadences}
    assert found["lpop"].role == "polling loop"
    assert "rounds with no job arriving: a polling loop" in found["lpop"].pattern
    # With nothing queued at all, the same loop is one with nothing to do.
    idle = [{"calls:lpop": 10.0, "keys:db0": 5} for _ in range(30)]
    (loop,) = idle_pattern(rows_of(idle)).cadences
    assert loop.role == "polling loop" and "polling loop with nothing to do" in loop.pattern
