"""The figures of the README and of docs/ agree with the committed results they quote (and with
each other)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qbench.harness.results.rows import parse_params, read_metrics

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((REPO / "docs").glob("*.md"))}
TEXT = "\n".join([README, *DOCS.values()])
"""Everything a user reads: the README and every docs page."""
MAKEFILE = (REPO / "Makefile").read_text()
PRESETS = ("baseline", "optimized", "scripted")


def api_rates() -> dict[str, int]:
    """Submissions/s of each committed `http` load run (`rate` of `op=submit`), rounded."""
    rates = {}
    for preset in PRESETS:
        rows = read_metrics(REPO / "results" / "load" / "http" / preset / "metrics.csv")
        [rate] = [
            r.value for r in rows if r.metric == "rate" and parse_params(r.params).get("op") == "submit"
        ]
        rates[preset] = round(rate)
    return rates


def test_every_api_rate_in_the_readme_is_the_committed_one() -> None:
    rates = api_rates()
    row = "| http | API submissions/s | " + " | ".join(f"{rates[p]:,}" for p in PRESETS) + " |"
    assert row in DOCS["load.md"]
    ranges = re.findall(r"(\d[\d,]*)\s*[-\u2013]\s*(\d[\d,]*) submissions/s", TEXT)
    assert ranges, "no range of submissions/s in the README or docs/"
    expected = (f"{min(rates.values()):,}", f"{max(rates.values()):,}")
    assert set(ranges) == {expected}, ranges
    per_preset = ", ".join(f"{p} {rates[p]:,}" for p in PRESETS)
    assert per_preset in DOCS["api.md"]


def test_peers_duration_is_the_committed_runs() -> None:
    drivers = json.loads((REPO / "results" / "peers" / "run.json").read_text())["drivers"]
    seconds = sum(float(info["seconds"]) for info in drivers.values())
    minutes = seconds / 60
    claims = re.findall(r"full mode \(~(\d+) min", TEXT) + re.findall(r"full mode \(~(\d+) min", MAKEFILE)
    assert len(claims) == 2, claims  # docs/peers.md's command line and the Makefile's comment
    for claim in claims:
        assert abs(int(claim) - minutes) <= 0.1 * minutes, (claim, minutes)
    assert f"drivers took {seconds:,.0f} s together" in DOCS["peers.md"]
    assert f"{float(drivers['optimized']['seconds']):,.0f} s of it `optimized`" in DOCS["peers.md"]


def test_the_cluster_table_is_the_committed_run() -> None:
    """Per-shard commands (exact), the spread, and jobs/s as median (min..max)."""
    rows = read_metrics(REPO / "results" / "cluster" / "metrics.csv")

    def cell(variant: str, metric: str, **wanted: str) -> list[float]:
        return [
            r.value
            for r in rows
            if r.variant == variant and r.metric == metric and parse_params(r.params) == wanted
        ]

    for variant, shown in (
        ("scripted", "scripted (one partition)"),
        ("scripted+partitions=3", "scripted+partitions=3"),
    ):
        shards = [cell(variant, "commands", phase="cycle", shard=str(s)) for s in (1, 2, 3)]
        assert all(len(set(found)) == 1 for found in shards)  # exact in every repeat
        counts = [found[0] for found in shards]
        rates = sorted(cell(variant, "jobs_per_s", phase="drain", workers="8"))
        low, mid, high = rates[0], rates[len(rates) // 2], rates[-1]
        busy = [c for c in counts if c]
        spread = (
            "one shard does everything"
            if len(busy) == 1
            else f"{100 * (max(counts) - min(counts)) / min(counts):.1f}%"
        )
        row = (
            f"| {shown} | "
            + " | ".join(f"{c:,.0f}" for c in counts)
            + f" | {spread} | {mid:,.0f} ({low:,.0f}..{high:,.0f}) |"
        )
        assert row in DOCS["cluster.md"], row
        if variant != "scripted":
            assert (max(counts) - min(counts)) / min(counts) <= 0.15  # the bound


def test_the_peers_cluster_table_is_the_committed_run() -> None:
    """One row of docs/peers.md per library (or group of drivers), each outcome the committed one."""
    meta = json.loads((REPO / "results" / "peers-cluster" / "run.json").read_text())
    jobs = int(meta["sizes"]["jobs"])
    section = DOCS["peers.md"].split("## On a Redis Cluster", 1)[1].split("\n## ", 1)[0]
    outcomes = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("driver", "---"):
            for name in cells[0].split(", "):
                outcomes[name.lower()] = cells[2]
    assert f"outcome ({jobs} jobs)" in section
    assert set(outcomes) == set(meta["drivers"]), sorted(outcomes)
    for name, info in meta["drivers"].items():
        outcome = info["outcome"]
        if outcome["status"] == "works":
            assert outcomes[name].startswith(f"works: {jobs}/{jobs}"), (name, outcomes[name])
        else:
            assert f"fails at {outcome['phase']}" in outcomes[name], (name, outcomes[name])


def _table(text: str, header_start: str) -> list[dict[str, str]]:
    """The Markdown table whose header row starts with `header_start`, as dicts by header."""
    lines = text.split(header_start, 1)[1].splitlines()
    header = [c.strip() for c in (header_start + lines[0]).strip().strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")), strict=True)))
    return rows


PEERS_COLUMNS = {
    "enqueue, 1/call": ("enqueue, one call per job (jobs/s)",),
    "bulk (100/call)": ("bulk enqueue (100/call) (jobs/s)",),
    "processing": ("processing, ~10 workers (jobs/s)",),
    "processing (jobs/s)": ("processing, ~10 workers (jobs/s)",),
    "commands/job": ("Redis commands per job (commands/job)",),
    "round trips/job": ("Redis round trips per job (round_trips/job)",),
    "server CPU µs/job": ("Redis server CPU per job (us/job)",),
    "idle cmds/s": ("idle workers' commands (commands/s)",),
    "pickup p50 / p99 ms": ("pickup latency p50 (ms)", "pickup latency p99 (ms)"),
    "bytes/job": ("memory after the jobs (bytes/job)",),
}


@pytest.mark.parametrize("where", ["README.md", "docs/peers.md"])
def test_the_peers_tables_are_the_committed_run(where: str) -> None:
    """Every cell of the README's peers summary and of docs/peers.md's table is PEERS.md's."""
    peers_md = (REPO / "results" / "peers" / "PEERS.md").read_text()
    committed = {r["driver"]: r for r in _table(peers_md, "| driver | version |")}
    shown = _table((REPO / where).read_text(), "| driver | ")
    assert len(shown) >= 12, where
    for row in shown:
        name = row["driver"].split(" ")[0].lower()  # "Huey 3.5.4" -> huey; "BullMQ 6.7.0 (Node.js)" -> bullmq
        source = committed[name]
        if " " in row["driver"]:
            assert row["driver"].split(" ")[1] == source["version"], row["driver"]
        for column, value in row.items():
            if column == "driver":
                continue
            expected = " / ".join(source[c] for c in PEERS_COLUMNS[column])
            assert value == expected, (where, name, column, value, expected)


def test_the_readme_claims_quote_the_reference_report() -> None:
    """The README's short claims table quotes figures of the committed reference report."""
    report = (REPO / "results" / "reference" / "REPORT.md").read_text()
    quoted = [
        ("294.1/s", "294.1/s"),
        ("6.2/s", "6.2/s"),
        ("scripted 0.3/s", "scripted (notify) 0.3/s"),
        ("242 ms → 7.0 ms", "242 ms → 7.0 ms"),
        ("226 → 3.4 ms", "226 ms → 3.4 ms"),
        ("95.5%", "95.5% saved"),
        ("56% fewer", "56% fewer"),
        ("0.10% of a job cycle", "= 0.10%"),
        ("2.56\u00d7 (95% CI 2.50..2.60)", "2.56x (95% CI 2.50..2.60"),
        ("19.4\u00d7 large", "19.42x"),
        ("baseline 802", "baseline 802 jobs/s"),
        ("optimized 20", "optimized 20 jobs/s"),
        ("scripted 26,163 jobs/s", "scripted 26,163 jobs/s"),
        ("p99 6.1\u20136.9 ms", "p99 6.14 / 6.07 / 6.93 ms"),
    ]
    for in_readme, in_report in quoted:
        assert in_readme in README, in_readme
        assert in_report in report, in_report
