"""`qbench peers`: RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq and the presets, measured alike.

This package is also imported inside the peer libraries' own virtualenvs (by
`harness.peers.agent`), so its modules import only the standard library at top level,
except the harness-side ones (`suite`, `runner`, `report`), imported on demand.
"""

from __future__ import annotations

import argparse

DEFAULT_OUT = "results/peers"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.cli import add_redis_url_argument

    parser = subparsers.add_parser(
        "peers",
        help="RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq and the presets on the same Redis, same run",
        description=(
            "Each driver gets a fresh redis-server (or its own empty logical DB of --redis-url), "
            "its library in a virtualenv of its own (built on first use), and the same phases: "
            "enqueue, drain with ~10 workers, idle, pickup latency, memory and keys left."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, one repeat, 3 s idle")
    parser.add_argument(
        "--only", metavar="NAMES", default=None, help="comma-separated drivers (default: all ten)"
    )
    parser.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT}[-quick])")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per phase (default 10,000; quick 1,000)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of the timed phases (default 3; quick 1)"
    )
    parser.add_argument(
        "--render", metavar="DIR", default=None, help="only re-render DIR's report and charts"
    )
    add_redis_url_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.peers.suite import run_verb

    return run_verb(args)
