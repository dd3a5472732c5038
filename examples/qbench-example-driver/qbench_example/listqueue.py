"""Stands for *your* queue: a Redis list, LPUSH to send, BRPOP in worker threads to run.

Deliberately small (no retries, no reliability): the point is the driver beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import redis

POLL_S = 1
"""How long a worker thread blocks on an empty queue before it checks whether to stop."""


class ListQueue:
    def __init__(self, url: str, name: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = f"listqueue:{name}"

    def put(self, body: bytes) -> None:
        self.client.lpush(self.key, body)

    def put_many(self, bodies: Sequence[bytes]) -> None:
        self.client.lpush(self.key, *bodies)

    def serve(self, handler: Callable[[bytes], None], *, threads: int, stop: threading.Event) -> None:
        """Run `handler` on each job in `threads` threads until `stop` is set; jobs already
        taken finish first."""

        def loop() -> None:
            client = redis.Redis(connection_pool=self.client.connection_pool)
            while not stop.is_set():
                item = client.brpop([self.key], timeout=POLL_S)
                if item is not None:
                    handler(item[1])

        workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def close(self) -> None:
        self.client.close()
