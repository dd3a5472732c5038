"""Results across commits, in the manner of asv: a tidy history file and one chart per metric.

`add_run` appends a run's summary metrics, keyed by the commit measured, to a CSV:

    commit,date,subject,run,experiment,variant,params,metric,value,lo,hi,unit,n,interval

- a timing series measured in rounds (a gate run, interleaved experiments: more than
  `MIN_ROUNDS_FOR_INTERVAL` values) gets its Hodges-Lehmann estimate and 95% signed-rank
  interval (`interval` = `hl95`); a shorter series its median and min..max (`range`);
- a gate run (`qbench gate run`) adds, per case, head/base CPU with its interval
  (metric `cpu_ratio_to_base`), and is keyed by the head checkout's commit.

`charts` draws each metric over the commits (ordered by commit date) with its interval,
and marks every step between neighbouring commits larger than the calibrated noise (the
timing gate's calibrated tolerance): a step you can believe. The calibration measured the
noise of interleaved ratios (head/base in one run), so steps are marked on ratio series;
an absolute figure is drawn too, but each commit's was timed at a different moment and the
machine's drift between runs (not calibrated) moves it: `HISTORY.md` says by how much.
"""

from __future__ import annotations

import csv
import fnmatch
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from qbench.harness.results.render import figure, markdown_table, save_chart
from qbench.harness.results.rows import METRICS_FILE, Row, read_metrics, read_run
from qbench.harness.results.stats import location_interval, median
from qbench.harness.results.timing_gate import CALIBRATED_TOLERANCE, judge_rows

HISTORY_FILE = Path("results/history.csv")
TIMING_UNITS = frozenset({"ns", "us", "ms", "s"})
MIN_ROUNDS_FOR_INTERVAL = 6
"""Fewer values than this give no 95% signed-rank interval: min..max instead."""
RATIO_METRIC = "cpu_ratio_to_base"
DEFAULT_CHART_METRICS = (RATIO_METRIC, "cpu_ns_per_op")


class HistoryError(ValueError):
    """A run or history file that cannot be used (one line; the verb exits 2)."""


@dataclass(frozen=True)
class Entry:
    commit: str
    date: str
    subject: str
    run: str
    experiment: str
    variant: str
    params: str
    metric: str
    value: float
    lo: float
    hi: float
    unit: str
    n: int
    interval: str

    def key(self) -> tuple[str, str, str, str, str, str]:
        return (self.commit, self.run, self.experiment, self.variant, self.params, self.metric)

    def series(self) -> tuple[str, str, str, str]:
        return (self.experiment, self.variant, self.params, self.metric)


COLUMNS = tuple(f.name for f in fields(Entry))


def read_history(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise HistoryError(f"{path}: not a qbench history file (columns {reader.fieldnames})")
        try:
            return [
                Entry(
                    commit=r["commit"],
                    date=r["date"],
                    subject=r["subject"],
                    run=r["run"],
                    experiment=r["experiment"],
                    variant=r["variant"],
                    params=r["params"],
                    metric=r["metric"],
                    value=float(r["value"]),
                    lo=float(r["lo"]),
                    hi=float(r["hi"]),
                    unit=r["unit"],
                    n=int(r["n"]),
                    interval=r["interval"],
                )
                for r in reader
            ]
        except (TypeError, ValueError) as exc:
            raise HistoryError(f"{path}: bad row ({exc})") from None


def write_history(path: Path, entries: Iterable[Entry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda e: (e.date, e.commit, e.run, *e.series()))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in ordered:
            row: dict[str, Any] = asdict(entry)
            for key in ("value", "lo", "hi"):
                row[key] = f"{row[key]:.6g}"
            writer.writerow(row)


def summarize_run(run_dir: Path, *, commit: str | None = None) -> list[Entry]:
    """The summary entries of one results dir (see the module docstring), keyed by `commit`
    when given (a label of the user's choosing), else by the commit run.json records."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise HistoryError(f"{run_dir}: no {METRICS_FILE} here")
    try:
        rows = read_metrics(metrics)
        meta = read_run(run_dir)
    except ValueError as exc:
        raise HistoryError(str(exc).splitlines()[0]) from None
    facts = _commit_facts(meta)
    if commit is not None:
        facts["commit"] = commit
    if not facts["commit"]:
        source = meta.get("git", {}).get("source")
        why = " (qbench ran from an installed package)" if source == "installed" else ""
        raise HistoryError(
            f"{run_dir}: run.json records no git commit{why}: give --commit LABEL (e.g. your queue's commit)"
        )
    run = run_dir.name

    def entry(
        row_key: tuple[str, str, str, str], unit: str, value: float, lo: float, hi: float, n: int, how: str
    ) -> Entry:
        experiment, variant, cell, metric = row_key
        return Entry(
            facts["commit"], facts["date"], facts["subject"], run, experiment, variant, cell, metric,
            value, lo, hi, unit, n, how,
        )  # fmt: skip

    entries: list[Entry] = []
    series: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    units: dict[tuple[str, str, str, str], str] = {}
    gate = str(meta.get("mode", "")).startswith("gate")
    for row in rows:
        if gate and "side=base" in row.params:
            continue  # a gate run is keyed by its head commit: the base side is the yardstick
        if row.unit in TIMING_UNITS:
            key = (row.experiment, row.variant, row.params, row.metric)
            series[key].append(row.value)
            units[key] = row.unit
    for key, values in series.items():
        if len(values) >= MIN_ROUNDS_FOR_INTERVAL:
            est, lo, hi, _coverage = location_interval(values, 0.95)
            entries.append(entry(key, units[key], est, lo, hi, len(values), "hl95"))
        else:
            entries.append(
                entry(key, units[key], median(values), min(values), max(values), len(values), "range")
            )
    if gate:
        entries += _gate_ratios(rows, entry)
    return entries


def _gate_ratios(rows: list[Row], entry: Any) -> list[Entry]:
    out = []
    for verdict in judge_rows(rows, tolerance=CALIBRATED_TOLERANCE):
        ci = verdict.cpu
        key = ("timing", verdict.variant, f"case={verdict.case}", RATIO_METRIC)
        out.append(entry(key, "ratio", ci.estimate, ci.lo, ci.hi, ci.n, "hl95"))
    return out


def _commit_facts(meta: dict[str, Any]) -> dict[str, str]:
    head = meta.get("sides", {}).get("head", {})
    if head.get("commit"):
        return {"commit": head["commit"], "date": head.get("date", ""), "subject": head.get("subject", "")}
    git = meta.get("git", {})
    return {"commit": git.get("commit") or "", "date": meta.get("created_at", ""), "subject": ""}


def add_run(run_dir: Path, history: Path, *, commit: str | None = None) -> tuple[int, int]:
    """Append (or replace) one run's entries; returns (entries added, entries in the file)."""
    new = summarize_run(run_dir, commit=commit)
    keys = {e.key() for e in new}
    kept = [e for e in read_history(history) if e.key() not in keys]
    write_history(history, kept + new)
    return len(new), len(kept) + len(new)


# -- charts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    series: tuple[str, str, str, str]
    before: Entry
    after: Entry
    change: float


def commit_order(entries: Sequence[Entry]) -> list[str]:
    """Commits by commit date (then first appearance)."""
    first: dict[str, tuple[str, int]] = {}
    for i, e in enumerate(entries):
        first.setdefault(e.commit, (e.date, i))
    return sorted(first, key=lambda c: first[c])


def steps(entries: Sequence[Entry], noise: float, *, units: Sequence[str] | None = ("ratio",)) -> list[Step]:
    """Changes between neighbouring commits of one series larger than `noise` (relative),
    in series of `units` (default: ratios, the interleaved measure the noise was calibrated
    on; None: every series)."""
    found = []
    by_series: dict[tuple[str, str, str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if units is None or e.unit in units:
            by_series[e.series()].append(e)
    order = {c: i for i, c in enumerate(commit_order(entries))}
    for key, group in by_series.items():
        group = sorted(group, key=lambda e: order[e.commit])
        for before, after in itertools.pairwise(group):
            if before.value > 0:
                change = after.value / before.value - 1
                if abs(change) > noise:
                    found.append(Step(key, before, after, change))
    return found


def slug(series: tuple[str, str, str, str]) -> str:
    text = "-".join(part for part in series if part)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120]


def draw_charts(
    entries: Sequence[Entry],
    out_dir: Path,
    *,
    metrics: Sequence[str] = DEFAULT_CHART_METRICS,
    noise: float = CALIBRATED_TOLERANCE,
) -> tuple[list[str], list[Step]]:
    """One PNG + SVG per series whose metric matches `metrics` (globs); HISTORY.md beside them.

    Returns the chart file names and the steps marked.
    """
    chosen = [e for e in entries if any(fnmatch.fnmatch(e.metric, m) for m in metrics)]
    if not chosen:
        raise HistoryError(f"no history entries for metrics {', '.join(metrics)}")
    order = commit_order(chosen)
    subjects = {e.commit: e.subject for e in chosen}
    marked = steps(chosen, noise)
    charts_dir = out_dir / "charts"
    names = []
    by_series: dict[tuple[str, str, str, str], list[Entry]] = defaultdict(list)
    for e in chosen:
        by_series[e.series()].append(e)
    for key, group in sorted(by_series.items()):
        group = sorted(group, key=lambda e: order.index(e.commit))
        xs = [order.index(e.commit) for e in group]
        fig, (ax,) = figure(1, width=8.0, height=4.2)
        ax.errorbar(
            xs,
            [e.value for e in group],
            yerr=[[e.value - e.lo for e in group], [e.hi - e.value for e in group]],
            marker="o",
            capsize=4,
            label="estimate and 95% interval",
        )
        for step in (s for s in marked if s.series == key):
            x = order.index(step.after.commit)
            ax.plot([x], [step.after.value], "o", markersize=14, markerfacecolor="none", color="red")
            ax.annotate(
                f"{step.change:+.1%}", (x, step.after.value), textcoords="offset points", xytext=(8, 8),
                color="red", fontsize=9,
            )  # fmt: skip
        if key[3] == RATIO_METRIC:
            ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(
            range(len(order)), [f"{c[:7]}\n{_short(subjects.get(c, ''))}" for c in order], fontsize=7
        )
        ax.set_xlim(-0.5, len(order) - 0.5)
        unit = group[0].unit
        ax.set(
            ylabel=f"{key[3]} ({unit})",
            title=f"{' / '.join(p for p in key[:3] if p)}: {key[3]}\n"
            + (
                f"red: a step larger than the calibrated noise ({noise:.1%})"
                if unit == "ratio"
                else "absolute, one run per commit: drift between runs is not marked"
            ),
        )
        ax.legend(fontsize=8, loc="best")
        names.append(save_chart(fig, charts_dir, slug(key)))
    (out_dir / "HISTORY.md").write_text(history_markdown(chosen, names, marked, noise))
    return names, marked


def _drift_note(entries: Sequence[Entry], noise: float) -> list[str]:
    """How far absolute series moved between neighbouring commits, beside the ratios."""
    absolute = steps(entries, 0.0, units=sorted(TIMING_UNITS))
    ratios = steps(entries, 0.0)
    if not absolute:
        return []
    widest = max(absolute, key=lambda s: abs(s.change))
    text = (
        f"Absolute figures (each commit timed at its own moment) moved by up to {widest.change:+.1%} "
        f"between neighbouring commits ({' / '.join(p for p in widest.series if p)})"
    )
    if ratios:
        text += (
            f", while the interleaved ratios, each against the same reference in the same run, moved "
            f"by at most {max(abs(s.change) for s in ratios):.1%}"
        )
    return [
        text + ". That drift is the machine, not the code, so steps are marked only on the ratios, "
        f"whose noise the gate's calibration measured ({noise:.1%}).",
        "",
    ]


def _point(e: Entry) -> str:
    return f"`{e.commit[:10]}` {e.value:.4g} ({e.lo:.4g}..{e.hi:.4g})"


def _short(subject: str, width: int = 18) -> str:
    return subject if len(subject) <= width else subject[: width - 1] + "…"


def history_markdown(
    entries: Sequence[Entry], charts: Sequence[str], marked: Sequence[Step], noise: float
) -> str:
    order = commit_order(entries)
    subjects = {e.commit: (e.date, e.subject) for e in entries}
    lines = [
        "# History across commits",
        "",
        f"{len(order)} commits, oldest first; each point is one run's estimate with its 95% interval. "
        f"A step between neighbouring commits larger than the calibrated noise ({noise:.1%}, the "
        "timing gate's calibrated tolerance) is marked in red and listed below. "
        f"`{RATIO_METRIC}`: the commit's client CPU per job cycle over the reference tree's (the base "
        "of its gate run, recorded in its run.json), both timed interleaved in one run.",
        "",
        markdown_table(
            ["#", "commit", "date", "subject"],
            [[str(i), f"`{c[:10]}`", subjects[c][0], subjects[c][1]] for i, c in enumerate(order)],
        ),
        "",
        "## Steps larger than the noise",
        "",
        *_drift_note(entries, noise),
    ]
    if marked:
        lines.append(
            markdown_table(
                ["series", "from", "to", "change"],
                [
                    [
                        " / ".join(p for p in s.series if p),
                        _point(s.before),
                        _point(s.after),
                        f"{s.change:+.1%}",
                    ]
                    for s in marked
                ],
            )
        )
    else:
        lines.append("None: every change between neighbouring commits is within the noise.")
    lines += ["", "## Charts", ""]
    for name in charts:
        stem = name.rsplit(".", 1)[0]
        lines += [f"![{stem}](charts/{name}) ([SVG](charts/{stem}.svg))", ""]
    return "\n".join(lines)


def render_saved(out_dir: Path) -> Path:
    """Re-render HISTORY.md and its charts from the history file beside the folder
    (`results/history.csv` for `results/history`), with the default metrics and noise."""
    entries = read_history(out_dir.parent / "history.csv")
    draw_charts(entries, out_dir, metrics=DEFAULT_CHART_METRICS, noise=CALIBRATED_TOLERANCE)
    return out_dir / "HISTORY.md"
