"""`qbench observe --redis-url URL --duration 60s --out DIR`: watch a Redis qbench did not start."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from qbench.harness.errors import UsageError, redis_url, redis_url_from_env
from qbench.harness.infra.redis_server import RedisUnavailableError
from qbench.harness.infra.telemetry import TelemetryError
from qbench.harness.observe import (
    DEFAULT_BUDGET_PER_S,
    MINIMAL_ACL,
    ObserveInputError,
    observe,
)
from qbench.harness.observe.families import MAX_SCAN_COUNT, MAX_SCAN_KEYS, SCAN_COUNT
from qbench.harness.observe.report import OBSERVE_MD, notable_cadence
from qbench.queue_impl.service import duration_arg, positive_int_arg

DEFAULT_OUT_ROOT = Path("results/observe")

DESCRIPTION = """\
Watch a running Redis (a queue in any language) without changing it: commands/s by
command and the idle pattern they show (blocking waits returning at a fixed cadence,
polling loops with nothing to do), the key families SCAN finds (type, count, TTL
coverage, MEMORY USAGE per family), memory, clients and CPU, and the growth of keys and
memory per hour extrapolated to 30 days. Writes telemetry.csv, observe.json and
OBSERVE.md (with charts) into --out."""

EPILOG = f"""\
guarantees:
  - read only: it sends only INFO, SCAN, TYPE, PTTL and MEMORY USAGE (and AUTH/SELECT
    on connect); any other command is refused before it leaves the process. It never
    writes, deletes, flushes or changes config.
  - nothing that blocks the server: no KEYS, DEBUG, MONITOR or FLUSH*, no blocking
    command; SCAN COUNT is at most {MAX_SCAN_COUNT} ({SCAN_COUNT} by default), MEMORY USAGE uses SAMPLES 5.
  - a command budget (--budget, {DEFAULT_BUDGET_PER_S:g}/s by default) paces sampler and scanner
    together, and the run sends at most budget x duration commands in all.
  - its own commands are left out of every figure; OBSERVE.md says what observing cost.
  - exit 1 with one line when Redis cannot be reached or refuses INFO; exit 2 for a bad
    flag (a bad --duration, a budget below what sampling needs).

minimal ACL user: ACL SETUSER observer {MINIMAL_ACL}
  (+select as well for a db other than 0)"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "observe",
        help="watch a running Redis read-only: commands, idle pattern, key families, growth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--redis-url",
        type=redis_url,
        default=None,
        metavar="URL",
        help="the Redis to observe (default: REDIS_URL); redis://[USER:PASSWORD@]HOST:PORT/DB",
    )
    parser.add_argument(
        "--duration",
        type=duration_arg,
        default=60.0,
        metavar="DURATION",
        help="how long to watch (default 60s)",
    )
    parser.add_argument(
        "--interval",
        type=duration_arg,
        default=1.0,
        metavar="DURATION",
        help="sampling interval (default 1s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_PER_S,
        metavar="CMDS_PER_S",
        help=f"most commands per second observe may send (default {DEFAULT_BUDGET_PER_S:g})",
    )
    parser.add_argument(
        "--scan-count",
        type=positive_int_arg,
        default=SCAN_COUNT,
        metavar="N",
        help=f"SCAN ... COUNT N per step (default {SCAN_COUNT}, at most {MAX_SCAN_COUNT})",
    )
    parser.add_argument(
        "--max-scan-keys",
        type=positive_int_arg,
        default=MAX_SCAN_KEYS,
        metavar="N",
        help=f"stop scanning after N keys and extrapolate (default {MAX_SCAN_KEYS:,})",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="results dir (default results/observe/<time>)"
    )
    parser.add_argument("--no-charts", action="store_true", help="skip the charts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = args.redis_url or redis_url_from_env()
    if url is None:
        raise UsageError("observe needs --redis-url (or REDIS_URL): it watches a Redis you already run")
    out_dir: Path = args.out or DEFAULT_OUT_ROOT / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: {out_dir} exists and is not a directory")
    try:
        result = observe(
            url,
            out_dir,
            duration_s=args.duration,
            interval_s=args.interval,
            budget_per_s=args.budget,
            scan_count=args.scan_count,
            max_scan_keys=args.max_scan_keys,
            charts=not args.no_charts,
            progress=lambda message: print(f"observe: {message}", file=sys.stderr, flush=True),
        )
    except ObserveInputError as exc:
        raise UsageError(str(exc)) from None
    except TelemetryError as exc:
        raise RedisUnavailableError(str(exc)) from None
    pattern = result.pattern
    print(
        f"{result.node}: {pattern.commands_per_s:,.1f} commands/s from other clients"
        + (" (idle: nothing queued)" if pattern.idle else "")
        + f"; {len(result.keys.families)} key families in {result.keys.keys_scanned:,} keys scanned"
        + f"; observing cost {result.commands_per_s:,.1f} commands/s"
    )
    if not result.keys.complete:
        print(f"  note: {result.keys.coverage()}")
    for cadence in pattern.cadences:
        if notable_cadence(cadence):
            print(f"  {cadence.pattern}")
    print(os.fspath(out_dir / OBSERVE_MD))
    return 0
