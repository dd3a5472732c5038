"""`qbench gate run --driver X --base SPEC --head SPEC` and `qbench gate calibrate --driver X`.

Wired from `verbs/gate.py` (its `--driver` flag). Exit codes: 0 pass (or inconclusive, or
no baseline yet), 1 regression, 2 cannot run (bad input, or a side that could not be built
or measured; one line on stderr with the reason).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
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
from qbench.harness.results.rows import METRICS_FILE, Row, run_metadata, write_metrics
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
            raise UsageError(f"--driver {text}: external (non-Python) drivers are not gated yet")
        return DriverChoice(spec.name, spec.ref, path.read_text() if path is not None else None)
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
        write_metrics(out / METRICS_FILE, rows)
        run.checkpoint()
        status, text = write_outputs(out, rows, run.meta)
        _append(args.summary, text)
        print(text)
        print(f"gate: {status}; {out / 'gate.json'}, {out / 'GATE.md'}")
        return 1 if status == "FAIL" else 0


# -- calibration -----------------------------------------------------------------------------------
REGRESSION_CPU = 0.10
"""Injected CPU regressions: +10% of the base's enqueue CPU per call and worker CPU per job."""
GRID = [x / 1000 for x in range(5, 101, 5)] + [x / 100 for x in range(15, 201, 5)]


def run_calibrate(args: argparse.Namespace) -> int:
    """`qbench gate calibrate --driver X`: A/A gates and gates with injected regressions."""
    if args.runs < 1:
        raise UsageError(f"--runs: must be >= 1, got {args.runs}")
    choice = choose_driver(args.driver)
    spec = _spec("--root", str(args.root), choice)
    cpu = _cpu(args.cpu)
    plan, sizes = (QUICK_PLAN, QUICK_SIZES) if args.quick else (DRIVER_PLAN, FULL_SIZES)
    out: Path = args.out
    work = Path(tempfile.mkdtemp(prefix="qbench-gate-work-"))  # logs and sinks: not in --out
    stack = ExitStack()
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    with stack, start_run(out, "calibration", {"mode": "calibration-driver", "driver": choice.name}) as run:
        results: dict[str, list[dict[str, Any]]] = {"aa": [], "injected": []}
        handicap: dict[str, str] = {}
        all_rows: list[Row] = []
        try:
            with built_sides(choice, spec, spec, work_dir=work) as (base_setup, head_setup):
                for index in range(2 * args.runs):
                    kind = "aa" if index % 2 == 0 else "injected"
                    head_setup.env = dict(handicap) if kind == "injected" else {}
                    rows, facts = measure(
                        base_setup, head_setup, work_dir=work, plan=plan, sizes=sizes, cpu=cpu
                    )
                    if not handicap:
                        handicap = size_handicaps(rows)
                        run.meta["handicaps"] = handicap
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
                            f"{r.params};gate={index}",
                            r.metric,
                            r.value,
                            r.unit,
                            r.repeat,
                        )
                        for r in rows
                    ]
                    _say(f"calibration gate {index + 1}/{2 * args.runs} ({kind}): {_short(gate['measures'])}")
        except CANNOT_RUN as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            run.finish("failed", reason=reason)
            print(f"qbench: error: calibration cannot run: {reason}", file=sys.stderr)
            return 2
        except NoBaseline as exc:
            raise UsageError(f"--root: {exc}") from None
        doc = score(results, runs=args.runs)
        doc.update(driver=choice.name, spec=spec.text, handicaps=handicap, quick=bool(args.quick))
        run.meta.update(
            run_metadata(server={}, mode="calibration-driver", extra={"command": ["qbench", *sys.argv[1:]]})
        )
        write_metrics(out / METRICS_FILE, all_rows)
        (out / "calibration.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        text = calibration_markdown(doc)
        (out / "CALIBRATION.md").write_text(text)
        print(text)
    return 0


def _short(measures: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v[0]:.3f} ({v[1]:.3f}..{v[2]:.3f})" for k, v in measures.items() if v)


def size_handicaps(rows: list[Row]) -> dict[str, str]:
    """Handicaps from a first A/A gate's base medians: +10% enqueue CPU per call, +10% worker
    CPU per job, and a pickup delay equal to the base's pickup p50."""

    def base_median(metric: str) -> float:
        values = [r.value for r in rows if r.metric == metric and "side=base" in r.params]
        return median(values) if values else 0.0

    enqueue_us = base_median("enqueue_cpu_ns_per_job") * REGRESSION_CPU / 1000
    job_us = base_median("worker_cpu_ns_per_job") * REGRESSION_CPU / 1000
    pickup_ms = base_median("pickup_p50_ns") / 1e6
    return {
        ENV_HANDICAP_ENQUEUE_US: f"{enqueue_us:.2f}",
        ENV_HANDICAP_JOB_US: f"{job_us:.2f}",
        ENV_HANDICAP_PICKUP_MS: f"{max(pickup_ms, 0.2):.3f}",
    }


INJECTED_FOR = {
    "enqueue_cpu": "+10% CPU per enqueue",
    "worker_cpu": "+10% CPU per job",
    "pickup_p50": "a delay of the base's p50 before each handler",
    "pickup_p99": "a delay of the base's p50 before each handler",
    "process_rate": "none of its own (the pickup delay also slows the drain)",
}


def score(results: Mapping[str, list[dict[str, Any]]], *, runs: int) -> dict[str, Any]:
    """False alarms (A/A) and detections (injected) per measure at every tolerance of GRID;
    the recommended tolerance is the middle of those meeting both targets (<= 1 in 20 false
    alarms, >= 19 in 20 detections, scaled to `runs`)."""
    max_false = runs // 20
    min_detect = runs - runs // 20
    measures: dict[str, Any] = {}
    for m in MEASURES:

        def fails(kind: str, tolerance: float, name: str = m.name) -> int:
            return sum(
                1 for g in results[kind] if g["measures"].get(name) and g["measures"][name][1] > 1 + tolerance
            )

        table = [
            {"tolerance": t, "false_alarms": fails("aa", t), "detections": fails("injected", t)} for t in GRID
        ]
        meeting = [
            r["tolerance"] for r in table if r["false_alarms"] <= max_false and r["detections"] >= min_detect
        ]
        recommended = meeting[len(meeting) // 2] if meeting else None
        default = m.tolerance
        measures[m.name] = {
            "injected": INJECTED_FOR[m.name],
            "recommended_tolerance": recommended,
            "tolerances_meeting_targets": [meeting[0], meeting[-1]] if meeting else None,
            "at_default": {
                "tolerance": default,
                "false_alarms": fails("aa", default),
                "detections": fails("injected", default),
            },
            "at_recommended": None
            if recommended is None
            else {"false_alarms": fails("aa", recommended), "detections": fails("injected", recommended)},
            "aa_ratios": [g["measures"].get(m.name) for g in results["aa"]],
            "injected_ratios": [g["measures"].get(m.name) for g in results["injected"]],
        }
    seconds = [g["seconds"] for kind in results.values() for g in kind]
    return {
        "runs": runs,
        "targets": {"max_false_alarms": max_false, "min_detections": min_detect},
        "measures": measures,
        "gate_seconds": {"median": median(seconds) if seconds else None, "max": max(seconds, default=None)},
    }


def calibration_markdown(doc: Mapping[str, Any]) -> str:
    from qbench.harness.results.render import markdown_table

    runs = doc["runs"]
    body = []
    for name, m in doc["measures"].items():
        at = m["at_default"]
        rec = m["recommended_tolerance"]
        span = m["tolerances_meeting_targets"]
        body.append(
            [
                name,
                m["injected"],
                f"{at['tolerance']:.1%}: {at['false_alarms']}/{runs} false, "
                f"{at['detections']}/{runs} detected",
                "none meets the targets"
                if rec is None
                else f"**{rec:.1%}** (all of {span[0]:.1%}..{span[1]:.1%})",
            ]
        )
    seconds = doc["gate_seconds"]
    handicaps = ", ".join(f"{k}={v}" for k, v in doc["handicaps"].items())
    lines = [
        f"# Driver gate calibration: `{doc['driver']}` ({doc['spec']})",
        "",
        f"{runs} A/A gates (the same environment on both sides: a failure is a false alarm) and {runs} "
        f"gates with injected regressions at the agent ({handicaps}; "
        f"the library is never changed), alternating{' (--quick sizes)' if doc.get('quick') else ''}. "
        f"Gate time: median {seconds['median'] or 0:.0f} s, max {seconds['max'] or 0:.0f} s.",
        f"Targets: at most {doc['targets']['max_false_alarms']} false alarm(s) and at least "
        f"{doc['targets']['min_detections']} detection(s) in {runs} (1 in 20 and 19 in 20, scaled).",
        "",
        markdown_table(["measure", "injected", "at the default tolerance", "recommended tolerance"], body),
        "",
    ]
    return "\n".join(lines)
