"""The public driver interface: loading drivers every way, `qbench drivers`, bad drivers
(one line, exit 2 or 1, never a hang), the external-process contract, the example
third-party driver (by module:Class and by entry point in a throwaway venv), and BullMQ."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from qbench.driver import Driver, Op, driver_problems
from qbench.external import ExternalDriver, load_spec
from qbench.harness.cli import main
from qbench.harness.infra.counting import stats_delta
from qbench.harness.infra.redis_server import provision
from qbench.harness.infra.telemetry import Telemetry, read_telemetry
from qbench.harness.load.runner import (
    RESULTS_FILE,
    LoadPlan,
    LoadRun,
    rows_of,
    sample_rows,
    throughput_series,
)
from qbench.harness.load.targets import Accounting, pickup_samples, shape_for_driver
from qbench.harness.peers.registry import discover, resolve
from qbench.harness.peers.runner import ServerProbe, Sink, Sizes, round_trips
from qbench.harness.peers.suite import run_suite
from qbench.harness.results.rows import Row, parse_params, read_metrics
from qbench.loader import DriverLoadError, load_driver
from qbench.scenarios.recorder import Collector, Recorder, merge_ops, read_results_file
from qbench.scenarios.settings import (
    ENV_DRIVER,
    ENV_DRIVER_PYTHON,
    ENV_DRIVER_PYTHONPATH,
    ENV_MASTER_HOST,
    ENV_REDIS_URL,
    ENV_RUN,
    ENV_VARIANT,
    ENV_WORKLOAD,
    DriverRun,
    RunSettingsError,
    RunSpec,
)
from qbench.scenarios.settings import resolve as resolve_settings
from qbench.scenarios.workload import load_workload

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "drivers"
BAD = FIXTURES / "bad_drivers.py"
EXAMPLE = REPO / "examples" / "qbench-example-driver"
JOBS = 60
SMALL = Sizes(jobs=JOBS, repeats=1, idle_s=0.3, pickup_samples=4, settle_s=0.1, pickup_gap_s=0.2, stall_s=20)
"""Every phase runs; counts are exact, timings mean nothing here."""


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


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("qbench: error:"), err
    return err[0]


# -- loading ---------------------------------------------------------------------------------------------
def test_a_driver_loads_by_module_file_and_toml(tmp_path: Path) -> None:
    assert load_driver("qbench.drivers.huey_driver:HueyDriver").name == "huey"
    assert load_driver(f"{BAD}:SilentWorker").name == "silent-worker"
    bullmq = load_driver(str(REPO / "qbench" / "drivers" / "bullmq" / "driver.toml"))
    assert issubclass(bullmq, ExternalDriver) and bullmq.name == "bullmq"
    assert bullmq.operations == {Op.ENQUEUE, Op.ENQUEUE_MANY, Op.PRIORITIES}
    assert resolve("scripted").origin == "built-in"
    assert resolve(f"{BAD}:SilentWorker").origin == "--driver"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuchmodule_qbench:Driver", "cannot import nosuchmodule_qbench"),
        (
            f"{FIXTURES / 'import_error_driver.py'}:Anything",
            "ImportError: this driver's library is not installed",
        ),
        (f"{BAD}:NoSuchClass", "has no attribute 'NoSuchClass'"),
        (f"{BAD}:NotADriver", "not a subclass of qbench.driver.Driver"),
        (f"{BAD}:MissingMethod", "driver missing-method .*lacks method\\(s\\) run_worker"),
        (f"{BAD}:BulkWithoutMethod", "declares enqueue_many but lacks method enqueue_many"),
        ("no-colon-here.txt", "expected a driver name, module:Class"),
        ("/nonexistent/driver.toml", "no such file"),
    ],
)
def test_a_driver_that_cannot_load_is_one_line_naming_it(ref: str, message: str) -> None:
    with pytest.raises(DriverLoadError, match=message) as caught:
        load_driver(ref)
    assert "\n" not in str(caught.value) and ref.split(":")[0].rsplit("/", 1)[-1] in str(caught.value)


def test_driver_problems_checks_names_and_operations() -> None:
    class Bad(Driver):
        name = "Has Spaces"
        distribution = "x"
        operations = frozenset({Op.PRIORITIES})

        def enqueue(self, sent_at: float) -> None:
            pass

        def run_worker(self, *, index: int) -> None:
            pass

    problems = driver_problems(Bad)
    assert any("must be lower case" in p for p in problems)
    assert "declares priorities but lacks method enqueue_priority" in problems
    assert "operations must include enqueue" in problems


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('name = "x"\nproducer = ["a"]\n', "missing key 'worker'"),
        ('name = "x"\nproducer = "a b"\nworker = ["w"]\n', "producer = 'a b' has the wrong type"),
        ('name = "x"\nproducer = ["a"]\nworker = ["w"]\nsink = "kafka"\n', "sink = 'kafka'"),
        ('name = "x"\nproducer = ["a"]\nworker = ["w"]\noperations = ["dequeue"]\n', "unknown operation"),
        ('name = "x"\nproducer = ["a"]\nworker = ["w"]\ncolour = 1\n', "unknown key\\(s\\) colour"),
        ("name = ", "not a readable TOML file"),
    ],
)
def test_a_bad_external_toml_is_one_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "driver.toml"
    path.write_text(toml)
    with pytest.raises(DriverLoadError, match=message) as caught:
        load_driver(str(path))
    assert "\n" not in str(caught.value)


# -- qbench drivers ------------------------------------------------------------------------------------------
def test_qbench_drivers_lists_every_driver_with_version_and_operations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["drivers", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert list(listed) == list(discover().specs)
    assert listed["huey"]["version"] == "3.5.4" and listed["huey"]["operations"] == ["enqueue"]
    assert listed["rq"]["operations"] == ["enqueue", "enqueue_many"]
    assert listed["scripted"]["operations"] == ["enqueue", "enqueue_many", "priorities"]
    assert listed["bullmq"]["operations"] == ["enqueue", "enqueue_many", "priorities"]
    assert listed["taskiq+result_ex_time=3600"]["environment"].endswith("requirements/taskiq.txt")
    assert main(["drivers"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["driver", "version", "operations"]
    assert any(line.split()[:2] == ["huey", "3.5.4"] for line in table)


def test_qbench_drivers_names_a_bad_driver_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers", "--driver", "sidekiq"]) == 2
    assert "unknown driver 'sidekiq'" in one_error_line(capsys)
    assert main(["drivers", "--driver", f"{BAD}:MissingMethod"]) == 2
    assert "lacks method(s) run_worker" in one_error_line(capsys)


# -- bad drivers through `qbench peers` ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (f"{FIXTURES / 'import_error_driver.py'}:Anything", "ImportError"),
        (f"{BAD}:MissingMethod", "lacks method(s) run_worker"),
        ("sidekiq", "unknown driver 'sidekiq'"),
    ],
)
def test_peers_refuses_a_bad_driver_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str, message: str
) -> None:
    assert main(["peers", "--quick", "--driver", ref, "--out", str(tmp_path)]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            "CrashingWorker",
            "a worker exited at 0/20 jobs (qbench agent: driver crashing-worker: worker failed: "
            "RuntimeError: the worker fell over)",
        ),
        (
            "SilentWorker",
            "no pickup reported in 3s: its handlers never reported `sent_us started_us` to $QBENCH_SINK",
        ),
        ("FailingEnqueue", "enqueue: ValueError: the queue refused the job"),
    ],
)
def test_a_driver_that_fails_while_running_is_one_line_exit_1_and_an_incomplete_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cls: str, message: str
) -> None:
    started = time.monotonic()
    argv = ["peers", "--quick", "--jobs", "20", "--stall-timeout", "3", "--driver", f"{BAD}:{cls}"]
    assert main([*argv, "--out", str(tmp_path)]) == 1
    line = one_error_line(capsys)
    assert message in line, line
    assert time.monotonic() - started < 60  # a hang guard: the stall timeout is 3 s
    report = (tmp_path / "PEERS.md").read_text()
    assert "**Incomplete run: 1 driver(s) failed" in report and "FAILED" in report
    assert "This run: `qbench peers --quick --driver " in report  # the command, in run.json too
    assert read_metrics(tmp_path / "metrics.csv") == []  # no partial rows passed off as results


# -- the external-process contract, with a Python stand-in for another language ----------------------
def external_toml(tmp_path: Path, *, sink: str) -> Path:
    folder = tmp_path / "ext"
    shutil.copytree(FIXTURES / "external_py", folder)
    python = json.dumps(sys.executable)
    (folder / "driver.toml").write_text(
        textwrap.dedent(
            f"""\
            name = "pyext-{sink}"
            distribution = "pyext"
            version = "1.2.3"
            producer = [{python}, "producer.py"]
            worker = [{python}, "worker.py"]
            operations = ["enqueue", "enqueue_many", "priorities"]
            sink = "{sink}"
            """
        )
    )
    return folder / "driver.toml"


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["file", "redis"])
def test_an_external_driver_runs_the_whole_battery(tmp_path: Path, sink: str) -> None:
    spec = resolve(str(external_toml(tmp_path, sink=sink)))
    result = run_suite([spec], SMALL, progress=lambda _line: None, logs_dir=tmp_path / "logs")
    assert result.failures == {}
    name, rows = spec.name, result.rows
    assert result.drivers[name]["version"] == "1.2.3" and result.drivers[name]["sink"] == sink
    assert value(rows, name, "jobs_handled") == JOBS
    # One LPUSH per job, counted at Redis: nothing else of the protocol reaches it.
    assert value(rows, name, "commands_per_job", phase="enqueue", command="lpush") == 1.0
    # The bulk call: one LPUSH for the whole batch (all JOBS fit in one batch of 100).
    assert value(rows, name, "commands_per_job", phase="enqueue_many100", command="lpush") == 1 / JOBS
    # Round trips as Redis counts them (its read events): one per job, one per bulk call (the
    # producer connected before the phase started).
    assert value(rows, name, "round_trips_per_job", phase="enqueue") == 1.0
    assert value(rows, name, "round_trips_per_job", phase="enqueue_many100") == 1 / JOBS
    assert value(rows, name, "protocol_round_trip_us") > 0
    assert value(rows, name, "pickup_ms_p99", arrivals="random", gap_max_s="0.2", samples="4") > 0
    assert value(rows, name, "keys_left") == 0  # the side Redis holds the sink, not the measured one


# -- the example third-party driver ---------------------------------------------------------------
@pytest.mark.slow
def test_the_example_driver_runs_by_module_and_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLE)  # found in the current folder, as `python -m` would
    spec = resolve("qbench_example.driver:ListQueueDriver")
    assert spec.name == "listqueue" and spec.operations == ["enqueue", "enqueue_many"]
    result = run_suite([spec], SMALL, progress=lambda _line: None, logs_dir=tmp_path / "logs")
    assert result.failures == {}
    rows = result.rows
    assert value(rows, "listqueue", "jobs_handled") == JOBS
    assert value(rows, "listqueue", "commands_per_job", phase="enqueue", command="lpush") == 1.0
    # enqueue_many: one LPUSH for the whole batch (all JOBS fit in one batch of 100).
    assert value(rows, "listqueue", "commands_per_job", phase="enqueue_many100", command="lpush") == 1 / JOBS
    assert value(rows, "listqueue", "keys_left") == 0


@pytest.mark.slow
def test_the_example_driver_installs_as_a_distribution_with_an_entry_point(tmp_path: Path) -> None:
    """A throwaway venv that sees qbench's environment, with the example pip-installed into it."""
    venv = tmp_path / "venv"
    # Without pip of its own: qbench's pip and setuptools (through the .pth below) install into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    qbench_site = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "qbench-parent.pth").write_text(f"import site; site.addsitedir({qbench_site!r})\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    listed = subprocess.run(
        [python, "-m", "qbench.harness.cli", "drivers", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    drivers = {d["name"]: d for d in json.loads(listed.stdout)}
    assert drivers["listqueue"]["origin"] == "entry point of qbench-example-listqueue 0.1.0"
    assert drivers["listqueue"]["version"] == "0.1.0"
    assert "huey" in drivers  # qbench's own drivers are still there
    out = tmp_path / "out"
    run = subprocess.run(
        [
            python,
            "-m",
            "qbench.harness.cli",
            "peers",
            "--quick",
            "--jobs",
            "100",
            "--driver",
            "listqueue",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    rows = read_metrics(out / "metrics.csv")
    assert value(rows, "listqueue", "jobs_handled") == 100
    assert json.loads((out / "run.json").read_text())["drivers"]["listqueue"]["version"] == "0.1.0"


# -- BullMQ, a real Node.js queue ------------------------------------------------------------------
@pytest.mark.slow
def test_bullmq_runs_the_quick_battery_through_the_external_driver(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed: the Node.js drivers cannot run here")
    folder = tmp_path / "bullmq"
    shutil.copytree(
        REPO / "qbench" / "drivers" / "bullmq", folder, ignore=shutil.ignore_patterns("node_modules")
    )
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    if installed.returncode != 0:
        pytest.skip(f"npm ci failed (no registry?): {installed.stderr.strip().splitlines()[-1:]}")
    spec = load_spec(folder / "driver.toml")
    assert not spec.needs_install()
    result = run_suite([resolve(str(folder / "driver.toml"))], SMALL, progress=lambda _l: None)
    assert result.failures == {}
    rows = result.rows
    assert result.drivers["bullmq"]["version"] == "6.7.0"
    assert value(rows, "bullmq", "jobs_handled") == JOBS
    # BullMQ's add() is one script call per job, counted at Redis: EVALSHA, except the very
    # first, which a fresh server answers NOSCRIPT and ioredis then sends as EVAL.
    scripts = {
        parse_params(r.params)["command"]: round(r.value * JOBS)
        for r in rows
        if r.variant == "bullmq" and r.metric == "commands_per_job" and "phase=enqueue;" in r.params + ";"
    }
    assert scripts["evalsha"] + scripts.get("eval", 0) == JOBS, scripts
    # Its default keeps every completed job: one hash per job, no TTL.
    assert value(rows, "bullmq", "keys_left_no_ttl") >= JOBS


# -- qbench load --driver ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "driver", "message"),
    [
        ("consumer", "huey", "scenario consumer needs Locust users that dequeue"),
        ("burst", "huey", "scenario burst sends bursts with a bulk enqueue; driver huey has no enqueue_many"),
        ("mixed", "huey", "scenario mixed mixes priorities (high, low); driver huey has no priorities"),
        ("http", "scripted", "scenario http submits through the reference queue's HTTP API"),
        ("producer", "sidekiq", "unknown driver 'sidekiq'"),
    ],
)
def test_load_refuses_a_scenario_the_driver_cannot_play(
    capsys: pytest.CaptureFixture[str], scenario: str, driver: str, message: str
) -> None:
    assert main(["load", scenario, "--driver", driver]) == 2
    assert message in one_error_line(capsys)


def test_load_takes_one_of_variant_and_driver(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "producer", "--variant", "scripted", "--driver", "scripted"]) == 2
    assert "give one" in one_error_line(capsys)
    assert main(["load", "producer"]) == 2
    assert "one of --variant or --driver is required" in one_error_line(capsys)


@pytest.mark.slow
def test_load_through_a_driver_accounts_for_every_job_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mixed"
    argv = ["load", "mixed", "--driver", "scripted", "--users", "5", "--duration", "2", "--no-charts"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    rows = read_metrics(out / "metrics.csv")

    def metric(op: str, name: str) -> float:
        return value(rows, "scripted", name, op=op)

    # mixed: 4 of 10 users send at a fixed rate, 6 consume; of 5 users, 2 send and the
    # driver's workers run 3 jobs at once.
    meta = json.loads((out / "run.json").read_text())
    assert (meta["users"], meta["consumers"]) == (2, 3) and meta["driver"]["name"] == "scripted"
    expected = metric("all", "jobs_expected")
    assert expected > 0 and metric("enqueue", "requests") == expected
    assert metric("all", "jobs_picked_up") == expected and metric("all", "jobs_not_picked_up") == 0
    # Every pickup reported once, each with the priority it was sent with.
    assert metric("pickup", "requests") == expected
    by_priority = [metric(f"pickup_{p}", "requests") for p in ("high", "normal", "low")]
    assert sum(by_priority) == expected
    assert metric("all", "commands_per_job") > 0
    assert main(["gate", "--baseline", str(out), "--candidate", str(out)]) == 0


@pytest.mark.slow
def test_load_with_a_crashing_driver_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["load", "arrival", "--driver", f"{BAD}:CrashingWorker", "--users", "2", "--duration", "1"]
    assert main([*argv, "--no-charts", "--out", str(tmp_path)]) == 1
    line = one_error_line(capsys)
    assert "driver crashing-worker: a worker exited" in line and "the worker fell over" in line


# -- qbench load --driver on Locust's messages: the spec, the pickups, the counts -----------------
def driver_spec(**overrides: object) -> RunSpec:
    fields: dict[str, Any] = {
        "workload": load_workload("producer"),
        "driver": DriverRun(
            name="scripted",
            ref="qbench.drivers.reference_driver:ScriptedDriver",
            python=sys.executable,
            pythonpath="/tmp/links",
            log="/tmp/producers.log",
            priorities=True,
        ),
        "redis_url": "redis://127.0.0.1:6379/0",
        "namespace": "",
        "started_at": 1.0,
        "duration_s": 5.0,
        **overrides,
    }
    return RunSpec(**fields)


def test_a_driver_run_travels_in_the_run_spec_and_only_local_workers_take_it() -> None:
    spec = driver_spec()
    assert RunSpec.from_json(spec.to_json()) == spec
    # One settings module for both: the local processes take the driver from the spec; a
    # worker started by hand must say it runs that driver, with its host's own environment.
    local = resolve_settings(spec, {ENV_RUN: spec.to_json(), ENV_REDIS_URL: "redis://:pw@127.0.0.1:1/0"})
    assert local.redis_url == "redis://:pw@127.0.0.1:1/0" and local.driver == spec.driver
    assert local.workload == spec.workload and local.started_at == 1.0 and local.variant is None
    with pytest.raises(RunSettingsError, match="started for variant scripted, the master runs driver"):
        resolve_settings(spec, {ENV_WORKLOAD: "producer", ENV_VARIANT: "scripted"})
    with pytest.raises(RunSettingsError, match="start this worker with --driver"):
        resolve_settings(spec, {ENV_WORKLOAD: "producer"})
    remote = {
        ENV_WORKLOAD: "producer",
        ENV_DRIVER: "scripted",
        ENV_DRIVER_PYTHON: "/there/python",
        ENV_DRIVER_PYTHONPATH: "/there/links",
        ENV_MASTER_HOST: "127.0.0.1",
    }
    own = resolve_settings(spec, remote)
    assert own.driver is not None and (own.driver.python, own.driver.pythonpath) == (
        "/there/python",
        "/there/links",
    )
    with pytest.raises(RunSettingsError, match="started for driver huey, the master runs driver scripted"):
        resolve_settings(spec, {**remote, ENV_DRIVER: "huey"})
    with pytest.raises(RunSettingsError, match="started for driver scripted, the master runs variant"):
        resolve_settings(driver_spec(driver=None, variant="scripted"), remote)
    with pytest.raises(ValueError, match="exactly one of a variant and a driver"):
        driver_spec(variant="scripted")
    doc = json.loads(spec.to_json())
    doc["driver"] = None
    with pytest.raises(RunSettingsError, match="unreadable run spec"):
        RunSpec.from_json(json.dumps(doc))


def test_the_workers_pickups_become_histograms_merged_with_the_users_into_one_set_of_rows(
    tmp_path: Path,
) -> None:
    """Pickups read from the sink are recorded like the users' operations (HDR histograms,
    per-second counts on the run's origin) and merged with the results file's ops; the
    rows come from `sample_rows`, the reference queue's own row code."""
    started = 1000.0
    users = Recorder(started_at=started)
    users.record("enqueue", 1.5, done_at=1000.2)
    users.record("enqueue", 2.5, done_at=1001.4)
    users.record("enqueue", 0.5, done_at=1001.6)
    collector = Collector()
    collector.receive("worker-1", users.report())
    sink_file = tmp_path / "load.sink"
    sink_file.write_text(
        "1000200000 1000203000 high\n1001400000 1001401000 low\n1001600000 1001610000 high\n"
    )
    sink = Sink(sink_file)
    assert sink.count() == 3
    pickups = pickup_samples(sink, started)
    assert pickups["pickup"].count == 3 and pickups["pickup"].per_second == {0: 1, 1: 2}
    assert pickups["pickup_high"].count == 2 and pickups["pickup_low"].count == 1
    alone = Recorder(started_at=0.0)
    for latency_ms in (3.0, 1.0, 10.0):
        alone.record("pickup", latency_ms, done_at=0.0)
    assert pickups["pickup"].percentiles_ms([50.0, 99.0]) == alone.ops["pickup"].percentiles_ms([50.0, 99.0])

    workload, driver = shape_for_driver(load_workload("mixed"), resolve("scripted"), 5)
    plan = LoadPlan(
        workload=workload, driver=driver, label="scripted", users=workload.users, spawn_rate=5, duration_s=2
    )
    samples = merge_ops([collector.merged(), pickups])
    run = LoadRun(
        plan=plan,
        out_dir=tmp_path,
        locust_stats=[],
        samples=samples,
        jobs=Accounting(jobs_expected=3, jobs_picked_up=3, commands=30, round_trips=12),
        locust_returncode=0,
    )
    rows = rows_of(run)  # one run type, one row code, whatever the target
    table = {(parse_params(r.params)["op"], r.metric): r.value for r in rows if r.metric != "ops_per_s"}
    assert table[("enqueue", "requests")] == table[("pickup", "requests")] == 3
    assert table[("pickup_high", "requests")] == 2 and table[("pickup_low", "requests")] == 1
    assert table[("pickup", "latency_ms_max")] == alone.ops["pickup"].max_ms()
    assert table[("all", "jobs_not_picked_up")] == 0 and table[("all", "commands_per_job")] == 10
    assert table[("all", "round_trips_per_job")] == 4
    # One throughput series per operation, users' and workers' alike, on one time axis.
    series = throughput_series(rows)
    assert series["enqueue"] == [(0, 1.0), (1, 2.0)] and series["pickup"] == [(0, 1.0), (1, 2.0)]
    # The same row code as the reference queue's: every row of sample_rows, then the accounting.
    assert rows[: len(sample_rows(plan, samples))] == sample_rows(plan, samples)


def test_the_server_count_leaves_out_the_probe_and_the_telemetry_sampler(tmp_path: Path) -> None:
    """Commands and round trips as Redis counts them between two probe snapshots, with a
    sampler reading INFO every 50 ms in between (as `qbench peers` and `qbench load
    --driver` run one): exactly what the client sent."""
    with (
        provision(None, use_docker=False) as server,
        Telemetry(server.url, tmp_path, interval_s=0.05) as telemetry,
        contextlib.closing(ServerProbe(server.url, sampler=telemetry)) as probe,
        contextlib.closing(redis.Redis.from_url(server.url)) as client,
    ):
        client.ping()  # connected (handshake done) before the first snapshot
        before = probe.snapshot()
        for i in range(20):
            client.set("qbench-test-key", i)
            time.sleep(0.01)
        after = probe.snapshot()
    assert after.sampler - before.sampler >= 2  # it did sample in between
    assert stats_delta(before.commands, after.commands) == {"set": 20}
    assert round_trips(before, after) == 20


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bind", "127.0.0.1"], "--bind needs --master"),
        (["--master-port", "5557"], "--master-port needs --master or --worker"),
        (["--master"], "--master needs --expect-workers N"),
    ],
)
def test_load_through_a_driver_takes_the_distributed_flags_of_a_variant_run(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["load", "producer", "--driver", "scripted", *flags]) == 2
    assert message in one_error_line(capsys)


def qbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # A child process: Locust's gevent patching must never reach the test process.
    return subprocess.run(
        [sys.executable, "-m", "qbench.harness.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_load_through_a_driver_with_local_workers_merges_their_histograms(tmp_path: Path) -> None:
    """Two local Locust workers send their histograms to the master; the master runs the
    clock, prints progress and writes the results file; every job a user enqueued is a
    pickup in the rows; telemetry and REPORT.md as for the reference queue."""
    out = tmp_path / "arrival"
    argv = ["arrival", "--driver", "scripted", "--users", "4", "--workers", "2", "--duration", "3"]
    done = qbench("load", *argv, "--telemetry-interval", "0.5", "--out", str(out))
    assert done.returncode == 0, done.stderr
    # The master's progress line at the end of the run, relayed.
    progress = r"^\[ 3/3 s\]  users \d+  ops/s [\d,-]+  enqueue "
    assert re.search(progress, done.stdout, re.MULTILINE), done.stdout
    results = read_results_file(out / RESULTS_FILE)
    assert results.errors == [] and len(results.workers) == 2
    assert all(w["final"] for w in results.workers.values())
    table = {
        (parse_params(r.params)["op"], r.metric): r.value
        for r in read_metrics(out / "metrics.csv")
        if r.metric != "ops_per_s"
    }
    enqueued = table[("enqueue", "requests")]
    assert enqueued > 0 and enqueued == sum(w["ops"]["enqueue"] for w in results.workers.values())
    assert enqueued == results.ops["enqueue"].count == table[("all", "jobs_expected")]
    assert table[("pickup", "requests")] == table[("all", "jobs_picked_up")] == enqueued
    assert table[("all", "jobs_not_picked_up")] == 0
    locust_stats = json.loads((out / "locust.json").read_text())
    assert {s["name"]: s["num_requests"] for s in locust_stats}["enqueue"] == enqueued
    meta = json.loads((out / "run.json").read_text())
    assert meta["locust_workers"] == 2 and meta["latency_histogram"]["file"] == RESULTS_FILE
    assert meta["telemetry"]["enabled"] is True
    sampled = read_telemetry(out / "telemetry.csv")
    assert any(r.source == "redis" and r.metric.startswith("calls:") and r.value > 0 for r in sampled)
    # qbench, Locust's master and two workers, their agents and the driver's workers.
    assert len({r.node for r in sampled if r.source == "harness" and r.node != "all"}) >= 4
    report = (out / "REPORT.md").read_text()
    assert "driver `scripted`" in report and "not picked up **0**" in report and "## What Redis did" in report
    # No sample files: everything came over Locust's messages and the results file.
    assert not list(out.rglob("samples-*.json")) and not list(out.rglob("raw-*.json"))
    (out / "REPORT.md").unlink()
    assert qbench("report", str(out)).returncode == 0  # from the files alone
    assert (out / "REPORT.md").read_text() == report


@pytest.mark.slow
def test_load_through_a_driver_whose_enqueue_fails_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["load", "producer", "--driver", f"{BAD}:FailingEnqueue", "--users", "1", "--duration", "1"]
    assert main([*argv, "--no-charts", "--telemetry-interval", "0", "--out", str(tmp_path)]) == 1
    line = one_error_line(capsys)
    assert "driver failing-enqueue: " in line and " failed request(s)" in line, line
    assert "Locust exited with 1" in line
    rows = read_metrics(tmp_path / "metrics.csv")
    assert value(rows, "failing-enqueue", "failures", op="enqueue") > 0
    assert value(rows, "failing-enqueue", "requests", op="enqueue") == 0
