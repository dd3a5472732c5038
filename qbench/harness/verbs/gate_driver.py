"""`qbench gate run --driver X --base SPEC --head SPEC` and `qbench gate calibrate --driver X`.

Wired from `verbs/gate.py` (its `--driver` flag). Exit codes: 0 pass (or inconclusive, or
no baseline yet), 1 regression, 2 cannot run (bad input, or a side that could not be built
or measured; one line on stderr with the reason).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.agent import (
    ENV_HANDICAP_ENQUEUE_US,
    ENV_HANDICAP_JOB_US,
    ENV_HANDICAP_PICKUP_MS,
    AgentError,
)
from qbench.harness.errors import UsageError
from qbench.harness.experiments.driver_gate import (
    DRIVER_PLAN,
    FULL_SIZES,
    MEASURES,
    MODE,
    QUICK_MODE,
    QUICK_PLAN,
    QUICK_SIZES,
    SideSetup,
    judge,
    measure,
    parse_tolerances,
    write_outputs,
)
from qbench.harness.infra.redis_server import RedisUnavailableError
from qbench.harness.peers.registry import discover
from qbench.harness.peers.runner import DriverFailedError
from qbench.harness.results.rows import METRICS_FILE, Row, code_source, run_metadata, write_metrics
from qbench.harness.results.runs import RunFolder, start_run
from qbench.harness.results.stats import median
from qbench.harness.timing.placement import PlacementError, choose_cpu
from qbench.harness.timing.specs import (
    SideSpec,
    SpecError,
    ensure_side_env,
    entry_point_in,
    materialized,
    parse_spec,
)
from qbench.loader import is_reference

CANNOT_RUN = (SpecError, DriverFailedError, AgentError, RedisUnavailableError, OSError)


EXTERNAL_REFUSAL = (
    "external (non-Python) drivers are not gated: both sides would run the one driver folder "
    "qbench holds, whatever --base and --head say, and its enqueue CPU is spent in a child the "
    "producer agent does not time (compare two `qbench peers` runs instead; docs/gate.md)"
)


@dataclass(frozen=True)
class DriverChoice:
    """What `--driver` names: a ref both sides load, or an entry point each side resolves
    in its own environment; and the requirements a requirement SPEC edits."""

    name: str
    ref: str | None
    requirements: str | None


def choose_driver(text: str) -> DriverChoice:
    text = text.strip()
    registry = discover()
    if text in registry.specs:
        spec = registry.specs[text]
        path = spec.requirements
        if spec.external is not None:
            raise UsageError(f"--driver {text}: {EXTERNAL_REFUSAL}")
        return DriverChoice(spec.name, spec.ref, path.read_text() if path is not None else None)
    if is_reference(text) and text.endswith(".toml"):
        raise UsageError(f"--driver {text}: {EXTERNAL_REFUSAL}")
    if is_reference(text):
        module, _, attr = text.rpartition(":")
        if module.endswith(".py") or "/" in module:
            text = f"{Path(module).resolve()}:{attr}"
        name = re.sub(r"[^a-z0-9_.+=-]", "_", attr.lower()) or "driver"
        return DriverChoice(name, text, None)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", text):
        raise UsageError(f"--driver: {text!r} is not a driver name or module:Class")
    return DriverChoice(text, None, None)


def _repo() -> Path:
    done = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else Path.cwd()


def _spec(flag: str, text: str, choice: DriverChoice) -> SideSpec:
    try:
        spec = parse_spec(text, repo=_repo())
    except SpecError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if spec.kind == "requirement" and choice.requirements is None and choice.ref is None:
        raise UsageError(
            f"{flag}: a requirement line needs a driver qbench knows (one with a requirements file), "
            f"not {choice.name!r}, which each side's own install provides"
        )
    return spec


def _cpu(choice: str | None) -> int | None:
    try:
        return choose_cpu(choice)
    except PlacementError as exc:
        raise UsageError(str(exc)) from None


class NoBaseline(Exception):
    """The base has no such driver yet (the pull request that adds it): nothing to compare."""


@contextmanager
def built_sides(
    choice: DriverChoice,
    base: SideSpec,
    head: SideSpec,
    *,
    work_dir: Path,
    head_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[SideSetup, SideSetup]]:
    """Both sides' environments (built or reused) and driver refs; checkouts of git refs
    live for the block."""
    with ExitStack() as stack:
        setups = []
        for label, spec in (("base", base), ("head", head)):
            tree = stack.enter_context(materialized(spec, label))
            env = ensure_side_env(
                spec,
                label=label,
                checkout=tree,
                driver_requirements=choice.requirements,
                log=work_dir / f"{label}-env.log",
            )
            ref = choice.ref or entry_point_in(env.python, choice.name)
            if ref is None:
                if label == "base":
                    raise NoBaseline(
                        f"the base ({spec.describe()}) has no qbench.drivers entry point {choice.name!r}"
                    )
                raise SpecError(f"head: no qbench.drivers entry point {choice.name!r} in {spec.describe()}")
            facts = {
                "spec": spec.text,
                "kind": spec.kind,
                "commit": spec.commit,
                "describe": spec.describe(),
                "env_key": env.key,
                "env_reused": env.reused,
                "requirements": env.requirements,
                "checkout_digest": env.checkout_digest,
                "ref": ref,
                "python": env.python,
            }
            extra = dict(head_env or {}) if label == "head" else {}
            setups.append(SideSetup(label, choice.name, ref, env.python, extra, facts))
        yield setups[0], setups[1]


def _say(line: str) -> None:
    print(f"gate: {line}", file=sys.stderr, flush=True)


def _cannot_run(run: RunFolder, out: Path, summary: Path | None, reason: str) -> int:
    text = f"## qbench gate: cannot run\n\n{reason}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "GATE.md").write_text(text)
    (out / "gate.json").write_text(json.dumps({"status": "error", "reason": reason}, indent=2) + "\n")
    _append(summary, text)
    run.finish("failed", reason=reason)
    print(f"qbench: error: gate cannot run: {reason}", file=sys.stderr)
    return 2


def _append(path: Path | None, text: str) -> None:
    if path is not None:
        with path.open("a") as fh:
            fh.write(text + "\n")


def run_live(args: argparse.Namespace) -> int:
    """`qbench gate run --driver X`."""
    try:
        tolerances = parse_tolerances(args.tolerance)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if getattr(args, "redis_url", None):
        raise UsageError(
            "--redis-url: a driver gate starts a redis-server per side (it flushes them each round)"
        )
    choice = choose_driver(args.driver)
    base, head = _spec("--base", str(args.base), choice), _spec("--head", str(args.head), choice)
    cpu = _cpu(args.cpu)
    plan, sizes = (QUICK_PLAN, QUICK_SIZES) if args.quick else (DRIVER_PLAN, FULL_SIZES)
    mode = QUICK_MODE if args.quick else MODE
    out: Path = args.out
    # The code that runs is the code at the start: a commit landing during a 7-minute gate
    # (a shared checkout) must not be recorded as the one that measured.
    source = code_source()
    work = Path(tempfile.mkdtemp(prefix="qbench-gate-work-"))  # logs and sinks: not in --out
    stack = ExitStack()
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    with stack, start_run(out, "gate", {"mode": mode, "driver": choice.name}) as run:
        try:
            with built_sides(choice, base, head, work_dir=work) as (base_setup, head_setup):
                _say(f"base {base.describe()}, head {head.describe()}: environments ready; timing")
                rows, facts = measure(
                    base_setup,
                    head_setup,
                    work_dir=work,
                    plan=plan,
                    sizes=sizes,
                    cpu=cpu,
                    progress=_say,
                )
        except NoBaseline as exc:
            text = f"## qbench gate, driver `{choice.name}`: no baseline yet\n\n{exc}: nothing to compare.\n"
            (out / "GATE.md").write_text(text)
            (out / "gate.json").write_text(json.dumps({"status": "no-baseline", "reason": str(exc)}) + "\n")
            _append(args.summary, text)
            print(text)
            return 0
        except CANNOT_RUN as exc:
            return _cannot_run(
                run, out, args.summary, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
        run.meta.update(
            run_metadata(
                server=facts["server"],
                mode=mode,
                extra={
                    **facts,
                    "driver": choice.name,
                    "tolerances": tolerances,
                    "tolerance": tolerances["worker_cpu"],
                    "command": ["qbench", *sys.argv[1:]],
                },
            )
        )
        run.meta["git"] = source
        write_metrics(out / METRICS_FILE, rows)
        run.checkpoint()
        status, text = write_outputs(out, rows, run.meta)
        _append(args.summary, text)
        print(text)
        print(f"gate: {status}; {out / 'gate.json'}, {out / 'GATE.md'}")
        return 1 if status == "FAIL" else 0


# -- calibration -----------------------------------------------------------------------------------
GRID = [x / 1000 for x in range(5, 101, 5)] + [x / 100 for x in range(15, 201, 5)]


@dataclass(frozen=True)
class Injection:
    """One kind of calibration gate: a regression injected at the head's agent, alone."""

    kind: str
    env_var: str
    sizes: str
    """What its size is set from, in words."""


INJECTIONS: tuple[Injection, ...] = (
    Injection("enqueue", ENV_HANDICAP_ENQUEUE_US, "+{pct} of the measured enqueue CPU per call"),
    Injection("job", ENV_HANDICAP_JOB_US, "+{pct} of the measured worker CPU per job"),
    Injection("pickup", ENV_HANDICAP_PICKUP_MS, "a sleep of the measured pickup p50 before each handler"),
)
INJECTION_BY_KIND = {i.kind: i for i in INJECTIONS}
DETECTED_BY = {
    "enqueue_cpu": "enqueue",
    "worker_cpu": "job",
    "process_rate": "job",
    "pickup_p50": "pickup",
    "pickup_p99": "pickup",
}
"""Which injected gates count as a measure's detections (the processing rate has no
injection of its own: the +CPU per job slows the drain, so its gates are the rate's)."""


def unhandicapped_costs(rows: Sequence[Row]) -> dict[str, float]:
    """Medians over every round of both sides of an A/A gate (both unhandicapped): enqueue
    CPU per call, worker CPU per job and pickup p50, in ns."""

    def both_sides(metric: str) -> float:
        values = [r.value for r in rows if r.metric == metric]
        return median(values) if values else 0.0

    return {
        "enqueue_cpu_ns_per_job": both_sides("enqueue_cpu_ns_per_job"),
        "worker_cpu_ns_per_job": both_sides("worker_cpu_ns_per_job"),
        "pickup_p50_ns": both_sides("pickup_p50_ns"),
        "rounds": float(len({r.repeat for r in rows})),
    }


def size_handicaps(costs: Mapping[str, float], regression: float) -> dict[str, dict[str, str]]:
    """One handicap per injection kind, each alone: `regression` (0.10: +10%) of the measured
    enqueue CPU per call, of the measured worker CPU per job, and a pickup delay equal to the
    measured pickup p50 (at least 0.2 ms: a shorter sleep is mostly the sleep's own overhead)."""
    enqueue_us = costs["enqueue_cpu_ns_per_job"] * regression / 1000
    job_us = costs["worker_cpu_ns_per_job"] * regression / 1000
    pickup_ms = max(costs["pickup_p50_ns"] / 1e6, 0.2)
    return {
        "enqueue": {ENV_HANDICAP_ENQUEUE_US: f"{enqueue_us:.3f}"},
        "job": {ENV_HANDICAP_JOB_US: f"{job_us:.3f}"},
        "pickup": {ENV_HANDICAP_PICKUP_MS: f"{pickup_ms:.3f}"},
    }


def intended_ratios(
    costs: Mapping[str, float], handicaps: Mapping[str, Mapping[str, str]]
) -> dict[str, float]:
    """head/base each injection should give on its own measure, from the measured costs."""

    def ratio(metric: str, added_ns: float) -> float:
        return 1 + added_ns / costs[metric] if costs[metric] > 0 else math.nan

    return {
        "enqueue": ratio(
            "enqueue_cpu_ns_per_job", float(handicaps["enqueue"][ENV_HANDICAP_ENQUEUE_US]) * 1000
        ),
        "job": ratio("worker_cpu_ns_per_job", float(handicaps["job"][ENV_HANDICAP_JOB_US]) * 1000),
        "pickup": ratio("pickup_p50_ns", float(handicaps["pickup"][ENV_HANDICAP_PICKUP_MS]) * 1e6),
    }


def _regression(text: str | None) -> float:
    raw = (text or "10%").strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--regression: expected a percentage like 10%, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise UsageError(f"--regression: {text!r} is out of range (0..100%)")
    return value


def run_calibrate(args: argparse.Namespace) -> int:
    """`qbench gate calibrate --driver X`: A/A gates, and gates each with one regression
    injected at the head's agent (enqueue CPU, worker CPU per job, pickup delay), in turn."""
    if args.runs < 1:
        raise UsageError(f"--runs: must be >= 1, got {args.runs}")
    regression = _regression(getattr(args, "regression", None))
    choice = choose_driver(args.driver)
    spec = _spec("--root", str(args.root), choice)
    cpu = _cpu(args.cpu)
    plan, sizes = (QUICK_PLAN, QUICK_SIZES) if args.quick else (DRIVER_PLAN, FULL_SIZES)
    out: Path = args.out
    source = code_source()  # the code at the start (see run_live)
    work = Path(tempfile.mkdtemp(prefix="qbench-gate-work-"))  # logs and sinks: not in --out
    stack = ExitStack()
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    kinds = ["aa", *(i.kind for i in INJECTIONS)]
    total = len(kinds) * args.runs
    with stack, start_run(out, "calibration", {"mode": "calibration-driver", "driver": choice.name}) as run:
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        handicaps: dict[str, dict[str, str]] = {}
        costs: dict[str, float] = {}
        all_rows: list[Row] = []
        try:
            with built_sides(choice, spec, spec, work_dir=work) as (base_setup, head_setup):
                for index in range(total):
                    kind = kinds[index % len(kinds)]  # aa, enqueue, job, pickup, aa, ...
                    head_setup.env = dict(handicaps[kind]) if kind != "aa" else {}
                    rows, facts = measure(
                        base_setup, head_setup, work_dir=work, plan=plan, sizes=sizes, cpu=cpu
                    )
                    if not handicaps:  # the first gate is A/A: size the injections from it
                        costs = unhandicapped_costs(rows)
                        handicaps = size_handicaps(costs, regression)
                        run.meta["handicaps"] = handicaps
                        _say(f"unhandicapped costs {costs}; handicaps {handicaps}")
                    timings, _ = judge(rows, tolerances={})
                    gate = {
                        "kind": kind,
                        "seconds": facts["gate_seconds"],
                        "rounds": facts["rounds"],
                        "handicaps": head_setup.env,
                        "measures": {
                            v.measure: None if v.ratio is None else [v.ratio.estimate, v.ratio.lo, v.ratio.hi]
                            for v in timings
                        },
                    }
                    results[kind].append(gate)
                    all_rows += [
                        Row(
                            r.experiment,
                            r.variant,
                            f"{r.params};gate={index};injected={kind}",
                            r.metric,
                            r.value,
                            r.unit,
                            r.repeat,
                        )
                        for r in rows
                    ]
                    _say(f"calibration gate {index + 1}/{total} ({kind}): {_short(gate['measures'])}")
        except CANNOT_RUN as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            run.finish("failed", reason=reason)
            print(f"qbench: error: calibration cannot run: {reason}", file=sys.stderr)
            return 2
        except NoBaseline as exc:
            raise UsageError(f"--root: {exc}") from None
        doc = score(results, runs=args.runs)
        doc.update(
            driver=choice.name,
            spec=spec.text,
            regression=regression,
            unhandicapped=costs,
            handicaps=handicaps,
            quick=bool(args.quick),
            injections=achieved(results, costs, handicaps),
        )
        run.meta.update(
            run_metadata(server={}, mode="calibration-driver", extra={"command": ["qbench", *sys.argv[1:]]})
        )
        run.meta["git"] = source
        write_metrics(out / METRICS_FILE, all_rows)
        print(write_calibration(out, doc))
    return 0


def _short(measures: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v[0]:.3f} ({v[1]:.3f}..{v[2]:.3f})" for k, v in measures.items() if v)


TARGET_MEASURE = {"enqueue": "enqueue_cpu", "job": "worker_cpu", "pickup": "pickup_p50"}
"""The measure each injection is sized against."""


def achieved(
    results: Mapping[str, list[dict[str, Any]]],
    costs: Mapping[str, float],
    handicaps: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Per injection: its size, the head/base it was meant to give on its own measure, and
    the median head/base its gates measured, on that measure and on every other one (so an
    injection that moves another measure shows it)."""
    intended = intended_ratios(costs, handicaps) if handicaps else {}
    found: dict[str, Any] = {}
    for injection in INJECTIONS:
        gates = results.get(injection.kind, [])
        medians = {}
        for m in MEASURES:
            estimates = [g["measures"][m.name][0] for g in gates if g["measures"].get(m.name)]
            medians[m.name] = median(estimates) if estimates else None
        found[injection.kind] = {
            "env": dict(handicaps.get(injection.kind, {})),
            "sized": injection.sizes,
            "measure": TARGET_MEASURE[injection.kind],
            "intended_ratio": intended.get(injection.kind),
            "achieved_ratio": medians[TARGET_MEASURE[injection.kind]],
            "achieved_ratios_all_measures": medians,
        }
    return found


def _fails(gates: Sequence[Mapping[str, Any]], name: str, tolerance: float) -> int:
    return sum(1 for g in gates if g["measures"].get(name) and g["measures"][name][1] > 1 + tolerance)


def score(results: Mapping[str, list[dict[str, Any]]], *, runs: int) -> dict[str, Any]:
    """False alarms (A/A gates) and detections (the gates injecting the measure's own kind of
    regression, DETECTED_BY) per measure at every tolerance of GRID. The recommended tolerance
    is the smallest meeting both targets (<= 1 in 20 false alarms, >= 19 in 20 detections,
    scaled to `runs`), or None with the reason."""
    max_false = runs // 20
    min_detect = runs - runs // 20
    measures: dict[str, Any] = {}
    for m in MEASURES:
        aa, injected = results["aa"], results[DETECTED_BY[m.name]]
        table = [
            {"tolerance": t, "false_alarms": _fails(aa, m.name, t), "detections": _fails(injected, m.name, t)}
            for t in GRID
        ]
        meeting = [r for r in table if r["false_alarms"] <= max_false and r["detections"] >= min_detect]
        quiet = [r for r in table if r["false_alarms"] <= max_false]
        if meeting:
            best = meeting[0]
            why = None
        elif not quiet:
            best = None
            why = f"more than {max_false} false alarm(s) in {len(aa)} A/A gates even at {GRID[-1]:.0%}"
        else:
            best = None
            q = quiet[0]
            why = (
                f"at {q['tolerance']:.1%}, the smallest with <= {max_false} false alarm(s), only "
                f"{q['detections']}/{len(injected)} detected"
            )
        default = m.tolerance
        measures[m.name] = {
            "detected_by": DETECTED_BY[m.name],
            "recommended_tolerance": None if best is None else best["tolerance"],
            "why_none": why,
            "at_recommended": None
            if best is None
            else {"false_alarms": best["false_alarms"], "detections": best["detections"]},
            "at_default": {
                "tolerance": default,
                "false_alarms": _fails(aa, m.name, default),
                "detections": _fails(injected, m.name, default),
            },
            "aa_ratios": [g["measures"].get(m.name) for g in aa],
            "injected_ratios": [g["measures"].get(m.name) for g in injected],
        }
    seconds = [g["seconds"] for kind in results.values() for g in kind]
    return {
        "runs": runs,
        "gates": {kind: len(gates) for kind, gates in results.items()},
        "targets": {"max_false_alarms": max_false, "min_detections": min_detect},
        "measures": measures,
        "gate_seconds": {"median": median(seconds) if seconds else None, "max": max(seconds, default=None)},
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"x{value:.3f}"


def _in_measure_order(by_name: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) in MEASURES' order: calibration.json stores its keys sorted."""
    return [(m.name, by_name[m.name]) for m in MEASURES if m.name in by_name]


def calibration_markdown(doc: Mapping[str, Any]) -> str:
    from qbench.harness.results.render import markdown_table

    runs = doc["runs"]
    injections = doc.get("injections", {})
    sizing = []
    for kind, inj in injections.items():
        env = ", ".join(f"{k}={v}" for k, v in inj["env"].items())
        others = ", ".join(
            f"{name} {_ratio(r)}"
            for name, r in _in_measure_order(inj["achieved_ratios_all_measures"])
            if name != inj["measure"]
        )
        sizing.append(
            [
                kind,
                f"`{env}`",
                inj["sized"].format(pct=f"{doc.get('regression', 0.1):.0%}"),
                inj["measure"],
                _ratio(inj["intended_ratio"]),
                _ratio(inj["achieved_ratio"]),
                others,
            ]
        )
    body = []
    for name, m in _in_measure_order(doc["measures"]):
        at = m["at_default"]
        rec = m["recommended_tolerance"]
        found = m["at_recommended"]
        body.append(
            [
                name,
                m["detected_by"],
                f"{at['tolerance']:.1%}: {at['false_alarms']}/{len(m['aa_ratios'])} false, "
                f"{at['detections']}/{len(m['injected_ratios'])} detected",
                f"none: {m['why_none']}"
                if rec is None
                else f"**{rec:.1%}** ({found['false_alarms']} false, {found['detections']} detected)",
            ]
        )
    seconds = doc["gate_seconds"]
    costs = doc.get("unhandicapped", {})
    lines = [
        f"# Driver gate calibration: `{doc['driver']}` ({doc['spec']})",
        "",
        f"{runs} A/A gates (the same environment on both sides: a failure is a false alarm) and {runs} "
        "gates per injected regression, each gate injecting one regression alone at the head's agent "
        f"(the library is never changed), in turn{' (--quick sizes)' if doc.get('quick') else ''}. "
        f"Gate time: median {seconds['median'] or 0:.0f} s, max {seconds['max'] or 0:.0f} s.",
        "",
        "Sizes, from the first A/A gate's medians over all its rounds, both sides: enqueue CPU "
        f"{costs.get('enqueue_cpu_ns_per_job', 0) / 1000:.2f} µs/call, worker CPU "
        f"{costs.get('worker_cpu_ns_per_job', 0) / 1000:.2f} µs/job, pickup p50 "
        f"{costs.get('pickup_p50_ns', 0) / 1e6:.3f} ms. Achieved: the median head/base of the gates "
        "injecting it.",
        "",
        markdown_table(
            ["injected", "setting", "sized as", "on", "intended", "achieved", "other measures (median)"],
            sizing,
        ),
        "",
        f"Targets: at most {doc['targets']['max_false_alarms']} false alarm(s) and at least "
        f"{doc['targets']['min_detections']} detection(s) in {runs} (1 in 20 and 19 in 20, scaled). "
        "Recommended: the smallest tolerance meeting both.",
        "",
        markdown_table(
            ["measure", "detections from", "at the default tolerance", "recommended tolerance"], body
        ),
        "",
    ]
    return "\n".join(lines)


def write_calibration(out_dir: Path, doc: Mapping[str, Any]) -> str:
    """calibration.json and CALIBRATION.md of a driver calibration; the markdown."""
    (out_dir / "calibration.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    text = calibration_markdown(doc)
    (out_dir / "CALIBRATION.md").write_text(text)
    return text


def render_saved_calibration(out_dir: Path) -> Path:
    """Re-render a driver calibration's CALIBRATION.md from its calibration.json."""
    doc = json.loads((out_dir / "calibration.json").read_text())
    path = out_dir / "CALIBRATION.md"
    path.write_text(calibration_markdown(doc))
    return path
