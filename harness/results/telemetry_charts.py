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
def render_telemetry_charts(rows: Sequence[TelemetryRow], charts_dir: Path) -> list[str]:
    """Draw every chart that has data; returns the PNG names (relative to `charts_dir`)."""
    drawn = []
    for draw in (_ops_by_command, _memory, _clients, _cpu, _command_series):
        name = draw(rows, charts_dir)
        if name:
            drawn.append(name)
    return drawn


def _ops_by_command(rows: Sequence[TelemetryRow], charts_dir: Path) -> str | None:
    found = rounds(rows)
    if not found.ts or not found.calls:
        return None
    ranked = list(command_totals(rows))
    shown = ranked[:TOP_COMMANDS]
    stacks = [found.rates(name) for name in shown]
    labels = [name.upper() for name in shown]
    rest = ranked[TOP_COMMANDS:]
    if rest:
        rest_rates = [found.rates(name) for name in rest]
        stacks.append([sum(column) for column in zip(*rest_rates, strict=True)])
        labels.append(f"other ({len(rest)})")
    fig, (ax,) = figure(width=7.5)
    edges, stacks = _interval_steps(found.ts, stacks, found.interval_s[0])
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
        ax.set_ylabel("calls", fontsize=8)
        ax.set_title(f"{name.upper()}: calls per {step:.3g} s interval", fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since start")
    return save_chart(fig, charts_dir, "telemetry_command_series")


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
