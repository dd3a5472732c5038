"""PEERS.md from rows and run.json alone: every version says why it is missing, the scripted
section appears only with scripted in the run, each driver's environment is stated from its
entry, and a failed run's tables parse as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qbench.harness.peers.report import REPORT_FILE, environment_text, render_report, version_text
from qbench.harness.results.rows import Row


def rows(name: str, rate: float) -> list[Row]:
    return [
        Row("peers", name, "calls=serial;jobs=10", "enqueue_jobs_per_s", rate, "jobs/s", 0),
        Row("peers", name, "command=all;phase=enqueue", "commands_per_job", 2.0, "commands/job", 0),
        Row("peers", name, "command=all;phase=process", "commands_per_job", 1.0, "commands/job", 0),
    ]


def driver(distribution: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"distribution": distribution, "version": version, "origin": "built-in", "setup": "s", **extra}


def tables(text: str) -> list[list[str]]:
    """Every Markdown table of `text`, as its lines."""
    found: list[list[str]] = []
    current: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").replace("\\|", "").split("|")]


def assert_tables_parse(text: str) -> None:
    for table in tables(text):
        assert len(table) >= 2, table
        width = len(cells(table[0]))
        separator = cells(table[1])
        assert all(set(c) <= set("-:") and c for c in separator), table[:2]  # a separator follows the header
        assert all(len(cells(line)) == width for line in table[1:]), table


def test_a_run_without_scripted_has_no_scripted_section(tmp_path: Path) -> None:
    meta = {
        "drivers": {
            "huey": driver("huey", "3.5.4"),
            "rq": driver("rq", "?"),
            "baseline": driver("qbench", "0.1.0"),
        }
    }
    text = render_report(rows("huey", 1000.0) + rows("rq", 500.0) + rows("baseline", 800.0), meta, tmp_path)
    report = text.read_text()
    assert "scripted" not in report.split("## Setup per driver")[0].split("| driver |")[0]
    assert "Where `scripted` stands" not in report
    assert "| rq | ? (rq is not installed in its environment) |" in report
    assert "an environment of its own" not in report  # the old blanket claim
    assert "| qbench's own environment |" in report  # the presets ran in qbench's
    assert_tables_parse(report)


def test_scripted_in_the_run_keeps_its_section(tmp_path: Path) -> None:
    meta = {"drivers": {"huey": driver("huey", "3.5.4"), "scripted": driver("qbench", "0.1.0")}}
    report = render_report(rows("huey", 1000.0) + rows("scripted", 900.0), meta, tmp_path).read_text()
    assert "## Where `scripted` stands against the best peer" in report
    assert "scripted 900 vs best peer huey 1,000 jobs/s" in report


def test_a_failed_run_renders_tables_that_parse(tmp_path: Path) -> None:
    every_failed = {"failures": {"huey": "worker died", "rq": "import error"}, "drivers": {}}
    report = render_report([], every_failed, tmp_path).read_text()
    assert "| driver | version | status |" in report
    assert "| huey | ? (failed before reporting one) | FAILED |" in report
    assert_tables_parse(report)
    one_failed = {"failures": {"rq": "import error"}, "drivers": {"huey": driver("huey", "3.5.4")}}
    report = render_report(rows("huey", 1000.0), one_failed, tmp_path).read_text()
    assert_tables_parse(report)
    assert (tmp_path / REPORT_FILE).exists()


def test_versions_and_environments_say_why() -> None:
    assert (
        version_text("x", {"distribution": "", "version": "?"}, {})
        == "? (the driver declares no distribution)"
    )
    assert version_text("x", None, {}) == "? (run.json holds no entry for this driver)"
    assert version_text("x", {"distribution": "x", "version": "1.2"}, {}) == "1.2"
    assert environment_text({"environment": "own virtualenv from r.txt"}) == "own virtualenv from r.txt"
    assert environment_text({"distribution": "mine", "origin": "--driver"}) == "not recorded in run.json"
    assert environment_text({"distribution": "bullmq", "external": True}).startswith("external commands")
