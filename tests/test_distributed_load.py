"""Locust across hosts: histograms in Locust's messages, the master's view, honest exits.

The end-to-end tests run every Locust process as a child (never in the test process,
whose sockets Locust's gevent patching would change).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis

from qbench.harness.infra import netns
from qbench.harness.infra.redis_server import free_port
from qbench.harness.load.crosshost import CrossHostPlan, run_crosshost
from qbench.harness.load.runner import PERCENTILES, RESULTS_FILE
from qbench.harness.results.rows import parse_params, read_metrics
from qbench.scenarios.progress import progress_line
from qbench.scenarios.recorder import HIGHEST_US, Collector, OpSamples, Recorder, read_results_file, to_us
from qbench.scenarios.settings import (
    ENV_MASTER_HOST,
    ENV_REDIS_URL,
    ENV_VARIANT,
    ENV_WORKLOAD,
    RunSettingsError,
    RunSpec,
    resolve,
    without_credentials,
)
from qbench.scenarios.workload import load_workload


def nearest_rank_us(values_us: list[int], q: float) -> int:
    """The sample at rank ceil(q/100 x n) (at least 1): the rank an HDR percentile reports."""
    ordered = sorted(values_us)
    rank = max(1, min(len(ordered), int(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def assert_histogram_contract(merged: OpSamples, raw_ms: list[float]) -> None:
    """Merged histograms give exactly what one histogram of every raw sample gives, and each
    percentile is, within the histogram's precision, the raw sample at that rank."""
    single = Recorder(started_at=0.0)
    for value in raw_ms:
        single.record("op", value, done_at=0.0)
    alone = single.ops["op"]
    assert merged.count == alone.count == len(raw_ms)
    assert merged.percentiles_ms(PERCENTILES) == alone.percentiles_ms(PERCENTILES)
    assert merged.max_ms() == alone.max_ms() and merged.mean_ms() == alone.mean_ms()
    values_us = [to_us(v) for v in raw_ms]
    for q, value_ms in zip(PERCENTILES, merged.percentiles_ms(PERCENTILES), strict=True):
        exact = nearest_rank_us(values_us, q)
        assert merged.histogram.values_are_equivalent(round(value_ms * 1000), exact), (q, value_ms, exact)
        assert abs(value_ms * 1000 - exact) <= max(1.0, exact / 1000), (q, value_ms, exact)


# -- histograms, reports and the master's view (no Locust) -----------------------------------
def test_histograms_merged_from_reports_equal_one_histogram_of_every_sample() -> None:
    rng = random.Random(11)
    raw = [rng.lognormvariate(0, 1.5) for _ in range(20_000)] + [20_000.0, 0.0004]  # 20 s, 0.4 µs
    workers = [Recorder(started_at=100.0) for _ in range(3)]
    for i, value in enumerate(raw):
        workers[i % 3].record("pickup", value, round_trips=1 + i % 2, done_at=100.0 + i % 7)
    collector = Collector()
    for i, recorder in enumerate(workers):
        collector.receive(f"w{i}", recorder.report())
    merged = collector.merged()["pickup"]
    assert_histogram_contract(merged, raw)
    assert merged.round_trips == Counter({1: 10_001, 2: 10_001})
    assert sum(merged.per_second.values()) == len(raw) and set(merged.per_second) == set(range(7))


def test_the_master_keeps_each_workers_latest_report_and_counts_nothing_twice() -> None:
    recorder = Recorder(started_at=0.0)
    recorder.record("enqueue", 1.0, done_at=0.5)
    first = recorder.report()
    recorder.record("enqueue", 2.0, done_at=1.5)
    recorder.failure("enqueue")
    second = recorder.report()
    collector = Collector()
    collector.expect("w1")
    collector.expect("w2")
    for report in (first, second, first, second):  # repeated and out of order: no double count
        collector.receive("w1", report)
    merged = collector.merged()["enqueue"]
    assert (merged.count, merged.failures) == (2, 1)
    assert collector.summary()["w1"] == {"reports": 4, "final": False, "ops": {"enqueue": 2}}
    assert collector.missing_final() == ["w1", "w2"]  # w2 connected and never reported
    recorder.stopped = True
    collector.receive("w1", recorder.report())
    assert collector.missing_final() == ["w2"]
    collector.receive("w2", Recorder(started_at=0.0).report(error="started for scenario x"))
    assert collector.errors == ["worker w2: started for scenario x"]


def test_latencies_outside_the_histogram_are_counted_and_kept_at_its_bounds() -> None:
    samples = OpSamples()
    for value_ms in (-3.0, 1.0, (HIGHEST_US + 5_000_000) / 1000):
        samples.record(value_ms, round_trips=None, second=0)
    assert samples.count == 3 and samples.out_of_range == 2
    assert samples.percentiles_ms([0.0])[0] == 0.0
    assert samples.histogram.values_are_equivalent(round(samples.max_ms() * 1000), HIGHEST_US)
    again = OpSamples.from_wire(samples.to_wire())
    assert (again.count, again.out_of_range) == (3, 2)


def test_a_report_whose_histogram_disagrees_with_its_count_is_refused() -> None:
    wire = OpSamples().to_wire()
    wire["count"] = 1
    with pytest.raises(ValueError, match="holds 0 samples, its sender counted 1"):
        OpSamples.from_wire(wire)


def test_the_progress_line() -> None:
    enqueue = OpSamples()
    for i in range(1000):
        enqueue.record(0.4 if i < 900 else 2.0, round_trips=1, second=i // 100)
    enqueue.failures = 2
    line = progress_line(
        elapsed_s=10.2, total_s=20, users=10, ops={"enqueue": enqueue}, op="enqueue", reported_s=10.6
    )
    # ops/s over seconds 5..9 (the last five whole seconds every process has reported).
    assert line == "[ 10/20 s]  users 10  ops/s 100  enqueue p50 0.40 ms p99 2.00 ms  failures 2"
    nothing = progress_line(elapsed_s=5, total_s=20, users=4, ops={}, op="dequeue", reported_s=None)
    assert nothing == "[  5/20 s]  users 4  ops/s -  dequeue -  failures 0"


# -- what a worker accepts from its master ---------------------------------------------------
def spec(url: str = "redis://10.0.0.1:6379/0", variant: str = "scripted") -> RunSpec:
    return RunSpec(
        workload=load_workload("arrival"),
        variant=variant,
        redis_url=url,
        namespace="ns",
        started_at=1.0,
        duration_s=5.0,
    )


def test_a_worker_takes_the_run_from_the_master_and_refuses_a_mismatch() -> None:
    worker = {ENV_WORKLOAD: "arrival", ENV_VARIANT: "scripted", ENV_MASTER_HOST: "10.0.0.1"}
    text = spec().to_json()
    settings = resolve(RunSpec.from_json(text), worker)
    assert settings.redis_url == "redis://10.0.0.1:6379/0" and settings.namespace == "ns"
    assert settings.workload == load_workload("arrival") and settings.variant.label() == "scripted"
    own = resolve(spec(), {**worker, ENV_REDIS_URL: "redis://:pw@10.0.0.9:1/0"})
    assert own.redis_url == "redis://:pw@10.0.0.9:1/0"
    with pytest.raises(RunSettingsError, match="started for variant optimized, the master runs scripted"):
        resolve(spec(), {**worker, ENV_VARIANT: "optimized"})
    with pytest.raises(RunSettingsError, match="started for scenario producer, the master runs arrival"):
        resolve(spec(), {**worker, ENV_WORKLOAD: "producer"})
    with pytest.raises(RunSettingsError, match="on the master's loopback, out of this host's reach"):
        resolve(spec("redis://127.0.0.1:6379/0"), worker)
    # A worker on the master's own host may use the master's loopback Redis.
    assert resolve(spec("redis://127.0.0.1:6379/0"), {**worker, ENV_MASTER_HOST: "127.0.0.1"})
    with pytest.raises(RunSettingsError, match="unreadable run spec"):
        RunSpec.from_json('{"workload": {}}')


def test_the_master_announces_its_redis_url_without_credentials() -> None:
    assert without_credentials("redis://:secret@10.0.0.1:6379/0") == "redis://10.0.0.1:6379/0"
    assert without_credentials("rediss://user:secret@h:1/0?password=x&ssl_ca_certs=/ca.pem") == (
        "rediss://h:1/0?ssl_ca_certs=%2Fca.pem"
    )
    assert without_credentials("unix:///tmp/redis.sock?db=1") == "unix:///tmp/redis.sock?db=1"


# -- end to end ------------------------------------------------------------------------------
def raw_samples(directory: Path) -> dict[str, list[float]]:
    """The raw samples one worker wrote into its own directory."""
    files = list(directory.glob("raw-*.json"))
    assert len(files) == 1, files  # one Locust worker process per directory
    doc: dict[str, list[float]] = json.loads(files[0].read_text())
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("network", ["loopback", "netns"])
def test_a_master_and_two_workers_with_no_shared_folder(tmp_path: Path, network: str) -> None:
    """Master and workers as separate `qbench load` processes, each in its own working and
    temporary directory (and, as root, its own network namespace and address): the merged
    histograms hold exactly what each worker recorded, with the percentiles one histogram of
    all their samples gives."""
    if network == "netns" and (reason := netns.unavailable_reason()):
        pytest.skip(reason)
    plan = CrossHostPlan(duration_s=3.0, users=4, workers=2, netns=network == "netns", raw_samples=True)
    before = netns_names()
    run = run_crosshost(plan, tmp_path)
    # The lab's namespaces are gone (others' namespaces may come and go meanwhile).
    assert not {n for n in netns_names() - before if re.fullmatch(r"qb-[0-9a-f]{6}-\d+", n)}
    for role in (run.master, *run.workers):
        assert role.returncode == 0, f"{role.role}: {role.output}"
    if network == "netns":
        assert len({r.address for r in (run.master, *run.workers)}) == 3

    per_worker = [raw_samples(w.cwd) for w in run.workers]
    results = read_results_file(run.results_dir / RESULTS_FILE)
    assert results.errors == []
    # The master's per-worker view is what each worker recorded, final report included.
    seen = sorted(sorted(w["ops"].items()) for w in results.workers.values())
    sent = sorted(sorted((op, len(v)) for op, v in raw.items()) for raw in per_worker)
    assert seen == sent and all(w["final"] for w in results.workers.values())
    for op in ("enqueue", "dequeue", "pickup", "complete"):
        everything = [v for raw in per_worker for v in raw.get(op, [])]
        assert everything and sum(len(raw.get(op, [])) == 0 for raw in per_worker) == 0
        assert_histogram_contract(results.ops[op], everything)
    # Rows from the merged histograms; every job a worker produced is in Redis.
    table = {
        (parse_params(r.params)["op"], r.metric): r.value
        for r in read_metrics(run.results_dir / "metrics.csv")
        if r.metric != "ops_per_s"
    }
    assert table[("enqueue", "requests")] == sum(len(raw["enqueue"]) for raw in per_worker)
    # An enqueue cut short when the users stopped may or may not have left its job.
    landed = table[("all", "jobs_recorded")] - table[("enqueue", "requests")]
    assert 0 <= landed <= table[("all", "jobs_cut_short")]
    assert table[("all", "jobs_missing")] == table[("all", "jobs_unexplained")] == 0
    assert table[("all", "jobs_stranded")] == 0
    locust_stats = json.loads((run.results_dir / "locust.json").read_text())
    assert {s["name"]: s["num_requests"] for s in locust_stats}["enqueue"] == table[("enqueue", "requests")]
    # Nothing passed through the file system: each worker wrote only its own output.
    for worker in run.workers:
        names = {p.name for p in worker.cwd.iterdir()}
        assert names == {"output.txt", "tmp", next(iter(worker.cwd.glob("raw-*.json"))).name}, names
        assert "the last final" in worker.output


def qbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qbench.harness.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_a_failed_dequeue_is_a_failure_and_locust_exiting_1_makes_load_exit_1(
    redis_url: str, raw_client: redis.Redis, tmp_path: Path
) -> None:
    """Consumers whose every dequeue is refused (an ACL user without RPOPLPUSH, which the
    baseline's polling dequeue sends): each refusal is a Locust failure and a recorded one,
    Locust exits 1, and so does `qbench load`, in one line."""
    user, password = f"qb-nodequeue-{tmp_path.name[-8:]}", "no-dequeue-secret"
    raw_client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["~*"], commands=["+@all", "-rpoplpush"]
    )
    workload = tmp_path / "drain.toml"
    workload.write_text("users = 2\nduration_s = 2\nuser_mix = { consumer = 1 }\nprefill_jobs = 20\n")
    url = redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    try:
        proc = qbench(
            "load", str(workload), "--variant", "baseline", "--redis-url", url, "--out", str(tmp_path / "o")
        )
    finally:
        raw_client.acl_deluser(user)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Locust exited with 1" in proc.stderr, proc.stderr
    table = {
        (parse_params(r.params)["op"], r.metric): r.value
        for r in read_metrics(tmp_path / "o" / "metrics.csv")
    }
    locust_stats = {s["name"]: s for s in json.loads((tmp_path / "o" / "locust.json").read_text())}
    assert table[("dequeue", "failures")] == locust_stats["dequeue"]["num_failures"] > 0
    assert f"{int(table[('dequeue', 'failures')])} failed request(s)" in proc.stderr
    assert table[("dequeue", "requests")] == 0
    # Nothing was taken, so nothing is lost: the 20 prefilled jobs are still queued.
    assert table[("all", "jobs_missing")] == table[("all", "jobs_stranded")] == 0


def test_netns_availability_is_a_reason_or_none() -> None:
    reason = netns.unavailable_reason()
    assert reason is None or reason.startswith(("network namespaces need root", "no `ip`", "cannot create"))
    assert not [name for name in netns_names() if name.startswith("qb-probe-")]


def netns_names() -> set[str]:
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except OSError:
        return set()
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


@pytest.mark.slow
def test_a_worker_lost_before_its_final_report_fails_the_run_in_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    """A worker killed mid-run never sends its final report: the master says so, and
    `qbench load --master` exits 1 with that line instead of writing short rows."""
    port = str(free_port())
    dirs = {role: tmp_path / role for role in ("master", "w1", "w2")}
    for path in dirs.values():
        path.mkdir()
    base = [sys.executable, "-m", "qbench.harness.cli", "load", "producer", "--variant", "scripted"]
    master_cmd = [*base, "--master", "--expect-workers", "2", "--master-port", port, "--users", "2"]
    master_cmd += ["--duration", "7", "--redis-url", redis_url, "--out", str(dirs["master"] / "out")]
    master = subprocess.Popen(
        master_cmd,
        cwd=dirs["master"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker_cmd = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    workers = [
        subprocess.Popen(worker_cmd, cwd=dirs[w], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for w in ("w1", "w2")
    ]
    try:
        assert master.stdout is not None
        # The first progress line: both workers connected and their users are running.
        first = master.stdout.readline()
        while first and not first.startswith("["):
            first = master.stdout.readline()
        assert first.startswith("["), first
        workers[0].kill()  # its Locust worker gets SIGTERM and goes without a final report
        out, err = master.communicate(timeout=90)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert master.returncode == 1, out + err
    assert err.count("\n") == 1, err
    assert "its final report never reached the master" in err, err
    assert not (dirs["master"] / "out" / "metrics.csv").exists()
