"""`qbench report DIR`: re-render a results folder's report and charts, without measuring.

Every kind of run is re-rendered the same way, by asking the registry of run kinds
(`qbench.harness.results.runs`): reproduce, load, peers, peers on a cluster, cluster
measure, chaos, observe, the timing gate, its calibration, history and flips.
`qbench peers --render DIR` and `qbench cluster measure --render DIR` are aliases.

A failed or interrupted run is re-rendered (its report keeps the status line at its top),
and the verb exits 1 with one line saying so: a script that checks the exit code never
takes a failed run's numbers for a result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qbench.harness.errors import EXIT_FAILED, UsageError
from qbench.harness.results.notebook import NotebookError, render_notebook
from qbench.harness.results.rows import METRICS_FILE, RUN_FILE, read_metrics, read_run
from qbench.harness.results.runs import NotARunError, kind_of, read_meta, refusal, render


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="re-render a results dir's report and charts (any kind of run; no measuring, no Redis)",
        description="Re-render a results dir's report (REPORT.md, PEERS.md, RELIABILITY.md, GATE.md, "
        "CALIBRATION.md, OBSERVE.md, HISTORY.md ...) and charts/ from the files the run kept "
        "(metrics.csv, run.json ...) alone, or run the report notebook on any results tree. "
        "Exits 1 when the run failed or was interrupted (its report says so at the top).",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="a results dir written by a qbench verb")
    parser.add_argument(
        "--notebook",
        action="store_true",
        help="execute the report notebook on DIR (any results tree) to DIR/report.html",
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
    return rerender(out_dir)


def rerender(out_dir: Path, *, expect: Sequence[str] = (), prefix: str = "") -> int:
    """Re-render the run in `out_dir` through the registry; the exit code of `qbench report`.

    `expect`: the kinds an alias accepts (`cluster measure --render` only a cluster run).
    """
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a directory")
    try:
        meta = read_meta(out_dir)
        kind = kind_of(out_dir, meta)
    except NotARunError as exc:
        raise UsageError(str(exc)) from None
    if kind is None:
        if not (out_dir / METRICS_FILE).is_file():
            raise UsageError(f"{out_dir}: no {METRICS_FILE} here (expected a qbench results dir)")
        raise UsageError(f"{out_dir}: not a run qbench recognises (its {RUN_FILE} names no kind)")
    if expect and kind.name not in expect:
        raise UsageError(f"{out_dir}: a {kind.name} run, not a {' or '.join(expect)} run")
    why = refusal(out_dir, meta)
    try:
        path = render(out_dir)
    except (NotARunError, FileNotFoundError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if why is not None:
            # A run that failed before writing its rows: its report (the status line and
            # "No results were written") stays; the run's status is the answer, not the rows.
            print(f"qbench: error: {why} (nothing to re-render: {message})", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(exc, NotARunError | FileNotFoundError):
            raise UsageError(message) from None
        if "failed to render" in message:
            print(out_dir / kind.report if kind.report else out_dir)
            print(f"qbench: error: {message}", file=sys.stderr)
            return EXIT_FAILED
        raise UsageError(message) from None
    print(f"{prefix}{path}")
    if why is not None:
        print(f"qbench: error: {why} (its report says so at the top)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def render_load_run(out_dir: Path) -> Path:
    """The registry's renderer of a `qbench load` run: its charts and REPORT.md."""
    from qbench.harness.load.report import write_load_report
    from qbench.harness.load.runner import render_charts

    rows = read_metrics(out_dir / METRICS_FILE)
    meta = read_run(out_dir)
    render_charts(rows, out_dir, f"{meta.get('scenario', '?')} · {meta.get('variant', '?')}")
    return Path(write_load_report(out_dir, rows, meta))
