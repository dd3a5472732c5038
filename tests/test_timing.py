"""The one timing method: intervals that cover what they promise, interleaving, workers, handicap."""

from __future__ import annotations

import math
import random
import subprocess
import time
from pathlib import Path

import pytest
import redis

from qbench.harness.experiments import codec, key_building
from qbench.harness.results.render import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, PARTLY, interval_verdict
from qbench.harness.results.rows import Row
from qbench.harness.results.stats import (
    difference_interval,
    location_interval,
    median,
    ratio_interval,
    signed_rank_cutoff,
)
from qbench.harness.timing.interleave import (
    Arm,
    Interleaved,
    Plan,
    Sample,
    ServerCpu,
    comparison_rows,
    interleave,
)
from qbench.harness.timing.sides import Checkout, WorkerError, WorkerProcess, in_process_arm
from qbench.queue_impl import queue as queue_module
from qbench.queue_impl.config import PRESETS, parse_variant
from qbench.queue_impl.job import Job, Priority
from tests.conftest import QueueFactory, fast

ROOT = Path(__file__).resolve().parents[1]


# -- the interval ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "k"),
    # Critical values of the two-sided 5% Wilcoxon signed-rank test (T <= k - 1 rejects).
    [(6, 1), (8, 4), (10, 9), (15, 26), (20, 53), (30, 138)],
)
def test_signed_rank_cutoff_matches_the_exact_tables(n: int, k: int) -> None:
    found, coverage = signed_rank_cutoff(n, 0.95)
    assert found == k
    assert 0.95 <= coverage < 0.97


def test_too_few_rounds_say_their_true_coverage() -> None:
    # 5 rounds: the widest interval (the whole range) covers 1 - 2/32 of the time, not 95%.
    assert signed_rank_cutoff(5, 0.95) == (1, 1 - 2 / 32)
    assert ratio_interval([1.0, 1.1, 0.9], [2.0, 2.1, 2.2]).confidence == 0.75


def test_normal_approximation_is_within_a_rank_of_the_exact_count() -> None:
    n = 81  # the first n above EXACT_SIGNED_RANK_MAX_N
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for t in range(len(counts) - 1, rank - 1, -1):
            counts[t] += counts[t - rank]
    k, cumulative = 0, 0
    while cumulative + counts[k] <= 0.025 * 2**n:
        cumulative += counts[k]
        k += 1
    approx, coverage = signed_rank_cutoff(n, 0.95)
    assert abs(approx - k) <= 1
    assert coverage == pytest.approx(0.95, abs=0.002)


def test_estimate_is_the_median_of_walsh_averages() -> None:
    d = [0.3, -0.1, 0.5, 0.2, 0.05, 0.4, -0.2]
    walsh = [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]
    est, lo, hi, _ = location_interval(d)
    assert est == pytest.approx(median(walsh))
    k, _ = signed_rank_cutoff(len(d), 0.95)
    assert k == 3  # n = 7: P(T <= 2) = 3/128 <= 2.5% < P(T <= 3) = 5/128
    assert (lo, hi) == (sorted(walsh)[k - 1], sorted(walsh)[-k])


@pytest.mark.parametrize(("n", "trials"), [(12, 600), (40, 300), (120, 120)])
def test_ratio_interval_covers_a_known_ratio_as_promised(n: int, trials: int) -> None:
    """Synthetic paired rounds: A drifts (shared by both sides), B = A x 1.25 x noise."""
    rng = random.Random(n)
    true = 1.25
    covered = 0
    for _ in range(trials):
        drift = [math.exp(rng.gauss(0, 0.3)) for _ in range(n)]
        a = [1000 * d * math.exp(rng.gauss(0, 0.03)) for d in drift]
        b = [1000 * true * d * math.exp(rng.gauss(0, 0.03)) for d in drift]
        ci = ratio_interval(a, b)
        covered += ci.lo <= true <= ci.hi
    rate = covered / trials
    # 95% promised; binomial sd at these trials is 0.9-2%: allow 3 sd either side.
    assert 0.95 - 3 * math.sqrt(0.05 * 0.95 / trials) <= rate <= 0.995


def test_difference_interval_and_bad_input() -> None:
    est, lo, hi, _ = difference_interval([10.0] * 8, [13.0, 13.0, 12.0, 14.0, 13.0, 13.0, 13.0, 13.0])
    assert est == 3.0 and lo <= 3.0 <= hi
    with pytest.raises(ValueError, match="unpaired"):
        ratio_interval([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_interval([1.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no rounds"):
        ratio_interval([], [])


def test_a_verdict_needs_the_whole_interval_on_one_side() -> None:
    regions = codec.speed_regions(4.5)  # holds within 3.375..5.625
    assert interval_verdict(2.36, 2.47, regions) == PARTLY
    assert interval_verdict(3.4, 4.0, regions) == HOLDS
    assert interval_verdict(3.2, 3.5, regions) == INCONCLUSIVE
    assert interval_verdict(0.8, 0.95, regions) == DOES_NOT_HOLD
    assert interval_verdict(0.95, 1.05, regions) == INCONCLUSIVE


# -- the interleaved runner --------------------------------------------------------------------
class CountingArm:
    """A synthetic side: `cost` ns per op, optionally scaled per round; counts its rounds."""

    def __init__(self, label: str, costs: list[float]) -> None:
        self.label = label
        self.costs = costs
        self.calls = 0

    def arm(self) -> Arm:
        def run_round() -> Sample:
            cost = self.costs[self.calls % len(self.costs)]
            self.calls += 1
            return Sample(ops=10, wall_ns=round(cost * 10 * 1.5), cpu_ns=round(cost * 10))

        return Arm(self.label, run_round)


def test_rounds_alternate_in_seeded_random_order_and_warm_up_is_discarded() -> None:
    a, b = CountingArm("a", [100.0]), CountingArm("b", [150.0])
    plan = Plan(warmup_rounds=3, min_rounds=10, max_rounds=10, precision=1e-9)
    result = interleave(a.arm(), b.arm(), plan=plan)
    assert a.calls == b.calls == 13  # 3 warm-up rounds run, then dropped
    assert len(result.rounds) == 10 and [r.index for r in result.rounds] == list(range(10))
    orders = [r.order for r in result.rounds]
    assert set(orders) == {"AB", "BA"}
    again = interleave(CountingArm("a", [100.0]).arm(), CountingArm("b", [150.0]).arm(), plan=plan)
    assert [r.order for r in again.rounds] == orders  # the seed replays the schedule
    ratio = result.ratio("cpu")
    assert ratio is not None and ratio.estimate == pytest.approx(1.5)


def test_stops_once_precise_enough_else_at_the_round_budget() -> None:
    steady = interleave(
        CountingArm("a", [100.0]).arm(),
        CountingArm("b", [120.0]).arm(),
        plan=Plan(warmup_rounds=0, min_rounds=6, max_rounds=50, precision=0.01),
    )
    assert steady.stopped_by == "precision" and len(steady.rounds) == 6
    noisy = interleave(
        CountingArm("a", [100.0, 100.0, 100.0]).arm(),
        CountingArm("b", [100.0, 160.0, 70.0, 130.0]).arm(),
        plan=Plan(warmup_rounds=0, min_rounds=6, max_rounds=20, precision=0.01),
    )
    assert noisy.stopped_by == "rounds" and len(noisy.rounds) == 20


def test_rows_carry_every_round_and_render_recomputes_the_interval() -> None:
    result = interleave(
        CountingArm("a", [100.0, 110.0]).arm(),
        CountingArm("b", [200.0, 230.0, 210.0]).arm(),
        plan=Plan(warmup_rounds=0, min_rounds=8, max_rounds=8, precision=1e-9),
    )
    rows = comparison_rows(
        result, experiment="x", variant_a="", variant_b="", params_a="side=a", params_b="side=b"
    )
    assert len(rows) == 8 * 2 * 2  # rounds x sides x (cpu, wall): no server CPU measured
    assert {r.repeat for r in rows} == set(range(8))
    direct = result.ratio("cpu")
    assert direct is not None
    assert ratio_interval(result.per_op("a", "cpu"), result.per_op("b", "cpu")) == direct


def test_server_cpu_is_read_around_each_side(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    server = ServerCpu(redis_url)
    try:

        def busy() -> Sample:
            for _ in range(300):
                client.ping()
            return Sample(ops=300, wall_ns=1, cpu_ns=1)

        result = interleave(
            Arm("a", busy),
            Arm("b", busy),
            plan=Plan(warmup_rounds=0, min_rounds=2, max_rounds=2),
            server=server,
        )
    finally:
        server.close()
        client.close()
    assert all(r.a.server_cpu_us is not None and r.b.server_cpu_us is not None for r in result.rounds)
    assert len(result.per_op("a", "server_cpu")) == 2


def test_in_process_arm_counts_its_operations() -> None:
    calls: list[int] = []
    sample = in_process_arm("x", lambda: calls.append(1), 250).run_round()
    assert len(calls) == 250 and sample.ops == 250 and sample.cpu_ns >= 0


# -- the timing worker -------------------------------------------------------------------------
def test_worker_measures_its_own_checkout_and_cleans_up(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        with WorkerProcess(Checkout.at("head", ROOT), redis_url=redis_url, cpu=None) as worker:
            assert worker.hello["queue_impl"] == str(ROOT / "qbench" / "queue_impl")
            arm = worker.arm("cycle", "scripted", ops=25)
            sample = arm.run_round()
            assert sample.ops == 25 and sample.cpu_ns > 0 and sample.wall_ns > 0
            namespaces = {k.split(b"}")[0] for k in client.scan_iter(match=b"qbench:{timing-*", count=1000)}
            assert len(namespaces) == 1
            with pytest.raises(WorkerError, match="unknown case 'nope'"):
                worker.request({"cmd": "setup", "case": "nope", "variant": "baseline"})
            with pytest.raises(WorkerError, match="unknown preset"):
                worker.arm("cycle", "fastest", ops=1)
        # quit deleted the namespace it measured in
        assert not list(client.scan_iter(match=b"qbench:{timing-*", count=1000))
    finally:
        client.close()


PRE_MOVE_COMMIT = "8bb797a"
"""The last commit with `queue_impl/` at the top of the tree, before it moved into `qbench/`."""


def test_worker_measures_a_checkout_made_before_the_package_moved(tmp_path: Path, redis_url: str) -> None:
    old = tmp_path / "old"
    added = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(old), PRE_MOVE_COMMIT],
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        pytest.skip(f"no git history to check out {PRE_MOVE_COMMIT} from: {added.stderr.strip()}")
    try:
        assert not (old / "qbench" / "queue_impl").exists()
        with WorkerProcess(Checkout.at("base", old), redis_url=redis_url, cpu=None) as worker:
            assert worker.hello["queue_impl"] == str(old.resolve() / "queue_impl")
            sample = worker.arm("cycle", "scripted", ops=10).run_round()
            assert sample.ops == 10 and sample.cpu_ns > 0
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


def test_a_worker_that_dies_is_one_line_with_its_last_words(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "queue_impl").mkdir()
    (tmp_path / "queue_impl" / "__init__.py").write_text("raise SystemExit('this checkout is broken')\n")
    with pytest.raises(WorkerError, match=r"^head: worker exited: this checkout is broken$"):
        WorkerProcess(Checkout.at("head", tmp_path), redis_url=redis_url, cpu=None)


def test_a_tree_without_queue_impl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="no queue_impl package"):
        Checkout.at("base", tmp_path)


# -- the handicap toggle -----------------------------------------------------------------------
def test_handicap_burns_cpu_once_per_operation(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    burnt: list[int] = []
    monkeypatch.setattr(queue_module, "burn_cpu", burnt.append)
    q = make_queue(fast(parse_variant("scripted+handicap_us=7.5")))
    q.enqueue(Job(type="noop", priority=Priority.HIGH))
    q.enqueue_many([Job(type="noop") for _ in range(3)])
    job = q.dequeue(wait=False)
    assert job is not None
    q.complete(job)
    other = q.dequeue(wait=False)
    assert other is not None
    q.fail(other, "boom")
    q.move_scheduled_to_ready(now=2**62)
    # enqueue, enqueue_many, dequeue, complete, dequeue, fail, move: once each
    assert burnt == [7500] * 7

    burnt.clear()
    plain = make_queue(fast(PRESETS["scripted"]))
    plain.enqueue(Job(type="noop"))
    assert burnt == []  # 0 (the default) never calls it


def test_burn_cpu_burns_at_least_what_it_is_asked() -> None:
    before = time.process_time_ns()
    queue_module.burn_cpu(3_000_000)
    assert time.process_time_ns() - before >= 3_000_000


def test_handicap_is_a_documented_calibration_toggle() -> None:
    variant = parse_variant("baseline+handicap_us=12.5")
    assert variant.handicap_us == 12.5 and variant.label() == "baseline+handicap_us=12.5"
    assert PRESETS["baseline"].handicap_us == 0
    with pytest.raises(ValueError, match="handicap_us"):
        parse_variant("baseline+handicap_us=-1")


# -- the timed claims --------------------------------------------------------------------------
def _codec_rows(json_ns: list[float], pb_ns: list[float]) -> list[Row]:
    rows = []
    for i, (j, p) in enumerate(zip(json_ns, pb_ns, strict=True)):
        rows.append(Row("codec", "", "codec=json;size=small", "cpu_ns_per_op", j, "ns", i))
        rows.append(Row("codec", "", "codec=protobuf;size=small", "cpu_ns_per_op", p, "ns", i))
    return rows


def test_codec_speed_verdict_needs_the_interval_clear_of_the_threshold(tmp_path: Path) -> None:
    rng = random.Random(3)
    clear = _codec_rows([2400 * (1 + rng.gauss(0, 0.01)) for _ in range(12)], [1000.0] * 12)
    section = codec.render(clear, tmp_path)
    verdict = {claim: v for claim, v, _ in section.verdicts}["protobuf 4.5x faster than JSON (small)"]
    assert verdict == PARTLY
    straddling = _codec_rows([3375 * (1 + 0.05 * (-1) ** i) for i in range(12)], [1000.0] * 12)
    section = codec.render(straddling, tmp_path)
    verdicts = {claim: (v, why) for claim, v, why in section.verdicts}
    verdict, why = verdicts["protobuf 4.5x faster than JSON (small)"]
    assert verdict == INCONCLUSIVE and "95% CI" in why
    assert INCONCLUSIVE in section.markdown


def test_key_building_cpu_claim_uses_the_paired_saving(tmp_path: Path) -> None:
    rows = [
        Row("key_building", "", "keys=format;kind=job_key_set", "allocations_per_op", 9, "count", 0),
        Row("key_building", "", "keys=precomputed;kind=job_key_set", "allocations_per_op", 4, "count", 0),
        Row("key_building", "baseline", "scope=job", "cycle_cpu_us", 300.0, "us", 0),
        Row("key_building", "baseline", "scope=job", "cycle_cpu_us", 320.0, "us", 1),
    ]
    for i in range(12):
        rows.append(
            Row("key_building", "", "keys=format;kind=job_key_set", "cpu_ns_per_op", 1500.0 + i, "ns", i)
        )
        rows.append(
            Row("key_building", "", "keys=precomputed;kind=job_key_set", "cpu_ns_per_op", 700.0, "ns", i)
        )
    verdicts = {claim: v for claim, v, _ in key_building.render(rows, tmp_path).verdicts}
    assert verdicts["5-10% less CPU in queue operations"] == DOES_NOT_HOLD  # ~0.26% of a cycle
    assert verdicts["~90% fewer key allocations"] == PARTLY


def test_interleaved_result_is_what_the_ratio_method_says() -> None:
    result = Interleaved("a", "b", Plan(), [], "rounds", 0.0, 0)
    assert result.ratio("cpu") is None
