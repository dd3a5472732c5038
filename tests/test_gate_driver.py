"""`qbench gate run --driver`: the example queue repository's workflow commands, run on a
temporary git repository of three commits (base, an unchanged head, a head with a real
regression in the queue's code). The unchanged head passes; the regression (one extra
command per job, and a busy loop per job) fails with exit 1 on its exact counters. Only
the deterministic verdicts are asserted; the timings are printed (see the report)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "qbench-gate-example"
QBENCH = str(Path(sys.executable).parent / "qbench")

REGRESSION = '''
    def put(self, body: Any) -> None:
        """Enqueue one job: one LPUSH (and, in this regression, a needless EXISTS and busy loop)."""
        self.client.exists(self.key)
        sum(range(20_000))
        self.client.lpush(self.key, json.dumps(body))
'''


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")  # a temporary repository of the test's own, not the project tree
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def gate(repo: Path, base: str, head: str, out: Path, summary: Path) -> subprocess.CompletedProcess[str]:
    """The workflow's `qbench gate run` line (examples/qbench-gate-example/.github/workflows/gate.yml)."""
    env = {**os.environ, "QBENCH_NO_DOCKER": "1"}
    argv = [QBENCH, "gate", "run", "--driver", "tinyqueue", "--base", base, "--head", head, "--quick"]
    argv += ["--out", str(out), "--summary", str(summary)]
    return subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_the_example_workflow_passes_an_unchanged_head_and_fails_a_regression(tmp_path: Path) -> None:
    repo = tmp_path / "tinyqueue"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    git(repo, "init", "-q", "-b", "main")
    base = commit_all(repo, "base")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA docs-only change.\n")
    unchanged = commit_all(repo, "head: docs only")
    source = repo / "tinyqueue" / "queue.py"
    text = source.read_text()
    start = text.index("    def put(")
    end = text.index("    def work(")
    source.write_text(text[:start] + REGRESSION.lstrip("\n") + "\n" + text[end:])
    regressed = commit_all(repo, "head: an extra EXISTS and a busy loop per enqueue")
    summary = tmp_path / "summary.md"

    passed = gate(repo, base, unchanged, tmp_path / "pass", summary)
    print(passed.stdout[-3000:], passed.stderr[-1500:])
    assert passed.returncode == 0, passed.stderr[-2000:]
    verdict = json.loads((tmp_path / "pass" / "gate.json").read_text())
    assert verdict["status"] in ("pass", "inconclusive")
    assert verdict["counters"] == [] and verdict["counters_compared"] > 0
    run = json.loads((tmp_path / "pass" / "run.json").read_text())
    assert run["status"] == "ok" and run["kind"] == "gate"
    written = (tmp_path / "pass" / "GATE.md").read_text()
    (tmp_path / "pass" / "GATE.md").unlink()
    report = subprocess.run(
        [QBENCH, "report", str(tmp_path / "pass")], capture_output=True, text=True, timeout=60, check=False
    )
    assert report.returncode == 0, report.stderr
    # the driver gate's renderer, not the reference gate's (which would overwrite it)
    assert (tmp_path / "pass" / "GATE.md").read_text() == written

    failed = gate(repo, "main~2", "HEAD", tmp_path / "fail", summary)  # git refs, as the workflow gives
    print(failed.stdout[-3000:], failed.stderr[-1500:])
    assert failed.returncode == 1, failed.stderr[-2000:]
    verdict = json.loads((tmp_path / "fail" / "gate.json").read_text())
    assert verdict["status"] == "FAIL"
    changed = {(c["phase"], c["command"]): c for c in verdict["counters"]}
    exists = changed[("enqueue", "exists")]
    assert exists["status"] == "FAIL" and exists["base_per_job"] == 0 and exists["head_per_job"] == 1
    assert changed[("enqueue", "")]["metric"] == "round_trips_per_job"  # one more round trip per job
    assert regressed and git(repo, "rev-parse", "HEAD") == regressed
    text = summary.read_text()
    assert "✅" in text or "⚠️" in text
    assert "❌ FAILED" in text and "`exists`" in text
    assert not [line for line in git(repo, "worktree", "list").splitlines()[1:]]  # temporary worktrees gone


def test_a_spec_that_names_nothing_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [QBENCH, "gate", "run", "--driver", "tinyqueue", "--base", "no-such-ref-xyz", "--head", "HEAD"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--base" in done.stderr


@pytest.mark.parametrize(
    "driver", ["bullmq", "bee-queue", str(ROOT / "qbench" / "drivers" / "bullmq" / "driver.toml")]
)
@pytest.mark.parametrize("mode", ["run", "calibrate"])
def test_an_external_driver_is_refused_in_one_line_with_exit_2(
    tmp_path: Path, driver: str, mode: str
) -> None:
    # A driver.toml ref used to run a whole gate: both sides on the one Node folder qbench
    # holds, whatever --base and --head said, and a pass that meant nothing.
    argv = [QBENCH, "gate", mode, "--driver", driver, "--quick", "--out", str(tmp_path / "out")]
    argv += ["--base", "HEAD", "--head", "HEAD"] if mode == "run" else ["--runs", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert (
        len(done.stderr.strip().splitlines()) == 1
        and "external (non-Python) drivers are not gated" in done.stderr
    )
    assert not (tmp_path / "out").exists()
