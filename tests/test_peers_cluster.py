"""`qbench peers --cluster`: each driver tried once on a Redis Cluster, one outcome each."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from qbench.driver import cluster_node_url, driver_problems
from qbench.external import ExternalDriverError, load_spec
from qbench.harness.cli import main
from qbench.harness.peers.cluster import (
    EXPERIMENT,
    FAILS,
    NODE_HOW,
    NOT_ATTEMPTED,
    PHASES,
    WORKS,
    Attempt,
    Given,
    Outcome,
    copy_log,
    first_error,
    given_for,
)
from qbench.harness.peers.cluster_report import REPORT_FILE, render_cluster_report
from qbench.harness.peers.envs import PeerEnvError, ensure_env
from qbench.harness.peers.registry import discover
from qbench.harness.results.rows import Row, parse_params, read_metrics

TRACEBACK = """\
Unhandled error during execution of task f8abdff8.
Traceback (most recent call last):
  File "/venv/huey/consumer.py", line 132, in loop
    raise MovedError(response)
redis.exceptions.MovedError: 14153 127.0.0.1:51509
Error reading schedule.
redis.exceptions.ResponseError: CROSSSLOT Keys in request don't hash to the same slot
"""


@pytest.fixture(autouse=True)
def _no_redis_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # --cluster reads REDIS_URL as a node of the user's cluster: these tests name their own.
    monkeypatch.delenv("REDIS_URL", raising=False)


# -- pure parts ---------------------------------------------------------------------------------
def test_the_first_line_of_the_library_error_is_found_in_a_log() -> None:
    assert first_error(TRACEBACK) == "MovedError: 14153 127.0.0.1:51509"  # not the `raise` line
    node = (
        "[ioredis] Unhandled error event: ReplyError: CROSSSLOT Keys in request don't hash to the same slot"
    )
    assert first_error(node) == "ReplyError: CROSSSLOT Keys in request don't hash to the same slot"
    agent = "qbench agent: driver rq: worker failed: ResponseError: MOVED 866 127.0.0.1:7001"
    assert first_error(agent) == "ResponseError: MOVED 866 127.0.0.1:7001"
    assert first_error("worker started\nError 111 connecting to localhost") is None
    assert len(first_error("ValueError: " + "x" * 500) or "") == 200


def test_a_cluster_url_names_the_node_a_driver_starts_from() -> None:
    assert cluster_node_url("redis+cluster://127.0.0.1:7000") == "redis://127.0.0.1:7000"
    assert cluster_node_url("rediss+cluster://u:p@h:7000/0") == "rediss://u:p@h:7000/0"
    assert cluster_node_url("redis://127.0.0.1:7000") is None
    assert cluster_node_url("unix:///tmp/redis.sock") is None


def test_drivers_get_their_documented_cluster_option_or_one_node() -> None:
    specs = discover().specs
    url = "redis+cluster://127.0.0.1:7000"
    cluster_drivers = [
        "baseline",
        "optimized",
        "scripted",
        "scripted+retention=delete",
        "taskiq",
        "taskiq+result_ex_time=3600",
        "bullmq",
    ]
    for name, spec in specs.items():
        given = given_for(spec, url)
        if name in cluster_drivers:
            assert (given.kind, given.url) == ("cluster", url), name
            assert given.how == spec.cls.cluster_setup and given.how
        else:  # RQ, arq, SAQ, Dramatiq, Huey, Celery, Bee-Queue document no cluster option
            assert (given.kind, given.url, given.how) == ("node", "redis://127.0.0.1:7000", NODE_HOW), name


def test_cluster_setup_is_checked_in_classes_and_toml_files(tmp_path: Path) -> None:
    assert "{bull}" in discover().specs["bullmq"].cls.cluster_setup  # from drivers/bullmq/driver.toml
    toml = tmp_path / "driver.toml"
    toml.write_text('name = "x"\nproducer = ["true"]\nworker = ["true"]\ncluster_setup = 1\n')
    with pytest.raises(ExternalDriverError, match="cluster_setup = 1 has the wrong type"):
        load_spec(toml)
    scripted = discover().specs["scripted"].cls
    odd = type("Odd", (scripted,), {"name": "odd", "cluster_setup": True})
    assert driver_problems(odd) == ["cluster_setup must be a str (empty: no cluster option)"]


def test_a_failing_drivers_logs_are_kept_short(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    copy_log(log, tmp_path / "logs" / "kept.log", head=3, tail=2)
    kept = (tmp_path / "logs" / "kept.log").read_text().splitlines()
    assert kept == [
        "line 0",
        "line 1",
        "line 2",
        "[... 995 lines left out by qbench ...]",
        "line 998",
        "line 999",
    ]


def _attempts() -> list[Attempt]:
    cluster = Given("cluster", "redis+cluster://127.0.0.1:7000", "RedisCluster client")
    node = Given("node", "redis://127.0.0.1:7000", NODE_HOW)
    works = Attempt(
        "scripted", 200, Outcome(WORKS), cluster, 200, 200, {"127.0.0.1:7000": 1, "127.0.0.1:7001": 0}
    )
    fails = Attempt(
        "huey",
        200,
        Outcome(FAILS, "process", "MovedError: 14153 127.0.0.1:7001"),
        node,
        200,
        0,
        {"127.0.0.1:7000": 0, "127.0.0.1:7001": 0},
    )
    skipped = Attempt("rq", 200, Outcome(NOT_ATTEMPTED, error="its environment: rq: pip failed"))
    return [works, fails, skipped]


def test_the_report_is_rendered_from_rows_and_run_json_alone(tmp_path: Path) -> None:
    attempts = _attempts()
    rows = [row for a in attempts for row in a.rows()]
    assert {r.experiment for r in rows} == {EXPERIMENT} and not attempts[2].rows()
    by = {(r.variant, r.metric, parse_params(r.params).get("node")): r for r in rows}
    assert parse_params(by["huey", "jobs_processed", None].params) == {
        "given": "node",
        "jobs": "200",
        "outcome": "fails",
        "phase": "process",
    }
    assert (
        by["scripted", "keys_left", "127.0.0.1:7000"].value == 1
        and by["huey", "jobs_processed", None].unit == "jobs"
    )
    spec = discover().specs["scripted"]
    meta = {
        "experiment": EXPERIMENT,
        "sizes": {"jobs": 200, "concurrency": 10, "stall_s": 20.0},
        "drivers": {a.name: a.meta(spec) for a in attempts},
        "failures": {"rq": "its environment: rq: pip failed"},
    }
    report = render_cluster_report(rows, meta, tmp_path).read_text()
    assert "**Incomplete run**: qbench could not attempt rq" in report
    assert "3 driver(s): 1 work, 1 fail, 1 not attempted." in report
    assert (
        "| scripted | 0.1.0 | `redis+cluster://` URL: RedisCluster client | works | 200/200 | 200 | 1 / 0 |"
        in report
    )
    assert "| fails at process: MovedError: 14153 127.0.0.1:7001 | 200/200 | 0 | 0* / 0 |" in report
    assert "| rq | 0.1.0 | - | not attempted: its environment: rq: pip failed | - | - | - |" in report
    # From the rows alone (no run.json drivers): the outcome comes from their params.
    bare = render_cluster_report(rows, {"sizes": meta["sizes"]}, tmp_path / "bare").read_text()
    assert "| huey | ? | `redis://` URL of one master* | fails at process | 200/200 | 0 | 0 / 0 |" in bare
    # `qbench peers --render` redoes it from the files.
    (tmp_path / "metrics.csv").write_text(
        "experiment,variant,params,metric,value,unit,repeat\n"
        + "".join(",".join(r.as_csv()) + "\n" for r in rows)
    )
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (tmp_path / REPORT_FILE).unlink()
    assert main(["peers", "--render", str(tmp_path)]) == 0
    assert (tmp_path / REPORT_FILE).read_text() == report
    assert read_metrics(tmp_path / "metrics.csv") == rows


def test_bad_cluster_input_exits_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peers", "--cluster", "--repeats", "2"]) == 2
    assert main(["peers", "--cluster", "--jobs", "0"]) == 2
    assert main(["peers", "--cluster", "--stall-timeout", "0"]) == 2
    # A cluster qbench did not start: one driver per run (nothing is deleted between drivers).
    assert main(["peers", "--redis-url", "redis+cluster://127.0.0.1:1", "--only", "scripted,huey"]) == 2
    assert main(["peers", "--cluster", "--redis-url", "unix:///tmp/x.sock", "--only", "scripted"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("qbench: error:") for line in err), err
    assert "one driver per run" in err[3] and "redis:// or rediss://" in err[4]


def test_an_unreachable_cluster_exits_1_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peers", "--cluster", "--redis-url", "redis://127.0.0.1:1", "--only", "scripted"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach Redis" in err[0]


def test_a_cluster_qbench_did_not_start_must_be_empty_and_is_never_flushed(
    cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = RedisCluster.from_url(cluster_url.replace("+cluster", ""))
    try:
        client.set("someone-elses-key", b"1")
        assert main(["peers", "--redis-url", cluster_url, "--only", "scripted"]) == 2
        assert "needs an empty cluster" in capsys.readouterr().err
        assert client.get("someone-elses-key") == b"1"
    finally:
        client.delete("someone-elses-key")
        client.close()


def test_a_driver_qbench_cannot_attempt_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "broken_env.py"
    source.write_text(
        textwrap.dedent(
            """
            from qbench.driver import Driver

            class BrokenEnvDriver(Driver):
                name = "brokenenv"
                distribution = "brokenenv"
                requirements = "no-such-requirements.txt"

                def enqueue(self, sent_at: float) -> None:
                    pass

                def run_worker(self, *, index: int) -> None:
                    pass
            """
        )
    )
    out = tmp_path / "out"
    assert main(["peers", "--cluster", "--driver", f"{source}:BrokenEnvDriver", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "driver brokenenv was not attempted: its environment" in err[0]
    meta = json.loads((out / "run.json").read_text())
    assert meta["drivers"]["brokenenv"]["outcome"]["status"] == NOT_ATTEMPTED
    assert "Incomplete run" in (out / REPORT_FILE).read_text()


# -- on real clusters ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_presets_work_on_a_cluster_and_a_peer_gets_an_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each driver on a fresh 3-master cluster: the presets (a RedisCluster client) work;
    Huey (one node's URL: it has no cluster option) gets an outcome, whatever it is."""
    try:
        ensure_env(discover().specs["huey"], log=tmp_path / "pip.log")
        names = "baseline,optimized,scripted,huey"
    except PeerEnvError:  # no package index here: the presets still run
        names = "baseline,optimized,scripted"
    jobs = 30
    argv = ["peers", "--cluster", "--only", names, "--jobs", str(jobs), "--stall-timeout", "10"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0  # a library that fails is an outcome
    capsys.readouterr()
    rows = read_metrics(tmp_path / "out" / "metrics.csv")
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["experiment"] == EXPERIMENT and meta["failures"] == {}

    def values(driver: str, metric: str) -> dict[str, float]:
        return {
            parse_params(r.params).get("node", ""): r.value
            for r in rows
            if r.variant == driver and r.metric == metric
        }

    for preset in ("baseline", "optimized", "scripted"):
        outcome = meta["drivers"][preset]["outcome"]
        assert outcome["status"] == WORKS, outcome
        assert meta["drivers"][preset]["given"]["kind"] == "cluster"
        assert values(preset, "jobs_enqueued") == {"": jobs}
        assert values(preset, "jobs_processed") == {"": jobs}
        keys = values(preset, "keys_left")
        assert len(keys) == 3  # one count per master
        assert sum(1 for n in keys.values() if n) == 1  # the hash tag: one master holds the queue
    assert sum(values("baseline", "keys_left").values()) == jobs  # a record per job, no TTL
    assert sum(values("scripted", "keys_left").values()) == 1  # records are fields of one hash
    if "huey" in names:
        huey = meta["drivers"]["huey"]
        assert huey["given"]["kind"] == "node" and huey["given"]["url"].startswith("redis://127.0.0.1:")
        assert huey["outcome"]["status"] in (WORKS, FAILS)
        if huey["outcome"]["status"] == FAILS:
            assert huey["outcome"]["phase"] in PHASES and huey["outcome"]["error"]
        assert "jobs_enqueued" in {r.metric for r in rows if r.variant == "huey"}
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    how = discover().specs["scripted"].cls.cluster_setup
    assert f"| scripted | 0.1.0 | `redis+cluster://` URL: {how} | works |" in report


@pytest.mark.slow
def test_a_driver_that_cannot_start_on_a_cluster_fails_at_start(tmp_path: Path) -> None:
    source = tmp_path / "refusing.py"
    source.write_text(
        textwrap.dedent(
            """
            from qbench.driver import Driver

            class RefusingDriver(Driver):
                name = "refusing"
                distribution = "refusing"

                def connect(self) -> None:
                    raise RuntimeError(f"no cluster for me at {self.url}\\nsecond line")

                def enqueue(self, sent_at: float) -> None:
                    pass

                def run_worker(self, *, index: int) -> None:
                    pass
            """
        )
    )
    out = tmp_path / "out"
    assert main(["peers", "--cluster", "--driver", f"{source}:RefusingDriver", "--out", str(out)]) == 0
    outcome = json.loads((out / "run.json").read_text())["drivers"]["refusing"]["outcome"]
    assert outcome["status"] == FAILS and outcome["phase"] == "start"
    assert outcome["error"].startswith("RuntimeError: no cluster for me at redis://127.0.0.1:")
    assert not any(r.metric == "jobs_processed" for r in read_metrics(out / "metrics.csv"))
    assert (out / "logs" / "refusing-producer.log").is_file()


def test_rows_of_other_experiments_are_left_out_of_the_table(tmp_path: Path) -> None:
    other = Row("peers", "scripted", "calls=serial;jobs=10", "enqueue_jobs_per_s", 1.0, "jobs/s")
    report = render_cluster_report([other], {}, tmp_path).read_text()
    assert "0 driver(s)" in report and "| scripted |" not in report
