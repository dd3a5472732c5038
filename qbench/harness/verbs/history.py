"""`qbench history add RUN_DIR` and `qbench history chart`: results across commits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbench.harness.errors import EXIT_FAILED, OneLineParser, UsageError
from qbench.harness.results.history import (
    DEFAULT_CHART_METRICS,
    HISTORY_FILE,
    HistoryError,
    add_run,
    draw_charts,
    read_history,
)
from qbench.harness.results.runs import NotARunError, refusal
from qbench.harness.results.timing_gate import CALIBRATED_TOLERANCE


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "history",
        help="keep results across commits (add a run; chart each metric over the commits)",
        description="A tidy history of summary metrics keyed by commit (results/history.csv), "
        "and one chart per metric over the commits with its interval, steps larger than the "
        "calibrated noise marked.",
    )
    actions = parser.add_subparsers(dest="history_action", metavar="ACTION", parser_class=OneLineParser)
    actions.required = True
    add = actions.add_parser(
        "add",
        help="append a run's summary metrics, keyed by its commit",
        description="Append (or replace) a finished run's summary metrics, keyed by its commit. Exit 1, "
        "adding nothing, when the run failed, was interrupted or is still running (its run.json says "
        "so: a failed run's numbers are no result); 2 for bad input (no metrics.csv, no commit).",
    )
    add.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results dir (metrics.csv + run.json)")
    add.add_argument("--file", type=Path, default=HISTORY_FILE, help=f"history CSV (default {HISTORY_FILE})")
    add.add_argument(
        "--commit",
        default=None,
        metavar="LABEL",
        help="key the run by LABEL instead of the commit its run.json records (needed when qbench "
        "ran from an installed package: e.g. your queue's commit or version)",
    )
    add.set_defaults(func=run_add)
    chart = actions.add_parser("chart", help="one chart per metric over the commits")
    chart.add_argument(
        "--file", type=Path, default=HISTORY_FILE, help=f"history CSV (default {HISTORY_FILE})"
    )
    chart.add_argument(
        "--out", type=Path, default=Path("results/history"), help="charts and HISTORY.md go here"
    )
    chart.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="GLOB",
        help=f"metrics to chart, repeatable (default: {', '.join(DEFAULT_CHART_METRICS)})",
    )
    chart.add_argument(
        "--noise",
        default=None,
        help=f"mark steps larger than this (default {CALIBRATED_TOLERANCE:.1%}%, the calibrated tolerance)",
    )
    chart.set_defaults(func=run_chart)


def run_add(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(f"{args.run_dir}: not a directory")
    try:
        why = refusal(args.run_dir)
    except NotARunError as exc:
        raise UsageError(str(exc)) from None
    if why is not None:
        print(f"qbench: error: {why}; history keeps finished runs only", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.commit is not None and not args.commit.strip():
            raise HistoryError("--commit: expected a non-empty label")
        added, total = add_run(args.run_dir, args.file, commit=args.commit)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.file}: {added} entries from {args.run_dir} ({total} in all)")
    return 0


def run_chart(args: argparse.Namespace) -> int:
    noise = CALIBRATED_TOLERANCE
    if args.noise is not None:
        raw = args.noise.strip()
        try:
            noise = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise UsageError(f"--noise: expected a percentage like 5%, got {args.noise!r}") from None
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no history file (qbench history add RUN_DIR makes one)")
    try:
        entries = read_history(args.file)
        charts, marked = draw_charts(
            entries, args.out, metrics=args.metric or DEFAULT_CHART_METRICS, noise=noise
        )
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.out / 'HISTORY.md'}: {len(charts)} charts, {len(marked)} steps larger than {noise:.1%}")
    return 0
