"""The experiments of `qbench reproduce`: one module each, measure → tidy rows → render.

Each module in `EXPERIMENTS` defines:
    NAME: str                                   the `experiment` column value
    TITLE: str                                  report section title
    def run(ctx: RunContext) -> list[Row]       measures; never renders
    def render(rows: list[Row], charts_dir: Path) -> Section
                                                reads rows only (re-runnable without measuring)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from qbench.harness.infra.redis_server import ServerInfo

EXPERIMENTS = (
    "qbench.harness.experiments.round_trips",
    "qbench.harness.experiments.idle_cost",
    "qbench.harness.experiments.pickup_latency",
    "qbench.harness.experiments.pickup_hops",
    "qbench.harness.experiments.pool_scaling",
    "qbench.harness.experiments.memory",
    "qbench.harness.experiments.key_building",
    "qbench.harness.experiments.codec",
    "qbench.harness.experiments.throughput",
    "qbench.harness.experiments.skipped",
)


@dataclass
class RunContext:
    url: str
    server: ServerInfo
    quick: bool
    repeats: int
    out_dir: Path
    progress: Callable[[str], None] = print
    options: dict[str, object] = field(default_factory=dict)


@dataclass
class Section:
    """One report section: the seed's claim table reproduced beside what was measured."""

    title: str
    markdown: str
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)
    """(claim, verdict: holds | partly | does not hold, why) — also listed in the summary."""
    charts: list[str] = field(default_factory=list)
    """Chart file names (relative to charts/)."""


def load_experiments(names: tuple[str, ...] = EXPERIMENTS) -> list[ModuleType]:
    """The experiment modules, in report order. A module that fails to import raises:
    a run never silently leaves an experiment out."""
    return [importlib.import_module(name) for name in names]
