"""Defects of `qbench load` found by trying it as a new user would, each held by a test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from qbench.harness.load.runner import default_out_dir, summary
from qbench.harness.results.rows import Row, params

REPO = Path(__file__).resolve().parents[1]


def qbench(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # A child process: Locust's gevent patching must never reach the test process.
    return subprocess.run(
        [sys.executable, "-m", "qbench.harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_the_console_shows_a_dash_not_nan_where_round_trips_were_not_counted() -> None:
    def row(op: str, metric: str, value: float) -> Row:
        return Row("load", "huey", params(scenario="producer", op=op), metric, value, "x")

    rows = [
        row("enqueue", "requests", 10),
        row("enqueue", "rate", 5),
        row("enqueue", "latency_ms_p50", 0.5),
        row("enqueue", "latency_ms_p99", 0.9),
        row("enqueue", "latency_ms_p99.9", 1.0),
        row("counted", "requests", 4),
        row("counted", "round_trips_per_op", 2.0),
        row("all", "jobs_expected", 10),
    ]
    text = summary(rows)
    assert "nan" not in text
    enqueue = next(line for line in text.splitlines() if line.startswith("enqueue"))
    assert enqueue.split()[-1] == "-"
    counted = next(line for line in text.splitlines() if line.startswith("counted"))
    assert counted.split()[-1] == "2.00" and counted.split()[3] == "-"  # no samples: no p50


def test_the_default_out_is_a_new_ignored_folder_beside_not_among_the_committed_runs(
    redis_url: str, tmp_path: Path
) -> None:
    assert re.fullmatch(r"results/\d{8}T\d{6}Z-load-producer", str(default_out_dir("producer")))
    assert (
        str(default_out_dir("/some/where/my-scenario.toml", now=0))
        == "results/19700101T000000Z-load-my-scenario"
    )
    # git ignores the default folders, and still sees the committed runs.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "results/20990101T000000Z-load-producer/metrics.csv"], cwd=REPO
    )
    assert ignored.returncode == 0
    committed = subprocess.run(
        ["git", "check-ignore", "-q", "results/load/producer/scripted/run.json"], cwd=REPO
    )
    assert committed.returncode == 1
    done = qbench(
        "load",
        "producer",
        "--variant",
        "scripted",
        "--users",
        "1",
        "--duration",
        "1",
        "--no-charts",
        "--telemetry-interval",
        "0",
        "--redis-url",
        redis_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    made = [p.relative_to(tmp_path) for p in (tmp_path / "results").iterdir()]
    assert len(made) == 1 and re.fullmatch(r"results/\d{8}T\d{6}Z-load-producer", str(made[0])), made
    assert (tmp_path / made[0] / "metrics.csv").is_file()
    assert f"results in {made[0]}" in done.stdout
