"""REPORT.md and charts/ of a reproduce run (and of a cluster measure run), rendered from
the folder's rows and run.json only: the renderers `qbench.harness.results.runs` names."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from qbench.harness.experiments import Section, cluster_shards, load_experiments
from qbench.harness.infra.telemetry import TELEMETRY_FILE, read_telemetry
from qbench.harness.results.render import assemble_report, determinism_flags, deterministic_series_count
from qbench.harness.results.rows import METRICS_FILE, Row, read_metrics, read_run
from qbench.harness.results.telemetry_charts import Span, telemetry_section

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
    telemetry = ""
    if (out_dir / TELEMETRY_FILE).is_file():
        try:
            telemetry = telemetry_section(
                read_telemetry(out_dir / TELEMETRY_FILE), charts_dir, spans=experiment_spans(meta)
            )
        except Exception as exc:  # a broken telemetry file must not hide the experiments
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            errors["telemetry"] = f"render failed: {detail}"
            meta.setdefault("render_errors", {})["telemetry"] = detail
    text = assemble_report(
        sections=sections,
        meta=meta,
        errors=errors,
        flags=determinism_flags(rows),
        deterministic_count=deterministic_series_count(rows),
        telemetry=telemetry,
    )
    path = out_dir / REPORT_FILE
    path.write_text(text)
    return path


def render_saved(out_dir: Path) -> Path:
    """Re-render a reproduce run's REPORT.md and charts/ from its metrics.csv and run.json.

    ValueError when a section fails to render (the report still lists it as failed)."""
    meta = read_run(out_dir)
    path = render_results(out_dir, meta=meta)
    if "render_errors" in meta:
        raise ValueError(f"some sections failed to render: {', '.join(meta['render_errors'])}")
    return path


def render_cluster_run(out_dir: Path) -> Path:
    """Re-render a `qbench cluster measure` run's REPORT.md and charts/ from its files."""
    rows = read_metrics(out_dir / METRICS_FILE)
    if not any(r.experiment == cluster_shards.NAME for r in rows):
        raise ValueError(f"{out_dir}: no {cluster_shards.NAME} rows")
    return cluster_shards.write_report(out_dir, rows, read_run(out_dir))


def experiment_spans(meta: dict[str, Any]) -> list[Span]:
    """Each experiment's stretch of telemetry.csv's time axis, as run.json recorded it."""
    spans: list[Span] = []
    for name, info in meta.get("experiments", {}).items():
        t = info.get("telemetry_t_s") if isinstance(info, dict) else None
        if isinstance(t, list) and len(t) == 2:
            spans.append((name, float(t[0]), float(t[1])))
    return spans
