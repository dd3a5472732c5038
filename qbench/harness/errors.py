"""Errors and exit codes of every `qbench` verb, the one-line argument parser, and `--redis-url`.

Library code raises errors of its own (a `ValueError` or `RuntimeError` subclass named
for what went wrong); each verb translates the ones a user can fix into `UsageError`.
`qbench.harness.cli.main` turns them into one line on stderr and an exit code:

    0  success
    1  a failed run or a regression (the measurement says no), an unreachable Redis
    2  bad input: a flag, a file, a value, a driver the user named
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import NoReturn

from redis.connection import parse_url

from qbench.queue_impl.config import Variant, VariantError, parse_variant
from qbench.queue_impl.connection import CLUSTER_SCHEMES, node_url
from qbench.queue_impl.service import ServiceArgumentParser

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user (flag, file, value): one line, exit 2."""


class OneLineParser(ServiceArgumentParser):
    """argparse that reports a bad flag in one line (plus exit 2), not a usage dump.

    The queue's own services (`python -m qbench.queue_impl.worker` ...) use its base class; a
    verb's error starts with `qbench: error:` like every other error of `qbench`.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog.split()[0]}: error: {message} (see {self.prog} --help)\n")


REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


def redis_url(text: str) -> str:
    """An argparse `type`: a Redis URL redis-py can open, else a one-line usage error."""
    return _checked_url(text, REDIS_URL_SCHEMES)


def any_redis_url(text: str) -> str:
    """An argparse `type`: a Redis URL or a Redis Cluster URL (`redis+cluster://`)."""
    return _checked_url(text, (*REDIS_URL_SCHEMES, *CLUSTER_SCHEMES))


def _checked_url(text: str, schemes: Sequence[str]) -> str:
    scheme, sep, _rest = text.partition("://")
    if not sep or scheme not in schemes:
        if scheme in CLUSTER_SCHEMES:
            raise argparse.ArgumentTypeError(f"{text!r}: this measures one Redis server, not a Redis Cluster")
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Redis URL (expected {' or '.join(s + '://' for s in schemes)}...)"
        )
    try:
        parse_url(node_url(text))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def add_redis_url_argument(
    parser: argparse.ArgumentParser, *, cluster: bool = False, cluster_help: str | None = None
) -> None:
    """`--redis-url`; with `cluster`, also `--cluster` (the verb can measure a Redis Cluster:
    `args.cluster`; `cluster_help` says what it does there, when it differs from the
    usual), and `--redis-url` accepts `redis+cluster://` URLs."""
    parser.add_argument(
        "--redis-url",
        type=any_redis_url if cluster else redis_url,
        default=None,
        metavar="URL",
        help="measure this Redis (default: REDIS_URL, else a container, else a redis-server qbench starts)"
        + ("; redis+cluster://HOST:PORT for a Redis Cluster" if cluster else ""),
    )
    if cluster:
        parser.add_argument(
            "--cluster",
            action="store_true",
            help=cluster_help
            or "the Redis is a Redis Cluster: --redis-url (or REDIS_URL) names one of its nodes, "
            "or without one qbench starts a local 3-master cluster for the run",
        )


def redis_url_from_env(*, cluster_ok: bool = False) -> str | None:
    """REDIS_URL, checked like `--redis-url` (a bad value is a usage error, not a traceback;
    `cluster_ok`: a Redis Cluster URL passes too)."""
    url = os.environ.get("REDIS_URL") or None
    if url is not None:
        try:
            any_redis_url(url) if cluster_ok else redis_url(url)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"REDIS_URL: {exc}") from None
    return url


def variant_arg(text: str) -> Variant:
    """An argparse `type`: `preset[+toggle=value,...]`, else a one-line usage error."""
    try:
        return parse_variant(text)
    except VariantError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def comma_list(text: str, allowed: Sequence[str], flag: str) -> list[str]:
    """`a,b` checked against `allowed`, in the order given; UsageError names what is wrong."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise UsageError(
            f"{flag}: unknown {', '.join(unknown) or 'empty list'}; expected some of {', '.join(allowed)}"
        )
    return chosen


DEFAULT_TELEMETRY_INTERVAL_S = 1.0
MIN_TELEMETRY_INTERVAL_S = 0.05
"""Keep in step with `qbench.harness.infra.telemetry.MIN_INTERVAL_S` (a test checks they agree)."""


def telemetry_interval(text: str) -> float:
    """An argparse `type`: seconds between telemetry samples, 0 to switch sampling off."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (0 switches telemetry off)"
        ) from None
    if not math.isfinite(value) or value < 0 or 0 < value < MIN_TELEMETRY_INTERVAL_S:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 0 (off) or at least {MIN_TELEMETRY_INTERVAL_S:g} seconds"
        )
    return value


def add_telemetry_argument(parser: argparse.ArgumentParser) -> None:
    """`--telemetry-interval S`: the sampler beside every measuring verb (telemetry.csv)."""
    parser.add_argument(
        "--telemetry-interval",
        type=telemetry_interval,
        default=DEFAULT_TELEMETRY_INTERVAL_S,
        metavar="S",
        help="sample Redis INFO and the harness's CPU/RSS every S seconds into telemetry.csv "
        f"(default {DEFAULT_TELEMETRY_INTERVAL_S:g}; 0: off)",
    )
