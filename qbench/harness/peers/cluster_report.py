"""PEERS-CLUSTER.md: one row per driver tried on a Redis Cluster, rendered from
metrics.csv and run.json only (`qbench peers --render DIR` redoes it)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qbench.harness.peers.cluster import EXPERIMENT, FAILS, NOT_ATTEMPTED, WORKS, ClusterSuiteResult
from qbench.harness.peers.registry import order
from qbench.harness.peers.runner import Sizes
from qbench.harness.peers.suite import PeersInputError
from qbench.harness.results.render import markdown_table
from qbench.harness.results.rows import (
    METRICS_FILE,
    RUN_FILE,
    Row,
    parse_params,
    read_metrics,
    run_metadata,
    source_text,
    write_metrics,
)
from qbench.harness.results.runs import FAILED, RunFolder, start_run
from qbench.queue_impl.connection import redact_url

REPORT_FILE = "PEERS-CLUSTER.md"
CLUSTER_SIZES = ("jobs", "concurrency", "stall_s")
"""The sizes a cluster attempt uses (run.json keeps only these)."""


def write_cluster_suite(
    result: ClusterSuiteResult,
    sizes: Sizes,
    out_dir: Path,
    *,
    mode: str,
    url: str | None,
    command: str | None = None,
    load: tuple[str, str] = ("?", "?"),
    run: RunFolder | None = None,
) -> Path:
    """metrics.csv, run.json and PEERS-CLUSTER.md of a cluster run; returns the report's path.

    `url`: the user's cluster, None when qbench started one per driver; `load`: the load
    average before and after (text); `run`: the run the verb started before the attempts
    (without it the run starts here, keeping the files already written into `out_dir`).
    run.json says failed when qbench could not attempt a driver (a library that fails on a
    cluster is an outcome, not a failed run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    write_metrics(out_dir / METRICS_FILE, rows)
    servers = [d["server"] for d in result.drivers.values() if d.get("server")]
    meta = run_metadata(
        server=servers[0] if servers else {},
        mode=mode,
        extra={
            "experiment": EXPERIMENT,
            "command": command,
            "sizes": {k: v for k, v in dataclasses.asdict(sizes).items() if k in CLUSTER_SIZES},
            "cluster": {"owned": url is None, "url": redact_url(url) if url else None},
            "drivers": result.drivers,
            "failures": result.failures,
            "load_before": load[0],
            "load_after": load[1],
        },
    )
    with contextlib.ExitStack() as stack:
        if run is None:
            run = stack.enter_context(start_run(out_dir, "peers-cluster", meta, clear=False))
        else:
            run.meta.update(meta)
            run.checkpoint()
        report = render_cluster_report(rows, run.meta, out_dir)
        if result.failures:
            run.finish(FAILED, reason=f"driver(s) {', '.join(result.failures)} not attempted")
        return report


def render_saved(out_dir: Path) -> Path:
    """Re-render a saved cluster run's report from its files; PeersInputError if unreadable."""
    try:
        rows = read_metrics(out_dir / METRICS_FILE)
        meta = json.loads((out_dir / RUN_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise PeersInputError(str(exc).splitlines()[0]) from None
    return render_cluster_report(rows, meta, out_dir)


def _counts(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Per driver: jobs enqueued/processed, the outcome in the rows' params, keys per master."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.experiment != EXPERIMENT:
            continue
        entry = found.setdefault(row.variant, {"keys": {}})
        cell = parse_params(row.params)
        if row.metric in ("jobs_enqueued", "jobs_processed"):
            entry[row.metric] = int(row.value)
            entry["jobs"] = int(cell.get("jobs", 0))
            entry["status"] = cell.get("outcome", "").replace("_", " ")
            entry["phase"] = cell.get("phase", "-")
            entry["given"] = cell.get("given", "")
        elif row.metric == "keys_left":
            entry["keys"][cell.get("node", "?")] = int(row.value)
    return found


def _port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return (host, int(port)) if port.isdigit() else (node, 0)


def _given_node(given: Mapping[str, Any] | None) -> str | None:
    """`host:port` of the master a driver without a cluster option was given."""
    if not given or given.get("kind") != "node" or not given.get("url"):
        return None
    return str(given["url"]).partition("://")[2].rpartition("@")[2].split("/")[0] or None


def _given_cell(given: Mapping[str, Any] | None, kind: str) -> str:
    kind = str((given or {}).get("kind") or kind)
    how = str((given or {}).get("how") or "")
    if kind == "cluster":
        return f"`redis+cluster://` URL: {how}" if how else "`redis+cluster://` URL"
    if kind == "node":
        return f"`redis://` URL of one master*: {how}" if how else "`redis://` URL of one master*"
    return "-"


def _outcome_cell(outcome: Mapping[str, Any] | None, counted: Mapping[str, Any]) -> str:
    if outcome and outcome.get("text"):
        return str(outcome["text"])
    status = counted.get("status") or "?"
    phase = counted.get("phase", "-")
    return f"{status} at {phase}" if status == FAILS and phase != "-" else str(status)


def _table(rows: Sequence[Row], drivers: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, int]]:
    counts = _counts(rows)
    tally = {WORKS: 0, FAILS: 0, NOT_ATTEMPTED: 0}
    body = []
    for name in order(list(set(counts) | set(drivers))):
        meta = drivers.get(name, {})
        counted = counts.get(name, {"keys": {}})
        outcome = meta.get("outcome") or {}
        status = str(outcome.get("status") or counted.get("status") or "")
        if status in tally:
            tally[status] += 1
        jobs = int(meta.get("jobs") or counted.get("jobs") or 0)
        enqueued = counted.get("jobs_enqueued")
        processed = counted.get("jobs_processed")
        keys = counted["keys"]
        given_node = _given_node(meta.get("given"))
        body.append(
            [
                name,
                str(meta.get("version", "?")),
                _given_cell(meta.get("given"), str(counted.get("given", ""))),
                _outcome_cell(outcome, counted),
                f"{enqueued:,}/{jobs:,}" if enqueued is not None else "-",
                f"{processed:,}" if processed is not None else "-",
                " / ".join(
                    f"{keys[node]}{'*' if node == given_node else ''}" for node in sorted(keys, key=_port)
                )
                if keys
                else "-",
            ]
        )
    header = ["driver", "version", "given", "outcome", "enqueued", "processed", "keys left per master"]
    return markdown_table(header, body), tally


def render_cluster_report(rows: Sequence[Row], meta: Mapping[str, Any], out_dir: Path) -> Path:
    """Write PEERS-CLUSTER.md from the rows and run.json's metadata; returns its path."""
    drivers: Mapping[str, Mapping[str, Any]] = meta.get("drivers") or {}
    sizes = meta.get("sizes") or {}
    jobs, stall = sizes.get("jobs", "?"), sizes.get("stall_s", "?")
    stall = f"{stall:g}" if isinstance(stall, int | float) else stall
    concurrency = sizes.get("concurrency", "?")
    table, tally = _table(rows, drivers)
    server = meta.get("server") or {}
    source = meta.get("cluster") or {}
    if source.get("owned", True):
        where = (
            f"a fresh {len(server.get('nodes') or []) or 3}-master Redis Cluster that qbench started for it "
            f"and stopped after it ({server.get('flavor', 'redis')} {server.get('version', '?')}, "
            f"{server.get('allocator', '?')}, `{server.get('binary', '?')}`)"
        )
    else:
        where = (
            f"the cluster at `{source.get('url', '?')}` (not started by qbench: it was empty before, "
            "and whatever the library left there stays)"
        )
    lines = ["# Peers on a Redis Cluster", ""]
    failures = meta.get("failures") or {}
    if failures:
        lines += [
            f"**Incomplete run**: qbench could not attempt {', '.join(sorted(failures))} "
            "(the outcome column says why).",
            "",
        ]
    lines += [
        f"Each driver was tried once against {where}: {jobs} jobs enqueued one call at a time, "
        f"then its workers started (concurrency {concurrency}). Every wait is bounded: a call or a "
        f"drain that makes no progress for {stall} s ends the attempt. A library that fails is an "
        "outcome, not a failed run; only a driver qbench could not attempt makes the run incomplete.",
        "",
        f"{sum(tally.values())} driver(s): {tally[WORKS]} work, {tally[FAILS]} fail, "
        f"{tally[NOT_ATTEMPTED]} not attempted.",
        "",
        table,
        "",
        "- **given**: a driver whose library documents a Redis Cluster option gets a "
        "`redis+cluster://HOST:PORT` URL and hands the node to that option (`Driver.cluster_setup`, "
        "`cluster_setup` in an external driver's TOML: the text shown); any other gets the "
        "`redis://` URL of one master, which is what a user who points the library at a cluster "
        "node gets.",
        "- **outcome**: `works` when every job was enqueued and processed; `fails at start` (the "
        "producer did not come up), `at enqueue` (a call raised: the phase goes on after an error "
        "and counts the calls that succeeded), `at process` (the workers crashed, stalled or ran "
        "fewer jobs), with the first line of the error the library raised (its producer's answer "
        "or its workers' log; full logs in `logs/`); `not attempted` when qbench itself could not "
        "run the attempt.",
        "- **keys left per master**: DBSIZE of each master after the attempt (masters in port "
        "order; `*` the master a driver without a cluster option was given): where the "
        "library's keys landed. A hash tag puts a queue on one master.",
        "- Timings are not measured here: the outcomes and counts are exact, whatever the load.",
        "",
        f"Command: `{meta.get('command') or 'qbench peers --cluster'}`; "
        f"{source_text(meta)}; {meta.get('created_at', '?')}; "
        f"load average {meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after.",
        "",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
