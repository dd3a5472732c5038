"""observe.json (the findings) and OBSERVE.md (the human report, with charts) of one observe run."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from qbench.harness.observe.cadence import Cadence
from qbench.harness.observe.families import TTL_KEYS
from qbench.harness.observe.growth import Trend
from qbench.harness.results.render import chart_link, fmt_bytes, markdown_table
from qbench.harness.results.telemetry_charts import render_telemetry_charts, summary_markdown
from qbench.queue_impl.connection import redact_url

if TYPE_CHECKING:
    from qbench.harness.observe import ObserveResult

OBSERVE_JSON = "observe.json"
SHORT_WINDOW_S = 600.0
OBSERVE_MD = "OBSERVE.md"
GUARANTEES = (
    "read only: sent only INFO, SCAN, TYPE, PTTL, MEMORY USAGE (and AUTH/SELECT on connect)",
    "nothing that blocks the server: no KEYS, DEBUG, MONITOR, FLUSH*; "
    "SCAN COUNT bounded; MEMORY USAGE SAMPLES 5",
    "within the command budget, sampler and scanner together",
    "its own commands are left out of every command figure",
)


def findings(result: ObserveResult, *, url: str, interval_s: float) -> dict[str, Any]:
    """The JSON-ready findings of a run (what observe.json holds)."""
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": {
            "url": redact_url(url),
            "node": result.node,
            "db": result.keys.db,
            "server": result.server,
        },
        "window": {"window_s": result.window_s, "interval_s": interval_s, "rounds": result.pattern.rounds},
        "observer": {
            "budget_commands_per_s": result.budget_per_s,
            "commands_sent": result.commands_sent,
            "commands_per_s": result.commands_per_s,
            "by_command": result.commands_by_name,
            "guarantees": list(GUARANTEES),
        },
        "commands": {
            "commands_per_s": result.pattern.commands_per_s,
            "by_command_per_s": {c.command: c.rate_per_s for c in result.pattern.cadences},
        },
        "idle_pattern": result.pattern.as_dict(),
        "keys": result.keys.as_dict(),
        "growth": result.growth.as_dict(),
        "charts": result.charts,
    }


def write_report(result: ObserveResult, *, url: str, interval_s: float, charts: bool = True) -> None:
    """Draw the charts (unless `charts` is False), then write observe.json and OBSERVE.md."""
    if charts:
        result.charts = render_telemetry_charts(result.rows, result.out_dir / "charts")
    data = findings(result, url=url, interval_s=interval_s)
    (result.out_dir / OBSERVE_JSON).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    (result.out_dir / OBSERVE_MD).write_text(render_markdown(result, url=url))


def render_markdown(result: ObserveResult, *, url: str) -> str:
    server = result.server
    version = server.get("valkey_version") or server.get("redis_version", "?")
    maxmemory = int(server.get("maxmemory", 0) or 0)
    parts = [
        f"# qbench observe: {result.node}",
        "",
        f"- Redis {version} ({server.get('redis_mode', '?')}), allocator {server.get('mem_allocator', '?')}, "
        f"maxmemory {fmt_bytes(maxmemory) if maxmemory else 'unlimited'} "
        f"(policy {server.get('maxmemory_policy', '?')}), hz {server.get('hz', '?')}; `{redact_url(url)}`",
        f"- Observed for {result.window_s:,.1f} s in {result.pattern.rounds} sampling rounds.",
        f"- Observing cost {result.commands_sent:,} commands ({result.commands_per_s:,.1f}/s, budget "
        f"{result.budget_per_s:g}/s): "
        + ", ".join(f"{name.upper()} {count:,}" for name, count in sorted(result.commands_by_name.items()))
        + ". They are left out of every figure below.",
        "- Guarantees: " + "; ".join(GUARANTEES) + ".",
        "",
        "## What the commands show",
        "",
        _commands_section(result),
        "",
        f"## Key families (db {result.keys.db})",
        "",
        _keys_section(result),
        "",
        "## Growth",
        "",
        _growth_section(result),
        "",
        "## Telemetry",
        "",
        summary_markdown(result.rows).strip(),
        "",
    ]
    for chart in result.charts:
        parts += [chart_link(chart), ""]
    return "\n".join(parts).rstrip() + "\n"


def _commands_section(result: ObserveResult) -> str:
    pattern = result.pattern
    if not pattern.cadences:
        return f"No command but the observer's own ran in {pattern.window_s:,.1f} s."
    lines = [
        f"Other clients ran {pattern.commands_per_s:,.1f} commands/s. "
        + (
            "Nothing was queued in the window (no LPUSH, RPUSH, ZADD, XADD; the key count did not change"
            + (f" but for {pattern.keys_expired:,} key(s) that expired" if pattern.keys_expired else "")
            + "), "
            f"so this is the idle cost: {pattern.commands_per_s:,.1f} commands/s."
            if pattern.idle
            else f"Work arrived: {pattern.producer_calls:,} producer commands, key count "
            f"{pattern.keys_changed:+,} ({pattern.keys_expired:,} expired or evicted)."
        ),
    ]
    if pattern.seconds_per_wait is not None:
        lines.append(
            f"Blocking commands returned {pattern.blocking_returns_per_s:,.2f} times/s with "
            f"{pattern.blocked_clients_mean:,.1f} clients blocked on average: each wait lasts "
            f"~{pattern.seconds_per_wait:,.2f} s."
        )
    body = [
        [
            c.command.upper(),
            c.kind,
            f"{c.rate_per_s:,.2f}",
            f"{c.calls:,}",
            c.regularity
            + (
                f" (CV {c.period_cv:.2f} over {c.period_s:g} s)"
                if c.period_cv is not None and c.period_s is not None
                else f" (CV {c.cv:.2f})"
                if c.cv is not None
                else ""
            ),
            f"{100 * c.active_share:.0f}%",
            c.role or "-",
        ]
        for c in pattern.cadences
    ]
    table = markdown_table(
        ["Command", "Kind", "calls/s", "calls", "regularity", "rounds with calls", "role"], body
    )
    notable = [f"- {c.pattern}" for c in pattern.cadences if notable_cadence(c)]
    return "\n\n".join([" ".join(lines), table, *(["\n".join(notable)] if notable else [])])


def notable_cadence(cadence: Cadence) -> bool:
    """Worth a line of its own: a blocking command, a polling loop, or a command a queue could
    poll on that does per-job work instead."""
    return (
        cadence.kind == "blocking"
        or cadence.role == "polling loop"
        or (cadence.kind == "polling" and cadence.role == "per-job work")
    )


def _keys_section(result: ObserveResult) -> str:
    scan = result.keys
    if scan.complete:
        head = (
            f"A complete SCAN pass ({scan.scan_calls:,} SCAN calls) found {scan.keys_scanned:,} keys; "
            "counts are exact for keys that existed throughout the pass."
        )
    elif scan.keys_scanned:
        head = (
            f"A partial SCAN ({scan.scan_calls:,} calls, stopped: {scan.stopped}) saw "
            f"{scan.keys_scanned:,} of {scan.db_keys:,} keys: **sampled**, counts below are "
            f"extrapolated x{scan.factor:,.2f} from the "
            "keys scanned (SCAN walks the hash table, a roughly uniform sample). "
            f"**Note: {scan.coverage()}.**"
        )
    else:
        head = f"No key was scanned (stopped: {scan.stopped or 'empty db'})."
    if scan.refused:
        head += " Refused by the server: " + "; ".join(scan.refused) + "."
    expires = result.growth.expires_share
    if expires is not None:
        head += f" INFO keyspace: {100 * expires:.1f}% of all keys have a TTL."
    total = sum(f.scanned for f in scan.families.values()) or 1
    body = []
    for family in scan.ranked():
        data = family.as_dict(scan.factor)
        share = family.no_ttl_share
        mean = family.memory_mean
        body.append(
            [
                f"`{family.pattern}`",
                ", ".join(sorted(family.types)) or "-",
                f"{data['keys_estimated']:,}" + ("" if scan.complete else " (est.)"),
                f"{100 * family.scanned / total:.1f}%",
                "-" if share is None else f"{100 * share:.0f}% of {family.ttl_probed} probed",
                "-" if mean is None else f"{mean:,.0f} B (n={len(family.memory_bytes)})",
                "-" if data["memory_estimated_bytes"] is None else fmt_bytes(data["memory_estimated_bytes"]),
            ]
        )
    header = ["Family", "Type", "Keys", "Share", "No TTL (probed)", "MEMORY USAGE", "Memory (est.)"]
    bound = (
        f"TTL coverage comes from PTTL on a uniform sample of up to {TTL_KEYS} keys per family (the "
        "probed count is shown beside each share), fewer when the budget or the window ran out."
    )
    return head + ("\n\n" + markdown_table(header, body) + "\n\n" + bound if body else "")


def _growth_section(result: ObserveResult) -> str:
    g = result.growth

    def row(label: str, trend: Trend | None, fmt: Any) -> list[str]:
        if trend is None:
            return [label, "-", "-", "-"]
        return [label, fmt(trend.end), f"{fmt(trend.per_hour)}/h", fmt(trend.at_30_days)]

    def signed_bytes(value: float) -> str:
        return ("-" if value < 0 else "") + fmt_bytes(abs(value))

    body = [
        row("keys", g.keys, lambda v: f"{v:,.0f}"),
        row("used_memory", g.used_memory_bytes, signed_bytes),
    ]
    warning = ""
    if g.window_s < SHORT_WINDOW_S:
        warning = (
            f"\n\n⚠ Only {g.window_s:,.0f} s observed: at this length the slope is mostly noise "
            "(the observer's own connection and scan replies move used_memory too); observe for "
            "an hour or more before reading the 30-day column as a forecast."
        )
    return (
        markdown_table(["", "now", "growth", "at 30 days"], body)
        + f"\n\nA straight line through {g.window_s:,.0f} s of samples, extended 30 days (the seed's memory "
        'table reads the same way: "~3GB at 30 days"). A short window cannot see TTLs that have not '
        "fired yet, daily batches or the allocator's own steps; observe longer to trust the slope." + warning
    )
