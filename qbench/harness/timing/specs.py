"""The two sides of a driver gate: what a SPEC names, and the environment built for it.

A SPEC (`qbench gate run --driver X --base SPEC --head SPEC`) is one of:
- a requirement line (`rq==2.6.1`): the driver's own requirements with that library's line
  replaced (or added);
- a path to a checkout of the user's queue: pip-installed (not editable) into a fresh
  virtualenv, after the driver's requirements if it has any;
- a git ref of the repository qbench runs in (`main`, `HEAD~1`, a commit): checked out into
  a temporary worktree (removed afterwards), then installed as a path is.

Each side gets a virtualenv of its own, cached by content (like `peers/envs.py`): the
requirements text, the checkout's content (its git tree, or a digest of its files) and the
Python version name the folder, so an unchanged side is never rebuilt and two sides of the
same content share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SpecKind = Literal["requirement", "path", "git"]
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(===|==|>=|<=|~=|!=|<|>|@)")
"""A requirement line with a version (or `name @ url`): `rq==2.6.1`, `redis>=5`."""
PIP_TIMEOUT_S = 900
STAMP = "qbench-gate-side.json"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "build",
    "dist",
    "node_modules",
    ".tox",
    ".mypy_cache",
}


def default_root() -> Path:
    """QBENCH_PEERS_VENVS/gate, else `peers/gate/` inside the running virtualenv (as the
    peers' environments, already git-ignored)."""
    explicit = os.environ.get("QBENCH_PEERS_VENVS")
    return (Path(explicit) if explicit else Path(sys.prefix) / "peers") / "gate"


def failure_reason(output: str) -> str:
    """The last non-empty line of a failed step's output (pip and git end with the reason)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


class SpecError(ValueError):
    """A SPEC that names nothing usable, or a side whose environment could not be built (one line)."""


@dataclass(frozen=True)
class SideSpec:
    """One side as given on the command line, and what it was understood as."""

    text: str
    kind: SpecKind
    requirement: str | None = None
    """The requirement line (kind `requirement`)."""
    path: Path | None = None
    """The checkout (kind `path`)."""
    ref: str | None = None
    """The git ref (kind `git`), and `commit` it resolved to."""
    commit: str | None = None
    repo: Path | None = None

    def describe(self) -> str:
        if self.kind == "requirement":
            return f"`{self.requirement}`"
        if self.kind == "git":
            return f"git `{self.ref}` ({(self.commit or '?')[:10]})"
        return f"checkout {self.path}"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _git(repo: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )


def parse_spec(text: str, *, repo: Path) -> SideSpec:
    """What `text` names: a directory, else a requirement line, else a git ref of `repo`
    (the repository qbench runs in). SpecError (one line) when it is none of them."""
    stripped = text.strip()
    if not stripped:
        raise SpecError("an empty SPEC: give a requirement line (rq==2.6.1), a checkout path or a git ref")
    path = Path(stripped).expanduser()
    if path.is_dir():
        return SideSpec(text, "path", path=path.resolve())
    if REQUIREMENT.match(stripped):
        return SideSpec(text, "requirement", requirement=stripped)
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{stripped}^{{commit}}")
    if done.returncode == 0 and done.stdout.strip():
        return SideSpec(text, "git", ref=stripped, commit=done.stdout.strip(), repo=repo)
    raise SpecError(
        f"{stripped!r} is not a directory, a requirement line (like rq==2.6.1) or a git ref of {repo}"
    )


@contextlib.contextmanager
def materialized(spec: SideSpec, label: str) -> Iterator[Path | None]:
    """The checkout a side installs (None for a requirement line). A git ref is checked out
    into a temporary worktree of its repository, removed (with its folder) on exit."""
    if spec.kind == "requirement":
        yield None
        return
    if spec.kind == "path":
        yield spec.path
        return
    assert spec.repo is not None and spec.commit is not None
    folder = Path(tempfile.mkdtemp(prefix=f"qbench-gate-{label}-"))
    tree = folder / "tree"
    done = _git(spec.repo, "worktree", "add", "--detach", str(tree), spec.commit)
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise SpecError(f"{label}: git worktree add {spec.ref} failed: {failure_reason(done.stderr)}")
    try:
        yield tree
    finally:
        _git(spec.repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)
        _git(spec.repo, "worktree", "prune")


def content_digest(checkout: Path) -> str:
    """What a checkout holds: its git tree when it is a clean git work tree, else a digest
    of every file's path and bytes (build outputs and virtualenvs left out)."""
    status = _git(checkout, "status", "--porcelain")
    top = _git(checkout, "rev-parse", "--show-toplevel")
    if (
        status.returncode == 0
        and not status.stdout.strip()
        and Path(top.stdout.strip()) == checkout.resolve()
    ):
        tree = _git(checkout, "rev-parse", "HEAD^{tree}")
        if tree.returncode == 0:
            return "git-tree:" + tree.stdout.strip()
    digest = hashlib.sha256()
    for file in sorted(_files(checkout)):
        digest.update(str(file.relative_to(checkout)).encode() + b"\0")
        digest.update(file.read_bytes())
    return "files:" + digest.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if entry.name in SKIPPED_DIRS or entry.name.endswith(".egg-info"):
                continue
            yield from _files(entry)
        elif entry.is_file():
            yield entry


def requirement_lines(base: str | None, replacement: str | None) -> list[str]:
    """The driver's requirements (`base`, a requirements file's text) with the line of
    `replacement`'s library replaced by it, or `replacement` added."""
    lines = [line.rstrip() for line in (base or "").splitlines() if line.strip()]
    if replacement is None:
        return lines
    match = REQUIREMENT.match(replacement)
    assert match is not None
    wanted = normalized(match.group(1))
    kept = []
    for line in lines:
        other = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if other and not line.lstrip().startswith("#") and normalized(other.group(1)) == wanted:
            continue
        kept.append(line)
    return [*kept, replacement]


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class SideEnv:
    python: str
    key: str
    requirements: list[str]
    checkout_digest: str | None
    reused: bool


def ensure_side_env(
    spec: SideSpec,
    *,
    label: str,
    checkout: Path | None,
    driver_requirements: str | None,
    root: Path | None = None,
    log: Path | None = None,
) -> SideEnv:
    """The Python of a virtualenv holding this side: the driver's requirements (the SPEC's
    library line replacing its own), then the checkout pip-installed. Cached by content
    under `root` (default: `gate/` beside the peers' virtualenvs); SpecError on failure."""
    lines = requirement_lines(driver_requirements, spec.requirement)
    digest = content_digest(checkout) if checkout is not None else None
    identity = {"requirements": lines, "checkout": digest, "python": sys.version}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    venv = (root or default_root()) / key
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    with _exclusive(venv.parent / f"{key}.lock"):
        if python.exists() and stamp.is_file():
            return SideEnv(str(python), key, lines, digest, True)
        _step(label, [sys.executable, "-m", "venv", "--clear", str(venv)], log)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if lines:
            req = venv / "qbench-gate-requirements.txt"
            req.write_text("\n".join(lines) + "\n")
            _step(label, [*pip, "-r", str(req)], log)
        if checkout is not None:
            # Not editable: a git ref's worktree is removed after the run, the venv stays.
            _step(label, [*pip, str(checkout)], log)
        stamp.write_text(json.dumps(identity, sort_keys=True) + "\n")
    return SideEnv(str(python), key, lines, digest, False)


def _step(label: str, argv: list[str], log: Path | None) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SpecError(f"{label}: `{' '.join(argv[-3:])}` timed out after {PIP_TIMEOUT_S}s") from None
    if done.returncode != 0:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as fh:
                fh.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
        reason = failure_reason(done.stderr or done.stdout) or f"exit {done.returncode}"
        raise SpecError(f"{label}: building its environment failed: {reason}")


ENTRY_POINT_LOOKUP = (
    "import sys, importlib.metadata as m\n"
    "found = [ep.value for ep in m.entry_points(group='qbench.drivers') if ep.name == sys.argv[1]]\n"
    "print(found[0] if found else '')\n"
)


def entry_point_in(python: str, name: str) -> str | None:
    """The `module:Class` the `qbench.drivers` entry point `name` names in the environment
    of `python` (the side's own install of the user's queue), or None."""
    done = subprocess.run(
        [python, "-c", ENTRY_POINT_LOOKUP, name], capture_output=True, text=True, timeout=60, check=False
    )
    value = done.stdout.strip()
    return value or None
