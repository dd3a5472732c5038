"""Comparing two result sets for `qbench gate`: which rows got worse.

Deterministic counters (units in `DETERMINISTIC_UNITS`, and pytest-benchmark
`extra_info` counters) are held exact: any that gets worse fails. Timings are noisy
across machines and runs, so they are judged as ratios measured inside each set (a
variant against a reference variant from the same job) and compared with a tolerance.
"""

from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qbench.harness.results.rows import DETERMINISTIC_UNITS, METRICS_FILE, RUN_FILE, Row, params, read_metrics
from qbench.harness.results.stats import median

TimingMode = Literal["auto", "ratio", "absolute", "off"]
Status = Literal["FAIL", "ok", "better", "missing", "new", "info"]

DEFAULT_TOLERANCE = 0.10
LOWER_IS_BETTER_TIMING_UNITS = frozenset({"s", "ms", "us", "ns"})
RATE_SUFFIX = "/s"
HIGHER_IS_BETTER_RATES = frozenset({"ops/s", "jobs/s", "requests/s", "submissions/s"})
"""Throughputs. Any other rate (`commands/s`, `round_trips/s`: an idle cost) is worse when higher."""
HIGHER_IS_BETTER_METRICS = ("*completed*", "*processed*", "*recovered*", "*saved*", "*reduction*")
"""Counters where more is better (most counted things are costs: more is worse)."""
UNJUDGED_TIMING_METRICS = ("*_max", "*max_*", "ops_per_s")
"""A maximum is one sample, `ops_per_s` one second of a load run's time series: too noisy
to gate on, so they are listed but never judged."""
BENCH_TIMING_STAT = "min"
"""pytest-benchmark statistic judged: the fastest round is the least disturbed by other load."""


class GateInputError(ValueError):
    """Input the gate cannot use: a result set it cannot read, a bad tolerance, a timing
    mode the two sets do not allow (one line; the verb exits 2)."""


@dataclass(frozen=True)
class ResultSet:
    source: str
    kind: Literal["metrics", "pytest-benchmark"]
    rows: list[Row]

    def variants(self) -> list[str]:
        return sorted({r.variant for r in self.rows})


# -- loading -------------------------------------------------------------------------


def load_result_set(path: Path) -> ResultSet:
    """A results dir (metrics.csv), a metrics.csv file, or a pytest-benchmark JSON file."""
    if path.is_dir():
        metrics = path / METRICS_FILE
        if not metrics.is_file():
            raise GateInputError(f"{path}: no {METRICS_FILE} in this directory")
        path = metrics
    if not path.is_file():
        raise GateInputError(f"{path}: no such file or directory")
    if path.suffix == ".json":
        rows = _bench_rows(path)
        kind: Literal["metrics", "pytest-benchmark"] = "pytest-benchmark"
    else:
        try:
            rows = read_metrics(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GateInputError(str(exc).splitlines()[0]) from None
        kind = "metrics"
    if not rows:
        raise GateInputError(f"{path}: holds no results")
    return ResultSet(str(path), kind, rows)


def incomplete_run(path: Path) -> str | None:
    """Why the run at `path` (a results dir or its metrics.csv) is incomplete, from the
    `failures` its run.json records (a peers run whose drivers failed), else None: such a
    run's missing rows would read as `missing`, never as a failure, so the gate refuses it."""
    folder = path if path.is_dir() else path.parent
    try:
        meta = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    failures = meta.get("failures") if isinstance(meta, dict) else None
    if not failures or not isinstance(failures, dict):
        return None
    return f"{folder}: incomplete run: driver(s) {', '.join(sorted(failures))} failed"


def _bench_rows(path: Path) -> list[Row]:
    try:
        doc = json.loads(path.read_text())
        benchmarks = doc["benchmarks"]
        if not isinstance(benchmarks, list):
            raise TypeError("benchmarks is not a list")
        return [row for bench in benchmarks for row in _bench_to_rows(bench)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise GateInputError(
            f"{path}: not a pytest-benchmark JSON file ({type(exc).__name__}: {exc})"
        ) from None


def _bench_to_rows(bench: dict[str, Any]) -> list[Row]:
    """One benchmark as rows: variant from its `preset`/`variant` param, the rest as params."""
    bench_params = dict(bench.get("params") or {})
    variant = str(bench_params.pop("preset", bench_params.pop("variant", "-")))
    experiment = str(bench.get("group") or bench["name"].split("[", 1)[0])
    name = bench["name"].split("[", 1)[0]
    cell = params(test=name, **{k: v for k, v in bench_params.items()})
    rows = [Row(experiment, variant, cell, BENCH_TIMING_STAT, float(bench["stats"][BENCH_TIMING_STAT]), "s")]
    for key, value in (bench.get("extra_info") or {}).items():
        unit = counter_unit(key)
        if unit and isinstance(value, int | float) and not isinstance(value, bool):
            rows.append(Row(experiment, variant, cell, key, float(value), unit))
    return rows


def counter_unit(key: str) -> str | None:
    """The deterministic unit an `extra_info` key counts (`round_trips_per_op` -> round_trips)."""
    for unit in sorted(DETERMINISTIC_UNITS, key=len, reverse=True):
        if key == unit or key.startswith(unit + "_") or key.endswith("_" + unit):
            return unit
    return None


# -- comparing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: Status
    kind: Literal["counter", "timing"]
    experiment: str
    variant: str
    params: str
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None
    """Relative change in the bad direction's sign convention: >0 is worse."""
    rule: str


@dataclass
class GateReport:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "FAIL"]

    @property
    def compared(self) -> int:
        return sum(v.status in ("FAIL", "ok", "better") for v in self.verdicts)


Key = tuple[str, str, str, str]
"""(experiment, variant, params, metric)"""


def _is_timing(unit: str, metric: str = "") -> bool:
    if any(fnmatch.fnmatch(metric, pattern) for pattern in UNJUDGED_TIMING_METRICS):
        return False
    return unit in LOWER_IS_BETTER_TIMING_UNITS or unit.endswith(RATE_SUFFIX)


def _higher_is_better(metric: str, unit: str) -> bool:
    if unit.endswith(RATE_SUFFIX):
        return unit in HIGHER_IS_BETTER_RATES
    return any(fnmatch.fnmatch(metric, pattern) for pattern in HIGHER_IS_BETTER_METRICS)


def _grouped(
    rows: Iterable[Row], variant_map: dict[str, str]
) -> tuple[dict[Key, list[float]], dict[Key, str]]:
    values: dict[Key, list[float]] = defaultdict(list)
    units: dict[Key, str] = {}
    for r in rows:
        key = (r.experiment, variant_map.get(r.variant, r.variant), r.params, r.metric)
        values[key].append(r.value)
        units[key] = r.unit
    return values, units


def compare(
    baseline: ResultSet,
    candidate: ResultSet,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    timings: TimingMode = "auto",
    reference: str = "baseline",
) -> GateReport:
    report = GateReport()
    variant_map: dict[str, str] = {}
    base_variants, cand_variants = baseline.variants(), candidate.variants()
    if len(base_variants) == 1 and len(cand_variants) == 1 and base_variants != cand_variants:
        # One variant per set (a load run): compare them with each other whatever their labels.
        variant_map = {cand_variants[0]: base_variants[0]}
        report.notes.append(
            f"paired single variants: candidate {cand_variants[0]} vs baseline {base_variants[0]}"
        )
    base_values, base_units = _grouped(baseline.rows, {})
    cand_values, cand_units = _grouped(candidate.rows, variant_map)

    for key in sorted(set(base_values) | set(cand_values)):
        unit = base_units.get(key) or cand_units[key]
        if unit not in DETERMINISTIC_UNITS:
            continue
        report.verdicts.append(_judge_counter(key, unit, base_values.get(key), cand_values.get(key), report))

    mode = _timing_mode(timings, baseline, candidate, reference, variant_map, report)
    if mode == "ratio":
        report.verdicts += _judge_ratios(base_values, base_units, cand_values, reference, tolerance)
    elif mode == "absolute":
        report.verdicts += _judge_absolute(base_values, base_units, cand_values, tolerance)
    return report


def _judge_counter(
    key: Key, unit: str, base: list[float] | None, cand: list[float] | None, report: GateReport
) -> Verdict:
    experiment, variant, cell, metric = key
    if base is None or cand is None:
        status: Status = "new" if base is None else "missing"
        value = max(cand or base or [0.0])
        return Verdict(
            status,
            "counter",
            experiment,
            variant,
            cell,
            metric,
            None if base is None else value,
            None if cand is None else value,
            None,
            f"exact {unit}",
        )
    for label, values in (("baseline", base), ("candidate", cand)):
        if len(set(values)) > 1:
            report.notes.append(
                f"{label}: {metric} [{variant} {cell}] differs across repeats: {sorted(set(values))}"
            )
    # The worst repeat speaks for a counter that should never vary.
    higher_better = _higher_is_better(metric, unit)
    b = min(base) if higher_better else max(base)
    c = min(cand) if higher_better else max(cand)
    worse = c < b if higher_better else c > b
    better = c > b if higher_better else c < b
    change = _relative(b, c, higher_better)
    status = "FAIL" if worse else "better" if better else "ok"
    rule = f"exact {unit}, {'more' if higher_better else 'less'} is better"
    return Verdict(status, "counter", experiment, variant, cell, metric, b, c, change, rule)


def _relative(base: float, cand: float, higher_better: bool) -> float | None:
    """Relative change, positive when worse."""
    if base == 0:
        return None if cand == 0 else (float("inf") if (cand < 0) == higher_better else float("-inf"))
    change = (cand - base) / abs(base)
    return -change if higher_better else change


def _timing_mode(
    requested: TimingMode,
    baseline: ResultSet,
    candidate: ResultSet,
    reference: str,
    variant_map: dict[str, str],
    report: GateReport,
) -> TimingMode:
    if requested in ("off", "absolute"):
        return requested
    has_reference = (
        all(reference in s.variants() and len(s.variants()) > 1 for s in (baseline, candidate))
        and not variant_map
    )
    if has_reference:
        return "ratio"
    if requested == "ratio":
        raise GateInputError(
            f"--timings ratio needs reference variant {reference!r} beside others in both sets "
            f"(baseline has {', '.join(baseline.variants())}; "
            f"candidate has {', '.join(candidate.variants())})"
        )
    report.notes.append(
        f"timings not judged: no reference variant {reference!r} beside others in both sets "
        "(use --timings absolute only for sets measured in the same job)"
    )
    return "off"


def _judge_ratios(
    base_values: dict[Key, list[float]],
    units: dict[Key, str],
    cand_values: dict[Key, list[float]],
    reference: str,
    tolerance: float,
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for key in sorted(base_values):
        experiment, variant, cell, metric = key
        unit = units[key]
        if not _is_timing(unit, metric) or variant == reference:
            continue
        ref_key = (experiment, reference, cell, metric)
        needed = (key in cand_values, ref_key in base_values, ref_key in cand_values)
        if not all(needed):
            continue
        b = _ratio(base_values[key], base_values[ref_key])
        c = _ratio(cand_values[key], cand_values[ref_key])
        if b is None or c is None:
            continue
        verdicts.append(
            _timing_verdict(key, unit, b, c, tolerance, f"ratio to {reference}, ±{tolerance:.0%}")
        )
    return verdicts


def _judge_absolute(
    base_values: dict[Key, list[float]],
    units: dict[Key, str],
    cand_values: dict[Key, list[float]],
    tolerance: float,
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for key in sorted(base_values):
        unit = units[key]
        if not _is_timing(unit, key[3]) or key not in cand_values:
            continue
        b = median(base_values[key])
        c = median(cand_values[key])
        verdicts.append(_timing_verdict(key, unit, b, c, tolerance, f"median {unit}, ±{tolerance:.0%}"))
    return verdicts


def _ratio(values: list[float], reference: list[float]) -> float | None:
    ref = median(reference)
    return None if ref == 0 else median(values) / ref


def _timing_verdict(key: Key, unit: str, b: float, c: float, tolerance: float, rule: str) -> Verdict:
    experiment, variant, cell, metric = key
    higher_better = _higher_is_better(metric, unit)
    change = _relative(b, c, higher_better)
    if change is None:
        status: Status = "ok"
    elif change > tolerance:
        status = "FAIL"
    elif change < -tolerance:
        status = "better"
    else:
        status = "ok"
    return Verdict(status, "timing", experiment, variant, cell, metric, b, c, change, rule)


# -- rendering -----------------------------------------------------------------------

_ORDER = {"FAIL": 0, "missing": 1, "better": 2, "new": 3, "ok": 4, "info": 5}


def format_report(report: GateReport, *, show_all: bool = False, max_rows: int = 200) -> str:
    shown = [v for v in report.verdicts if show_all or v.status != "ok"]
    shown.sort(key=lambda v: (_ORDER[v.status], v.experiment, v.variant, v.params, v.metric))
    header = [
        "status",
        "kind",
        "experiment",
        "variant",
        "params",
        "metric",
        "baseline",
        "candidate",
        "change",
        "rule",
    ]
    lines = [header] + [
        [
            v.status,
            v.kind,
            v.experiment,
            v.variant,
            v.params,
            v.metric,
            _fmt(v.baseline),
            _fmt(v.candidate),
            ""
            if v.change is None
            else f"{v.change:+.1%} worse"
            if v.change > 0
            else f"{-v.change:.1%} better",
            v.rule,
        ]
        for v in shown[:max_rows]
    ]
    out: list[str] = []
    if len(lines) > 1:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = [
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        if len(shown) > max_rows:
            out.append(f"... {len(shown) - max_rows} more rows")
    out += [f"note: {n}" for n in report.notes]
    counters = sum(v.kind == "counter" and v.status in ("FAIL", "ok", "better") for v in report.verdicts)
    timings = report.compared - counters
    if report.failed:
        kinds: defaultdict[str, int] = defaultdict(int)
        for v in report.failed:
            kinds[v.kind] += 1
        detail = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(kinds.items()))
        out.append(
            f"gate: FAILED: {len(report.failed)} regression(s) ({detail}) in {report.compared} compared"
        )
    else:
        out.append(f"gate: passed: {counters} counters held, {timings} timings within tolerance")
    return "\n".join(out)


def report_document(report: GateReport, *, baseline: str, candidate: str) -> dict[str, Any]:
    """The verdicts as JSON (`qbench gate --json FILE`): what a CI job keeps as an artifact."""
    return {
        "status": "FAIL" if report.failed else "pass",
        "baseline": baseline,
        "candidate": candidate,
        "compared": report.compared,
        "failed": len(report.failed),
        "notes": list(report.notes),
        "verdicts": [
            {
                "status": v.status,
                "kind": v.kind,
                "experiment": v.experiment,
                "variant": v.variant,
                "params": v.params,
                "metric": v.metric,
                "baseline": v.baseline,
                "candidate": v.candidate,
                "change": v.change,
                "rule": v.rule,
            }
            for v in report.verdicts
        ],
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}"


def parse_tolerance(text: str) -> float:
    """`10%` or `0.1` -> 0.1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise GateInputError(
            f"--tolerance: expected a percentage like 10% or a fraction like 0.1, got {text!r}"
        ) from None
    if not 0 <= value < 10:
        raise GateInputError(f"--tolerance: {text!r} is out of range")
    return value
