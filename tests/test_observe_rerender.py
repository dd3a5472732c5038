"""`qbench report DIR` on an observe folder: OBSERVE.md, charts and observe.json rebuilt from
telemetry.csv and observe.json alone (`qbench.harness.observe.rerender`), measuring nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis

from qbench.harness import cli
from qbench.harness.observe import observe
from qbench.harness.observe.report import OBSERVE_JSON, OBSERVE_MD
from qbench.harness.results.runs import describe

OBSERVED = Path(__file__).resolve().parents[1] / "results" / "observe"


@pytest.mark.parametrize("name", sorted(p.name for p in OBSERVED.iterdir() if p.is_dir()))
def test_committed_observe_runs_rerender_deterministically(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / name
    shutil.copytree(OBSERVED / name, work)
    found = describe(work)
    assert found is not None and found.kind == "observe" and found.status == "ok"
    saved = json.loads((work / OBSERVE_JSON).read_text())
    (work / OBSERVE_MD).write_text("# stale\n")
    shutil.rmtree(work / "charts")
    assert cli.main(["report", str(work)]) == 0
    assert capsys.readouterr().out.strip() == str(work / OBSERVE_MD)
    first = (work / OBSERVE_MD).read_text()
    first_json = (work / OBSERVE_JSON).read_text()
    assert first.startswith(f"# qbench observe: {saved['target']['node']}\n")
    for family in saved["keys"]["families"]:
        assert f"`{family['pattern']}`" in first
    data = json.loads(first_json)
    # What was measured once stays as saved; the charts are drawn again.
    assert data["keys"] == saved["keys"] and data["created_at"] == saved["created_at"]
    assert data["target"] == saved["target"] and data["observer"] == saved["observer"]
    assert data["charts"] and all((work / "charts" / chart).is_file() for chart in data["charts"])
    assert cli.main(["report", str(work)]) == 0
    assert (work / OBSERVE_MD).read_text() == first and (work / OBSERVE_JSON).read_text() == first_json


def test_a_fresh_observe_run_rerenders_to_the_report_it_wrote(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = [f"rerender-test:job:{i}" for i in range(5)]
    try:
        for key in keys[:3]:
            client.set(key, "x")
        for key in keys[3:]:
            client.set(key, "y", ex=600)
        out = tmp_path / "observed"
        observe(redis_url, out, duration_s=2.0, interval_s=1.0, budget_per_s=500.0)
    finally:
        client.delete(*keys)
        client.close()
    written = (out / OBSERVE_MD).read_text()
    assert "`rerender-test:job:*`" in written
    (out / OBSERVE_MD).unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / OBSERVE_MD).read_text() == written


def test_an_observe_folder_without_its_samples_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "observed"
    shutil.copytree(OBSERVED / "dramatiq", work)
    (work / "telemetry.csv").unlink()
    assert cli.main(["report", str(work)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "telemetry.csv" in err[0]
