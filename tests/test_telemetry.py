"""The telemetry sampler: tidy rows, its own commands subtracted exactly, processes, nodes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qbench.harness.infra.budget import TokenBucket
from qbench.harness.infra.counting import command_stats
from qbench.harness.infra.measured import MeasuredQueue
from qbench.harness.infra.nodelink import ForbiddenCommandError, NodeLink, node_label, packed_command_names
from qbench.harness.infra.redis_server import RedisServerProcess
from qbench.harness.infra.telemetry import (
    COLUMNS,
    TELEMETRY_FILE,
    Telemetry,
    TelemetryError,
    TelemetryRow,
    read_telemetry,
    telemetry_for_run,
)
from qbench.harness.results.telemetry_charts import CHART_STEMS, render_telemetry_charts, summary_markdown
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.job import Job

FAST_S = 0.05
"""The shortest interval: many samples (and many INFO calls to subtract) in a short test."""


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServerProcess]:
    """A server of this module's own: exact server-side counts need no other clients."""
    process = RedisServerProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture
def admin(server: RedisServerProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    client.flushall()  # our own server
    client.config_resetstat()
    yield client
    client.close()


def summed(rows: list[TelemetryRow], prefix: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for row in rows:
        if row.source == "redis" and row.metric.startswith(prefix):
            found[row.metric.removeprefix(prefix)] += int(row.value)
    return found


def test_a_run_inside_the_sampler_writes_tidy_rows(server: RedisServerProcess, tmp_path: Path) -> None:
    with (
        Telemetry(server.url, tmp_path, interval_s=FAST_S) as t,
        MeasuredQueue(server.url, PRESETS["scripted"]) as mq,
    ):
        for _ in range(20):
            mq.queue.enqueue(Job(type="noop"))
        time.sleep(3 * FAST_S)
    path = tmp_path / TELEMETRY_FILE
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_telemetry(path)
    key = [(r.source, r.node, r.metric, r.unit) for r in rows]
    assert key == [(r.source, r.node, r.metric, r.unit) for r in t.rows]
    assert [r.value for r in rows] == pytest.approx([r.value for r in t.rows], abs=1e-6)
    assert {r.source for r in rows} == {"redis", "harness", "telemetry"}
    node = node_label(server.url)
    assert {r.node for r in rows if r.source in ("redis", "telemetry")} <= {node, "all"}
    metrics = {r.metric for r in rows if r.source == "redis"}
    for metric in (
        "used_memory_bytes",
        "used_memory_rss_bytes",
        "mem_fragmentation_ratio",
        "connected_clients",
        "blocked_clients",
        "keys:db0",
        "expires:db0",
        "interval_s",
        "commands",
        "commands_per_s",
        "instantaneous_ops_per_s",
        "expired_keys",
        "evicted_keys",
        "cpu_user_s_per_s",
        "cpu_sys_s_per_s",
        "cpu_s_per_s",
        "calls:evalsha",
        "calls_per_s:evalsha",
    ):
        assert metric in metrics, metric
    harness = {(r.node, r.metric) for r in rows if r.source == "harness"}
    assert ("all", "cpu_s_per_s") in harness and ("all", "rss_bytes") in harness
    units = {r.metric: r.unit for r in rows}
    assert units["used_memory_bytes"] == "bytes" and units["calls:evalsha"] == "calls"
    assert units["calls_per_s:evalsha"] == "calls/s" and units["cpu_s_per_s"] == "cpu_s/s"
    assert t.summary.samples >= 3 and t.summary.sample_errors == 0
    ts = [r.t for r in rows]
    assert ts[0] >= 0 and all(b >= a for a, b in itertools.pairwise(ts))


def test_own_commands_are_subtracted_exactly(server: RedisServerProcess, admin: redis.Redis) -> None:
    other = redis.Redis.from_url(server.url)
    other.ping()  # its handshake happens before the sampler starts
    try:
        with Telemetry(server.url, None, interval_s=FAST_S) as t:
            for i in range(37):
                other.set(f"k{i}", i)
                if i % 10 == 0:
                    time.sleep(FAST_S)  # spread over several intervals
            for i in range(23):
                other.get(f"k{i}")
            time.sleep(2 * FAST_S)
            other.rpush("list", 1, 2, 3)
            other.info("memory")  # someone else's INFO still counts
    finally:
        other.close()
    assert summed(t.rows, "calls:") == Counter({"set": 37, "get": 23, "rpush": 1, "info": 1})
    assert sum(int(r.value) for r in t.rows if r.metric == "commands") == 37 + 23 + 1 + 1
    node = node_label(server.url)
    # One INFO per sample is all the sampler sent (RESP2, no password: no handshake).
    assert t.summary.own_commands_by_name == {node: {"info": t.summary.samples}}
    assert t.summary.own_commands == {node: t.summary.samples}
    assert t.summary.cost_commands_per_s == pytest.approx(t.summary.samples / t.summary.duration_s)
    cost = [r for r in t.rows if r.metric == "telemetry_cost_commands_per_s"]
    assert len(cost) == 1 and cost[0].source == "telemetry" and cost[0].unit == "commands/s"
    own = sum(int(r.value) for r in t.rows if r.metric == "own_commands")
    assert own == t.summary.samples - 1  # every INFO but the last lies inside a sampled interval


def test_counted_costs_stay_exact_beside_the_sampler(server: RedisServerProcess) -> None:
    """`qbench.harness.infra.counting` leaves `info` out, so a sampler beside it changes nothing."""

    def cost_of_a_cycle() -> tuple[Counter[str], int]:
        with MeasuredQueue(server.url, PRESETS["optimized"]) as mq, mq.measure() as cost:
            for _ in range(5):
                mq.queue.enqueue(Job(type="noop"))
                time.sleep(FAST_S)  # sampler INFO calls land inside the measured block
            job = mq.queue.dequeue(wait=False)
            assert job is not None
            mq.queue.complete(job)
        return cost.server_commands, cost.round_trips

    alone = cost_of_a_cycle()
    with Telemetry(server.url, None, interval_s=FAST_S) as t:
        beside = cost_of_a_cycle()
    assert t.summary.samples >= 4
    assert beside == alone
    assert "info" not in beside[0]


def test_harness_processes_are_sampled(server: RedisServerProcess) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.time()\nwhile time.time() - t < 0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        with Telemetry(server.url, None, interval_s=FAST_S, processes=[(child.pid, "worker")]) as t:
            time.sleep(4 * FAST_S)
    finally:
        child.kill()
        child.wait()
    nodes = {(r.node, r.metric) for r in t.rows if r.source == "harness"}
    assert (f"worker:{child.pid}", "rss_bytes") in nodes
    assert (f"worker:{child.pid}", "cpu_s_per_s") in nodes
    assert any(node.startswith("harness:") for node, _ in nodes)


def test_follow_children_counts_children_but_not_the_redis_server(server: RedisServerProcess) -> None:
    assert server.proc is not None  # a child of this very process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with Telemetry(server.url, None, interval_s=FAST_S, follow_children=True) as t:
            time.sleep(3 * FAST_S)
    finally:
        child.kill()
        child.wait()
    pids = {r.node.rsplit(":", 1)[1] for r in t.rows if r.source == "harness" and r.node != "all"}
    assert str(child.pid) in pids
    assert str(server.proc.pid) not in pids


def test_several_nodes_each_get_their_rows(server: RedisServerProcess) -> None:
    second = RedisServerProcess()
    second.start()
    try:
        with Telemetry([server.url, second.url], None, interval_s=FAST_S) as t:
            redis.Redis.from_url(second.url).set("only-on-second", 1)
    finally:
        second.stop()
    first, other = node_label(server.url), node_label(second.url)
    assert {r.node for r in t.rows if r.source == "redis"} == {first, other}
    on_second = [r for r in t.rows if r.metric == "calls:set"]
    assert [r.node for r in on_second] == [other] and on_second[0].value == 1
    assert set(t.summary.own_commands) == {first, other}


def test_a_restarted_node_starts_its_deltas_afresh(tmp_path: Path) -> None:
    process = RedisServerProcess()
    process.start()
    try:
        with Telemetry(process.url, None, interval_s=FAST_S) as t:
            redis.Redis.from_url(process.url).set("a", 1)
            time.sleep(2 * FAST_S)
            process.restart()
            client = redis.Redis.from_url(process.url)
            client.set("b", 1)
            client.close()
            time.sleep(3 * FAST_S)
    finally:
        process.stop()
    assert t.summary.restarts == 1
    assert [r.metric for r in t.rows if r.metric == "restarts"] == ["restarts"]
    assert all(r.value >= 0 for r in t.rows)
    assert summed(t.rows, "calls:")["set"] >= 1


def test_unreachable_or_refused_info_is_one_line() -> None:
    with pytest.raises(TelemetryError, match=r"^cannot reach Redis at redis://127\.0\.0\.1:1/0: ") as info:
        Telemetry("redis://127.0.0.1:1/0", None).__enter__()
    assert "\n" not in str(info.value)
    process = RedisServerProcess(extra_args=["--user", "noinfo", "on", ">pw", "~*", "-@all", "+get"])
    process.start()
    try:
        url = f"redis://noinfo:pw@127.0.0.1:{process.port}/0"
        with pytest.raises(TelemetryError, match=r"cannot read INFO from 127\.0\.0\.1:\d+: .*'info'") as info:
            Telemetry(url, None).__enter__()
        assert "\n" not in str(info.value)
    finally:
        process.stop()


def test_an_allowlist_stops_a_command_before_it_is_sent(
    server: RedisServerProcess, admin: redis.Redis
) -> None:
    link = NodeLink(server.url, allowed=frozenset({"info"}))
    try:
        link.execute("INFO", "server")
        with pytest.raises(ForbiddenCommandError, match="refusing to send SET"):
            link.execute("SET", "forbidden", "1")
        assert link.sent == Counter({"info": 1})
    finally:
        link.close()
    assert "set" not in command_stats(admin)
    assert admin.exists("forbidden") == 0


def test_packed_command_names_match_commandstats() -> None:
    packed = b"".join(
        redis.connection.Connection().pack_command(*args)[0]  # type: ignore[no-untyped-call]
        for args in (
            ("MEMORY", "USAGE", "k"),
            ("GET", "k"),
            ("client", "setinfo", "lib-name", "x"),
            ("PING",),
        )
    )
    assert packed_command_names(packed) == ["memory|usage", "get", "client|setinfo", "ping"]


def test_token_bucket_hands_out_at_most_burst_plus_rate_times_time() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(10, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(22):
        bucket.acquire()
    assert now[0] == pytest.approx((22 - 2) / 10)  # 2 at once, then one every 0.1 s
    bucket.acquire(3)
    assert now[0] == pytest.approx((25 - 2) / 10)
    assert bucket.taken == 25


def test_telemetry_for_run_can_be_switched_off(tmp_path: Path) -> None:
    with telemetry_for_run("redis://127.0.0.1:1/0", tmp_path, enabled=False) as t:
        assert t is None
    assert not (tmp_path / TELEMETRY_FILE).exists()


def test_charts_and_summary_come_from_telemetry_csv_alone(server: RedisServerProcess, tmp_path: Path) -> None:
    client = redis.Redis.from_url(server.url)
    client.ping()  # connected (and its handshake counted) before the sampler starts
    try:
        with Telemetry(server.url, tmp_path, interval_s=FAST_S):
            for i in range(30):
                client.set(f"chart:{i}", "x" * 100)
                if i % 10 == 0:
                    time.sleep(FAST_S)
    finally:
        client.close()
    rows = read_telemetry(tmp_path / TELEMETRY_FILE)  # nothing but the file
    names = render_telemetry_charts(rows, tmp_path / "charts")
    assert names == [f"{stem}.png" for stem in CHART_STEMS]
    for stem in CHART_STEMS:
        assert (tmp_path / "charts" / f"{stem}.png").stat().st_size > 0
        assert (tmp_path / "charts" / f"{stem}.svg").stat().st_size > 0
    text = summary_markdown(rows)
    assert "Redis ran 30 commands" in text and "SET" in text
    assert "| metric | mean | max | last |" in text
