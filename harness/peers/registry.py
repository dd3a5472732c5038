"""Which drivers exist, in report order, and which virtualenv each runs in (stdlib only)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from harness.peers.base import Driver


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """Where a driver lives and what it needs installed."""

    name: str
    module: str
    attr: str
    requirements: str | None
    """Requirements file (under harness/peers/requirements/) of its own virtualenv;
    None: the reference queue, which runs in the project's own environment."""

    @property
    def env_name(self) -> str | None:
        """Name of its virtualenv: one per requirements file, shared by a library's configurations."""
        return None if self.requirements is None else self.requirements.removesuffix(".txt")

    def load(self) -> type[Driver]:
        cls: type[Driver] = getattr(importlib.import_module(self.module), self.attr)
        return cls


def _peer(name: str, module: str, attr: str) -> DriverSpec:
    return DriverSpec(name, f"harness.peers.{module}", attr, f"{name}.txt")


DRIVERS: dict[str, DriverSpec] = {
    spec.name: spec
    for spec in (
        DriverSpec("baseline", "harness.peers.reference_driver", "BaselineDriver", None),
        DriverSpec("optimized", "harness.peers.reference_driver", "OptimizedDriver", None),
        DriverSpec("scripted", "harness.peers.reference_driver", "ScriptedDriver", None),
        _peer("rq", "rq_driver", "RQDriver"),
        _peer("arq", "arq_driver", "ArqDriver"),
        _peer("saq", "saq_driver", "SaqDriver"),
        _peer("dramatiq", "dramatiq_driver", "DramatiqDriver"),
        _peer("huey", "huey_driver", "HueyDriver"),
        _peer("celery", "celery_driver", "CeleryDriver"),
        _peer("taskiq", "taskiq_driver", "TaskiqDriver"),
        # Labelled configurations: a library's own option changed from its default.
        DriverSpec(
            "taskiq+result_ex_time=3600",
            "harness.peers.taskiq_driver",
            "TaskiqResultExpiryDriver",
            "taskiq.txt",
        ),
    )
}
REFERENCE_NAMES = ("baseline", "optimized", "scripted")
PEER_NAMES = tuple(name for name in DRIVERS if name not in REFERENCE_NAMES and "+" not in name)
"""The seven libraries with their defaults (labelled configurations excluded)."""
