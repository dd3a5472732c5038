"""Round-trip counts are exactly the seed's table (and the scripted preset's one), and the
`qbench ops` table of docs/ops.md is what the code measures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qbench.harness.experiments.ops import OpCost, measure_operations, op_costs
from qbench.queue_impl.config import PRESETS, parse_variant

pytestmark = pytest.mark.slow

OPS_PAGE = (Path(__file__).resolve().parent.parent / "docs" / "ops.md").read_text()


@pytest.fixture(scope="module")
def costs(redis_url: str) -> list[OpCost]:
    variants = [PRESETS[name].with_overrides(block_timeouts_s=(0.2, 0.2, 0.6)) for name in PRESETS]
    return op_costs(measure_operations(redis_url, variants, batches=(10, 50, 100, 500)))


@pytest.fixture(scope="module")
def ops(costs: list[OpCost]) -> dict[tuple[str, str, int], int]:
    return {(c.preset.split("+")[0], c.operation, c.batch): c.round_trips for c in costs}


def test_the_docs_table_is_the_measured_one(costs: list[OpCost]) -> None:
    measured = {
        (c.operation, c.batch): [
            f"{x.round_trips} / {x.commands}"
            for x in costs
            if (x.operation, x.batch) == (c.operation, c.batch)
        ]
        for c in costs
    }
    table = OPS_PAGE.split("operation                batch", 1)[1].split("cells:", 1)[0]
    shown = {
        (m[1], int(m[2])): re.split(r" {2,}", m[3].strip())
        for m in re.finditer(r"^(\w+) +(\d+) +(.+)$", table, re.MULTILINE)
    }
    assert shown == measured


@pytest.mark.parametrize(("batch", "loop"), [(10, 21), (50, 101), (100, 201), (500, 1001)])
def test_scheduler_round_trips_match_seed_table(
    ops: dict[tuple[str, str, int], int], batch: int, loop: int
) -> None:
    assert ops[("baseline", "move_scheduled_to_ready", batch)] == loop == 2 * batch + 1
    assert ops[("optimized", "move_scheduled_to_ready", batch)] == 3
    assert ops[("scripted", "move_scheduled_to_ready", batch)] == 1


def test_complete_round_trips_match_seed(ops: dict[tuple[str, str, int], int]) -> None:
    assert [ops[(p, "complete", 1)] for p in ("baseline", "optimized", "scripted")] == [3, 2, 1]


def test_other_operations(ops: dict[tuple[str, str, int], int]) -> None:
    # enqueue: SET, LPUSH | pipeline | script.  fail: LREM, GET, SET, ZADD | GET + pipeline | script.
    assert [ops[(p, "enqueue", 1)] for p in ("baseline", "optimized", "scripted")] == [2, 1, 1]
    assert [ops[(p, "fail", 1)] for p in ("baseline", "optimized", "scripted")] == [4, 2, 1]
    # A ready normal-priority job: poll/block try high first, then normal, then GET.
    assert [ops[(p, "dequeue", 1)] for p in ("baseline", "optimized", "scripted")] == [3, 3, 1]
    assert ops[("baseline", "enqueue_many", 100)] == 200
    assert ops[("optimized", "enqueue_many", 100)] == ops[("scripted", "enqueue_many", 100)] == 1


def test_records_keys_reads_popped_ids_client_side_first(redis_url: str) -> None:
    """A script cannot declare the key of a record whose id it learns inside Redis: under
    records=keys the notify claim is followed by a GET and the script move is preceded by a
    ZRANGEBYSCORE (one more round trip each); records=hash does both in the script."""
    specs = ("scripted", "scripted+records=keys", "baseline+dequeue=notify", "optimized+batch=script")
    variants = [parse_variant(spec).with_overrides(block_timeouts_s=(0.2, 0.2, 0.6)) for spec in specs]
    costs = op_costs(measure_operations(redis_url, variants, batches=(10,)))
    found = {(c.preset.split(",")[0], c.operation): c.round_trips for c in costs}
    assert found[("scripted+block_timeouts_s=0.2/0.2/0.6", "dequeue")] == 1
    assert found[("scripted+records=keys", "dequeue")] == 2
    assert found[("scripted+records=keys", "move_scheduled_to_ready")] == 2
    assert found[("baseline+dequeue=notify", "dequeue")] == 2
    assert found[("optimized+batch=script", "move_scheduled_to_ready")] == 2
    assert found[("scripted+records=keys", "complete")] == found[("scripted+records=keys", "fail")] == 1
