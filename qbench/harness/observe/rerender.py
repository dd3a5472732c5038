"""Re-render a saved `qbench observe` folder (`qbench report DIR`), measuring nothing.

An observe run keeps `telemetry.csv` (every sample) and `observe.json` (the findings).
What the report reads from the samples (commands per second and their cadence, growth,
the charts) is computed again from telemetry.csv by the current code; what was measured
once and is not in the samples (the target, what observing cost, the key scan, when the
run was made) is taken from observe.json as it was saved. OBSERVE.md, charts/ and
observe.json are rewritten; re-rendering twice gives the same files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qbench.harness.infra.telemetry import TELEMETRY_FILE, read_telemetry
from qbench.harness.observe import ObserveResult
from qbench.harness.observe.cadence import idle_pattern
from qbench.harness.observe.families import Family, KeyScan
from qbench.harness.observe.growth import growth
from qbench.harness.observe.report import OBSERVE_JSON, OBSERVE_MD, findings, render_markdown
from qbench.harness.results.telemetry_charts import render_telemetry_charts


class ObserveFolderError(ValueError):
    """A folder whose observe.json or telemetry.csv cannot be read back (one line)."""


def render_saved(folder: Path) -> Path:
    """Rewrite `folder`'s OBSERVE.md, charts/ and observe.json from its saved files; returns
    OBSERVE.md. ObserveFolderError (one line) when a file is missing or not what observe wrote."""
    try:
        saved = json.loads((folder / OBSERVE_JSON).read_text())
        rows = read_telemetry(folder / TELEMETRY_FILE)
    except (OSError, ValueError) as exc:
        raise ObserveFolderError(str(exc).splitlines()[0]) from None
    try:
        target, window, observer = saved["target"], saved["window"], saved["observer"]
        result = ObserveResult(
            out_dir=folder,
            node=str(target["node"]),
            window_s=float(window["window_s"]),
            budget_per_s=float(observer["budget_commands_per_s"]),
            commands_sent=int(observer["commands_sent"]),
            commands_by_name={str(k): int(v) for k, v in observer["by_command"].items()},
            pattern=idle_pattern(rows),
            keys=scan_from_saved(saved["keys"]),
            growth=growth(rows),
            rows=rows,
            server=dict(target.get("server") or {}),
        )
        url, interval_s = str(target["url"]), float(window["interval_s"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ObserveFolderError(
            f"{folder / OBSERVE_JSON}: not what qbench observe writes ({type(exc).__name__}: {exc})"
        ) from None
    result.charts = render_telemetry_charts(rows, folder / "charts")
    data = findings(result, url=url, interval_s=interval_s)
    # Measured once, not derivable from the samples: kept as saved.
    data["created_at"] = saved.get("created_at", data["created_at"])
    data["keys"] = saved["keys"]
    (folder / OBSERVE_JSON).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    report = folder / OBSERVE_MD
    report.write_text(render_markdown(result, url=url))
    return report


def scan_from_saved(keys: Mapping[str, Any]) -> KeyScan:
    """The key scan as observe.json saved it (`KeyScan.as_dict`), rebuilt for the report.

    observe.json keeps per family the count, the types, the probed TTL share and the mean
    MEMORY USAGE with its sample size, not every probe: a family comes back with exactly
    those figures (its TTL and memory samples stand in at their median and mean)."""
    scan = KeyScan(
        db=int(keys["db"]),
        db_keys=int(keys["db_keys"]),
        keys_scanned=int(keys["keys_scanned"]),
        scan_calls=int(keys["scan_calls"]),
        probe_calls=int(keys["probe_calls"]),
        complete=bool(keys["complete"]),
        stopped=str(keys.get("stopped") or ""),
        refused=[str(r) for r in keys.get("refused") or []],
    )
    for saved in keys["families"]:
        probed = int(saved["ttl_probed"])
        share = saved.get("no_ttl_share")
        sampled = int(saved.get("memory_usage_sampled") or 0)
        mean = saved.get("memory_usage_mean_bytes")
        median = saved.get("ttl_s_median")
        family = Family(
            pattern=str(saved["pattern"]),
            scanned=int(saved["keys_scanned"]),
            sample=[str(k) for k in saved.get("sample_keys") or []],
            types=Counter({str(t): int(n) for t, n in (saved.get("types") or {}).items()}),
            ttl_probed=probed,
            no_ttl=round(float(share) * probed) if share is not None else 0,
            ttl_s=[] if median is None else [float(median)],
            # The mean stands for every sampled size: the report shows the mean and n only.
            memory_bytes=[] if mean is None or not sampled else [mean] * sampled,
        )
        scan.families[family.pattern] = family
    return scan
