"""`qbench chaos --quick`: every fault case under every preset, every job accounted for."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from qbench.harness.chaos.cases import (
    CASES,
    QUICK,
    REPORT_FILE,
    chaos_telemetry,
    outcomes_from_rows,
    render_markdown,
    segment_name,
)
from qbench.harness.cli import main
from qbench.harness.infra.telemetry import read_telemetry
from qbench.harness.results.rows import METRICS_FILE, RUN_FILE, read_metrics
from qbench.queue_impl.config import PRESETS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chaos_dir(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chaos")
    assert main(["chaos", "--quick", "--out", str(out), "--redis-url", redis_url]) == 0
    return out


def test_quick_chaos_accounts_for_every_job(chaos_dir: Path) -> None:
    rows = read_metrics(chaos_dir / METRICS_FILE)
    outcomes = outcomes_from_rows(rows)
    seen = collections.Counter((o.case, o.preset) for o in outcomes)
    expected_runs = {case: len(QUICK.restart_settings) if case == "redis_restart" else 1 for case in CASES}
    assert seen == {(case, p): expected_runs[case] for case in CASES for p in PRESETS}
    for o in outcomes:
        assert o.submitted > 0
        assert o.completed + o.dead + o.lost == o.submitted, o
        assert 0 <= o.duplicated <= o.submitted
    for o in outcomes:
        if o.case == "redis_restart" and o.setting == "none":
            continue  # a restart without persistence loses what was queued: reported, not a failure
        assert o.lost == 0, o
        assert o.dead == 0, o


def test_kills_hit_workers_holding_jobs(chaos_dir: Path) -> None:
    kills = [o for o in outcomes_from_rows(read_metrics(chaos_dir / METRICS_FILE)) if o.case == "worker_kill"]
    assert len(kills) == len(PRESETS)
    for o in kills:
        assert o.extra["kills"] == QUICK.kills
        # Every job a killed worker held was returned by stale recovery.
        assert o.extra["jobs_recovered"] >= o.extra["jobs_held_at_kill"] > 0, o


def test_only_the_script_scheduler_is_race_free(chaos_dir: Path) -> None:
    races = {
        o.setting: o
        for o in outcomes_from_rows(read_metrics(chaos_dir / METRICS_FILE))
        if o.case == "scheduler_race"
    }
    assert set(races) == {"batch=loop", "batch=pipeline", "batch=script"}
    script = races["batch=script"]
    assert script.duplicated == 0 and script.extra["moves_reported"] == script.submitted
    for o in races.values():
        assert o.extra["left_scheduled"] == 0


def test_outputs_are_tidy_and_the_report_renders_from_rows(chaos_dir: Path) -> None:
    rows = read_metrics(chaos_dir / METRICS_FILE)
    assert {r.experiment for r in rows} == {"chaos"}
    assert {r.variant for r in rows} == set(PRESETS)
    job_metrics = {"jobs_submitted", "jobs_completed", "jobs_duplicated", "jobs_lost", "jobs_dead"}
    assert {r.metric for r in rows if r.unit == "jobs"} == job_metrics
    meta = json.loads((chaos_dir / RUN_FILE).read_text())
    assert meta["mode"] == "quick" and meta["experiment"] == "chaos" and meta["server"]["version"]
    report = (chaos_dir / REPORT_FILE).read_text()
    assert report == render_markdown(rows) + chaos_telemetry(chaos_dir, rows)
    assert report.startswith("## Reliability") and "| case | setting | preset |" in report


def test_every_case_is_sampled_and_a_crashed_server_shows_one_restart(chaos_dir: Path) -> None:
    outcomes = outcomes_from_rows(read_metrics(chaos_dir / METRICS_FILE))
    names = {segment_name(o) for o in outcomes}
    assert {p.stem for p in (chaos_dir / "telemetry").glob("*.csv")} == names
    meta = json.loads((chaos_dir / RUN_FILE).read_text())["telemetry"]
    assert set(meta["segments"]) == names
    for o in outcomes:
        rows = read_telemetry(chaos_dir / "telemetry" / f"{segment_name(o)}.csv")
        assert any(r.source == "redis" and r.metric == "commands" for r in rows)
        restarts = sum(r.value for r in rows if r.source == "telemetry" and r.metric == "restarts")
        # The restart case kills its own server once (a new run_id); no other case restarts one.
        assert restarts == (1 if o.case == "redis_restart" else 0), segment_name(o)
    report = (chaos_dir / REPORT_FILE).read_text()
    assert "## What Redis did" in report and "charts/chaos_telemetry_clients.png" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "worker_kill,nope"], "--only: unknown nope"),
        (["--presets", "fastest"], "--presets: unknown fastest"),
        (["--only", ""], "--only: unknown empty list"),
    ],
)
def test_bad_chaos_flags_are_one_line_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
