"""Per-process latency samples in float milliseconds, kept apart from Locust's rounded buckets.

Locust rounds response times under 100 ms to whole milliseconds in its percentile
buckets, so a Redis operation would read 0 or 1 ms. Each Locust process (local or
worker) records every sample here and dumps them to `samples-<pid>.json` when it
quits; the harness merges the files. Importing this module does not import Locust.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES_GLOB = "samples-*.json"


@dataclass
class OpSamples:
    """Every sample of one operation (`enqueue`, `dequeue`, `pickup`, ...)."""

    latency_ms: list[float] = field(default_factory=list)
    round_trips: Counter[int] = field(default_factory=Counter)
    """Round trips per call -> how many calls took that many."""
    failures: int = 0

    def merge(self, other: OpSamples) -> None:
        self.latency_ms += other.latency_ms
        self.round_trips.update(other.round_trips)
        self.failures += other.failures


class Recorder:
    """Collects samples per operation name in one process."""

    def __init__(self) -> None:
        self.ops: defaultdict[str, OpSamples] = defaultdict(OpSamples)

    def record(self, op: str, latency_ms: float, *, round_trips: int | None = None) -> None:
        samples = self.ops[op]
        samples.latency_ms.append(latency_ms)
        if round_trips is not None:
            samples.round_trips[round_trips] += 1

    def failure(self, op: str) -> None:
        self.ops[op].failures += 1

    def dump(self, directory: Path) -> Path | None:
        if not self.ops:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"samples-{os.getpid()}.json"
        doc = {
            op: {
                "latency_ms": s.latency_ms,
                "round_trips": {str(k): v for k, v in s.round_trips.items()},
                "failures": s.failures,
            }
            for op, s in self.ops.items()
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
        return path


def load_samples(directory: Path) -> dict[str, OpSamples]:
    """Merge every process's dump in `directory`."""
    merged: dict[str, OpSamples] = {}
    for path in sorted(directory.glob(SAMPLES_GLOB)):
        doc: dict[str, Any] = json.loads(path.read_text())
        for op, data in doc.items():
            samples = OpSamples(
                latency_ms=[float(v) for v in data["latency_ms"]],
                round_trips=Counter({int(k): int(v) for k, v in data["round_trips"].items()}),
                failures=int(data["failures"]),
            )
            merged.setdefault(op, OpSamples()).merge(samples)
    return merged


RECORDER = Recorder()
"""This process's recorder (each Locust process has its own)."""
