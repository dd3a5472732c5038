"""`qbench report DIR`: re-render REPORT.md and charts/ from a results dir, without measuring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbench.harness.errors import UsageError
from qbench.harness.load.report import write_load_report
from qbench.harness.load.runner import render_charts
from qbench.harness.results.notebook import NotebookError, render_notebook
from qbench.harness.results.report import render_results
from qbench.harness.results.rows import METRICS_FILE, read_metrics, read_run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="re-render REPORT.md and charts from a results dir (no measuring, no Redis)",
        description="Re-render a results dir's REPORT.md and charts/ from its metrics.csv and run.json "
        "alone, or run the report notebook on any results tree.",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="a results dir holding metrics.csv")
    parser.add_argument(
        "--notebook",
        action="store_true",
        help="execute notebooks/report.py on DIR (any results tree) to DIR/report.html",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out_dir: Path = args.dir
    if args.notebook:
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir}: not a directory")
        try:
            print(render_notebook(out_dir))
        except NotebookError as exc:
            raise UsageError(str(exc)) from None
        return 0
    if not (out_dir / METRICS_FILE).is_file():
        raise UsageError(f"{out_dir}: no {METRICS_FILE} here (expected a qbench results dir)")
    try:
        meta = read_run(out_dir)
        rows = read_metrics(out_dir / METRICS_FILE)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if meta.get("mode") == "load":  # a `qbench load` run: its charts and REPORT.md
        render_charts(rows, out_dir, f"{meta.get('scenario', '?')} · {meta.get('variant', '?')}")
        print(write_load_report(out_dir, rows, meta))
        return 0
    path = render_results(out_dir, rows=rows, meta=meta)
    print(path)
    failed = "render_errors" in meta
    if failed:
        print(
            f"qbench: error: some sections failed to render: {', '.join(meta['render_errors'])}",
            file=sys.stderr,
        )
    return 1 if failed else 0
