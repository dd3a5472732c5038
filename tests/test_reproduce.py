"""`qbench reproduce` end to end (quick), `qbench report` without Redis, failures and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from qbench.harness import cli
from qbench.harness.experiments import EXPERIMENTS, RunContext, Section, load_experiments, report
from qbench.harness.experiments.runner import (
    EXPERIMENT_NAMES,
    Progress,
    exit_code,
    reproduce,
    select_experiments,
)
from qbench.harness.results.render import VERDICTS, determinism_flags
from qbench.harness.results.rows import COLUMNS, DETERMINISTIC_UNITS, Row, params, read_metrics
from tests.conftest import bad_variants

FIXTURE = Path(__file__).parent / "fixtures" / "reproduce" / "quick_run"
RUN_KEYS = {"created_at", "mode", "repeats", "git", "server", "python", "packages", "cpu", "placement"}
RUN_KEYS |= {"experiments", "total_wall_s", "server_config"}
EXPECTED_EXPERIMENTS = (
    "round_trips",
    "idle_cost",
    "pickup_latency",
    "pickup_hops",
    "pool_scaling",
    "memory",
    "key_building",
    "codec",
    "throughput",
    "skipped",
)
"""Written out, not read from the package: a test compares against this, not against
whatever happened to load."""
SEED_TABLE_HEADER = "| Claim | Claimed | baseline | optimized | scripted | Verdict |"
RETENTION = {
    "on": "optimized+completed_ttl_s=1,dead_ttl_s=7",
    "off": "optimized+ttl=off,completed_ttl_s=1,dead_ttl_s=7",
}
"""The variants of a quick retention run (1 simulated day = 1 s); rows carry `ttl=` in params."""


def summary_verdicts(report_text: str) -> dict[str, list[str]]:
    """Experiment -> verdicts of its rows in REPORT.md's summary table."""
    summary = report_text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[str]] = {}
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("**"):
            found.setdefault(cells[0], []).append(cells[2].strip("*"))
    return found


def check_layout(out: Path, expected: tuple[str, ...] | None = None) -> list[Row]:
    """The results dir's files; with `expected`, exactly those experiments, each with rows,
    a report section and a verdict."""
    assert (out / "metrics.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_metrics(out / "metrics.csv")
    assert bad_variants(rows) == []
    charts = out / "charts"
    pngs = sorted(p.stem for p in charts.glob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in charts.glob("*.svg"))
    text = (out / "REPORT.md").read_text()
    for match in re.finditer(r"\]\(charts/([^)]+)\)", text):
        assert (charts / match.group(1)).is_file(), match.group(1)
    verdicts = summary_verdicts(text)
    measured = list(dict.fromkeys(r.experiment for r in rows))
    if expected is not None:
        assert measured == list(expected), f"experiments measured {measured}, expected {list(expected)}"
        sections = re.findall(r"^<!-- experiment: (\w+) -->$", text, re.MULTILINE)
        assert sections == list(expected), f"report sections {sections}"
        assert list(verdicts) == list(expected), f"summary rows for {list(verdicts)}"
    for experiment in measured:
        assert verdicts.get(experiment), f"no verdict row for {experiment}"
        assert set(verdicts[experiment]) <= set(VERDICTS), verdicts[experiment]
    return rows


def test_every_listed_experiment_loads_and_is_selected() -> None:
    """`EXPERIMENTS` lists them all, each module loads under its own name, and a reproduce
    run without `--only` selects every one of them, in order."""
    assert EXPERIMENT_NAMES == EXPECTED_EXPERIMENTS
    assert tuple(f"qbench.harness.experiments.{name}" for name in EXPECTED_EXPERIMENTS) == EXPERIMENTS
    modules = load_experiments()
    assert [m.__name__ for m in modules] == list(EXPERIMENTS)
    assert [m.NAME for m in modules] == list(EXPECTED_EXPERIMENTS)
    for module in modules:
        assert callable(module.run) and callable(module.render) and module.TITLE, module.NAME
    assert [m.NAME for m in select_experiments(None)] == list(EXPECTED_EXPERIMENTS)
    assert [m.NAME for m in select_experiments(["codec", "round_trips"])] == ["codec", "round_trips"]


def test_a_missing_experiment_module_fails_loudly() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_experiments(
            ("qbench.harness.experiments.codec", "qbench.harness.experiments.no_such_experiment")
        )


@pytest.mark.slow
@pytest.mark.timeout(660)  # ~2 min on a quiet 2-core machine; far more when it is shared
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """The whole `qbench reproduce --quick`, as a user runs it (its own Redis, every experiment)."""
    out = tmp_path / "run"
    env = {**os.environ, "QBENCH_NO_DOCKER": "1"}
    env.pop("REDIS_URL", None)
    # Two repeats keep the test inside its time budget and still prove counts repeat exactly.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qbench.harness.cli",
            "reproduce",
            "--quick",
            "--repeats",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    progress_lines = done.stderr.splitlines()
    assert any("round_trips: start" in line for line in progress_lines)

    rows = check_layout(out, EXPECTED_EXPERIMENTS)
    run = json.loads((out / "run.json").read_text())
    assert set(run) >= RUN_KEYS
    assert run["mode"] == "quick" and run["repeats"] == 2
    assert {"version", "allocator", "source", "binary"} <= set(run["server"])
    assert run["server"]["source"] == "binary" and run["server"]["owned"] is True
    assert {"commit", "dirty"} <= set(run["git"])
    assert {"cpu_count", "affinity"} <= set(run["cpu"])
    assert "harness_affinity" in run["placement"]
    assert sorted(run["experiments"]) == sorted(EXPECTED_EXPERIMENTS)  # run.json sorts its keys
    for name, info in run["experiments"].items():
        assert info["status"] == "ok" and info["rows"] > 0 and info["wall_s"] >= 0, name

    # Every deterministic count came out the same in both repeats, and some were repeated.
    assert determinism_flags(rows) == []
    repeated = {
        (r.experiment, r.variant, r.params, r.metric)
        for r in rows
        if r.unit in DETERMINISTIC_UNITS and r.repeat == 1
    }
    assert len(repeated) >= 50
    text = (out / "REPORT.md").read_text()
    assert SEED_TABLE_HEADER in text
    assert "identical in every repeat" in text
    # Sampled beside the whole run: every experiment's stretch of it, and the report's section.
    assert run["telemetry"]["enabled"] is True and run["telemetry"]["samples"] >= 10
    assert all(len(info["telemetry_t_s"]) == 2 for info in run["experiments"].values())
    assert "## What Redis did" in text and "charts/telemetry_cpu.png" in text
    assert "charts/idle_cost_series.png" in text

    # Spot checks of exact counts against the seed's tables.
    def count(variant: str, p: str, metric: str = "round_trips") -> set[float]:
        return {
            r.value
            for r in rows
            if r.experiment == "round_trips" and r.variant == variant and r.params == p and r.metric == metric
        }

    move_100 = params(op="move_scheduled_to_ready", batch=100, network="delay_1ms")
    assert count("baseline", move_100) == {201} and count("optimized", move_100) == {3}
    assert count("scripted", move_100) == {1}
    assert count("baseline", params(op="complete", batch=1, network="loopback")) == {3}

    # Re-rendering from the saved files gives the same report.
    original = text
    (out / "REPORT.md").unlink()
    shutil.rmtree(out / "charts")
    assert cli.main(["report", str(out)]) == 0
    assert (out / "REPORT.md").read_text() == original


def test_report_rerenders_a_saved_run_without_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis.connection

    def no_redis(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("qbench report must not connect to Redis")

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", no_redis)
    out = tmp_path / "saved"
    shutil.copytree(FIXTURE, out)
    assert cli.main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "REPORT.md")
    rows = check_layout(out)
    assert {"round_trips", "memory", "key_building", "codec"} <= {r.experiment for r in rows}
    assert SEED_TABLE_HEADER in (out / "REPORT.md").read_text()


def test_the_variant_column_holds_variants_or_drivers_only() -> None:
    def row(experiment: str, variant: str) -> Row:
        return Row(experiment, variant, "", "m", 1.0, "count", 0)

    good = [row("codec", ""), row("codec", "baseline+codec=json"), row("memory", "optimized+ttl=off")]
    good += [row("peers", "rq"), row("peers", "taskiq+result_ex_time=3600"), row("peers", "scripted")]
    assert bad_variants(good) == []
    bad = [row("codec", "json"), row("memory", "ttl_on"), row("round_trips", "proxy"), row("ops", "rq")]
    bad.append(row("peers", "rq+queue=x"))
    assert bad_variants(bad) == [
        "codec: json",
        "memory: ttl_on",
        "ops: rq",
        "peers: rq+queue=x",
        "round_trips: proxy",
    ]


def _fake_experiment(name: str, *, fails: bool) -> types.ModuleType:
    module = types.ModuleType(f"fake_{name}")

    def run(ctx: RunContext) -> list[Row]:
        if fails:
            raise RuntimeError("the fake experiment broke")
        ctx.progress("measuring")
        return [
            Row(name, "baseline", params(n=1), "round_trips", 3.0, "round_trips", r)
            for r in range(ctx.repeats)
        ]

    def render(rows: list[Row], charts_dir: Path) -> Section:
        return Section(
            title=f"Fake {name}", markdown=f"{len(rows)} rows", verdicts=[("fake claim", "holds", "3")]
        )

    module.NAME, module.TITLE = name, f"Fake {name}"  # type: ignore[attr-defined]
    module.run, module.render = run, render  # type: ignore[attr-defined]
    return module


def test_a_failing_experiment_keeps_the_others_rows(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = _fake_experiment("good", fails=False), _fake_experiment("bad", fails=True)
    monkeypatch.setattr(report, "load_experiments", lambda: [good, bad])
    meta = reproduce(
        out_dir=tmp_path,
        quick=True,
        repeats=2,
        experiments=[bad, good],
        redis_url=redis_url,
        progress=Progress(),
    )
    assert exit_code(meta) == 1
    assert meta["experiments"]["bad"]["status"] == "error"
    assert "RuntimeError: the fake experiment broke" in meta["experiments"]["bad"]["error"]
    assert meta["experiments"]["good"]["status"] == "ok"
    assert [r.experiment for r in read_metrics(tmp_path / "metrics.csv")] == ["good", "good"]
    assert json.loads((tmp_path / "run.json").read_text())["experiments"]["bad"]["status"] == "error"
    assert "Traceback" in (tmp_path / "error-bad.txt").read_text()
    verdicts = summary_verdicts((tmp_path / "REPORT.md").read_text())
    assert verdicts == {"good": ["holds"], "bad": ["error"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reproduce", "--only", "nope"], "--only: unknown experiment 'nope'"),
        (["reproduce", "--only", ","], "--only: expected comma-separated experiment names"),
        (["reproduce", "--repeats", "0"], "--repeats: must be >= 1"),
        (["reproduce", "--repeats", "x"], "argument --repeats: invalid int value"),
        (["report", "{tmp}/empty"], "no metrics.csv here"),
        (["report", "{tmp}/bad_csv"], "not a qbench metrics.csv"),
        (["report", "{tmp}/bad_run"], "not JSON"),
        (["reproduce", "--out", "{tmp}/a_file"], "exists and is not a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_csv").mkdir()
    (tmp_path / "bad_csv" / "metrics.csv").write_text("a,b\n1,2\n")
    (tmp_path / "bad_run").mkdir()
    (tmp_path / "bad_run" / "metrics.csv").write_text(",".join(COLUMNS) + "\n")
    (tmp_path / "bad_run" / "run.json").write_text("{not json")
    (tmp_path / "a_file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_memory_projection_scales_the_measured_curve() -> None:
    """The seed's tables are the retention run scaled by rate: measured days as they are,
    later days along the no-TTL slope, or the TTL plateau plus the never-trimmed dead ids."""
    from qbench.harness.experiments import memory

    def rows_for(ttl: str, curve: dict[int, float]) -> list[Row]:
        return [
            Row("memory", RETENTION[ttl], params(day=d, ttl=ttl), "used_memory_bytes", v, "bytes_observed", 0)
            for d, v in curve.items()
        ]

    off = {d: 1000.0 * d for d in range(1, 11)}  # 1,000 B per simulated day
    on = {d: 1000.0 + 50.0 * min(d, 7) for d in range(1, 11)}
    rows = rows_for("off", off) + rows_for("on", on)
    rows.append(Row("memory", RETENTION["on"], params(ttl="on"), "jobs_per_day", 10, "jobs", 0))
    dead_p = params(payload="1KB", outcome="dead")
    rows.append(Row("memory", "optimized", dead_p, "dead_list_bytes_per_id", 40, "bytes", 0))
    model = memory._model(rows)
    assert model is not None
    assert model.off_slope == pytest.approx(1000.0)
    assert model.plateau == pytest.approx(1350.0)  # days 8..10
    scale = 1_000_000 / 10
    assert model.project(1_000_000, 7, ttl=False) == pytest.approx(7000.0 * scale)
    assert model.project(1_000_000, 30, ttl=False) == pytest.approx(30_000.0 * scale)
    # Three days after the dead TTL are too few to fit a slope: past day 10, the plateau
    # (centred on day 9) grows by the dead-letter ids only, 5% of 10 jobs a day x 40 B.
    assert model.fitted_growth is None
    assert model.project(1_000_000, 30, ttl=True) == pytest.approx((1350.0 + 0.5 * 40 * 21) * scale)
    assert memory._verdict(30e9, 1.35e9, (30e9, 1.35e9)) == "holds"
    assert memory._verdict(42e9, 1.9e9, (30e9, 1.35e9)) == "partly"  # same saving, larger bytes
    assert memory._verdict(42e9, 20e9, (30e9, 1.35e9)) == "does not hold"


def test_memory_projection_can_use_the_fitted_growth() -> None:
    from qbench.harness.experiments import memory

    rows = [
        Row(
            "memory",
            RETENTION["off"],
            params(day=d, ttl="off"),
            "used_memory_bytes",
            1000.0 * d,
            "bytes_observed",
            0,
        )
        for d in range(1, 15)
    ]
    rows += [
        Row(
            "memory",
            RETENTION["on"],
            params(day=d, ttl="on"),
            "used_memory_bytes",
            1300.0 + 30.0 * max(d - 7, 0),
            "bytes_observed",
            0,
        )
        for d in range(1, 15)
    ]
    rows.append(Row("memory", RETENTION["on"], params(ttl="on"), "jobs_per_day", 10, "jobs", 0))
    model = memory._model(rows)
    assert model is not None and model.fitted_growth == pytest.approx(30.0)
    assert model.id_growth == 0.0  # no dead-letter measurement in these rows
    plateau = 1300.0 + 30.0 * 4  # days 8..14, centred on day 11
    assert model.project(10, 31, ttl=True, fitted=True) == pytest.approx(plateau + 30.0 * 20)
    assert model.project(10, 31, ttl=True) == pytest.approx(plateau)
