"""`qbench report DIR`: re-render REPORT.md and charts/ from a results dir, without measuring."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from harness.experiments import Section, load_experiments
from harness.render import assemble_report, determinism_flags, deterministic_series_count
from harness.results import METRICS_FILE, RUN_FILE, Row, read_metrics

REPORT_FILE = "REPORT.md"
CHARTS_DIR = "charts"


def render_results(
    out_dir: Path, *, rows: list[Row] | None = None, meta: dict[str, Any] | None = None
) -> Path:
    """Write `REPORT.md` and `charts/` from the rows (default: `metrics.csv`) and `run.json`.

    An experiment whose renderer fails gets an error line in the report (and in the
    returned run's `render_errors`), the others are still rendered.
    """
    if rows is None:
        rows = read_metrics(out_dir / METRICS_FILE)
    if meta is None:
        meta = read_run(out_dir)
    meta.pop("render_errors", None)  # this rendering's own, not a previous one's
    charts_dir = out_dir / CHARTS_DIR
    charts_dir.mkdir(parents=True, exist_ok=True)
    experiments_meta: dict[str, Any] = meta.get("experiments", {})
    errors = {
        name: str(info.get("error"))
        for name, info in experiments_meta.items()
        if isinstance(info, dict) and info.get("status") == "error"
    }
    measured = list(dict.fromkeys(r.experiment for r in rows))
    sections: list[tuple[str, Section]] = []
    modules = {module.NAME: module for module in load_experiments()}
    for name in measured:
        module = modules.get(name)
        if module is None:
            errors.setdefault(name, "no renderer for this experiment in this version of qbench")
            continue
        try:
            section = module.render([r for r in rows if r.experiment == name], charts_dir)
        except Exception as exc:  # one broken renderer must not hide the other sections
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            errors[name] = f"render failed: {detail}"
            meta.setdefault("render_errors", {})[name] = detail
            continue
        sections.append((name, section))
    text = assemble_report(
        sections=sections,
        meta=meta,
        errors=errors,
        flags=determinism_flags(rows),
        deterministic_count=deterministic_series_count(rows),
    )
    path = out_dir / REPORT_FILE
    path.write_text(text)
    return path


def read_run(out_dir: Path) -> dict[str, Any]:
    """`run.json` of a results dir ({} when absent); ValueError if it is not JSON."""
    path = out_dir / RUN_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="re-render REPORT.md and charts from a results dir (no measuring, no Redis)"
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="a results dir holding metrics.csv")
    parser.add_argument(
        "--notebook",
        action="store_true",
        help="execute notebooks/report.py on DIR (any results tree) to DIR/report.html",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError

    out_dir: Path = args.dir
    if args.notebook:
        from harness.notebook import run_notebook

        return run_notebook(out_dir)
    if not (out_dir / METRICS_FILE).is_file():
        raise UsageError(f"{out_dir}: no {METRICS_FILE} here (expected a qbench results dir)")
    try:
        meta = read_run(out_dir)
        rows = read_metrics(out_dir / METRICS_FILE)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    path = render_results(out_dir, rows=rows, meta=meta)
    print(path)
    failed = "render_errors" in meta
    if failed:
        print(
            f"qbench: error: some sections failed to render: {', '.join(meta['render_errors'])}",
            file=sys.stderr,
        )
    return 1 if failed else 0
