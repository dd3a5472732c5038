"""Defects of `qbench load` found by trying it as a new user would, each held by a test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from qbench.harness.infra.redis_server import free_port
from qbench.harness.load.runner import default_out_dir, summary
from qbench.harness.results.rows import Row, params

REPO = Path(__file__).resolve().parents[1]


def qbench(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # A child process: Locust's gevent patching must never reach the test process.
    return subprocess.run(
        [sys.executable, "-m", "qbench.harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_the_console_shows_a_dash_not_nan_where_round_trips_were_not_counted() -> None:
    def row(op: str, metric: str, value: float) -> Row:
        return Row("load", "huey", params(scenario="producer", op=op), metric, value, "x")

    rows = [
        row("enqueue", "requests", 10),
        row("enqueue", "rate", 5),
        row("enqueue", "latency_ms_p50", 0.5),
        row("enqueue", "latency_ms_p99", 0.9),
        row("enqueue", "latency_ms_p99.9", 1.0),
        row("counted", "requests", 4),
        row("counted", "round_trips_per_op", 2.0),
        row("all", "jobs_expected", 10),
    ]
    text = summary(rows)
    assert "nan" not in text
    enqueue = next(line for line in text.splitlines() if line.startswith("enqueue"))
    assert enqueue.split()[-1] == "-"
    counted = next(line for line in text.splitlines() if line.startswith("counted"))
    assert counted.split()[-1] == "2.00" and counted.split()[3] == "-"  # no samples: no p50


def test_the_default_out_is_a_new_ignored_folder_beside_not_among_the_committed_runs(
    redis_url: str, tmp_path: Path
) -> None:
    assert re.fullmatch(r"results/\d{8}T\d{6}Z-load-producer", str(default_out_dir("producer")))
    assert (
        str(default_out_dir("/some/where/my-scenario.toml", now=0))
        == "results/19700101T000000Z-load-my-scenario"
    )
    # git ignores the default folders, and still sees the committed runs.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "results/20990101T000000Z-load-producer/metrics.csv"], cwd=REPO
    )
    assert ignored.returncode == 0
    committed = subprocess.run(
        ["git", "check-ignore", "-q", "results/load/producer/scripted/run.json"], cwd=REPO
    )
    assert committed.returncode == 1
    done = qbench(
        "load",
        "producer",
        "--variant",
        "scripted",
        "--users",
        "1",
        "--duration",
        "1",
        "--no-charts",
        "--telemetry-interval",
        "0",
        "--redis-url",
        redis_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    made = [p.relative_to(tmp_path) for p in (tmp_path / "results").iterdir()]
    assert len(made) == 1 and re.fullmatch(r"results/\d{8}T\d{6}Z-load-producer", str(made[0])), made
    assert (tmp_path / made[0] / "metrics.csv").is_file()
    assert f"results in {made[0]}" in done.stdout


def test_a_worker_with_a_redis_it_cannot_use_says_so_in_one_line_before_dialling_the_master(
    redis_url: str, raw_client: redis.Redis, tmp_path: Path
) -> None:
    user = f"qb-worker-{tmp_path.name[-8:]}"
    raw_client.acl_setuser(user, enabled=True, passwords=["+the-password"], keys=["~*"], commands=["+@all"])
    wrong = redis_url.replace("redis://", f"redis://{user}:not-the-password@", 1)
    try:
        done = qbench(
            "load", "producer", "--variant", "scripted", "--worker", "--master-host", "127.0.0.1",
            "--master-port", "1", "--redis-url", wrong, timeout=30,
        )  # fmt: skip
    finally:
        raw_client.acl_deluser(user)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--redis-url" in done.stderr, done.stderr
    assert "not-the-password" not in done.stderr and "dialling" not in done.stdout


@pytest.mark.slow
def test_a_driver_run_across_hosts_each_worker_building_the_drivers_environment(
    redis_url: str, tmp_path: Path
) -> None:
    """`qbench load --driver X --master` and two `--worker --driver X` processes, each in its
    own folder on loopback: every job the users enqueued is picked up by the driver's workers."""
    empty = redis.Redis.from_url(redis_url)
    db_url = redis_url.rsplit("/", 1)[0] + "/9"  # a driver needs an empty DB of its own
    redis.Redis.from_url(db_url).flushdb()
    empty.close()
    port = str(free_port())
    dirs = {role: tmp_path / role for role in ("master", "w1", "w2")}
    for path in dirs.values():
        path.mkdir()
    base = [sys.executable, "-m", "qbench.harness.cli", "load", "producer", "--driver", "scripted"]
    out_dir = str(dirs["master"] / "out")
    master = subprocess.Popen(
        [*base, "--master", "--expect-workers", "2", "--master-port", port, "--users", "2", "--duration", "2",
         "--redis-url", db_url, "--no-charts", "--telemetry-interval", "0", "--out", out_dir],
        cwd=dirs["master"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker_cmd = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    workers = [
        subprocess.Popen(worker_cmd, cwd=dirs[w], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for w in ("w1", "w2")
    ]
    try:
        out, err = master.communicate(timeout=240)
        worker_out = [w.communicate(timeout=60)[0] for w in workers]
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert master.returncode == 0, out + err
    for proc, text in zip(workers, worker_out, strict=True):
        assert proc.returncode == 0, text
        assert "building driver scripted's environment on this host" in text
    run = json.loads((dirs["master"] / "out" / "run.json").read_text())
    assert run["locust_workers"] == 2 and run["driver"]["name"] == "scripted"
    assert len(run["locust_worker_reports"]) == 2
    jobs = run["jobs"]
    assert jobs["expected"] > 0 and jobs["not_picked_up"] == 0
    assert "rt/op" in out and "nan" not in out


def _load_role(*args: str, cwd: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "qbench.harness.cli", "load", "producer", "--variant", "scripted", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 90) -> list[tuple[int, str, str]]:
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.slow
def test_a_master_short_of_workers_says_how_many_came_and_everyone_exits_1(
    redis_url: str, tmp_path: Path
) -> None:
    """3 workers expected, 2 started: the master says how many have connected while it
    waits, gives up at --worker-wait with one line naming them (exit 1, run.json failed),
    and the two workers exit 1 too (Locust's own bound: silence, 5 minutes, workers 0)."""
    port = str(free_port())
    out = tmp_path / "out"
    master = _load_role(
        "--master", "--expect-workers", "3", "--worker-wait", "7", "--master-port", port, "--users", "3",
        "--duration", "3", "--no-charts", "--redis-url", redis_url, "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    worker_args = ("--worker", "--master-host", "127.0.0.1", "--master-port", port)
    workers = [_load_role(*worker_args, cwd=tmp_path) for _ in range(2)]
    (m_code, m_out, m_err), *ends = _finish([master, *workers])
    assert m_code == 1, m_out + m_err
    assert "waiting for workers: 2 of 3 connected" in m_out
    assert m_err.count("\n") == 1 and "gave up waiting for workers after 7 s: 2 of 3 connected" in m_err
    assert [code for code, _, _ in ends] == [1, 1], ends
    assert all("the master ended the run: gave up waiting" in w_out for _, w_out, _ in ends)
    meta = json.loads((out / "run.json").read_text())
    reason = "gave up waiting for workers after 7 s: 2 of 3 connected"
    assert (meta["status"], meta["reason"]) == ("failed", reason)


def _locust_children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


@pytest.mark.slow
def test_a_worker_whose_locust_process_dies_is_named_and_the_run_fails(
    redis_url: str, tmp_path: Path
) -> None:
    """A worker's Locust process killed (SIGKILL: no goodbye to the master): the master names
    the missing worker on the console, the run stops and fails, and run.json and REPORT.md
    give that reason (before: the progress line froze its ops/s and said nothing)."""
    port = str(free_port())
    out = tmp_path / "out"
    master = _load_role(
        "--master", "--expect-workers", "2", "--master-port", port, "--users", "2", "--duration", "60",
        "--no-charts", "--telemetry-interval", "0", "--redis-url", redis_url, "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    worker_args = ("--worker", "--master-host", "127.0.0.1", "--master-port", port)
    workers = [_load_role(*worker_args, cwd=tmp_path) for _ in range(2)]
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        while line and not line.startswith("["):  # the first progress line: both workers run
            line = master.stdout.readline()
        assert line.startswith("["), line
        for child in _locust_children(workers[0].pid):
            subprocess.run(["kill", "-9", str(child)], check=True)
    except BaseException:
        for proc in (master, *workers):
            proc.kill()
        raise
    (m_code, m_out, m_err), *_ = _finish([master, *workers])
    assert m_code == 1, m_out + m_err
    assert re.search(r"worker \S+ went missing at \d+ s: no heartbeat", m_out), m_out
    assert m_err.count("\n") == 1 and "went missing" in m_err, m_err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and "went missing" in meta["reason"]
    assert "went missing" in (out / "REPORT.md").read_text().splitlines()[2]


@pytest.mark.parametrize("wait", ["0", "-5", "nan", "inf", "1e12"])
def test_a_bad_worker_wait_is_one_line_and_exit_2(wait: str) -> None:
    done = qbench(
        "load", "producer", "--variant", "scripted", "--master", "--expect-workers", "1",
        f"--worker-wait={wait}", timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "--worker-wait" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_failed_rerun_leaves_nothing_of_the_earlier_successful_run(redis_url: str, tmp_path: Path) -> None:
    """A successful run, then a rerun into the same folder against a Redis that refuses:
    the old metrics.csv is gone, REPORT.md (if any) is the failed run's, run.json says
    failed, and `qbench report` on the folder exits 1 (before: the old run's files stayed
    and `qbench report` showed its clean numbers, exit 0)."""
    out = tmp_path / "out"
    base = ("load", "producer", "--variant", "scripted", "--users", "1", "--duration", "1", "--no-charts",
            "--telemetry-interval", "0", "--out", str(out))  # fmt: skip
    first = qbench(*base, "--redis-url", redis_url)
    assert first.returncode == 0, first.stderr
    assert (out / "metrics.csv").is_file() and "# qbench load: producer" in (out / "REPORT.md").read_text()
    assert qbench("report", str(out)).returncode == 0
    refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    again = qbench(*base, "--redis-url", refused)
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr, again.stderr
    assert not (out / "metrics.csv").exists()
    assert not list(out.glob("locust*")) and not (out / "latency_histograms.json").exists()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["reason"]
    report = out / "REPORT.md"
    if report.exists():
        text = report.read_text()
        assert "This run failed" in text and "## Operations" not in text, text
    rendered = qbench("report", str(out))
    assert rendered.returncode == 1, rendered.stdout + rendered.stderr
