"""How a driver gate judges its exact counters (`experiments.driver_gate.judge`), from rows alone."""

from __future__ import annotations

from collections.abc import Mapping

from qbench.harness.experiments.driver_gate import EXPERIMENT, judge, overall
from qbench.harness.results.rows import Row


def _rows(side: str, commands: Mapping[str, float], round_trips: float, rounds: int = 3) -> list[Row]:
    cells: list[tuple[str, float, str, dict[str, str]]] = [
        ("round_trips_per_job", round_trips, "round_trips", {})
    ]
    cells.append(("commands_per_job", sum(commands.values()), "commands", {"command": "all"}))
    cells += [("commands_per_job", calls, "commands", {"command": c}) for c, calls in commands.items()]
    rows = []
    for at in range(rounds):
        for metric, value, unit, extra in cells:
            cell = {"side": side, "phase": "process", **extra}
            params = ";".join(f"{k}={v}" for k, v in sorted(cell.items()))
            rows.append(Row(EXPERIMENT, "d", params, metric, value, unit, at))
    return rows


def _verdicts(base: list[Row], head: list[Row]) -> tuple[dict[str, str], str]:
    timings, counters = judge([*base, *head], tolerances={})
    return {c.command or "round trips": c.status for c in counters}, overall(timings, counters)


def test_a_command_that_replaced_others_is_swapped_not_a_failure() -> None:
    # huey 3.3.4 -> 3.4.0: three MULTI/HEXISTS/HGET/EXEC pipelines per job became one HMGET
    old = {"brpop": 1, "multi": 3, "hexists": 3, "hget": 3, "exec": 3, "hset": 1}
    new = {"brpop": 1, "hmget": 1, "hset": 1}
    status, gate = _verdicts(_rows("base", old, 4), _rows("head", new, 3))
    assert status["hmget"] == "swapped"
    assert status["hexists"] == status["all"] == status["round trips"] == "better"
    assert gate != "FAIL"


def test_an_added_command_fails_when_the_phase_does_more() -> None:
    status, gate = _verdicts(_rows("base", {"brpop": 1}, 1), _rows("head", {"brpop": 1, "exists": 1}, 2))
    assert status["exists"] == status["all"] == status["round trips"] == "FAIL"
    assert gate == "FAIL"


def test_a_swap_that_costs_a_round_trip_still_fails() -> None:
    # fewer commands, but one more round trip: not a swap
    base = _rows("base", {"brpop": 1, "get": 2}, 1)
    head = _rows("head", {"brpop": 1, "mget": 1}, 2)
    status, gate = _verdicts(base, head)
    assert status["mget"] == "FAIL" and gate == "FAIL"
