"""The README's figures agree with the committed results they quote (and with each other)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from qbench.harness.results.rows import parse_params, read_metrics

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
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
    assert row in README
    ranges = re.findall(r"(\d[\d,]*)\s*[-\u2013]\s*(\d[\d,]*) submissions/s", README)
    assert ranges, "no range of submissions/s in the README"
    expected = (f"{min(rates.values()):,}", f"{max(rates.values()):,}")
    assert set(ranges) == {expected}, ranges
    per_preset = ", ".join(f"{p} {rates[p]:,}" for p in PRESETS)
    assert per_preset in README


def test_peers_duration_is_the_committed_runs() -> None:
    drivers = json.loads((REPO / "results" / "peers" / "run.json").read_text())["drivers"]
    seconds = sum(float(info["seconds"]) for info in drivers.values())
    minutes = seconds / 60
    claims = re.findall(r"full mode \(~(\d+) min", README) + re.findall(r"full mode \(~(\d+) min", MAKEFILE)
    assert len(claims) == 2, claims  # the README's command line and the Makefile's comment
    for claim in claims:
        assert abs(int(claim) - minutes) <= 0.1 * minutes, (claim, minutes)
    assert f"drivers took {seconds:,.0f} s together" in README
    assert f"{float(drivers['optimized']['seconds']):,.0f} s of it `optimized`" in README


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
        assert row in README, row
        if variant != "scripted":
            assert (max(counts) - min(counts)) / min(counts) <= 0.15  # the bound


def test_the_peers_cluster_table_is_the_committed_run() -> None:
    """One README row per library (or group of drivers), each outcome the committed one."""
    meta = json.loads((REPO / "results" / "peers-cluster" / "run.json").read_text())
    jobs = int(meta["sizes"]["jobs"])
    section = README.split("**On a Redis Cluster.**", 1)[1].split("\n## ", 1)[0]
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
