"""Tidy results: one row per measured number, written as `metrics.csv` + `run.json`.

Layout of a results directory (an interface: users' scripts and `qbench gate` parse it):
    metrics.csv   experiment,variant,params,metric,value,unit,repeat
    run.json      server, Python and package versions, git commit, CPU count, mode, timings
    charts/       PNG and SVG, rendered from metrics.csv only
    REPORT.md     the seed's tables beside the measured figures, with verdicts
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.csv"
RUN_FILE = "run.json"
COLUMNS = ("experiment", "variant", "params", "metric", "value", "unit", "repeat")
DETERMINISTIC_UNITS = frozenset({"count", "round_trips", "commands", "bytes", "jobs", "keys"})
"""Units of counts that must come out identical in every repeat (and that `gate` holds exact)."""

PACKAGES = ("redis", "hiredis", "protobuf", "locust", "pytest-benchmark", "pandas", "matplotlib")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured number. `params` is `k=v;k=v` (sorted), e.g. `batch=100;delay_ms=1`.

    `variant` holds a variant label that `qbench.queue_impl.config.parse_variant` accepts (`scripted`,
    `baseline+codec=json`), a peers driver name, or nothing when the row measures no queue
    variant (a codec or key builder on its own, the server, the delay proxy); any other
    label goes in `params` (`codec=json`, `keys=precomputed`, `subject=proxy`, `ttl=on`).
    """

    experiment: str
    variant: str
    params: str
    metric: str
    value: float
    unit: str
    repeat: int = 0

    def as_csv(self) -> list[str]:
        value = (
            repr(self.value)
            if isinstance(self.value, float) and not self.value.is_integer()
            else str(int(self.value) if float(self.value).is_integer() else self.value)
        )
        return [self.experiment, self.variant, self.params, self.metric, value, self.unit, str(self.repeat)]


def params(**values: object) -> str:
    """Canonical `params` cell: keys sorted, `k=v` joined by `;`."""
    return ";".join(f"{k}={values[k]}" for k in sorted(values))


def parse_params(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(";") if item)


def write_metrics(path: Path, rows: Iterable[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row.as_csv())


def read_metrics(path: Path) -> list[Row]:
    """Rows of a `metrics.csv`; raises ValueError (one line) if it is not one."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
            raise ValueError(f"{path}: not a qbench metrics.csv (columns {reader.fieldnames})")
        try:
            return [
                Row(
                    r["experiment"],
                    r["variant"],
                    r["params"],
                    r["metric"],
                    float(r["value"]),
                    r["unit"],
                    int(r["repeat"]),
                )
                for r in reader
            ]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad row ({exc})") from None


def qbench_version() -> str | None:
    """The installed qbench distribution's version (None when qbench is not installed)."""
    try:
        return metadata.version("qbench")
    except metadata.PackageNotFoundError:
        return None


def _package_root() -> Path:
    import qbench

    return Path(qbench.__file__).resolve().parent


def code_source(package_dir: Path | None = None) -> dict[str, Any]:
    """Where the qbench code that runs comes from, never the working directory's repository.

    `{"commit", "dirty", "source": "checkout", "root"}` when the imported `qbench` package is
    a tracked file of a git checkout (an editable install); else `{"commit": None,
    "dirty": None, "source": "installed"}` (a wheel, even one installed inside some other
    repository's virtualenv). `package_dir` (the `qbench` package folder) is for tests.
    """
    package = (package_dir or _package_root()).resolve()

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, check=False, timeout=10
        )

    try:
        tracked = git("ls-files", "--error-unmatch", "--", "__init__.py")
        if tracked.returncode == 0:
            top = git("rev-parse", "--show-toplevel").stdout.strip()
            commit = git("rev-parse", "HEAD").stdout.strip()
            if top and commit:
                # Only code counts: result files rewritten by this very batch of runs are outputs.
                status = subprocess.run(
                    [
                        "git",
                        "-C",
                        top,
                        "status",
                        "--porcelain",
                        "--untracked-files=no",
                        "--",
                        ".",
                        ":(exclude)results",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=10,
                ).stdout.strip()
                return {"commit": commit, "dirty": bool(status), "source": "checkout", "root": top}
    except (OSError, subprocess.SubprocessError):
        pass  # no git on this machine: the code is described by its installed version alone
    return {"commit": None, "dirty": None, "source": "installed"}


def git_commit() -> dict[str, Any]:
    """The commit of the qbench code that runs (see `code_source`), for run.json's `git`."""
    return code_source()


def source_text(meta: Mapping[str, Any]) -> str:
    """The code a run came from, for a report: `commit abc1234def56 (dirty)` or
    `qbench 0.1.0 (installed)`; never `None`."""
    found = meta.get("git")
    git: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    commit = git.get("commit")
    if commit:
        return f"commit {str(commit)[:12]}" + (" (dirty)" if git.get("dirty") else "")
    version = meta.get("qbench_version")
    return f"qbench {version} (installed)" if version else "qbench (installed; version unknown)"


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_placement() -> dict[str, Any]:
    """CPU count and this process's affinity (round-trip time depends on placement)."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def run_metadata(
    *, server: Mapping[str, Any], mode: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": mode,
        "git": code_source(),
        "qbench_version": qbench_version(),
        "server": dict(server),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "cpu": cpu_placement(),
        **(extra or {}),
    }


def write_run(path: Path, meta: Mapping[str, Any]) -> None:
    """Write a run.json atomically (an interrupted write never leaves half a file).

    The file layer only: a verb writes its run through `qbench.harness.results.runs.start_run`,
    which adds the run's kind, status and source and clears the folder of an earlier run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(partial, path)


def read_run(out_dir: Path) -> dict[str, Any]:
    """`run.json` of a results dir ({} when absent); ValueError if it is not JSON."""
    path = out_dir / RUN_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
