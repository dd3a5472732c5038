"""`qbench`: one entry point, one module per verb.

Each verb module defines `add_parser(subparsers)` (which sets `func`) and its own
`run(args) -> int`. Errors a user can fix end in one line on stderr and exit 2; a
regression or failed run exits 1; success 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from harness.redis_server import NotOwnedError, RedisUnavailableError
from queue_impl.codec import CorruptJobError
from queue_impl.config import VariantError

VERB_MODULES = (
    "harness.ops",
    "harness.reproduce",
    "harness.load",
    "harness.gate",
    "harness.profile",
    "harness.report",
    "harness.peers",
    "harness.chaos",
)
"""Verb modules in help order; one not written yet is simply absent from the CLI."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user (flag, file, value): one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (plus exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="qbench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    subparsers.required = True
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def add_redis_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=None,
        help="measure this Redis (default: REDIS_URL, else a container, else a redis-server qbench starts)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (UsageError, VariantError, CorruptJobError, NotOwnedError, FileNotFoundError) as exc:
        return _fail(EXIT_USAGE, exc)
    except RedisUnavailableError as exc:
        return _fail(EXIT_FAILED, exc)
    except KeyboardInterrupt:
        print("qbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line, with the type for a bug report
        import redis

        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return _fail(EXIT_FAILED, f"Redis connection failed: {exc}")
        if args.verbose:
            raise
        return _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc} (rerun with -v for a traceback)")


def _fail(code: int, exc: object) -> int:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"qbench: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
