"""`qbench peers`: the driver protocol, the reference drivers and one cheap peer (Huey), end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qbench.drivers.reference_driver import VARIANT_ENV
from qbench.harness.cli import main
from qbench.harness.infra.telemetry import read_telemetry
from qbench.harness.peers.envs import PeerEnvError, ensure_env, import_root
from qbench.harness.peers.registry import (
    BUILTIN_ORDER,
    FAULT_CONFIGURATIONS,
    PEER_NAMES,
    REFERENCE_NAMES,
    discover,
    resolve,
)
from qbench.harness.peers.report import METRICS, collect, pickup_method, render_report, standing
from qbench.harness.peers.runner import (
    DriverFailedError,
    Sink,
    SinkLineError,
    Sizes,
    driver_process,
    probe_schedule,
    processing_rate,
)
from qbench.harness.peers.suite import (
    PeersInputError,
    SuiteResult,
    parse_only,
    run_suite,
    server_for,
    write_suite,
)
from qbench.harness.results.rows import Row, parse_params, read_metrics
from qbench.loader import DriverLoadError

JOBS = 200
TINY = Sizes(jobs=JOBS, repeats=1, idle_s=0.5, pickup_samples=5, settle_s=0.2, pickup_gap_s=0.2, stall_s=30)
"""Sizes for tests: every phase runs, counts are exact, timings mean nothing here."""


def value(rows: list[Row], driver: str, metric: str, **match: str) -> float:
    found = [
        r.value
        for r in rows
        if r.variant == driver
        and r.metric == metric
        and all(parse_params(r.params).get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, f"{driver} {metric} {match}: {found}"
    return found[0]


# -- pure parts ---------------------------------------------------------------------------------
def test_the_built_in_drivers_register_through_the_entry_point_group() -> None:
    registry = discover()
    assert PEER_NAMES == ("rq", "arq", "saq", "dramatiq", "huey", "celery", "taskiq")
    assert REFERENCE_NAMES == ("baseline", "optimized", "scripted")
    assert list(registry.specs) == list(BUILTIN_ORDER), registry.broken
    for name, spec in registry.specs.items():
        assert spec.cls.name == name and spec.origin == "built-in"
        if name.split("+")[0] in REFERENCE_NAMES or spec.external is not None:
            assert spec.requirements is None  # qbench's own environment
        else:  # a library of its own, in a virtualenv built from a committed requirements file
            expected = Path("qbench/drivers/requirements") / f"{spec.env_name}.txt"
            assert spec.requirements == expected.resolve()
            assert spec.requirements.is_file()
    assert discover().specs["taskiq+result_ex_time=3600"].env_name == "taskiq"  # shares taskiq's venv
    assert discover().specs["bullmq"].external is not None
    # The reference queue at the retention most libraries have (equal-retention memory).
    assert discover().specs["scripted+retention=delete"].cls.chosen_variant().retention == "delete"


def test_any_reference_variant_is_a_driver() -> None:
    spec = resolve("scripted+dispatch=thread,ack=each")
    assert (spec.name, spec.origin) == ("scripted+dispatch=thread,ack=each", "variant")
    assert dict(spec.env) == {VARIANT_ENV: "scripted+dispatch=thread,ack=each"}
    with pytest.raises(DriverLoadError, match="dispatch='threads'"):
        resolve("scripted+dispatch=threads")


def test_parse_only_keeps_report_order_and_rejects_unknown_names() -> None:
    assert parse_only("huey, scripted") == ["scripted", "huey"]
    every = list(discover().specs)
    assert parse_only(None) == [name for name in every if name not in FAULT_CONFIGURATIONS]
    assert set(FAULT_CONFIGURATIONS) <= set(every)  # each registered, run when named
    assert parse_only("rq+retry=3") == ["rq+retry=3"]
    with pytest.raises(PeersInputError, match="unknown driver"):
        parse_only("huey,sidekiq")


def test_bad_flags_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peers", "--only", "nope"]) == 2
    assert main(["peers", "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("qbench: error:") for line in err)


def test_sink_reads_whole_lines_only(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "s.sink")
    assert sink.count() == 0  # no file yet
    (tmp_path / "s.sink").write_bytes(b"1 5\n2 9\n3 1")
    assert sink.count() == 2
    with (tmp_path / "s.sink").open("ab") as fh:
        fh.write(b"2\n")
    assert sink.count() == 3
    assert sink.samples == [(1, 5), (2, 9), (3, 12)]
    with (tmp_path / "s.sink").open("ab") as fh:
        fh.write(b"4 20 high\n")
    assert sink.count() == 4 and sink.priorities == [None, None, None, "high"]
    with (tmp_path / "s.sink").open("ab") as fh:
        fh.write(b"done\n")
    with pytest.raises(SinkLineError, match="not `sent_us started_us"):
        sink.count()


def test_pickup_probes_arrive_at_random_times_spanning_the_gap() -> None:
    times = probe_schedule(200, 3.0)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert len(times) == 200 and all(0 <= g < 3.0 for g in gaps)
    assert min(gaps) < 0.3 and max(gaps) > 2.7  # the range is used, short gaps and long ones
    assert probe_schedule(200, 3.0) == times  # every driver gets the same schedule


def test_the_pickup_method_is_read_from_the_rows() -> None:
    new = Row("peers", "huey", "arrivals=random;gap_max_s=3;samples=100", "pickup_ms_p99", 5.0, "ms")
    old = Row("peers", "huey", "samples=100", "pickup_ms_p99", 5.0, "ms")  # runs made before
    assert "random times, gaps drawn uniformly from [0, 3) s" in pickup_method([new])
    assert "closed loop" in pickup_method([old])


def test_processing_rate() -> None:
    # 101 jobs started 10 ms apart: 100 jobs/s whatever the trimming.
    samples = [(0, i * 10_000) for i in range(101)]
    assert processing_rate(samples) == pytest.approx(100.0)
    assert processing_rate(samples[:1]) != processing_rate(samples[:1])  # NaN: too few


def test_report_ranks_scripted_against_the_best_default_peer() -> None:
    def rows(name: str, rate: float, commands: float) -> list[Row]:
        return [
            Row("peers", name, "calls=serial;jobs=10", "enqueue_jobs_per_s", rate, "jobs/s", 0),
            Row("peers", name, "command=all;phase=enqueue", "commands_per_job", commands, "commands/job", 0),
            Row("peers", name, "command=all;phase=process", "commands_per_job", 1.0, "commands/job", 0),
            Row("peers", name, "command=all;phase=idle", "idle_commands_per_s", 7.0, "commands/s", 0),
        ]

    data = rows("scripted", 900.0, 3.0) + rows("huey", 1000.0, 1.0) + rows("rq", 500.0, 5.0)
    data += rows("taskiq+result_ex_time=3600", 5000.0, 0.5)  # labelled: shown, never ranked
    by_key = {m.key: m for m in METRICS}
    enqueue = collect(data, by_key["enqueue"])
    assert standing(enqueue, by_key["enqueue"]) == (
        "enqueue, one call per job: scripted 900 vs best peer huey 1,000 jobs/s (0.90x): trails"
    )
    commands = collect(data, by_key["commands"])  # enqueue + process, the idle phase left out
    assert commands["scripted"].median == 4.0 and commands["rq"].median == 6.0
    assert str(standing(commands, by_key["commands"])).endswith("huey 2.0 commands/job (2.00x): trails")


# -- against real Redis servers ---------------------------------------------------------------------
def test_a_server_not_started_by_qbench_is_used_only_if_its_db_is_empty(redis_url: str) -> None:
    db = 7
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}")
    try:
        client.set("someone-elses-key", b"1")
        with (
            pytest.raises(PeersInputError, match="needs an empty DB"),
            server_for("scripted", redis_url, db=db),
        ):
            pass
        assert client.get("someone-elses-key") == b"1"  # never flushed
    finally:
        client.delete("someone-elses-key")
        client.close()


def test_driver_errors_end_in_one_line_not_a_hang(tmp_path: Path) -> None:
    root = import_root()
    scripted = discover().specs["scripted"]
    with (
        driver_process(
            spec=scripted,
            python=ensure_env(scripted),
            url="redis://127.0.0.1:1/0",
            concurrency=2,
            work_dir=tmp_path / "work",
            import_root=root,
        ) as driver,
        pytest.raises(DriverFailedError, match=r"enqueue: .*(Connection|connect)"),
    ):
        driver.enqueue(1)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SuiteResult, Path]]:
    out = tmp_path_factory.mktemp("peers")
    result = run_suite(
        ["baseline", "scripted"],
        TINY,
        progress=lambda _line: None,
        logs_dir=out / "logs",
        telemetry_dir=out / "telemetry",
        telemetry_interval_s=0.2,  # 5 INFO/s beside counts held exact below
    )
    write_suite(result, TINY, out, mode="test")
    yield result, out


@pytest.mark.slow
def test_reference_presets_process_every_job_and_count_exactly(
    reference_run: tuple[SuiteResult, Path],
) -> None:
    result, _out = reference_run
    assert result.failures == {}
    rows = result.rows
    for name in ("baseline", "scripted"):
        assert value(rows, name, "jobs_handled") == JOBS
        assert "WorkerPool of 10 threads" in result.drivers[name]["setup"]
    # baseline enqueue: SET + LPUSH per job; scripted: one script call doing the same writes.
    assert value(rows, "baseline", "commands_per_job", phase="enqueue", command="set") == 1.0
    assert value(rows, "baseline", "commands_per_job", phase="enqueue", command="lpush") == 1.0
    # One EVALSHA per job, plus the very first one that a fresh server answers NOSCRIPT.
    evalsha = round(value(rows, "scripted", "commands_per_job", phase="enqueue", command="evalsha") * JOBS)
    assert evalsha in (JOBS, JOBS + 1)
    # Round trips as Redis counts them (read events): baseline's loop enqueue is two per job,
    # the script one; a few more for the connection's handshake (HELLO, CLIENT SETINFO...).
    baseline_trips = round(value(rows, "baseline", "round_trips_per_job", phase="enqueue") * JOBS)
    scripted_trips = round(value(rows, "scripted", "round_trips_per_job", phase="enqueue") * JOBS)
    assert 2 * JOBS <= baseline_trips <= 2 * JOBS + 6, baseline_trips
    assert JOBS <= scripted_trips <= JOBS + 6, scripted_trips
    # Job records stay: a key each forever without TTLs (baseline); in the scripted preset
    # (records=hash) fields of one hash, each with its TTL: the hash is the one key left,
    # and a key-level TTL it has none.
    assert value(rows, "baseline", "keys_left_no_ttl") >= JOBS
    assert value(rows, "scripted", "keys_left") == 1
    assert value(rows, "scripted", "keys_left_no_ttl") == 1
    assert value(rows, "scripted", "enqueue_jobs_per_s", calls="many100") > 0


@pytest.mark.slow
def test_reference_run_writes_tidy_results_and_a_report(reference_run: tuple[SuiteResult, Path]) -> None:
    result, out = reference_run
    assert read_metrics(out / "metrics.csv") == result.rows
    meta = json.loads((out / "run.json").read_text())
    assert meta["experiment"] == "peers" and set(meta["drivers"]) == {"baseline", "scripted"}
    report = (out / "PEERS.md").read_text()
    assert "| baseline | 0.1.0 |" in report and "| scripted | 0.1.0 |" in report
    assert (out / "charts" / "peers_process.png").is_file()
    # Each driver sampled on its own server, into its own file; the report shows them.
    for name in ("baseline", "scripted"):
        sampled = read_telemetry(out / "telemetry" / f"{name}.csv")
        assert any(r.source == "redis" and r.metric.startswith("calls:") for r in sampled)
        assert any(r.source == "harness" and not r.node.startswith(("harness:", "all")) for r in sampled)
        assert meta["telemetry"][name]["enabled"] is True and meta["telemetry"][name]["samples"] >= 2
    assert "## What Redis did" in report and "| baseline | " in report.split("## What Redis did")[1]
    assert (out / "charts" / "peers_telemetry_ops_by_command.png").is_file()
    (out / "PEERS.md").unlink()
    assert main(["peers", "--render", str(out)]) == 0  # re-renders from the files alone
    assert (out / "PEERS.md").read_text() == report


@pytest.mark.slow
def test_huey_end_to_end_in_its_own_virtualenv(tmp_path: Path) -> None:
    """The cheapest peer: builds its venv once (about 10 s from PyPI), then a tiny run."""
    try:
        ensure_env(discover().specs["huey"], log=tmp_path / "pip.log")
    except PeerEnvError as exc:
        pytest.skip(f"huey's virtualenv cannot be built here (no package index?): {exc}")
    result = run_suite(["huey"], TINY, progress=lambda _line: None, logs_dir=tmp_path)
    assert result.failures == {}
    rows = result.rows
    assert value(rows, "huey", "jobs_handled") == JOBS
    assert value(rows, "huey", "commands_per_job", phase="enqueue", command="lpush") == 1.0
    assert value(rows, "huey", "keys_left_no_ttl") == 0  # a None result is not stored
    assert result.drivers["huey"]["version"] == "3.5.4"
    render_report(rows, {"drivers": result.drivers, "sizes": {"jobs": JOBS}}, tmp_path)
    assert "| huey | 3.5.4 |" in (tmp_path / "PEERS.md").read_text()


@pytest.mark.slow
def test_gate_compares_peers_runs_and_refuses_an_incomplete_one(
    reference_run: tuple[SuiteResult, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _result, out = reference_run
    assert main(["gate", "--baseline", str(out), "--candidate", str(out)]) == 0
    assert "gate: passed" in capsys.readouterr().out
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    meta = json.loads((partial / "run.json").read_text())
    meta["failures"] = {"scripted": "a worker exited at 0/200 jobs"}
    (partial / "run.json").write_text(json.dumps(meta))
    assert main(["gate", "--baseline", str(out), "--candidate", str(partial)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "incomplete run: driver(s) scripted failed" in err[0]


def test_two_processes_never_run_one_install_step_at_once(tmp_path: Path) -> None:
    """Two runs (or two test workers) needing the same external driver: the first runs its
    install step, the second waits on the folder's lock and then finds it installed."""
    folder = tmp_path / "driver"
    folder.mkdir()
    # The install step records its start, lingers, then marks the driver installed.
    step = "echo start >> installs.log; sleep 1; mkdir -p done; touch done/ok"
    (folder / "driver.toml").write_text(
        'name = "slowinstall"\nproducer = ["true"]\nworker = ["true"]\n'
        f'install = ["sh", "-c", "{step}"]\ninstalled = "done/ok"\n'
    )
    code = (
        "import sys; from qbench.harness.peers.envs import ensure_env; "
        "from qbench.harness.peers.registry import resolve; "
        "ensure_env(resolve(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(folder / "driver.toml")], cwd=Path(__file__).resolve().parents[1]
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert (folder / "installs.log").read_text() == "start\n"


def test_the_import_root_goes_when_the_process_that_made_it_exits() -> None:
    """Each run's folder of links was left in /tmp for good."""
    code = "from qbench.harness.peers.envs import import_root; print(import_root())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    root = Path(done.stdout.strip())
    assert root.name.startswith("qbench-peers-path-") and not root.exists()
