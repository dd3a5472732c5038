"""REPORT.md of one load run (`qbench load`), rendered from its rows, run.json and telemetry.csv.

    write_load_report(out_dir, rows, meta)   # after the latency and throughput charts exist

It needs no Redis: `qbench report DIR` re-renders a saved load run with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qbench.harness.infra.telemetry import TELEMETRY_FILE, read_telemetry
from qbench.harness.results.render import chart_link, markdown_table
from qbench.harness.results.rows import Row, parse_params, source_text
from qbench.harness.results.telemetry_charts import telemetry_section

REPORT_FILE = "REPORT.md"
LOAD_CHARTS = ("latency_percentiles.png", "throughput.png")
"""The load charts REPORT.md links when they exist (`qbench.harness.load.runner.render_charts`)."""


def write_load_report(
    out_dir: Path, rows: Sequence[Row], meta: Mapping[str, Any], *, charts: bool = True
) -> Path:
    """Write `REPORT.md` (and, with `charts`, the telemetry charts into `charts/`)."""
    path = out_dir / REPORT_FILE
    path.write_text(load_report(out_dir, rows, meta, charts=charts))
    return path


def load_report(out_dir: Path, rows: Sequence[Row], meta: Mapping[str, Any], *, charts: bool = True) -> str:
    title = f"{meta.get('scenario', '?')} · {meta.get('variant', '?')}"
    parts = [f"# qbench load: {title}", "", _facts(meta), ""]
    parts += ["## Operations", "", _operations(rows), ""]
    parts += ["## Jobs", "", _driver_jobs(rows, meta) if "driver" in meta else _jobs(rows), ""]
    linked = [name for name in LOAD_CHARTS if (out_dir / "charts" / name).is_file()]
    if charts and linked:
        parts += ["## Charts", ""]
        for name in linked:
            parts += [chart_link(name), ""]
    telemetry_path = out_dir / TELEMETRY_FILE
    if telemetry_path.is_file():
        telemetry_rows = read_telemetry(telemetry_path)
        if charts:
            parts.append(telemetry_section(telemetry_rows, out_dir / "charts"))
        else:
            parts += ["## What Redis did", "", "(charts skipped: `--no-charts`)", ""]
    elif not meta.get("telemetry", {}).get("enabled", False):
        parts += ["## What Redis did", "", "Not sampled (`--telemetry-interval 0`).", ""]
    return "\n".join(parts).rstrip() + "\n"


def _facts(meta: Mapping[str, Any]) -> str:
    server = meta.get("server", {})
    before = meta.get("load_avg_before") or []
    after = meta.get("load_avg_after") or []
    workers = meta.get("locust_workers") or 0
    return "\n".join(
        [
            f"- {meta.get('users', '?')} Locust users (spawn rate {meta.get('spawn_rate', '?')}/s) for "
            f"{meta.get('duration_s', '?')} s"
            + (f", {workers} Locust worker processes" if workers else ", one Locust process")
            + (
                f"; driver `{meta['driver'].get('name', meta.get('variant', '?'))}`, its workers running "
                f"{meta.get('consumers', '?')} jobs at once"
                if "driver" in meta
                else f"; variant `{meta.get('variant', '?')}`"
            )
            + f"; created {meta.get('created_at', '?')}",
            f"- Redis {server.get('version', '?')} ({server.get('allocator', '?')}, "
            f"{server.get('source', '?')}); {source_text(meta)}; Python {meta.get('python', '?')}",
            "- Load average before / after: "
            + " ".join(f"{x:.2f}" for x in before[:1])
            + " / "
            + " ".join(f"{x:.2f}" for x in after[:1])
            + " (1 min): timings are one run on a shared machine; counts are exact",
            f"- {meta.get('latency_note', '')}",
        ]
    )


def _operations(rows: Sequence[Row]) -> str:
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        p = parse_params(r.params)
        if "t_s" in p:
            continue
        table.setdefault(p.get("op", "?"), {})[r.metric] = r.value
    body = []
    for op, m in table.items():
        if op == "all":
            continue
        body.append(
            [
                op,
                f"{m.get('requests', 0):,.0f}",
                f"{m.get('failures', 0):,.0f}",
                f"{m.get('rate', 0):,.1f}",
                *(_ms(m.get(f"latency_ms_p{p}")) for p in ("50", "90", "99", "99.9")),
                _ms(m.get("round_trips_per_op")),
            ]
        )
    return markdown_table(
        [
            "operation",
            "requests",
            "failures",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "round trips/op",
        ],
        body,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.2f}"


def _jobs(rows: Sequence[Row]) -> str:
    total = {r.metric: r.value for r in rows if parse_params(r.params).get("op") == "all"}
    if "jobs_lost_with_node" in total:
        return (
            f"A cluster master died mid-run (see run.json `node_loss`): {total.get('jobs_expected', 0):,.0f} "
            f"jobs acknowledged (prefill included), {total.get('jobs_accounted', 0):,.0f} job records found "
            f"on the surviving shards; **{total['jobs_lost_with_node']:,.0f} lost with the dead master** "
            "(no census: the dead master's keys cannot be read; an enqueue cut short when the users "
            f"stopped, {total.get('jobs_cut_short', 0):,.0f} here, may have left its job or not)."
        )
    return (
        f"{total.get('jobs_expected', 0):,.0f} jobs produced (prefill included), "
        f"{total.get('jobs_recorded', 0):,.0f} records in Redis, {total.get('jobs_completed', 0):,.0f} "
        f"completed; missing **{total.get('jobs_missing', 0):,.0f}**, unexplained "
        f"**{total.get('jobs_unexplained', 0):,.0f}**, stranded **{total.get('jobs_stranded', 0):,.0f}** "
        "(all must be 0: a job census after the run; an enqueue cut short when the users stopped, "
        f"{total.get('jobs_cut_short', 0):,.0f} here, may have left its job or not)."
    )


def _driver_jobs(rows: Sequence[Row], meta: Mapping[str, Any]) -> str:
    """A driver run's accounting: every job enqueued must be picked up by its workers."""
    total = {r.metric: r.value for r in rows if parse_params(r.params).get("op") == "all"}
    text = f"{total.get('jobs_expected', 0):,.0f} jobs enqueued through the driver (prefill included)"
    if "jobs_picked_up" in total:
        drain = meta.get("jobs", {}).get("drain_s", "?")
        text += (
            f", {total['jobs_picked_up']:,.0f} picked up by its workers; not picked up "
            f"**{total.get('jobs_not_picked_up', 0):,.0f}** (must be 0: within {drain} s after the run)."
        )
    else:
        text += "; the scenario has no consumers, so no worker picks them up."
    if "commands_per_job" in total:
        text += (
            f" Counted at Redis over the whole run: {total['commands_per_job']:,.2f} commands and "
            f"{total.get('round_trips_per_job', 0):,.2f} round trips per job."
        )
    return text
