"""qbench's own external drivers: queues written in other languages (Node.js), each in a
folder of its own under `drivers/` at the root of the repository (`driver.toml`, the
producer and worker scripts, a committed lock file). The classes are made on first use,
so one missing folder does not hide the others."""

from __future__ import annotations

from pathlib import Path

from qbench.external import ExternalDriver, external_driver_class

DRIVERS_DIR = Path(__file__).resolve().parent
FOLDERS = {"BullMQDriver": "bullmq", "BeeQueueDriver": "bee-queue"}
"""Entry-point attribute -> folder under `drivers/`."""


def __getattr__(attr: str) -> type[ExternalDriver]:
    if attr not in FOLDERS:
        raise AttributeError(attr)
    return external_driver_class(DRIVERS_DIR / FOLDERS[attr] / "driver.toml")
