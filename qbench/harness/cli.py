"""qbench: measure Redis job queues, and keep the claims made about them honest.

qbench runs a reference queue (every optimization of the seed pull request is a toggle)
and peer libraries against a real Redis it starts itself, counts round trips and
server commands exactly, measures latency, memory and throughput, and writes tidy
results (metrics.csv, run.json, charts, a report with a verdict per claim).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from types import FrameType

import redis

from qbench.harness.errors import EXIT_FAILED, EXIT_USAGE, OneLineParser, UsageError, redis_url_from_env
from qbench.harness.infra.redis_server import ClusterNotSupportedError, NotOwnedError, RedisUnavailableError
from qbench.harness.results.runs import RunInterrupted

VERB_MODULES = (
    "qbench.harness.verbs.ops",
    "qbench.harness.verbs.reproduce",
    "qbench.harness.verbs.report",
    "qbench.harness.verbs.load",
    "qbench.harness.verbs.gate",
    "qbench.harness.verbs.profile",
    "qbench.harness.verbs.peers",
    "qbench.harness.verbs.drivers",
    "qbench.harness.verbs.chaos",
    "qbench.harness.verbs.observe",
    "qbench.harness.verbs.history",
    "qbench.harness.verbs.site",
    "qbench.harness.verbs.cluster",
)
"""Verb modules, in help order."""

EPILOG = """\
exit status: 0 success; 1 a failed run or a regression; 2 bad input (one line on stderr).
`qbench VERB --help` describes each verb. Redis: --redis-url or REDIS_URL, else qbench
starts its own (a container when Docker answers, else a redis-server binary); a Redis
Cluster: redis+cluster://HOST:PORT or --cluster, where a verb supports it."""


def version() -> str:
    try:
        return metadata.version("qbench")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    assert __doc__ is not None
    summary, _, body = __doc__.partition("\n\n")
    parser = OneLineParser(
        prog="qbench",
        description=f"{summary}\n\n{body.strip()}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qbench {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs", parser_class=OneLineParser)
    subparsers.required = True
    for name in VERB_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT


def _terminated(_signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C: every `with`/`finally` runs, so the Redis servers and
    # temporary folders qbench made are removed, and a run being written ends 'interrupted'.
    raise RunInterrupted


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _terminated)
    try:
        redis_url_from_env(cluster_ok=True)  # a REDIS_URL that is no URL is bad input, whatever the verb
        return int(args.func(args))
    except RunInterrupted:
        print("qbench: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except (UsageError, NotOwnedError, ClusterNotSupportedError) as exc:
        return _fail(EXIT_USAGE, exc)
    except RedisUnavailableError as exc:
        return _fail(EXIT_FAILED, exc)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(EXIT_FAILED, f"Redis connection failed: {exc}")
    except KeyboardInterrupt:
        print("qbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # last resort: still one line, with the type for a bug report
        if args.verbose:
            raise
        return _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc} (rerun with -v for a traceback)")
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _fail(code: int, exc: object) -> int:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"qbench: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
