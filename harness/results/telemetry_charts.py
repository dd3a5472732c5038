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
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.infra.telemetry import TelemetryRow
from harness.results.render import figure, fmt_bytes, markdown_table, save_chart

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


def command_rounds(rows: Sequence[TelemetryRow]) -> tuple[list[float], dict[str, list[float]]]:
    """Sampling rounds (t of each) and the calls per command in each, all nodes summed.

    Rows of one round are within a fraction of an interval of each other; a round is
    keyed by t rounded to the median interval.
    """
    step = interval_s(rows)
    rounds: dict[int, float] = {}
    calls: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        if row.source != "redis":
            continue
        key = round(row.t / step)
        if row.metric == "interval_s":
            rounds.setdefault(key, row.t)
        elif row.metric.startswith("calls:"):
            calls[row.metric.removeprefix("calls:")][key] += row.value
    keys = sorted(rounds)
    return [rounds[k] for k in keys], {name: [by[k] for k in keys] for name, by in calls.items()}


# -- charts -----------------------------------------------------------------------------------------
def render_telemetry_charts(rows: Sequence[TelemetryRow], charts_dir: Path) -> list[str]:
    """Draw every chart that has data; returns the PNG names (relative to `charts_dir`)."""
    drawn = []
    for draw in (_ops_by_command, _memory, _clients, _cpu, _command_series):
        name = draw(rows, charts_dir)
        if name:
            drawn.append(name)
    return drawn


def _ops_by_command(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    ts, calls = command_rounds(rows)
    if not ts or not calls:
        return None
    step = interval_s(rows)
    ranked = list(command_totals(rows))
    shown = ranked[:TOP_COMMANDS]
    stacks = [[c / step for c in calls[name]] for name in shown]
    labels = [name.upper() for name in shown]
    rest = ranked[TOP_COMMANDS:]
    if rest:
        stacks.append([sum(calls[name][i] for name in rest) / step for i in range(len(ts))])
        labels.append(f"other ({len(rest)})")
    fig, (ax,) = figure(width=7.5)
    edges, stacks = _interval_steps(ts, stacks, step)
    ax.stackplot(edges, stacks, labels=labels, step="post")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("calls/s (sampler's own left out)")
    ax.set_title("Redis commands per second, by command")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    return save_chart(fig, charts_dir, "telemetry_ops_by_command")


def _memory(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    used = series(rows, "redis", "used_memory_bytes")
    rss = series(rows, "redis", "used_memory_rss_bytes")
    if not used:
        return None
    fig, (ax,) = figure()
    for node, points in used.items():
        ax.plot(*_xy(points, 1e-6), label=f"used_memory {node}")
    for node, points in rss.items():
        ax.plot(*_xy(points, 1e-6), linestyle="--", label=f"RSS {node}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MB")
    ax.set_title("Redis memory")
    ax.legend(fontsize=7)
    return save_chart(fig, charts_dir, "telemetry_memory")


def _clients(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    connected = series(rows, "redis", "connected_clients")
    blocked = series(rows, "redis", "blocked_clients")
    if not connected:
        return None
    fig, (ax,) = figure()
    for node, points in connected.items():
        ax.step(*_xy(points), where="post", label=f"connected {node}")
    for node, points in blocked.items():
        ax.step(*_xy(points), where="post", linestyle="--", label=f"blocked {node}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("clients (sampler's own left out)")
    ax.set_title("Redis clients")
    ax.legend(fontsize=7)
    return save_chart(fig, charts_dir, "telemetry_clients")


def _cpu(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    redis_cpu = series(rows, "redis", "cpu_s_per_s")
    harness_cpu = series(rows, "harness", "cpu_s_per_s")
    if not redis_cpu and not harness_cpu:
        return None
    fig, (ax,) = figure()
    for node, points in redis_cpu.items():
        ax.plot(*_xy(points, 100), label=f"redis-server {node}")
    processes = [node for node in harness_cpu if node != "all"]
    if len(processes) > 1 and "all" in harness_cpu:
        ax.plot(*_xy(harness_cpu["all"], 100), linestyle="--", label="harness, all processes")
    for node in processes[:6]:
        ax.plot(*_xy(harness_cpu[node], 100), linestyle=":", label=f"harness {node}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("% of one core (user + sys)")
    ax.set_title("CPU: Redis beside the harness")
    ax.legend(fontsize=7)
    return save_chart(fig, charts_dir, "telemetry_cpu")


def _command_series(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    ts, calls = command_rounds(rows)
    if not ts or not calls:
        return None
    shown = list(command_totals(rows))[:SERIES_PANELS]
    step = interval_s(rows)
    fig, _ = figure(height=1.6 * len(shown) + 0.6)
    fig.clf()
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, shown, strict=True):
        edges, (values,) = _interval_steps(ts, [calls[name]], step)
        (line,) = ax.step(edges, values, where="post")
        ax.plot(ts, calls[name], linestyle="none", marker=".", markersize=3, color=line.get_color())
        ax.set_ylabel("calls", fontsize=8)
        ax.set_title(f"{name.upper()}: calls per {step:.3g} s interval", fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since start")
    return save_chart(fig, charts_dir, "telemetry_command_series")


def _interval_steps(
    ts: list[float], stacks: list[list[float]], step: float
) -> tuple[list[float], list[list[float]]]:
    """Edges for `step="post"` drawing: each value spans its interval (t - step, t]."""
    edges = [max(0.0, ts[0] - step), *ts]
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
    step = interval_s(rows)
    by_round: dict[int, float] = defaultdict(float)
    for row in rows:
        if row.source == source and row.metric == metric and (node is None or row.node == node):
            by_round[round(row.t / step)] += row.value
    return [by_round[k] for k in sorted(by_round)]


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
    _, per_round = command_rounds(rows)
    step = interval_s(rows)
    for name in list(totals)[:3]:  # rounds without a call count as 0
        add(f"{name.upper()} calls/s", [calls / step for calls in per_round[name]])
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
