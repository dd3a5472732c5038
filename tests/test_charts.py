"""Charts say what they show: the pool-scaling axes and markers, the peers' two groups."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

from qbench.harness.experiments import pool_scaling
from qbench.harness.peers.report import METRICS, PEER_COLOR, PRESET_COLOR, chart_figure, render_report
from qbench.harness.results.rows import Row, params, read_metrics, read_run
from qbench.harness.results.stats import Spread
from qbench.harness.results.telemetry_charts import CHART_STEMS
from tests.test_experiments_workers import assert_chart_files

WORKERS = [5, 10, 40]
POOLS = ["10", "50"]
REPO = Path(__file__).resolve().parent.parent


def scaling_rows(optimized_rate: float) -> list[Row]:
    """Wait-mode cells per preset and pool; optimized's pool 10 cell at 40 workers had errors."""
    rows: list[Row] = []
    rates = {"baseline": 700.0, "optimized": optimized_rate, "scripted": 1300.0}
    for preset, rate in rates.items():
        for pool in POOLS:
            for workers in WORKERS:
                p = params(pool=pool, pool_mode="wait", workers=workers)
                errors = 3 if (preset, pool, workers) == ("optimized", "10", 40) else 0
                for repeat, spread in enumerate((0.9, 1.0, 1.1)):
                    value = rate * spread * (workers if preset == "optimized" else 1)
                    rows.append(Row("pool_scaling", preset, p, "jobs_per_s", value, "jobs/s", repeat))
                    rows.append(Row("pool_scaling", preset, p, "pool_errors", errors, "errors", repeat))
    return rows


def legend_texts(legend: Any) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


@pytest.fixture(autouse=True)
def close_figures() -> Any:
    yield
    plt.close("all")


def test_pool_scaling_panels_share_one_linear_axis_and_a_small_preset_gets_a_zoom() -> None:
    fig = pool_scaling.chart_figure(scaling_rows(optimized_rate=1.0), WORKERS, POOLS)
    shared, zoom = fig.axes[:3], fig.axes[3:]
    assert [ax.get_title() for ax in shared] == ["baseline (poll)", "optimized (block)", "scripted (notify)"]
    assert {ax.get_yscale() for ax in fig.axes} == {"linear"}
    limits = {ax.get_ylim() for ax in shared}
    assert len(limits) == 1
    bottom, top = limits.pop()
    assert bottom == 0 and 1300 * 1.1 <= top <= 1300 * 1.1 * 1.1
    # Optimized (at most 44 jobs/s) would lie on the floor: a panel of its own, said so.
    [zoomed] = zoom
    assert zoomed.get_title() == "optimized (block), zoomed"
    assert zoomed.get_ylim()[0] == 0 and zoomed.get_ylim()[1] < 100
    assert "own axis" in zoomed.get_ylabel() and "shared axis" in shared[0].get_ylabel()


def test_pool_scaling_markers_are_explained() -> None:
    fig = pool_scaling.chart_figure(scaling_rows(optimized_rate=1.0), WORKERS, POOLS)
    legend = fig.axes[0].get_legend()
    assert legend is not None and legend.get_title().get_text() == "wait mode"
    assert legend_texts(legend) == [
        "pool 10",
        "pool 50",
        "pool errors in the cell",
        "median of the windows; bar: min..max",
    ]
    # The red cross sits on the one cell with errors: optimized, pool 10, 40 workers.
    marked = {
        (ax.get_title(), tuple(off))
        for ax in fig.axes
        for c in ax.collections
        if isinstance(c, PathCollection)  # the scatter of crosses, not the error bars
        for off in c.get_offsets()
    }
    assert {title for title, _ in marked} == {"optimized (block)", "optimized (block), zoomed"}
    assert {point[0] for _, point in marked} == {40}


def test_pool_scaling_without_a_small_preset_has_no_zoom(tmp_path: Path) -> None:
    rows = scaling_rows(optimized_rate=30.0)  # up to 1,320 jobs/s: on the shared axis
    fig = pool_scaling.chart_figure(rows, WORKERS, POOLS)
    assert len(fig.axes) == 3
    text = pool_scaling.render(rows, tmp_path).markdown
    assert "The preset panels share one linear y axis from 0" in text
    assert "own linear axis" not in text
    assert_chart_files(tmp_path, ["pool_scaling.png"])


def test_pool_scaling_caption_says_why_one_preset_is_zoomed(tmp_path: Path) -> None:
    text = pool_scaling.render(scaling_rows(optimized_rate=1.0), tmp_path).markdown
    assert (
        "The last panel repeats optimized on its own linear axis: at the shared scale its best "
        "40 jobs/s lie on the floor" in text
    )
    assert "a red cross marks a cell where the workers hit pool errors" in text


def test_peer_charts_set_the_presets_apart_from_the_libraries() -> None:
    values = {
        name: Spread.of([v * 0.9, v, v * 1.1])
        for name, v in {
            "rq": 60.0,
            "taskiq+result_ex_time=3600": 650.0,
            "scripted": 930.0,
            "huey": 1200.0,
            "baseline": 730.0,
            "optimized": 9.0,
        }.items()
    }
    fig = chart_figure(values, METRICS[0])
    [ax] = fig.axes
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[:3] == ["baseline", "optimized", "scripted"]
    assert set(names[3:5]) == {"rq", "huey"} and names[5] == "taskiq+result_ex_time=3600"
    bars = ax.patches
    assert [b.get_facecolor()[:3] for b in bars[:3]] == [to_rgba(PRESET_COLOR)[:3]] * 3
    assert [b.get_facecolor()[:3] for b in bars[3:]] == [to_rgba(PEER_COLOR)[:3]] * 3
    assert [bool(b.get_hatch()) for b in bars] == [False] * 5 + [True]
    rules = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(rules) == 1 and set(rules[0].get_ydata()) == {2.5}  # between the groups
    [legend] = fig.legends
    assert legend_texts(legend) == [
        "qbench presets: baseline, optimized, scripted",
        "peer libraries, default settings",
        "peer library, tuned (name+setting)",
    ]
    assert "whisker: min..max" in ax.get_xlabel()


def test_committed_peers_run_renders_with_the_legend(tmp_path: Path) -> None:
    out = tmp_path / "peers"
    shutil.copytree(REPO / "results" / "peers", out)
    shutil.rmtree(out / "charts")
    render_report(read_metrics(out / "metrics.csv"), read_run(out), out)
    charts = sorted(p.name for p in (out / "charts").glob("*.png"))
    # A chart per metric, and the telemetry small multiples of a run sampled as it went.
    expected = {f"peers_{m.key}.png" for m in METRICS} | {f"peers_{stem}.png" for stem in CHART_STEMS}
    assert charts and expected >= set(charts)
    assert_chart_files(out / "charts", charts)


def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure saved from now on (a chart's content, not its pixels)."""
    from matplotlib.figure import Figure

    saved: list[Any] = []
    original = Figure.savefig

    def keep(fig: Any, *args: Any, **kwargs: Any) -> None:
        if fig not in saved:
            saved.append(fig)
        original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_codec_chart_sets_measured_ratios_beside_the_claimed_ones_by_payload_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qbench.harness.experiments import codec

    rows = [
        r
        for r in read_metrics(REPO / "tests/fixtures/reproduce/quick_run/metrics.csv")
        if r.experiment == "codec"
    ]
    saved = captured_figures(monkeypatch)
    assert codec.render(rows, tmp_path).charts
    [fig] = saved
    speed, size = fig.axes
    for ax, claims in ((speed, codec.SEED_SPEEDUP), (size, codec.SEED_SMALLER)):
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert [label.split("\n")[1] for label in labels] == list(codec.SIZES)  # every payload size
        assert ax.get_xlabel() == "payload size"
        texts = legend_texts(ax.get_legend())
        assert "seed's claim" in texts and any(t.startswith("measured") for t in texts)
        [claim_line] = [line for line in ax.get_lines() if line.get_label() == "seed's claim"]
        assert len(claim_line.get_xdata()) == len(claims)  # one mark per claimed size
    assert "speed-up" in speed.get_title() and "size saving" in size.get_title()


def test_load_throughput_gives_each_operation_a_panel_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qbench.harness.load.runner import render_charts

    # An arrival run: enqueue, pickup and complete at the same rate would overlap on one axis.
    rows = [
        Row("load", "scripted", params(op=op, t_s=second), "ops_per_s", 50.0, "ops/s")
        for op in ("enqueue", "pickup", "complete")
        for second in range(3)
    ]
    saved = captured_figures(monkeypatch)
    assert render_charts(rows, tmp_path, "arrival") == ["throughput.png"]
    [fig] = saved
    panels = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in panels] == ["enqueue", "pickup", "complete"]
