"""`qbench gate` fails on a real regression and passes on a rerun of the same code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qbench.harness.cli import main
from qbench.harness.experiments.ops import measure_operations
from qbench.harness.results.gate import GateInputError, ResultSet, compare, counter_unit, load_result_set
from qbench.harness.results.rows import DETERMINISTIC_UNITS, Row, read_metrics, write_metrics
from qbench.queue_impl.config import parse_variant
from tests.conftest import fast

FIXTURES = Path(__file__).parent / "fixtures" / "gate"
BATCHES = (10, 100)


def ops_results(url: str, spec: str, out: Path, *, label: str) -> Path:
    """`qbench ops`-style counts of one variant, written as a results dir under `label`.

    The label stays the same when the code (here: a toggle) changes, as it would
    between a main-branch run and a pull request's run.
    """
    rows = [
        dataclasses.replace(row, variant=label)
        for row in measure_operations(url, [fast(parse_variant(spec))], BATCHES)
    ]
    write_metrics(out / "metrics.csv", rows)
    return out


def test_gate_fails_on_a_real_round_trip_regression(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = ops_results(redis_url, "optimized", tmp_path / "base", label="optimized")
    candidate = ops_results(redis_url, "optimized+batch=loop", tmp_path / "cand", label="optimized")

    assert main(["gate", "--baseline", str(baseline), "--candidate", str(candidate)]) == 1

    out = capsys.readouterr().out
    cells = [line.split() for line in out.splitlines() if line.startswith("FAIL")]
    failed = {(c[2], c[4], c[5]) for c in cells}
    # Pipelined enqueue_many is one round trip; the loop makes one per command.
    assert ("ops", "batch=100;op=enqueue_many", "round_trips") in failed
    assert ("ops", "batch=1;op=complete", "round_trips") in failed
    assert "gate: FAILED" in out.splitlines()[-1]


def test_gate_passes_on_a_rerun_of_the_same_code(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ops_results(redis_url, "scripted", tmp_path / "first", label="scripted")
    second = ops_results(redis_url, "scripted", tmp_path / "second", label="scripted")

    assert main(["gate", "--baseline", str(first), "--candidate", str(second)]) == 0

    out = capsys.readouterr().out
    assert "FAIL" not in out
    counters = sum(1 for row in read_metrics(first / "metrics.csv") if row.unit in DETERMINISTIC_UNITS)
    assert out.splitlines()[-1].startswith(f"gate: passed: {counters} counters held")


def test_committed_benchmark_runs_fail_on_the_loop_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    base = FIXTURES / "bench_baseline.json"
    loop = FIXTURES / "bench_batch_loop.json"

    assert main(["gate", "--baseline", str(base), "--candidate", str(loop), "--timings", "off"]) == 1

    failed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    by_key = {(f[2], f[3], f[5]): (f[6], f[7]) for f in failed}
    assert by_key[("enqueue_many", "optimized", "round_trips_per_op")] == ("1", "200")
    assert by_key[("enqueue", "scripted", "round_trips_per_op")] == ("1", "3")
    assert all(f[1] == "counter" for f in failed)


def test_committed_benchmark_rerun_passes_within_its_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    base = FIXTURES / "bench_baseline.json"
    rerun = FIXTURES / "bench_rerun.json"

    # These runs shared 2 busy cores with other work: an unchanged rerun's timing
    # ratios drifted by up to 38%, so only a wide tolerance is honest here.
    assert main(["gate", "--baseline", str(base), "--candidate", str(rerun), "--tolerance", "60%"]) == 0
    # The loop candidate's timing ratios fail even at that tolerance.
    loop = FIXTURES / "bench_batch_loop.json"
    assert main(["gate", "--baseline", str(base), "--candidate", str(loop), "--tolerance", "60%"]) == 1
    lines = capsys.readouterr().out.splitlines()
    timing_failures = [line for line in lines if line.startswith("FAIL") and " timing " in line]
    assert timing_failures


def rows_set(rows: list[Row]) -> ResultSet:
    return ResultSet("memory", "metrics", rows)


def test_timing_ratios_use_the_reference_variant_of_each_set() -> None:
    def run(optimized_ms: float, baseline_ms: float) -> ResultSet:
        return rows_set(
            [
                Row("pickup", "baseline", "", "pickup_ms_p99", baseline_ms, "ms"),
                Row("pickup", "optimized", "", "pickup_ms_p99", optimized_ms, "ms"),
            ]
        )

    # A machine twice as slow leaves the ratio alone: passes.
    assert not compare(run(1.0, 10.0), run(2.0, 20.0), tolerance=0.1).failed
    # The optimized variant losing ground against the reference: fails.
    report = compare(run(1.0, 10.0), run(1.5, 10.0), tolerance=0.1)
    assert [(v.variant, v.metric) for v in report.failed] == [("optimized", "pickup_ms_p99")]


def test_direction_of_counters_and_rates() -> None:
    base = rows_set(
        [
            Row("e", "v", "", "jobs_completed", 100, "jobs"),
            Row("e", "v", "", "jobs_missing", 0, "jobs"),
            Row("e", "v", "", "throughput", 1000, "jobs/s"),
            Row("e", "ref", "", "throughput", 1000, "jobs/s"),
        ]
    )
    cand = rows_set(
        [
            Row("e", "v", "", "jobs_completed", 99, "jobs"),
            Row("e", "v", "", "jobs_missing", 1, "jobs"),
            Row("e", "v", "", "throughput", 800, "jobs/s"),
            Row("e", "ref", "", "throughput", 1000, "jobs/s"),
        ]
    )
    report = compare(base, cand, tolerance=0.1, reference="ref")
    assert sorted(v.metric for v in report.failed) == ["jobs_completed", "jobs_missing", "throughput"]


def test_an_idle_cost_rate_is_worse_when_higher() -> None:
    def run(commands_per_s: float) -> ResultSet:
        return rows_set(
            [
                Row("idle_cost", "baseline", "", "idle_commands", 300, "commands/s"),
                Row("idle_cost", "optimized", "", "idle_commands", commands_per_s, "commands/s"),
            ]
        )

    assert not compare(run(10), run(5)).failed
    assert [v.variant for v in compare(run(10), run(20)).failed] == ["optimized"]


def test_single_variant_sets_are_paired_and_maxima_never_judged() -> None:
    base = rows_set([Row("load", "a", "", "latency_ms_max", 1, "ms"), Row("load", "a", "", "n", 5, "count")])
    cand = rows_set([Row("load", "b", "", "latency_ms_max", 9, "ms"), Row("load", "b", "", "n", 5, "count")])
    report = compare(base, cand, timings="absolute")
    assert not report.failed
    assert [v.metric for v in report.verdicts] == ["n"]


def test_counter_units_of_extra_info_keys() -> None:
    assert counter_unit("round_trips_per_op") == "round_trips"
    assert counter_unit("commands_per_op") == "commands"
    assert counter_unit("bytes_per_job") == "bytes"
    assert counter_unit("mean_latency") is None


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.json", "no such file"),
        ("{not json", "broken.json", "not a pytest-benchmark JSON"),
        ('{"benchmarks": 3}', "odd.json", "not a pytest-benchmark JSON"),
        ("a,b\n1,2\n", "metrics.csv", "not a qbench metrics.csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, name: str, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(GateInputError, match=message):
        load_result_set(path)
    good = FIXTURES / "bench_baseline.json"
    assert main(["gate", "--baseline", str(path), "--candidate", str(good)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bad_tolerance_and_mixed_kinds_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = FIXTURES / "bench_baseline.json"
    assert main(["gate", "--baseline", str(good), "--candidate", str(good), "--tolerance", "ten"]) == 2
    write_metrics(tmp_path / "metrics.csv", [Row("e", "v", "", "m", 1, "count")])
    assert main(["gate", "--baseline", str(tmp_path), "--candidate", str(good)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    assert "--tolerance" in errors[0] and "cannot compare" in errors[1]


def test_fixtures_are_real_pytest_benchmark_runs() -> None:
    doc = json.loads((FIXTURES / "bench_baseline.json").read_text())
    assert {b["params"]["preset"] for b in doc["benchmarks"]} == {"baseline", "optimized", "scripted"}
    assert all("round_trips_per_op" in b["extra_info"] for b in doc["benchmarks"])


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("failed", "the run failed: Worker killed"),
        ("running", "still running"),
        ("interrupted", "the run interrupted"),
    ],
)
def test_a_run_that_did_not_finish_is_refused(
    status: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A set whose run.json says it failed, was interrupted or is still running is no result:
    one line naming the run and why, exit 1, whichever side it is on."""
    good = tmp_path / "good"
    good.mkdir()
    reference = Path(__file__).resolve().parents[1] / "results" / "reference"
    (good / "metrics.csv").write_bytes((reference / "metrics.csv").read_bytes())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.csv").write_bytes((reference / "metrics.csv").read_bytes())
    reason = "Worker killed" if status == "failed" else None
    (bad / "run.json").write_text(json.dumps({"kind": "reproduce", "status": status, "reason": reason}))
    assert main(["gate", "--baseline", str(good), "--candidate", str(good), "--timings", "off"]) == 0
    capsys.readouterr()
    for baseline, candidate in ((good, bad), (bad / "metrics.csv", good)):
        assert main(["gate", "--baseline", str(baseline), "--candidate", str(candidate)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and said in err[0], err


def test_an_unreadable_run_json_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    reference = Path(__file__).resolve().parents[1] / "results" / "reference"
    (folder / "metrics.csv").write_bytes((reference / "metrics.csv").read_bytes())
    (folder / "run.json").write_text("{not json")
    assert main(["gate", "--baseline", str(folder), "--candidate", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json: not JSON" in err[0]
