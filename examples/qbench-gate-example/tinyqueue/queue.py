"""The queue: jobs are JSON bodies in a Redis list; workers are threads blocking on BRPOP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import redis

POLL_S = 1
"""How long a worker thread blocks on an empty queue before it checks whether to stop."""


class Queue:
    def __init__(self, url: str, name: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = f"tinyqueue:{name}"

    def put(self, body: Any) -> None:
        """Enqueue one job: one LPUSH."""
        self.client.lpush(self.key, json.dumps(body))

    def work(self, handler: Callable[[Any], None], *, threads: int, stop: threading.Event) -> None:
        """Run `handler` on each job in `threads` threads until `stop` is set."""

        def loop() -> None:
            client = redis.Redis(connection_pool=self.client.connection_pool)
            while not stop.is_set():
                item = client.brpop([self.key], timeout=POLL_S)
                if item is not None:
                    handler(json.loads(item[1]))

        workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def close(self) -> None:
        self.client.close()
