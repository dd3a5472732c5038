"""Workload files and `qbench load`: real Locust runs in child processes, against a real Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from qbench.harness.cli import main
from qbench.harness.infra.telemetry import read_telemetry
from qbench.harness.load.runner import LoadPlan, LoadRun, render_charts, rows_of, throughput_series
from qbench.harness.load.targets import Accounting, produced_jobs
from qbench.harness.results.rows import Row, parse_params, read_metrics
from qbench.harness.results.telemetry_charts import CHART_STEMS
from qbench.queue_impl.config import PRESETS
from qbench.scenarios.recorder import Collector, Recorder
from qbench.scenarios.workload import (
    USER_KIND_TABLE,
    UserKind,
    WorkloadError,
    load_workload,
    parse_workload,
    read_user_kinds,
    workload_names,
)

SCENARIOS = ("arrival", "burst", "consumer", "http", "mixed", "producer")


def qbench(*args: str) -> subprocess.CompletedProcess[str]:
    # A child process: Locust's gevent patching must never reach the test process.
    return subprocess.run(
        [sys.executable, "-m", "qbench.harness.cli", *args], capture_output=True, text=True, timeout=120
    )


def metrics(out: Path) -> dict[tuple[str, str], tuple[float, str]]:
    """(op, metric) -> (value, unit), the per-second `ops_per_s` rows left out."""
    table = {}
    for row in read_metrics(out / "metrics.csv"):
        if row.metric != "ops_per_s":
            table[(parse_params(row.params)["op"], row.metric)] = (row.value, row.unit)
    return table


def assert_every_job_accounted(table: dict[tuple[str, str], tuple[float, str]], op: str) -> None:
    """Every acknowledged `op` is a job record in Redis; beyond them, only the jobs of calls
    cut short when the users stopped (each may have reached Redis or not)."""
    landed = table[("all", "jobs_recorded")][0] - table[(op, "requests")][0]
    assert 0 <= landed <= table[("all", "jobs_cut_short")][0]
    for metric in ("jobs_missing", "jobs_unexplained", "jobs_stranded"):
        assert table[("all", metric)][0] == 0, metric


def per_second_totals(rows: list[Row]) -> dict[str, float]:
    """Op -> sum of its `ops_per_s` rows (every completed operation falls in one second)."""
    totals: dict[str, float] = {}
    for row in rows:
        if row.metric == "ops_per_s":
            op = parse_params(row.params)["op"]
            totals[op] = totals.get(op, 0.0) + row.value
    return totals


def test_per_second_counts_merge_across_processes_into_rows_and_the_chart(tmp_path: Path) -> None:
    """Two Locust processes' reports, one origin: counts per whole second add up, every second
    of the run gets a row (zeros included), and the throughput chart needs only the rows."""
    first, second = Recorder(started_at=1000.0), Recorder(started_at=1000.0)
    first.record("enqueue", 1.5, round_trips=1, done_at=1000.2)
    first.record("enqueue", 1.0, round_trips=1, done_at=1002.9)
    second.record("enqueue", 2.0, round_trips=1, done_at=1000.7)
    second.record("complete", 0.5, done_at=1001.5)
    collector = Collector()
    for name, recorder in (("first", first), ("second", second)):
        collector.receive(name, recorder.report())
    samples = collector.merged()
    assert samples["enqueue"].per_second == {0: 2, 2: 1}
    assert samples["complete"].per_second == {1: 1}

    workload = load_workload("arrival")
    plan = LoadPlan(
        workload=workload,
        variant=PRESETS["scripted"],
        label="scripted",
        users=2,
        spawn_rate=2.0,
        duration_s=3.0,
    )
    out = tmp_path / "out"
    run = LoadRun(
        plan=plan,
        out_dir=out,
        locust_stats=[],
        samples=samples,
        jobs=Accounting(jobs_expected=3, census={"records": 3, "completed": 1, "stranded": 0}),
        locust_returncode=0,
    )
    rows = rows_of(run)
    assert throughput_series(rows) == {
        "enqueue": [(0, 2.0), (1, 0.0), (2, 1.0)],
        "complete": [(0, 0.0), (1, 1.0), (2, 0.0)],
    }
    assert {r.unit for r in rows if r.metric == "ops_per_s"} == {"ops/s"}
    assert per_second_totals(rows) == {"enqueue": 3.0, "complete": 1.0}
    assert render_charts(rows, out, "test") == ["latency_percentiles.png", "throughput.png"]
    assert not list(out.glob("locust*"))  # drawn with no Locust file in sight


@pytest.mark.parametrize(
    ("records", "cut_short", "lost", "gaps"),
    [
        (10, 0, 0, {"jobs_missing": 0, "jobs_unexplained": 0}),
        (11, 1, 0, {"jobs_missing": 0, "jobs_unexplained": 0}),  # a cut-short enqueue that landed
        (10, 1, 0, {"jobs_missing": 0, "jobs_unexplained": 0}),  # ... or did not
        (11, 0, 1, {"jobs_missing": 0, "jobs_unexplained": 1}),  # a record nothing accounts for
        (9, 1, 1, {"jobs_missing": 1, "jobs_unexplained": 0}),  # an acknowledged job gone
    ],
)
def test_an_enqueue_cut_short_at_stop_is_neither_lost_nor_required(
    records: int, cut_short: int, lost: int, gaps: dict[str, int]
) -> None:
    recorder = Recorder(started_at=0.0)
    for _ in range(10):
        recorder.record("enqueue", 0.5, done_at=0.0)
    for _ in range(cut_short):
        recorder.cut_short("enqueue")
    collector = Collector()
    collector.receive("w", recorder.report())
    merged = collector.merged()  # cut_short travels in the report like the other counters
    assert produced_jobs(merged, burst_size=5) == (10, cut_short)
    plan = LoadPlan(
        workload=load_workload("producer"), variant=PRESETS["scripted"], label="scripted",
        users=1, spawn_rate=1.0, duration_s=1.0,
    )  # fmt: skip
    run = LoadRun(
        plan=plan,
        out_dir=Path("unused"),
        locust_stats=[],
        samples=merged,
        jobs=Accounting(
            jobs_expected=10,
            jobs_cut_short=cut_short,
            census={"records": records, "completed": records, "stranded": 0},
        ),
        locust_returncode=0,
    )
    assert run.lost == lost
    table = {r.metric: r.value for r in rows_of(run) if parse_params(r.params).get("op") == "all"}
    assert {k: table[k] for k in gaps} == gaps and table["jobs_cut_short"] == cut_short


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
        (["producer", "--variant", "optimized", "--master"], "--master needs --expect-workers N"),
        (["producer", "--variant", "optimized", "--master", "--expect-workers", "0"], "between 1 and 64"),
        (
            ["producer", "--variant", "optimized", "--master", "--expect-workers", "2", "--bind", "10.9.8.7"],
            "add --allow-remote",
        ),
        (
            ["producer", "--variant", "optimized", "--master", "--expect-workers", "2", "--bind", "somehost"],
            "expected an IP address",
        ),
        (["producer", "--variant", "optimized", "--bind", "127.0.0.1"], "--bind needs --master"),
        (["producer", "--variant", "optimized", "--allow-remote"], "--allow-remote needs --master"),
        (["producer", "--variant", "optimized", "--master-host", "10.0.0.1"], "--master-host needs --worker"),
        (
            ["producer", "--variant", "optimized", "--master", "--expect-workers", "2", "--workers", "2"],
            "--workers",
        ),
        (["producer", "--variant", "optimized", "--worker"], "--worker needs --master-host"),
        (
            ["producer", "--variant", "optimized", "--worker", "--master-host", "h", "--users", "3"],
            "for the master",
        ),
        (["producer", "--variant", "fastest", "--worker", "--master-host", "h"], "unknown preset"),
        (["nosuch", "--variant", "optimized", "--worker", "--master-host", "h"], "unknown scenario"),
        (
            ["producer", "--variant", "optimized", "--worker", "--master-host", "h", "--master-port", "0"],
            "expected 1..65535",
        ),
        (
            [
                "http",
                "--variant",
                "optimized",
                "--master",
                "--expect-workers",
                "1",
                "--bind",
                "10.9.8.7",
                "--allow-remote",
            ],
            "API listens on the master's loopback",
        ),
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
    # The progress line Locust's process printed at the end of the run, relayed.
    assert re.search(
        r"^\[ 2/2 s\]  users 2  ops/s [\d,]+  enqueue p50 [\d.]+ ms p99 [\d.,]+ ms  failures 0$",
        base.stdout,
        re.MULTILINE,
    ), base.stdout
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
    # Our own histograms count exactly what Locust counted.
    locust_stats = json.loads((tmp_path / "base" / "locust.json").read_text())
    assert [s["num_requests"] for s in locust_stats if s["name"] == "enqueue"] == [
        table[("enqueue", "requests")][0]
    ]
    assert table[("enqueue", "latency_ms_p50")][1] == "ms"
    assert {p.name for p in (tmp_path / "base" / "charts").iterdir()} >= {
        "latency_percentiles.png",
        "throughput.png",
    }
    # The throughput chart's rows count every completed operation exactly once.
    rows = read_metrics(tmp_path / "base" / "metrics.csv")
    requests = {op: value for (op, metric), (value, _unit) in table.items() if metric == "requests"}
    assert per_second_totals(rows) == {op: n for op, n in requests.items() if n}
    # Charts come from the rows alone: Locust's own files are written, and never needed.
    assert (tmp_path / "base" / "locust_stats_history.csv").is_file()
    for name in ("locust.json", "locust_stats.csv", "locust_stats_history.csv"):
        (tmp_path / "base" / name).unlink()
    assert "throughput.png" in render_charts(rows, tmp_path / "rerendered", "rerendered")
    run = json.loads((tmp_path / "base" / "run.json").read_text())
    assert run["variant"] == "optimized" and len(run["load_avg_before"]) == 3
    # Telemetry beside the run: Redis, this harness and its Locust child, and a report.
    base = tmp_path / "base"
    sampled = read_telemetry(base / "telemetry.csv")
    assert any(r.source == "redis" and r.metric == "calls:lpush" and r.value > 0 for r in sampled)
    harness_nodes = {r.node for r in sampled if r.source == "harness" and r.node != "all"}
    assert len(harness_nodes) >= 2  # qbench itself and Locust's process
    assert run["telemetry"]["enabled"] is True and run["telemetry"]["cost_commands_per_s"] > 0
    report = (base / "REPORT.md").read_text()
    assert "## What Redis did" in report and "| enqueue | " in report and "missing **0**" in report
    for stem in CHART_STEMS:
        assert f"charts/{stem}.png" in report
    shutil.rmtree(base / "charts")
    (base / "REPORT.md").unlink()
    assert qbench("report", str(base)).returncode == 0  # from the files alone
    assert (base / "REPORT.md").read_text() == report
    assert all((base / "charts" / f"{stem}.png").is_file() for stem in CHART_STEMS)

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
    # Histograms from both worker processes were merged: every enqueue a worker recorded is a
    # job record in Redis, and Locust's own totals agree (the master waited for final reports).
    assert table[("enqueue", "requests")][0] == locust_stats["enqueue"]
    assert_every_job_accounted(table, "enqueue")
    assert table[("pickup", "requests")][0] == table[("dequeue", "requests")][0]
    run = json.loads((out / "run.json").read_text())
    assert run["locust_workers"] == 2
    reports = run["locust_worker_reports"]
    assert len(reports) == 2 and all(w["final"] for w in reports.values())
    assert sum(w["ops"]["enqueue"] for w in reports.values()) == table[("enqueue", "requests")][0]


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
    assert table[("submit", "requests")][0] == locust_stats["submit"]["num_requests"]
    assert_every_job_accounted(table, "submit")


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
        assert (out / "profile" / "summary.md").read_text().count("| qbench/queue_impl/") >= 1
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


# -- user kinds: one class each ------------------------------------------------------------------

KIND_CHECK = """
import json, sys
before = set(sys.modules)
import qbench.harness.cli  # the harness: reads the kinds without Locust
harness_pulled_in = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("locust", "gevent"))
from qbench.scenarios import users
from qbench.scenarios.workload import KIND_FACTS, UserKind
default = UserKind(main_op="")
kinds = {
    kind: {f: getattr(cls, f, getattr(default, f)) for f in KIND_FACTS}
    for kind, cls in users.QueueUser.by_kind.items()
}
print(json.dumps({"harness_pulled_in": harness_pulled_in, "kinds": kinds}))
"""


def test_every_user_kind_is_one_class_whose_facts_the_harness_reads_without_locust() -> None:
    """Adding a kind touches one place, its class in scenarios/users.py: the table the
    harness reads is that file's classes, parsed, never imported (checked here against the
    classes Locust's process defines, in a child: gevent must not reach this process)."""
    done = subprocess.run([sys.executable, "-c", KIND_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["harness_pulled_in"] == []
    assert found["kinds"] == {kind: asdict(row) for kind, row in USER_KIND_TABLE.items()}
    assert set(USER_KIND_TABLE) == {"producer", "consumer", "burst", "arrival", "http_submit"}


def test_a_kind_is_read_from_its_class_alone(tmp_path: Path) -> None:
    source = tmp_path / "kinds.py"
    source.write_text(
        "import locust  # never imported by the reader\n"
        "class Base:\n    kind: str = ''\n"
        "class EchoUser(Base):\n    kind = 'echo'\n    main_op = 'echo'\n    jobs_per_call = '1'\n"
        "class NoKind(Base):\n    main_op = 'x'\n"
    )
    assert read_user_kinds(source) == {"echo": UserKind(main_op="echo", jobs_per_call="1")}
    source.write_text("class BadUser:\n    kind = 'bad'\n")
    with pytest.raises(ValueError, match="declares no main_op"):
        read_user_kinds(source)
    source.write_text("X = 'op'\nclass BadUser:\n    kind = 'bad'\n    main_op = X\n")
    with pytest.raises(ValueError, match="must be a literal"):
        read_user_kinds(source)
