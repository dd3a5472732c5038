"""The report notebook: its jupytext pair is in sync and it renders any results dir to HTML."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest

from harness.results.notebook import NOTEBOOK_SOURCE, NotebookError, render_notebook
from harness.results.rows import Row, params, write_metrics, write_run


def test_notebook_pair_is_in_sync() -> None:
    text = jupytext.read(NOTEBOOK_SOURCE)
    paired = json.loads(NOTEBOOK_SOURCE.with_suffix(".ipynb").read_text())
    assert [c.source for c in text.cells] == ["".join(c["source"]) for c in paired["cells"]]
    assert all(not c.get("outputs") for c in paired["cells"] if c["cell_type"] == "code")


@pytest.mark.slow
def test_notebook_renders_tables_and_charts_of_a_results_tree(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for variant, trips in (("baseline", 200), ("optimized", 1)):
        run_dir = tmp_path / "load" / variant
        rows = [Row("load", variant, params(op="enqueue_many"), "round_trips_per_op", trips, "round_trips")]
        write_metrics(run_dir / "metrics.csv", rows)
        write_run(run_dir / "run.json", {"mode": "load", "variant": variant})
        (run_dir / "charts").mkdir()
        fig, ax = plt.subplots()
        ax.bar([variant], [trips])
        fig.savefig(run_dir / "charts" / "round_trips.png")
        plt.close(fig)

    html = render_notebook(tmp_path).read_text()

    assert html.count("<img") == 2
    assert "load/optimized/charts/round_trips.png" in html
    assert "round_trips_per_op" in html and ">200.0<" in html
    assert "every count was identical" in html


def test_a_dir_without_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match=r"no metrics\.csv"):
        render_notebook(tmp_path)
