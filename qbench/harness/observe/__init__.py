"""`qbench observe`: watch a Redis qbench did not start (any queue, any language), read-only.

    result = observe(url, out_dir, duration_s=60)

It samples the same telemetry as any qbench run (`qbench.harness.infra.telemetry`: INFO once
per interval), scans the keyspace into key families (`families`), and reads from the
rows the commands/s per command and the idle pattern they show (`cadence`) and the
growth of keys and memory per hour, extrapolated to 30 days (`growth`). It writes
`telemetry.csv`, `observe.json` (the findings) and `OBSERVE.md` (a report with charts).

Guarantees (each enforced in code, each tested):
- Read only: the observer's one connection may send only INFO, SCAN, TYPE, PTTL, MEMORY
  USAGE and the connection's own AUTH/SELECT (`OBSERVE_COMMANDS`); anything else raises
  before it reaches the socket. It never writes, deletes, flushes or changes config.
- Nothing that blocks the server: no KEYS, DEBUG, MONITOR, FLUSH*, no blocking command;
  SCAN with COUNT <= 1000 (100 by default), MEMORY USAGE with SAMPLES 5.
- A command budget (50 commands/s by default): a token bucket paces the sampler and the
  scanner together (at most budget x T + 1 commands in any T seconds), and the scanner
  stops before the whole run could exceed budget x duration commands.
- Its own commands are counted as sent and left out of every command figure; the report
  states what observing cost.
- A server that refuses INFO, or cannot be reached, ends the run at once with one line
  (exit 1); the rest (SCAN, TYPE, PTTL, MEMORY USAGE refused) is reported, not fatal.

The minimal ACL it needs: `ACL SETUSER observer on >PASSWORD ~* resetchannels -@all
+info +scan +type +pttl +memory|usage` (add `+select` for a db other than 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.connection import parse_url

from qbench.harness.infra.budget import TokenBucket
from qbench.harness.infra.telemetry import MIN_INTERVAL_S, Telemetry, TelemetryRow
from qbench.harness.observe.cadence import IdlePattern, idle_pattern
from qbench.harness.observe.families import MAX_SCAN_COUNT, MAX_SCAN_KEYS, SCAN_COUNT, KeyScan, KeyScanner
from qbench.harness.observe.growth import Growth, growth

OBSERVE_COMMANDS = frozenset({"info", "scan", "type", "pttl", "memory|usage", "auth", "select"})
"""Every command the observer's connection may send (commandstats names)."""
MINIMAL_ACL = "on >PASSWORD ~* resetchannels -@all +info +scan +type +pttl +memory|usage"
DEFAULT_BUDGET_PER_S = 50.0
DEFAULT_DURATION_S = 60.0
HANDSHAKE_RESERVE = 4
"""Commands kept back for the sampler's reconnects (AUTH, SELECT) beyond one INFO per sample."""
SCAN_SHARE = 0.5
"""The key scan may use the first half of the window; probes end by 90% of it."""
PROBE_SHARE = 0.9


class ObserveInputError(ValueError):
    """A setting that cannot work (budget below the sampler's need, window too short)."""


@dataclass
class ObserveResult:
    """What one `observe` run found, and what it cost the server."""

    out_dir: Path
    node: str
    window_s: float
    budget_per_s: float
    commands_sent: int
    """Every command the observer sent (sampler and scanner, handshake included)."""
    commands_by_name: dict[str, int]
    pattern: IdlePattern
    keys: KeyScan
    growth: Growth
    rows: list[TelemetryRow] = field(repr=False, default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    charts: list[str] = field(default_factory=list)

    @property
    def commands_per_s(self) -> float:
        return self.commands_sent / self.window_s if self.window_s > 0 else float(self.commands_sent)


def check_settings(*, duration_s: float, interval_s: float, budget_per_s: float, scan_count: int) -> None:
    """Raise ObserveInputError (one line) for settings that cannot work."""
    # NaN passes every comparison below and infinity overflows the token bucket: refuse both.
    if not math.isfinite(budget_per_s) or budget_per_s <= 0:
        raise ObserveInputError(
            f"--budget must be a finite number of commands/s above 0, got {budget_per_s:g}"
        )
    if not math.isfinite(duration_s) or not math.isfinite(interval_s):
        raise ObserveInputError(
            f"--duration and --interval must be finite, got {duration_s:g}, {interval_s:g}"
        )
    if interval_s < MIN_INTERVAL_S:
        raise ObserveInputError(f"--interval must be >= {MIN_INTERVAL_S} s, got {interval_s:g}")
    if duration_s < 2 * interval_s:
        raise ObserveInputError(
            f"--duration {duration_s:g}s: needs at least two sampling intervals ({2 * interval_s:g} s)"
        )
    needed = 1 / interval_s + 1
    if budget_per_s < needed:
        raise ObserveInputError(
            f"--budget {budget_per_s:g}: the sampler alone sends {1 / interval_s:g} command(s)/s; "
            f"give at least {needed:g}"
        )
    if not 1 <= scan_count <= MAX_SCAN_COUNT:
        raise ObserveInputError(f"--scan-count must be 1..{MAX_SCAN_COUNT}, got {scan_count}")


def observe(
    url: str,
    out_dir: Path,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    interval_s: float = 1.0,
    budget_per_s: float = DEFAULT_BUDGET_PER_S,
    scan_count: int = SCAN_COUNT,
    max_scan_keys: int = MAX_SCAN_KEYS,
    charts: bool = True,
    progress: Callable[[str], None] = lambda _message: None,
) -> ObserveResult:
    """Observe `url` for `duration_s` seconds and write telemetry.csv, observe.json, OBSERVE.md.

    Raises ObserveInputError for impossible settings and `TelemetryError` (one line)
    when the server cannot be reached or refuses INFO; sends only `OBSERVE_COMMANDS`.
    """
    check_settings(
        duration_s=duration_s, interval_s=interval_s, budget_per_s=budget_per_s, scan_count=scan_count
    )
    from qbench.harness.observe.report import write_report  # matplotlib only once there is something to draw

    db = int(parse_url(url).get("db", 0) or 0)  # type: ignore[no-untyped-call]
    bucket = TokenBucket(budget_per_s, burst=1)
    samples_max = math.ceil(duration_s / interval_s) + 2
    scan_cap = math.floor(budget_per_s * duration_s) - samples_max - HANDSHAKE_RESERVE
    with Telemetry(
        url,
        out_dir,
        interval_s=interval_s,
        budget=bucket,
        allowed=OBSERVE_COMMANDS,
        self_name="qbench-observe",
        jitter=True,  # blocked_clients read at every phase of a periodic producer's cycle
    ) as t:
        started = time.monotonic()
        link = t.link()
        progress(
            f"sampling {link.name} every {interval_s:g} s for {duration_s:g} s "
            f"(budget {budget_per_s:g} commands/s)"
        )
        db_keys = int(next((r.value for r in reversed(t.rows) if r.metric == f"keys:db{db}"), 0))
        scanner = KeyScanner(link, db=db, db_keys=db_keys, count=scan_count, max_keys=max_scan_keys)
        scan = scanner.run(
            scan_until=started + SCAN_SHARE * duration_s,
            probe_until=started + PROBE_SHARE * duration_s,
            max_commands=max(0, scan_cap),
        )
        progress(
            f"scanned {scan.keys_scanned:,} keys into {len(scan.families)} families "
            f"({'complete' if scan.complete else f'sampled; {scan.coverage()}'})"
        )
        t.close(at_s=duration_s)
    rows = t.rows
    sent = {name: count for node in t.summary.own_commands_by_name.values() for name, count in node.items()}
    result = ObserveResult(
        out_dir=out_dir,
        node=link.name,
        window_s=t.summary.duration_s,
        budget_per_s=budget_per_s,
        commands_sent=sum(t.summary.own_commands.values()),
        commands_by_name=sent,
        pattern=idle_pattern(rows),
        keys=scan,
        growth=growth(rows),
        rows=rows,
        server=t.summary.servers.get(link.name, {}),
    )
    write_report(result, url=url, interval_s=interval_s, charts=charts)
    return result
