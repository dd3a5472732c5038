"""PEERS.md and one chart per metric, rendered from metrics.csv and run.json only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.harness.peers.registry import REFERENCE_NAMES, order
from qbench.harness.results.rows import Row, parse_params, source_text
from qbench.harness.results.stats import Spread
from qbench.harness.results.telemetry_charts import SEGMENTS_DIR, segments_section

REPORT_FILE = "PEERS.md"
CHARTS_DIR = "charts"


@dataclass(frozen=True, slots=True)
class Metric:
    """One column of the table and one chart."""

    key: str
    metric: str
    match: tuple[tuple[str, str], ...]
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 0


METRICS = (
    Metric(
        "enqueue", "enqueue_jobs_per_s", (("calls", "serial"),), "enqueue, one call per job", "jobs/s", True
    ),
    Metric(
        "enqueue_many",
        "enqueue_jobs_per_s",
        (("calls", "many100"),),
        "bulk enqueue (100/call)",
        "jobs/s",
        True,
    ),
    Metric("process", "process_jobs_per_s", (), "processing, ~10 workers", "jobs/s", True),
    Metric(
        "commands",
        "commands_per_job",
        (("command", "all"),),
        "Redis commands per job",
        "commands/job",
        False,
        1,
    ),
    Metric(
        "round_trips",
        "round_trips_per_job",
        (),
        "Redis round trips per job",
        "round_trips/job",
        False,
        1,
    ),
    Metric(
        "server_cpu",
        "server_cpu_us_per_job",
        (),
        "Redis server CPU per job",
        "us/job",
        False,
        1,
    ),
    Metric(
        "idle", "idle_commands_per_s", (("command", "all"),), "idle workers' commands", "commands/s", False, 1
    ),
    Metric("pickup_p50", "pickup_ms_p50", (), "pickup latency p50", "ms", False, 2),
    Metric("pickup_p99", "pickup_ms_p99", (), "pickup latency p99", "ms", False, 2),
    Metric("pickup_max", "pickup_ms_max", (), "pickup latency max", "ms", False, 2),
    Metric("memory", "memory_bytes_per_job", (), "memory after the jobs", "bytes/job", False),
    Metric("keys", "keys_left", (), "keys left after the jobs", "keys", False),
    Metric("keys_no_ttl", "keys_left_no_ttl", (), "keys left without a TTL", "keys", False),
)


def _matches(row: Row, metric: Metric) -> bool:
    if row.metric != metric.metric:
        return False
    values = parse_params(row.params)
    return all(values.get(k) == v for k, v in metric.match)


def collect(rows: Sequence[Row], metric: Metric) -> dict[str, Spread]:
    """Per driver, the spread of a metric over repeats.

    Commands, round trips and server CPU per job add the phases of one job's life (enqueue +
    process) per repeat.
    """
    per_driver: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    growth = {r.variant for r in rows if r.metric == metric.metric and "method=growth" in r.params}
    for row in rows:
        if not _matches(row, metric):
            continue
        if metric.key == "memory" and row.variant in growth and "method=growth" not in row.params:
            continue  # the second batch's growth leaves the first batch's one-time costs out
        phase = parse_params(row.params).get("phase")
        if metric.key in ("commands", "round_trips", "server_cpu") and phase not in ("enqueue", "process"):
            continue
        per_driver[row.variant][row.repeat] += row.value
    return {name: Spread.of(list(by_repeat.values())) for name, by_repeat in per_driver.items()}


def _fmt(value: float, digits: int) -> str:
    if value != value:  # NaN: too few jobs to compute a rate
        return "n/a"
    return f"{value:,.{digits}f}"


def _order(names: Sequence[str]) -> list[str]:
    return order(list(names))


def pickup_method(rows: Sequence[Row]) -> str:
    """How the pickup figures were measured, from their rows' params (a run made before
    random arrivals existed says so too)."""
    methods = {
        (p.get("arrivals", "closed"), p.get("gap_max_s"), p.get("samples"))
        for r in rows
        if r.metric == "pickup_ms_p99"
        for p in [parse_params(r.params)]
    }
    if not methods:
        return "not measured"
    texts = []
    for arrivals, gap, samples in sorted(methods, key=str):
        if arrivals == "random":
            texts.append(
                f"{samples} probes per driver sent at random times, gaps drawn uniformly from [0, {gap}) s "
                "(the same schedule for every driver), each sent whether or not the previous one had "
                "started: the workers are met at every phase of their idle cycle"
            )
        else:
            texts.append(
                f"{samples} probes per driver, each sent once the previous one had started (closed loop: "
                "the workers had always just finished a job, so a library that backs off while idle "
                "was never caught asleep)"
            )
    return "; ".join(texts)


def command_breakdown(rows: Sequence[Row], driver: str, phase: str) -> str:
    """`cmd n, cmd n` (repeat 0) for one phase, most frequent first."""
    found = [
        (parse_params(r.params)["command"], r.value)
        for r in rows
        if r.variant == driver
        and r.metric in ("commands_per_job", "idle_commands_per_s")
        and r.repeat == 0
        and parse_params(r.params).get("phase") == phase
        and parse_params(r.params).get("command") != "all"
    ]
    found.sort(key=lambda item: (-item[1], item[0]))
    shown = [f"{cmd} {value:.2f}" for cmd, value in found if value >= 0.005]
    rare = [value for _cmd, value in found if value < 0.005]
    if rare:  # connection handshakes, start-up and housekeeping, spread over many jobs
        shown.append(f"{len(rare)} others {sum(rare):.2g}")
    # A `|` (as in `client|setinfo`) would split the Markdown table cell.
    return ", ".join(shown).replace("|", "\\|") or "none"


def standing(values: Mapping[str, Spread], metric: Metric, reference: str = "scripted") -> str | None:
    """Where `reference` stands against the best peer library on one metric."""
    # Libraries with their defaults only: a labelled configuration is reported, not ranked.
    peers = {
        name: s
        for name, s in values.items()
        if name not in REFERENCE_NAMES and "+" not in name and s.median == s.median
    }
    if reference not in values or not peers:
        return None
    pick = max if metric.higher_is_better else min
    best = pick(peers, key=lambda name: peers[name].median)
    ours, theirs = values[reference].median, peers[best].median
    if ours == theirs:
        verdict = "ties"
    elif (ours > theirs) == metric.higher_is_better:
        verdict = "beats"
    else:
        verdict = "trails"
    # A ratio to zero or to a negative figure (memory growth within noise) means nothing.
    ratio = f"{ours / theirs:.2f}x" if theirs > 0 and ours >= 0 else "n/a"
    return (
        f"{metric.label}: {reference} {_fmt(ours, metric.digits)} vs best peer {best} "
        f"{_fmt(theirs, metric.digits)} {metric.unit} ({ratio}): {verdict}"
    )


PRESET_COLOR, PEER_COLOR = "tab:orange", "tab:blue"
TUNED_HATCH = "//"


def group_of(name: str) -> str:
    """'preset' (qbench's own), 'peer' (a library with its defaults) or 'tuned' (a labelled
    configuration of one, `library+setting=value`)."""
    if name in REFERENCE_NAMES:
        return "preset"
    return "tuned" if "+" in name else "peer"


def chart_figure(values: Mapping[str, Spread], metric: Metric) -> Any:
    """One horizontal bar per driver, qbench's presets first and set apart from the peer
    libraries by colour, a rule between the groups and a legend naming both."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "qbench"
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ordered = _order(list(values))
    names = [n for group in ("preset", "peer", "tuned") for n in ordered if group_of(n) == group]
    medians = [values[n].median for n in names]
    low = [values[n].median - values[n].min for n in names]
    high = [values[n].max - values[n].median for n in names]
    groups = [group_of(n) for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 2.0), layout="constrained")
    bars = ax.barh(
        names,
        medians,
        xerr=[low, high],
        color=[PRESET_COLOR if g == "preset" else PEER_COLOR for g in groups],
        capsize=3,
        error_kw={"elinewidth": 1},
    )
    for bar, group in zip(bars, groups, strict=True):
        if group == "tuned":
            bar.set_hatch(TUNED_HATCH)
            bar.set_alpha(0.6)
    presets = groups.count("preset")
    if 0 < presets < len(names):
        ax.axhline(presets - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.invert_yaxis()
    better = "higher" if metric.higher_is_better else "lower"
    ax.set_title(f"{metric.label} ({better} is better)")
    ax.set_xlabel(f"{metric.unit} (bar: median; whisker: min..max over the repeats)")
    for i, (value, up) in enumerate(zip(medians, high, strict=True)):
        # Past the whisker's end, so the figure never sits on the error bar.
        ax.text(value + up, i, f"  {_fmt(value, metric.digits)}", va="center", fontsize=8)
    ax.set_xlim(right=max((m + h for m, h in zip(medians, high, strict=True)), default=1.0) * 1.18 or 1.0)
    handles = [Patch(color=PRESET_COLOR, label="qbench presets: baseline, optimized, scripted")]
    if "peer" in groups:
        handles.append(Patch(color=PEER_COLOR, label="peer libraries, default settings"))
    if "tuned" in groups:
        handles.append(
            Patch(
                facecolor=PEER_COLOR, alpha=0.6, hatch=TUNED_HATCH, label="peer library, tuned (name+setting)"
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    return fig


def render_chart(values: Mapping[str, Spread], metric: Metric, charts_dir: Path) -> str:
    import matplotlib.pyplot as plt

    fig = chart_figure(values, metric)
    charts_dir.mkdir(parents=True, exist_ok=True)
    stem = f"peers_{metric.key}"
    fig.savefig(charts_dir / f"{stem}.png", dpi=100)
    fig.savefig(charts_dir / f"{stem}.svg", metadata={"Date": None})
    plt.close(fig)
    return f"{stem}.png"


def peers_telemetry(out_dir: Path, names: Sequence[str]) -> str:
    """The "What Redis did" section: each driver's telemetry file, side by side."""
    return (
        segments_section(
            out_dir / SEGMENTS_DIR,
            out_dir / CHARTS_DIR,
            order=names,
            label="driver",
            stem="peers_telemetry",
            intro="Redis and the harness while each driver ran all its phases (enqueue, drain, idle, "
            "pickup, bulk enqueue), on its own server.",
        )
        or "## What Redis did\n\nNot sampled (`--telemetry-interval 0`, or a run from before telemetry).\n"
    )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def version_text(name: str, driver: Mapping[str, Any] | None, failures: Mapping[str, str]) -> str:
    """The version a driver reported, or why there is none (never a bare `?`)."""
    if not driver:
        if name in failures:
            return "? (failed before reporting one)"
        return "? (run.json holds no entry for this driver)"
    version = driver.get("version")
    if version and version != "?":
        return str(version)
    distribution = driver.get("distribution")
    if not distribution:
        return "? (the driver declares no distribution)"
    if driver.get("external"):
        return f"? (its version command gave none for {distribution})"
    return f"? ({distribution} is not installed in its environment)"


def environment_text(driver: Mapping[str, Any]) -> str:
    """Where the driver's code ran, from run.json: its `environment` entry when the run recorded
    one, else what its entry implies (qbench's own presets run in qbench's environment)."""
    if driver.get("environment"):
        return str(driver["environment"])
    if driver.get("external"):
        return "external commands in the driver's folder (their own install)"
    if driver.get("distribution") == "qbench":
        return "qbench's own environment"
    if driver.get("origin") == "built-in":
        return "own virtualenv (every built-in library driver declares its requirements)"
    return "not recorded in run.json"


def render_report(rows: Sequence[Row], meta: Mapping[str, Any], out_dir: Path) -> Path:
    """Write PEERS.md and the charts; returns the report's path."""
    drivers: Mapping[str, Any] = meta.get("drivers", {})
    failures: Mapping[str, str] = meta.get("failures", {})
    sizes: Mapping[str, Any] = meta.get("sizes", {})
    names = _order(list({r.variant for r in rows} | set(failures)))
    table = {m.key: collect(rows, m) for m in METRICS}
    shown = [m for m in METRICS if table[m.key]]
    server = meta.get("server", {})
    cpus = meta.get("cpu", {}).get("cpu_count", "?")
    lines = ["# Peers: the reference presets beside the queues people use", ""]
    if failures:
        lines += [
            f"**Incomplete run: {len(failures)} driver(s) failed ({', '.join(failures)}); their rows are "
            'missing from every table below (see "Failed drivers").**',
            "",
        ]
    lines += [
        f"Mode **{meta.get('mode', '?')}**: {_count(sizes.get('jobs'))} no-op jobs per phase, "
        f"{sizes.get('repeats', '?')} repeat(s) of the timed phases (median, min..max in the charts), "
        f"{sizes.get('concurrency', '?')} concurrent workers, idle window {sizes.get('idle_s', '?')} s, "
        f"{sizes.get('pickup_samples', '?')} pickup samples. Each driver had a fresh Redis "
        f"({server.get('flavor', 'redis')} {server.get('version', '?')}, {server.get('allocator', '?')}); "
        'where each one ran is in "Setup per driver". '
        f"Created {meta.get('created_at', '?')} on {cpus} CPUs (unpinned), {source_text(meta)}.",
        "",
    ]
    header = ["driver", "version", *(f"{m.label} ({m.unit})" for m in shown)]
    if not shown:  # every driver failed: no metric column to hold the FAILED mark
        header.append("status")
    body = []
    for name in names:
        version = version_text(name, drivers.get(name), failures)
        if name in failures:
            cells = ["FAILED"]  # under the first metric, or under "status" when none was measured
        else:
            cells = [
                _fmt(table[m.key][name].median, m.digits) if name in table[m.key] else "-" for m in shown
            ]
        body.append([name, version, *cells])
    width = len(header)
    lines.append(table_row(header))
    lines.append("|" + "---|" * 2 + "---:|" * (width - 2))
    lines += [table_row(cells + [""] * (width - len(cells))) for cells in body]
    lines += ["", f"Pickup latency: {pickup_method(rows)}."]
    if "scripted" in names and "scripted" not in failures:
        lines += ["", "## Where `scripted` stands against the best peer", ""]
        standings = [s for m in shown if (s := standing(table[m.key], m)) is not None]
        lines += [f"- {s}" for s in standings] or ["- (no peer library measured beside it)"]
    lines += [
        "",
        "## Setup per driver",
        "",
        "| driver | library | setup | environment | redis-py | repeats | load (1 min) before -> after |",
        "|---|---|---|---|---|---:|---|",
    ]
    for name in names:
        if name in failures:
            continue
        d = drivers.get(name, {})
        load = f"{d.get('loadavg_before', ['?'])[0]} -> {d.get('loadavg_after', ['?'])[0]}"
        repeats = len({r.repeat for r in rows if r.variant == name and r.metric == "process_jobs_per_s"})
        lines.append(
            f"| {name} | {d.get('distribution', '?')} {version_text(name, d, failures)} "
            f"| {d.get('setup', '?')} | {environment_text(d)} | {d.get('redis_py', '?')} "
            f"| {repeats} | {load} |"
        )
    lines += [
        "",
        "## Redis commands by command",
        "",
        "Per job for enqueue (one call per job) and processing (from starting the workers to the "
        "last job: worker start-up and polling included); per second for idle workers.",
        "",
        "| driver | enqueue, per job | processing, per job | idle, per second |",
        "|---|---|---|---|",
    ]
    for name in [n for n in names if n not in failures]:
        lines.append(
            f"| {name} | {command_breakdown(rows, name, 'enqueue')} | "
            f"{command_breakdown(rows, name, 'process')} | {command_breakdown(rows, name, 'idle')} |"
        )
    charts = [render_chart(table[m.key], m, out_dir / CHARTS_DIR) for m in shown]
    lines += ["", "## Charts", ""] + [f"![{c}]({CHARTS_DIR}/{c})" for c in charts]
    lines += ["", peers_telemetry(out_dir, names).rstrip()]
    lines += [
        "",
        "## How it was measured",
        "",
        "- Enqueue: the producer process enqueues the jobs one call at a time (the bulk column: "
        "the library's own bulk call, 100 jobs per call, where it has one); time spent inside the calls.",
        "- Processing: jobs enqueued first, then the workers started; the rate is taken from the "
        "handlers' start times over the middle 90% of the jobs (worker boot left out).",
        "- Commands: `INFO commandstats` deltas on the driver's own server; commands that Lua "
        "scripts run count too, as Redis counts them (an EVALSHA plus each command inside it).",
        "- Round trips: `total_reads_processed` deltas (INFO stats) on the same server, the probe's "
        "own INFO left out: Redis handles one read per request up to 16 KB, so this counts round trips "
        "whatever the client, in any language (a large pipeline counts a few reads).",
        "- Idle: workers running with empty queues, after a settle pause.",
        f"- Pickup: {pickup_method(rows)}; latency from the timestamp in the job's arguments to the "
        "handler's start (same host clock); three warm-up jobs first, dropped.",
        "- Memory per job: the `used_memory` growth the second batch of jobs brought, once processed "
        "and the workers stopped (one-time costs, such as loaded scripts and the connections' buffers, "
        "were all paid in the first batch); with one repeat only (quick mode, or a slow driver), the "
        "growth over the first batch, those costs included (rows `method=growth` / `method=first`).",
        "- Redis server CPU per job: `used_cpu_user` + `used_cpu_sys` deltas (INFO cpu) over the "
        "enqueue (one call per job) and processing phases, per job: every cost of the server's, its "
        "event loop and socket reads included, as the server's own clock counts it.",
        "- Keys: the keys in the database after the first batch of jobs was processed and the "
        "workers stopped; keys without a TTL stay forever.",
        "- Repeats stop early once a driver's repeats took 4 minutes (the `repeats` column).",
    ]
    pipes = [
        f"{name} {r.value:.0f} µs"
        for name in names
        for r in rows
        if r.variant == name and r.metric == "protocol_round_trip_us"
    ]
    if pipes:
        lines.append(
            "- External drivers (a producer command qbench talks to over a pipe, one request at a time): "
            f"one pipe round trip without Redis (`ping`) took {', '.join(pipes)}; each enqueue call timed "
            "for them includes one such round trip, and their pickup latency the one-way half of it."
        )
    if meta.get("command"):
        lines += ["", f"This run: `{meta['command']}` (from the qbench checkout at the commit above)."]
    lines += [
        "",
        "Reproduce: `make peers` (the full run), `qbench peers --quick`, `qbench peers --only "
        "scripted,huey`, or `qbench peers --driver path/to/driver.toml`; `qbench peers --render DIR` "
        "redraws this report from `metrics.csv` and `run.json`.",
    ]
    if failures:
        lines += ["", "## Failed drivers", ""] + [f"- {name}: {why}" for name, why in failures.items()]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
