"""Run-time settings of a Locust process whose users call a driver (`qbench load --driver`).

The driver travels in the run spec like a variant does (`RunSpec.driver`, in `QBENCH_RUN`,
forwarded by the master to its workers); each process installs these settings when its
test starts (`qbench.scenarios.reporting`). Kept apart from `qbench.scenarios.driver_users` so the
harness can name them without importing Locust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qbench.scenarios.settings import (
    ENV_RUN,
    ENV_WORKLOAD,
    DriverRun,
    RunSettingsError,
    RunSpec,
    redis_url_for,
)
from qbench.scenarios.workload import Workload


@dataclass(frozen=True, kw_only=True)
class DriverRunSettings:
    workload: Workload
    driver: DriverRun
    redis_url: str
    started_at: float

    @property
    def log(self) -> Path:
        return Path(self.driver.log or os.devnull)


_installed: DriverRunSettings | None = None


def driver_settings() -> DriverRunSettings:
    """This process's driver-run settings (installed when its test starts)."""
    if _installed is None:
        raise RuntimeError("run through `qbench load --driver` (no settings: the test has not started)")
    return _installed


def driver_installed() -> bool:
    """Whether this process has its driver-run settings (a worker that refused the run has none)."""
    return _installed is not None


def install(settings_: DriverRunSettings) -> DriverRunSettings:
    global _installed
    _installed = settings_
    return settings_


def resolve(spec: RunSpec, env: dict[str, str] | None = None) -> DriverRunSettings:
    """This process's settings for a driver run. Raises RunSettingsError for a spec without
    a driver, or for a `qbench load --worker` started by hand (its locustfile defined the
    reference queue's users, and the driver's environment is on the master's host only)."""
    env = dict(os.environ) if env is None else env
    if spec.driver is None:
        raise RunSettingsError("the master runs the reference queue, not a driver")
    if env.get(ENV_WORKLOAD) and not env.get(ENV_RUN):
        raise RunSettingsError(
            f"the master runs driver {spec.driver.name}: a driver run keeps its Locust workers on "
            "the master's host (qbench load --driver --workers N)"
        )
    return DriverRunSettings(
        workload=spec.workload,
        driver=spec.driver,
        redis_url=redis_url_for(spec, env),
        started_at=spec.started_at,
    )
