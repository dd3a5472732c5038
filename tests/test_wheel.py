"""qbench as a user gets it: the wheel, installed into a fresh virtualenv outside the
checkout, every verb's quick path run from an empty folder. Each must exit 0 and write
into that folder, never into site-packages.

The matrix (verb, command, exit code, seconds) is printed (`pytest -s`) and written to
the test's tmp folder as matrix.tsv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_NOT_COPIED = {".git", ".venv", "build", "dist", "results", "site"}
"""Checkout-only folders: the wheel is built without them (qbench/harness/results stays)."""
ANYWHERE_NOT_COPIED = shutil.ignore_patterns(
    "node_modules", "*.egg-info", "__pycache__", ".qbench-install.lock"
)
INSTALL_TIMEOUT_S = 600
VERB_TIMEOUT_S = 300


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the tree (setuptools' build/ in the checkout could
    hold modules deleted since: the copy has none)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(ANYWHERE_NOT_COPIED(folder, names))
        return skipped | (TOP_LEVEL_NOT_COPIED & set(names)) if Path(folder) == ROOT else skipped

    shutil.copytree(ROOT, source, ignore=ignore)
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(base / "dist"),
            ".",
        ],
        cwd=source,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr
    (found,) = (base / "dist").glob("qbench-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its runtime dependencies (no dev extra)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    made = _run([sys.executable, "-m", "venv", str(env_dir)], timeout=120)
    assert made.returncode == 0, made.stderr
    installed = _run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        timeout=INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def test_the_wheel_holds_one_import_name_and_the_package_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"qbench", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in (
        "qbench/drivers/bullmq/driver.toml",
        "qbench/drivers/bullmq/package-lock.json",
        "qbench/drivers/bullmq/worker.mjs",
        "qbench/drivers/bee-queue/driver.toml",
        "qbench/drivers/bee-queue/package-lock.json",
        "qbench/drivers/requirements/huey.txt",
        "qbench/scenarios/workloads/producer.toml",
        "qbench/notebooks/report.ipynb",
        "qbench/queue_impl/proto/job.proto",
    ):
        assert needed in names


def _site_packages(env_dir: Path) -> Path:
    (found,) = (env_dir / "lib").glob("python3*/site-packages")
    return found


def _listing(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def empty_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("user-project")


def _verbs(redis_url: str) -> list[tuple[str, list[str]]]:
    return [
        ("--version", ["--version"]),
        ("drivers", ["drivers"]),
        ("ops", ["ops", "--out", "ops"]),
        (
            "reproduce",
            ["reproduce", "--quick", "--only", "round_trips", "--repeats", "1", "--out", "reproduce"],
        ),
        ("load", ["load", "producer", "--variant", "scripted", "--duration", "2", "--out", "load"]),
        ("peers huey", ["peers", "--quick", "--only", "huey", "--jobs", "200", "--out", "peers-huey"]),
        ("peers bullmq", ["peers", "--quick", "--only", "bullmq", "--jobs", "200", "--out", "peers-bullmq"]),
        ("report", ["report", "load"]),
        ("report --notebook", ["report", "--notebook", "load"]),
        ("chaos", ["chaos", "--quick", "--only", "worker_kill", "--presets", "scripted", "--out", "chaos"]),
        (
            "observe",
            ["observe", "--redis-url", redis_url, "--duration", "2", "--interval", "1", "--out", "observe"],
        ),
        ("gate", ["gate", "--baseline", "ops", "--candidate", "ops", "--timings", "off"]),
        ("history", ["history", "add", "reproduce", "--file", "history.csv", "--commit", "myqueue-1.0"]),
        ("site", ["site", "--results", ".", "--out", "site"]),
        ("cluster", ["cluster", "up", "--detach", "--state-file", "cluster.json"]),
        ("cluster down", ["cluster", "down", "--state-file", "cluster.json"]),
        (
            "profile",
            [
                *("profile", "producer", "--variant", "scripted", "--users", "2", "--duration", "2"),
                *("--tool", "py-spy", "--concurrency", "2", "--no-charts", "--out", "profile"),
            ],
        ),
    ]


@pytest.fixture(scope="module")
def matrix(
    venv: Path, empty_folder: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[list[str], int, float, str]]]:
    qbench = str(venv / "bin" / "qbench")
    site = _site_packages(venv)
    before = _listing(site)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        QBENCH_NO_DOCKER="1",
        QBENCH_DRIVER_CACHE=str(tmp_path_factory.mktemp("driver-cache")),
    )
    rows: dict[str, tuple[list[str], int, float, str]] = {}
    for name, args in _verbs(redis_url):
        if name == "peers bullmq" and shutil.which("npm") is None:
            continue
        started = time.monotonic()
        done = _run(
            [qbench, *args], cwd=empty_folder, env=env, timeout=VERB_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
        last = (done.stderr.strip().splitlines() or [""])[-1]
        rows[name] = (args, done.returncode, time.monotonic() - started, last)
    table = "\n".join(
        f"{n}\tqbench {' '.join(a)}\t{code}\t{s:.1f}\t{last}" for n, (a, code, s, last) in rows.items()
    )
    (empty_folder.parent / "matrix.tsv").write_text(table + "\n")
    print("\n" + table)
    rows["__site_packages_new__"] = (sorted(_listing(site) - before), 0, 0.0, "")  # type: ignore[assignment]
    yield rows


@pytest.mark.parametrize("verb", [name for name, _ in _verbs("redis://x")])
def test_every_verb_runs_from_an_empty_folder(
    matrix: dict[str, tuple[list[str], int, float, str]], verb: str
) -> None:
    if verb not in matrix:
        pytest.skip("npm is not installed: BullMQ cannot be installed")
    _args, code, _seconds, last = matrix[verb]
    assert code == 0, last


def test_nothing_is_written_into_site_packages(matrix: dict[str, tuple[list[str], int, float, str]]) -> None:
    assert matrix["__site_packages_new__"][0] == []


def test_the_verbs_wrote_into_the_empty_folder(
    matrix: dict[str, tuple[list[str], int, float, str]], empty_folder: Path
) -> None:
    for written in ("ops", "reproduce", "load", "peers-huey", "chaos", "observe", "site"):
        assert (empty_folder / written).is_dir(), written
