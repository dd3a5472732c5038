"""`python -m qbench.harness.observe.demo`: a queue set running on a fresh Redis, watched by the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbench.harness.observe.demo import DEAD_JOBS, IDLE_JOBS, WORKERS, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sidekiq", "--out", "x"], "unknown scenario 'sidekiq'"),
        (["optimized-idle", "--out", "x", "--duration", "1"], "--duration must be >= 2"),
        (["rq", "--out", "x", "--rate", "0"], "--rate > 0"),
    ],
)
def test_bad_demo_input_is_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_the_idle_demo_is_found_by_observe_unaided(tmp_path: Path) -> None:
    """A short window: the idle workers' blocking waits and the keys without a TTL."""
    out = tmp_path / "idle"
    assert main(["optimized-idle", "--out", str(out), "--duration", "6"]) == 0
    demo = json.loads((out / "demo.json").read_text())
    assert demo["observe_exit"] == 0 and demo["observe_command"].startswith("qbench observe --redis-url ")
    assert demo["setup"]["jobs_left_before"] == {
        "demo:completed": IDLE_JOBS,
        "demo:dead_lettered": DEAD_JOBS,
        "demo-baseline:completed": IDLE_JOBS,
        "demo-baseline:dead_lettered": 0,
    }
    found = json.loads((out / "observe.json").read_text())
    pattern = found["idle_pattern"]
    assert pattern["idle"] is True and pattern["producer_calls"] == 0
    assert WORKERS - 1 <= pattern["blocked_clients_mean"] <= WORKERS  # the threads in BRPOPLPUSH
    blocking = {c["command"]: c for c in pattern["cadences"] if c["kind"] == "blocking"}
    assert set(blocking) == {"brpoplpush"} and blocking["brpoplpush"]["calls"] >= WORKERS
    families = {f["pattern"]: f for f in found["keys"]["families"]}
    assert families["qbench:{demo}:dead"]["no_ttl_share"] == 1.0  # the dead-letter list
    assert families["qbench:{demo-baseline}:job:*"]["no_ttl_share"] == 1.0
    assert families["qbench:{demo-baseline}:job:*"]["keys_scanned"] == IDLE_JOBS
    assert families["qbench:{demo}:job:*"]["no_ttl_share"] == 0.0
    assert families["qbench:{demo}:job:*"]["keys_scanned"] == IDLE_JOBS + DEAD_JOBS


def test_observe_imports_nothing_from_the_cli_or_the_verbs() -> None:
    """observe sits below the CLI: its exit codes come from qbench.harness.errors."""
    import ast

    import qbench.harness.observe

    folder = Path(qbench.harness.observe.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(("qbench.harness.cli", "qbench.harness.verbs")), (path.name, name)
