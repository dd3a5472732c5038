"""Redis Cluster as a target: the local cluster, exact counts through RedisCluster (redirects
included), costs per node, the `qbench cluster` verbs, and a server without HEXPIRE."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from qbench.harness.experiments import cluster_shards
from qbench.harness.experiments.ops import measure_operations, op_costs
from qbench.harness.infra.cluster_state import NodeRecord, process_start_ticks
from qbench.harness.infra.counting import RoundTripCounter, counting_connection_class
from qbench.harness.infra.measured import MeasuredQueue
from qbench.harness.infra.redis_server import (
    ClusterProcess,
    NotOwnedError,
    ProvisionedRedis,
    RedisServerProcess,
    provision,
)
from qbench.harness.results.rows import read_metrics
from qbench.queue_impl.config import PRESETS, VariantError, parse_variant
from qbench.queue_impl.connection import close_client, make_client
from qbench.queue_impl.job import Job, Status
from qbench.queue_impl.queue import RedisQueue
from qbench.queue_impl.scheduler import Scheduler
from qbench.queue_impl.strategies import partition_index
from qbench.queue_impl.worker import BUILTIN_HANDLERS, WorkerPool
from tests.conftest import fast

IDS = [f"job-{i:04d}" for i in range(90)]


def _qbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("qbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qbench.harness.cli"]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def _cluster(provisioned: ProvisionedRedis) -> ClusterProcess:
    assert provisioned.cluster is not None
    return provisioned.cluster


# -- the local cluster -------------------------------------------------------------------------
def test_the_session_cluster_is_three_masters_on_loopback_with_equal_slot_ranges(
    redis_cluster: ProvisionedRedis,
) -> None:
    cluster = _cluster(redis_cluster)
    assert redis_cluster.owned and redis_cluster.is_cluster
    assert len(redis_cluster.info.nodes) == 3
    for node in cluster.nodes:
        client = redis.Redis(port=node.port)
        try:
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
        finally:
            client.close()
    shards = cluster_shards.shards_of(redis_cluster.url)
    assert [shard.slots for shard in shards] == [((0, 5460),), ((5461, 10921),), ((10922, 16383),)]


def test_a_cluster_qbench_did_not_start_is_never_flushed(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url.replace("redis+cluster", "redis"))
    try:
        client.set("qbench:{not-owned}:kept", b"1")
        with provision(cluster_url, allow_cluster=True) as given:
            assert given.is_cluster and not given.owned
            with pytest.raises(NotOwnedError, match="qbench did not start it"):
                given.flushall()
        assert client.get("qbench:{not-owned}:kept") == b"1"
    finally:
        client.delete("qbench:{not-owned}:kept")
        client.close()


@pytest.mark.slow
def test_a_cluster_with_replicas_runs_the_queue_and_stops_completely() -> None:
    cluster = ClusterProcess(replicas=1)
    cluster.start()
    try:
        assert len(cluster.nodes) == 6
        for node in cluster.nodes[3:]:
            client = redis.Redis(port=node.port)
            try:
                assert client.info("replication")["master_link_status"] == "up"
            finally:
                client.close()
        variant = fast(parse_variant("scripted+partitions=3"))
        queue = RedisQueue(make_client(cluster.url, variant), variant, namespace="replicated")
        try:
            queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS[:9]])
            taken = [queue.dequeue(wait=False) for _ in range(9)]
            assert sorted(job.id for job in taken if job and queue.complete(job)) == sorted(IDS[:9])
        finally:
            queue.cleanup()
            close_client(queue.client)
        processes = [node.proc for node in cluster.nodes]
    finally:
        cluster.stop()
    assert all(proc is not None and proc.poll() is not None for proc in processes)


# -- exact counts through RedisCluster ---------------------------------------------------------
@pytest.mark.slow
def test_ops_on_the_cluster_are_exactly_those_of_one_node_for_one_partition(
    redis_url: str, cluster_url: str
) -> None:
    variants = [fast(preset) for preset in PRESETS.values()]

    def costs(url: str) -> dict[tuple[str, str, int], tuple[int, int, dict[str, int]]]:
        rows = measure_operations(url, variants, batches=(10, 100))
        return {
            (c.preset.split("+")[0], c.operation, c.batch): (c.round_trips, c.commands, c.commands_by_name)
            for c in op_costs(rows)
        }

    on_one_node, on_the_cluster = costs(redis_url), costs(cluster_url)
    assert len(on_one_node) == 3 * 8
    assert on_the_cluster == on_one_node
    assert on_the_cluster[("scripted", "complete", 1)][:2] == (1, 4)  # LREM, HSET, HEXPIRE in EVALSHA


def test_ops_verb_on_the_cluster(cluster_url: str) -> None:
    result = _qbench("ops", "--redis-url", cluster_url, "--variant", "scripted", "--batches", "10", "--json")
    assert result.returncode == 0, result.stderr
    costs = {
        (c["operation"], c["batch"]): (c["round_trips"], c["commands"]) for c in json.loads(result.stdout)
    }
    assert costs[("enqueue", 1)] == (1, 4) and costs[("move_scheduled_to_ready", 10)] == (1, 43)


def test_server_commands_and_memory_are_counted_per_node(cluster_url: str) -> None:
    with MeasuredQueue(cluster_url, fast(parse_variant("scripted+partitions=3"))) as mq:
        mq.warm_up()
        masters = sorted(mq.nodes.names)
        with mq.measure() as cost:
            mq.queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS])
        per_partition = Counter(partition_index(job_id, 3) for job_id in IDS)
        node_of = {
            part.index: mq.client.get_node_from_key(part.keys.jobs()).name  # type: ignore[union-attr]
            for part in mq.queue.partitions
        }
        # Per partition: one EVALSHA running an HSET and an LPUSH per job and one ZADD.
        expected = {node_of[k]: 2 * n + 2 for k, n in per_partition.items()}
        assert sorted(node_of.values()) == masters
        assert cost.commands_by_node() == expected
        assert cost.round_trips == 3 and cost.commands == sum(expected.values())
        assert sorted(mq.used_memory_by_node()) == masters
        assert mq.used_memory() == sum(mq.used_memory_by_node().values())
        with mq.measure() as cost:
            mq.queue.heartbeat()
        # One pipeline, three partitions on three masters: one request per master.
        assert cost.round_trips == 3 and cost.commands_by_node() == dict.fromkeys(masters, 1)
    with MeasuredQueue(cluster_url, fast(PRESETS["scripted"])) as mq:
        mq.warm_up()
        with mq.measure() as cost:
            mq.queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS])
        assert sorted(cost.commands_by_node().values()) == [0, 0, 2 * len(IDS) + 2]


def test_a_script_the_cluster_has_not_seen_is_loaded_on_every_master_once(
    redis_cluster: ProvisionedRedis,
) -> None:
    """EVALSHA, NOSCRIPT; SCRIPT LOAD on each of the 3 masters; EVALSHA again: 5 round
    trips the first time (what `load_scripts` pays up front), 1 after."""
    with MeasuredQueue(redis_cluster.url, fast(PRESETS["scripted"])) as mq:
        mq.queue.register_consumer()
        for node in mq.nodes.clients.values():
            node.script_flush()  # a cluster qbench started: its script caches are its own
        job = Job(type="noop")
        with mq.measure() as cost:
            mq.queue.enqueue(job)
        assert cost.round_trips == 5
        assert cost.server_commands["script|load"] == 3 and cost.server_commands["evalsha"] == 2
        with mq.measure() as cost:
            mq.queue.enqueue(Job(type="noop"))
        assert cost.round_trips == 1


# -- the services on the cluster ----------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_pool_and_scheduler_run_every_partition_on_the_cluster(cluster_url: str) -> None:
    variant = fast(parse_variant("scripted+partitions=3"))
    queue = RedisQueue(make_client(cluster_url, variant, workers=6), variant, namespace="services")
    other = RedisQueue(make_client(cluster_url, variant), variant, namespace="services")
    pool = WorkerPool(queue, BUILTIN_HANDLERS, concurrency=6, job_timeout_s=5)
    scheduler = Scheduler(other, interval_s=0.02)
    pool.start()
    scheduler.start()
    try:
        done = queue.enqueue_many([Job(type="noop", id=job_id) for job_id in IDS])
        failing = queue.enqueue_many([Job(type="fail", max_retries=1) for _ in range(6)])
        deadline = time.monotonic() + 60
        while not (pool.counters.completed == len(done) and pool.counters.dead == len(failing)):
            assert time.monotonic() < deadline, pool.counters
            time.sleep(0.01)
        scheduler.stop()
        pool.stop()
        assert pool.counters.retried == len(failing)  # each retried once, wherever it was
        assert {queue.partition_for(i).index for i in done} == {0, 1, 2}
        assert all(queue.get_job(i).status is Status.COMPLETED for i in done)  # type: ignore[union-attr]
        stats = queue.stats()
        assert (stats.dead, stats.scheduled, stats.processing, sum(stats.queued.values())) == (6, 0, 0, 0)
    finally:
        scheduler.stop()
        pool.stop()
        queue.cleanup()
        close_client(queue.client)
        close_client(other.client)


# -- redirects ---------------------------------------------------------------------------------
def _node_id(port: int) -> str:
    client = redis.Redis(port=port)
    try:
        reply = client.execute_command("CLUSTER MYID")
        return reply.decode() if isinstance(reply, bytes) else str(reply)
    finally:
        client.close()


def _start_migration(slot: int, source: int, target: int) -> None:
    src, dst = redis.Redis(port=source), redis.Redis(port=target)
    try:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", _node_id(source))
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", _node_id(target))
        keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        if keys:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    finally:
        src.close()
        dst.close()


def _finish_migration(slot: int, target: int, masters: list[int]) -> None:
    owner = _node_id(target)
    for port in masters:
        client = redis.Redis(port=port)
        try:
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", owner)
        finally:
            client.close()


@pytest.fixture
def migrating_slot(redis_cluster: ProvisionedRedis) -> Iterator[tuple[str, int, int, list[int]]]:
    """A key, its slot's owner and another master; the slot is moved back afterwards."""
    key = "qbench:{redirect-test}:k"
    masters = [node.port for node in _cluster(redis_cluster).master_nodes]
    slot = key_slot(key.encode())
    source = next(p for p in masters if slot * 3 // 16384 == masters.index(p))
    target = next(p for p in masters if p != source)
    yield key, source, target, masters
    _start_migration(slot, target, source)
    _finish_migration(slot, source, masters)


def test_ask_and_moved_redirects_are_round_trips(migrating_slot: tuple[str, int, int, list[int]]) -> None:
    key, source, target, masters = migrating_slot
    slot = key_slot(key.encode())
    counter = RoundTripCounter()
    client = make_client(
        f"redis+cluster://127.0.0.1:{source}",
        PRESETS["scripted"],
        wrap_connection_class=lambda base: counting_connection_class(base, counter),
    )
    try:
        client.set(key, b"v")
        client.get(key)
        before = counter.snapshot()[0]
        _start_migration(slot, source, target)  # the key now lives on the target
        # The source answers ASK: ASKING and the GET again, on the target.
        assert client.get(key) == b"v"
        assert counter.snapshot()[0] - before == 3
        _finish_migration(slot, target, masters)
        before = counter.snapshot()[0]
        # The client still sends to the source, which answers MOVED: the GET again.
        assert client.get(key) == b"v"
        assert counter.snapshot()[0] - before == 2
        before = counter.snapshot()[0]
        assert client.get(key) == b"v"  # the slot map is up to date now
        assert counter.snapshot()[0] - before == 1
        client.delete(key)
    finally:
        close_client(client)


# -- records=hash needs HEXPIRE ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server_without_hexpire() -> Iterator[str]:
    server = RedisServerProcess(extra_args=["--rename-command", "HEXPIRE", ""])
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_records_hash_on_a_server_without_hexpire_is_refused_in_one_line(server_without_hexpire: str) -> None:
    hashed = RedisQueue(make_client(server_without_hexpire, PRESETS["scripted"]), PRESETS["scripted"])
    keyed = RedisQueue(make_client(server_without_hexpire, PRESETS["optimized"]), PRESETS["optimized"])
    try:
        with pytest.raises(
            VariantError, match=r"records=hash needs HEXPIRE \(Redis >= 7\.4\); Redis 8\.2\.3"
        ):
            hashed.check_server()
        keyed.check_server()  # records=keys needs nothing new
    finally:
        close_client(hashed.client)
        close_client(keyed.client)
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "qbench.queue_impl.worker",
            "--redis-url",
            server_without_hexpire,
            "--variant",
            "scripted",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert worker.returncode == 2
    lines = worker.stderr.strip().splitlines()
    assert len(lines) == 1 and "--variant: records=hash needs HEXPIRE" in lines[0], worker.stderr


# -- qbench cluster up / down --------------------------------------------------------------------
@pytest.mark.slow
def test_cluster_up_detached_then_down(tmp_path: Path) -> None:
    state_file = tmp_path / "cluster.json"
    up = _qbench("cluster", "up", "--detach", "--state-file", str(state_file))
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip()
    assert url.startswith("redis+cluster://127.0.0.1:")
    state = json.loads(state_file.read_text())
    pids = [node["pid"] for node in state["nodes"]]
    dirs = [Path(node["dir"]) for node in state["nodes"]]
    try:
        client = RedisCluster.from_url(url.replace("redis+cluster", "redis"))
        try:
            assert client.ping() and len(client.get_primaries()) == 3
        finally:
            client.close()
        again = _qbench("cluster", "up", "--detach", "--state-file", str(state_file))
        assert again.returncode == 2 and "is running" in again.stderr
    finally:
        down = _qbench("cluster", "down", "--state-file", str(state_file))
    assert down.returncode == 0, down.stderr
    assert "stopped 3 node(s)" in down.stdout
    assert all(
        process_start_ticks(pid) is None or not Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids
    )
    assert not any(d.exists() for d in dirs) and not state_file.exists()


def test_cluster_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        ticks = process_start_ticks(bystander.pid)
        assert ticks is not None
        keep = tmp_path / "keep"
        keep.mkdir()
        records = [
            # The pid, its real start time, but not a redis-server on that port.
            NodeRecord(bystander.pid, 7001, 17001, "master", str(keep), "/bin/redis-server", ticks),
            # The pid, but a process started at another time (a reused pid).
            NodeRecord(bystander.pid, 7002, 17002, "master", str(keep), "sleep", ticks + 1),
        ]
        state_file = tmp_path / "cluster.json"
        state_file.write_text(
            json.dumps(
                {
                    "format": "qbench-cluster/1",
                    "url": "redis+cluster://127.0.0.1:7001",
                    "nodes": [dataclasses.asdict(node) for node in records],
                }
            )
        )
        down = _qbench("cluster", "down", "--state-file", str(state_file))
        assert down.returncode == 0, down.stderr
        assert f"left alone: pid {bystander.pid}, {bystander.pid}" in down.stdout
        assert bystander.poll() is None and keep.exists()
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_cluster_up_in_the_foreground_stops_on_sigterm() -> None:
    script = Path(sys.executable).with_name("qbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qbench.harness.cli"]
    proc = subprocess.Popen([*command, "cluster", "up"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("redis+cluster://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert redis.Redis(port=port).ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- qbench cluster measure ----------------------------------------------------------------------
@pytest.mark.slow
def test_cluster_measure_counts_commands_per_shard_exactly(cluster_url: str, tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    args = ("--redis-url", cluster_url, "--jobs", "90", "--repeats", "2", "--workers", "2", "--out", str(out))
    result = _qbench("cluster", "measure", *args, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(out / "metrics.csv")
    cycle = {
        (r.variant, r.params, r.repeat): r.value
        for r in rows
        if r.metric == "commands" and "cycle" in r.params
    }
    for variant in ("scripted", "scripted+partitions=3"):
        per_shard = [[cycle[(variant, f"phase=cycle;shard={s}", rep)] for s in (1, 2, 3)] for rep in (0, 1)]
        assert per_shard[0] == per_shard[1]  # exact: the same commands on the same shards
        busy = [count for count in per_shard[0] if count > 0]
        assert len(busy) == (1 if variant == "scripted" else 3)
    jobs = [r.value for r in rows if r.metric == "jobs" and "cycle" in r.params and r.repeat == 0]
    assert sum(jobs) == 2 * 90  # two variants
    # 90 jobs are too few to spread evenly (the committed run's 3,000 are: test_committed_...);
    # the verdict says what the rows say.
    spread = cluster_shards.balance(rows, "scripted+partitions=3")
    verdict = "holds" if spread <= cluster_shards.BALANCE_LIMIT else "does not hold"
    report = (out / "REPORT.md").read_text()
    assert "varies" not in report
    assert f"scripted+partitions=3: shards within 15% of each other: **{verdict}**" in report
    assert (out / "charts" / "cluster_shards.png").exists()
    rendered = _qbench("cluster", "measure", "--render", str(out))
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "REPORT.md").read_text() == report  # drawn from the rows alone
