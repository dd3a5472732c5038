"""Telemetry beside every measuring verb: the flag, the rows, the report, exact counts unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from qbench.harness import errors
from qbench.harness.cli import main
from qbench.harness.experiments import round_trips
from qbench.harness.experiments.runner import Progress, reproduce
from qbench.harness.infra import telemetry
from qbench.harness.infra.telemetry import TELEMETRY_FILE, read_telemetry
from qbench.harness.results.rows import DETERMINISTIC_UNITS, METRICS_FILE, read_metrics
from qbench.harness.results.telemetry_charts import CHART_STEMS


def test_the_flag_and_the_sampler_agree_on_the_shortest_interval() -> None:
    assert errors.MIN_TELEMETRY_INTERVAL_S == telemetry.MIN_INTERVAL_S
    assert errors.DEFAULT_TELEMETRY_INTERVAL_S == telemetry.DEFAULT_INTERVAL_S


@pytest.mark.parametrize(
    "verb",
    [["reproduce"], ["load", "producer", "--variant", "optimized"], ["peers"], ["chaos"]],
    ids=["reproduce", "load", "peers", "chaos"],
)
@pytest.mark.parametrize("value", ["-1", "0.01", "nan", "inf", "often"])
def test_a_bad_telemetry_interval_is_one_line_and_exit_2(
    verb: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--telemetry-interval", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--telemetry-interval" in err and "Traceback" not in err


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("1", 1.0), ("0.05", 0.05), ("2.5", 2.5)])
def test_good_telemetry_intervals(text: str, value: float) -> None:
    assert errors.telemetry_interval(text) == value


def exact_rows(out: Path) -> dict[tuple[str, str, str, str, int], float]:
    """Every deterministic count of a run (round trips, commands, bytes, jobs, keys)."""
    return {
        (r.experiment, r.variant, r.params, r.metric, r.repeat): r.value
        for r in read_metrics(out / METRICS_FILE)
        if r.unit in DETERMINISTIC_UNITS
    }


@pytest.mark.slow
def test_reproduce_samples_beside_the_run_and_counts_stay_exact(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(out: Path, interval_s: float) -> dict[str, Any]:
        return reproduce(
            out_dir=out,
            quick=True,
            repeats=1,
            experiments=[round_trips],
            redis_url=redis_url,
            progress=Progress(),
            telemetry_interval_s=interval_s,
        )

    sampled, plain = tmp_path / "sampled", tmp_path / "plain"
    meta = run(sampled, 0.1)  # 10 INFO/s beside commands counted to the call
    run(plain, 0)

    # The sampler's INFO calls change no count: every exact figure is the same either way.
    counts = exact_rows(sampled)
    assert counts and counts == exact_rows(plain)

    rows = read_telemetry(sampled / TELEMETRY_FILE)
    assert {r.source for r in rows} == {"redis", "harness", "telemetry"}
    assert any(r.metric == "calls:zadd" and r.value > 0 for r in rows)  # the experiment's own work
    assert meta["telemetry"]["enabled"] is True and meta["telemetry"]["cost_commands_per_s"] > 0
    assert meta["telemetry"]["own_commands"] == {
        r.node: r.value for r in rows if r.metric == "telemetry_commands"
    }
    start, end = meta["experiments"]["round_trips"]["telemetry_t_s"]
    assert 0 <= start < end <= max(r.t for r in rows)
    report = (sampled / "REPORT.md").read_text()
    assert "## What Redis did" in report and "commands/s**" in report
    for stem in CHART_STEMS:
        assert f"charts/{stem}.png" in report and (sampled / "charts" / f"{stem}.png").is_file()

    off = json.loads((plain / "run.json").read_text())["telemetry"]
    assert off == {"enabled": False, "interval_s": 0}
    assert not (plain / TELEMETRY_FILE).exists() and "What Redis did" not in (plain / "REPORT.md").read_text()

    # Re-rendered from the files alone, without Redis: the same report, the charts again.
    import redis.connection

    def no_redis(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("qbench report must not connect to Redis")

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", no_redis)
    shutil.rmtree(sampled / "charts")
    (sampled / "REPORT.md").unlink()
    assert main(["report", str(sampled)]) == 0
    assert (sampled / "REPORT.md").read_text() == report
    assert all((sampled / "charts" / f"{stem}.png").is_file() for stem in CHART_STEMS)
