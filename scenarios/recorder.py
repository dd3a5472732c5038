"""Per-process samples: latency in float milliseconds, and completions per second.

Locust rounds response times under 100 ms to whole milliseconds in its percentile
buckets, so a Redis operation would read 0 or 1 ms. Each Locust process (local or
worker) records every sample here and dumps them to `samples-<pid>.json` when it
quits; the harness merges the files. The same samples count the operations completed
in each whole second since the run started (one origin for every process, set by
`qbench load`), from which the throughput chart is drawn. Importing this module does
not import Locust.
"""

from __future__ import annotations

import json
import os
import time
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
    per_second: Counter[int] = field(default_factory=Counter)
    """Whole seconds since the run started -> operations completed in that second."""
    failures: int = 0

    def merge(self, other: OpSamples) -> None:
        self.latency_ms += other.latency_ms
        self.round_trips.update(other.round_trips)
        self.per_second.update(other.per_second)
        self.failures += other.failures


class Recorder:
    """Collects samples per operation name in one process.

    `started_at` (wall-clock seconds) is the origin of the per-second counts; every
    process of a run must share it (`qbench load` passes one in the environment).
    """

    def __init__(self, started_at: float | None = None) -> None:
        self.ops: defaultdict[str, OpSamples] = defaultdict(OpSamples)
        self.started_at = time.time() if started_at is None else started_at

    def record(
        self, op: str, latency_ms: float, *, round_trips: int | None = None, done_at: float | None = None
    ) -> None:
        """One completed operation; `done_at` (wall clock) defaults to now."""
        samples = self.ops[op]
        samples.latency_ms.append(latency_ms)
        if round_trips is not None:
            samples.round_trips[round_trips] += 1
        elapsed = (time.time() if done_at is None else done_at) - self.started_at
        samples.per_second[max(int(elapsed), 0)] += 1

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
                "per_second": {str(k): v for k, v in s.per_second.items()},
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
                per_second=Counter({int(k): int(v) for k, v in data["per_second"].items()}),
                failures=int(data["failures"]),
            )
            merged.setdefault(op, OpSamples()).merge(samples)
    return merged


RECORDER = Recorder()
"""This process's recorder (each Locust process has its own)."""
