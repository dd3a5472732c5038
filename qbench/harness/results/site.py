"""`qbench site`: a static HTML site of results/ and docs/, in the manner of `asv publish`.

    site/index.html               the answers first (the seed's claims and their verdicts, the
                                  peers chart, the reliability table, the history trend, each
                                  linking to its run), then the docs and every run, by kind
    site/runs/<run>/index.html    the run's report (REPORT.md, PEERS.md, ...) as HTML, its
                                  charts and data files copied beside it
    site/docs/<page>.html         each docs/*.md page

The kind, status and report of a run folder come from the registry of run kinds
(`qbench.harness.results.runs.describe`); a failed or interrupted run is listed, and shown,
as such, and never answers a question on the front page.

Self-contained: one inline stylesheet, no script, no font or file from the network; every
link and image is relative, so the site opens from the file system (file://) as well as
from any static host. A run without a Markdown report gets a page of its metrics table and
its charts. Links between reports and docs pages are rewritten to their pages; a link to
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
from qbench.harness.results.runs import KINDS, OK, describe

KIND_ORDER = (
    "reproduce",
    "peers",
    "peers-cluster",
    "chaos",
    "load",
    "cluster",
    "history",
    "gate",
    "calibration",
    "flips",
    "observe",
    "ops",
    "other",
)
"""The order of the kinds in the list of runs (a kind not named here comes last)."""
SKIPPED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
CLAIMS_HEADER = "| Experiment | Claim | Verdict |"
"""Opens the summary table of a reproduce run's REPORT.md: one claim per row."""
RELIABILITY_HEADER = "| case | setting | preset |"
"""Opens the accounting table of a chaos run's RELIABILITY.md."""
PEERS_CHARTS = ("peers_process.png", "peers_pickup_p99.png")
"""The peers charts the front page shows, when the run has them."""

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
.failed { color: #b00020; }
.why { font-size: 0.8rem; color: #444; }
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
    status: str = OK
    """ok | failed | interrupted | running, as the run's run.json says."""
    reason: str | None = None
    where: str = ""
    """The run's folder as the site names it: results/<path>."""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class DocPage:
    source: Path
    """The Markdown file under docs/."""
    name: str
    """Its page in the site: docs/<name>.html."""
    title: str


def find_runs(results: Path) -> list[RunPage]:
    """Every run under `results`, as the registry of run kinds describes it; a dir with a
    metrics.csv that no kind recognises is listed as `other`."""
    if not results.is_dir():
        raise SiteError(f"{results}: no results directory")
    pages = []
    for path in sorted([results, *(p for p in results.rglob("*") if p.is_dir())]):
        if SKIPPED_DIRS & set(path.parts) or "charts" in path.relative_to(results).parts:
            continue
        rel = path.relative_to(results)
        slug = "-".join(rel.parts) or "results"
        where = "/".join((results.name, *rel.parts))
        found = describe(path)
        if found is not None:
            title = found.title
            if found.report is not None and title == found.kind:  # a report without a "# " title
                title = f"{found.kind}: {' / '.join(rel.parts) or results.name}"
            pages.append(
                RunPage(path, slug, found.kind, title, found.report, found.status, found.reason, where)
            )
        elif (path / METRICS_FILE).is_file():
            pages.append(
                RunPage(path, slug, "other", " / ".join(rel.parts) or results.name, None, where=where)
            )
    return pages


def find_docs(docs: Path) -> list[DocPage]:
    """Every Markdown page of `docs` (index.md first), titled by its first heading."""
    if not docs.is_dir():
        raise SiteError(f"{docs}: no docs directory")
    files = sorted(docs.glob("*.md"), key=lambda p: (p.name != "index.md", p.name))
    return [DocPage(p, p.stem, _title(p)) for p in files]


def _title(report: Path) -> str:
    for line in report.read_text(errors="replace").splitlines():
        if line.startswith("# "):
            return line[2:].strip().replace("`", "")
    return report.parent.name


def build_site(results: Path, out: Path, docs: Path | None = None) -> list[Path]:
    """Write the site (with `docs`' pages when given); returns every HTML page written, index first."""
    pages = find_runs(results)
    if not pages:
        raise SiteError(f"{results}: no runs (no report and no {METRICS_FILE}) found")
    doc_pages = find_docs(docs) if docs is not None else []
    if out.exists():
        shutil.rmtree(out)
    (out / "runs").mkdir(parents=True)
    page_of = {p.source.resolve(): p for p in pages}
    written = [out / "index.html"]
    for page in pages:
        target = out / "runs" / page.slug
        _copy_run(page.source, target)
        body = _markdown_html(page, page_of, results) if page.report else _metrics_html(page.source, target)
        nav = '<nav><a href="../../index.html">← qbench results</a></nav>'
        (target / "index.html").write_text(_document(page.title, nav + _status_html(page) + body))
        written.append(target / "index.html")
    if doc_pages:
        (out / "docs").mkdir()
        doc_of = {d.source.resolve(): d for d in doc_pages}
        for doc in doc_pages:
            nav = '<nav><a href="../index.html">← qbench results</a> · <a href="index.html">docs</a></nav>'
            body = _doc_html(doc, doc_of, page_of, results)
            (out / "docs" / f"{doc.name}.html").write_text(_document(doc.title, nav + body))
            written.append(out / "docs" / f"{doc.name}.html")
    (out / "index.html").write_text(_document("qbench results", _index_html(pages, doc_pages, results)))
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
        (p / METRICS_FILE).is_file() or describe(p) is not None
        for p in [path, *path.rglob("*")]
        if p.is_dir()
    )


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _rewrite_links(
    text: str,
    base: Path,
    page_of: dict[Path, RunPage],
    *,
    runs_prefix: PurePosixPath,
    doc_of: dict[Path, DocPage] | None = None,
    results_as: tuple[Path, Path] | None = None,
) -> str:
    """Rewrite the Markdown links of a file in `base` for the site.

    A relative link that stays inside a run's own folder works as it is; a link to a run (its
    folder, its report, or a file copied beside its page) points at that page or file under
    `runs_prefix`; a link to a docs page points at its HTML; anything else (outside the site)
    becomes plain text, so no link on the site is broken. `results_as` (written, published)
    reads a link into the results folder the docs were written beside as one into the results
    tree being published.
    """

    def fix(match: re.Match[str]) -> str:
        bang, label, href = match.groups()
        if re.match(r"^[a-z]+:", href) or href.startswith("#"):
            return match.group(0)  # absolute URL or in-page anchor: left as written
        path_part, _, anchor = href.partition("#")
        fragment = f"#{anchor}" if anchor else ""
        target = (base / path_part).resolve()
        if results_as is not None and _inside(target, results_as[0]):
            target = (results_as[1] / target.relative_to(results_as[0])).resolve()
        if doc_of is None and _inside(target, base.resolve()) and target.exists():
            return match.group(0)
        if doc_of is not None and target in doc_of and not bang:
            return f"[{label}]({doc_of[target].name}.html{fragment})"
        run_dir = target if target.is_dir() else target.parent
        while run_dir.resolve() not in page_of and run_dir != run_dir.parent and not target.is_file():
            run_dir = run_dir.parent  # a folder inside a run (charts/): its run's page
        other = page_of.get(run_dir.resolve())
        if other is not None and target.exists():
            rel = runs_prefix / other.slug
            if target.is_file() and (other.report is None or target != other.report.resolve()):
                return f"{bang}[{label}]({rel / target.relative_to(other.source.resolve())})"
            if not bang:
                return f"[{label}]({rel / 'index.html'}{fragment})"
        return label if not bang else f"*(image not in the site: {label})*"

    return _LINK.sub(fix, text)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _markdown_html(page: RunPage, page_of: dict[Path, RunPage], results: Path) -> str:
    assert page.report is not None
    text = _rewrite_links(
        page.report.read_text(errors="replace"), page.source, page_of, runs_prefix=PurePosixPath("..")
    )
    source = page.source.relative_to(results.parent) if _inside(page.source, results.parent) else page.source
    where = f"{html.escape(str(source))}/{page.report.name}"
    rendered: str = _markdown().render(text)
    return f'<p class="kind">{page.kind} · <code>{where}</code></p>' + rendered


def _doc_html(doc: DocPage, doc_of: dict[Path, DocPage], page_of: dict[Path, RunPage], results: Path) -> str:
    """A docs page; its links to `../results/...` (docs/ sits beside results/ in a checkout)
    point at the published runs of `results`."""
    text = _rewrite_links(
        doc.source.read_text(errors="replace"),
        doc.source.parent,
        page_of,
        runs_prefix=PurePosixPath("..") / "runs",
        doc_of=doc_of,
        results_as=((doc.source.parent.parent / "results").resolve(), results.resolve()),
    )
    return _with_heading_ids(_markdown().render(text))


def _slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", html.unescape(re.sub(r"<[^>]+>", "", text)).strip().lower()).replace(
        " ", "-"
    )


def _with_heading_ids(rendered: str) -> str:
    """Give each heading the id GitHub gives it, so links to `page.md#heading` land."""
    return re.sub(
        r"<h([1-6])>(.*?)</h\1>",
        lambda m: f'<h{m.group(1)} id="{_slug(m.group(2))}">{m.group(2)}</h{m.group(1)}>',
        rendered,
    )


def _status_html(page: RunPage) -> str:
    if page.ok:
        return ""
    reason = f": {page.reason}" if page.reason else ""
    return f'<p class="failed">This run {html.escape(page.status)}{html.escape(reason)}.</p>'


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


def _choose(pages: list[RunPage], kind: str, preferred: str) -> RunPage | None:
    """The run that answers for `kind`: the one at results/<preferred> if it is whole, else the
    last whole run of that kind. A failed or interrupted run never answers."""
    whole = [p for p in pages if p.kind == kind and p.ok]
    return next((p for p in whole if p.slug == preferred), whole[-1] if whole else None)


def _table_after(text: str, header: str) -> str | None:
    """The Markdown table whose header row starts with `header`, or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header):
            table = [line]
            for row in lines[i + 1 :]:
                if not row.startswith("|"):
                    break
                table.append(row)
            return "\n".join(table)
    return None


def _run_link(page: RunPage, label: str) -> str:
    return f'<a href="runs/{html.escape(page.slug)}/index.html">{html.escape(label)}</a>'


def _report_table(page: RunPage | None, header: str) -> str | None:
    return _table_after(page.report.read_text(), header) if page and page.report else None


def _img(src: str, alt: str) -> str:
    """A chart that links to itself at full size."""
    src, alt = html.escape(src), html.escape(alt)
    return f'<p><a href="{src}"><img src="{src}" alt="{alt}"></a></p>'


def _answer(section: str, heading: str, page: RunPage | None, missing: str, body: list[str]) -> list[str]:
    """One front-page answer: its heading, where it comes from (a link), then `body`."""
    parts = [f'<section id="{section}"><h2>{html.escape(heading)}</h2>']
    if page is None or not body:
        parts.append(f"<p>No complete <code>{html.escape(missing)}</code> run in these results.</p>")
    else:
        where = f'<span class="kind">{html.escape(page.where)}</span>'
        parts.append(f"<p>From {_run_link(page, page.title)} {where}</p>")
        parts.extend(body)
    parts.append("</section>")
    return parts


def _claims_body(reference: RunPage | None) -> list[str]:
    table = _report_table(reference, CLAIMS_HEADER)
    if reference is None or table is None:
        return []
    md = _markdown()
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        claim, verdict, why = cells[1], cells[2], cells[3] if len(cells) > 3 else ""
        rows.append(
            f"<tr><td>{_run_link(reference, claim)}</td>"
            f'<td class="verdict">{md.renderInline(verdict)}</td>'
            f'<td class="why">{md.renderInline(why)}</td></tr>'
        )
    return [
        "<table><thead><tr><th>claim</th><th>verdict</th><th>measured</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
    ]


def _answers_html(pages: list[RunPage]) -> list[str]:
    """The front page's answers, each drawn from the whole run it links to."""
    reference = _choose(pages, "reproduce", "reference")
    peers = _choose(pages, "peers", "peers")
    chaos = _choose(pages, "chaos", "chaos")
    history = _choose(pages, "history", "history")
    peers_charts = [c for c in PEERS_CHARTS if peers and (peers.source / "charts" / c).is_file()]
    reliability = _report_table(chaos, RELIABILITY_HEADER)
    trend = _history_chart(history) if history else None
    return [
        *_answer(
            "claims", "What the seed's claims came to", reference, "qbench reproduce", _claims_body(reference)
        ),
        *_answer(
            "peers",
            "Beside the peers",
            peers,
            "qbench peers",
            [_img(f"runs/{peers.slug}/charts/{c}", c) for c in peers_charts] if peers else [],
        ),
        *_answer(
            "reliability",
            "Reliability",
            chaos,
            "qbench chaos",
            [_markdown().render(reliability)] if reliability else [],
        ),
        *_answer(
            "history",
            "History across commits",
            history,
            "qbench history",
            [_img(f"runs/{history.slug}/charts/{trend.name}", trend.stem)] if history and trend else [],
        ),
    ]


def _history_chart(page: RunPage) -> Path | None:
    """The history run's trend to show: the ratio chart of `scripted`, else its first chart."""
    charts = sorted((page.source / "charts").glob("*.png")) if (page.source / "charts").is_dir() else []
    chosen = [c for c in charts if "scripted" in c.name and "ratio" in c.name] or charts
    return chosen[0] if chosen else None


def _index_html(pages: list[RunPage], doc_pages: list[DocPage], results: Path) -> str:
    by_kind: dict[str, list[RunPage]] = defaultdict(list)
    for page in pages:
        by_kind[page.kind].append(page)
    parts = ["<h1>qbench results</h1>", *_answers_html(pages)]
    if doc_pages:
        parts.append('<section id="docs"><h2>Docs</h2><ul>')
        for doc in doc_pages:
            parts.append(f'<li><a href="docs/{html.escape(doc.name)}.html">{html.escape(doc.title)}</a></li>')
        parts.append("</ul></section>")
    incomplete = sum(not p.ok for p in pages)
    summary = f"{len(pages)} runs from <code>{html.escape(results.name)}/</code>"
    if incomplete:
        summary += f", {incomplete} of them not complete"
    parts.append(
        f'<section id="runs"><h2>Every run</h2><p>{summary}. Each page is a run\'s own report with its '
        "charts; data files (metrics.csv, run.json) sit beside each page.</p>"
    )
    for kind in sorted(by_kind, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)):
        about = KINDS[kind].describe if kind in KINDS else "folders with rows that no kind recognises"
        parts.append(f'<h3 id="kind-{html.escape(kind)}">{html.escape(kind)}</h3>')
        parts.append(f'<p class="kind">{html.escape(about)}</p><ul>')
        for page in by_kind[kind]:
            rel = page.source.relative_to(results) if page.source != results else Path(".")
            badge = "" if page.ok else f' <strong class="failed">{html.escape(page.status.upper())}</strong>'
            where = f'<span class="kind">results/{html.escape(str(rel))}</span>'
            parts.append(f"<li>{_run_link(page, page.title)}{badge} {where}</li>")
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
