"""Tidy rows round-trip through metrics.csv; the report's cells flag counts that vary."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbench.harness.results.render import (
    count_cell,
    determinism_flags,
    deterministic_series_count,
    fmt_bytes,
    markdown_table,
    spread_cell,
    values_of,
)
from qbench.harness.results.rows import COLUMNS, Row, params, parse_params, read_metrics, write_metrics
from qbench.harness.results.stats import Spread


def test_rows_round_trip_through_metrics_csv(tmp_path: Path) -> None:
    rows = [
        Row("round_trips", "baseline", params(op="complete", batch=1), "round_trips", 3.0, "round_trips", 0),
        Row("round_trips", "baseline", params(op="complete", batch=1), "wall_ms", 0.4321, "ms", 1),
        Row("memory", "ttl_on", params(day=7), "used_memory_bytes", 183_000.0, "bytes_observed", 0),
    ]
    path = tmp_path / "metrics.csv"
    write_metrics(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert (
        path.read_text().splitlines()[1]
        == "round_trips,baseline,batch=1;op=complete,round_trips,3,round_trips,0"
    )
    assert read_metrics(path) == rows


def test_params_are_canonical() -> None:
    assert params(op="move", batch=100, network="delay_1ms") == "batch=100;network=delay_1ms;op=move"
    assert parse_params("batch=100;op=move") == {"batch": "100", "op": "move"}
    assert params() == ""


def test_read_metrics_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not a qbench metrics\.csv"):
        read_metrics(path)
    path.write_text(",".join(COLUMNS) + "\nx,y,,m,not-a-number,ms,0\n")
    with pytest.raises(ValueError, match="bad row"):
        read_metrics(path)


def test_spread_and_cells() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(1.0, 2.0, 3.0, 3)
    assert spread_cell([3.0, 1.0, 2.0], digits=1, unit="ms") == "2.0 (1.0..3.0) ms"
    assert spread_cell([2.0]) == "2.00 (n=1)"
    assert spread_cell([]) == "-"
    assert count_cell([201.0, 201.0, 201.0]) == "201"
    assert count_cell([201.0, 203.0]).startswith("⚠ varies")
    assert fmt_bytes(1.35e9) == "1.35 GB" and fmt_bytes(150e6) == "150.0 MB" and fmt_bytes(512) == "512 B"


def test_determinism_flags_only_varying_counts() -> None:
    def row(metric: str, unit: str, value: float, repeat: int) -> Row:
        return Row("exp", "baseline", params(batch=10), metric, value, unit, repeat)

    rows = [
        row("round_trips", "round_trips", 21, 0),
        row("round_trips", "round_trips", 21, 1),
        row("commands", "commands", 41, 0),
        row("commands", "commands", 42, 1),  # a count that moved: flagged
        row("wall_ms", "ms", 4.1, 0),
        row("wall_ms", "ms", 5.3, 1),  # a timing that moved: expected
    ]
    assert determinism_flags(rows) == ["exp / baseline / batch=10 / commands: 41, 42"]
    assert deterministic_series_count(rows) == 2
    assert values_of(rows, variant="baseline", metric="wall_ms") == [4.1, 5.3]


def test_markdown_table_escapes_pipes() -> None:
    table = markdown_table(["a", "b"], [["x|y", "z"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | z |"]
