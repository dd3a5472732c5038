"""Run-time settings of a Locust process, passed by `qbench load` in `QBENCH_*` variables.

Kept apart from `scenarios.users` so the harness can name them without importing
Locust (whose gevent monkey-patching must stay out of the harness process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from queue_impl.config import Variant, parse_variant
from scenarios.workload import Workload, load_workload

ENV_WORKLOAD = "QBENCH_WORKLOAD"
ENV_VARIANT = "QBENCH_VARIANT"
ENV_REDIS_URL = "QBENCH_REDIS_URL"
ENV_NAMESPACE = "QBENCH_NAMESPACE"
ENV_SAMPLES_DIR = "QBENCH_SAMPLES_DIR"
ENV_STARTED_AT = "QBENCH_STARTED_AT"
"""Wall-clock seconds when `qbench load` started Locust: the origin of per-second counts."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    workload: Workload
    variant: Variant
    redis_url: str
    namespace: str
    samples_dir: Path | None
    started_at: float


@cache
def settings() -> RunSettings:
    """This process's run settings (read once from the environment)."""
    required = (ENV_WORKLOAD, ENV_VARIANT, ENV_REDIS_URL, ENV_NAMESPACE, ENV_STARTED_AT)
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"run through `qbench load` (missing {', '.join(missing)})")
    samples = os.environ.get(ENV_SAMPLES_DIR)
    return RunSettings(
        workload=load_workload(os.environ[ENV_WORKLOAD]),
        variant=parse_variant(os.environ[ENV_VARIANT]),
        redis_url=os.environ[ENV_REDIS_URL],
        namespace=os.environ[ENV_NAMESPACE],
        samples_dir=Path(samples) if samples else None,
        started_at=float(os.environ[ENV_STARTED_AT]),
    )
