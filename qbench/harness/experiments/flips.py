"""Do verdicts flip between runs? The verdict of every claim in several saved runs, and the count.

    python -m qbench.harness.experiments.flips results/flips/run-1 results/flips/run-2 ...

Each run's verdicts are rendered again from its metrics.csv (the experiments' own
`render`), so this reads saved runs only. A flip is a claim whose verdict differs from
the previous run's; the target for timed claims is 0.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from qbench.harness.experiments import load_experiments
from qbench.harness.results.render import markdown_table
from qbench.harness.results.rows import METRICS_FILE, read_metrics

Claim = tuple[str, str]
"""(experiment, claim)"""


def run_verdicts(run_dir: Path) -> dict[Claim, tuple[str, str]]:
    """(verdict, why) of every claim of one saved run."""
    rows = read_metrics(run_dir / METRICS_FILE)
    modules = {module.NAME: module for module in load_experiments()}
    found: dict[Claim, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="qbench-flips-") as charts:
        for name in dict.fromkeys(r.experiment for r in rows):
            if name not in modules:
                continue
            section = modules[name].render([r for r in rows if r.experiment == name], Path(charts))
            for claim, verdict, why in section.verdicts:
                found[(name, claim)] = (verdict, why)
    return found


def count_flips(runs: Sequence[dict[Claim, tuple[str, str]]]) -> dict[Claim, int]:
    """Per claim: how many runs gave a different verdict from the run before."""
    claims = list(dict.fromkeys(c for run in runs for c in run))
    flips: dict[Claim, int] = {}
    for claim in claims:
        seen = [run[claim][0] for run in runs if claim in run]
        flips[claim] = sum(a != b for a, b in itertools.pairwise(seen))
    return flips


def flips_table(run_dirs: Sequence[Path]) -> tuple[str, int]:
    """A Markdown table (one row per claim, one column per run) and the total of flips."""
    runs = [run_verdicts(d) for d in run_dirs]
    flips = count_flips(runs)
    header = ["experiment", "claim", *(d.name for d in run_dirs), "flips"]
    body = [
        [experiment, claim, *(run.get((experiment, claim), ("-", ""))[0] for run in runs), str(n)]
        for (experiment, claim), n in flips.items()
    ]
    return markdown_table(header, body), sum(flips.values())


def render_saved(out_dir: Path) -> Path:
    """Re-render FLIPS.md from the run-* reproductions the folder keeps."""
    dirs = sorted((d for d in out_dir.glob("run-*") if (d / METRICS_FILE).is_file()), key=lambda d: d.name)
    if len(dirs) < 2:
        raise ValueError(f"{out_dir}: needs two or more run-* folders with {METRICS_FILE}")
    table, total = flips_table(dirs)
    path = out_dir / "FLIPS.md"
    path.write_text(f"{table}\n\nflips: {total} across {len(dirs)} runs\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dirs = [Path(a) for a in args]
    missing = [str(d) for d in dirs if not (d / METRICS_FILE).is_file()]
    if len(dirs) < 2 or missing:
        print(
            f"flips: error: give two or more results dirs with {METRICS_FILE}"
            + (f" (none in {', '.join(missing)})" if missing else ""),
            file=sys.stderr,
        )
        return 2
    table, total = flips_table(dirs)
    print(table)
    print(f"\nflips: {total} across {len(dirs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
