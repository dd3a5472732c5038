"""SIGTERM ends `qbench` the way Ctrl-C does: the redis-server it started and its
`qbench-redis-*` folder are gone afterwards, and the exit code says it was terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbench.harness.cli import EXIT_TERMINATED

pytestmark = pytest.mark.slow


def _qbench() -> list[str]:
    script = Path(sys.executable).with_name("qbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qbench.harness.cli"]


def _redis_ready(folder: Path) -> bool:
    log = folder / "redis.log"
    return log.is_file() and "Ready to accept connections" in log.read_text(errors="replace")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_removes_the_redis_folder_qbench_made(tmp_path: Path, how: signal.Signals) -> None:
    scratch = tmp_path / "tmp"  # qbench's own TMPDIR: only its folders appear here
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(TMPDIR=str(scratch), QBENCH_NO_DOCKER="1")
    proc = subprocess.Popen(
        [*_qbench(), "reproduce", "--quick", "--out", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(_redis_ready(d) for d in scratch.glob("qbench-redis-*")):
            assert proc.poll() is None, f"qbench ended before its Redis was up: {proc.stderr}"
            assert time.monotonic() < deadline, "no redis-server came up in 60 s"
            time.sleep(0.05)
        made = list(scratch.glob("qbench-redis-*"))
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (EXIT_TERMINATED if how == signal.SIGTERM else 128 + signal.SIGINT), stderr
    assert "Traceback" not in stderr
    assert made and not any(d.exists() for d in made)
    assert list(scratch.glob("qbench-redis-*")) == []
