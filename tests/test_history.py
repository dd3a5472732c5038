"""History across commits: tidy entries keyed by commit, charts with steps above the noise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from qbench.harness.cli import main
from qbench.harness.results.history import COLUMNS, RATIO_METRIC, read_history, steps, summarize_run
from qbench.harness.results.rows import Row, write_metrics, write_run
from qbench.harness.results.timing_gate import CALIBRATED_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]


def gate_run(tmp: Path, name: str, commit: str, date: str, head_ns: float, rounds: int = 12) -> Path:
    """A saved `qbench gate run`: base at 100 µs per cycle, head at `head_ns`, a little noise."""
    out = tmp / name
    rows = []
    for i in range(rounds):
        wobble = 1 + 0.002 * ((i % 3) - 1)
        rows.append(
            Row("timing", "scripted", "case=cycle;side=base", "cpu_ns_per_op", 100_000.0 * wobble, "ns", i)
        )
        rows.append(
            Row("timing", "scripted", "case=cycle;side=head", "cpu_ns_per_op", head_ns * wobble, "ns", i)
        )
    write_metrics(out / "metrics.csv", rows)
    write_run(
        out / "run.json",
        {
            "mode": "gate",
            "git": {"commit": "f" * 40},
            "sides": {"head": {"commit": commit, "date": date, "subject": f"change {name}"}},
        },
    )
    return out


def test_a_gate_run_summarizes_as_head_values_and_the_ratio_with_intervals(tmp_path: Path) -> None:
    entries = summarize_run(gate_run(tmp_path, "r1", "a" * 40, "2026-01-01T00:00:00", 110_000.0))
    by_metric = {(e.params, e.metric): e for e in entries}
    assert set(by_metric) == {("case=cycle;side=head", "cpu_ns_per_op"), ("case=cycle", RATIO_METRIC)}
    ratio = by_metric[("case=cycle", RATIO_METRIC)]
    assert ratio.commit == "a" * 40 and ratio.subject == "change r1"
    assert ratio.value == pytest.approx(1.10) and ratio.lo <= ratio.value <= ratio.hi
    assert ratio.n == 12 and ratio.interval == "hl95"


def test_history_add_is_tidy_keyed_by_commit_and_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.csv"
    first = gate_run(tmp_path, "r1", "a" * 40, "2026-01-01T00:00:00", 100_000.0)
    second = gate_run(tmp_path, "r2", "b" * 40, "2026-01-02T00:00:00", 100_500.0)
    third = gate_run(tmp_path, "r3", "c" * 40, "2026-01-03T00:00:00", 120_000.0)
    for run in (first, second, third, second):  # adding a run again replaces its entries
        assert main(["history", "add", str(run), "--file", str(history)]) == 0
    with history.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 3 * 2
    assert [r["commit"][0] for r in rows if r["metric"] == RATIO_METRIC] == ["a", "b", "c"]

    entries = read_history(history)
    marked = steps(entries, noise=0.05)  # on the interleaved ratio only: its noise is calibrated
    assert [(s.before.commit[0], s.after.commit[0], s.series[3]) for s in marked] == [
        ("b", "c", RATIO_METRIC)
    ]
    assert len(steps(entries, noise=0.05, units=None)) == 2  # the absolute series moved too
    out = tmp_path / "site-history"
    assert main(["history", "chart", "--file", str(history), "--out", str(out)]) == 0
    pngs = sorted(p.name for p in (out / "charts").glob("*.png"))
    assert len(pngs) == 2 and all((out / "charts" / p).stat().st_size > 1000 for p in pngs)
    text = (out / "HISTORY.md").read_text()
    assert "+19.4%" in text and "3 commits" in text
    assert f"2 charts, 1 steps larger than {CALIBRATED_TOLERANCE:.1%}" in capsys.readouterr().out


def test_a_run_without_a_commit_or_metrics_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nocommit"
    write_metrics(out / "metrics.csv", [Row("x", "", "", "wall_ms", 1.0, "ms", 0)])
    write_run(out / "run.json", {"mode": "quick", "git": {"commit": None}})
    assert main(["history", "add", str(out), "--file", str(tmp_path / "h.csv")]) == 2
    assert "records no git commit" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["history", "add", str(tmp_path / "empty"), "--file", str(tmp_path / "h.csv")]) == 2


def test_an_installed_run_is_added_under_the_label_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qbench installed from a wheel records no commit: the user keys the run themselves."""
    out = tmp_path / "installed"
    write_metrics(out / "metrics.csv", [Row("x", "", "", "wall_ms", 1.0, "ms", 0)])
    write_run(out / "run.json", {"mode": "quick", "git": {"commit": None, "source": "installed"}})
    history = tmp_path / "h.csv"
    assert main(["history", "add", str(out), "--file", str(history)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "installed package" in err[0] and "--commit LABEL" in err[0]
    assert main(["history", "add", str(out), "--file", str(history), "--commit", "myqueue-1.4.0"]) == 0
    assert {e.commit for e in read_history(history)} == {"myqueue-1.4.0"}
    assert main(["history", "add", str(out), "--file", str(history), "--commit", " "]) == 2


def test_committed_history_spans_at_least_five_commits() -> None:
    history = read_history(ROOT / "results" / "history.csv")
    commits = {e.commit for e in history}
    assert len(commits) >= 5
    ratios = [e for e in history if e.metric == RATIO_METRIC]
    assert {e.variant for e in ratios} == {"baseline", "optimized", "scripted"}
    assert all(e.lo <= e.value <= e.hi for e in history)
    assert (ROOT / "results" / "history" / "HISTORY.md").is_file()
    runs = {
        json.loads((p / "run.json").read_text())["sides"]["head"]["commit"]
        for p in (ROOT / "results" / "history" / "runs").iterdir()
    }
    assert runs == commits


@pytest.mark.parametrize("status", ["failed", "interrupted", "running"])
def test_a_run_that_did_not_finish_is_not_added(
    status: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = gate_run(tmp_path, "r1", "a" * 40, "2026-01-01T00:00:00", 110_000.0)
    meta = json.loads((run / "run.json").read_text())
    meta.update(kind="gate", status=status, reason="worker killed" if status == "failed" else None)
    (run / "run.json").write_text(json.dumps(meta))
    history = tmp_path / "history.csv"
    assert main(["history", "add", str(run), "--file", str(history)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run) in err[0] and status in err[0]
    assert not history.exists()
    meta["status"] = "ok"
    (run / "run.json").write_text(json.dumps(meta))
    assert main(["history", "add", str(run), "--file", str(history)]) == 0
