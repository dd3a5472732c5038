"""The owner of a results folder: the registry of run kinds and the one writer of `run.json`.

Every verb that writes a results folder goes through `start_run`; nothing else writes
`run.json`. A folder holds exactly one run:

- at the start, the files an earlier qbench run left there (metrics.csv, run.json, the
  reports, charts/, telemetry ...: `QBENCH_OUTPUTS`) are removed, and run.json says
  `"status": "running"`. A folder holding anything else (a file qbench never writes) is
  refused with `RunFolderError`, a usage error (exit 2): qbench deletes only its own files;
- at the end run.json says `"ok"`, `"failed"` or `"interrupted"` (Ctrl-C, SIGTERM), with a
  `reason` when not ok, and a failed run's report says so at its top.

Usage, for a verb that writes a run:

    from qbench.harness.results.runs import start_run

    with start_run(out_dir, "load", meta) as run:   # clears the old run; run.json "running"
        rows = measure(...)
        write_metrics(out_dir / METRICS_FILE, rows)
        run.meta["wall_s"] = 12.3                    # add to run.json as you go
        run.checkpoint()                             # optional: rewrite run.json, still "running"
        render(out_dir)
        if workers_missing:
            run.finish("failed", reason="2 of 3 workers connected")
    # Leaving the block without finish() writes "ok"; an exception writes "failed" (Ctrl-C and
    # SIGTERM: "interrupted") with the reason, and re-raises it.

`meta` is what `rows.run_metadata` returns (server, versions, CPU ...) plus the kind's own
keys; `start_run` adds `kind`, `status`, `reason`, `started_at`, `finished_at`,
`qbench_version` and `git` (the commit of the qbench code that ran, see `rows.code_source`).

The registry (`KINDS`) says, for each kind, how a folder of that kind is recognised, its
report's name, the files its runs write, and which function re-renders the report from
the folder's files alone (`render`). Renderers are named as `module:function` strings and
imported only when called, so this package imports none of the packages above it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from qbench.harness.errors import UsageError
from qbench.harness.results.rows import METRICS_FILE, RUN_FILE, code_source, qbench_version, write_run

RUNNING, OK, FAILED, INTERRUPTED = "running", "ok", "failed", "interrupted"
STATUSES = (RUNNING, OK, FAILED, INTERRUPTED)
BANNER_MARK = "<!-- qbench: run status -->"
"""Opens the status line a report of a failed run carries at its top (replaced on re-render)."""


class RunFolderError(UsageError):
    """An output folder qbench will not write a run into (one line, exit 2)."""


class NotARunError(ValueError):
    """A folder that holds no run qbench can recognise or re-render (one line)."""


@dataclass(frozen=True)
class RunKind:
    """One kind of run: what its folder holds and how its report is re-rendered."""

    name: str
    report: str | None
    """The report's file name in the folder (None: a kind with no report, e.g. ops)."""
    renderer: str | None
    """`module:function`; the function takes the folder and returns the report it wrote.
    It reads only the folder's files (metrics.csv, run.json ...) and measures nothing."""
    outputs: tuple[str, ...]
    """fnmatch patterns of the top-level names a run of this kind writes in its folder."""
    recognise: Callable[[Path, Mapping[str, Any]], bool]
    """True when a folder (with its run.json, {} if none) is a run of this kind."""
    describe: str = ""
    refines: str | None = None
    """A kind whose run.json names `refines` as its kind, told apart by `recognise` (a
    driver gate is a `gate` run with its own report)."""


def _mode(*modes: str) -> Callable[[Path, Mapping[str, Any]], bool]:
    return lambda _folder, meta: meta.get("mode") in modes


def _experiment(name: str) -> Callable[[Path, Mapping[str, Any]], bool]:
    return lambda _folder, meta: meta.get("experiment") == name


def _has(file: str) -> Callable[[Path, Mapping[str, Any]], bool]:
    return lambda folder, _meta: (folder / file).is_file()


COMMON = (METRICS_FILE, RUN_FILE, "charts", "telemetry.csv", "telemetry", "report.html")
"""What any run may write (report.html: `qbench report --notebook`)."""

KINDS: dict[str, RunKind] = {
    kind.name: kind
    for kind in (
        # Order matters: the first kind that recognises a folder is its kind.
        RunKind(
            "load",
            "REPORT.md",
            "qbench.harness.verbs.report:render_load_run",
            (*COMMON, "REPORT.md", "locust*", "latency_histograms.json", "profile", "driver*.log"),
            _mode("load"),
            "a Locust load run (qbench load)",
        ),
        RunKind(
            "peers-cluster",
            "PEERS-CLUSTER.md",
            "qbench.harness.peers.cluster_report:render_saved",
            (*COMMON, "PEERS-CLUSTER.md", "logs"),
            _experiment("peers_cluster"),
            "the peers battery on a Redis Cluster (qbench peers --cluster)",
        ),
        RunKind(
            "peers",
            "PEERS.md",
            "qbench.harness.peers.suite:render_saved",
            (*COMMON, "PEERS.md", "logs"),
            _experiment("peers"),
            "the peers battery (qbench peers)",
        ),
        RunKind(
            "reliability",
            "RELIABILITY.md",
            "qbench.harness.chaos.report:render_saved",
            (*COMMON, "RELIABILITY.md", "logs"),
            _experiment("reliability"),
            "fault-testing drivers (qbench chaos --driver)",
        ),
        RunKind(
            "chaos",
            "RELIABILITY.md",
            "qbench.harness.chaos.cases:render_saved",
            (*COMMON, "RELIABILITY.md", "logs"),
            _experiment("chaos"),
            "fault injection (qbench chaos)",
        ),
        RunKind(
            "cluster",
            "REPORT.md",
            "qbench.harness.experiments.report:render_cluster_run",
            (*COMMON, "REPORT.md"),
            lambda _f, meta: meta.get("mode") == "cluster" or meta.get("experiment") == "cluster_shards",
            "sharding on a Redis Cluster (qbench cluster measure)",
        ),
        RunKind(
            "gate-driver",
            "GATE.md",
            "qbench.harness.experiments.driver_gate:render_saved",
            (*COMMON, "GATE.md", "gate.json"),
            _mode("gate-driver", "gate-driver-quick"),
            "the timing gate of a queue's driver (qbench gate run --driver)",
            refines="gate",
        ),
        RunKind(
            "calibration-driver",
            "CALIBRATION.md",
            "qbench.harness.verbs.gate_driver:render_saved_calibration",
            (*COMMON, "CALIBRATION.md", "calibration.json"),
            _mode("calibration-driver"),
            "the driver gate's calibration (qbench gate calibrate --driver)",
            refines="calibration",
        ),
        RunKind(
            "gate",
            "GATE.md",
            "qbench.harness.timing.gate_run:render_saved",
            (*COMMON, "GATE.md", "gate.json", "counters.json"),
            lambda folder, meta: (
                meta.get("mode") in ("gate", "gate-quick") or (folder / "gate.json").is_file()
            ),
            "the timing gate (qbench gate run)",
        ),
        RunKind(
            "calibration",
            "CALIBRATION.md",
            "qbench.harness.timing.calibrate:render_saved",
            (*COMMON, "CALIBRATION.md", "calibration.json"),
            _mode("calibration"),
            "the timing gate's calibration (qbench gate calibrate)",
        ),
        RunKind(
            "ops",
            None,
            None,
            COMMON,
            _mode("ops"),
            "per-operation costs (qbench ops --out)",
        ),
        RunKind(
            "observe",
            "OBSERVE.md",
            "qbench.harness.observe.rerender:render_saved",
            (*COMMON, "OBSERVE.md", "observe.json", "demo.json"),
            _has("observe.json"),
            "a live queue observed (qbench observe)",
        ),
        RunKind(
            "history",
            "HISTORY.md",
            "qbench.harness.results.history:render_saved",
            ("HISTORY.md", "charts"),
            _has("HISTORY.md"),
            "results across commits (qbench history chart)",
        ),
        RunKind(
            "flips",
            "FLIPS.md",
            "qbench.harness.experiments.flips:render_saved",
            ("FLIPS.md", "run-*"),
            _has("FLIPS.md"),
            "verdict flips across back-to-back reproductions (make flips)",
        ),
        RunKind(
            "reproduce",
            "REPORT.md",
            "qbench.harness.experiments.report:render_saved",
            (*COMMON, "REPORT.md", "error-*.txt"),
            # A bare metrics.csv (no run.json) was always re-rendered as a reproduce run.
            lambda folder, meta: (
                "experiments" in meta
                or meta.get("mode") in ("quick", "full")
                or (not meta and (folder / METRICS_FILE).is_file())
            ),
            "the seed's claims measured (qbench reproduce)",
        ),
    )
}

QBENCH_OUTPUTS = tuple(dict.fromkeys(p for kind in KINDS.values() for p in kind.outputs))
"""Every top-level name a qbench run writes, whatever its kind."""


# -- the registry ------------------------------------------------------------------------------
def read_meta(folder: Path) -> dict[str, Any]:
    """The folder's run.json ({} when absent); NotARunError when it is not a JSON object."""
    path = folder / RUN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotARunError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NotARunError(f"{path}: expected a JSON object")
    return data


def kind_of(folder: Path, meta: Mapping[str, Any] | None = None) -> RunKind | None:
    """The kind of run `folder` holds (run.json's `kind`, else recognised from its files)."""
    if meta is None:
        meta = read_meta(folder)
    named = meta.get("kind")
    if isinstance(named, str) and named in KINDS:
        refined = (k for k in KINDS.values() if k.refines == named and k.recognise(folder, meta))
        return next(refined, KINDS[named])
    return next((kind for kind in KINDS.values() if kind.recognise(folder, meta)), None)


@dataclass(frozen=True)
class RunDescription:
    """What `describe` says of a results folder (what `qbench site` lists)."""

    folder: Path
    kind: str
    status: str
    """ok | failed | interrupted | running; a run.json from before statuses counts as ok."""
    reason: str | None
    title: str
    report: Path | None
    """The folder's report, when it has one."""

    @property
    def ok(self) -> bool:
        return self.status == OK


def describe(folder: Path) -> RunDescription | None:
    """Kind, status, title and report of the run in `folder`; None when it holds no run."""
    try:
        meta = read_meta(folder)
    except NotARunError:
        return None
    kind = kind_of(folder, meta)
    if kind is None:
        return None
    report = folder / kind.report if kind.report is not None and (folder / kind.report).is_file() else None
    status, reason = status_of(meta)
    title = _title(report) if report is not None else f"{kind.name}: {folder.name}"
    return RunDescription(folder, kind.name, status, reason, title, report)


def status_of(meta: Mapping[str, Any]) -> tuple[str, str | None]:
    """(status, reason) of a run.json; one written before statuses existed is a finished run."""
    status = meta.get("status")
    if status not in STATUSES:
        return OK, None
    reason = meta.get("reason")
    return str(status), str(reason) if reason else None


def refusal(folder: Path, meta: Mapping[str, Any] | None = None) -> str | None:
    """One line saying why the run in `folder` must not be read as a result, else None."""
    status, reason = status_of(read_meta(folder) if meta is None else meta)
    if status == OK:
        return None
    if status == RUNNING:
        return f"{folder}: the run is still running, or died without a word (run.json says running)"
    return f"{folder}: the run {status}" + (f": {reason}" if reason else "")


def render(folder: Path) -> Path:
    """Re-render the folder's report (and charts) from its files alone; returns the report.

    NotARunError when the folder holds no run, or one of a kind with no report. A failed
    or interrupted run's report keeps its status line at the top.
    """
    meta = read_meta(folder)
    kind = kind_of(folder, meta)
    if kind is None:
        raise NotARunError(f"{folder}: no qbench run here (no run.json and no report qbench writes)")
    if kind.renderer is None:
        raise NotARunError(f"{folder}: a {kind.name} run has no report to render")
    module_name, _, function = kind.renderer.partition(":")
    renderer = getattr(importlib.import_module(module_name), function, None)
    if renderer is None:
        raise NotARunError(f"{folder}: this version of qbench cannot re-render a {kind.name} run")
    path = Path(renderer(folder))
    mark_report(path, meta)
    return path


def _title(report: Path) -> str:
    for line in report.read_text(errors="replace").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return report.parent.name


# -- the writer --------------------------------------------------------------------------------
RESULTS_ROOT = Path("results")
"""Where every verb writes by default: one new folder per run, beside (never inside) the
committed runs, named `<UTC time>-<label>` (git-ignored as `results/2*-*/`)."""


def new_run_dir(label: str, *, now: float | None = None) -> Path:
    """`results/<UTC time>-<label>`: the default `--out` of a verb, so a scratch run never
    lands among, or overwrites, the committed runs (those are written only when named)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return RESULTS_ROOT / f"{stamp}-{label}"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def clear_folder(out_dir: Path) -> list[str]:
    """Make `out_dir` an empty home for a new run; returns the names removed.

    Removes what an earlier qbench run wrote there (`QBENCH_OUTPUTS`), keeps hidden files
    (.gitkeep), and refuses (RunFolderError) a folder holding anything else, so a mistyped
    --out never costs a user a file.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"--out: {out_dir} exists and is not a directory")
    if not out_dir.exists():
        return []
    entries = sorted(p for p in out_dir.iterdir() if not p.name.startswith("."))
    foreign = [p.name for p in entries if not any(fnmatch.fnmatch(p.name, pat) for pat in QBENCH_OUTPUTS)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunFolderError(
            f"--out: {out_dir} holds files qbench did not write ({shown}): "
            "give a new or empty folder, or one holding only an earlier qbench run"
        )
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return [p.name for p in entries]


def write_meta(out_dir: Path, meta: Mapping[str, Any]) -> Path:
    """Write the folder's run.json (atomically); `RunFolder` is its one caller in qbench."""
    path = out_dir / RUN_FILE
    write_run(path, meta)
    return path


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception while a run is being written, so it ends 'interrupted'."""


class RunFolder:
    """One run being written into its folder; see the module docstring."""

    def __init__(self, out_dir: Path, kind: str, meta: Mapping[str, Any] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r} (known: {', '.join(KINDS)})")
        self.out_dir = out_dir
        self.kind = KINDS[kind]
        self.meta: dict[str, Any] = dict(meta or {})
        self.finished = False
        self._previous_sigterm: Any = None

    def start(self, *, clear: bool = True) -> RunFolder:
        """Clear the folder of an earlier run and write run.json with status running.

        `clear=False` for a writer that starts its run.json only after measuring into the
        folder (its files of this run must stay); the folder is still checked for foreign files."""
        if clear:
            clear_folder(self.out_dir)
        elif self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunFolderError(f"--out: {self.out_dir} exists and is not a directory")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        source = code_source()
        self.meta.update(
            kind=self.kind.name,
            status=RUNNING,
            reason=None,
            started_at=_utc_now(),
            finished_at=None,
            qbench_version=qbench_version(),
        )
        self.meta["git"] = source
        self.meta.setdefault("created_at", self.meta["started_at"])
        write_meta(self.out_dir, self.meta)
        return self

    def checkpoint(self) -> None:
        """Rewrite run.json with what `meta` holds now; the run is still running."""
        write_meta(self.out_dir, self.meta)

    def finish(self, status: str = OK, *, reason: str | None = None) -> None:
        """End the run: run.json gets its status (and reason), a failed run's report a status line."""
        if status not in (OK, FAILED, INTERRUPTED):
            raise ValueError(f"a run ends ok, failed or interrupted, not {status!r}")
        self.meta.update(status=status, reason=reason if status != OK else None, finished_at=_utc_now())
        self.finished = True
        write_meta(self.out_dir, self.meta)
        if status != OK and self.kind.report is not None:
            report = self.out_dir / self.kind.report
            if not report.is_file():
                report.write_text(f"# qbench {self.kind.name}: {status}\n\nNo results were written.\n")
            mark_report(report, self.meta)

    def __enter__(self) -> RunFolder:
        if not self.meta.get("status"):
            self.start()
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if exc is None:
            if not self.finished:
                self.finish(OK)
            return
        if isinstance(exc, KeyboardInterrupt):
            how = "terminated (SIGTERM)" if isinstance(exc, RunInterrupted) else "interrupted (Ctrl-C)"
            self.finish(INTERRUPTED, reason=how)
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            if not self.finished:
                self.finish(OK)
        else:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.finish(FAILED, reason=f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


def _raise_interrupted(_signum: int, _frame: FrameType | None) -> None:
    raise RunInterrupted


def start_run(
    out_dir: Path, kind: str, meta: Mapping[str, Any] | None = None, *, clear: bool = True
) -> RunFolder:
    """Start a run of `kind` in `out_dir`: clear an earlier run's files, run.json "running".

    Use it as a context manager (see the module docstring). RunFolderError (exit 2) when
    the folder holds files qbench did not write.
    """
    return RunFolder(out_dir, kind, meta).start(clear=clear)


def mark_report(report: Path, meta: Mapping[str, Any]) -> None:
    """Put (or refresh) the status line at the top of a failed or interrupted run's report."""
    if not report.is_file():
        return
    original = report.read_text()
    status, reason = status_of(meta)
    if status == OK and BANNER_MARK not in original:
        return
    lines = original.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(BANNER_MARK):
            del lines[index : index + (2 if index + 1 < len(lines) and not lines[index + 1] else 1)]
            break
    if status != OK:
        banner = (
            f"{BANNER_MARK} **⚠ This run {status}"
            + (f": {reason}" if reason else "")
            + ".** Its figures are incomplete; do not read them as a result."
        )
        at = 2 if len(lines) > 1 and lines[0].startswith("# ") and not lines[1] else 0
        lines[at:at] = [banner, ""]
    report.write_text("\n".join(lines) + "\n")
