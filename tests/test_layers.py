"""The harness's layers hold with no exception: pyproject's layers contract ignores no import,
no driver may import the harness, and import-linter keeps every contract."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_lists_no_exception() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = [c for c in contracts if c["type"] == "layers" and c.get("containers") == ["qbench.harness"]]
    assert len(layers) == 1
    assert layers[0].get("ignore_imports", []) == []  # no upward import left to excuse


def test_no_driver_is_excused_an_import_of_the_harness() -> None:
    """The presets' driver counts round trips with the reference queue's counter
    (qbench.queue_impl.counting): the drivers package depends on no part of the harness."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    excused = [line for c in contracts for line in c.get("ignore_imports", []) if "qbench.harness" in line]
    assert excused == []


def test_import_linter_keeps_every_contract() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
