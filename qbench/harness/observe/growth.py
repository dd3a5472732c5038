"""Growth of keys and memory over a window, extrapolated to 30 days (as the seed's table is).

The slope is a least-squares fit over every sample (keys summed over dbs and nodes,
used_memory summed over nodes), per hour; the projection is the last value plus 720
hours of that slope (never below 0). It is a straight line through a short window:
TTLs that have not fired yet, a batch that happened to run, the allocator's own steps
(used_memory moves by kilobytes on its own) all bend it, which the report says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from qbench.harness.infra.telemetry import TelemetryRow
from qbench.harness.results.telemetry_charts import by_round

HOURS_30_DAYS = 30 * 24


@dataclass(frozen=True, slots=True)
class Trend:
    """One quantity over the window, and its straight-line projection."""

    start: float
    end: float
    per_hour: float
    at_30_days: float
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Growth:
    window_s: float
    keys: Trend | None
    used_memory_bytes: Trend | None
    expires_share: float | None
    """Share of keys with a TTL at the end of the window (INFO keyspace, exact)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "keys": self.keys.as_dict() if self.keys else None,
            "used_memory_bytes": self.used_memory_bytes.as_dict() if self.used_memory_bytes else None,
            "expires_share": self.expires_share,
            "method": "least-squares line through every sample, extended 720 h from the last value",
        }


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope (value per second) of (t, value) points; 0 for fewer than 2."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def trend(points: Sequence[tuple[float, float]]) -> Trend | None:
    if not points:
        return None
    per_hour = slope(points) * 3600
    end = points[-1][1]
    return Trend(points[0][1], end, per_hour, max(0.0, end + per_hour * HOURS_30_DAYS), len(points))


def growth(rows: Sequence[TelemetryRow]) -> Growth:
    """Keys and used_memory over the rows' window, per hour and at 30 days."""
    keys = by_round(rows, "keys:")
    memory = by_round(rows, "used_memory_bytes")
    expires = by_round(rows, "expires:")
    window = (memory[-1][0] - memory[0][0]) if len(memory) > 1 else 0.0
    share = expires[-1][1] / keys[-1][1] if keys and expires and keys[-1][1] else None
    return Growth(window, trend(keys), trend(memory), share)
