"""Workload files and `qbench load`: real Locust runs in child processes, against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.rows import read_metrics
from scenarios.workload import WorkloadError, load_workload, parse_workload, workload_names

SCENARIOS = ("arrival", "burst", "consumer", "http", "mixed", "producer")


def qbench(*args: str) -> subprocess.CompletedProcess[str]:
    # A child process: Locust's gevent patching must never reach the test process.
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120
    )


def metrics(out: Path) -> dict[tuple[str, str], tuple[float, str]]:
    """(op, metric) -> (value, unit)."""
    table = {}
    for row in read_metrics(out / "metrics.csv"):
        op = dict(item.split("=", 1) for item in row.params.split(";"))["op"]
        table[(op, row.metric)] = (row.value, row.unit)
    return table


def test_every_scenario_ships_a_valid_workload() -> None:
    assert tuple(workload_names()) == SCENARIOS
    for name in SCENARIOS:
        workload = load_workload(name)
        assert workload.users >= 1 and workload.duration_s > 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"variant": "optimized"}, "traffic shape only"),
        ({"users": "ten"}, "wrong type"),
        ({"users": 0}, "users must be >= 1"),
        ({"user_mix": {"robot": 1}}, "user_mix.robot"),
        ({"priority_mix": {"high": -1}}, "non-negative"),
        ({"user_mix": {"arrival": 1}}, "target_rate > 0"),
    ],
)
def test_bad_workloads_are_rejected_in_one_line(doc: dict[str, object], message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_workload(doc, name="bad")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch", "--variant", "optimized"], "unknown scenario"),
        (["producer", "--variant", "fastest"], "unknown preset"),
        (["producer", "--variant", "optimized", "--users", "0"], "--users must be >= 1"),
        (["producer", "--variant", "optimized", "--workers", "3", "--users", "2"], "--workers cannot exceed"),
    ],
)
def test_bad_load_arguments_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_load_run_writes_results_and_gates_a_loop_regression(redis_url: str, tmp_path: Path) -> None:
    common = ["producer", "--users", "2", "--duration", "2", "--redis-url", redis_url]
    base = qbench("load", *common, "--variant", "optimized", "--out", str(tmp_path / "base"))
    assert base.returncode == 0, base.stderr
    cand = qbench(
        "load",
        *common,
        "--variant",
        "optimized+batch=loop",
        "--label",
        "optimized",
        "--out",
        str(tmp_path / "loop"),
    )
    assert cand.returncode == 0, cand.stderr

    table = metrics(tmp_path / "base")
    # Exact counts: one pipelined round trip per enqueue, every job accounted for.
    assert table[("enqueue", "round_trips_per_op")] == (1.0, "round_trips")
    assert metrics(tmp_path / "loop")[("enqueue", "round_trips_per_op")] == (2.0, "round_trips")
    assert table[("all", "jobs_missing")] == (0.0, "jobs")
    assert table[("all", "jobs_stranded")] == (0.0, "jobs")
    # Our own float-ms samples count exactly what Locust counted.
    locust_stats = json.loads((tmp_path / "base" / "locust.json").read_text())
    assert [s["num_requests"] for s in locust_stats if s["name"] == "enqueue"] == [
        table[("enqueue", "requests")][0]
    ]
    assert table[("enqueue", "latency_ms_p50")][1] == "ms"
    assert {p.name for p in (tmp_path / "base" / "charts").iterdir()} >= {
        "latency_percentiles.png",
        "throughput.png",
    }
    run = json.loads((tmp_path / "base" / "run.json").read_text())
    assert run["variant"] == "optimized" and len(run["load_avg_before"]) == 3

    gate = qbench("gate", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "loop"))
    assert gate.returncode == 1, gate.stdout
    assert any(line.startswith("FAIL") and "round_trips_per_op" in line for line in gate.stdout.splitlines())


@pytest.mark.slow
def test_distributed_fixed_arrival_run_accounts_for_every_job(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "arrival"
    args = [
        "arrival",
        "--variant",
        "scripted",
        "--users",
        "4",
        "--duration",
        "2",
        "--workers",
        "2",
        "--no-charts",
    ]
    proc = qbench("load", *args, "--redis-url", redis_url, "--out", str(out))
    assert proc.returncode == 0, proc.stderr

    table = metrics(out)
    locust_stats = {s["name"]: s["num_requests"] for s in json.loads((out / "locust.json").read_text())}
    assert locust_stats["enqueue"] > 0 and locust_stats["dequeue"] > 0
    # Samples from both worker processes were merged: every enqueue a worker recorded
    # is a job record in Redis. (The master's totals can lag its workers' last reports.)
    assert table[("enqueue", "requests")][0] == table[("all", "jobs_recorded")][0] >= locust_stats["enqueue"]
    assert table[("pickup", "requests")][0] == table[("dequeue", "requests")][0]
    assert table[("all", "jobs_missing")][0] == 0
    assert table[("all", "jobs_stranded")][0] == 0
    assert json.loads((out / "run.json").read_text())["locust_workers"] == 2


@pytest.mark.slow
def test_http_scenario_submits_through_the_api_and_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "http"
    args = ["http", "--variant", "optimized", "--users", "2", "--duration", "2", "--no-charts"]
    proc = qbench("load", *args, "--redis-url", redis_url, "--out", str(out))
    assert proc.returncode == 0, proc.stderr

    table = metrics(out)
    locust_stats = {s["name"]: s for s in json.loads((out / "locust.json").read_text())}
    assert locust_stats["submit"]["num_failures"] == 0 == table[("submit", "failures")][0]
    # Every 201 the users saw is a job record in Redis, and Locust counted the same requests.
    assert (
        table[("submit", "requests")][0]
        == table[("all", "jobs_recorded")][0]
        == locust_stats["submit"]["num_requests"]
    )
    assert table[("all", "jobs_missing")][0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["scalene", "py-spy"])
def test_profile_keeps_the_workers_profile_beside_the_results(
    redis_url: str, tmp_path: Path, tool: str
) -> None:
    out = tmp_path / "profile"
    args = ["producer", "--variant", "scripted", "--users", "2", "--duration", "2", "--no-charts"]
    proc = qbench(
        "profile", *args, "--tool", tool, "--concurrency", "2", "--redis-url", redis_url, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr

    if tool == "scalene":
        profile = json.loads((out / "profile" / "scalene.json").read_text())
        assert "worker.py" in {Path(name).name for name in profile["files"]}  # the service's own code
        assert (out / "profile" / "summary.md").read_text().count("| queue_impl/") >= 1
    else:
        profile = json.loads((out / "profile" / "py-spy.speedscope.json").read_text())
        frames = {frame["file"] for frame in profile["shared"]["frames"]}
        assert any(name.endswith("queue_impl/worker.py") for name in frames)
    table = metrics(out)
    # The profiled worker consumed the producers' jobs, and none went missing.
    assert table[("all", "jobs_completed")][0] > 0
    assert table[("all", "jobs_missing")][0] == table[("all", "jobs_stranded")][0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--tool", "gprof"], "invalid choice"), (["--concurrency", "0"], "--concurrency must be >= 1")],
)
def test_bad_profile_arguments_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["profile", "producer", "--variant", "optimized", *args])
    except SystemExit as exc:  # argparse rejects a bad choice itself
        code = int(str(exc.code))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
