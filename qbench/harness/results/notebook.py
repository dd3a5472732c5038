"""Execute `notebooks/report.py` (the text half of a jupytext pair) headless on a results dir, to HTML."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

NOTEBOOK_SOURCE = Path(__file__).resolve().parents[2] / "notebooks" / "report.py"
HTML_FILE = "report.html"
PARAMETERS_TAG = "parameters"
CELL_TIMEOUT_S = 300


class NotebookError(RuntimeError):
    """The notebook could not run on this directory (one line)."""


def render_notebook(results_dir: Path, *, out: Path | None = None) -> Path:
    """Run the report notebook on `results_dir` and write `report.html` there (or to `out`)."""
    import jupytext
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    if not any(results_dir.rglob("metrics.csv")):
        raise NotebookError(f"{results_dir}: no metrics.csv in or under it (expected qbench results)")
    notebook = jupytext.read(NOTEBOOK_SOURCE)
    _inject_parameters(notebook, nbformat, results_dir=str(results_dir.resolve()))
    with tempfile.TemporaryDirectory(prefix="qbench-kernel-") as sockets:

        class IpcKernelManager(KernelManager):  # type: ignore[misc]
            """IPC sockets, not TCP: the kernel talks to no one but this process."""

            def __init__(self, **kwargs: object) -> None:
                super().__init__(transport="ipc", ip=str(Path(sockets) / "kernel"), **kwargs)

        # The client owns (and so shuts down) a kernel manager it creates itself.
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            kernel_manager_class=IpcKernelManager,
            timeout=CELL_TIMEOUT_S,
            # The notebook's own folder, as Jupyter runs it interactively.
            resources={"metadata": {"path": str(NOTEBOOK_SOURCE.parent)}},
        )
        try:
            client.execute()
        except CellExecutionError as exc:
            # Tracebacks come with terminal colours: keep the plain text of the last line.
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
            last = [line for line in plain.splitlines() if line.strip()]
            raise NotebookError(f"the report notebook failed: {last[-1] if last else exc}") from None
    exporter = HTMLExporter(exclude_input=True)  # type: ignore[no-untyped-call]
    exporter.log.setLevel(logging.ERROR)  # its accessibility hints are not our users' errors
    html, _ = exporter.from_notebook_node(notebook)
    path = out or results_dir / HTML_FILE
    path.write_text(html)
    return path


def _inject_parameters(notebook: object, nbformat: object, **values: str) -> None:
    """Add a cell after the `parameters` cell (papermill's convention) setting `values`."""
    cells = notebook.cells  # type: ignore[attr-defined]
    index = next(
        (i for i, cell in enumerate(cells) if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])), -1
    )
    if index < 0:
        raise NotebookError(f"{NOTEBOOK_SOURCE} has no cell tagged {PARAMETERS_TAG!r}")
    source = "\n".join(f"{name.upper()} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source)  # type: ignore[attr-defined]
    cell.metadata["tags"] = ["injected-parameters"]
    cells.insert(index + 1, cell)
