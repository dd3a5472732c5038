# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # qbench results
#
# Loads any qbench results directory (a `qbench reproduce` run, one `qbench load` run, or a
# tree of them such as `results/load/`) and renders every table and chart in it. It only
# reads `metrics.csv`, `run.json`, `telemetry.csv` and `charts/`: nothing is measured here.
#
# Run headless: `qbench report --notebook DIR` (writes `DIR/report.html`). A relative
# `RESULTS_DIR` is looked for in the kernel's working folder, then in each folder above it
# (Jupyter starts the kernel in the notebook's own folder).

# %% tags=["parameters"]
RESULTS_DIR = "results/load"

# %%
# ruff: noqa: E402 -- the parameters cell (papermill's convention) comes before the imports.
import json
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from qbench.harness.infra.telemetry import read_telemetry
from qbench.harness.results.telemetry_charts import (
    read_segments,
    render_telemetry_charts,
    segments_table,
    summary_markdown,
)

DETERMINISTIC_UNITS = {"count", "round_trips", "commands", "bytes", "jobs", "keys"}


def find_results(relative: Path) -> Path:
    """`relative` under the kernel's working directory or the nearest folder above it
    that holds it (Jupyter starts the kernel in the notebook's own folder)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / relative).is_dir():
            return folder / relative
    raise FileNotFoundError(f"no {relative} at or above {here}: give RESULTS_DIR as an absolute path")


root = Path(RESULTS_DIR).expanduser()
if not root.is_absolute():
    root = find_results(root)
sources = sorted(root.rglob("metrics.csv"))
if not sources:
    raise FileNotFoundError(f"no metrics.csv under {root}")
COLUMNS = ["experiment", "variant", "params", "metric", "value", "unit", "repeat"]
frames, skipped = [], []
for path in sources:
    # An empty variant (a row about the server, a codec, the proxy) stays "", not NaN,
    # so groupby keeps those rows.
    frame = pd.read_csv(path, dtype={"params": str, "variant": str})
    if list(frame.columns) != COLUMNS:
        skipped.append(path)  # some other tool's metrics.csv
        continue
    frame["run"] = str(path.parent.relative_to(root)) if path.parent != root else "."
    frames.append(frame)
if not frames:
    raise FileNotFoundError(f"no qbench metrics.csv under {root}")
sources = [p for p in sources if p not in skipped]
metrics = pd.concat(frames, ignore_index=True)
display(Markdown(f"**{len(metrics)} rows** from {len(sources)} run(s) under `{root}`"))
if skipped:
    display(Markdown("Skipped (not qbench metrics): " + ", ".join(f"`{p}`" for p in skipped)))

# %% [markdown]
# ## Runs

# %%
runs = []
for path in sources:
    run_file = path.parent / "run.json"
    meta = json.loads(run_file.read_text()) if run_file.is_file() else {}
    server = meta.get("server", {})
    runs.append(
        {
            "run": str(path.parent.relative_to(root)) if path.parent != root else ".",
            "created": meta.get("created_at"),
            "mode": meta.get("mode"),
            "variant": meta.get("variant", ""),
            "server": f"{server.get('version', '?')} ({server.get('allocator', '?')})",
            "commit": (meta.get("git", {}).get("commit") or "")[:10],
            "cpus": meta.get("cpu", {}).get("cpu_count"),
            "load avg before": meta.get("load_avg_before"),
        }
    )
display(pd.DataFrame(runs).set_index("run"))

# %% [markdown]
# ## Tables
#
# One table per experiment: the median over repeats, one column per variant. Counts (round
# trips, commands, bytes, jobs) are exact; timings are medians of repeats.

# %%
for experiment, part in metrics.groupby("experiment", sort=False):
    display(Markdown(f"### {experiment}"))
    table = (
        part.groupby(["run", "params", "metric", "unit", "variant"])["value"]
        .median()
        .unstack("variant")
        .sort_index()
    )
    display(table)

# %% [markdown]
# ## Deterministic counts that varied across repeats
#
# Every count should come out identical in every repeat; any row here needs a look.

# %%
counts = metrics[metrics["unit"].isin(DETERMINISTIC_UNITS)]
spread = counts.groupby(["run", "experiment", "variant", "params", "metric"])["value"].agg(["min", "max"])
varied = spread[spread["min"] != spread["max"]]
display(varied if len(varied) else Markdown("None: every count was identical in every repeat."))

# %% [markdown]
# ## What Redis did (telemetry)
#
# Every run sampled beside its measuring (`telemetry.csv`; peers and chaos runs keep one file
# per driver or case in `telemetry/`): the summary, and the charts drawn here from the rows
# alone. The sampler's own commands are left out of every figure.


# %%
def run_name(folder: Path) -> str:
    return str(folder.relative_to(root)) if folder != root else "."


drawn = Path(tempfile.mkdtemp(prefix="qbench-notebook-"))
telemetry_files = sorted(root.rglob("telemetry.csv"))
segment_dirs = sorted({path.parent for path in root.rglob("telemetry/*.csv")})
for path in telemetry_files:
    name = run_name(path.parent)
    telemetry = read_telemetry(path)
    display(Markdown(f"### {name}\n\n" + summary_markdown(telemetry)))
    for png in render_telemetry_charts(telemetry, drawn / name):
        display(Image(filename=str(drawn / name / png), alt=f"{name} {png}"))
for folder in segment_dirs:
    table = segments_table(read_segments(folder), label=folder.name + " file")
    display(Markdown(f"### {run_name(folder.parent)}: one file per segment\n\n" + table))
if not telemetry_files and not segment_dirs:
    display(Markdown("No telemetry in this directory (runs from before telemetry, or sampled with 0)."))

# %% [markdown]
# ## Charts
#
# The runs' own charts (the telemetry charts of single runs are drawn above).

# %%
charts = [path for path in sorted(root.rglob("charts/*.png")) if not path.stem.startswith("telemetry_")]
for chart in charts:
    display(Markdown(f"### {chart.relative_to(root)}"))
    display(Image(filename=str(chart), alt=f"chart {chart.stem}"))
if not charts:
    display(Markdown("No charts in this directory."))
