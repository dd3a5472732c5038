"""Where each driver runs: a virtualenv per requirements file (the libraries' redis-py pins
conflict), qbench's own environment, or an external driver's folder after its install step."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import qbench
from qbench.harness.peers.registry import DriverSpec

VENVS_ENV = "QBENCH_PEERS_VENVS"
STAMP = "qbench-requirements.txt"
PIP_TIMEOUT_S = 900
INSTALL_TIMEOUT_S = 900


class PeerEnvError(RuntimeError):
    """A driver's environment could not be built (the message says why, in one line)."""


def venvs_root() -> Path:
    """QBENCH_PEERS_VENVS, else `peers/` inside the running virtualenv (already git-ignored)."""
    explicit = os.environ.get(VENVS_ENV)
    return Path(explicit) if explicit else Path(sys.prefix) / "peers"


def requirements_text(spec: DriverSpec) -> str | None:
    path = spec.requirements
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise PeerEnvError(f"{spec.name}: cannot read its requirements file: {exc}") from None


def _run(name: str, step: Sequence[str], *, cwd: Path | None, timeout_s: float, log: Path | None) -> None:
    try:
        done = subprocess.run(
            list(step), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise PeerEnvError(f"{name}: `{' '.join(step)}` timed out after {timeout_s:g}s") from None
    except OSError as exc:
        raise PeerEnvError(f"{name}: cannot run `{' '.join(step)}`: {exc}") from None
    if done.returncode != 0:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"$ {' '.join(step)}\n{done.stdout}{done.stderr}")
        reason = failure_reason(done.stderr or done.stdout) or f"exit {done.returncode}"
        raise PeerEnvError(f"{name}: `{' '.join(step)}` failed: {reason}")


NPM_ERROR_PREFIXES = ("npm error", "npm ERR!")
NPM_DETAIL_KEYS = ("code ", "errno ", "syscall ", "path ", "dest ", "A complete log of this run", "Log files")
REASON_MAX_CHARS = 400


def failure_reason(output: str) -> str:
    """The line of a failed step's output that says why it failed. npm ends with a pointer
    to its log ("A complete log of this run can be found in ..."): its reason is the first
    paragraph of its `npm error` lines that is not a field (code, errno, path...). Any
    other tool: its last non-empty line."""
    lines = output.strip().splitlines()
    npm = [
        line[len(p) :].strip()
        for line in lines
        for p in NPM_ERROR_PREFIXES
        if line == p or line.startswith(p + " ")
    ]
    npm += [""]  # a bare `npm error` line (a blank one) ends a paragraph
    paragraph: list[str] = []
    for text in npm:
        if text and not text.startswith(NPM_DETAIL_KEYS):
            paragraph.append(text)
        elif paragraph:
            return " ".join(paragraph)[:REASON_MAX_CHARS]
    for line in reversed(lines):
        if line.strip() and "A complete log of this run" not in line:
            return line.strip()[:REASON_MAX_CHARS]
    return ""


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock` (created if missing): two processes building the
    same environment at once (two runs, two test workers) would clobber each other's
    files, so the second waits, then finds the environment built."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env(spec: DriverSpec, *, root: Path | None = None, log: Path | None = None) -> str:
    """The Python interpreter that runs `spec`'s driver, building what it needs first.

    - A driver with `requirements` gets its own virtualenv, rebuilt only when its
      requirements file changed (a stamp inside the venv records what it holds).
    - An external driver whose install step has not run (`installed` missing) runs it in
      its folder (`npm ci` for the Node drivers); its commands then run under qbench.
    - Anything else runs in this interpreter.
    The failing step's output goes to `log`; PeerEnvError says which step failed.
    """
    ext = spec.external
    if ext is not None:
        ext.materialize()  # a read-only or installed folder: install into a cache copy
        if ext.needs_install():
            with _exclusive(ext.folder / ".qbench-install.lock"):
                _install_external(spec, log)
        return sys.executable
    wanted = requirements_text(spec)
    if wanted is None:
        return sys.executable
    venv = (root or venvs_root()) / str(spec.env_name)
    with _exclusive(venv.parent / f"{venv.name}.lock"):
        return _build_venv(spec, venv, wanted, log)


def _install_external(spec: DriverSpec, log: Path | None = None) -> None:
    ext = spec.external
    assert ext is not None
    if not ext.needs_install():  # another process installed it while this one waited
        return
    if _is_npm_ci(ext.install) and not any(
        (ext.folder / lock).is_file() for lock in ("package-lock.json", "npm-shrinkwrap.json")
    ):
        # npm's documented rule: `npm ci` installs exactly a lock file, and fails without one.
        raise PeerEnvError(
            f"{spec.name}: `{' '.join(ext.install)}` needs a package-lock.json in {ext.source_folder}: "
            "run `npm install` there once and commit the package-lock.json it writes"
        )
    _run(spec.name, ext.install, cwd=ext.folder, timeout_s=INSTALL_TIMEOUT_S, log=log)
    if ext.needs_install():
        raise PeerEnvError(f"{spec.name}: `{' '.join(ext.install)}` ran but {ext.installed} is still missing")


def _is_npm_ci(step: Sequence[str]) -> bool:
    return len(step) >= 2 and Path(step[0]).name == "npm" and step[1] in ("ci", "clean-install")


def _build_venv(spec: DriverSpec, venv: Path, wanted: str, log: Path | None) -> str:
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    requirements = spec.requirements
    assert requirements is not None
    _run(
        spec.name,
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        cwd=None,
        timeout_s=PIP_TIMEOUT_S,
        log=log,
    )
    _run(
        spec.name,
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        cwd=requirements.parent,
        timeout_s=PIP_TIMEOUT_S,
        log=log,
    )
    stamp.write_text(wanted)
    return str(python)


PUBLIC_MODULES = ("__init__.py", "driver.py", "external.py", "loader.py", "agent.py", "drivers")
"""What a driver's own environment sees of qbench: the public driver API, the agent and the
built-in drivers; nothing of the harness or the reference queue."""
OWN_VIEW = "own"
ISOLATED_VIEW = "isolated"


def import_root(extra: Sequence[Path] = ()) -> Path:
    """A directory of two import views for driver subprocesses' PYTHONPATH, each holding
    only links (see `python_path`):

    - `own/`: the whole `qbench` package this process runs, for drivers that run in
      qbench's own interpreter (the reference presets);
    - `isolated/`: a `qbench` folder holding only `PUBLIC_MODULES`, for drivers in a
      virtualenv of their own.

    Both also link `extra` (a third-party driver's top-level package or module). Pointing
    PYTHONPATH at the project's site-packages would put this environment's redis-py in
    front of the peer's own; the links expose our code alone, the very copies this process
    runs (so a run from a snapshot measures that snapshot).
    """
    root = Path(tempfile.mkdtemp(prefix="qbench-peers-path-"))
    # Only links: removed when this process exits (its driver subprocesses are gone by then).
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = Path(str(qbench.__file__)).resolve().parent
    own, isolated = root / OWN_VIEW, root / ISOLATED_VIEW
    own.mkdir()
    (isolated / package.name).mkdir(parents=True)
    _link(own, package)
    for name in PUBLIC_MODULES:
        _link(isolated / package.name, package / name)
    for view in (own, isolated):
        for target in extra:
            _link(view, target)
    return root


def python_path(root: Path, python: str) -> str:
    """The view of `root` that a driver run by `python` imports qbench from."""
    same = Path(python).absolute() == Path(sys.executable).absolute()
    return str(root / (OWN_VIEW if same else ISOLATED_VIEW))


def _link(folder: Path, target: Path) -> None:
    link = folder / target.name
    if not link.exists():
        link.symlink_to(target, target_is_directory=target.is_dir())
