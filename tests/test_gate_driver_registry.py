"""The results registry tells a driver gate (and a driver calibration) from the reference
gate by run.json's mode, so `qbench report DIR` re-renders each with its own renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbench.harness.results.runs import kind_of


@pytest.mark.parametrize(
    ("kind", "mode", "renderer"),
    [
        ("gate", "gate-driver", "qbench.harness.experiments.driver_gate:render_saved"),
        ("gate", "gate-driver-quick", "qbench.harness.experiments.driver_gate:render_saved"),
        ("gate", "gate", "qbench.harness.timing.gate_run:render_saved"),
        ("gate", "gate-quick", "qbench.harness.timing.gate_run:render_saved"),
        ("calibration", "calibration-driver", "qbench.harness.verbs.gate_driver:render_saved_calibration"),
        ("calibration", "calibration", "qbench.harness.timing.calibrate:render_saved"),
    ],
)
def test_a_gate_folder_is_rendered_by_the_renderer_of_its_mode(
    tmp_path: Path, kind: str, mode: str, renderer: str
) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"kind": kind, "mode": mode, "status": "ok"}))
    found = kind_of(tmp_path)
    assert found is not None and found.renderer == renderer
