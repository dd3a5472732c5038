"""The report notebook: its jupytext pair is in sync and it renders any results dir to HTML."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from qbench.harness.results.notebook import NOTEBOOK_SOURCE, NotebookError, render_notebook
from qbench.harness.results.rows import Row, params, write_metrics, write_run

REPO_ROOT = Path(__file__).resolve().parents[1]


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


VENV_BIN = Path(sys.executable).parent
COMMITTED_LOAD_RUNS = REPO_ROOT / "results" / "load"


NOTEBOOK_PAGE = REPO_ROOT / "docs" / "notebook.md"


def docs_notebook_commands() -> list[list[str]]:
    """The shell lines of the notebook's docs page."""
    section = NOTEBOOK_PAGE.read_text().split("# The report notebook", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.strip().splitlines()]


def test_docs_notebook_commands_are_installed_by_make() -> None:
    """Every `jupyter <sub>` docs/notebook.md tells users to run exists in the venv `make` builds."""
    commands = docs_notebook_commands()
    jupyter = [c for c in commands if Path(c[0]).name == "jupyter"]
    assert jupyter, commands
    for command in jupyter:
        assert (VENV_BIN / f"jupyter-{command[1]}").is_file(), f"{shlex.join(command)}: not installed"
    assert not re.search(r"^jupyter lab", NOTEBOOK_PAGE.read_text(), re.MULTILINE)


def execute_in(folder: Path) -> nbformat.NotebookNode:
    """Run the notebook as it stands (its own RESULTS_DIR) with the kernel started in `folder`."""
    from nbclient import NotebookClient

    notebook = jupytext.read(NOTEBOOK_SOURCE)
    NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(folder)}}
    ).execute()
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts += [str(v) for v in output.get("data", {}).values()] + [output.get("text", "")]
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_runs_from_the_notebooks_folder() -> None:
    """Jupyter starts the kernel in `notebooks/`: the default RESULTS_DIR must still be found."""
    text = outputs_text(execute_in(NOTEBOOK_SOURCE.parent))
    runs = len(list(COMMITTED_LOAD_RUNS.rglob("metrics.csv")))
    assert runs > 0
    assert f"from {runs} run(s) under `{COMMITTED_LOAD_RUNS}`" in text
    assert "round_trips_per_op" in text


@pytest.mark.slow
def test_notebook_outside_the_repository_says_to_give_an_absolute_path(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="no results/load at or above"):
        execute_in(tmp_path)


@pytest.mark.slow
def test_docs_nbconvert_command_works(tmp_path: Path) -> None:
    [command] = [c for c in docs_notebook_commands() if Path(c[0]).name == "jupyter"]
    assert command[1:] == [
        "nbconvert",
        "--execute",
        "--to",
        "html",
        "--output-dir",
        "/tmp/qbench",
        "qbench/notebooks/report.ipynb",
    ]
    argv = [str(VENV_BIN / "jupyter"), *command[1:-2], str(tmp_path), command[-1]]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    assert f"under <code>{COMMITTED_LOAD_RUNS}</code>" in html
    assert "round_trips_per_op" in html
