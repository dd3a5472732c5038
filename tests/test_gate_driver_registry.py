"""The results registry tells a driver gate (and a driver calibration) from the reference
gate by run.json's mode, so `qbench report DIR` re-renders each with its own renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbench.harness.results.runs import kind_of, render
from qbench.harness.verbs.gate_driver import achieved, score, size_handicaps, write_calibration


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


def _gate(kind: str, ratios: dict[str, float]) -> dict[str, object]:
    return {
        "kind": kind,
        "seconds": 10.0,
        "rounds": 12,
        "handicaps": {},
        "measures": {name: [r, r - 0.02, r + 0.02] for name, r in ratios.items()},
    }


def test_qbench_report_reproduces_a_driver_calibrations_markdown(tmp_path: Path) -> None:
    # calibration.json stores its keys sorted: the re-rendered tables came out in another order
    aa = {"enqueue_cpu": 1.0, "worker_cpu": 1.0, "process_rate": 1.0, "pickup_p50": 1.0, "pickup_p99": 1.0}
    results = {
        "aa": [_gate("aa", aa)],
        "enqueue": [_gate("enqueue", {**aa, "enqueue_cpu": 1.1})],
        "job": [_gate("job", {**aa, "worker_cpu": 1.1, "process_rate": 1.1})],
        "pickup": [_gate("pickup", {**aa, "pickup_p50": 2.0, "pickup_p99": 1.8})],
    }
    costs = {"enqueue_cpu_ns_per_job": 50_000.0, "worker_cpu_ns_per_job": 80_000.0, "pickup_p50_ns": 6e5}
    handicaps = size_handicaps(costs, 0.10)
    doc = score(results, runs=1)
    doc.update(
        driver="d",
        spec="x",
        regression=0.1,
        unhandicapped=costs,
        handicaps=handicaps,
        quick=True,
        injections=achieved(results, costs, handicaps),
    )
    written = write_calibration(tmp_path, doc)
    (tmp_path / "run.json").write_text(
        json.dumps({"kind": "calibration", "mode": "calibration-driver", "status": "ok"})
    )
    (tmp_path / "CALIBRATION.md").unlink()
    assert render(tmp_path) == tmp_path / "CALIBRATION.md"
    assert (tmp_path / "CALIBRATION.md").read_text() == written
    assert doc["measures"]["enqueue_cpu"]["recommended_tolerance"] == 0.005  # the smallest meeting both
    assert handicaps["enqueue"] == {"QBENCH_HANDICAP_ENQUEUE_US": "5.000"}
