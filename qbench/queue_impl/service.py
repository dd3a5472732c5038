"""What the worker, scheduler and API processes share: flags, env, signals, reconnect backoff."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

import redis

from qbench.queue_impl.config import VariantError, parse_variant
from qbench.queue_impl.connection import make_client, redact_url
from qbench.queue_impl.queue import RedisQueue

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ServiceArgumentParser(argparse.ArgumentParser):
    """Reports a bad flag or value on one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `500ms`, `2m` (the seed's JOB_TIMEOUT uses Go's `30s`)."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r}: expected e.g. 30s, 500ms, 2m")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis to use (env REDIS_URL; default %(default)s)",
    )
    parser.add_argument(
        "--variant",
        default=os.environ.get("QBENCH_VARIANT", "optimized"),
        help="preset[+toggle=value,...] (env QBENCH_VARIANT; default %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=positive_int_arg,
        default=os.environ.get("QBENCH_PARTITIONS"),
        help="spread the queue over N hash-tagged partitions (env QBENCH_PARTITIONS; default: "
        "the variant's, 1); every producer and worker of a queue must use the same N",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("QBENCH_NAMESPACE", "default"),
        help="key namespace: keys are qbench:{NAMESPACE}:... (default %(default)s)",
    )


def open_queue(args: argparse.Namespace, *, workers: int = 1, consumer: str | None = None) -> RedisQueue:
    """The queue the flags describe; exits 2 on a bad variant, 1 on an unreachable Redis."""
    try:
        variant = parse_variant(args.variant)
    except VariantError as exc:
        fail(2, f"--variant: {exc}")
    if args.partitions is not None:
        try:
            variant = variant.with_overrides(partitions=int(args.partitions))
        except (VariantError, ValueError) as exc:
            fail(2, f"--partitions: {exc}")
    try:
        client = make_client(args.redis_url, variant, workers=workers)
    except ValueError as exc:  # redis-py's message for a URL it cannot parse
        fail(2, f"--redis-url: {exc}")
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(1, f"cannot reach Redis at {redact_url(args.redis_url)}: {explain_redis_error(exc)}")
    try:
        queue = RedisQueue(client, variant, namespace=args.namespace, consumer=consumer)
    except ValueError as exc:
        fail(2, f"--namespace: {exc}")
    try:
        queue.check_server()
    except VariantError as exc:  # records=hash on a Redis without HEXPIRE
        fail(2, f"--variant: {exc}")
    except redis.RedisError as exc:
        fail(1, f"cannot use Redis at {redact_url(args.redis_url)}: {explain_redis_error(exc)}")
    return queue


def explain_redis_error(exc: redis.RedisError) -> str:
    """One line a user can act on (Redis's own reply to a missing password talks about HELLO)."""
    if isinstance(exc, redis.AuthenticationError):
        return (
            f"authentication failed ({str(exc).split(',')[0].rstrip('.')}): "
            "give the password (and ACL user) in the URL, redis://[USER]:PASSWORD@HOST:PORT/DB"
        )
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def fail(code: int, message: str) -> NoReturn:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "qbench"
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def install_stop_handlers(
    stop: threading.Event, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """First SIGTERM/SIGINT asks for a graceful stop; a second one exits at once."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    for signum in signals:
        signal.signal(signum, handle)


class Backoff:
    """Exponential reconnect backoff: 0.05 s doubling to `cap_s`, reset on success."""

    def __init__(self, *, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.base_s * 2.0**self.failures, self.cap_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
