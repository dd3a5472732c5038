"""Run-time settings of a Locust process whose users call a driver (`qbench load --driver`).

Kept apart from `scenarios.driver_users` so the harness can name them without importing
Locust. The workload, samples folder and start time use the same variables as the
reference queue's users (`scenarios.settings`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from scenarios.settings import ENV_SAMPLES_DIR, ENV_STARTED_AT, ENV_WORKLOAD
from scenarios.workload import Workload, load_workload

ENV_DRIVER_REF = "QBENCH_LOAD_DRIVER_REF"
"""What the driver's agent loads (`module:Class`, `/path/file.py:Class`, `/path/driver.toml`)."""
ENV_DRIVER_PYTHON = "QBENCH_LOAD_DRIVER_PYTHON"
"""The interpreter of the driver's environment."""
ENV_DRIVER_PATH = "QBENCH_LOAD_DRIVER_PATH"
"""PYTHONPATH of the driver's agent (links to qbench, harness and the driver's package)."""
ENV_DRIVER_URL = "QBENCH_LOAD_DRIVER_URL"
"""The measured Redis."""
ENV_DRIVER_LOG = "QBENCH_LOAD_DRIVER_LOG"
"""File the agents' stderr is appended to."""
ENV_DRIVER_PRIORITIES = "QBENCH_LOAD_DRIVER_PRIORITIES"
"""`1` when the users send each job with a priority drawn from the workload's mix."""


@dataclass(frozen=True, kw_only=True)
class DriverRunSettings:
    workload: Workload
    ref: str
    python: str
    pythonpath: str
    redis_url: str
    log: Path
    priorities: bool
    samples_dir: Path | None
    started_at: float


def driver_mode() -> bool:
    """True in a Locust process started by `qbench load --driver`."""
    return bool(os.environ.get(ENV_DRIVER_REF))


@cache
def driver_settings() -> DriverRunSettings:
    """This process's settings (read once from the environment)."""
    required = (ENV_WORKLOAD, ENV_DRIVER_REF, ENV_DRIVER_PYTHON, ENV_DRIVER_URL, ENV_STARTED_AT)
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"run through `qbench load --driver` (missing {', '.join(missing)})")
    samples = os.environ.get(ENV_SAMPLES_DIR)
    return DriverRunSettings(
        workload=load_workload(os.environ[ENV_WORKLOAD]),
        ref=os.environ[ENV_DRIVER_REF],
        python=os.environ[ENV_DRIVER_PYTHON],
        pythonpath=os.environ.get(ENV_DRIVER_PATH, ""),
        redis_url=os.environ[ENV_DRIVER_URL],
        log=Path(os.environ.get(ENV_DRIVER_LOG) or os.devnull),
        priorities=os.environ.get(ENV_DRIVER_PRIORITIES) == "1",
        samples_dir=Path(samples) if samples else None,
        started_at=float(os.environ[ENV_STARTED_AT]),
    )
