"""`qbench load` on a Redis Cluster that loses a master without a replica mid-run.

The cluster is the test's own (three masters on loopback), never the session's: one of its
masters is killed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qbench.harness.infra.redis_server import ClusterProcess
from qbench.harness.results.rows import parse_params, read_metrics


@pytest.fixture
def own_cluster() -> Iterator[ClusterProcess]:
    cluster = ClusterProcess()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _holds_qbench_keys(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        return any(True for _ in client.scan_iter(match="qbench:*", count=1000))
    finally:
        client.close()


@pytest.mark.slow
def test_a_master_that_dies_mid_run_is_named_with_the_count_of_jobs_lost_with_it(
    own_cluster: ClusterProcess, tmp_path: Path
) -> None:
    """One partition: every key of the run's namespace lives on one master. Killed (SIGKILL)
    once the users run, the jobs acknowledged on it are lost (expected: no replica); the run
    ends with one line naming the dead node and that count (before: a raw connection
    error, no count), run.json is failed with that reason and REPORT.md says it."""
    out = tmp_path / "out"
    load = subprocess.Popen(
        [sys.executable, "-m", "qbench.harness.cli", "load", "producer", "--variant", "scripted",
         "--users", "2", "--duration", "10", "--no-charts", "--telemetry-interval", "0",
         "--redis-url", own_cluster.url, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert load.stdout is not None
        line = load.stdout.readline()
        while line and not line.startswith("["):  # the first progress line: the users enqueue
            line = load.stdout.readline()
        assert line.startswith("["), line
        holders = [node for node in own_cluster.master_nodes if _holds_qbench_keys(node.port)]
        assert len(holders) == 1, [n.port for n in holders]
        victim = holders[0]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        out_text, err = load.communicate(timeout=180)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    dead = f"127.0.0.1:{victim.port}"
    assert load.returncode == 1, out_text + err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    table = {
        (parse_params(r.params)["op"], r.metric): r.value
        for r in read_metrics(out / "metrics.csv")
        if r.metric != "ops_per_s"
    }
    acknowledged = int(table[("enqueue", "requests")])
    assert acknowledged > 0 and table[("enqueue", "failures")] > 0
    # Nothing of the namespace lived on the survivors: every acknowledged job went with it.
    assert table[("all", "jobs_expected")] == acknowledged
    assert table[("all", "jobs_accounted")] == 0
    assert table[("all", "jobs_lost_with_node")] == acknowledged
    reason = (
        f"cluster master {dead} died mid-run (no replica took over): {acknowledged:,} acknowledged "
        "job(s) lost with it"
    )
    assert reason in err, err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and reason in meta["reason"]
    loss = meta["node_loss"]
    assert loss["dead_nodes"] == [dead] and loss["lost"] == acknowledged and loss["exact"] is True
    assert {s["node"]: s["alive"] for s in loss["shards"]} == {
        f"127.0.0.1:{n.port}": n is not victim for n in own_cluster.master_nodes
    }
    report = (out / "REPORT.md").read_text()
    assert reason in report.splitlines()[2]
    assert f"**{acknowledged:,} lost with the dead master**" in report
