"""Per-process latency histograms, and how Locust processes ship them to one place.

Every Locust process (the local one, or each worker) records each operation into an HDR
histogram (`hdrhistogram`): integer microseconds, 3 significant digits, 1 µs to 1 hour.
Histograms merge exactly (adding them is adding their bucket counts), so a worker can
send its state to the master as a compact base64 string inside Locust's own
`report_to_master` message, and the master adds the workers' states up: no files pass
between processes, and workers need no disk in common with the master.

Beside the histogram each operation keeps plain counters that merge the same way (sum):
round trips per call, failures, and operations completed per whole second since the run
started (one origin for every process, set by `qbench load`).

A process sends its *cumulative* state with a sequence number; the master keeps each
worker's latest state and sums those, so a lost or repeated report never counts a
sample twice, and a report sent after the worker's users stopped (`final`) is complete.
Importing this module does not import Locust.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
"""One hour: pickup latencies reach tens of seconds when consumers fall behind."""
SIGNIFICANT_DIGITS = 3
"""Values within 1 part in 1,000 (one histogram bucket) are equivalent."""
HISTOGRAM_NOTE = (
    "latency from an HDR histogram per operation: integer microseconds, 3 significant digits "
    "(values within 0.1% share a bucket), 1 us to 1 h; a percentile is the histogram's value at "
    "that percentile (the highest value in the bucket of the sample at rank ceil(p/100 x n)); "
    "mean and max are the histogram's too"
)
WIRE_VERSION = 1
REPORT_KEY = "qbench"
"""The key of qbench's state inside a Locust worker report (`data[REPORT_KEY]`)."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_us(latency_ms: float) -> int:
    """A latency in float milliseconds as the integer microseconds the histogram records
    (not clamped: see `OpSamples.record`)."""
    return round(latency_ms * 1000)


@dataclass
class OpSamples:
    """Everything recorded about one operation (`enqueue`, `dequeue`, `pickup`, ...)."""

    histogram: HdrHistogram = field(default_factory=new_histogram)
    """Latency in microseconds."""
    round_trips: Counter[int] = field(default_factory=Counter)
    """Round trips per call -> how many calls took that many."""
    per_second: Counter[int] = field(default_factory=Counter)
    """Whole seconds since the run started -> operations completed in that second."""
    failures: int = 0
    cut_short: int = 0
    """Calls begun but neither completed nor failed: the user was stopped mid-call (the
    command may or may not have reached Redis)."""
    out_of_range: int = 0
    """Samples below 0 µs (clocks of two hosts apart) or above 1 h, recorded at the nearest bound."""

    @property
    def count(self) -> int:
        """Operations completed (samples in the histogram)."""
        return int(self.histogram.get_total_count())

    def record(self, latency_ms: float, *, round_trips: int | None, second: int) -> None:
        value = to_us(latency_ms)
        if not 0 <= value <= HIGHEST_US:
            self.out_of_range += 1
            value = min(max(value, 0), HIGHEST_US)
        self.histogram.record_value(value)
        if round_trips is not None:
            self.round_trips[round_trips] += 1
        self.per_second[second] += 1

    def merge(self, other: OpSamples) -> None:
        self.histogram.add(other.histogram)
        self.round_trips.update(other.round_trips)
        self.per_second.update(other.per_second)
        self.failures += other.failures
        self.cut_short += other.cut_short
        self.out_of_range += other.out_of_range

    def percentiles_ms(self, qs: Iterable[float]) -> list[float]:
        """The histogram's value at each percentile q (0..100), in ms; ValueError when empty."""
        if not self.count:
            raise ValueError("percentile of no samples")
        return [self.histogram.get_value_at_percentile(q) / 1000 for q in qs]

    def mean_ms(self) -> float:
        return float(self.histogram.get_mean_value()) / 1000

    def max_ms(self) -> float:
        return float(self.histogram.get_max_value()) / 1000

    def to_wire(self) -> dict[str, Any]:
        """A msgpack- and JSON-safe dict (string keys, base64 histogram)."""
        return {
            "histogram": self.histogram.encode().decode("ascii"),
            "count": self.count,
            "round_trips": {str(k): v for k, v in self.round_trips.items()},
            "per_second": {str(k): v for k, v in self.per_second.items()},
            "failures": self.failures,
            "cut_short": self.cut_short,
            "out_of_range": self.out_of_range,
        }

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> OpSamples:
        samples = cls(
            round_trips=Counter({int(k): int(v) for k, v in doc["round_trips"].items()}),
            per_second=Counter({int(k): int(v) for k, v in doc["per_second"].items()}),
            failures=int(doc["failures"]),
            cut_short=int(doc.get("cut_short", 0)),
            out_of_range=int(doc.get("out_of_range", 0)),
        )
        samples.histogram.decode_and_add(doc["histogram"])
        if samples.count != int(doc["count"]):
            raise ValueError(f"histogram holds {samples.count} samples, its sender counted {doc['count']}")
        return samples


def ops_to_wire(ops: Mapping[str, OpSamples]) -> dict[str, dict[str, Any]]:
    return {op: s.to_wire() for op, s in ops.items()}


def ops_from_wire(doc: Mapping[str, Mapping[str, Any]]) -> dict[str, OpSamples]:
    return {op: OpSamples.from_wire(data) for op, data in doc.items()}


def merge_ops(parts: Iterable[Mapping[str, OpSamples]]) -> dict[str, OpSamples]:
    """The sum of several processes' states (the inputs are left as they are)."""
    merged: dict[str, OpSamples] = {}
    for part in parts:
        for op, samples in part.items():
            merged.setdefault(op, OpSamples()).merge(samples)
    return merged


class Recorder:
    """Collects samples per operation name in one process.

    `started_at` (wall-clock seconds) is the origin of the per-second counts; every
    process of a run must share it (`qbench load` passes one to every process).
    With `keep_raw`, every latency is also kept in float ms (a test aid: memory grows).
    """

    def __init__(self, started_at: float | None = None, *, keep_raw: bool = False) -> None:
        self.ops: dict[str, OpSamples] = {}
        self.started_at = time.time() if started_at is None else started_at
        self.raw: dict[str, list[float]] | None = {} if keep_raw else None
        self.stopped = False
        """Set once this process's users have all stopped: no sample comes after."""
        self.reports = 0

    def _op(self, op: str) -> OpSamples:
        samples = self.ops.get(op)
        if samples is None:
            samples = self.ops[op] = OpSamples()
        return samples

    def record(
        self, op: str, latency_ms: float, *, round_trips: int | None = None, done_at: float | None = None
    ) -> None:
        """One completed operation; `done_at` (wall clock) defaults to now."""
        elapsed = (time.time() if done_at is None else done_at) - self.started_at
        self._op(op).record(latency_ms, round_trips=round_trips, second=max(int(elapsed), 0))
        if self.raw is not None:
            self.raw.setdefault(op, []).append(latency_ms)

    def failure(self, op: str) -> None:
        self._op(op).failures += 1

    def cut_short(self, op: str) -> None:
        """A call of `op` interrupted when its user was stopped (not a failure, not a sample)."""
        self._op(op).cut_short += 1

    def report(self, **extra: Any) -> dict[str, Any]:
        """This process's cumulative state as one report (`seq` counts up from 1); `final`
        when the users had stopped before it was taken."""
        self.reports += 1
        return {
            "v": WIRE_VERSION,
            "seq": self.reports,
            "final": self.stopped,
            "at": time.time(),
            "ops": ops_to_wire(self.ops),
            **extra,
        }

    def dump_raw(self, directory: Path) -> Path | None:
        """Write the raw samples (float ms per op) to `directory/raw-<pid>.json`."""
        if self.raw is None:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"raw-{os.getpid()}.json"
        path.write_text(json.dumps(self.raw))
        return path


@dataclass
class WorkerState:
    """What the master knows of one worker: its latest report and how many it sent."""

    reports: int = 0
    latest: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return bool(self.latest and self.latest["final"])

    def op_counts(self) -> dict[str, int]:
        return {op: int(d["count"]) for op, d in (self.latest or {}).get("ops", {}).items()}


class Collector:
    """The master's view: every worker's latest cumulative report, summed on demand."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.errors: list[str] = []

    def expect(self, worker: str) -> None:
        """A worker connected: from now on its final report is owed."""
        self.workers.setdefault(worker, WorkerState())

    def receive(self, worker: str, report: Mapping[str, Any]) -> None:
        state = self.workers.setdefault(worker, WorkerState())
        state.reports += 1
        if report.get("v") != WIRE_VERSION:
            self._error(f"worker {worker} sent report version {report.get('v')!r}, expected {WIRE_VERSION}")
            return
        if report.get("error"):
            self._error(f"worker {worker}: {report['error']}")
        if state.latest is None or int(report["seq"]) > int(state.latest["seq"]):
            state.latest = dict(report)

    def _error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def merged(self) -> dict[str, OpSamples]:
        """The sum of every worker's latest state."""
        return merge_ops(ops_from_wire(s.latest["ops"]) for s in self.workers.values() if s.latest)

    def missing_final(self) -> list[str]:
        """Workers whose final report (sent after their users stopped) has not arrived."""
        return sorted(w for w, s in self.workers.items() if not s.final)

    def reported_until(self) -> float | None:
        """Wall-clock time up to which every worker's samples are in (None: some sent nothing)."""
        times = [float(s.latest["at"]) if s.latest else None for s in self.workers.values()]
        if not times or any(t is None for t in times):
            return None
        return min(t for t in times if t is not None)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per worker: reports received, whether the final one came, operations per op."""
        return {
            w: {"reports": s.reports, "final": s.final, "ops": s.op_counts()}
            for w, s in sorted(self.workers.items())
        }


# -- the results file: written by the master (or the local process), read by the harness --


@dataclass(frozen=True, kw_only=True)
class RunSamples:
    """The merged state of a whole run, as the master saw it."""

    ops: dict[str, OpSamples]
    workers: dict[str, dict[str, Any]]
    """Per worker: reports, final, ops (empty for a local run)."""
    errors: list[str]


def write_results_file(
    path: Path,
    *,
    ops: Mapping[str, OpSamples],
    workers: Mapping[str, Mapping[str, Any]] | None = None,
    errors: Iterable[str] = (),
) -> None:
    doc = {
        "v": WIRE_VERSION,
        "ops": ops_to_wire(ops),
        "workers": dict(workers or {}),
        "errors": list(errors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def read_results_file(path: Path) -> RunSamples:
    doc: dict[str, Any] = json.loads(path.read_text())
    if doc.get("v") != WIRE_VERSION:
        raise ValueError(f"{path}: results version {doc.get('v')!r}, expected {WIRE_VERSION}")
    return RunSamples(ops=ops_from_wire(doc["ops"]), workers=dict(doc["workers"]), errors=list(doc["errors"]))


def rate_window(per_second: Mapping[int, int], *, until_s: float, window_s: int) -> tuple[float, int] | None:
    """Operations per second over the last `window_s` whole seconds before `until_s`
    (seconds since the run's origin), and how many seconds that was; None before the
    first whole second."""
    end = math.floor(until_s)
    start = max(0, end - window_s)
    if end <= start:
        return None
    return sum(per_second.get(t, 0) for t in range(start, end)) / (end - start), end - start


RECORDER = Recorder(keep_raw=bool(os.environ.get("QBENCH_RAW_SAMPLES_DIR")))
"""This process's recorder (one per Locust process); `QBENCH_RAW_SAMPLES_DIR` keeps raw samples too."""
