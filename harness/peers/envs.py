"""One virtualenv per peer library (their redis-py pins conflict), built on first use."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.peers.registry import DriverSpec

REQUIREMENTS_DIR = Path(__file__).with_name("requirements")
VENVS_ENV = "QBENCH_PEERS_VENVS"
STAMP = "qbench-requirements.txt"
PIP_TIMEOUT_S = 900


class PeerEnvError(RuntimeError):
    """A peer library's virtualenv could not be built (the message says why, in one line)."""


def venvs_root() -> Path:
    """QBENCH_PEERS_VENVS, else `peers/` inside the running virtualenv (already git-ignored)."""
    explicit = os.environ.get(VENVS_ENV)
    return Path(explicit) if explicit else Path(sys.prefix) / "peers"


def requirements_text(spec: DriverSpec) -> str | None:
    if spec.requirements is None:
        return None
    return (REQUIREMENTS_DIR / spec.requirements).read_text()


def ensure_env(spec: DriverSpec, *, root: Path | None = None, log: Path | None = None) -> str:
    """The Python interpreter that runs `spec`'s driver, building its venv if needed.

    pip's output goes to `log` when a step fails.

    The reference presets run in this interpreter. A peer's venv is rebuilt only when
    its requirements file changed (a stamp inside the venv records what it holds).
    """
    wanted = requirements_text(spec)
    if wanted is None:
        return sys.executable
    venv = (root or venvs_root()) / str(spec.env_name)
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS_DIR / str(spec.requirements)),
        ],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise PeerEnvError(f"{spec.name}: {step[2]} timed out after {PIP_TIMEOUT_S}s") from None
        if done.returncode != 0:
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"$ {' '.join(step)}\n{done.stdout}{done.stderr}")
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"exit {done.returncode}"
            raise PeerEnvError(f"{spec.name}: building its virtualenv failed: {reason}")
    stamp.write_text(wanted)
    return str(python)


def import_root() -> Path:
    """A directory holding only `harness` and `queue_impl` links, for driver subprocesses' PYTHONPATH.

    Pointing PYTHONPATH at the project's site-packages would put this environment's
    redis-py in front of the peer's own; the links expose our two packages alone, the
    very copies this process runs (so a run from a snapshot measures that snapshot).
    """
    import queue_impl

    root = Path(tempfile.mkdtemp(prefix="qbench-peers-path-"))
    (root / "harness").symlink_to(Path(__file__).resolve().parent.parent, target_is_directory=True)
    (root / "queue_impl").symlink_to(Path(queue_impl.__file__).resolve().parent, target_is_directory=True)
    return root
