"""`qbench site`: a static HTML site of results/ and docs/ that opens from the file system."""

from __future__ import annotations

import argparse
from pathlib import Path

from qbench.harness.errors import UsageError
from qbench.harness.results.site import SiteError, build_site

DEFAULT_DOCS = Path("docs")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "site",
        help="build a static HTML site from results/ and docs/ (no network needed to view it)",
        description="A front page that answers first (the seed's claims and their verdicts, the peers "
        "chart, the reliability table, the history trend, each linking to its run), the docs pages, "
        "and one page per run (its report as HTML, charts and data files beside it), grouped by kind; "
        "failed runs are marked. Self-contained: open site/index.html from the file system.",
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results tree (default results/)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="Markdown pages to publish beside the results (default docs/ when it exists)",
    )
    parser.add_argument("--out", type=Path, default=Path("site"), help="where to write it (default site/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    for source in (args.results, args.docs):
        if source is not None and out in (source.resolve(), *source.resolve().parents):
            raise UsageError(f"--out {args.out} would overwrite the files it is built from ({source})")
    docs = args.docs if args.docs is not None else (DEFAULT_DOCS if DEFAULT_DOCS.is_dir() else None)
    try:
        pages = build_site(args.results, args.out, docs)
    except SiteError as exc:
        raise UsageError(str(exc)) from None
    runs = sum(1 for p in pages if p.parent.parent.name == "runs")
    print(f"{pages[0]}: {runs} run pages, {len(pages) - 1 - runs} docs pages")
    return 0
