"""The results registry (`qbench.harness.results.runs`): one writer of run.json, a folder
holds one run, and `qbench report` re-renders every kind of committed run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import qbench
from qbench.harness import cli
from qbench.harness.peers.cluster import NOT_ATTEMPTED, Attempt, ClusterSuiteResult, Outcome
from qbench.harness.peers.cluster import QUICK as CLUSTER_QUICK
from qbench.harness.peers.cluster_report import write_cluster_suite
from qbench.harness.results.rows import code_source, source_text
from qbench.harness.results.runs import BANNER_MARK, KINDS, describe, new_run_dir, start_run

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = {
    "reference": "reproduce",
    "cluster": "cluster",
    "chaos": "chaos",
    "peers": "peers",
    "ablation": "peers",
    "peers-cluster": "peers-cluster",
    "calibration": "calibration",
    "history/runs/086db44": "gate",  # results/gate/ is a scratch folder, git-ignored
    "gate-pairs/huey-3.3.4-vs-3.4.0": "gate-driver",
    "history": "history",
    "flips": "flips",
    "load/arrival/baseline": "load",
}


def _comparable(text: str) -> list[str]:
    # The code-source line changed form ("git abc" -> "commit abc"); all else must match.
    return [
        line.replace("qbench.harness.", "harness.").replace("qbench.queue_impl", "queue_impl")
        for line in text.splitlines()
        if "git " not in line and "commit " not in line
    ]


@pytest.mark.parametrize("folder", sorted(COMMITTED))
def test_report_rerenders_every_committed_kind(folder: str, tmp_path: Path) -> None:
    source = RESULTS / folder
    work = tmp_path / folder
    shutil.copytree(source, work)
    if folder == "history":
        shutil.copy(RESULTS / "history.csv", tmp_path / "history.csv")
    found = describe(work)
    assert found is not None and found.kind == COMMITTED[folder] and found.status == "ok"
    report_name = KINDS[found.kind].report
    assert report_name is not None
    (work / report_name).write_text("# stale\n")  # must be rewritten
    assert cli.main(["report", str(work)]) == 0
    first = (work / report_name).read_text()
    # A report may name its own folder (the cluster report's re-render command).
    assert _comparable(first.replace(str(work), f"results/{folder}")) == _comparable(
        (source / report_name).read_text()
    )
    assert cli.main(["report", str(work)]) == 0
    assert (work / report_name).read_text() == first  # deterministic


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_failed_rerun_does_not_leave_an_earlier_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that fails into a folder holding a successful run: nothing of the old run is
    left, run.json says failed and why, the report says so, and `qbench report` exits 1."""
    out = tmp_path / "run"
    shutil.copytree(RESULTS / "reference", out)
    code = cli.main(
        ["reproduce", "--quick", "--only", "codec", "--out", str(out), "--redis-url", "redis://127.0.0.1:1/0"]
    )
    assert code == 1
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["kind"] == "reproduce"
    assert meta["reason"] and "Connection" in meta["reason"]
    assert not (out / "metrics.csv").exists() and not (out / "telemetry.csv").exists()
    assert BANNER_MARK in (out / "REPORT.md").read_text()
    capsys.readouterr()
    shutil.copy(RESULTS / "reference" / "metrics.csv", out / "metrics.csv")  # even with rows, it failed
    assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run failed" in err[0]
    found = describe(out)
    assert found is not None and found.status == "failed"


def test_folder_holding_foreign_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    code = cli.main(
        ["reproduce", "--quick", "--only", "codec", "--out", str(out), "--redis-url", "redis://x:1"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("qbench: error")]
    assert len(errors) == 1 and "notes.txt" in errors[0]
    assert (out / "notes.txt").read_text() == "a user's file" and not (out / "run.json").exists()


def test_interrupted_run_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), start_run(out, "ops", {"mode": "ops"}):
        assert json.loads((out / "run.json").read_text())["status"] == "running"
        raise KeyboardInterrupt
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and "Ctrl-C" in meta["reason"] and meta["finished_at"]


def test_run_json_commit_is_the_qbench_code_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q")
    _git(other, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "other")
    other_commit = _git(other, "rev-parse", "HEAD")
    monkeypatch.chdir(other)
    with start_run(tmp_path / "run", "ops", {"mode": "ops"}) as run:
        pass
    meta = json.loads((run.out_dir / "run.json").read_text())
    package = Path(qbench.__file__).resolve().parent
    assert meta["git"]["commit"] == _git(package, "rev-parse", "HEAD") != other_commit
    assert meta["git"]["source"] == "checkout" and "qbench_version" in meta


def test_installed_code_is_named_by_its_version_never_git_none(tmp_path: Path) -> None:
    installed = code_source(tmp_path)  # a package folder outside any checkout
    assert installed == {"commit": None, "dirty": None, "source": "installed"}
    assert source_text({"git": installed, "qbench_version": "0.1.0"}) == "qbench 0.1.0 (installed)"
    work = tmp_path / "peers"
    shutil.copytree(RESULTS / "peers", work)
    meta = json.loads((work / "run.json").read_text())
    meta.update(git=installed, qbench_version="0.1.0")
    (work / "run.json").write_text(json.dumps(meta))
    assert cli.main(["report", str(work)]) == 0
    text = (work / "PEERS.md").read_text()
    assert "git None" not in text and "qbench 0.1.0 (installed)" in text


def _earlier_run(source: str, out: Path) -> None:
    """`out` holds a committed run of `source`, plus the logs and telemetry an earlier run left."""
    shutil.copytree(RESULTS / source, out)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / "old-driver.log").write_text("an earlier run's log\n")
    (out / "telemetry").mkdir(exist_ok=True)
    (out / "telemetry" / "old-driver.csv").write_text("an earlier run's samples\n")


def test_a_peers_run_that_fails_leaves_nothing_of_an_earlier_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The battery starts its run before measuring: the earlier run's PEERS.md, rows, logs
    and telemetry go, and run.json and the report say the run failed."""
    out = tmp_path / "peers"
    _earlier_run("peers", out)
    code = cli.main(
        ["peers", "--only", "baseline", "--out", str(out), "--redis-url", "redis://127.0.0.1:1/0"]
    )
    assert code == 1
    meta = json.loads((out / "run.json").read_text())
    # The server is unreachable: the battery stops before writing a row.
    assert meta["kind"] == "peers" and meta["status"] == "failed" and "cannot reach Redis" in meta["reason"]
    assert not (out / "metrics.csv").exists()
    assert not (out / "logs" / "old-driver.log").exists() and not (out / "telemetry").exists()
    assert not (out / "charts" / "peers_commands.svg").exists()
    report = (out / "PEERS.md").read_text()
    assert BANNER_MARK in report and "| rq |" not in report
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 1  # no rows to re-render: the run's status answers
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run failed" in err[0]
    assert (out / "PEERS.md").read_text() == report


def test_a_peers_cluster_run_that_could_not_attempt_a_driver_says_failed(tmp_path: Path) -> None:
    out = tmp_path / "peers-cluster"
    _earlier_run("peers-cluster", out)
    result = ClusterSuiteResult(
        attempts=[Attempt("rq", 200, Outcome(NOT_ATTEMPTED, error="its environment could not be built"))]
    )
    begun = {"experiment": "peers_cluster", "mode": "quick"}
    with start_run(out, "peers-cluster", begun) as run:
        assert json.loads((out / "run.json").read_text())["status"] == "running"
        assert not (out / "logs").exists() and not (out / "metrics.csv").exists()
        report = write_cluster_suite(result, CLUSTER_QUICK, out, mode="quick", url=None, run=run)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["reason"] == "driver(s) rq not attempted"
    assert meta["kind"] == "peers-cluster"
    assert meta["failures"] == {"rq": "its environment could not be built"}
    assert BANNER_MARK in report.read_text()


def test_a_peers_input_error_leaves_the_earlier_run_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "peers"
    _earlier_run("peers", out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert cli.main(["peers", "--only", "no-such-driver", "--out", str(out)]) == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_peers_render_is_an_alias_of_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder, report in (("peers", "PEERS.md"), ("peers-cluster", "PEERS-CLUSTER.md")):
        work = tmp_path / folder
        shutil.copytree(RESULTS / folder, work)
        (work / report).unlink()
        assert cli.main(["peers", "--render", str(work)]) == 0
        assert capsys.readouterr().out.strip() == f"rendered {work / report}"
        assert (work / report).is_file()
    cluster = tmp_path / "cluster"
    shutil.copytree(RESULTS / "cluster", cluster)
    assert cli.main(["peers", "--render", str(cluster)]) == 2  # a cluster measure run, not a peers run
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a cluster run, not a peers or peers-cluster run" in err[0]


# -- default --out: a new folder per run, never a committed one -------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["peers"],
        ["peers", "--cluster"],
        ["cluster", "measure"],
        ["gate", "calibrate"],
        ["load", "producer"],
        ["reproduce"],
        ["chaos"],
        ["chaos", "--quick", "--driver", "huey"],
    ],
)
def test_no_verb_writes_a_committed_folder_unless_it_is_named(argv: list[str]) -> None:
    """Without --out a verb writes `results/<UTC time>-<kind>`, git-ignored, so a scratch run
    cannot overwrite results/peers, results/cluster or results/calibration."""
    args = cli.build_parser().parse_args(argv)
    assert args.out is None  # resolved at run time, by `new_run_dir`
    ignored = subprocess.run(
        ["git", "-C", str(RESULTS.parent), "check-ignore", "-q", f"{new_run_dir('peers-quick')}/"],
        check=False,
    )
    assert ignored.returncode == 0
    assert re.fullmatch(r"results/\d{8}T\d{6}Z-cluster", str(new_run_dir("cluster")))
    if argv[0] == "chaos":  # the presets' run and the drivers' run, each a folder of its kind
        from qbench.harness.verbs.chaos import default_out

        label = "reliability-quick" if "--driver" in argv else "chaos"
        assert re.fullmatch(rf"results/\d{{8}}T\d{{6}}Z-{label}", str(default_out(args)))
