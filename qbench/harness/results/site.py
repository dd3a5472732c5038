"""`qbench site`: a static HTML site of results/, in the manner of `asv publish`.

    site/index.html               every run found under results/, by kind
    site/runs/<run>/index.html    the run's report (REPORT.md, PEERS.md, ...) as HTML, its
                                  charts and data files copied beside it

Self-contained: one inline stylesheet, no script, no font or file from the network; every
link and image is relative, so the site opens from the file system (file://) as well as
from any static host. A run without a Markdown report (a load run) gets a page of its
metrics table and its charts. Links between reports are rewritten to the pages; a link to
anything outside the site becomes plain text, so no link on the site is broken.
"""

from __future__ import annotations

import html
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt

from qbench.harness.results.render import markdown_table, spread_cell
from qbench.harness.results.rows import METRICS_FILE, read_metrics, read_run

REPORT_NAMES = (
    "REPORT.md",
    "PEERS.md",
    "PEERS-CLUSTER.md",
    "RELIABILITY.md",
    "OBSERVE.md",
    "CALIBRATION.md",
    "HISTORY.md",
    "GATE.md",
    "FLIPS.md",
)
"""The Markdown a run dir may hold, in order of preference: the first found is its page."""
KIND_OF = {
    "REPORT.md": "reproduce",
    "PEERS.md": "peers",
    "PEERS-CLUSTER.md": "peers",
    "RELIABILITY.md": "chaos",
    "OBSERVE.md": "observe",
    "CALIBRATION.md": "calibration",
    "HISTORY.md": "history",
    "GATE.md": "gate",
    "FLIPS.md": "flips",
}
KIND_ORDER = (
    "history",
    "reproduce",
    "calibration",
    "gate",
    "flips",
    "load",
    "peers",
    "chaos",
    "observe",
    "other",
)
SKIPPED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 72rem; padding: 1rem 2rem 4rem; line-height: 1.45; color: #1d1d1f; }
nav { font-size: 0.9rem; margin-bottom: 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d7; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f6; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f6f6f8; padding: 0.6rem; overflow-x: auto; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; } h3 { font-size: 1.05rem; }
.kind { color: #666; font-size: 0.85rem; }
"""


class SiteError(ValueError):
    """A results tree the site cannot be built from (one line; the verb exits 2)."""


@dataclass(frozen=True)
class RunPage:
    source: Path
    """The run dir under results/."""
    slug: str
    kind: str
    title: str
    report: Path | None
    """Its Markdown report, if it has one."""


def find_runs(results: Path) -> list[RunPage]:
    """Every dir under `results` holding a Markdown report or a metrics.csv."""
    if not results.is_dir():
        raise SiteError(f"{results}: no results directory")
    pages = []
    for path in sorted([results, *(p for p in results.rglob("*") if p.is_dir())]):
        if SKIPPED_DIRS & set(path.parts) or "charts" in path.relative_to(results).parts:
            continue
        report = next((path / n for n in REPORT_NAMES if (path / n).is_file()), None)
        if report is None and not (path / METRICS_FILE).is_file():
            continue
        rel = path.relative_to(results)
        # A load run is one whatever its files (a sampled run has a REPORT.md as reproduce does).
        is_load = rel.parts[:1] == ("load",)
        kind = "load" if is_load else KIND_OF[report.name] if report else "other"
        slug = "-".join(rel.parts) or "results"
        title = _title(report) if report else " / ".join(rel.parts)
        pages.append(RunPage(path, slug, kind, title, report))
    return pages


def _title(report: Path) -> str:
    for line in report.read_text(errors="replace").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return report.parent.name


def build_site(results: Path, out: Path) -> list[Path]:
    """Write the site; returns every HTML page written (index first)."""
    pages = find_runs(results)
    if not pages:
        raise SiteError(f"{results}: no runs (no report and no {METRICS_FILE}) found")
    if out.exists():
        shutil.rmtree(out)
    (out / "runs").mkdir(parents=True)
    page_of = {p.source.resolve(): p for p in pages}
    written = [out / "index.html"]
    for page in pages:
        target = out / "runs" / page.slug
        _copy_run(page.source, target)
        body = _markdown_html(page, page_of, results) if page.report else _metrics_html(page.source, target)
        nav = '<nav><a href="../../index.html">← all runs</a></nav>'
        (target / "index.html").write_text(_document(page.title, nav + body))
        written.append(target / "index.html")
    (out / "index.html").write_text(_document("qbench results", _index_html(pages, results)))
    return written


def _copy_run(source: Path, target: Path) -> None:
    """The run's own files (charts, data), not its sub-runs (they get pages of their own)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            if item.name == "charts" or not _is_run_tree(item):
                shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        elif item.is_file():
            shutil.copy2(item, target / item.name)


def _is_run_tree(path: Path) -> bool:
    return any(
        (p / n).is_file()
        for p in [path, *path.rglob("*")]
        if p.is_dir()
        for n in (METRICS_FILE, *REPORT_NAMES)
    )


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _rewrite_links(text: str, page: RunPage, page_of: dict[Path, RunPage]) -> str:
    """Relative links that stay inside the run work as they are; a link to another run's
    report points at its page; anything else (outside the site) becomes plain text."""

    def fix(match: re.Match[str]) -> str:
        bang, label, href = match.groups()
        if re.match(r"^[a-z]+:", href) or href.startswith("#"):
            return match.group(0)  # absolute URL or in-page anchor: left as written
        path_part, _, anchor = href.partition("#")
        target = (page.source / path_part).resolve()
        inside = _inside(target, page.source.resolve())
        if inside and target.exists():
            return match.group(0)
        run_dir = target if target.is_dir() else target.parent
        other = page_of.get(run_dir.resolve())
        if other is not None and not bang:
            rel = PurePosixPath("..") / other.slug / "index.html"
            return f"[{label}]({rel}{'#' + anchor if anchor else ''})"
        return label if not bang else f"*(image not in the site: {label})*"

    return _LINK.sub(fix, text)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _markdown_html(page: RunPage, page_of: dict[Path, RunPage], results: Path) -> str:
    assert page.report is not None
    text = _rewrite_links(page.report.read_text(errors="replace"), page, page_of)
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    source = page.source.relative_to(results.parent) if _inside(page.source, results.parent) else page.source
    where = f"{html.escape(str(source))}/{page.report.name}"
    rendered: str = md.render(text)
    return f'<p class="kind">{page.kind} · <code>{where}</code></p>' + rendered


def _metrics_html(source: Path, target: Path) -> str:
    """A page for a run without a report: run facts, a median (min..max) table, its charts."""
    rows = read_metrics(source / METRICS_FILE)
    meta = read_run(source)
    grouped: dict[tuple[str, str, str, str, str], list[float]] = defaultdict(list)
    for row in rows:
        grouped[(row.experiment, row.variant, row.params, row.metric, row.unit)].append(row.value)
    body = [
        [
            e,
            v or "-",
            p or "-",
            m,
            spread_cell(values, digits=2, unit=u) if len(values) > 1 else f"{values[0]:,.4g} {u}",
        ]
        for (e, v, p, m, u), values in sorted(grouped.items())
    ]
    facts = [
        f"mode {meta.get('mode', '?')}",
        f"created {meta.get('created_at', '?')}",
        f"commit {str(meta.get('git', {}).get('commit') or '?')[:10]}",
        f"Redis {meta.get('server', {}).get('version', '?')}",
    ]
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    parts = [
        f"<h1>{html.escape(' / '.join(source.parts[-3:]))}</h1>",
        f"<p>{html.escape('; '.join(facts))}. Files: "
        + ", ".join(
            f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>'
            for p in sorted(target.iterdir())
            if p.is_file()
        )
        + ".</p>",
    ]
    for chart in sorted((target / "charts").glob("*.png")) if (target / "charts").is_dir() else []:
        parts.append(f'<p><img src="charts/{html.escape(chart.name)}" alt="{html.escape(chart.stem)}"></p>')
    table: str = md.render(markdown_table(["experiment", "variant", "params", "metric", "value"], body))
    parts.append(table)
    return "\n".join(parts)


def _index_html(pages: list[RunPage], results: Path) -> str:
    by_kind: dict[str, list[RunPage]] = defaultdict(list)
    for page in pages:
        by_kind[page.kind].append(page)
    parts = [
        "<h1>qbench results</h1>",
        f"<p>{len(pages)} runs from <code>{html.escape(results.name)}/</code>. Each page is a run's own "
        "report with its charts; data files (metrics.csv, run.json) sit beside each page.</p>",
    ]
    for kind in sorted(by_kind, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)):
        parts.append(f"<h2>{html.escape(kind)}</h2><ul>")
        for page in by_kind[kind]:
            rel = page.source.relative_to(results) if page.source != results else Path(".")
            parts.append(
                f'<li><a href="runs/{html.escape(page.slug)}/index.html">{html.escape(page.title)}</a> '
                f'<span class="kind">results/{html.escape(str(rel))}</span></li>'
            )
        parts.append("</ul>")
    return "\n".join(parts)


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
