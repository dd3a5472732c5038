"""Shared rendering for REPORT.md: markdown tables, cells, charts (PNG + SVG), the assembly."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from qbench.harness.results.rows import DETERMINISTIC_UNITS, Row, source_text
from qbench.harness.results.stats import RatioInterval, Spread, median_or_none

HOLDS = "holds"
PARTLY = "partly"
DOES_NOT_HOLD = "does not hold"
NOT_MEASURED = "not measured"
INCONCLUSIVE = "inconclusive at this noise"
"""A timed claim whose interval straddles one of its thresholds: no verdict is given."""
VERDICTS = (HOLDS, PARTLY, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURED)

PRESET_COLUMNS = ("baseline", "optimized", "scripted")
CLAIM_HEADER = ("Claim", "Claimed", *PRESET_COLUMNS, "Verdict")
"""The header of every seed table reproduced in the report."""


class Section(Protocol):
    """What the report needs of an experiment's section (`qbench.harness.experiments.Section`
    has it); a protocol, so rendering does not import the experiments above it."""

    @property
    def title(self) -> str: ...
    @property
    def markdown(self) -> str: ...
    @property
    def verdicts(self) -> list[tuple[str, str, str]]: ...
    @property
    def charts(self) -> list[str]: ...


SeriesKey = tuple[str, str, str, str]
"""(experiment, variant, params, metric): one measured quantity, one value per repeat."""


# -- selecting rows --------------------------------------------------------------------
def series(rows: Iterable[Row]) -> dict[SeriesKey, list[float]]:
    """Every quantity's values, ordered by repeat."""
    grouped: dict[SeriesKey, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.experiment, row.variant, row.params, row.metric)].append(row)
    return {key: [r.value for r in sorted(group, key=lambda r: r.repeat)] for key, group in grouped.items()}


def values_of(rows: Iterable[Row], *, variant: str, metric: str, params: str | None = None) -> list[float]:
    """Values (by repeat) of one metric of one variant; `params=None` accepts any params."""
    picked = [r for r in rows if r.variant == variant and r.metric == metric]
    if params is not None:
        picked = [r for r in picked if r.params == params]
    return [r.value for r in sorted(picked, key=lambda r: r.repeat)]


def median_of(rows: Iterable[Row], *, variant: str, metric: str, params: str | None = None) -> float | None:
    """Median over the repeats of one metric of one variant; None when nothing was measured."""
    return median_or_none(values_of(rows, variant=variant, metric=metric, params=params))


def determinism_flags(rows: Iterable[Row]) -> list[str]:
    """One line per deterministic count that differed between repeats (empty: all equal)."""
    units = {(r.experiment, r.variant, r.params, r.metric): r.unit for r in rows}
    flags = []
    for key, found in series(rows).items():
        if units[key] in DETERMINISTIC_UNITS and len(set(found)) > 1:
            experiment, variant, params_text, metric = key
            shown = ", ".join(fmt_number(v) for v in found)
            flags.append(f"{experiment} / {variant} / {params_text or '-'} / {metric}: {shown}")
    return flags


def deterministic_series_count(rows: Iterable[Row]) -> int:
    units = {(r.experiment, r.variant, r.params, r.metric): r.unit for r in rows}
    return sum(1 for key in series(rows) if units[key] in DETERMINISTIC_UNITS)


# -- verdicts from intervals ---------------------------------------------------------------
Region = tuple[float, float, str]
"""(low, high, verdict): a measured value in low < x <= high earns this verdict."""


def interval_verdict(lo: float, hi: float, regions: Sequence[Region]) -> str:
    """The verdict of the region that holds the whole interval lo..hi, else INCONCLUSIVE.

    A verdict that depends on a timing is given only when the interval lies on one side
    of every threshold: a rerun can then move the figure but not the verdict.
    """
    for low, high, verdict in regions:
        if low < lo and hi <= high:
            return verdict
    return INCONCLUSIVE


def ratio_text(ci: RatioInterval, *, digits: int = 2, suffix: str = "x") -> str:
    """`2.43x (95% CI 2.38..2.47, 24 interleaved rounds)`."""
    return (
        f"{ci.estimate:.{digits}f}{suffix} ({ci.level} CI {ci.lo:.{digits}f}..{ci.hi:.{digits}f}, "
        f"{ci.n} interleaved rounds)"
    )


# -- cells ------------------------------------------------------------------------------
def fmt_number(value: float, digits: int = 2) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def spread_cell(found: Sequence[float], *, digits: int = 2, unit: str = "") -> str:
    """`median (min..max) unit` of repeated timings; `-` when nothing was measured."""
    if not found:
        return "-"
    suffix = f" {unit}" if unit else ""
    if len(found) == 1:
        return f"{found[0]:,.{digits}f}{suffix} (n=1)"
    return f"{Spread.of(found).fmt(digits)}{suffix}"


def count_cell(found: Sequence[float], *, unit: str = "") -> str:
    """A deterministic count; flagged when the repeats disagree."""
    if not found:
        return "-"
    suffix = f" {unit}" if unit else ""
    distinct = sorted(set(found))
    if len(distinct) == 1:
        return f"{fmt_number(distinct[0])}{suffix}"
    return f"⚠ varies: {' / '.join(fmt_number(v) for v in distinct)}{suffix}"


def fmt_bytes(value: float) -> str:
    """Decimal units (1 KB = 1,000 B), as the seed's tables use (1M jobs x 1 KB = 1 GB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.{2 if abs(value) < 10 * scale else 1}f} {unit}"
    return f"{value:,.0f} B"


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


# -- charts -----------------------------------------------------------------------------
def figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.0) -> tuple[Any, list[Any]]:
    """A matplotlib figure (Agg backend: no display needed) and its axes as a list."""
    import matplotlib

    matplotlib.use("Agg")
    # A fixed salt (and no date, below) keeps re-rendered SVGs byte-identical.
    matplotlib.rcParams["svg.hashsalt"] = "qbench"
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save_chart(fig: Any, charts_dir: Path, stem: str) -> str:
    """Write `stem.png` and `stem.svg`; returns the PNG's name (relative to charts/)."""
    import matplotlib.pyplot as plt

    charts_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(charts_dir / f"{stem}.png", dpi=110)
    fig.savefig(charts_dir / f"{stem}.svg", metadata={"Date": None})
    plt.close(fig)
    return f"{stem}.png"


def chart_link(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return f"![{stem}](charts/{name}) ([SVG](charts/{stem}.svg))"


# -- the report -------------------------------------------------------------------------
def assemble_report(
    *,
    sections: Sequence[tuple[str, Section]],
    meta: Mapping[str, Any],
    errors: Mapping[str, str],
    flags: Sequence[str],
    deterministic_count: int,
    telemetry: str = "",
) -> str:
    """REPORT.md: run facts, the summary of every verdict, the determinism check, the sections,
    then `telemetry` (the "What Redis did" section) when the run was sampled."""
    parts = ["# qbench reproduce: the seed's claims, measured", "", _run_facts(meta), ""]
    parts += ["## Summary", "", _summary(sections, errors), ""]
    parts += ["## Determinism check", ""]
    if flags:
        parts.append(
            f"⚠ {len(flags)} of {deterministic_count} deterministic counts differed between repeats "
            "(a count that varies is a bug in the queue or the harness):"
        )
        parts += [""] + [f"- {line}" for line in flags]
    else:
        parts.append(
            f"All {deterministic_count} deterministic counts (round trips, commands, bytes, jobs, keys) "
            "were identical in every repeat."
        )
    parts.append("")
    for name, section in sections:
        parts += [f"## {section.title}", f"<!-- experiment: {name} -->", "", section.markdown.strip(), ""]
        for chart in section.charts:
            parts += [chart_link(chart), ""]
    if telemetry:
        parts += [telemetry.strip(), ""]
    for name, message in errors.items():
        if name not in {n for n, _ in sections}:
            parts += [f"## {name}: failed", "", f"The experiment failed: `{message}`.", ""]
    return "\n".join(parts).rstrip() + "\n"


def _run_facts(meta: Mapping[str, Any]) -> str:
    server = meta.get("server", {})
    cpu = meta.get("cpu", {})
    placement = meta.get("placement", {})
    total = meta.get("total_wall_s")
    lines = [
        f"- Mode: **{meta.get('mode', '?')}**, {meta.get('repeats', '?')} repeats; "
        f"created {meta.get('created_at', '?')}; measuring wall time "
        f"{f'{total:.0f} s' if isinstance(total, int | float) else '?'}",
        f"- Redis {server.get('version', '?')} ({server.get('flavor', '?')}), allocator "
        f"{server.get('allocator', '?')}, {server.get('source', '?')}: `{server.get('binary', '?')}`",
        f"- Python {meta.get('python', '?')}; {source_text(meta)}; {cpu.get('cpu_count', '?')} CPUs, "
        f"harness affinity {placement.get('harness_affinity', cpu.get('affinity', '?'))}, "
        f"server affinity {placement.get('server_affinity', '?')}",
        "- Timings: median (min..max) over the repeats, all measured in this run; "
        "counts (round trips, commands, bytes) must be identical in every repeat.",
    ]
    repeats = meta.get("repeats")
    if isinstance(repeats, int) and repeats < 3:
        lines.append(f"- ⚠ Only {repeats} repeat(s): a timing's min..max spread needs at least 3.")
    if server.get("owned") is False:
        lines.append(
            "- ⚠ The server was not started by qbench (`--redis-url`): server-side command counts "
            "and memory include whatever else its other clients did meanwhile."
        )
    return "\n".join(lines)


def _summary(sections: Sequence[tuple[str, Section]], errors: Mapping[str, str]) -> str:
    body = []
    for name, section in sections:
        for claim, verdict, why in section.verdicts:
            body.append([name, claim, f"**{verdict}**", why])
        if not section.verdicts:
            body.append([name, "-", NOT_MEASURED, "the experiment produced no verdict"])
    for name, message in errors.items():
        body.append([name, "-", "**error**", message])
    return markdown_table(["Experiment", "Claim", "Verdict", "Why (measured)"], body)
