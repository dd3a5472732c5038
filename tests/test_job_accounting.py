"""Job accounting in the worker experiments: the report says a job was lost whenever one
was, and where it went; the cut probe and the census find stranded jobs on a real Redis."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qbench.harness.experiments import ack_cuts, pool_scaling, throughput
from qbench.harness.experiments.pool_runs import (
    ErrorTally,
    accounting_rows,
    accounting_text,
    stranded_job_ids,
)
from qbench.harness.results.rows import Row, params
from qbench.queue_impl.config import PRESETS
from qbench.queue_impl.job import Job, Priority
from tests.conftest import QueueFactory, fast

RAISE_40 = params(pool="10", pool_mode="raise", workers=40)
RAISE_LABEL = "baseline+pool_mode=raise"


def scaling_rows(*, lost: int, stranded: int | None, abandoned: int = 0) -> list[Row]:
    """A small pool-scaling run: wait-mode cells of every preset and one raise-mode cell
    whose accounting is given (`stranded=None`: a run from before the census existed)."""
    rows: list[Row] = []

    def cell(
        label: str, p: str, rate: float, cell_lost: int, cell_stranded: int | None, gave_up: int
    ) -> None:
        for repeat in range(3):
            rows.append(Row("pool_scaling", label, p, "jobs_per_s", rate + repeat, "jobs/s", repeat))
            rows.append(Row("pool_scaling", label, p, "pool_errors", 0, "errors", repeat))
        found = accounting_rows(
            "pool_scaling",
            label,
            p,
            lost=cell_lost,
            stranded=cell_stranded or 0,
            abandoned=gave_up,
            duplicates=0,
        )
        if cell_stranded is None:
            found = [r for r in found if r.metric not in {"jobs_stranded", "acknowledgements_abandoned"}]
        rows.extend(found)

    for preset in PRESETS:
        label = preset if preset == "baseline" else f"{preset}+pool_size=10"
        for workers in (5, 40):
            cell(label, params(pool="10", pool_mode="wait", workers=workers), 100.0 * workers, 0, 0, 0)
    cell(RAISE_LABEL, RAISE_40, 900.0, lost, stranded, abandoned)
    return rows


def throughput_rows(*, lost: int) -> list[Row]:
    rows: list[Row] = []
    for preset in PRESETS:
        for repeat in range(3):
            rows += [
                Row("throughput", preset, throughput.SINGLE, "submissions_per_s", 2000, "ops/s", repeat),
                Row("throughput", preset, throughput.SINGLE, "enqueue_ms_p99", 1.0, "ms", repeat),
                Row("throughput", preset, throughput.BATCHED, "submissions_per_s", 9000, "jobs/s", repeat),
                Row("throughput", preset, throughput.PROCESSING, "jobs_per_s", 600, "jobs/s", repeat),
                Row("throughput", preset, throughput.PROCESSING, "dequeue_ms_p99", 3.0, "ms", repeat),
                Row("throughput", preset, throughput.PROCESSING, "complete_ms_p99", 3.0, "ms", repeat),
            ]
        rows += accounting_rows(
            "throughput",
            preset,
            throughput.PROCESSING,
            lost=lost if preset == "baseline" else 0,
            stranded=lost if preset == "baseline" else 0,
            abandoned=lost if preset == "baseline" else 0,
            duplicates=1 if preset == "scripted" else 0,
        )
    return rows


# -- the renderers follow the numbers ------------------------------------------------------
def test_pool_scaling_says_every_job_is_accounted_for_only_when_none_was_lost(tmp_path: Path) -> None:
    text = pool_scaling.render(scaling_rows(lost=0, stranded=0), tmp_path).markdown
    assert "Every job is accounted for: 0 lost, 0 started twice." in text
    assert "Not every job" not in text


def test_pool_scaling_reports_a_lost_job_and_where_it_went(tmp_path: Path) -> None:
    text = pool_scaling.render(scaling_rows(lost=2, stranded=2, abandoned=5), tmp_path).markdown
    assert "accounted for: " not in text.replace("Not every job is accounted for: 2 lost", "")
    assert "**Not every job is accounted for: 2 lost** (0 started twice), in 1 of 7 run(s)." in text
    line = next(ln for ln in text.splitlines() if ln.startswith(f"- `{RAISE_LABEL}`"))
    assert "(pool=10, pool_mode=raise, workers=40): 2 lost; 2 stranded" in line
    assert "abandoned 5 acknowledgement(s)" in line


def test_pool_scaling_says_when_a_run_did_not_record_where_a_job_went(tmp_path: Path) -> None:
    """The committed reference run has `jobs_lost` 1 and no census rows."""
    text = pool_scaling.render(scaling_rows(lost=1, stranded=None), tmp_path).markdown
    assert "**Not every job is accounted for: 1 lost**" in text
    assert "1 lost; where it went was not recorded in this run" in text
    assert "Every job is accounted for" not in text


@pytest.mark.parametrize("lost", [0, 3])
def test_throughput_accounting_follows_the_numbers(tmp_path: Path, lost: int) -> None:
    text = throughput.render(throughput_rows(lost=lost), tmp_path).markdown
    if lost:
        assert "Every job is accounted for" not in text
        assert "**Not every job is accounted for: 3 lost** (1 started twice), in 1 of 3 run(s)." in text
        assert "- `baseline` (handler=noop, workers=20): 3 lost; 3 stranded" in text
    else:
        assert "Every job is accounted for: 0 lost, 1 started twice." in text
        assert "Not every job" not in text


def test_accounting_text_without_accounting_rows_claims_nothing() -> None:
    rows = [Row("throughput", "baseline", "", "jobs_per_s", 1.0, "jobs/s", 0)]
    assert accounting_text(rows) == "Job accounting: not recorded in these rows."


def test_error_tally_counts_abandoned_acknowledgements() -> None:
    tally = ErrorTally()
    logger = logging.getLogger("test_job_accounting.tally")
    logger.addHandler(tally)
    try:
        logger.warning("acknowledge: Redis error (%s); retrying in %.2fs", "Too many connections", 0.05)
        logger.warning("dequeue: Redis error (%s); retrying in %.2fs", "Connection reset", 0.05)
        logger.error("giving up acknowledging job %s; it stays in processing for recovery", "abc")
        logger.warning("heartbeat failed: %s", "Too many connections")
    finally:
        logger.removeHandler(tally)
    assert dict(tally.kinds) == {"pool_exhaustion": 1, "other": 1, "ack_abandoned": 1}


# -- the census and the cut probe, on a real Redis ---------------------------------------------
def test_census_finds_a_job_that_left_the_processing_list_unfinished(make_queue: QueueFactory) -> None:
    queue = make_queue(fast(PRESETS["baseline"]))
    kept, dropped, done = (Job(type="noop", priority=Priority.NORMAL) for _ in range(3))
    queue.enqueue_many([kept, dropped, done])
    assert stranded_job_ids(queue) == []
    held = [queue.dequeue(wait=False) for _ in range(3)]
    assert all(job is not None for job in held)
    finished = next(job for job in held if job is not None and job.id == done.id)
    queue.complete(finished)
    assert stranded_job_ids(queue) == []  # two held, one completed
    # What a complete() cut after its LREM leaves: the id in no list, the record not final.
    queue.client.lrem(queue.keys.processing(queue.consumer), 1, dropped.id)
    assert stranded_job_ids(queue) == [dropped.id]
    queue.client.set(queue.keys.job(kept.id), b"not a record")
    assert sorted(stranded_job_ids(queue)) == sorted([dropped.id, kept.id])


def test_cut_probe_finds_where_an_interrupted_acknowledgement_leaves_the_job(redis_url: str) -> None:
    found = {name: ack_cuts.probe(redis_url, variant) for name, variant in PRESETS.items()}
    # The scripts are one round trip: nothing to cut.
    assert found["scripted"] == ({"complete": 1, "fail": 1}, [])
    # The seed's pipeline reads first and writes in one request: a cut leaves the job held.
    assert found["optimized"] == (
        {"complete": 2, "fail": 2},
        [ack_cuts.Cut("complete", 1, stranded=False), ack_cuts.Cut("fail", 1, stranded=False)],
    )
    # The finding the pool-scaling report states: the loop's LREM comes first, so every cut
    # strands the job (if the loop is made safe, this and `pool_scaling._cuts_text` change).
    round_trips, cuts = found["baseline"]
    assert round_trips == {"complete": 3, "fail": 4}
    assert [(c.op, c.after, c.stranded) for c in cuts] == [
        ("complete", 1, True),
        ("complete", 2, True),
        ("fail", 1, True),
        ("fail", 2, True),
        ("fail", 3, True),
    ]


def test_cut_probe_rows_render_the_mechanism(redis_url: str, tmp_path: Path) -> None:
    rows = scaling_rows(lost=0, stranded=0)
    rows += ack_cuts.rows("pool_scaling", redis_url, PRESETS.values(), repeats=2)
    text = pool_scaling.render(rows, tmp_path).markdown
    section = text.split("### A pool error in the middle of an acknowledgement", 1)[1]
    assert "| baseline | complete() | 3 | 2 of 2 (after round trip 1, 2) |" in section
    assert "| baseline | fail() | 4 | 3 of 3 (after round trip 1, 2, 3) |" in section
    assert "| optimized | complete() | 2 | 0 of 1 |" in section
    assert "| scripted | complete() | 1 | - (one round trip: nothing to cut) |" in section
    assert "In `batch=loop` (the seed's code before its PR) complete() and fail() remove the job" in section
    assert "No cut strands a job in `batch=pipeline` or `batch=script`" in section
    assert "varies" not in section
