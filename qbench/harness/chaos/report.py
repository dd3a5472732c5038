"""A `qbench chaos --driver` run: metrics.csv and run.json through the one results path,
and RELIABILITY.md (a driver x case table and a stacked-bar chart), re-rendered by
`qbench report DIR` from the saved files alone."""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qbench.harness.chaos.drivers import (
    DRIVER_CASES,
    EXPERIMENT,
    OUTCOMES,
    PERSISTENCE,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    CaseOutcome,
    FaultScale,
    run_driver,
    verdicts,
)
from qbench.harness.infra.redis_server import RedisServerProcess, describe
from qbench.harness.peers.registry import DriverSpec
from qbench.harness.results.render import chart_link, figure, save_chart
from qbench.harness.results.rows import (
    METRICS_FILE,
    Row,
    parse_params,
    read_metrics,
    run_metadata,
    write_metrics,
)
from qbench.harness.results.runs import read_meta, start_run

SETTINGS_FILE = Path(__file__).with_name("settings.toml")
"""Per driver: its settings, why it loses what it loses, and the documentation that says so."""
RUN_KIND = "reliability"
REPORT_FILE = "RELIABILITY.md"
CHART_STEM = "reliability_outcomes"
OUTCOME_TEXT = {
    "completed_once": "completed once",
    "duplicated": "duplicated",
    "failed": "failed visibly",
    "stuck": "stuck",
    "lost": "lost",
}
OUTCOME_COLOURS = {
    "completed_once": "#4c9f70",
    "duplicated": "#e3b23c",
    "failed": "#6c8ebf",
    "stuck": "#a0a0a0",
    "lost": "#d1495b",
}
CASE_TEXT = {
    "worker_kill": "the driver's worker processes SIGKILLed (their whole process group) at random "
    "moments while jobs that take a set time run, each started again at once",
    "redis_restart": "the Redis the run started crashed (SIGKILL) while jobs flow and started again "
    "on the same port and data dir, without persistence and with AOF `everysec`",
    "proxy_faults": "producer and workers reach Redis through the delay proxy, which resets every "
    "connection several times while the round-trip delay cycles through 2, 20, 0 and 50 ms",
    "failover": "a primary, one replica and one Sentinel; the primary SIGKILLed while jobs flow, "
    "the Sentinel promotes the replica (drivers that declare `sentinel_setup` follow it)",
}


def run_reliability(
    specs: Sequence[DriverSpec],
    *,
    cases: Sequence[str],
    scale: FaultScale,
    seed: int,
    out: Path,
    mode: str,
    command: str,
    progress: Callable[[str], None] = print,
) -> list[str]:
    """Fault-test each driver in turn; write metrics.csv, run.json and RELIABILITY.md to
    `out`. Returns the verdicts that fail the run (empty: exit 0)."""
    started = time.monotonic()
    run = start_run(out, RUN_KIND, {"mode": mode, "experiment": EXPERIMENT})
    with run:
        outcomes: list[CaseOutcome] = []
        drivers: dict[str, dict[str, Any]] = {}
        for spec in specs:
            progress(f"{spec.name}: fault cases {', '.join(cases)}")
            found, meta = run_driver(
                spec, cases=cases, scale=scale, seed=seed, logs_dir=out / "logs", progress=progress
            )
            outcomes += found
            drivers[spec.name] = meta
        rows = [row for o in outcomes for row in o.rows()]
        write_metrics(out / METRICS_FILE, rows)
        problems = verdicts(
            outcomes,
            {name: str(m.get("delivery", "")) for name, m in drivers.items()},
            {name: dict(m.get("env", {})) for name, m in drivers.items()},
        )
        run.meta.update(
            run_metadata(
                server=server_description(),
                mode=mode,
                extra={
                    "experiment": EXPERIMENT,
                    "command": command,
                    "cases": list(cases),
                    "drivers": drivers,
                    "outcomes": [
                        {
                            "driver": o.driver,
                            "case": o.case,
                            "setting": o.setting,
                            "status": o.status,
                            "reason": o.reason,
                        }
                        for o in outcomes
                        if o.status != STATUS_OK
                    ],
                    "scale": dataclasses.asdict(scale),
                    "seed": seed,
                    "violations": problems,
                    "elapsed_s": round(time.monotonic() - started, 1),
                },
            )
        )
        run.checkpoint()
        render_saved(out)
    return problems


def server_description() -> dict[str, Any]:
    """The redis-server build every case starts (each case runs on servers of its own)."""
    server = RedisServerProcess()
    server.start()
    try:
        info = describe(server.url, "binary", owned=True, binary=server.binary).as_dict()
    finally:
        server.stop()
    info["url"] = "a fresh redis-server per case (and per Sentinel setup)"
    return info


# -- reading a saved run back --------------------------------------------------------------------
def outcomes_from_rows(rows: Sequence[Row], meta: Mapping[str, Any]) -> list[CaseOutcome]:
    """The case outcomes, rebuilt from tidy rows (reasons from run.json)."""
    cells: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
    for row in rows:
        if row.experiment == EXPERIMENT:
            cells[(row.variant, row.params)][row.metric] = row.value
    reasons = {
        (str(o.get("driver")), str(o.get("case")), str(o.get("setting"))): str(o.get("reason", ""))
        for o in meta.get("outcomes", [])
        if isinstance(o, dict)
    }
    found = []
    for (driver, cell), metrics in cells.items():
        p = parse_params(cell)
        case, setting = p.get("case", "?"), p.get("setting", "-")
        setting = "" if setting == "-" else setting
        if not metrics.get("case_supported", 1.0):
            status = STATUS_UNSUPPORTED
        elif metrics.get("case_failed", 0.0):
            status = STATUS_FAILED
        else:
            status = STATUS_OK
        known = {
            "case_supported",
            "case_failed",
            "jobs_submitted",
            "census",
            *(f"jobs_{k}" for k in OUTCOMES),
        }
        found.append(
            CaseOutcome(
                driver=driver,
                case=case,
                setting=setting,
                status=status,
                reason=reasons.get((driver, case, setting), ""),
                counts={k: int(metrics.get(f"jobs_{k}", 0)) for k in OUTCOMES},
                submitted=int(metrics.get("jobs_submitted", 0)),
                extra={k: v for k, v in metrics.items() if k not in known},
                census=bool(metrics.get("census", 0)),
            )
        )
    order = {name: i for i, name in enumerate(meta.get("drivers", {}))}
    return sorted(
        found,
        key=lambda o: (
            order.get(o.driver, len(order)),
            DRIVER_CASES.index(o.case) if o.case in DRIVER_CASES else 99,
            list(PERSISTENCE).index(o.setting) if o.setting in PERSISTENCE else -1,
            o.setting,
        ),
    )


def documented_settings(path: Path = SETTINGS_FILE) -> dict[str, dict[str, str]]:
    """settings.toml: driver -> {setting, loss, cite, failover}; empty when it is missing."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {
        str(name): {str(k): str(v) for k, v in fields.items()}
        for name, fields in data.items()
        if isinstance(fields, dict)
    }


def settings_section(
    drivers: Mapping[str, Mapping[str, Any]], documented: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """One row per driver run: its settings, promise, why it loses what it loses (with the
    citation), and whether and how it follows a failover."""
    lines = [
        "## Settings, promises and the documentation behind each loss",
        "",
        "| driver | settings | promise | why jobs are lost, stuck or failed | documentation | failover |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in drivers.items():
        doc = documented.get(name, {})
        sentinel = str(d.get("sentinel_setup") or "")
        failover = doc.get("failover") or (
            f"yes: {sentinel}" if sentinel else "not supported: declares no Sentinel option"
        )
        cells = [
            name,
            doc.get("setting", "-"),
            str(d.get("delivery") or "not declared"),
            doc.get("loss", "-"),
            doc.get("cite", "-"),
            failover,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _cell(o: CaseOutcome, outcome: str) -> str:
    if o.status != STATUS_OK:
        return "-"
    n = o.counts[outcome]
    return f"**{n}**" if n and outcome in ("lost", "stuck") else str(n)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if math.isnan(value) else f"{value:.1f}"


def render_markdown(rows: Sequence[Row], meta: Mapping[str, Any], charts_dir: Path) -> str:
    outcomes = outcomes_from_rows(rows, meta)
    drivers: Mapping[str, Mapping[str, Any]] = meta.get("drivers", {})
    lines = [
        "# Reliability",
        "",
        "Every job whose enqueue call returned is accounted for from the handler sink (each",
        "handler writes a start line and, after the job's set duration, a finish line, keyed by",
        "the `sent_us` stamp the job carries) and from Redis (the driver's census, where it takes",
        "one). *Completed once*: one finish line. *Duplicated*: more than one. *Failed visibly*:",
        "no finish, and in the library's failed, dead or abandoned structure. *Stuck*: no",
        "finish, still queued or held past the library's recovery window. *Lost*: no finish and",
        "nowhere (a driver without a census cannot tell stuck from lost: its unfinished jobs",
        "count as lost). *Recovery s*: the longest time from a fault's end to the next job",
        "finishing. *Keys left*: keys in the database after the case (without a TTL).",
        "",
        f"Command: `{meta.get('command', 'qbench chaos --driver ...')}` (mode {meta.get('mode', '?')}, "
        f"seed {meta.get('seed', '?')}).",
        "",
        "| driver | case | submitted | completed once | duplicated | failed visibly | stuck | lost | "
        "recovery s | keys left (no TTL) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        if o.status == STATUS_UNSUPPORTED:
            lines.append(f"| {o.driver} | {o.label} | not supported: {o.reason or '-'} | | | | | | | |")
            continue
        if o.status == STATUS_FAILED:
            lines.append(f"| {o.driver} | {o.label} | case failed: {o.reason or '-'} | | | | | | | |")
            continue
        lost = _cell(o, "lost") + ("" if o.census else " (no census)")
        keys = f"{int(o.extra.get('keys_left', 0))} ({int(o.extra.get('keys_left_no_ttl', 0))})"
        lines.append(
            "| "
            + " | ".join(
                [
                    o.driver,
                    o.label,
                    str(o.submitted),
                    _cell(o, "completed_once"),
                    _cell(o, "duplicated"),
                    _cell(o, "failed"),
                    _cell(o, "stuck"),
                    lost,
                    _seconds(o.extra.get("recovery_s")),
                    keys,
                ]
            )
            + " |"
        )
    chart = outcome_chart(outcomes, charts_dir)
    if chart:
        lines += ["", chart_link(chart)]
    lines += ["", "## Settings each driver ran with", ""]
    lines += [
        "| driver | version | promise | recovery window s (wait after last fault) | Sentinel | census |",
        "|---|---|---|---:|---|---|",
    ]
    for name, d in drivers.items():
        lines.append(
            f"| {name} | {d.get('version', '?')} | {d.get('delivery') or 'not declared'} | "
            f"{window_text(d)} | "
            f"{d.get('sentinel_setup') or 'not supported'} | {'yes' if d.get('census') else 'no'} |"
        )
    lines += ["", *settings_section(drivers, documented_settings())]
    lines += ["", "## Cases", ""]
    for case in DRIVER_CASES:
        if any(o.case == case for o in outcomes):
            lines.append(f"- `{case}`: {CASE_TEXT[case]}.")
    lines += [
        "",
        "A loss is a failure (exit 1) only where the driver declares `at-least-once` and the case",
        "is one its promise covers (worker kill, connection faults; failover only with a replica",
        "wait such as `durability=replica`). A loss after a restart without persistence, with AOF",
        "`everysec` (up to a second of writes, as Redis documents), after an asynchronous",
        "replica's failover, or in a queue without acknowledgements is a finding.",
    ]
    problems = meta.get("violations", [])
    lines += [
        "",
        "Verdict: " + ("; ".join(map(str, problems)) if problems else "no case failed, no promise broken."),
    ]
    extras = [o for o in outcomes if o.status == STATUS_OK]
    if extras:
        lines += ["", "## Case counters", ""]
        for o in extras:
            shown = {k: v for k, v in sorted(o.extra.items()) if k not in ("keys_left", "keys_left_no_ttl")}
            lines.append(f"- {o.driver} {o.label}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
    return "\n".join(lines) + "\n"


def window_text(d: Mapping[str, Any]) -> str:
    """A driver's declared recovery window and what the cases awaited after their last fault."""
    declared = float(d.get("recovery_window_s", 0.0))
    if d.get("window_awaited", True):
        return f"{declared:g} (waited {float(d.get('window_s', 0.0)):g})"
    cap = d.get("window_cap_s")
    return f"{declared:g} (not awaited: above the {float(cap or 0):g} s cap; what it holds counts as stuck)"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def outcome_chart(outcomes: Sequence[CaseOutcome], charts_dir: Path) -> str | None:
    """One stacked bar per driver x case: the share of each outcome (grey hatch: not run)."""
    shown = [o for o in outcomes if o.status != STATUS_FAILED]
    if not shown:
        return None
    fig, (ax,) = figure(width=10.0, height=max(2.5, 0.32 * len(shown) + 1.2))
    labels = [f"{o.driver} · {o.label}" for o in shown]
    y = list(range(len(shown)))[::-1]
    left = [0.0] * len(shown)
    for outcome in OUTCOMES:
        shares = [
            (o.counts[outcome] / o.submitted if o.status == STATUS_OK and o.submitted else 0.0) for o in shown
        ]
        ax.barh(y, shares, left=left, color=OUTCOME_COLOURS[outcome], label=OUTCOME_TEXT[outcome], height=0.7)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    for yi, o in zip(y, shown, strict=True):
        if o.status == STATUS_OK and o.submitted:
            # The shares a reader looks for, in words beside the bar.
            note = ", ".join(
                f"{OUTCOME_TEXT[k]} {100 * o.counts[k] / o.submitted:.1f}%"
                for k in ("lost", "duplicated", "failed", "stuck")
                if o.counts[k]
            )
            ax.text(1.01, yi, note or "all completed once", va="center", fontsize=7, clip_on=False)
        if o.status == STATUS_UNSUPPORTED:
            ax.barh([yi], [1.0], color="white", edgecolor="#a0a0a0", hatch="//", height=0.7)
            ax.text(0.5, yi, "not supported", ha="center", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the jobs whose enqueue returned")
    ax.legend(ncols=5, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return save_chart(fig, charts_dir, CHART_STEM)


def render_saved(out: Path) -> Path:
    """Re-render RELIABILITY.md (and its chart) from metrics.csv and run.json."""
    rows = read_metrics(out / METRICS_FILE)
    meta = read_meta(out)
    (out / REPORT_FILE).write_text(render_markdown(rows, meta, out / "charts"))
    return out / REPORT_FILE
