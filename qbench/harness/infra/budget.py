"""A thread-safe token bucket: the command budget of a read-only observer.

`TokenBucket(rate_per_s, burst)` hands out at most `burst + rate_per_s * T` tokens in
any window of T seconds, whoever asks (several threads share one bucket fairly: each
`acquire` reserves its tokens in call order and sleeps until they are due).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """At most `rate_per_s` tokens per second on average, bursts of at most `burst`."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate must be > 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()
        self.taken = 0
        """Tokens handed out so far."""

    def acquire(self, n: int = 1) -> float:
        """Take `n` tokens, sleeping until they are due; returns the seconds waited."""
        if n < 0:
            raise ValueError(f"cannot take {n} tokens")
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
            self._last = now
            self._tokens -= n  # negative: a reservation the caller sleeps off
            self.taken += n
            wait = max(0.0, -self._tokens / self.rate_per_s)
        if wait > 0:
            self._sleep(wait)
        return wait
