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


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()

    commit = git("rev-parse", "HEAD")
    # Only code counts: result files rewritten by this very batch of runs are outputs.
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"))
    return {"commit": commit or None, "dirty": dirty}


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
        "git": git_commit(),
        "server": dict(server),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "cpu": cpu_placement(),
        **(extra or {}),
    }


def write_run(path: Path, meta: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


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
