"""Bad input to `qbench` ends in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from qbench.harness.cli import VERB_MODULES
from qbench.queue_impl.config import TOGGLE_VALUES
from qbench.scenarios.workload import workload_names


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    exit_code: int
    message: str
    """A fragment the single stderr line must contain."""
    env: tuple[tuple[str, str], ...] = ()


CASES = {
    "bad flag": Case(("ops", "--bogus"), 2, "unrecognized arguments: --bogus"),
    "unknown verb": Case(("nosuchverb",), 2, "invalid choice: 'nosuchverb'"),
    "unknown preset": Case(("ops", "--variant", "nope"), 2, "unknown preset 'nope'"),
    "bad toggle value": Case(
        ("ops", "--variant", "baseline+dequeue=fast"),
        2,
        "dequeue='fast': expected one of poll, block, notify",
    ),
    "redis url not a url": Case(("ops", "--redis-url", "notaurl"), 2, "'notaurl' is not a Redis URL"),
    "REDIS_URL not a url": Case(
        ("ops",), 2, "REDIS_URL: 'notaurl' is not a Redis URL", env=(("REDIS_URL", "notaurl"),)
    ),
    "unreachable redis": Case(
        ("ops", "--redis-url", "redis://127.0.0.1:1"), 1, "cannot reach Redis at redis://127.0.0.1:1"
    ),
    "cluster URL where one server is measured": Case(
        ("reproduce", "--quick", "--redis-url", "redis+cluster://127.0.0.1:1"),
        2,
        "this measures one Redis server, not a Redis Cluster",
    ),
    "cluster REDIS_URL where one server is measured": Case(
        ("chaos", "--quick"),
        2,
        "is a Redis Cluster: this measures one Redis server",
        env=(("REDIS_URL", "redis+cluster://127.0.0.1:1"),),
    ),
    "cluster down without a state file": Case(
        ("cluster", "down", "--state-file", "/nonexistent/qbench-cluster.json"),
        2,
        "/nonexistent/qbench-cluster.json: no such state file",
    ),
    "bad partition count": Case(
        ("cluster", "measure", "--partitions", "1,x"), 2, "--partitions: expected comma-separated integers"
    ),
    "unreachable cluster": Case(
        ("ops", "--redis-url", "redis+cluster://127.0.0.1:1"),
        1,
        "cannot reach Redis at redis+cluster://127.0.0.1:1",
    ),
    "REDIS_SERVER not executable": Case(
        ("ops",),
        1,
        "REDIS_SERVER=/nonexistent/redis-server is not an executable file",
        env=(("REDIS_SERVER", "/nonexistent/redis-server"), ("QBENCH_NO_DOCKER", "1")),
    ),
}


def _qbench() -> list[str]:
    script = Path(sys.executable).with_name("qbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qbench.harness.cli"]


@pytest.fixture(scope="module")
def finished() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every case run once, all at the same time (each is mostly interpreter start-up)."""
    base_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_SERVER")}
    running = {
        name: subprocess.Popen(
            [*_qbench(), *case.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base_env, **dict(case.env)},
        )
        for name, case in CASES.items()
    }
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for name, proc in running.items():
            # A hang guard: each of these ends in a few seconds even on a loaded machine.
            stdout, stderr = proc.communicate(timeout=60)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        yield results
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_and_the_right_exit_code(
    finished: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    case, result = CASES[name], finished[name]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qbench: error: ")
    assert case.message in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.returncode == case.exit_code


def run_qbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_qbench(), *args], capture_output=True, text=True, timeout=60)


def test_version_names_the_installed_distribution() -> None:
    done = run_qbench("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"qbench {metadata.version('qbench')}"


def test_top_level_help_says_what_qbench_is_and_lists_every_verb() -> None:
    done = run_qbench("--help")
    assert done.returncode == 0
    text = done.stdout
    assert "measure Redis job queues" in text.splitlines()[2]
    verbs = [module.rsplit(".", 1)[1] for module in VERB_MODULES]
    for verb in verbs:
        listed = [line for line in text.splitlines() if line.strip().startswith(verb + " ")]
        assert listed and len(listed[0].split()) > 2, f"{verb}: no one-line description in --help"


def test_load_help_lists_the_scenarios_and_the_toggles() -> None:
    done = run_qbench("load", "--help")
    assert done.returncode == 0
    for scenario in workload_names():
        assert f"  {scenario} " in done.stdout
    for toggle in TOGGLE_VALUES:
        assert f"  {toggle} " in done.stdout
