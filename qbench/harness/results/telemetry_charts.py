"""Charts and a Markdown summary of one run's `telemetry.csv`, drawn from its rows alone.

    rows = read_telemetry(out_dir / "telemetry.csv")
    names = render_telemetry_charts(rows, out_dir / "charts")   # PNG + SVG each
    text = summary_markdown(rows)                               # a paragraph and a small table

Charts (file stems): `telemetry_ops_by_command` (calls/s per command, stacked),
`telemetry_memory` (used_memory and RSS per node), `telemetry_clients` (connected and
blocked per node), `telemetry_cpu` (redis-server CPU per node beside the harness's
processes) and `telemetry_command_series` (calls per sampling interval, one panel per
command: a blocking command's timeout ticks and a polling loop's steady rate show as
such). Several nodes are summed per sampling round where a chart shows one total.

    section = telemetry_section(rows, out_dir / "charts", spans=[("codec", 10.0, 25.0)])

gives a report's "What Redis did" section (cost, summary, chart links; `spans` shade what the
run was doing). A run sampled in segments (peers: `telemetry/<driver>.csv`; chaos:
`telemetry/<case>-<preset>.csv`) gets `segments_section(dir, charts_dir, ...)`: a table with
one line per segment and small-multiples charts (`<stem>_ops_by_command`, `_memory`,
`_clients`, `_cpu`), a panel per segment.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.harness.infra.telemetry import TelemetryRow, read_telemetry
from qbench.harness.results.render import chart_link, figure, fmt_bytes, markdown_table, save_chart

TOP_COMMANDS = 8
"""Commands drawn on their own in the stacked chart; the rest are summed as `other`."""
SERIES_PANELS = 6

CHART_STEMS = (
    "telemetry_ops_by_command",
    "telemetry_memory",
    "telemetry_clients",
    "telemetry_cpu",
    "telemetry_command_series",
)

Points = list[tuple[float, float]]


# -- selecting rows ---------------------------------------------------------------------------------
def series(rows: Iterable[TelemetryRow], source: str, metric: str) -> dict[str, Points]:
    """(t, value) points of one metric, per node, in time order."""
    found: dict[str, Points] = defaultdict(list)
    for row in rows:
        if row.source == source and row.metric == metric:
            found[row.node].append((row.t, row.value))
    return {node: sorted(points) for node, points in sorted(found.items())}


def interval_s(rows: Iterable[TelemetryRow]) -> float:
    """The median sampling interval (1.0 when the rows hold no interval)."""
    found = [r.value for r in rows if r.source == "redis" and r.metric == "interval_s"]
    return statistics.median(found) if found else 1.0


def window_s(rows: Iterable[TelemetryRow]) -> float:
    """Seconds covered by delta rows: the longest sum of `interval_s` over the nodes."""
    per_node: dict[str, float] = defaultdict(float)
    for row in rows:
        if row.source == "redis" and row.metric == "interval_s":
            per_node[row.node] += row.value
    return max(per_node.values(), default=0.0)


def command_totals(rows: Iterable[TelemetryRow]) -> dict[str, int]:
    """Calls per command over the whole window, all nodes summed, most called first."""
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        if row.source == "redis" and row.metric.startswith("calls:"):
            totals[row.metric.removeprefix("calls:")] += row.value
    return {name: int(calls) for name, calls in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))}


@dataclass(frozen=True, slots=True)
class Rounds:
    """The sampling rounds that have delta rows, with each command's calls per round."""

    ts: list[float]
    interval_s: list[float]
    """Per round: the longest interval of its nodes."""
    calls: dict[str, list[float]]
    """Per command: calls in each round, nodes summed, 0 where it was not called."""

    def rates(self, name: str) -> list[float]:
        return [c / dt if dt > 0 else 0.0 for c, dt in zip(self.calls[name], self.interval_s, strict=True)]


def rounds(rows: Iterable[TelemetryRow]) -> Rounds:
    """Group the delta rows by sampling round (rows of one round share their t exactly)."""
    interval: dict[float, float] = {}
    calls: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        if row.source != "redis":
            continue
        if row.metric == "interval_s":
            interval[row.t] = max(interval.get(row.t, 0.0), row.value)
        elif row.metric.startswith("calls:"):
            calls[row.metric.removeprefix("calls:")][row.t] += row.value
    ts = sorted(interval)
    return Rounds(
        ts, [interval[t] for t in ts], {name: [by_t.get(t, 0.0) for t in ts] for name, by_t in calls.items()}
    )


def by_round(
    rows: Iterable[TelemetryRow], metric: str, *, source: str = "redis", node: str | None = None
) -> list[tuple[float, float]]:
    """(t, value) per sampling round of `metric` (or of every metric starting with it when
    it ends in `:`, e.g. `keys:`), summed over nodes (or of one `node`)."""
    summed: dict[float, float] = defaultdict(float)
    for row in rows:
        if row.source != source or (node is not None and row.node != node):
            continue
        if row.metric == metric or (metric.endswith(":") and row.metric.startswith(metric)):
            summed[row.t] += row.value
    return sorted(summed.items())


# -- charts -----------------------------------------------------------------------------------------
Span = tuple[str, float, float]
"""(label, start t, end t): a stretch of the run to mark on the time axis (e.g. an experiment)."""


def render_telemetry_charts(
    rows: Sequence[TelemetryRow], charts_dir: Path, *, spans: Sequence[Span] = ()
) -> list[str]:
    """Draw every chart that has data; returns the PNG names (relative to `charts_dir`).

    `spans` are shaded and labelled on the command charts (what the run was doing when).
    """
    drawn = []
    for draw in (_ops_by_command, _memory, _clients, _cpu, _command_series):
        name = draw(rows, charts_dir, spans)
        if name:
            drawn.append(name)
    return drawn


def _mark_spans(ax: Any, spans: Sequence[Span], *, labels: bool = True) -> None:
    """Alternate light bands per span, the label at the top of each band."""
    for i, (label, start, end) in enumerate(spans):
        if end <= start:
            continue
        if i % 2 == 0:
            ax.axvspan(start, end, color="grey", alpha=0.10, linewidth=0)
        if labels:
            ax.annotate(
                label,
                ((start + end) / 2, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="top",
                fontsize=6,
                rotation=90,
                color="dimgrey",
            )


def _draw_ops(ax: Any, rows: Sequence[TelemetryRow], *, legend: bool = True, top: int = TOP_COMMANDS) -> bool:
    """Stacked calls/s per command (the `top` most called, the rest as `other`)."""
    found = rounds(rows)
    if not found.ts or not found.calls:
        return False
    ranked = list(command_totals(rows))
    shown = ranked[:top]
    stacks = [found.rates(name) for name in shown]
    labels = [name.upper() for name in shown]
    rest = ranked[top:]
    if rest:
        rest_rates = [found.rates(name) for name in rest]
        stacks.append([sum(column) for column in zip(*rest_rates, strict=True)])
        labels.append(f"other ({len(rest)})")
    edges, stacks = _interval_steps(found.ts, stacks, found.interval_s[0])
    ax.stackplot(edges, stacks, labels=labels, step="post")
    if legend:
        ax.legend(loc="upper left", fontsize=7, ncol=2)
    return True


def _draw_memory(ax: Any, rows: Sequence[TelemetryRow], *, legend: bool = True) -> bool:
    used = series(rows, "redis", "used_memory_bytes")
    rss = series(rows, "redis", "used_memory_rss_bytes")
    if not used:
        return False
    for node, points in used.items():
        ax.plot(*_xy(points, 1e-6), label=f"used_memory {node}")
    for node, points in rss.items():
        ax.plot(*_xy(points, 1e-6), linestyle="--", label=f"RSS {node}")
    if legend:
        ax.legend(fontsize=7)
    return True


def _draw_clients(ax: Any, rows: Sequence[TelemetryRow], *, legend: bool = True) -> bool:
    connected = series(rows, "redis", "connected_clients")
    blocked = series(rows, "redis", "blocked_clients")
    if not connected:
        return False
    for node, points in connected.items():
        ax.step(*_xy(points), where="post", label=f"connected {node}")
    for node, points in blocked.items():
        ax.step(*_xy(points), where="post", linestyle="--", label=f"blocked {node}")
    if legend:
        ax.legend(fontsize=7)
    return True


def _draw_cpu(ax: Any, rows: Sequence[TelemetryRow], *, legend: bool = True, processes: int = 6) -> bool:
    redis_cpu = series(rows, "redis", "cpu_s_per_s")
    harness_cpu = series(rows, "harness", "cpu_s_per_s")
    if not redis_cpu and not harness_cpu:
        return False
    for node, points in redis_cpu.items():
        ax.plot(*_xy(points, 100), label=f"redis-server {node}")
    named = [node for node in harness_cpu if node != "all"]
    if len(named) > 1 and "all" in harness_cpu:
        ax.plot(*_xy(harness_cpu["all"], 100), linestyle="--", label="harness, all processes")
    for node in named[:processes]:
        ax.plot(*_xy(harness_cpu[node], 100), linestyle=":", label=f"harness {node}")
    if legend:
        ax.legend(fontsize=7)
    return True


def _ops_by_command(rows: Sequence[TelemetryRow], charts_dir: Path, spans: Sequence[Span] = ()) -> str | None:
    fig, (ax,) = figure(width=7.5)
    if not _draw_ops(ax, rows):
        _close(fig)
        return None
    _mark_spans(ax, spans)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("calls/s (sampler's own left out)")
    ax.set_title("Redis commands per second, by command")
    return save_chart(fig, charts_dir, "telemetry_ops_by_command")


def _memory(rows: Sequence[TelemetryRow], charts_dir: Path, spans: Sequence[Span] = ()) -> str | None:
    fig, (ax,) = figure()
    if not _draw_memory(ax, rows):
        _close(fig)
        return None
    _mark_spans(ax, spans, labels=False)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MB")
    ax.set_title("Redis memory")
    return save_chart(fig, charts_dir, "telemetry_memory")


def _clients(rows: Sequence[TelemetryRow], charts_dir: Path, spans: Sequence[Span] = ()) -> str | None:
    fig, (ax,) = figure()
    if not _draw_clients(ax, rows):
        _close(fig)
        return None
    _mark_spans(ax, spans, labels=False)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("clients (sampler's own left out)")
    ax.set_title("Redis clients")
    return save_chart(fig, charts_dir, "telemetry_clients")


def _cpu(rows: Sequence[TelemetryRow], charts_dir: Path, spans: Sequence[Span] = ()) -> str | None:
    fig, (ax,) = figure()
    if not _draw_cpu(ax, rows):
        _close(fig)
        return None
    _mark_spans(ax, spans, labels=False)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("% of one core (user + sys)")
    ax.set_title("CPU: Redis beside the harness")
    return save_chart(fig, charts_dir, "telemetry_cpu")


def _command_series(rows: Sequence[TelemetryRow], charts_dir: Path, spans: Sequence[Span] = ()) -> str | None:
    found = rounds(rows)
    if not found.ts or not found.calls:
        return None
    ts, calls = found.ts, found.calls
    shown = list(command_totals(rows))[:SERIES_PANELS]
    step = interval_s(rows)
    fig, _ = figure(height=1.6 * len(shown) + 0.6)
    fig.clf()
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, shown, strict=True):
        edges, (values,) = _interval_steps(ts, [calls[name]], found.interval_s[0])
        (line,) = ax.step(edges, values, where="post")
        ax.plot(ts, calls[name], linestyle="none", marker=".", markersize=3, color=line.get_color())
        _mark_spans(ax, spans, labels=ax is axes[0])
        ax.set_ylabel("calls", fontsize=8)
        ax.set_title(f"{name.upper()}: calls per {step:.3g} s interval", fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since start")
    return save_chart(fig, charts_dir, "telemetry_command_series")


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- several sampled segments of one run (peers: one per driver; chaos: one per case) -----------
SEGMENT_KINDS = (
    ("ops_by_command", "Redis calls/s by command (stacked)", "calls/s", _draw_ops),
    ("memory", "Redis memory", "MB", _draw_memory),
    ("clients", "Redis clients (connected, blocked)", "clients", _draw_clients),
    ("cpu", "CPU: redis-server beside the harness", "% of one core", _draw_cpu),
)


def render_segment_charts(
    segments: Mapping[str, Sequence[TelemetryRow]], charts_dir: Path, *, stem: str, title: str
) -> list[str]:
    """One small-multiples chart per kind (commands, memory, clients, CPU): a panel per
    segment (its own telemetry file), all from the rows. Returns the PNG names."""
    names = [name for name, rows in segments.items() if any(r.source == "redis" for r in rows)]
    if not names:
        return []
    drawn = []
    ncols = 2 if len(names) > 1 else 1
    nrows = math.ceil(len(names) / ncols)
    for kind, what, unit, draw in SEGMENT_KINDS:
        fig, _ = figure(width=4.2 * ncols, height=2.1 * nrows + 0.8)
        fig.clf()
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        any_drawn = False
        for ax, name in zip(axes, names, strict=False):
            shown = draw(ax, segments[name], legend=False)
            any_drawn |= shown
            ax.set_title(name, fontsize=8, loc="left")
            ax.tick_params(labelsize=7)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=5, loc="upper right", ncol=2 if kind == "ops_by_command" else 1)
            if not shown:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=7)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        if not any_drawn:
            _close(fig)
            continue
        fig.suptitle(f"{title}: {what}", fontsize=10)
        fig.supxlabel("seconds since the segment started", fontsize=8)
        fig.supylabel(unit, fontsize=8)
        drawn.append(save_chart(fig, charts_dir, f"{stem}_{kind}"))
    return drawn


def _per_node_sum(rows: Sequence[TelemetryRow], source: str, metric: str) -> float:
    """A count summed over the per-node rows (the end-of-run `node=all` total left out)."""
    return sum(r.value for r in rows if r.source == source and r.metric == metric and r.node != "all")


def segments_table(segments: Mapping[str, Sequence[TelemetryRow]], *, label: str = "segment") -> str:
    """A Markdown table, one line per segment: commands/s, top command, CPU, memory, clients,
    restarts and what sampling cost. Every figure leaves the sampler's own commands out."""
    body = []
    for name, rows in segments.items():
        window = window_s(rows)
        if not any(r.source == "redis" for r in rows):
            body.append([name, "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        commands = sum(r.value for r in rows if r.source == "redis" and r.metric == "commands")
        totals = command_totals(rows)
        top = next(iter(totals.items()), None)
        redis_cpu = _Stat.of(_summed(rows, "redis", "cpu_s_per_s"))
        harness_cpu = _Stat.of(_summed(rows, "harness", "cpu_s_per_s", node="all"))
        memory = _Stat.of(_summed(rows, "redis", "used_memory_bytes"))
        connected = _Stat.of(_summed(rows, "redis", "connected_clients"))
        blocked = _Stat.of(_summed(rows, "redis", "blocked_clients"))
        restarts = _per_node_sum(rows, "telemetry", "restarts")
        errors = _per_node_sum(rows, "telemetry", "sample_errors")
        cost = sum(r.value for r in rows if r.metric == "telemetry_cost_commands_per_s")
        body.append(
            [
                name,
                f"{window:,.0f}",
                f"{commands / window:,.1f}" if window else "-",
                f"{top[0].upper()} {top[1] / window:,.1f}/s" if top and window else "-",
                f"{100 * redis_cpu.mean:.0f} / {100 * harness_cpu.mean:.0f}"
                if redis_cpu and harness_cpu
                else "-",
                fmt_bytes(memory.max) if memory else "-",
                f"{connected.max:.0f} / {blocked.max:.0f}" if connected and blocked else "-",
                f"{restarts:.0f} / {errors:.0f}",
                f"{cost:.2f}",
            ]
        )
    return markdown_table(
        [
            label,
            "sampled s",
            "commands/s",
            "most called",
            "CPU % redis / harness",
            "used_memory max",
            "clients max (conn / blocked)",
            "restarts / failed samples",
            "sampler commands/s",
        ],
        body,
    )


def _interval_steps(
    ts: list[float], stacks: list[list[float]], first_interval: float
) -> tuple[list[float], list[list[float]]]:
    """Edges for `step="post"` drawing: each value spans the interval that ends at its t."""
    edges = [max(0.0, ts[0] - first_interval), *ts]
    return edges, [[*values, values[-1]] for values in stacks]


def _xy(points: Points, scale: float = 1.0) -> tuple[list[float], list[float]]:
    return [t for t, _ in points], [v * scale for _, v in points]


# -- Markdown -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Stat:
    mean: float
    max: float
    last: float

    @classmethod
    def of(cls, values: Sequence[float]) -> _Stat | None:
        return cls(statistics.fmean(values), max(values), values[-1]) if values else None


def _summed(rows: Sequence[TelemetryRow], source: str, metric: str, node: str | None = None) -> list[float]:
    """Values of a metric per sampling round, summed over nodes (or of one node)."""
    return [value for _, value in by_round(rows, metric, source=source, node=node)]


def summary_markdown(rows: Sequence[TelemetryRow]) -> str:
    """A paragraph and a small table about a run's telemetry (what reports include).

    Every figure is computed from `rows`; command figures leave the sampler's own out.
    """
    nodes = sorted({r.node for r in rows if r.source == "redis"})
    if not nodes:
        return "No telemetry was sampled."
    window = window_s(rows)
    totals = command_totals(rows)
    commands = sum(r.value for r in rows if r.source == "redis" and r.metric == "commands")
    rate = commands / window if window else 0.0
    samples = next((r.value for r in rows if r.source == "telemetry" and r.metric == "samples"), None)
    cost = sum(r.value for r in rows if r.metric == "telemetry_cost_commands_per_s")
    top = ", ".join(f"{name.upper()} {calls / window:,.1f}/s" for name, calls in list(totals.items())[:4])
    memory = _summed(rows, "redis", "used_memory_bytes")
    redis_cpu = _Stat.of(_summed(rows, "redis", "cpu_s_per_s"))
    harness_cpu = _Stat.of(_summed(rows, "harness", "cpu_s_per_s", node="all"))
    parts = [
        f"Telemetry sampled {len(nodes)} Redis node(s) ({', '.join(nodes)})"
        + (f" {samples:.0f} times" if samples else "")
        + f" every {interval_s(rows):.3g} s over {window:,.1f} s.",
        f"Redis ran {commands:,.0f} commands ({rate:,.1f}/s)" + (f"; most called: {top}." if top else "."),
    ]
    if memory:
        parts.append(f"used_memory went from {fmt_bytes(memory[0])} to {fmt_bytes(memory[-1])}.")
    if redis_cpu and harness_cpu:
        parts.append(
            f"redis-server used {100 * redis_cpu.mean:.0f}% of a core on average "
            f"(the harness's processes {100 * harness_cpu.mean:.0f}%)."
        )
    parts.append(f"The sampler's own commands ({cost:,.2f}/s) are left out of every command figure.")
    body = []

    def add(label: str, values: Sequence[float], fmt: str = "{:,.1f}") -> None:
        stat = _Stat.of(values)
        if stat is not None:
            body.append([label, fmt.format(stat.mean), fmt.format(stat.max), fmt.format(stat.last)])

    add("commands/s", _summed(rows, "redis", "commands_per_s"))
    found = rounds(rows)
    for name in list(totals)[:3]:  # rounds without a call count as 0
        add(f"{name.upper()} calls/s", found.rates(name))
    if memory:
        stat = _Stat.of(memory)
        assert stat is not None
        body.append(["used_memory", fmt_bytes(stat.mean), fmt_bytes(stat.max), fmt_bytes(stat.last)])
    rss = _Stat.of(_summed(rows, "redis", "used_memory_rss_bytes"))
    if rss:
        body.append(["used_memory_rss", fmt_bytes(rss.mean), fmt_bytes(rss.max), fmt_bytes(rss.last)])
    add("connected clients", _summed(rows, "redis", "connected_clients"))
    add("blocked clients", _summed(rows, "redis", "blocked_clients"))
    add("redis-server CPU %", [100 * v for v in _summed(rows, "redis", "cpu_s_per_s")])
    add("harness CPU %", [100 * v for v in _summed(rows, "harness", "cpu_s_per_s", node="all")])
    table = markdown_table(["metric", "mean", "max", "last"], body)
    return " ".join(parts) + "\n\n" + table + "\n"


def sampler_cost(rows: Sequence[TelemetryRow]) -> float:
    """Commands/s the sampler itself added to Redis, all nodes (0 if the run had no end row)."""
    return sum(r.value for r in rows if r.metric == "telemetry_cost_commands_per_s")


def telemetry_section(
    rows: Sequence[TelemetryRow],
    charts_dir: Path,
    *,
    heading: str = "##",
    title: str = "What Redis did",
    file_name: str = "telemetry.csv",
    spans: Sequence[Span] = (),
) -> str:
    """A report section: what sampling was, its cost, the summary table and every chart
    (drawn into `charts_dir`, linked as `charts/NAME`), from `rows` alone."""
    charts = render_telemetry_charts(rows, charts_dir, spans=spans)
    parts = [
        f"{heading} {title}",
        "",
        f"Sampled beside the whole run (`{file_name}`: `INFO` once per interval on a connection of "
        "its own, and /proc for the harness's own processes, Locust and workers included). "
        "The sampler's own commands are counted as sent and left out of every command figure, "
        "here and in the measured counts (which leave `INFO` out); sampling cost Redis "
        f"**{sampler_cost(rows):.2f} commands/s**."
        + (" Shaded bands on the charts mark what the run was doing (from run.json)." if spans else ""),
        "",
        summary_markdown(rows).strip(),
        "",
    ]
    for name in charts:
        parts += [chart_link(name), ""]
    return "\n".join(parts)


SEGMENTS_DIR = "telemetry"
"""Where a run of several sampled segments keeps their files: `telemetry/<segment>.csv`."""


def read_segments(telemetry_dir: Path, order: Sequence[str] = ()) -> dict[str, list[TelemetryRow]]:
    """`<segment>.csv` files of a run's telemetry dir, in `order` first (then by name)."""
    if not telemetry_dir.is_dir():
        return {}
    found = {path.stem: path for path in sorted(telemetry_dir.glob("*.csv"))}
    names = [name for name in order if name in found] + [name for name in found if name not in order]
    return {name: read_telemetry(found[name]) for name in names}


def segments_section(
    telemetry_dir: Path,
    charts_dir: Path,
    *,
    order: Sequence[str] = (),
    heading: str = "##",
    title: str = "What Redis did",
    label: str = "segment",
    stem: str = "telemetry",
    intro: str = "",
) -> str:
    """A report section for a run sampled in segments (peers: a driver each; chaos: a case
    each): a table with one line per segment and small-multiples charts, from the files
    alone. Empty when the run was not sampled."""
    segments = read_segments(telemetry_dir, order)
    if not segments:
        return ""
    charts = render_segment_charts(segments, charts_dir, stem=stem, title=title)
    cost = sum(sampler_cost(rows) for rows in segments.values()) / len(segments)
    parts = [
        f"{heading} {title}",
        "",
        (intro + " " if intro else "")
        + f"Each {label} was sampled on its own (`{telemetry_dir.name}/<{label}>.csv`: `INFO` once per "
        "interval on a connection of its own, /proc for the harness's processes and their children). "
        "The sampler's own commands are counted and left out of every figure here, and the "
        "measured command counts leave `INFO` out; sampling cost Redis "
        f"{cost:.2f} commands/s on average per {label}.",
        "",
        segments_table(segments, label=label),
        "",
    ]
    for name in charts:
        parts += [chart_link(name), ""]
    return "\n".join(parts)
