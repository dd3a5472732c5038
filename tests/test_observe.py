"""`qbench observe`: read-only (as a minimal ACL user), key families, idle cadence, budget, errors."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from qbench.harness.infra.counting import command_stats
from qbench.harness.infra.nodelink import ForbiddenCommandError, NodeLink
from qbench.harness.infra.redis_server import RedisServerProcess
from qbench.harness.infra.telemetry import COLUMNS, TELEMETRY_FILE, Telemetry, TelemetryRow
from qbench.harness.observe import MINIMAL_ACL, OBSERVE_COMMANDS, ObserveInputError, ObserveResult, observe
from qbench.harness.observe.cadence import idle_pattern, repeat_period
from qbench.harness.observe.families import TTL_KEYS, key_family
from qbench.harness.observe.growth import growth
from qbench.harness.observe.report import OBSERVE_JSON, OBSERVE_MD
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.connection import make_client
from qbench.queue_impl.job import Job
from qbench.queue_impl.queue import RedisQueue

OBSERVER, OBSERVER_PASSWORD = "observer", "observer-pw"
OBSERVER_ACL = [OBSERVER, *MINIMAL_ACL.replace(">PASSWORD", f">{OBSERVER_PASSWORD}").split()]
"""Only INFO, SCAN, TYPE, PTTL, MEMORY USAGE: no write, no KEYS, no CLIENT, no CONFIG."""
WAITERS, WAIT_TIMEOUT_S = 4, 1
"""Idle blocking clients: BRPOPLPUSH on an empty list, returning every WAIT_TIMEOUT_S."""
WINDOW_S = 8.0
"""Long enough for the regularity test to have power (8 rounds of ~4 returns each)."""
NAMESPACE = "obs-4f1c2a9be0"


def observer_url(server: RedisServerProcess) -> str:
    return f"redis://{OBSERVER}:{OBSERVER_PASSWORD}@127.0.0.1:{server.port}/0"


def qbench() -> list[str]:
    script = Path(sys.executable).with_name("qbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qbench.harness.cli"]


@dataclass
class Observed:
    result: ObserveResult
    server: RedisServerProcess
    acl_log: list[Any]
    expires_share: float


def populate(url: str) -> None:
    """A queue's keys (the reference queue, seed preset) and an app's keys, with and without TTLs."""
    variant = PRESETS["optimized"]  # TTLs on: completed job records expire after 24 h
    queue = RedisQueue(make_client(url, variant), variant, namespace=NAMESPACE)
    try:
        for _ in range(300):
            queue.enqueue(Job(type="noop"))
        for _ in range(100):
            job = queue.dequeue(wait=False)
            assert job is not None
            queue.complete(job)
    finally:
        queue.client.close()
    admin = redis.Redis.from_url(url)
    try:
        for _ in range(50):
            admin.set(f"app:session:{uuid.uuid4()}", "s" * 200, ex=3600)
        for i in range(120):
            admin.set(f"app:job:{i}", "j" * 50)
    finally:
        admin.close()


def idle_waiters(url: str, stop: threading.Event) -> list[threading.Thread]:
    """WAITERS threads, started a fraction of a timeout apart (as workers start in life), so
    their returns spread over each second instead of all landing on one sampling instant."""

    def wait() -> None:
        client = redis.Redis.from_url(url, socket_timeout=WAIT_TIMEOUT_S + 5)
        try:
            while not stop.is_set():
                client.brpoplpush("idle:queue", "idle:processing", timeout=WAIT_TIMEOUT_S)
        finally:
            client.close()

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
        stop.wait(WAIT_TIMEOUT_S / WAITERS)
    stop.wait(WAIT_TIMEOUT_S)  # every waiter blocked and in its cycle before observing starts
    return threads


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """One observe run, as the minimal ACL user, of a server with a queue and idle waiters."""
    server = RedisServerProcess(extra_args=["--user", *OBSERVER_ACL])
    server.start()
    stop = threading.Event()
    admin = redis.Redis.from_url(server.url)
    try:
        populate(server.url)
        threads = idle_waiters(server.url, stop)
        admin.acl_log_reset()
        out = tmp_path_factory.mktemp("observe")
        result = observe(observer_url(server), out, duration_s=WINDOW_S, interval_s=1.0)
        keyspace = admin.info("keyspace")["db0"]
        yield Observed(result, server, admin.acl_log(), keyspace["expires"] / keyspace["keys"])
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_TIMEOUT_S + 5)
        admin.close()
        server.stop()


def test_observe_works_as_a_read_only_acl_user(observed: Observed) -> None:
    result = observed.result
    assert observed.acl_log == []  # not one command refused: none outside INFO/SCAN/TYPE/PTTL/MEMORY
    assert set(result.commands_by_name) <= OBSERVE_COMMANDS
    assert result.commands_by_name["info"] == result.pattern.rounds + 1
    assert result.keys.refused == []


def test_observe_writes_its_three_files(observed: Observed) -> None:
    out = observed.result.out_dir
    assert (out / TELEMETRY_FILE).read_text().splitlines()[0] == ",".join(COLUMNS)
    data = json.loads((out / OBSERVE_JSON).read_text())
    assert {"target", "window", "observer", "commands", "idle_pattern", "keys", "growth"} <= set(data)
    assert OBSERVER_PASSWORD not in (out / OBSERVE_JSON).read_text()
    report = (out / OBSERVE_MD).read_text()
    assert "`qbench:{obs-*}:job:*`" in report and "BRPOPLPUSH" in report and "at 30 days" in report
    assert OBSERVER_PASSWORD not in report
    for chart in observed.result.charts:
        assert (out / "charts" / chart).exists() and f"charts/{chart}" in report


def test_observe_finds_the_key_families(observed: Observed) -> None:
    scan = observed.result.keys
    assert scan.complete and not scan.extrapolated
    families = {f.pattern: f for f in scan.families.values()}
    assert families["qbench:{obs-*}:job:*"].scanned == 300
    assert families["app:job:*"].scanned == 120
    assert families["app:session:*"].scanned == 50
    assert families["qbench:{obs-*}:queue:normal"].types == Counter({"list": 1})
    assert set(families["app:job:*"].types) == {"string"}
    assert all(f.memory_bytes for f in families.values())  # MEMORY USAGE sampled in every family


def test_observe_reports_ttl_coverage(observed: Observed) -> None:
    families = {f.pattern: f for f in observed.result.keys.families.values()}
    assert families["app:session:*"].no_ttl_share == 0.0  # every session key has a TTL
    assert families["app:job:*"].no_ttl_share == 1.0  # no app job has one
    assert 10 < families["app:job:*"].ttl_probed <= TTL_KEYS  # more than the 10 keys it once probed
    assert observed.result.growth.expires_share == observed.expires_share  # INFO keyspace, exact


def test_observe_detects_the_blocking_cadence(observed: Observed) -> None:
    pattern = observed.result.pattern
    assert pattern.idle  # no producer command, no key added or removed
    (cadence,) = [c for c in pattern.cadences if c.command == "brpoplpush"]
    assert cadence.kind == "blocking"
    assert round(pattern.blocked_clients_mean) == WAITERS
    # WAITERS clients, each returning once per timeout: within one client's worth.
    assert abs(cadence.rate_per_s * WAIT_TIMEOUT_S - WAITERS) <= 1
    assert cadence.regularity.startswith("regular") or cadence.regularity == "fairly regular"
    assert pattern.seconds_per_wait is not None
    assert round(pattern.seconds_per_wait * WAITERS / WAIT_TIMEOUT_S) == WAITERS
    assert "timeouts" in cadence.pattern
    assert [c.command for c in pattern.cadences] == ["brpoplpush"]  # the observer's own are gone


def test_the_link_refuses_anything_but_its_allowlist(observed: Observed) -> None:
    link = NodeLink(observed.server.url, allowed=OBSERVE_COMMANDS)
    try:
        for args in (
            ("SET", "x", "1"),
            ("DEL", "app:job:1"),
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("DEBUG", "SLEEP", "1"),
            ("MONITOR",),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("BRPOP", "idle:queue", "1"),
        ):
            with pytest.raises(ForbiddenCommandError):
                link.execute(*args)
        assert link.sent == Counter()  # nothing was written to the socket
    finally:
        link.close()


def test_observe_stays_within_its_command_budget(tmp_path: Path) -> None:
    """Counted by the server: every command the observer sent, and no more than budget x duration."""
    server = RedisServerProcess(extra_args=["--user", *OBSERVER_ACL])
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        pipe = admin.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"bulk:{i}", i)
        pipe.execute()
        before = command_stats(admin)
        budget, duration = 10.0, 3.0
        result = observe(
            observer_url(server), tmp_path, duration_s=duration, budget_per_s=budget, charts=False
        )
        after = command_stats(admin)
    finally:
        admin.close()
        server.stop()
    observer_names = OBSERVE_COMMANDS
    server_count = sum(after[name] - before.get(name, 0) for name in observer_names) - 1  # admin's INFO
    assert server_count == result.commands_sent
    assert result.commands_sent <= budget * duration
    own = [r for r in result.rows if r.metric == "own_commands"]
    intervals = {r.t: r.value for r in result.rows if r.metric == "interval_s"}
    assert all(r.value <= budget * intervals[r.t] + 1 for r in own)  # token bucket, burst 1
    scan = result.keys
    assert scan.extrapolated and not scan.complete
    (family,) = scan.families.values()
    assert family.pattern == "bulk:*"
    assert family.as_dict(scan.factor)["keys_estimated"] == 5000  # one family: scanned x 5000 / scanned


def test_a_scan_cut_at_its_key_limit_says_so_and_every_family_keeps_its_count(tmp_path: Path) -> None:
    """Many keys of one family, a rare family and 520 one-key families: a scan stopped at a low
    key limit says so (keys seen of keys in the db), and a complete pass keeps every family
    (it once merged all past the 500th into one) and probes the TTL of up to TTL_KEYS keys of each."""
    server = RedisServerProcess()
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        pipe = admin.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"bulk:{i}", i)
        for name in ("high", "normal", "low"):
            pipe.rpush(f"rare:queue:{name}", "job")
        words = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"][:520]
        for word in words:
            pipe.set(f"fam{word}:key", 1)
        pipe.execute()
        db_keys = 3000 + 3 + 520
        done = run_qbench(
            "observe",
            "--redis-url",
            server.url,
            "--duration",
            "2s",
            "--max-scan-keys",
            "200",
            "--no-charts",
            "--out",
            str(tmp_path / "limited"),
        )
        assert done.returncode == 0, done.stderr
        data = json.loads((tmp_path / "limited" / OBSERVE_JSON).read_text())["keys"]
        assert data["stopped"] == "key limit" and not data["complete"]
        seen = data["keys_scanned"]
        note = f"the key scan stopped at its key limit: it saw {seen:,} of the {db_keys:,} keys in db 0"
        assert any(line.startswith(f"  note: {note}") for line in done.stdout.splitlines())
        assert note in (tmp_path / "limited" / OBSERVE_MD).read_text()
        assert sum(f["keys_scanned"] for f in data["families"]) == seen
        assert all(f["keys_scanned"] >= 1 for f in data["families"])

        full = observe(server.url, tmp_path / "full", duration_s=3.0, budget_per_s=2000.0, charts=False)
    finally:
        admin.close()
        server.stop()
    scan = full.keys
    assert scan.complete and scan.coverage() == ""
    families = {f.pattern: f for f in scan.families.values()}
    assert len(families) == 1 + 3 + 520  # bulk:*, the three rare queue lists, the one-key families
    assert families["bulk:*"].scanned == 3000 and families["rare:queue:high"].scanned == 1
    assert all(families[f"fam{word}:key"].scanned == 1 for word in words)
    assert families["bulk:*"].ttl_probed == TTL_KEYS and families["bulk:*"].no_ttl_share == 1.0
    assert f"% of {TTL_KEYS} probed" in (tmp_path / "full" / OBSERVE_MD).read_text()


@pytest.mark.parametrize("jitter", [True])
def test_the_wait_length_is_right_beside_a_strictly_periodic_producer(jitter: bool) -> None:
    """A producer pushing a job every 0.1 s, each push 10 ms before a sampling slot; two workers
    BLPOP, hold each job 50 ms. On the fixed grid every reading of blocked_clients found one
    worker busy (1 of 2 blocked instead of 1.5 on average: the estimate came out a third short);
    jittered rounds read every phase. The estimate must be within 15% of the wait length the
    workers measured themselves."""
    interval, period, hold, duration = 0.2, 0.1, 0.05, 8.0
    server = RedisServerProcess()
    server.start()
    stop = threading.Event()
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        try:
            while not stop.is_set():
                began = time.monotonic()
                got = client.blpop(["periodic:queue"], timeout=1)
                ended = time.monotonic()
                with lock:
                    waits.append(ended - began)
                if got is not None:
                    time.sleep(hold)
        finally:
            client.close()

    try:
        with Telemetry(server.url, interval_s=interval, jitter=jitter) as t:
            t0 = time.monotonic() - t.elapsed_s()
            workers = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
            for thread in workers:
                thread.start()
            producer = redis.Redis.from_url(server.url)
            k = 1
            while (at := t0 + k * period - 0.01) < t0 + duration:
                time.sleep(max(0.0, at - time.monotonic()))
                producer.rpush("periodic:queue", "job")
                k += 1
            producer.close()
            t.close(at_s=duration + 0.05)
        stop.set()
        for thread in workers:
            thread.join(timeout=5)
    finally:
        stop.set()
        server.stop()
    pattern = idle_pattern(t.rows)
    measured = statistics.fmean(waits)
    assert pattern.seconds_per_wait is not None
    assert abs(pattern.seconds_per_wait - measured) <= 0.15 * measured, (pattern.seconds_per_wait, measured)


def test_impossible_settings_are_refused_before_connecting(tmp_path: Path) -> None:
    for kwargs, message in (
        ({"budget_per_s": 1.5}, "the sampler alone sends 1"),
        ({"duration_s": 1.0}, "at least two sampling intervals"),
        ({"scan_count": 5000}, "--scan-count must be 1..1000"),
    ):
        with pytest.raises(ObserveInputError, match=message):
            observe("redis://127.0.0.1:1/0", tmp_path, **kwargs)  # type: ignore[arg-type]


# -- the analysis, on rows alone ---------------------------------------------------------------------
def rows_of(rounds: list[dict[str, float]], node: str = "n:1") -> list[TelemetryRow]:
    rows = []
    for i, metrics in enumerate(rounds, start=1):
        rows.append(TelemetryRow(float(i), "redis", node, "interval_s", 1.0, "s"))
        for metric, value in metrics.items():
            rows.append(TelemetryRow(float(i), "redis", node, metric, value, "x"))
    return rows


def test_cadence_of_idle_blocking_waiters_and_a_polling_loop() -> None:
    returns = [6, 5, 7, 6, 6, 5, 7, 6, 6, 6]  # 6 waiters, 1 s timeouts, phases drifting
    rounds: list[dict[str, float]] = [
        {
            "calls:brpoplpush": n,
            "calls:rpoplpush": 30,
            "commands": n + 30,
            "blocked_clients": 6,
            "keys:db0": 10,
        }
        for n in returns
    ]
    pattern = idle_pattern(rows_of(rounds))
    assert pattern.idle and pattern.window_s == 10 and pattern.rounds == 10
    blocking, polling = (
        next(c for c in pattern.cadences if c.command == n) for n in ("brpoplpush", "rpoplpush")
    )
    assert blocking.calls == sum(returns) == 60
    assert blocking.rate_per_s == 6.0 and blocking.regularity == "regular"
    assert pattern.seconds_per_wait == pytest.approx(1.0)
    assert polling.regularity == "regular" and polling.cv == 0
    assert "polling loop with nothing to do" in polling.pattern
    busy = idle_pattern(rows_of([{**r, "calls:lpush": 5} for r in rounds]))
    assert not busy.idle and busy.producer_calls == 50
    # Keys that expire (a heartbeat's TTL) are not work: still idle. Keys a client deletes are.
    expiring = [
        {**r, "keys:db0": 10 if i < 5 else 8, "expired_keys": 2 if i == 5 else 0}
        for i, r in enumerate(rounds)
    ]
    assert idle_pattern(rows_of(expiring)).idle and idle_pattern(rows_of(expiring)).keys_expired == 2
    deleted = [{**r, "keys:db0": 10 if i < 5 else 8} for i, r in enumerate(rounds)]
    assert not idle_pattern(rows_of(deleted)).idle


def test_a_cycle_longer_than_one_round_is_found() -> None:
    """The seed's blocking dequeue: 6 workers wait 1 s (high), 1 s (normal), 3 s (low) in turn."""
    cycle = [6.0, 6.0, 0.0, 0.0, 6.0]
    counts = cycle * 4
    assert repeat_period(counts) == (5, 0.0)
    rounds: list[dict[str, float]] = [
        {"calls:brpoplpush": n, "blocked_clients": 6, "keys:db0": 3} for n in counts
    ]
    pattern = idle_pattern(rows_of(rounds))
    (cadence,) = pattern.cadences
    assert cadence.period_s == 5 and cadence.regularity == "regular every 5 s"
    assert cadence.rate_per_s == 3.6 and pattern.seconds_per_wait == pytest.approx(6 / 3.6)  # (1 + 1 + 3) / 3
    assert "timeouts" in cadence.pattern
    assert repeat_period([1, 0, 3, 0, 0, 7, 1, 0, 0]) is None


def test_growth_is_a_least_squares_line_to_30_days() -> None:
    rows = rows_of(
        [{"keys:db0": 100 + 2 * i, "keys:db1": 5, "used_memory_bytes": 1e6 + 1000 * i} for i in range(6)]
    )
    found = growth(rows)
    assert found.keys is not None and found.used_memory_bytes is not None
    assert found.keys.per_hour == pytest.approx(2 * 3600)
    assert found.keys.end == 115
    assert found.keys.at_30_days == pytest.approx(115 + 2 * 3600 * 720)
    assert found.used_memory_bytes.per_hour == pytest.approx(1000 * 3600)


@pytest.mark.parametrize(
    ("key", "family"),
    [
        ("qbench:{obs-4f1c2a9be0}:job:6a1f0c2d9e8b4a7f9c3d2e1f0a9b8c7d", "qbench:{obs-*}:job:*"),
        ("qbench:{obs-4f1c2a9be0}:processing:host-12345-1a2b3c4d", "qbench:{obs-*}:processing:host-*"),
        ("qbench:{x}:queue:high", "qbench:{x}:queue:high"),
        ("bull:emails:1234", "bull:emails:*"),
        ("session:550e8400-e29b-41d4-a716-446655440000", "session:*"),
        ("rq:job:01ARZ3NDEKTSV4RRFFQ69G5FAV", "rq:job:*"),
        ("celery-task-meta-550e8400-e29b-41d4-a716-446655440000", "celery-task-meta-*"),
        ("user:42:profile", "user:*:profile"),
        ("worker7:heartbeat", "worker*:heartbeat"),
        ("plain", "plain"),
    ],
)
def test_key_families_replace_ids(key: str, family: str) -> None:
    assert key_family(key) == family


# -- the verb -----------------------------------------------------------------------------------------
def run_qbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [*qbench(), *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


def test_a_server_that_refuses_info_gets_one_line_and_exit_1(tmp_path: Path) -> None:
    server = RedisServerProcess(extra_args=["--user", "noinfo", "on", ">pw", "~*", "-@all", "+scan", "+type"])
    server.start()
    try:
        url = f"redis://noinfo:pw@127.0.0.1:{server.port}/0"
        done = run_qbench("observe", "--redis-url", url, "--duration", "2s", "--out", str(tmp_path / "o"))
    finally:
        server.stop()
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("qbench: error: cannot read INFO from 127.0.0.1:") and "'info'" in line
    assert "pw" not in line.replace("permissions", "")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--redis-url", "redis://127.0.0.1:1/0"), 1, "cannot reach Redis at redis://127.0.0.1:1/0"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--duration", "soon"), 2, "bad duration 'soon'"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--duration", "1s"), 2, "at least two sampling intervals"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--budget", "1"), 2, "--budget 1: the sampler alone"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--scan-count", "5000"), 2, "--scan-count must be 1..1000"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--budget", "nan"), 2, "--budget must be a finite number"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--budget", "inf"), 2, "--budget must be a finite number"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--budget", "0"), 2, "--budget must be a finite number"),
        (("--redis-url", "http://x"), 2, "is not a Redis URL"),
        ((), 2, "observe needs --redis-url (or REDIS_URL)"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], code: int, fragment: str, tmp_path: Path) -> None:
    done = run_qbench("observe", *args, "--out", str(tmp_path / "o"))
    assert done.returncode == code, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("qbench: error:") and fragment in line


@pytest.mark.slow
def test_the_verb_end_to_end(observed: Observed, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_qbench(
        "observe", "--redis-url", observer_url(observed.server), "--duration", "3s", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out / OBSERVE_MD)
    assert "BRPOPLPUSH" in done.stdout
    assert (out / TELEMETRY_FILE).exists() and (out / OBSERVE_JSON).exists()
    help_text = run_qbench("observe", "--help").stdout
    for promise in ("read only", "KEYS", "MONITOR", "--budget", "exit 1", "minimal ACL user"):
        assert promise in help_text
