"""The scheduler loop: every second, move due retries back to their queues and
return jobs held by dead consumers. `python -m qbench.queue_impl.scheduler` runs it."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.service import (
    Backoff,
    ServiceArgumentParser,
    add_queue_arguments,
    duration_arg,
    install_stop_handlers,
    open_queue,
)

log = logging.getLogger(__name__)

MOVE_LIMIT = 1000
"""Jobs per move call; a larger backlog is drained in several calls within one tick."""


@dataclass
class SchedulerCounters:
    ticks: int = 0
    moved: int = 0
    recovered: int = 0
    redis_errors: int = 0


class Scheduler:
    def __init__(
        self,
        queue: RedisQueue,
        *,
        interval_s: float = 1.0,
        recover_interval_s: float = 10.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self.recover_interval_s = recover_interval_s
        self.stopping = stopping or threading.Event()
        self.counters = SchedulerCounters()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Move every due job now (in chunks of MOVE_LIMIT); returns how many."""
        total = 0
        while True:
            moved = self.queue.move_scheduled_to_ready(limit=MOVE_LIMIT)
            total += moved
            if moved < MOVE_LIMIT or self.stopping.is_set():
                break
        self.counters.ticks += 1
        self.counters.moved += total
        return total

    def run(self) -> None:
        """Tick every `interval_s` until `stopping` is set; survives Redis outages."""
        backoff = Backoff()
        next_recover = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.tick()
                if started >= next_recover:
                    self.counters.recovered += self.queue.recover_stale()
                    next_recover = started + self.recover_interval_s
                backoff.reset()
                wait = self.interval_s - (time.monotonic() - started)
            except redis.RedisError as exc:
                self.counters.redis_errors += 1
                wait = backoff.next_delay()
                log.warning("scheduler: Redis error (%s); retrying in %.2fs", exc, wait)
            self.stopping.wait(max(0.0, wait))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def build_parser() -> argparse.ArgumentParser:
    parser = ServiceArgumentParser(prog="python -m qbench.queue_impl.scheduler", description=__doc__)
    add_queue_arguments(parser)
    parser.add_argument(
        "--interval", type=duration_arg, default="1s", help="tick period (default %(default)s)"
    )
    parser.add_argument(
        "--recover-interval",
        type=duration_arg,
        default="10s",
        help="how often to return jobs of consumers whose lease expired (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    queue = open_queue(args)
    scheduler = Scheduler(queue, interval_s=args.interval, recover_interval_s=args.recover_interval)
    install_stop_handlers(scheduler.stopping)
    prefixes = ", ".join(part.keys.prefix for part in queue.partitions)
    log.info("scheduler on %s every %.3gs, variant %s", prefixes, args.interval, queue.variant.label())
    scheduler.run()
    log.info("stopped: %s", scheduler.counters)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
